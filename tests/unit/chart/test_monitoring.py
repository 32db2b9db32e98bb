"""The chart's monitoring without a cluster: the rendered alert rules pass `promtool check rules` and
`promtool test rules`, every dashboard query parses, both use only metrics the operator exports,
every metric is documented, and every alert has a runbook section.

promtool and helm are the pinned builds (`make binaries`); tests that need them are skipped
with a reason when they are missing.
"""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml
from prometheus_client import parser
from slot_operator.metrics import Metrics

from tests import monitoring

RUNBOOK = monitoring.REPO / "docs" / "runbook.md"
README = monitoring.REPO / "README.md"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [monitoring.tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The chart rendered with its monitoring on and every other value at its default."""
    return monitoring.render(monitoring.monitoring_values(), tmp=tmp_path_factory.mktemp("shipped"))


def write_rules(groups: list[dict[str, Any]], directory: Path) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000))
    return path


def probed_metrics() -> Metrics:
    """The operator's metrics once a Slot has been probed: every series it can serve exists."""
    metrics = Metrics()
    slot = {
        "metadata": {"namespace": "agents", "name": "codex-1", "generation": 2, "resourceVersion": "7"},
        "spec": {"image": "img", "suspend": False},
        "status": {
            "phase": "Ready",
            "lastProbe": {"completionTime": "2026-01-01T00:00:00Z", "reason": "SmokeTestPassed"},
            "lastReadyTime": "2026-01-01T00:00:00Z",
            "nextProbeTime": "2026-01-01T06:00:00Z",
            "credentials": {"files": 1, "lastModified": "2026-01-01T00:00:00Z"},
            "conditions": [
                {"type": "Ready", "status": "True", "observedGeneration": 2, "reason": "SmokeTestPassed"},
                {"type": "OwnershipMatches", "status": "True", "observedGeneration": 2, "reason": "OwnerMatches"},
            ],
        },
    }
    metrics.slots.watch(lambda: [slot], default_interval=datetime.timedelta(hours=6))
    check = {
        "metadata": {"namespace": "agents", "name": "check-1"},
        "spec": {"image": "img"},
        "status": {"phase": "Failed", "results": [{"slot": "codex-1", "phase": "NeedsInit"}]},
    }
    metrics.checks.watch(lambda: [check], lambda key: slot if key == ("agents", "codex-1") else None)
    metrics.probe_finished("agents", "codex-1", result="Ready", verdict=True, seconds=12.0)
    metrics.observe_request("patch", "slots", 200)
    metrics.reconciled(outcome="success", seconds=0.01)
    metrics.retries.inc()
    metrics.migrations.labels("Migrated").inc()
    return metrics


def exported_series() -> set[str]:
    text = prometheus_client.generate_latest(probed_metrics().registry).decode()
    return {sample.name for family in parser.text_string_to_metric_families(text)
            for sample in family.samples}  # fmt: skip


# --- the PromQL name reader the other checks rely on --------------------------------------------


def test_metric_names_reads_selectors_only() -> None:
    expr = (
        'sum by (le, outcome) (rate(a_bucket{job=~"x|y", s="{b}"}[5m] offset 1h)) * on (slot) group_left (phase) b '
        '> 1e3 unless c_total{d="e"} and inf + histogram_quantile(0.9, d:recorded[1h:5m]) or absent(up == 1)'
    )
    assert monitoring.metric_names(expr) == {"a_bucket", "b", "c_total", "d:recorded", "up"}


def test_grafana_variables_are_replaced() -> None:
    query = 'rate(x{job=~"$job", namespace=~"${namespace}"}[$__rate_interval]) + y[$__interval]'
    assert monitoring.grafana_to_promql(query) == 'rate(x{job=~".+", namespace=~".+"}[2m]) + y[1m]'


# --- alert rules -------------------------------------------------------------------------------


def test_shipped_rules_pass_promtool_check_and_unit_tests(shipped: list[dict[str, Any]], tmp_path: Path) -> None:
    write_rules(monitoring.rule_groups(shipped), tmp_path)
    checked = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shutil.copy(monitoring.RULE_TESTS, tmp_path / "alerts.test.yaml")
    tested = promtool("test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_rule_tests_fail_on_a_changed_rule(shipped: list[dict[str, Any]], tmp_path: Path) -> None:
    """The unit tests pin timing and labels: a shorter `for` or another severity makes them fail."""
    values = monitoring.monitoring_values()
    values["prometheusRule"]["alerts"] = {"SlotNeedsReauth": {"enabled": True, "for": "3m", "severity": "critical"}}
    write_rules(monitoring.rule_groups(monitoring.render(values, tmp=tmp_path)), tmp_path)
    shutil.copy(monitoring.RULE_TESTS, tmp_path / "alerts.test.yaml")
    tested = promtool("test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "alertname: SlotNeedsReauth, time: 4m" in tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_quiet(shipped: list[dict[str, Any]]) -> None:
    cases = yaml.safe_load(monitoring.RULE_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    shipped_alerts = set(monitoring.alerts(monitoring.rule_groups(shipped)))
    assert len(shipped_alerts) == 15
    assert shipped_alerts == firing, "every alert has a case where it fires"
    assert shipped_alerts <= quiet, "every alert has a case where it stays quiet"


def test_every_alert_names_its_subject_and_runbook(shipped: list[dict[str, Any]]) -> None:
    groups = {group["name"]: group for group in monitoring.rule_groups(shipped)}
    runbook = RUNBOOK.read_text()
    sections = re.findall(r"^## (\S+)$", runbook, flags=re.MULTILINE)
    for group in groups.values():
        for rule in group["rules"]:
            name, notes = rule["alert"], rule["annotations"]
            assert set(notes) == {"summary", "description", "runbook_url"}, name
            assert (
                notes["runbook_url"]
                == f"{'https://github.com/woved/slot-operator/blob/main/docs/runbook.md'}#{name.lower()}"
            )
            assert rule["labels"]["severity"] in ("critical", "warning"), name
            subject = {"slot-operator.slots": "slot", "slot-operator.checks": "check"}.get(group["name"])
            if subject is not None:
                for text in (notes["summary"], notes["description"]):
                    assert f"{{{{ $labels.namespace }}}}/{{{{ $labels.{subject} }}}}" in text, name
    alert_names = [rule["alert"] for group in groups.values() for rule in group["rules"]]
    assert sorted(sections) == sorted(alert_names), "docs/runbook.md has one section per alert"


def test_monitoring_is_off_by_default(tmp_path: Path) -> None:
    kinds = {d["kind"] for d in monitoring.render({}, tmp=tmp_path)}
    assert not kinds & {"PrometheusRule", "ServiceMonitor", "ConfigMap"}


def test_alert_values_are_wired(tmp_path: Path) -> None:
    values = monitoring.monitoring_values()
    values["prometheusRule"].update(
        labels={"release": "prom"},
        alertLabels={"team": "platform", "severity": "ignored"},
        selector='job="slots", cluster="eu-1"',
        runbookUrlBase="https://runbooks.example/slots.md",
        alerts={
            "SlotNotReady": {"enabled": True, "for": "1h", "severity": "page"},
            "SlotProbesFailing": {"enabled": True, "for": "0", "severity": "info", "threshold": 7},
            "SlotOperatorDown": {"enabled": False, "for": "5m", "severity": "critical"},
        },
    )
    docs = monitoring.render(values, tmp=tmp_path)
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["metadata"]["namespace"] == monitoring.NAMESPACE
    rules = monitoring.alerts(rule["spec"]["groups"])
    assert "SlotOperatorDown" not in rules
    assert len(rules) == 14
    assert rules["SlotNotReady"]["for"] == "1h"
    assert rules["SlotNotReady"]["labels"] == {"severity": "page", "team": "platform"}  # severity is per alert
    assert rules["SlotProbesFailing"]["for"] == "0"
    assert ">= 7\n" in rules["SlotProbesFailing"]["expr"]
    assert rules["SlotNeedsInit"]["labels"] == {"severity": "critical", "team": "platform"}
    assert rules["SlotNeedsInit"]["annotations"]["runbook_url"] == "https://runbooks.example/slots.md#slotneedsinit"
    for name, alert in rules.items():
        assert 'job="slots", cluster="eu-1"' in alert["expr"], name
        assert "slot-operator-metrics" not in alert["expr"], name
    write_rules(rule["spec"]["groups"], tmp_path)
    checked = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"prometheusRule": {"enabled": True}, "metrics": {"port": 0}}, "prometheusRule.enabled needs metrics"),
        ({"prometheusRule": {"alerts": {"SlotProbesFailing": {"threshold": 0}}}}, "exclusiveMinimum"),
        ({"prometheusRule": {"alerts": {"SlotNotReady": {"for": "soon"}}}}, "does not match pattern"),
        ({"prometheusRule": {"enabled": True, "alerts": {"SlotTypo": {}}}}, "additional properties 'SlotTypo'"),
        ({"serviceMonitor": {"enabled": True, "scheme": "ftp"}}, "value must be one of"),
        ({"grafanaDashboard": {"enabled": True, "namespace": "Grafana"}}, "does not match pattern"),
    ],
)
def test_invalid_monitoring_values_are_rejected(values: dict[str, Any], message: str, tmp_path: Path) -> None:
    helm = monitoring.tool("helm")
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [helm, "template", "r", str(monitoring.CHART), "--kube-version", monitoring.KUBE_VERSION, "-f", str(path)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


# --- ServiceMonitor ----------------------------------------------------------------------------


def test_service_monitor_keeps_the_slot_namespace_label(shipped: list[dict[str, Any]]) -> None:
    (monitor,) = [d for d in shipped if d["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["scheme"] == "http"
    assert not {"tlsConfig", "relabelings", "metricRelabelings"} & set(endpoint)
    # The rules' default selector is the job Prometheus gives this ServiceMonitor's targets: the Service's name.
    (service,) = [d for d in shipped if d["kind"] == "Service"]
    assert (
        f'job="{service["metadata"]["name"]}"'
        in monitoring.alerts(monitoring.rule_groups(shipped))["SlotNotReady"]["expr"]
    )


def test_service_monitor_options_are_wired(tmp_path: Path) -> None:
    tls = {"ca": {"configMap": {"name": "ca", "key": "ca.crt"}}, "serverName": "slot-operator"}
    relabel = [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]
    metric_relabel = [{"sourceLabels": ["__name__"], "regex": "python_gc_.*", "action": "drop"}]
    values = {"serviceMonitor": {"enabled": True, "scheme": "https", "tlsConfig": tls, "relabelings": relabel,
                                 "metricRelabelings": metric_relabel}}  # fmt: skip
    (monitor,) = [d for d in monitoring.render(values, tmp=tmp_path) if d["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert (endpoint["scheme"], endpoint["tlsConfig"]) == ("https", tls)
    assert (endpoint["relabelings"], endpoint["metricRelabelings"]) == (relabel, metric_relabel)


# --- dashboard ---------------------------------------------------------------------------------


def test_every_dashboard_query_parses(shipped: list[dict[str, Any]], tmp_path: Path) -> None:
    queries = monitoring.dashboard_queries(monitoring.dashboard(shipped))
    assert len(queries) > 20
    # promtool parses PromQL in rule files: one recording rule per query.
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(queries.values())]
    write_rules([{"name": "dashboard", "rules": rules}], tmp_path)
    checked = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # ... and rejects what is not PromQL, so the check above means something.
    write_rules([{"name": "dashboard", "rules": [{"record": "x:y", "expr": "sum by (le (rate(x[5m]))"}]}], tmp_path)
    assert promtool("check", "rules", "rules.yaml", cwd=tmp_path).returncode != 0


def test_dashboard_config_map_is_opt_in_and_labelled(shipped: list[dict[str, Any]], tmp_path: Path) -> None:
    (config_map,) = [d for d in shipped if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == monitoring.NAMESPACE
    board = monitoring.dashboard(shipped)
    ids = [p["id"] for p in monitoring.flat_panels(board["panels"])]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in monitoring.flat_panels(board["panels"])}
    for wanted in ("Fleet by phase", "Slots needing a human", "Probe duration", "Queues", "Errors", "Leader",
                   "Image checks: Slots that would need a human"):  # fmt: skip
        assert wanted in titles
    values = monitoring.monitoring_values()
    values["grafanaDashboard"].update(namespace="grafana", annotations={"grafana_folder": "Slots"})
    (moved,) = [d for d in monitoring.render(values, tmp=tmp_path) if d["kind"] == "ConfigMap"]
    assert moved["metadata"]["namespace"] == "grafana"
    assert moved["metadata"]["annotations"] == {"grafana_folder": "Slots"}


# --- rules and dashboard use exported metrics; every metric is documented ----------------------


def test_rules_and_dashboard_use_only_exported_metrics(shipped: list[dict[str, Any]]) -> None:
    used = monitoring.used_metric_names(shipped)
    exported = exported_series()
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert missing == {}
    # Both sides are non-trivial: the check compares real sets.
    assert len(used) >= 18
    assert "slot_operator_probe_duration_seconds_bucket" in used
    assert "process_resident_memory_bytes" in exported


def test_every_metric_is_documented_in_the_readme() -> None:
    rows = re.findall(
        r"^\| `(slot_operator_\w+)` \| (\w+) \|\s*([\w, ]*?)\s*\| .+ \|$", README.read_text(), re.MULTILINE
    )
    documented = {name: (kind, {label for label in labels.replace(" ", "").split(",") if label})
                  for name, kind, labels in rows}  # fmt: skip
    served = {}
    for family in probed_metrics().registry.collect():
        if family.name.startswith("slot_operator_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            labels = {key for sample in family.samples for key in sample.labels} - {"le"}
            served[name] = (family.type, labels)
    assert len(served) == 28
    assert documented == served
