"""Ownership of a slot's files: the audit report, what it means, and when a migration may run.

The audit (volume/audit.py) runs in every probe pod and reports, from lstat alone, who owns the
home root, the agent's directory and its credential files. Here it is read and judged against the
uid/gid the image runs as (the Slot's runAsUser/runAsGroup), turned into status, and used to decide
whether an ownership migration a person asked for may run (docs/design.md §2.4).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from slot_operator.logic import names, podstatus, timestamps

REPORT_VERSION = 1
AGENT_DIRECTORIES = {"codex": ".codex", "claude": ".claude"}
# Files the claude image ships in ~/.claude that are not credentials (docs/design.md §1).
CLAUDE_BASELINE = frozenset({"CLAUDE.md", "config.toml", "settings.json"})
# The kubelet keeps 4096 bytes of a termination message; the report stays below with room to spare.
REPORT_LIMIT = 3800
PATH_LIMIT = 160  # characters of one path in a report or in status
STATUS_PATHS = 10  # differing paths listed in status.ownership.paths
# Request tokens are kept in status whole up to this length, longer ones as a digest: never cut, so two long
# tokens that share a beginning stay two requests.
TOKEN_LIMIT = 128

Owner = tuple[int, int]
# The old owner the ownership migration moves when the operator is not told otherwise: the agent images' uid/gid
# before the pin to 10001 (docs/design.md §1).
DEFAULT_MIGRATION_FROM: tuple[Owner, ...] = ((1000, 1000),)


def stored_token(token: str) -> str:
    """A request token as status keeps it: whole, or `sha256:<hex>` of it when longer than TOKEN_LIMIT."""
    return token if len(token) <= TOKEN_LIMIT else "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def owner(uid: int, gid: int) -> str:
    return f"{uid}:{gid}"


def parse_owner(text: str) -> Owner:
    """`UID:GID` (numbers) -> (uid, gid); ValueError naming the text otherwise."""
    uid, sep, gid = text.partition(":")
    if not (sep and uid.isdigit() and gid.isdigit()):
        raise ValueError(f"expected UID:GID with numeric ids, got {text!r}")
    return int(uid), int(gid)


def _clip(path: str) -> str:
    return path if len(path) <= PATH_LIMIT else path[: PATH_LIMIT - 3] + "..."


# The audit report: built by the audit, read by the operator.


def build_report(
    *, agent: str, runs_as: str, entries: Sequence[list[Any]], problems: Sequence[str], truncated: bool
) -> dict[str, Any]:
    """The report, within REPORT_LIMIT bytes as JSON.

    Totals (owners, credential count and newest mtime) cover every entry; the list of entries
    keeps the home root, the agent directory and entries of other owners first, and says how
    many it left out.
    """
    owners: dict[str, int] = {}
    newest: int | None = None
    files = 0
    for row in entries:
        key = owner(int(row[2]), int(row[3]))
        owners[key] = owners.get(key, 0) + 1
        if row[6]:
            files += 1
            newest = int(row[5]) if newest is None else max(newest, int(row[5]))

    def rank(row: list[Any]) -> tuple[int, str]:
        if str(row[0]).count("/") <= 1:  # ~ and the agent directory
            return 0, str(row[0])
        return (1 if owner(int(row[2]), int(row[3])) != runs_as else 2), str(row[0])

    ranked = [[_clip(str(row[0])), *row[1:]] for row in sorted(entries, key=rank)]
    report: dict[str, Any] = {
        "v": REPORT_VERSION,
        "agent": agent,
        "runAs": runs_as,
        "owners": owners,
        "credentials": {"files": files, "newest": newest},
        "problems": [_clip(problem) for problem in problems],
        "truncated": truncated,
        "entries": ranked,
        "omitted": 0,
    }
    while len(json.dumps(report, separators=(",", ":"))) > REPORT_LIMIT and report["entries"]:
        report["entries"] = report["entries"][:-1]
        report["omitted"] += 1
    return report


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditEntry:
    path: str
    kind: str
    uid: int
    gid: int
    mode: str
    mtime: int
    credential: bool

    @property
    def owner(self) -> str:
        return owner(self.uid, self.gid)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Audit:
    """What the audit saw in one probe pod."""

    agent: str
    owners: Mapping[str, int]  # uid:gid -> entries, over every entry audited
    entries: tuple[AuditEntry, ...]  # possibly fewer than audited (the report is bounded)
    omitted: int
    credential_files: int
    credentials_modified: datetime.datetime | None
    problems: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditUnavailable:
    """The audit did not run, or its report cannot be used: OwnershipMatches is Unknown."""

    reason: str  # AuditDisabled, AuditFailed
    message: str


AuditResult = Audit | AuditUnavailable


def _last_json_line(text: str | None) -> str | None:
    """The report in a termination message: its last line that opens a JSON object."""
    return next((line for line in reversed((text or "").splitlines()) if line.strip().startswith("{")), None)


def parse_report(text: str | None) -> AuditResult:
    """Read the audit's termination message (the last JSON line); never raises: bad input is AuditFailed."""
    line = _last_json_line(text)
    if line is None:
        return AuditUnavailable(reason="AuditFailed", message="the ownership audit left no report")
    try:
        data = json.loads(line)
        if not isinstance(data, dict) or data.get("v") != REPORT_VERSION:
            raise ValueError(f"unknown report version {data.get('v') if isinstance(data, dict) else None!r}")
        if data.get("error"):
            return AuditUnavailable(reason="AuditFailed", message=f"the ownership audit failed: {data['error']}")
        entries = tuple(
            AuditEntry(
                path=str(row[0]),
                kind=str(row[1]),
                uid=int(row[2]),
                gid=int(row[3]),
                mode=str(row[4]),
                mtime=int(row[5]),
                credential=bool(row[6]),
            )
            for row in data.get("entries") or ()
        )
        owners = {str(key): int(count) for key, count in (data.get("owners") or {}).items()}
        credentials = data.get("credentials") or {}
        newest = credentials.get("newest")
        return Audit(
            agent=str(data.get("agent") or ""),
            owners=owners,
            entries=entries,
            omitted=int(data.get("omitted") or 0),
            credential_files=int(credentials.get("files") or 0),
            credentials_modified=(
                datetime.datetime.fromtimestamp(int(newest), datetime.UTC) if newest is not None else None
            ),
            problems=tuple(str(problem) for problem in data.get("problems") or ()),
        )
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        return AuditUnavailable(reason="AuditFailed", message=f"the ownership audit's report cannot be read: {exc}")


