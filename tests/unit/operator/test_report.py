"""How a Slot's status is read for metrics and `kubectl slot` (logic/report.py, kubectl/render.py).

Statuses are built with the real transitions of logic/status.py, so these tests follow the
contract as the operator writes it.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from slot_operator.kubectl import render
from slot_operator.logic import report
from slot_operator.logic import status as st
from slot_operator.logic.outcome import NoVerdict, Verdict
from slot_operator.logic.phases import Phase
from slot_operator.logic.verdict import FailureReason

T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
INTERVAL = datetime.timedelta(hours=6)


def probe(generation: int, *, request: str | None = None, image: str = "img:1") -> st.ProbeRef:
    return st.ProbeRef(
        job_name=f"s-probe-{generation}", image=image, generation=generation, trigger="created", request=request,
        start_time=T0,
    )  # fmt: skip


def verdict(phase: Phase, *, at: datetime.datetime = T0) -> Verdict:
    code = {Phase.READY: 0, Phase.IMAGE_BROKEN: 64, Phase.NEEDS_INIT: 65, Phase.NEEDS_REAUTH: 66}[phase]
    reason = "SmokeTestPassed" if phase is Phase.READY else phase.value
    return Verdict(phase=phase, exit_code=code, reason=reason, message=f"{phase} says so", result=None, finished=at)


def crash(at: datetime.datetime = T0) -> NoVerdict:
    return NoVerdict(reason=FailureReason.CRASHED, message="exit 1", exit_code=1, finished=at)


def slot(status: dict[str, Any], *, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "agents", "name": "s", "generation": generation, "uid": "u-1"},
        "spec": {"agent": "codex", "claimName": "home", "image": "img:1", **spec},
        "status": status,
    }


def decided(phase: Phase, *, generation: int = 1, request: str | None = None) -> dict[str, Any]:
    return st.verdict(
        {}, generation=generation, probe=probe(generation, request=request), outcome=verdict(phase),
        interval=INTERVAL, now=T0,
    )  # fmt: skip


def failed(status: dict[str, Any], *, generation: int, request: str | None = None) -> dict[str, Any]:
    return st.no_verdict(
        status, generation=generation, probe=probe(generation, request=request), outcome=crash(), trigger="manual",
        request=request, retry_at=T0 + datetime.timedelta(seconds=10), now=T0,
    )  # fmt: skip


# --- view -----------------------------------------------------------------------------------


def test_a_new_slot_has_no_verdict() -> None:
    view = report.view(slot(st.queued({}, generation=1, probe=probe(1), ahead=3, now=T0)))
    assert (view.phase, view.verdict_generation, view.verdict_current) == (Phase.PENDING, None, False)
    assert not view.ready
    assert view.reason == "Queued"
    assert view.verdict_time is None
    assert render.ready_word(view) == "Unknown"


@pytest.mark.parametrize("phase", list(Phase)[1:])
def test_a_verdict_on_the_current_generation(phase: Phase) -> None:
    view = report.view(slot(decided(phase, generation=3), generation=3))
    assert view.verdict_current
    assert view.ready is (phase is Phase.READY)
    assert view.verdict_time == T0
    assert view.next_probe == T0 + INTERVAL
    assert view.reason == ("SmokeTestPassed" if phase is Phase.READY else phase.value)
    assert render.ready_word(view) == ("True" if phase is Phase.READY else "False")


def test_a_spec_change_leaves_the_verdict_on_the_older_generation() -> None:
    status = st.idle(decided(Phase.READY, generation=1), generation=2, suspended=False, now=T0)
    view = report.view(slot(status, generation=2, image="img:2"))
    assert (view.phase, view.verdict_generation, view.verdict_current, view.ready) == (Phase.READY, 1, False, False)
    assert view.reason == "AwaitingProbe"
    assert render.ready_word(view) == "Unknown"


def test_failed_probes_keep_the_verdict_and_count() -> None:
    status = failed(failed(decided(Phase.NEEDS_REAUTH), generation=1), generation=1)
    view = report.view(slot(status))
    assert (view.phase, view.verdict_current, view.failures) == (Phase.NEEDS_REAUTH, True, 2)
    assert view.last_probe_failed
    assert view.reason == FailureReason.CRASHED
    # The verdict dates from when the Slot entered its phase, not from the failed probe after it.
    assert view.verdict_time == T0


def test_suspended_and_invalid_specs_say_so() -> None:
    suspended = report.view(slot(st.idle({}, generation=1, suspended=True, now=T0), suspend=True))
    assert (suspended.suspended, suspended.reason) == (True, "Suspended")
    invalid = report.view(slot(st.invalid_spec({}, generation=2, message="spec.mountPath: no", now=T0), generation=2))
    assert (invalid.invalid_spec, invalid.reason, invalid.message) == (True, "InvalidSpec", "spec.mountPath: no")
    # Fixed by a newer generation the operator has not seen yet: no longer reported as invalid.
    fixed = report.view(slot(st.invalid_spec({}, generation=2, message="x", now=T0), generation=3))
    assert not fixed.invalid_spec


def test_ready_false_without_a_verdict_reason_is_no_verdict() -> None:
    waiting = {"type": "Ready", "status": "False", "reason": "AwaitingProbe", "observedGeneration": 2}
    view = report.view(slot({"phase": "Pending", "conditions": [waiting]}, generation=2))
    assert (view.verdict_generation, view.verdict_current) == (None, False)


def test_a_status_from_a_stranger_does_not_crash_the_view() -> None:
    view = report.view({"metadata": {"name": "s"}, "status": {"phase": "Sideways", "conditions": [{"type": "Ready"}]}})
    assert (view.phase, view.verdict_generation, view.reason) == (Phase.PENDING, None, "AwaitingProbe")


# --- probe_answer: the `kubectl slot probe --wait` contract ------------------------------------


def test_the_answer_needs_the_token_acknowledged() -> None:
    view = report.view(slot(decided(Phase.READY)))
    assert report.probe_answer(view, "t-1") is None  # a verdict, but not an answer to this request
    answered = report.view(slot(decided(Phase.READY, request="t-1")))
    assert report.probe_answer(answered, "t-1") == report.Answer(code=0, word="Ready", message="Ready says so")


@pytest.mark.parametrize(
    ("phase", "code"), [(Phase.IMAGE_BROKEN, 64), (Phase.NEEDS_INIT, 65), (Phase.NEEDS_REAUTH, 66)]
)
def test_verdicts_that_are_not_ready_exit_with_the_probes_code(phase: Phase, code: int) -> None:
    answer = report.probe_answer(report.view(slot(decided(phase, request="t"))), "t")
    assert answer is not None
    assert (answer.code, answer.word) == (code, phase.value)


def test_a_request_answered_without_a_verdict_waits_for_the_retry() -> None:
    acknowledged = failed(decided(Phase.READY), generation=1, request="t")
    assert report.view(slot(acknowledged)).handled_request == "t"
    assert report.probe_answer(report.view(slot(acknowledged)), "t") is None
    retried = st.verdict(
        acknowledged, generation=1, probe=probe(1), outcome=verdict(Phase.NEEDS_INIT), interval=INTERVAL, now=T0
    )
    answer = report.probe_answer(report.view(slot(retried)), "t")
    assert answer is not None
    assert answer.code == 65


def test_a_verdict_on_an_older_generation_is_no_answer() -> None:
    status = decided(Phase.READY, generation=1, request="t")
    assert report.probe_answer(report.view(slot(status, generation=2)), "t") is None


def test_suspended_or_invalid_slots_answer_at_once() -> None:
    suspended = report.probe_answer(report.view(slot({}, suspend=True)), "t")
    assert suspended is not None
    assert (suspended.code, suspended.word) == (1, "Suspended")
    invalid = report.probe_answer(report.view(slot(st.invalid_spec({}, generation=1, message="bad", now=T0))), "t")
    assert invalid == report.Answer(code=1, word="InvalidSpec", message="bad")


# --- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (119, "119s"), (120, "2m"), (185, "3m5s"), (1500, "25m"), (4 * 3600 + 120, "4h2m"),
     (20 * 3600, "20h"), (3 * 86400 + 7200, "3d2h"), (12 * 86400, "12d")],
)  # fmt: skip
def test_ages_read_like_kubectl(seconds: int, text: str) -> None:
    assert render.age(T0, T0 + datetime.timedelta(seconds=seconds)) == text
    assert render.age(None, T0) == "<none>"


def test_table_lists_the_fleet() -> None:
    ready = slot(decided(Phase.READY))
    broken = slot(decided(Phase.IMAGE_BROKEN), image="img:2")
    broken["metadata"] = {**broken["metadata"], "name": "b", "namespace": "team"}
    lines = render.table([ready, broken], all_namespaces=True, now=T0 + datetime.timedelta(minutes=5)).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "PHASE", "READY", "VERDICT", "IMAGE", "REASON"]
    assert lines[1].split() == ["agents", "s", "Ready", "True", "5m", "img:1", "SmokeTestPassed"]
    assert lines[2].split() == ["team", "b", "ImageBroken", "False", "5m", "img:2", "ImageBroken"]
    single = render.table([ready], all_namespaces=False, now=T0).splitlines()
    assert single[0].split()[0] == "NAME"


def test_why_tells_the_verdict_the_message_the_events_and_the_fix() -> None:
    body = slot(decided(Phase.NEEDS_REAUTH))
    events = [
        {"type": "Warning", "reason": "NeedsReauth", "message": "Pending -> NeedsReauth: tokens expired",
         "lastTimestamp": "2026-03-01T12:00:00Z", "count": 1},
        {"type": "Warning", "reason": "ProbeCrashed", "message": "exit 1", "lastTimestamp": "2026-03-01T12:01:00Z",
         "count": 3},
    ]  # fmt: skip
    text = render.why(body, events, now=T0 + datetime.timedelta(minutes=2))
    assert "Slot agents/s (generation 1)" in text
    assert "Verdict:     NeedsReauth, 2m ago, on the current spec" in text
    assert "exit 66" in text
    assert "message:   NeedsReauth says so" in text
    assert "Warning  NeedsReauth: Pending -> NeedsReauth: tokens expired" in text
    assert "ProbeCrashed (x3): exit 1" in text
    assert "Re-authenticate the agent" in text
    assert "docs/runbook.md#slotneedsreauth" in text


@pytest.mark.parametrize(
    ("status", "spec", "expected"),
    [
        (decided(Phase.READY), {}, "Nothing to do"),
        (decided(Phase.NEEDS_INIT), {}, "#slotneedsinit"),
        (
            {
                **decided(Phase.NEEDS_INIT),
                "ownership": {"expected": "10001:10001", "found": ["1000:1000"], "approval": "0123abcd0123abcd"},
            },
            {},
            "The files belong to 1000:1000, the image runs as 10001:10001: stop the pods that use the claim, then "
            "approve the ownership migration: kubectl annotate slot -n agents s --overwrite "
            "woved.dev/ownership-migration-requested-at=0123abcd0123abcd.",
        ),
        (
            {**decided(Phase.NEEDS_INIT), "ownership": {"expected": "10001:10001", "found": ["0:0"]}},
            {},
            "an owner the ownership migration will not move (or its approval was used): fix the owners by hand",
        ),
        ({**decided(Phase.NEEDS_INIT), "ownership": {"expected": "10001:10001", "found": []}}, {}, "Initialise"),
        (decided(Phase.IMAGE_BROKEN), {}, "the last Ready image"),
        (st.queued({}, generation=1, probe=probe(1), ahead=2, now=T0), {}, "#slotprobequeuenotdraining"),
        ({}, {"suspend": True}, "suspend"),
        (failed({}, generation=1), {}, "kubectl logs -n agents job/s-probe-1"),
        (st.idle(decided(Phase.READY), generation=2, suspended=False, now=T0), {}, "#slotnotready"),
    ],
)
def test_suggested_fixes(status: dict[str, Any], spec: dict[str, Any], expected: str) -> None:
    generation = 2 if status.get("observedGeneration") == 2 else 1
    body = slot({**status, "lastReadyImage": "img:0"} if status.get("phase") == "ImageBroken" else status,
                generation=generation, **spec)  # fmt: skip
    assert expected in render.suggestion(body, report.view(body))
