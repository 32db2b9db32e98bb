"""The Argo CD health check for Slots (charts/slot-operator/argocd/health.lua).

Runs the script the way Argo CD does (global `obj` = the resource, the script
returns a table with `status` and `message`) on Lua 5.1, the dialect of Argo CD's
gopher-lua, through `lupa`, against Argo CD's own test-case format
(health_test.yaml + testdata/*.yaml).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "charts" / "slot-operator" / "argocd"
CRD = ROOT / "crds" / "slots.woved.dev.yaml"

lua51 = pytest.importorskip("lupa.lua51", reason="lupa (PyPI) is not installed: pip install lupa")

CASES: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]


def _to_lua(runtime: Any, value: Any) -> Any:
    """JSON-shaped Python data -> Lua values (as Argo CD converts the resource)."""
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return value


def evaluate(resource: dict[str, Any]) -> dict[str, str]:
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, resource)
    result = runtime.execute((ARGOCD / "health.lua").read_text())
    return {key: str(result[key]) for key in ("status", "message") if result[key] is not None}


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"].removeprefix("testdata/") for c in CASES])
def test_health_case(case: dict[str, Any]) -> None:
    resource = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    assert evaluate(resource) == case["healthStatus"]


def test_every_testdata_file_has_a_case() -> None:
    listed = {c["inputPath"] for c in CASES}
    present = {f"testdata/{p.name}" for p in (ARGOCD / "testdata").glob("*.yaml")}
    assert listed == present


def test_all_health_states_are_covered() -> None:
    assert {c["healthStatus"]["status"] for c in CASES} >= {"Healthy", "Degraded", "Progressing"}


def test_testdata_matches_the_crd_status_schema() -> None:
    """The fixtures use only status fields and values the CRD allows."""
    version = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]
    status_schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    condition_schema = status_schema["properties"]["conditions"]["items"]
    for path in sorted((ARGOCD / "testdata").glob("*.yaml")):
        resource = yaml.safe_load(path.read_text())
        assert resource["apiVersion"] == f"woved.dev/{version['name']}"
        status = resource.get("status") or {}
        assert set(status) <= set(status_schema["properties"]), path.name
        if "phase" in status:
            assert status["phase"] in status_schema["properties"]["phase"]["enum"], path.name
        for condition in status.get("conditions", []):
            assert set(condition_schema["required"]) <= set(condition), (path.name, condition["type"])
            assert set(condition) <= set(condition_schema["properties"]), (path.name, condition["type"])


def test_script_can_fail() -> None:
    """A Stalled verdict on the current generation is never reported Healthy."""
    resource = yaml.safe_load((ARGOCD / "testdata" / "needs-reauth.yaml").read_text())
    for condition in resource["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition["status"] = "True"
    assert evaluate(resource)["status"] == "Degraded"
    resource["metadata"]["generation"] = 3  # the verdict is now for an older spec
    assert evaluate(resource)["status"] == "Progressing"
