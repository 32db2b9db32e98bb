"""The Argo CD health checks (charts/slot-operator/argocd/health.lua for Slots, argocd/SlotImageCheck/health.lua
for checks) and kstatus on every state of their contracts.

Runs the real libraries through devcluster/gitopscheck (built from the Go module proxy, cached):
health.lua on gopher-lua the way Argo CD runs a health customization, against Argo CD's own
test-case format (health_test.yaml + testdata/), and kstatus (Flux) on the same objects. The Slot
fixtures are the operator's own status transitions (hack/argocd_testdata.py); the live
counterpart is tests/integration/test_gitops_states.py. The SlotImageCheck fixtures are statuses of
its contract written by hand (docs/design.md §2.5), held to it by tests/image_check_contract.py and
stored unchanged by the API server (tests/integration/test_image_check_crd.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import gitops
from hack import argocd_testdata
from tests import image_check_contract, repo
from tests.gitops_states import CHECK_EXPECTED, EXPECTED

ROOT = repo.ROOT
ARGOCD = ROOT / "charts" / "slot-operator" / "argocd"
CRD = ROOT / "crds" / "slots.woved.dev.yaml"

CASES: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
CHECK = ARGOCD / "SlotImageCheck"
CHECK_CRD = ROOT / "crds" / "slotimagechecks.woved.dev.yaml"
CHECK_CASES: list[dict[str, Any]] = yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]


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


# --- SlotImageCheck ------------------------------------------------------------------------------


def _load_check(input_path: str) -> dict[str, Any]:
    return dict(yaml.safe_load((CHECK / input_path).read_text()))


@pytest.fixture(scope="module")
def check_readings() -> dict[str, gitops.Reading]:
    paths = [case["inputPath"] for case in CHECK_CASES]
    return dict(zip(paths, gitops.read([_load_check(p) for p in paths], health_lua=CHECK / "health.lua"), strict=True))


@pytest.mark.parametrize("case", CHECK_CASES, ids=[c["inputPath"].removeprefix("testdata/") for c in CHECK_CASES])
def test_check_argo_health_case(case: dict[str, Any], check_readings: dict[str, gitops.Reading]) -> None:
    reading = check_readings[case["inputPath"]]
    assert {"status": reading.argo, "message": reading.argo_message} == case["healthStatus"]


@pytest.mark.parametrize("state", list(CHECK_EXPECTED))
def test_check_kstatus_and_argo_follow_the_rule(state: str, check_readings: dict[str, gitops.Reading]) -> None:
    reading = check_readings[f"testdata/{state}.yaml"]
    assert reading.pair == CHECK_EXPECTED[state], reading
    assert reading.agree


def test_every_check_state_has_a_fixture_and_a_case() -> None:
    listed = {c["inputPath"] for c in CHECK_CASES}
    present = {f"testdata/{p.name}" for p in (CHECK / "testdata").glob("*.yaml")}
    assert listed == present == {f"testdata/{state}.yaml" for state in CHECK_EXPECTED}


@pytest.mark.parametrize("state", list(CHECK_EXPECTED))
def test_check_fixtures_keep_the_contract_and_the_schema(state: str) -> None:
    """Each fixture is a status the operator may write: valid for the CRD, and by the rules of docs/design.md §2.5."""
    resource = _load_check(f"testdata/{state}.yaml")
    schema = yaml.safe_load(CHECK_CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert resource["apiVersion"] == "woved.dev/v1alpha1"
    assert resource["kind"] == "SlotImageCheck"
    assert image_check_contract.schema_problems(resource["spec"], schema["properties"]["spec"], "spec") == []
    assert image_check_contract.schema_problems(resource["status"], schema["properties"]["status"], "status") == []
    assert image_check_contract.problems(resource) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s["summary"].update(ready=1), "does not count results"),
        (lambda s: s.update(phase="Succeeded"), "phase Succeeded does not follow"),
        (lambda s: s["conditions"][1].update(reason="NeedsReauth"), "Stalled is True/NeedsReauth"),
        (lambda s: s["conditions"][0].update(observedGeneration=2), "Ready does not speak for generation 1"),
        (lambda s: s.pop("completionTime"), "completionTime is set exactly when"),
        (lambda s: s["results"][2]["ownership"].pop("fix"), "no fix says what to do"),
    ],
)
def test_the_contract_checker_can_fail(change: Any, problem: str) -> None:
    resource = _load_check("testdata/failed-owned-by-the-old-uid.yaml")
    change(resource["status"])
    assert any(problem in found for found in image_check_contract.problems(resource)), problem


def test_the_schema_checker_can_fail() -> None:
    schema = yaml.safe_load(CHECK_CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = _load_check("testdata/failed-owned-by-the-old-uid.yaml")["status"]
    status["results"][0].update(phase="Broken", verdict="x")
    status["results"][1]["slot"] = status["results"][0]["slot"]
    status["summary"]["slots"] = "3"
    assert sorted(image_check_contract.schema_problems(status, schema["properties"]["status"], "status")) == [
        "status.results: two entries share the map key ['slot']",
        "status.results[0].phase: 'Broken' is not one of "
        "['Pending', 'Ready', 'NeedsInit', 'NeedsReauth', 'ImageBroken', 'NoVerdict']",
        "status.results[0].verdict: not in the schema (the API server would prune it)",
        "status.summary.slots: '3' is not integer",
    ]


def test_check_health_waits_for_a_check_the_operator_has_not_observed() -> None:
    """A finished status of an older generation says nothing (kstatus and the Lua alike): only the contract's
    immutable spec keeps the generation at 1, and the gate must not lean on that."""
    resource = _load_check("testdata/succeeded.yaml")
    resource["metadata"]["generation"] = 2
    (reading,) = gitops.read([resource], health_lua=CHECK / "health.lua")
    assert reading.pair == ("InProgress", "Progressing")
