"""The operator's metrics (metrics.py): per-Slot series are read from the cached Slots at scrape time."""

from __future__ import annotations

import datetime

import prometheus_client
import pytest
from prometheus_client import parser
from slot_operator import metrics as metrics_module
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


def slot(name: str, version: str = "1", spec: dict[str, object] | None = None, **status: object) -> dict[str, object]:
    meta = {"namespace": "agents", "name": name, "generation": 1, "resourceVersion": version}
    return {"metadata": meta, "spec": spec or {}, "status": status}


def watching(*slots: dict[str, object]) -> tuple[Metrics, list[dict[str, object]]]:
    """Metrics reading `slots` (a list the test changes, as the watch changes the cache)."""
    metrics = Metrics()
    cached = list(slots)
    metrics.slots.watch(lambda: cached, default_interval=datetime.timedelta(hours=6))
    return metrics, cached


READY = [{"type": "Ready", "status": "True", "reason": "SmokeTestPassed", "observedGeneration": 1}]


def test_a_slot_is_published_from_the_cache_and_gone_with_it() -> None:
    a = slot("a", phase="Ready", nextProbeTime="2026-01-01T06:00:00Z", consecutiveProbeFailures=2, conditions=READY)
    invalid = [{"type": "Stalled", "status": "True", "reason": "InvalidSpec", "observedGeneration": 1}]
    metrics, cached = watching(a, slot("b", conditions=invalid))
    metrics.probe_finished("agents", "a", result="ProbeCrashed", verdict=False, seconds=3.0)
    published = series(metrics, "a")
    assert published["slot_operator_slot_phase/Ready"] == 1
    assert published["slot_operator_slot_phase/Pending"] == 0
    assert published["slot_operator_slot_ready"] == 1
    assert published["slot_operator_slot_verdict_current"] == 1
    assert published["slot_operator_slot_suspended"] == 0
    assert published["slot_operator_slot_interval_seconds"] == 6 * 3600  # the operator's default
    assert published["slot_operator_slot_next_probe_timestamp_seconds"] == 1767247200
    assert published["slot_operator_slot_consecutive_probe_failures"] == 2
    assert published["slot_operator_probe_results_total/ProbeCrashed"] == 1
    assert "slot_operator_slot_last_probe_timestamp_seconds" not in published  # no probe finished yet
    # An invalid spec has no interval, but its state is there.
    assert "slot_operator_slot_interval_seconds" not in series(metrics, "b")
    assert series(metrics, "b")["slot_operator_slot_phase/Pending"] == 1
    # A new version of the Slot is read again: a status that lost a timestamp drops its series.
    cached[0] = slot("a", version="2", spec={"interval": "30m"}, phase="Ready", conditions=READY)
    assert "slot_operator_slot_next_probe_timestamp_seconds" not in series(metrics, "a")
    assert series(metrics, "a")["slot_operator_slot_interval_seconds"] == 1800
    # Gone from the cache: gone from the metrics, its probe results too.
    del cached[0]
    assert series(metrics, "a") == {}
    assert series(metrics, "b") != {}
    cached.append(slot("a", version="3"))
    assert "slot_operator_probe_results_total/ProbeCrashed" not in series(metrics, "a")


def test_an_unchanged_slot_is_not_read_again() -> None:
    """Rows are kept per resourceVersion: a scrape recomputes only the Slots that changed."""
    a = slot("a", phase="Ready", conditions=READY)
    metrics, cached = watching(a)
    assert series(metrics, "a")["slot_operator_slot_ready"] == 1
    a["status"] = {"phase": "Pending"}  # the same version changed in place: impossible for a real cache
    assert series(metrics, "a")["slot_operator_slot_ready"] == 1
    cached[0] = slot("a", version="2", phase="Pending")
    assert series(metrics, "a")["slot_operator_slot_ready"] == 0


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
    modified = "2026-01-01T00:00:00Z"
    known = [{"type": "OwnershipMatches", "status": "False", "reason": "OwnedByOtherUser"}]
    metrics, cached = watching(slot("s", conditions=known, credentials={"files": 1, "lastModified": modified}))
    labels = {"namespace": "agents", "slot": "s"}
    stamp = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp()
    assert metrics.registry.get_sample_value("slot_operator_slot_ownership_matches", labels) == 0
    name = "slot_operator_slot_credentials_last_modified_timestamp_seconds"
    assert metrics.registry.get_sample_value(name, labels) == stamp
    unknown = [{"type": "OwnershipMatches", "status": "Unknown", "reason": "AuditFailed"}]
    cached[0] = slot("s", version="2", conditions=unknown)
    assert metrics.registry.get_sample_value("slot_operator_slot_ownership_matches", labels) is None
    assert metrics.registry.get_sample_value(name, labels) is None


def check_series(metrics: Metrics) -> dict[str, float]:
    text = prometheus_client.generate_latest(metrics.registry).decode()
    return {
        f"{sample.name}{'/' + sample.labels['phase'] if 'phase' in sample.labels else ''}": sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("check") == "c"
    }


def test_a_check_is_published_from_the_cache_and_gone_with_it() -> None:
    metrics = Metrics()
    on_candidate = slot("a", spec={"image": "img:2"})
    on_old = slot("b", spec={"image": "img:1"})
    slots = {("agents", "a"): on_candidate, ("agents", "b"): on_old}
    results = [
        {"slot": "a", "phase": "NeedsInit"},
        {"slot": "b", "phase": "Ready"},
        {"slot": "gone", "phase": "NoVerdict"},
    ]
    check = {"metadata": {"namespace": "agents", "name": "c"}, "spec": {"image": "img:2"},
             "status": {"phase": "Failed", "results": results}}  # fmt: skip
    checks = [check]
    metrics.checks.watch(lambda: checks, slots.get)
    assert check_series(metrics) == {
        "slot_operator_image_check_results/Pending": 0, "slot_operator_image_check_results/Ready": 1,
        "slot_operator_image_check_results/NeedsInit": 1, "slot_operator_image_check_results/NeedsReauth": 0,
        "slot_operator_image_check_results/ImageBroken": 0, "slot_operator_image_check_results/NoVerdict": 1,
        "slot_operator_image_check_failed": 1, "slot_operator_image_check_slots_on_image": 1,
    }  # fmt: skip
    check["status"]["phase"] = "Running"
    assert check_series(metrics)["slot_operator_image_check_failed"] == 0
    checks.clear()
    assert check_series(metrics) == {}
