"""The chart as users run it: `helm install` runs the operator Deployment from the image `make image` built.

The node simulator runs the pod from the OCI archive (chrooted into the image, uid
10001, read-only root, all capabilities dropped, /tmp emptyDir, the projected
ServiceAccount token and KUBERNETES_SERVICE_HOST/PORT for in-cluster config, /healthz
probes driving Ready). Verdicts come from that pod: no operator process runs on the
host in this test, and the Lease is held by the pod's name. Pods share the host's
network in the simulator, so each release gets free health and metrics ports.
"""

from __future__ import annotations

import pathlib
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from devcluster import build
from tests.integration import slots
from tests.integration.helm_release import CHART, Helm, ensure_chart_crds, kubectl
from tests.integration.kubewait import NotYet, read_or_none, wait_for
from tests.integration.slots import (
    VALID_CODEX,
    condition,
    create_check,
    create_slot,
    get_slot,
    wait_check,
    wait_slot,
    write_file,
)
from tools import image as image_tool

pytestmark = pytest.mark.integration


REPOSITORY, TAG = image_tool.IMAGE.rsplit(":", 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def helm(kube_cluster: Any, tmp_path: pathlib.Path) -> Helm:
    ensure_chart_crds(kube_cluster.kubeconfig)
    home = tmp_path / "helm-home"
    home.mkdir()
    return Helm(binary=str(build.tool("helm")), kubeconfig=kube_cluster.kubeconfig, home=home)


def _values(namespace: str, **extra: Any) -> dict[str, Any]:
    return {
        "image": {"repository": REPOSITORY, "tag": TAG, "pullPolicy": "Never"},
        "watchNamespaces": [namespace],
        "health": {"port": _free_port()},
        "metrics": {"port": _free_port()},
        "operator": {"retryBase": "2s", "retryMax": "30s", "logFormat": "text"},
        **extra,
    }


def _operator_pods(core: client.CoreV1Api, namespace: str, release: str) -> list[Any]:
    selector = f"app.kubernetes.io/instance={release}"
    return [
        p
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        if p.metadata.deletion_timestamp is None
    ]


def _available(apps: client.AppsV1Api, namespace: str, name: str) -> Callable[[], bool | NotYet]:
    def check() -> bool | NotYet:
        deployment = apps.read_namespaced_deployment(name, namespace)
        status = deployment.status
        conditions = {c.type: c.status for c in status.conditions or []}
        done = (
            status.observed_generation == deployment.metadata.generation
            and status.updated_replicas == deployment.spec.replicas
            and status.ready_replicas == deployment.spec.replicas
            and (status.replicas or 0) == deployment.spec.replicas
            and conditions.get("Available") == "True"
        )
        return True if done else NotYet(f"status {status.to_dict()}")

    return check


def _lease_holder(coordination: client.CoordinationV1Api, namespace: str, lease: str) -> str:
    found = read_or_none(coordination.read_namespaced_lease, lease, namespace)
    return (found.spec.holder_identity or "") if found is not None else ""


@pytest.fixture
def release(
    helm: Helm, namespace: str, api_client: client.ApiClient, operator_archive: pathlib.Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    name = f"pod-{uuid.uuid4().hex[:6]}"
    # The release namespace enforces the restricted Pod Security profile: the chart's pod must pass it.
    client.CoreV1Api(api_client).patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    values = _values(namespace)
    helm("install", name, str(CHART), "--namespace", namespace, "--timeout", "120s", values=values)
    try:
        yield name, values
    finally:
        helm("uninstall", name, "--namespace", namespace, "--ignore-not-found", "--wait", "--timeout", "120s")


def test_the_chart_runs_the_operator_image(
    release: tuple[str, dict[str, Any]],
    helm: Helm,
    namespace: str,
    api_client: client.ApiClient,
    claim: Callable[..., pathlib.Path],
    kube_cluster: Any,
) -> None:
    name, values = release
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    coordination = client.CoordinationV1Api(api_client)
    deployment, lease = f"{name}-slot-operator", f"{name}-slot-operator"
    # The operator runs under the chart's ValidatingAdmissionPolicy, on by default (docs/security.md).
    policies = client.AdmissionregistrationV1Api(api_client).list_validating_admission_policy(
        label_selector=f"app.kubernetes.io/instance={name}"
    )
    assert len(policies.items) == 1, policies
    wait_for(_available(apps, namespace, deployment), timeout=120, message=f"Deployment {deployment} Available")
    (pod,) = _operator_pods(core, namespace, name)
    assert pod.status.container_statuses[0].image_id.startswith(f"{REPOSITORY}@sha256:")
    wait_for(lambda: _lease_holder(coordination, namespace, lease) == pod.metadata.name, timeout=60,
             message=f"operator pod {pod.metadata.name} holds Lease {lease}")  # fmt: skip

    # Verdicts written by the pod (nothing else runs an operator for this namespace).
    write_file(claim("good"), ".codex/auth.json", VALID_CODEX)
    claim("empty")
    create_slot(api_client, namespace, "ready", claim="good")
    create_slot(api_client, namespace, "needs-init", claim="empty")
    for slot, phase in (("ready", "Ready"), ("needs-init", "NeedsInit")):
        wait_slot(api_client, namespace, slot, lambda s, phase=phase: (s.get("status") or {}).get("phase") == phase,
                  message=f"{slot}: {phase} from the operator pod")  # fmt: skip
    # A SlotImageCheck under the chart's RBAC and admission policy: its probe Jobs are admitted, its status written.
    create_check(api_client, namespace, "candidate", image=slots.CODEX_IMAGE)
    answered = wait_check(api_client, namespace, "candidate")
    phases = {result["slot"]: result["phase"] for result in answered["status"]["results"]}
    assert phases == {"ready": "Ready", "needs-init": "NeedsInit"}

    # The pod is deleted: the ReplicaSet's new pod takes the Lease and carries on.
    core.delete_namespaced_pod(pod.metadata.name, namespace)

    def replaced() -> Any:
        pods = [p for p in _operator_pods(core, namespace, name) if p.metadata.name != pod.metadata.name]
        return pods[0] if pods else NotYet("no new operator pod yet")

    successor = wait_for(replaced, timeout=60, message="a new operator pod from the ReplicaSet")
    wait_for(_available(apps, namespace, deployment), timeout=120, message=f"Deployment {deployment} Available again")
    wait_for(lambda: _lease_holder(coordination, namespace, lease) == successor.metadata.name, timeout=90,
             message=f"new pod {successor.metadata.name} takes Lease {lease}")  # fmt: skip
    write_file(claim("later"), ".codex/auth.json", VALID_CODEX)
    create_slot(api_client, namespace, "after-takeover", claim="later")
    wait_slot(api_client, namespace, "after-takeover", lambda s: (s.get("status") or {}).get("phase") == "Ready",
              message="a verdict from the new operator pod")  # fmt: skip

    # `helm upgrade` with a changed value rolls the pod (Recreate: the old one goes first).
    upgraded = {**values, "operator": {**values["operator"], "workers": 3}}
    helm("upgrade", name, str(CHART), "--namespace", namespace, "--timeout", "120s", values=upgraded)

    def rolled() -> Any:
        pods = _operator_pods(core, namespace, name)
        args = pods[0].spec.containers[0].args if len(pods) == 1 else []
        return pods[0] if "--workers=3" in args else NotYet(f"pods {[p.metadata.name for p in pods]}")

    rolled_pod = wait_for(rolled, timeout=60, message="the upgraded pod (--workers=3)")
    wait_for(
        _available(apps, namespace, deployment), timeout=120, message=f"Deployment {deployment} Available after upgrade"
    )
    wait_for(lambda: _lease_holder(coordination, namespace, lease) == rolled_pod.metadata.name, timeout=90,
             message=f"upgraded pod {rolled_pod.metadata.name} takes Lease {lease}")  # fmt: skip

    # `helm uninstall` leaves the CRD (crds/ is never deleted by Helm) and the Slots.
    helm("uninstall", name, "--namespace", namespace, "--wait", "--timeout", "120s")
    wait_for(lambda: not _operator_pods(core, namespace, name) or NotYet("operator pods remain"), timeout=60,
             message="operator pods gone after uninstall")  # fmt: skip
    assert "slots.woved.dev" in kubectl(kube_cluster.kubeconfig, "get", "crd", "-o", "name")
    for slot in ("ready", "needs-init", "after-takeover"):
        assert condition(get_slot(api_client, namespace, slot), "Ready"), slot
