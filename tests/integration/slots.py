"""Test-side helpers for Slots: create, read, wait for verdicts, inspect probe Jobs and events."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

from kubernetes import client

from tests.integration.factories import ClaimFactory
from tests.integration.kubewait import wait_for
from tools import image as image_tool

GROUP, VERSION, PLURAL = "woved.dev", "v1alpha1", "slots"
PROBE_SELECTOR = "app.kubernetes.io/managed-by=slot-operator,app.kubernetes.io/component=probe"
CODEX_IMAGE = "local/agent-shell:codex"
CLAUDE_IMAGE = "local/agent-shell:claude"
BROKEN_IMAGE = "local/agent-shell:broken-cli"
AGENT_UID = AGENT_GID = 10001
# The operator's own image in the node simulator, for the ownership audit and migration (--audit-image).
OPERATOR_IMAGE = image_tool.operator_image()
# Codex credentials the fake agent's smoke test accepts (docs/design.md §1: ~/.codex/auth.json parses as JSON).
VALID_CODEX = json.dumps({"tokens": {"access_token": "a", "refresh_token": "r"}, "last_refresh": "2026-11-01"})


def create_slot(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    claim: str,
    agent: str = "codex",
    image: str = CODEX_IMAGE,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Slot",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"agent": agent, "claimName": claim, "image": image, **spec},
    }
    return dict(client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body))


# SlotImageChecks (docs/design.md §2.5)
CHECKS = "slotimagechecks"
CHECK_SELECTOR = "app.kubernetes.io/managed-by=slot-operator,app.kubernetes.io/component=image-check"


def create_check(api: client.ApiClient, namespace: str, name: str, *, image: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SlotImageCheck",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"image": image, **spec},
    }
    return dict(client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, CHECKS, body))


def get_check(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, CHECKS, name))


def wait_check(
    api: client.ApiClient, namespace: str, name: str, phases: tuple[str, ...] = ("Succeeded", "Failed", "Error"),
    *, timeout: float = 120,
) -> dict[str, Any]:  # fmt: skip
    """Wait for the check to reach one of `phases` (by default: finished); returns it."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal seen
        seen = get_check(api, namespace, name)
        return (seen.get("status") or {}).get("phase") in phases

    wait_for(reached, timeout=timeout, message=f"check {namespace}/{name} in {phases}",
             describe=lambda: json.dumps(seen.get("status"), indent=1))  # fmt: skip
    return seen


def get_slot(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def patch_slot(api: client.ApiClient, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
    )


def condition(slot: dict[str, Any], kind: str) -> dict[str, Any]:
    for entry in (slot.get("status") or {}).get("conditions") or ():
        if entry.get("type") == kind:
            return dict(entry)
    return {}


def wait_slot(
    api: client.ApiClient,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 90,
    message: str = "",
) -> dict[str, Any]:
    """Wait until `predicate(slot)` holds; returns that slot."""
    seen: dict[str, Any] = {}

    def check() -> bool:
        nonlocal seen
        seen = get_slot(api, namespace, name)
        return predicate(seen)

    wait_for(
        check,
        timeout=timeout,
        message=message or f"slot {namespace}/{name}",
        describe=lambda: json.dumps(seen.get("status"), indent=1),
    )
    return seen


def wait_reason(
    api: client.ApiClient, namespace: str, name: str, kind: str, reason: str, *, timeout: float = 90
) -> dict[str, Any]:
    """Wait until the Slot's condition `kind` has reason `reason`; returns that slot."""
    return wait_slot(api, namespace, name, lambda s: condition(s, kind).get("reason") == reason, timeout=timeout,
                     message=f"slot {namespace}/{name}: {kind} {reason}")  # fmt: skip


def wait_verdict(
    api: client.ApiClient, namespace: str, name: str, phase: str, *, generation: int | None = None, timeout: float = 90
) -> dict[str, Any]:
    def done(slot: dict[str, Any]) -> bool:
        ready = condition(slot, "Ready")
        wanted = generation or slot["metadata"]["generation"]
        return (
            (slot.get("status") or {}).get("phase") == phase
            and ready.get("observedGeneration") == wanted
            and condition(slot, "Reconciling").get("status") == "False"
        )

    return wait_slot(api, namespace, name, done, timeout=timeout, message=f"slot {namespace}/{name} phase {phase}")


def probe_jobs(api: client.ApiClient, namespace: str) -> list[Any]:
    return list(client.BatchV1Api(api).list_namespaced_job(namespace, label_selector=PROBE_SELECTOR).items)


def slot_events(api: client.ApiClient, namespace: str, name: str) -> list[Any]:
    events = (
        client.CoreV1Api(api)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.kind=Slot,involvedObject.name={name}")
        .items
    )
    return list(events)


def write_file(
    home: pathlib.Path,
    relative: str,
    content: str | bytes,
    *,
    uid: int = AGENT_UID,
    gid: int = AGENT_GID,
    mode: int = 0o600,
) -> pathlib.Path:
    """Write `home/relative` as the slot's owner would have, directories below `home` owned the same way."""
    path = home / relative
    directory = home
    for part in pathlib.PurePath(relative).parts[:-1]:
        directory = directory / part
        directory.mkdir(exist_ok=True)
        os.chown(directory, uid, gid)
        directory.chmod(0o700)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def valid_home(claim: ClaimFactory, name: str = "home", **kwargs: Any) -> pathlib.Path:
    """`claim(name, **kwargs)`, its home holding codex credentials the fake agent accepts: a probe says Ready."""
    home = claim(name, **kwargs)
    write_file(home, ".codex/auth.json", VALID_CODEX)
    return home


def valid_homes(claim: ClaimFactory, count: int) -> None:
    """Claims `home-0` to `home-{count - 1}`, each a valid_home."""
    for index in range(count):
        valid_home(claim, f"home-{index}")


def wait_event(api: client.ApiClient, namespace: str, name: str, *, reason: str, kind: str) -> None:
    """Wait for an Event on the Slot: the operator posts it just after the status write a test waits on."""

    def posted() -> bool:
        return any(e.reason == reason and e.type == kind for e in slot_events(api, namespace, name))

    wait_for(
        posted,
        timeout=30,
        message=f"{kind} event {reason} on slot {namespace}/{name}",
        describe=lambda: [(e.type, e.reason) for e in slot_events(api, namespace, name)],
    )
