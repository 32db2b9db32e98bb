"""Fixtures for integration tests against the local control plane (devcluster, docs/design.md section 5).

`kube_cluster` starts etcd + kube-apiserver + kube-controller-manager + the node
simulator once per session (or reuses a running one, which it then leaves running);
`namespace` gives each test a fresh namespace; `claim` creates a PVC whose volume is
a real directory the test fills with files before the probe runs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from kubernetes import client, config

# `devcluster` and `tests.integration.*` import from the repo root however pytest is invoked.
_REPO = str(pathlib.Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from devcluster import cluster, isolation  # noqa: E402
from tests.integration import ownership, slots  # noqa: E402
from tests.integration.factories import (  # noqa: E402
    ClaimFactory,
    OperatorFactory,
    Tenant,
    ValidSlotFactory,
    WorkerFactory,
)
from tests.integration.kubewait import NotYet, read_or_none, wait_for  # noqa: E402
from tests.integration.operator_process import OperatorProcess  # noqa: E402
from tools import image as image_tool  # noqa: E402

SLOT_UID = 10001  # the agent images' uid/gid (docs/design.md section 1)
SLOT_GID = 10001


def cluster_root() -> pathlib.Path:
    """`.cluster/` by default; `DEVCLUSTER_ROOT` gives a session its own cluster (parallel runs)."""
    override = os.environ.get("DEVCLUSTER_ROOT")
    return pathlib.Path(override).resolve() if override else cluster.DEFAULT_ROOT


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[cluster.Cluster]:
    """The running local cluster; stopped at session end only if this session started it."""
    root = cluster_root()
    was_running = cluster.status(root) is not None
    running = cluster.up(root)
    yield running
    if not was_running:
        cluster.down(root)


@pytest.fixture(scope="session")
def operator_archive() -> pathlib.Path:
    """The OCI archive `make image` wrote (make test builds it first); its image is `image_tool.IMAGE`."""
    if not image_tool.ARCHIVE.is_file():
        message = f"{image_tool.ARCHIVE} is missing: run `make image` (it needs buildah or a Docker engine)"
        if isolation.real_root():
            pytest.fail(message)  # root can always build it (CI): a missing image is a failure there
        pytest.skip(message)
    return image_tool.ARCHIVE


@pytest.fixture(scope="session")
def api_client(kube_cluster: cluster.Cluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def batch(api_client: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api_client)


def _namespace_name(test_name: str) -> str:
    """A DNS label that still names the test (and its parameters) for `kubectl get ns`."""
    stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_")).strip("-")
    if len(stem) > 50:
        stem = f"{stem[:30].strip('-')}-{stem[-19:].strip('-')}"
    return f"{stem or 'test'}-{uuid.uuid4().hex[:6]}"


def _fresh_namespace(api_client: client.ApiClient, name: str) -> str:
    core = client.CoreV1Api(api_client)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # The ServiceAccount admission plugin rejects pods until the controller creates "default".
    wait_for(
        lambda: read_or_none(core.read_namespaced_service_account, "default", name),
        timeout=30,
        message=f"ServiceAccount {name}/default",
    )
    return name


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, ready for pods (its default ServiceAccount exists); deleted without waiting."""
    name = _fresh_namespace(api_client, _namespace_name(request.node.name))
    yield name
    client.CoreV1Api(api_client).delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def other_namespace(request: pytest.FixtureRequest, api_client: client.ApiClient) -> Iterator[str]:
    """A second fresh namespace (another tenant), like `namespace`."""
    name = _fresh_namespace(api_client, "b-" + _namespace_name(request.node.name))
    yield name
    client.CoreV1Api(api_client).delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def claim(kube_cluster: cluster.Cluster, api_client: client.ApiClient, namespace: str) -> Iterator[ClaimFactory]:
    """Factory: `claim(name, *, access_modes=("ReadWriteOnce",), prepare=None)` -> the claim's directory, Bound.

    The directory is created first (owned by 10001:10001, mode 0750, like a slot PVC the
    agent initialised), so the simulator's provisioner finds it and leaves it alone.
    `prepare(directory)` runs before the PVC exists: use it when a pod already waits
    for the claim, which starts the moment the claim is Bound (before `claim()` returns).
    """
    with _claims(kube_cluster, api_client, namespace) as make:
        yield make


@pytest.fixture
def other_tenant(kube_cluster: cluster.Cluster, api_client: client.ApiClient, other_namespace: str) -> Iterator[Tenant]:
    """Another tenant: `other_namespace`, and a `claim` factory for it like this test's own."""
    with _claims(kube_cluster, api_client, other_namespace) as make:
        yield Tenant(other_namespace, make)


