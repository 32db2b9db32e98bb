"""The fake agent image's probe (devcluster/images/local/agent-shell) against docs/design.md section 1, no cluster.

The entrypoint runs as a subprocess with the image's PATH against temporary home
directories holding each credential case. Cases that need another uid (files
written by uid 1000, read as 10001) switch uid with `setpriv` and are skipped when
not running as root (`make test` runs the suite as root, or as root of a user namespace).
The image runs from a copy every uid can reach (devcluster/reachable.py), as in the cluster: the
checkout may be in a private directory.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devcluster import reachable
from devcluster.nodesim.images import ImageStore
from tests import repo
from tests.claimdirs import snapshot

REPO = repo.ROOT

STAGE = reachable.stage(REPO, trees=("devcluster/images",))
atexit.register(reachable.remove, STAGE)
IMAGE = STAGE / "devcluster" / "images" / "local" / "agent-shell"
ROOTFS = IMAGE / "rootfs"
ENTRYPOINT = ROOTFS / "bin" / "entrypoint"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
IMAGE_PATH = f"{ROOTFS / 'bin'}:{ROOTFS / 'cli'}:{SYSTEM_PATH}"
BROKEN_PATH = f"{ROOTFS / 'bin'}:{SYSTEM_PATH}"  # the broken-cli image: no CLIs on PATH
SLOT_UID = 10001
OLD_UID = 1000
SETPRIV = shutil.which("setpriv")
needs_root = pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None, reason="uid switching needs root and setpriv")


@pytest.fixture
def home() -> Iterator[pathlib.Path]:
    """An empty home reachable by any uid (pytest's tmp_path is private to its owner)."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="fake-agent-"))
    base.chmod(0o755)
    path = base / "home"
    path.mkdir()
    if os.geteuid() == 0:
        os.chown(path, SLOT_UID, SLOT_UID)
    path.chmod(0o750)
    yield path
    shutil.rmtree(base, ignore_errors=True)


def put(
    home: pathlib.Path,
    rel: str,
    content: str | bytes,
    *,
    owner: int = SLOT_UID,
    mode: int = 0o600,
    dir_mode: int = 0o755,
) -> pathlib.Path:
    """Write `home/rel` and missing parents owned by `owner` (when root), as the agent would have."""
    path = home / rel
    for parent in reversed(pathlib.PurePosixPath(rel).parents[:-1]):
        directory = home / parent
        if not directory.exists():
            directory.mkdir()
            directory.chmod(dir_mode)
            if os.geteuid() == 0:
                os.chown(directory, owner, owner)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    if os.geteuid() == 0:
        os.chown(path, owner, owner)
    return path


def probe_env(home: pathlib.Path | None, agent: str | None, *, path: str = IMAGE_PATH, **extra: str) -> dict[str, str]:
    env = {"PATH": path, "AGENT_MODE": "smoke-test", **extra}
    if home is not None:
        env["HOME"] = str(home)
    if agent is not None:
        env["WOVED_TASK_AGENT"] = agent
    return env


def run_probe(env: dict[str, str], *, uid: int | None = None) -> tuple[int, dict[str, Any], list[str]]:
    """Run the entrypoint; returns (exit code, the one JSON stdout line, stderr lines). Checks the output format."""
    argv = [str(ENTRYPOINT)]
    if uid is not None:
        assert SETPRIV is not None
        argv = [SETPRIV, "--reuid", str(uid), "--regid", str(uid), "--clear-groups", "--", *argv]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False, cwd="/")
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be exactly one JSON line, got {proc.stdout!r}"
    result = json.loads(lines[0])
    assert set(result) == {"status", "agent", "detail"}
    logs = proc.stderr.splitlines()
    assert logs, "the probe logs to stderr"
    assert all(line.startswith("smoke-test: ") for line in logs), proc.stderr
    return proc.returncode, result, logs


Prepare = Callable[[pathlib.Path], object]


def _nothing(home: pathlib.Path) -> None:
    pass


def _claude_baseline(home: pathlib.Path) -> None:
    put(home, ".claude/CLAUDE.md", "# rules\n")
    put(home, ".claude/settings.json", "{}")
    put(home, ".claude/config.toml", "x = 1\n")


def _claude_with(rel: str, content: str) -> Prepare:
    def prepare(home: pathlib.Path) -> None:
        _claude_baseline(home)
        put(home, rel, content)

    return prepare


def _claude_symlink_only(home: pathlib.Path) -> None:
    _claude_baseline(home)
    target = put(home, "elsewhere.json", '{"token": "x"}')
    (home / ".claude" / ".credentials.json").symlink_to(target)


def _codex_dangling_symlink(home: pathlib.Path) -> None:
    (home / ".codex").mkdir()
    (home / ".codex" / "auth.json").symlink_to(home / "missing.json")


