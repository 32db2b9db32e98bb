"""Ownership (logic/ownership.py and its use in status, schedule and outcome) against docs/design.md §2.4."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import pytest
from slot_operator.logic import names, ownership, schedule
from slot_operator.logic import status as st
from slot_operator.logic.conditions import OWNERSHIP_MATCHES, OWNERSHIP_MIGRATED, READY, RECONCILING, STALLED, find
from slot_operator.logic.outcome import AUDIT_GRACE, NoVerdict, Running, Verdict, audit_result, classify
from slot_operator.logic.phases import Phase
from slot_operator.logic.verdict import FailureReason

T0 = datetime.datetime(2026, 11, 1, 7, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=1)
OLD, NEW = (1000, 1000), (10001, 10001)
SLOT_UID, CLAIM_UID = "6f1c2a8e-slot", "9b3d7e1f-claim"
ALLOWED = ownership.MigrationPolicy(allowed=True)
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


def context(
    text: str | None,
    *,
    policy: ownership.MigrationPolicy = ALLOWED,
    slot_uid: str = SLOT_UID,
    claim_uid: str = CLAIM_UID,
) -> st.AuditContext:
    result = None if text is None else ownership.parse_report(text)
    return st.AuditContext(
        result=result, expected=NEW, slot="codex-1", slot_uid=slot_uid, claim_uid=claim_uid, policy=policy
    )


def needs_init(message: str = "~/.codex is not accessible as uid 10001: credentials invisible") -> Verdict:
    return Verdict(phase=Phase.NEEDS_INIT, exit_code=65, reason="NeedsInit", message=message, result=None, finished=T1)


def judged(
    text: str | None = UID_1000_CODEX,
    *,
    before: dict[str, Any] | None = None,
    outcome: Verdict | None = None,
    now: datetime.datetime = T1,
    probe: st.ProbeRef = PROBE,
    **audit: Any,
) -> dict[str, Any]:
    """The verdict write for a probe whose pod's audit reported `text`."""
    return st.verdict(
        before or {},
        generation=1,
        probe=probe,
        outcome=outcome or needs_init(),
        interval=datetime.timedelta(hours=6),
        audit=context(text, **audit),
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
    allowed = ownership.explain(assessment, slot="codex-1", policy=ALLOWED, approval="0123abcd0123abcd")
    assert allowed.startswith("~/.codex owned by 1000:1000 (and 1 more), the image runs as 10001:10001: ")
    assert "approve the ownership migration" in allowed
    assert (
        "kubectl annotate slot/codex-1 --overwrite woved.dev/ownership-migration-requested-at=0123abcd0123abcd"
        in allowed
    )
    off = ownership.explain(assessment, slot="codex-1", policy=ownership.MigrationPolicy(allowed=False), approval=None)
    assert "--allow-ownership-migration" in off
    assert "chown the volume to 10001:10001 by hand" in off
    other = ownership.explain(
        assessment,
        slot="codex-1",
        policy=ownership.MigrationPolicy(allowed=True, old_owners=((2000, 2000),)),
        approval=None,
    )
    assert other.endswith("the ownership migration may not move 1000:1000: fix the owners by hand")


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
    approval = ownership.approval_token(
        slot_uid=SLOT_UID,
        claim_uid=CLAIM_UID,
        old="1000:1000",
        expected="10001:10001",
        audited_at="2026-11-01T07:01:00Z",
        audit_job=PROBE.job_name,
    )
    assert new["ownership"] == {
        "expected": "10001:10001",
        "found": ["1000:1000"],
        "differing": 2,
        "paths": ["~/.codex", "~"],
        "summary": "1000:1000 (image 10001:10001)",
        "auditedAt": "2026-11-01T07:01:00Z",
        "jobName": PROBE.job_name,
        "claimUID": CLAIM_UID,
        "approval": approval,
    }
    assert message.startswith(
        f"~/.codex owned by 1000:1000 (and 1 more), the image runs as 10001:10001: approve the ownership migration "
        f"(kubectl annotate slot/codex-1 --overwrite woved.dev/ownership-migration-requested-at={approval})"
    )
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


def approval(status: dict[str, Any]) -> str:
    return str(status["ownership"]["approval"])


def plan(
    status: dict[str, Any],
    *,
    token: str | None = None,
    policy: ownership.MigrationPolicy = ALLOWED,
    claim_uid: str | None = CLAIM_UID,
    users: tuple[str, ...] = (),
    expected: ownership.Owner = NEW,
) -> ownership.MigrationPlan | ownership.Refusal:
    token = token if token is not None else (status.get("ownership") or {}).get("approval") or "t1"
    return ownership.plan_migration(
        status, expected=expected, policy=policy, token=token, claim_uid=claim_uid, users=list(users)
    )


ROOT_AND_OLD = report(["~", "d", 0, 0, "0755", 1, 0], ["~/.codex", "d", 1000, 1000, "0700", 1, 0])
ROOT_ONLY = report(["~", "d", 0, 0, "0755", 1, 0], ["~/.codex", "d", 0, 0, "0700", 1, 0])
OTHER_UID = report(["~", "d", 2000, 2000, "0755", 1, 0], ["~/.codex", "d", 2000, 2000, "0700", 1, 0])


@pytest.mark.parametrize(
    ("status", "change", "reason", "words"),
    [
        (slot_status(), {"policy": ownership.MigrationPolicy(allowed=False)}, "MigrationDisabled", "--allow-owner"),
        ({}, {}, "AuditUnavailable", "no ownership audit on record"),
        (slot_status(), {"claim_uid": "another-claim"}, "AuditUnavailable", "another claim"),
        (slot_status(), {"claim_uid": None}, "AuditUnavailable", "another claim"),
        (slot_status(MATCHING_CODEX), {}, "NothingToMigrate", "already owned by 10001:10001"),
        (slot_status(ROOT_AND_OLD), {}, "SeveralOwners", "owned by 0:0 and 1000:1000"),
        (slot_status(ROOT_ONLY), {}, "OwnerNotAllowed", "files of uid 0 or gid 0 are never re-owned"),
        (slot_status(OTHER_UID), {}, "OwnerNotAllowed", "--ownership-migration-from allows 1000:1000"),
        (slot_status(), {"token": "1733400000"}, "NotApproved", "does not approve the audit on record"),
        (
            slot_status(),
            {"users": ("worker-1", "worker-2")},
            "ClaimInUse",
            "pod worker-1 mounts the claim (and 1 more)",
        ),
    ],
)
def test_refusals_say_why(status: dict[str, Any], change: dict[str, Any], reason: str, words: str) -> None:
    refused = plan(status, **change)
    assert isinstance(refused, ownership.Refusal)
    assert refused.reason == reason
    assert words in refused.message


def test_an_audit_against_another_uid_is_no_basis() -> None:
    refused = plan(slot_status(), expected=(20002, 20002))
    assert isinstance(refused, ownership.Refusal)
    assert refused.reason == "AuditUnavailable"
    assert "judged ownership against 10001:10001, the Slot now runs as 20002:20002" in refused.message


def test_one_foreign_owner_with_its_approval_is_migrated_to_the_slots_identity() -> None:
    assert plan(slot_status()) == ownership.MigrationPlan(old=OLD, new=NEW)


def test_another_old_owner_can_be_allowed_but_never_root() -> None:
    policy = ownership.MigrationPolicy(allowed=True, old_owners=((2000, 2000),))
    status = judged(OTHER_UID, now=T0, policy=policy)
    assert plan(status, policy=policy) == ownership.MigrationPlan(old=(2000, 2000), new=NEW)
    root = ownership.MigrationPolicy(allowed=True, old_owners=((0, 0), (1000, 0)))
    assert "approval" not in judged(ROOT_ONLY, now=T0, policy=root)["ownership"]


def test_an_approval_is_bound_to_the_slot_the_claim_and_the_audit() -> None:
    status = slot_status()
    token = approval(status)
    assert len(token) == 16
    assert approval(judged(now=T0)) == token  # the same audit facts, the same token
    assert approval(judged(now=T0, slot_uid="recreated-slot")) != token
    assert approval(judged(now=T0, claim_uid="recreated-claim")) != token
    assert approval(judged(now=T1)) != token  # a later audit
    # Another probe's audit recorded in the same second (the stamp has whole seconds): another token.
    assert approval(judged(now=T0, probe=dataclasses.replace(PROBE, job_name="s-probe-0123456789"))) != token
    # Replayed onto a recreated Slot (a new uid, its own audit): not an approval of that audit.
    refused = plan(judged(now=T0, slot_uid="recreated-slot"), token=token)
    assert isinstance(refused, ownership.Refusal)
    assert refused.reason == "NotApproved"


def test_an_approval_is_spent_once_answered() -> None:
    status = slot_status()
    token = approval(status)
    ref = dataclasses.replace(REF, request=token)
    started = st.migration_started(status, generation=1, migration=ref, now=T0)
    assert "approval" not in started["ownership"]
    refused = plan(started, token=token)
    assert isinstance(refused, ownership.Refusal)
    assert refused.reason == "NotApproved"
    assert "answered already" in refused.message
    # A refusal of that very token spends it too; a refusal of another token does not.
    request = ownership.MigrationRequest(token=token, dry_run=False)
    in_use = ownership.Refusal(reason="ClaimInUse", message="pod w mounts the claim")
    assert (
        "approval"
        not in st.migration_refused(status, generation=1, request=request, refusal=in_use, now=T1)["ownership"]
    )
    other = ownership.MigrationRequest(token="other", dry_run=False)
    kept = st.migration_refused(status, generation=1, request=other, refusal=in_use, now=T1)
    assert approval(kept) == token


def test_a_dry_run_leaves_the_approval_for_the_real_run() -> None:
    status = slot_status()
    token = approval(status)
    dry = dataclasses.replace(REF, request=token, dry_run=True)
    started = st.migration_started(status, generation=1, migration=dry, now=T0)
    assert approval(started) == token
    done = ownership.migration_outcome({"status": {}}, [migrate_pod(0, COUNTS)])
    assert done is not None
    finished = st.migration_finished(started, generation=1, migration=dry, done=done, now=T1)
    assert approval(finished) == token
    # The same token: answered as a dry run, not yet as the real run.
    assert ownership.answered(finished, ownership.MigrationRequest(token=token, dry_run=True))
    assert not ownership.answered(finished, ownership.MigrationRequest(token=token, dry_run=False))
    assert plan(finished) == ownership.MigrationPlan(old=OLD, new=NEW)


def test_long_tokens_are_kept_whole_or_as_a_digest_never_cut() -> None:
    long_a, long_b = "a" * 200 + "1", "a" * 200 + "2"
    assert ownership.stored_token("t1") == "t1"
    assert ownership.stored_token("x" * 128) == "x" * 128
    assert ownership.stored_token(long_a) != ownership.stored_token(long_b)
    assert ownership.stored_token(long_a).startswith("sha256:")
    request = ownership.migration_request({names.MIGRATION_REQUEST_ANNOTATION: f" {long_a} "})
    assert request is not None
    assert request.token == ownership.stored_token(long_a)
    assert schedule.manual_request({names.PROBE_REQUEST_ANNOTATION: long_b}) == ownership.stored_token(long_b)


def test_pod_security_refusal_quotes_the_admission_and_asks_for_baseline() -> None:
    refusal = ownership.pod_security_refusal(
        'Error creating: pods "x" is forbidden: violates PodSecurity "restricted:latest"'
    )
    assert refusal.reason == "PodSecurityRejected"
    assert "needs the level baseline" in refusal.message
    assert refusal.message.endswith('violates PodSecurity "restricted:latest"')


def test_migration_request_reads_token_and_dry_run() -> None:
    assert ownership.migration_request({}) is None
    assert ownership.migration_request({names.MIGRATION_REQUEST_ANNOTATION: " "}) is None
    request = ownership.migration_request(
        {names.MIGRATION_REQUEST_ANNOTATION: "t1", names.MIGRATION_DRY_RUN_ANNOTATION: "true"}
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
    trigger, _ = schedule.due(finished, generation=1, fingerprint="f", request=None, claim_exists=True, now=T1)
    assert trigger == schedule.Trigger(kind="ownership-migrated")


def test_dry_run_finishes_without_a_probe() -> None:
    ref = ownership.MigrationRef(**{**REF.__dict__, "dry_run": True})
    done = ownership.migration_outcome({"status": {}}, [migrate_pod(0, COUNTS)])
    assert done is not None
    finished = st.migration_finished(slot_status(), generation=1, migration=ref, done=done, now=T1)
    assert finished["lastOwnershipMigration"]["reason"] == "DryRun"
    assert finished["lastOwnershipMigration"]["message"].endswith("dry run: nothing was changed")
    assert cond(finished, OWNERSHIP_MIGRATED)["status"] == "False"
    trigger, _ = schedule.due(finished, generation=1, fingerprint="f", request=None, claim_exists=True, now=T1)
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
            "containerStatuses": [
                {"name": "probe", "state": probe_state or {}},
                {"name": "audit", "state": audit_state},
            ],
        },
    }


