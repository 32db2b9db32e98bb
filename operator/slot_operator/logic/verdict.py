"""The probe contract: exit codes to phases, the JSON result line, safe messages."""

from __future__ import annotations

import dataclasses
import enum
import json
import re


class Phase(enum.StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    NEEDS_INIT = "NeedsInit"
    NEEDS_REAUTH = "NeedsReauth"
    IMAGE_BROKEN = "ImageBroken"


# Verdicts that need a human: reported as Stalled=True so GitOps fails fast.
STALLED_PHASES = frozenset({Phase.NEEDS_INIT, Phase.NEEDS_REAUTH, Phase.IMAGE_BROKEN})

EXIT_PHASES: dict[int, Phase] = {
    0: Phase.READY,
    64: Phase.IMAGE_BROKEN,
    65: Phase.NEEDS_INIT,
    66: Phase.NEEDS_REAUTH,
}
# Exit codes that are a verdict; the Job's podFailurePolicy fails fast on the non-zero ones.
VERDICT_EXIT_CODES = tuple(code for code in EXIT_PHASES if code)

MESSAGE_LIMIT = 256
# Long runs of token-like characters (JWTs, OAuth tokens, base64 blobs) never reach status or events.
_SECRETISH = re.compile(r"[A-Za-z0-9_\-+=]{32,}")


class FailureReason(enum.StrEnum):
    """Why a probe gave no verdict (ProbeSucceeded=False); stable API strings."""

    CRASHED = "ProbeCrashed"
    TIMED_OUT = "ProbeTimedOut"
    UNSCHEDULABLE = "Unschedulable"
    CLAIM_NOT_FOUND = "ClaimNotFound"
    CLAIM_IN_USE = "ClaimInUse"
    INVALID_SPEC = "InvalidSpec"
    JOB_LOST = "ProbeJobLost"
    JOB_REJECTED = "ProbeJobRejected"


def phase_for_exit(code: int) -> Phase | None:
    return EXIT_PHASES.get(code)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """The probe's one JSON line: ``{"status": ..., "agent": ..., "detail": ...}``."""

    status: str
    agent: str | None
    detail: str | None


def parse_result_line(text: str | None) -> ProbeResult | None:
    """Find the probe's JSON result in a termination message (the last matching line wins)."""
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("status"), str):
            agent, detail = data.get("agent"), data.get("detail")
            return ProbeResult(
                status=data["status"][:64],
                agent=agent if isinstance(agent, str) else None,
                detail=detail if isinstance(detail, str) else None,
            )
    return None


def safe_message(text: str | None, *, limit: int = MESSAGE_LIMIT) -> str:
    """One line, secrets masked, capped: fit for status conditions and Events."""
    flat = " ".join((text or "").split())
    flat = _SECRETISH.sub("[redacted]", flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
