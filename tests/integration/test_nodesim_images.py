"""The node simulator running OCI images (the operator image `make image` built) and pods that live on.

A pod from the image runs chrooted into it with the image config's entrypoint, env,
user and working directory, the pod's securityContext (read-only root filesystem,
uid/gid, capabilities), its volumes (emptyDir, the projected ServiceAccount token) and
KUBERNETES_SERVICE_HOST/PORT, so the Kubernetes client's in-cluster config reaches the
API server. Probes drive Ready and restarts, restartPolicy restarts containers.
"""

from __future__ import annotations

import json
import pathlib
import socket
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from tests.integration.kubewait import NotYet, wait_for
from tools import image as image_tool

pytestmark = pytest.mark.integration

# Runs inside the operator image as the container's command: reports what the container sees.
REPORT = r"""
import json, os, pathlib, sys
from kubernetes import client, config
facts = {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(), "env": dict(os.environ)}
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
facts["caps"] = {k: status[k].strip() for k in ("CapEff", "CapBnd")}
for path in ("/probe-root", "/tmp/probe-tmp"):
    try:
        pathlib.Path(path).write_text("x")
        facts[path] = "written"
    except OSError as exc:
        facts[path] = exc.strerror
sa = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")
facts["sa"] = sorted(p.name for p in sa.iterdir()) if sa.is_dir() else []
facts["namespace"] = (sa / "namespace").read_text() if sa.is_dir() else ""
try:
    config.load_incluster_config()
    facts["whoami"] = client.VersionApi().get_code().git_version
except Exception as exc:
    facts["whoami"] = f"{type(exc).__name__}: {exc}"
pathlib.Path("/dev/termination-log").write_text(json.dumps(facts))
"""


@pytest.fixture
def operator_image(operator_archive: pathlib.Path) -> str:
    return image_tool.IMAGE


def _pod(namespace: str, name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [container], **spec},
    }


def _terminated(core: client.CoreV1Api, namespace: str, name: str) -> Callable[[], Any]:
    def check() -> Any:
        pod = core.read_namespaced_pod(name, namespace)
        statuses = pod.status.container_statuses or []
        if pod.status.phase in ("Succeeded", "Failed") and statuses and statuses[0].state.terminated:
            return statuses[0].state.terminated
        return NotYet(pod.status.phase)

    return check


def _report(core: client.CoreV1Api, namespace: str, name: str, container: dict[str, Any], **spec: Any) -> Any:
    """Run REPORT as pod `name` (`container`: the container's image and other fields; `spec`: the pod's): what the
    container saw, once it finished with status 0."""
    command = {"name": "report", "command": ["python", "-c", REPORT], **container}
    core.create_namespaced_pod(namespace, _pod(namespace, name, command, restartPolicy="Never", **spec))
    terminated = wait_for(_terminated(core, namespace, name), timeout=90, message=f"the {name} pod to finish")
    assert terminated.exit_code == 0, terminated.message
    return json.loads(terminated.message)


