"""The Helm chart, checked without a cluster: lint, render, least-privilege RBAC,
restricted pod security, values wiring, and the CRD single-source rule.

Runs the pinned `helm` (devcluster/build.py builds it on first use; never one from PATH).
The CRD drift check and schema checks run without helm.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import build
from tests import repo

ROOT = repo.ROOT
CHART = ROOT / "charts" / "slot-operator"
CRD_SOURCES = ROOT / "crds"
CRD_COPIES = CHART / "crds"
# Oldest Kubernetes the chart supports (podFailurePolicy is GA from 1.31). Passed
# explicitly: a helm built without its version ldflags assumes v1.20.
KUBE_VERSION = "1.31.0"
RELEASE, NAMESPACE = "so", "slot-system"

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}
DANGEROUS_VERBS = {"escalate", "bind", "impersonate", "*"}


def helm(*args: str, values: dict[str, Any] | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(build.tool("helm")), *args]
    if values is not None:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)


def render(
    tmp: Path, values: dict[str, Any] | None = None, *, api_versions: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """`helm template`; `api_versions` play a cluster's discovery (without them helm assumes no kinds at all)."""
    flags = [arg for version in api_versions for arg in ("--api-versions", version)]
    result = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *flags,
        values=values or {}, tmp=tmp,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# Value sets every rendering test runs against.
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "2-replicas": {"replicas": 2},
    "namespaced-3-replicas": {"replicas": 3, "watchNamespaces": ["team-a", "team-b"]},
    # The release namespace is watched too: its Role and the leader-election Role must not collide.
    "namespaced-incl-release-ns": {"watchNamespaces": [NAMESPACE, "team-a"]},
    "no-leader-election": {"leaderElection": {"enabled": False}},
    "namespaced-no-leader-election": {"watchNamespaces": ["team-a"], "leaderElection": {"enabled": False}},
    "servicemonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                   "grafanaDashboard": {"enabled": True, "namespace": "grafana"}},
    "metrics-off": {"metrics": {"port": 0}},
    "no-replicas": {"replicas": 0},
    "custom": {
        "image": {"repository": "registry.example/so", "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
        "operator": {"defaultInterval": "12h", "defaultTimeout": "90s", "maxConcurrentProbes": 3, "jobTTL": "30m",
                     "logFormat": "text", "workers": 2, "extraArgs": ["--retry-base=5s"]},
        "leaderElection": {"enabled": True, "leaseName": "slots"},
        "metrics": {"port": 9090}, "health": {"port": 9091},
        "nodeSelector": {"kubernetes.io/os": "linux"}, "podAnnotations": {"a": "b"},
        "tolerations": [{"key": "k", "operator": "Exists"}],
    },
    "ownership-migration": {"ownershipMigration": {"enabled": True},
                            "operator": {"auditImage": "registry.example/audit:1"}},
    "no-admission-policy": {"admissionPolicy": {"enabled": False, "allowUnboundedClusterWide": True}},
    "namespaced-no-admission-policy": {"watchNamespaces": ["team-a"], "admissionPolicy": {"enabled": False}},
}  # fmt: skip


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return {name: render(tmp_path_factory.mktemp(name), values) for name, values in SCENARIOS.items()}


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = kinds(docs, "Deployment")
    return dep


# --- a small RBAC evaluator over the rendered objects ------------------------------------------


@dataclass(frozen=True)
class Grant:
    namespace: str | None  # None: cluster-wide (ClusterRoleBinding)
    group: str
    resource: str
    verb: str
    name: str | None = None  # None: any object (no resourceNames)


def operator_grants(docs: list[dict[str, Any]]) -> set[Grant]:
    """Everything the chart's ServiceAccount may do, expanded to single grants."""
    (sa,) = kinds(docs, "ServiceAccount")
    subject = (sa["metadata"]["name"], sa["metadata"]["namespace"])
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs
             if d["kind"] in ("Role", "ClusterRole")}  # fmt: skip
    grants: set[Grant] = set()
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any((s["name"], s.get("namespace")) == subject for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        role_ns = scope if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], role_ns, ref["name"])]
        for rule in role["rules"]:
            names: list[str | None] = list(rule.get("resourceNames") or [None])
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule["verbs"]:
                        grants.update(Grant(scope, group, resource, verb, name) for name in names)
    return grants


