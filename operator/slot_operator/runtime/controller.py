"""Reconcile Slots: observe (watch caches) → decide (pure logic) → act (status, Jobs, Events).

Level-triggered: every watch event only enqueues the Slot it concerns; each reconcile derives
everything from the cached Slot, its Jobs and their pods, so missed events, restarts and
duplicate deliveries converge to the same result. A reconcile makes no API read: the caches
are fed by the watches, and every object the operator writes is cached from the API's answer.
Writes are conditional (the Slot's resourceVersion; deterministic Job names), so a decision
taken from a stale cache fails with 409 instead of doing harm, and the Slot is read fresh.

API work per probe does not grow with the fleet: one status write when a Slot becomes due
(Queued, or Probing when a place is free), the Job, one status write for the verdict.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from slot_operator import metrics as metrics_module
from slot_operator.config import Config
from slot_operator.kube.api import ApiError
from slot_operator.kube.cache import Cache, Listener, job_owner_uid, slot_owner_uid
from slot_operator.kube.informer import Key, Object
from slot_operator.kube.store import JobRejected, KubeStore
from slot_operator.logic import jobs, names, ownership, report, schedule, timestamps
from slot_operator.logic import status as status_logic
from slot_operator.logic.conditions import OWNERSHIP_MATCHES, find
from slot_operator.logic.outcome import NoVerdict, Outcome, Running, Verdict, audit_result, classify, is_finished
from slot_operator.logic.phases import Phase
from slot_operator.logic.spec import InvalidSpec, SlotSpec, parse_spec
from slot_operator.logic.status import ProbeRef
from slot_operator.logic.verdict import FailureReason
from slot_operator.runtime.capacity import Capacity
from slot_operator.runtime.workqueue import WorkQueue

logger = logging.getLogger(__name__)

SlotKey = Key  # (namespace, name)
# After a probe's deadline, give the Job controller this long to report before reading the Job afresh.
DEADLINE_GRACE = datetime.timedelta(seconds=30)
# Retry delays for a reconcile that hit an API error (not a probe failure: those are in status).
ERROR_RETRY_BASE, ERROR_RETRY_MAX = 1.0, 60.0
# After a conflicting write (409), the Slot is read afresh and reconciled again after this (doubling) delay.
CONFLICT_RETRY_BASE, CONFLICT_RETRY_MAX = 0.05, 5.0
# A migration Job whose pod has not appeared after this long: ask the Job controller's Events why (Pod Security).
MIGRATION_POD_GRACE = datetime.timedelta(seconds=2)
MIGRATION_RECHECK = datetime.timedelta(seconds=5)
# A worker on one Slot for this long is stuck (every API call is bounded far below it): liveness fails.
STUCK_AFTER = 300.0
IMPOSTORS_REMEMBERED = 4096  # impostor Jobs reported once each (least recently seen forgotten)


def _namespace(key: SlotKey) -> str:
    return key[0]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Controller:
    def __init__(
        self,
        *,
        store: KubeStore,
        config: Config,
        metrics: metrics_module.Metrics,
        clock: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.cache: Cache | None = None
        self.queue: WorkQueue[SlotKey] = WorkQueue()
        self.capacity: Capacity[SlotKey] = Capacity(
            config.max_concurrent_probes, group_limit=config.probes_per_namespace, group=_namespace
        )
        self.started: dict[SlotKey, str] = {}  # probe Jobs this process created or adopted, by Slot
        self.unspread: set[SlotKey] = set()  # Slots not reconciled since start-up (overdue probes get spread)
        self.spread_window = datetime.timedelta(0)
        self._errors: dict[SlotKey, int] = {}
        self._conflicts: dict[SlotKey, int] = {}
        self._busy: dict[str, tuple[SlotKey, float]] = {}  # worker -> (Slot, since), for liveness
        self._workers: list[asyncio.Task[None]] = []
        # Impostor Jobs seen (by uid), and those still to report on the Slot they imitate (once each).
        self._impostors_seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.impostor_reports: dict[SlotKey, list[str]] = {}

    def listener(self) -> Listener:
        return Listener(
            slot_changed=self._slot_changed,
            probe_changed=self.queue.add,
            claim_changed=self._claim_changed,
            claim_users_changed=self._claim_changed,
            impostor=self._impostor,
        )

    # Lifecycle
    async def start(self, cache: Cache) -> None:
        """With the caches filled: count the probes already running (the cap holds across restarts), then work."""
        self.cache = cache
        for key, job in cache.owned_probe_jobs():
            meta = job.get("metadata") or {}
            if not is_finished(job) and not meta.get("deletionTimestamp"):
                self.capacity.adopt(key, str(meta.get("name")))
                self.started[key] = str(meta.get("name"))
        keys = cache.slot_keys()
        self.unspread = set(keys)
        self.spread_window = schedule.spread_window(
            [(cache.slot(key) or {}).get("status") or {} for key in keys], now=self.clock()
        )
        for key in keys:
            self.queue.add(key)
        self._update_gauges()
        self.metrics.track_queues(
            workqueue_depth=lambda: len(self.queue),
            workqueue_oldest=lambda: self.queue.oldest_wait(now=time.monotonic()),
            probe_queue_oldest=lambda: self.capacity.oldest_wait(now=time.monotonic()),
        )
        logger.info(
            "controller started: %d Slot(s), %d probe Job(s) already running, cap %d",
            len(keys),
            self.capacity.running,
            self.config.max_concurrent_probes,
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
        now = time.monotonic()
        return [
            f"{worker} on {key[0]}/{key[1]} for {now - since:.0f}s"
            for worker, (key, since) in self._busy.items()
            if now - since > STUCK_AFTER
        ] + [f"{task.get_name()} died" for task in self._workers if task.done()]

    # Feeds from the caches
    def _slot_changed(self, key: SlotKey, old: Object | None, new: Object | None) -> None:
        self.queue.add(key)

    def _impostor(self, slot: SlotKey, job: Object) -> None:
        """A Job imitates `slot`'s probe (labels or owner name it, identity does not): ignored, reported once."""
        meta = job.get("metadata") or {}
        uid = str(meta.get("uid"))
        if uid in self._impostors_seen:
            return
        self._impostors_seen[uid] = None
        while len(self._impostors_seen) > IMPOSTORS_REMEMBERED:
            self._impostors_seen.popitem(last=False)
        self.metrics.impostors.labels("Job").inc()
        where = f"{meta.get('namespace')}/{meta.get('name')}"
        message = (
            f"Job {where} carries this Slot's probe labels but is not one of its Jobs (a Slot's Jobs are in its "
            f"namespace, controlled by its uid): ignored"
        )
        logger.warning("slot %s/%s: %s", *slot, message)
        self.impostor_reports.setdefault(slot, []).append(message)
        self.queue.add(slot)

    def _claim_changed(self, claim: Key) -> None:
        if self.cache is None:
            return  # the initial listing: start() reconciles every Slot anyway
        for key in self.cache.slots_of_claim(*claim):
            self.queue.add(key)

    @property
    def queue_depth(self) -> int:
        return self.capacity.waiting

    @property
    def probes_running(self) -> int:
        return self.capacity.running

    # Worker loop
    async def _work(self, worker: str) -> None:
        while True:
            key = await self.queue.get()
            self._busy[worker] = (key, time.monotonic())
            try:
                await self.reconcile(key)
                self._errors.pop(key, None)
                self._conflicts.pop(key, None)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                self.metrics.reconcile_failed(status=exc.status, reason=exc.reason)
                if exc.status == 409:
                    await self._refresh(key)
                else:
                    self._retry_later(key, exc)
            except Exception as exc:
                self.metrics.reconcile_failed(status=None, reason="")
                self._retry_later(key, exc)
            finally:
                self._busy.pop(worker, None)
                self.queue.done(key)

    async def _refresh(self, key: SlotKey) -> None:
        """A write conflicted: the cache is behind. Read the Slot afresh and try again, with a growing delay."""
        conflicts = self._conflicts.get(key, 0) + 1
        self._conflicts[key] = conflicts
        logger.debug("slot %s/%s changed under a write (%d); reading it again", *key, conflicts)
        try:
            fresh = await self.store.get_slot(*key)
        except ApiError as exc:
            self._retry_later(key, exc)
            return
        if fresh is not None and self.cache is not None:
            self.cache.wrote_slot(fresh)
        self.queue.add_after(key, min(CONFLICT_RETRY_BASE * 2 ** (conflicts - 1), CONFLICT_RETRY_MAX))

    def _retry_later(self, key: SlotKey, exc: Exception) -> None:
        """An API error or a bug: try this Slot again with a per-Slot exponential delay."""
        failures = self._errors.get(key, 0) + 1
        self._errors[key] = failures
        delay = min(ERROR_RETRY_BASE * 2 ** (failures - 1), ERROR_RETRY_MAX)
        log = logger.warning if isinstance(exc, ApiError | OSError) else logger.exception
        log("reconcile of slot %s/%s failed (retry in %.0fs): %s", *key, delay, exc)
        self.queue.add_after(key, delay)

    # Cap bookkeeping
    def release(self, key: SlotKey) -> None:
        """`key` no longer holds a place or waits for one; the places freed go to the longest waiters."""
        for granted in self.capacity.release(key):
            self.queue.add(granted)
        self._update_gauges()

    def _forget(self, key: SlotKey) -> None:
        self.release(key)
        self.started.pop(key, None)
        self.unspread.discard(key)
        self._errors.pop(key, None)
        self._conflicts.pop(key, None)
        self.queue.forget(key)
        self.metrics.forget_slot(*key)

    def _update_gauges(self) -> None:
        self.metrics.queue_depth.set(self.capacity.waiting)
        self.metrics.running.set(self.capacity.running)

    # Reconcile
    async def reconcile(self, key: SlotKey) -> None:
        assert self.cache is not None, "start() first"
        slot = self.cache.slot(key)
        if slot is None or (slot.get("metadata") or {}).get("deletionTimestamp"):
            self._forget(key)
            return
        await _Step(self, self.cache, slot).run()


