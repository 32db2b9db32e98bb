"""The ownership migration's side of a Slot's reconcile, decided (docs/design.md §2.4): pure functions.

When a migration may run is ownership.plan_migration's to say; here is what a migration in flight
calls for, and how its ends are told. runtime/migrations.py acts on these decisions.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from slot_operator.logic import ownership, timestamps
from slot_operator.logic.identity import job_owner_uid
from slot_operator.logic.probing import Event

# A migration Job whose pod has not appeared after this long: ask the Job controller's Events why (Pod Security).
POD_GRACE = datetime.timedelta(seconds=2)
RECHECK = datetime.timedelta(seconds=5)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cancel:
    """The request was withdrawn or the Job deleted: stop it (delete `job` if any) and never start it again."""

    job: Mapping[str, Any] | None
    why: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recheck:
    """Intent on record, no Job (the operator stopped in between): start it only if everything still holds."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Wait:
    """It runs: look again at `wake`."""

    wake: datetime.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class AskWhy:
    """Its pod never appeared: the Job controller's FailedCreate Event says why (a Pod Security level)."""

    job: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finish:
    """Its Job ended: record what it did (and stop a Job that would only wait)."""

    job: Mapping[str, Any]
    done: ownership.MigrationDone


Follow = Cancel | Recheck | Wait | AskWhy | Finish


def follow(
    migration: ownership.MigrationRef,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    *,
    request: ownership.MigrationRequest | None,
    now: datetime.datetime,
) -> Follow:
    """What the migration in flight calls for. `job`: the Slot's migration Job of its name, if any."""
    if request is None or request.token != migration.request:
        return Cancel(job=job, why="the request annotation was removed or replaced")
    if job is not None and migration.job_uid and str(job["metadata"]["uid"]) != migration.job_uid:
        job = None  # a later Job of the same name: not the one this migration made
    if job is None:
        if migration.job_uid:
            return Cancel(job=None, why=f"the migration Job {migration.job_name} was deleted")
        return Recheck()
    done = ownership.migration_outcome(job, pods)
    if done is not None:
        return Finish(job=job, done=done)
    age = now - (timestamps.parse_time(job["metadata"].get("creationTimestamp")) or now)
    if pods or age < POD_GRACE:
        return Wait(wake=now + RECHECK)
    return AskWhy(job=job)


def cancelled_message(why: str, *, dry_run: bool) -> str:
    message = f"{why}: the migration was stopped and is not started again"
    if not dry_run:
        message += "; entries it re-owned before it stopped stay re-owned, and a probe runs now"
    return message


def pod_failure_refusal(failure: str) -> ownership.Refusal:
    """The Job controller could not create the migration's pod: Pod Security's refusal, or another."""
    if "PodSecurity" in failure:
        return ownership.pod_security_refusal(failure)
    return ownership.Refusal(
        reason="MigrationFailed", message=f"the Job controller could not create the pod: {failure}"
    )


def rejected_job_refusal(status: int, message: str) -> ownership.Refusal:
    """The API server refused the migration Job."""
    if "PodSecurity" in message:
        return ownership.pod_security_refusal(message)
    return ownership.Refusal(
        reason="MigrationFailed", message=f"the API server refused the migration Job (HTTP {status}): {message}"
    )


def foreign_job_refusal(job_name: str) -> ownership.Refusal:
    return ownership.Refusal(
        reason="MigrationFailed", message=f"a Job named {job_name} exists in the namespace and is not this Slot's"
    )


def changed_audit_refusal() -> ownership.Refusal:
    return ownership.Refusal(
        reason="AuditUnavailable", message="the audit on record changed since the request was accepted"
    )


def finished_event(reason: str, message: str) -> Event:
    kinds = {"Migrated": "OwnershipMigrated", "DryRun": "OwnershipMigrationDryRun"}
    return Event(
        kind="Warning" if reason == "MigrationFailed" else "Normal",
        reason=kinds.get(reason, "OwnershipMigrationFailed"),
        message=message,
    )


def refused_event(refusal: ownership.Refusal) -> Event:
    return Event(kind="Warning", reason="OwnershipMigrationRefused", message=f"{refusal.reason}: {refusal.message}")


def cancelled_event(message: str) -> Event:
    return Event(kind="Warning", reason="OwnershipMigrationCancelled", message=message)


def claim_users(pods: Iterable[Mapping[str, Any]], *, own_jobs: set[str]) -> list[str]:
    """The pods that hold the claim, but this Slot's own (whose controller is one of its Jobs, by uid), by name."""
    return sorted(str((pod.get("metadata") or {}).get("name")) for pod in pods if job_owner_uid(pod) not in own_jobs)
