"""A SlotImageCheck, decided: pure functions from what is observed to what to do (docs/design.md §2.5).

runtime/checks.py acts on these decisions. A check probes its candidate image once against each
selected Slot's claim; `step` says what one Slot's result needs next (start a probe, wait, record an
answer), `check_status` turns the results into the check's phase, summary and conditions.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from slot_operator.logic import conditions, durations, jobs, ownership, probing, schedule, selector, timestamps
from slot_operator.logic.outcome import NoVerdict, Running, Verdict, audit_result, classify, is_finished
from slot_operator.logic.phases import Phase
from slot_operator.logic.spec import InvalidSpec, SlotSpec, parse_spec
from slot_operator.logic.verdict import FailureReason, safe_message

# A probe without a verdict is tried again (the operator's backoff) until a Slot has had this many.
MAX_ATTEMPTS = 3
PENDING = "Pending"
NO_VERDICT = "NoVerdict"
SLOT_DELETED = "SlotDeleted"
# results[].phase -> its status.summary key
SUMMARY_KEYS = {
    PENDING: "pending",
    Phase.READY.value: "ready",
    Phase.NEEDS_INIT.value: "needsInit",
    Phase.NEEDS_REAUTH.value: "needsReauth",
    Phase.IMAGE_BROKEN.value: "imageBroken",
    NO_VERDICT: "noVerdict",
}
# Would need a human, the worst first: the reason of Ready=False and Stalled=True when a check Failed.
WORST_FIRST = (Phase.IMAGE_BROKEN.value, Phase.NEEDS_REAUTH.value, Phase.NEEDS_INIT.value)
FINAL_PHASES = ("Succeeded", "Failed", "Error")

Result = dict[str, Any]  # one entry of status.results (crds/slotimagechecks.woved.dev.yaml)
Job = Mapping[str, Any]


class CheckStatus(TypedDict, total=False):
    """A SlotImageCheck's status as the operator writes it (crds/slotimagechecks.woved.dev.yaml)."""

    observedGeneration: int
    phase: str
    startTime: str
    completionTime: str
    summary: dict[str, int]
    results: list[Result]
    conditions: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckSpec:
    image: str
    selector: Mapping[str, Any]
    run_as_user: int | None
    run_as_group: int | None
    timeout: datetime.timedelta | None
    ttl: datetime.timedelta


def parse_check_spec(raw: Mapping[str, Any]) -> CheckSpec:
    """The check's spec; InvalidSpec naming the field for what the CRD's schema cannot have let through."""
    image = raw.get("image")
    if not isinstance(image, str) or not image.strip():
        raise InvalidSpec("spec.image: required")
    try:
        timeout = durations.parse_duration(str(raw["timeout"])) if raw.get("timeout") else None
        ttl = durations.parse_duration(str(raw.get("ttlAfterFinished") or "24h"))
    except ValueError as exc:
        raise InvalidSpec(f"spec: {exc}") from None
    return CheckSpec(
        image=image,
        selector=dict(raw.get("selector") or {}),
        run_as_user=raw.get("runAsUser"),
        run_as_group=raw.get("runAsGroup"),
        timeout=timeout,
        ttl=ttl,
    )


def candidate(spec: SlotSpec, check: CheckSpec) -> SlotSpec:
    """The Slot's probe with the candidate in it: its image, and its uid:gid and timeout where the check sets them."""
    return dataclasses.replace(
        spec,
        image=check.image,
        run_as_user=check.run_as_user or spec.run_as_user,
        run_as_group=check.run_as_group or spec.run_as_group,
        timeout=check.timeout or spec.timeout,
    )


# How long a check's selection waits for the operator's cache to hold every Slot the API server lists (Slots
# created just before the check); then it is made from the cache as it is, and the log names what it missed.
SELECT_PATIENCE = datetime.timedelta(seconds=30)
SELECT_RETRY = datetime.timedelta(seconds=1)


def unseen(listed: Iterable[Mapping[str, Any]], cached: Iterable[Mapping[str, Any]]) -> list[str]:
    """The Slots a fresh LIST returned that the cache has not seen yet (by uid), by name."""
    seen = {str((slot.get("metadata") or {}).get("uid")) for slot in cached}
    return sorted(str(slot["metadata"]["name"]) for slot in listed if str(slot["metadata"]["uid"]) not in seen)


def select_now(behind: Sequence[str], *, created: datetime.datetime | None, now: datetime.datetime) -> bool:
    """Freeze the selection now: the cache holds every Slot listed, or the check has waited SELECT_PATIENCE."""
    return not behind or created is None or now - created >= SELECT_PATIENCE


