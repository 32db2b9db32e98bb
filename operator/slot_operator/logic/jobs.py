"""The probe Job manifest and its deterministic name."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import re
from collections.abc import Sequence
from typing import Any

from slot_operator.logic import names, ownership
from slot_operator.logic.outcome import NoVerdict
from slot_operator.logic.phases import VERDICT_EXIT_CODES
from slot_operator.logic.spec import SCRATCH_PATH, SlotSpec, probe_resources
from slot_operator.logic.verdict import FailureReason

SLOT_VOLUME = "slot"
TMP_VOLUME = "tmp"
# The operator's image runs the audit and the migration: its interpreter (Dockerfile: the venv at /opt/venv), and
# where they see the slot's claim. A path of the operator's choosing, never spec.mountPath: a Slot could otherwise
# mount its claim over the operator's own programs (/opt/venv/bin) and have them run as root in the migration.
OPERATOR_PYTHON = "/opt/venv/bin/python"
VOLUME_TOOL_MOUNT = "/mnt/slot"
# The audit and the migration: one Python process walking directories.
VOLUME_TOOL_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"cpu": "500m", "memory": "128Mi"},
}
# A migration walks the whole volume once; longer than this and something is wrong.
MIGRATION_DEADLINE = datetime.timedelta(minutes=10)
# Where the parts of a probe Job come from in the Slot (build_probe_job), longest Job path first, so that a
# refusal of the Job names the field the user wrote.
_POD = "spec.template.spec."
_CONTAINER = _POD + "containers[0]."
_AUDIT = _POD + "containers[1]."
_SLOT_FIELDS = (
    (_CONTAINER + "volumeMounts[0]", "spec.mountPath"),
    (_AUDIT + "securityContext.runAsGroup", "spec.runAsGroup"),
    (_AUDIT + "securityContext.runAsUser", "spec.runAsUser"),
    (_CONTAINER + "imagePullPolicy", "spec.imagePullPolicy"),
    (_CONTAINER + "securityContext.runAsGroup", "spec.runAsGroup"),
    (_CONTAINER + "securityContext.runAsUser", "spec.runAsUser"),
    (_POD + "securityContext.runAsGroup", "spec.runAsGroup"),
    (_POD + "securityContext.runAsUser", "spec.runAsUser"),
    (_POD + "volumes[0].persistentVolumeClaim", "spec.claimName"),
    (_CONTAINER + "resources", "spec.resources"),
    (_CONTAINER + "image", "spec.image"),
    (_POD + "imagePullSecrets", "spec.imagePullSecrets"),
    (_POD + "nodeSelector", "spec.nodeSelector"),
    (_POD + "tolerations", "spec.tolerations"),
    ("spec.activeDeadlineSeconds", "spec.timeout"),
)
_ENV = re.compile(re.escape(_CONTAINER) + r"env\[(\d+)\](.*)")
_OPERATOR_ENV = 3  # AGENT_MODE, WOVED_TASK_AGENT, HOME come before spec.env


def slot_field(job_field: str) -> str | None:
    """The Slot field a probe Job field was built from (`spec.template.spec.tolerations[0].operator` ->
    `spec.tolerations[0].operator`), or None for what the operator sets itself."""
    env = _ENV.fullmatch(job_field)
    if env:
        index = int(env.group(1)) - _OPERATOR_ENV
        return f"spec.env[{index}]{env.group(2)}" if index >= 0 else None
    for prefix, field in _SLOT_FIELDS:
        if job_field == prefix or job_field.startswith((prefix + ".", prefix + "[")):
            rest = job_field[len(prefix) :]
            return field + (rest if field not in ("spec.mountPath", "spec.claimName", "spec.timeout") else "")
    return None


def rejection(*, status: int, message: str, causes: Sequence[tuple[str, str]]) -> NoVerdict:
    """What the API server's refusal of a probe Job means for the Slot.

    Invalid (422) on fields the Slot's spec sets: the spec is at fault and would be refused again
    (InvalidSpec, not retried). Anything else (quota, an admission policy, a field the operator sets)
    may pass later: ProbeJobRejected, retried with backoff. Either way the message names the field.
    """
    named = [(slot_field(field), field, text) for field, text in causes]
    details = "; ".join(f"{slot or field}: {text}" for slot, field, text in named) or message
    if status == 422 and named and all(slot for slot, _, _ in named):
        return NoVerdict(reason=FailureReason.INVALID_SPEC, message=f"the API server refused the probe Job: {details}")
    return NoVerdict(
        reason=FailureReason.JOB_REJECTED, message=f"the API server refused the probe Job (HTTP {status}): {details}"
    )


# backoffLimit=1: exit 1/other is "crashed before a check fired", worth one immediate retry by the Job
# controller; the operator's own backoff takes over after that. Verdict exit codes fail the Job at once.
BACKOFF_LIMIT = 1


def job_name(slot_name: str, slot_uid: str, token: str, *, kind: str = "probe") -> str:
    """`<slot>-<kind>-<hash>`: ≤63 characters (the Job controller copies it into a label)."""
    digest = hashlib.sha256(f"{slot_uid}/{token}".encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]", "-", slot_name.lower())[:45].strip("-") or "slot"
    return f"{stem}-{kind}-{digest}"


def _restricted(*, uid: int, gid: int) -> dict[str, Any]:
    """A container security context that passes the Pod Security restricted profile."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class Owner:
    """The object that controls a Job (its Slot, or for a check's probe its SlotImageCheck): it goes with it."""

    kind: str
    name: str
    uid: str


