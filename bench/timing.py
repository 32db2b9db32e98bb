"""Where each verdict's time went: the operator's per-verdict timing lines, matched with the bench's own watches.

The operator (with SLOT_OPERATOR_TIMING_LOG set) logs one line per verdict with time.monotonic() stamps:
when the work joined its queue, when a worker picked it, when the status patch was sent and answered.
CLOCK_MONOTONIC is one clock for every process on the machine, so these line up with the Observer's
stamps (probe container terminated, pod terminated, status seen). Before the pod has terminated, a
verdict waits for the ownership audit beside the probe (`audit`, shown apart: the verdict carries its
report). From then on, each verdict's latency splits into:

- to queue:   watch delivery of the terminated pod to the operator, and its handler (0 when already queued)
- queue wait: waiting for a worker, or for the event loop to run it
- reconcile:  the reconcile's own work up to the verdict's status patch (no await before it)
- write:      the status patch's round trip
- echo:       the API server's watch carrying the new status back to the bench

The operator also logs each garbage collection that paused its event loop (≥ 2 ms); each slow verdict
shows how much of its time such pauses took (`gc`), whichever part they fell in.
"""

from __future__ import annotations

import pathlib
import re
import statistics
from collections.abc import Mapping
from typing import Any, Protocol

LINE = re.compile(
    r"verdict slot=(?P<ns>[^/\s]+)/(?P<name>\S+) queued=(?P<queued>[\d.]+) picked=(?P<picked>[\d.]+) "
    r"sent=(?P<sent>[\d.]+) answered=(?P<answered>[\d.]+)"
)
GC_LINE = re.compile(r"gc generation=(?P<generation>\d) at=(?P<at>[\d.]+) pause=(?P<pause>[\d.]+)")
PARTS = ("to_queue", "queue_wait", "reconcile", "write", "echo")


def records(log: pathlib.Path) -> tuple[dict[str, tuple[float, float, float, float]], list[tuple[int, float, float]]]:
    """Slot name -> (queued, picked, sent, answered) of its first verdict; the GC pauses (generation, at, seconds)."""
    found: dict[str, tuple[float, float, float, float]] = {}
    pauses: list[tuple[int, float, float]] = []
    with log.open(errors="replace") as handle:
        for line in handle:
            if "gc generation=" in line and (gc := GC_LINE.search(line)):
                pauses.append((int(gc["generation"]), float(gc["at"]), float(gc["pause"])))
            match = LINE.search(line) if "verdict slot=" in line else None
            if match and match["name"] not in found:
                found[match["name"]] = (
                    float(match["queued"]), float(match["picked"]), float(match["sent"]), float(match["answered"])
                )  # fmt: skip
    return found, pauses


def _paused(pauses: list[tuple[int, float, float]], start: float, end: float) -> float:
    """Seconds of GC pauses within [start, end]."""
    return sum(max(0.0, min(end, at + seconds) - max(start, at)) for _, at, seconds in pauses)


def split(terminated: float, stamps: tuple[float, float, float, float], finished: float) -> dict[str, float]:
    """One verdict's latency in PARTS (each ≥ 0, summing to finished - terminated when the stamps are in order)."""
    points = [terminated]
    for stamp in (*stamps, finished):
        points.append(max(points[-1], stamp))
    return {part: round(points[i + 1] - points[i], 4) for i, part in enumerate(PARTS)}


class Stamps(Protocol):
    """The Observer's stamps (bench/observe.py), by Slot name."""

    probe_terminated: Mapping[str, float]
    terminated: Mapping[str, float]
    finished: Mapping[str, float]


def breakdown(seen: Stamps, log: pathlib.Path, *, slowest: int = 10) -> dict[str, Any]:
    """p50/p99 of each part over every verdict with a timing line, and the `slowest` verdicts split into parts."""
    found, pauses = records(log)
    terminated, finished = seen.terminated, seen.finished
    rows = [
        {"slot": name, "audit": round(terminated[name] - seen.probe_terminated.get(name, terminated[name]), 4),
         "total": round(finished[name] - terminated[name], 4),
         **split(terminated[name], found[name], finished[name]),
         "gc": round(_paused(pauses, terminated[name], finished[name]), 4)}
        for name in terminated
        if name in finished and name in found
    ]  # fmt: skip
    if not rows:
        return {"verdicts": 0}
    rows.sort(key=lambda row: row["total"], reverse=True)
    summary = {part: _stats([row[part] for row in rows]) for part in ("audit", "total", *PARTS)}
    gc = {
        f"gen{generation}": {"count": len(each), "max_s": round(max(each), 4), "total_s": round(sum(each), 3)}
        for generation in (0, 1, 2)
        if (each := [seconds for g, _, seconds in pauses if g == generation])
    }
    return {"verdicts": len(rows), "parts": summary, "slowest": rows[:slowest], "gc_pauses": gc}


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)]
    return {"p50": round(statistics.median(ordered), 4), "p99": p99}


def report(timing: Mapping[str, Any]) -> list[str]:
    """The breakdown as report lines."""
    if not timing.get("verdicts"):
        return ["\nwhere verdicts waited: no timing lines in the operator's log (an older checkout?)"]
    columns = ("audit", "total", *PARTS)
    header = f"  {'':22s}" + "".join(f" {part.replace('_', ' '):>10s}" for part in (*columns, "gc"))
    lines = [f"\nwhere verdicts waited (s; {timing['verdicts']} verdicts, operator's timing lines + bench watches;",
             "  audit: probe container → pod terminated, by design; total: pod terminated → status = the rest):",
             header]  # fmt: skip
    for stat in ("p50", "p99"):
        lines.append(f"  {'each part, ' + stat:22s}" + "".join(f" {timing['parts'][p][stat]:10.3f}" for p in columns))
    lines.append("  slowest:")
    for row in timing["slowest"]:
        lines.append(f"  {row['slot']:22s}" + "".join(f" {row[part]:10.3f}" for part in (*columns, "gc")))
    pauses = "; ".join(
        f"{generation}: {each['count']}, longest {each['max_s']:.3f} s, {each['total_s']:.2f} s in all"
        for generation, each in timing.get("gc_pauses", {}).items()
    )
    lines.append(f"  GC pauses of the operator's loop ≥ 2 ms: {pauses or 'none'}")
    return lines
