"""`slot-operator audit`: who owns a slot's home, agent directory and credential files, from lstat alone.

Runs as the probe's init container, as the probe's uid/gid, with the claim mounted read-only at
HOME. It lstat()s the home root, the agent's directory (`~/.codex`, `~/.claude`) and its
credential files (codex: `~/.codex/auth.json`; claude: the regular files under `~/.claude` other
than the image's baseline files, found by listing directories). It never opens a file (a FIFO or
a file of mode 0 cannot block or fail it), never follows a symlink, never descends into another
filesystem, and reports what it saw as one JSON line in its termination message, within the
kubelet's 4 KiB. It always exits 0: the agent's own smoke test runs after it whatever it found.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import stat
import sys
from collections.abc import Sequence

from slot_operator.logic import ownership
from slot_operator.volume import tree

# Entries lstat'ed under ~/.claude before the walk stops (a runaway tree must not stall the probe).
MAX_WALK = 5000
PROBLEM_LIMIT = 5


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    path: str  # relative to HOME, spelled ~/...
    kind: str  # d, f, l (symlink) or o (anything else)
    uid: int
    gid: int
    mode: int
    mtime: int
    credential: bool = False

    def row(self) -> list[object]:
        return [self.path, self.kind, self.uid, self.gid, f"{self.mode:04o}", self.mtime, int(self.credential)]


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISLNK(mode):
        return "l"
    return "o"


def _entry(path: str, st: os.stat_result, *, credential: bool = False) -> Entry:
    return Entry(
        path=path,
        kind=_kind(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mode=stat.S_IMODE(st.st_mode),
        mtime=int(st.st_mtime),
        credential=credential,
    )


class _Walk:
    def __init__(self, device: int) -> None:
        self.device = device
        self.entries: list[Entry] = []
        self.problems: list[str] = []
        self.visited = 0
        self.truncated = False

    def problem(self, path: str, exc: OSError) -> None:
        if len(self.problems) < PROBLEM_LIMIT:
            self.problems.append(f"{path}: {exc.strerror or type(exc).__name__}")

    def lstat(self, name: str, label: str, *, dir_fd: int, credential: bool = False) -> os.stat_result | None:
        """lstat `name` below `dir_fd` and record it; None when it does not exist or cannot be reached."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:  # EACCES: the directory cannot be searched as this uid
            self.problem(label, exc)
            return None
        self.entries.append(_entry(label, st, credential=credential and stat.S_ISREG(st.st_mode)))
        return st

    def subdirectory(self, name: str, label: str, st: os.stat_result, *, dir_fd: int, listing: bool) -> int | None:
        """The fd of a directory just lstat'ed, if it is one on this volume and can be opened."""
        if not stat.S_ISDIR(st.st_mode) or st.st_dev != self.device:
            return None
        try:
            fd = tree.open_dir(name, dir_fd=dir_fd, listing=listing)
        except OSError as exc:  # EACCES: cannot be listed as this uid (the uid mismatch itself)
            self.problem(label, exc)
            return None
        if not tree.same_inode(fd, st):
            os.close(fd)
            return None
        return fd

    def claude_tree(self, top: int) -> None:
        """Every directory and credential file under ~/.claude (`top`, closed here), by listing only."""
        tree.walk(top, "~/.claude", visit=self._claude_entry, problem=self.problem)

    def _claude_entry(self, child: tree.Child) -> bool:
        if self.visited >= MAX_WALK:
            self.truncated = True
            raise tree.Stop
        self.visited += 1
        if stat.S_ISDIR(child.st.st_mode):
            self.entries.append(_entry(child.path, child.st))
            return True
        baseline = child.path == f"~/.claude/{child.name}" and child.name in ownership.CLAUDE_BASELINE
        if stat.S_ISREG(child.st.st_mode) and not baseline:
            self.entries.append(_entry(child.path, child.st, credential=True))
        return False


def audit(home: pathlib.Path, *, agent: str) -> dict[str, object]:
    """The report of docs/design.md §2.4 for `home` (the slot's mount point)."""
    runs_as = ownership.owner(os.getuid(), os.getgid())
    try:
        home_fd = tree.open_dir(home, listing=False)
    except OSError as exc:
        return {"v": ownership.REPORT_VERSION, "agent": agent, "runAs": runs_as, "error": f"~: {exc.strerror}"}
    try:
        root = os.fstat(home_fd)
        walk = _Walk(root.st_dev)
        walk.entries.append(_entry("~", root))
        name = ownership.AGENT_DIRECTORIES[agent]
        label = f"~/{name}"
        top = walk.lstat(name, label, dir_fd=home_fd)
        fd = None if top is None else walk.subdirectory(name, label, top, dir_fd=home_fd, listing=agent == "claude")
        if fd is not None and agent == "codex":
            try:
                walk.lstat("auth.json", f"{label}/auth.json", dir_fd=fd, credential=True)
            finally:
                os.close(fd)
        elif fd is not None:
            walk.claude_tree(fd)
    finally:
        os.close(home_fd)
    return ownership.build_report(
        agent=agent,
        runs_as=runs_as,
        entries=[entry.row() for entry in walk.entries],
        problems=walk.problems,
        truncated=walk.truncated,
    )


def main(argv: Sequence[str]) -> int:
    """Always 0: a failure to audit is reported in the report, never by failing the probe pod."""
    parser = argparse.ArgumentParser(prog="slot-operator audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=pathlib.Path, required=True, help="the slot's mount point (HOME of the probe)")
    parser.add_argument("--agent", choices=sorted(ownership.AGENT_DIRECTORIES), required=True)
    parser.add_argument(
        "--termination-log", type=pathlib.Path, default=pathlib.Path("/dev/termination-log"), help="where to report"
    )
    args = parser.parse_args(list(argv))
    try:
        report = audit(args.home, agent=args.agent)
    except Exception as exc:  # the probe must run whatever happened here
        report = {"v": ownership.REPORT_VERSION, "agent": args.agent, "error": f"{type(exc).__name__}: {exc}"}
    emit(report, args.termination_log, command="audit")
    return 0


def emit(report: dict[str, object], termination_log: pathlib.Path, *, command: str) -> None:
    """The report as one JSON line: the termination message the operator reads, and the container log."""
    line = json.dumps(report, separators=(",", ":"))
    print(line, flush=True)
    try:
        termination_log.write_text(line)
    except OSError as exc:
        print(f"{command}: cannot write {termination_log}: {exc.strerror}", file=sys.stderr)
