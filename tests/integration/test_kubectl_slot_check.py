"""`kubectl slot check` against the real API server: the check it creates passes the CRD's validation, and its
wait follows the check's status through a real watch to the exit code.

No operator runs here: the test writes each status of the contract itself, through the status subresource, so
that every state the plugin may meet is met (tests/integration/test_image_check.py runs it against the
operator). The plugin runs as the installed console script.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import cluster
from tests import ci_repo
from tests.integration import slots
from tests.integration.kubewait import NotYet, wait_for

pytestmark = pytest.mark.integration

PLUGIN = pathlib.Path(sys.executable).parent / "kubectl-slot"
TESTDATA = cluster.REPO / "charts" / "slot-operator" / "argocd" / "SlotImageCheck" / "testdata"
PLURAL = "slotimagechecks"
IMAGE = "ghcr.io/example/agent-shell:sha-4d5e6f-codex"


def status_of(state: str) -> dict[str, Any]:
    return dict(yaml.safe_load((TESTDATA / f"{state}.yaml").read_text())["status"])


def start(kubeconfig: pathlib.Path, namespace: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(PLUGIN), "check", "--image", IMAGE, "-n", namespace, "--kubeconfig", str(kubeconfig), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def created(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    def one() -> dict[str, Any] | NotYet:
        items = client.CustomObjectsApi(api).list_namespaced_custom_object(
            slots.GROUP, slots.VERSION, namespace, PLURAL
        )["items"]
        return dict(items[0]) if len(items) == 1 else NotYet(items)

    return wait_for(one, timeout=30, message="the plugin's SlotImageCheck")


def write_status(api: client.ApiClient, namespace: str, name: str, state: str) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        slots.GROUP, slots.VERSION, namespace, PLURAL, name, {"status": status_of(state)}
    )


def test_create_and_wait_through_to_the_answer(
    kube_cluster: cluster.Cluster, api_client: client.ApiClient, namespace: str
) -> None:
    proc = start(kube_cluster.kubeconfig, namespace, "-l", "pool in (codex, claude),!parked", "--as", "10001:10001",
                 "--wait", "--timeout", "2m")  # fmt: skip
    try:
        check = created(api_client, namespace)
        name = check["metadata"]["name"]
        assert name.startswith("check-")
        assert check["spec"] == {
            "image": IMAGE, "runAsUser": 10001, "runAsGroup": 10001, "ttlAfterFinished": "24h",
            "selector": {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["codex", "claude"]},
                                              {"key": "parked", "operator": "DoesNotExist"}]},
        }  # fmt: skip
        for state in ("queued", "probing", "probing-one-would-need-a-human", "failed-owned-by-the-old-uid"):
            write_status(api_client, namespace, name, state)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 65, err
    assert err == f"slotimagecheck/{name}\n"
    lines = out.splitlines()
    assert lines[0] == f"SlotImageCheck {namespace}/{name}: {IMAGE}"
    assert lines[1].startswith("Failed: 1 of 3 Slots would need a human")
    assert lines[-1].startswith("codex-old-uid")


def test_junit_once_more_under_the_same_name(
    kube_cluster: cluster.Cluster, api_client: client.ApiClient, namespace: str
) -> None:
    """What the CI recipe does: --name, wait for JUnit, then the table of the same check without a second one."""
    proc = start(kube_cluster.kubeconfig, namespace, "--name", "pr-42", "--wait", "-o", "junit")
    try:
        write_status(api_client, namespace, created(api_client, namespace)["metadata"]["name"], "failed-image-broken")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 64, err
    assert out.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="kubectl slot check" tests="3" '
                          'failures="3">')  # fmt: skip
    again = subprocess.run(
        [str(PLUGIN), "check", "--image", IMAGE, "-n", namespace, "--kubeconfig", str(kube_cluster.kubeconfig),
         "--name", "pr-42", "--wait", "--timeout", "10s", "-o", "json"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert again.returncode == 64, again.stderr
    assert json.loads(again.stdout)["status"]["phase"] == "Failed"
    listed = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        slots.GROUP, slots.VERSION, namespace, PLURAL
    )["items"]
    assert [c["metadata"]["name"] for c in listed] == ["pr-42"]  # rendered twice, probed once


def test_a_deleted_check_and_a_timeout(
    kube_cluster: cluster.Cluster, api_client: client.ApiClient, namespace: str
) -> None:
    proc = start(kube_cluster.kubeconfig, namespace, "--wait")
    try:
        name = created(api_client, namespace)["metadata"]["name"]
        write_status(api_client, namespace, name, "probing")
        client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
            slots.GROUP, slots.VERSION, namespace, PLURAL, name
        )
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert out.splitlines()[1] == "Running: 1 of 3 Slots answered: 1 Ready (the check was deleted: no answer will come)"
    assert err.splitlines()[-1] == f"kubectl slot check: slotimagecheck/{name} was deleted before it finished"
    # Nobody answers this one: --timeout ends the wait with 3 and what is known so far.
    late = subprocess.run(
        [str(PLUGIN), "check", "--image", IMAGE, "-n", namespace, "--kubeconfig", str(kube_cluster.kubeconfig),
         "--wait", "--timeout", "2s"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert late.returncode == 3, late.stderr
    assert late.stdout.splitlines()[1] == "not yet seen by the operator (--timeout passed before the check finished)"


def test_the_api_server_refuses_what_the_plugin_let_through(kube_cluster: cluster.Cluster, namespace: str) -> None:
    """A name taken by a check of another question, and a namespace that does not exist: one line, exit 1."""
    first = subprocess.run(
        [str(PLUGIN), "check", "--image", IMAGE, "-n", namespace, "--kubeconfig", str(kube_cluster.kubeconfig),
         "--name", "pr-7"], capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert (first.returncode, first.stdout) == (0, "slotimagecheck/pr-7\n"), first.stderr
    other = subprocess.run(
        [str(PLUGIN), "check", "--image", IMAGE + "-rc1", "-n", namespace, "--kubeconfig",
         str(kube_cluster.kubeconfig), "--name", "pr-7"], capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert other.returncode == 1
    assert other.stderr == (f"kubectl slot check: slotimagecheck/pr-7 exists in {namespace} and asks another "
                            f"question (image {IMAGE}): choose another --name\n")  # fmt: skip
    nowhere = subprocess.run(
        [str(PLUGIN), "check", "--image", IMAGE, "-n", "no-such-namespace", "--kubeconfig",
         str(kube_cluster.kubeconfig)], capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith('kubectl slot: 404 namespaces "no-such-namespace" not found'), nowhere.stderr


def test_the_ci_recipe_with_the_real_plugin(
    kube_cluster: cluster.Cluster, api_client: client.ApiClient, namespace: str, tmp_path: pathlib.Path
) -> None:
    """examples/ci/check-image-bump.sh on a tag-bump commit, through kubectl's plugin lookup to this API server."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the plugin lookup cannot be tried")
    repo = ci_repo.make(tmp_path / "gitops")
    ci_repo.bump_tag(repo, "sha-4d5e6f-codex")
    ci_repo.commit(repo, "bump the agent image")
    summary, junit = tmp_path / "summary.md", tmp_path / "slots.junit.xml"
    env = {**os.environ, "PATH": f"{PLUGIN.parent}:{os.environ['PATH']}", "KUBECONFIG": str(kube_cluster.kubeconfig),
           "CHECK_NAMESPACE": namespace, "SLOT_SELECTOR": "pool=codex", "CHECK_AS": "10001:10001",
           "CHECK_TIMEOUT": "2m", "JUNIT_FILE": str(junit), "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_RUN_ID": "77", "GITHUB_RUN_ATTEMPT": "1"}  # fmt: skip
    proc = subprocess.Popen(["sh", str(ci_repo.SCRIPT), "base", "HEAD"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        check = created(api_client, namespace)
        assert check["metadata"]["name"] == "ci-77-1"
        assert check["spec"] == {"image": f"{IMAGE}", "selector": {"matchLabels": {"pool": "codex"}},
                                 "runAsUser": 10001, "runAsGroup": 10001, "ttlAfterFinished": "24h"}  # fmt: skip
        write_status(api_client, namespace, "ci-77-1", "failed-owned-by-the-old-uid")
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 65, err
    assert junit.read_text().startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="kubectl slot check"')
    text = summary.read_text()
    assert text.startswith(f"### Slot image check: `{IMAGE}`\n\n```\nSlotImageCheck {namespace}/ci-77-1: {IMAGE}\n")
    assert "codex-old-uid   NeedsInit   65" in text
    assert text.splitlines()[-1].startswith("a Slot would need a human first (exit 65)")
    assert "codex-old-uid   NeedsInit   65" in out
