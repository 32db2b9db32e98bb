"""What `kubectl slot` prints: pure functions of the Slots, their Events and `now`."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from slot_operator.logic import report, timestamps
from slot_operator.logic.phases import PHASES, Phase
from slot_operator.logic.verdict import FailureReason

RUNBOOK = "docs/runbook.md"


def age(since: datetime.datetime | None, now: datetime.datetime) -> str:
    """kubectl's short ages: 45s, 3m12s, 17m, 5h3m, 20h, 3d4h, 12d."""
    if since is None:
        return "<none>"
    seconds = max(int((now - since).total_seconds()), 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if days < 2:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def ready_word(view: report.SlotView) -> str:
    """Ready on the current spec: True, False (a current verdict that is not Ready) or Unknown (none yet)."""
    if view.ready:
        return "True"
    return "False" if view.verdict_current else "Unknown"


def _columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def table(slots: Sequence[Mapping[str, Any]], *, all_namespaces: bool, now: datetime.datetime) -> str:
    """The fleet: phase, Ready on the current spec, age of the verdict, image, and what holds each Slot."""
    header = ["NAME", "PHASE", "READY", "VERDICT", "IMAGE", "REASON"]
    rows = []
    for view in sorted((report.view(slot) for slot in slots), key=lambda v: (v.namespace, v.name)):
        row = [view.name, view.phase.value, ready_word(view), age(view.verdict_time, now), view.image, view.reason]
        rows.append([view.namespace, *row] if all_namespaces else row)
    return _columns([["NAMESPACE", *header] if all_namespaces else header, *rows])


def suggestion(slot: Mapping[str, Any], view: report.SlotView) -> str:
    """What a person should do next, in the words of docs/runbook.md (whose section it names)."""
    status = slot.get("status") or {}
    ref = f"-n {view.namespace} {view.name}"
    probe = f"kubectl slot probe {ref} --wait"
    if view.suspended:
        return (
            "Suspended on purpose: no probes run. To probe again: "
            f'kubectl patch slot {ref} --type merge -p \'{{"spec":{{"suspend":false}}}}\''
        )
    if view.invalid_spec:
        return "Fix the spec field the message names; the operator probes as soon as the spec is valid."
    if view.verdict_current and view.phase is Phase.READY:
        return PHASES[Phase.READY].advice
    owners = status.get("ownership") or {}
    if view.verdict_current and PHASES[view.phase].uid_mismatch_can_cause and owners.get("found"):
        return _ownership_advice(owners, ref=ref, probe=probe)
    if view.verdict_current and PHASES[view.phase].needs_human:
        last_ready = status.get("lastReadyImage")
        target = f"the last Ready image {last_ready}" if last_ready else "an image that works"
        facts = PHASES[view.phase]
        return f"{facts.advice.format(probe=probe, last_ready=target)} ({RUNBOOK}#{facts.runbook})"
    return _waiting_advice(slot, view, probe=probe)


def _ownership_advice(owners: Mapping[str, Any], *, ref: str, probe: str) -> str:
    """The ownership audit found the cause: another uid owns the files (docs/design.md §2.4)."""
    cause = f"The files belong to {' and '.join(owners['found'])}, the image runs as {owners.get('expected')}"
    if not owners.get("approval"):
        return (
            f"{cause}, an owner the ownership migration will not move (or its approval was used): fix the "
            f"owners by hand, or {probe} for a new audit. ({RUNBOOK}#slotownedbyotheruser)"
        )
    return (
        f"{cause}: stop the pods that use the claim, then approve the ownership migration: kubectl annotate "
        f"slot {ref} --overwrite woved.dev/ownership-migration-requested-at={owners['approval']}. "
        f"({RUNBOOK}#slotownedbyotheruser)"
    )


def _waiting_advice(slot: Mapping[str, Any], view: report.SlotView, *, probe: str) -> str:
    """No verdict on the current spec: what holds it (queued, probing, or why the last probe gave none)."""
    status = slot.get("status") or {}
    claim = (slot.get("spec") or {}).get("claimName")
    job = (status.get("lastProbe") or {}).get("jobName")
    # reason -> (advice, runbook section); None: the section of the alert this state fires.
    by_reason: dict[str, tuple[str, str | None]] = {
        "Queued": ("The probe waits for a place under the operator's --max-concurrent-probes cap.",
                   "slotprobequeuenotdraining"),
        "Probing": (f"A probe is running: {probe}", None),
        FailureReason.CLAIM_NOT_FOUND.value: (f"Create the PersistentVolumeClaim {claim} in this namespace (or fix "
                                              "spec.claimName): the probe starts when it appears.", None),
        FailureReason.CLAIM_IN_USE.value: ("A running pod holds the ReadWriteOncePod claim; the probe is retried "
                                           "when it is free.", None),
        FailureReason.UNSCHEDULABLE.value: ("No node fits the probe pod: check spec.nodeSelector, tolerations and "
                                            "resources against the message.", "slotprobesfailing"),
        FailureReason.CONTAINER_CONFIG.value: ("A Secret or ConfigMap (or a key of it) that spec.env references is "
                                               "missing: create it or fix spec.env; the probe is retried.",
                                               "slotprobesfailing"),
        FailureReason.TIMED_OUT.value: ("The probe ran past spec.timeout (time Pending counts): raise spec.timeout "
                                        "or look at why the pod is slow.", "slotprobesfailing"),
        FailureReason.CRASHED.value: (f"The probe crashed before a check fired: kubectl logs -n {view.namespace} "
                                      f"job/{job}", "slotprobesfailing"),
        FailureReason.JOB_REJECTED.value: ("The API server refused the probe Job: the message says why (quota, "
                                           "admission).", None),
        FailureReason.IMAGE_PULL_FAILED.value: ("The registry did not hand out spec.image (rate limit, outage, a "
                                                "missing or wrong pull secret): the probe is retried; a verdict on "
                                                "record stands.", "slotprobesfailing"),
    }  # fmt: skip
    advice, section = by_reason.get(
        view.reason, (f"Wait for the probe of the current spec, or request one: {probe}", None)
    )
    if section is None:
        section = "slotnoverdict" if view.phase is Phase.PENDING else "slotnotready"
    return f"{advice} ({RUNBOOK}#{section})"


def why(slot: Mapping[str, Any], events: Sequence[Mapping[str, Any]], *, now: datetime.datetime) -> str:
    """The verdict, the probe's own message, the latest Events and the suggested fix."""
    view = report.view(slot)
    status = slot.get("status") or {}
    last = status.get("lastProbe") or {}
    lines = [f"Slot {view.namespace}/{view.name} (generation {view.generation})"]
    if view.verdict_generation is None:
        lines.append(f"Verdict:     none yet (phase {view.phase.value})")
    else:
        current = "the current spec" if view.verdict_current else f"generation {view.verdict_generation}, not current"
        lines.append(f"Verdict:     {view.phase.value}, {age(view.verdict_time, now)} ago, on {current}")
    lines.append(f"Ready:       {ready_word(view)} on the current spec")
    image = f"Image:       {view.image}"
    if status.get("lastReadyImage") and status.get("lastReadyImage") != view.image:
        image += f" (last Ready: {status['lastReadyImage']})"
    lines.append(image)
    if last:
        outcome = ", ".join(
            part
            for part in (
                f"job {last.get('jobName')}" if last.get("jobName") else "",
                f"exit {last['exitCode']}" if last.get("exitCode") is not None else "",
                f"result {last['result']}" if last.get("result") else "",
                str(last.get("reason") or ""),
                f"finished {age(timestamps.parse_time(last.get('completionTime')), now)} ago",
            )
            if part
        )
        lines.append(f"Last probe:  {outcome}")
        lines.append(f"  message:   {last.get('message') or ''}")
    lines.append(f"Now:         {view.reason}" + (f": {view.message}" if view.message else ""))
    if view.failures:
        lines.append(f"Failures:    {view.failures} probe(s) in a row without a verdict")
    if view.next_probe is not None and not view.suspended:
        lines.append(f"Next probe:  {timestamps.format_time(view.next_probe)}")
    lines.append("Events:")
    recent = list(events)[-5:]
    if not recent:
        lines.append("  <none>")
    for event in recent:
        when = timestamps.parse_time(event.get("lastTimestamp") or event.get("eventTime"))
        count = int(event.get("count") or 1)
        lines.append(
            f"  {age(when, now):>6} ago  {event.get('type')}  {event.get('reason')}"
            + (f" (x{count})" if count > 1 else "")
            + f": {event.get('message')}"
        )
    lines.append(f"Fix:         {suggestion(slot, view)}")
    return "\n".join(lines)