def select(slots: Iterable[Mapping[str, Any]], check: CheckSpec) -> list[Result]:
    """A Pending result for every Slot the selector selects, by name: the check's frozen selection."""
    chosen = [
        slot for slot in slots if selector.matches(check.selector, (slot.get("metadata") or {}).get("labels") or {})
    ]
    return [
        {"slot": str(meta["name"]), "slotUID": str(meta["uid"]), "phase": PENDING, "attempts": 0}
        for meta in sorted((slot["metadata"] for slot in chosen), key=lambda meta: str(meta["name"]))
    ]


def job_name(*, check_uid: str, result: Mapping[str, Any]) -> str:
    """The Job of the Slot's next attempt: deterministic, so a restarted operator finds the one it made."""
    attempt = int(result.get("attempts") or 0) + 1
    token = f"{result.get('slotUID')}/{attempt}"
    return jobs.job_name(str(result["slot"]), check_uid, token, kind="check")


def parse_slot(slot: Mapping[str, Any], *, default_timeout: datetime.timedelta) -> SlotSpec:
    # interval is the Slot's own business; any valid value does here.
    return parse_spec(slot.get("spec") or {}, default_interval=datetime.timedelta(hours=1),
                      default_timeout=default_timeout)  # fmt: skip


# --- one Slot's result --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Facts:
    """What deciding one Slot's result reads: the Slot now, and the Job of its next attempt with its pods."""

    slot: Mapping[str, Any] | None
    job: Job | None
    pods: Sequence[Mapping[str, Any]]
    in_line: bool = False  # the next attempt already waits for a place under the cap


@dataclasses.dataclass(frozen=True, kw_only=True)
class Given:
    check_uid: str
    check: CheckSpec
    default_timeout: datetime.timedelta
    retry_base: datetime.timedelta
    retry_max: datetime.timedelta
    audit_image: str
    policy: ownership.MigrationPolicy


@dataclasses.dataclass(frozen=True, kw_only=True)
class Start:
    """The Slot's next attempt is due: it needs a place under the cap, then its Job."""

    job_name: str
    spec: SlotSpec  # the Slot's spec with the candidate in it


@dataclasses.dataclass(frozen=True, kw_only=True)
class Wait:
    """The probe runs (`job` set: hold its place), or the next attempt waits for its backoff: look again at `wake`."""

    wake: datetime.datetime
    job: Job | None = None
    reread: bool = False  # past the deadline and the cache still says running: read the Job afresh


@dataclasses.dataclass(frozen=True, kw_only=True)
class Answer:
    """The attempt ended (or cannot be made): the result to record; `stop` the Job if it would only wait."""

    result: Result
    stop: Job | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class InLine:
    """The next attempt waits for a place: nothing to do until the place is handed over."""


Step = Start | Wait | Answer | InLine


def _runs_as(spec: SlotSpec) -> str:
    return ownership.owner(spec.run_as_user, spec.run_as_group)


def _answered(
    result: Mapping[str, Any], outcome: Verdict | NoVerdict, *, job: str | None, now: datetime.datetime
) -> Result:
    """The result after one more attempt: its verdict, or Pending for a retry, or NoVerdict after the last."""
    attempts = int(result.get("attempts") or 0) + 1
    new: Result = {"slot": result["slot"], "slotUID": result.get("slotUID"), "attempts": attempts}
    if isinstance(outcome, Verdict):
        new["phase"] = outcome.phase.value
    else:
        # An invalid spec is the Slot's to fix: trying again would answer the same.
        final = attempts >= MAX_ATTEMPTS or outcome.reason == FailureReason.INVALID_SPEC
        new["phase"] = NO_VERDICT if final else PENDING
    if outcome.exit_code is not None:
        new["exitCode"] = outcome.exit_code
    new["reason"] = str(outcome.reason)
    new["message"] = safe_message(outcome.message)
    if job:
        new["jobName"] = job
    new["completionTime"] = timestamps.format_time(outcome.finished or now)
    for key in ("runAs", "ownership"):
        if key in result:
            new[key] = result[key]
    return new


def _retry_at(result: Mapping[str, Any], given: Given) -> datetime.datetime | None:
    """When a Slot whose last attempt gave no verdict is tried again (None: never tried yet)."""
    attempts = int(result.get("attempts") or 0)
    last = timestamps.parse_time(result.get("completionTime"))
    if not attempts or last is None:
        return None
    return last + schedule.retry_delay(attempts, base=given.retry_base, cap=given.retry_max)


def slot_gone(result: Mapping[str, Any], *, now: datetime.datetime) -> Result:
    """A selected Slot deleted (or deleted and created again: another uid) before its answer: none will come."""
    gone: Result = {key: result[key] for key in ("slot", "slotUID", "attempts", "jobName", "runAs") if key in result}
    gone.update(phase=NO_VERDICT, reason=SLOT_DELETED, message="the Slot was deleted before its answer",
                completionTime=timestamps.format_time(now))  # fmt: skip
    return gone