def _codex_directory(home: pathlib.Path) -> None:
    (home / ".codex" / "auth.json").mkdir(parents=True)


CASES = [
    pytest.param(
        "codex", lambda h: put(h, ".codex/auth.json", '{"tokens": {"refresh_token": "r"}}'), 0, "ok", id="codex-valid"
    ),
    pytest.param("codex", _nothing, 65, "creds-missing", id="codex-none"),
    pytest.param("codex", lambda h: (h / ".codex").mkdir(), 65, "creds-missing", id="codex-dir-without-auth"),
    pytest.param("codex", _codex_dangling_symlink, 65, "creds-missing", id="codex-dangling-symlink"),
    pytest.param("codex", lambda h: put(h, ".codex/auth.json", ""), 66, "creds-invalid", id="codex-empty"),
    pytest.param("codex", lambda h: put(h, ".codex/auth.json", " \n\t"), 66, "creds-invalid", id="codex-whitespace"),
    pytest.param("codex", lambda h: put(h, ".codex/auth.json", '{"tokens": '), 66, "creds-invalid", id="codex-corrupt"),
    pytest.param(
        "codex", lambda h: put(h, ".codex/auth.json", b"\xff\xfe{}"), 66, "creds-invalid", id="codex-not-utf8"
    ),
    pytest.param("codex", lambda h: put(h, ".codex/auth.json", "[1, 2]"), 66, "creds-invalid", id="codex-json-array"),
    pytest.param("codex", _codex_directory, 66, "creds-invalid", id="codex-auth-is-directory"),
    pytest.param("claude", _nothing, 65, "creds-missing", id="claude-none"),
    pytest.param("claude", _claude_baseline, 65, "creds-missing", id="claude-baseline-only"),
    pytest.param("claude", _claude_symlink_only, 65, "creds-missing", id="claude-symlink-not-counted"),
    pytest.param(
        "claude", _claude_with(".claude/.credentials.json", '{"claudeAiOauth": {}}'), 0, "ok", id="claude-valid"
    ),
    pytest.param("claude", _claude_with(".claude/statsig/cache", "data"), 0, "ok", id="claude-nested-file"),
    pytest.param("claude", _claude_with(".claude/.credentials.json", ""), 66, "creds-invalid", id="claude-empty"),
    pytest.param(
        "claude", _claude_with(".claude/.credentials.json", "\n"), 66, "creds-invalid", id="claude-whitespace"
    ),
]


@pytest.mark.parametrize(("agent", "prepare", "code", "status"), CASES)
def test_credential_cases(home: pathlib.Path, agent: str, prepare: Prepare, code: int, status: str) -> None:
    prepare(home)
    before = snapshot(home)
    exit_code, result, _ = run_probe(probe_env(home, agent))
    assert (exit_code, result["status"], result["agent"]) == (code, status, agent), result
    assert snapshot(home) == before, "the probe must never write to HOME"


def test_result_detail_names_the_file_without_contents(home: pathlib.Path) -> None:
    put(home, ".codex/auth.json", '{"tokens": {"refresh_token": "s3cr3t"')
    _, result, logs = run_probe(probe_env(home, "codex"))
    assert result["detail"] == "~/.codex/auth.json does not parse as JSON"
    assert not any("s3cr3t" in line for line in [result["detail"], *logs])


@pytest.mark.parametrize(
    ("agent", "path", "extra", "detail"),
    [
        pytest.param(None, IMAGE_PATH, {}, "WOVED_TASK_AGENT is not set", id="agent-unset"),
        pytest.param(
            "gemini", IMAGE_PATH, {}, "WOVED_TASK_AGENT='gemini' is not one of claude, codex", id="agent-unknown"
        ),
        pytest.param("codex", BROKEN_PATH, {}, "codex CLI not found on PATH", id="cli-missing"),
        pytest.param("claude", BROKEN_PATH, {}, "claude CLI not found on PATH", id="claude-cli-missing"),
        pytest.param("codex", IMAGE_PATH, {"FAKE_CLI_FAIL": "1"}, "`codex --version` exited 1", id="cli-fails"),
    ],
)
def test_image_level_failures_exit_64(
    home: pathlib.Path, agent: str | None, path: str, extra: dict[str, str], detail: str
) -> None:
    put(home, ".codex/auth.json", "{}")  # valid credentials must not matter
    exit_code, result, _ = run_probe(probe_env(home, agent, path=path, **extra))
    assert (exit_code, result) == (64, {"status": "cli-broken", "agent": agent, "detail": detail})


def test_home_unset_is_image_level(home: pathlib.Path) -> None:
    exit_code, result, _ = run_probe(probe_env(None, "codex"))
    assert (exit_code, result["status"], result["detail"]) == (64, "cli-broken", "HOME is not set")


