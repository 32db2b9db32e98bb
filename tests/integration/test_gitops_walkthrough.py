"""README, "Gate an image rollout on your slots": each commit of the walk-through, on live Slots.

Renders examples/gitops/flux/slots exactly as Flux's kustomize-controller would after each commit
(the image tag bumped in kustomization.yaml), applies it server-side, and checks what the agent-slots
Kustomization (`wait: true`) would do from kstatus: wait, stop, or pass (and let agent-workers run).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import cluster, gitops
from tests.integration.kubewait import wait_for
from tests.integration.slots import get_slot, write_file

pytestmark = pytest.mark.integration

EXAMPLE = cluster.REPO / "examples" / "gitops" / "flux" / "slots"
LOCAL = pathlib.Path("local", "agent-shell")
GOOD, BAD = "sha-1a2b3c-codex", "sha-4d5e6f-codex"


@pytest.fixture
def example_images(kube_cluster: cluster.Cluster) -> Iterator[None]:
    """The example's registry tags in the local image store: GOOD is the agent image, BAD lost its CLI."""
    store = kube_cluster.images_dir
    top = store / "ghcr.io"
    created = not top.exists()
    repository = top / "example" / "agent-shell"
    for tag, source in ((GOOD, "codex"), (BAD, "broken-cli")):
        config = json.loads((store / LOCAL / source / "image.json").read_text())
        config["rootfs"] = str(store / LOCAL / "rootfs")
        (repository / tag).mkdir(parents=True, exist_ok=True)
        (repository / tag / "image.json").write_text(json.dumps(config))
    yield
    shutil.rmtree(top if created else repository, ignore_errors=True)


def commit(workdir: pathlib.Path, tag: str) -> pathlib.Path:
    """The repository after a commit that sets the agent image tag (what the README tells you to edit)."""
    slots = workdir / "slots"
    shutil.rmtree(slots, ignore_errors=True)
    shutil.copytree(EXAMPLE, slots)
    kustomization = yaml.safe_load((slots / "kustomization.yaml").read_text())
    kustomization["images"][0]["newTag"] = tag
    (slots / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return slots


def reconcile(kubeconfig: pathlib.Path, slots: pathlib.Path, namespace: str) -> list[str]:
    """kustomize build + server-side apply, like kustomize-controller; returns the Slot names applied.

    The claims are left out: the test's own claims (with credentials on them) stand in for them.
    """
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(slots)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Slot"]
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", "apply", "--server-side", "--field-manager=kustomize-controller",
         "-f", "-"],
        input=yaml.safe_dump_all(objects), capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return [obj["metadata"]["name"] for obj in objects]


def gate(api: client.ApiClient, namespace: str, names: list[str]) -> tuple[str, list[gitops.Reading]]:
    readings = gitops.read([get_slot(api, namespace, name) for name in names])
    assert all(reading.agree for reading in readings), readings  # Argo CD's sync wave decides the same
    return gitops.flux_gate(readings), readings


def walk(api: client.ApiClient, namespace: str, names: list[str], until: str) -> list[str]:
    """Every decision seen from the apply until `until` (the first is read right after the apply)."""
    seen: list[str] = []

    def reached() -> bool:
        decision, _ = gate(api, namespace, names)
        if not seen or seen[-1] != decision:
            seen.append(decision)
        return decision == until

    wait_for(reached, timeout=120, message=f"agent-slots would {until}", describe=lambda: seen)
    return seen


def test_a_bad_tag_is_stopped_before_the_workers_and_the_fix_goes_through(
    kube_cluster: cluster.Cluster,
    api_client: client.ApiClient,
    namespace: str,
    claim: Callable[..., pathlib.Path],
    operator: Any,
    example_images: None,
    tmp_path: pathlib.Path,
) -> None:
    for name in ("codex-1-home", "codex-2-home"):
        write_file(claim(name), ".codex/auth.json", json.dumps({"tokens": {"access_token": "a"}}))
    operator()
    kubeconfig = kube_cluster.kubeconfig

    # 1. The slots at the tag in the example: agent-slots becomes Ready, agent-workers rolls it out.
    names = reconcile(kubeconfig, commit(tmp_path, GOOD), namespace)
    assert names == ["codex-1", "codex-2"]
    assert walk(api_client, namespace, names, "pass")[0] == "wait"

    # 2. A commit bumps the tag to an image whose CLI is broken: the gate waits for the probes, then stops.
    reconcile(kubeconfig, commit(tmp_path, BAD), namespace)
    assert walk(api_client, namespace, names, "stop") == ["wait", "stop"]  # at the first Failed Slot

    def all_failed() -> bool:
        readings = gate(api_client, namespace, names)[1]
        return all(r.pair == ("Failed", "Degraded") and "ImageBroken" in r.argo_message for r in readings)

    wait_for(all_failed, timeout=60, message="every Slot ImageBroken")

    # 3. The revert (or a fixed tag): a new generation, probed again, and the rollout goes through.
    reconcile(kubeconfig, commit(tmp_path, GOOD), namespace)
    assert walk(api_client, namespace, names, "pass") == ["wait", "pass"]
    for name in names:
        slot = get_slot(api_client, namespace, name)
        assert slot["metadata"]["generation"] == 3
        assert slot["status"]["lastReadyImage"] == f"ghcr.io/example/agent-shell:{GOOD}"
