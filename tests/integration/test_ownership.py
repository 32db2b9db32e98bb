"""The uid pin, end to end: the ownership audit in every probe, and the migration a person asks for.

Real claim directories with files of uid 1000 (the old agent image) and of others, the real
Job controller and Pod Security admission, the operator's own image running `slot-operator audit`
and `slot-operator migrate-ownership` in the node simulator (docs/design.md §2.4).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from devcluster import cluster
from tests.integration import slots
from tests.integration.factories import ClaimFactory, OperatorFactory, WorkerFactory
from tests.integration.kubewait import wait_for
from tests.integration.ownership import (
    OLD,
    OldSlotFactory,
    answered,
    approve,
    diagnosed,
    manifest,
    migration_jobs,
    old_image_home,
    pod_security,
    refusal,
    request_migration,
)
from tests.integration.slots import condition, create_slot, wait_slot, wait_verdict, write_file

pytestmark = pytest.mark.integration


@pytest.fixture
def outside() -> Iterator[pathlib.Path]:
    """A file of the old uid outside every claim: a symlink in the claim points at it."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="slot-outside-"))
    target = directory / "not-in-the-claim"
    target.write_text("untouched")
    os.chown(target, *OLD)
    yield target
    shutil.rmtree(directory)


def test_uid_1000_slot_is_diagnosed_as_owned_by_another_user(
    api_client: client.ApiClient,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
    kube_cluster: cluster.Cluster,
) -> None:
    home = claim("home")
    old_image_home(home)
    before = manifest(home)
    op = operator()
    create_slot(api_client, namespace, "s", claim="home")

    slot = diagnosed(api_client, namespace, "s")

    status = slot["status"]
    message = status["lastProbe"]["message"]
    assert message.startswith("~/.codex owned by 1000:1000 (and "), message
    assert "the image runs as 10001:10001: approve the ownership migration" in message
    assert "--allow-ownership-migration" in message  # this operator runs without it: the message says so
    assert condition(slot, "Ready")["message"].startswith("~/.codex owned by 1000:1000")
    assert condition(slot, "Stalled")["reason"] == "NeedsInit"
    assert status["ownership"]["expected"] == "10001:10001"
    assert status["ownership"]["found"] == ["1000:1000"]
    assert status["ownership"]["paths"][:2] == ["~/.codex", "~"]
    assert status["credentials"] == {"files": 0}  # auth.json is invisible to 10001: never counted, never read
    assert manifest(home) == before, "the audit or the probe changed the slot volume"

    # kubectl get -o wide shows it.
    wide = subprocess.run(
        ["kubectl", "--kubeconfig", str(kube_cluster.kubeconfig), "get", "slots", "-n", namespace, "-o", "wide"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header, row = wide.splitlines()[:2]
    assert "OWNERSHIP" in header
    assert "CREDENTIALS" in header
    assert "1000:1000 (image 10001:10001)" in row

    wait_for(
        lambda: f'slot_operator_slot_ownership_matches{{namespace="{namespace}",slot="s"}} 0.0' in op.metrics(),
        timeout=30,
        message="ownership metric 0 for the diagnosed Slot",
    )


def test_never_initialised_slot_is_not_blamed_on_ownership(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    claim("home")  # empty, owned by 10001:10001
    operator()
    create_slot(api_client, namespace, "s", claim="home")

    slot = wait_verdict(api_client, namespace, "s", "NeedsInit")
    wait_slot(api_client, namespace, "s", lambda s: bool(condition(s, "OwnershipMatches")), message="audit recorded")

    slot = slots.get_slot(api_client, namespace, "s")
    assert (condition(slot, "OwnershipMatches")["status"], condition(slot, "OwnershipMatches")["reason"]) == (
        "True",
        "OwnerMatches",
    )
    assert slot["status"]["lastProbe"]["message"] == "~/.codex/auth.json does not exist"


def test_migration_makes_the_slot_ready_and_touches_only_the_old_owners_entries(
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
    outside: pathlib.Path,
) -> None:
    home = claim("home")
    old_image_home(home, link_to=outside)
    pod_security(core, namespace, "baseline")  # the migration pod runs as root with CAP_CHOWN
    before = manifest(home)
    outside_before = outside.lstat()
    operator("--allow-ownership-migration")
    create_slot(api_client, namespace, "s", claim="home")
    slot = diagnosed(api_client, namespace, "s")
    approval = slot["status"]["ownership"]["approval"]
    assert (
        f"approve the ownership migration (kubectl annotate slot/s --overwrite "
        f"woved.dev/ownership-migration-requested-at={approval})" in slot["status"]["lastProbe"]["message"]
    )

    token = approve(api_client, namespace, "s")

    slot = wait_verdict(api_client, namespace, "s", "Ready", timeout=120)
    status = slot["status"]
    assert status["lastHandledOwnershipMigrationRequest"] == token
    assert status["lastProbe"]["trigger"] == "ownership-migrated"
    last = status["lastOwnershipMigration"]
    changed = {path for path, entry in before.items() if entry[1:3] == OLD}
    assert (last["result"], last["reason"], last["from"], last["to"]) == (
        "Succeeded",
        "Migrated",
        "1000:1000",
        "10001:10001",
    )
    assert (last["changed"], last["skipped"], last["errors"]) == (len(changed), len(before) - len(changed), 0)
    assert condition(slot, "OwnershipMigrated")["status"] == "True"
    assert (condition(slot, "OwnershipMatches")["status"], status["ownership"]["found"]) == ("True", [])
    assert status["credentials"]["files"] == 1
    slots.wait_event(api_client, namespace, "s", reason="OwnershipMigrated", kind="Normal")

    # The full lstat manifest: exactly the old owner's entries changed owner, nothing else changed at all.
    after = manifest(home)
    assert set(after) == set(before)
    for path, (mode, uid, gid, size, mtime, target) in before.items():
        owner = (10001, 10001) if path in changed else (uid, gid)
        assert after[path] == (mode, *owner, size, mtime, target), path
    assert {".", ".codex", ".codex/auth.json", ".codex/link-out", ".cache", ".cache/history"} <= changed
    assert after["shared/root-owned"][1:3] == (0, 0)
    assert after["shared/other-user"][1:3] == (2000, 2000)
    assert outside.lstat() == outside_before  # the symlink's target, outside the claim: untouched


@pytest.mark.parametrize(
    "labels",
    # A worker wearing the operator's labels is still a worker: whose pod it is comes from its controller reference.
    [{}, {"app.kubernetes.io/managed-by": "slot-operator"}],
    ids=["a-worker", "a-pod-wearing-the-operators-labels"],
)
def test_migration_is_refused_while_a_worker_holds_the_claim(
    labels: dict[str, str],
    api_client: client.ApiClient,
    namespace: str,
    uid_1000_slot: OldSlotFactory,
    worker_pod: WorkerFactory,
) -> None:
    home, _, _ = uid_1000_slot("--allow-ownership-migration")
    worker_pod("worker", claim="home", node="sim-node-a", labels=labels)
    before = manifest(home)

    token = approve(api_client, namespace, "s")

    slot = answered(api_client, namespace, "s", token)
    assert "pod worker mounts the claim" in refusal(slot, "ClaimInUse")
    assert not migration_jobs(api_client, namespace)
    slots.wait_event(api_client, namespace, "s", reason="OwnershipMigrationRefused", kind="Warning")
    assert manifest(home) == before


def test_migration_is_refused_in_a_restricted_namespace_quoting_admission(
    api_client: client.ApiClient, namespace: str, uid_1000_slot: OldSlotFactory
) -> None:
    home, before, _ = uid_1000_slot("--allow-ownership-migration", level="restricted")

    token = approve(api_client, namespace, "s")

    message = refusal(answered(api_client, namespace, "s", token), "PodSecurityRejected")
    assert "needs the level baseline" in message
    assert 'violates PodSecurity "restricted:latest"' in message  # the admission message itself
    assert "CHOWN" in message
    wait_for(lambda: not migration_jobs(api_client, namespace), timeout=30, message="the refused Job deleted")
    assert manifest(home) == before


def test_a_request_while_the_feature_is_off_changes_nothing(
    api_client: client.ApiClient, namespace: str, uid_1000_slot: OldSlotFactory
) -> None:
    home, before, _ = uid_1000_slot()

    request_migration(api_client, namespace, "s", "t-off")

    slot = answered(api_client, namespace, "s", "t-off")
    assert "--allow-ownership-migration" in refusal(slot, "MigrationDisabled")
    assert slot["status"]["phase"] == "NeedsInit"
    assert not migration_jobs(api_client, namespace)
    assert manifest(home) == before


def test_dry_run_reports_and_changes_nothing(
    api_client: client.ApiClient, namespace: str, uid_1000_slot: OldSlotFactory
) -> None:
    home, before, probed = uid_1000_slot("--allow-ownership-migration")

    token = approve(api_client, namespace, "s", dry_run=True)

    slot = answered(api_client, namespace, "s", token)
    last = slot["status"]["lastOwnershipMigration"]
    would = sum(1 for entry in before.values() if entry[1:3] == OLD)
    assert (last["reason"], last["dryRun"], last["changed"], last["errors"]) == ("DryRun", True, would, 0)
    assert last["message"].endswith("dry run: nothing was changed")
    assert condition(slot, "OwnershipMigrated")["reason"] == "DryRun"
    slots.wait_event(api_client, namespace, "s", reason="OwnershipMigrationDryRun", kind="Normal")
    assert manifest(home) == before
    # Nothing changed, so nothing to probe again: the verdict on record stands.
    assert slot["status"]["lastProbe"]["jobName"] == probed["status"]["lastProbe"]["jobName"]
    assert slot["status"]["phase"] == "NeedsInit"


def test_the_audit_never_reads_a_file(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    """A FIFO (opening it would block) and a mode-0 file (opening it would fail) under ~/.claude."""
    home = claim("home")
    write_file(home, ".claude/.credentials.json", json.dumps({"claudeAiOauth": {"accessToken": "x"}}))
    os.mkfifo(home / ".claude" / "pipe")
    os.chown(home / ".claude" / "pipe", 10001, 10001)
    write_file(home, ".claude/locked", "secret", mode=0)
    stamp = time.time() - 86400
    os.utime(home / ".claude" / ".credentials.json", (stamp, stamp))
    before = manifest(home)
    operator()
    create_slot(api_client, namespace, "s", claim="home", agent="claude", image=slots.CLAUDE_IMAGE)

    slot = wait_verdict(api_client, namespace, "s", "Ready")
    wait_slot(api_client, namespace, "s", lambda s: bool(condition(s, "OwnershipMatches")), message="audit recorded")

    slot = slots.get_slot(api_client, namespace, "s")
    assert condition(slot, "OwnershipMatches")["status"] == "True"
    credentials = slot["status"]["credentials"]
    assert credentials["files"] == 2  # .credentials.json and the mode-0 file; the FIFO is no regular file
    assert credentials["lastModified"] > slot["status"]["lastProbe"]["startTime"][:10]  # the newest: `locked`
    assert manifest(home) == before
