"""The one walk of a slot volume, for the audit and the migration: through directory file descriptors.

Every open is relative to its parent's fd and O_NOFOLLOW, so a symlink is never followed and nothing
leads off the volume; an entry on another filesystem (a mount inside the volume) is never entered; a
directory is entered only if the one opened is the one lstat'ed (not swapped meanwhile). Whoever walks
decides, entry by entry, what it records and whether to enter a directory.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import stat
from collections.abc import Callable, Iterator


class Stop(Exception):
    """Raised by a visit to end the walk at once (the audit's bound on a runaway tree)."""


@dataclasses.dataclass(frozen=True)
class Child:
    parent: int  # the fd of the directory it is in, open while it is visited
    name: str
    path: str  # spelled ~/..., for reports
    st: os.stat_result  # lstat


Visit = Callable[[Child], bool]  # True: enter it, if it is a directory
Problem = Callable[[str, OSError], None]  # a path that could not be listed, lstat'ed or entered, and why


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


def _ignore(path: str) -> None:
    del path


def walk(top: int, label: str, *, visit: Visit, problem: Problem, elsewhere: Callable[[str], None] = _ignore) -> None:
    """Visit every entry below `top` (a listable directory fd, closed here), in name order, depth first.

    `elsewhere(path)` is told of each entry on another filesystem, which is neither visited nor entered.
    """
    device = os.fstat(top).st_dev
    stack: list[tuple[int, str]] = [(top, label)]
    try:
        while stack:
            fd, where = stack.pop()
            try:
                for child in _children(fd, where, problem):
                    if child.st.st_dev != device:
                        elsewhere(child.path)
                    elif visit(child) and stat.S_ISDIR(child.st.st_mode):
                        sub = _enter(child, problem)
                        if sub is not None:
                            stack.append((sub, child.path))
            finally:
                os.close(fd)
    except Stop:
        pass
    finally:
        for fd, _ in stack:  # left over when the walk stopped early
            os.close(fd)


def _children(fd: int, where: str, problem: Problem) -> Iterator[Child]:
    """Each entry of the directory, lstat'ed as it comes (a walk that stops early lstats no more)."""
    try:
        with os.scandir(fd) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as exc:
        problem(where, exc)
        return
    for entry in entries:
        path = f"{where}/{entry.name}"
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            problem(path, exc)
            continue
        yield Child(fd, entry.name, path, st)


def _enter(child: Child, problem: Problem) -> int | None:
    try:
        fd = open_dir(child.name, dir_fd=child.parent, listing=True)
    except OSError as exc:  # EACCES: cannot be listed as this uid (the uid mismatch itself)
        problem(child.path, exc)
        return None
    if not same_inode(fd, child.st):
        os.close(fd)
        problem(child.path, OSError(0, "changed while walking"))
        return None
    return fd
