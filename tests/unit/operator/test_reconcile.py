"""The reconcile's state machine, transition by transition (docs/design.md §2.2-2.4, §3), without a cluster.

The real reconciler, cache and cap, with a fake writer (tests/operator_harness.py). Each test plays
one transition: the Job controller and the kubelet are played by feeding Jobs' conditions and pods'
states into the cache; what the reconcile wrote, created, deleted and posted is asserted.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slot_operator.config import Config
from slot_operator.kube.api import ApiError
from slot_operator.logic import jobs, names
from slot_operator.logic.phases import PHASES, Phase
from slot_operator.logic.spec import parse_spec, verdict_fingerprint

from bench import timing
from tests.operator_harness import AUDIT_OK, AUDIT_OLD, NS, T0, Harness, condition, exited, waiting


def reason(h: Harness, kind: str, name: str = "s") -> tuple[str, str]:
    found = h.condition(name, kind)
    return found.get("status", ""), found.get("reason", "")


async def probing(h: Harness, name: str = "s", **spec: Any) -> str:
    """A Slot with its claim, reconciled once: its probe Job is created. Returns the Job's name."""
    h.put_claim(f"{name}-home")
    h.put_slot(name, **spec)
    await h.reconcile(name)
    (job,) = [n for n in h.job_names() if n.startswith(f"{name}-probe-")]
    return job


# --- a probe starts ------------------------------------------------------------------------------------


async def test_created_writes_the_intent_then_creates_the_job(h: Harness) -> None:
    h.put_claim("s-home")
    h.put_slot("s")
    result = await h.reconcile("s")
    verbs = [call.verb for call in h.writer.calls]
    assert verbs == ["patch-status", "create-job"]  # intent first: the Job is named in status before it exists
    (job,) = h.job_names()
    assert h.status("s")["currentProbe"]["jobName"] == job
    assert reason(h, "Reconciling") == ("True", "Probing")
    assert result.requeue_after == (datetime.timedelta(minutes=2) + datetime.timedelta(seconds=30)).total_seconds()
    assert h.capacity.job_of((NS, "s")) == job
    await h.reconcile("s")  # the watch's echo, another event: nothing new to write or create
    assert len(h.writer.calls) == 2


def fingerprint(h: Harness, name: str = "s") -> str:
    config = h.config
    spec = parse_spec(
        h.slots[name]["spec"], default_interval=config.default_interval, default_timeout=config.default_timeout
    )
    return verdict_fingerprint(spec)


