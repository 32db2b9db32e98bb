"""The probe side of a Slot's reconcile, decided: pure functions from what is observed to what to do.

runtime/reconciler.py acts on these decisions (writes, Jobs, Events, requeues); nothing here reads
or writes the API. Each decision is a small value saying what to do next, so the transitions of
docs/design.md §2.2-2.3 and §3 read here and are tested without a cluster.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from slot_operator.logic import jobs, names, ownership, schedule, timestamps
from slot_operator.logic import status as status_logic
from slot_operator.logic.outcome import NoVerdict, Outcome, Running, Verdict, audit_result, classify, is_finished
from slot_operator.logic.phases import Phase
from slot_operator.logic.spec import SlotSpec, verdict_fingerprint
from slot_operator.logic.status import ProbeRef
from slot_operator.logic.verdict import FailureReason

Job = Mapping[str, Any]
Pods = Callable[[Job], Sequence[Mapping[str, Any]]]  # a Job's pods
# After a probe's deadline, give the Job controller this long to report before reading the Job afresh.
DEADLINE_GRACE = datetime.timedelta(seconds=30)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """A core/v1 Event on the Slot."""

    kind: str  # Normal or Warning
    reason: str
    message: str


# --- following the probe in flight ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoProbe:
    """No probe of this Slot runs: go on to the migration and the schedule."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lost:
    """The Job this process made or adopted is gone before it reported (`probe` None: nothing on record)."""

    job_name: str
    probe: ProbeRef | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Supersede:
    """The probe judges an older spec than the current generation's: stop it; the new generation is probed next."""

    job: Job


@dataclasses.dataclass(frozen=True, kw_only=True)
class Watch:
    """The probe runs: hold its place, record it if an older run started it, look again at `wake`."""

    job: Job
    probe: ProbeRef
    record_intent: bool  # a Job from an older run, not yet in status; or one status has not named for this generation
    wake: datetime.datetime
    reread: bool  # past its deadline and the cache still says running: read the Job afresh


@dataclasses.dataclass(frozen=True, kw_only=True)
class Conclude:
    """The probe ended: record what it showed (and stop its Job when it would only wait)."""

    job: Job
    probe: ProbeRef
    outcome: Verdict | NoVerdict
    started: datetime.datetime


Follow = NoProbe | Lost | Supersede | Watch | Conclude


def adopted(job: Mapping[str, Any]) -> ProbeRef:
    """Describe a Job found running without a matching status record (written by an older run)."""
    meta = job.get("metadata") or {}
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return ProbeRef(
        job_name=str(meta.get("name")),
        image=str(containers[0].get("image") or ""),
        generation=schedule.job_generation(job),
        trigger=str((meta.get("annotations") or {}).get(names.ANNOTATION_TRIGGER) or "adopted"),
        request=None,
        start_time=timestamps.parse_time(meta.get("creationTimestamp"))
        or datetime.datetime.fromtimestamp(0, datetime.UTC),
    )


def _observed(status: Mapping[str, Any]) -> int:
    return int(status.get("observedGeneration") or 0)


def started_at(job: Mapping[str, Any], probe: ProbeRef) -> datetime.datetime:
    """When the probe's Job was created (a queued probe's intent is older than its Job)."""
    return timestamps.parse_time((job.get("metadata") or {}).get("creationTimestamp")) or probe.start_time


def lingering(status: Mapping[str, Any], jobs_of_slot: Sequence[Job], pods: Pods, *,
              now: datetime.datetime) -> list[Job]:  # fmt: skip
    """The last outcome's Job when it still runs though it had to be stopped (a pull failure, say): stop it again.

    Its outcome is in status already; the delete after it may not have got through.
    """
    last = (status.get("lastProbe") or {}).get("jobName")
    recorded = ProbeRef.from_status(status.get("currentProbe"))
    if not last or (recorded is not None and recorded.job_name == last):
        return []
    stop = []
    for job in jobs_of_slot:
        if job["metadata"]["name"] != last or is_finished(job):
            continue
        outcome = classify(job, pods(job), now=now)
        if not isinstance(outcome, Running) and outcome.stop_job:
            stop.append(job)
    return stop


