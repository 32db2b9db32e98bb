"""A live operator's /metrics serves every metric the chart's alert rules and dashboard use,
and the series of a deleted Slot disappear."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import parser

from tests import monitoring
from tests.integration import slots
from tests.integration.kubewait import NotYet, wait_for
from tests.integration.slots import VALID_CODEX, create_slot, patch_slot, wait_verdict, write_file

pytestmark = pytest.mark.integration


def samples(text: str) -> list[Any]:
    return [sample for family in parser.text_string_to_metric_families(text) for sample in family.samples]


def test_live_metrics_serve_what_the_rules_and_dashboard_use(
    api_client: client.ApiClient,
    namespace: str,
    claim: Callable[..., pathlib.Path],
    operator: Callable[..., Any],
    tmp_path: pathlib.Path,
) -> None:
    used = monitoring.used_metric_names(monitoring.render(monitoring.monitoring_values(), tmp=tmp_path))
    claim("home", prepare=lambda home: write_file(home, ".codex/auth.json", VALID_CODEX))
    instance = operator()
    create_slot(api_client, namespace, "s", claim="home", interval="2h")
    wait_verdict(api_client, namespace, "s", "Ready")
    slots.create_check(api_client, namespace, "c", image=slots.CODEX_IMAGE)  # the image checks' series
    slots.wait_check(api_client, namespace, "c")

    def served() -> set[str] | NotYet:
        names = {sample.name for sample in samples(instance.metrics())}
        missing = set(used) - names
        return names if not missing else NotYet(sorted(missing))

    # The per-Slot counter moves just after the status write the test waited on: poll.
    wait_for(served, timeout=30, message="every metric the rules and dashboard use is served")

    mine = [s for s in samples(instance.metrics()) if s.labels.get("slot") == "s"]
    values = {(s.name, s.labels.get("phase") or s.labels.get("result") or ""): s.value for s in mine}
    assert values[("slot_operator_slot_phase", "Ready")] == 1
    assert values[("slot_operator_slot_ready", "")] == 1
    assert values[("slot_operator_slot_verdict_current", "")] == 1
    assert values[("slot_operator_slot_suspended", "")] == 0
    assert values[("slot_operator_slot_interval_seconds", "")] == 7200
    assert values[("slot_operator_slot_consecutive_probe_failures", "")] == 0
    assert values[("slot_operator_probe_results_total", "Ready")] == 1
    assert all(s.labels["namespace"] == namespace for s in mine)

    # Suspending changes only when probes run: the verdict answers for the new generation too (it is carried, no
    # probe), and the rules see the suspension.
    patch_slot(api_client, namespace, "s", {"spec": {"suspend": True}})
    wanted = ("slot_operator_slot_suspended", "slot_operator_slot_verdict_current", "slot_operator_slot_ready")

    def suspended() -> bool | NotYet:
        state = {s.name: s.value for s in samples(instance.metrics()) if s.labels.get("slot") == "s"
                 and s.name in wanted}  # fmt: skip
        return state == dict.fromkeys(wanted, 1) or NotYet(state)

    wait_for(suspended, timeout=30, message="suspension shows in the metrics")

    # A deleted Slot leaves no series behind.
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        slots.GROUP, slots.VERSION, namespace, slots.PLURAL, "s"
    )

    def gone() -> bool | NotYet:
        left = sorted({s.name for s in samples(instance.metrics()) if s.labels.get("slot") == "s"})
        return not left or NotYet(left)

    wait_for(gone, timeout=30, message="the deleted Slot's series disappear")
