"""Liveness details served on kopf's health endpoint (`--health-port`, path /healthz)."""

from __future__ import annotations

from typing import Any

import kopf

from slot_operator.runtime.controller import Controller


@kopf.on.probe(id="probes")
def probe_counts(*, memo: kopf.Memo, **_: Any) -> dict[str, int]:
    controller: Controller | None = getattr(memo, "controller", None)
    if controller is None:
        return {}
    return {"running": controller.probes_running, "queued": controller.queue_depth}
