"""What a probe Job (and its pods) says: still running, a verdict, or no verdict.

Input is the plain API dicts of the Job and its pods, as read from the server.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from slot_operator.logic import ownership, podstatus, timestamps
from slot_operator.logic.verdict import FailureReason, Phase, ProbeResult, parse_result_line, phase_for_exit

PROBE_CONTAINER = "probe"
AUDIT_CONTAINER = "audit"  # the ownership audit, an init container of the probe pod
# How kubelets report a container the runtime could not start (containerd: terminated StartError, exit 128;
# CRI-O: waiting CreateContainerError; dockershim: RunContainerError / ContainerCannotRun).
_START_FAILURES = frozenset({"StartError", "CreateContainerError", "RunContainerError", "ContainerCannotRun"})
_EXIT_IN_MESSAGE = re.compile(r"exit code (\d+)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Running:
    """No conclusion yet: keep waiting for the Job (events will wake us)."""


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


def _state(pod: Mapping[str, Any], name: str = PROBE_CONTAINER) -> Mapping[str, Any]:
    return podstatus.container_state(pod, name, init=name == AUDIT_CONTAINER)


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
    the same spec fails the same way, so it is reported as InvalidSpec instead of being retried.
    """
    for pod in podstatus.newest(pods):
        states = [_state(pod, name) for name in (AUDIT_CONTAINER, PROBE_CONTAINER)]
        for detail in (
            detail for state in states for detail in (state.get("terminated"), state.get("waiting")) if detail
        ):
            message = str(detail.get("message") or "")
            if detail.get("reason") in _START_FAILURES and "mount" in message.lower():
                # Runtime messages nest every layer's prefix; the part worth keeping starts at the mount error.
                start = message.lower().find("error mounting")
                return message[start:] if start > 0 else message
    return None


def audit_result(pods: Sequence[Mapping[str, Any]]) -> ownership.AuditResult | None:
    """What the ownership audit reported in the newest probe pod where it finished; None if it never did."""
    for pod in podstatus.newest(pods):
        terminated = _state(pod, AUDIT_CONTAINER).get("terminated")
        if not terminated:
            continue
        if terminated.get("exitCode") != 0:
            return ownership.AuditUnavailable(
                reason="AuditFailed",
                message=f"the ownership audit exited with code {terminated.get('exitCode')}: "
                f"{str(terminated.get('message') or terminated.get('reason') or '').strip()[-200:]}",
            )
        return ownership.parse_report(terminated.get("message"))
    return None


def _audit_blocked(pods: Sequence[Mapping[str, Any]]) -> NoVerdict | None:
    """The audit could not run, so the probe never will: its image cannot be pulled, or it failed.

    The audit always exits 0 by contract; anything else is a broken operator image or command,
    not the agent image's fault, so it is never ImageBroken.
    """
    for pod in podstatus.newest(pods):
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        state = _state(pod, AUDIT_CONTAINER)
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in podstatus.IMAGE_PULL_REASONS:
            return NoVerdict(
                reason=FailureReason.AUDIT_FAILED,
                message=f"the ownership audit's image (--audit-image) cannot be pulled: {waiting['reason']}: "
                f"{waiting.get('message') or ''}".strip(),
                stop_job=True,
            )
        terminated = state.get("terminated") or {}
        if terminated and terminated.get("exitCode") != 0 and terminated.get("reason") not in _START_FAILURES:
            result = audit_result([pod])
            message = result.message if isinstance(result, ownership.AuditUnavailable) else "the ownership audit failed"
            return NoVerdict(reason=FailureReason.AUDIT_FAILED, message=message, stop_job=True)
        break
    return None


def _from_exit(code: int, terminated: Mapping[str, Any], finished: datetime.datetime | None) -> Outcome:
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
    reason = "SmokeTestPassed" if phase is Phase.READY else str(phase)
    default = {
        Phase.READY: "credentials present and parse",
        Phase.IMAGE_BROKEN: "agent CLI missing or broken in the image",
        Phase.NEEDS_INIT: "credentials missing: initialise the slot",
        Phase.NEEDS_REAUTH: "credentials present but unusable: re-authenticate",
    }[phase]
    return Verdict(
        phase=phase, exit_code=code, reason=reason, message=detail or default, result=result, finished=finished
    )


def classify(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Outcome:
    """Decide what a probe Job has shown so far."""
    job_status = job.get("status") or {}
    finished = timestamps.parse_time(job_status.get("completionTime"))
    terminated = _terminated(pods)

    if podstatus.true_condition(job, "Complete"):
        return _from_exit(0, terminated or {}, finished)

    failed = podstatus.true_condition(job, "Failed")
    mount = _mount_failure(pods)
    blocked = None if mount is not None else _audit_blocked(pods)
    if blocked is not None:
        if failed:
            return dataclasses.replace(
                blocked, stop_job=False, finished=timestamps.parse_time(failed.get("lastTransitionTime"))
            )
        return blocked
    if mount is not None:
        return NoVerdict(
            reason=FailureReason.INVALID_SPEC,
            message=f"spec.mountPath: the container runtime could not mount the claim: {mount}",
            finished=timestamps.parse_time(failed.get("lastTransitionTime")) if failed else None,
            stop_job=failed is None,  # the Job would only start another pod that fails the same way
        )
    if failed:
        finished = timestamps.parse_time(failed.get("lastTransitionTime")) or finished
        reason = failed.get("reason")
        if reason == "DeadlineExceeded":
            return NoVerdict(
                reason=FailureReason.TIMED_OUT, message="probe did not finish before its deadline", finished=finished
            )
        if terminated is not None and isinstance(terminated.get("exitCode"), int):
            return _from_exit(int(terminated["exitCode"]), terminated, finished)
        # Pods already gone (TTL, manual cleanup): the Job controller names the exit code in its message.
        match = _EXIT_IN_MESSAGE.search(str(failed.get("message") or ""))
        if reason == "PodFailurePolicy" and match:
            return _from_exit(int(match.group(1)), {}, finished)
        return NoVerdict(
            reason=FailureReason.CRASHED, message=f"probe Job failed: {reason or 'unknown reason'}", finished=finished
        )

    # Still running as far as the Job controller has said. A probe container that terminated with a verdict
    # exit code is the verdict already: no need to wait for the Job's condition (seconds, under load).
    code = (terminated or {}).get("exitCode")
    if terminated is not None and isinstance(code, int) and phase_for_exit(code) is not None:
        return _from_exit(code, terminated, timestamps.parse_time(terminated.get("finishedAt")))
    # Look for reasons that would otherwise only surface at the deadline.
    for pod in podstatus.newest(pods):
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        waiting = _state(pod).get("waiting") or {}
        if waiting.get("reason") in podstatus.IMAGE_PULL_REASONS:
            return Verdict(
                phase=Phase.IMAGE_BROKEN,
                exit_code=None,
                reason="ImagePullFailed",
                message=f"{waiting['reason']}: {waiting.get('message') or 'image cannot be pulled'}",
                result=None,
                finished=None,
                stop_job=True,
            )
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
        break
    return Running()


def is_finished(job: Mapping[str, Any]) -> bool:
    return bool(podstatus.true_condition(job, "Complete") or podstatus.true_condition(job, "Failed"))
