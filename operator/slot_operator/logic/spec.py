"""A Slot's spec, parsed and defaulted, with errors that name the field.

The CRD schema rejects most bad input at admission; this catches what it cannot
(objects stored before a schema change, defaults that depend on operator flags).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from slot_operator.logic import durations, quantity

AGENTS = ("claude", "codex")
# Set by the operator on every probe: a user's env entry cannot replace them.
RESERVED_ENV = frozenset({"AGENT_MODE", "WOVED_TASK_AGENT", "HOME"})
# The probe's writable scratch directory (its root filesystem is read-only).
SCRATCH_PATH = "/tmp"
# Directories the container itself needs (the runtime and the kubelet mount into them, the image's
# programs and libraries live there): a slot is never mounted on or below them. The CRD's CEL rules
# on spec.mountPath carry the same list; tests/unit/operator/test_spec.py keeps the two in step.
SYSTEM_PATHS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/run",
)
MIN_TIMEOUT = datetime.timedelta(seconds=5)
MAX_TIMEOUT = datetime.timedelta(hours=1)
MIN_INTERVAL = datetime.timedelta(minutes=1)
MAX_INTERVAL = datetime.timedelta(hours=720)
# The probe container's resources where spec.resources names none (probe_resources merges key by key).
DEFAULT_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}
# Every spec field is one of two kinds (docs/design.md §2.3). A verdict answers for what the probe runs
# with: a change of any VERDICT_FIELD is a spec the verdict has not judged, so it waits for its own probe.
# SCHEDULE_FIELDS say when and whether probes run, never what they run: a generation that changes only
# them keeps the verdict of the one before (status.carried). tests/unit/test_spec.py fails until a new
# CRD spec field is in one of the two.
VERDICT_FIELDS = (
    "agent",
    "claimName",
    "image",
    "mountPath",
    "runAsUser",
    "runAsGroup",
    "imagePullPolicy",
    "imagePullSecrets",
    "env",
    "resources",
    "nodeSelector",
    "tolerations",
)
SCHEDULE_FIELDS = ("interval", "timeout", "suspend")


class InvalidSpec(ValueError):
    """The spec cannot be probed; the message names the field."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlotSpec:
    agent: str
    claim_name: str
    image: str
    mount_path: str
    run_as_user: int
    run_as_group: int
    interval: datetime.timedelta
    timeout: datetime.timedelta
    suspend: bool
    image_pull_policy: str | None
    image_pull_secrets: tuple[Mapping[str, Any], ...]
    env: tuple[Mapping[str, Any], ...]
    resources: Mapping[str, Any]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]

    @functools.cached_property
    def fingerprint(self) -> str:
        """verdict_fingerprint(self), made once per parsed spec (a reconcile asks for it several times)."""
        return _fingerprint(self)


def _duration(
    spec: Mapping[str, Any], field: str, default: datetime.timedelta, low: datetime.timedelta, high: datetime.timedelta
) -> datetime.timedelta:
    raw = spec.get(field)
    if raw is None:
        return default
    try:
        value = durations.parse_duration(str(raw))
    except ValueError as exc:
        raise InvalidSpec(f"spec.{field}: {exc}") from None
    if not low <= value <= high:
        raise InvalidSpec(
            f"spec.{field}: {raw!r} is outside {durations.format_duration(low)}..{durations.format_duration(high)}"
        )
    return value


def _id(spec: Mapping[str, Any], field: str) -> int:
    raw = spec.get(field, 10001)
    if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
        raise InvalidSpec(f"spec.{field}: must be a positive integer (the probe never runs as root), got {raw!r}")
    return raw


def normalise_mount_path(raw: object) -> str:
    """The absolute path `raw` names, without `//`, `.` or a trailing `/`; InvalidSpec unless it is a fit home.

    `..` is refused rather than resolved: where it leads depends on symlinks inside the image, which
    neither the API server nor the operator can see. The messages are those of the CRD's CEL rules.
    """
    if not isinstance(raw, str) or not raw.startswith("/"):
        raise InvalidSpec(f"spec.mountPath: must be an absolute path (starting with /), got {raw}")
    if "$" in raw:
        raise InvalidSpec(
            f"spec.mountPath: must not contain '$' (Kubernetes would expand $(VAR) in HOME but not in the mount), "
            f"got {raw}"
        )
    parts = raw.split("/")
    if ".." in parts:
        raise InvalidSpec(
            f"spec.mountPath: must not contain '..' (where it leads depends on symlinks in the image), got {raw}"
        )
    path = "/" + "/".join(part for part in parts if part not in ("", "."))
    if path == "/":
        raise InvalidSpec(f"spec.mountPath: {raw} is the root directory")
    if path == SCRATCH_PATH:
        raise InvalidSpec(f"spec.mountPath: {raw} is {SCRATCH_PATH}, the probe's scratch space; choose another path")
    for system in SYSTEM_PATHS:
        if path == system or path.startswith(system + "/"):
            raise InvalidSpec(f"spec.mountPath: {raw} is under {system}, which the container itself needs")
    return path


