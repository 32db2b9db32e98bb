"""The probe Job manifest and its name (logic/jobs.py) against docs/design.md §3."""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Iterator
from typing import Any

import pytest
from slot_operator.logic import jobs, names
from slot_operator.logic.spec import (
    DEFAULT_RESOURCES,
    SCHEDULE_FIELDS,
    VERDICT_FIELDS,
    SlotSpec,
    parse_spec,
    probe_resources,
)
from slot_operator.logic.verdict import FailureReason

from tests.slot_spec_fields import OTHER, SPEC_FIELDS

UID = "6f1c2a8e-3b7d-4e59-9a1f-0c2d4e6f8a10"
AUDIT_IMAGE = "ghcr.io/woved/slot-operator:0.2.0"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def make_spec(**fields: Any) -> SlotSpec:
    spec: dict[str, Any] = {"agent": "codex", "claimName": "codex-1-home", "image": "ghcr.io/example/agent:sha-1a2b3c"}
    spec.update(fields)
    return parse_spec(spec, default_interval=datetime.timedelta(hours=6), default_timeout=datetime.timedelta(minutes=2))


def build(spec: SlotSpec | None = None, *, node: str | None = None, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "codex-1-probe-0123456789",
        "namespace": "agents",
        "slot_name": "codex-1",
        "slot_uid": UID,
        "generation": 4,
        "trigger": "spec-changed",
        "spec": spec or make_spec(),
        "node": node,
        "ttl": datetime.timedelta(hours=1),
        "audit_image": AUDIT_IMAGE,
    }
    args.update(overrides)
    return jobs.build_probe_job(**args)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = job["spec"]["template"]["spec"]
    return result


def container(job: dict[str, Any], name: str = "probe") -> dict[str, Any]:
    """The probe container (always the first), or the named one."""
    containers = {each["name"]: each for each in pod_spec(job)["containers"]}
    assert next(iter(containers)) == "probe"
    result: dict[str, Any] = containers[name]
    return result


def walk_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_keys(item)


# --- job_name --------------------------------------------------------------------------------


def test_job_name_shape() -> None:
    name = jobs.job_name("codex-1", UID, "4/2024-05-06T07:00:00+00:00/created")
    assert re.fullmatch(r"codex-1-probe-[0-9a-f]{10}", name)


def test_job_name_is_deterministic() -> None:
    assert jobs.job_name("codex-1", UID, "t") == jobs.job_name("codex-1", UID, "t")


def test_job_name_depends_on_uid_and_token() -> None:
    names = {
        jobs.job_name("codex-1", UID, "t1"),
        jobs.job_name("codex-1", UID, "t2"),
        jobs.job_name("codex-1", "another-uid", "t1"),
    }
    assert len(names) == 3


@pytest.mark.parametrize(
    "slot_name",
    [
        ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61]),  # 253 characters, the longest Slot name
        "a" * 44 + "." + "b" * 100,  # a dot right at the cut
        "x" * 45 + "-" + "y" * 20,  # a dash right after the cut
        "agents.example.com",
        "a",
        "0",
        "codex-1",
    ],
)
def test_job_name_is_a_dns1123_label(slot_name: str) -> None:
    name = jobs.job_name(slot_name, UID, "token")
    assert len(name) <= 63
    assert DNS1123_LABEL.fullmatch(name), name
    assert re.fullmatch(r"[0-9a-f]{10}", name[-10:])


def test_job_name_for_253_char_dotted_name() -> None:
    slot_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(slot_name) == 253
    name = jobs.job_name(slot_name, UID, "token")
    assert name.startswith("a" * 45 + "-probe-")
    assert len(name) == 62


def test_job_name_dot_at_cut_is_stripped() -> None:
    name = jobs.job_name("a" * 44 + "." + "b" * 100, UID, "token")
    assert name.startswith("a" * 44 + "-probe-")


def test_job_name_of_unusual_names_falls_back() -> None:
    name = jobs.job_name("...", UID, "token")
    assert name.startswith("slot-probe-")
    assert DNS1123_LABEL.fullmatch(name)


# --- build_probe_job -------------------------------------------------------------------------


