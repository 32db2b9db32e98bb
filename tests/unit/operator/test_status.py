"""Slot status transitions (logic/status.py) against the table of docs/design.md §2."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest
from slot_operator.logic import status as st
from slot_operator.logic.conditions import ORDER, find
from slot_operator.logic.outcome import NoVerdict, Verdict
from slot_operator.logic.phases import Phase
from slot_operator.logic.verdict import FailureReason, ProbeResult

T0 = datetime.datetime(2024, 5, 6, 7, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=1)
T2 = T0 + datetime.timedelta(minutes=2)
T3 = T0 + datetime.timedelta(minutes=3)
INTERVAL = datetime.timedelta(hours=6)


def fmt(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def probe(
    generation: int = 1, *, image: str = "img:1", request: str | None = None, at: datetime.datetime = T0
) -> st.ProbeRef:
    return st.ProbeRef(
        job_name=f"codex-1-probe-{generation:010d}",
        image=image,
        generation=generation,
        trigger="created",
        request=request,
        start_time=at,
    )


def cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found = find(status["conditions"], kind)
    assert found is not None, kind
    return dict(found)


def row(status: dict[str, Any]) -> tuple[str, ...]:
    """(phase, Ready, Stalled, Reconciling, ProbeSucceeded) as in the design table."""
    return (
        status["phase"],
        *(f"{cond(status, k)['status']}/{cond(status, k)['reason']}" for k in ORDER),
    )


def before_any_verdict(reconciling: str) -> tuple[str, ...]:
    """The row of a Slot no probe has judged (nor failed to judge) yet: only Reconciling differs."""
    return ("Pending", "Unknown/AwaitingProbe", "False/AwaitingVerdict", reconciling, "Unknown/AwaitingProbe")


def exit_verdict(code: int, *, detail: str | None = None, finished: datetime.datetime | None = T1) -> Verdict:
    phase = {0: Phase.READY, 64: Phase.IMAGE_BROKEN, 65: Phase.NEEDS_INIT, 66: Phase.NEEDS_REAUTH}[code]
    result = ProbeResult(status="x", agent="codex", detail=detail) if detail else None
    return Verdict(
        phase=phase,
        exit_code=code,
        reason="SmokeTestPassed" if code == 0 else phase.value,
        message=detail or f"message for {code}",
        result=result,
        finished=finished,
    )


def pull_verdict() -> Verdict:
    return Verdict(
        phase=Phase.IMAGE_BROKEN,
        exit_code=None,
        reason="ImagePullFailed",
        message="ErrImagePull: not found",
        result=None,
        finished=None,
        stop_job=True,
    )


def after_verdict(code: int, *, generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return st.verdict(
        status or {},
        generation=generation,
        probe=probe(generation),
        outcome=exit_verdict(code),
        interval=INTERVAL,
        now=T2,
    )


def apply_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies application/merge-patch+json."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            base = result.get(key)
            result[key] = apply_merge_patch(base if isinstance(base, dict) else {}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# --- no verdict yet ----------------------------------------------------------------------------


def test_queued_from_nothing_names_its_job_once() -> None:
    new = st.queued({}, generation=1, probe=probe(1), ahead=3, now=T0)
    assert row(new) == before_any_verdict("True/Queued")
    assert new["observedGeneration"] == 1
    assert new["currentProbe"]["jobName"] == "codex-1-probe-0000000001"
    assert cond(new, "Reconciling")["message"] == (
        "probe Job codex-1-probe-0000000001 (created) waits for a place under the concurrency cap; "
        "3 Slot(s) ahead when it joined the queue at 2024-05-06T07:00:00Z; generation 1 has no verdict yet"
    )
    assert all(c["lastTransitionTime"] == "2024-05-06T07:00:00Z" for c in new["conditions"])
    assert all(c["observedGeneration"] == 1 for c in new["conditions"])


def test_probing_from_nothing() -> None:
    ref = probe(1, request="tok")
    new = st.probing({}, generation=1, probe=ref, now=T0)
    assert row(new) == before_any_verdict("True/Probing")
    assert new["currentProbe"] == {
        "jobName": "codex-1-probe-0000000001",
        "image": "img:1",
        "generation": 1,
        "trigger": "created",
        "startTime": "2024-05-06T07:00:00Z",
        "request": "tok",
    }
    assert cond(new, "Reconciling")["message"] == (
        "probe Job codex-1-probe-0000000001 running (created); generation 1 has no verdict yet"
    )


def test_queued_then_probing_keeps_reconciling_transition_time() -> None:
    queued = st.queued({}, generation=1, probe=probe(1), ahead=1, now=T0)
    probing = st.probing(queued, generation=1, probe=probe(), now=T1)
    assert cond(probing, "Reconciling")["lastTransitionTime"] == "2024-05-06T07:00:00Z"
    assert cond(probing, "Reconciling")["reason"] == "Probing"


def test_transitions_do_not_mutate_their_input() -> None:
    before = st.queued({}, generation=1, probe=probe(1), ahead=1, now=T0)
    snapshot = copy.deepcopy(before)
    st.probing(before, generation=1, probe=probe(), now=T1)
    after_verdict(0, status=before)
    st.no_verdict(
        before,
        generation=1,
        probe=None,
        outcome=NoVerdict(reason=FailureReason.CLAIM_NOT_FOUND, message="x"),
        trigger="created",
        request=None,
        retry_at=T3,
        now=T1,
    )
    assert before == snapshot


# --- verdicts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, ("Ready", "True/SmokeTestPassed", "False/Ready", "False/Idle", "True/ProbeCompleted")),
        (64, ("ImageBroken", "False/ImageBroken", "True/ImageBroken", "False/Idle", "True/ProbeCompleted")),
        (65, ("NeedsInit", "False/NeedsInit", "True/NeedsInit", "False/Idle", "True/ProbeCompleted")),
        (66, ("NeedsReauth", "False/NeedsReauth", "True/NeedsReauth", "False/Idle", "True/ProbeCompleted")),
    ],
)
def test_verdict_rows(code: int, expected: tuple[str, ...]) -> None:
    probing = st.probing({}, generation=1, probe=probe(), now=T0)
    new = after_verdict(code, status=probing)
    assert row(new) == expected
    assert "currentProbe" not in new
    assert new["consecutiveProbeFailures"] == 0
    assert new["nextProbeTime"] == fmt(T2 + INTERVAL)
    assert cond(new, "ProbeSucceeded")["message"] == f"probe exited with code {code}"
    assert cond(new, "Reconciling")["message"] == f"next probe at {fmt(T2 + INTERVAL)}"


def test_stalled_message_is_the_verdict_message() -> None:
    new = after_verdict(65)
    assert cond(new, "Stalled")["message"] == "message for 65"
    assert cond(new, "Ready")["message"] == "message for 65"
    assert cond(after_verdict(0), "Stalled")["message"] == ""


def test_image_pull_failure_row() -> None:
    new = st.verdict({}, generation=1, probe=probe(), outcome=pull_verdict(), interval=INTERVAL, now=T2)
    assert row(new) == ("ImageBroken", "False/ImageBroken", "True/ImageBroken", "False/Idle", "True/ProbeCompleted")
    assert cond(new, "ProbeSucceeded")["message"] == "ImagePullFailed"
    assert new["lastProbe"]["reason"] == "ImagePullFailed"
    assert "exitCode" not in new["lastProbe"]
    assert "result" not in new["lastProbe"]
    assert new["lastProbe"]["completionTime"] == fmt(T2)


def test_last_probe_record() -> None:
    ref = probe(2, image="img:2", request="tok")
    new = st.verdict(
        {}, generation=2, probe=ref, outcome=exit_verdict(66, detail="auth.json bad"), interval=INTERVAL, now=T2
    )
    assert new["lastProbe"] == {
        "jobName": "codex-1-probe-0000000002",
        "image": "img:2",
        "generation": 2,
        "trigger": "created",
        "startTime": "2024-05-06T07:00:00Z",
        "completionTime": "2024-05-06T07:01:00Z",
        "reason": "NeedsReauth",
        "message": "auth.json bad",
        "exitCode": 66,
        "result": "x",
    }


@pytest.mark.parametrize(
    ("code", "result"), [(0, "ok"), (64, "cli-broken"), (65, "creds-missing"), (66, "creds-invalid")]
)
def test_result_word_from_exit_code_without_json_line(code: int, result: str) -> None:
    assert after_verdict(code)["lastProbe"]["result"] == result


def test_last_probe_message_is_capped_and_masked() -> None:
    secret = "sk-ant-api03-Q7xYz2Lm9Kp4Rt8Vw3Nb6Hj1"
    outcome = exit_verdict(66, detail=f"bad token {secret} " + "z" * 600)
    new = st.verdict({}, generation=1, probe=probe(), outcome=outcome, interval=INTERVAL, now=T2)
    assert len(new["lastProbe"]["message"]) <= 256
    assert secret not in new["lastProbe"]["message"]
    assert secret not in cond(new, "Ready")["message"]


def test_ready_sets_last_ready_time_and_image() -> None:
    new = after_verdict(0)
    assert new["lastReadyTime"] == "2024-05-06T07:01:00Z"  # the Job's completion, not "now"
    assert new["lastReadyImage"] == "img:1"


@pytest.mark.parametrize("code", [64, 65, 66])
def test_non_ready_verdicts_do_not_touch_last_ready(code: int) -> None:
    assert "lastReadyTime" not in after_verdict(code)
    assert "lastReadyImage" not in after_verdict(code)
    ready = after_verdict(0)
    later = st.verdict(
        ready, generation=2, probe=probe(2, image="img:2"), outcome=exit_verdict(code), interval=INTERVAL, now=T3
    )
    assert later["lastReadyTime"] == ready["lastReadyTime"]
    assert later["lastReadyImage"] == "img:1"


def test_verdict_for_an_older_generation_keeps_the_new_one_in_progress() -> None:
    # The probe was for generation 3; the Slot is now at generation 4.
    new = st.verdict({}, generation=4, probe=probe(3), outcome=exit_verdict(0), interval=INTERVAL, now=T2)
    assert new["observedGeneration"] == 4
    assert cond(new, "Ready")["observedGeneration"] == 3  # Ready speaks for the generation it judged
    assert row(new)[1:4] == ("True/SmokeTestPassed", "False/AwaitingVerdict", "True/AwaitingProbe")
    assert all(cond(new, kind)["observedGeneration"] == 4 for kind in ("Stalled", "Reconciling", "ProbeSucceeded"))
    assert cond(new, "Reconciling")["message"].endswith("generation 4 has no verdict yet (generation 3 was Ready)")
    assert new["lastProbe"]["generation"] == 3


def test_verdict_recovers_from_failures_and_flips_stalled() -> None:
    stalled = after_verdict(66)
    stalled["consecutiveProbeFailures"] = 4
    ready = st.verdict(stalled, generation=2, probe=probe(2), outcome=exit_verdict(0), interval=INTERVAL, now=T3)
    assert row(ready) == ("Ready", "True/SmokeTestPassed", "False/Ready", "False/Idle", "True/ProbeCompleted")
    assert ready["consecutiveProbeFailures"] == 0
    assert cond(ready, "Ready")["lastTransitionTime"] == fmt(T3)
    assert cond(ready, "Stalled")["lastTransitionTime"] == fmt(T3)


def test_last_handled_probe_request_is_echoed_by_a_verdict() -> None:
    new = st.verdict({}, generation=1, probe=probe(request="abc"), outcome=exit_verdict(0), interval=INTERVAL, now=T2)
    assert new["lastHandledProbeRequest"] == "abc"
    assert "request" not in new["lastProbe"]
    # A probe without a request leaves the last handled one alone.
    later = st.verdict(new, generation=1, probe=probe(), outcome=exit_verdict(0), interval=INTERVAL, now=T3)
    assert later["lastHandledProbeRequest"] == "abc"


def test_reprobe_after_verdict_only_touches_reconciling_reason() -> None:
    """A re-probe of a generation that has its verdict holds no gate: Reconciling stays False."""
    for code in (0, 65):
        before = after_verdict(code)
        running = st.probing(before, generation=1, probe=probe(), now=T3)
        assert row(running)[3] == "False/Probing"
        for kind in ("Ready", "Stalled", "ProbeSucceeded"):
            assert cond(running, kind) == cond(before, kind)
        assert cond(running, "Reconciling")["lastTransitionTime"] == cond(before, "Reconciling")["lastTransitionTime"]
        assert running["phase"] == before["phase"]


# --- no verdict --------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [r for r in FailureReason if r is not FailureReason.INVALID_SPEC])
@pytest.mark.parametrize("code", [0, 66])
def test_no_verdict_keeps_the_verdict(reason: FailureReason, code: int) -> None:
    before = after_verdict(code)
    outcome = NoVerdict(
        reason=reason, message=f"why: {reason}", exit_code=1 if reason is FailureReason.CRASHED else None
    )
    new = st.no_verdict(
        before, generation=1, probe=probe(), outcome=outcome, trigger="interval", request=None, retry_at=T3, now=T3
    )
    assert new["phase"] == before["phase"]
    assert cond(new, "Ready") == cond(before, "Ready")
    assert cond(new, "Stalled") == cond(before, "Stalled")
    assert row(new)[3:] == ("False/Retrying", f"False/{reason.value}")
    assert cond(new, "Reconciling")["message"] == f"{reason.value}: why: {reason.value}; next attempt at {fmt(T3)}"
    assert cond(new, "ProbeSucceeded")["message"] == f"why: {reason.value}"
    assert cond(new, "ProbeSucceeded")["lastTransitionTime"] == fmt(T3)
    assert new["consecutiveProbeFailures"] == 1
    assert new["nextProbeTime"] == fmt(T3)
    assert new.get("lastReadyTime") == before.get("lastReadyTime")
    assert ("lastReadyTime" in new) is (code == 0)
    assert new["lastProbe"]["reason"] == reason.value


def test_no_verdict_before_any_verdict_stays_pending() -> None:
    probing = st.probing({}, generation=1, probe=probe(), now=T0)
    outcome = NoVerdict(reason=FailureReason.TIMED_OUT, message="probe did not finish before its deadline")
    new = st.no_verdict(
        probing, generation=1, probe=probe(), outcome=outcome, trigger="created", request=None, retry_at=T2, now=T1
    )
    assert row(new) == (
        "Pending",
        "Unknown/AwaitingProbe",
        "False/AwaitingVerdict",
        "True/Retrying",
        "False/ProbeTimedOut",
    )
    assert "currentProbe" not in new
    assert cond(new, "Reconciling")["message"] == (
        f"ProbeTimedOut: probe did not finish before its deadline; next attempt at {fmt(T2)}; "
        "generation 1 has no verdict yet"
    )


def test_no_verdict_counts_consecutive_failures() -> None:
    status: dict[str, Any] = after_verdict(0)
    outcome = NoVerdict(reason=FailureReason.CRASHED, message="boom", exit_code=1)
    for expected in (1, 2, 3):
        status = st.no_verdict(
            status, generation=1, probe=probe(), outcome=outcome, trigger="retry", request=None, retry_at=T3, now=T3
        )
        assert status["consecutiveProbeFailures"] == expected


def test_no_verdict_last_probe_without_a_job() -> None:
    outcome = NoVerdict(reason=FailureReason.CLAIM_NOT_FOUND, message="PersistentVolumeClaim 'x' not found")
    new = st.no_verdict(
        {}, generation=5, probe=None, outcome=outcome, trigger="created", request="tok", retry_at=T2, now=T1
    )
    assert new["lastProbe"] == {
        "generation": 5,
        "trigger": "created",
        "completionTime": fmt(T1),
        "reason": "ClaimNotFound",
        "message": "PersistentVolumeClaim 'x' not found",
    }
    assert new["lastHandledProbeRequest"] == "tok"


def test_no_verdict_echoes_the_probe_request_over_the_trigger_request() -> None:
    outcome = NoVerdict(reason=FailureReason.CRASHED, message="boom", exit_code=3)
    new = st.no_verdict(
        {}, generation=1, probe=probe(request="p"), outcome=outcome, trigger="manual", request="t", retry_at=T2, now=T1
    )
    assert new["lastHandledProbeRequest"] == "p"
    assert new["lastProbe"]["exitCode"] == 3
    assert new["lastProbe"]["jobName"] == "codex-1-probe-0000000001"


def test_no_verdict_keeps_result_of_crash() -> None:
    outcome = NoVerdict(
        reason=FailureReason.CRASHED,
        message="EIO",
        exit_code=1,
        result=ProbeResult(status="error", agent="codex", detail="EIO"),
        finished=T1,
    )
    new = st.no_verdict(
        {}, generation=1, probe=probe(), outcome=outcome, trigger="created", request=None, retry_at=T3, now=T2
    )
    assert new["lastProbe"]["result"] == "error"
    assert new["lastProbe"]["completionTime"] == fmt(T1)


# --- idle / invalid spec -----------------------------------------------------------------------


def test_idle_clears_current_probe_and_says_when_next() -> None:
    ready = after_verdict(0)
    ready["currentProbe"] = probe().to_status()
    new = st.idle(ready, generation=1, suspended=False, now=T3)
    assert "currentProbe" not in new
    assert cond(new, "Reconciling")["reason"] == "Idle"
    assert cond(new, "Reconciling")["message"] == f"next probe at {ready['nextProbeTime']}"
    assert row(new)[:3] == row(ready)[:3]


def test_idle_suspended_before_any_verdict_is_in_progress() -> None:
    new = st.idle({}, generation=2, suspended=True, now=T0)
    assert row(new) == before_any_verdict("True/Suspended")
    assert new["observedGeneration"] == 2


def test_suspending_with_a_new_image_leaves_the_old_verdict_on_record_only() -> None:
    ready = after_verdict(0)
    new = st.idle(ready, generation=2, suspended=True, now=T3)
    assert row(new) == (
        "Ready",
        "True/SmokeTestPassed",
        "False/AwaitingVerdict",
        "True/Suspended",
        "True/ProbeCompleted",
    )
    assert cond(new, "Ready")["observedGeneration"] == 1
    assert cond(new, "Reconciling")["message"] == (
        "spec.suspend is true: no probe runs until it is false; "
        "generation 2 has no verdict yet (generation 1 was Ready)"
    )


def test_invalid_spec_stalls_and_stops_scheduling() -> None:
    ready = after_verdict(0)
    ready["currentProbe"] = probe().to_status()
    new = st.invalid_spec(ready, generation=2, message="spec.timeout: '2h' is outside 5s..1h", now=T3)
    assert row(new) == ("Ready", "True/SmokeTestPassed", "True/InvalidSpec", "False/InvalidSpec", "False/InvalidSpec")
    assert "nextProbeTime" not in new
    assert "currentProbe" not in new
    assert cond(new, "Stalled")["message"] == "spec.timeout: '2h' is outside 5s..1h"
    assert new["observedGeneration"] == 2


# --- ProbeRef / phase_of -----------------------------------------------------------------------


def test_probe_ref_round_trip() -> None:
    for ref in (probe(7, request="r"), probe(7)):
        assert st.ProbeRef.from_status(ref.to_status()) == ref
    assert "request" not in probe().to_status()


@pytest.mark.parametrize("data", [None, {}, {"image": "x"}, {"jobName": ""}])
def test_probe_ref_from_empty_status(data: dict[str, Any] | None) -> None:
    assert st.ProbeRef.from_status(data) is None


def test_probe_ref_from_partial_status() -> None:
    ref = st.ProbeRef.from_status({"jobName": "j"})
    assert ref == st.ProbeRef(
        job_name="j",
        image="",
        generation=0,
        trigger="",
        request=None,
        start_time=datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC),
    )


@pytest.mark.parametrize(
    ("data", "phase"),
    [
        ({}, Phase.PENDING),
        ({"phase": "Ready"}, Phase.READY),
        ({"phase": "NeedsInit"}, Phase.NEEDS_INIT),
        ({"phase": "Bogus"}, Phase.PENDING),
    ],
)
def test_phase_of(data: dict[str, Any], phase: Phase) -> None:
    assert st.phase_of(data) is phase


# --- diff --------------------------------------------------------------------------------------


def test_diff_unchanged_is_empty() -> None:
    status = after_verdict(0)
    assert st.diff(status, copy.deepcopy(status)) == {}


def test_diff_changed_and_removed_keys() -> None:
    old = {"phase": "Pending", "currentProbe": {"jobName": "j"}, "nextProbeTime": "t", "same": 1}
    new = {"phase": "Ready", "nextProbeTime": "t", "same": 1, "lastReadyImage": "img"}
    assert st.diff(old, new) == {"phase": "Ready", "currentProbe": None, "lastReadyImage": "img"}


def test_diff_nulls_keys_removed_inside_nested_objects() -> None:
    # A merge patch merges objects: a timed-out probe must not inherit the previous probe's exit code.
    old = {"lastProbe": {"jobName": "a", "exitCode": 66, "result": "creds-invalid", "reason": "NeedsReauth"}}
    new = {"lastProbe": {"jobName": "b", "reason": "ProbeTimedOut"}}
    patch = st.diff(old, new)
    assert patch == {"lastProbe": {"jobName": "b", "reason": "ProbeTimedOut", "exitCode": None, "result": None}}
    assert apply_merge_patch(old, patch) == new


def test_diff_applied_as_merge_patch_reproduces_every_transition() -> None:
    ref = probe(1, request="r1")
    steps: list[dict[str, Any]] = [{}]
    steps.append(st.queued(steps[-1], generation=1, probe=probe(1), ahead=1, now=T0))
    steps.append(st.probing(steps[-1], generation=1, probe=ref, now=T0))
    steps.append(
        st.verdict(
            steps[-1], generation=1, probe=ref, outcome=exit_verdict(66, detail="bad"), interval=INTERVAL, now=T1
        )
    )
    steps.append(st.probing(steps[-1], generation=2, probe=probe(2), now=T2))
    timeout = NoVerdict(reason=FailureReason.TIMED_OUT, message="deadline")
    steps.append(
        st.no_verdict(
            steps[-1], generation=2, probe=probe(2), outcome=timeout, trigger="retry", request=None, retry_at=T3, now=T3
        )
    )
    steps.append(st.idle(steps[-1], generation=2, suspended=True, now=T3))
    server = steps[0]
    for new in steps[1:]:
        server = apply_merge_patch(server, st.diff(server, new))
        assert server == new
    assert "exitCode" not in server["lastProbe"]
    assert "request" not in server.get("currentProbe", {})


def test_fixing_an_invalid_spec_clears_stalled() -> None:
    now = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
    broken = st.invalid_spec({}, generation=1, message="spec.env: HOME is set by the operator", now=now)
    assert find(broken["conditions"], "Stalled")["status"] == "True"

    queued = st.queued(broken, generation=2, probe=probe(2), ahead=1, now=now)

    stalled = find(queued["conditions"], "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("False", "AwaitingVerdict")


# --- the rule: a new generation after an older verdict (docs/design.md §2.3) --------------------


def test_new_generation_after_ready_whose_probe_crashed_is_in_progress() -> None:
    ready = after_verdict(0)
    crash = NoVerdict(reason=FailureReason.CRASHED, message="boom", exit_code=1)
    new = st.no_verdict(
        ready, generation=2, probe=probe(2), outcome=crash, trigger="spec-changed", request=None, retry_at=T3, now=T3
    )
    assert row(new) == ("Ready", "True/SmokeTestPassed", "False/AwaitingVerdict", "True/Retrying", "False/ProbeCrashed")
    assert cond(new, "Ready")["observedGeneration"] == 1
    assert new["observedGeneration"] == 2
    # Idle reconciles while the retry waits write the same conditions (no flapping writes).
    assert st.idle(new, generation=2, suspended=False, now=T3)["conditions"] == new["conditions"]


def test_new_image_for_a_stalled_slot_clears_stalled_while_it_waits() -> None:
    stalled = after_verdict(66)
    new = st.queued(stalled, generation=2, probe=probe(2), ahead=5, now=T3)
    assert row(new) == (
        "NeedsReauth",
        "False/NeedsReauth",
        "False/AwaitingVerdict",
        "True/Queued",
        "True/ProbeCompleted",
    )
    assert cond(new, "Stalled")["message"] == "generation 2 has no verdict yet (generation 1 was NeedsReauth)"
    assert cond(new, "Stalled")["observedGeneration"] == 2
    fixed = st.verdict(new, generation=2, probe=probe(2), outcome=exit_verdict(0), interval=INTERVAL, now=T3)
    assert row(fixed)[:4] == ("Ready", "True/SmokeTestPassed", "False/Ready", "False/Idle")


def test_a_spec_fault_found_by_the_probe_stalls_without_retry() -> None:
    ready = after_verdict(0)
    fault = NoVerdict(reason=FailureReason.INVALID_SPEC, message="spec.mountPath: could not mount the claim")
    new = st.no_verdict(
        ready, generation=2, probe=probe(2), outcome=fault, trigger="spec-changed", request=None, retry_at=T3, now=T3
    )
    assert row(new) == ("Ready", "True/SmokeTestPassed", "True/InvalidSpec", "False/InvalidSpec", "False/InvalidSpec")
    assert cond(new, "Stalled")["message"] == "spec.mountPath: could not mount the claim"
    assert "nextProbeTime" not in new
    assert st.spec_fault(new, generation=2) == "spec.mountPath: could not mount the claim"
    # It holds while nothing changes, and a new generation is judged afresh.
    assert st.idle(new, generation=2, suspended=False, now=T3)["conditions"] == new["conditions"]
    assert st.spec_fault(new, generation=3) is None
    assert row(st.queued(new, generation=3, probe=probe(3), ahead=1, now=T3))[2:4] == (
        "False/AwaitingVerdict",
        "True/Queued",
    )


def test_reprobe_crash_after_a_current_verdict_holds_no_gate() -> None:
    for code, stalled in ((0, "False/Ready"), (65, "True/NeedsInit")):
        crash = NoVerdict(reason=FailureReason.TIMED_OUT, message="deadline")
        new = st.no_verdict(
            after_verdict(code),
            generation=1,
            probe=probe(),
            outcome=crash,
            trigger="interval",
            request=None,
            retry_at=T3,
            now=T3,
        )
        assert row(new)[2:] == (stalled, "False/Retrying", "False/ProbeTimedOut")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, None),
        ({"conditions": [{"type": "Ready", "status": "Unknown", "observedGeneration": 3}]}, None),
        ({"conditions": [{"type": "Ready", "status": "False", "observedGeneration": 3}]}, 3),
        ({"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 4}]}, 4),
    ],
)
def test_verdict_generation(status: dict[str, Any], expected: int | None) -> None:
    assert st.verdict_generation(status) == expected


# --- a verdict carried to a generation that changed only interval, timeout or suspend ----------------------


def judged(code: int = 0, *, spec_hash: str = "h1") -> dict[str, Any]:
    """Generation 1's verdict, by a probe of the spec with fingerprint `spec_hash`."""
    ref = st.ProbeRef(job_name="codex-1-probe-1", image="img:1", generation=1, trigger="created", request=None,
                      start_time=T0, spec_hash=spec_hash)  # fmt: skip
    return st.verdict({}, generation=1, probe=ref, outcome=exit_verdict(code), interval=INTERVAL, now=T2)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, True),
        ({"fingerprint": "h2"}, False),  # a verdict field changed
        ({"generation": 1}, False),  # nothing to carry: it is the verdict's own generation
        ({"strip": True}, False),  # recorded by an operator older than specHash
        ({"last_generation": 2}, False),  # a later probe of another spec gave no verdict: it hides the judged spec
        ({"invalid": True}, False),  # the last probe found the spec at fault: that is no verdict to carry
    ],
)
def test_carries(change: dict[str, Any], expected: bool) -> None:
    status = judged()
    if change.get("strip"):
        status["lastProbe"].pop("specHash")
    if "last_generation" in change:
        status["lastProbe"]["generation"] = change["last_generation"]
    if change.get("invalid"):
        status["lastProbe"]["reason"] = FailureReason.INVALID_SPEC.value
    generation, fingerprint = change.get("generation", 2), change.get("fingerprint", "h1")
    assert st.carries(status, generation=generation, fingerprint=fingerprint) is expected


