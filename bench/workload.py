"""What a bench run works on: claims holding valid credentials, Slots, and audited identities."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from slot_operator.kube.api import ApiClient, ApiError

from devcluster import cluster

VALID_CODEX = json.dumps({"tokens": {"access_token": "bench", "refresh_token": "bench"}})
AGENT_UID = AGENT_GID = 10001
IMAGE = "local/agent-shell:codex"
OPERATOR_IDENTITY = "slot-operator"
BASELINE_IDENTITY = "raw-client"


def kubectl(kubeconfig: pathlib.Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout


def username(identity: str) -> str:
    return f"system:serviceaccount:{cluster.AUDITED_NAMESPACE}:{identity}"


def identity_kubeconfig(running: cluster.Cluster, identity: str, dest: pathlib.Path) -> pathlib.Path:
    """A kubeconfig acting as a cluster-admin ServiceAccount in the audited namespace (its calls are logged)."""
    admin = running.kubeconfig
    ns = cluster.AUDITED_NAMESPACE
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": identity, "namespace": ns}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{ns}-{identity}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": identity, "namespace": ns}],
        },
    ]
    kubectl(admin, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    token = kubectl(admin, "create", "token", identity, "-n", ns, "--duration=6h").strip()
    config = json.loads(admin.read_text())
    config["users"] = [{"name": identity, "user": {"token": token}}]
    config["contexts"] = [{"name": identity, "context": {"cluster": config["clusters"][0]["name"], "user": identity}}]
    config["current-context"] = identity
    dest.write_text(json.dumps(config))
    dest.chmod(0o600)
    return dest


def write_home(home: pathlib.Path) -> None:
    """A slot volume an agent initialised: ~/.codex/auth.json that parses, owned by the agent's uid.

    Runs as root or as root of the user namespace `make bench` enters (devcluster/isolation.py).
    """
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "auth.json").write_text(VALID_CODEX)
    for path in (home, home / ".codex", home / ".codex" / "auth.json"):
        os.chown(path, AGENT_UID, AGENT_GID)


def claim(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def slot(namespace: str, name: str, *, suspend: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"agent": "codex", "claimName": f"{name}-home", "image": IMAGE}
    if suspend:
        spec["suspend"] = True
    return {
        "apiVersion": "woved.dev/v1alpha1",
        "kind": "Slot",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def image_check(namespace: str, name: str) -> dict[str, Any]:
    """A SlotImageCheck of the Slots' own image over every Slot of the namespace (each would stay Ready)."""
    return {
        "apiVersion": "woved.dev/v1alpha1",
        "kind": "SlotImageCheck",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"image": IMAGE},
    }


def path(obj: dict[str, Any]) -> str:
    namespace = obj["metadata"]["namespace"]
    if obj["kind"] in ("Slot", "SlotImageCheck"):
        return f"/apis/woved.dev/v1alpha1/namespaces/{namespace}/{obj['kind'].lower()}s"
    return f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"


async def create_all(
    api: ApiClient,
    objects: Iterable[dict[str, Any]],
    *,
    concurrency: int = 24,
    created: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None,
) -> None:
    """Create every object, `concurrency` at a time; `created(answer)` is called as each is acknowledged."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for obj in objects:
        queue.put_nowait(obj)

    async def worker() -> None:
        while not queue.empty():
            obj = queue.get_nowait()
            try:
                answer = await api.request("create", path(obj), resource=obj["kind"].lower(), body=obj, within=120)
            except ApiError as exc:
                raise RuntimeError(f"creating {obj['kind']} {obj['metadata']['name']}: {exc}") from None
            if created is not None:
                result = created(answer)
                if result is not None:
                    await result

    await asyncio.gather(*(worker() for _ in range(concurrency)))
