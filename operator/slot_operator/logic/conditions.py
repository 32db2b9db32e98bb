"""`metav1.Condition` lists: set one condition, keeping lastTransitionTime when the status is unchanged."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from slot_operator.logic import timestamps, verdict

READY = "Ready"
STALLED = "Stalled"
RECONCILING = "Reconciling"
PROBE_SUCCEEDED = "ProbeSucceeded"
OWNERSHIP_MATCHES = "OwnershipMatches"
OWNERSHIP_MIGRATED = "OwnershipMigrated"
# The probe's conditions, which every status carries (and GitOps tools read), then the ownership ones.
ORDER = (READY, STALLED, RECONCILING, PROBE_SUCCEEDED)
_RANK = {name: index for index, name in enumerate((*ORDER, OWNERSHIP_MATCHES, OWNERSHIP_MIGRATED))}


def find(conditions: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    *,
    kind: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    """Return a new list with `kind` set; other conditions keep their order and content."""
    previous = find(conditions, kind)
    transition = (
        previous.get("lastTransitionTime")
        if previous and previous.get("status") == status and previous.get("lastTransitionTime")
        else timestamps.format_time(now)
    )
    updated = {
        "type": kind,
        "status": status,
        "reason": str(reason),  # plain str, also for enum members
        "message": verdict.safe_message(message, limit=1024),
        "observedGeneration": generation,
        "lastTransitionTime": transition,
    }
    result = [dict(c) for c in conditions if c.get("type") != kind]
    result.append(updated)
    return sorted(result, key=lambda c: _RANK.get(str(c.get("type")), len(_RANK)))
