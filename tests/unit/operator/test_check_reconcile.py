"""A SlotImageCheck's reconcile, transition by transition (docs/design.md §2.5), without a cluster.

The real check reconciler, cache and shared cap with a fake writer (tests/operator_harness.py). Every
status the reconcile writes is held to the contract (tests/image_check_contract.py), and no test sees
a write to a Slot.
"""

from __future__ import annotations

import datetime
from typing import Any

from slot_operator.config import Config
from slot_operator.logic import checking, names
from slot_operator.runtime.capacity import Capacity, CheckProbe, ProbeKey, is_check_probe
from slot_operator.runtime.checks import CheckCollaborators, CheckReconciler
from slot_operator.runtime.reconciler import Result

from tests import image_check_contract
from tests.operator_harness import AUDIT_OK, AUDIT_OLD, NS, Harness, condition, exited

CANDIDATE = "ghcr.io/example/agent-shell:sha-4d5e6f-codex"


def fleet(h: Harness, *names_: str, **labels: str) -> None:
    for name in names_:
        h.put_claim(f"{name}-home")
        h.put_slot(name, labels=labels or {"pool": "codex"})


def kept(h: Harness, name: str = "c") -> dict[str, Any]:
    """The check's status, after asserting it keeps the contract."""
    check = h.checks[name]
    assert image_check_contract.problems(check) == []
    return dict(check["status"])


def conditions_of(h: Harness, name: str = "c") -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in kept(h, name).get("conditions") or ()}


def check_jobs(h: Harness) -> list[str]:
    return [name for name in h.job_names() if "-check-" in name]


async def answer(h: Harness, job: str, code: int, audit: dict[str, Any] = AUDIT_OK) -> None:
    """The probe of `job` exits `code` (the Job controller then fails or completes the Job)."""
    h.pod(job, probe=exited(code, "{}", at=h.now), audit=audit)
    h.watch_job(job, conditions=[condition("Complete" if code == 0 else "Failed", at=h.now)])
    await h.reconcile_check("c")


def job_of(h: Harness, slot: str) -> str:
    (job,) = [name for name in check_jobs(h) if name.startswith(f"{slot}-check-")]
    return job


# --- selection ---------------------------------------------------------------------------------------------


async def test_the_selection_is_written_first_then_each_selected_slot_is_probed(h: Harness) -> None:
    fleet(h, "a", "b")
    fleet(h, "other", pool="claude")
    h.put_check("c", image=CANDIDATE, selector={"matchLabels": {"pool": "codex"}})
    await h.reconcile_check("c")
    calls = [call for call in h.writer.calls if call.verb != "list-slots"]
    assert calls[0].verb == "patch-check-status"  # the frozen selection, before any probe
    assert [result["slot"] for result in calls[0].body["results"]] == ["a", "b"]
    assert sorted(check_jobs(h)) == [job_of(h, "a"), job_of(h, "b")]
    status = kept(h)
    assert status["phase"] == "Running"
    assert conditions_of(h) == {"Ready": ("Unknown", "Probing"), "Stalled": ("False", "Probing"),
                                "Reconciling": ("True", "Probing")}  # fmt: skip
    job = h.job(job_of(h, "a"))
    assert job["metadata"]["ownerReferences"][0]["uid"] == "check-uid-c"
    assert job["metadata"]["labels"][names.LABEL_COMPONENT] == names.COMPONENT_CHECK
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == CANDIDATE


def unseen(h: Harness, name: str) -> None:
    """A Slot the API server has and the operator's cache has not seen yet (created just before the check)."""
    h.writer.unseen_slots.append({"metadata": {"name": name, "namespace": NS, "uid": f"slot-uid-{name}"}})


