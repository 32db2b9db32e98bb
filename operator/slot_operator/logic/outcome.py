"""What a probe Job (and its pods) says: still running, a verdict, or no verdict.

Input is the plain API dicts of the Job and its pods, as read from the server.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from slot_operator.logic import names, ownership, podstatus, timestamps
from slot_operator.logic.phases import PHASES, Phase, phase_for_exit
from slot_operator.logic.verdict import FailureReason, ProbeResult, parse_result_line

# How kubelets report a container the runtime could not start (containerd: terminated StartError, exit 128;
# CRI-O: waiting CreateContainerError; dockershim: RunContainerError / ContainerCannotRun).
_START_FAILURES = frozenset({"StartError", "CreateContainerError", "RunContainerError", "ContainerCannotRun"})
# The Job controller's message when a podFailurePolicy rule fails the Job on the probe container's exit code.
_PROBE_EXIT_IN_MESSAGE = re.compile(rf"Container {names.PROBE_CONTAINER} for pod \S+ failed with exit code (\d+)")
# A registry's answer that the image does not exist: definitive, so a verdict (ImageBroken). Anything else a pull
# can fail with (429, 5xx, a timeout, DNS, a missing or wrong pull secret) may pass on the next try: no verdict.
_IMAGE_MISSING = re.compile(r"\bnot found\b|\bnotfound\b|manifest unknown|name unknown", re.IGNORECASE)
# After the probe container ended, how long its verdict waits for the audit beside it (normally well under 1 s).
AUDIT_GRACE = datetime.timedelta(seconds=10)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Running:
    """No conclusion yet: keep waiting for the Job (events will wake us; at `until` at the latest)."""

    until: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verdict:
    phase: Phase
    exit_code: int | None
    reason: str
    message: str
    result: ProbeResult | None
    finished: datetime.datetime | None
    stop_job: bool = False  # the Job is still running (image pull failure): delete it


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoVerdict:
    reason: FailureReason
    message: str
    exit_code: int | None = None
    result: ProbeResult | None = None
    finished: datetime.datetime | None = None
    stop_job: bool = False  # the Job would only wait for its deadline: delete it


Outcome = Running | Verdict | NoVerdict


def _state(pod: Mapping[str, Any], name: str = names.PROBE_CONTAINER) -> Mapping[str, Any]:
    return podstatus.container_state(pod, name)


def _live(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest pod not being deleted: the Job's current attempt."""
    return next(
        (pod for pod in podstatus.newest(pods) if not (pod.get("metadata") or {}).get("deletionTimestamp")), None
    )