def _labels(component: str, slot_uid: str) -> dict[str, str]:
    """The operator's labels (they narrow its watches; identity is the ownerReference) and the Slot's uid."""
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: component, names.LABEL_SLOT_UID: slot_uid}


def _owner_references(owner: Owner) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": names.API_VERSION,
            "kind": owner.kind,
            "name": owner.name,
            "uid": owner.uid,
            "controller": True,
            # False: blocking would need update rights on the owner's finalizers, and nothing waits on it.
            "blockOwnerDeletion": False,
        }
    ]


def _scheduling(pod_spec: dict[str, Any], spec: SlotSpec) -> None:
    """The Slot's pull secrets, node selector and tolerations, which every pod on its claim gets."""
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [dict(secret) for secret in spec.image_pull_secrets]
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(toleration) for toleration in spec.tolerations]


def _job(
    *,
    name: str,
    namespace: str,
    owner: Owner,
    labels: dict[str, str],
    annotations: dict[str, str],
    policy: dict[str, Any],
    pod_spec: dict[str, Any],
) -> dict[str, Any]:
    """A Job owned by `owner` (garbage-collected with it), its pods labelled and annotated like it."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": _owner_references(owner),
        },
        "spec": {
            **policy,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": pod_spec,
            },
        },
    }


def operator_command(*args: str) -> list[str]:
    """A command of the operator's own image, started so that nothing on a slot's volume can stand in for it.

    By absolute path (no PATH lookup), with an isolated interpreter (-I: no PYTHON* variables, no user
    site directory, neither the working directory nor a script's directory on sys.path).
    """
    return [OPERATOR_PYTHON, "-I", "-m", "slot_operator", *args]


def build_audit_container(*, image: str, spec: SlotSpec) -> dict[str, Any]:
    """The ownership audit beside the probe: as the probe's uid/gid, the claim read-only at VOLUME_TOOL_MOUNT."""
    return {
        "name": names.AUDIT_CONTAINER,
        "image": image,
        "command": operator_command("audit", f"--home={VOLUME_TOOL_MOUNT}", f"--agent={spec.agent}"),
        "workingDir": "/",
        "volumeMounts": [{"name": SLOT_VOLUME, "mountPath": VOLUME_TOOL_MOUNT, "readOnly": True}],
        "resources": copy.deepcopy(VOLUME_TOOL_RESOURCES),
        "terminationMessagePolicy": "File",
        "securityContext": _restricted(uid=spec.run_as_user, gid=spec.run_as_group),
    }


def _node_affinity(node: str) -> dict[str, Any]:
    # Required affinity, not nodeName: nodeName would bypass the scheduler (and WaitForFirstConsumer binding).
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
                ]
            }
        }
    }


