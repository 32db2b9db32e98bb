"""The operator's metrics (metrics.py): per-Slot series follow the status and vanish with the Slot."""

from __future__ import annotations

import datetime

import prometheus_client
import pytest
from prometheus_client import parser
from slot_operator import metrics as metrics_module
from slot_operator.logic import report
from slot_operator.metrics import Metrics


def series(metrics: Metrics, slot: str) -> dict[str, float]:
    text = prometheus_client.generate_latest(metrics.registry).decode()
    return {
        f"{sample.name}{'/' + sample.labels['phase'] if 'phase' in sample.labels else ''}"
        f"{'/' + sample.labels['result'] if 'result' in sample.labels else ''}": sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("slot") == slot and not sample.name.endswith("_created")
    }


def slot(name: str, **status: object) -> report.SlotView:
    return report.view({"metadata": {"namespace": "agents", "name": name, "generation": 1}, "spec": {},
                        "status": status})  # fmt: skip


def test_a_slot_is_published_and_forgotten() -> None:
    metrics = Metrics()
    metrics.observe_slot(
        slot("a", phase="Ready", nextProbeTime="2026-01-01T06:00:00Z", consecutiveProbeFailures=2,
             conditions=[{"type": "Ready", "status": "True", "reason": "SmokeTestPassed", "observedGeneration": 1}]),
        interval=datetime.timedelta(hours=6),
    )  # fmt: skip
    metrics.observe_slot(slot("b"), interval=None)
    metrics.probe_finished("agents", "a", result="ProbeCrashed", verdict=False, seconds=3.0)
    published = series(metrics, "a")
    assert published["slot_operator_slot_phase/Ready"] == 1
    assert published["slot_operator_slot_phase/Pending"] == 0
    assert published["slot_operator_slot_ready"] == 1
    assert published["slot_operator_slot_verdict_current"] == 1
    assert published["slot_operator_slot_suspended"] == 0
    assert published["slot_operator_slot_interval_seconds"] == 6 * 3600
    assert published["slot_operator_slot_next_probe_timestamp_seconds"] == 1767247200
    assert published["slot_operator_slot_consecutive_probe_failures"] == 2
    assert published["slot_operator_probe_results_total/ProbeCrashed"] == 1
    assert "slot_operator_slot_last_probe_timestamp_seconds" not in published  # no probe finished yet
    # No parsed spec (invalid) and no verdict: no interval or timestamps, but the state is there.
    assert "slot_operator_slot_interval_seconds" not in series(metrics, "b")
    assert series(metrics, "b")["slot_operator_slot_phase/Pending"] == 1
    # A status that lost a timestamp drops its series instead of keeping a stale value.
    metrics.observe_slot(slot("a", phase="Ready"), interval=None)
    assert "slot_operator_slot_next_probe_timestamp_seconds" not in series(metrics, "a")

    metrics.forget_slot("agents", "a")
    assert series(metrics, "a") == {}
    assert series(metrics, "b") != {}


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (None, "", "Unexpected"),
        (0, "", "ConnectionError"),
        (409, "Conflict", "Conflict"),
        (409, "", "Conflict"),
        (500, "SomethingNew", "InternalError"),
        (403, "Forbidden", "Forbidden"),
        (418, "", "ClientError"),
        (599, "", "ServerError"),
    ],
)
def test_reconcile_error_reasons_are_bounded(status: int | None, reason: str, expected: str) -> None:
    assert metrics_module.reconcile_error_reason(status=status, reason=reason) == expected
    assert expected in metrics_module.ERROR_REASONS


def test_error_reasons_start_at_zero() -> None:
    text = prometheus_client.generate_latest(Metrics().registry).decode()
    for reason in metrics_module.ERROR_REASONS:
        assert f'slot_operator_reconcile_errors_total{{reason="{reason}"}} 0.0' in text
    assert "process_cpu_seconds_total" in text
    assert "python_gc_objects_collected_total" in text


def test_ownership_series_exist_only_while_known() -> None:
    metrics = Metrics()
    modified = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    metrics.observe_ownership("agents", "s", matches=False, credentials_modified=modified)
    labels = {"namespace": "agents", "slot": "s"}
    assert metrics.registry.get_sample_value("slot_operator_slot_ownership_matches", labels) == 0
    assert (
        metrics.registry.get_sample_value("slot_operator_slot_credentials_last_modified_timestamp_seconds", labels)
        == modified.timestamp()
    )
    metrics.observe_ownership("agents", "s", matches=None, credentials_modified=None)
    assert metrics.registry.get_sample_value("slot_operator_slot_ownership_matches", labels) is None
    metrics.observe_ownership("agents", "s", matches=True, credentials_modified=modified)
    metrics.forget_slot("agents", "s")
    assert metrics.registry.get_sample_value("slot_operator_slot_ownership_matches", labels) is None
    assert (
        metrics.registry.get_sample_value("slot_operator_slot_credentials_last_modified_timestamp_seconds", labels)
        is None
    )