def probe_exited(code: int, at: datetime.datetime = T0) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "finishedAt": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "message": ""}}


def test_audit_result_is_read_from_the_audit_container() -> None:
    pods = [probe_pod({"terminated": {"exitCode": 0, "message": UID_1000_CODEX}})]
    assert isinstance(audit_result(pods), ownership.Audit)
    assert audit_result([]) is None
    assert audit_result([probe_pod({"running": {}})]) is None  # not finished: nothing to say yet


@pytest.mark.parametrize(
    ("audit_state", "words"),
    [
        ({"waiting": {"reason": "ErrImagePull", "message": "not found"}}, "(--audit-image) cannot be pulled"),
        ({"waiting": {"reason": "ImagePullBackOff", "message": "429"}}, "(--audit-image) cannot be pulled"),
        ({"waiting": {"reason": "CreateContainerError", "message": "no such file"}}, "could not start"),
        ({"terminated": {"exitCode": 2, "reason": "Error", "message": "Permission denied"}}, "exited with code 2"),
    ],
)
def test_an_audit_that_cannot_run_never_holds_the_verdict_back(audit_state: dict[str, Any], words: str) -> None:
    """The probe's exit code is the verdict; ownership is Unknown (AuditFailed), saying why."""
    pods = [probe_pod(audit_state, probe_exited(0))]
    outcome = classify({"status": {}}, pods, now=T0)
    assert isinstance(outcome, Verdict)
    assert outcome.phase is Phase.READY
    result = audit_result(pods)
    assert isinstance(result, ownership.AuditUnavailable)
    assert result.reason == "AuditFailed"
    assert words in result.message
    # An audit that will never run keeps the pod from ending: the Job is stopped once the verdict is recorded.
    assert outcome.stop_job is ("waiting" in audit_state)


