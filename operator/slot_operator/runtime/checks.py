"""`reconcile(key) -> Result` for one SlotImageCheck: its selection, one probe of the candidate per Slot, its answer.

Decisions come from logic/checking.py; this module acts on them: the check's status (one conditional
write per reconcile that changes it), its probe Jobs (created owned by the check, stopped by uid), its
places under the probe cap (background keys: Slot probes go first) and its deletion after its TTL. It
never writes to a Slot: no status, no Event (docs/design.md §2.5).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from slot_operator.config import Config
from slot_operator.kube.cache import Cache
from slot_operator.kube.informer import Key, Object
from slot_operator.kube.writer import JobRejected
from slot_operator.logic import checking, jobs, names, probing, schedule, timestamps
from slot_operator.logic import status as status_logic
from slot_operator.logic.identity import check_owner_uid
from slot_operator.logic.outcome import NoVerdict
from slot_operator.logic.spec import InvalidSpec
from slot_operator.logic.verdict import FailureReason
from slot_operator.runtime.capacity import Capacity, CheckProbe, ProbeKey
from slot_operator.runtime.reconciler import Result

logger = logging.getLogger(__name__)


class Writer(Protocol):
    """The writes a check's reconcile makes (kube/writer.py)."""

    async def patch_check_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]: ...

    async def delete_check(self, namespace: str, name: str, *, uid: str) -> None: ...

    async def create_job(self, manifest: Mapping[str, Any]) -> tuple[bool, dict[str, Any] | None]: ...

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list_slots(self, namespace: str) -> list[dict[str, Any]]: ...

    async def delete_job(self, namespace: str, name: str, *, uid: str) -> None: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckCollaborators:
    cache: Cache
    writer: Writer
    capacity: Capacity[ProbeKey]
    config: Config
    clock: Callable[[], datetime.datetime]
    wake: Callable[[ProbeKey], None]  # a place under the cap was handed to this key


@dataclasses.dataclass(kw_only=True)
class _Pass:
    """One reconcile of one check: what it read, and what it has decided so far."""

    check: Object
    spec: checking.CheckSpec
    given: checking.Given
    now: datetime.datetime
    results: list[checking.Result]
    jobs: dict[str, Object] = dataclasses.field(default_factory=dict)  # the check's Jobs by name
    started: datetime.datetime | None = None  # a probe of it started in this pass
    stop: list[Mapping[str, Any]] = dataclasses.field(default_factory=list)  # Jobs to stop once the answers are written
    wake_at: datetime.datetime | None = None

    @property
    def key(self) -> Key:
        meta = self.check["metadata"]
        return str(meta["namespace"]), str(meta["name"])

    @property
    def uid(self) -> str:
        return str(self.check["metadata"]["uid"])

    def wake(self, at: datetime.datetime) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)


