"""The chart's ValidatingAdmissionPolicy on the real API server: a stolen operator token makes no other Job.

`helm install` puts the policy and its binding in place (cluster-wide mode, where the chart
insists on it); then every request is made with a kubeconfig holding a token of the chart's
ServiceAccount, exactly what someone who stole it would hold. Jobs of the operator's own shape,
built by the operator's own code (`build_probe_job`, `build_migration_job`), are admitted; each
variation that would turn the token into more power is refused by the API server, with a message
naming what was refused. docs/security.md, "A stolen operator token", points here.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import pathlib
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from slot_operator.logic import jobs, names
from slot_operator.logic.spec import SlotSpec, parse_spec

from devcluster import build
from tests.integration.helm_release import (
    Helm,
    Release,
    ensure_chart_crds,
    installed_chart,
    policy_refusal,
    wait_policy_in_force,
)
from tests.integration.kubewait import NotYet, read_or_none, wait_for
from tests.integration.sa_kubeconfig import write_sa_kubeconfig
from tests.integration.slots import CODEX_IMAGE, create_slot

pytestmark = pytest.mark.integration

TTL = datetime.timedelta(minutes=5)
CHECK_IMAGE = "ghcr.io/example/agent-shell:sha-4d5e6f-codex"  # a SlotImageCheck's candidate


@dataclass(frozen=True)
class Tenant:
    namespace: str
    slot_name: str
    slot_uid: str
    check_name: str  # a SlotImageCheck of the namespace: the owner of its probe Jobs
    check_uid: str


@dataclass(frozen=True)
class Installed:
    release: Release
    tenant: Tenant
    policy: str
    audit_image: str
    stolen: client.BatchV1Api  # as the chart's ServiceAccount
    admin: client.BatchV1Api

    @property
    def namespace(self) -> str:
        return self.tenant.namespace


def _spec(**fields: Any) -> SlotSpec:
    spec = {"agent": "codex", "claimName": "home", "image": CODEX_IMAGE, **fields}
    return parse_spec(spec, default_interval=datetime.timedelta(hours=6), default_timeout=datetime.timedelta(minutes=2))


def _audit_image(release: Release) -> str:
    (deployment,) = [d for d in release.manifest if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (image,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--audit-image=")]
    return image


def _denial(call: Callable[[], object]) -> ApiException | None:
    try:
        call()
    except ApiException as exc:
        return exc
    return None


def _message(exc: ApiException) -> str:
    return str(json.loads(exc.body)["message"])


def probe_job(installed: Installed, *, audit: bool = False, node: str | None = None, **spec: Any) -> dict[str, Any]:
    tenant = installed.tenant
    return jobs.build_probe_job(
        name=jobs.job_name(tenant.slot_name, tenant.slot_uid, uuid.uuid4().hex),
        namespace=tenant.namespace,
        slot_name=tenant.slot_name,
        slot_uid=tenant.slot_uid,
        generation=1,
        trigger="created",
        spec=_spec(**spec),
        node=node,
        ttl=TTL,
        audit_image=installed.audit_image if audit else None,
    )


def check_probe_job(installed: Installed, *, node: str | None = None, **spec: Any) -> dict[str, Any]:
    """A SlotImageCheck's probe of one Slot, as the operator builds it (docs/design.md §2.5): the Slot's probe Job
    with the candidate's image (and uid:gid), labelled `image-check` and owned by the check instead of the Slot."""
    tenant = installed.tenant
    return jobs.build_check_job(
        name=jobs.job_name(tenant.slot_name, tenant.check_uid, uuid.uuid4().hex, kind="check"),
        namespace=tenant.namespace,
        check=jobs.Owner(kind=names.CHECK_KIND, name=tenant.check_name, uid=tenant.check_uid),
        slot_name=tenant.slot_name,
        slot_uid=tenant.slot_uid,
        attempt=1,
        spec=_spec(image=CHECK_IMAGE, **spec),
        node=node,
        ttl=TTL,
        audit_image=installed.audit_image,
    )