def test_identity_and_owner() -> None:
    job = build()
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    meta = job["metadata"]
    assert (meta["name"], meta["namespace"]) == ("codex-1-probe-0123456789", "agents")
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "woved.dev/v1alpha1",
            "kind": "Slot",
            "name": "codex-1",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": False,
        }
    ]


def test_labels_and_annotations_link_job_and_pods_to_the_slot() -> None:
    job = build()
    expected_labels = {
        "app.kubernetes.io/managed-by": "slot-operator",
        "app.kubernetes.io/component": "probe",
        "woved.dev/slot-uid": UID,
    }
    expected_annotations = {
        "woved.dev/slot": "codex-1",
        "woved.dev/slot-generation": "4",
        "woved.dev/probe-trigger": "spec-changed",
    }
    assert job["metadata"]["labels"] == expected_labels
    assert job["metadata"]["annotations"] == expected_annotations
    assert job["spec"]["template"]["metadata"] == {"labels": expected_labels, "annotations": expected_annotations}
    # Selector string used to list probe Jobs/pods matches the labels.
    for pair in names.PROBE_SELECTOR.split(","):
        key, value = pair.split("=")
        assert expected_labels[key] == value
    # Label values must be ≤63 characters even for the longest Slot names.
    assert all(len(value) <= 63 for value in expected_labels.values())


def test_label_values_fit_for_long_slot_names() -> None:
    long_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    job = build(slot_name=long_name)
    assert all(len(value) <= 63 for value in job["metadata"]["labels"].values())
    assert job["metadata"]["annotations"]["woved.dev/slot"] == long_name
    assert job["metadata"]["ownerReferences"][0]["name"] == long_name


def test_job_spec_policy() -> None:
    spec = build(make_spec(timeout="90s"), ttl=datetime.timedelta(minutes=30))["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["activeDeadlineSeconds"] == 90
    assert spec["ttlSecondsAfterFinished"] == 1800
    assert spec["podFailurePolicy"] == {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "probe", "operator": "In", "values": [64, 65, 66]},
            },
            # A failed audit ends the Job: the probe beside it already ran once, a retry would only repeat it.
            {"action": "FailJob", "onExitCodes": {"containerName": "audit", "operator": "NotIn", "values": [0]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }
    assert pod_spec(build())["restartPolicy"] == "Never"


def test_without_audit_the_policy_names_only_the_probe() -> None:
    rules = build(audit_image=None)["spec"]["podFailurePolicy"]["rules"]
    assert [rule.get("onExitCodes", {}).get("containerName") for rule in rules] == ["probe", None]


def test_backoff_limit_is_small() -> None:
    assert 0 <= build()["spec"]["backoffLimit"] <= 3


@pytest.mark.parametrize(("timeout", "seconds"), [("5s", 5), ("2m", 120), ("1h", 3600), ("1m30s", 90)])
def test_active_deadline_is_the_timeout(timeout: str, seconds: int) -> None:
    assert build(make_spec(timeout=timeout))["spec"]["activeDeadlineSeconds"] == seconds


def test_container_runs_the_smoke_test() -> None:
    c = container(build(make_spec(agent="claude", image="img:2")))
    assert c["name"] == "probe"
    assert c["image"] == "img:2"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["env"][:3] == [
        {"name": "AGENT_MODE", "value": "smoke-test"},
        {"name": "WOVED_TASK_AGENT", "value": "claude"},
        {"name": "HOME", "value": "/home/claude"},
    ]
    assert "imagePullPolicy" not in c


def test_user_env_is_appended_after_operator_env() -> None:
    env = [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}, {"name": "TOKEN", "valueFrom": {"secretKeyRef": {}}}]
    c = container(build(make_spec(env=env)))
    assert [e["name"] for e in c["env"]] == ["AGENT_MODE", "WOVED_TASK_AGENT", "HOME", "HTTPS_PROXY", "TOKEN"]
    assert c["env"][3] == {"name": "HTTPS_PROXY", "value": "http://proxy:3128"}


def test_home_follows_mount_path() -> None:
    c = container(build(make_spec(mountPath="/srv/slot")))
    assert {"name": "HOME", "value": "/srv/slot"} in c["env"]
    assert c["volumeMounts"][0] == {"name": "slot", "mountPath": "/srv/slot", "readOnly": True}


