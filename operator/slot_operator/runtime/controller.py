"""Reconcile Slots: observe (API reads) → decide (pure logic) → act (status, Jobs, events).

Level-triggered: every watch event only enqueues the Slot's key; each reconcile
reads the Slot and its Jobs fresh from the API and derives everything from them,
so missed events, restarts and duplicate deliveries converge to the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from slot_operator import metrics as metrics_module
from slot_operator.config import Config
from slot_operator.kube.store import ApiError, JobRejected, KubeStore
from slot_operator.logic import jobs, schedule, timestamps
from slot_operator.logic import status as status_logic
from slot_operator.logic.conditions import READY, find
from slot_operator.logic.outcome import NoVerdict, Outcome, Running, Verdict, classify, is_finished
from slot_operator.logic.spec import InvalidSpec, SlotSpec, parse_spec
from slot_operator.logic.status import ProbeRef
from slot_operator.logic.verdict import FailureReason, Phase
from slot_operator.runtime.workqueue import WorkQueue

logger = logging.getLogger(__name__)

SlotKey = tuple[str, str]  # (namespace, name)
# After a probe's deadline, give the Job controller this long to report before looking again.
DEADLINE_GRACE = datetime.timedelta(seconds=30)
# Retry delays for a reconcile that hit an API error (not a probe failure: those are in status).
ERROR_RETRY_BASE, ERROR_RETRY_MAX = 1.0, 60.0


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def slot_key(body: Mapping[str, Any]) -> SlotKey:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def owning_slot(body: Mapping[str, Any]) -> SlotKey | None:
    """The Slot a probe Job or pod belongs to, from the annotation the operator put on it."""
    meta = body.get("metadata") or {}
    name = (meta.get("annotations") or {}).get(jobs.ANNOTATION_SLOT)
    return (str(meta.get("namespace")), str(name)) if name else None


class Controller:
    def __init__(
        self,
        *,
        store: KubeStore,
        config: Config,
        metrics: metrics_module.Metrics,
        clock: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self._store = store
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self.queue: WorkQueue[SlotKey] = WorkQueue()
        self._running: dict[SlotKey, str] = {}  # Slots holding a place under the cap → their Job
        self._waiting: dict[SlotKey, datetime.datetime] = {}  # Slots due but capped → since when (FIFO)
        self._claims: dict[SlotKey, SlotKey] = {}  # Slot → (namespace, claimName), to react to claims appearing
        self._errors: dict[SlotKey, int] = {}
        self._workers: list[asyncio.Task[None]] = []

    # Lifecycle
    async def start(self) -> None:
        """Count the probe Jobs already running (before any Slot is reconciled) so the cap holds across restarts."""
        for job in await self._store.list_probe_jobs(self._config.namespaces):
            key = owning_slot(job)
            if key and not is_finished(job) and not (job.get("metadata") or {}).get("deletionTimestamp"):
                self._running[key] = str(job["metadata"]["name"])
        self._update_gauges()
        logger.info(
            "controller started: %d probe Job(s) already running, cap %d",
            len(self._running),
            self._config.max_concurrent_probes,
        )
        self._workers = [
            asyncio.create_task(self._work(), name=f"slot-worker-{i}") for i in range(self._config.workers)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.queue.close()

    # Feeds from the watches
    def slot_seen(self, body: Mapping[str, Any], *, deleted: bool) -> None:
        key = slot_key(body)
        claim = (body.get("spec") or {}).get("claimName")
        if deleted:
            self._claims.pop(key, None)
        elif claim:
            self._claims[key] = (key[0], str(claim))
        self.queue.add(key)

    def child_seen(self, body: Mapping[str, Any]) -> None:
        key = owning_slot(body)
        if key:
            self.queue.add(key)

    def claim_seen(self, namespace: str, name: str) -> None:
        for key, claim in list(self._claims.items()):
            if claim == (namespace, name):
                self.queue.add(key)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def probes_running(self) -> int:
        return len(self._running)

    # Worker loop
    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconcile(key)
                self._errors.pop(key, None)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.status != 409:
                    self._retry_later(key, exc)
                else:  # the Slot changed under us: read it again now
                    logger.debug("slot %s/%s changed during reconcile; again", *key)
                    self.queue.add(key)
            except Exception as exc:
                self._retry_later(key, exc)
            finally:
                self.queue.done(key)

    def _retry_later(self, key: SlotKey, exc: Exception) -> None:
        """An API error or a bug: try this Slot again with a per-Slot exponential delay."""
        failures = self._errors.get(key, 0) + 1
        self._errors[key] = failures
        delay = min(ERROR_RETRY_BASE * 2 ** (failures - 1), ERROR_RETRY_MAX)
        log = logger.warning if isinstance(exc, ApiError | OSError) else logger.exception
        log("reconcile of slot %s/%s failed (retry in %.0fs): %s", *key, delay, exc)
        self.queue.add_after(key, delay)

    # Cap bookkeeping
    def _reserve(self, key: SlotKey, now: datetime.datetime) -> int | None:
        """Take a place under the cap (None), or join the FIFO queue and return the 1-based position."""
        if key in self._running:
            return None
        since = self._waiting.setdefault(key, now)
        free = self._config.max_concurrent_probes - len(self._running)
        ahead = sum(1 for other, when in self._waiting.items() if (when, other) < (since, key))
        if ahead < free:
            del self._waiting[key]
            self._running[key] = ""
            self._update_gauges()
            return None
        self._update_gauges()
        return ahead + 1

    def _release(self, key: SlotKey) -> None:
        """Give up `key`'s place under the cap (if it held one)."""
        self._running.pop(key, None)
        self._wake_waiters()

    def _unqueue(self, key: SlotKey) -> None:
        """`key` no longer waits (not due, suspended, invalid, adopted, gone)."""
        self._waiting.pop(key, None)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Enqueue the first waiters that fit under the cap; cheap and idempotent, so called on every change."""
        free = self._config.max_concurrent_probes - len(self._running)
        for waiting in sorted(self._waiting, key=lambda k: (self._waiting[k], k))[: max(free, 0)]:
            self.queue.add(waiting)
        self._update_gauges()

    def _forget(self, key: SlotKey) -> None:
        self._waiting.pop(key, None)
        self._release(key)
        self._claims.pop(key, None)
        self._errors.pop(key, None)
        self.queue.forget(key)
        self._metrics.forget_slot(*key)
        self._update_gauges()

    def _update_gauges(self) -> None:
        self._metrics.queue_depth.set(len(self._waiting))
        self._metrics.running.set(len(self._running))

    # Reconcile
    async def reconcile(self, key: SlotKey) -> None:
        namespace, name = key
        slot = await self._store.get_slot(namespace, name)
        if slot is None or (slot.get("metadata") or {}).get("deletionTimestamp"):
            self._forget(key)
            return
        step = _Step(self, slot)
        await step.run()


class _Step:
    """One reconcile of one Slot; holds the Slot as last read or written."""

    def __init__(self, controller: Controller, slot: dict[str, Any]) -> None:
        self.c = controller
        self.slot = slot
        meta = slot["metadata"]
        self.key: SlotKey = (str(meta["namespace"]), str(meta["name"]))
        self.uid = str(meta["uid"])
        self.generation = int(meta.get("generation") or 1)
        self.now = controller._clock()

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.slot.get("status") or {})

    async def run(self) -> None:
        config = self.c._config
        try:
            spec = parse_spec(
                self.slot.get("spec") or {},
                default_interval=config.default_interval,
                default_timeout=config.default_timeout,
            )
        except InvalidSpec as exc:
            await self._invalid(str(exc))
            return
        if await self._settle_current_probe(spec):
            return  # a probe is running: its Job's events (or the deadline wake-up) bring us back
        await self._schedule_next(spec)

    async def _invalid(self, message: str) -> None:
        self.c._unqueue(self.key)
        # A probe of a spec that is no longer valid answers nothing useful: stop it and free its place.
        job = schedule.current_job(self.status, await self.c._store.list_slot_jobs(self.key[0], self.uid))
        if job is not None and not is_finished(job):
            await self.c._store.delete_job(self.key[0], str(job["metadata"]["name"]))
        self.c._release(self.key)
        was_invalid = (self.status.get("lastProbe") or {}).get("reason") == FailureReason.INVALID_SPEC or any(
            c.get("reason") == FailureReason.INVALID_SPEC for c in self.status.get("conditions") or ()
        )
        await self._write(
            status_logic.invalid_spec(self.status, generation=self.generation, message=message, now=self.now)
        )
        if not was_invalid:
            await self._event("Warning", FailureReason.INVALID_SPEC, message)

    async def _settle_current_probe(self, spec: SlotSpec) -> bool:
        """Follow the probe in flight: adopt it, record its outcome, or stop it when the spec moved on.

        Returns True while the probe is still running.
        """
        store, status = self.c._store, self.status
        namespace = self.key[0]
        job = schedule.current_job(status, await store.list_slot_jobs(namespace, self.uid))
        recorded = ProbeRef.from_status(status.get("currentProbe"))
        if job is None:
            self.c._release(self.key)
            if recorded is not None:
                await self._record(
                    recorded,
                    NoVerdict(
                        reason=FailureReason.JOB_LOST,
                        message=f"probe Job {recorded.job_name} not found: never created, or deleted before it "
                        "reported",
                    ),
                    spec,
                )
            return False
        job_name = str(job["metadata"]["name"])
        if (status.get("lastProbe") or {}).get("jobName") == job_name and recorded is None:
            # Outcome already in status; a Job we meant to stop (image pull failure, unschedulable) may linger.
            if not is_finished(job):
                await store.delete_job(namespace, job_name)
            self.c._release(self.key)
            return False
        probe = recorded if recorded is not None and recorded.job_name == job_name else _adopted(job)
        if probe.generation < self.generation and not is_finished(job):
            logger.info(
                "slot %s/%s: spec changed to generation %d, stopping probe %s", *self.key, self.generation, job_name
            )
            await store.delete_job(namespace, job_name)
            self.c._release(self.key)
            superseded = self.status
            superseded.pop("currentProbe", None)
            await self._write(superseded)
            return False
        outcome: Outcome = classify(job, await store.list_job_pods(namespace, job_name))
        if isinstance(outcome, Running):
            self.c._unqueue(self.key)
            self.c._running[self.key] = job_name
            self.c._update_gauges()
            await self._write(status_logic.probing(status, generation=self.generation, probe=probe, now=self.now))
            deadline = probe.start_time + spec.timeout + DEADLINE_GRACE
            self.c.queue.add_after(self.key, max((deadline - self.now).total_seconds(), DEADLINE_GRACE.total_seconds()))
            return True
        await self._record(probe, outcome, spec)
        if outcome.stop_job:
            await store.delete_job(namespace, job_name)
        self.c._release(self.key)
        return False

    async def _schedule_next(self, spec: SlotSpec) -> None:
        status = self.status
        request = schedule.manual_request((self.slot.get("metadata") or {}).get("annotations"))
        claim_exists, claim = None, None
        if (status.get("lastProbe") or {}).get("reason") == FailureReason.CLAIM_NOT_FOUND:
            claim = await self.c._store.get_claim(self.key[0], spec.claim_name)
            claim_exists = claim is not None
        trigger, due_at = schedule.due(
            status, generation=self.generation, request=request, claim_exists=claim_exists, now=self.now
        )
        if spec.suspend or trigger is None:
            self.c._unqueue(self.key)
            await self._write(
                status_logic.idle(status, generation=self.generation, suspended=spec.suspend, now=self.now)
            )
            if due_at is not None and not spec.suspend:
                self.c.queue.add_after(self.key, (due_at - self.now).total_seconds())
            return
        position = self.c._reserve(self.key, self.now)
        if position is not None:
            await self._write(status_logic.queued(status, generation=self.generation, position=position, now=self.now))
            return
        try:
            await self._start(spec, trigger, claim)
        except BaseException:
            self.c._release(self.key)
            raise

    async def _start(self, spec: SlotSpec, trigger: schedule.Trigger, claim: dict[str, Any] | None) -> None:
        store, namespace = self.c._store, self.key[0]
        if claim is None:  # not read yet by this reconcile
            claim = await store.get_claim(namespace, spec.claim_name)
        modes = set(((claim or {}).get("spec") or {}).get("accessModes") or ())
        users = (
            schedule.claim_users(await store.list_pods(namespace), spec.claim_name)
            if modes & {"ReadWriteOnce", "ReadWriteOncePod"}
            else []
        )
        placement = schedule.place(claim, spec.claim_name, users)
        if isinstance(placement, NoVerdict):
            self.c._release(self.key)
            await self._record(None, placement, spec, trigger=trigger)
            return
        # Deterministic: two operators deciding the same probe from the same status pick the same name (409).
        last = self.status.get("lastProbe") or {}
        previous = last.get("jobName") or last.get("completionTime") or ""  # failures without a Job have no name
        failures = int(self.status.get("consecutiveProbeFailures") or 0)
        token = f"{previous}/{self.generation}/{trigger.kind}/{trigger.request or ''}/{failures}"
        name = jobs.job_name(self.key[1], self.uid, token)
        probe = ProbeRef(
            job_name=name,
            image=spec.image,
            generation=self.generation,
            trigger=trigger.kind,
            request=trigger.request,
            start_time=self.now,
        )
        # Intent first: if the operator dies after this write, the next run adopts or replaces this Job.
        await self._write(status_logic.probing(self.status, generation=self.generation, probe=probe, now=self.now))
        manifest = jobs.build_probe_job(
            name=name,
            namespace=namespace,
            slot_name=self.key[1],
            slot_uid=self.uid,
            generation=self.generation,
            trigger=trigger.kind,
            spec=spec,
            node=placement.node,
            ttl=self.c._config.job_ttl,
        )
        try:
            created = await store.create_job(manifest)
        except JobRejected as exc:
            # The API server refused the Job (a field it calls invalid, quota, admission): say so in conditions.
            self.c._release(self.key)
            await self._record(None, exc.outcome, spec, trigger=trigger)
            return
        self.c._running[self.key] = name
        self.c._update_gauges()
        logger.info(
            "slot %s/%s: probe %s %s (%s%s)",
            *self.key,
            name,
            "started" if created else "already running",
            trigger.kind,
            f", on node {placement.node}" if placement.node else "",
        )
        self.c.queue.add_after(self.key, (spec.timeout + DEADLINE_GRACE).total_seconds())

    async def _record(
        self,
        probe: ProbeRef | None,
        outcome: Verdict | NoVerdict,
        spec: SlotSpec,
        *,
        trigger: schedule.Trigger | None = None,
    ) -> None:
        before = self.status
        old_phase = status_logic.phase_of(before)
        metrics = self.c._metrics
        if isinstance(outcome, Verdict):
            assert probe is not None
            new = status_logic.verdict(
                before, generation=self.generation, probe=probe, outcome=outcome, interval=spec.interval, now=self.now
            )
            result = outcome.phase.value
        else:
            failures = int(before.get("consecutiveProbeFailures") or 0) + 1
            retry_at = self.now + schedule.backoff(
                failures, base=self.c._config.retry_base, cap=self.c._config.retry_max
            )
            new = status_logic.no_verdict(
                before,
                generation=self.generation,
                probe=probe,
                outcome=outcome,
                trigger=trigger.kind if trigger else "",
                request=trigger.request if trigger else None,
                retry_at=retry_at,
                now=self.now,
            )
            result = outcome.reason.value
        await self._write(new)
        metrics.results.labels(result).inc()
        if probe is not None:
            metrics.duration.labels("verdict" if isinstance(outcome, Verdict) else "no-verdict").observe(
                max((self.now - probe.start_time).total_seconds(), 0.0)
            )
        logger.info("slot %s/%s: %s (%s)", *self.key, result, outcome.message)
        if isinstance(outcome, Verdict):
            if outcome.phase is not old_phase:
                kind = "Normal" if outcome.phase is Phase.READY else "Warning"
                await self._event(
                    kind, outcome.phase.value, f"{old_phase.value} -> {outcome.phase.value}: {outcome.message}"
                )
        else:
            await self._event("Warning", outcome.reason.value, outcome.message)

    async def _event(self, kind: str, reason: str, message: str) -> None:
        await self.c._store.emit_event(self.slot, kind=kind, reason=reason, message=message, now=self.now)

    async def _write(self, new: dict[str, Any]) -> None:
        """Patch only what changed (watch replays and no-op reconciles cost no write)."""
        patch = status_logic.diff(self.status, new)
        if patch:
            # Conditional on the version read: a concurrent writer makes this fail (409) and the Slot re-reconcile.
            self.slot = await self.c._store.patch_slot_status(
                self.key[0], self.key[1], patch, resource_version=str(self.slot["metadata"]["resourceVersion"])
            )
        self._observe_metrics()

    def _observe_metrics(self) -> None:
        status = self.status
        ready = find(status.get("conditions") or (), READY) or {}
        self.c._metrics.observe_slot(
            *self.key,
            phase=status_logic.phase_of(status),
            ready=ready.get("status") == "True" and int(ready.get("observedGeneration") or 0) == self.generation,
            last_probe=timestamps.parse_time((status.get("lastProbe") or {}).get("completionTime")),
            last_ready=timestamps.parse_time(status.get("lastReadyTime")),
        )


def _adopted(job: Mapping[str, Any]) -> ProbeRef:
    """Describe a Job found running without a matching status record (written by an older run)."""
    meta = job.get("metadata") or {}
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return ProbeRef(
        job_name=str(meta.get("name")),
        image=str(containers[0].get("image") or ""),
        generation=schedule.job_generation(job),
        trigger=str((meta.get("annotations") or {}).get(jobs.ANNOTATION_TRIGGER) or "adopted"),
        request=None,
        start_time=timestamps.parse_time(meta.get("creationTimestamp")) or utcnow(),
    )