def test_an_oci_image_runs_chrooted_with_the_pod_security_context(
    core: client.CoreV1Api, namespace: str, operator_image: str
) -> None:
    container = {
        "image": operator_image,
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    facts = _report(core, namespace, "report", container, volumes=[{"name": "tmp", "emptyDir": {}}])
    # The image's config: USER 10001:10001, its ENV (PATH through the venv), WorkingDir (none: /).
    assert (facts["uid"], facts["gid"], facts["cwd"]) == (10001, 10001, "/")
    assert facts["env"]["PATH"].startswith("/opt/venv/bin:")
    assert facts["env"]["PYTHONDONTWRITEBYTECODE"] == "1"
    assert facts["caps"] == {"CapEff": "0000000000000000", "CapBnd": "0000000000000000"}
    assert facts["/probe-root"] == "Read-only file system"
    assert facts["/tmp/probe-tmp"] == "written"
    # The projected token volume the ServiceAccount admission plugin added, and in-cluster config with it.
    assert facts["sa"] == ["ca.crt", "namespace", "token"]
    assert facts["namespace"] == namespace
    assert facts["whoami"].startswith("v1."), facts["whoami"]


def test_a_root_container_keeps_only_the_capabilities_it_adds(
    core: client.CoreV1Api, namespace: str, operator_image: str
) -> None:
    """What an init container that fixes ownership needs: root, CHOWN and DAC_OVERRIDE, nothing else."""
    root = {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}
    capabilities = {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE"]}
    facts = _report(
        core, namespace, "root", {"image": operator_image, "securityContext": {**root, "capabilities": capabilities}}
    )
    assert (facts["uid"], facts["gid"]) == (0, 0)
    # CAP_CHOWN is bit 0, CAP_DAC_OVERRIDE bit 1.
    assert facts["caps"] == {"CapEff": "0000000000000003", "CapBnd": "0000000000000003"}
    assert facts["/probe-root"] == "written"  # a writable root filesystem (an overlay; the image is untouched)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_readiness_drives_ready_and_a_failing_liveness_probe_restarts(
    core: client.CoreV1Api, namespace: str, operator_image: str
) -> None:
    port = _free_port()
    serve = {
        "name": "web",
        "image": operator_image,
        "command": ["python", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", "/opt"],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/venv/", "port": "http"}, "periodSeconds": 1},
    }
    core.create_namespaced_pod(namespace, _pod(namespace, "web", serve))

    def ready() -> bool | NotYet:
        pod = core.read_namespaced_pod("web", namespace)
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        return True if conditions.get("Ready") == "True" else NotYet(conditions)

    wait_for(ready, timeout=90, message="Ready from the readiness probe")

    dead_port = _free_port()  # nothing listens there: every liveness attempt fails
    idle = {
        "name": "idle",
        "image": operator_image,
        # Runs until killed: only the liveness probe ends it.
        "command": ["python", "-c", "import signal; signal.pause()"],
        "livenessProbe": {"tcpSocket": {"port": dead_port}, "periodSeconds": 1, "failureThreshold": 2},
    }
    core.create_namespaced_pod(namespace, _pod(namespace, "idle", idle))

    def restarted() -> Any:
        pod = core.read_namespaced_pod("idle", namespace)
        statuses = pod.status.container_statuses or []
        if statuses and statuses[0].restart_count >= 2 and statuses[0].last_state.terminated:
            return pod
        return NotYet(statuses[0].to_dict() if statuses else pod.status.phase)

    pod = wait_for(restarted, timeout=90, message="restarts after failed liveness probes")
    assert pod.status.phase == "Running"  # a restarting container keeps its pod Running
    assert pod.status.container_statuses[0].last_state.terminated.exit_code == 143  # SIGTERM from the kubelet


def test_init_containers_run_in_order_before_the_containers(
    core: client.CoreV1Api, namespace: str, operator_image: str
) -> None:
    """A root init container with only CHOWN and DAC_OVERRIDE hands a volume to uid 10001 (what issue 11 needs)."""
    chown = {
        "name": "chown",
        "image": operator_image,
        "command": ["python", "-c", "import os; os.makedirs('/data/home'); os.chown('/data/home', 10001, 10001)"],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE"]},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    write = {
        "name": "write",
        "image": operator_image,
        "command": ["python", "-c", "open('/data/home/x', 'w').write('ok'); print(open('/data/home/x').read())"],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    spec = {"restartPolicy": "Never", "initContainers": [chown], "volumes": [{"name": "data", "emptyDir": {}}]}
    core.create_namespaced_pod(namespace, _pod(namespace, "handover", write, **spec))
    terminated = wait_for(_terminated(core, namespace, "handover"), timeout=90, message="the handover pod to finish")
    assert terminated.exit_code == 0, terminated.message
    pod = core.read_namespaced_pod("handover", namespace)
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0
    assert {c.type: c.status for c in pod.status.conditions}["Initialized"] == "True"

    failing = {**chown, "name": "fail", "command": ["python", "-c", "raise SystemExit(3)"]}
    spec = {**spec, "initContainers": [failing]}
    core.create_namespaced_pod(namespace, _pod(namespace, "init-fails", write, **spec))

    def failed() -> Any:
        pod = core.read_namespaced_pod("init-fails", namespace)
        return pod if pod.status.phase == "Failed" else NotYet(pod.status.phase)

    pod = wait_for(failed, timeout=90, message="a pod whose init container fails (restartPolicy Never) to fail")
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 3
    assert pod.status.container_statuses[0].state.waiting.reason == "PodInitializing"  # never started
