"""When a Slot needs a probe, which Job is its current one, and where a probe may run.

Everything is computed from the Slot's status and the objects read from the API,
so the schedule survives operator restarts.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from slot_operator.logic import backoff, names, ownership, timestamps
from slot_operator.logic.outcome import NoVerdict, is_finished
from slot_operator.logic.status import faulty_generation
from slot_operator.logic.verdict import FailureReason

# Periodic probes are pushed back by up to this fraction of the interval (Flux's reconcile jitter, 5%).
INTERVAL_JITTER = 0.05
# Overdue periodic probes found at start-up are spread at this pace, over at most STARTUP_SPREAD.
STARTUP_PACE = 20.0  # Slots a second
STARTUP_SPREAD = datetime.timedelta(minutes=5)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trigger:
    """Why a probe starts now: created, spec-changed, manual, claim-appeared, interval or retry."""

    kind: str
    request: str | None = None


def retry_delay(failures: int, *, base: datetime.timedelta, cap: datetime.timedelta) -> datetime.timedelta:
    """When to probe again after `failures` probes in a row gave no verdict (counting the one just recorded)."""
    seconds = backoff.exponential(failures, base=base.total_seconds(), cap=cap.total_seconds())
    return datetime.timedelta(seconds=seconds)


def _fraction(seed: str) -> float:
    """A stable number in [0, 1) derived from `seed`."""
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") / 2**64


def jittered(interval: datetime.timedelta, *, seed: str) -> datetime.timedelta:
    """`interval` plus up to INTERVAL_JITTER of it, stable for a seed: Slots created together drift apart."""
    return interval * (1 + INTERVAL_JITTER * _fraction(seed))


def spread(seed: str, *, window: datetime.timedelta) -> datetime.timedelta:
    """A stable offset in [0, window) for a seed: a fleet found overdue is probed over `window`, not at once."""
    return window * _fraction(seed)


def spread_window(statuses: Sequence[Mapping[str, Any]], *, now: datetime.datetime) -> datetime.timedelta:
    """How long to spread the periodic probes found overdue at start-up over: one alone goes at once."""
    overdue = 0
    for status in statuses:
        next_time = timestamps.parse_time(status.get("nextProbeTime"))
        overdue += next_time is not None and next_time <= now
    return min(datetime.timedelta(seconds=overdue / STARTUP_PACE), STARTUP_SPREAD)


def manual_request(annotations: Mapping[str, str] | None) -> str | None:
    """The probe request token, as status keeps it (whole, or a digest when long: never cut)."""
    token = (annotations or {}).get(names.PROBE_REQUEST_ANNOTATION)
    return ownership.stored_token(token.strip()) if isinstance(token, str) and token.strip() else None


def probed_another_spec(last: Mapping[str, Any], *, generation: int, fingerprint: str) -> bool:
    """The last probe ran with other verdict fields than the current spec's: by its specHash, or, recorded by
    an operator older than specHash, by its generation (a Slot upgraded so is probed again at its next change)."""
    recorded = last.get("specHash")
    if recorded:
        return str(recorded) != fingerprint
    return int(last.get("generation") or 0) < generation


def migration_probe_due(status: Mapping[str, Any]) -> bool:
    """nextProbeTime is the probe an ownership migration that changed owners asked for (status.migration_finished)."""
    migrated = (status.get("lastOwnershipMigration") or {}).get("completionTime")
    return bool(migrated) and migrated == status.get("nextProbeTime")


def due(
    status: Mapping[str, Any],
    *,
    generation: int,
    fingerprint: str,
    request: str | None,
    claim_exists: bool | None,
    now: datetime.datetime,
) -> tuple[Trigger | None, datetime.datetime | None]:
    """(trigger, None) when a probe is due now, else (None, when it will be due).

    A new generation that changed only interval, timeout or suspend (the same `fingerprint`) is no reason to
    probe: its verdict is carried (status.carried), a retry keeps its backoff and a periodic probe its time.
    """
    last = status.get("lastProbe") or {}
    if request is not None and request != status.get("lastHandledProbeRequest"):
        return Trigger(kind="manual", request=request), None
    if not last:
        return Trigger(kind="created"), None
    if probed_another_spec(last, generation=generation, fingerprint=fingerprint):
        return Trigger(kind="spec-changed"), None
    faulty = faulty_generation(status)
    if faulty is not None:
        # The spec is at fault: only a new generation (any change: it is no verdict to carry) or a request probes again.
        return (Trigger(kind="spec-changed") if faulty < generation else None), None
    if last.get("reason") == FailureReason.CLAIM_NOT_FOUND and claim_exists:
        return Trigger(kind="claim-appeared"), None
    next_time = timestamps.parse_time(status.get("nextProbeTime")) or now
    if next_time <= now:
        if migration_probe_due(status):
            return Trigger(kind="ownership-migrated"), None
        kind = "retry" if int(status.get("consecutiveProbeFailures") or 0) else "interval"
        return Trigger(kind=kind), None
    return None, next_time


def periodic_after(
    status: Mapping[str, Any], *, interval: datetime.timedelta, slot_uid: str
) -> datetime.datetime | None:
    """When the next periodic probe is due under `interval` (jittered as when the verdict was recorded), counted
    from the last probe; None when the next probe on record is no periodic one (a retry, the probe a migration
    asked for) or there is no verdict to count from."""
    last = status.get("lastProbe") or {}
    finished = timestamps.parse_time(last.get("completionTime"))
    if finished is None or int(status.get("consecutiveProbeFailures") or 0) or migration_probe_due(status):
        return None
    return finished + jittered(interval, seed=f"{slot_uid}/{last.get('jobName')}")


def job_generation(job: Mapping[str, Any]) -> int:
    try:
        return int(((job.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_GENERATION, 0))
    except ValueError:
        return 0


def current_job(status: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The Job the Slot's status says is in flight; else an unfinished one to adopt (written by an older run).

    Only a Job created after the last outcome on record is adopted: an older one (a probe whose exit code
    was taken as the verdict before the Job controller marked it finished) has said all it will say.
    """
    recorded = (status.get("currentProbe") or {}).get("jobName")
    by_name = {str((job.get("metadata") or {}).get("name")): job for job in jobs}
    if recorded and recorded in by_name:
        return by_name[recorded]
    last_outcome = timestamps.parse_time((status.get("lastProbe") or {}).get("completionTime"))

    def adoptable(job: Mapping[str, Any]) -> bool:
        meta = job.get("metadata") or {}
        created = timestamps.parse_time(meta.get("creationTimestamp"))
        newer = last_outcome is None or (created is not None and created > last_outcome)
        return newer and not is_finished(job) and not meta.get("deletionTimestamp")

    active = sorted(
        (job for job in jobs if adoptable(job)),
        key=lambda job: str((job.get("metadata") or {}).get("creationTimestamp") or ""),
    )
    return active[-1] if active else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Placement:
    node: str | None