def step(result: Mapping[str, Any], facts: Facts, given: Given, *, now: datetime.datetime) -> Step:
    """What one Pending result needs next."""
    slot = facts.slot
    job = facts.job
    running = job is not None and not is_finished(job)
    if slot is None or str(slot["metadata"]["uid"]) != result.get("slotUID"):
        return Answer(result=slot_gone(result, now=now), stop=job if running else None)
    if job is None and facts.in_line:
        return InLine()  # the cheap answer for most of a large check's Slots, on every reconcile
    retry_at = _retry_at(result, given) if job is None else None
    if retry_at is not None and retry_at > now:
        return Wait(wake=retry_at)
    try:
        own = parse_slot(slot, default_timeout=given.default_timeout)
    except InvalidSpec as exc:
        return Answer(result=_answered(result, NoVerdict(reason=FailureReason.INVALID_SPEC, message=str(exc)),
                                       job=None, now=now))  # fmt: skip
    spec = candidate(own, given.check)
    if job is None:
        return Start(job_name=job_name(check_uid=given.check_uid, result=result), spec=spec)
    outcome = classify(job, facts.pods, now=now)
    if isinstance(outcome, Running):
        created = timestamps.parse_time((job.get("metadata") or {}).get("creationTimestamp")) or now
        deadline = created + spec.timeout + probing.DEADLINE_GRACE
        wake = min(deadline, outcome.until) if outcome.until is not None else deadline
        return Wait(wake=wake, job=job, reread=deadline <= now)
    answered = _answered(result, outcome, job=str(job["metadata"]["name"]), now=now)
    answered["runAs"] = _runs_as(spec)
    audit = _audit(spec, outcome, facts.pods, given, slot=str(result["slot"]), slot_runs_as=_runs_as(own))
    if audit is not None:
        answered["ownership"] = audit
    return Answer(result=answered, stop=job if outcome.stop_job else None)


def refused(result: Mapping[str, Any], outcome: NoVerdict, *, job: str | None, now: datetime.datetime) -> Result:
    """An attempt that could not start (no claim, the claim in use, the Job refused): it counts as an attempt."""
    return _answered(result, outcome, job=job, now=now)


# --- ownership, judged against the candidate ----------------------------------------------------------


def _audit(
    spec: SlotSpec,
    outcome: Verdict | NoVerdict,
    pods: Sequence[Mapping[str, Any]],
    given: Given,
    *,
    slot: str,
    slot_runs_as: str,
) -> dict[str, Any] | None:
    """results[].ownership: the audit of the probe's pod against the candidate's uid:gid, and what to do."""
    if not given.audit_image:
        return None
    found = audit_result(pods)
    expected = _runs_as(spec)
    if not isinstance(found, ownership.Audit):
        return {"expected": expected, "found": [], "summary": "unknown: the ownership audit did not report"}
    assessment = ownership.assess(found, expected=(spec.run_as_user, spec.run_as_group))
    data: dict[str, Any] = {
        "expected": expected,
        "found": list(assessment.foreign),
        "summary": expected if assessment.matches else f"{','.join(assessment.foreign)} (image {expected})",
    }
    if not assessment.matches:
        data["migrationWouldFix"] = (
            len(assessment.foreign) == 1 and ownership.owner_refusal(assessment.foreign[0], given.policy) is None
        )
        data["fix"] = fix(assessment, slot=slot, slot_runs_as=slot_runs_as, policy=given.policy)
    return data


def fix(assessment: ownership.Assessment, *, slot: str, slot_runs_as: str, policy: ownership.MigrationPolicy) -> str:
    """One line: what to do before rolling the candidate onto a volume another owner holds."""
    owners = " and ".join(assessment.foreign)
    if len(assessment.foreign) > 1:
        return f"owned by {owners}: the ownership migration moves one owner only; fix the owners by hand"
    refusal = ownership.owner_refusal(assessment.foreign[0], policy)
    if refusal is not None:
        return f"owned by {owners}: the ownership migration may not move it; fix the owners by hand"
    if slot_runs_as != assessment.expected:
        return (
            f"owned by {owners}: set the Slot's runAsUser/runAsGroup to {assessment.expected} with the image, then "
            "approve the ownership migration (it moves files to the Slot's uid:gid)"
        )
    approve = ownership.approve_command(slot, "<its status.ownership.approval>")
    return f"owned by {owners}: approve the ownership migration first ({approve})"


# --- the check's status ----------------------------------------------------------------------------------


