"""devcluster/nodesim/container-setup.sh on its own: the mounts it makes, and that it never writes the host.

Each test runs the script as the node simulator does (`unshare -m`, as root or as root of
the suite's user namespace) with a command that reports what it sees from inside the new
mount namespace, then checks the host side afterwards.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from devcluster import isolation
from devcluster.nodesim.runtime import SETUP_SCRIPT

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _isolated() -> None:
    """Root, or root of the suite's user namespace, as the node simulator itself requires."""
    try:
        isolation.require()
    except isolation.IsolationUnavailable as exc:
        pytest.fail(f"the make targets run the tests isolated: {exc}")


# Reports, as JSON on stdout, what a list of paths look like from inside the namespace.
REPORT = r"""
import json, os, sys
out = {}
for path in sys.argv[1:]:
    entry = {"exists": os.path.lexists(path)}
    if entry["exists"]:
        entry["dir"] = os.path.isdir(path)
        try:
            with open(os.path.join(path, ".probe") if entry["dir"] else path, "a"):
                pass
            entry["writable"] = True
        except OSError as exc:
            entry["writable"] = exc.strerror
        if entry["dir"]:
            entry["entries"] = sorted(e for e in os.listdir(path) if e != ".probe")
    out[path] = entry
print(json.dumps(out))
"""


def _setup(stage: pathlib.Path, rootfs: str, root_mode: str, workdir: str, ops: list[str], *paths: str) -> dict:
    python = shutil.which("python3") or "python3"
    cmd = ["unshare", "-m", "--propagation", "private", "--", "/bin/bash", str(SETUP_SCRIPT)]
    cmd += [str(stage), rootfs, root_mode, workdir, *ops, "--", python, "-I", "-c", REPORT, *paths]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def _tree(path: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_directory_image_volumes_and_shadowed_mount_points(tmp_path: pathlib.Path) -> None:
    stage, host, claim = tmp_path / "stage", tmp_path / "host", tmp_path / "claim"
    for directory in (stage, host, claim):
        directory.mkdir()
    (host / "kept").write_text("x")
    (claim / "file").write_text("c")
    before = _tree(host)
    target = host / "made" / "here"  # its parent does not exist: a tmpfs shadows `host`, the host stays as it is
    seen = _setup(stage, "", "rw", "/", ["dir", str(claim), str(target), "ro"], str(target), str(host), "/dev")
    assert seen[str(target)] == {"exists": True, "dir": True, "writable": "Read-only file system", "entries": ["file"]}
    assert seen[str(host)]["entries"] == ["kept", "made"]  # the original entries are bound back under the shadow
    assert "sda" not in seen["/dev"]["entries"]
    assert "null" in seen["/dev"]["entries"]
    assert _tree(host) == before  # nothing was created on the host
    assert not (claim / ".probe").exists()


def test_image_root_filesystem_read_only_with_volumes_inside(tmp_path: pathlib.Path) -> None:
    stage, rootfs, scratch = tmp_path / "stage", tmp_path / "rootfs", tmp_path / "scratch"
    for directory in (stage, rootfs / "etc", rootfs / "run", rootfs / "var", scratch):
        directory.mkdir(parents=True)
    (rootfs / "var" / "run").symlink_to("/run")  # resolved inside the image by the simulator, never on the host
    before = _tree(rootfs)
    root = stage / "root"
    token_dir = "/run/secrets/kubernetes.io/serviceaccount"
    ops = ["dir", str(scratch), "/tmp", "rw", "dir", str(scratch), token_dir, "ro"]
    seen = _setup(stage, str(rootfs), "ro", "/", ops, str(root), str(root / "tmp"), f"{root}{token_dir}",
                  str(root / "proc" / "self"), str(root / "dev" / "null"), str(root / "run"))  # fmt: skip
    assert seen[str(root)]["writable"] == "Read-only file system"
    assert seen[str(root / "tmp")]["writable"] is True
    assert seen[f"{root}{token_dir}"]["writable"] == "Read-only file system"
    assert seen[str(root / "proc" / "self")]["exists"]
    assert seen[str(root / "dev" / "null")]["exists"]
    assert seen[str(root / "run")]["writable"] == "Read-only file system"  # the shadow over the image's /run too
    assert _tree(rootfs) == before  # the unpacked image is never written


def test_image_root_filesystem_writable_through_an_overlay(tmp_path: pathlib.Path) -> None:
    stage, rootfs = tmp_path / "stage", tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    stage.mkdir()
    root = stage / "root"
    seen = _setup(stage, str(rootfs), "rw", "/", [], str(root / "etc"))
    assert seen[str(root / "etc")]["writable"] is True
    assert _tree(rootfs) == ["etc"]  # the write went to the overlay's tmpfs, not to the image


def test_a_failing_mount_is_a_start_error_naming_it(tmp_path: pathlib.Path) -> None:
    stage, claim, host = tmp_path / "stage", tmp_path / "claim", tmp_path / "host"
    for directory in (stage, claim, host):
        directory.mkdir()
    (host / "a-file").write_text("x")
    cmd = ["unshare", "-m", "--propagation", "private", "--", "/bin/bash", str(SETUP_SCRIPT), str(stage), "", "rw"]
    cmd += ["/", "dir", str(claim), str(host / "a-file"), "rw", "--", "true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 128
    message = (stage / "start-error").read_text()
    assert f'error mounting "{claim}" to rootfs at "{host / "a-file"}"' in message
    assert "exists but is not a dir" in message
