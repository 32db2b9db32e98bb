"""What a Slot's status says, read one way for the metrics and for `kubectl slot`.

The contract's rule (docs/design.md): a verdict belongs to a generation, and only a verdict
on the Slot's current generation answers for its current spec.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from slot_operator.logic import phases, timestamps
from slot_operator.logic.conditions import PROBE_SUCCEEDED, READY, RECONCILING, STALLED, find
from slot_operator.logic.phases import PHASES, VERDICT_REASONS, Phase
from slot_operator.logic.status import Activity
from slot_operator.logic.verdict import FailureReason

_FAILURE_REASONS = frozenset(reason.value for reason in FailureReason)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlotView:
    namespace: str
    name: str
    generation: int
    phase: Phase
    verdict_generation: int | None  # the generation the latest verdict was made on; None before any verdict
    suspended: bool
    invalid_spec: bool  # Stalled=InvalidSpec on the current generation: no probe runs until the spec is fixed
    image: str
    last_probe: datetime.datetime | None  # the latest probe attempt finished (verdict or not)
    last_probe_failed: bool  # ... without a verdict
    verdict_time: datetime.datetime | None
    last_ready: datetime.datetime | None
    next_probe: datetime.datetime | None
    failures: int  # consecutive probes without a verdict
    handled_request: str | None
    reason: str  # one word for what holds the Slot now
    message: str

    @property
    def verdict_current(self) -> bool:
        return self.verdict_generation == self.generation

    @property
    def ready(self) -> bool:
        """Ready on the current spec: what `kubectl wait --for=condition=Ready` and kstatus wait for."""
        return self.verdict_current and self.phase is Phase.READY


def view(slot: Mapping[str, Any]) -> SlotView:
    meta = slot.get("metadata") or {}
    spec = slot.get("spec") or {}
    status = slot.get("status") or {}
    generation = int(meta.get("generation") or 1)
    conditions = status.get("conditions") or ()
    ready = find(conditions, READY) or {}
    stalled = find(conditions, STALLED) or {}
    last = status.get("lastProbe") or {}
    phase = phases.parse(status.get("phase"))
    # A verdict sets Ready True or False with its own reason, stamped with the generation it was made on.
    has_verdict = ready.get("status") in ("True", "False") and ready.get("reason") in VERDICT_REASONS
    verdict_generation = int(ready.get("observedGeneration") or 0) if has_verdict else None
    last_failed = str(last.get("reason") or "") in _FAILURE_REASONS
    last_time = timestamps.parse_time(last.get("completionTime"))
    last_ready = timestamps.parse_time(status.get("lastReadyTime"))
    if last and not last_failed:
        verdict_time = last_time
    elif phase is Phase.READY:
        verdict_time = last_ready
    else:  # later probes failed: the verdict dates from when the Slot entered its phase
        verdict_time = timestamps.parse_time(ready.get("lastTransitionTime")) if verdict_generation else None
    suspended = bool(spec.get("suspend", False))
    invalid = stalled.get("status") == "True" and stalled.get("reason") == FailureReason.INVALID_SPEC
    reason, message = _holding(
        conditions, suspended=suspended, invalid=invalid, verdict_generation=verdict_generation, generation=generation
    )
    request = status.get("lastHandledProbeRequest")
    return SlotView(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        generation=generation,
        phase=phase,
        verdict_generation=verdict_generation,
        suspended=suspended,
        invalid_spec=invalid and int(stalled.get("observedGeneration") or 0) == generation,
        image=str(spec.get("image") or ""),
        last_probe=last_time,
        last_probe_failed=last_failed,
        verdict_time=verdict_time,
        last_ready=last_ready,
        next_probe=timestamps.parse_time(status.get("nextProbeTime")),
        failures=int(status.get("consecutiveProbeFailures") or 0),
        handled_request=str(request) if request is not None else None,
        reason=reason,
        message=message,
    )


def _holding(
    conditions: Any, *, suspended: bool, invalid: bool, verdict_generation: int | None, generation: int
) -> tuple[str, str]:
    """One word for what holds the Slot now, and its message."""
    ready = find(conditions, READY) or {}
    stalled = find(conditions, STALLED) or {}
    reconciling = find(conditions, RECONCILING) or {}
    probe_ok = find(conditions, PROBE_SUCCEEDED) or {}
    if suspended:
        return "Suspended", "spec.suspend is true: no new probes"
    if invalid:
        return FailureReason.INVALID_SPEC.value, str(stalled.get("message") or "")
    if reconciling.get("status") == "True" and reconciling.get("reason") != Activity.RETRYING:
        return str(reconciling.get("reason") or ""), str(reconciling.get("message") or "")
    if probe_ok.get("status") == "False":  # retrying: why the last probe gave no verdict
        return str(probe_ok.get("reason") or ""), str(probe_ok.get("message") or "")
    if verdict_generation is not None and verdict_generation != generation:
        return "AwaitingProbe", f"the verdict is for generation {verdict_generation}, the spec is at {generation}"
    return str(ready.get("reason") or "AwaitingProbe"), str(ready.get("message") or "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Answer:
    """The end of a wait for a requested probe: the exit code and what to print."""

    code: int
    word: str  # the phase, or why there is none
    message: str


NOT_READY_EXIT = 1  # suspended, invalid spec, gone: no verdict will come


def probe_answer(slot: SlotView, token: str) -> Answer | None:
    """The answer to the probe request `token`, or None while it is still coming.

    Done when the operator has acknowledged the token, the latest probe gave a verdict (a probe
    that could not decide is retried) and that verdict is on the current generation.
    """
    if slot.suspended:
        return Answer(code=NOT_READY_EXIT, word="Suspended", message="spec.suspend is true: the operator runs no probe")
    if slot.invalid_spec:
        return Answer(code=NOT_READY_EXIT, word=FailureReason.INVALID_SPEC.value, message=slot.message)
    if slot.handled_request != token or slot.last_probe_failed or not slot.verdict_current:
        return None
    code = PHASES[slot.phase].exit_code
    return Answer(code=NOT_READY_EXIT if code is None else code, word=slot.phase.value, message=slot.message)