def can(
    grants: set[Grant], verb: str, group: str, resource: str, namespace: str | None, name: str | None = None
) -> bool:
    """Like the RBAC authorizer: a grant limited to resourceNames only matches a request for that name."""
    return any(
        g.group in (group, "*") and g.resource in (resource, "*") and g.verb in (verb, "*")
        and (g.namespace is None or g.namespace == namespace)
        and (g.name is None or g.name == name)
        for g in grants
    )  # fmt: skip


NAMESPACED_RULES = {
    ("woved.dev", "slots"): {"get", "list", "watch"},
    ("woved.dev", "slots/status"): {"patch"},
    # SlotImageChecks: read, status written, deleted ttlAfterFinished after they finish.
    ("woved.dev", "slotimagechecks"): {"get", "list", "watch", "delete"},
    ("woved.dev", "slotimagechecks/status"): {"patch"},
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "persistentvolumeclaims"): {"list", "watch"},
    # list: the Job controller's FailedCreate Event on an ownership migration Job (Pod Security).
    ("", "events"): {"create", "get", "list", "patch"},
}
LEASES = ("coordination.k8s.io", "leases")


def lease_name(values: dict[str, Any]) -> str:
    return values.get("leaderElection", {}).get("leaseName") or f"{RELEASE}-slot-operator"


def leader_election(values: dict[str, Any]) -> bool:
    return bool(values.get("leaderElection", {}).get("enabled", True))


def expected_grants(values: dict[str, Any]) -> set[Grant]:
    """The least-privilege contract, written out independently of the templates."""
    namespaces = values.get("watchNamespaces") or []
    table: dict[str | None, dict[tuple[str, str], set[str]]] = {}
    if not namespaces:
        table[None] = dict(NAMESPACED_RULES)
    else:
        for ns in namespaces:
            table[ns] = dict(NAMESPACED_RULES)
    grants = {
        Grant(ns, group, resource, verb)
        for ns, rules in table.items()
        for (group, resource), verbs in rules.items()
        for verb in verbs
    }
    if leader_election(values):
        # The Lease, in the release namespace only: create (RBAC cannot name-limit create),
        # read and renew only the chart's own Lease. Nothing else on Leases, anywhere.
        grants.add(Grant(NAMESPACE, *LEASES, "create"))
        grants |= {Grant(NAMESPACE, *LEASES, verb, lease_name(values)) for verb in ("get", "update")}
    return grants


# --- tests that need no helm -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["slots.woved.dev.yaml", "slotimagechecks.woved.dev.yaml"])
def test_chart_crd_is_a_byte_copy_of_the_single_source(name: str) -> None:
    assert (CRD_COPIES / name).read_bytes() == (CRD_SOURCES / name).read_bytes(), (
        f"charts/slot-operator/crds/{name} differs from crds/{name}: run hack/sync-chart-crd.sh"
    )


def test_chart_crds_dir_holds_the_slot_and_check_crds_only() -> None:
    # kopf's peering CRDs are gone with peering (leader election uses the built-in Lease).
    expected = ["slotimagechecks.woved.dev.yaml", "slots.woved.dev.yaml"]
    assert sorted(p.name for p in CRD_COPIES.iterdir()) == sorted(p.name for p in CRD_SOURCES.iterdir()) == expected


def test_no_peering_left_in_the_chart() -> None:
    for path in CHART.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".tpl", ".txt", ".json", ".md"):
            text = path.read_text()
            for word in ("kopf.dev", "peering.", "--peering", "--priority", "POD_ID"):
                if path.name == "README.md" and word in ("peering.", "kopf.dev"):
                    continue  # the upgrade notes name what was removed
                assert word not in text, f"{path.relative_to(CHART)} mentions {word}"


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for key, sub in schema.get("properties", {}).items():
        yield prefix + key, sub
        yield from _schema_paths(sub, prefix + key + ".")


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        yield prefix + key
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in sub:
            yield from _value_paths(value, sub, prefix + key + ".")


