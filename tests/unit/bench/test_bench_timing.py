"""bench/timing.py: a verdict's latency split into parts from the operator's timing lines and the bench's stamps."""

from __future__ import annotations

import pathlib
import types

import pytest

from bench import timing


def test_the_parts_add_up_to_the_latency() -> None:
    parts = timing.split(10.0, (10.01, 10.03, 10.04, 10.09), 10.1)
    assert parts == pytest.approx(
        {"to_queue": 0.01, "queue_wait": 0.02, "reconcile": 0.01, "write": 0.05, "echo": 0.01}
    )
    assert sum(parts.values()) == pytest.approx(0.1)


def test_work_queued_before_the_termination_was_seen_waits_from_the_termination() -> None:
    parts = timing.split(10.0, (9.5, 10.02, 10.03, 10.05), 10.06)
    assert parts["to_queue"] == 0
    assert parts["queue_wait"] == pytest.approx(0.02)
    assert sum(parts.values()) == pytest.approx(0.06)


def test_breakdown_reads_verdict_and_gc_lines(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "operator.log"
    log.write_text(
        "[...] slot_operator.timing [DEBUG] gc generation=2 at=10.020000 pause=0.050000\n"
        "[...] slot_operator.timing [DEBUG] verdict slot=ns/a queued=10.010000 picked=10.080000 "
        "sent=10.081000 answered=10.100000\n"
        "[...] slot_operator.timing [DEBUG] verdict slot=ns/b queued=20.010000 picked=20.011000 "
        "sent=20.012000 answered=20.030000\n"
    )
    seen = types.SimpleNamespace(
        probe_terminated={"a": 9.9, "b": 20.0}, terminated={"a": 10.0, "b": 20.0}, finished={"a": 10.11, "b": 20.04}
    )
    result = timing.breakdown(seen, log)
    assert result["verdicts"] == 2
    slowest = result["slowest"][0]
    assert slowest["slot"] == "a"
    assert slowest["audit"] == pytest.approx(0.1)  # the probe container ended before the audit beside it
    assert slowest["total"] == pytest.approx(0.11)
    assert slowest["queue_wait"] == pytest.approx(0.07)
    assert slowest["gc"] == pytest.approx(0.05)  # the collection paused the loop while it waited
    assert result["slowest"][1]["gc"] == 0
    assert result["gc_pauses"] == {"gen2": {"count": 1, "max_s": 0.05, "total_s": 0.05}}
    assert any("slowest" in line for line in timing.report(result))
