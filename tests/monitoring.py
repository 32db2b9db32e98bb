"""The chart's monitoring as tests read it: rendered alert rules, dashboard queries, metric names in PromQL.

Shared by tests/unit/chart/test_monitoring.py (promtool on the rendered rules and dashboard) and
tests/integration/test_monitoring_live.py (a live operator serves every metric they use).
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
from typing import Any

import yaml

from devcluster import build

REPO = pathlib.Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "slot-operator"
RULE_TESTS = REPO / "tests" / "rules" / "alerts.test.yaml"
# The release the rule tests are written for: its ServiceMonitor's job is "slot-operator-metrics".
RELEASE, NAMESPACE = "slot-operator", "slot-system"
KUBE_VERSION = "1.31.0"
# Series Prometheus makes itself for every scrape target: the operator does not export them.
SCRAPE_SERIES = frozenset({"up"})
# What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "2m", "$__interval": "1m", "$job": ".+", "$namespace": ".+"}


def tool(name: str) -> str:
    """The pinned build of `name` (devcluster/build.py builds it on first use; never one from PATH)."""
    return str(build.tool(name))


def render(values: dict[str, Any], *, tmp: pathlib.Path) -> list[dict[str, Any]]:
    helm = tool("helm")
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [
            helm,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def monitoring_values() -> dict[str, Any]:
    return {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }


def rule_groups(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return list(rule["spec"]["groups"])


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    (text,) = config_map["data"].values()
    return dict(json.loads(text))


def flat_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(flat_panels(panel.get("panels") or []))
    return found


def grafana_to_promql(query: str) -> str:
    """A query as Grafana sends it: variables replaced (longest names first, so $__interval is not $__i...)."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        query = query.replace("${" + name[1:] + "}", GRAFANA_VARIABLES[name]).replace(name, GRAFANA_VARIABLES[name])
    return query


def dashboard_queries(board: dict[str, Any]) -> dict[str, str]:
    """Every PromQL query of the dashboard, variables substituted, keyed by where it is."""
    queries = {}
    for panel in flat_panels(board["panels"]):
        for target in panel.get("targets") or ():
            queries[f"panel {panel['title']!r} {target['refId']}"] = grafana_to_promql(target["expr"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*[a-zA-Z_]\w*\)", variable["query"]["query"])
            assert match, f"variable {variable['name']}: expected label_values(<selector>, <label>)"
            queries[f"variable {variable['name']}"] = grafana_to_promql(match.group(1))
    return queries


_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# Not preceded by a digit or a dot: `5m`, `1e3` and `0x1f` are numbers and durations, not names.
_IDENTIFIER = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf",
     "nan", "atan2"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords or labels."""
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def used_metric_names(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Metric name -> where the rules and the dashboard use it."""
    used: dict[str, set[str]] = {}
    expressions = {f"alert {name}": rule["expr"] for name, rule in alerts(rule_groups(docs)).items()}
    expressions.update(dashboard_queries(dashboard(docs)))
    for where, expr in expressions.items():
        for name in metric_names(expr) - SCRAPE_SERIES:
            used.setdefault(name, set()).add(where)
    return used
