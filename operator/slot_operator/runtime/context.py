"""One reconcile of one Slot: the Slot as read, the status being built on it, and every act on the cluster.

The probe and migration flows (runtime/probes.py, runtime/migrations.py) decide with logic/ and act
through this object only, so what one reconcile writes, deletes, posts and asks to be woken for is
in one place, and a test can give it a fake writer.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from slot_operator import metrics as metrics_module
from slot_operator.config import Config
from slot_operator.kube.cache import Cache
from slot_operator.kube.informer import Key, Object
from slot_operator.logic import status as status_logic
from slot_operator.logic.probing import Event
from slot_operator.runtime.capacity import Capacity, ProbeKey

logger = logging.getLogger(__name__)


class Writer(Protocol):
    """Every write the reconcile makes, and its few reads outside the caches (kube/writer.py)."""

    async def patch_slot_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]: ...

    async def create_job(self, manifest: Mapping[str, Any]) -> tuple[bool, dict[str, Any] | None]: ...

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def delete_job(self, namespace: str, name: str, *, uid: str) -> None: ...

    async def pod_creation_failure(self, namespace: str, job_name: str) -> str | None: ...


class Recorder(Protocol):
    """Events on Slots (kube/writer.py EventRecorder)."""

    async def emit(
        self, slot: Mapping[str, Any], *, kind: str, reason: str, message: str, now: datetime.datetime
    ) -> None: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Collaborators:
    """What a reconcile works with, given explicitly (never the controller's internals)."""

    cache: Cache
    writer: Writer
    recorder: Recorder
    capacity: Capacity[ProbeKey]
    metrics: metrics_module.Metrics
    config: Config
    clock: Callable[[], datetime.datetime]
    wake: Callable[[ProbeKey], None]  # a place under the cap was handed to this key: reconcile its Slot or check
    # When the work a reconcile of this Slot was handed for joined the queue (time.monotonic()), if known.
    queued_at: Callable[[Key], float | None] = lambda key: None


class SlotContext:
    """One reconcile of one Slot. `status` is what this reconcile builds on; `written` what the API last had."""

    def __init__(self, slot: Object, using: Collaborators) -> None:
        self.slot = slot
        self.using = using
        meta = slot["metadata"]
        self.key: Key = (str(meta["namespace"]), str(meta["name"]))
        self.uid = str(meta["uid"])
        self.generation = int(meta.get("generation") or 1)
        self.now = using.clock()
        self.picked = time.monotonic()  # for the per-verdict timing record (runtime/probes.py)
        self.status: dict[str, Any] = dict(slot.get("status") or {})
        self.wake_at: datetime.datetime | None = None

    @property
    def written(self) -> Mapping[str, Any]:
        return self.slot.get("status") or {}

    @property
    def annotations(self) -> Mapping[str, str]:
        return (self.slot.get("metadata") or {}).get("annotations") or {}

    def wake(self, at: datetime.datetime) -> None:
        """Reconcile this Slot again at `at` at the latest (the earliest of the wake-ups asked for wins)."""
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)

    def wake_in(self, delay: datetime.timedelta) -> None:
        self.wake(self.now + delay)

    async def write(self, new: Mapping[str, Any] | None) -> None:
        """Patch only what changed since the API last had it (watch replays and no-op reconciles cost nothing)."""
        if new is None:
            return
        patch = status_logic.diff(self.written, new)
        if patch:
            # Conditional on the version read: a concurrent writer makes this fail (409) and the Slot is read again.
            answer = await self.using.writer.patch_slot_status(
                self.key[0], self.key[1], patch, resource_version=str(self.slot["metadata"]["resourceVersion"])
            )
            self.slot = self.using.cache.wrote_slot(answer)
        self.status = dict(self.slot.get("status") or {}) if patch else dict(new)

    async def event(self, event: Event | None) -> None:
        if event is not None:
            await self.using.recorder.emit(
                self.slot, kind=event.kind, reason=event.reason, message=event.message, now=self.now
            )

    async def delete(self, job: Mapping[str, Any]) -> None:
        """Delete one of this Slot's own Jobs, as found by identity; only that very object (uid precondition)."""
        meta = job["metadata"]
        await self.using.writer.delete_job(self.key[0], str(meta["name"]), uid=str(meta["uid"]))

    # The cap: who holds a place is the capacity's to know (with the name of the Job that holds it).
    def hold(self, job_name: str) -> None:
        self.using.capacity.adopt(self.key, job_name)
        self.publish_queue()

    def release(self) -> None:
        """This Slot gives up its place or its turn; the places freed go to the longest waiters."""
        for granted in self.using.capacity.release(self.key):
            self.using.wake(granted)
        self.publish_queue()

    def done_with(self) -> None:
        """The probe has nothing more to say: its place is free."""
        if self.using.capacity.holds(self.key):
            self.release()

    def publish_queue(self) -> None:
        capacity, metrics = self.using.capacity, self.using.metrics
        metrics.queue_depth.set(capacity.waiting)
        metrics.running.set(capacity.running)
