"""The controller: watch events in, a work queue, workers that reconcile one Slot each, retries by the queue.

A worker takes a Slot from the queue and runs `SlotReconciler.reconcile(key) -> Result`. The Result
says when to look again; a failure is retried by the queue with a per-Slot backoff (client-go's
AddRateLimited/Forget), a conflicting write (409) after the Slot was read afresh. API work per probe
does not grow with the fleet: one status write when a Slot becomes due (Queued, or Probing when a
place is free), the Job, one status write for the verdict (docs/design.md §3a).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable

from slot_operator import metrics as metrics_module
from slot_operator.config import Config
from slot_operator.kube.api import ApiError
from slot_operator.kube.cache import Cache, Listener
from slot_operator.kube.informer import Key, Object
from slot_operator.kube.writer import KubeWriter
from slot_operator.logic.outcome import is_finished
from slot_operator.runtime.capacity import Capacity
from slot_operator.runtime.context import Collaborators
from slot_operator.runtime.reconciler import SlotReconciler
from slot_operator.runtime.workqueue import WorkQueue

logger = logging.getLogger(__name__)

# A worker on one Slot for this long is stuck (every API call is bounded far below it): liveness fails.
STUCK_AFTER = 300.0


class Busy:
    """Which worker reconciles which Slot, since when (time.monotonic()): liveness reads it."""

    def __init__(self) -> None:
        self._on: dict[str, tuple[Key, float]] = {}

    def begin(self, worker: str, key: Key, *, since: float) -> None:
        self._on[worker] = (key, since)

    def end(self, worker: str) -> None:
        self._on.pop(worker, None)

    def longer_than(self, seconds: float, *, now: float) -> list[str]:
        return [f"{worker} on {key[0]}/{key[1]} for {now - since:.0f}s" for worker, (key, since) in self._on.items()
                if now - since > seconds]  # fmt: skip


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _namespace(key: Key) -> str:
    return key[0]


class Controller:
    def __init__(
        self,
        *,
        writer: KubeWriter,
        config: Config,
        metrics: metrics_module.Metrics,
        clock: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.writer = writer
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.queue: WorkQueue[Key] = WorkQueue()
        self.capacity: Capacity[Key] = Capacity(
            config.max_concurrent_probes, group_limit=config.probes_per_namespace, group=_namespace
        )
        self.cache: Cache | None = None
        self.reconciler: SlotReconciler | None = None
        self.busy = Busy()
        self._workers: list[asyncio.Task[None]] = []

    def listener(self) -> Listener:
        return Listener(
            slot_changed=lambda key, old, new: self.queue.add(key),
            probe_changed=self._probe_changed,
            claim_changed=self._claim_changed,
            claim_users_changed=self._claim_changed,
            impostor=self._impostor,
        )

    # Lifecycle
    async def start(self, cache: Cache) -> None:
        """With the caches filled: count the probes already running (the cap holds across restarts), then work."""
        self.cache = cache
        self.reconciler = SlotReconciler(
            Collaborators(
                cache=cache,
                writer=self.writer,
                recorder=self.writer.events,
                capacity=self.capacity,
                metrics=self.metrics,
                config=self.config,
                clock=self.clock,
                wake=self.queue.add,
                queued_at=self.queue.queued_at,
            )
        )
        for key, job in cache.owned_probe_jobs():
            if not is_finished(job) and not job["metadata"].get("deletionTimestamp"):
                self.capacity.adopt(key, str(job["metadata"]["name"]))
        keys = cache.slot_keys()
        self.reconciler.starting(keys, [(cache.slot(key) or {}).get("status") or {} for key in keys])
        for key in keys:
            self.queue.add(key)
        self.metrics.track_queues(
            workqueue_depth=lambda: len(self.queue),
            workqueue_oldest=lambda: self.queue.oldest_wait(now=time.monotonic()),
            probe_queue_oldest=lambda: self.capacity.oldest_wait(now=time.monotonic()),
            probe_queue_depth=lambda: self.capacity.waiting,
            probes_running=lambda: self.capacity.running,
        )
        logger.info(
            "controller started: %d Slot(s), %d probe Job(s) already running, cap %d (%d per namespace)",
            len(keys),
            self.capacity.running,
            self.config.max_concurrent_probes,
            self.capacity.group_limit,
        )
        self._workers = [
            asyncio.create_task(self._work(f"worker-{i}"), name=f"slot-worker-{i}") for i in range(self.config.workers)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.queue.close()

    def stuck(self) -> list[str]:
        """Workers that have been on one Slot for longer than any bounded call could take (for liveness)."""
        dead = [f"{task.get_name()} died" for task in self._workers if task.done()]
        return self.busy.longer_than(STUCK_AFTER, now=time.monotonic()) + dead

    @property
    def probes_waiting(self) -> int:
        """Slots due for a probe that wait for a place under the cap."""
        return self.capacity.waiting

    @property
    def probes_running(self) -> int:
        return self.capacity.running

    # Feeds from the caches: each only enqueues
    def _probe_changed(self, key: Key) -> None:
        """A probe Job or pod of the Slot changed: perhaps its verdict, ahead of other work (workqueue.py)."""
        self.queue.add(key, urgent=True)

    def _claim_changed(self, claim: Key) -> None:
        if self.cache is None:
            return  # the initial listing: start() reconciles every Slot anyway
        for key in self.cache.slots_of_claim(*claim):
            self.queue.add(key)

    def _impostor(self, slot: Key, job: Object) -> None:
        if self.reconciler is not None and self.reconciler.impostor(slot, job):
            self.queue.add(slot)  # its reconcile reports it on the Slot

    # Workers
    async def _work(self, worker: str) -> None:
        assert self.reconciler is not None, "start() first"
        while True:
            key = await self.queue.get()
            started = time.monotonic()
            self.busy.begin(worker, key, since=started)
            outcome = "success"
            try:
                result = await self.reconciler.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcome = "conflict" if isinstance(exc, ApiError) and exc.status == 409 else "error"
                await self._failed(key, exc)
            else:
                self.queue.forget(key)
                # The reconcile saw the whole Slot: its Result is when to look next, and a wake-up asked for
                # earlier is stale (a finished probe's deadline would otherwise reconcile every Slot once more).
                self.queue.discard(key)
                if result.requeue_after is not None and (self.cache is None or self.cache.slot(key) is not None):
                    self.queue.add_after(key, result.requeue_after)
            finally:
                self.busy.end(worker)
                self.queue.done(key)
                self.metrics.reconciled(outcome=outcome, seconds=time.monotonic() - started)

    async def _failed(self, key: Key, exc: Exception) -> None:
        """A conflict (409: the cache is behind; read the Slot afresh), an API error or a bug: the queue retries."""
        status = exc.status if isinstance(exc, ApiError) else None
        self.metrics.reconcile_failed(status=status, reason=exc.reason if isinstance(exc, ApiError) else "")
        if status == 409 and self.cache is not None:
            logger.debug("slot %s/%s changed under a write; reading it again", *key)
            try:
                fresh = await self.writer.get_slot(*key)
            except ApiError as error:
                exc = error
            else:
                if fresh is not None:
                    self.cache.wrote_slot(fresh)
        delay = self.queue.add_rate_limited(key)
        self.metrics.retries.inc()
        if status != 409:
            log = logger.warning if isinstance(exc, ApiError | OSError) else logger.exception
            log(
                "reconcile of slot %s/%s failed (retry %d in %.1fs): %s", *key, self.queue.num_requeues(key), delay, exc
            )
