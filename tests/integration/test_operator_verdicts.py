"""End to end: real claim directories, the fake agent image, the real Job controller → the Slot's verdict."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from tests.claimdirs import snapshot
from tests.integration import slots
from tests.integration.kubewait import wait_for
from tests.integration.slots import (
    VALID_CODEX,
    condition,
    create_slot,
    wait_reason,
    wait_slot,
    wait_verdict,
    write_file,
)

pytestmark = pytest.mark.integration


def _codex_valid(home: pathlib.Path) -> None:
    write_file(home, ".codex/auth.json", VALID_CODEX)


def _codex_empty(home: pathlib.Path) -> None:
    write_file(home, ".codex/auth.json", "")


def _codex_corrupt(home: pathlib.Path) -> None:
    write_file(home, ".codex/auth.json", '{"tokens": {"access_token": ')


def _codex_foreign_home(home: pathlib.Path) -> None:
    # Written by the old uid-1000 image: ~/.codex (0700) cannot even be listed by uid 10001.
    write_file(home, ".codex/auth.json", VALID_CODEX, uid=1000, gid=1000, mode=0o600)


def _codex_foreign_file(home: pathlib.Path) -> None:
    # The directory is the new uid's, the file still the old one's (0600): present but unreadable.
    write_file(home, ".codex/auth.json", VALID_CODEX)
    os.chown(home / ".codex" / "auth.json", 1000, 1000)


def _nothing(home: pathlib.Path) -> None:
    pass


def _claude_valid(home: pathlib.Path) -> None:
    write_file(home, ".claude/.credentials.json", json.dumps({"claudeAiOauth": {"accessToken": "x"}}))
    write_file(home, ".claude/settings.json", "{}")


def _claude_baseline_only(home: pathlib.Path) -> None:
    for name in ("CLAUDE.md", "settings.json", "config.toml"):
        write_file(home, f".claude/{name}", "baseline\n")


CASES: dict[str, tuple[str, str, Callable[[pathlib.Path], None], str, int]] = {
    # id: (agent, image, prepare, phase, exit code)
    "codex-valid": ("codex", slots.CODEX_IMAGE, _codex_valid, "Ready", 0),
    "codex-missing": ("codex", slots.CODEX_IMAGE, _nothing, "NeedsInit", 65),
    "codex-empty": ("codex", slots.CODEX_IMAGE, _codex_empty, "NeedsReauth", 66),
    "codex-corrupt": ("codex", slots.CODEX_IMAGE, _codex_corrupt, "NeedsReauth", 66),
    "codex-uid-1000-home": ("codex", slots.CODEX_IMAGE, _codex_foreign_home, "NeedsInit", 65),
    "codex-uid-1000-file": ("codex", slots.CODEX_IMAGE, _codex_foreign_file, "NeedsReauth", 66),
    "claude-valid": ("claude", slots.CLAUDE_IMAGE, _claude_valid, "Ready", 0),
    "claude-baseline": ("claude", slots.CLAUDE_IMAGE, _claude_baseline_only, "NeedsInit", 65),
    "broken-cli": ("codex", slots.BROKEN_IMAGE, _codex_valid, "ImageBroken", 64),
}


@pytest.mark.parametrize("case", list(CASES))
def test_exit_code_gives_phase_conditions_and_event(
    case: str, api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    agent, image, prepare, phase, exit_code = CASES[case]
    home = claim("home")
    prepare(home)
    before = snapshot(home)
    operator()
    create_slot(api_client, namespace, "s", claim="home", agent=agent, image=image)

    slot = wait_verdict(api_client, namespace, "s", phase)

    status = slot["status"]
    assert status["lastProbe"]["exitCode"] == exit_code
    assert status["lastProbe"]["image"] == image
    assert status["observedGeneration"] == slot["metadata"]["generation"]
    ready, stalled = condition(slot, "Ready"), condition(slot, "Stalled")
    assert ready["status"] == ("True" if phase == "Ready" else "False")
    assert ready["observedGeneration"] == slot["metadata"]["generation"]
    assert stalled["status"] == ("False" if phase == "Ready" else "True")
    assert stalled["reason"] == phase
    assert condition(slot, "ProbeSucceeded")["status"] == "True"
    assert condition(slot, "Reconciling")["status"] == "False"
    if phase == "Ready":
        assert status["lastReadyImage"] == image
        assert status["lastReadyTime"]
        assert status["lastProbe"]["result"] == "ok"
    else:
        assert "lastReadyTime" not in status
        # The probe's own JSON line, carried by FallbackToLogsOnError, names what it found.
        assert status["lastProbe"]["result"] in {"cli-broken", "creds-missing", "creds-invalid"}
    slots.wait_event(api_client, namespace, "s", reason=phase, kind="Normal" if phase == "Ready" else "Warning")
    assert snapshot(home) == before, "the probe changed the slot volume"


def test_an_image_that_does_not_exist_is_image_broken_without_waiting_for_the_deadline(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    _codex_valid(claim("home"))
    operator()
    create_slot(api_client, namespace, "s", claim="home", image="local/agent-shell:does-not-exist", timeout="10m")

    slot = wait_verdict(api_client, namespace, "s", "ImageBroken", timeout=60)

    assert slot["status"]["lastProbe"]["reason"] == "ImageNotFound"
    assert "not found" in slot["status"]["lastProbe"]["message"]
    assert slot["status"]["lastProbe"]["message"].startswith(("ErrImagePull", "ImagePullBackOff"))
    stalled = condition(slot, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ImageBroken")
    # The stuck Job is stopped, not left to wait for its 10m deadline.
    wait_for(lambda: not slots.probe_jobs(api_client, namespace), timeout=30, message="probe Job deleted")


def test_probe_crash_reports_probe_failure_and_keeps_phase(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    _codex_valid(claim("home"))
    operator()
    create_slot(api_client, namespace, "s", claim="home", env=[{"name": "SMOKE_TEST_CRASH", "value": "1"}])

    slot = wait_slot(
        api_client,
        namespace,
        "s",
        lambda s: condition(s, "ProbeSucceeded").get("status") == "False",
        message="probe failure",
    )

    assert slot["status"]["phase"] == "Pending"
    assert condition(slot, "ProbeSucceeded")["reason"] == "ProbeCrashed"
    assert condition(slot, "Ready")["status"] == "Unknown"
    assert condition(slot, "Stalled")["status"] == "False"
    assert slot["status"]["lastProbe"]["exitCode"] == 1
    assert slot["status"]["consecutiveProbeFailures"] >= 1
    slots.wait_event(api_client, namespace, "s", reason="ProbeCrashed", kind="Warning")


def test_failed_probe_retries_with_growing_backoff(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    _codex_valid(claim("home"))
    operator("--retry-base=1s", "--retry-max=4s")
    create_slot(api_client, namespace, "s", claim="home", env=[{"name": "SMOKE_TEST_CRASH", "value": "1"}])

    slot = wait_slot(
        api_client,
        namespace,
        "s",
        lambda s: (s.get("status") or {}).get("consecutiveProbeFailures", 0) >= 3,
        timeout=120,
        message="three failed attempts",
    )

    # The retry is scheduled from status: nextProbeTime lies after the last attempt.
    assert slot["status"]["nextProbeTime"] >= slot["status"]["lastProbe"]["completionTime"]
    assert slot["status"]["phase"] == "Pending"

    # The same failure again bumps the count of one Event ("x3"), it does not post an Event per retry.
    def one_counted_event() -> bool:
        crashed = [e for e in slots.slot_events(api_client, namespace, "s") if e.reason == "ProbeCrashed"]
        return len(crashed) == 1 and (crashed[0].count or 0) >= 3

    wait_for(
        one_counted_event,
        timeout=30,
        message="one ProbeCrashed Event counting every attempt",
        describe=lambda: [(e.reason, e.count) for e in slots.slot_events(api_client, namespace, "s")],
    )


def test_deadline_gives_probe_timed_out(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    _codex_valid(claim("home"))
    operator()
    create_slot(
        api_client, namespace, "s", claim="home", timeout="5s", env=[{"name": "SMOKE_TEST_SLEEP", "value": "300"}]
    )

    slot = wait_reason(api_client, namespace, "s", "ProbeSucceeded", "ProbeTimedOut", timeout=90)

    assert slot["status"]["phase"] == "Pending"
    assert condition(slot, "ProbeSucceeded")["status"] == "False"


def test_missing_claim_then_claim_appears(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    operator("--retry-base=10m", "--retry-max=10m")  # only the claim's arrival can trigger the next probe
    create_slot(api_client, namespace, "s", claim="late")

    slot = wait_reason(api_client, namespace, "s", "ProbeSucceeded", "ClaimNotFound", timeout=60)
    assert not slots.probe_jobs(api_client, namespace)
    assert "late" in condition(slot, "ProbeSucceeded")["message"]

    claim("late", prepare=_codex_valid)
    slot = wait_verdict(api_client, namespace, "s", "Ready", timeout=60)
    assert slot["status"]["lastProbe"]["trigger"] == "claim-appeared"


def test_unschedulable_probe_reports_quickly(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    _codex_valid(claim("home"))
    operator()
    create_slot(
        api_client, namespace, "s", claim="home", timeout="10m", nodeSelector={"kubernetes.io/hostname": "no-such-node"}
    )

    slot = wait_reason(api_client, namespace, "s", "ProbeSucceeded", "Unschedulable", timeout=60)
    assert slot["status"]["phase"] == "Pending"


def test_env_from_a_missing_secret_reports_at_once_and_retries(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    _codex_valid(claim("home"))
    operator()
    env = [{"name": "SMOKE_TEST_CRASH", "valueFrom": {"secretKeyRef": {"name": "probe-env", "key": "crash"}}}]
    create_slot(api_client, namespace, "s", claim="home", timeout="10m", env=env)

    # The kubelet's CreateContainerConfigError is reported long before the 10m deadline, naming the Secret.
    slot = wait_reason(api_client, namespace, "s", "ProbeSucceeded", "ContainerConfigError", timeout=60)
    assert 'secret "probe-env" not found' in condition(slot, "ProbeSucceeded")["message"]
    assert slot["status"]["phase"] == "Pending"
    assert condition(slot, "Reconciling")["reason"] == "Retrying"

    # The Secret appears: a retry finds it, and its value reaches the probe (which crashes on request).
    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="probe-env"), string_data={"crash": "1"})
    )
    slot = wait_reason(api_client, namespace, "s", "ProbeSucceeded", "ProbeCrashed", timeout=90)
    assert "SMOKE_TEST_CRASH=1" in condition(slot, "ProbeSucceeded")["message"]


def test_suspended_slot_is_not_probed(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    _codex_valid(claim("home"))
    operator()
    create_slot(api_client, namespace, "s", claim="home", suspend=True)

    slot = wait_reason(api_client, namespace, "s", "Reconciling", "Suspended")
    assert not slots.probe_jobs(api_client, namespace)
    assert slot["status"]["phase"] == "Pending"

    slots.patch_slot(api_client, namespace, "s", {"spec": {"suspend": False}})
    wait_verdict(api_client, namespace, "s", "Ready")