def answers_for(probe: ProbeRef, *, generation: int, fingerprint: str) -> bool:
    """The probe's verdict answers for the current generation: it probes it, or a generation with the same verdict
    fields (only interval, timeout or suspend changed since; a probe with no specHash answers for its own only)."""
    return probe.generation == generation or (probe.spec_hash is not None and probe.spec_hash == fingerprint)


def follow(
    status: Mapping[str, Any],
    jobs_of_slot: Sequence[Job],
    pods: Pods,
    *,
    generation: int,
    fingerprint: str,
    timeout: datetime.timedelta,
    tracked: str | None,
    now: datetime.datetime,
) -> Follow:
    """What the probe in flight calls for. `tracked`: the Job this process made or adopted for the Slot.

    A new generation stops the probe only when it changed what the probe runs with (`fingerprint`): one that
    changed only interval, timeout or suspend lets it run, and its verdict answers for the new generation."""
    recorded = ProbeRef.from_status(status.get("currentProbe"))
    job = schedule.current_job(status, jobs_of_slot)
    if job is None:
        if tracked:
            return Lost(
                job_name=tracked, probe=recorded if recorded is not None and recorded.job_name == tracked else None
            )
        return NoProbe()
    name = str(job["metadata"]["name"])
    probe = recorded if recorded is not None and recorded.job_name == name else adopted(job)
    if not answers_for(probe, generation=generation, fingerprint=fingerprint) and not is_finished(job):
        return Supersede(job=job)
    outcome: Outcome = classify(job, pods(job), now=now)
    started = started_at(job, probe)
    if isinstance(outcome, Running):
        deadline = started + timeout + DEADLINE_GRACE
        wake = min(deadline, outcome.until) if outcome.until is not None else deadline
        return Watch(
            job=job,
            probe=probe,
            record_intent=recorded is None or recorded.job_name != name or _observed(status) < generation,
            wake=wake,
            reread=deadline <= now,
        )
    return Conclude(job=job, probe=probe, outcome=outcome, started=started)


# --- recording an outcome --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recorded:
    status: status_logic.SlotStatus
    event: Event | None  # a failure, or a change of phase (a repeated verdict is no news)
    result: str  # the verdict's phase, or why there is none (the probe-results metric's label)
    verdict: bool
    seconds: float | None  # how long the probe took, when its start is known


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordInput:
    """What recording an outcome needs besides the status: the Slot, its spec, the audit, the operator's retries."""

    generation: int
    slot_uid: str
    spec: SlotSpec
    audit: status_logic.AuditContext
    retry_base: datetime.timedelta
    retry_max: datetime.timedelta


def _verdict(
    status: Mapping[str, Any], probe: ProbeRef, outcome: Verdict, given: RecordInput, *, now: datetime.datetime
) -> status_logic.SlotStatus:
    """The verdict's status: for the current generation when the probe ran its verdict fields, else the probe's."""
    # Flux-style jitter: probes of Slots created together drift apart instead of waking together forever.
    interval = schedule.jittered(given.spec.interval, seed=f"{given.slot_uid}/{probe.job_name}")
    current = answers_for(probe, generation=given.generation, fingerprint=verdict_fingerprint(given.spec))
    return status_logic.verdict(
        status,
        generation=given.generation,
        probe=probe,
        outcome=outcome,
        interval=interval,
        audit=given.audit,
        speaks_for=given.generation if current else probe.generation,
        now=now,
    )


