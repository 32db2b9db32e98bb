"""Slot status transitions: each takes the current status and returns the complete new one.

Only the operator writes Slot status, so transitions are computed from what is
there and written back as a merge patch of the keys that changed (`diff`).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping
from typing import Any, TypedDict, cast

from slot_operator.logic import conditions, ownership, phases, timestamps
from slot_operator.logic.conditions import (
    OWNERSHIP_MATCHES,
    OWNERSHIP_MIGRATED,
    PROBE_SUCCEEDED,
    READY,
    RECONCILING,
    STALLED,
)
from slot_operator.logic.outcome import NoVerdict, Verdict
from slot_operator.logic.phases import PHASES, STALLED_PHASES, Phase
from slot_operator.logic.verdict import FailureReason, safe_message


class SlotStatus(TypedDict, total=False):
    """A Slot's status as the operator writes it (crds/slots.woved.dev.yaml; docs/design.md §2): mypy checks
    every key a transition sets. Values read back from the API are whatever the API holds (`_base` is the
    one place an untyped status becomes this)."""

    phase: str
    observedGeneration: int
    conditions: list[dict[str, Any]]
    lastProbe: dict[str, Any]
    currentProbe: dict[str, Any]
    lastReadyTime: str
    lastReadyImage: str
    nextProbeTime: str
    consecutiveProbeFailures: int
    lastHandledProbeRequest: str
    ownership: dict[str, Any]
    credentials: dict[str, Any]
    currentOwnershipMigration: dict[str, Any]
    lastOwnershipMigration: dict[str, Any]
    lastHandledOwnershipMigrationRequest: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeRef:
    """The probe in flight, as recorded in status.currentProbe before its Job is created."""

    job_name: str
    image: str
    generation: int
    trigger: str
    request: str | None
    start_time: datetime.datetime
    # spec.verdict_fingerprint of the spec it probes: the specs its verdict answers for. None for a probe an
    # older operator recorded, or a Job adopted without a record (its verdict answers for its generation only).
    spec_hash: str | None = None

    def to_status(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "jobName": self.job_name,
            "image": self.image,
            "generation": self.generation,
            "trigger": self.trigger,
            "startTime": timestamps.format_time(self.start_time),
        }
        if self.request is not None:
            data["request"] = self.request
        if self.spec_hash is not None:
            data["specHash"] = self.spec_hash
        return data

    @classmethod
    def from_status(cls, data: Mapping[str, Any] | None) -> ProbeRef | None:
        if not data or not data.get("jobName"):
            return None
        request = data.get("request")
        return cls(
            job_name=str(data["jobName"]),
            image=str(data.get("image") or ""),
            generation=int(data.get("generation") or 0),
            trigger=str(data.get("trigger") or ""),
            request=str(request) if request is not None else None,
            start_time=timestamps.parse_time(data.get("startTime")) or datetime.datetime.fromtimestamp(0, datetime.UTC),
            spec_hash=str(data["specHash"]) if data.get("specHash") else None,
        )


def phase_of(status: Mapping[str, Any]) -> Phase:
    return phases.parse(status.get("phase"))


class Activity(enum.StrEnum):
    """What the operator is doing for a Slot: the reason of `Reconciling` (its status is the rule's)."""

    QUEUED = "Queued"
    PROBING = "Probing"
    RETRYING = "Retrying"  # the last probe gave no verdict; the next attempt is at nextProbeTime
    SUSPENDED = "Suspended"
    IDLE = "Idle"
    AWAITING_PROBE = "AwaitingProbe"  # Idle, but the current generation has no verdict: a probe is due
    MIGRATING = "MigratingOwnership"  # the ownership migration a person asked for runs (no probe meanwhile)
    INVALID_SPEC = FailureReason.INVALID_SPEC.value


SUSPENDED_MESSAGE = "spec.suspend is true: no probe runs until it is false"


def verdict_generation(status: Mapping[str, Any]) -> int | None:
    """The generation the standing verdict was given for (Ready's observedGeneration), None before any."""
    ready = conditions.find(status.get("conditions") or (), READY)
    if ready is None or ready.get("status") not in ("True", "False"):
        return None
    return int(ready.get("observedGeneration") or 0)


def carries(status: Mapping[str, Any], *, generation: int, fingerprint: str) -> bool:
    """The standing verdict answers for `generation` too: the current spec has the same verdict fields
    (`fingerprint`) as the spec it judged, so only interval, timeout or suspend differ (docs/design.md §2.3).

    The judged spec's fingerprint is lastProbe's when that probe ran no later generation than the verdict speaks
    for (the verdict's own probe, or a re-probe of its spec that gave none); a later probe of another spec that
    gave no verdict hides it, and the current generation is probed. Never from a status an older operator wrote
    (no specHash: probed again once), never across a spec found at fault (that is no verdict).
    """
    judged = verdict_generation(status)
    last = status.get("lastProbe") or {}
    return (
        judged is not None
        and judged < generation
        and int(last.get("generation") or 0) <= judged
        and bool(last.get("specHash"))
        and last.get("specHash") == fingerprint
        and faulty_generation(status) is None
    )


def faulty_generation(status: Mapping[str, Any]) -> int | None:
    """The generation whose spec status reports at fault (InvalidSpec: the schema's rules, a refused Job, a
    failed mount), None when it reports none. No verdict is carried across it: the next generation is probed."""
    last = status.get("lastProbe") or {}
    if last.get("reason") == FailureReason.INVALID_SPEC:
        return int(last.get("generation") or 0)
    stalled = conditions.find(status.get("conditions") or (), STALLED) or {}
    if stalled.get("status") == "True" and stalled.get("reason") == FailureReason.INVALID_SPEC:
        return int(stalled.get("observedGeneration") or 0)
    return None


def spec_fault(status: Mapping[str, Any], *, generation: int) -> str | None:
    """Why the current generation cannot be probed, when the last attempt found the spec at fault.

    Such a failure (the probe's mount failing, a Job the API server calls invalid) would fail the
    same way again: it is not retried until the spec changes or a probe is requested.
    """
    last = status.get("lastProbe") or {}
    if last.get("reason") == FailureReason.INVALID_SPEC and int(last.get("generation") or 0) == generation:
        return str(last.get("message") or FailureReason.INVALID_SPEC.value)
    return None


def _base(status: Mapping[str, Any], generation: int, now: datetime.datetime) -> SlotStatus:
    """Copy of `status` with observedGeneration current, Ready and ProbeSucceeded present (Unknown until known).

    Stalled and Reconciling are then set by `_apply_rule`, on every transition.
    """
    new = cast(SlotStatus, dict(status))
    new["observedGeneration"] = generation
    new.setdefault("phase", Phase.PENDING.value)
    conds: list[dict[str, Any]] = [dict(c) for c in status.get("conditions") or ()]
    defaults = {
        READY: ("Unknown", "AwaitingProbe", "no verdict yet"),
        PROBE_SUCCEEDED: ("Unknown", "AwaitingProbe", "no probe has finished yet"),
    }
    for kind, (state, reason, message) in defaults.items():
        if conditions.find(conds, kind) is None:
            conds = conditions.set_condition(
                conds, kind=kind, status=state, reason=reason, message=message, generation=generation, now=now
            )
    new["conditions"] = conds
    return new


def _set(
    new: SlotStatus, kind: str, state: str, reason: str, message: str, generation: int, now: datetime.datetime
) -> None:
    new["conditions"] = conditions.set_condition(
        new["conditions"], kind=kind, status=state, reason=reason, message=message, generation=generation, now=now
    )


def _apply_rule(
    new: SlotStatus,
    *,
    generation: int,
    activity: Activity,
    message: str,
    invalid: str | None = None,
    now: datetime.datetime,
) -> None:
    """The one rule that Flux (kstatus), Argo CD (health.lua) and `kubectl wait` read (docs/design.md §2.3).

    - The current generation's verdict needs a human, or its spec is invalid: Stalled=True
      (kstatus Failed, Argo Degraded).
    - The current generation has no verdict yet: Reconciling=True, Stalled=False, whatever an older
      generation's verdict said (kstatus InProgress, Argo Progressing, or Suspended while suspended).
    - Otherwise Reconciling=False and Stalled=False: Current/Healthy exactly when Ready=True, whose
      observedGeneration then is the current generation. Re-probes and failed re-probes of a
      generation that has its verdict change neither.
    Ready itself only ever changes with a verdict and keeps that verdict's generation, so
    `kubectl wait --for=condition=Ready` waits for the current one.
    """
    invalid = invalid or spec_fault(new, generation=generation)
    if invalid is not None:
        _set(new, STALLED, "True", FailureReason.INVALID_SPEC, invalid, generation, now)
        _set(new, RECONCILING, "False", FailureReason.INVALID_SPEC, invalid, generation, now)
        return
    judged = verdict_generation(new)
    phase = phase_of(new)
    if judged == generation:
        stalled = phase in STALLED_PHASES
        ready = conditions.find(new["conditions"], READY) or {}
        _set(
            new,
            STALLED,
            "True" if stalled else "False",
            phase.value,
            ready.get("message", "") if stalled else "",
            generation,
            now,
        )
        _set(new, RECONCILING, "False", activity, message, generation, now)
        return
    waiting = f"generation {generation} has no verdict yet"
    if judged is not None:
        waiting += f" (generation {judged} was {phase.value})"
    else:
        # Unknown for this generation too: nothing was ever decided.
        _set(new, READY, "Unknown", "AwaitingProbe", waiting, generation, now)
    _set(new, STALLED, "False", "AwaitingVerdict", waiting, generation, now)
    reason = Activity.AWAITING_PROBE if activity is Activity.IDLE else activity
    _set(new, RECONCILING, "True", reason, f"{message}; {waiting}" if message else waiting, generation, now)


def queued(
    status: Mapping[str, Any], *, generation: int, probe: ProbeRef, ahead: int, now: datetime.datetime
) -> SlotStatus:
    """Due, but every probe place is taken. Written once, when the Slot joins the queue: its Job is already
    named (deterministic), and the status is not rewritten as the queue moves or when the probe starts."""
    new = _base(status, generation, now)
    new["currentProbe"] = probe.to_status()
    message = (
        f"probe Job {probe.job_name} ({probe.trigger}) waits for a place under the concurrency cap; "
        f"{ahead} Slot(s) ahead when it joined the queue at {timestamps.format_time(now)}"
    )
    _apply_rule(new, generation=generation, activity=Activity.QUEUED, message=message, now=now)
    return new


def probing(status: Mapping[str, Any], *, generation: int, probe: ProbeRef, now: datetime.datetime) -> SlotStatus:
    new = _base(status, generation, now)
    new["currentProbe"] = probe.to_status()
    message = f"probe Job {probe.job_name} running ({probe.trigger})"
    _apply_rule(new, generation=generation, activity=Activity.PROBING, message=message, now=now)
    return new


def _waiting_activity(status: Mapping[str, Any]) -> tuple[Activity, str]:
    """Between probes: retrying after a probe that gave no verdict, or idle until the next interval."""
    next_time = status.get("nextProbeTime")
    if int(status.get("consecutiveProbeFailures") or 0) > 0:
        last = status.get("lastProbe") or {}
        return Activity.RETRYING, f"{last.get('reason')}: {last.get('message')}; next attempt at {next_time}"
    return Activity.IDLE, f"next probe at {next_time}" if next_time else ""


def _between_probes(new: SlotStatus, *, generation: int, now: datetime.datetime, suspended: bool = False) -> SlotStatus:
    """`new` with the conditions of a Slot waiting for its next probe (or retry), or suspended."""
    activity, message = (Activity.SUSPENDED, SUSPENDED_MESSAGE) if suspended else _waiting_activity(new)
    _apply_rule(new, generation=generation, activity=activity, message=message, now=now)
    return new


def idle(status: Mapping[str, Any], *, generation: int, suspended: bool, now: datetime.datetime) -> SlotStatus:
    new = _base(status, generation, now)
    new.pop("currentProbe", None)
    return _between_probes(new, generation=generation, now=now, suspended=suspended)


def _ongoing(new: SlotStatus) -> tuple[Activity, str] | None:
    """What Reconciling says of the probe or migration that runs on, when one does (it is not interrupted)."""
    reconciling = conditions.find(new["conditions"], RECONCILING) or {}
    if not (new.get("currentProbe") or new.get("currentOwnershipMigration")):
        return None
    if reconciling.get("reason") in {activity.value for activity in Activity}:
        return Activity(str(reconciling["reason"])), str(reconciling.get("message") or "")
    probe = ProbeRef.from_status(new.get("currentProbe"))
    return Activity.PROBING, f"probe Job {probe.job_name} running ({probe.trigger})" if probe else ""


def carried(
    status: Mapping[str, Any],
    *,
    generation: int,
    suspended: bool,
    next_probe: datetime.datetime | None,
    now: datetime.datetime,
) -> SlotStatus:
    """The standing verdict answers for `generation` too (`carries`): status and every condition speak for it,
    Ready and the phase unchanged (its lastTransitionTime too: nothing happened to the verdict). A probe or a
    migration in flight runs on; `next_probe` (the next periodic probe under the new interval) when given.
    No probe and no Event: the verdict did not change."""
    new = _base(status, generation, now)
    new["conditions"] = [{**condition, "observedGeneration": generation} for condition in new["conditions"]]
    if next_probe is not None:
        new["nextProbeTime"] = timestamps.format_time(next_probe)
    ongoing = _ongoing(new)
    if ongoing is None:
        return _between_probes(new, generation=generation, now=now, suspended=suspended)
    activity, message = ongoing
    _apply_rule(new, generation=generation, activity=activity, message=message, now=now)
    return new


def invalid_spec(status: Mapping[str, Any], *, generation: int, message: str, now: datetime.datetime) -> SlotStatus:
    """What the CRD schema could not catch: needs a human, so Stalled; no probe runs."""
    new = _base(status, generation, now)
    new.pop("currentProbe", None)
    new.pop("nextProbeTime", None)
    _apply_rule(new, generation=generation, activity=Activity.INVALID_SPEC, message=message, invalid=message, now=now)
    _set(new, PROBE_SUCCEEDED, "False", FailureReason.INVALID_SPEC, message, generation, now)
    return new


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditContext:
    """The ownership audit of a probe pod, and what judging it needs (docs/design.md §2.4)."""

    result: ownership.AuditResult | None  # None: no probe pod ran the audit (leave status as it is)
    expected: ownership.Owner  # the Slot's runAsUser:runAsGroup
    slot: str
    slot_uid: str
    claim_uid: str | None  # the claim the probe mounted (the approval of a migration is bound to it)
    policy: ownership.MigrationPolicy


def _record_audit(
    new: SlotStatus, audit: AuditContext | None, *, job: str | None, generation: int, now: datetime.datetime
) -> ownership.Assessment | None:
    """status.ownership, status.credentials and OwnershipMatches from the audit, in the verdict's own write."""
    if audit is None or audit.result is None:
        return None
    result = audit.result
    if isinstance(result, ownership.AuditUnavailable):
        new["ownership"] = ownership.unavailable_status(expected=audit.expected)
        _set(new, OWNERSHIP_MATCHES, "Unknown", result.reason, result.message, generation, now)
        return None
    assessment = ownership.assess(result, expected=audit.expected)
    recorded = ownership.ownership_status(assessment, audited_at=now, job=job, claim_uid=audit.claim_uid, approval=None)
    approval = ownership.approval_for(recorded, slot_uid=audit.slot_uid, policy=audit.policy)
    new["ownership"] = ownership.ownership_status(
        assessment, audited_at=now, job=job, claim_uid=audit.claim_uid, approval=approval
    )
    new["credentials"] = ownership.credentials_status(result)
    unseen = f"; could not look at {', '.join(result.problems)}" if result.problems else ""
    if assessment.matches:
        message = f"the home, {assessment.agent_directory} and the credentials are owned by {assessment.expected}"
        _set(new, OWNERSHIP_MATCHES, "True", "OwnerMatches", message + unseen, generation, now)
    else:
        _set(new, OWNERSHIP_MATCHES, "False", "OwnedByOtherUser", assessment.headline() + unseen, generation, now)
    return assessment


def _last_probe(
    probe: ProbeRef | None,
    outcome: Verdict | NoVerdict,
    *,
    generation: int,
    trigger: str,
    result: str | None,
    spec_hash: str | None = None,
    now: datetime.datetime,
) -> dict[str, Any]:
    data: dict[str, Any] = probe.to_status() if probe else {"generation": generation, "trigger": trigger}
    if probe is None and spec_hash is not None:
        data["specHash"] = spec_hash  # an attempt that made no Job still tried the current spec
    data.pop("request", None)
    data["completionTime"] = timestamps.format_time(outcome.finished or now)
    data["reason"] = str(outcome.reason)
    data["message"] = safe_message(outcome.message)
    if outcome.exit_code is not None:
        data["exitCode"] = outcome.exit_code
    if result:
        data["result"] = result
    return data


def verdict(
    status: Mapping[str, Any],
    *,
    generation: int,
    probe: ProbeRef,
    outcome: Verdict,
    interval: datetime.timedelta,
    audit: AuditContext | None = None,
    speaks_for: int | None = None,
    now: datetime.datetime,
) -> SlotStatus:
    """A verdict for `probe.generation`: Ready (and the phase) follow it, with that generation, or `speaks_for`
    when the probe ran the current spec's verdict fields though a later generation changed the schedule.

    When credentials look missing or unusable and the audit found them owned by another uid, the
    message names that cause and its fix first: the verdict stands, its explanation changes.
    """
    new = _base(status, generation, now)
    new.pop("currentProbe", None)
    phase = outcome.phase
    assessment = _record_audit(new, audit, job=probe.job_name, generation=generation, now=now)
    if audit is not None and assessment is not None and not assessment.matches and PHASES[phase].uid_mismatch_can_cause:
        approval = (new.get("ownership") or {}).get("approval")
        cause = ownership.explain(assessment, slot=audit.slot, policy=audit.policy, approval=approval)
        outcome = dataclasses.replace(outcome, message=f"{cause}; the probe said: {outcome.message}")
    result = (
        outcome.result.status if outcome.result else PHASES[phase].result if outcome.exit_code is not None else None
    )
    new["phase"] = phase.value
    new["lastProbe"] = _last_probe(probe, outcome, generation=generation, trigger=probe.trigger, result=result, now=now)
    new["consecutiveProbeFailures"] = 0
    new["nextProbeTime"] = timestamps.format_time(now + interval)
    if probe.request is not None:
        new["lastHandledProbeRequest"] = probe.request
    if phase is Phase.READY:
        new["lastReadyTime"] = new["lastProbe"]["completionTime"]
        new["lastReadyImage"] = probe.image
        _set(new, READY, "True", outcome.reason, outcome.message, speaks_for or probe.generation, now)
    else:
        _set(new, READY, "False", phase.value, outcome.message, speaks_for or probe.generation, now)
    _set(
        new,
        PROBE_SUCCEEDED,
        "True",
        "ProbeCompleted",
        f"probe exited with code {outcome.exit_code}" if outcome.exit_code is not None else outcome.reason,
        generation,
        now,
    )
    return _between_probes(new, generation=generation, now=now)


def no_verdict(
    status: Mapping[str, Any],
    *,
    generation: int,
    probe: ProbeRef | None,
    outcome: NoVerdict,
    trigger: str,
    request: str | None,
    retry_at: datetime.datetime,
    audit: AuditContext | None = None,
    spec_hash: str | None = None,
    now: datetime.datetime,
) -> SlotStatus:
    """The probe could not give a verdict: phase and Ready stay; retry at `retry_at` unless the spec is at fault.

    `spec_hash`: the current spec's fingerprint, recorded when no probe was started (`probe` None)."""
    new = _base(status, generation, now)
    new.pop("currentProbe", None)
    _record_audit(new, audit, job=probe.job_name if probe else None, generation=generation, now=now)
    result = outcome.result.status if outcome.result else None
    new["lastProbe"] = _last_probe(
        probe, outcome, generation=generation, trigger=trigger, result=result, spec_hash=spec_hash, now=now
    )
    new["consecutiveProbeFailures"] = int(status.get("consecutiveProbeFailures") or 0) + 1
    if outcome.reason is FailureReason.INVALID_SPEC:
        new.pop("nextProbeTime", None)  # the same spec would fail the same way: wait for a change or a request
    else:
        new["nextProbeTime"] = timestamps.format_time(retry_at)
    handled = probe.request if probe else request
    if handled is not None:
        new["lastHandledProbeRequest"] = handled
    _set(new, PROBE_SUCCEEDED, "False", outcome.reason, outcome.message, generation, now)
    return _between_probes(new, generation=generation, now=now)


def migration_started(
    status: Mapping[str, Any], *, generation: int, migration: ownership.MigrationRef, now: datetime.datetime
) -> SlotStatus:
    """Intent first: the migration Job is named in status before it is created (a restart adopts it)."""
    new = _base(status, generation, now)
    _spend_approval(new, migration.request, dry_run=migration.dry_run)
    new["currentOwnershipMigration"] = migration.to_status()
    what = "dry run of the ownership migration" if migration.dry_run else "ownership migration"
    message = (
        f"{what} Job {migration.job_name} re-owns entries of "
        f"{ownership.owner(*migration.old)} to {ownership.owner(*migration.new)}"
    )
    _set(new, OWNERSHIP_MIGRATED, "Unknown", "Running", message, generation, now)
    _apply_rule(new, generation=generation, activity=Activity.MIGRATING, message=message, now=now)
    return new


def _spend_approval(new: SlotStatus, token: object, *, dry_run: bool) -> None:
    """An approval answers one request: once a real request with it is answered (or runs), status offers it no
    more. A dry run changes nothing, so it leaves the approval for the real run."""
    recorded = new.get("ownership")
    if dry_run or not isinstance(recorded, Mapping):
        return
    if recorded.get("approval") and recorded.get("approval") == token:
        new["ownership"] = {key: value for key, value in recorded.items() if key != "approval"}


def _migration_done(
    status: Mapping[str, Any], *, generation: int, record: dict[str, Any], probe_now: bool, now: datetime.datetime
) -> SlotStatus:
    """The request answered (`record` is lastOwnershipMigration); with `probe_now`, a probe is due at once."""
    new = _base(status, generation, now)
    _spend_approval(new, record.get("request"), dry_run=bool(record.get("dryRun")))
    new.pop("currentOwnershipMigration", None)
    if record.get("request") is None:
        new.pop("lastHandledOwnershipMigrationRequest", None)
    else:
        new["lastHandledOwnershipMigrationRequest"] = str(record["request"])
    new["lastOwnershipMigration"] = record
    state = "True" if record["reason"] == "Migrated" else "False"
    _set(new, OWNERSHIP_MIGRATED, state, record["reason"], record["message"], generation, now)
    if probe_now:
        # The owners changed: the verdict on record judged the old ones (schedule.due names this trigger).
        new["nextProbeTime"] = record["completionTime"]
    return _between_probes(new, generation=generation, now=now)


def migration_refused(
    status: Mapping[str, Any],
    *,
    generation: int,
    request: ownership.MigrationRequest,
    refusal: ownership.Refusal,
    migration: ownership.MigrationRef | None = None,
    now: datetime.datetime,
) -> SlotStatus:
    """The request is answered without a change: why is in OwnershipMigrated and lastOwnershipMigration."""
    record: dict[str, Any] = (
        migration.to_status() if migration else {"request": request.token, "dryRun": request.dry_run}
    )
    record.update(
        result="Refused",
        reason=refusal.reason,
        message=safe_message(refusal.message, limit=1024),
        completionTime=timestamps.format_time(now),
    )
    return _migration_done(status, generation=generation, record=record, probe_now=False, now=now)


def migration_job_created(
    status: Mapping[str, Any], *, generation: int, migration: ownership.MigrationRef, now: datetime.datetime
) -> SlotStatus:
    """The migration's Job exists: its uid in status, so a Job missing from now on was deleted, not never made."""
    new = _base(status, generation, now)
    new["currentOwnershipMigration"] = migration.to_status()
    return new


def migration_cancelled(
    status: Mapping[str, Any],
    *,
    generation: int,
    migration: ownership.MigrationRef,
    message: str,
    now: datetime.datetime,
) -> SlotStatus:
    """The migration stopped before it reported (its request withdrawn, its Job deleted): never started again.

    It may have re-owned some entries already, so a real run is followed by a probe at once.
    """
    record = migration.to_status()
    record.update(
        result="Cancelled",
        reason="MigrationCancelled",
        message=safe_message(message, limit=1024),
        completionTime=timestamps.format_time(now),
    )
    return _migration_done(status, generation=generation, record=record, probe_now=not migration.dry_run, now=now)


def migration_finished(
    status: Mapping[str, Any],
    *,
    generation: int,
    migration: ownership.MigrationRef,
    done: ownership.MigrationDone,
    now: datetime.datetime,
) -> SlotStatus:
    """The migration Job ended: its counts, and a probe at once when it changed anything."""
    record = migration.to_status()
    record["completionTime"] = timestamps.format_time(done.finished or now)
    report = done.report
    if report is None:
        record.update(result="Failed", reason="MigrationFailed", message=safe_message(done.failure, limit=1024))
    else:
        record.update(changed=report.changed, skipped=report.skipped, errors=report.errors)
        reason = "MigrationFailed" if report.errors else "DryRun" if migration.dry_run else "Migrated"
        record.update(
            result="Failed" if report.errors else "Succeeded",
            reason=reason,
            message=safe_message(ownership.migration_summary(migration, report), limit=1024),
        )
    changed = report is not None and report.changed > 0 and not migration.dry_run
    return _migration_done(status, generation=generation, record=record, probe_now=changed, now=now)


def _replacing(old: Any, new: Any) -> Any:
    """`new` as a merge-patch value over `old`: a merge patch merges objects, so removed keys must be nulled."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    value: dict[str, Any] = {key: None for key in old if key not in new}
    value.update({key: _replacing(old.get(key), item) for key, item in new.items()})
    return value


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` (None deletes a key, also inside nested objects)."""
    patch: dict[str, Any] = {
        key: _replacing(old.get(key), value) for key, value in new.items() if old.get(key) != value
    }
    patch.update({key: None for key in old if key not in new})
    return patch
