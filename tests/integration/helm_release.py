"""Render and install the slot-operator Helm chart against the test cluster.

`installed_chart()` installs a release (replicas=0 by default: an installed-but-idle
release is all the RBAC checks need; test_chart_operator_pod.py runs the Deployment
from the built image) and uninstalls it afterwards. Combine it with `sa_kubeconfig.write_sa_kubeconfig`
to run the operator process locally with exactly the chart's permissions.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.kubewait import NotYet, wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "slot-operator"


class CommandError(RuntimeError):
    pass


def run(
    args: list[str], *, input_text: str | None = None, env: dict[str, str] | None = None, timeout: float = 180
) -> str:
    proc = subprocess.run(args, input=input_text, capture_output=True, text=True, check=False, timeout=timeout,
                          env=env)  # fmt: skip
    if proc.returncode != 0:
        raise CommandError(f"{' '.join(args[:4])} ... exited {proc.returncode}:\n{proc.stderr}{proc.stdout[-2000:]}")
    return proc.stdout


@dataclass(frozen=True)
class Helm:
    binary: str
    kubeconfig: pathlib.Path
    home: pathlib.Path  # isolated HELM_*_HOME: tests never touch the user's helm config

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }

    def __call__(self, *args: str, values: dict[str, Any] | None = None) -> str:
        cmd = [self.binary, *args, "--kubeconfig", str(self.kubeconfig)]
        if values is None:
            return run(cmd, env=self._env())
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.home, delete=False) as handle:
            yaml.safe_dump(values, handle)
        try:
            return run([*cmd, "--values", handle.name], env=self._env())
        finally:
            pathlib.Path(handle.name).unlink(missing_ok=True)

    def template(self, release: str, namespace: str, values: dict[str, Any], *, kube_version: str) -> str:
        return self("template", release, str(CHART), "--namespace", namespace, "--kube-version", kube_version,
                    values=values)  # fmt: skip


def kubectl(kubeconfig: pathlib.Path, *args: str, input_text: str | None = None) -> str:
    return run(["kubectl", "--kubeconfig", str(kubeconfig), *args], input_text=input_text)


def server_version(kubeconfig: pathlib.Path) -> str:
    info = json.loads(kubectl(kubeconfig, "version", "-o", "json"))["serverVersion"]
    return str(info["gitVersion"]).lstrip("v").split("-")[0]


def ensure_chart_crds(kubeconfig: pathlib.Path) -> None:
    """The chart's crds/ (Slot and SlotImageCheck) exist and are Established, as `helm install` leaves them.

    Each CRD is only created when absent (the devcluster owns them).
    """
    existing = set(kubectl(kubeconfig, "get", "crd", "-o", "name").split())
    for crd in sorted((CHART / "crds").glob("*.yaml")):
        if f"customresourcedefinition.apiextensions.k8s.io/{crd.name.removesuffix('.yaml')}" not in existing:
            kubectl(kubeconfig, "create", "-f", str(crd))
        kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd))


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    service_account: str
    manifest: list[dict[str, Any]]

    @property
    def lease(self) -> str | None:
        """The leader-election Lease the Deployment names (--leader-elect-lease); None without leader election."""
        (deployment,) = [d for d in self.manifest if d["kind"] == "Deployment"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        names = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--leader-elect-lease=")]
        return names[0] if names else None

    @property
    def admission_policy(self) -> str | None:
        """The name of the release's ValidatingAdmissionPolicy (docs/security.md); None when not rendered."""
        names = [d["metadata"]["name"] for d in self.manifest if d["kind"] == "ValidatingAdmissionPolicy"]
        return names[0] if names else None


def policy_refusal(exc: ApiException | None, policy: str) -> bool:
    """A refusal by `policy` (403, its name in the message), not by RBAC or the API's own validation."""
    if exc is None or exc.status != 403:
        return False
    return f"ValidatingAdmissionPolicy '{policy}'" in str(json.loads(exc.body)["message"])


def wait_policy_in_force(jobs_api: client.BatchV1Api, namespace: str, policy: str) -> None:
    """Wait until `policy` judges the ServiceAccount `jobs_api` authenticates as, in `namespace`.

    Its binding reaches the API server's admission asynchronously, as a RoleBinding reaches the
    authorizer: a Job the operator would never make (not its labels) is tried, dry run, until
    the policy refuses it.
    """
    stranger = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"generateName": "policy-check-", "labels": {"app": "policy-check"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "none"}]}}},
    }  # fmt: skip

    def refused() -> bool | NotYet:
        try:
            jobs_api.create_namespaced_job(namespace, stranger, dry_run="All")
        except ApiException as exc:
            return policy_refusal(exc, policy) or NotYet(exc)
        return NotYet("admitted")

    wait_for(refused, timeout=60, message=f"ValidatingAdmissionPolicy {policy} to judge the operator's token")


@contextlib.contextmanager
def installed_chart(
    helm: Helm, release: str, namespace: str, values: dict[str, Any] | None = None
) -> Iterator[Release]:
    """`helm install` (replicas=0 unless values say otherwise), yield, `helm uninstall`."""
    merged = {"replicas": 0, **(values or {})}
    helm("install", release, str(CHART), "--namespace", namespace, "--timeout", "120s", values=merged)
    try:
        manifest = [d for d in yaml.safe_load_all(helm("get", "manifest", release, "--namespace", namespace)) if d]
        (sa,) = [d for d in manifest if d["kind"] == "ServiceAccount"]
        yield Release(release, namespace, sa["metadata"]["name"], manifest)
    finally:
        helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
