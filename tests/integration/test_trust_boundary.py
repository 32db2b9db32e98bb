"""The operator's power, tried as a tenant would misuse it (docs/security.md).

Each test is one attack from a tenant who owns a namespace (or a Slot, or a volume) of their own,
on the real control plane: a forged Job, hostile claim content, a root-only volume, a claim in use
behind the operator's labels, a replayed approval, a registry blip, a token in a probe's words, a
tenant whose probes sleep, an audit image out of reach, a migration withdrawn half-way. Each shows
the operator refusing, and what it did instead.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from devcluster import cluster
from tests.integration import ownership, slots
from tests.integration.factories import ClaimFactory, OperatorFactory, Tenant, ValidSlotFactory
from tests.integration.kubewait import NotYet, wait_for
from tests.integration.slots import (
    VALID_CODEX,
    condition,
    create_slot,
    patch_slot,
    valid_home,
    wait_reason,
    wait_slot,
    wait_verdict,
    write_file,
)

pytestmark = pytest.mark.integration

PWNED = "PWNED-by-the-claim"
# What a tenant would put on a volume to be run by the operator's own containers instead of its programs.
HOSTILE = f"#!/bin/sh\necho {PWNED} > /dev/termination-log 2>/dev/null\necho {PWNED}\nexit 0\n"
PROBE_REQUEST = "woved.dev/probe-requested-at"


def request_probe(api: client.ApiClient, namespace: str, name: str) -> str:
    token = secrets.token_hex(6)
    patch_slot(api, namespace, name, {"metadata": {"annotations": {PROBE_REQUEST: token}}})
    wait_slot(
        api,
        namespace,
        name,
        lambda s: (
            (s.get("status") or {}).get("lastHandledProbeRequest") == token
            and condition(s, "Reconciling").get("reason") != "Probing"
        ),
        timeout=90,
        message=f"probe request {token} answered",
    )
    return token


def termination_messages(api: client.ApiClient, namespace: str) -> list[str]:
    """Every container's termination message in the namespace's pods (what the kubelet reported back)."""
    found = []
    for pod in client.CoreV1Api(api).list_namespaced_pod(namespace).items:
        for status in pod.status.container_statuses or []:
            terminated = status.state.terminated if status.state else None
            if terminated is not None and terminated.message:
                found.append(terminated.message)
    return found


# --- 1. a forged Job from another namespace -------------------------------------------------------------


def forged_job(name: str, slot: dict[str, Any], *, generation: int, suspend: bool, claim: str | None) -> dict[str, Any]:
    """A Job another tenant made to look like `slot`'s probe: its labels, its annotations, its uid."""
    labels = {
        "app.kubernetes.io/managed-by": "slot-operator",
        "app.kubernetes.io/component": "probe",
        "woved.dev/slot-uid": slot["metadata"]["uid"],
    }
    annotations = {
        "woved.dev/slot": slot["metadata"]["name"],
        "woved.dev/slot-generation": str(generation),
        "woved.dev/probe-trigger": "manual",
    }
    container: dict[str, Any] = {
        "name": "probe",
        "image": slots.CODEX_IMAGE,
        "env": [{"name": "AGENT_MODE", "value": "smoke-test"}, {"name": "HOME", "value": "/home/codex"}],
    }
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if claim is not None:
        container["volumeMounts"] = [{"name": "slot", "mountPath": "/home/codex"}]
        pod["volumes"] = [{"name": "slot", "persistentVolumeClaim": {"claimName": claim}}]
        pod["securityContext"] = {"runAsUser": 10001, "runAsGroup": 10001}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "suspend": suspend,
            "backoffLimit": 0,
            "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod},
        },
    }