def migration_job(installed: Installed, *, dry_run: bool = False) -> dict[str, Any]:
    tenant, token = installed.tenant, uuid.uuid4().hex
    return jobs.build_migration_job(
        name=jobs.job_name(tenant.slot_name, tenant.slot_uid, token, kind="migrate"),
        namespace=tenant.namespace,
        slot_name=tenant.slot_name,
        slot_uid=tenant.slot_uid,
        request=token,
        spec=_spec(),
        image=installed.audit_image,
        old=(1000, 1000),
        dry_run=dry_run,
        ttl=TTL,
    )


def create(installed: Installed, job: dict[str, Any], *, dry_run: bool) -> object:
    return installed.stolen.create_namespaced_job(installed.namespace, job, dry_run="All" if dry_run else None)


@contextlib.contextmanager
def installed_policy(
    kube_cluster: Any,
    api_client: client.ApiClient,
    tmp: pathlib.Path,
    namespace: str,
    tenant: Tenant,
    values: dict[str, Any],
) -> Iterator[Installed]:
    """`helm install` a cluster-wide release in `namespace`; yield once its policy judges the stolen token."""
    kubeconfig = pathlib.Path(kube_cluster.kubeconfig)
    ensure_chart_crds(kubeconfig)
    (tmp / "helm-home").mkdir()
    helm = Helm(binary=str(build.tool("helm")), kubeconfig=kubeconfig, home=tmp / "helm-home")
    with installed_chart(helm, f"vap-{uuid.uuid4().hex[:6]}", namespace, values) as release:
        assert release.admission_policy is not None, "the chart rendered no ValidatingAdmissionPolicy"
        sa_config = write_sa_kubeconfig(kubeconfig, namespace, release.service_account, tmp / "sa.kubeconfig")
        stolen_api = config.new_client_from_config(config_file=str(sa_config))
        try:
            installed = Installed(release=release, tenant=tenant, policy=release.admission_policy,
                                  audit_image=_audit_image(release), stolen=client.BatchV1Api(stolen_api),
                                  admin=client.BatchV1Api(api_client))  # fmt: skip
            wait_policy_in_force(installed.stolen, tenant.namespace, installed.policy)
            yield installed
        finally:
            stolen_api.close()


@pytest.fixture(scope="module")
def tenant(api_client: client.ApiClient) -> Iterator[Tenant]:
    """A tenant's namespace holding a Slot (the owner of the Jobs below); no operator runs for it."""
    core = client.CoreV1Api(api_client)
    name = f"vap-tenant-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        slot = create_slot(api_client, name, "codex-1", claim="home")
        check = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            names.GROUP, names.VERSION, name, "slotimagechecks",
            {"apiVersion": names.API_VERSION, "kind": "SlotImageCheck",
             "metadata": {"name": "check-1"}, "spec": {"image": CHECK_IMAGE}},
        )  # fmt: skip
        yield Tenant(namespace=name, slot_name=slot["metadata"]["name"], slot_uid=slot["metadata"]["uid"],
                     check_name=check["metadata"]["name"], check_uid=check["metadata"]["uid"])  # fmt: skip
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def installed(
    kube_cluster: Any, api_client: client.ApiClient, tmp_path_factory: pytest.TempPathFactory, tenant: Tenant
) -> Iterator[Installed]:
    """A cluster-wide release with the ownership migration on, in its own namespace, and its stolen token."""
    core = client.CoreV1Api(api_client)
    system = f"vap-system-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": system}})
    try:
        with installed_policy(kube_cluster, api_client, tmp_path_factory.mktemp("vap"), system, tenant,
                              {"ownershipMigration": {"enabled": True}}) as release:  # fmt: skip
            yield release
    finally:
        core.delete_namespace(system, propagation_policy="Background")


# --- what the operator makes is admitted -----------------------------------------------------------


VARIABLE = re.compile(r"\bvariables\.([A-Za-z_][A-Za-z0-9_]*)\b")