def test_crash_hook_exits_1_with_error(home: pathlib.Path) -> None:
    put(home, ".codex/auth.json", "{}")
    exit_code, result, _ = run_probe(probe_env(home, "codex", SMOKE_TEST_CRASH="1"))
    assert (exit_code, result["status"], result["agent"]) == (1, "error", "codex")


def test_ok_detail_carries_cli_version(home: pathlib.Path) -> None:
    put(home, ".codex/auth.json", "{}")
    _, result, logs = run_probe(probe_env(home, "codex"))
    assert result["detail"].startswith("codex-cli 0.0.0-fake; ")
    assert "smoke-test: codex CLI: codex-cli 0.0.0-fake" in logs


@needs_root
@pytest.mark.parametrize(
    ("agent", "dir_mode", "code", "status"),
    [
        # Directory readable, file 0600 owned by uid 1000: present but unreadable -> 66.
        pytest.param("codex", 0o755, 66, "creds-invalid", id="codex-file-unreadable"),
        pytest.param("claude", 0o755, 66, "creds-invalid", id="claude-file-unreadable"),
        # Directory 0700 owned by uid 1000: credentials invisible (uid mismatch) -> 65.
        pytest.param("codex", 0o700, 65, "creds-missing", id="codex-dir-private"),
        pytest.param("claude", 0o700, 65, "creds-missing", id="claude-dir-private"),
    ],
)
def test_files_written_by_uid_1000_read_as_10001(
    home: pathlib.Path, agent: str, dir_mode: int, code: int, status: str
) -> None:
    rel = ".codex/auth.json" if agent == "codex" else ".claude/.credentials.json"
    put(home, rel, '{"tokens": {}}', owner=OLD_UID, mode=0o600, dir_mode=dir_mode)
    before = snapshot(home)
    exit_code, result, _ = run_probe(probe_env(home, agent), uid=SLOT_UID)
    assert (exit_code, result["status"]) == (code, status), result
    assert f"uid {SLOT_UID}" in result["detail"]
    assert "owned by uid 1000" in result["detail"]
    assert snapshot(home) == before


@needs_root
def test_claude_readable_file_wins_over_unreadable_one(home: pathlib.Path) -> None:
    put(home, ".claude/.credentials.json", '{"claudeAiOauth": {}}')
    put(home, ".claude/statsig/old-cache", "x", owner=OLD_UID)
    exit_code, result, _ = run_probe(probe_env(home, "claude"), uid=SLOT_UID)
    assert (exit_code, result["status"]) == (0, "ok"), result


def _exit_on_sigterm(env: dict[str, str], announcement: str) -> int:
    """Start the entrypoint; once its first stderr line says `announcement`, it must still run: SIGTERM it.

    Returns its exit status."""
    proc = subprocess.Popen([str(ENTRYPOINT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "no stderr output in time"
        assert announcement in proc.stderr.readline()
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()


def test_sleep_hook_keeps_probe_running_until_killed(home: pathlib.Path) -> None:
    assert _exit_on_sigterm(probe_env(home, "codex", SMOKE_TEST_SLEEP="600"), "sleeping 600s") == -signal.SIGTERM


def test_idle_mode_holds_until_sigterm(home: pathlib.Path) -> None:
    started = time.monotonic()
    assert _exit_on_sigterm({"PATH": IMAGE_PATH, "HOME": str(home), "AGENT_MODE": "idle"}, "idle") == 0
    assert time.monotonic() - started < 30


def test_unknown_mode_is_refused(home: pathlib.Path) -> None:
    proc = subprocess.run(
        [str(ENTRYPOINT)],
        env={"PATH": IMAGE_PATH, "HOME": str(home), "AGENT_MODE": "serve"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown AGENT_MODE" in proc.stderr


@pytest.mark.parametrize(
    ("name", "version"), [("codex", "codex-cli 0.0.0-fake"), ("claude", "0.0.0-fake (Claude Code)")]
)
def test_fake_cli_answers_version(name: str, version: str) -> None:
    proc = subprocess.run(
        [str(ROOTFS / "cli" / name), "--version"],
        env={"PATH": SYSTEM_PATH},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, version)


def test_image_configs_resolve_through_the_store() -> None:
    store = ImageStore(IMAGE.parents[1])
    for tag, agent in (("codex", "codex"), ("claude", "claude"), ("broken-cli", "codex")):
        image = store.resolve(f"local/agent-shell:{tag}")
        assert (image.uid, image.gid) == (10001, 10001)
        assert image.env["WOVED_TASK_AGENT"] == agent
        assert image.path_dirs[0] == ROOTFS / "bin"
    assert ROOTFS / "cli" not in store.resolve("local/agent-shell:broken-cli").path_dirs
