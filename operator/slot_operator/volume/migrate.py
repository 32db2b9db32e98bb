"""`slot-operator migrate-ownership`: re-own a slot's entries from one uid:gid to another, and nothing else.

Runs in the one-shot migration Job, as root with only CAP_CHOWN and CAP_DAC_OVERRIDE (to get into
directories the old uid made private), on the claim mounted read-write. It walks the whole volume
through directory file descriptors and changes, with lchown, exactly the entries owned by the
old uid *and* gid: it never follows a symlink (a symlink owned by the old owner is re-owned itself,
its target never), never descends into another filesystem, never touches an entry owned by anyone
else, never opens a file. `--dry-run` counts what it would change and changes nothing (the Job then
mounts the claim read-only and has no CAP_CHOWN). The counts are one JSON line in its termination
message; it exits 0 once it has walked the volume, whatever it counted, 1 if it could not start.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
from collections.abc import Sequence

from slot_operator.logic import ownership
from slot_operator.volume import tree
from slot_operator.volume.audit import emit

SAMPLE_LIMIT = 5


@dataclasses.dataclass(kw_only=True)
class Counts:
    changed: int = 0  # owned by the old owner: re-owned (or, in a dry run, would be)
    skipped: int = 0  # owned by anyone else: left alone
    errors: int = 0
    other_filesystems: int = 0  # mount points inside the volume: neither re-owned nor entered
    samples: list[str] = dataclasses.field(default_factory=list)

    def error(self, path: str, exc: OSError) -> None:
        self.errors += 1
        if len(self.samples) < SAMPLE_LIMIT:
            self.samples.append(f"{path}: {exc.strerror or type(exc).__name__}")


def migrate(root: pathlib.Path, *, old: tuple[int, int], new: tuple[int, int], dry_run: bool) -> Counts:
    """Re-own every entry under `root` (itself included) owned by `old` to `new`."""
    counts = Counts()
    root_fd = tree.open_dir(root, listing=True)

    def visit(name: str, path: str, st: os.stat_result, dir_fd: int) -> None:
        if (st.st_uid, st.st_gid) != old:
            counts.skipped += 1
            return
        if not dry_run:
            try:
                os.chown(name, *new, dir_fd=dir_fd, follow_symlinks=False)
            except OSError as exc:
                counts.error(path, exc)
                return
        counts.changed += 1

    def enter(child: tree.Child) -> bool:
        visit(child.name, child.path, child.st, child.parent)
        return True  # below an entry of anyone else too

    def elsewhere(path: str) -> None:
        del path
        counts.other_filesystems += 1

    # The root's own entry, through its fd ("." below it).
    visit(".", "~", os.fstat(root_fd), root_fd)
    tree.walk(root_fd, "~", visit=enter, problem=counts.error, elsewhere=elsewhere)
    return counts


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="slot-operator migrate-ownership", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=pathlib.Path, required=True, help="where the claim is mounted")
    parser.add_argument("--from", dest="old", required=True, help="the old owner, UID:GID")
    parser.add_argument("--to", dest="new", required=True, help="the new owner, UID:GID")
    parser.add_argument("--dry-run", action="store_true", help="count what would change; change nothing")
    parser.add_argument(
        "--termination-log", type=pathlib.Path, default=pathlib.Path("/dev/termination-log"), help="where to report"
    )
    args = parser.parse_args(list(argv))
    try:
        old, new = ownership.parse_owner(args.old), ownership.parse_owner(args.new)
    except ValueError as exc:
        parser.error(str(exc))
    if 0 in (*old, *new):
        # Root's files are never re-owned, and nothing is handed to root, whoever asks (docs/security.md).
        parser.error(f"--from {args.old} --to {args.new}: uid 0 and gid 0 are never moved, from or to")
    report: dict[str, object] = {
        "v": ownership.REPORT_VERSION,
        "from": ownership.owner(*old),
        "to": ownership.owner(*new),
        "dryRun": args.dry_run,
    }
    code = 0
    try:
        counts = migrate(args.root, old=old, new=new, dry_run=args.dry_run)
    except OSError as exc:
        report["error"] = f"{args.root}: {exc.strerror or exc}"
        code = 1
    else:
        report.update(
            changed=counts.changed,
            skipped=counts.skipped,
            errors=counts.errors,
            otherFilesystems=counts.other_filesystems,
            samples=counts.samples,
        )
    emit(report, args.termination_log, command="migrate-ownership")
    return code
