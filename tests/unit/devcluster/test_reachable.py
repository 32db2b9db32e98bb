"""devcluster/reachable.py: the copy of the image store a container running as another uid can reach,
made from a checkout that uid cannot enter."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
from collections.abc import Iterator

import pytest

from devcluster import reachable

SETPRIV = shutil.which("setpriv")
OTHER_UID = 10001


@pytest.fixture
def checkout(tmp_path: pathlib.Path) -> pathlib.Path:
    """A private checkout (0700, files of a 077 umask) with an image tree, a package and links of each kind."""
    repo = tmp_path / "private" / "repo"
    image = repo / "images" / "local" / "thing" / "rootfs"
    (image / "bin").mkdir(parents=True)
    (repo / "package").mkdir()
    (repo / "package" / "__pycache__").mkdir()
    (repo / "package" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (repo / "package" / "mod.py").write_text("X = 1\n")
    (repo / "elsewhere").mkdir()
    (repo / "elsewhere" / "data.txt").write_text("from the rest of the checkout\n")
    (image / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (image / "bin" / "tool").chmod(0o700)
    (image / "bin" / "alias").symlink_to("tool")
    (image / "bin" / "env").symlink_to("/usr/bin/env")
    (image / "data.txt").symlink_to(repo / "elsewhere" / "data.txt")
    (image / "lib").symlink_to("../../../../package")
    for path in [repo, *repo.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() or path.stat().st_mode & stat.S_IXUSR else 0o600)
    tmp_path.joinpath("private").chmod(0o700)
    return repo


@pytest.fixture
def staged(checkout: pathlib.Path) -> Iterator[pathlib.Path]:
    root = reachable.stage(checkout, trees=("images", "package"))
    yield root
    reachable.remove(root)


def test_the_copy_keeps_the_layout_with_modes_every_uid_can_read(staged: pathlib.Path) -> None:
    rootfs = staged / "images" / "local" / "thing" / "rootfs"
    assert staged.parent in reachable.PARENTS
    assert stat.S_IMODE(staged.stat().st_mode) == 0o755
    assert stat.S_IMODE((rootfs / "bin").stat().st_mode) == 0o755
    assert stat.S_IMODE((rootfs / "bin" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((staged / "package" / "mod.py").stat().st_mode) == 0o644
    assert (staged / "package" / "mod.py").read_text() == "X = 1\n"
    assert not (staged / "package" / "__pycache__").exists()


def test_links_stay_links_within_the_copy_and_to_the_host_and_become_copies_into_the_checkout(
    staged: pathlib.Path,
) -> None:
    rootfs = staged / "images" / "local" / "thing" / "rootfs"
    assert os.readlink(rootfs / "bin" / "alias") == "tool"
    assert os.readlink(rootfs / "bin" / "env") == "/usr/bin/env"
    assert os.readlink(rootfs / "lib") == "../../../../package"
    assert (rootfs / "lib" / "mod.py").read_text() == "X = 1\n"
    assert not (rootfs / "data.txt").is_symlink()
    assert (rootfs / "data.txt").read_text() == "from the rest of the checkout\n"


@pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None, reason="running as another uid needs root and setpriv")
def test_another_uid_runs_from_the_copy_what_it_cannot_reach_in_the_checkout(
    checkout: pathlib.Path, staged: pathlib.Path
) -> None:
    assert SETPRIV is not None

    def run(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
        argv = [SETPRIV, f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups", str(path)]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)

    tool = pathlib.Path("images", "local", "thing", "rootfs", "bin", "tool")
    assert run(checkout / tool).returncode != 0
    assert run(staged / tool).stdout == "tool\n"


def test_remove_touches_only_what_stage_made(tmp_path: pathlib.Path, staged: pathlib.Path) -> None:
    other = tmp_path / "slot-operator-cluster-not-ours"
    other.mkdir()
    reachable.remove(other)
    assert other.exists()
    reachable.remove(staged)
    assert not staged.exists()


def test_linking_shares_only_files_every_uid_may_already_read(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "packages"
    source.mkdir()
    (source / "public.py").write_text("public\n")
    (source / "public.py").chmod(0o644)
    (source / "private.py").write_text("private\n")
    (source / "private.py").chmod(0o600)
    into = tmp_path / "into"
    into.mkdir()
    reachable.copy_trees(tmp_path, into, trees=("packages",), link=True)
    assert (into / "packages" / "public.py").stat().st_ino == (source / "public.py").stat().st_ino
    private = into / "packages" / "private.py"
    assert private.stat().st_ino != (source / "private.py").stat().st_ino
    assert (private.read_text(), stat.S_IMODE(private.stat().st_mode)) == ("private\n", 0o644)
    assert stat.S_IMODE((source / "private.py").stat().st_mode) == 0o600
