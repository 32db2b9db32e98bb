"""API calls by identity, verb and resource, from the API server's audit log (JSON lines, Metadata level)."""

from __future__ import annotations

import collections
import json
import pathlib


def offset(log: pathlib.Path) -> int:
    return log.stat().st_size if log.exists() else 0


def calls(log: pathlib.Path, *, since: int, user: str) -> collections.Counter[str]:
    """`verb resource[/subresource]` → count of completed requests made as `user` after byte `since`."""
    counts: collections.Counter[str] = collections.Counter()
    if not log.exists():
        return counts
    with log.open("rb") as handle:
        handle.seek(since)
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line being written
            if event.get("stage") != "ResponseComplete" or (event.get("user") or {}).get("username") != user:
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource") or event.get("requestURI", "?")
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            if resource == "jobs" and CHECK_JOB in str(ref.get("name") or ""):
                resource = CHECK_JOBS
            counts[f"{event.get('verb')} {resource}"] += 1
    return counts


# A SlotImageCheck's probe Jobs are named `<slot>-check-<hash>` (logic/jobs.py job_name): their calls are the
# check's, counted apart from the Slots' own.
CHECK_JOB = "-check-"
CHECK_JOBS = "jobs(image-check)"
# A check's selection reads the namespace's Slots once (runtime/checks.py); the operator's Slot watch lists
# them only when it starts (before the calls are counted) or after its watch expired (410, not in a bench run).
CHECK_SELECTION = "list slots"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list"})


def split(counts: collections.Counter[str]) -> dict[str, dict[str, int]]:
    """Writes (Events and a SlotImageCheck's apart), Event writes, a check's writes and reads, reads, watches."""
    groups: dict[str, dict[str, int]] = {
        "writes": {},
        "event_writes": {},
        "check_writes": {},
        "check_reads": {},
        "reads": {},
        "watches": {},
    }
    for call, count in sorted(counts.items()):
        verb, resource = call.split(" ", 1)
        if verb in WRITE_VERBS:
            groups[_write_group(resource)][call] = count
        elif call == CHECK_SELECTION:
            groups["check_reads"][call] = count
        elif verb in READ_VERBS:
            groups["reads"][call] = count
        else:
            groups["watches"][call] = count
    return groups


def _write_group(resource: str) -> str:
    if resource.startswith("events"):
        return "event_writes"
    if resource.startswith("slotimagechecks") or resource == CHECK_JOBS:
        return "check_writes"
    return "writes"