def record(
    status: Mapping[str, Any],
    probe: ProbeRef | None,
    outcome: Verdict | NoVerdict,
    given: RecordInput,
    *,
    trigger: schedule.Trigger | None = None,
    started: datetime.datetime | None = None,
    now: datetime.datetime,
) -> Recorded:
    """The status that records `outcome`, the Event that announces it, and its metric."""
    old_phase = status_logic.phase_of(status)
    if isinstance(outcome, Verdict):
        assert probe is not None
        new = _verdict(status, probe, outcome, given, now=now)
        event = (
            Event(
                kind="Normal" if outcome.phase is Phase.READY else "Warning",
                reason=outcome.phase.value,
                message=f"{old_phase.value} -> {outcome.phase.value}: {outcome.message}",
            )
            if outcome.phase is not old_phase
            else None
        )
        result = outcome.phase.value
    else:
        failures = int(status.get("consecutiveProbeFailures") or 0) + 1
        new = status_logic.no_verdict(
            status,
            generation=given.generation,
            probe=probe,
            outcome=outcome,
            trigger=trigger.kind if trigger else "",
            request=trigger.request if trigger else None,
            retry_at=now + schedule.retry_delay(failures, base=given.retry_base, cap=given.retry_max),
            audit=given.audit,
            spec_hash=verdict_fingerprint(given.spec),
            now=now,
        )
        event = Event(kind="Warning", reason=outcome.reason.value, message=outcome.message)
        result = outcome.reason.value
    seconds = ((outcome.finished or now) - started).total_seconds() if started is not None else None
    return Recorded(
        status=new,
        event=event,
        result=result,
        verdict=isinstance(outcome, Verdict),
        seconds=seconds,
    )


def lost(job_name: str) -> NoVerdict:
    return NoVerdict(reason=FailureReason.JOB_LOST, message=f"probe Job {job_name} was deleted before it reported")


def audit_context(
    spec: SlotSpec,
    outcome: Verdict | NoVerdict,
    pods: Sequence[Mapping[str, Any]],
    *,
    audit_image: str,
    slot: str,
    slot_uid: str,
    claim_uid: str | None,
    policy: ownership.MigrationPolicy,
) -> status_logic.AuditContext:
    """The audit the probe pod ran (in the verdict's own write: no extra status write per probe).

    A probe that gave no verdict leaves ownership as it was, unless its pod's audit reported.
    """
    result = audit_result(pods) if audit_image else None
    if result is None and isinstance(outcome, Verdict):
        result = ownership.AuditUnavailable(
            reason="AuditFailed" if audit_image else "AuditDisabled",
            message="the ownership audit had not finished when the probe gave its verdict"
            if audit_image
            else "the operator runs without --audit-image: no ownership audit",
        )
    return status_logic.AuditContext(
        result=result,
        expected=(spec.run_as_user, spec.run_as_group),
        slot=slot,
        slot_uid=slot_uid,
        claim_uid=claim_uid,
        policy=policy,
    )


# --- the next probe -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Idle:
    """No probe now (suspended, or not yet due): write that, give up any place, wake at `wake` if set."""

    status: status_logic.SlotStatus
    wake: datetime.datetime | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Spread:
    """An overdue periodic probe found at start-up: wait `delay` so a restarted operator does not wake all at once."""

    delay: datetime.timedelta


@dataclasses.dataclass(frozen=True, kw_only=True)
class Due:
    """A probe is due now: it needs a place under the cap."""

    probe: ProbeRef


Next = Idle | Spread | Due