async def test_a_probe_records_the_fingerprint_of_the_spec_it_probes(h: Harness) -> None:
    job = await probing(h)
    assert h.status("s")["currentProbe"]["specHash"] == fingerprint(h)
    h.pod(job, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile("s")
    assert h.status("s")["lastProbe"]["specHash"] == fingerprint(h)
    h.put_slot("t")  # no claim: the attempt makes no Job, and still says which spec it tried
    await h.reconcile("t")
    assert h.status("t")["lastProbe"]["specHash"] == fingerprint(h, "t")


@pytest.fixture
async def one_place() -> AsyncIterator[Harness]:
    """A harness whose cap is one probe at a time."""
    harness = Harness(Config(namespaces=(NS,), max_concurrent_probes=1))
    yield harness
    await harness.close()


async def b_in_line_behind_a(h: Harness) -> str:
    """Slot a probing in the only place, then Slot b reconciled: in line behind it. Returns a's Job."""
    first = await probing(h, "a")
    h.put_claim("b-home")
    h.put_slot("b")
    await h.reconcile("b")
    return first


async def test_a_full_cap_queues_once_and_a_freed_place_starts_the_next(one_place: Harness) -> None:
    h = one_place
    first = await b_in_line_behind_a(h)
    assert reason(h, "Reconciling", "b") == ("True", "Queued")
    assert h.writer.writes("create-job")[-1].what.endswith(first)
    writes = len(h.writer.calls)
    await h.reconcile("b")
    assert len(h.writer.calls) == writes  # written once, when it joined the queue
    h.pod(first, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile("a")
    assert h.woken == [(NS, "b")]  # the place went straight to the waiter
    await h.reconcile("b")
    assert any(n.startswith("b-probe-") for n in h.job_names())


async def test_a_missing_claim_waits_and_its_appearance_probes(h: Harness) -> None:
    h.put_slot("s")
    await h.reconcile("s")
    assert reason(h, "ProbeSucceeded") == ("False", "ClaimNotFound")
    assert h.job_names() == []
    h.put_claim("s-home")
    await h.reconcile("s")
    assert h.status("s")["currentProbe"]["trigger"] == "claim-appeared"


async def test_a_read_write_once_pod_claim_in_use_is_not_probed(h: Harness) -> None:
    h.put_claim("s-home", modes=("ReadWriteOncePod",))
    h.put_worker("agent", "s-home")
    h.put_slot("s")
    await h.reconcile("s")
    assert reason(h, "ProbeSucceeded") == ("False", "ClaimInUse")
    assert h.job_names() == []


async def test_a_requested_probe_echoes_its_token(h: Harness) -> None:
    await ready(h)
    new = await requested(h, "t-42")
    assert h.status("s")["currentProbe"]["trigger"] == "manual"
    h.pod(new, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile("s")
    assert h.status("s")["lastHandledProbeRequest"] == "t-42"


# --- a probe ends ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [phase for phase, facts in PHASES.items() if facts.exit_code is not None])
async def test_a_verdict_exit_code_is_the_verdict(h: Harness, phase: Phase) -> None:
    facts = PHASES[phase]
    assert facts.exit_code is not None
    job = await probing(h)
    h.pod(job, probe=exited(facts.exit_code), audit=AUDIT_OK)
    result = await h.reconcile("s")
    status = h.status("s")
    assert status["phase"] == phase.value
    assert reason(h, "Ready") == ("True" if phase is Phase.READY else "False", facts.ready_reason)
    assert reason(h, "Stalled")[0] == ("True" if facts.needs_human else "False")
    assert "currentProbe" not in status
    assert not h.capacity.holds((NS, "s"))
    kind = "Normal" if phase is Phase.READY else "Warning"
    assert h.recorder.events == [(kind, phase.value, f"Pending -> {phase.value}: {facts.default_message}")]
    assert result.requeue_after is not None  # the next interval
    assert h.writer.writes("delete-job") == []  # the Job finishes by itself


async def test_a_verdict_logs_where_its_time_went_in_the_line_the_bench_reads(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    job = await probing(h)
    h.pod(job, probe=exited(0), audit=AUDIT_OK)
    with caplog.at_level(logging.DEBUG, logger="slot_operator.timing"):
        await h.reconcile("s")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "slot_operator.timing"]
    match = timing.LINE.search(line)
    assert match is not None
    assert (match["ns"], match["name"]) == (NS, "s")
    stamps = [float(match[part]) for part in ("queued", "picked", "sent", "answered")]
    assert stamps == sorted(stamps)


async def test_a_crash_is_no_verdict_retried_with_backoff(h: Harness) -> None:
    job = await probing(h)
    h.pod(job, probe=exited(1))
    h.watch_job(job, conditions=[condition("Failed", "BackoffLimitExceeded")])
    result = await h.reconcile("s")
    status = h.status("s")
    assert status["phase"] == "Pending"
    assert status["consecutiveProbeFailures"] == 1
    assert reason(h, "ProbeSucceeded") == ("False", "ProbeCrashed")
    assert reason(h, "Reconciling") == ("True", "Retrying")
    assert result.requeue_after == h.config.retry_base.total_seconds()
    h.later(seconds=h.config.retry_base.total_seconds())
    await h.reconcile("s")
    assert h.status("s")["currentProbe"]["trigger"] == "retry"


async def test_a_registry_blip_never_flips_a_verdict(h: Harness) -> None:
    await ready(h)
    again = await requested(h, "again")
    h.pod(again, probe=waiting("ErrImagePull", "unexpected status code: 429 Too Many Requests"))
    await h.reconcile("s")
    assert h.status("s")["phase"] == "Ready"
    assert reason(h, "Ready") == ("True", "SmokeTestPassed")
    assert reason(h, "ProbeSucceeded") == ("False", "ImagePullFailed")
    assert h.writer.writes("delete-job")[-1].what == f"{NS}/{again}"  # it would only wait for its deadline


async def test_an_image_that_does_not_exist_is_image_broken_and_its_job_stopped(h: Harness) -> None:
    job = await probing(h)
    h.pod(job, probe=waiting("ErrImagePull", 'failed to pull image "img:1": not found'))
    await h.reconcile("s")
    assert h.status("s")["phase"] == "ImageBroken"
    assert h.status("s")["lastProbe"]["reason"] == "ImageNotFound"
    assert [call.what for call in h.writer.writes("delete-job")] == [f"{NS}/{job}"]  # it would wait for its deadline


async def test_the_verdict_waits_briefly_for_the_audit_beside_it(h: Harness) -> None:
    job = await probing(h)
    h.pod(job, probe=exited(0), audit={"running": {}})
    result = await h.reconcile("s")
    assert h.status("s")["phase"] == "Pending"
    assert result.requeue_after == 10.0  # the audit's grace after the probe ended
    h.later(seconds=10)
    await h.reconcile("s")
    assert h.status("s")["phase"] == "Ready"
    assert reason(h, "OwnershipMatches") == ("Unknown", "AuditFailed")


async def test_a_lost_job_is_reported_and_a_new_probe_follows(h: Harness) -> None:
    job = await probing(h)
    h.job_gone(job)  # deleted by someone before it reported
    await h.reconcile("s")
    assert reason(h, "ProbeSucceeded") == ("False", "ProbeJobLost")
    assert not h.capacity.holds((NS, "s"))


async def test_a_probe_past_its_deadline_is_read_afresh(h: Harness) -> None:
    job = await probing(h)
    h.pod(job, probe={"running": {}})
    h.later(minutes=3)  # past timeout + grace, and the watch said nothing
    await h.reconcile("s")
    assert h.writer.writes("get-job")[-1].what == f"{NS}/{job}"


# --- the spec moves on --------------------------------------------------------------------------------------


async def test_a_spec_change_mid_probe_stops_it_and_probes_the_new_generation(h: Harness) -> None:
    first = await probing(h)
    h.pod(first, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile("s")
    h.put_slot("s", generation=2, image="img:2")  # a new tag: its probe starts...
    await h.reconcile("s")
    (second,) = [n for n in h.job_names() if n != first]
    h.put_slot("s", generation=3, image="img:3")  # ...and the tag moves again before it reported
    await h.reconcile("s")
    deleted = h.writer.writes("delete-job")
    assert [(call.what, call.body) for call in deleted] == [(f"{NS}/{second}", f"job-uid-{second}")]  # by uid
    current = h.status("s")["currentProbe"]
    assert (current["generation"], current["trigger"], current["image"]) == (3, "spec-changed", "img:3")
    assert reason(h, "Ready") == ("True", "SmokeTestPassed")  # generation 1's verdict stands...
    assert h.condition("s", "Ready")["observedGeneration"] == 1  # ...for generation 1 only


# --- a change that cannot change the verdict keeps it (docs/design.md §2.3) ---------------------------------


async def ready(h: Harness, name: str = "s", **spec: Any) -> str:
    """A Slot whose first probe passed (generation 1). Returns the probe Job's name."""
    job = await probing(h, name, **spec)
    h.pod(job, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile(name)
    assert h.status(name)["phase"] == "Ready"
    h.recorder.events.clear()
    h.writer.calls.clear()
    return job


async def requested(h: Harness, token: str, name: str = "s") -> str:
    """A person asks for a probe of the Slot with `token`, and it is reconciled. Returns the new probe's Job."""
    before = set(h.job_names())
    h.put_slot(name, annotations={names.PROBE_REQUEST_ANNOTATION: token})
    await h.reconcile(name)
    (new,) = [n for n in h.job_names() if n not in before]
    return new


def generations(h: Harness, name: str = "s") -> dict[str, int]:
    """status.observedGeneration and each condition's."""
    status = h.status(name)
    found = {c["type"]: c["observedGeneration"] for c in status["conditions"]}
    return {"status": status["observedGeneration"], **found}


def ready_reading(h: Harness) -> tuple[tuple[str, str], ...]:
    """What kstatus and health.lua read from: Ready, Stalled, Reconciling (status, reason)."""
    return tuple(reason(h, kind) for kind in ("Ready", "Stalled", "Reconciling"))


async def test_an_interval_change_carries_the_verdict_and_moves_the_next_probe(h: Harness) -> None:
    job = await ready(h)
    before = h.condition("s", "Ready")
    h.later(minutes=5)
    h.put_slot("s", generation=2, interval="1h")
    result = await h.reconcile("s")
    assert h.job_names() == [job]  # no probe
    assert h.recorder.events == []  # the verdict did not change
    assert [call.verb for call in h.writer.calls] == ["patch-status"]  # one write
    assert set(generations(h).values()) == {2}  # status and every condition speak for generation 2
    assert ready_reading(h) == (("True", "SmokeTestPassed"), ("False", "Ready"), ("False", "Idle"))
    assert h.condition("s", "Ready")["lastTransitionTime"] == before["lastTransitionTime"]
    assert h.status("s")["lastProbe"]["generation"] == 1  # the probe that judged it, as it was
    # The next periodic probe follows the new interval (jittered by at most 5%), counted from the last probe.
    next_time = datetime.datetime.fromisoformat(h.status("s")["nextProbeTime"])
    assert T0 + datetime.timedelta(hours=1) <= next_time <= T0 + datetime.timedelta(hours=1.05)
    assert result.requeue_after == (next_time - h.now).total_seconds()
    h.now = next_time
    h.watch_job(job, conditions=[condition("Complete", at=T0)])
    await h.reconcile("s")
    assert h.status("s")["currentProbe"]["trigger"] == "interval"


async def test_suspending_a_ready_slot_keeps_its_verdict_and_runs_no_probe(h: Harness) -> None:
    job = await ready(h)
    h.put_slot("s", generation=2, suspend=True)
    result = await h.reconcile("s")
    assert h.job_names() == [job]
    assert h.recorder.events == []
    assert set(generations(h).values()) == {2}
    # Reconciling False: kstatus reads Current, health.lua Healthy (Suspended is for a generation without verdict).
    assert ready_reading(h) == (("True", "SmokeTestPassed"), ("False", "Ready"), ("False", "Suspended"))
    assert result.requeue_after is None
    h.later(hours=7)  # past the interval: still no probe while suspended
    await h.reconcile("s")
    assert h.job_names() == [job]
    h.put_slot("s", generation=3)  # resumed, overdue: it keeps the verdict and probes as the interval says
    await h.reconcile("s")
    assert h.condition("s", "Ready")["observedGeneration"] == 3
    assert h.status("s")["currentProbe"]["trigger"] == "interval"
    assert reason(h, "Reconciling") == ("False", "Probing")


async def test_an_image_change_still_waits_for_its_probe(h: Harness) -> None:
    await ready(h)
    h.put_slot("s", generation=2, image="img:2", interval="1h")
    await h.reconcile("s")
    assert h.status("s")["currentProbe"]["trigger"] == "spec-changed"
    assert len(h.writer.writes("create-job")) == 1
    assert h.condition("s", "Ready")["observedGeneration"] == 1  # generation 1's verdict, for generation 1 only
    assert reason(h, "Reconciling") == ("True", "Probing")


async def test_suspend_with_a_new_image_waits_and_runs_no_probe(h: Harness) -> None:
    job = await ready(h)
    h.put_slot("s", generation=2, image="img:2", suspend=True)
    await h.reconcile("s")
    assert h.job_names() == [job]
    assert h.writer.writes("create-job") == []
    assert h.condition("s", "Ready")["observedGeneration"] == 1
    assert reason(h, "Reconciling") == ("True", "Suspended")  # kstatus InProgress, health.lua Suspended


async def test_a_probe_in_flight_answers_for_a_schedule_only_change(h: Harness) -> None:
    job = await probing(h)
    h.put_slot("s", generation=2, interval="1h")
    await h.reconcile("s")
    assert h.writer.writes("delete-job") == []  # not superseded
    assert h.job_names() == [job]
    assert h.status("s")["currentProbe"]["jobName"] == job
    assert h.status("s")["observedGeneration"] == 2  # seen, and still without a verdict
    assert reason(h, "Reconciling") == ("True", "Probing")
    h.pod(job, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile("s")
    assert h.condition("s", "Ready")["observedGeneration"] == 2  # its verdict speaks for generation 2
    assert h.status("s")["lastProbe"]["generation"] == 1
    assert ready_reading(h) == (("True", "SmokeTestPassed"), ("False", "Ready"), ("False", "Idle"))
    next_time = datetime.datetime.fromisoformat(h.status("s")["nextProbeTime"])
    assert h.now + datetime.timedelta(hours=1) <= next_time <= h.now + datetime.timedelta(hours=1.05)


async def test_a_re_probe_in_flight_runs_on_and_the_verdict_is_carried_meanwhile(h: Harness) -> None:
    job = await ready(h)
    h.later(hours=7)
    h.watch_job(job, conditions=[condition("Complete", at=T0)])
    await h.reconcile("s")  # the periodic re-probe starts
    (again,) = [n for n in h.job_names() if n != job]
    h.writer.calls.clear()
    h.put_slot("s", generation=2, interval="1h")
    await h.reconcile("s")
    assert [call.verb for call in h.writer.calls] == ["patch-status"]  # the carry; the re-probe is not stopped
    assert h.status("s")["currentProbe"]["jobName"] == again
    assert set(generations(h).values()) == {2}
    assert ready_reading(h) == (("True", "SmokeTestPassed"), ("False", "Ready"), ("False", "Probing"))
    h.pod(again, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile("s")
    assert h.status("s")["lastProbe"]["jobName"] == again
    assert h.condition("s", "Ready")["observedGeneration"] == 2


async def test_a_probe_in_flight_runs_on_when_the_slot_is_suspended(h: Harness) -> None:
    job = await probing(h)
    h.put_slot("s", generation=2, suspend=True)
    await h.reconcile("s")
    assert h.job_names() == [job]
    assert reason(h, "Reconciling") == ("True", "Probing")
    h.pod(job, probe=exited(66), audit=AUDIT_OK)
    await h.reconcile("s")
    assert h.status("s")["phase"] == "NeedsReauth"
    assert h.condition("s", "Ready")["observedGeneration"] == 2
    assert reason(h, "Stalled") == ("True", "NeedsReauth")  # the gate stops: the suspended spec needs a human
    assert reason(h, "Reconciling") == ("False", "Suspended")
    assert h.job_names() == [job]


async def test_a_queued_probe_keeps_its_place_through_a_schedule_only_change(one_place: Harness) -> None:
    h = one_place
    first = await b_in_line_behind_a(h)
    queued = h.status("b")["currentProbe"]["jobName"]
    h.put_slot("b", generation=2, timeout="5m")
    await h.reconcile("b")
    assert h.status("b")["currentProbe"]["jobName"] == queued  # the same probe, still in line
    assert (h.status("b")["observedGeneration"], reason(h, "Reconciling", "b")) == (2, ("True", "Queued"))
    h.pod(first, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile("a")
    await h.reconcile("b")
    assert h.job_names() == sorted([first, queued])
    h.pod(queued, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile("b")
    assert h.condition("b", "Ready")["observedGeneration"] == 2


async def test_a_spec_changed_back_before_the_new_one_was_judged_keeps_its_verdict(h: Harness) -> None:
    job = await ready(h)
    h.put_slot("s", generation=2, image="img:2")
    await h.reconcile("s")  # generation 2's probe starts
    (second,) = [n for n in h.job_names() if n != job]
    h.put_slot("s", generation=3)  # back to the spec generation 1's verdict judged, before generation 2 reported
    await h.reconcile("s")
    assert [call.what for call in h.writer.writes("delete-job")] == [f"{NS}/{second}"]  # it probes another spec
    assert len(h.writer.writes("create-job")) == 1  # and generation 3 needs none
    assert "currentProbe" not in h.status("s")
    assert set(generations(h).values()) == {3}
    assert ready_reading(h) == (("True", "SmokeTestPassed"), ("False", "Ready"), ("False", "Idle"))


async def test_a_spec_changed_back_after_the_new_one_gave_no_verdict_is_probed(h: Harness) -> None:
    job = await ready(h)
    h.put_slot("s", generation=2, image="img:2")
    await h.reconcile("s")
    (second,) = [n for n in h.job_names() if n != job]
    h.pod(second, probe=exited(1))
    h.watch_job(second, conditions=[condition("Failed", "BackoffLimitExceeded")])
    await h.reconcile("s")  # generation 2's probe crashed: lastProbe is of generation 2 now
    h.put_slot("s", generation=3)
    await h.reconcile("s")
    assert h.status("s")["currentProbe"]["trigger"] == "spec-changed"
    assert h.condition("s", "Ready")["observedGeneration"] == 1


async def test_a_spec_fixed_back_after_it_was_invalid_is_probed(h: Harness) -> None:
    await ready(h)
    h.put_slot("s", generation=2, mountPath="/etc/codex")
    await h.reconcile("s")
    assert reason(h, "Stalled") == ("True", "InvalidSpec")
    h.put_slot("s", generation=3, interval="1h")  # the judged spec again, and a new interval
    await h.reconcile("s")
    assert h.status("s")["currentProbe"]["trigger"] == "spec-changed"  # no verdict is carried across a fault
    assert h.condition("s", "Ready")["observedGeneration"] == 1


async def test_a_verdict_recorded_before_fingerprints_is_probed_again_once(h: Harness) -> None:
    job = await ready(h)
    h.slots["s"]["status"]["lastProbe"].pop("specHash")  # written by an operator older than specHash
    h.put_slot("s", generation=2, interval="1h")
    await h.reconcile("s")
    (second,) = [n for n in h.job_names() if n != job]
    assert h.status("s")["currentProbe"]["trigger"] == "spec-changed"
    h.pod(second, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile("s")
    h.put_slot("s", generation=3, interval="2h")
    await h.reconcile("s")
    assert h.job_names() == sorted([job, second])  # from now on, carried
    assert h.condition("s", "Ready")["observedGeneration"] == 3


async def test_a_retry_keeps_its_backoff_through_a_schedule_only_change(h: Harness) -> None:
    job = await probing(h)
    h.pod(job, probe=exited(1))
    h.watch_job(job, conditions=[condition("Failed", "BackoffLimitExceeded")])
    await h.reconcile("s")
    retry_at = h.status("s")["nextProbeTime"]
    h.put_slot("s", generation=2, interval="1h")
    result = await h.reconcile("s")
    assert h.job_names() == [job]  # no new probe: the spec it would run is the one that just crashed
    assert h.status("s")["nextProbeTime"] == retry_at
    assert reason(h, "Reconciling") == ("True", "Retrying")
    assert result.requeue_after == h.config.retry_base.total_seconds()


async def test_a_job_from_an_older_run_is_adopted_and_recorded(h: Harness) -> None:
    job = await probing(h)
    # The operator restarted and lost the status write of its intent (status without currentProbe).
    h.slots["s"]["status"].pop("currentProbe")
    h.put_slot("s")
    h.capacity.release((NS, "s"))
    await h.reconcile("s")
    assert h.status("s")["currentProbe"]["jobName"] == job
    assert h.capacity.job_of((NS, "s")) == job


async def test_an_invalid_spec_is_stalled_once_and_not_probed(h: Harness) -> None:
    h.put_claim("s-home")
    h.put_slot("s", mountPath="/etc/passwd")
    await h.reconcile("s")
    assert reason(h, "Stalled") == ("True", "InvalidSpec")
    assert h.job_names() == []
    assert [event[1] for event in h.recorder.events] == ["InvalidSpec"]
    await h.reconcile("s")
    assert [event[1] for event in h.recorder.events] == ["InvalidSpec"]  # said once


async def test_a_suspended_slot_gets_no_probe(h: Harness) -> None:
    h.put_claim("s-home")
    h.put_slot("s", suspend=True)
    result = await h.reconcile("s")
    assert reason(h, "Reconciling") == ("True", "Suspended")
    assert h.job_names() == []
    assert result.requeue_after is None


@pytest.mark.parametrize(
    ("status", "causes", "expected"),
    [
        (422, (("spec.template.spec.tolerations[0].operator", "bad"),), "InvalidSpec"),
        (403, (), "ProbeJobRejected"),
    ],
)
async def test_a_refused_job_names_the_field(h: Harness, status: int, causes: Any, expected: str) -> None:
    h.put_claim("s-home")
    h.put_slot("s")
    h.writer.reject = ApiError(status, "refused", causes=causes)
    await h.reconcile("s")
    assert reason(h, "ProbeSucceeded") == ("False", expected)
    assert not h.capacity.holds((NS, "s"))


async def test_a_taken_job_name_is_never_adopted(h: Harness) -> None:
    h.put_claim("s-home")
    h.put_slot("s")
    # Someone else's Job already has the (deterministic) name the first probe wants.
    wanted = jobs.job_name("s", "slot-uid-s", "/1/created//0")
    h.writer.jobs[(NS, wanted)] = {"metadata": {"name": wanted, "namespace": NS, "uid": "theirs"}, "status": {}}
    await h.reconcile("s")
    assert reason(h, "ProbeSucceeded") == ("False", "ProbeJobRejected")
    assert "is not this Slot's" in h.condition("s", "ProbeSucceeded")["message"]
    assert not h.capacity.holds((NS, "s"))
    assert h.writer.writes("delete-job") == []  # not ours to delete either


# --- identity --------------------------------------------------------------------------------------------


async def test_an_impostor_is_ignored_and_reported_once(h: Harness) -> None:
    job = await probing(h)
    slot = h.slots["s"]
    labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_SLOT_UID: slot["metadata"]["uid"]}
    h.forge_job("nightly-backup", labels=labels)  # its labels name the Slot, no controller reference does
    assert h.impostors == [((NS, "s"), "nightly-backup")]
    h.pod(job, probe=exited(0), audit=AUDIT_OK)
    await h.reconcile("s")
    assert h.status("s")["lastProbe"]["jobName"] == job
    assert h.writer.writes("delete-job") == []


# --- the ownership migration -----------------------------------------------------------------------------


async def diagnosed(h: Harness) -> str:
    """A Slot whose audit found the old uid: NeedsInit, and its approval in status."""
    job = await probing(h)
    h.pod(job, probe=exited(65), audit=AUDIT_OLD)
    await h.reconcile("s")
    assert reason(h, "OwnershipMatches") == ("False", "OwnedByOtherUser")
    return str(h.status("s")["ownership"]["approval"])


@pytest.fixture
async def migrating() -> AsyncIterator[Harness]:
    harness = Harness(
        Config(namespaces=(NS,), audit_image="ghcr.io/woved/slot-operator:1", allow_ownership_migration=True)
    )
    yield harness
    await harness.close()


def request(h: Harness, token: str | None, *, dry_run: bool = False) -> None:
    annotations = {} if token is None else {names.MIGRATION_REQUEST_ANNOTATION: token}
    if dry_run:
        annotations[names.MIGRATION_DRY_RUN_ANNOTATION] = "true"
    h.put_slot("s", annotations=annotations)


def migration_jobs(h: Harness) -> list[str]:
    return [n for n in h.job_names() if n.startswith("s-migrate-")]


def migration_job(h: Harness) -> str:
    (name,) = migration_jobs(h)
    return name


async def migration_verdict(h: Harness) -> tuple[str, str]:
    """Reconcile the Slot: OwnershipMigrated's (status, reason) after."""
    await h.reconcile("s")
    return reason(h, "OwnershipMigrated")


async def ended_without_a_job(h: Harness) -> str:
    """Reconcile: OwnershipMigrated False, and no migration Job (none made, or none left); its reason."""
    status, why = await migration_verdict(h)
    assert status == "False"
    assert not migration_jobs(h)
    return why


def last_deleted_job(h: Harness) -> str:
    """The name of the Job the operator deleted last (in the Slot's namespace)."""
    namespace, name = h.writer.writes("delete-job")[-1].what.split("/")
    assert namespace == NS
    return name


async def migration_started(h: Harness) -> str:
    """A diagnosed Slot whose approved migration has its Job: the Job's name."""
    request(h, await diagnosed(h))
    await h.reconcile("s")
    return migration_job(h)


COUNTS = '{"v":1,"changed":2,"skipped":0,"errors":0,"otherFilesystems":0,"samples":[]}'


async def test_an_approved_migration_runs_then_a_probe(migrating: Harness) -> None:
    h = migrating
    approval = await diagnosed(h)
    request(h, approval)
    await h.reconcile("s")
    job = migration_job(h)
    assert h.status("s")["currentOwnershipMigration"]["jobUID"] == f"job-uid-{job}"
    assert reason(h, "Reconciling")[1] == "MigratingOwnership"
    h.watch_job(job)
    h.migration_pod(job, {"terminated": {"exitCode": 0, "message": COUNTS, "finishedAt": "2026-11-01T07:00:00Z"}})
    assert await migration_verdict(h) == ("True", "Migrated")
    assert h.recorder.events[-1][1] == "OwnershipMigrated"
    # The owners changed: a probe at once, whose verdict speaks.
    assert h.status("s")["currentProbe"]["trigger"] == "ownership-migrated"


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("disabled", "MigrationDisabled"),
        ("another-token", "NotApproved"),
        ("in-use", "ClaimInUse"),
        ("in-use-with-our-labels", "ClaimInUse"),
    ],
)
async def test_a_migration_is_refused_saying_why(migrating: Harness, setup: str, expected: str) -> None:
    h = migrating if setup != "disabled" else Harness()
    try:
        approval = await diagnosed(h)
        if setup.startswith("in-use"):
            labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY} if setup.endswith("labels") else None
            h.put_worker("worker", "s-home", labels=labels)
        request(h, "1733400000" if setup == "another-token" else approval)
        assert await ended_without_a_job(h) == expected
        assert h.status("s")["lastOwnershipMigration"]["result"] == "Refused"
        assert h.recorder.events[-1][1] == "OwnershipMigrationRefused"
    finally:
        if h is not migrating:
            await h.close()


async def test_withdrawing_the_request_cancels_the_migration(migrating: Harness) -> None:
    h = migrating
    job = await migration_started(h)
    request(h, None)
    assert await migration_verdict(h) == ("False", "MigrationCancelled")
    assert last_deleted_job(h) == job
    assert h.status("s")["currentProbe"]["trigger"] == "ownership-migrated"  # it may have changed owners


async def test_a_deleted_migration_job_is_cancelled_never_recreated(migrating: Harness) -> None:
    h = migrating
    h.job_gone(await migration_started(h))
    assert await ended_without_a_job(h) == "MigrationCancelled"


async def test_an_intent_without_its_job_is_created_only_after_every_check(migrating: Harness) -> None:
    h = migrating
    job = await migration_started(h)
    # The operator stopped between the intent and the Job: no uid on record, no Job.
    h.job_gone(job)
    current = dict(h.status("s")["currentOwnershipMigration"])
    current.pop("jobUID")
    h.slots["s"]["status"]["currentOwnershipMigration"] = current
    h.put_worker("worker", "s-home")  # meanwhile a worker took the claim
    h.put_slot("s", annotations=h.slots["s"]["metadata"]["annotations"])
    assert await ended_without_a_job(h) == "ClaimInUse"


async def test_a_migration_pod_refused_by_pod_security_is_reported(migrating: Harness) -> None:
    h = migrating
    job = await migration_started(h)
    h.watch_job(job)
    h.later(seconds=3)  # no pod after the grace
    h.writer.failed_create = 'pods "x" is forbidden: violates PodSecurity "restricted:latest"'
    assert await migration_verdict(h) == ("False", "PodSecurityRejected")
    assert last_deleted_job(h) == job


# --- conflicts and time ---------------------------------------------------------------------------------


async def test_a_stale_write_fails_with_a_conflict(h: Harness) -> None:
    h.put_claim("s-home")
    h.put_slot("s")
    h.slots["s"]["metadata"]["resourceVersion"] = "changed-meanwhile"  # the API has moved on, the cache not
    with pytest.raises(ApiError) as raised:
        await h.reconcile("s")
    assert raised.value.status == 409
    assert h.job_names() == []  # no Job without its intent on record


async def test_the_interval_brings_the_next_probe(h: Harness) -> None:
    job = await probing(h)
    h.pod(job, probe=exited(0), audit=AUDIT_OK)
    result = await h.reconcile("s")
    assert result.requeue_after is not None
    h.later(seconds=result.requeue_after)
    h.watch_job(job, conditions=[condition("Complete", at=T0)])
    await h.reconcile("s")
    assert h.status("s")["currentProbe"]["trigger"] == "interval"