def test_a_crash_beside_a_stuck_audit_is_no_verdict_and_stops_the_job() -> None:
    pods = [probe_pod({"waiting": {"reason": "ImagePullBackOff", "message": "x"}}, probe_exited(1))]
    outcome = classify({"status": {}}, pods, now=T0)
    assert isinstance(outcome, NoVerdict)
    assert (outcome.reason, outcome.stop_job) == (FailureReason.CRASHED, True)


def test_the_verdict_waits_briefly_for_a_running_audit() -> None:
    pods = [probe_pod({"running": {}}, probe_exited(65))]
    waiting = classify({"status": {}}, pods, now=T0)
    assert waiting == Running(until=T0 + AUDIT_GRACE)
    late = classify({"status": {}}, pods, now=T0 + AUDIT_GRACE)
    assert isinstance(late, Verdict)
    assert late.phase is Phase.NEEDS_INIT
    assert audit_result(pods) is None  # the operator records AuditFailed: not finished in time


def test_a_finished_audit_lets_the_probe_decide() -> None:
    pods = [probe_pod({"terminated": {"exitCode": 0, "message": MATCHING_CODEX}}, {"running": {}})]
    assert isinstance(classify({"status": {}}, pods, now=T0), Running)
    done = [probe_pod({"terminated": {"exitCode": 0, "message": MATCHING_CODEX}}, probe_exited(66))]
    outcome = classify({"status": {}}, done, now=T0)
    assert isinstance(outcome, Verdict)
    assert (outcome.phase, outcome.stop_job) == (Phase.NEEDS_REAUTH, False)