def test_a_forged_job_in_another_namespace_is_never_adopted_and_deletes_no_bystander(
    api_client: client.ApiClient,
    batch: client.BatchV1Api,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
    other_tenant: Tenant,
) -> None:
    other_namespace = other_tenant.namespace
    claim("home")  # empty: this Slot's own verdict is NeedsInit
    op = operator(namespaces=[namespace, other_namespace])
    slot = create_slot(api_client, namespace, "a", claim="home")
    wait_verdict(api_client, namespace, "a", "NeedsInit")
    # The bystander: a Job of the tenant of `namespace`, nothing to do with the operator.
    bystander = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "nightly-backup"},
        "spec": {
            "suspend": True,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "b", "image": "busybox"}]}},
        },
    }
    batch.create_namespaced_job(namespace, bystander)
    bystander_uid = batch.read_namespaced_job("nightly-backup", namespace).metadata.uid

    # Another tenant: a Job named like the bystander, dressed as an older probe of Slot `a` (still running)...
    batch.create_namespaced_job(
        other_namespace, forged_job("nightly-backup", slot, generation=0, suspend=True, claim=None)
    )
    # ...and one dressed as a probe of its current generation that says Ready (exit 0 on valid credentials).
    valid_home(other_tenant.claim, "valid")
    batch.create_namespaced_job(
        other_namespace, forged_job("a-probe-forged", slot, generation=1, suspend=False, claim="valid")
    )
    wait_for(
        lambda: any(
            c.type == "Complete"
            for c in (batch.read_namespaced_job("a-probe-forged", other_namespace).status.conditions or [])
        ),
        timeout=60,
        message="the forged current-generation Job completed (exit 0)",
    )

    request_probe(api_client, namespace, "a")  # reconcile Slot `a` with both impostors in the cache
    # The operator reports each impostor on the Slot it imitates once it reconciled that Slot with them in view.
    wait_for(
        lambda: len([e for e in slots.slot_events(api_client, namespace, "a") if e.reason == "ImpostorIgnored"]) == 2,
        timeout=30,
        message="both impostors reported on Slot a",
        describe=lambda: [(e.type, e.reason, e.message) for e in slots.slot_events(api_client, namespace, "a")],
    )

    assert batch.read_namespaced_job("nightly-backup", namespace).metadata.uid == bystander_uid  # never deleted
    slot_now = slots.get_slot(api_client, namespace, "a")
    assert slot_now["status"]["phase"] == "NeedsInit"  # its own probe's verdict
    assert not [e for e in slots.slot_events(api_client, namespace, "a") if e.reason == "Ready"]  # never the forged one
    last_job = slot_now["status"]["lastProbe"]["jobName"]
    owner = batch.read_namespaced_job(last_job, namespace).metadata.owner_references[0]
    assert (owner.kind, owner.uid) == ("Slot", slot["metadata"]["uid"])
    messages = [e.message for e in slots.slot_events(api_client, namespace, "a") if e.reason == "ImpostorIgnored"]
    assert any(f"{other_namespace}/nightly-backup" in message for message in messages)
    wait_for(
        lambda: 'slot_operator_impostors_total{kind="Job"} 2.0' in op.metrics(),
        timeout=30,
        message="impostors counted",
    )
    assert batch.read_namespaced_job("nightly-backup", other_namespace).metadata.name  # left alone, not ours


# --- 2. claim content laid over the operator's own programs -----------------------------------------------


def hostile_home(home: pathlib.Path, *, uid: int = 10001, gid: int = 10001) -> None:
    """Programs named like the operator image's own at the claim's root, where a Slot's mountPath puts them."""
    for name in ("slot-operator", "python", "python3", "python3.11"):
        path = home / name
        path.write_text(HOSTILE)
        os.chown(path, uid, gid)
        path.chmod(0o755)


def test_claim_content_under_the_operators_paths_never_runs_in_the_audit(
    api_client: client.ApiClient,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
    operator_archive: pathlib.Path,
) -> None:
    hostile_home(claim("home"))
    operator()
    create_slot(api_client, namespace, "s", claim="home", mountPath="/opt/venv/bin")

    slot = wait_verdict(api_client, namespace, "s", "NeedsInit")
    wait_slot(api_client, namespace, "s", lambda s: bool(condition(s, "OwnershipMatches")), message="audit recorded")

    slot = slots.get_slot(api_client, namespace, "s")
    matches = condition(slot, "OwnershipMatches")
    assert (matches["status"], matches["reason"]) == ("True", "OwnerMatches")  # the operator's own audit reported
    assert not [m for m in termination_messages(api_client, namespace) if PWNED in m]


