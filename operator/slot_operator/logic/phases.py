"""The phases of a Slot, and everything the operator says about each: one table.

Status, the verdict's message, `kubectl slot` and the plugin's exit codes read it here; the CRD's
enum, the chart's alert rules and their tests, the runbook, the README and Argo CD's health check
are held to it by tests/unit/operator/test_phase_table.py, so a new phase fails the suite until
every one of them knows it.
"""

from __future__ import annotations

import dataclasses
import enum


class Phase(enum.StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    NEEDS_INIT = "NeedsInit"
    NEEDS_REAUTH = "NeedsReauth"
    IMAGE_BROKEN = "ImageBroken"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PhaseFacts:
    exit_code: int | None  # the probe's exit code that gives this verdict (docs/design.md §1); None: no verdict
    needs_human: bool  # Stalled=True on the current generation: GitOps gates stop, an alert pages
    result: str | None  # the probe's own status word (lastProbe.result when no JSON line was captured)
    ready_reason: str  # Ready's reason when this is the verdict
    default_message: str  # the verdict's message when the probe said nothing
    uid_mismatch_can_cause: bool  # a uid mismatch looks like this: the ownership audit's diagnosis is worth saying
    alert: str | None  # the chart's alert for this verdict on the current spec
    advice: str  # what a person does next (`kubectl slot why`); {probe}: the plugin's probe command
    runbook: str  # the docs/runbook.md section (anchor) for it


PHASES: dict[Phase, PhaseFacts] = {
    Phase.PENDING: PhaseFacts(
        exit_code=None,
        needs_human=False,
        result=None,
        ready_reason="AwaitingProbe",
        default_message="no verdict yet",
        uid_mismatch_can_cause=False,
        alert=None,
        advice="Wait for the probe of the current spec, or request one: {probe}",
        runbook="slotnoverdict",
    ),
    Phase.READY: PhaseFacts(
        exit_code=0,
        needs_human=False,
        result="ok",
        ready_reason="SmokeTestPassed",
        default_message="credentials present and parse",
        uid_mismatch_can_cause=False,
        alert=None,
        advice="Nothing to do: the current spec was probed and is Ready.",
        runbook="slotnotready",
    ),
    Phase.NEEDS_INIT: PhaseFacts(
        exit_code=65,
        needs_human=True,
        result="creds-missing",
        ready_reason="NeedsInit",
        default_message="credentials missing: initialise the slot",
        uid_mismatch_can_cause=True,
        alert="SlotNeedsInit",
        advice="Initialise the slot: log the agent in on the volume, or, if it was written by an older image as "
        "another uid, migrate the files' ownership to spec.runAsUser; then {probe}.",
        runbook="slotneedsinit",
    ),
    Phase.NEEDS_REAUTH: PhaseFacts(
        exit_code=66,
        needs_human=True,
        result="creds-invalid",
        ready_reason="NeedsReauth",
        default_message="credentials present but unusable: re-authenticate",
        uid_mismatch_can_cause=True,
        alert="SlotNeedsReauth",
        advice="Re-authenticate the agent on the slot volume, then {probe}.",
        runbook="slotneedsreauth",
    ),
    Phase.IMAGE_BROKEN: PhaseFacts(
        exit_code=64,
        needs_human=True,
        result="cli-broken",
        ready_reason="ImageBroken",
        default_message="agent CLI missing or broken in the image",
        uid_mismatch_can_cause=False,
        alert="SlotImageBroken",
        advice="Roll spec.image back to {last_ready}, or fix the image.",
        runbook="slotimagebroken",
    ),
}

# Exit codes that are a verdict, and the phase each gives.
EXIT_PHASES: dict[int, Phase] = {
    facts.exit_code: phase for phase, facts in PHASES.items() if facts.exit_code is not None
}
# The non-zero ones: the probe Job's podFailurePolicy fails the Job at once on them (no retry).
VERDICT_EXIT_CODES = tuple(sorted(code for code in EXIT_PHASES if code))
# Verdicts that need a human: Stalled=True, so GitOps fails fast.
STALLED_PHASES = frozenset(phase for phase, facts in PHASES.items() if facts.needs_human)
# Ready's reasons when it carries a verdict.
VERDICT_REASONS = frozenset(facts.ready_reason for facts in PHASES.values() if facts.exit_code is not None)


def phase_for_exit(code: int) -> Phase | None:
    return EXIT_PHASES.get(code)


def parse(text: object) -> Phase:
    """A phase from status (`Pending` for anything unknown or absent)."""
    try:
        return Phase(str(text)) if text else Phase.PENDING
    except ValueError:
        return Phase.PENDING
