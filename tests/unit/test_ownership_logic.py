"""Ownership (logic/ownership.py and its use in status, schedule and outcome) against docs/design.md §2.4."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from slot_operator.logic import ownership, schedule
from slot_operator.logic import status as st
from slot_operator.logic.conditions import OWNERSHIP_MATCHES, OWNERSHIP_MIGRATED, READY, RECONCILING, STALLED, find
from slot_operator.logic.outcome import NoVerdict, Running, Verdict, audit_result, classify
from slot_operator.logic.verdict import FailureReason, Phase

T0 = datetime.datetime(2026, 11, 1, 7, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=1)
OLD, NEW = (1000, 1000), (10001, 10001)
PROBE = st.ProbeRef(
    job_name="codex-1-probe-0000000001", image="img:1", generation=1, trigger="created", request=None, start_time=T0
)


def report(*entries: list[Any], problems: tuple[str, ...] = (), agent: str = "codex") -> str:
    return json.dumps(
        ownership.build_report(
            agent=agent, runs_as="10001:10001", entries=list(entries), problems=problems, truncated=False
        )
    )


UID_1000_CODEX = report(
    ["~", "d", 1000, 1000, "0750", 1, 0],
    ["~/.codex", "d", 1000, 1000, "0700", 2, 0],
    problems=("~/.codex/auth.json: Permission denied",),
)
MATCHING_CODEX = report(
    ["~", "d", 10001, 10001, "0750", 1, 0],
    ["~/.codex", "d", 10001, 10001, "0700", 2, 0],
    ["~/.codex/auth.json", "f", 10001, 10001, "0600", 1_700_000_000, 1],
)


def audited(text: str) -> ownership.Audit:
    result = ownership.parse_report(text)
    assert isinstance(result, ownership.Audit)
    return result


def cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found = find(status["conditions"], kind)
    assert found is not None, kind
    return dict(found)


def context(text: str | None, *, allowed: bool = True) -> st.AuditContext:
    result = None if text is None else ownership.parse_report(text)
    return st.AuditContext(result=result, expected=NEW, slot="codex-1", migration_allowed=allowed)


def needs_init(message: str = "~/.codex is not accessible as uid 10001: credentials invisible") -> Verdict:
    return Verdict(phase=Phase.NEEDS_INIT, exit_code=65, reason="NeedsInit", message=message, result=None, finished=T1)


def judged(
    text: str | None = UID_1000_CODEX,
    *,
    before: dict[str, Any] | None = None,
    outcome: Verdict | None = None,
    now: datetime.datetime = T1,
) -> dict[str, Any]:
    """The verdict write for a probe whose pod's audit reported `text`."""
    return st.verdict(
        before or {},
        generation=1,
        probe=PROBE,
        outcome=outcome or needs_init(),
        interval=datetime.timedelta(hours=6),
        audit=context(text),
        now=now,
    )


# --- the report ---------------------------------------------------------------------------------


def test_assessment_names_the_agent_directory_and_counts_every_differing_entry() -> None:
    assessment = ownership.assess(audited(UID_1000_CODEX), expected=NEW)
    assert assessment.foreign == ("1000:1000",)
    assert assessment.differing == 2
    assert assessment.paths == ("~/.codex", "~")
    assert assessment.headline() == "~/.codex owned by 1000:1000 (and 1 more), the image runs as 10001:10001"
    assert ownership.assess(audited(MATCHING_CODEX), expected=NEW).matches


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "left no report"),
        ("not json at all", "left no report"),
        ('{"v": 2}', "unknown report version 2"),
        ('{"v": 1, "error": "~: No such file or directory"}', "failed: ~: No such file or directory"),
        ('{"v": 1, "entries": [["~", "d", "x"]]}', "cannot be read"),
    ],
)
def test_a_report_that_cannot_be_used_is_audit_failed(text: str, why: str) -> None:
    result = ownership.parse_report(text)
    assert isinstance(result, ownership.AuditUnavailable)
    assert result.reason == "AuditFailed"
    assert why in result.message