def test_claim_content_under_the_operators_paths_never_runs_in_the_root_migration(
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
    operator_archive: pathlib.Path,
) -> None:
    home = claim("home")
    ownership.old_image_home(home)
    hostile_home(home, uid=1000, gid=1000)
    ownership.pod_security(core, namespace, "baseline")
    operator("--allow-ownership-migration")
    create_slot(api_client, namespace, "s", claim="home", mountPath="/opt/venv/bin")
    ownership.diagnosed(api_client, namespace, "s")

    token = ownership.approve(api_client, namespace, "s")

    slot = ownership.answered(api_client, namespace, "s", token)
    last = slot["status"]["lastOwnershipMigration"]
    assert (last["result"], last["reason"], last["errors"]) == ("Succeeded", "Migrated", 0)
    assert last["changed"] >= 4  # the operator's own walk re-owned the old owner's entries, the claim's programs too
    assert not [m for m in termination_messages(api_client, namespace) if PWNED in m]
    assert (home / "python").stat().st_uid == 10001  # just an entry of the old owner, re-owned, never run


# --- 3. only owners a person allowed, never root ------------------------------------------------------------


def test_a_root_owned_volume_is_never_re_owned(
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
) -> None:
    home = claim("home")
    write_file(home, ".codex/auth.json", VALID_CODEX, uid=0, gid=0)
    os.chown(home, 0, 0)
    home.chmod(0o755)
    ownership.pod_security(core, namespace, "baseline")
    before = ownership.manifest(home)
    operator("--allow-ownership-migration")
    create_slot(api_client, namespace, "s", claim="home")
    slot = wait_reason(api_client, namespace, "s", "OwnershipMatches", "OwnedByOtherUser")
    assert slot["status"]["ownership"]["found"] == ["0:0"]
    assert "approval" not in slot["status"]["ownership"]  # nothing to approve
    assert "the ownership migration may not move 0:0" in slot["status"]["lastProbe"]["message"]

    ownership.request_migration(api_client, namespace, "s", "yes-please")

    message = ownership.refusal(ownership.answered(api_client, namespace, "s", "yes-please"), "OwnerNotAllowed")
    assert "uid 0 or gid 0 are never re-owned" in message
    assert not ownership.migration_jobs(api_client, namespace)
    assert ownership.manifest(home) == before


# --- 4. a claim in use behind the operator's labels: test_ownership.py, a-pod-wearing-the-operators-labels


# --- 5. a replayed approval -------------------------------------------------------------------------------


def test_an_approval_is_never_replayed(
    api_client: client.ApiClient, namespace: str, uid_1000_slot: ownership.OldSlotFactory
) -> None:
    home, _, _ = uid_1000_slot("--allow-ownership-migration")
    first = ownership.approve(api_client, namespace, "s")
    wait_verdict(api_client, namespace, "s", "Ready", timeout=120)

    # The old image wrote the volume again (a worker left on the old tag): a new audit, a new decision needed.
    for path in [home, *home.rglob("*")]:
        if path.lstat().st_uid == 10001:
            os.lchown(path, *ownership.OLD)
    request_probe(api_client, namespace, "s")
    ownership.diagnosed(api_client, namespace, "s")
    before = ownership.manifest(home)

    # A GitOps revert A -> B -> A brings the first approval back: nobody decided anything.
    ownership.request_migration(api_client, namespace, "s", "b-something-else")
    ownership.refusal(ownership.answered(api_client, namespace, "s", "b-something-else"), "NotApproved")
    ownership.request_migration(api_client, namespace, "s", first)
    assert "does not approve the audit on record" in ownership.refusal(
        ownership.answered(api_client, namespace, "s", first), "NotApproved"
    )
    assert ownership.manifest(home) == before

    # The Slot deleted and created again from Git, the approval still in its annotations.
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        slots.GROUP, slots.VERSION, namespace, slots.PLURAL, "s"
    )
    recreated = create_slot(api_client, namespace, "s", claim="home")
    patch_slot(
        api_client, namespace, "s", {"metadata": {"annotations": {"woved.dev/ownership-migration-requested-at": first}}}
    )
    slot = ownership.answered(api_client, namespace, "s", first)
    assert slot["metadata"]["uid"] == recreated["metadata"]["uid"]
    assert slot["status"]["lastOwnershipMigration"]["result"] == "Refused"
    ownership.diagnosed(api_client, namespace, "s")
    assert ownership.manifest(home) == before
    assert not [
        job
        for job in ownership.migration_jobs(api_client, namespace)
        if job.metadata.owner_references[0].uid == recreated["metadata"]["uid"]
    ]


