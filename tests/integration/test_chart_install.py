"""The Helm chart against the real API server: server-side validation of the rendered
manifests, a real install, and RBAC as the API server's authorizer sees it.

No operator pod runs here (installs use replicas=0; test_chart_operator_pod.py runs the
Deployment from the built image). What is tested here is what the chart gives the
operator's ServiceAccount; the last test runs the operator as a local process with
exactly those permissions (a kubeconfig holding a token of the chart's ServiceAccount)
and checks it reaches every phase without a 403.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from devcluster import build
from tests.integration.helm_release import (
    CommandError,
    Helm,
    Release,
    ensure_chart_crds,
    installed_chart,
    kubectl,
    server_version,
    wait_policy_in_force,
)
from tests.integration.kubewait import wait_for
from tests.integration.operator_process import OperatorProcess
from tests.integration.sa_kubeconfig import write_sa_kubeconfig
from tests.integration.slots import VALID_CODEX, condition, create_slot, slot_events, wait_slot, write_file

pytestmark = pytest.mark.integration


def _ns_name(namespace: Any) -> str:
    return namespace if isinstance(namespace, str) else str(namespace.name)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def kubeconfig(kube_cluster: Any) -> pathlib.Path:
    path = pathlib.Path(kube_cluster.kubeconfig)
    ensure_chart_crds(path)
    return path


@pytest.fixture
def helm(kubeconfig: pathlib.Path, tmp_path: pathlib.Path) -> Helm:
    home = tmp_path / "helm-home"
    home.mkdir()
    return Helm(binary=str(build.tool("helm")), kubeconfig=kubeconfig, home=home)


@pytest.fixture
def watched(kubeconfig: pathlib.Path) -> Iterator[list[str]]:
    """Two extra namespaces for namespaced mode (the release lives in `namespace`)."""
    names = [_unique("slots-a"), _unique("slots-b")]
    for name in names:
        kubectl(kubeconfig, "create", "namespace", name)
    try:
        yield names
    finally:
        for name in names:
            kubectl(kubeconfig, "delete", "namespace", name, "--wait=false", "--ignore-not-found")


def can_i(
    kubeconfig: pathlib.Path,
    release: Release,
    verb: str,
    resource: str,
    namespace: str | None,
    *,
    subresource: str | None = None,
) -> bool:
    """`kubectl auth can-i` as the release's ServiceAccount (None: across all namespaces)."""
    cmd = ["kubectl", "--kubeconfig", str(kubeconfig), "auth", "can-i", verb, resource,
           f"--as=system:serviceaccount:{release.namespace}:{release.service_account}"]  # fmt: skip
    cmd += ["--all-namespaces"] if namespace is None else ["--namespace", namespace]
    if subresource:
        cmd.append(f"--subresource={subresource}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    answer = proc.stdout.strip()
    if answer not in ("yes", "no") or proc.returncode not in (0, 1):
        raise CommandError(f"{' '.join(cmd)}: {proc.stderr}")
    return answer == "yes"


def lease_holder(kubeconfig: pathlib.Path, namespace: str, lease: str) -> str:
    """The Lease's holderIdentity ("" when the Lease does not exist or nobody holds it)."""
    try:
        return kubectl(kubeconfig, "get", LEASES, lease, "--namespace", namespace,
                       "-o", "jsonpath={.spec.holderIdentity}").strip()  # fmt: skip
    except CommandError as exc:
        if "NotFound" in str(exc):
            return ""
        raise


def eventually(check: Callable[[], bool], *, timeout: float = 30, what: str) -> None:
    """Poll a condition: new (Cluster)RoleBindings reach the authorizer's informer cache asynchronously."""
    wait_for(check, timeout=timeout, message=what)


def assert_never_secrets_or_claim_writes(kubeconfig: pathlib.Path, release: Release, namespaces: list[str]) -> None:
    for ns in [*namespaces, None]:
        for verb in ("get", "list", "watch"):
            assert not can_i(kubeconfig, release, verb, "secrets", ns), (verb, "secrets", ns)
        for verb in ("create", "update", "patch", "delete", "deletecollection"):
            assert not can_i(kubeconfig, release, verb, "persistentvolumeclaims", ns), (verb, "pvc", ns)
        for verb in ("create", "delete", "update"):
            assert not can_i(kubeconfig, release, verb, "slots.woved.dev", ns), (verb, "slots", ns)
        for verb in ("create", "update", "patch"):  # a check's spec is its author's
            assert not can_i(kubeconfig, release, verb, "slotimagechecks.woved.dev", ns), (verb, "checks", ns)
        assert not can_i(kubeconfig, release, "create", "pods", ns)
        assert not can_i(kubeconfig, release, "get", "configmaps", ns)


LEASES = "leases.coordination.k8s.io"


def assert_lease_access(kubeconfig: pathlib.Path, release: Release, elsewhere: list[str]) -> None:
    """Leader election: the chart's Lease in the release namespace, and no other Lease access anywhere."""
    lease = release.lease
    assert lease is not None, "the Deployment passes no --leader-elect-lease"
    eventually(lambda: can_i(kubeconfig, release, "create", LEASES, release.namespace),
               what="the leader-election RoleBinding to reach the authorizer")  # fmt: skip
    # In the release namespace: create (RBAC cannot limit create to a name), get and update the chart's Lease.
    assert can_i(kubeconfig, release, "create", LEASES, release.namespace)
    for verb in ("get", "update"):
        assert can_i(kubeconfig, release, verb, f"{LEASES}/{lease}", release.namespace), verb
        assert not can_i(kubeconfig, release, verb, f"{LEASES}/kube-scheduler", release.namespace), verb
    for verb in ("list", "watch", "patch", "delete", "deletecollection"):
        assert not can_i(kubeconfig, release, verb, LEASES, release.namespace), verb
    # Nowhere else: not in other (watched or unwatched) namespaces, not across namespaces.
    for ns in [*elsewhere, "kube-system", "kube-node-lease", None]:
        assert not can_i(kubeconfig, release, "create", LEASES, ns), ns
        for verb in ("get", "update"):
            assert not can_i(kubeconfig, release, verb, f"{LEASES}/{lease}", ns), (verb, ns)


def assert_no_lease_access(kubeconfig: pathlib.Path, release: Release, namespaces: list[str]) -> None:
    assert release.lease is None
    for ns in [*namespaces, None]:
        for verb in ("get", "create", "update", "list"):
            assert not can_i(kubeconfig, release, verb, LEASES, ns), (verb, ns)


# --- server-side validation of the rendered chart ---------------------------------------------

RENDER_SCENARIOS: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "default": lambda _: {},
    "namespaced": lambda ns: {"watchNamespaces": ns},
    "2-replicas": lambda _: {"replicas": 2},
    "namespaced-2-replicas": lambda ns: {"replicas": 2, "watchNamespaces": ns},
    "no-leader-election": lambda _: {"leaderElection": {"enabled": False}},
    "servicemonitor-custom": lambda _: {
        "serviceMonitor": {"enabled": True}, "metrics": {"port": 9090}, "operator": {"logFormat": "text"},
        "leaderElection": {"leaseName": "slots.example"},
    },
}  # fmt: skip


