"""A Slot's spec, parsed and defaulted, with errors that name the field.

The CRD schema rejects most bad input at admission; this catches what it cannot
(objects stored before a schema change, defaults that depend on operator flags).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from slot_operator.logic import durations

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
