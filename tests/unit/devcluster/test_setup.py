"""What the README's commands set up, read from the files that do it: every Python package installed is
locked (exact pin and hash), CI runs the README's own command and nothing else, and what a missing host
command needs is named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devcluster import host_tools
from tests import repo

ROOT = repo.ROOT


def _logical_lines(path: Path) -> list[str]:
    """The file's lines with backslash continuations joined."""
    return re.sub(r"\\\n\s*", " ", path.read_text()).splitlines()


def _pip_installs(path: Path) -> list[str]:
    """The commands that run pip install (not the lines that only echo one)."""
    lines = [line.strip().lstrip("@") for line in _logical_lines(path)]
    return [line for line in lines if re.search(r"\bpip\b.*\binstall\b", line) and not line.startswith("echo")]


def unlocked(line: str) -> bool:
    """A pip install that may fetch something the locks do not pin: neither hash-checked nor local-only."""
    hashed = "--require-hashes" in line
    local = "--no-deps" in line and ("--no-index" in line or re.search(r"\s\S+\.whl\b", line) is not None)
    return not (hashed or local)


@pytest.mark.parametrize("name", ["Makefile", "Dockerfile", ".ci/run"])
def test_every_pip_install_is_locked(name: str) -> None:
    assert [line for line in _pip_installs(ROOT / name) if unlocked(line)] == []


def test_the_makefile_installs_the_three_locks() -> None:
    (line,) = [line for line in _pip_installs(ROOT / "Makefile") if "--require-hashes" in line]
    assert "$(addprefix -r ,$(LOCKS))" in line
    assert "LOCKS := requirements.lock requirements-dev.lock requirements-build.lock" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize(
    ("line", "bad"),
    [
        ("$(PY) -m pip install --quiet -e '.[dev]'", True),
        ("$(PY) -m pip install --quiet --upgrade pip", True),
        ("pip install --no-deps -e .", True),  # --no-deps alone still reaches the index for the build backend
        ("$(PY) -m pip install --require-hashes -r requirements.lock", False),
        ("$(PY) -m pip install --no-deps --no-build-isolation --no-index -e .", False),
        ("pip --python /opt/venv/bin/python install --no-deps /tmp/wheels/slot_operator-*.whl", False),
    ],
)
def test_the_check_tells_an_unlocked_install(line: str, bad: bool) -> None:
    assert unlocked(line) is bad


def test_ci_runs_make_test_and_nothing_else() -> None:
    """CI proves the README: it installs nothing itself, so a set-up step missing from `make test` fails CI too."""
    commands = [
        line.strip()
        for line in _logical_lines(ROOT / ".ci" / "run")
        if line.strip() and not line.strip().startswith("#")
    ]
    assert not [c for c in commands if re.search(r"\b(apt-get|apt|pip|go|dpkg|useradd)\b", c)], commands
    assert any(c.startswith('make test PYTEST_ARGS="-p no:cacheprovider"') for c in commands), commands


def test_a_missing_command_names_its_package_once() -> None:
    advice = host_tools.advice({"newuidmap": "uidmap", "newgidmap": "uidmap"}, why="mapping ids")
    assert advice == ("newgidmap, newuidmap not found (mapping ids): install uidmap (sudo apt-get install uidmap)")


def test_every_test_module_has_its_own_basename() -> None:
    """`make test` runs `pytest tests` in pytest's default import mode, where two test files of one name (and no
    __init__.py) stop the whole run at collection: one `tests/unit/...` and one `tests/integration/...` did."""
    names: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}