class _Step:
    """One reconcile of one Slot, from the cached Slot; `stored` is its status as the API last had it."""

    def __init__(self, controller: Controller, cache: Cache, slot: Object) -> None:
        self.c = controller
        self.cache = cache
        self.slot = slot
        meta = slot["metadata"]
        self.key: SlotKey = (str(meta["namespace"]), str(meta["name"]))
        self.uid = str(meta["uid"])
        self.generation = int(meta.get("generation") or 1)
        self.now = controller.clock()
        self.working: dict[str, Any] = dict(slot.get("status") or {})  # what this reconcile builds on
        self.interval: datetime.timedelta | None = None  # the spec's, once it parses

    @property
    def stored(self) -> Mapping[str, Any]:
        return self.slot.get("status") or {}

    async def run(self) -> None:
        config = self.c.config
        for message in self.c.impostor_reports.pop(self.key, ()):
            await self._event("Warning", "ImpostorIgnored", message)
        try:
            spec = parse_spec(
                self.slot.get("spec") or {},
                default_interval=config.default_interval,
                default_timeout=config.default_timeout,
            )
        except InvalidSpec as exc:
            await self._invalid(str(exc))
            return
        self.interval = spec.interval
        if await self._follow_probe(spec):
            return  # a probe is running: its Job's and pod's events (or the deadline wake-up) bring us back
        if await self._follow_migration(spec) or await self._answer_migration_request(spec):
            self.c.release(self.key)  # an ownership migration runs: no probe meanwhile, nor a place in line
            return
        await self._schedule_next(spec)

    async def _invalid(self, message: str) -> None:
        # A probe of a spec that is no longer valid answers nothing useful: stop it and free its place.
        job = schedule.current_job(self.working, self.cache.slot_jobs(self.key[0], self.uid))
        if job is not None and not is_finished(job):
            await self._delete(job)
        self.c.started.pop(self.key, None)
        self.c.release(self.key)
        was_invalid = (self.working.get("lastProbe") or {}).get("reason") == FailureReason.INVALID_SPEC or any(
            c.get("reason") == FailureReason.INVALID_SPEC for c in self.working.get("conditions") or ()
        )
        await self._write(
            status_logic.invalid_spec(self.working, generation=self.generation, message=message, now=self.now)
        )
        if not was_invalid:
            await self._event("Warning", FailureReason.INVALID_SPEC, message)

    async def _follow_probe(self, spec: SlotSpec) -> bool:
        """Follow the probe in flight: adopt it, record its outcome, or stop it when the spec moved on.

        Returns True while the probe is still running.
        """
        namespace = self.key[0]
        own_jobs = self.cache.slot_jobs(namespace, self.uid)
        recorded = ProbeRef.from_status(self.working.get("currentProbe"))
        await self._stop_lingering(own_jobs, recorded)
        job = schedule.current_job(self.working, own_jobs)
        if job is None:
            created = self.c.started.pop(self.key, None)
            if created is not None:  # this process created or adopted a Job for this Slot, and it is gone
                self.c.release(self.key)
                if recorded is not None and recorded.job_name == created:
                    message = f"probe Job {created} was deleted before it reported"
                    await self._record(recorded, NoVerdict(reason=FailureReason.JOB_LOST, message=message), spec)
            return False
        job_name = str(job["metadata"]["name"])
        pods = self.cache.job_pods(namespace, str(job["metadata"]["uid"]))
        probe = recorded if recorded is not None and recorded.job_name == job_name else _adopted(job)
        if probe.generation < self.generation and not is_finished(job):
            logger.info(
                "slot %s/%s: spec changed to generation %d, stopping probe %s", *self.key, self.generation, job_name
            )
            await self._delete(job)
            self._done_with(job_name)
            self.working.pop("currentProbe", None)  # the next write (the new generation's intent) drops it
            return False
        outcome: Outcome = classify(job, pods, now=self.now)
        if isinstance(outcome, Running):
            self.c.capacity.adopt(self.key, job_name)
            self.c.started[self.key] = job_name
            self.c._update_gauges()
            if recorded is None or recorded.job_name != job_name:  # a Job from an older run: record it
                await self._write(
                    status_logic.probing(self.working, generation=self.generation, probe=probe, now=self.now)
                )
            deadline = _started_at(job, probe) + spec.timeout + DEADLINE_GRACE
            if deadline <= self.now:
                await self._reread_job(job_name)
            else:
                wake = min(deadline, outcome.until) if outcome.until is not None else deadline
                self.c.queue.add_after(self.key, max((wake - self.now).total_seconds(), 0.05))
            return True
        await self._record(probe, outcome, spec, started=_started_at(job, probe), pods=pods)
        if outcome.stop_job:
            await self._delete(job)
        self._done_with(job_name)
        return False

    async def _stop_lingering(self, own_jobs: list[Object], recorded: ProbeRef | None) -> None:
        """The last outcome's Job, when it is still running though it had to be stopped (a pull failure, say).

        Its outcome is in status already; the Job controller may still be catching up (the pod's exit code
        was the verdict), or the delete after the outcome did not get through: stop it again.
        """
        last = (self.working.get("lastProbe") or {}).get("jobName")
        if recorded is not None and recorded.job_name == last:
            return
        for job in own_jobs:
            if job["metadata"]["name"] != last or is_finished(job):
                continue
            pods = self.cache.job_pods(self.key[0], str(job["metadata"]["uid"]))
            lingering = classify(job, pods, now=self.now)
            if not isinstance(lingering, Running) and lingering.stop_job:
                await self._delete(job)

    def _done_with(self, job_name: str) -> None:
        if self.c.started.get(self.key) == job_name:
            del self.c.started[self.key]
        if self.c.capacity.holds(self.key):
            self.c.release(self.key)

    async def _reread_job(self, job_name: str) -> None:
        """Past the deadline and the cache still says running: read the Job afresh (the watch may be behind)."""
        fresh = await self.c.store.get_job(self.key[0], job_name)
        if fresh is not None:
            self.cache.wrote_job(fresh)
        self.c.queue.add_after(self.key, DEADLINE_GRACE.total_seconds())

    async def _schedule_next(self, spec: SlotSpec) -> None:
        request = schedule.manual_request((self.slot.get("metadata") or {}).get("annotations"))
        claim = self.cache.claim(self.key[0], spec.claim_name)
        trigger, due_at = schedule.due(
            self.working, generation=self.generation, request=request, claim_exists=claim is not None, now=self.now
        )
        first_look = self.key in self.c.unspread
        self.c.unspread.discard(self.key)
        if spec.suspend or trigger is None:
            self.c.release(self.key)
            await self._write(
                status_logic.idle(self.working, generation=self.generation, suspended=spec.suspend, now=self.now)
            )
            if due_at is not None and not spec.suspend:
                self.c.queue.add_after(self.key, (due_at - self.now).total_seconds())
            return
        if first_look and trigger.kind in ("interval", "retry") and not self.c.capacity.holds(self.key):
            # Overdue periodic probes found at start-up are spread, so a restarted operator does not wake
            # every Slot at once: a stable offset per Slot within a window that grows with their number.
            delay = schedule.spread(self.uid, window=min(spec.interval, self.c.spread_window))
            if delay.total_seconds() >= 1:
                self.c.queue.add_after(self.key, delay.total_seconds())
                return
        probe = self._intent(spec, trigger)
        position = self.c.capacity.acquire(self.key, now=time.monotonic())
        self.c._update_gauges()
        if position is not None:
            if ProbeRef.from_status(self.working.get("currentProbe")) != probe:
                await self._write(
                    status_logic.queued(
                        self.working, generation=self.generation, probe=probe, ahead=position, now=self.now
                    )
                )
            return
        try:
            await self._start(spec, probe, claim)
        except BaseException:
            self.c.release(self.key)
            raise

    def _intent(self, spec: SlotSpec, trigger: schedule.Trigger) -> ProbeRef:
        """The probe this status calls for; its Job name is deterministic, so two deciders pick the same one."""
        recorded = ProbeRef.from_status(self.working.get("currentProbe"))
        last = self.working.get("lastProbe") or {}
        previous = last.get("jobName") or last.get("completionTime") or ""  # failures without a Job have no name
        failures = int(self.working.get("consecutiveProbeFailures") or 0)
        token = f"{previous}/{self.generation}/{trigger.kind}/{trigger.request or ''}/{failures}"
        name = jobs.job_name(self.key[1], self.uid, token)
        if recorded is not None and recorded.job_name == name:
            return recorded  # already announced (queued, or an earlier attempt to start it)
        return ProbeRef(
            job_name=name,
            image=spec.image,
            generation=self.generation,
            trigger=trigger.kind,
            request=trigger.request,
            start_time=self.now,
        )

    async def _start(self, spec: SlotSpec, probe: ProbeRef, claim: Object | None) -> None:
        namespace = self.key[0]
        placement = schedule.place(claim, spec.claim_name, self.cache.claim_users(namespace, spec.claim_name))
        if isinstance(placement, NoVerdict):
            self.c.release(self.key)
            trigger = schedule.Trigger(kind=probe.trigger, request=probe.request)
            await self._record(None, placement, spec, trigger=trigger)
            return
        if ProbeRef.from_status(self.working.get("currentProbe")) != probe:
            # Intent first: if the operator dies after this write, the next run adopts or recreates this Job.
            await self._write(status_logic.probing(self.working, generation=self.generation, probe=probe, now=self.now))
        manifest = jobs.build_probe_job(
            name=probe.job_name,
            namespace=namespace,
            slot_name=self.key[1],
            slot_uid=self.uid,
            generation=self.generation,
            trigger=probe.trigger,
            spec=spec,
            node=placement.node,
            ttl=self.c.config.job_ttl,
            audit_image=self.c.config.audit_image or None,
        )
        trigger = schedule.Trigger(kind=probe.trigger, request=probe.request)
        try:
            created, job = await self.c.store.create_job(manifest)
        except JobRejected as exc:
            # The API server refused the Job (a field it calls invalid, quota, admission): say so in conditions.
            self.c.release(self.key)
            await self._record(None, exc.outcome, spec, trigger=trigger)
            return
        if job is not None and slot_owner_uid(job) != self.uid:
            # The name is taken by a Job that is not this Slot's: never adopted. The next attempt has another name.
            self.c.release(self.key)
            message = f"a Job named {probe.job_name} already exists in the namespace and is not this Slot's"
            await self._record(
                None, NoVerdict(reason=FailureReason.JOB_REJECTED, message=message), spec, trigger=trigger
            )
            return
        if job is not None:
            self.cache.wrote_job(job)
        self.c.capacity.adopt(self.key, probe.job_name)
        self.c.started[self.key] = probe.job_name
        self.c._update_gauges()
        logger.info(
            "slot %s/%s: probe %s %s (%s%s)",
            *self.key,
            probe.job_name,
            "started" if created else "already running",
            probe.trigger,
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
        started: datetime.datetime | None = None,
        pods: list[Object] | None = None,
    ) -> None:
        before = self.working
        old_phase = status_logic.phase_of(before)
        audit = self._audit(spec, outcome, pods or [])
        if isinstance(outcome, Verdict):
            assert probe is not None
            # Flux-style jitter: probes of Slots created together drift apart instead of waking together forever.
            interval = schedule.jittered(spec.interval, seed=f"{self.uid}/{probe.job_name}")
            new = status_logic.verdict(
                before,
                generation=self.generation,
                probe=probe,
                outcome=outcome,
                interval=interval,
                audit=audit,
                now=self.now,
            )
            result = outcome.phase.value
        else:
            failures = int(before.get("consecutiveProbeFailures") or 0) + 1
            retry_at = self.now + schedule.retry_delay(
                failures, base=self.c.config.retry_base, cap=self.c.config.retry_max
            )
            new = status_logic.no_verdict(
                before,
                generation=self.generation,
                probe=probe,
                outcome=outcome,
                trigger=trigger.kind if trigger else "",
                request=trigger.request if trigger else None,
                retry_at=retry_at,
                audit=audit,
                now=self.now,
            )
            result = outcome.reason.value
        await self._write(new)
        self.c.metrics.probe_finished(
            *self.key,
            result=result,
            verdict=isinstance(outcome, Verdict),
            seconds=((outcome.finished or self.now) - started).total_seconds() if started is not None else None,
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

    def _audit(self, spec: SlotSpec, outcome: Verdict | NoVerdict, pods: list[Object]) -> status_logic.AuditContext:
        """The audit the probe pod ran (in the verdict's own write: no extra status write per probe)."""
        config = self.c.config
        # A probe that gave no verdict leaves ownership as it was, unless its pod's audit reported.
        result = audit_result(pods) if config.audit_image else None
        if result is None and isinstance(outcome, Verdict):
            result = ownership.AuditUnavailable(
                reason="AuditFailed" if config.audit_image else "AuditDisabled",
                message="the ownership audit had not finished when the probe gave its verdict"
                if config.audit_image
                else "the operator runs without --audit-image: no ownership audit",
            )
        claim = self.cache.claim(self.key[0], spec.claim_name)
        return status_logic.AuditContext(
            result=result,
            expected=(spec.run_as_user, spec.run_as_group),
            slot=self.key[1],
            slot_uid=self.uid,
            claim_uid=str(claim["metadata"]["uid"]) if claim is not None else None,
            policy=config.migration_policy,
        )

    # Ownership migration (docs/design.md §2.4): two keys, one Job, then a probe.
    def _plan_migration(self, spec: SlotSpec, token: str) -> ownership.MigrationPlan | ownership.Refusal:
        """Everything checked afresh: the keys, the audit on record and its approval, the claim and who uses it."""
        namespace = self.key[0]
        own_jobs = {
            str(job["metadata"]["uid"])
            for job in (
                *self.cache.slot_jobs(namespace, self.uid),
                *self.cache.slot_migration_jobs(namespace, self.uid),
            )
        }
        users = sorted(
            str((pod.get("metadata") or {}).get("name"))
            for pod in self.cache.claim_users(namespace, spec.claim_name)
            # This Slot's own probe pods (by identity: their Job is one of this Slot's) may linger a moment.
            if job_owner_uid(pod) not in own_jobs
        )
        claim = self.cache.claim(namespace, spec.claim_name)
        return ownership.plan_migration(
            self.working,
            expected=(spec.run_as_user, spec.run_as_group),
            policy=self.c.config.migration_policy,
            token=token,
            claim_uid=str(claim["metadata"]["uid"]) if claim is not None else None,
            users=users,
        )

    async def _answer_migration_request(self, spec: SlotSpec) -> bool:
        """A new migration request: refuse it, saying why, or start its Job. True once a Job runs."""
        request = ownership.migration_request((self.slot.get("metadata") or {}).get("annotations"))
        if request is None or ownership.answered(self.working, request):
            return False
        plan = self._plan_migration(spec, request.token)
        if isinstance(plan, ownership.Refusal):
            await self._migration_refused(request, plan)
            return False
        migration = ownership.MigrationRef(
            job_name=jobs.job_name(self.key[1], self.uid, f"migrate/{request.token}/{request.dry_run}", kind="migrate"),
            request=request.token,
            dry_run=request.dry_run,
            old=plan.old,
            new=plan.new,
            start_time=self.now,
        )
        await self._write(
            status_logic.migration_started(self.working, generation=self.generation, migration=migration, now=self.now)
        )
        return await self._create_migration(spec, migration)

    async def _create_migration(self, spec: SlotSpec, migration: ownership.MigrationRef) -> bool:
        manifest = jobs.build_migration_job(
            name=migration.job_name,
            namespace=self.key[0],
            slot_name=self.key[1],
            slot_uid=self.uid,
            request=migration.request,
            spec=spec,
            image=self.c.config.audit_image,
            old=migration.old,
            dry_run=migration.dry_run,
            ttl=self.c.config.job_ttl,
        )
        try:
            created, job = await self.c.store.create_job(manifest)
        except JobRejected as exc:
            message = f"the API server refused the migration Job (HTTP {exc.error.status}): {exc.error.message}"
            refusal = (
                ownership.pod_security_refusal(exc.error.message)
                if "PodSecurity" in exc.error.message
                else ownership.Refusal(reason="MigrationFailed", message=message)
            )
            request = ownership.MigrationRequest(token=migration.request, dry_run=migration.dry_run)
            await self._migration_refused(request, refusal, migration=migration)
            return False
        if job is None or slot_owner_uid(job) != self.uid:
            # A Job of that name that is not this Slot's (made by someone else): never adopted, never deleted.
            refusal = ownership.Refusal(
                reason="MigrationFailed",
                message=f"a Job named {migration.job_name} exists in the namespace and is not this Slot's",
            )
            request = ownership.MigrationRequest(token=migration.request, dry_run=migration.dry_run)
            await self._migration_refused(request, refusal, migration=migration)
            return False
        self.cache.wrote_job(job)
        # Its uid in status: from now on, a missing Job was deleted (cancelled), not never created.
        migration = dataclasses.replace(migration, job_uid=str(job["metadata"]["uid"]))
        await self._write(
            status_logic.migration_job_created(
                self.working, generation=self.generation, migration=migration, now=self.now
            )
        )
        logger.info(
            "slot %s/%s: ownership migration %s %s (%s -> %s%s)",
            *self.key,
            migration.job_name,
            "started" if created else "already running",
            ownership.owner(*migration.old),
            ownership.owner(*migration.new),
            ", dry run" if migration.dry_run else "",
        )
        self.c.queue.add_after(self.key, MIGRATION_POD_GRACE.total_seconds())
        return True

    async def _cancel_migration(self, migration: ownership.MigrationRef, job: Object | None, why: str) -> None:
        if job is not None:
            await self._delete(job)
        message = f"{why}: the migration was stopped and is not started again"
        if not migration.dry_run:
            message += "; entries it re-owned before it stopped stay re-owned, and a probe runs now"
        await self._write(
            status_logic.migration_cancelled(
                self.working, generation=self.generation, migration=migration, message=message, now=self.now
            )
        )
        self.c.metrics.migrations.labels("MigrationCancelled").inc()
        logger.info("slot %s/%s: ownership migration cancelled: %s", *self.key, message)
        await self._event("Warning", "OwnershipMigrationCancelled", message)

    async def _follow_migration(self, spec: SlotSpec) -> bool:
        """Follow the migration in flight: create its Job if the intent has none, record its end. True while it runs."""
        migration = ownership.MigrationRef.from_status(self.working.get("currentOwnershipMigration"))
        if migration is None:
            return False
        namespace = self.key[0]
        job = next(
            (
                j
                for j in self.cache.slot_migration_jobs(namespace, self.uid)
                if j["metadata"]["name"] == migration.job_name
            ),
            None,
        )
        request = ownership.migration_request((self.slot.get("metadata") or {}).get("annotations"))
        if request is None or request.token != migration.request:
            await self._cancel_migration(migration, job, "the request annotation was removed or replaced")
            return False
        if job is not None and migration.job_uid and str(job["metadata"]["uid"]) != migration.job_uid:
            job = None  # a later Job of the same name: not the one this migration made
        if job is None and migration.job_uid:
            await self._cancel_migration(migration, None, f"the migration Job {migration.job_name} was deleted")
            return False
        if job is None:
            # Intent recorded, its Job not (the operator stopped in between): start it only if everything still holds.
            plan = self._plan_migration(spec, migration.request)
            if isinstance(plan, ownership.Refusal) or (plan.old, plan.new) != (migration.old, migration.new):
                refusal = (
                    plan
                    if isinstance(plan, ownership.Refusal)
                    else ownership.Refusal(
                        reason="AuditUnavailable", message="the audit on record changed since the request was accepted"
                    )
                )
                await self._migration_refused(request, refusal, migration=migration)
                return False
            return await self._create_migration(spec, migration)
        pods = self.cache.job_pods(namespace, str(job["metadata"]["uid"]))
        done = ownership.migration_outcome(job, pods)
        if done is None:
            age = self.now - (timestamps.parse_time(job["metadata"].get("creationTimestamp")) or self.now)
            if pods or age < MIGRATION_POD_GRACE:
                self.c.queue.add_after(self.key, MIGRATION_RECHECK.total_seconds())
                return True
            failure = await self.c.store.pod_creation_failure(namespace, migration.job_name)
            if failure is None:
                self.c.queue.add_after(self.key, MIGRATION_RECHECK.total_seconds())
                return True
            refusal = (
                ownership.pod_security_refusal(failure)
                if "PodSecurity" in failure
                else ownership.Refusal(
                    reason="MigrationFailed", message=f"the Job controller could not create the pod: {failure}"
                )
            )
            await self._delete(job)
            await self._migration_refused(request, refusal, migration=migration)
            return False
        await self._write(
            status_logic.migration_finished(
                self.working, generation=self.generation, migration=migration, done=done, now=self.now
            )
        )
        if done.stop_job:
            await self._delete(job)
        last = self.working.get("lastOwnershipMigration") or {}
        reason, message = str(last.get("reason")), str(last.get("message"))
        self.c.metrics.migrations.labels(reason).inc()
        kind = "Warning" if reason == "MigrationFailed" else "Normal"
        await self._event(
            kind,
            {"Migrated": "OwnershipMigrated", "DryRun": "OwnershipMigrationDryRun"}.get(
                reason, "OwnershipMigrationFailed"
            ),
            message,
        )
        logger.info("slot %s/%s: ownership migration %s: %s", *self.key, reason, message)
        return False

    async def _migration_refused(
        self,
        request: ownership.MigrationRequest,
        refusal: ownership.Refusal,
        *,
        migration: ownership.MigrationRef | None = None,
    ) -> None:
        await self._write(
            status_logic.migration_refused(
                self.working,
                generation=self.generation,
                request=request,
                refusal=refusal,
                migration=migration,
                now=self.now,
            )
        )
        self.c.metrics.migrations.labels(refusal.reason).inc()
        logger.info("slot %s/%s: ownership migration refused (%s): %s", *self.key, refusal.reason, refusal.message)
        await self._event("Warning", "OwnershipMigrationRefused", f"{refusal.reason}: {refusal.message}")

    async def _delete(self, job: Mapping[str, Any]) -> None:
        """Delete one of this Slot's own Jobs, as found by identity; only that very object (uid precondition)."""
        meta = job["metadata"]
        await self.c.store.delete_job(self.key[0], str(meta["name"]), uid=str(meta["uid"]))

    async def _event(self, kind: str, reason: str, message: str) -> None:
        await self.c.store.events.emit(self.slot, kind=kind, reason=reason, message=message, now=self.now)

    async def _write(self, new: dict[str, Any]) -> None:
        """Patch only what changed since the API last had it (watch replays and no-op reconciles cost nothing)."""
        patch = status_logic.diff(self.stored, new)
        if patch:
            # Conditional on the version read: a concurrent writer makes this fail (409) and the Slot is read again.
            answer = await self.c.store.patch_slot_status(
                self.key[0], self.key[1], patch, resource_version=str(self.slot["metadata"]["resourceVersion"])
            )
            self.slot = self.cache.wrote_slot(answer)
        self.working = dict(self.slot.get("status") or {}) if patch else new
        self._observe_metrics()

    def _observe_metrics(self) -> None:
        status = self.working
        self.c.metrics.observe_slot(report.view({**self.slot, "status": status}), interval=self.interval)
        matches = (find(status.get("conditions") or (), OWNERSHIP_MATCHES) or {}).get("status")
        self.c.metrics.observe_ownership(
            *self.key,
            matches={"True": True, "False": False}.get(str(matches)),
            credentials_modified=timestamps.parse_time((status.get("credentials") or {}).get("lastModified")),
        )


def _started_at(job: Mapping[str, Any], probe: ProbeRef) -> datetime.datetime:
    """When the probe's Job was created (a queued probe's intent is older than its Job)."""
    return timestamps.parse_time((job.get("metadata") or {}).get("creationTimestamp")) or probe.start_time


def _adopted(job: Mapping[str, Any]) -> ProbeRef:
    """Describe a Job found running without a matching status record (written by an older run)."""
    meta = job.get("metadata") or {}
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return ProbeRef(
        job_name=str(meta.get("name")),
        image=str(containers[0].get("image") or ""),
        generation=schedule.job_generation(job),
        trigger=str((meta.get("annotations") or {}).get(names.ANNOTATION_TRIGGER) or "adopted"),
        request=None,
        start_time=timestamps.parse_time(meta.get("creationTimestamp")) or utcnow(),
    )
