"""Everything that names a phase agrees with logic/phases.py, so a new phase fails here until each knows it.

The CRD's enum, the chart's alert rules, their promtool cases, the runbook, the README, the contract's
exit-code table, the fake agent image, and what Flux (kstatus) and Argo CD (health.lua) read from a
verdict of each phase, through the real libraries (devcluster/gitopscheck).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
import yaml
from slot_operator.logic import status as st
from slot_operator.logic.outcome import Verdict
from slot_operator.logic.phases import PHASES, STALLED_PHASES, Phase

from devcluster import gitops
from tests import monitoring, repo

ROOT = repo.ROOT
T0 = datetime.datetime(2026, 1, 2, 3, 0, 0, tzinfo=datetime.UTC)
ALERTING = {phase: facts.alert for phase, facts in PHASES.items() if facts.alert}


def test_the_crd_enum_is_the_table() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "slots.woved.dev.yaml").read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [phase.value for phase in Phase]
    for phase in Phase:
        assert phase.value in status["phase"]["description"], f"kubectl explain says nothing of {phase}"


def test_every_verdict_that_needs_a_human_has_its_alert_and_only_those() -> None:
    assert set(ALERTING) == STALLED_PHASES
    template = (ROOT / "charts" / "slot-operator" / "templates" / "prometheusrule.yaml").read_text()
    wired = dict(re.findall(r'"(Slot\w+)" "(\w+)"', template.split("range $name, $phase := dict", 1)[1].split("}}")[0]))
    assert wired == {alert: phase.value for phase, alert in ALERTING.items()}


def test_every_phase_alert_has_promtool_cases_and_a_runbook_section() -> None:
    cases = yaml.safe_load(monitoring.RULE_TESTS.read_text())["tests"]
    tested = {check["alertname"] for case in cases for check in case["alert_rule_test"]}
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    sections = {name.lower() for name in re.findall(r"^## (\S+)$", runbook, flags=re.MULTILINE)}
    for phase, facts in PHASES.items():
        assert facts.runbook in sections, f"{phase}: docs/runbook.md has no section #{facts.runbook}"
        if facts.alert:
            assert facts.alert in tested, f"{facts.alert} has no case in {monitoring.RULE_TESTS.name}"


def test_the_readme_and_the_contract_list_every_phase_with_its_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    design = (ROOT / "docs" / "design.md").read_text()
    for phase, facts in PHASES.items():
        assert f"`{phase.value}`" in readme, phase
        if facts.exit_code is not None:
            assert re.search(rf"^\| {facts.exit_code} \| .* \| `{phase.value}` \|$", design, re.MULTILINE), phase


def test_the_fake_agent_image_exits_with_each_verdicts_code() -> None:
    entrypoint = (
        ROOT / "devcluster" / "images" / "local" / "agent-shell" / "rootfs" / "bin" / "entrypoint"
    ).read_text()
    codes = {int(code) for code in re.findall(r"^EXIT_\w+ = (\d+)$", entrypoint, re.MULTILINE)}
    assert {facts.exit_code for facts in PHASES.values() if facts.exit_code is not None} <= codes


def _verdict_on_current_generation(phase: Phase) -> dict[str, Any]:
    facts = PHASES[phase]
    assert facts.exit_code is not None
    probe = st.ProbeRef(
        job_name="s-probe-1", image="img:1", generation=1, trigger="created", request=None, start_time=T0
    )
    verdict = Verdict(
        phase=phase,
        exit_code=facts.exit_code,
        reason=facts.ready_reason,
        message=facts.default_message,
        result=None,
        finished=T0,
    )
    status = st.verdict({}, generation=1, probe=probe, outcome=verdict, interval=datetime.timedelta(hours=1), now=T0)
    return {
        "apiVersion": "woved.dev/v1alpha1",
        "kind": "Slot",
        "metadata": {"name": "s", "namespace": "agents", "generation": 1},
        "status": status,
    }


@pytest.mark.parametrize("phase", [phase for phase, facts in PHASES.items() if facts.exit_code is not None])
def test_kstatus_and_argo_read_each_verdict_as_the_table_says(phase: Phase) -> None:
    reading = gitops.read_one(_verdict_on_current_generation(phase))
    expected = ("Failed", "Degraded") if PHASES[phase].needs_human else ("Current", "Healthy")
    assert reading.pair == expected, reading


def test_argo_cds_health_check_names_every_verdict_that_stops_a_rollout() -> None:
    lua = (ROOT / "charts" / "slot-operator" / "argocd" / "health.lua").read_text()
    header = lua.split("local hs", 1)[0]
    for phase in STALLED_PHASES:
        assert phase.value in header, f"health.lua's header does not name {phase}"
