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
import dataclasses
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

CHECK = ARGOCD / "SlotImageCheck"
CHECK_CRD = ROOT / "crds" / "slotimagechecks.woved.dev.yaml"


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind's health check: its Lua, its Argo CD test cases and fixtures, and the states it must read."""

    folder: Path
    expected: dict[str, tuple[str, str]]

    @property
    def cases(self) -> list[dict[str, Any]]:
        return list(yaml.safe_load((self.folder / "health_test.yaml").read_text())["tests"])

    def load(self, input_path: str) -> dict[str, Any]:
        return dict(yaml.safe_load((self.folder / input_path).read_text()))


KINDS = {"Slot": Kind(ARGOCD, EXPECTED), "SlotImageCheck": Kind(CHECK, CHECK_EXPECTED)}
Readings = dict[tuple[str, str], gitops.Reading]


@pytest.fixture(scope="module")
def readings() -> Readings:
    """Both tools' reading of every fixture of both kinds ((kind, input path) -> reading), one run per kind."""
    found = {}
    for name, kind in KINDS.items():
        paths = [case["inputPath"] for case in kind.cases]
        read = gitops.read([kind.load(path) for path in paths], health_lua=kind.folder / "health.lua")
        found.update({(name, path): reading for path, reading in zip(paths, read, strict=True)})
    return found


@pytest.mark.parametrize(
    ("kind", "case"),
    [(name, case) for name, kind in KINDS.items() for case in kind.cases],
    ids=[
        f"{name}:{case['inputPath'].removeprefix('testdata/')}" for name, kind in KINDS.items() for case in kind.cases
    ],
)
def test_argo_health_case(kind: str, case: dict[str, Any], readings: dict[tuple[str, str], gitops.Reading]) -> None:
    reading = readings[(kind, case["inputPath"])]
    assert {"status": reading.argo, "message": reading.argo_message} == case["healthStatus"]


@pytest.mark.parametrize(("kind", "state"), [(name, state) for name, kind in KINDS.items() for state in kind.expected])
def test_kstatus_and_argo_follow_the_rule(
    kind: str, state: str, readings: dict[tuple[str, str], gitops.Reading]
) -> None:
    reading = readings[(kind, f"testdata/{state}.yaml")]
    assert reading.pair == KINDS[kind].expected[state], reading
    assert reading.agree


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_state_has_a_fixture_and_a_case(kind: str) -> None:
    listed = {c["inputPath"] for c in KINDS[kind].cases}
    present = {f"testdata/{p.name}" for p in (KINDS[kind].folder / "testdata").glob("*.yaml")}
    assert listed == present == {f"testdata/{state}.yaml" for state in KINDS[kind].expected}


def test_the_slot_fixtures_are_the_generators_states() -> None:
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
        resource = KINDS["Slot"].load(f"testdata/{state}.yaml")
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
    reading = gitops.read([KINDS["Slot"].load("testdata/ready.yaml")], health_lua=script)[0]
    assert (reading.argo, reading.argo_message) == ("Unknown", "Lua returned an invalid health status")


def test_health_lua_gets_only_the_libraries_argo_cd_opens(tmp_path: Path) -> None:
    """Argo CD opens no string library for a customization: a script that used one would fail there."""
    script = tmp_path / "health.lua"
    script.write_text('return {status = "Healthy", message = string.upper("x")}\n')
    with pytest.raises(RuntimeError, match="string"):
        gitops.read([KINDS["Slot"].load("testdata/ready.yaml")], health_lua=script)


# --- SlotImageCheck ------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(CHECK_EXPECTED))
def test_check_fixtures_keep_the_contract_and_the_schema(state: str) -> None:
    """Each fixture is a status the operator may write: valid for the CRD, and by the rules of docs/design.md §2.5."""
    resource = KINDS["SlotImageCheck"].load(f"testdata/{state}.yaml")
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
    resource = KINDS["SlotImageCheck"].load("testdata/failed-owned-by-the-old-uid.yaml")
    change(resource["status"])
    assert any(problem in found for found in image_check_contract.problems(resource)), problem


def test_the_schema_checker_can_fail() -> None:
    schema = yaml.safe_load(CHECK_CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = KINDS["SlotImageCheck"].load("testdata/failed-owned-by-the-old-uid.yaml")["status"]
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
    resource = KINDS["SlotImageCheck"].load("testdata/succeeded.yaml")
    resource["metadata"]["generation"] = 2
    (reading,) = gitops.read([resource], health_lua=CHECK / "health.lua")
    assert reading.pair == ("InProgress", "Progressing")