def test_explain_names_the_cause_and_the_fix() -> None:
    assessment = ownership.assess(audited(UID_1000_CODEX), expected=NEW)
    allowed = ownership.explain(assessment, slot="codex-1", migration_allowed=True)
    assert allowed.startswith("~/.codex owned by 1000:1000 (and 1 more), the image runs as 10001:10001: ")
    assert "approve the ownership migration" in allowed
    assert "kubectl annotate slot/codex-1 woved.dev/ownership-migration-requested-at=" in allowed
    off = ownership.explain(assessment, slot="codex-1", migration_allowed=False)
    assert "--allow-ownership-migration" in off
    assert "chown the volume to 10001:10001 by hand" in off


# --- the verdict write carries the audit -----------------------------------------------------------


def test_needs_init_from_a_uid_mismatch_names_the_real_cause() -> None:
    new = judged(UID_1000_CODEX)
    assert new["phase"] == "NeedsInit"  # the verdict stands
    message = new["lastProbe"]["message"]  # the Message column of `kubectl get slots -o wide`
    assert message.startswith("~/.codex owned by 1000:1000 (and 1 more), the image runs as 10001:10001: approve")
    assert cond(new, READY)["message"].startswith("~/.codex owned by 1000:1000")
    assert cond(new, STALLED)["message"] == cond(new, READY)["message"]
    matches = cond(new, OWNERSHIP_MATCHES)
    assert (matches["status"], matches["reason"]) == ("False", "OwnedByOtherUser")
    assert "could not look at ~/.codex/auth.json: Permission denied" in matches["message"]
    assert new["ownership"] == {
        "expected": "10001:10001",
        "found": ["1000:1000"],
        "differing": 2,
        "paths": ["~/.codex", "~"],
        "summary": "1000:1000 (image 10001:10001)",
        "auditedAt": "2026-11-01T07:01:00Z",
        "jobName": PROBE.job_name,
    }
    assert new["credentials"] == {"files": 0}


def test_never_initialised_keeps_the_probes_message() -> None:
    fresh = report(["~", "d", 10001, 10001, "0750", 1, 0])
    new = judged(fresh, outcome=needs_init("~/.codex/auth.json does not exist"))
    assert new["lastProbe"]["message"] == "~/.codex/auth.json does not exist"
    assert (cond(new, OWNERSHIP_MATCHES)["status"], cond(new, OWNERSHIP_MATCHES)["reason"]) == ("True", "OwnerMatches")


def test_ready_records_credential_age_and_ownership() -> None:
    ready = Verdict(phase=Phase.READY, exit_code=0, reason="SmokeTestPassed", message="ok", result=None, finished=T1)
    new = judged(MATCHING_CODEX, outcome=ready)
    assert new["credentials"] == {"files": 1, "lastModified": "2023-11-14T22:13:20Z"}
    assert new["ownership"]["summary"] == "10001:10001"
    assert cond(new, OWNERSHIP_MATCHES)["status"] == "True"


def test_an_audit_that_could_not_run_is_unknown_and_forgets_what_was_found() -> None:
    before = judged(UID_1000_CODEX)
    after = judged('{"v": 1, "error": "boom"}', before=before, outcome=needs_init("plain"))
    matches = cond(after, OWNERSHIP_MATCHES)
    assert (matches["status"], matches["reason"]) == ("Unknown", "AuditFailed")
    assert after["ownership"] == {"expected": "10001:10001", "summary": "unknown"}
    assert after["lastProbe"]["message"] == "plain"
    assert after["credentials"] == before["credentials"]  # nothing new learnt: kept


def test_no_audit_in_the_pod_leaves_ownership_as_it_was() -> None:
    before = judged(UID_1000_CODEX)
    crashed = NoVerdict(reason=FailureReason.CRASHED, message="boom", exit_code=1)
    after = st.no_verdict(
        before,
        generation=1,
        probe=PROBE,
        outcome=crashed,
        trigger="retry",
        request=None,
        retry_at=T1,
        audit=context(None),
        now=T1,
    )
    assert after["ownership"] == before["ownership"]
    assert cond(after, OWNERSHIP_MATCHES) == cond(before, OWNERSHIP_MATCHES)


# --- the migration ---------------------------------------------------------------------------------


def slot_status(text: str = UID_1000_CODEX) -> dict[str, Any]:
    return judged(text, now=T0)