@pytest.mark.parametrize("scenario", RENDER_SCENARIOS)
def test_rendered_chart_passes_server_side_dry_run(
    scenario: str, helm: Helm, kubeconfig: pathlib.Path, namespace: Any, watched: list[str]
) -> None:
    ns = _ns_name(namespace)
    rendered = helm.template("dry", ns, RENDER_SCENARIOS[scenario](watched), kube_version=server_version(kubeconfig))
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    crds = kubectl(kubeconfig, "get", "crd", "-o", "name")
    if "servicemonitors.monitoring.coreos.com" not in crds:
        # prometheus-operator is not part of the test cluster; the unit tests check its shape.
        docs = [d for d in docs if d["kind"] != "ServiceMonitor"]
    out = kubectl(kubeconfig, "apply", "--dry-run=server", "-o", "name", "-f", "-",
                  input_text=yaml.safe_dump_all(docs))  # fmt: skip
    assert len(out.split()) == len(docs), out
    assert "deployment.apps/dry-slot-operator" in out


# --- a real install, then RBAC as the authorizer sees it --------------------------------------


def test_cluster_wide_install(helm: Helm, kubeconfig: pathlib.Path, namespace: Any, watched: list[str]) -> None:
    ns = _ns_name(namespace)
    with installed_chart(helm, _unique("cw"), ns) as release:
        eventually(lambda: can_i(kubeconfig, release, "create", "jobs.batch", watched[0]),
                   what="the ClusterRoleBinding to reach the authorizer")  # fmt: skip
        for where in [ns, *watched, None]:
            assert can_i(kubeconfig, release, "create", "jobs.batch", where)
            assert can_i(kubeconfig, release, "delete", "jobs.batch", where)
            assert can_i(kubeconfig, release, "watch", "slots.woved.dev", where)
            assert can_i(kubeconfig, release, "patch", "slots.woved.dev", where, subresource="status")
            for verb in ("watch", "delete"):  # a SlotImageCheck is deleted ttlAfterFinished after it finished
                assert can_i(kubeconfig, release, verb, "slotimagechecks.woved.dev", where), verb
            assert can_i(kubeconfig, release, "patch", "slotimagechecks.woved.dev", where, subresource="status")
            assert can_i(kubeconfig, release, "list", "persistentvolumeclaims", where)
            assert can_i(kubeconfig, release, "create", "events", where)
        # Nothing cluster-scoped beyond the namespaced rules: no CRDs, no Namespaces.
        assert not can_i(kubeconfig, release, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)
        assert not can_i(kubeconfig, release, "list", "namespaces", None)
        assert_never_secrets_or_claim_writes(kubeconfig, release, [ns, *watched])
        # Leader election is on by default; its Lease is in the release namespace only.
        assert release.lease == f"{release.name}-slot-operator"
        assert_lease_access(kubeconfig, release, elsewhere=watched)
        assert not [d for d in release.manifest if d["apiVersion"].startswith("kopf.dev/")]

        (deployment,) = [d for d in release.manifest if d["kind"] == "Deployment"]
        assert deployment["spec"]["replicas"] == 0