def _terminated(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recent terminated probe container state, if any pod has one."""
    for pod in podstatus.newest(pods):
        state = _state(pod).get("terminated")
        if state:
            return dict(state)
    return None


def _mount_failure(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The runtime's message when it could not start the probe because mounting the slot failed.

    That is the spec's doing (spec.mountPath lands on a file, or where the runtime refuses to mount):
    the same spec fails the same way, so it is reported as InvalidSpec instead of being retried. The
    audit mounts the claim at a path of the operator's choosing: its failures are never the spec's.
    """
    for pod in podstatus.newest(pods):
        state = _state(pod)
        for detail in (detail for detail in (state.get("terminated"), state.get("waiting")) if detail):
            message = str(detail.get("message") or "")
            if detail.get("reason") in _START_FAILURES and "mount" in message.lower():
                # Runtime messages nest every layer's prefix; the part worth keeping starts at the mount error.
                start = message.lower().find("error mounting")
                return message[start:] if start > 0 else message
    return None


def _audit_stuck(state: Mapping[str, Any]) -> str | None:
    """Why an audit container that has not run will not run by itself (its image, the runtime), if so."""
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in podstatus.IMAGE_PULL_REASONS:
        return (
            f"the ownership audit's image (--audit-image) cannot be pulled: {waiting['reason']}: "
            f"{waiting.get('message') or ''}".strip()
        )
    if waiting.get("reason") in (*_START_FAILURES, "CreateContainerConfigError"):
        return f"the ownership audit could not start: {waiting['reason']}: {waiting.get('message') or ''}".strip()
    return None


def audit_result(pods: Sequence[Mapping[str, Any]]) -> ownership.AuditResult | None:
    """What the ownership audit reported in the newest probe pod that ran it; None while it has not finished.

    An audit that failed, or will never run (its image cannot be pulled), is AuditFailed: ownership Unknown.
    """
    for pod in podstatus.newest(pods):
        state = _state(pod, names.AUDIT_CONTAINER)
        terminated = state.get("terminated")
        if terminated and terminated.get("exitCode") != 0:
            return ownership.AuditUnavailable(
                reason="AuditFailed",
                message=f"the ownership audit exited with code {terminated.get('exitCode')}: "
                f"{str(terminated.get('message') or terminated.get('reason') or '').strip()[-200:]}",
            )
        if terminated:
            return ownership.parse_report(terminated.get("message"))
        stuck = _audit_stuck(state)
        if stuck is not None:
            return ownership.AuditUnavailable(reason="AuditFailed", message=stuck)
    return None


def _audit_settled(pod: Mapping[str, Any], *, probe_finished: datetime.datetime | None, now: datetime.datetime) -> bool:
    """The audit beside the probe has nothing more to say: it finished, will never run, is absent, or is late."""
    state = _state(pod, names.AUDIT_CONTAINER)
    running = any(
        entry.get("name") == names.AUDIT_CONTAINER for entry in (pod.get("status") or {}).get("containerStatuses") or ()
    )
    if not running or state.get("terminated") or _audit_stuck(state) is not None:
        return True
    return probe_finished is None or now >= probe_finished + AUDIT_GRACE


def _from_exit(code: int, terminated: Mapping[str, Any], finished: datetime.datetime | None) -> Verdict | NoVerdict:
    result = parse_result_line(terminated.get("message"))
    phase = phase_for_exit(code)
    detail = result.detail if result and result.detail else None
    if phase is None:
        return NoVerdict(
            reason=FailureReason.CRASHED,
            message=detail or f"probe exited with code {code} before a check fired",
            exit_code=code,
            result=result,
            finished=finished,
        )
    facts = PHASES[phase]
    return Verdict(
        phase=phase,
        exit_code=code,
        reason=facts.ready_reason,
        message=detail or facts.default_message,
        result=result,
        finished=finished,
    )


def _pull_failure(waiting: Mapping[str, Any]) -> Verdict | NoVerdict:
    """The probe's image cannot be pulled: ImageBroken only when the registry says it does not exist."""
    message = f"{waiting['reason']}: {waiting.get('message') or 'image cannot be pulled'}"
    if waiting["reason"] == "InvalidImageName" or _IMAGE_MISSING.search(str(waiting.get("message") or "")):
        return Verdict(
            phase=Phase.IMAGE_BROKEN,
            exit_code=None,
            reason="ImageNotFound",
            message=message,
            result=None,
            finished=None,
            stop_job=True,
        )
    return NoVerdict(reason=FailureReason.IMAGE_PULL_FAILED, message=message, stop_job=True)


def _finished_job(job: Mapping[str, Any], failed: Mapping[str, Any], terminated: Mapping[str, Any] | None) -> Outcome:
    """The Job controller failed the Job: its reason, the probe's exit code, or what the controller says of it."""
    finished = timestamps.parse_time(failed.get("lastTransitionTime")) or timestamps.parse_time(
        (job.get("status") or {}).get("completionTime")
    )
    reason = failed.get("reason")
    if reason == "DeadlineExceeded":
        return NoVerdict(
            reason=FailureReason.TIMED_OUT, message="probe did not finish before its deadline", finished=finished
        )
    if terminated is not None and isinstance(terminated.get("exitCode"), int):
        return _from_exit(int(terminated["exitCode"]), terminated, finished)
    # Pods already gone (TTL, manual cleanup): the Job controller names the probe's exit code in its message.
    match = _PROBE_EXIT_IN_MESSAGE.search(str(failed.get("message") or ""))
    if reason == "PodFailurePolicy" and match:
        return _from_exit(int(match.group(1)), {}, finished)
    return NoVerdict(
        reason=FailureReason.CRASHED, message=f"probe Job failed: {reason or 'unknown reason'}", finished=finished
    )


def _probe_ended(pod: Mapping[str, Any], terminated: Mapping[str, Any], *, now: datetime.datetime) -> Outcome:
    """The probe container of the Job's current pod ended while the Job still runs."""
    finished = timestamps.parse_time(terminated.get("finishedAt"))
    if not _audit_settled(pod, probe_finished=finished, now=now):
        return Running(until=(finished or now) + AUDIT_GRACE)
    # An audit that will never run keeps the pod from ending: the Job would wait for its deadline.
    stuck = _audit_stuck(_state(pod, names.AUDIT_CONTAINER)) is not None
    code = terminated.get("exitCode")
    if isinstance(code, int) and phase_for_exit(code) is not None:
        # A verdict exit code is the verdict already: no need to wait for the Job's condition (seconds, under load).
        return dataclasses.replace(_from_exit(code, terminated, finished), stop_job=stuck)
    if stuck and isinstance(code, int):
        return dataclasses.replace(_from_exit(code, terminated, finished), stop_job=True)
    return Running()  # a crash: the Job's backoffLimit retries it, its own failure ends the probe


def classify(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], *, now: datetime.datetime) -> Outcome:
    """Decide what a probe Job has shown so far (`now`: how long the verdict has waited for the audit)."""
    if podstatus.true_condition(job, "Complete"):
        finished = timestamps.parse_time((job.get("status") or {}).get("completionTime"))
        return _from_exit(0, _terminated(pods) or {}, finished)
    failed = podstatus.true_condition(job, "Failed")
    mount = _mount_failure(pods)
    if mount is not None:
        return NoVerdict(
            reason=FailureReason.INVALID_SPEC,
            message=f"spec.mountPath: the container runtime could not mount the claim: {mount}",
            finished=timestamps.parse_time(failed.get("lastTransitionTime")) if failed else None,
            stop_job=failed is None,  # the Job would only start another pod that fails the same way
        )
    if failed:
        return _finished_job(job, failed, _terminated(pods))
    pod = _live(pods)
    if pod is None:
        return Running()
    terminated = _state(pod).get("terminated")
    if terminated:
        return _probe_ended(pod, terminated, now=now)
    # Look for reasons that would otherwise only surface at the deadline.
    waiting = _state(pod).get("waiting") or {}
    if waiting.get("reason") in podstatus.IMAGE_PULL_REASONS:
        return _pull_failure(waiting)
    if waiting.get("reason") == "CreateContainerConfigError":
        # The kubelet would retry until the deadline; the missing Secret/ConfigMap is someone else's
        # to create, so say which now and retry with backoff (a later attempt finds it).
        return NoVerdict(
            reason=FailureReason.CONTAINER_CONFIG,
            message=f"CreateContainerConfigError: {waiting.get('message') or 'cannot configure the probe'}",
            stop_job=True,
        )
    scheduled = next(
        (c for c in (pod.get("status") or {}).get("conditions") or () if c.get("type") == "PodScheduled"), None
    )
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return NoVerdict(
            reason=FailureReason.UNSCHEDULABLE,
            message=str(scheduled.get("message") or "probe pod cannot be scheduled"),
            stop_job=True,
        )
    return Running()


def is_finished(job: Mapping[str, Any]) -> bool:
    return bool(podstatus.true_condition(job, "Complete") or podstatus.true_condition(job, "Failed"))
