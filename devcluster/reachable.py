"""Copies of what the cluster's containers run from the checkout, in a directory every uid can reach.

A directory image's container is not chrooted: it runs the image's files at their host paths, as
the pod's uid (10001, 1000, ...). A checkout in a private directory (root's home, or one `adduser`
made: mode 0700) is out of reach for those uids, so `cluster.up` copies the image store and the
package the operator's directory image runs into a fresh directory under /var/tmp (else /tmp),
with the repository's layout, every directory 0755 and every file 0644 or 0755 whatever the
checkout's umask, and the node simulator runs images from there. `down` removes it.

Symbolic links: one that stays within the copied trees is copied as a link (it still resolves);
one into the rest of the checkout is replaced by a copy of its target; one to the host's own files
(an interpreter, say) stays a link, as a container sees the host filesystem anyway.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import stat
import tempfile

# What containers run from the checkout, relative to it: the local image store, and the package the
# operator's directory image runs (devcluster/images/local/slot-operator).
TREES = ("devcluster/images", "operator/slot_operator")
# Sticky, world-writable directories, the first usable one wins; not TMPDIR, which may be private.
PARENTS = (pathlib.Path("/var/tmp"), pathlib.Path("/tmp"))


class Unreachable(RuntimeError):
    """No directory every uid can reach could be made; the message says what was tried."""


def _shared_parent() -> pathlib.Path:
    for parent in PARENTS:
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode) and mode & 0o1003 == 0o1003:
            return parent
    raise Unreachable(
        f"none of {', '.join(map(str, PARENTS))} is a directory every user may enter and write to "
        "(mode 1777): containers could not run the repository's images"
    )


def _inside(path: pathlib.Path, root: pathlib.Path) -> bool:
    return path == root or root in path.parents


@dataclasses.dataclass(frozen=True)
class _Copier:
    """Copies by the rules of the module docstring, with modes every uid can read."""

    source: pathlib.Path
    trees: list[pathlib.Path]
    # Hard-link files whose own mode already lets every uid read (and, for programs, run) them: no bytes copied.
    link: bool

    def copy(self, path: pathlib.Path, target: pathlib.Path) -> None:
        if path.is_symlink():
            link, resolved = os.readlink(path), path.resolve()
            within = any(_inside(resolved, tree) for tree in self.trees) and not os.path.isabs(link)
            if within or not _inside(resolved, self.source):
                target.symlink_to(link)
                return
            path = resolved
        if path.is_dir():
            target.mkdir()
            for entry in sorted(path.iterdir()):
                if entry.name != "__pycache__":
                    self.copy(entry, target / entry.name)
            target.chmod(0o755)
            return
        current = stat.S_IMODE(path.stat().st_mode)
        mode = 0o755 if current & stat.S_IXUSR else 0o644
        if self.link and current & mode == mode:
            try:
                os.link(path, target)
                return
            except OSError:
                pass  # another file system: copied below
        shutil.copyfile(path, target)
        target.chmod(mode)


def copy_trees(source: pathlib.Path, into: pathlib.Path, *, trees: tuple[str, ...], link: bool = False) -> None:
    """Copy `trees` (paths relative to `source`) into the existing directory `into`, at the same relative paths.

    `link`: hard-link the files every uid may already read (for trees nobody writes while the copy is used).
    """
    absolute = [(source / tree).resolve() for tree in trees]
    copier = _Copier(source=source.resolve(), trees=absolute, link=link)
    for relative, tree in zip(trees, absolute, strict=True):
        target = into / relative
        for directory in reversed(target.parents):
            if _inside(directory, into) and not directory.exists():
                directory.mkdir()
                directory.chmod(0o755)
        copier.copy(tree, target)


def stage(repo: pathlib.Path, *, trees: tuple[str, ...] = TREES) -> pathlib.Path:
    """A new directory every uid can reach holding `trees` of `repo` at their relative paths; returns it."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="slot-operator-cluster-", dir=_shared_parent()))
    try:
        root.chmod(0o755)
        copy_trees(repo, root, trees=trees)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root


def remove(root: pathlib.Path) -> None:
    """Remove a directory `stage` made (nothing else: it must be one of ours, under a shared parent)."""
    if root.parent in PARENTS and root.name.startswith("slot-operator-cluster-"):
        shutil.rmtree(root, ignore_errors=True)