async def test_the_selection_waits_for_the_cache_to_hold_every_slot_the_api_server_lists(h: Harness) -> None:
    fleet(h, "a")
    unseen(h, "just-made")
    h.put_check("c", image=CANDIDATE)
    assert await h.reconcile_check("c") == Result(requeue_after=checking.SELECT_RETRY.total_seconds())
    assert [call.verb for call in h.writer.calls] == ["list-slots"]  # nothing frozen, nothing started
    h.writer.unseen_slots.clear()
    fleet(h, "just-made")  # its watch event arrives
    h.later(seconds=1)
    await h.reconcile_check("c")
    assert set(h.results("c")) == {"a", "just-made"}


async def test_the_selection_waits_no_longer_than_its_patience(h: Harness) -> None:
    fleet(h, "a")
    unseen(h, "never-seen")  # deleted before its watch event came, say
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    assert not h.results("c")
    h.later(seconds=checking.SELECT_PATIENCE.total_seconds())
    await h.reconcile_check("c")
    assert set(h.results("c")) == {"a"}


async def test_slots_created_later_are_not_added(h: Harness) -> None:
    fleet(h, "a")
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    fleet(h, "late")
    await h.reconcile_check("c")
    assert set(h.results("c")) == {"a"}


async def test_no_slot_selected_ends_at_once_in_error(h: Harness) -> None:
    fleet(h, "a", pool="claude")
    h.put_check("c", image=CANDIDATE, selector={"matchLabels": {"pool": "codex"}})
    result = await h.reconcile_check("c")
    assert kept(h)["phase"] == "Error"
    assert conditions_of(h)["Stalled"] == ("True", "NoSlotsSelected")
    assert check_jobs(h) == []
    assert result.requeue_after == datetime.timedelta(hours=24).total_seconds()  # then its TTL


# --- answers ----------------------------------------------------------------------------------------------


async def test_every_slot_ready_succeeds_and_no_slot_is_written(h: Harness) -> None:
    fleet(h, "a", "b")
    statuses = {name: h.status(name) for name in ("a", "b")}
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    for slot in ("a", "b"):
        await answer(h, job_of(h, slot), 0)
    status = kept(h)
    assert status["phase"] == "Succeeded"
    assert status["summary"] == {"slots": 2, "pending": 0, "ready": 2, "needsInit": 0, "needsReauth": 0,
                                 "imageBroken": 0, "noVerdict": 0, "failed": 0}  # fmt: skip
    assert conditions_of(h)["Ready"] == ("True", "AllReady")
    assert h.results("c")["a"]["ownership"] == {"expected": "10001:10001", "found": [], "summary": "10001:10001"}
    assert {name: h.status(name) for name in ("a", "b")} == statuses
    assert not h.writer.writes("patch-status")  # never a Slot's status
    assert not h.recorder.events  # nor an Event


