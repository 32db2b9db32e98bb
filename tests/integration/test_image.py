"""The image `make image` built (dist/slot-operator_dev.oci.tar), inspected layer by layer, whiteouts applied.

It must hold only what runs: the locked dependency closure plus the operator, with
bytecode for every module, no installer (pip, setuptools, wheel, ensurepip) and no
compiler, owned by root and read-only for uid 10001, which the config runs as.
That the image actually runs under the chart (read-only root, uid 10001, probes) is
tested end to end in test_chart_operator_pod.py.
"""

from __future__ import annotations

import pathlib
import re
import sys
import tarfile

import pytest

_REPO = pathlib.Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from devcluster import oci  # noqa: E402
from tools import image as image_tool  # noqa: E402

VENV = "opt/venv"
SITE = f"{VENV}/lib/python3.11/site-packages"
INSTALLERS = re.compile(r"(^|/)(pip|setuptools|wheel|ensurepip|pkg_resources|_distutils_hack)(-[^/]*)?(/|$)")
COMPILERS = {"gcc", "cc", "c++", "g++", "clang", "make", "cmake", "ld", "as", "rustc", "cargo", "go"}


@pytest.fixture(scope="module")
def built(operator_archive: pathlib.Path) -> oci.OciImage:
    return oci.read_archive(operator_archive)[image_tool.IMAGE]


@pytest.fixture(scope="module")
def tree(built: oci.OciImage) -> dict[str, tarfile.TarInfo]:
    return oci.flatten(built)


def test_config_runs_the_console_script_as_10001(built: oci.OciImage) -> None:
    config = built.config["config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["slot-operator"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
    labels = config["Labels"]
    for key in ("title", "description", "version", "revision", "created", "licenses", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key


def test_the_console_script_is_the_packaged_entry_point(tree: dict[str, tarfile.TarInfo]) -> None:
    assert tree[f"{VENV}/bin/slot-operator"].isfile()
    points = [p for p in tree if p.startswith(f"{SITE}/slot_operator-") and p.endswith("/entry_points.txt")]
    assert len(points) == 1, points


def test_no_installer_anywhere(tree: dict[str, tarfile.TarInfo]) -> None:
    found = [p for p in tree if INSTALLERS.search(p) and re.search(r"/(site|dist)-packages/", p)]
    found += [p for p in tree if p.endswith(".whl") or re.search(r"(^|/)bin/(pip|pip3[.\d]*|wheel|easy_install)$", p)]
    found += [p for p in tree if re.search(r"/python3[.\d]*/ensurepip(/|$)", p)]
    assert found == []


def test_no_compiler(tree: dict[str, tarfile.TarInfo]) -> None:
    binaries = {pathlib.PurePosixPath(p).name for p in tree if re.match(r"(usr/)?(local/)?s?bin/", p)}
    assert binaries & COMPILERS == set()
    assert not any(p.startswith("usr/include/") for p in tree)


def test_installed_distributions_are_exactly_the_lock(tree: dict[str, tarfile.TarInfo]) -> None:
    lock = (_REPO / "requirements.lock").read_text()
    locked = {(m["name"].replace("-", "_").lower(), m["version"]) for m in re.finditer(
        r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)", lock, flags=re.M)}  # fmt: skip
    found = set()
    for path in tree:
        match = re.fullmatch(rf"{SITE}/(?P<name>[^/]+)-(?P<version>[^-/]+)\.dist-info", path)
        if match:
            found.add((match["name"].replace("-", "_").lower(), match["version"]))
    assert found - locked == {("slot_operator", _project_version())}
    assert locked - found == set()


def _project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (_REPO / "pyproject.toml").read_text(), flags=re.M)
    assert match is not None
    return match.group(1)


def test_every_module_has_bytecode(tree: dict[str, tarfile.TarInfo]) -> None:
    """Nothing is compiled at start-up (and nothing could be written: the root filesystem is read-only)."""
    sources = [p for p in tree if p.endswith(".py") and (p.startswith(f"{VENV}/") or "/lib/python3.11/" in p)]
    assert len(sources) > 1000
    missing = []
    for source in sources:
        directory, name = source.rsplit("/", 1)
        if f"{directory}/__pycache__/{name[:-3]}.cpython-311.pyc" not in tree:
            missing.append(source)
    assert missing == []


def test_the_operator_cannot_write_its_own_files(tree: dict[str, tarfile.TarInfo]) -> None:
    """Root-owned and not writable by group or others: uid 10001 cannot change what it runs."""
    venv = [(path, member) for path, member in tree.items() if path.startswith(f"{VENV}/") and not member.issym()]
    wrong = [path for path, member in venv if member.uid != 0 or member.mode & 0o022]
    assert wrong == []