# --- 6. a registry blip -------------------------------------------------------------------------------------


@pytest.fixture
def registry(kube_cluster: cluster.Cluster) -> Iterator[Callable[[dict[str, str]], None]]:
    """Set the node simulator's registry faults ({reference: error}); cleared after the test."""

    def set_faults(faults: dict[str, str]) -> None:
        partial = kube_cluster.registry_faults.with_suffix(".tmp")
        partial.write_text(json.dumps(faults))
        partial.replace(kube_cluster.registry_faults)

    yield set_faults
    kube_cluster.registry_faults.unlink(missing_ok=True)


def test_a_registry_blip_never_flips_a_ready_slot(
    api_client: client.ApiClient,
    namespace: str,
    valid_slot: ValidSlotFactory,
    registry: Callable[[dict[str, str]], None],
) -> None:
    image = f"{slots.CODEX_IMAGE}@sha256:{secrets.token_hex(32)}"  # this test's own reference
    valid_slot(image=image)
    wait_verdict(api_client, namespace, "s", "Ready")

    registry({image: "failed to copy: unexpected status code https://registry.local/v2/: 429 Too Many Requests"})
    patch_slot(api_client, namespace, "s", {"metadata": {"annotations": {PROBE_REQUEST: "during-the-blip"}}})
    slot = wait_reason(api_client, namespace, "s", "ProbeSucceeded", "ImagePullFailed")
    assert slot["status"]["phase"] == "Ready"
    assert (condition(slot, "Ready")["status"], condition(slot, "Stalled")["status"]) == ("True", "False")
    assert "429 Too Many Requests" in condition(slot, "ProbeSucceeded")["message"]
    assert slot["status"]["consecutiveProbeFailures"] >= 1

    registry({})
    slot = wait_slot(
        api_client,
        namespace,
        "s",
        lambda s: (
            condition(s, "ProbeSucceeded").get("status") == "True" and s["status"]["consecutiveProbeFailures"] == 0
        ),
        timeout=90,
        message="the retry after the blip gave its verdict",
    )
    assert slot["status"]["phase"] == "Ready"


# --- 7. a token in the probe's own words -----------------------------------------------------------------