def parse_spec(
    spec: Mapping[str, Any], *, default_interval: datetime.timedelta, default_timeout: datetime.timedelta
) -> SlotSpec:
    agent = spec.get("agent")
    if agent not in AGENTS:
        raise InvalidSpec(f"spec.agent: must be one of {', '.join(AGENTS)}, got {agent!r}")
    for field in ("claimName", "image"):
        if not isinstance(spec.get(field), str) or not spec[field]:
            raise InvalidSpec(f"spec.{field}: required")
    mount_path = normalise_mount_path(spec.get("mountPath") or f"/home/{agent}")
    env = tuple(spec.get("env") or ())
    clashes = sorted({str(entry.get("name")) for entry in env} & RESERVED_ENV)
    if clashes:
        raise InvalidSpec(f"spec.env: {', '.join(clashes)} is set by the operator and cannot be overridden")
    return SlotSpec(
        agent=agent,
        claim_name=spec["claimName"],
        image=spec["image"],
        mount_path=mount_path,
        run_as_user=_id(spec, "runAsUser"),
        run_as_group=_id(spec, "runAsGroup"),
        interval=_duration(spec, "interval", default_interval, MIN_INTERVAL, MAX_INTERVAL),
        timeout=_duration(spec, "timeout", default_timeout, MIN_TIMEOUT, MAX_TIMEOUT),
        suspend=bool(spec.get("suspend", False)),
        image_pull_policy=spec.get("imagePullPolicy"),
        image_pull_secrets=tuple(spec.get("imagePullSecrets") or ()),
        env=env,
        resources=dict(spec.get("resources") or {}),
        node_selector=dict(spec.get("nodeSelector") or {}),
        tolerations=tuple(spec.get("tolerations") or ()),
    )


def probe_resources(requested: Mapping[str, Any]) -> dict[str, Any]:
    """The probe container's resources: spec.resources over the defaults, key by key.

    A partial spec keeps the defaults it does not name (setting only a memory request keeps the
    default limits). Where a named request exceeds the default limit of the same resource, that limit
    becomes the request; where a named limit is below the default request, that request becomes the
    limit: a merge never produces a request above its limit.
    """
    user_requests = dict(requested.get("requests") or {})
    user_limits = dict(requested.get("limits") or {})
    requests = {**DEFAULT_RESOURCES["requests"], **user_requests}
    limits = {**DEFAULT_RESOURCES["limits"], **user_limits}
    for name in set(requests) & set(limits):
        try:
            above = quantity.parse(requests[name]) > quantity.parse(limits[name])
        except ValueError:
            continue  # the API server names the bad quantity when it refuses the Job
        if above and name not in user_limits:
            limits[name] = requests[name]
        elif above and name not in user_requests:
            requests[name] = limits[name]
    merged: dict[str, Any] = {key: value for key, value in requested.items() if key not in ("requests", "limits")}
    merged.update(requests=requests, limits=limits)
    return merged


def pull_policy(image: str, policy: str | None) -> str:
    """The pull policy the probe gets: the one named, else Kubernetes' default for the image (Always for
    `:latest` or no tag at all, IfNotPresent for any other tag or a digest)."""
    if policy:
        return policy
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2] if ":" in last else ("" if digest else "latest")
    return "Always" if tag == "latest" else "IfNotPresent"


def _attribute(field: str) -> str:
    """The SlotSpec attribute of a spec field (`claimName` -> `claim_name`)."""
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in field)


_VERDICT_ATTRIBUTES = {field: _attribute(field) for field in VERDICT_FIELDS}


def verdict_fingerprint(spec: SlotSpec) -> str:
    """A stable digest of the VERDICT_FIELDS as the probe sees them, defaults applied: two specs with the
    same fingerprint are probed alike, so one verdict answers for both (recorded as `specHash` with every
    probe). Writing a default out (`runAsUser: 10001`, `mountPath: /home/codex`, `env: []`, the default
    resources, `imagePullPolicy: IfNotPresent` for a tagged image) changes nothing."""
    return spec.fingerprint


def _fingerprint(spec: SlotSpec) -> str:
    values: dict[str, Any] = {field: getattr(spec, attribute) for field, attribute in _VERDICT_ATTRIBUTES.items()}
    values["imagePullPolicy"] = pull_policy(spec.image, spec.image_pull_policy)
    values["resources"] = probe_resources(spec.resources)
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