async def test_a_candidate_with_another_uid_on_old_volumes_is_an_ownership_problem(h: Harness) -> None:
    fleet(h, "old")
    h.put_slot("old", labels={"pool": "codex"}, runAsUser=10001, runAsGroup=10001)
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    await answer(h, job_of(h, "old"), 65, AUDIT_OLD)
    result = h.results("c")["old"]
    assert (result["phase"], result["exitCode"], result["runAs"]) == ("NeedsInit", 65, "10001:10001")
    assert result["ownership"] == {
        "expected": "10001:10001", "found": ["1000:1000"], "summary": "1000:1000 (image 10001:10001)",
        "migrationWouldFix": True,
        "fix": "owned by 1000:1000: approve the ownership migration first (kubectl annotate slot/old --overwrite "
        "woved.dev/ownership-migration-requested-at=<its status.ownership.approval>)",
    }  # fmt: skip
    assert kept(h)["phase"] == "Failed"
    assert conditions_of(h)["Stalled"] == ("True", "NeedsInit")
    ready = next(c for c in kept(h)["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "1 of 1 Slots would need a human: old NeedsInit (owned by 1000:1000)"


async def test_a_pinned_uid_that_differs_from_the_slots_says_the_slot_must_change_too(h: Harness) -> None:
    fleet(h, "old")
    h.put_slot("old", labels={"pool": "codex"}, runAsUser=1000, runAsGroup=1000)
    h.put_check("c", image=CANDIDATE, runAsUser=10001, runAsGroup=10001)
    await h.reconcile_check("c")
    job = h.job(job_of(h, "old"))
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    await answer(h, job_of(h, "old"), 65, AUDIT_OLD)
    fix = h.results("c")["old"]["ownership"]["fix"]
    assert fix.startswith("owned by 1000:1000: set the Slot's runAsUser/runAsGroup to 10001:10001 with the image")


async def test_the_worst_verdict_names_the_failure_whatever_the_others_say(h: Harness) -> None:
    fleet(h, "a", "b", "c1")
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    await answer(h, job_of(h, "a"), 65)
    assert kept(h)["phase"] == "Running"  # an answer that needs a human does not end the check early
    await answer(h, job_of(h, "b"), 64)
    await answer(h, job_of(h, "c1"), 0)
    assert kept(h)["phase"] == "Failed"
    assert conditions_of(h)["Ready"] == ("False", "ImageBroken")


# --- no verdict ----------------------------------------------------------------------------------------------


async def test_a_probe_without_a_verdict_is_retried_with_backoff_then_gives_no_verdict(h: Harness) -> None:
    fleet(h, "a")
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    seen: set[str] = set()
    for attempt in (1, 2, 3):
        job = next(n for n in check_jobs(h) if n not in seen)
        seen = set(check_jobs(h))
        await answer(h, job, 1)
        result = h.results("c")["a"]
        assert (result["attempts"], result["reason"]) == (attempt, "ProbeCrashed")
        if attempt < 3:
            assert result["phase"] == "Pending"
            await h.reconcile_check("c")
            assert set(check_jobs(h)) == seen  # not before its backoff
            h.later(seconds=60)
            await h.reconcile_check("c")
    assert h.results("c")["a"]["phase"] == "NoVerdict"
    assert kept(h)["phase"] == "Error"
    assert conditions_of(h)["Stalled"] == ("True", "NoVerdict")
    assert len(check_jobs(h)) == 3


async def test_a_missing_claim_counts_as_an_attempt(h: Harness) -> None:
    h.put_slot("a")
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    result = h.results("c")["a"]
    assert (result["phase"], result["reason"], result["attempts"]) == ("Pending", "ClaimNotFound", 1)
    assert kept(h)["phase"] == "Running"  # an attempt without a probe: the check has started
    assert check_jobs(h) == []


async def test_a_slot_deleted_before_its_answer_gives_no_verdict_and_its_probe_stops(h: Harness) -> None:
    fleet(h, "a", "b")
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    doomed = job_of(h, "a")
    h.delete_slot("a")
    await h.reconcile_check("c")
    assert (h.results("c")["a"]["phase"], h.results("c")["a"]["reason"]) == ("NoVerdict", "SlotDeleted")
    assert [call.what for call in h.writer.writes("delete-job")] == [f"{NS}/{doomed}"]
    assert not h.capacity.holds(CheckProbe(namespace=NS, check="c", slot="a"))


async def test_a_job_name_taken_by_a_foreign_job_is_never_adopted(h: Harness) -> None:
    fleet(h, "a")
    h.put_check("c", image=CANDIDATE)
    name = checking.job_name(check_uid="check-uid-c", result={"slot": "a", "slotUID": "slot-uid-a", "attempts": 0})
    h.writer.jobs[(NS, name)] = h.forge_job(name, labels={names.LABEL_COMPONENT: names.COMPONENT_CHECK})
    await h.reconcile_check("c")
    result = h.results("c")["a"]
    assert (result["phase"], result["reason"], result["attempts"]) == ("Pending", "ProbeJobRejected", 1)
    assert "is not this check's" in result["message"]


# --- the shared cap ------------------------------------------------------------------------------------------


async def test_check_probes_wait_behind_slot_probes_and_hand_places_to_them() -> None:
    h = Harness(Config(namespaces=(NS,), max_concurrent_probes=1, audit_image="ghcr.io/woved/slot-operator:1"))
    try:
        fleet(h, "a", "b")
        h.put_check("c", image=CANDIDATE)
        await h.reconcile_check("c")
        assert len(check_jobs(h)) == 1  # nobody else wanted the place
        first = check_jobs(h)[0]
        h.put_claim("s-home")
        h.put_slot("s")
        await h.reconcile("s")
        assert h.status("s")["currentProbe"]["jobName"]  # queued behind the running check probe
        assert not [n for n in h.job_names() if n.startswith("s-probe-")]
        await answer(h, first, 0)
        assert h.woken == [(NS, "s")]  # the freed place went to the Slot, not to the check's next probe
        await h.reconcile_check("c")
        assert len(check_jobs(h)) == 1  # the check still waits
        await h.reconcile("s")
        assert [n for n in h.job_names() if n.startswith("s-probe-")]
    finally:
        await h.close()


async def test_a_restarted_operator_adopts_the_running_check_probe(h: Harness) -> None:
    fleet(h, "a")
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    (job,) = check_jobs(h)
    capacity: Capacity[ProbeKey] = Capacity(4, background=is_check_probe)  # the new process's cap: empty
    restarted = CheckReconciler(
        CheckCollaborators(cache=h.cache, writer=h.writer, capacity=capacity, config=h.config, clock=lambda: h.now,
                           wake=h.woken.append)
    )  # fmt: skip
    probe = CheckProbe(namespace=NS, check="c", slot="a")
    restarted.adopt(probe, job)  # as the controller does at start-up, for the Jobs it finds running
    await restarted.reconcile((NS, "c"))
    assert len(h.writer.writes("create-job")) == 1  # the same deterministic name: found, not made again
    assert capacity.job_of(probe) == job


async def test_a_probe_that_ended_while_the_operator_was_down_frees_its_adopted_place(h: Harness) -> None:
    fleet(h, "a")
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    (job,) = check_jobs(h)
    h.pod(job, probe=exited(0, "{}", at=h.now), audit=AUDIT_OK)  # its pod ended; the Job is not Complete yet
    capacity: Capacity[ProbeKey] = Capacity(4, background=is_check_probe)
    restarted = CheckReconciler(
        CheckCollaborators(cache=h.cache, writer=h.writer, capacity=capacity, config=h.config, clock=lambda: h.now,
                           wake=h.woken.append)
    )  # fmt: skip
    capacity.adopt(CheckProbe(namespace=NS, check="c", slot="a"), job)  # a place held, whoever recorded it
    await restarted.reconcile((NS, "c"))
    assert h.results("c")["a"]["phase"] == "Ready"
    assert capacity.running == 0  # its place is free again


# --- the end -------------------------------------------------------------------------------------------------


async def test_a_finished_check_is_deleted_after_its_ttl(h: Harness) -> None:
    fleet(h, "a")
    h.put_check("c", image=CANDIDATE, ttlAfterFinished="1h")
    await h.reconcile_check("c")
    await answer(h, job_of(h, "a"), 0)
    result = await h.reconcile_check("c")
    assert result.requeue_after == datetime.timedelta(hours=1).total_seconds()
    assert not h.writer.writes("delete-check")
    h.later(hours=1)
    await h.reconcile_check("c")
    assert [call.what for call in h.writer.writes("delete-check")] == [f"{NS}/c"]


async def test_a_deleted_check_gives_its_places_back(h: Harness) -> None:
    fleet(h, "a")
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    assert h.capacity.running == 1
    h.cache.store("checks", NS).apply("DELETED", h.checks.pop("c"))
    await h.reconcile_check("c")
    assert h.capacity.running == 0


async def test_a_suspended_slot_is_selected_and_probed_like_any_other(h: Harness) -> None:
    h.put_claim("parked-home")
    h.put_slot("parked", labels={"pool": "codex"}, suspend=True)
    h.put_check("c", image=CANDIDATE)
    await h.reconcile_check("c")
    assert set(h.results("c")) == {"parked"}
    await answer(h, job_of(h, "parked"), 0)
    assert kept(h)["phase"] == "Succeeded"