def test_values_schema_declares_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    declared = dict(_schema_paths(schema))
    missing = [p for p in _value_paths(values, schema) if p not in declared]
    assert not missing, f"values without a schema entry: {missing}"
    for path, sub in declared.items():
        assert "type" in sub or "anyOf" in sub, f"{path} has no type"
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{path} accepts unknown keys"


# --- helm ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(scenario: str, tmp_path: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, values=SCENARIOS[scenario],
                  tmp=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2, "leaderElection": {"enabled": False}}, "replicas > 1 needs leaderElection.enabled=true"),
        ({"replicas": 5, "leaderElection": {"enabled": False}}, "replicas > 1 needs leaderElection.enabled=true"),
        ({"peering": {"enabled": True}}, "additional properties 'peering' not allowed"),
        ({"leaderElection": {"enabled": True, "name": "x"}}, "additional properties 'name' not allowed"),
        ({"leaderElection": {"leaseName": "Slot_Lease"}}, "does not match pattern"),
        ({"serviceMonitor": {"enabled": True}, "metrics": {"port": 0}}, "needs metrics"),
        ({"metrics": {"port": 8081}}, "must differ"),
        ({"unknownKey": 1}, "additional properties"),
        ({"watchNamespaces": ["Team_A"]}, "does not match pattern"),
        ({"operator": {"defaultInterval": "six hours"}}, "does not match pattern"),
        ({"operator": {"logFormat": "xml"}}, "value must be one of"),
    ],
)
def test_invalid_values_are_rejected(values: dict[str, Any], message: str, tmp_path: Path) -> None:
    result = helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, values=values, tmp=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_least_privilege(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered[scenario]
    for role in kinds(docs, "Role") + kinds(docs, "ClusterRole"):
        name = role["metadata"]["name"]
        assert "aggregationRule" not in role, name
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, name
            assert "*" not in rule.get("apiGroups", []), name
            assert "*" not in rule["resources"], name
            assert "*" not in rule["verbs"], name
            assert not any("secret" in r for r in rule["resources"]), f"{name} mentions secrets"
            assert not DANGEROUS_VERBS & set(rule["verbs"]), name
            if "persistentvolumeclaims" in rule["resources"]:
                assert not WRITE_VERBS & set(rule["verbs"]), f"{name} may write claims"
    assert operator_grants(docs) == expected_grants(SCENARIOS[scenario])


@pytest.mark.parametrize("scenario", ["default", "namespaced", "namespaced-3-replicas", "no-leader-election"])
def test_operator_permissions_as_a_user_would_ask(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    grants = operator_grants(rendered[scenario])
    namespaced = bool(SCENARIOS[scenario].get("watchNamespaces"))
    inside = "team-a" if namespaced else "anywhere"
    assert can(grants, "create", "batch", "jobs", inside)
    assert can(grants, "patch", "woved.dev", "slots/status", inside)
    assert can(grants, "list", "woved.dev", "slots", inside)
    for ns in (inside, NAMESPACE, "kube-system"):
        assert not can(grants, "get", "", "secrets", ns)
        assert not can(grants, "list", "", "secrets", ns)
        for verb in ("create", "patch", "update", "delete"):
            assert not can(grants, verb, "", "persistentvolumeclaims", ns)
    assert not can(grants, "create", "woved.dev", "slots", inside)
    assert not can(grants, "delete", "woved.dev", "slots", inside)
    # A check: read, its status written, deleted at its TTL; never created or changed by the operator.
    for verb in ("watch", "delete"):
        assert can(grants, verb, "woved.dev", "slotimagechecks", inside), verb
    assert can(grants, "patch", "woved.dev", "slotimagechecks/status", inside)
    for verb in ("create", "update", "patch"):
        assert not can(grants, verb, "woved.dev", "slotimagechecks", inside), verb
    assert not can(grants, "update", "woved.dev", "slotimagechecks/status", inside)
    assert can(grants, "list", "woved.dev", "slots", "elsewhere") is not namespaced
    # Nothing cluster-scoped: the operator reads no Namespaces and no CRDs (it has its own watches, not kopf's).
    assert not can(grants, "watch", "", "namespaces", None)
    assert not can(grants, "list", "apiextensions.k8s.io", "customresourcedefinitions", None)
    assert can(grants, "create", "batch", "jobs", "elsewhere") is not namespaced
    lease, electing = lease_name(SCENARIOS[scenario]), leader_election(SCENARIOS[scenario])
    for verb in ("get", "create", "update"):
        assert can(grants, verb, *LEASES, NAMESPACE, lease) is electing, verb
    for ns in (inside, "kube-system", "team-b", None):
        for verb in ("get", "create", "update", "list", "watch", "patch", "delete"):
            assert not can(grants, verb, *LEASES, ns, lease), (verb, ns)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_leases_only_in_the_release_namespace_and_only_with_leader_election(
    scenario: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    values = SCENARIOS[scenario]
    lease_grants = {g for g in operator_grants(rendered[scenario]) if (g.group, g.resource) == LEASES}
    if not leader_election(values):
        assert lease_grants == set()
        assert not [d for d in rendered[scenario] if d["metadata"]["name"].endswith("-leader-election")]
        return
    assert {g.namespace for g in lease_grants} == {NAMESPACE}
    assert {(g.verb, g.name) for g in lease_grants} == {
        ("create", None),  # the authorizer sees no name on create
        ("get", lease_name(values)),
        ("update", lease_name(values)),
    }
    lease_rules = [
        (role["kind"], role["metadata"].get("namespace"), rule)
        for role in kinds(rendered[scenario], "Role") + kinds(rendered[scenario], "ClusterRole")
        for rule in role["rules"]
        if "coordination.k8s.io" in rule.get("apiGroups", []) or "leases" in rule["resources"]
    ]
    assert lease_rules
    assert all(kind == "Role" and ns == NAMESPACE for kind, ns, _ in lease_rules)
    assert all(rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]
               for _, _, rule in lease_rules)  # fmt: skip


def test_user_facing_roles_aggregate_slots_and_checks_only(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """view reads both kinds, edit and admin also write them; nobody gets their status (the operator's)."""
    prefix = "rbac.authorization.k8s.io/aggregate-to-"
    roles = kinds(rendered["default"], "ClusterRole")
    aggregated = {r["metadata"]["name"].rsplit("-", 1)[-1]: r for r in roles
                  if any(k.startswith(prefix) for k in r["metadata"]["labels"])}  # fmt: skip
    assert set(aggregated) == {"view", "edit"}
    into = {name: {k.removeprefix(prefix) for k, v in role["metadata"]["labels"].items() if k.startswith(prefix)
                   and v == "true"} for name, role in aggregated.items()}  # fmt: skip
    assert into == {"view": {"view", "edit", "admin"}, "edit": {"edit", "admin"}}
    for name, verbs in (("view", ["get", "list", "watch"]),
                        ("edit", ["create", "update", "patch", "delete", "deletecollection"])):  # fmt: skip
        (rule,) = aggregated[name]["rules"]
        assert rule == {"apiGroups": ["woved.dev"], "resources": ["slots", "slotimagechecks"], "verbs": verbs}, name


# Pod Security Standards, "restricted" profile (v1.31), as far as a Deployment can show it.
ALLOWED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                        "projected", "secret"}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    problems = []
    psc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(key)
    for volume in pod.get("volumes", []):
        if not set(volume) - {"name"} <= ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}")
    for container in pod.get("initContainers", []) + pod["containers"]:
        csc = container.get("securityContext", {})
        name = container["name"]
        if csc.get("privileged"):
            problems.append(f"{name}: privileged")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if "ALL" not in csc.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities not dropped")
        if set(csc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added")
        if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot")
        if csc.get("runAsUser", psc.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
        if any("hostPort" in p for p in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


def test_restricted_checker_can_fail() -> None:
    pod = {"hostPID": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
           "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}  # fmt: skip
    assert len(restricted_violations(pod)) == 7


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_deployment_is_restricted_and_read_only(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = deployment(rendered[scenario])["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsGroup"] == 10001
    assert "fsGroup" not in pod["securityContext"]
    (container,) = pod["containers"]
    csc = container["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert (csc["runAsUser"], csc["runAsGroup"]) == (10001, 10001)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["automountServiceAccountToken"] is True
    assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_hit_kopf_health_endpoint(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    (container,) = deployment(rendered[scenario])["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    health_port = SCENARIOS[scenario].get("health", {}).get("port", 8081)
    assert f"--health-port={health_port}" in container["args"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert ports[get["port"]] == health_port


def test_strategy_follows_replicas(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for scenario in ("default", "no-leader-election", "no-replicas"):
        assert deployment(rendered[scenario])["spec"]["strategy"] == {"type": "Recreate"}, scenario
    assert deployment(rendered["no-replicas"])["spec"]["replicas"] == 0
    for scenario, replicas in (("2-replicas", 2), ("namespaced-3-replicas", 3)):
        spec = deployment(rendered[scenario])["spec"]
        assert spec["replicas"] == replicas
        # An old pod goes only once a new one is Ready: a standby is always there to take the Lease.
        assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_default_args_map_values(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (container,) = deployment(rendered["default"])["spec"]["template"]["spec"]["containers"]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == "ghcr.io/woved/slot-operator:" + app_version
    assert container["args"] == [
        "--default-interval=6h", "--default-timeout=2m", "--max-concurrent-probes=10",
        "--max-concurrent-probes-per-namespace=0", "--job-ttl=1h",
        "--retry-base=10s", "--retry-max=10m", "--workers=16", "--metrics-port=8080", "--health-port=8081",
        "--log-format=json", "--audit-image=ghcr.io/woved/slot-operator:" + app_version,
        "--ownership-migration-from=1000:1000",
        "--leader-elect", f"--leader-elect-namespace={NAMESPACE}", f"--leader-elect-lease={RELEASE}-slot-operator",
    ]  # fmt: skip
    assert container["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]


def test_ownership_migration_is_off_unless_enabled(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The first of the migration's two keys is the chart value; the audit image is the operator's by default."""
    for scenario in SCENARIOS:
        (container,) = deployment(rendered[scenario])["spec"]["template"]["spec"]["containers"]
        enabled = SCENARIOS[scenario].get("ownershipMigration", {}).get("enabled", False)
        assert ("--allow-ownership-migration" in container["args"]) is enabled, scenario
        (audit,) = [a for a in container["args"] if a.startswith("--audit-image=")]
        expected = SCENARIOS[scenario].get("operator", {}).get("auditImage") or container["image"]
        assert audit == f"--audit-image={expected}", scenario


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_image_entrypoint_runs_as_is(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """No shell wrapper (the random kopf peering priority is gone): the image's ENTRYPOINT, the chart's args."""
    (container,) = deployment(rendered[scenario])["spec"]["template"]["spec"]["containers"]
    assert "command" not in container
    assert not any(a.startswith(("--peering", "--priority")) for a in container["args"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_leader_election_args_follow_values(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    values = SCENARIOS[scenario]
    (container,) = deployment(rendered[scenario])["spec"]["template"]["spec"]["containers"]
    elect = [a for a in container["args"] if a.startswith("--leader-elect")]
    if leader_election(values):
        # The Lease is in the release namespace, whatever namespaces are watched.
        assert elect == ["--leader-elect", f"--leader-elect-namespace={NAMESPACE}",
                         f"--leader-elect-lease={lease_name(values)}"]  # fmt: skip
    else:
        assert elect == []
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "POD_ID" not in env


def test_custom_args_map_values(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = deployment(rendered["custom"])["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example/so@sha256:" + "a" * 64
    assert container["imagePullPolicy"] == "Always"
    for arg in ("--default-interval=12h", "--default-timeout=90s", "--max-concurrent-probes=3", "--job-ttl=30m",
                "--log-format=text", "--workers=2", "--metrics-port=9090", "--health-port=9091",
                "--leader-elect-lease=slots", "--retry-base=5s"):  # fmt: skip
        assert arg in container["args"], arg
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["spec"]["tolerations"] == [{"key": "k", "operator": "Exists"}]
    (svc,) = kinds(rendered["custom"], "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]


def test_namespaced_args(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (container,) = deployment(rendered["namespaced"])["spec"]["template"]["spec"]["containers"]
    assert [a for a in container["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    assert f"--leader-elect-namespace={NAMESPACE}" in container["args"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_kopf_peering_objects(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not [d for d in rendered[scenario] if d["apiVersion"].startswith("kopf.dev/")]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_objects_are_unique(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """helm install fails on two objects with one identity (e.g. two Roles in a watched release namespace)."""
    ids = [(d["apiVersion"], d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
           for d in rendered[scenario]]  # fmt: skip
    assert len(ids) == len(set(ids)), sorted(ids)


def test_metrics_service_and_servicemonitor(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (svc,) = kinds(rendered["default"], "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    selector = svc["spec"]["selector"]
    assert selector.items() <= deployment(rendered["default"])["spec"]["template"]["metadata"]["labels"].items()
    assert not kinds(rendered["default"], "ServiceMonitor")
    (monitor,) = kinds(rendered["servicemonitor"], "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert not kinds(rendered["metrics-off"], "Service")
    (container,) = deployment(rendered["metrics-off"])["spec"]["template"]["spec"]["containers"]
    assert "--metrics-port=0" in container["args"]
    assert [p["name"] for p in container["ports"]] == ["health"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_namespaced_objects_carry_their_namespace(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for doc in rendered[scenario]:
        has_ns = "namespace" in doc["metadata"]
        assert has_ns is (doc["kind"] not in cluster_scoped), (doc["kind"], doc["metadata"]["name"])


def test_cluster_scoped_names_are_release_namespace_qualified(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for kind in ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        assert kinds(rendered["default"], kind), kind
        for doc in kinds(rendered["default"], kind):
            assert NAMESPACE in doc["metadata"]["name"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_args_are_accepted_by_the_operator_cli(
    scenario: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """The chart speaks the CLI's language: its args parse with the operator's own parser."""
    config = pytest.importorskip("slot_operator.config")
    (container,) = deployment(rendered[scenario])["spec"]["template"]["spec"]["containers"]
    assert "command" not in container
    # The pod's env as the downward API fills it in (extraEnv is not used by these scenarios).
    pod_env = {"POD_NAME": f"{RELEASE}-slot-operator-abc12-xyz34", "POD_NAMESPACE": NAMESPACE}
    assert {e["name"] for e in container["env"]} == set(pod_env)
    parsed = config.parse(list(container["args"]), pod_env)
    values = SCENARIOS[scenario]
    assert parsed.namespaces == tuple(sorted(values.get("watchNamespaces", [])))
    assert parsed.metrics_port == values.get("metrics", {}).get("port", 8080)
    assert parsed.health_port == values.get("health", {}).get("port", 8081)
    assert parsed.leader_elect is leader_election(values)
    if leader_election(values):
        assert parsed.leader_elect_namespace == NAMESPACE
        assert parsed.leader_elect_lease == lease_name(values)


# --- the ValidatingAdmissionPolicy bounding the operator's ServiceAccount -------------------------
# What it admits and refuses is proven on the API server (tests/integration/test_admission_policy.py);
# here: when it is rendered, whom it binds, and that cluster-wide rights never come without it.

VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
# Discovery of a cluster that does not serve it (--runtime-config turned it off): kinds, but not that one.
NOT_SERVED = ("v1/Namespace", "batch/v1/Job")


def admission_policy(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    policies, bindings = kinds(docs, "ValidatingAdmissionPolicy"), kinds(docs, "ValidatingAdmissionPolicyBinding")
    assert len(policies) == len(bindings) <= 1
    return (policies[0], bindings[0]) if policies else None


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_admission_policy_is_on_unless_disabled(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    found = admission_policy(rendered[scenario])
    assert (found is not None) is SCENARIOS[scenario].get("admissionPolicy", {}).get("enabled", True)
    if found is None:
        return
    policy, binding = found
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_the_admission_policy_judges_the_operators_job_writes_only(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """It matches what RBAC lets the ServiceAccount write on Jobs, and nobody but that ServiceAccount."""
    found = admission_policy(rendered["default"])
    assert found is not None
    spec = found[0]["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    job_writes = NAMESPACED_RULES[("batch", "jobs")] & WRITE_VERBS
    assert {op.lower() for op in rule["operations"]} == job_writes
    assert (rule["apiGroups"], rule["resources"]) == (["batch"], ["jobs"])
    (sa,) = kinds(rendered["default"], "ServiceAccount")
    user = f"system:serviceaccount:{NAMESPACE}:{sa['metadata']['name']}"
    assert spec["matchConditions"] == [
        {"name": "operator-service-account", "expression": f"request.userInfo.username == '{user}'"}
    ]
    named = render(tmp_path, {"serviceAccount": {"create": False, "name": "ops-bot"}})
    found = admission_policy(named)
    assert found is not None
    (condition,) = found[0]["spec"]["matchConditions"]
    assert condition["expression"] == f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:ops-bot'"


def test_every_refusal_names_the_job_and_what_was_refused(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for scenario in ("default", "ownership-migration"):
        found = admission_policy(rendered[scenario])
        assert found is not None
        for validation in found[0]["spec"]["validations"]:
            assert validation["message"], validation
            assert validation["reason"] == "Forbidden", validation
            assert validation["messageExpression"].startswith("variables.name + "), validation


def test_root_jobs_follow_the_migration_key(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Migration off (default): no migration Job at all. On: only from the audit image the operator is given."""

    def expressions(scenario: str) -> str:
        found = admission_policy(rendered[scenario])
        assert found is not None
        spec = found[0]["spec"]
        return "\n".join([*(v["expression"] for v in spec["variables"]),
                          *(v["expression"] + v["messageExpression"] for v in spec["validations"])])  # fmt: skip

    assert "ownership migration Jobs are off" in expressions("default")
    assert "c.image" not in expressions("default")
    enabled = expressions("ownership-migration")
    assert "ownership migration Jobs are off" not in enabled
    assert "c.image != 'registry.example/audit:1'" in enabled
    assert "size(variables.foreignImages) == 0" in enabled
    (container,) = deployment(rendered["ownership-migration"])["spec"]["template"]["spec"]["containers"]
    assert "--audit-image=registry.example/audit:1" in container["args"]


@pytest.mark.parametrize(
    ("values", "api_versions", "policy", "cluster_wide"),
    [
        ({}, (*NOT_SERVED, VAP_API), True, True),  # discovery names it: rendered
        ({}, (), True, True),  # offline: the chart's kubeVersion (>= 1.31) serves it by default
        ({"watchNamespaces": ["team-a"]}, NOT_SERVED, False, False),  # namespaced rights need no policy
        ({"admissionPolicy": {"allowUnboundedClusterWide": True}}, NOT_SERVED, False, True),
        ({"admissionPolicy": {"enabled": False, "allowUnboundedClusterWide": True}}, (), False, True),
        ({"rbac": {"create": False}, "admissionPolicy": {"enabled": False}}, (), False, False),  # RBAC is the user's
    ],
)
def test_cluster_wide_rights_come_with_the_policy_or_an_explicit_yes(
    values: dict[str, Any], api_versions: tuple[str, ...], policy: bool, cluster_wide: bool, tmp_path: Path
) -> None:
    docs = render(tmp_path, values, api_versions=api_versions)
    assert (admission_policy(docs) is not None) is policy
    assert bool(kinds(docs, "ClusterRoleBinding")) is cluster_wide
    if cluster_wide:
        grants = operator_grants(docs)
        assert can(grants, "create", "batch", "jobs", "anywhere")


@pytest.mark.parametrize(
    ("values", "api_versions", "why"),
    [
        ({}, NOT_SERVED, "the API server does not serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy"),
        ({"admissionPolicy": {"enabled": False}}, (), "admissionPolicy.enabled is false"),
        ({"admissionPolicy": {"enabled": False}}, (*NOT_SERVED, VAP_API), "admissionPolicy.enabled is false"),
    ],
)
def test_cluster_wide_rights_without_the_policy_are_refused(
    values: dict[str, Any], api_versions: tuple[str, ...], why: str, tmp_path: Path
) -> None:
    flags = [arg for version in api_versions for arg in ("--api-versions", version)]
    result = helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, *flags, values=values, tmp=tmp_path)
    assert result.returncode != 0
    assert "watchNamespaces is empty" in result.stderr, result.stderr
    assert why in result.stderr, result.stderr
    assert "admissionPolicy.allowUnboundedClusterWide=true" in result.stderr, result.stderr