def test_carries_nothing_across_a_spec_reported_invalid() -> None:
    status = st.invalid_spec(judged(), generation=2, message="spec.mountPath: /proc is under /proc", now=T3)
    assert st.faulty_generation(status) == 2
    assert not st.carries(status, generation=3, fingerprint="h1")


def test_carries_nothing_before_a_verdict() -> None:
    status = st.probing({}, generation=1, probe=probe(), now=T0)
    assert not st.carries(status, generation=2, fingerprint="h1")


@pytest.mark.parametrize("code", [0, 66])
def test_carried_moves_every_condition_and_nothing_else(code: int) -> None:
    status = judged(code)
    new = st.carried(status, generation=2, suspended=False, next_probe=T3 + INTERVAL, now=T3)
    assert new["observedGeneration"] == 2
    assert {c["type"]: c["observedGeneration"] for c in new["conditions"]} == dict.fromkeys(
        (c["type"] for c in new["conditions"]), 2
    )
    assert row(new) == row(status)  # the same verdict, the same reading by every tool
    assert cond(new, "Ready")["lastTransitionTime"] == cond(status, "Ready")["lastTransitionTime"]
    assert (new["phase"], new["lastProbe"]) == (status["phase"], status["lastProbe"])
    assert new["nextProbeTime"] == fmt(T3 + INTERVAL)