@contextlib.contextmanager
def _claims(kube_cluster: cluster.Cluster, api_client: client.ApiClient, namespace: str) -> Iterator[ClaimFactory]:
    """The `claim` factory of `namespace`; its directories are removed after."""
    core = client.CoreV1Api(api_client)
    made: list[pathlib.Path] = []

    def make(
        name: str,
        *,
        access_modes: Sequence[str] = ("ReadWriteOnce",),
        prepare: Callable[[pathlib.Path], object] | None = None,
    ) -> pathlib.Path:
        path = kube_cluster.volumes_dir / namespace / name
        path.mkdir(parents=True)
        made.append(path)
        os.chown(path, SLOT_UID, SLOT_GID)
        path.chmod(0o750)
        if prepare is not None:
            prepare(path)
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name},
                "spec": {"accessModes": list(access_modes), "resources": {"requests": {"storage": "1Mi"}}},
            },
        )

        def bound() -> bool | NotYet:
            pvc = core.read_namespaced_persistent_volume_claim(name, namespace)
            phase = pvc.status.phase if pvc.status else None
            return True if phase == "Bound" else NotYet(phase)

        wait_for(bound, timeout=30, message=f"PVC {namespace}/{name} Bound by the node simulator")
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def operator(
    request: pytest.FixtureRequest, kube_cluster: cluster.Cluster, api_client: client.ApiClient, namespace: str
) -> Iterator[OperatorFactory]:
    """Factory: `operator(*flags, namespaces=...)` starts the real operator watching this test's namespace (or
    those named); stopped after.

    The namespace enforces the Pod Security "restricted" profile, so every probe Job the
    operator creates in these tests proves its pods pass it (a violating pod is never created).
    Every probe runs the ownership audit from the operator's image, as with the chart.
    """
    client.CoreV1Api(api_client).patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    started: list[OperatorProcess] = []
    logs = kube_cluster.logs_dir / "operators"
    logs.mkdir(parents=True, exist_ok=True)

    def start(*flags: str, namespaces: Sequence[str] = ()) -> OperatorProcess:
        process = OperatorProcess(
            kubeconfig=kube_cluster.kubeconfig,
            namespaces=list(namespaces or [namespace]),
            log_path=logs / f"{namespace}-{len(started)}.log",
            args=["--retry-base=2s", "--retry-max=30s", f"--audit-image={slots.OPERATOR_IMAGE}", *flags],
        )
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
    failed = request.node.stash.get(_FAILED, False)
    if failed:
        for process in started:
            sys.stderr.write(f"\n--- operator log {process.log_path} ---\n{process.log()[-6000:]}\n")


@pytest.fixture
def valid_slot(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> ValidSlotFactory:
    """Factory: `valid_slot(*flags, **spec)` -> the operator, started with `flags`; then Slot `s` (with `spec`) is
    created on claim `home`, whose codex credentials the fake agent accepts."""

    def make(*flags: str, **spec: Any) -> OperatorProcess:
        slots.valid_home(claim)
        process = operator(*flags)
        slots.create_slot(api_client, namespace, "s", claim="home", **spec)
        return process

    return make


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call" and report.failed:  # type: ignore[attr-defined]
        item.stash[_FAILED] = True
    return report


@pytest.fixture
def worker_pod(api_client: client.ApiClient, namespace: str) -> WorkerFactory:
    """Factory: `worker_pod(name, claim=..., node=..., labels=...)` runs a pod holding the claim on that node, like a
    live agent (with `labels`, wearing whatever labels a tenant gives it)."""
    core = client.CoreV1Api(api_client)

    def start(name: str, *, claim: str, node: str, labels: dict[str, str] | None = None) -> object:
        core.create_namespaced_pod(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": labels or {}},
                "spec": {
                    "nodeName": node,
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": SLOT_UID,
                        "runAsGroup": SLOT_GID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "agent",
                            "image": "local/agent-shell:codex",
                            "env": [{"name": "AGENT_MODE", "value": "idle"}],
                            "volumeMounts": [{"name": "home", "mountPath": "/home/codex"}],
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                        }
                    ],
                    "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
        )

        def running() -> bool | NotYet:
            pod = core.read_namespaced_pod(name, namespace)
            return True if pod.status.phase == "Running" else NotYet(pod.status.phase)

        return wait_for(running, timeout=30, message=f"worker pod {name} Running on {node}")

    return start


@pytest.fixture
def uid_1000_slot(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> ownership.OldSlotFactory:
    """Factory: `uid_1000_slot(*flags, level="baseline")` -> (home, its manifest before, the Slot): a Slot `s` on a
    home the uid-1000 image wrote, diagnosed by the operator started with `flags` (ownership.uid_1000_slot)."""
    return functools.partial(ownership.uid_1000_slot, api_client, namespace, claim, operator)
