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


def open_dir(name: str | pathlib.Path, *, dir_fd: int | None = None, listing: bool) -> int:
    """A directory's fd; O_NOFOLLOW refuses a symlink, so nothing below it can lead off the volume.

    O_PATH (no read permission needed) where only lookups below it follow; O_RDONLY to list it.
    """
    flags = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_RDONLY if listing else os.O_PATH)
    return os.open(name, flags, dir_fd=dir_fd)


def same_inode(fd: int, st: os.stat_result) -> bool:
    """The directory opened is the one lstat'ed (not swapped meanwhile)."""
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (st.st_dev, st.st_ino)


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
            fd = open_dir(name, dir_fd=dir_fd, listing=listing)
        except OSError as exc:  # EACCES: cannot be listed as this uid (the uid mismatch itself)
            self.problem(label, exc)
            return None
        if not same_inode(fd, st):
            os.close(fd)
            return None
        return fd

    def claude_tree(self, top: int) -> None:
        """Every directory and credential file under ~/.claude (`top`, closed here), by listing only."""
        stack: list[tuple[int, str]] = [(top, "~/.claude")]
        try:
            while stack:
                fd, label = stack.pop()
                try:
                    self._list(fd, label, stack)
                finally:
                    os.close(fd)
        finally:
            for fd, _ in stack:  # left over when the walk stopped early
                os.close(fd)

    def _list(self, fd: int, label: str, stack: list[tuple[int, str]]) -> None:
        try:
            with os.scandir(fd) as listing:
                children = sorted(listing, key=lambda child: child.name)
        except OSError as exc:
            self.problem(label, exc)
            return
        for child in children:
            if self.visited >= MAX_WALK:
                self.truncated = True
                return
            self.visited += 1
            path = f"{label}/{child.name}"
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as exc:
                self.problem(path, exc)
                continue
            if st.st_dev != self.device:
                continue  # a mount inside the volume: not the slot's files
            if stat.S_ISDIR(st.st_mode):
                self.entries.append(_entry(path, st))
                sub = self.subdirectory(child.name, path, st, dir_fd=fd, listing=True)
                if sub is not None:
                    stack.append((sub, path))
            elif stat.S_ISREG(st.st_mode) and not (label == "~/.claude" and child.name in ownership.CLAUDE_BASELINE):
                self.entries.append(_entry(path, st, credential=True))


def audit(home: pathlib.Path, *, agent: str) -> dict[str, object]:
    """The report of docs/design.md §2.4 for `home` (the slot's mount point)."""
    runs_as = ownership.owner(os.getuid(), os.getgid())
    try:
        home_fd = open_dir(home, listing=False)
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