@pytest.mark.parametrize(
    ("status", "allowed", "users", "reason", "words"),
    [
        (slot_status(), False, [], "MigrationDisabled", "--allow-ownership-migration"),
        ({}, True, [], "AuditUnavailable", "no ownership audit on record"),
        (slot_status(MATCHING_CODEX), True, [], "NothingToMigrate", "already owned by 10001:10001"),
        (
            slot_status(report(["~", "d", 0, 0, "0755", 1, 0], ["~/.codex", "d", 1000, 1000, "0700", 1, 0])),
            True,
            [],
            "SeveralOwners",
            "owned by 0:0 and 1000:1000",
        ),
        (slot_status(), True, ["worker-1", "worker-2"], "ClaimInUse", "pod worker-1 mounts the claim (and 1 more)"),
    ],
)
def test_refusals_say_why(status: dict[str, Any], allowed: bool, users: list[str], reason: str, words: str) -> None:
    plan = ownership.plan_migration(status, expected=NEW, allowed=allowed, users=users)
    assert isinstance(plan, ownership.Refusal)
    assert plan.reason == reason
    assert words in plan.message


def test_an_audit_against_another_uid_is_no_basis() -> None:
    plan = ownership.plan_migration(slot_status(), expected=(20002, 20002), allowed=True, users=[])
    assert isinstance(plan, ownership.Refusal)
    assert plan.reason == "AuditUnavailable"
    assert "judged ownership against 10001:10001, the Slot now runs as 20002:20002" in plan.message


def test_one_foreign_owner_is_migrated_to_the_slots_identity() -> None:
    assert ownership.plan_migration(slot_status(), expected=NEW, allowed=True, users=[]) == ownership.MigrationPlan(
        old=OLD, new=NEW
    )


def test_pod_security_refusal_quotes_the_admission_and_asks_for_baseline() -> None:
    refusal = ownership.pod_security_refusal(
        'Error creating: pods "x" is forbidden: violates PodSecurity "restricted:latest"'
    )
    assert refusal.reason == "PodSecurityRejected"
    assert "needs the level baseline" in refusal.message
    assert refusal.message.endswith('violates PodSecurity "restricted:latest"')


def test_migration_request_reads_token_and_dry_run() -> None:
    assert ownership.migration_request({}) is None
    assert ownership.migration_request({ownership.MIGRATION_REQUEST_ANNOTATION: " "}) is None
    request = ownership.migration_request(
        {ownership.MIGRATION_REQUEST_ANNOTATION: "t1", ownership.MIGRATION_DRY_RUN_ANNOTATION: "true"}
    )
    assert request == ownership.MigrationRequest(token="t1", dry_run=True)


REF = ownership.MigrationRef(
    job_name="codex-1-migrate-0000000001", request="t1", dry_run=False, old=OLD, new=NEW, start_time=T0
)


def migrate_pod(code: int, message: str) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "message": message, "finishedAt": "2026-11-01T07:01:00Z"}}
    return {
        "metadata": {"name": "m", "creationTimestamp": "2026-11-01T07:00:00Z"},
        "status": {"containerStatuses": [{"name": "migrate", "state": state}]},
    }


COUNTS = '{"v":1,"changed":3,"skipped":2,"errors":0,"otherFilesystems":0,"samples":[]}'


def test_migration_lifecycle_records_counts_and_asks_for_a_probe() -> None:
    started = st.migration_started(slot_status(), generation=1, migration=REF, now=T0)
    assert started["currentOwnershipMigration"]["jobName"] == REF.job_name
    assert cond(started, OWNERSHIP_MIGRATED)["status"] == "Unknown"
    assert cond(started, RECONCILING)["reason"] == "MigratingOwnership"
    assert cond(started, STALLED)["status"] == "True"  # the verdict still needs a human until a probe says otherwise

    done = ownership.migration_outcome({"status": {}}, [migrate_pod(0, COUNTS)])
    assert done is not None
    finished = st.migration_finished(started, generation=1, migration=REF, done=done, now=T1)

    assert "currentOwnershipMigration" not in finished
    assert finished["lastHandledOwnershipMigrationRequest"] == "t1"
    last = finished["lastOwnershipMigration"]
    assert (last["result"], last["reason"], last["changed"], last["skipped"], last["errors"]) == (
        "Succeeded",
        "Migrated",
        3,
        2,
        0,
    )
    assert cond(finished, OWNERSHIP_MIGRATED)["status"] == "True"
    assert "re-owned 3 entries from 1000:1000 to 10001:10001; left 2 of other owners alone" in last["message"]
    assert finished["phase"] == "NeedsInit"  # no verdict change without a probe
    trigger, _ = schedule.due(finished, generation=1, request=None, claim_exists=True, now=T1)
    assert trigger == schedule.Trigger(kind="ownership-migrated")


