"""Where a verdict's time went, for `make bench` (bench/timing.py): DEBUG lines on the `slot_operator.timing` logger.

Off unless that logger is enabled (SLOT_OPERATOR_TIMING_LOG=1, operate.py); then one line per verdict with
time.monotonic() stamps (one clock for every process on the machine, so the bench can line them up with its
own watches), and one line per garbage collection that paused the event loop for PAUSE or longer. The
collections are noted by a gc callback and logged with the next verdict line, never from inside the collector.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from slot_operator.kube.informer import Key

logger = logging.getLogger("slot_operator.timing")
PAUSE = 0.002  # seconds: shorter collections are not worth a line

_pauses: list[tuple[int, float, float]] = []  # (generation, started, seconds), not logged yet
_started = 0.0


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _started
    now = time.monotonic()
    if phase == "start":
        _started = now
    elif now - _started >= PAUSE and len(_pauses) < 1000:
        _pauses.append((int(info["generation"]), _started, now - _started))


def enable() -> None:
    """Log verdict timings and the collections that paused the loop (idempotent)."""
    logger.setLevel(logging.DEBUG)
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def verdict(key: Key, *, queued: float, picked: float, sent: float, answered: float) -> None:
    """One verdict: when its work joined the queue, was picked by a worker, its status sent and answered."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    while _pauses:
        generation, started, seconds = _pauses.pop(0)
        logger.debug("gc generation=%d at=%.6f pause=%.6f", generation, started, seconds)
    logger.debug(
        "verdict slot=%s/%s queued=%.6f picked=%.6f sent=%.6f answered=%.6f", *key, queued, picked, sent, answered
    )
