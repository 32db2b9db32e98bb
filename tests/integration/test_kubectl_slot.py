"""`kubectl slot` against the local cluster and a running operator: list, probe --wait, why.

The plugin runs as the installed console script (`kubectl-slot`) and, once, through kubectl
itself, which finds it on PATH; it reads the kubeconfig and context like kubectl does.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import cluster
from tests.integration import slots
from tests.integration.slots import VALID_CODEX, create_slot, wait_event, wait_verdict, write_file

pytestmark = pytest.mark.integration

PLUGIN = pathlib.Path(sys.executable).parent / "kubectl-slot"
PROBE_REQUEST = "woved.dev/probe-requested-at"


def run(*args: str, kubeconfig: pathlib.Path | None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    flags = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    return subprocess.run(
        [str(PLUGIN), *args, *flags], capture_output=True, text=True, check=False, timeout=timeout
    )  # fmt: skip


def valid(home: pathlib.Path) -> None:
    write_file(home, ".codex/auth.json", VALID_CODEX)


def empty(home: pathlib.Path) -> None:
    write_file(home, ".codex/auth.json", "")


@pytest.fixture
def fleet(
    kube_cluster: cluster.Cluster,
    api_client: client.ApiClient,
    namespace: str,
    claim: Callable[..., pathlib.Path],
    operator: Callable[..., Any],
) -> pathlib.Path:
    """Two Slots with verdicts (good: Ready, stale: NeedsReauth) and a running operator; returns the kubeconfig."""
    claim("good", prepare=valid)
    claim("stale", prepare=empty)
    operator()
    create_slot(api_client, namespace, "good", claim="good")
    create_slot(api_client, namespace, "stale", claim="stale")
    wait_verdict(api_client, namespace, "good", "Ready")
    wait_verdict(api_client, namespace, "stale", "NeedsReauth")
    return kube_cluster.kubeconfig


def test_list_shows_the_fleet(fleet: pathlib.Path, namespace: str, tmp_path: pathlib.Path) -> None:
    listed = run("list", "-n", namespace, kubeconfig=fleet)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "PHASE", "READY", "VERDICT", "IMAGE", "REASON"]
    assert rows[1][:3] == ["good", "Ready", "True"]
    assert rows[1][4:] == [slots.CODEX_IMAGE, "SmokeTestPassed"]
    assert rows[2][:3] == ["stale", "NeedsReauth", "False"]
    assert rows[2][5] == "NeedsReauth"

    # -A: every namespace, through kubectl's plugin lookup on PATH, the kubeconfig from $KUBECONFIG.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the plugin lookup cannot be tried")
    env = {**os.environ, "KUBECONFIG": str(fleet), "PATH": f"{PLUGIN.parent}{os.pathsep}{os.environ['PATH']}"}
    everywhere = subprocess.run(
        [kubectl, "slot", "list", "-A"], capture_output=True, text=True, check=False, timeout=120, env=env
    )
    assert everywhere.returncode == 0, everywhere.stderr
    assert everywhere.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    mine = [line.split() for line in everywhere.stdout.splitlines() if line.startswith(namespace + " ")]
    assert [row[1:4] for row in mine] == [["good", "Ready", "True"], ["stale", "NeedsReauth", "False"]]

    # --context picks a context of the kubeconfig; its namespace is the default one, like kubectl.
    config = yaml.safe_load(fleet.read_text())
    (base,) = config["contexts"]
    config["contexts"].append({"name": "team", "context": {**base["context"], "namespace": namespace}})
    own = tmp_path / "kubeconfig"
    own.write_text(yaml.safe_dump(config))
    by_context = run("list", "--context", "team", kubeconfig=own)
    assert by_context.returncode == 0, by_context.stderr
    assert [line.split()[0] for line in by_context.stdout.splitlines()[1:]] == ["good", "stale"]
    unknown = run("--context", "nowhere", "list", kubeconfig=own)
    assert unknown.returncode == 1
    assert "nowhere" in unknown.stderr


def test_probe_waits_for_a_verdict_on_the_request(
    fleet: pathlib.Path, api_client: client.ApiClient, namespace: str
) -> None:
    jobs_before = {job.metadata.name for job in slots.probe_jobs(api_client, namespace)}
    ready = run("probe", "good", "-n", namespace, "--wait", "--timeout", "90s", kubeconfig=fleet)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert ready.stdout.startswith("slot/good: Ready")
    good = slots.get_slot(api_client, namespace, "good")
    token = good["metadata"]["annotations"][PROBE_REQUEST]
    assert token.startswith("kubectl-slot-")
    assert good["status"]["lastHandledProbeRequest"] == token
    # A new probe ran for the request: the verdict is an answer to it, not the one from before.
    assert good["status"]["lastProbe"]["jobName"] not in jobs_before

    # The probe's own exit code for a verdict that is not Ready (66: NeedsReauth), and the phase.
    stale = run("probe", "-n", namespace, "stale", "--wait", kubeconfig=fleet)
    assert stale.returncode == 66, stale.stdout + stale.stderr
    assert stale.stdout.startswith("slot/stale: NeedsReauth")

    # Several Slots: one line each; the first that is not Ready sets the exit code.
    both = run("probe", "good", "stale", "-n", namespace, "--wait", kubeconfig=fleet)
    assert both.returncode == 66, both.stdout + both.stderr
    assert [line.split(":")[0] for line in both.stdout.splitlines()] == ["slot/good", "slot/stale"]

    # Without --wait: the request is made and acknowledged later by the operator.
    fire = run("probe", "good", "-n", namespace, kubeconfig=fleet)
    assert fire.returncode == 0, fire.stderr
    token = fire.stdout.split("token ")[1].rstrip(")\n")
    slots.wait_slot(api_client, namespace, "good", lambda s: s["status"].get("lastHandledProbeRequest") == token)


def test_probe_says_when_no_verdict_comes(
    api_client: client.ApiClient, namespace: str, kube_cluster: cluster.Cluster, operator: Callable[..., Any]
) -> None:
    operator()
    create_slot(api_client, namespace, "parked", claim="none", suspend=True)
    create_slot(api_client, namespace, "homeless", claim="missing")
    kubeconfig = kube_cluster.kubeconfig
    suspended = run("probe", "parked", "-n", namespace, "--wait", kubeconfig=kubeconfig)
    assert suspended.returncode == 1, suspended.stdout + suspended.stderr
    assert "slot/parked: Suspended" in suspended.stdout
    # The claim is missing: the operator acknowledges the request with ClaimNotFound and retries; no verdict.
    waited = run("probe", "homeless", "-n", namespace, "--wait", "--timeout", "8s", kubeconfig=kubeconfig)
    assert waited.returncode == 3, waited.stdout + waited.stderr
    assert "slot/homeless: NoVerdict" in waited.stdout
    assert "ClaimNotFound" in waited.stdout
    absent = run("probe", "nobody", "-n", namespace, "--wait", kubeconfig=kubeconfig)
    assert absent.returncode == 1
    assert "slot/nobody: NotFound" in absent.stdout
    bad = run("probe", "homeless", "-n", namespace, "--timeout", "soon", kubeconfig=kubeconfig)
    assert bad.returncode == 2
    assert "--timeout" in bad.stderr


def test_why_explains_a_slot(fleet: pathlib.Path, api_client: client.ApiClient, namespace: str) -> None:
    wait_event(api_client, namespace, "stale", reason="NeedsReauth", kind="Warning")
    explained = run("why", "stale", "-n", namespace, kubeconfig=fleet)
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout
    assert f"Slot {namespace}/stale (generation 1)" in text
    assert "Verdict:     NeedsReauth" in text
    assert "on the current spec" in text
    assert "exit 66" in text
    # The probe's own message (from its JSON result line) and the Event the operator posted.
    message = slots.get_slot(api_client, namespace, "stale")["status"]["lastProbe"]["message"]
    assert f"message:   {message}" in text
    assert "Warning  NeedsReauth: Pending -> NeedsReauth" in text
    assert "Re-authenticate the agent" in text
    missing = run("why", "nobody", "-n", namespace, kubeconfig=fleet)
    assert missing.returncode == 1
    assert 'slot "nobody" not found' in missing.stderr
