"""Reading what a Job and its pods report: shared by the probe's outcome and the ownership migration's.

Input is the plain API dicts, as the caches hold them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Waiting reasons of a container whose image cannot be pulled.
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


def true_condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The object's condition `kind` when it is True, else None."""
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def newest(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods, most recently created first (a Job's retries and replacements)."""
    return sorted(pods, key=lambda pod: str((pod.get("metadata") or {}).get("creationTimestamp") or ""), reverse=True)


def container_state(pod: Mapping[str, Any], name: str, *, init: bool = False) -> Mapping[str, Any]:
    """The `state` of the pod's container (or init container) `name`; empty when it has none yet."""
    key = "initContainerStatuses" if init else "containerStatuses"
    for status in (pod.get("status") or {}).get(key) or ():
        if status.get("name") == name:
            return dict(status.get("state") or {})
    return {}