def test_dry_run_finishes_without_a_probe() -> None:
    ref = ownership.MigrationRef(**{**REF.__dict__, "dry_run": True})
    done = ownership.migration_outcome({"status": {}}, [migrate_pod(0, COUNTS)])
    assert done is not None
    finished = st.migration_finished(slot_status(), generation=1, migration=ref, done=done, now=T1)
    assert finished["lastOwnershipMigration"]["reason"] == "DryRun"
    assert finished["lastOwnershipMigration"]["message"].endswith("dry run: nothing was changed")
    assert cond(finished, OWNERSHIP_MIGRATED)["status"] == "False"
    trigger, _ = schedule.due(finished, generation=1, request=None, claim_exists=True, now=T1)
    assert trigger is None


def test_refused_request_is_acknowledged_once() -> None:
    request = ownership.MigrationRequest(token="t2", dry_run=False)
    refusal = ownership.Refusal(reason="ClaimInUse", message="pod w mounts the claim")
    new = st.migration_refused(slot_status(), generation=1, request=request, refusal=refusal, now=T1)
    assert new["lastHandledOwnershipMigrationRequest"] == "t2"
    assert new["lastOwnershipMigration"]["result"] == "Refused"
    migrated = cond(new, OWNERSHIP_MIGRATED)
    assert (migrated["status"], migrated["reason"], migrated["message"]) == (
        "False",
        "ClaimInUse",
        "pod w mounts the claim",
    )


@pytest.mark.parametrize(
    ("job", "pods", "failure"),
    [
        ({"status": {}}, [migrate_pod(1, '{"v":1,"error":"/home/codex: Permission denied"}')], "Permission denied"),
        (
            {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}},
            [],
            "the migration Job failed: DeadlineExceeded",
        ),
    ],
)
def test_migration_failures_are_reported(job: dict[str, Any], pods: list[dict[str, Any]], failure: str) -> None:
    done = ownership.migration_outcome(job, pods)
    assert done is not None
    assert done.report is None
    assert failure in (done.failure or "")


def test_migration_still_running() -> None:
    assert ownership.migration_outcome({"status": {}}, []) is None


# --- the probe pod's audit (outcome) -------------------------------------------------------------


def probe_pod(audit_state: dict[str, Any], probe_state: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "creationTimestamp": "2026-11-01T07:00:00Z"},
        "status": {
            "initContainerStatuses": [{"name": "audit", "state": audit_state}],
            "containerStatuses": [{"name": "probe", "state": probe_state or {}}],
        },
    }


def test_audit_result_is_read_from_the_init_container() -> None:
    pods = [probe_pod({"terminated": {"exitCode": 0, "message": UID_1000_CODEX}})]
    assert isinstance(audit_result(pods), ownership.Audit)
    assert audit_result([]) is None


def test_an_unpullable_audit_image_is_not_the_agent_images_fault() -> None:
    pods = [probe_pod({"waiting": {"reason": "ErrImagePull", "message": "not found"}})]
    outcome = classify({"status": {}}, pods)
    assert isinstance(outcome, NoVerdict)
    assert outcome.reason is FailureReason.AUDIT_FAILED
    assert outcome.stop_job
    assert "--audit-image" in outcome.message


def test_a_failing_audit_stops_the_probe() -> None:
    pods = [probe_pod({"terminated": {"exitCode": 127, "reason": "Error", "message": "slot-operator: not found"}})]
    outcome = classify({"status": {}}, pods)
    assert isinstance(outcome, NoVerdict)
    assert outcome.reason is FailureReason.AUDIT_FAILED
    assert "exited with code 127" in outcome.message


def test_a_finished_audit_lets_the_probe_decide() -> None:
    pods = [probe_pod({"terminated": {"exitCode": 0, "message": MATCHING_CODEX}}, {"running": {}})]
    assert isinstance(classify({"status": {}}, pods), Running)