def summary(results: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    phases = [str(result.get("phase")) for result in results]
    counts = {key: phases.count(phase) for phase, key in SUMMARY_KEYS.items()}
    human = sum(counts[SUMMARY_KEYS[phase]] for phase in WORST_FIRST)
    return {"slots": len(results), **counts, "failed": human}


def phase_of(results: Sequence[Mapping[str, Any]], *, started: bool) -> str:
    phases = {str(result.get("phase")) for result in results}
    if PENDING in phases:
        return "Running" if started else "Pending"
    if phases & set(WORST_FIRST):
        return "Failed"
    if not results or NO_VERDICT in phases:
        return "Error"
    return "Succeeded"


def _listed(results: Sequence[Mapping[str, Any]], wanted: Iterable[str], limit: int = 5) -> str:
    chosen = [result for result in results if result.get("phase") in set(wanted)]
    words = []
    for result in chosen[:limit]:
        # The cause in a word or two: who owns the files ("owned by 1000:1000"), or why no verdict came.
        fixing = (result.get("ownership") or {}).get("fix")
        why = str(fixing).split(": ")[0] if fixing else result.get("reason") if result["phase"] == NO_VERDICT else ""
        words.append(f"{result['slot']} {result['phase']}" + (f" ({why})" if why else ""))
    more = f", and {len(chosen) - limit} more" if len(chosen) > limit else ""
    return ", ".join(words) + more


def _counts(results: Sequence[Mapping[str, Any]]) -> str:
    counted = summary(results)
    return ", ".join(f"{counted[key]} {phase}" for phase, key in SUMMARY_KEYS.items() if counted[key] and
                     phase != PENDING)  # fmt: skip


def _conditions(phase: str, results: Sequence[Mapping[str, Any]], image: str) -> tuple[str, str, str, str]:
    """(Ready status, reason, Reconciling reason, message) of a check in `phase` (docs/design.md §2.5's table)."""
    total = len(results)
    answered = sum(1 for result in results if result.get("phase") != PENDING)
    if phase in ("Pending", "Running"):
        reason = "Queued" if phase == "Pending" else "Probing"
        tail = f": {_counts(results)}" if answered else ""
        waiting = ", waiting for a probe place (Slot probes go first)" if phase == "Pending" else ""
        return "Unknown", reason, reason, f"{answered} of {total} Slots answered{tail}{waiting}"
    if phase == "Succeeded":
        return "True", "AllReady", "Finished", f"all {total} Slots would be Ready with {image}"
    if phase == "Failed":
        found = {str(result.get("phase")) for result in results}
        worst = next(p for p in WORST_FIRST if p in found)
        human = f"{summary(results)['failed']} of {total} Slots would need a human"
        return "False", worst, "Finished", f"{human}: {_listed(results, WORST_FIRST)}"
    if not results:
        return "False", "NoSlotsSelected", "Finished", "no Slot of the namespace matches spec.selector"
    silent = f"{summary(results)['noVerdict']} of {total} Slots gave no verdict"
    return "False", NO_VERDICT, "Finished", f"{silent}: {_listed(results, [NO_VERDICT])}; {_counts(results)}"


def check_status(
    status: Mapping[str, Any],
    results: Sequence[Result],
    *,
    generation: int,
    image: str,
    started: datetime.datetime | None,
    now: datetime.datetime,
) -> CheckStatus:
    """The check's status for these results: phase, summary, times and the three conditions with their reasons."""
    new = CheckStatus(
        observedGeneration=generation,
        results=[result if isinstance(result, dict) else dict(result) for result in results],
    )
    # The first probe's start, or the first attempt that could not start a probe (no claim, say).
    tried = any(result.get("phase") != PENDING or result.get("attempts") for result in results)
    first = started or (now if tried else None)
    start = status.get("startTime") or (timestamps.format_time(first) if first else None)
    phase = phase_of(results, started=start is not None)
    new["phase"] = phase
    if start and phase != "Pending":
        new["startTime"] = str(start)
    if phase in FINAL_PHASES:
        new["completionTime"] = str(status.get("completionTime") or timestamps.format_time(now))
    new["summary"] = summary(results)
    ready, reason, reconciling, message = _conditions(phase, results, image)
    stalled = "True" if phase in ("Failed", "Error") else "False"
    listed: list[dict[str, Any]] = list(status.get("conditions") or ())
    for kind, state, why in (
        (conditions.READY, ready, reason),
        (conditions.STALLED, stalled, reason),
        (conditions.RECONCILING, "True" if reconciling != "Finished" else "False", reconciling),
    ):
        listed = conditions.set_condition(
            listed, kind=kind, status=state, reason=why, message=message, generation=generation, now=now
        )
    new["conditions"] = listed
    return new


def expired(status: Mapping[str, Any], check: CheckSpec, *, now: datetime.datetime) -> datetime.datetime | None:
    """When a finished check is to be deleted (None: not finished)."""
    if status.get("phase") not in FINAL_PHASES:
        return None
    done = timestamps.parse_time(status.get("completionTime")) or now
    return done + check.ttl