def build_probe_container(spec: SlotSpec) -> dict[str, Any]:
    """The smoke test: the agent image, HOME on the claim (read-only), as the slot's uid/gid."""
    env: list[dict[str, Any]] = [
        {"name": "AGENT_MODE", "value": "smoke-test"},
        {"name": "WOVED_TASK_AGENT", "value": spec.agent},
        {"name": "HOME", "value": spec.mount_path},
        *(dict(entry) for entry in spec.env),
    ]
    container: dict[str, Any] = {
        "name": names.PROBE_CONTAINER,
        "image": spec.image,
        "env": env,
        "volumeMounts": [
            {"name": SLOT_VOLUME, "mountPath": spec.mount_path, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": SCRATCH_PATH},
        ],
        "resources": probe_resources(spec.resources),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _restricted(uid=spec.run_as_user, gid=spec.run_as_group),
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    return container


def build_probe_pod(spec: SlotSpec, *, node: str | None, audit_image: str | None) -> dict[str, Any]:
    """The probe pod: the smoke test (and the audit beside it), the claim read-only, a small /tmp, no token."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # No fsGroup: it would make the kubelet rewrite ownership on the slot volume.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": spec.run_as_user,
            "runAsGroup": spec.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [build_probe_container(spec)],
        "volumes": [
            {"name": SLOT_VOLUME, "persistentVolumeClaim": {"claimName": spec.claim_name, "readOnly": True}},
            # The root filesystem is read-only; a CLI that needs scratch space gets a small /tmp.
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    if audit_image:
        # Beside the probe, not before it: an audit that cannot run (its image out of reach) never keeps the
        # probe from giving its verdict; ownership is then Unknown (docs/design.md §2.4).
        pod_spec["containers"].append(build_audit_container(image=audit_image, spec=spec))
    _scheduling(pod_spec, spec)
    if node:
        pod_spec["affinity"] = _node_affinity(node)
    return pod_spec


def probe_policy(*, timeout: datetime.timedelta, ttl: datetime.timedelta, audit: bool) -> dict[str, Any]:
    """How the Job controller runs a probe: one retry of a crash, none of a verdict, the deadline, the TTL."""
    rules: list[dict[str, Any]] = [
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": names.PROBE_CONTAINER,
                "operator": "In",
                "values": list(VERDICT_EXIT_CODES),
            },
        },
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]
    if audit:
        # A failed audit (it always exits 0 once it ran) must not make the Job run the probe again.
        audit_failed = {"containerName": names.AUDIT_CONTAINER, "operator": "NotIn", "values": [0]}
        rules.insert(1, {"action": "FailJob", "onExitCodes": audit_failed})
    return {
        "backoffLimit": BACKOFF_LIMIT,
        "activeDeadlineSeconds": max(1, int(timeout.total_seconds())),
        "ttlSecondsAfterFinished": int(ttl.total_seconds()),
        "podFailurePolicy": {"rules": rules},
    }


def build_probe_job(
    *,
    name: str,
    namespace: str,
    slot_name: str,
    slot_uid: str,
    generation: int,
    trigger: str,
    spec: SlotSpec,
    node: str | None,
    ttl: datetime.timedelta,
    audit_image: str | None,
) -> dict[str, Any]:
    """A Job that runs the image's smoke test against the slot's claim, read-only, as the slot's uid/gid.

    With `audit_image`, the ownership audit runs beside it (docs/design.md §2.4).
    """
    labels = _labels(names.COMPONENT_PROBE, slot_uid)
    annotations = {
        names.ANNOTATION_SLOT: slot_name,
        names.ANNOTATION_GENERATION: str(generation),
        names.ANNOTATION_TRIGGER: trigger,
    }
    return _job(
        name=name,
        namespace=namespace,
        owner=Owner(kind=names.SLOT_KIND, name=slot_name, uid=slot_uid),
        labels=labels,
        annotations=annotations,
        policy=probe_policy(timeout=spec.timeout, ttl=ttl, audit=bool(audit_image)),
        pod_spec=build_probe_pod(spec, node=node, audit_image=audit_image),
    )


def build_check_job(
    *,
    name: str,
    namespace: str,
    check: Owner,
    slot_name: str,
    slot_uid: str,
    attempt: int,
    spec: SlotSpec,
    node: str | None,
    ttl: datetime.timedelta,
    audit_image: str | None,
) -> dict[str, Any]:
    """A SlotImageCheck's probe of one Slot: the Slot's probe Job with the candidate in `spec`, owned by the check.

    The same pod, read-only mount, audit and failure policy as the Slot's own probe (docs/design.md §2.5); only
    what ties it to the check differs: component image-check, the check as its one controller.
    """
    labels = _labels(names.COMPONENT_CHECK, slot_uid)
    annotations = {names.ANNOTATION_SLOT: slot_name, names.ANNOTATION_CHECK: check.name,
                   names.ANNOTATION_ATTEMPT: str(attempt)}  # fmt: skip
    return _job(
        name=name,
        namespace=namespace,
        owner=check,
        labels=labels,
        annotations=annotations,
        policy=probe_policy(timeout=spec.timeout, ttl=ttl, audit=bool(audit_image)),
        pod_spec=build_probe_pod(spec, node=node, audit_image=audit_image),
    )


def _migration_container(*, image: str, old: ownership.Owner, new: ownership.Owner, dry_run: bool) -> dict[str, Any]:
    """Root with CAP_CHOWN (not in a dry run) and CAP_DAC_OVERRIDE only, the claim at VOLUME_TOOL_MOUNT."""
    command = operator_command(
        "migrate-ownership",
        f"--root={VOLUME_TOOL_MOUNT}",
        f"--from={ownership.owner(*old)}",
        f"--to={ownership.owner(*new)}",
        *(["--dry-run"] if dry_run else []),
    )
    return {
        "name": names.MIGRATE_CONTAINER,
        "image": image,
        "command": command,
        "workingDir": "/",
        "volumeMounts": [{"name": SLOT_VOLUME, "mountPath": VOLUME_TOOL_MOUNT, "readOnly": dry_run}],
        "resources": copy.deepcopy(VOLUME_TOOL_RESOURCES),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE"] if dry_run else ["CHOWN", "DAC_OVERRIDE"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            # Root: capabilities added to a non-root container never reach its effective set.
            "runAsNonRoot": False,
            "runAsUser": 0,
            "runAsGroup": 0,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def build_migration_job(
    *,
    name: str,
    namespace: str,
    slot_name: str,
    slot_uid: str,
    request: str,
    spec: SlotSpec,
    image: str,
    old: ownership.Owner,
    dry_run: bool,
    ttl: datetime.timedelta,
) -> dict[str, Any]:
    """The one-shot ownership migration: re-own the entries of `old` to the Slot's runAsUser:runAsGroup.

    Root with CAP_CHOWN and CAP_DAC_OVERRIDE only (Pod Security baseline admits both, restricted
    neither), no privilege escalation, read-only root filesystem, the claim read-write. A dry run
    mounts the claim read-only and has no CAP_CHOWN: it cannot change an owner even by mistake.
    """
    new = (spec.run_as_user, spec.run_as_group)
    labels = _labels(names.COMPONENT_MIGRATION, slot_uid)
    annotations = {names.ANNOTATION_SLOT: slot_name, names.ANNOTATION_MIGRATION_REQUEST: request}
    container = _migration_container(image=image, old=old, new=new, dry_run=dry_run)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [
            {"name": SLOT_VOLUME, "persistentVolumeClaim": {"claimName": spec.claim_name, "readOnly": dry_run}}
        ],
    }
    _scheduling(pod_spec, spec)
    policy = {
        "backoffLimit": 0,  # one-shot: a failed walk is reported, not repeated behind a person's back
        "activeDeadlineSeconds": int(MIGRATION_DEADLINE.total_seconds()),
        "ttlSecondsAfterFinished": int(ttl.total_seconds()),
    }
    return _job(
        name=name,
        namespace=namespace,
        owner=Owner(kind=names.SLOT_KIND, name=slot_name, uid=slot_uid),
        labels=labels,
        annotations=annotations,
        policy=policy,
        pod_spec=pod_spec,
    )
