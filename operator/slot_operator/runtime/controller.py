"""The controller: watch events in, work queues, workers that reconcile one object each, retries by the queue.

Two kinds, each with its own queue and workers: Slots (`SlotReconciler`, `--workers` of them) and
SlotImageChecks (`CheckReconciler`, one worker: a check is background work, reconciled at most every
CHECK_EVERY seconds however many of its Jobs change). Both share the probe cap, where a check's probes
wait behind every Slot probe (runtime/capacity.py).

A worker takes a key from its queue and runs `reconcile(key) -> Result`. The Result
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
from collections.abc import Awaitable, Callable

from slot_operator import metrics as metrics_module
from slot_operator.config import Config
from slot_operator.kube.api import ApiError
from slot_operator.kube.cache import Cache, Listener
from slot_operator.kube.informer import Key, Object
from slot_operator.kube.writer import KubeWriter
from slot_operator.logic import names
from slot_operator.logic.outcome import is_finished
from slot_operator.runtime.capacity import Capacity, CheckProbe, ProbeKey, is_check_probe, namespace_of
from slot_operator.runtime.checks import CheckCollaborators, CheckReconciler
from slot_operator.runtime.context import Collaborators
from slot_operator.runtime.reconciler import Result, SlotReconciler
from slot_operator.runtime.workqueue import WorkQueue

logger = logging.getLogger(__name__)

# A worker on one Slot for this long is stuck (every API call is bounded far below it): liveness fails.
STUCK_AFTER = 300.0
# A check's reconcile reads all of its results: its Jobs' events are gathered for this long between two.
CHECK_EVERY = 0.5


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


def _running(job: Object) -> bool:
    return not is_finished(job) and not job["metadata"].get("deletionTimestamp")


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
        self.check_queue: WorkQueue[Key] = WorkQueue()
        self.capacity: Capacity[ProbeKey] = Capacity(
            config.max_concurrent_probes,
            group_limit=config.probes_per_namespace,
            group=namespace_of,
            background=is_check_probe,
        )
        self.cache: Cache | None = None
        self.reconciler: SlotReconciler | None = None
        self.checks: CheckReconciler | None = None
        self._check_done: dict[Key, float] = {}  # check -> when its last reconcile ended (time.monotonic)
        self.busy = Busy()
        self._workers: list[asyncio.Task[None]] = []

    def listener(self) -> Listener:
        return Listener(
            slot_changed=self._slot_changed,
            probe_changed=self._probe_changed,
            claim_changed=self._claim_changed,
            claim_users_changed=self._claim_changed,
            impostor=self._impostor,
            check_changed=self._check_changed,
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
                wake=self._wake,
                queued_at=self.queue.queued_at,
            )
        )
        self.checks = CheckReconciler(
            CheckCollaborators(
                cache=cache, writer=self.writer, capacity=self.capacity, config=self.config, clock=self.clock,
                wake=self._wake,
            )
        )  # fmt: skip
        self._adopt_running(cache, self.checks)
        keys = cache.slot_keys()
        self.reconciler.starting(keys, [(cache.slot(key) or {}).get("status") or {} for key in keys])
        for key in keys:
            self.queue.add(key)
        for key in cache.check_keys():
            self.check_queue.add(key)
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
            asyncio.create_task(self._serve(f"worker-{i}", self.queue, self._reconcile_slot, cache.slot),
                                name=f"slot-worker-{i}")
            for i in range(self.config.workers)
        ]  # fmt: skip
        checks = self._serve(
            "check-worker", self.check_queue, self.checks.reconcile, cache.check, done=self._check_done
        )
        self._workers.append(asyncio.create_task(checks, name="check-worker"))

    def _adopt_running(self, cache: Cache, checks: CheckReconciler) -> None:
        """The probes already running hold their places (the cap holds across restarts)."""
        for key, job in cache.owned_probe_jobs():
            if _running(job):
                self.capacity.adopt(key, str(job["metadata"]["name"]))
        for (namespace, check), job in cache.owned_check_jobs():
            slot = str((job["metadata"].get("annotations") or {}).get(names.ANNOTATION_SLOT) or "")
            if _running(job):
                checks.adopt(CheckProbe(namespace=namespace, check=check, slot=slot), str(job["metadata"]["name"]))

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.queue.close()
        self.check_queue.close()

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
    def _wake(self, key: ProbeKey) -> None:
        """A place under the cap was handed to `key`: reconcile its Slot, or its check."""
        if isinstance(key, CheckProbe):
            self.check_queue.add((key.namespace, key.check))
        else:
            self.queue.add(key)

    def _slot_changed(self, key: Key, old: Object | None, new: Object | None) -> None:
        self.queue.add(key)
        if new is None and self.cache is not None:  # a check that selected it answers SlotDeleted
            for check in self.cache.check_keys():
                if check[0] == key[0]:
                    self._check_changed(check)

    def _check_changed(self, key: Key) -> None:
        """Reconcile the check, but not more often than every CHECK_EVERY seconds (its events come in bursts)."""
        if self.checks is None:
            return  # the initial listing: start() reconciles every check anyway
        since = time.monotonic() - self._check_done.get(key, -CHECK_EVERY)
        self.check_queue.add_after(key, CHECK_EVERY - since)

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
    async def _reconcile_slot(self, key: Key) -> Result:
        assert self.reconciler is not None  # start() made it before any worker
        return await self.reconciler.reconcile(key)

    async def _serve(
        self,
        worker: str,
        queue: WorkQueue[Key],
        reconcile: Callable[[Key], Awaitable[Result]],
        exists: Callable[[Key], object],
        *,
        done: dict[Key, float] | None = None,
    ) -> None:
        while True:
            key = await queue.get()
            started = time.monotonic()
            self.busy.begin(worker, key, since=started)
            outcome = "success"
            try:
                result = await reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcome = "conflict" if isinstance(exc, ApiError) and exc.status == 409 else "error"
                await self._failed(queue, key, exc, kind="check" if done is not None else "slot")
            else:
                queue.forget(key)
                # The reconcile saw the whole Slot: its Result is when to look next, and a wake-up asked for
                # earlier is stale (a finished probe's deadline would otherwise reconcile every Slot once more).
                # A check's changes arrive as delayed adds (_check_changed), so only a gone check drops them.
                gone = exists(key) is None
                if done is None or gone:
                    queue.discard(key)
                if not gone and result.requeue_after is not None:
                    queue.add_after(key, result.requeue_after)
            finally:
                self.busy.end(worker)
                if done is not None:  # when a check's last reconcile ended, while it exists
                    if exists(key) is None:
                        done.pop(key, None)
                    else:
                        done[key] = time.monotonic()
                queue.done(key)
                self.metrics.reconciled(outcome=outcome, seconds=time.monotonic() - started)

    async def _failed(self, queue: WorkQueue[Key], key: Key, exc: Exception, *, kind: str) -> None:
        """A conflict (409: the cache is behind; read the Slot afresh), an API error or a bug: the queue retries."""
        status = exc.status if isinstance(exc, ApiError) else None
        self.metrics.reconcile_failed(status=status, reason=exc.reason if isinstance(exc, ApiError) else "")
        if status == 409 and self.cache is not None:
            logger.debug("%s %s/%s changed under a write; reading it again", kind, *key)
            try:
                fresh = await (self.writer.get_slot(*key) if kind == "slot" else self.writer.get_check(*key))
            except ApiError as error:
                exc = error
            else:
                if fresh is not None:
                    (self.cache.wrote_slot if kind == "slot" else self.cache.wrote_check)(fresh)
        delay = queue.add_rate_limited(key)
        self.metrics.retries.inc()
        if status != 409:
            log = logger.warning if isinstance(exc, ApiError | OSError) else logger.exception
            log("reconcile of %s %s/%s failed (retry %d in %.1fs): %s", kind, *key, queue.num_requeues(key), delay, exc)
