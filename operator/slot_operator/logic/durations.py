"""Go-style durations (``90s``, ``1h30m``, ``2.5h``), as used in Slot specs and flags."""

from __future__ import annotations

import datetime
import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")


def parse_duration(text: str) -> datetime.timedelta:
    """Parse a Go duration string; raises ValueError naming the text when it is not one."""
    if not text or not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected e.g. '90s', '5m' or '6h'")
    position, seconds = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text):
        raise ValueError(f"invalid duration {text!r}: expected e.g. '90s', '5m' or '6h'")
    try:
        return datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"invalid duration {text!r}: too long") from None


def format_duration(value: datetime.timedelta) -> str:
    """Shortest Go-style rendering of whole seconds (``1h30m``, ``45s``, ``0s``)."""
    remaining = int(value.total_seconds())
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        amount, remaining = divmod(remaining, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"