def inlined(spec: dict[str, Any]) -> dict[str, Any]:
    """The policy's validations with every `variables.x` replaced by x's expression, recursively.

    The API server's type checker takes variables as `dyn` and so checks nothing behind them; inlined,
    every field path and call is checked against the Job schema.
    """
    expanded: dict[str, str] = {}
    for variable in spec["variables"]:
        expanded[variable["name"]] = VARIABLE.sub(lambda m: f"({expanded[m.group(1)]})", variable["expression"])
    validations = [
        {key: VARIABLE.sub(lambda m: f"({expanded[m.group(1)]})", value) if key.endswith("xpression") else value
         for key, value in validation.items()}
        for validation in spec["validations"]
    ]  # fmt: skip
    return {**{k: v for k, v in spec.items() if k != "variables"}, "validations": validations}


def type_check(policies: client.AdmissionregistrationV1Api, name: str, spec: dict[str, Any]) -> list[Any]:
    """Create an unbound copy of a policy (it judges nothing), return the API server's type warnings on it."""
    policies.create_validating_admission_policy({"metadata": {"name": name}, "spec": spec})
    try:

        def checked() -> Any:
            policy = policies.read_validating_admission_policy(name)
            status = policy.status
            done = status is not None and status.observed_generation == policy.metadata.generation
            return status if done and status.type_checking is not None else NotYet(status)

        status = wait_for(checked, timeout=30, message=f"the type check of {name}")
        return list(status.type_checking.expression_warnings or [])
    finally:
        policies.delete_validating_admission_policy(name)


def test_the_policy_type_checks_on_the_api_server(installed: Installed, api_client: client.ApiClient) -> None:
    """The API server's type checker finds nothing in any expression, once variables are inlined."""
    policies = client.AdmissionregistrationV1Api(api_client)
    (policy,) = [d for d in installed.release.manifest if d["kind"] == "ValidatingAdmissionPolicy"]
    spec = inlined(policy["spec"])
    assert not any("variables." in v["expression"] + v["messageExpression"] for v in spec["validations"])
    # The control: one misspelt field in the same policy is found, so the checker does see the Job schema.
    broken = copy.deepcopy(spec)
    broken["validations"][-1]["expression"] = broken["validations"][-1]["expression"].replace(
        "hostPort", "hostPorts", 1
    )
    warnings = type_check(policies, f"{installed.policy}-broken", broken)
    assert any("undefined field 'hostPorts'" in w.warning for w in warnings), warnings
    assert type_check(policies, f"{installed.policy}-inlined", spec) == []
    assert policy["spec"]["failurePolicy"] == "Fail"
    (binding,) = [d for d in installed.release.manifest if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"] == {"policyName": installed.policy, "validationActions": ["Deny"]}


def test_the_operators_jobs_are_admitted_and_deleted(installed: Installed) -> None:
    """Every Job shape the operator makes is created and deleted with the stolen token: the bound costs it nothing."""
    shapes = {
        "probe": probe_job(installed),
        "probe with the audit": probe_job(installed, audit=True),
        "probe with every spec field, placed on a node": probe_job(
            installed, audit=True, node="node-a", runAsUser=1000, runAsGroup=1000,
            env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "agent", "key": "token"}}}],
            imagePullSecrets=[{"name": "registry"}], nodeSelector={"kubernetes.io/os": "linux"},
            tolerations=[{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
        ),
        "ownership migration": migration_job(installed),
        "ownership migration dry run": migration_job(installed, dry_run=True),
        "image check probe": check_probe_job(installed),
        "image check probe as the candidate's uid, placed on a node": check_probe_job(
            installed, node="node-a", runAsUser=10001, runAsGroup=10001, timeout="5m",
        ),
    }  # fmt: skip
    for what, job in shapes.items():
        exc = _denial(lambda job=job: create(installed, job, dry_run=False))
        assert exc is None, f"{what}: {exc}"
    for job in shapes.values():
        installed.stolen.delete_namespaced_job(job["metadata"]["name"], installed.namespace,
                                               propagation_policy="Background")  # fmt: skip
    for what, job in shapes.items():
        wait_for(
            lambda job=job: read_or_none(installed.admin.read_namespaced_job, job["metadata"]["name"],
                                         installed.namespace) is None,
            timeout=30, message=f"{what}: deleted with the operator's token",
        )  # fmt: skip