def test_claim_volume_and_mount_are_read_only() -> None:
    job = build(make_spec(claimName="my-claim"))
    assert pod_spec(job)["volumes"] == [
        {"name": "slot", "persistentVolumeClaim": {"claimName": "my-claim", "readOnly": True}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    assert container(job)["volumeMounts"] == [
        {"name": "slot", "mountPath": "/home/codex", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]


def test_only_scratch_space_is_writable() -> None:
    job = build(make_spec())
    for c in pod_spec(job)["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert [m["mountPath"] for m in container(job)["volumeMounts"] if not m.get("readOnly")] == ["/tmp"]
    assert [m for m in container(job, "audit")["volumeMounts"] if not m.get("readOnly")] == []


@pytest.mark.parametrize(("uid", "gid"), [(10001, 10001), (1000, 1000), (1000, 2000)])
def test_pod_security(uid: int, gid: int) -> None:
    job = build(make_spec(runAsUser=uid, runAsGroup=gid))
    pod = pod_spec(job)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["runAsGroup"] == gid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # Every container, the ownership audit included: Pod Security "restricted" holds for the whole pod.
    assert [each["name"] for each in pod["containers"]] == ["probe", "audit"]
    assert "initContainers" not in pod
    for each in pod["containers"]:
        sc = each["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid)
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "privileged" not in sc or sc["privileged"] is False


def test_restricted_profile_forbidden_fields_absent() -> None:
    keys = set(walk_keys(build(node="node-a")))
    forbidden = {"fsGroup", "fsGroupChangePolicy", "nodeName", "hostPath", "hostNetwork", "hostPID", "hostIPC"}
    assert not keys & forbidden
    assert "supplementalGroups" not in keys


def test_default_resources_are_small() -> None:
    resources = container(build())["resources"]
    assert resources == {
        "requests": {"cpu": "10m", "memory": "32Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }


def test_spec_resources_merge_with_the_defaults_key_by_key() -> None:
    resources = {"requests": {"cpu": "50m"}, "limits": {"memory": "128Mi"}}
    assert container(build(make_spec(resources=resources)))["resources"] == {
        "requests": {"cpu": "50m", "memory": "32Mi"},
        "limits": {"cpu": "500m", "memory": "128Mi"},
    }


def _resources(requests: dict[str, str], limits: dict[str, str]) -> dict[str, Any]:
    return {"requests": requests, "limits": limits}


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        # A request above the default limit raises that limit to it (a partial spec never makes request > limit).
        (
            {"requests": {"memory": "1Gi"}},
            _resources({"cpu": "10m", "memory": "1Gi"}, {"cpu": "500m", "memory": "1Gi"}),
        ),
        ({"requests": {"cpu": "2"}}, _resources({"cpu": "2", "memory": "32Mi"}, {"cpu": "2", "memory": "256Mi"})),
        # A limit below the default request lowers that request to it.
        ({"limits": {"cpu": "5m"}}, _resources({"cpu": "5m", "memory": "32Mi"}, {"cpu": "5m", "memory": "256Mi"})),
        # Both given and inconsistent: left for the API server (and the CRD rule) to refuse, naming the field.
        (
            {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Mi"}},
            _resources({"cpu": "10m", "memory": "1Gi"}, {"cpu": "500m", "memory": "1Mi"}),
        ),
        # Other resources pass through; an unparseable value is kept for the API server to name.
        (
            {"limits": {"ephemeral-storage": "1G"}, "requests": {"cpu": "bad"}},
            _resources({"cpu": "bad", "memory": "32Mi"}, {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "1G"}),
        ),
    ],
)
def test_partial_resources_keep_the_default_limits(requested: dict[str, Any], expected: dict[str, Any]) -> None:
    assert probe_resources(requested) == expected


def test_no_node_means_no_affinity() -> None:
    assert "affinity" not in pod_spec(build(node=None))
    assert "nodeName" not in pod_spec(build(node=None))


def test_node_gives_required_hostname_affinity_not_node_name() -> None:
    pod = pod_spec(build(node="worker-3"))
    assert "nodeName" not in pod
    assert pod["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["worker-3"]}]}
                ]
            }
        }
    }


def test_optional_scheduling_and_pull_fields() -> None:
    spec = make_spec(
        imagePullPolicy="IfNotPresent",
        imagePullSecrets=[{"name": "regcred"}],
        nodeSelector={"pool": "agents"},
        tolerations=[{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
    )
    job = build(spec, node="worker-1")
    pod = pod_spec(job)
    assert container(job)["imagePullPolicy"] == "IfNotPresent"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"pool": "agents"}
    assert pod["tolerations"] == [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}]
    assert "affinity" in pod


def test_optional_fields_absent_by_default() -> None:
    pod = pod_spec(build())
    for key in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity"):
        assert key not in pod


def test_manifest_is_deterministic() -> None:
    assert build(node="n1") == build(node="n1")
    assert build() != build(generation=5)


def test_manifests_do_not_share_mutable_state() -> None:
    first = build()
    pristine = copy.deepcopy(first)
    first["spec"]["template"]["metadata"]["labels"]["extra"] = "x"
    container(first)["resources"]["limits"]["memory"] = "1Gi"
    assert first["metadata"]["labels"] == pristine["metadata"]["labels"]
    assert build() == pristine
    assert DEFAULT_RESOURCES["limits"]["memory"] == "256Mi"


def test_manifest_does_not_alias_the_spec() -> None:
    env = [{"name": "X", "value": "1"}]
    spec = make_spec(env=env, imagePullSecrets=[{"name": "regcred"}])
    job = build(spec)
    container(job)["env"][3]["value"] = "2"
    pod_spec(job)["imagePullSecrets"][0]["name"] = "other"
    assert spec.env[0]["value"] == "1"
    assert spec.image_pull_secrets[0]["name"] == "regcred"


# --- a refused Job names the Slot's field -------------------------------------------------------


@pytest.mark.parametrize(
    ("job_field", "slot_field"),
    [
        ("spec.template.spec.containers[0].resources.requests", "spec.resources.requests"),
        ("spec.template.spec.containers[0].resources.limits[cpu]", "spec.resources.limits[cpu]"),
        ("spec.template.spec.tolerations[1].operator", "spec.tolerations[1].operator"),
        ("spec.template.spec.nodeSelector", "spec.nodeSelector"),
        ("spec.template.spec.imagePullSecrets[0].name", "spec.imagePullSecrets[0].name"),
        ("spec.template.spec.containers[0].image", "spec.image"),
        ("spec.template.spec.containers[0].imagePullPolicy", "spec.imagePullPolicy"),
        ("spec.template.spec.containers[0].env[3].name", "spec.env[0].name"),
        ("spec.template.spec.containers[0].env[5].valueFrom.secretKeyRef", "spec.env[2].valueFrom.secretKeyRef"),
        ("spec.template.spec.containers[0].volumeMounts[0].mountPath", "spec.mountPath"),
        ("spec.template.spec.volumes[0].persistentVolumeClaim.claimName", "spec.claimName"),
        ("spec.template.spec.securityContext.runAsUser", "spec.runAsUser"),
        ("spec.template.spec.containers[0].securityContext.runAsGroup", "spec.runAsGroup"),
        ("spec.activeDeadlineSeconds", "spec.timeout"),
        # Set by the operator itself: not the user's field.
        ("spec.template.spec.containers[0].env[1].value", None),
        ("spec.template.spec.containers[0].volumeMounts[1].mountPath", None),
        ("metadata.name", None),
        ("spec.podFailurePolicy.rules[0]", None),
    ],
)
def test_slot_field_of_a_job_field(job_field: str, slot_field: str | None) -> None:
    assert jobs.slot_field(job_field) == slot_field


def test_slot_fields_exist_in_the_built_job() -> None:
    """Every Job path the mapping knows is where build_probe_job puts that field."""
    manifest = build(make_spec(resources={"limits": {"cpu": "1"}}, nodeSelector={"a": "b"}), node=None)
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/example/agent:sha-1a2b3c"
    assert container["volumeMounts"][0]["name"] == jobs.SLOT_VOLUME
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "codex-1-home"
    assert [e["name"] for e in container["env"][:3]] == ["AGENT_MODE", "WOVED_TASK_AGENT", "HOME"]


def test_invalid_job_on_the_users_fields_is_invalid_spec() -> None:
    outcome = jobs.rejection(
        status=422,
        message='Job.batch "x" is invalid: ...',
        causes=[
            (
                "spec.template.spec.tolerations[0].operator",
                "Invalid value: \"Exists\": value must be empty when `operator` is 'Exists'",
            )
        ],
    )
    assert outcome.reason is FailureReason.INVALID_SPEC
    assert outcome.message == (
        "the API server refused the probe Job: spec.tolerations[0].operator: "
        "Invalid value: \"Exists\": value must be empty when `operator` is 'Exists'"
    )


def test_other_refusals_are_retried_and_still_name_the_field() -> None:
    quota = jobs.rejection(
        status=403, message='jobs "x" is forbidden: exceeded quota: q, requested: count/jobs', causes=[]
    )
    assert quota.reason is FailureReason.JOB_REJECTED
    assert quota.message == (
        "the API server refused the probe Job (HTTP 403): "
        'jobs "x" is forbidden: exceeded quota: q, requested: count/jobs'
    )
    ours = jobs.rejection(status=422, message="m", causes=[("metadata.name", "too long")])
    assert (ours.reason, ours.message) == (
        FailureReason.JOB_REJECTED,
        "the API server refused the probe Job (HTTP 422): metadata.name: too long",
    )


# --- the ownership audit (init container) and the migration Job -----------------------------------


def test_audit_runs_beside_the_probe_as_its_uid_with_the_claim_read_only() -> None:
    job = build(make_spec(mountPath="/home/agent", runAsUser=10001, runAsGroup=10002))
    audit = container(job, "audit")
    assert audit["image"] == AUDIT_IMAGE
    # By absolute path with an isolated interpreter, the claim where the operator chooses: never at spec.mountPath,
    # where a Slot could lay its own programs over the operator's.
    assert audit["command"] == [
        "/opt/venv/bin/python", "-I", "-m", "slot_operator", "audit", "--home=/mnt/slot", "--agent=codex"
    ]  # fmt: skip
    assert audit["workingDir"] == "/"
    assert audit["volumeMounts"] == [{"name": "slot", "mountPath": "/mnt/slot", "readOnly": True}]
    assert (audit["securityContext"]["runAsUser"], audit["securityContext"]["runAsGroup"]) == (10001, 10002)
    assert audit["terminationMessagePolicy"] == "File"  # the report is the termination message
    assert "env" not in audit  # nothing of spec.env: the audit is independent of the agent image
    assert "initContainers" not in pod_spec(job)  # an audit that cannot start never holds the probe back


@pytest.mark.parametrize("mount_path", ["/opt/venv/bin", "/opt/venv", "/mnt/slot", "/home/codex"])
def test_operator_containers_never_follow_the_slots_mount_path(mount_path: str) -> None:
    job = build(make_spec(mountPath=mount_path))
    assert container(job)["volumeMounts"][0]["mountPath"] == mount_path  # the probe's HOME is the Slot's
    assert container(job, "audit")["volumeMounts"][0]["mountPath"] == jobs.VOLUME_TOOL_MOUNT
    migration = build_migration(mountPath=mount_path)
    assert pod_spec(migration)["containers"][0]["volumeMounts"][0]["mountPath"] == jobs.VOLUME_TOOL_MOUNT


def test_the_volume_tools_mount_point_is_nothing_the_operator_image_needs() -> None:
    """The claim is laid over VOLUME_TOOL_MOUNT in the operator's image: it must hide none of that image's files."""
    needed = ("/opt/venv", "/usr", "/etc", "/bin", "/lib", "/tmp", "/dev", "/proc")
    for path in needed:
        assert not jobs.VOLUME_TOOL_MOUNT.startswith(path + "/")
        assert path != jobs.VOLUME_TOOL_MOUNT
        assert not path.startswith(jobs.VOLUME_TOOL_MOUNT + "/")
    assert jobs.OPERATOR_PYTHON.startswith("/opt/venv/")


def test_no_audit_image_means_no_audit_container() -> None:
    assert [c["name"] for c in pod_spec(build(audit_image=None))["containers"]] == ["probe"]


def test_audit_fields_that_come_from_the_slot_are_named() -> None:
    assert jobs.slot_field("spec.template.spec.containers[1].securityContext.runAsUser") == "spec.runAsUser"
    assert jobs.slot_field("spec.template.spec.containers[1].securityContext.runAsGroup") == "spec.runAsGroup"
    assert jobs.slot_field("spec.template.spec.containers[1].image") is None  # the operator's: --audit-image
    assert jobs.slot_field("spec.template.spec.containers[1].volumeMounts[0].mountPath") is None  # the operator's


def build_migration(*, dry_run: bool = False, **fields: Any) -> dict[str, Any]:
    return jobs.build_migration_job(
        name="codex-1-migrate-0123456789",
        namespace="agents",
        slot_name="codex-1",
        slot_uid=UID,
        request="tok-1",
        spec=make_spec(**fields),
        image=AUDIT_IMAGE,
        old=(1000, 1000),
        dry_run=dry_run,
        ttl=datetime.timedelta(hours=1),
    )


def test_migration_job_is_root_with_chown_and_dac_override_only() -> None:
    job = build_migration(runAsUser=10001, runAsGroup=10002)
    pod = pod_spec(job)
    (migrate,) = pod["containers"]
    assert migrate["command"] == [
        "/opt/venv/bin/python",
        "-I",
        "-m",
        "slot_operator",
        "migrate-ownership",
        "--root=/mnt/slot",
        "--from=1000:1000",
        "--to=10001:10002",
    ]
    assert migrate["workingDir"] == "/"
    sc = migrate["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE"]}
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (0, 0, False)
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["privileged"] is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert migrate["volumeMounts"] == [{"name": "slot", "mountPath": "/mnt/slot", "readOnly": False}]
    assert pod["volumes"] == [
        {"name": "slot", "persistentVolumeClaim": {"claimName": "codex-1-home", "readOnly": False}}
    ]
    assert pod["automountServiceAccountToken"] is False
    assert not set(walk_keys(job)) & {"fsGroup", "hostPath", "hostPID", "hostNetwork", "nodeName"}
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "ownership-migration"
    assert job["metadata"]["annotations"] == {
        "woved.dev/slot": "codex-1",
        "woved.dev/ownership-migration-request": "tok-1",
    }
    assert job["metadata"]["ownerReferences"][0]["uid"] == UID


def test_dry_run_cannot_change_an_owner() -> None:
    pod = pod_spec(build_migration(dry_run=True))
    (migrate,) = pod["containers"]
    assert migrate["command"][-1] == "--dry-run"
    assert migrate["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}
    assert migrate["volumeMounts"][0]["readOnly"] is True
    assert pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True


def test_own_selector_covers_probes_migrations_and_check_probes() -> None:
    assert names.OWN_SELECTOR == (
        "app.kubernetes.io/managed-by=slot-operator,"
        "app.kubernetes.io/component in (probe,ownership-migration,image-check)"
    )
    assert jobs.job_name("codex-1", UID, "t", kind="migrate").startswith("codex-1-migrate-")


CHECK = jobs.Owner(kind="SlotImageCheck", name="check-x7k2p", uid="0e5f3c1a-7b2d-4c8e-9f10-2a3b4c5d6e7f")


def build_check(spec: SlotSpec | None = None) -> dict[str, Any]:
    return jobs.build_check_job(
        name="codex-1-check-0123456789",
        namespace="agents",
        check=CHECK,
        slot_name="codex-1",
        slot_uid=UID,
        attempt=2,
        spec=spec or make_spec(image="ghcr.io/example/agent:candidate", runAsUser=10001, runAsGroup=10001),
        node=None,
        ttl=datetime.timedelta(hours=1),
        audit_image=AUDIT_IMAGE,
    )


def test_a_check_probe_is_the_slot_probe_with_the_candidate_owned_by_the_check() -> None:
    spec = make_spec(image="ghcr.io/example/agent:candidate", runAsUser=10001, runAsGroup=10001)
    check, probe = build_check(spec), build(spec)
    template = {**probe["spec"]["template"], "metadata": check["spec"]["template"]["metadata"]}
    assert check["spec"] == {**probe["spec"], "template": template}  # the same pod and policy
    assert check["metadata"]["ownerReferences"] == [
        {"apiVersion": "woved.dev/v1alpha1", "kind": "SlotImageCheck", "name": "check-x7k2p", "uid": CHECK.uid,
         "controller": True, "blockOwnerDeletion": False}
    ]  # fmt: skip
    for meta in (check["metadata"], check["spec"]["template"]["metadata"]):
        assert meta["labels"] == {
            "app.kubernetes.io/managed-by": "slot-operator",
            "app.kubernetes.io/component": "image-check",
            "woved.dev/slot-uid": UID,
        }
        assert meta["annotations"] == {"woved.dev/slot": "codex-1", "woved.dev/image-check": "check-x7k2p",
                                       "woved.dev/attempt": "2"}  # fmt: skip
    assert container(check)["image"] == "ghcr.io/example/agent:candidate"
    assert pod_spec(check)["volumes"][0]["persistentVolumeClaim"] == {"claimName": "codex-1-home", "readOnly": True}
    assert container(check, "audit")["securityContext"]["runAsUser"] == 10001


# --- every Slot spec field is accounted for ----------------------------------------------------------

# Read by the schedule, not by the Job: changing them changes when a probe runs, never what it runs.
SCHEDULE_ONLY = {"interval", "suspend"}
# A second value for each field the Job is built from.
CHANGED = {field: value for field, value in OTHER.items() if field not in SCHEDULE_ONLY}


def changed_paths(old: Any, new: Any, path: str = "") -> Iterator[str]:
    """The leaf paths (`spec.template.spec.containers[0].image`) where two built Jobs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old.keys() | new.keys():
            yield from changed_paths(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    elif isinstance(old, list) and isinstance(new, list):
        for index in range(max(len(old), len(new))):
            a, b = (old[index] if index < len(old) else None), (new[index] if index < len(new) else None)
            yield from changed_paths(a, b, f"{path}[{index}]")
    elif old != new:
        yield path


def test_every_slot_spec_field_is_either_in_the_job_or_schedule_only() -> None:
    """A new spec field fails here until it is given a place: built into the probe Job (and named back by
    slot_field, so that a refusal of the Job names the field the user wrote) or declared schedule-only."""
    assert set(SPEC_FIELDS) == set(CHANGED) | SCHEDULE_ONLY


def test_every_verdict_field_reaches_the_job_and_what_does_not_is_a_schedule_field() -> None:
    """The verdict answers for the Job the probe ran (logic/spec.py): a field the Job is not built from cannot
    change it, and each field a verdict depends on is in the Job. (timeout is in the Job, as its deadline, and
    still a schedule field: a probe past it gives no verdict, never another one.)"""
    assert set(VERDICT_FIELDS) <= set(CHANGED)
    assert SCHEDULE_ONLY.issubset(SCHEDULE_FIELDS)


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_a_spec_field_reaches_the_job_and_a_refusal_names_it(field: str) -> None:
    base = build(make_spec())
    paths = list(changed_paths(base, build(make_spec(**{field: CHANGED[field]}))))
    assert paths, f"spec.{field} changed nothing in the probe Job"
    named = {jobs.slot_field(path) for path in paths}
    fields = {name.split("[")[0].split(".")[1] for name in named if name}
    if field == "agent":  # it names the CLI (operator-set env, audit argument) and the default spec.mountPath
        assert fields == {"mountPath"}, paths
    else:  # other changed paths are the operator's own, derived from the field (HOME from mountPath)
        assert fields == {field}, (field, paths)


@pytest.mark.parametrize("field", sorted(SCHEDULE_ONLY))
def test_a_schedule_only_field_leaves_the_job_alone(field: str) -> None:
    value = {"interval": "1h", "suspend": True}[field]
    assert build(make_spec()) == build(make_spec(**{field: value}))
