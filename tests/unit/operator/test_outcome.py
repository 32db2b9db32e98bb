"""Classifying a probe Job and its pods (logic/outcome.py)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from slot_operator.logic import outcome as outcome_module
from slot_operator.logic.outcome import NoVerdict, Outcome, Running, Verdict, is_finished
from slot_operator.logic.phases import Phase
from slot_operator.logic.verdict import FailureReason, ProbeResult

T_DONE = "2024-05-06T07:10:00Z"
DONE = datetime.datetime(2024, 5, 6, 7, 10, tzinfo=datetime.UTC)


def classify(job: dict[str, Any], pods: list[dict[str, Any]], *, now: datetime.datetime = DONE) -> Outcome:
    return outcome_module.classify(job, pods, now=now)


def job(*conditions: dict[str, Any], completion: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": list(conditions)}
    if completion:
        status["completionTime"] = completion
    return {"metadata": {"name": "codex-1-probe-0123456789"}, "status": status}


def cond(kind: str, reason: str = "", message: str = "", status: str = "True", at: str = T_DONE) -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": at}


def pod(
    name: str = "p-1",
    *,
    created: str = "2024-05-06T07:00:00Z",
    state: dict[str, Any] | None = None,
    container: str = "probe",
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2024-05-06T07:05:00Z"
    status: dict[str, Any] = {"containerStatuses": [{"name": container, "state": state or {}}]}
    if conditions is not None:
        status["conditions"] = conditions
    return {"metadata": meta, "status": status}


def terminated(code: int, message: str = "") -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed", "message": message}}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}}


def noisy(status: str, detail: str) -> str:
    return "\n".join(
        [
            "smoke-test: agent=codex",
            json.dumps({"status": status, "agent": "codex", "detail": detail}),
            "smoke-test: done",
        ]
    )


# --- finished Jobs ---------------------------------------------------------------------------


def test_complete_is_ready() -> None:
    outcome = classify(job(cond("Complete"), completion=T_DONE), [pod(state=terminated(0))])
    assert outcome == Verdict(
        phase=Phase.READY,
        exit_code=0,
        reason="SmokeTestPassed",
        message="credentials present and parse",
        result=None,
        finished=DONE,
    )


def test_complete_uses_result_detail_when_present() -> None:
    message = '{"status": "ok", "agent": "claude", "detail": "2 credential files"}'
    outcome = classify(job(cond("Complete"), completion=T_DONE), [pod(state=terminated(0, message))])
    assert isinstance(outcome, Verdict)
    assert outcome.message == "2 credential files"
    assert outcome.result == ProbeResult(status="ok", agent="claude", detail="2 credential files")


def test_complete_without_pods_is_still_ready() -> None:
    outcome = classify(job(cond("Complete"), completion=T_DONE), [])
    assert isinstance(outcome, Verdict)
    assert (outcome.phase, outcome.exit_code, outcome.finished) == (Phase.READY, 0, DONE)


@pytest.mark.parametrize(
    ("code", "phase", "default"),
    [
        (64, Phase.IMAGE_BROKEN, "agent CLI missing or broken in the image"),
        (65, Phase.NEEDS_INIT, "credentials missing: initialise the slot"),
        (66, Phase.NEEDS_REAUTH, "credentials present but unusable: re-authenticate"),
    ],
)
def test_pod_failure_policy_exit_from_pod(code: int, phase: Phase, default: str) -> None:
    failed = cond("Failed", "PodFailurePolicy", f"Container probe for pod agents/p-1 failed with exit code {code}")
    outcome = classify(job(failed), [pod(state=terminated(code, "smoke-test: no JSON here"))])
    assert outcome == Verdict(
        phase=phase, exit_code=code, reason=phase.value, message=default, result=None, finished=DONE
    )


def test_pod_failure_policy_message_is_the_probe_detail_from_noisy_logs() -> None:
    failed = cond("Failed", "PodFailurePolicy", "Container probe for pod agents/p-1 failed with exit code 66")
    outcome = classify(job(failed), [pod(state=terminated(66, noisy("creds-invalid", "auth.json: bad JSON")))])
    assert isinstance(outcome, Verdict)
    assert outcome.phase is Phase.NEEDS_REAUTH
    assert outcome.reason == "NeedsReauth"
    assert outcome.message == "auth.json: bad JSON"
    assert outcome.result == ProbeResult(status="creds-invalid", agent="codex", detail="auth.json: bad JSON")
    assert outcome.stop_job is False


@pytest.mark.parametrize(
    ("code", "phase"), [(64, Phase.IMAGE_BROKEN), (65, Phase.NEEDS_INIT), (66, Phase.NEEDS_REAUTH)]
)
def test_pod_failure_policy_exit_from_job_message_when_pods_are_gone(code: int, phase: Phase) -> None:
    message = (
        "Container probe for pod agents/codex-1-probe-0123456789-x7k2p failed with"
        f" exit code {code} matching FailJob rule at index 0"
    )
    outcome = classify(job(cond("Failed", "PodFailurePolicy", message)), [])
    assert isinstance(outcome, Verdict)
    assert (outcome.phase, outcome.exit_code, outcome.finished) == (phase, code, DONE)
    assert outcome.result is None


def test_job_message_exit_code_only_trusted_for_pod_failure_policy() -> None:
    failed = cond("Failed", "BackoffLimitExceeded", "something with exit code 65 in it")
    outcome = classify(job(failed), [])
    assert outcome == NoVerdict(
        reason=FailureReason.CRASHED, message="probe Job failed: BackoffLimitExceeded", finished=DONE
    )


def test_deadline_exceeded_is_timed_out() -> None:
    failed = cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
    outcome = classify(job(failed), [pod(state=terminated(137))])
    assert outcome == NoVerdict(
        reason=FailureReason.TIMED_OUT, message="probe did not finish before its deadline", finished=DONE
    )


def test_backoff_limit_exceeded_with_exit_1_is_crashed() -> None:
    failed = cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    pods = [
        pod("p-1", created="2024-05-06T07:00:00Z", state=terminated(1, "smoke-test: first try")),
        pod("p-2", created="2024-05-06T07:00:30Z", state=terminated(1, "smoke-test: panic")),
    ]
    outcome = classify(job(failed), pods)
    assert outcome == NoVerdict(
        reason=FailureReason.CRASHED,
        message="probe exited with code 1 before a check fired",
        exit_code=1,
        result=None,
        finished=DONE,
    )


def test_crash_keeps_the_error_detail_and_result() -> None:
    failed = cond("Failed", "BackoffLimitExceeded")
    outcome = classify(job(failed), [pod(state=terminated(1, noisy("error", "unexpected: EIO")))])
    assert isinstance(outcome, NoVerdict)
    assert outcome.reason is FailureReason.CRASHED
    assert outcome.message == "unexpected: EIO"
    assert outcome.exit_code == 1
    assert outcome.result == ProbeResult(status="error", agent="codex", detail="unexpected: EIO")


@pytest.mark.parametrize("code", [2, 126, 127, 137, 139])
def test_other_exit_codes_are_crashes(code: int) -> None:
    outcome = classify(job(cond("Failed", "BackoffLimitExceeded")), [pod(state=terminated(code))])
    assert isinstance(outcome, NoVerdict)
    assert (outcome.reason, outcome.exit_code) == (FailureReason.CRASHED, code)
    assert outcome.message == f"probe exited with code {code} before a check fired"


def test_newest_terminated_pod_decides() -> None:
    failed = cond("Failed", "PodFailurePolicy", "failed with exit code 65")
    pods = [
        pod("old", created="2024-05-06T07:00:00Z", state=terminated(1)),
        pod("new", created="2024-05-06T07:01:00Z", state=terminated(65)),
    ]
    outcome = classify(job(failed), pods)
    assert isinstance(outcome, Verdict)
    assert (outcome.phase, outcome.exit_code) == (Phase.NEEDS_INIT, 65)
    # Order of the input list does not matter.
    assert classify(job(failed), list(reversed(pods))) == outcome


def test_other_containers_are_ignored() -> None:
    failed = cond("Failed", "BackoffLimitExceeded")
    outcome = classify(job(failed), [pod(container="istio-proxy", state=terminated(0))])
    assert outcome == NoVerdict(
        reason=FailureReason.CRASHED, message="probe Job failed: BackoffLimitExceeded", finished=DONE
    )


def test_failed_without_reason() -> None:
    failed = {"type": "Failed", "status": "True"}
    outcome = classify(job(failed, completion=T_DONE), [])
    assert outcome == NoVerdict(reason=FailureReason.CRASHED, message="probe Job failed: unknown reason", finished=DONE)


def test_false_conditions_do_not_finish_the_job() -> None:
    outcome = classify(job(cond("Failed", "DeadlineExceeded", status="False")), [pod(state={"running": {}})])
    assert outcome == Running()


# --- running Jobs --------------------------------------------------------------------------


def test_still_running() -> None:
    assert classify(job(), [pod(state={"running": {"startedAt": "2024-05-06T07:00:05Z"}})]) == Running()


def test_no_pods_yet_is_running() -> None:
    assert classify({"metadata": {"name": "j"}}, []) == Running()


MISSING = [
    # What registries and runtimes say when the image does not exist: a definitive answer.
    'failed to pull and unpack image "ghcr.io/example/agent:nope": failed to resolve reference '
    '"ghcr.io/example/agent:nope": ghcr.io/example/agent:nope: not found',
    "rpc error: code = NotFound desc = failed to pull and unpack image",
    "reading manifest nope in quay.io/example/agent: manifest unknown: manifest unknown",
    "initializing source docker://ghcr.io/example/agent:nope: reading manifest nope: name unknown",
    'failed to pull image "local/agent-shell:nope": not found in local image store',
]
TRANSIENT = [
    # Anything else may pass on the next try: rate limits, outages, timeouts, DNS, credentials.
    "failed to copy: httpReadSeeker: failed open: unexpected status code https://ghcr.io/v2/: 429 Too Many Requests",
    "unexpected status from HEAD request to https://registry/v2/agent/manifests/x: 503 Service Unavailable",
    'failed to do request: Head "https://ghcr.io/v2/agent/manifests/x": dial tcp 140.82.1.1:443: i/o timeout',
    "dial tcp: lookup ghcr.io on 10.96.0.10:53: no such host",
    "pull access denied, repository does not exist or may require authorization: authorization failed",
    "failed to authorize: failed to fetch anonymous token: 401 Unauthorized",
    "",
]


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
@pytest.mark.parametrize("message", MISSING)
def test_an_image_that_does_not_exist_is_image_broken_and_stops_the_job(reason: str, message: str) -> None:
    outcome = classify(job(), [pod(state=waiting(reason, message))])
    assert outcome == Verdict(
        phase=Phase.IMAGE_BROKEN,
        exit_code=None,
        reason="ImageNotFound",
        message=f"{reason}: {message}",
        result=None,
        finished=None,
        stop_job=True,
    )


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"])
@pytest.mark.parametrize("message", TRANSIENT)
def test_any_other_pull_failure_is_no_verdict_retried(reason: str, message: str) -> None:
    """A registry blip must never flip a Ready Slot: ProbeSucceeded=False/ImagePullFailed, retried with backoff."""
    outcome = classify(job(), [pod(state=waiting(reason, message))])
    assert isinstance(outcome, NoVerdict)
    assert (outcome.reason, outcome.stop_job) == (FailureReason.IMAGE_PULL_FAILED, True)
    assert outcome.message == f"{reason}: {message or 'image cannot be pulled'}"


def test_an_invalid_image_name_is_image_broken() -> None:
    state = waiting("InvalidImageName", 'couldn\'t parse image reference "Agent:Bad Tag": invalid reference format')
    outcome = classify(job(), [pod(state=state)])
    assert isinstance(outcome, Verdict)
    assert (outcome.phase, outcome.reason) == (Phase.IMAGE_BROKEN, "ImageNotFound")


@pytest.mark.parametrize("reason", ["ContainerCreating", "PodInitializing"])
def test_ordinary_waiting_is_running(reason: str) -> None:
    assert classify(job(), [pod(state=waiting(reason))]) == Running()


def test_unschedulable_pod_is_no_verdict_and_stops_the_job() -> None:
    message = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    outcome = classify(job(), [pod(conditions=[cond("PodScheduled", "Unschedulable", message, status="False")])])
    assert outcome == NoVerdict(reason=FailureReason.UNSCHEDULABLE, message=message, stop_job=True)


def test_container_config_error_is_no_verdict_that_names_the_missing_object() -> None:
    missing = waiting("CreateContainerConfigError", 'secret "codex-env" not found')
    outcome = classify(job(), [pod(state=missing)])
    assert outcome == NoVerdict(
        reason=FailureReason.CONTAINER_CONFIG,
        message='CreateContainerConfigError: secret "codex-env" not found',
        stop_job=True,
    )


def test_pending_but_not_yet_unschedulable_is_running() -> None:
    scheduled = cond("PodScheduled", "SchedulerError", status="False")
    assert classify(job(), [pod(conditions=[scheduled])]) == Running()
    assert classify(job(), [pod(conditions=[cond("PodScheduled")])]) == Running()


def test_deleting_pods_are_ignored_while_running() -> None:
    old = pod("old", created="2024-05-06T07:01:00Z", state=waiting("ErrImagePull", "not found"), deleting=True)
    assert classify(job(), [old]) == Running()
    new = pod("new", created="2024-05-06T07:00:00Z", state=waiting("ImagePullBackOff", "x: not found"))
    outcome = classify(job(), [old, new])
    assert isinstance(outcome, Verdict)
    assert outcome.message.startswith("ImagePullBackOff")


def test_only_the_newest_live_pod_is_inspected_while_running() -> None:
    # A disrupted older pod that failed to pull does not condemn a newer pod that is running.
    older = pod("older", created="2024-05-06T07:00:00Z", state=waiting("ErrImagePull"))
    newer = pod("newer", created="2024-05-06T07:02:00Z", state={"running": {}})
    assert classify(job(), [older, newer]) == Running()


def test_is_finished() -> None:
    assert is_finished(job(cond("Complete")))
    assert is_finished(job(cond("Failed", "DeadlineExceeded")))
    assert not is_finished(job())
    assert not is_finished(job(cond("Suspended")))
    assert not is_finished(job(cond("Complete", status="False")))
    assert not is_finished({})


# --- the spec at fault: the runtime could not mount the slot ------------------------------------

CONTAINERD_MOUNT_ERROR = (
    "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: "
    "unable to start container process: error during container init: error mounting "
    '"/var/lib/kubelet/pods/1/volumes/kubernetes.io~csi/pvc-1/mount" to rootfs at "/opt/agent/run.sh": '
    "mount /var/lib/kubelet/pods/1/volumes/kubernetes.io~csi/pvc-1/mount:/opt/agent/run.sh (via /proc/self/fd/6), "
    "flags: 0x5001: not a directory: unknown"
)


def _start_error(message: str) -> dict[str, Any]:
    return {"terminated": {"exitCode": 128, "reason": "StartError", "message": message}}


def test_mount_failure_while_the_job_retries_is_invalid_spec_and_stops_it() -> None:
    outcome = classify(job(), [pod(state=_start_error(CONTAINERD_MOUNT_ERROR))])
    assert isinstance(outcome, NoVerdict)
    assert outcome.reason is FailureReason.INVALID_SPEC
    assert outcome.stop_job
    # The message starts with the field and keeps the part of the runtime's that says what went wrong.
    assert outcome.message.startswith(
        'spec.mountPath: the container runtime could not mount the claim: error mounting "'
    )
    assert 'to rootfs at "/opt/agent/run.sh"' in outcome.message


def test_mount_failure_after_the_job_failed_is_invalid_spec() -> None:
    failed = job(cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
    outcome = classify(failed, [pod(state=_start_error(CONTAINERD_MOUNT_ERROR))])
    assert isinstance(outcome, NoVerdict)
    assert (outcome.reason, outcome.stop_job, outcome.finished) == (FailureReason.INVALID_SPEC, False, DONE)


@pytest.mark.parametrize("reason", ["CreateContainerError", "RunContainerError"])
def test_mount_failure_while_waiting_is_invalid_spec(reason: str) -> None:
    outcome = classify(job(), [pod(state=waiting(reason, "error mounting /x to rootfs at /home/codex: denied"))])
    assert isinstance(outcome, NoVerdict)
    assert outcome.reason is FailureReason.INVALID_SPEC


def test_other_start_errors_stay_crashes() -> None:
    failed = job(cond("Failed", "BackoffLimitExceeded"))
    outcome = classify(failed, [pod(state=_start_error('exec: "entrypoint": executable file not found in $PATH'))])
    assert isinstance(outcome, NoVerdict)
    assert outcome.reason is FailureReason.CRASHED


# --- the pod's exit code is the verdict, before the Job controller says so ------------------------


@pytest.mark.parametrize(("code", "phase"), [(0, Phase.READY), (64, Phase.IMAGE_BROKEN), (65, Phase.NEEDS_INIT),
                                             (66, Phase.NEEDS_REAUTH)])  # fmt: skip
def test_a_verdict_exit_code_is_the_verdict_while_the_job_still_runs(code: int, phase: Phase) -> None:
    state = terminated(code, noisy("x", "from the pod") if code else "")
    state["terminated"]["finishedAt"] = T_DONE
    outcome = classify(job(), [pod(state=state)])
    assert isinstance(outcome, Verdict)
    assert (outcome.phase, outcome.exit_code, outcome.finished) == (phase, code, DONE)
    assert not outcome.stop_job  # the Job finishes by itself; nothing to delete


def test_a_crash_exit_code_waits_for_the_job_controller() -> None:
    """Exit 1 is retried by the Job (backoffLimit); only the Job's own failure ends the probe."""
    assert classify(job(), [pod(state=terminated(1))]) == Running()
    assert classify(job(), [pod(state=terminated(137))]) == Running()


def test_the_newest_pod_decides_while_the_job_runs() -> None:
    crashed = pod("p-1", created="2024-05-06T07:00:00Z", state=terminated(1))
    retry = pod("p-2", created="2024-05-06T07:01:00Z", state=terminated(0))
    outcome = classify(job(), [crashed, retry])
    assert isinstance(outcome, Verdict)
    assert outcome.phase is Phase.READY