def place(
    claim: Mapping[str, Any] | None, claim_name: str, users: Sequence[Mapping[str, Any]]
) -> Placement | NoVerdict:
    """Where the probe may mount the claim, given the running pods that already use it.

    ReadWriteOnce: on the node that has it attached (required node affinity). ReadWriteOncePod:
    not while another pod holds it. Anything shareable: anywhere.
    """
    if claim is None:
        return NoVerdict(
            reason=FailureReason.CLAIM_NOT_FOUND,
            message=f"PersistentVolumeClaim {claim_name!r} not found in the Slot's namespace",
        )
    modes = set((claim.get("spec") or {}).get("accessModes") or ())
    holders = sorted(str((pod.get("metadata") or {}).get("name")) for pod in users)
    if "ReadWriteOncePod" in modes and holders:
        return NoVerdict(
            reason=FailureReason.CLAIM_IN_USE,
            message=f"ReadWriteOncePod claim {claim_name!r} is in use by pod {holders[0]}",
        )
    if modes & {"ReadWriteMany", "ReadOnlyMany"} or "ReadWriteOnce" not in modes:
        return Placement(node=None)
    nodes = sorted(
        {str((pod.get("spec") or {}).get("nodeName")) for pod in users if (pod.get("spec") or {}).get("nodeName")}
    )
    return Placement(node=nodes[0] if nodes else None)
