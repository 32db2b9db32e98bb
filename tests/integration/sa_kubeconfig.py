"""A kubeconfig that authenticates as a ServiceAccount, for running the operator
with exactly the chart's permissions against the test cluster.

    token = mint_token(admin_kubeconfig, namespace, "so-slot-operator")
    path = write_sa_kubeconfig(admin_kubeconfig, namespace, "so-slot-operator", tmp_path / "sa.kubeconfig")
    OperatorProcess(kubeconfig=path, ...)

The token comes from the TokenRequest API (`kubectl create token`): short-lived,
bound to the ServiceAccount, never stored in a Secret. Server URL and CA are taken
from the admin kubeconfig (the devcluster's `.cluster/kubeconfig`), so the new
kubeconfig points at the same API server.
"""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
from typing import Any

import yaml


class KubeconfigError(RuntimeError):
    pass


def mint_token(admin_kubeconfig: pathlib.Path, namespace: str, service_account: str, *, duration: str = "2h") -> str:
    """A bound token for `namespace/service_account` via the TokenRequest API."""
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(admin_kubeconfig), "create", "token", service_account,
         "--namespace", namespace, f"--duration={duration}"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0 or not proc.stdout.strip():
        raise KubeconfigError(f"kubectl create token {namespace}/{service_account}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _current_cluster(admin_kubeconfig: pathlib.Path) -> dict[str, Any]:
    config = yaml.safe_load(admin_kubeconfig.read_text())  # JSON is YAML too
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters", [])}
    try:
        cluster = dict(clusters[contexts[config["current-context"]]["cluster"]])
    except KeyError as exc:
        raise KubeconfigError(f"{admin_kubeconfig}: no usable current-context ({exc})") from None
    if "certificate-authority" in cluster:  # inline a CA given by path, so the new file stands alone
        ca_path = pathlib.Path(cluster.pop("certificate-authority"))
        if not ca_path.is_absolute():
            ca_path = admin_kubeconfig.parent / ca_path
        cluster["certificate-authority-data"] = base64.b64encode(ca_path.read_bytes()).decode()
    return cluster


def write_sa_kubeconfig(
    admin_kubeconfig: pathlib.Path, namespace: str, service_account: str, dest: pathlib.Path, *, duration: str = "2h"
) -> pathlib.Path:
    """Write a kubeconfig at `dest` that acts as system:serviceaccount:<namespace>:<service_account>."""
    cluster = _current_cluster(admin_kubeconfig)
    user = f"system:serviceaccount:{namespace}:{service_account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": mint_token(admin_kubeconfig, namespace, service_account,
                                                               duration=duration)}}],
        "contexts": [{"name": user, "context": {"cluster": "devcluster", "user": user, "namespace": namespace}}],
        "current-context": user,
    }  # fmt: skip
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.touch(mode=0o600, exist_ok=True)
    dest.chmod(0o600)
    dest.write_text(json.dumps(config, indent=2))
    return dest