class CheckReconciler:
    def __init__(self, using: CheckCollaborators) -> None:
        self.using = using
        self._places: dict[Key, set[CheckProbe]] = {}  # a check's keys that hold or wait for a place

    async def reconcile(self, key: Key) -> Result:
        check = self.using.cache.check(key)
        if check is None or (check.get("metadata") or {}).get("deletionTimestamp"):
            self.forget(key)  # its Jobs go with it (their ownerReference)
            return Result()
        try:
            spec = checking.parse_check_spec(check.get("spec") or {})
        except InvalidSpec as exc:
            logger.warning("check %s/%s: %s: not probed", *key, exc)
            return Result()
        now = self.using.clock()
        status = check.get("status") or {}
        if status.get("phase") in checking.FINAL_PHASES:
            return await self._finished(check, spec, now=now)
        work = _Pass(check=check, spec=spec, given=self._given(check, spec), now=now, results=[])
        if not status.get("results") and not int(status.get("observedGeneration") or 0):
            selected = await self._select(work)
            if selected is None:
                return Result(requeue_after=checking.SELECT_RETRY.total_seconds())
            check = selected
        work.results = list((check.get("status") or {}).get("results") or ())
        work.jobs = {str(job["metadata"]["name"]): job for job in self.using.cache.check_jobs(key[0], work.uid)}
        for index, result in enumerate(work.results):
            if result.get("phase") == checking.PENDING:
                work.results[index] = await self._advance(work, result)
        await self._write(work)
        for job in work.stop:
            meta = job["metadata"]
            await self.using.writer.delete_job(work.key[0], str(meta["name"]), uid=str(meta["uid"]))
        if (work.check.get("status") or {}).get("phase") in checking.FINAL_PHASES:
            self.forget(key)
            return await self._finished(work.check, spec, now=now)
        if work.wake_at is None:
            return Result()
        return Result(requeue_after=max((work.wake_at - now).total_seconds(), 0.0))

    def adopt(self, probe: CheckProbe, job_name: str) -> None:
        """A check's probe found running at start-up holds its place (the cap holds across restarts)."""
        self._places.setdefault((probe.namespace, probe.check), set()).add(probe)
        self.using.capacity.adopt(probe, job_name)

    def forget(self, key: Key) -> None:
        """The check is gone or finished: its places in the cap and in line go to others."""
        for probe in self._places.pop(key, set()):
            for granted in self.using.capacity.release(probe):
                self.using.wake(granted)

    def _given(self, check: Object, spec: checking.CheckSpec) -> checking.Given:
        config = self.using.config
        return checking.Given(
            check_uid=str(check["metadata"]["uid"]),
            check=spec,
            default_timeout=config.default_timeout,
            retry_base=config.retry_base,
            retry_max=config.retry_max,
            audit_image=config.audit_image,
            policy=config.migration_policy,
        )

    async def _finished(self, check: Object, spec: checking.CheckSpec, *, now: datetime.datetime) -> Result:
        """A finished check waits for its TTL, then is deleted (its Jobs with it)."""
        self.forget((str(check["metadata"]["namespace"]), str(check["metadata"]["name"])))
        at = checking.expired(check.get("status") or {}, spec, now=now)
        if at is not None and at > now:
            return Result(requeue_after=(at - now).total_seconds())
        meta = check["metadata"]
        logger.info("check %s/%s: finished %s ago: deleted", meta["namespace"], meta["name"], spec.ttl)
        await self.using.writer.delete_check(str(meta["namespace"]), str(meta["name"]), uid=str(meta["uid"]))
        return Result()

    async def _select(self, work: _Pass) -> Object | None:
        """Freeze the selection: a Pending result for each Slot the selector selects now, written before any probe.

        Every Slot the API server has when the check is first seen is in it: the selection waits (None) while the
        cache lags behind a fresh LIST (Slots created just before the check), up to SELECT_PATIENCE.
        """
        cached = self.using.cache.slots_in(work.key[0])
        behind = checking.unseen(await self.using.writer.list_slots(work.key[0]), cached)
        created = timestamps.parse_time(work.check["metadata"].get("creationTimestamp"))
        if not checking.select_now(behind, created=created, now=work.now):
            return None
        if behind:
            logger.warning("check %s/%s: selected without %d Slot(s) the cache has not seen: %s",
                           *work.key, len(behind), ", ".join(behind[:5]))  # fmt: skip
        selected = checking.select(cached, work.spec)
        logger.info("check %s/%s: %d Slot(s) selected for %s", *work.key, len(selected), work.spec.image)
        work.results = selected
        await self._write(work)
        return work.check

    async def _advance(self, work: _Pass, result: checking.Result) -> checking.Result:
        """One Pending result one step on: its probe followed, started, or its answer taken."""
        cache = self.using.cache
        namespace = work.key[0]
        probe = CheckProbe(namespace=namespace, check=work.key[1], slot=str(result["slot"]))
        in_line = self.using.capacity.is_waiting(probe)
        job = None if in_line else work.jobs.get(checking.job_name(check_uid=work.uid, result=result))
        pods = cache.job_pods(namespace, str(job["metadata"]["uid"])) if job is not None else []
        facts = checking.Facts(slot=cache.slot((namespace, str(result["slot"]))), job=job, pods=pods, in_line=in_line)
        step = checking.step(result, facts, work.given, now=work.now)
        if isinstance(step, checking.InLine):
            return result
        if isinstance(step, checking.Answer):
            self._release(work.key, probe)
            if step.stop is not None:
                work.stop.append(step.stop)
            return step.result
        if isinstance(step, checking.Wait):
            await self._wait(work, probe, step)
            return result
        return await self._start(work, probe, result, step)

    async def _wait(self, work: _Pass, probe: CheckProbe, step: checking.Wait) -> None:
        if step.job is None:  # a retry's backoff: no place meanwhile
            self._release(work.key, probe)
            work.wake(step.wake)
            return
        self.adopt(probe, str(step.job["metadata"]["name"]))
        if step.reread:  # past the deadline and the cache still says running: the watch may be behind
            fresh = await self.using.writer.get_job(work.key[0], str(step.job["metadata"]["name"]))
            if fresh is not None:
                self.using.cache.wrote_job(fresh)
            work.wake(work.now + probing.DEADLINE_GRACE)
        else:
            work.wake(step.wake)

    async def _start(
        self, work: _Pass, probe: CheckProbe, result: checking.Result, step: checking.Start
    ) -> checking.Result:
        """Take a place (after every waiting Slot probe), then the Job; a refusal is an attempt without a verdict."""
        self._places.setdefault(work.key, set()).add(probe)
        if self.using.capacity.acquire(probe, now=time.monotonic()) is not None:
            return result  # in line: the place's hand-over wakes the check
        namespace = work.key[0]
        cache = self.using.cache
        claim = cache.claim(namespace, step.spec.claim_name)
        placement = schedule.place(claim, step.spec.claim_name, cache.claim_users(namespace, step.spec.claim_name))
        if isinstance(placement, NoVerdict):
            self._release(work.key, probe)
            return checking.refused(result, placement, job=None, now=work.now)
        manifest = jobs.build_check_job(
            name=step.job_name,
            namespace=namespace,
            check=jobs.Owner(kind=names.CHECK_KIND, name=work.key[1], uid=work.uid),
            slot_name=str(result["slot"]),
            slot_uid=str(result["slotUID"]),
            attempt=int(result.get("attempts") or 0) + 1,
            spec=step.spec,
            node=placement.node,
            ttl=self.using.config.job_ttl,
            audit_image=self.using.config.audit_image or None,
        )
        try:
            _, job = await self.using.writer.create_job(manifest)
        except JobRejected as exc:
            self._release(work.key, probe)
            return checking.refused(result, exc.outcome, job=step.job_name, now=work.now)
        if job is not None and check_owner_uid(job) != work.uid:
            self._release(work.key, probe)
            taken = f"a Job named {step.job_name} already exists and is not this check's"
            return checking.refused(result, NoVerdict(reason=FailureReason.JOB_REJECTED, message=taken), job=None,
                                    now=work.now)  # fmt: skip
        if job is not None:
            cache.wrote_job(job)
        self.using.capacity.adopt(probe, step.job_name)
        work.started = work.started or work.now
        work.wake(work.now + step.spec.timeout + probing.DEADLINE_GRACE)
        logger.info("check %s/%s: probe %s of slot %s started", *work.key, step.job_name, result["slot"])
        return {**result, "jobName": step.job_name}

    def _release(self, check: Key, probe: CheckProbe) -> None:
        self._places.get(check, set()).discard(probe)
        capacity = self.using.capacity
        if capacity.holds(probe) or capacity.is_waiting(probe):
            for granted in capacity.release(probe):
                self.using.wake(granted)

    async def _write(self, work: _Pass) -> None:
        """The check's status for the results so far: one conditional merge patch, only of what changed."""
        written = work.check.get("status") or {}
        new = checking.check_status(
            written,
            work.results,
            generation=int(work.check["metadata"].get("generation") or 1),
            image=work.spec.image,
            started=work.started,
            now=work.now,
        )
        patch = status_logic.diff(written, new)
        if not patch:
            return
        meta = work.check["metadata"]
        answer = await self.using.writer.patch_check_status(
            work.key[0], work.key[1], patch, resource_version=str(meta["resourceVersion"])
        )
        work.check = self.using.cache.wrote_check(answer)
        if patch.get("phase") in checking.FINAL_PHASES:
            summary = new.get("summary") or {}
            logger.info("check %s/%s: %s (%s)", *work.key, new.get("phase"), summary)