def test_a_token_in_the_probes_message_reaches_no_event_and_no_log(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    token = "sk-ant-api03-" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
    home = claim("home")
    write_file(home, f".claude/{token}", "")  # a token saved as a file name: the probe names the empty file
    op = operator()
    create_slot(api_client, namespace, "s", claim="home", agent="claude", image=slots.CLAUDE_IMAGE)

    slot = wait_verdict(api_client, namespace, "s", "NeedsReauth")
    slots.wait_event(api_client, namespace, "s", reason="NeedsReauth", kind="Warning")

    assert "[redacted]" in slot["status"]["lastProbe"]["message"]
    events = [e.message for e in slots.slot_events(api_client, namespace, "s")]
    assert events
    assert not [message for message in events if token in message]
    assert any("[redacted]" in message for message in events)
    assert token not in op.log()
    assert token not in json.dumps(slot["status"])


# --- 8. (the admission policy: tests/integration/test_admission_policy.py) ---------------------------------
# --- 9. one tenant's sleeping probes ------------------------------------------------------------------------


def test_one_namespaces_sleeping_probes_leave_places_for_the_others(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory, other_tenant: Tenant
) -> None:
    other_namespace = other_tenant.namespace
    for name in ("s0", "s1", "s2"):
        valid_home(claim, name)
    operator("--max-concurrent-probes=2", namespaces=[namespace, other_namespace])
    sleepy = [{"name": "SMOKE_TEST_SLEEP", "value": "900"}]
    for name in ("s0", "s1", "s2"):
        create_slot(api_client, namespace, name, claim=name, env=sleepy, timeout="20m")
    wait_for(lambda: len(slots.probe_jobs(api_client, namespace)) >= 1, timeout=30, message="a sleeper probing")

    valid_home(other_tenant.claim)
    create_slot(api_client, other_namespace, "b", claim="home")

    wait_verdict(api_client, other_namespace, "b", "Ready", timeout=60)  # not behind 15 minutes of sleep
    running = [job for job in slots.probe_jobs(api_client, namespace) if not job.status.completion_time]
    assert len(running) == 1  # the sleepy namespace holds its share (half the cap), no more
    queued = [
        name
        for name in ("s0", "s1", "s2")
        if condition(slots.get_slot(api_client, namespace, name), "Reconciling").get("reason") == "Queued"
    ]
    assert len(queued) == 2


# --- 10. an audit that cannot run ---------------------------------------------------------------------------


def test_an_audit_image_out_of_reach_never_holds_the_verdict_back(
    api_client: client.ApiClient, namespace: str, valid_slot: ValidSlotFactory
) -> None:
    valid_slot("--audit-image=local/no-such-operator-image:1")

    slot = wait_verdict(api_client, namespace, "s", "Ready")
    slot = wait_slot(
        api_client, namespace, "s", lambda s: bool(condition(s, "OwnershipMatches")), message="ownership recorded"
    )
    matches = condition(slot, "OwnershipMatches")
    assert (matches["status"], matches["reason"]) == ("Unknown", "AuditFailed")
    assert "(--audit-image) cannot be pulled" in matches["message"]
    assert condition(slot, "ProbeSucceeded")["status"] == "True"
    wait_for(
        lambda: (
            not [
                j
                for j in slots.probe_jobs(api_client, namespace)
                if not j.status.completion_time and not j.metadata.deletion_timestamp
            ]
            or NotYet("running")
        ),
        timeout=30,
        message="the probe Job stopped",
    )


# --- 11. a migration withdrawn half-way --------------------------------------------------------------------


def test_a_migration_is_cancelled_by_withdrawing_the_request_or_deleting_its_job(
    api_client: client.ApiClient,
    batch: client.BatchV1Api,
    core: client.CoreV1Api,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
) -> None:
    ownership.pod_security(core, namespace, "baseline")
    homes = {}
    for name in ("s1", "s2"):
        homes[name] = claim(name)
        ownership.old_image_home(homes[name])
    operator("--allow-ownership-migration")
    for name in ("s1", "s2"):
        create_slot(api_client, namespace, name, claim=name)
        ownership.diagnosed(api_client, namespace, name)
        # From now on no pod of this Slot can be scheduled: its migration stays in flight.
        patch_slot(api_client, namespace, name, {"spec": {"nodeSelector": {"nowhere": "true"}}})
    before = {name: ownership.manifest(home) for name, home in homes.items()}

    def in_flight(name: str) -> Any:
        ownership.approve(api_client, namespace, name)
        slot = wait_slot(
            api_client,
            namespace,
            name,
            lambda s: bool(s["status"].get("currentOwnershipMigration", {}).get("jobUID")),
            message="migration Job created",
        )
        return slot["status"]["currentOwnershipMigration"]

    def cancelled(name: str) -> dict[str, Any]:
        slot = wait_reason(api_client, namespace, name, "OwnershipMigrated", "MigrationCancelled")
        assert slot["status"]["lastOwnershipMigration"]["result"] == "Cancelled"
        assert "currentOwnershipMigration" not in slot["status"]
        slots.wait_event(api_client, namespace, name, reason="OwnershipMigrationCancelled", kind="Warning")
        return slot

    running = in_flight("s1")
    patch_slot(
        api_client, namespace, "s1", {"metadata": {"annotations": {"woved.dev/ownership-migration-requested-at": None}}}
    )
    assert "the request annotation was removed" in cancelled("s1")["status"]["lastOwnershipMigration"]["message"]
    wait_for(
        lambda: (
            running["jobName"] not in {j.metadata.name for j in ownership.migration_jobs(api_client, namespace)}
            or NotYet("there")
        ),
        timeout=30,
        message="its Job deleted",
    )

    running = in_flight("s2")
    batch.delete_namespaced_job(running["jobName"], namespace, propagation_policy="Background")
    assert "was deleted" in cancelled("s2")["status"]["lastOwnershipMigration"]["message"]
    # A probe follows (the migration may have changed owners before it stopped); it cannot be scheduled either.
    wait_reason(api_client, namespace, "s2", "ProbeSucceeded", "Unschedulable")
    assert not [j for j in ownership.migration_jobs(api_client, namespace) if j.metadata.name == running["jobName"]]
    for name, home in homes.items():
        assert ownership.manifest(home) == before[name]  # never scheduled: nothing changed
