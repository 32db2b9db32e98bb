"""Watches: each event only enqueues the Slot it concerns; the controller does the rest.

All handlers are low-level `on.event` handlers: they write nothing to the watched
objects (no finalizers, no annotations), and a replay after a re-list is harmless.
"""

from __future__ import annotations

from typing import Any

import kopf

from slot_operator.logic import jobs
from slot_operator.runtime.controller import Controller

_PROBES = {jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY, jobs.LABEL_COMPONENT: "probe"}


@kopf.on.event(jobs.GROUP, jobs.VERSION, "slots")
async def slot_changed(*, event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo.controller
    controller.slot_seen(body, deleted=event.get("type") == "DELETED")


@kopf.on.event("batch", "v1", "jobs", labels=_PROBES)
async def probe_job_changed(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo.controller
    controller.child_seen(body)


@kopf.on.event("", "v1", "pods", labels=_PROBES)
async def probe_pod_changed(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo.controller
    controller.child_seen(body)


@kopf.on.event("", "v1", "persistentvolumeclaims")
async def claim_changed(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo.controller
    controller.claim_seen(str(body.metadata.namespace), str(body.metadata.name))
