"""Liveness on kopf's health endpoint (`--health-port`, /healthz): fails when the operator cannot work.

The endpoint answers 500 when a watch died or has heard nothing from the API server for longer
than a watch can stay silent, or when a worker has been on one Slot for longer than any bounded
API call could take: the event loop being alive is not enough.
"""

from __future__ import annotations

from typing import Any

import kopf

from slot_operator.kube import api as api_module
from slot_operator.kube.cache import Cache
from slot_operator.runtime.controller import Controller

# Watches end and restart every WATCH_SERVER_TIMEOUT, and bookmarks arrive in between: twice the
# client's read timeout of silence means the stream is dead and not being replaced.
SILENT_WATCH = 2.0 * api_module.WATCH_READ_TIMEOUT


@kopf.on.probe(id="probes", errors=kopf.ErrorsMode.PERMANENT)
def probe_counts(*, memo: kopf.Memo, **_: Any) -> dict[str, int]:
    controller: Controller | None = getattr(memo, "controller", None)
    cache: Cache | None = getattr(memo, "cache", None)
    if controller is None or cache is None:
        return {}
    problems = cache.stale(older_than=SILENT_WATCH) + controller.stuck()
    if problems:
        raise kopf.PermanentError("; ".join(problems))
    return {"running": controller.probes_running, "queued": controller.probes_waiting}
