"""Exponential backoff, the operator's one: probe retries, API retries, watch restarts, the work queue."""

from __future__ import annotations

import random


def exponential(attempt: int, *, base: float, cap: float) -> float:
    """base, 2·base, 4·base, ... for attempt 1, 2, 3, ... (attempt 0 or less is base), never above cap."""
    exponent: int = min(max(attempt - 1, 0), 62)
    return min(base * float(2**exponent), cap)


def jittered(delay: float) -> float:
    """A delay drawn from [delay/2, delay]: retries of many clients spread instead of arriving together."""
    return random.uniform(delay / 2, delay)