# What the audit means for a Slot.


@dataclasses.dataclass(frozen=True, kw_only=True)
class Assessment:
    expected: str  # uid:gid the image runs as (runAsUser:runAsGroup)
    foreign: tuple[str, ...]  # other owners found, most entries first
    differing: int  # audited entries owned by someone else
    paths: tuple[str, ...]  # some of them, the agent directory first
    agent_directory: str  # ~/.codex or ~/.claude

    @property
    def matches(self) -> bool:
        return not self.foreign

    def headline(self) -> str:
        """'~/.codex owned by 1000:1000, the image runs as 10001:10001' (the first differing path)."""
        first = self.paths[0] if self.paths else "the slot"
        by = " and ".join(self.foreign)
        more = f" (and {self.differing - 1} more)" if self.differing > 1 else ""
        return f"{first} owned by {by}{more}, the image runs as {self.expected}"


def assess(audit: Audit, *, expected: Owner) -> Assessment:
    want = owner(*expected)
    foreign = sorted((key for key in audit.owners if key != want), key=lambda key: (-audit.owners[key], key))
    directory = f"~/{AGENT_DIRECTORIES.get(audit.agent, '.' + audit.agent)}"
    differing = [entry.path for entry in audit.entries if entry.owner != want]
    # The agent directory first: that is where the credentials live, and the path a person recognises.
    differing.sort(key=lambda path: (path != directory, path.count("/"), path))
    return Assessment(
        expected=want,
        foreign=tuple(foreign),
        differing=sum(audit.owners[key] for key in foreign),
        paths=tuple(differing[:STATUS_PATHS]),
        agent_directory=directory,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MigrationPolicy:
    """The operator's side of the two keys: whether it migrates at all, and which old owners it may move."""

    allowed: bool  # --allow-ownership-migration
    old_owners: tuple[Owner, ...] = DEFAULT_MIGRATION_FROM  # --ownership-migration-from


def owner_refusal(old: str, policy: MigrationPolicy) -> Refusal | None:
    """Why entries of `old` (uid:gid) are never moved, if they are not: root's, or not on the allow-list."""
    uid, gid = parse_owner(old)
    if uid == 0 or gid == 0:
        return Refusal(
            reason="OwnerNotAllowed",
            message=f"the audit found entries owned by {old}: files of uid 0 or gid 0 are never re-owned; "
            "fix the owners by hand",
        )
    if (uid, gid) not in policy.old_owners:
        listed = ", ".join(owner(*pair) for pair in policy.old_owners) or "nothing"
        return Refusal(
            reason="OwnerNotAllowed",
            message=f"the audit found entries owned by {old}, which the operator may not move "
            f"(--ownership-migration-from allows {listed}): fix the owners by hand, or add {old} to that flag",
        )
    return None


def approval_token(*, slot_uid: str, claim_uid: str, old: str, expected: str, audited_at: str, audit_job: str) -> str:
    """The token that approves migrating what one audit found (docs/design.md §2.4).

    Bound to that audit: the Slot (its uid), the claim (its uid), the old owner it reported, the owner the
    image runs as, when it was recorded and the probe Job that ran it (two audits can be recorded in the
    same second: each probe has its own Job). A recreated Slot or claim, or a later audit, makes another
    token; the token is spent once answered. So an approval is never replayed: not from Git onto a
    recreated Slot, not by a revert of the annotation.
    """
    seed = "\n".join(("ownership-migration", slot_uid, claim_uid, old, expected, audited_at, audit_job))
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def approve_command(slot: str, approval: str) -> str:
    return f"kubectl annotate slot/{slot} --overwrite {names.MIGRATION_REQUEST_ANNOTATION}={approval}"


def explain(assessment: Assessment, *, slot: str, policy: MigrationPolicy, approval: str | None) -> str:
    """The real cause of a NeedsInit/NeedsReauth verdict when ownership differs, and the fix."""
    refused = owner_refusal(assessment.foreign[0], policy) if len(assessment.foreign) == 1 else None
    if len(assessment.foreign) > 1:
        fix = "the ownership migration moves one owner only: fix the owners by hand"
    elif refused is not None:
        fix = f"the ownership migration may not move {assessment.foreign[0]}: fix the owners by hand"
    elif policy.allowed and approval:
        fix = f"approve the ownership migration ({approve_command(slot, approval)})"
    else:
        fix = (
            f"approve the ownership migration (the operator needs --allow-ownership-migration), "
            f"or chown the volume to {assessment.expected} by hand"
        )
    return f"{assessment.headline()}: {fix}"


def ownership_status(
    assessment: Assessment,
    *,
    audited_at: datetime.datetime,
    job: str | None,
    claim_uid: str | None,
    approval: str | None,
) -> dict[str, Any]:
    """status.ownership: what the audit found, for people and for the migration's decision."""
    foreign = ",".join(assessment.foreign)
    summary = assessment.expected if assessment.matches else f"{foreign} (image {assessment.expected})"
    data: dict[str, Any] = {
        "expected": assessment.expected,
        "found": list(assessment.foreign),
        "differing": assessment.differing,
        "paths": list(assessment.paths),
        "summary": summary,
        "auditedAt": timestamps.format_time(audited_at),
    }
    if job:
        data["jobName"] = job
    if claim_uid:
        data["claimUID"] = claim_uid
    if approval:
        data["approval"] = approval
    return data


def approval_for(recorded: Mapping[str, Any], *, slot_uid: str, policy: MigrationPolicy) -> str | None:
    """The approval token of the audit in status.ownership: only where a migration could run (one owner it may move)."""
    found = [str(key) for key in recorded.get("found") or ()]
    claim_uid = recorded.get("claimUID")
    if len(found) != 1 or not claim_uid or owner_refusal(found[0], policy) is not None:
        return None
    return approval_token(
        slot_uid=slot_uid,
        claim_uid=str(claim_uid),
        old=found[0],
        expected=str(recorded.get("expected") or ""),
        audited_at=str(recorded.get("auditedAt") or ""),
        audit_job=str(recorded.get("jobName") or ""),
    )


def unavailable_status(*, expected: Owner) -> dict[str, Any]:
    """status.ownership when the audit could not tell: nothing found, so nothing to migrate from."""
    return {"expected": owner(*expected), "summary": "unknown"}


def credentials_status(audit: Audit) -> dict[str, Any]:
    data: dict[str, Any] = {"files": audit.credential_files}
    if audit.credentials_modified is not None:
        data["lastModified"] = timestamps.format_time(audit.credentials_modified)
    return data


# The migration: whether it may run, and what its Job reported.


@dataclasses.dataclass(frozen=True, kw_only=True)
class MigrationRequest:
    token: str
    dry_run: bool


def migration_request(annotations: Mapping[str, str] | None) -> MigrationRequest | None:
    """The request on the Slot; its token as status keeps it (stored_token)."""
    token = (annotations or {}).get(names.MIGRATION_REQUEST_ANNOTATION)
    if not isinstance(token, str) or not token.strip():
        return None
    dry_run = str((annotations or {}).get(names.MIGRATION_DRY_RUN_ANNOTATION) or "").strip().lower() in (
        "true",
        "1",
        "yes",
    )
    return MigrationRequest(token=stored_token(token.strip()), dry_run=dry_run)


def answered(status: Mapping[str, Any], request: MigrationRequest) -> bool:
    """Whether status has answered this request already: its token, and whether it was a dry run (a dry run and
    then the real run may carry the same approval)."""
    last = status.get("lastOwnershipMigration") or {}
    return request.token == status.get("lastHandledOwnershipMigrationRequest") and request.dry_run == bool(
        last.get("dryRun")
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MigrationPlan:
    old: Owner
    new: Owner


@dataclasses.dataclass(frozen=True, kw_only=True)
class Refusal:
    # MigrationDisabled, AuditUnavailable, NothingToMigrate, SeveralOwners, OwnerNotAllowed, NotApproved, ClaimInUse,
    # PodSecurityRejected, MigrationFailed
    reason: str
    message: str


def plan_migration(
    status: Mapping[str, Any],
    *,
    expected: Owner,
    policy: MigrationPolicy,
    token: str | None,
    claim_uid: str | None,
    users: Sequence[str],
) -> MigrationPlan | Refusal:
    """May the migration run now? From the last audit on record, the request's token, the claim and its users.

    `token` None: the request was approved when it was accepted (its intent is on record, its approval
    spent) and everything else is checked again. `claim_uid` is the uid of the claim the Slot names now
    (None: it does not exist); `users` the pods other than the Slot's own that mount it.
    """
    if not policy.allowed:
        return Refusal(
            reason="MigrationDisabled",
            message="the operator runs without --allow-ownership-migration (chart value ownershipMigration.enabled): "
            "nothing was changed",
        )
    recorded = status.get("ownership") or {}
    want = owner(*expected)
    unusable = _unusable_audit(recorded, want=want, claim_uid=claim_uid)
    if unusable is not None:
        return unusable
    found = [str(key) for key in recorded.get("found") or ()]
    if not found:
        return Refusal(reason="NothingToMigrate", message=f"the audited entries are already owned by {want}")
    if len(found) > 1:
        return Refusal(
            reason="SeveralOwners",
            message=f"the audit found entries owned by {' and '.join(found)}; the migration moves one owner only: "
            f"fix the owners by hand",
        )
    refused = owner_refusal(found[0], policy)
    if refused is not None:
        return refused
    approval = recorded.get("approval")
    if token is not None and (not approval or token != approval):
        return Refusal(
            reason="NotApproved",
            message=f"the request {token!r} does not approve the audit on record"
            + (
                f" (entries of {found[0]} on claim {recorded.get('claimUID')}): approve exactly that with "
                f"{names.MIGRATION_REQUEST_ANNOTATION}={approval}"
                if approval
                else ": its approval was answered already; request a probe, then approve its audit"
            ),
        )
    if users:
        return Refusal(
            reason="ClaimInUse",
            message=f"pod {users[0]} mounts the claim"
            + (f" (and {len(users) - 1} more)" if len(users) > 1 else "")
            + ": stop every pod that uses it, request a probe, then approve its audit",
        )
    return MigrationPlan(old=parse_owner(found[0]), new=expected)


def _unusable_audit(recorded: Mapping[str, Any], *, want: str, claim_uid: str | None) -> Refusal | None:
    """Why the audit on record is no basis for a migration now: none, another uid's, another claim's."""
    again = "request a probe, then the migration again"
    if "found" not in recorded:
        return Refusal(reason="AuditUnavailable", message=f"no ownership audit on record: {again}")
    if recorded.get("expected") != want:
        return Refusal(
            reason="AuditUnavailable",
            message=f"the last audit judged ownership against {recorded.get('expected')}, the Slot now runs as {want}: "
            + again,
        )
    if not recorded.get("claimUID") or recorded.get("claimUID") != claim_uid:
        return Refusal(
            reason="AuditUnavailable",
            message=f"the audit on record was of another claim than the one the Slot names now: {again}",
        )
    return None


def pod_security_refusal(message: str) -> Refusal:
    """The Job controller could not create the migration pod because of the namespace's Pod Security level."""
    return Refusal(
        reason="PodSecurityRejected",
        message=f"the namespace's Pod Security level rejects the migration pod, which needs the level baseline "
        f"(it runs as root with CAP_CHOWN and CAP_DAC_OVERRIDE): {message}",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MigrationReport:
    changed: int
    skipped: int
    errors: int
    other_filesystems: int
    samples: tuple[str, ...]


def parse_migration_report(text: str | None) -> MigrationReport | str:
    """The migration's counts, or why there are none (its error, or an unreadable message)."""
    line = _last_json_line(text)
    if line is not None:
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            if data.get("error"):
                return str(data["error"])
            return MigrationReport(
                changed=int(data["changed"]),
                skipped=int(data["skipped"]),
                errors=int(data["errors"]),
                other_filesystems=int(data.get("otherFilesystems") or 0),
                samples=tuple(str(sample) for sample in data.get("samples") or ()),
            )
        except (ValueError, TypeError, KeyError) as exc:
            return f"unreadable report: {exc}"
    return (text or "").strip()[-300:] or "no report"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MigrationDone:
    """The migration Job ended: its report, or why there is none (`failure`)."""

    report: MigrationReport | None
    failure: str | None
    finished: datetime.datetime | None
    stop_job: bool = False


def migration_outcome(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> MigrationDone | None:
    """What the migration Job has shown so far; None while it runs."""
    for pod in podstatus.newest(pods):
        state = podstatus.container_state(pod, names.MIGRATE_CONTAINER)
        terminated = state.get("terminated")
        if terminated:
            finished = timestamps.parse_time(terminated.get("finishedAt"))
            parsed = parse_migration_report(terminated.get("message"))
            if terminated.get("exitCode") == 0 and isinstance(parsed, MigrationReport):
                return MigrationDone(report=parsed, failure=None, finished=finished)
            failure = parsed if isinstance(parsed, str) else "the migration exited without finishing its walk"
            return MigrationDone(
                report=None, failure=f"exit code {terminated.get('exitCode')}: {failure}", finished=finished
            )
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in podstatus.IMAGE_PULL_REASONS:
            return MigrationDone(
                report=None,
                failure=f"{waiting['reason']}: {waiting.get('message') or 'the operator image cannot be pulled'}",
                finished=None,
                stop_job=True,
            )
    failed = podstatus.true_condition(job, "Failed")
    if failed is None:
        return None
    detail = f"{failed.get('reason')}: {failed.get('message') or ''}".strip(": ")
    return MigrationDone(
        report=None,
        failure=f"the migration Job failed: {detail}",
        finished=timestamps.parse_time(failed.get("lastTransitionTime")),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MigrationRef:
    """The migration in flight, as recorded in status.currentOwnershipMigration before its Job is created."""

    job_name: str
    request: str
    dry_run: bool
    old: Owner
    new: Owner
    start_time: datetime.datetime
    job_uid: str | None = None  # recorded once the Job exists: a Job missing after that was deleted (cancelled)

    def to_status(self) -> dict[str, Any]:
        data = {
            "jobName": self.job_name,
            "request": self.request,
            "dryRun": self.dry_run,
            "from": owner(*self.old),
            "to": owner(*self.new),
            "startTime": timestamps.format_time(self.start_time),
        }
        if self.job_uid:
            data["jobUID"] = self.job_uid
        return data

    @classmethod
    def from_status(cls, data: Mapping[str, Any] | None) -> MigrationRef | None:
        if not data or not data.get("jobName"):
            return None
        try:
            old, new = parse_owner(str(data.get("from"))), parse_owner(str(data.get("to")))
        except ValueError:
            return None
        return cls(
            job_name=str(data["jobName"]),
            request=str(data.get("request") or ""),
            dry_run=bool(data.get("dryRun")),
            old=old,
            new=new,
            start_time=timestamps.parse_time(data.get("startTime")) or datetime.datetime.fromtimestamp(0, datetime.UTC),
            job_uid=str(data["jobUID"]) if data.get("jobUID") else None,
        )


def migration_summary(ref: MigrationRef, report: MigrationReport) -> str:
    """One line for the condition and the Event: what changed (or would), what was left alone."""
    verb = "would re-own" if ref.dry_run else "re-owned"
    text = (
        f"{verb} {report.changed} entries from {owner(*ref.old)} to {owner(*ref.new)}; "
        f"left {report.skipped} of other owners alone"
    )
    if report.other_filesystems:
        text += f", did not enter {report.other_filesystems} other filesystem(s)"
    if report.errors:
        text += f"; {report.errors} error(s): {'; '.join(report.samples)}"
    return text + ("; dry run: nothing was changed" if ref.dry_run else "")
