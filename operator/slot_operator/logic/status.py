"""Slot status transitions: each takes the current status and returns the complete new one.

Only the operator writes Slot status, so transitions are computed from what is
there and written back as a merge patch of the keys that changed (`diff`).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from slot_operator.logic import conditions, timestamps
from slot_operator.logic.conditions import PROBE_SUCCEEDED, READY, RECONCILING, STALLED
from slot_operator.logic.outcome import NoVerdict, Verdict
from slot_operator.logic.verdict import STALLED_PHASES, FailureReason, Phase, safe_message

# The probe's own status words, for lastProbe.result when no JSON line was captured (exit 0 logs nothing).
_RESULT_FOR_PHASE = {
    Phase.READY: "ok",
    Phase.IMAGE_BROKEN: "cli-broken",
    Phase.NEEDS_INIT: "creds-missing",
    Phase.NEEDS_REAUTH: "creds-invalid",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeRef:
    """The probe in flight, as recorded in status.currentProbe before its Job is created."""

    job_name: str
    image: str
    generation: int
    trigger: str
    request: str | None
    start_time: datetime.datetime

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
        )


def phase_of(status: Mapping[str, Any]) -> Phase:
    try:
        return Phase(status.get("phase") or Phase.PENDING)
    except ValueError:
        return Phase.PENDING


def _base(status: Mapping[str, Any], generation: int, now: datetime.datetime) -> dict[str, Any]:
    """Copy of `status` with every condition present (Unknown until known) and observedGeneration current."""
    new = dict(status)
    new["observedGeneration"] = generation
    new.setdefault("phase", Phase.PENDING.value)
    conds: list[dict[str, Any]] = [dict(c) for c in status.get("conditions") or ()]
    defaults = {
        READY: ("Unknown", "AwaitingProbe", "no verdict yet"),
        STALLED: ("False", "AwaitingProbe", "no verdict yet"),
        RECONCILING: ("False", "Idle", ""),
        PROBE_SUCCEEDED: ("Unknown", "AwaitingProbe", "no probe has finished yet"),
    }
    stalled = conditions.find(conds, STALLED)
    if stalled is not None and stalled.get("reason") == FailureReason.INVALID_SPEC:
        # The spec parses again (invalid_spec() sets it back when it does not): no longer stuck on it.
        conds = [c for c in conds if c.get("type") != STALLED]
    for kind, (state, reason, message) in defaults.items():
        if conditions.find(conds, kind) is None:
            conds = conditions.set_condition(
                conds, kind=kind, status=state, reason=reason, message=message, generation=generation, now=now
            )
    new["conditions"] = conds
    return new


def _set(
    new: dict[str, Any], kind: str, state: str, reason: str, message: str, generation: int, now: datetime.datetime
) -> None:
    new["conditions"] = conditions.set_condition(
        new["conditions"], kind=kind, status=state, reason=reason, message=message, generation=generation, now=now
    )


def queued(status: Mapping[str, Any], *, generation: int, position: int, now: datetime.datetime) -> dict[str, Any]:
    new = _base(status, generation, now)
    _set(
        new,
        RECONCILING,
        "True",
        "Queued",
        f"waiting for a probe slot (position {position} in the queue)",
        generation,
        now,
    )
    return new


def probing(status: Mapping[str, Any], *, generation: int, probe: ProbeRef, now: datetime.datetime) -> dict[str, Any]:
    new = _base(status, generation, now)
    new["currentProbe"] = probe.to_status()
    _set(new, RECONCILING, "True", "Probing", f"probe Job {probe.job_name} running ({probe.trigger})", generation, now)
    return new


def idle(status: Mapping[str, Any], *, generation: int, suspended: bool, now: datetime.datetime) -> dict[str, Any]:
    new = _base(status, generation, now)
    new.pop("currentProbe", None)
    if suspended:
        _set(new, RECONCILING, "False", "Suspended", "spec.suspend is true: no new probes", generation, now)
    else:
        next_time = new.get("nextProbeTime")
        _set(new, RECONCILING, "False", "Idle", f"next probe at {next_time}" if next_time else "", generation, now)
    return new


def invalid_spec(status: Mapping[str, Any], *, generation: int, message: str, now: datetime.datetime) -> dict[str, Any]:
    """What the CRD schema could not catch: needs a human, so Stalled; no probe runs."""
    new = _base(status, generation, now)
    new.pop("currentProbe", None)
    new.pop("nextProbeTime", None)
    _set(new, STALLED, "True", FailureReason.INVALID_SPEC, message, generation, now)
    _set(new, RECONCILING, "False", FailureReason.INVALID_SPEC, message, generation, now)
    _set(new, PROBE_SUCCEEDED, "False", FailureReason.INVALID_SPEC, message, generation, now)
    return new


def _last_probe(
    probe: ProbeRef | None,
    outcome: Verdict | NoVerdict,
    *,
    generation: int,
    trigger: str,
    result: str | None,
    now: datetime.datetime,
) -> dict[str, Any]:
    data: dict[str, Any] = probe.to_status() if probe else {"generation": generation, "trigger": trigger}
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
    now: datetime.datetime,
) -> dict[str, Any]:
    """A verdict for `probe.generation`: Ready/Stalled follow it, with that generation."""
    new = _base(status, generation, now)
    new.pop("currentProbe", None)
    phase = outcome.phase
    result = (
        outcome.result.status
        if outcome.result
        else _RESULT_FOR_PHASE.get(phase)
        if outcome.exit_code is not None
        else None
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
        _set(new, READY, "True", outcome.reason, outcome.message, probe.generation, now)
    else:
        _set(new, READY, "False", phase.value, outcome.message, probe.generation, now)
    stalled = phase in STALLED_PHASES
    _set(
        new,
        STALLED,
        "True" if stalled else "False",
        phase.value,
        outcome.message if stalled else "",
        probe.generation,
        now,
    )
    _set(new, RECONCILING, "False", "Idle", f"next probe at {new['nextProbeTime']}", generation, now)
    _set(
        new,
        PROBE_SUCCEEDED,
        "True",
        "ProbeCompleted",
        f"probe exited with code {outcome.exit_code}" if outcome.exit_code is not None else outcome.reason,
        generation,
        now,
    )
    return new


def no_verdict(
    status: Mapping[str, Any],
    *,
    generation: int,
    probe: ProbeRef | None,
    outcome: NoVerdict,
    trigger: str,
    request: str | None,
    retry_at: datetime.datetime,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The probe could not give a verdict: phase, Ready and Stalled stay; retry at `retry_at`."""
    new = _base(status, generation, now)
    new.pop("currentProbe", None)
    result = outcome.result.status if outcome.result else None
    new["lastProbe"] = _last_probe(probe, outcome, generation=generation, trigger=trigger, result=result, now=now)
    new["consecutiveProbeFailures"] = int(status.get("consecutiveProbeFailures") or 0) + 1
    new["nextProbeTime"] = timestamps.format_time(retry_at)
    handled = probe.request if probe else request
    if handled is not None:
        new["lastHandledProbeRequest"] = handled
    _set(new, RECONCILING, "False", "Idle", f"retry at {new['nextProbeTime']}", generation, now)
    _set(new, PROBE_SUCCEEDED, "False", outcome.reason, outcome.message, generation, now)
    return new


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
    patch.update({key: None for key in old if key not in new and key != "kopf"})
    return patch
