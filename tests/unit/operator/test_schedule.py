"""Probe triggers, backoff, the current Job and placement (logic/schedule.py)."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import pytest
from slot_operator.logic import schedule
from slot_operator.logic.outcome import NoVerdict
from slot_operator.logic.schedule import Placement, Trigger
from slot_operator.logic.verdict import FailureReason

NOW = datetime.datetime(2024, 5, 6, 12, 0, 0, tzinfo=datetime.UTC)
s = datetime.timedelta(seconds=1)


def fmt(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def settled(**overrides: Any) -> dict[str, Any]:
    """A Slot with a verdict for generation 2, next probe in an hour."""
    status: dict[str, Any] = {
        "phase": "Ready",
        "lastProbe": {"generation": 2, "reason": "SmokeTestPassed", "completionTime": fmt(NOW - 5 * s)},
        "nextProbeTime": fmt(NOW + 3600 * s),
        "consecutiveProbeFailures": 0,
    }
    status.update(overrides)
    return status


def due(status: dict[str, Any], *, generation: int = 2, request: str | None = None, claim: bool | None = None,
        fingerprint: str = "f1") -> Any:  # fmt: skip
    return schedule.due(
        status, generation=generation, fingerprint=fingerprint, request=request, claim_exists=claim, now=NOW
    )


# --- due -----------------------------------------------------------------------------------------


def test_not_yet_due_returns_the_time() -> None:
    assert due(settled()) == (None, NOW + 3600 * s)


def test_created_when_never_probed() -> None:
    assert due({}) == (Trigger(kind="created"), None)
    assert due({"phase": "Pending", "conditions": []}, generation=1) == (Trigger(kind="created"), None)


def test_manual_request() -> None:
    assert due(settled(), request="2024-05-06T12:00") == (Trigger(kind="manual", request="2024-05-06T12:00"), None)


def test_manual_request_already_handled_is_not_a_trigger() -> None:
    status = settled(lastHandledProbeRequest="tok")
    assert due(status, request="tok") == (None, NOW + 3600 * s)
    assert due(status, request="tok2") == (Trigger(kind="manual", request="tok2"), None)


def test_manual_request_wins_over_other_triggers() -> None:
    assert due({}, request="r") == (Trigger(kind="manual", request="r"), None)
    assert due(settled(), generation=3, request="r") == (Trigger(kind="manual", request="r"), None)


def test_spec_changed() -> None:
    assert due(settled(), generation=3) == (Trigger(kind="spec-changed"), None)


def test_older_generation_in_status_is_not_a_change() -> None:
    # The last probe's generation being ahead (or equal) never triggers spec-changed.
    assert due(settled(), generation=1) == (None, NOW + 3600 * s)


def test_claim_appeared() -> None:
    status = settled(
        lastProbe={"generation": 2, "reason": "ClaimNotFound"},
        consecutiveProbeFailures=1,
        nextProbeTime=fmt(NOW + 600 * s),
    )
    assert due(status, claim=True) == (Trigger(kind="claim-appeared"), None)
    assert due(status, claim=False) == (None, NOW + 600 * s)
    assert due(status, claim=None) == (None, NOW + 600 * s)


def test_claim_exists_only_matters_after_claim_not_found() -> None:
    assert due(settled(), claim=True) == (None, NOW + 3600 * s)


def test_interval_elapsed() -> None:
    assert due(settled(nextProbeTime=fmt(NOW - s))) == (Trigger(kind="interval"), None)
    assert due(settled(nextProbeTime=fmt(NOW))) == (Trigger(kind="interval"), None)


def test_retry_after_failures() -> None:
    status = settled(consecutiveProbeFailures=2, nextProbeTime=fmt(NOW - s))
    assert due(status) == (Trigger(kind="retry"), None)
    assert due(settled(consecutiveProbeFailures=2, nextProbeTime=fmt(NOW + 40 * s))) == (None, NOW + 40 * s)


@pytest.mark.parametrize("value", [None, "", "garbage"])
def test_missing_or_bad_next_probe_time_is_due_now(value: str | None) -> None:
    status = settled(nextProbeTime=value)
    assert due(status) == (Trigger(kind="interval"), None)


def test_due_is_computed_from_status_alone() -> None:
    # Same status, same answer: a restarted operator reaches the same decision.
    status = settled()
    assert due(dict(status)) == due(dict(status))


# --- manual_request ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (None, None),
        ({}, None),
        ({"other": "x"}, None),
        ({"woved.dev/probe-requested-at": ""}, None),
        ({"woved.dev/probe-requested-at": "   "}, None),
        ({"woved.dev/probe-requested-at": " 2024-05-06T12:00:00Z "}, "2024-05-06T12:00:00Z"),
        # Never cut (two long tokens sharing a beginning stay two requests): a long one is kept as its digest.
        ({"woved.dev/probe-requested-at": "x" * 300}, "sha256:" + hashlib.sha256(b"x" * 300).hexdigest()),
    ],
)
def test_manual_request_token(annotations: dict[str, str] | None, expected: str | None) -> None:
    assert schedule.manual_request(annotations) == expected


# --- backoff -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "seconds"), [(0, 10), (1, 10), (2, 20), (3, 40), (4, 80), (5, 160), (6, 320), (7, 600), (8, 600)]
)
def test_backoff_doubles_and_caps(failures: int, seconds: int) -> None:
    delay = schedule.retry_delay(failures, base=10 * s, cap=600 * s)
    assert delay == seconds * s


def test_backoff_huge_failure_count_does_not_overflow() -> None:
    assert schedule.retry_delay(10_000, base=10 * s, cap=600 * s) == 600 * s


# --- current_job / job_generation ----------------------------------------------------------------


def job(
    name: str, *, created: str, finished: str | None = None, deleting: bool = False, gen: str = "1"
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "creationTimestamp": created,
        "annotations": {"woved.dev/slot-generation": gen},
    }
    if deleting:
        meta["deletionTimestamp"] = created
    conditions = [{"type": finished, "status": "True"}] if finished else []
    return {"metadata": meta, "status": {"conditions": conditions}}


def test_current_job_is_the_recorded_one_even_if_finished() -> None:
    jobs = [job("a", created="2024-05-06T11:00:00Z", finished="Complete"), job("b", created="2024-05-06T11:30:00Z")]
    assert schedule.current_job({"currentProbe": {"jobName": "a"}}, jobs) is jobs[0]


def test_current_job_adopts_the_newest_unfinished_job() -> None:
    jobs = [
        job("old", created="2024-05-06T10:00:00Z"),
        job("new", created="2024-05-06T11:00:00Z"),
        job("done", created="2024-05-06T11:30:00Z", finished="Failed"),
        job("going", created="2024-05-06T11:45:00Z", deleting=True),
    ]
    assert schedule.current_job({}, jobs) is jobs[1]
    # Recorded but gone: fall back to adoption.
    assert schedule.current_job({"currentProbe": {"jobName": "vanished"}}, jobs) is jobs[1]


def test_a_job_older_than_the_last_outcome_is_never_adopted() -> None:
    """Its verdict was taken from its pod before the Job controller marked it finished: it has nothing more to say."""
    answered = job("answered", created="2024-05-06T11:00:00Z")
    status = {"lastProbe": {"jobName": "later-failure", "completionTime": "2024-05-06T11:00:05Z"}}
    assert schedule.current_job(status, [answered]) is None
    started_after = job("after", created="2024-05-06T11:00:06Z")
    assert schedule.current_job(status, [answered, started_after]) is started_after


def test_current_job_none() -> None:
    assert schedule.current_job({}, []) is None
    assert schedule.current_job({}, [job("done", created="2024-05-06T11:00:00Z", finished="Complete")]) is None


@pytest.mark.parametrize(("annotation", "expected"), [("4", 4), ("0", 0), ("nope", 0)])
def test_job_generation(annotation: str, expected: int) -> None:
    assert schedule.job_generation(job("j", created="x", gen=annotation)) == expected


def test_job_generation_without_annotation() -> None:
    assert schedule.job_generation({"metadata": {"name": "j"}}) == 0
    assert schedule.job_generation({}) == 0


# --- place / claim_users -------------------------------------------------------------------------


def claim(*modes: str) -> dict[str, Any]:
    return {"metadata": {"name": "home"}, "spec": {"accessModes": list(modes)}}


def user(name: str, node: str | None = "node-a", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"volumes": [{"name": "h", "persistentVolumeClaim": {"claimName": "home"}}]}
    if node:
        spec["nodeName"] = node
    pod: dict[str, Any] = {"metadata": {"name": name}, "spec": spec, "status": {"phase": "Running"}}
    pod.update(extra)
    return pod


def test_place_rwo_in_use_goes_to_that_node() -> None:
    assert schedule.place(claim("ReadWriteOnce"), "home", [user("agent-0", "node-n")]) == Placement(node="node-n")


def test_place_rwo_not_in_use_goes_anywhere() -> None:
    assert schedule.place(claim("ReadWriteOnce"), "home", []) == Placement(node=None)
    assert schedule.place(claim("ReadWriteOnce"), "home", [user("pending", node=None)]) == Placement(node=None)


def test_place_rwop_in_use_is_claim_in_use() -> None:
    outcome = schedule.place(claim("ReadWriteOncePod"), "home", [user("agent-0", "node-n")])
    assert outcome == NoVerdict(
        reason=FailureReason.CLAIM_IN_USE, message="ReadWriteOncePod claim 'home' is in use by pod agent-0"
    )


def test_place_rwop_free_goes_anywhere() -> None:
    assert schedule.place(claim("ReadWriteOncePod"), "home", []) == Placement(node=None)


@pytest.mark.parametrize("modes", [("ReadWriteMany",), ("ReadOnlyMany",), ("ReadWriteOnce", "ReadWriteMany"), ()])
def test_place_shareable_goes_anywhere(modes: tuple[str, ...]) -> None:
    assert schedule.place(claim(*modes), "home", [user("agent-0", "node-n")]) == Placement(node=None)


def test_place_missing_claim() -> None:
    assert schedule.place(None, "home", []) == NoVerdict(
        reason=FailureReason.CLAIM_NOT_FOUND,
        message="PersistentVolumeClaim 'home' not found in the Slot's namespace",
    )


def test_place_is_deterministic_with_several_users() -> None:
    users = [user("b", "node-2"), user("a", "node-1")]
    assert schedule.place(claim("ReadWriteOnce"), "home", users) == Placement(node="node-1")
    assert schedule.place(claim("ReadWriteOnce"), "home", users[::-1]) == Placement(node="node-1")


def test_spec_at_fault_waits_for_a_new_generation_or_a_request() -> None:
    status = settled(
        lastProbe={"generation": 2, "reason": "InvalidSpec"}, consecutiveProbeFailures=1, nextProbeTime=None
    )
    assert due(status) == (None, None)
    assert due(status, request="r") == (Trigger(kind="manual", request="r"), None)
    assert due(status, generation=3) == (Trigger(kind="spec-changed"), None)


# --- spreading probes over time ---------------------------------------------------------------


def test_jitter_stays_within_five_percent_and_is_stable_per_seed() -> None:
    interval = datetime.timedelta(hours=6)
    values = [schedule.jittered(interval, seed=f"uid-{n}") for n in range(200)]
    assert all(interval <= value < interval * 1.05 for value in values)
    assert len(set(values)) > 150  # Slots created together drift apart
    assert schedule.jittered(interval, seed="uid-1") == schedule.jittered(interval, seed="uid-1")


def test_spread_offsets_cover_the_window() -> None:
    window = datetime.timedelta(minutes=5)
    offsets = [schedule.spread(f"uid-{n}", window=window) for n in range(1000)]
    assert all(datetime.timedelta(0) <= offset < window for offset in offsets)
    assert min(offsets) < window / 10
    assert max(offsets) > window * 9 / 10


def test_spread_window_grows_with_the_overdue_fleet_and_is_capped() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    overdue = {"nextProbeTime": "2025-12-31T00:00:00Z"}
    later = {"nextProbeTime": "2026-01-02T00:00:00Z"}
    assert schedule.spread_window([overdue], now=now) == datetime.timedelta(seconds=1 / schedule.STARTUP_PACE)
    assert schedule.spread_window([overdue] * 2000 + [later] * 5000 + [{}], now=now) == datetime.timedelta(
        seconds=2000 / schedule.STARTUP_PACE
    )
    assert schedule.spread_window([overdue] * 100_000, now=now) == schedule.STARTUP_SPREAD


# --- a new generation with the same verdict fields ----------------------------------------------------------


def test_a_generation_with_the_probed_verdict_fields_is_no_reason_to_probe() -> None:
    status = settled(lastProbe={"generation": 2, "specHash": "f1", "completionTime": fmt(NOW - 5 * s)})
    assert due(status, generation=3, fingerprint="f1") == (None, NOW + 3600 * s)
    assert due(status, generation=3, fingerprint="f2") == (Trigger(kind="spec-changed"), None)
    assert due(status, generation=2, fingerprint="f2") == (Trigger(kind="spec-changed"), None)


def test_a_spec_fault_is_tried_again_on_any_new_generation() -> None:
    status = settled(lastProbe={"generation": 2, "reason": "InvalidSpec", "specHash": "f1"}, nextProbeTime=None)
    assert due(status, generation=2, fingerprint="f1") == (None, None)
    assert due(status, generation=3, fingerprint="f1") == (Trigger(kind="spec-changed"), None)


def test_the_next_periodic_probe_under_another_interval() -> None:
    finished = NOW - 600 * s
    status = settled(lastProbe={"generation": 2, "jobName": "j", "completionTime": fmt(finished)})
    at = schedule.periodic_after(status, interval=datetime.timedelta(hours=1), slot_uid="u")
    assert at == finished + schedule.jittered(datetime.timedelta(hours=1), seed="u/j")
    assert schedule.periodic_after(settled(consecutiveProbeFailures=1), interval=s * 60, slot_uid="u") is None
    migrated = settled(nextProbeTime=fmt(NOW), lastOwnershipMigration={"completionTime": fmt(NOW)})
    assert schedule.periodic_after(migrated, interval=s * 60, slot_uid="u") is None
    assert schedule.periodic_after({}, interval=s * 60, slot_uid="u") is None
