"""The probe contract: why a probe gave no verdict, its JSON result line, and messages safe to show."""

from __future__ import annotations

import dataclasses
import enum
import json
import re

MESSAGE_LIMIT = 256
REDACTED = "[redacted]"
# Secrets are recognised by their context, not by their length, so that Job names, claim names, paths
# and image digests in a message survive. In order: an HTTP Authorization scheme's credentials, the value
# after a credential-like key (JSON or key=value), a JWT, a provider's token prefix, then quoted or bare
# strings shaped like tokens (mixed upper/lower case and digits, never a path).
_SECRET_KEY = (
    r"[A-Za-z0-9_-]*(?:token|secret|passw(?:or)?d|api[_-]?key|authorization|cookie|credentials?|private[_-]?key)"
    r"[A-Za-z0-9_-]*"
)
_KEY_VALUE = re.compile(
    rf"""(?P<key>["']?{_SECRET_KEY}["']?\s*[:=]\s*)(?!(?:Bearer|Basic)\s)(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s"',;&{{}}\[\]]+)""",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_TOKEN_PREFIX = re.compile(
    r"\b(?:sk-(?:ant-)?[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|ya29\.[A-Za-z0-9_-]{20,})"
)
_QUOTED = re.compile(r'"(?P<text>[A-Za-z0-9_.~+/=-]{20,})"')
_BARE = re.compile(r"(?<![A-Za-z0-9_.~+/=-])[A-Za-z0-9_.~+/=-]{32,}(?![A-Za-z0-9_.~+/=-])")


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
    # The probe's image could not be pulled for a reason that may pass (429, 5xx, timeout, pull secret): a
    # registry blip is no verdict. An image the registry says does not exist is ImageBroken (reason ImageNotFound).
    IMAGE_PULL_FAILED = "ImagePullFailed"
    # The kubelet cannot build the probe container: a Secret/ConfigMap (or key) spec.env names is missing.
    CONTAINER_CONFIG = "ContainerConfigError"


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


def _token_like(text: str) -> bool:
    """Upper and lower case letters and digits all present, and not a path: how tokens and keys look."""
    return (
        not text.startswith("/")
        and any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and any(c.isdigit() for c in text)
    )


def _mask_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('key')}{quote}{REDACTED}{quote}"


def redact(text: str) -> str:
    """`text` with credentials replaced by [redacted], recognised by context (see the patterns above)."""
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group('scheme')} {REDACTED}", text)
    text = _KEY_VALUE.sub(_mask_value, text)
    text = _JWT.sub(REDACTED, text)
    text = _TOKEN_PREFIX.sub(REDACTED, text)
    text = _QUOTED.sub(lambda m: f'"{REDACTED}"' if _token_like(m.group("text")) else m.group(0), text)
    return _BARE.sub(lambda m: REDACTED if _token_like(m.group(0)) else m.group(0), text)


def safe_message(text: str | None, *, limit: int = MESSAGE_LIMIT) -> str:
    """One line, secrets masked, capped: fit for status conditions and Events."""
    flat = redact(" ".join((text or "").split()))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