def intent(
    status: Mapping[str, Any], *, slot: str, slot_uid: str, generation: int, spec: SlotSpec, trigger: schedule.Trigger,
    now: datetime.datetime,
) -> ProbeRef:  # fmt: skip
    """The probe this status calls for; its Job name is deterministic, so two deciders pick the same one.

    A probe already announced (queued, or an earlier attempt to start it) stays the one, also when a later
    generation changed only interval, timeout or suspend: it still answers for it."""
    recorded = ProbeRef.from_status(status.get("currentProbe"))
    fingerprint = verdict_fingerprint(spec)
    last = status.get("lastProbe") or {}
    previous = last.get("jobName") or last.get("completionTime") or ""  # failures without a Job have no name
    failures = int(status.get("consecutiveProbeFailures") or 0)

    def name_for(probed: int) -> str:
        return jobs.job_name(slot, slot_uid, f"{previous}/{probed}/{trigger.kind}/{trigger.request or ''}/{failures}")

    if (
        recorded is not None
        and answers_for(recorded, generation=generation, fingerprint=fingerprint)
        and recorded.job_name == name_for(recorded.generation)
    ):
        return recorded
    return ProbeRef(
        job_name=name_for(generation),
        image=spec.image,
        generation=generation,
        trigger=trigger.kind,
        request=trigger.request,
        start_time=now,
        spec_hash=fingerprint,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schedule:
    """What deciding the next probe reads besides the status."""

    slot: str
    slot_uid: str
    generation: int
    spec: SlotSpec
    request: str | None  # the probe request annotation's token
    claim_exists: bool
    first_look: bool  # the first reconcile since the operator started
    spread_window: datetime.timedelta
    holds_place: bool


def next_probe(status: Mapping[str, Any], given: Schedule, *, now: datetime.datetime) -> Next:
    trigger, due_at = schedule.due(
        status,
        generation=given.generation,
        fingerprint=verdict_fingerprint(given.spec),
        request=given.request,
        claim_exists=given.claim_exists,
        now=now,
    )
    if given.spec.suspend or trigger is None:
        new = status_logic.idle(status, generation=given.generation, suspended=given.spec.suspend, now=now)
        return Idle(status=new, wake=None if given.spec.suspend else due_at)
    if given.first_look and trigger.kind in ("interval", "retry") and not given.holds_place:
        # A stable offset per Slot within a window that grows with the number found overdue.
        delay = schedule.spread(given.slot_uid, window=min(given.spec.interval, given.spread_window))
        if delay.total_seconds() >= 1:
            return Spread(delay=delay)
    probe = intent(
        status,
        slot=given.slot,
        slot_uid=given.slot_uid,
        generation=given.generation,
        spec=given.spec,
        trigger=trigger,
        now=now,
    )
    return Due(probe=probe)


def _announced(status: Mapping[str, Any], probe: ProbeRef, *, generation: int) -> bool:
    """Status names this probe already, for this generation."""
    return ProbeRef.from_status(status.get("currentProbe")) == probe and _observed(status) == generation


def queued(
    status: Mapping[str, Any], probe: ProbeRef, *, generation: int, ahead: int, now: datetime.datetime
) -> status_logic.SlotStatus | None:
    """The status of a probe waiting for a place; None when status says so already (written once, when it joins)."""
    if _announced(status, probe, generation=generation):
        return None
    return status_logic.queued(status, generation=generation, probe=probe, ahead=ahead, now=now)


def probing(
    status: Mapping[str, Any], probe: ProbeRef, *, generation: int, now: datetime.datetime
) -> status_logic.SlotStatus | None:
    """Intent first: the status naming the probe's Job before it is created; None when status says so already."""
    if _announced(status, probe, generation=generation):
        return None
    return status_logic.probing(status, generation=generation, probe=probe, now=now)


def carry(
    status: Mapping[str, Any], *, generation: int, spec: SlotSpec, slot_uid: str, now: datetime.datetime
) -> status_logic.SlotStatus | None:
    """A generation that changed only interval, timeout or suspend keeps the standing verdict (docs/design.md §2.3):
    the status that says so, with the next periodic probe under the new interval; None when it does not carry."""
    if not status_logic.carries(status, generation=generation, fingerprint=verdict_fingerprint(spec)):
        return None
    return status_logic.carried(
        status,
        generation=generation,
        suspended=spec.suspend,
        next_probe=schedule.periodic_after(status, interval=spec.interval, slot_uid=slot_uid),
        now=now,
    )


def foreign_job(probe: ProbeRef) -> NoVerdict:
    """The probe's Job name is taken by a Job that is not the Slot's: never adopted (the next attempt has another)."""
    return NoVerdict(
        reason=FailureReason.JOB_REJECTED,
        message=f"a Job named {probe.job_name} already exists in the namespace and is not this Slot's",
    )


def was_invalid(status: Mapping[str, Any]) -> bool:
    """The spec was already reported invalid (its Event posted once)."""
    return (status.get("lastProbe") or {}).get("reason") == FailureReason.INVALID_SPEC or any(
        c.get("reason") == FailureReason.INVALID_SPEC for c in status.get("conditions") or ()
    )
