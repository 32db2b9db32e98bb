"""Whose object it is, by identity: its controller ownerReference (kind, API version, uid), never its labels.

A Job is a Slot's only when it is in the Slot's namespace and its controller reference names the
Slot's uid; a pod is a Job's only when its controller reference names the Job's uid (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slot_operator.logic import names


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The object's controller ownerReference (the one with `controller: true`), if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_uid(obj: Mapping[str, Any], *, api_version: str, kind: str) -> str | None:
    """The uid of the object's controller when it is a `kind` of `api_version`; else None."""
    ref = controller_of(obj)
    if ref is None or ref.get("kind") != kind or ref.get("apiVersion") != api_version or not ref.get("uid"):
        return None
    return str(ref["uid"])


def slot_owner_uid(job: Mapping[str, Any]) -> str | None:
    """The uid of the Slot that controls `job` (the namespace is the Job's own)."""
    return owner_uid(job, api_version=names.API_VERSION, kind=names.SLOT_KIND)


def job_owner_uid(pod: Mapping[str, Any]) -> str | None:
    """The uid of the Job that controls `pod` (the namespace is the pod's own)."""
    return owner_uid(pod, api_version="batch/v1", kind="Job")


def check_owner_uid(job: Mapping[str, Any]) -> str | None:
    """The uid of the SlotImageCheck that controls `job` (the namespace is the Job's own)."""
    return owner_uid(job, api_version=names.API_VERSION, kind=names.CHECK_KIND)
