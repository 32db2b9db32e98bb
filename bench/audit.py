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
            counts[f"{event.get('verb')} {resource}"] += 1
    return counts


WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list"})


def split(counts: collections.Counter[str]) -> dict[str, dict[str, int]]:
    """Writes (Events apart), Event writes, reads and watches, each as {call: count}."""
    groups: dict[str, dict[str, int]] = {"writes": {}, "event_writes": {}, "reads": {}, "watches": {}}
    for call, count in sorted(counts.items()):
        verb, resource = call.split(" ", 1)
        if verb in WRITE_VERBS:
            groups["event_writes" if resource.startswith("events") else "writes"][call] = count
        elif verb in READ_VERBS:
            groups["reads"][call] = count
        else:
            groups["watches"][call] = count
    return groups
