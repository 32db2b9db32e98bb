"""Claim directories: a snapshot of everything a probe must never change on a slot volume."""

from __future__ import annotations

import hashlib
import os
import pathlib

Entry = tuple[int, int, int, int, int, str]  # mode, uid, gid, size, mtime_ns, sha256 (files only)


def snapshot(root: pathlib.Path) -> dict[str, Entry]:
    """Every path under `root` (itself included): type and mode, owner, size, mtime and content digest."""
    result: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = pathlib.Path(dirpath) / name
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
            result[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, digest)
    return result
