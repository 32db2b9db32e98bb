"""`kubectl slot check`: the SlotImageCheck it creates, and what it makes of the answer (docs/design.md §2.5).

Pure functions of the check object: the request (validated), whether the check finished, the exit code,
and the three renderings (a table of what would happen to each Slot and what to do, JSON, JUnit XML).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from slot_operator.logic import names, timestamps
from slot_operator.logic.phases import PHASES, Phase

KIND = names.CHECK_KIND
FINAL_PHASES = ("Succeeded", "Failed", "Error")
# Would need a human, the worst first, with the probe's own exit code (the code `check` exits with).
HUMAN_CODES = {
    phase.value: code
    for phase in (Phase.IMAGE_BROKEN, Phase.NEEDS_REAUTH, Phase.NEEDS_INIT)
    if (code := PHASES[phase].exit_code) is not None
}
EXIT_READY, EXIT_NO_ANSWER, EXIT_TIMEOUT = 0, 1, 3
MAX_ID = 2147483647
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def parse_run_as(text: str) -> tuple[int, int]:
    """`--as UID:GID`, each 1..2147483647 (never root); ValueError saying what is wrong."""
    match = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not match:
        raise ValueError(f"expected UID:GID (e.g. 10001:10001), got {text!r}")
    uid, gid = int(match[1]), int(match[2])
    for what, number in (("UID", uid), ("GID", gid)):
        if not 1 <= number <= MAX_ID:
            raise ValueError(f"the {what} must be 1 to {MAX_ID} (never root), got {number}")
    return uid, gid


def request(
    *, image: str, selector: Mapping[str, Any], run_as: tuple[int, int] | None, name: str | None
) -> dict[str, Any]:
    """The SlotImageCheck to create; ValueError (naming the flag) for what the API server would refuse."""
    if not image or len(image) > 512 or re.search(r"\s", image):
        raise ValueError(f"--image: an image reference of 1 to 512 characters without whitespace, got {image!r}")
    metadata: dict[str, Any] = {"generateName": "check-"}
    if name is not None:
        if len(name) > 253 or not _NAME.fullmatch(name):
            raise ValueError(f"--name: {name!r} is not a DNS subdomain (lower case letters, digits, '-', '.')")
        metadata = {"name": name}
    spec: dict[str, Any] = {"image": image}
    if selector:
        spec["selector"] = dict(selector)
    if run_as is not None:
        spec["runAsUser"], spec["runAsGroup"] = run_as
    return {"apiVersion": names.API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def same_question(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether an existing check asks what `wanted` asks (its defaulted ttlAfterFinished aside)."""
    spec = {key: value for key, value in (existing.get("spec") or {}).items() if key != "ttlAfterFinished"}
    return spec == dict(wanted.get("spec") or {})


def _status(check: Mapping[str, Any]) -> Mapping[str, Any]:
    return check.get("status") or {}


def finished(check: Mapping[str, Any]) -> bool:
    return _status(check).get("phase") in FINAL_PHASES


def worst(results: Sequence[Mapping[str, Any]]) -> str | None:
    """The worst phase that would need a human among the results (ImageBroken > NeedsReauth > NeedsInit)."""
    phases = {result.get("phase") for result in results}
    return next((phase for phase in HUMAN_CODES if phase in phases), None)


def exit_code(check: Mapping[str, Any]) -> int:
    """0 when every selected Slot would be Ready, the worst verdict's code when one would need a human,
    1 when no answer will come (phase Error) or the check has not finished."""
    status = _status(check)
    if status.get("phase") == "Succeeded":
        return EXIT_READY
    phase = worst(status.get("results") or ()) if status.get("phase") == "Failed" else None
    return HUMAN_CODES[phase] if phase else EXIT_NO_ANSWER


def _ready_message(check: Mapping[str, Any]) -> str:
    for condition in _status(check).get("conditions") or ():
        if condition.get("type") == "Ready":
            return str(condition.get("message") or "")
    return ""


def advice(result: Mapping[str, Any]) -> str:
    """What to do about one Slot before the candidate rolls."""
    phase = result.get("phase")
    fix = str((result.get("ownership") or {}).get("fix") or "")
    said = str(result.get("message") or "")
    said = f" (the probe said: {said})" if said else ""
    if phase == "Ready":
        return "nothing: the candidate works with this slot"
    if phase in ("NeedsInit", "NeedsReauth") and fix:
        return fix
    if phase == "NeedsInit":
        return f"the candidate finds no credentials: initialise the slot (log the agent in) before rolling{said}"
    if phase == "NeedsReauth":
        return f"the candidate cannot use the credentials: re-authenticate with its CLI, or fix the image{said}"
    if phase == "ImageBroken":
        return f"the candidate cannot run the agent: fix the image, do not roll it{said}"
    if phase == "NoVerdict":
        why = ": ".join(str(part) for part in (result.get("reason"), result.get("message")) if part)
        return f"no verdict after {result.get('attempts') or 0} attempt(s) ({why}): fix that and check again"
    return "no answer yet"