# --- what a stolen token would make is refused ------------------------------------------------------


def _privileged(job: dict[str, Any]) -> None:
    context = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context.update(privileged=True, allowPrivilegeEscalation=True)


def _host_path(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "node-root", "hostPath": {"path": "/etc"}})
    pod["containers"][0]["volumeMounts"].append({"name": "node-root", "mountPath": "/host"})


def _no_owner(job: dict[str, Any]) -> None:
    del job["metadata"]["ownerReferences"]


def _other_owner(job: dict[str, Any]) -> None:
    job["metadata"]["ownerReferences"][0].update(apiVersion="apps/v1", kind="Deployment")


def _service_account(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["serviceAccountName"] = "builder"


def _token(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["automountServiceAccountToken"] = True


def _host_network(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["hostNetwork"] = True


def _unlabelled(job: dict[str, Any]) -> None:
    job["metadata"]["labels"] = {"app": "backup"}


def _probe_capability(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = ["CHOWN"]


def _probe_as_root(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    for context in (pod["securityContext"], pod["containers"][0]["securityContext"]):
        context.update(runAsNonRoot=False, runAsUser=0)


def _writable_claim(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] = False
    pod["containers"][0]["volumeMounts"][0]["readOnly"] = False


def _fs_group(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["securityContext"]["fsGroup"] = 1000


def _unconfined(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["seccompProfile"] = {"type": "Unconfined"}


def _migration_capability(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")


def _migration_image(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/toolbox:1"


def _migration_shell(job: dict[str, Any]) -> None:
    """The operator's image, as root with CHOWN, running code of the token holder's choosing."""
    job["spec"]["template"]["spec"]["containers"][0]["command"] = ["/opt/venv/bin/python", "-I", "-c", "print(1)"]


def _migration_args(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["containers"][0]["args"] = ["--to=0:0"]


def _owned_by_the_slot(job: dict[str, Any]) -> None:
    job["metadata"]["ownerReferences"][0].update(kind="Slot", name="codex-1")


def _owned_by_a_check(job: dict[str, Any]) -> None:
    job["metadata"]["ownerReferences"][0].update(kind="SlotImageCheck", name="check-1")


# case -> (base Job, what the stolen token changes, what the refusal must name)
REFUSED: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "privileged": ("probe", _privileged, "must not be privileged and must set allowPrivilegeEscalation: false: probe"),
    "hostPath volume": ("probe", _host_path, "volumes may only be persistentVolumeClaim or emptyDir, not node-root "
                        "(hostPath /etc)"),
    "no Slot owner": ("probe", _no_owner, "exactly one ownerReference, the controller, to a woved.dev/v1alpha1 Slot "
                      "(found: )"),
    "owned by a Deployment": ("probe", _other_owner, "Slot (found: apps/v1 Deployment codex-1)"),
    "another ServiceAccount": ("probe", _service_account, "default ServiceAccount, not builder"),
    "a ServiceAccount token": ("probe", _token, "pods get no ServiceAccount token"),
    "host network": ("probe", _host_network, "host namespaces are refused: hostNetwork"),
    "not the operator's labels": ("probe", _unlabelled, 'found managed-by="", component="")'),
    "a probe adding a capability": ("probe", _probe_capability, "add none (only an ownership migration adds CHOWN and "
                                    "DAC_OVERRIDE): probe adds CHOWN"),
    "a probe as root": ("probe", _probe_as_root, "only an ownership migration runs as root; runAsNonRoot and a "
                        "non-zero runAsUser are required for probe"),
    "a probe writing the claim": ("probe", _writable_claim, "only an ownership migration mounts a claim writable, "
                                  "not this probe Job (volumes slot)"),
    "fsGroup": ("probe", _fs_group, "the operator never sets securityContext.fsGroup"),
    "seccomp unconfined": ("probe", _unconfined, "seccompProfile must be RuntimeDefault for probe"),
    "a migration adding SYS_ADMIN": ("migration", _migration_capability, "add only CHOWN and DAC_OVERRIDE: migrate "
                                     "adds CHOWN, DAC_OVERRIDE, SYS_ADMIN"),
    "a migration from another image": ("migration", _migration_image, "not registry.example/toolbox:1"),
    "a migration running other code": ("migration", _migration_shell, "runs only /opt/venv/bin/python -I -m "
                                       "slot_operator migrate-ownership, without args (containers migrate)"),
    "a migration with extra args": ("migration", _migration_args, "without args (containers migrate)"),
    "an image check owned by a Slot": ("check", _owned_by_the_slot, "to a woved.dev/v1alpha1 SlotImageCheck "
                                       "(found: woved.dev/v1alpha1 Slot codex-1)"),
    "a probe owned by a SlotImageCheck": ("probe", _owned_by_a_check, "to a woved.dev/v1alpha1 Slot (found: "
                                          "woved.dev/v1alpha1 SlotImageCheck check-1)"),
    "an image check as root": ("check", _probe_as_root, "only an ownership migration runs as root"),
    "an image check writing the claim": ("check", _writable_claim, "only an ownership migration mounts a claim "
                                         "writable, not this image-check Job (volumes slot)"),
}  # fmt: skip
BASES: dict[str, Callable[[Installed], dict[str, Any]]] = {
    "probe": probe_job, "migration": migration_job, "check": check_probe_job,
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED)
def test_a_stolen_token_cannot_create(case: str, installed: Installed) -> None:
    base, change, names = REFUSED[case]
    job = BASES[base](installed)
    forged = copy.deepcopy(job)
    change(forged)
    exc = _denial(lambda: create(installed, forged, dry_run=False))
    assert policy_refusal(exc, installed.policy), exc and exc.body
    assert exc is not None
    message = _message(exc)
    assert f"Job {installed.namespace}/{job['metadata']['name']}" in message, message
    assert names in message, message
    assert read_or_none(installed.admin.read_namespaced_job, job["metadata"]["name"], installed.namespace) is None
    # The same Job unchanged is the operator's and admitted (dry run): the change alone was refused.
    assert create(installed, job, dry_run=True) is not None
    # The policy bounds the operator's ServiceAccount only: the namespace's own admins are not judged by it.
    assert installed.admin.create_namespaced_job(installed.namespace, forged, dry_run="All") is not None


def test_a_stolen_token_cannot_delete_a_tenants_jobs(installed: Installed) -> None:
    """A tenant's Job, unlabelled or wearing the operator's labels without a Slot owner, survives the token."""
    tenant_jobs = {
        "nightly-backup": {},
        "forged-labels": {"app.kubernetes.io/managed-by": "slot-operator", "app.kubernetes.io/component": "probe"},
        "forged-check-labels": {
            "app.kubernetes.io/managed-by": "slot-operator",
            "app.kubernetes.io/component": "image-check",
        },
    }
    for name, labels in tenant_jobs.items():
        installed.admin.create_namespaced_job(installed.namespace, {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": {"suspend": True, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": CODEX_IMAGE}]}}},
        })  # fmt: skip
    for name in tenant_jobs:
        exc = _denial(lambda name=name: installed.stolen.delete_namespaced_job(name, installed.namespace))
        assert policy_refusal(exc, installed.policy), exc and exc.body
        assert exc is not None
        assert f"Job {installed.namespace}/{name} is not the operator's" in _message(exc), exc.body
        assert read_or_none(installed.admin.read_namespaced_job, name, installed.namespace) is not None, name


def test_no_migration_job_at_all_with_the_charts_defaults(
    kube_cluster: Any, api_client: client.ApiClient, tenant: Tenant, namespace: str, tmp_path: pathlib.Path
) -> None:
    """ownershipMigration.enabled=false (the default) also closes the door to root Jobs: none is admitted."""
    with installed_policy(kube_cluster, api_client, tmp_path, namespace, tenant, {}) as installed:
        exc = _denial(lambda: create(installed, migration_job(installed), dry_run=True))
        assert policy_refusal(exc, installed.policy), exc and exc.body
        assert exc is not None
        assert "ownership migration Jobs are off (chart value ownershipMigration.enabled=false)" in _message(exc)
        assert create(installed, probe_job(installed, audit=True), dry_run=True) is not None
