"""Timestamps as the API server publishes them: when each probe pod terminated, when each verdict landed.

Both come from watches in this one process, on one clock, so their difference is the time from
"the probe pod's outcome is in the API" to "the Slot's status says so", whoever writes it. The pod has
terminated when every container in it has: the probe and the ownership audit beside it, whose report
the verdict carries (docs/design.md §2.4). When the probe container alone terminated is kept too: the
time between the two is the audit's, not the client's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from slot_operator.kube.api import ApiClient
from slot_operator.kube.informer import Informer, Object
from slot_operator.logic import names

SlotTest = Callable[[Mapping[str, Any]], bool]


def _terminated(pod: Mapping[str, Any]) -> set[str]:
    """The containers of the pod that have terminated."""
    return {
        str(status.get("name"))
        for status in (pod.get("status") or {}).get("containerStatuses") or ()
        if (status.get("state") or {}).get("terminated")
    }


def pod_terminated(pod: Mapping[str, Any]) -> bool:
    """The probe and every container beside it have terminated."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or ()
    return names.PROBE_CONTAINER in _terminated(pod) and len(_terminated(pod)) == len(statuses)


class Observer:
    def __init__(self, api: ApiClient, namespace: str, *, done: SlotTest) -> None:
        self._done = done
        self.probe_terminated: dict[str, float] = {}  # Slot name -> when its probe container was seen terminated
        self.terminated: dict[str, float] = {}  # Slot name -> when its probe pod was seen terminated (every container)
        self.finished: dict[str, float] = {}  # Slot name -> when its status was first seen `done`
        self.changed = asyncio.Event()
        self._informers = [
            Informer(
                api,
                resource="slots",
                path=f"/apis/woved.dev/v1alpha1/namespaces/{namespace}/slots",
                on_change=self._slot,
            ),
            Informer(
                api,
                resource="pods",
                path=f"/api/v1/namespaces/{namespace}/pods",
                selectors={"labelSelector": names.PROBE_SELECTOR},
                on_change=self._pod,
            ),
        ]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(informer.run()) for informer in self._informers]
        await asyncio.gather(*(informer.synced.wait() for informer in self._informers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait(self, count: int, *, within: float) -> None:
        """Until `count` Slots are done; raises TimeoutError naming how far it got."""
        deadline = time.monotonic() + within
        while len(self.finished) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"only {len(self.finished)}/{count} Slots done within {within:.0f}s")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                continue

    def _slot(self, old: Object | None, new: Object | None) -> None:
        if new is None:
            return
        name = str(new["metadata"]["name"])
        if name not in self.finished and self._done(new):
            self.finished[name] = time.monotonic()
            self.changed.set()

    def _pod(self, old: Object | None, new: Object | None) -> None:
        if new is None or names.PROBE_CONTAINER not in _terminated(new):
            return
        name = str(((new.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_SLOT))
        now = time.monotonic()
        self.probe_terminated.setdefault(name, now)
        if pod_terminated(new):
            self.terminated.setdefault(name, now)