def test_carried_while_suspended_is_suspended_and_not_reconciling() -> None:
    new = st.carried(judged(), generation=2, suspended=True, next_probe=None, now=T3)
    assert cond(new, "Reconciling") | {"lastTransitionTime": ""} == {
        "type": "Reconciling", "status": "False", "reason": "Suspended", "message": st.SUSPENDED_MESSAGE,
        "observedGeneration": 2, "lastTransitionTime": "",
    }  # fmt: skip
    assert cond(new, "Ready")["status"] == "True"


def test_carried_leaves_the_probe_in_flight_and_what_reconciling_says_of_it() -> None:
    reprobing = st.probing(judged(), generation=1, probe=probe(1, at=T3), now=T3)
    new = st.carried(reprobing, generation=2, suspended=True, next_probe=None, now=T3)
    assert new["currentProbe"] == reprobing["currentProbe"]
    assert cond(new, "Reconciling")["reason"] == "Probing"
    assert cond(new, "Reconciling")["message"] == cond(reprobing, "Reconciling")["message"]


def test_a_verdict_speaks_for_the_generation_it_is_given_for() -> None:
    new = st.verdict({}, generation=3, probe=probe(1), outcome=exit_verdict(0), interval=INTERVAL, speaks_for=3,
                     now=T2)  # fmt: skip
    assert cond(new, "Ready")["observedGeneration"] == 3
    assert new["lastProbe"]["generation"] == 1
    assert cond(new, "Reconciling")["status"] == "False"