def _headline(check: Mapping[str, Any], *, timed_out: bool, deleted: bool) -> list[str]:
    meta = check.get("metadata") or {}
    status = _status(check)
    lines = [f"{KIND} {meta.get('namespace')}/{meta.get('name')}: {(check.get('spec') or {}).get('image')}"]
    if not status.get("observedGeneration"):
        state = "not yet seen by the operator"
    else:
        message = _ready_message(check)
        state = str(status.get("phase") or "Pending") + (f": {message}" if message else "")
    if deleted:
        state += " (the check was deleted: no answer will come)"
    elif timed_out:
        state += " (--timeout passed before the check finished)"
    return [*lines, state]


def table(check: Mapping[str, Any], *, timed_out: bool = False, deleted: bool = False) -> str:
    """Per Slot: what the candidate would make of it, as whom, whose files, and what to do."""
    lines = _headline(check, timed_out=timed_out, deleted=deleted)
    results = sorted(_status(check).get("results") or (), key=lambda r: str(r.get("slot")))
    if not results:
        return "\n".join(lines)
    rows = [["SLOT", "WOULD BE", "EXIT", "RUN AS", "OWNERS", "WHAT TO DO"]]
    for result in results:
        exit_text = str(result["exitCode"]) if result.get("exitCode") is not None else "-"
        owners = str((result.get("ownership") or {}).get("summary") or "-")
        rows.append([str(result.get("slot")), str(result.get("phase")), exit_text, str(result.get("runAs") or "-"),
                     owners, advice(result)])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines.append("")
    lines += ["   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def as_json(check: Mapping[str, Any]) -> str:
    """The check as the API server returned it (`.status` holds the answer)."""
    return json.dumps(check, indent=2)


def junit(check: Mapping[str, Any], *, timed_out: bool = False, deleted: bool = False) -> str:
    """A JUnit report: one test case per Slot, a failure for anything not Ready with what to do as its message."""
    meta = check.get("metadata") or {}
    status = _status(check)
    suite_name = f"{meta.get('namespace')}/{meta.get('name')}"
    cases: list[tuple[str, Mapping[str, Any] | None, str, str]] = []  # name, result, failure type, message
    for result in sorted(status.get("results") or (), key=lambda r: str(r.get("slot"))):
        phase = str(result.get("phase"))
        cases.append((str(result.get("slot")), result, "" if phase == "Ready" else phase, advice(result)))
    if not cases:  # no Slot to speak for: the check itself is the one case
        state = " ".join(_headline(check, timed_out=timed_out, deleted=deleted)[1:])
        failed = status.get("phase") != "Succeeded"
        cases.append(("(selection)", None, str(status.get("phase") or "Pending") if failed else "", state))
    failures = sum(1 for _, _, failure, _ in cases if failure)
    root = ET.Element("testsuites", name="kubectl slot check", tests=str(len(cases)), failures=str(failures))
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(cases)), failures=str(failures),
                          errors="0", skipped="0")  # fmt: skip
    start = timestamps.parse_time(status.get("startTime"))
    end = timestamps.parse_time(status.get("completionTime"))
    if start is not None:
        suite.set("timestamp", timestamps.format_time(start))
        if end is not None:
            suite.set("time", f"{max((end - start).total_seconds(), 0):.0f}")
    properties = ET.SubElement(suite, "properties")
    for key, value in (("image", (check.get("spec") or {}).get("image")), ("phase", status.get("phase"))):
        ET.SubElement(properties, "property", name=key, value=str(value or ""))
    classname = f"{KIND}.{meta.get('namespace')}.{meta.get('name')}"
    for name, result, failure, message in cases:
        case = ET.SubElement(suite, "testcase", name=name, classname=classname)
        if not failure:
            continue
        detail = []
        if result is not None:
            detail = [f"{key}: {result[key]}" for key in ("exitCode", "reason", "message", "runAs", "jobName")
                      if result.get(key) is not None]  # fmt: skip
            ownership = result.get("ownership") or {}
            if ownership.get("summary"):
                detail.append(f"owners: {ownership['summary']}")
        element = ET.SubElement(case, "failure", type=failure, message=message)
        element.text = "\n".join(detail) or message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