def test_namespaced_install(helm: Helm, kubeconfig: pathlib.Path, namespace: Any, watched: list[str]) -> None:
    ns = _ns_name(namespace)
    values = {"watchNamespaces": watched, "leaderElection": {"enabled": True, "leaseName": "slots-leader"}}
    with installed_chart(helm, _unique("nsd"), ns, values) as release:
        for where in watched:
            eventually(lambda where=where: can_i(kubeconfig, release, "create", "jobs.batch", where),
                       what=f"the RoleBinding in {where} to reach the authorizer")  # fmt: skip
        for where in watched:
            assert can_i(kubeconfig, release, "create", "jobs.batch", where)
            assert can_i(kubeconfig, release, "list", "slots.woved.dev", where)
            assert can_i(kubeconfig, release, "patch", "slots.woved.dev", where, subresource="status")
        # Not in the release namespace (not watched), not elsewhere, not across namespaces.
        for where in (ns, "default", None):
            assert not can_i(kubeconfig, release, "list", "slots.woved.dev", where), where
            assert not can_i(kubeconfig, release, "create", "jobs.batch", where), where
            assert not can_i(kubeconfig, release, "list", "pods", where), where
        # Nothing cluster-wide at all in namespaced mode (the operator's own watches are per namespace).
        assert not can_i(kubeconfig, release, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
        assert not can_i(kubeconfig, release, "watch", "namespaces", None)
        assert_never_secrets_or_claim_writes(kubeconfig, release, [ns, *watched])
        # The Lease is in the release namespace, which is not watched; none in the watched namespaces.
        assert release.lease == "slots-leader"
        assert_lease_access(kubeconfig, release, elsewhere=watched)


def test_service_account_kubeconfig_has_only_the_chart_permissions(
    helm: Helm, kubeconfig: pathlib.Path, namespace: Any, watched: list[str], tmp_path: pathlib.Path
) -> None:
    ns = _ns_name(namespace)
    with installed_chart(helm, _unique("sa"), ns, {"watchNamespaces": watched[:1]}) as release:
        sa_config = write_sa_kubeconfig(kubeconfig, ns, release.service_account, tmp_path / "sa.kubeconfig")
        assert sa_config.stat().st_mode & 0o077 == 0
        whoami = json.loads(kubectl(sa_config, "auth", "whoami", "-o", "json"))
        assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:{release.service_account}"

        def lists_slots() -> bool:
            try:
                kubectl(sa_config, "get", "slots", "--namespace", watched[0])
            except CommandError:
                return False
            return True

        eventually(lists_slots, what="the SA kubeconfig to list slots in the watched namespace")
        for forbidden in (["get", "secrets", "--namespace", watched[0]],
                          ["get", "slots", "--namespace", watched[1]],
                          ["get", "slots", "--all-namespaces"],
                          ["get", "leases", "--namespace", ns],  # list: the Lease is read by name only
                          ["get", "leases", "--namespace", watched[0]]):  # fmt: skip
            with pytest.raises(CommandError, match=r"(?i)forbidden"):
                kubectl(sa_config, *forbidden)


# Slot → (claim, image, extra spec, expected phase, expected ProbeSucceeded): every phase and a probe failure.
SCENARIO: dict[str, tuple[str, str, dict[str, Any], str, str]] = {
    "ready": ("good", "local/agent-shell:codex", {}, "Ready", "True"),
    "needs-init": ("empty", "local/agent-shell:codex", {}, "NeedsInit", "True"),
    "needs-reauth": ("corrupt", "local/agent-shell:codex", {}, "NeedsReauth", "True"),
    "cli-broken": ("good", "local/agent-shell:broken-cli", {}, "ImageBroken", "True"),
    "unpullable": ("good", "local/agent-shell:no-such-tag", {}, "ImageBroken", "True"),
    "crash": (
        "good",
        "local/agent-shell:codex",
        {"env": [{"name": "SMOKE_TEST_CRASH", "value": "1"}]},
        "Pending",
        "False",
    ),
}


@pytest.mark.parametrize("mode", ["namespaced", "cluster-wide"])
def test_every_phase_with_only_the_chart_permissions(
    mode: str,
    helm: Helm,
    kubeconfig: pathlib.Path,
    namespace: str,
    claim: Callable[..., pathlib.Path],
    api_client: Any,
    tmp_path: pathlib.Path,
) -> None:
    """The operator, holding only a token of the chart's ServiceAccount, gives every phase, with Events.

    Namespaced mode runs with leader election, as the chart's Deployment would (the Lease in
    the release namespace, named by the chart); cluster-wide mode runs without it, on a
    release that grants nothing on Leases.
    """
    release_name = _unique("e2e")
    values: dict[str, Any] = {"watchNamespaces": [namespace]} if mode == "namespaced" else {}
    values["leaderElection"] = {"enabled": mode == "namespaced"}
    with installed_chart(helm, release_name, namespace, values) as release:
        sa_config = write_sa_kubeconfig(kubeconfig, namespace, release.service_account, tmp_path / "sa.kubeconfig")
        eventually(lambda: can_i(kubeconfig, release, "create", "jobs.batch", namespace),
                   what="the chart's RBAC to reach the authorizer")  # fmt: skip
        write_file(claim("good"), ".codex/auth.json", VALID_CODEX)
        claim("empty")
        write_file(claim("corrupt"), ".codex/auth.json", "{")
        args = ["--retry-base=1m"]
        if mode == "namespaced":
            assert release.lease == f"{release_name}-slot-operator"
            assert_lease_access(kubeconfig, release, elsewhere=["default"])
            args += ["--leader-elect", f"--leader-elect-namespace={namespace}", f"--leader-elect-lease={release.lease}"]
        else:
            assert_no_lease_access(kubeconfig, release, [namespace])
        # The operator makes its Jobs under the chart's admission policy (docs/security.md), as installed.
        assert release.admission_policy is not None
        sa_api = config.new_client_from_config(config_file=str(sa_config))
        try:
            wait_policy_in_force(client.BatchV1Api(sa_api), namespace, release.admission_policy)
        finally:
            sa_api.close()
        operator = OperatorProcess(kubeconfig=sa_config, namespaces=[namespace] if mode == "namespaced" else [],
                                   log_path=tmp_path / "operator.log", args=args)  # fmt: skip
        operator.start()
        try:
            if mode == "namespaced":
                # /healthz answers before the Lease is taken (a standby is alive too); wait for the Lease.
                wait_for(lambda: lease_holder(kubeconfig, namespace, str(release.lease)), timeout=60,
                         message=f"the operator to take Lease {namespace}/{release.lease}")  # fmt: skip
            for name, (claim_name, image, extra, _, _) in SCENARIO.items():
                create_slot(api_client, namespace, name, claim=claim_name, image=image, **extra)
            for name, (_, _, _, phase, probed) in SCENARIO.items():
                wait_slot(api_client, namespace, name,
                          lambda s, phase=phase, probed=probed: (s.get("status") or {}).get("phase") == phase
                          and condition(s, "ProbeSucceeded").get("status") == probed,
                          message=f"{name}: {phase}, ProbeSucceeded={probed}")  # fmt: skip
            wait_for(lambda: {e.reason for e in slot_events(api_client, namespace, "needs-init")} >= {"NeedsInit"},
                     timeout=30, message="the NeedsInit Event (events RBAC)")  # fmt: skip
        finally:
            operator.stop()
        log = operator.log()
        # RBAC denials read 'User "system:serviceaccount:..." cannot <verb> resource ...'.
        assert "system:serviceaccount" not in log, log[-4000:]
        assert "cannot list resource" not in log, log[-4000:]
