"""The ownership migration's test-side helpers (test_ownership.py, test_trust_boundary.py, the `uid_1000_slot` fixture).

A home as the uid-1000 image left it, its lstat manifest, a person's approval, and what the Slot answers.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import Any

from kubernetes import client

from tests.integration import slots
from tests.integration.factories import ClaimFactory, OperatorFactory
from tests.integration.slots import VALID_CODEX, condition, create_slot, patch_slot, wait_slot, write_file

OLD = (1000, 1000)
REQUEST = "woved.dev/ownership-migration-requested-at"
DRY_RUN = "woved.dev/ownership-migration-dry-run"
Manifest = dict[str, tuple[int, int, int, int, int, str]]


def manifest(root: pathlib.Path) -> Manifest:
    """Every entry under `root` (itself included), from lstat alone: mode, owner, size, mtime, symlink target."""
    result: Manifest = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = pathlib.Path(dirpath) / name
            st = path.lstat()
            target = os.readlink(path) if path.is_symlink() else ""
            result[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, target)
    return result


def old_image_home(home: pathlib.Path, *, link_to: pathlib.Path | None = None) -> None:
    """A home the uid-1000 image wrote: the root, ~/.codex (0700) and auth.json (0600) all 1000:1000."""
    write_file(home, ".codex/auth.json", VALID_CODEX, uid=1000, gid=1000)
    write_file(home, ".cache/history", "x", uid=1000, gid=1000)
    os.chown(home, *OLD)
    home.chmod(0o755)  # others may enter the home (0750 would hide even ~/.codex's owner from uid 10001)
    # Someone else's files: never touched by a migration.
    write_file(home, "shared/root-owned", "r", uid=0, gid=0, mode=0o644)
    write_file(home, "shared/other-user", "o", uid=2000, gid=2000, mode=0o644)
    if link_to is not None:
        (home / ".codex" / "link-out").symlink_to(link_to)
        os.lchown(home / ".codex" / "link-out", *OLD)


def diagnosed(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return wait_slot(
        api,
        namespace,
        name,
        lambda s: (
            (s.get("status") or {}).get("phase") == "NeedsInit"
            and condition(s, "OwnershipMatches").get("reason") == "OwnedByOtherUser"
        ),
        message="NeedsInit, diagnosed as OwnedByOtherUser",
    )


def request_migration(api: client.ApiClient, namespace: str, name: str, token: str, *, dry_run: bool = False) -> None:
    annotations = {REQUEST: token, DRY_RUN: "true" if dry_run else None}
    patch_slot(api, namespace, name, {"metadata": {"annotations": annotations}})


def approve(api: client.ApiClient, namespace: str, name: str, *, dry_run: bool = False) -> str:
    """Approve what the audit on record found, as a person would: with the token status offers for it."""
    token = str(slots.get_slot(api, namespace, name)["status"]["ownership"]["approval"])
    request_migration(api, namespace, name, token, dry_run=dry_run)
    return token


def answered(api: client.ApiClient, namespace: str, name: str, token: str) -> dict[str, Any]:
    return wait_slot(
        api,
        namespace,
        name,
        lambda s: (s.get("status") or {}).get("lastHandledOwnershipMigrationRequest") == token,
        timeout=120,
        message=f"migration request {token} answered",
    )


def pod_security(core: client.CoreV1Api, namespace: str, level: str) -> None:
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": level}}})


def migration_jobs(api: client.ApiClient, namespace: str) -> list[Any]:
    return list(
        client.BatchV1Api(api)
        .list_namespaced_job(namespace, label_selector="app.kubernetes.io/component=ownership-migration")
        .items
    )


def uid_1000_slot(
    api: client.ApiClient,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
    *flags: str,
    level: str = "baseline",
) -> tuple[pathlib.Path, Manifest, dict[str, Any]]:
    """A Slot `s` on a home the uid-1000 image wrote, the namespace at Pod Security `level`, the operator started
    with `flags`; once diagnosed: (its home, the home's manifest before, the Slot). The `uid_1000_slot` fixture."""
    home = claim("home")
    old_image_home(home)
    # The migration pod runs as root with CAP_CHOWN: baseline admits it.
    pod_security(client.CoreV1Api(api), namespace, level)
    before = manifest(home)
    operator(*flags)
    create_slot(api, namespace, "s", claim="home")
    return home, before, diagnosed(api, namespace, "s")


def refusal(slot: dict[str, Any], reason: str) -> str:
    """OwnershipMigrated's message, once it says the request was refused for `reason`."""
    refused = condition(slot, "OwnershipMigrated")
    assert (refused["status"], refused["reason"]) == ("False", reason)
    assert slot["status"]["lastOwnershipMigration"]["result"] == "Refused"
    return str(refused["message"])


# The `uid_1000_slot` fixture: uid_1000_slot(*flags, level="baseline") -> (home, manifest before, the Slot).
OldSlotFactory = Callable[..., tuple[pathlib.Path, Manifest, dict[str, Any]]]
