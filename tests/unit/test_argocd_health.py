"""The Argo CD health check (charts/slot-operator/argocd/health.lua) and kstatus on every state of the contract.

Runs the real libraries through devcluster/gitopscheck (built from the Go module proxy, cached):
health.lua on gopher-lua the way Argo CD runs a health customization, against Argo CD's own
test-case format (health_test.yaml + testdata/), and kstatus (Flux) on the same objects. The
fixtures are the operator's own status transitions (hack/argocd_testdata.py); the live
counterpart is tests/integration/test_gitops_states.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import gitops
from hack import argocd_testdata
from tests.gitops_states import EXPECTED

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "charts" / "slot-operator" / "argocd"
CRD = ROOT / "crds" / "slots.woved.dev.yaml"

CASES: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]


def _load(input_path: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ARGOCD / input_path).read_text()))


@pytest.fixture(scope="module")
def readings() -> dict[str, gitops.Reading]:
    """Both tools' reading of every fixture, in one run of the helper."""
    paths = [case["inputPath"] for case in CASES]
    return dict(zip(paths, gitops.read([_load(path) for path in paths]), strict=True))


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"].removeprefix("testdata/") for c in CASES])
def test_argo_health_case(case: dict[str, Any], readings: dict[str, gitops.Reading]) -> None:
    reading = readings[case["inputPath"]]
    assert {"status": reading.argo, "message": reading.argo_message} == case["healthStatus"]


@pytest.mark.parametrize("state", list(EXPECTED))
def test_kstatus_and_argo_follow_the_rule(state: str, readings: dict[str, gitops.Reading]) -> None:
    reading = readings[f"testdata/{state}.yaml"]
    assert reading.pair == EXPECTED[state], reading
    assert reading.agree


def test_every_state_has_a_fixture_and_a_case() -> None:
    listed = {c["inputPath"] for c in CASES}
    present = {f"testdata/{p.name}" for p in (ARGOCD / "testdata").glob("*.yaml")}
    assert listed == present == {f"testdata/{state}.yaml" for state in EXPECTED}
    assert set(argocd_testdata.STATES) == set(EXPECTED)


@pytest.mark.parametrize("state", list(EXPECTED))
def test_fixtures_are_what_the_operator_writes(state: str) -> None:
    """Regenerate with `.venv/bin/python hack/argocd_testdata.py` after a change of the status transitions."""
    assert (ARGOCD / "testdata" / f"{state}.yaml").read_text() == argocd_testdata.render(state)


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


def test_health_lua_reads_each_verdicts_own_generation() -> None:
    """A verdict of generation 1 says nothing about generation 2, whatever status.observedGeneration says."""
    for state, before in (("needs-reauth", ("Failed", "Degraded")), ("ready", ("Current", "Healthy"))):
        resource = _load(f"testdata/{state}.yaml")
        bumped = copy.deepcopy(resource)
        bumped["metadata"]["generation"] = 2
        bumped["status"]["observedGeneration"] = 2  # as if only status.observedGeneration were bumped
        now, later = gitops.read([resource, bumped])
        assert now.pair == before
        assert later.argo == "Progressing", later


def test_argo_rejects_a_status_it_does_not_know(tmp_path: Path) -> None:
    """The helper applies Argo CD's check of the returned code, so a typo in health.lua cannot pass unseen."""
    script = tmp_path / "health.lua"
    script.write_text('return {status = "Fine", message = "typo"}\n')
    reading = gitops.read([_load("testdata/ready.yaml")], health_lua=script)[0]
    assert (reading.argo, reading.argo_message) == ("Unknown", "Lua returned an invalid health status")


def test_health_lua_gets_only_the_libraries_argo_cd_opens(tmp_path: Path) -> None:
    """Argo CD opens no string library for a customization: a script that used one would fail there."""
    script = tmp_path / "health.lua"
    script.write_text('return {status = "Healthy", message = string.upper("x")}\n')
    with pytest.raises(RuntimeError, match="string"):
        gitops.read([_load("testdata/ready.yaml")], health_lua=script)
