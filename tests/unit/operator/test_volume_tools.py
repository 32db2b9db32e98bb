"""The ownership audit and the ownership migration (volume/) on real directory trees.

Trees with several owners need root (or root of the user namespace `make test` runs in); the
audit's own guarantees (lstat only, no symlink followed, bounded report) are checked as any user.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator

import pytest
from slot_operator import cli
from slot_operator.logic import ownership
from slot_operator.volume import audit, migrate

ME = (os.getuid(), os.getgid())
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, or `make test`'s user namespace, to chown")


def make(
    path: pathlib.Path, content: str | None = "{}", *, owner: tuple[int, int] | None = None, mode: int = 0o600
) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        path.mkdir(exist_ok=True)
    else:
        path.write_text(content)
    path.chmod(mode)
    if owner is not None:
        os.lchown(path, *owner)
    return path


def rows(report: dict[str, object]) -> dict[str, list[object]]:
    entries = report["entries"]
    assert isinstance(entries, list)
    return {str(row[0]): row for row in entries}


def manifest(root: pathlib.Path) -> dict[str, tuple[int, int, int, int, str]]:
    """Full lstat manifest: type+mode, owner, size, symlink target, for every entry (root included)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = pathlib.Path(dirpath) / name
            st = path.lstat()
            target = os.readlink(path) if path.is_symlink() else ""
            result[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, target)
    return result


def test_codex_audit_reports_home_directory_and_credentials(tmp_path: pathlib.Path) -> None:
    auth = make(tmp_path / ".codex" / "auth.json")
    os.utime(auth, (1_700_000_000, 1_700_000_000))
    (tmp_path / ".codex").chmod(0o700)

    report = audit.audit(tmp_path, agent="codex")

    found = rows(report)
    assert set(found) == {"~", "~/.codex", "~/.codex/auth.json"}
    assert found["~/.codex"][1:5] == ["d", *ME, "0700"]
    assert found["~/.codex/auth.json"][1:] == ["f", *ME, "0600", 1_700_000_000, 1]
    assert report["credentials"] == {"files": 1, "newest": 1_700_000_000}
    assert report["owners"] == {ownership.owner(*ME): 3}
    assert report["runAs"] == ownership.owner(*ME)


def test_claude_audit_counts_credential_files_not_baseline_nor_symlinks(tmp_path: pathlib.Path) -> None:
    claude = tmp_path / ".claude"
    make(claude / ".credentials.json")
    make(claude / "sub" / "token")
    for name in ("CLAUDE.md", "settings.json", "config.toml"):
        make(claude / name)
    outside = make(tmp_path.parent / f"{tmp_path.name}-outside" / "secret", "s")
    (claude / "link").symlink_to(outside)
    (claude / "dirlink").symlink_to(outside.parent)

    report = audit.audit(tmp_path, agent="claude")

    assert set(rows(report)) == {
        "~",
        "~/.claude",
        "~/.claude/.credentials.json",
        "~/.claude/sub",
        "~/.claude/sub/token",
    }
    assert report["credentials"]["files"] == 2  # type: ignore[index]


def test_audit_never_opens_a_file(tmp_path: pathlib.Path) -> None:
    """A FIFO (opening it would block) and a file of mode 0 (opening it would fail) are only lstat'ed."""
    claude = tmp_path / ".claude"
    claude.mkdir()
    os.mkfifo(claude / "pipe")
    make(claude / "locked", "x", mode=0)
    done = threading.Event()
    result: dict[str, object] = {}

    def run() -> None:
        result.update(audit.audit(tmp_path, agent="claude"))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(10), "the audit blocked on a FIFO"
    found = rows(result)
    assert found["~/.claude/locked"][4] == "0000"
    assert "~/.claude/pipe" not in found  # not a regular file: not a credential
    assert result["problems"] == []


def test_codex_directory_that_is_a_symlink_is_not_followed(tmp_path: pathlib.Path) -> None:
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    make(elsewhere / "auth.json")
    (tmp_path / ".codex").symlink_to(elsewhere)

    report = audit.audit(tmp_path, agent="codex")

    assert set(rows(report)) == {"~", "~/.codex"}
    assert rows(report)["~/.codex"][1] == "l"
    assert report["credentials"] == {"files": 0, "newest": None}


def test_report_stays_within_a_termination_message(tmp_path: pathlib.Path) -> None:
    for index in range(400):
        make(tmp_path / ".claude" / f"dir-{index:03d}" / f"credential-file-with-a-long-name-{index:03d}.json")

    report = audit.audit(tmp_path, agent="claude")

    text = json.dumps(report, separators=(",", ":"))
    assert len(text) <= ownership.REPORT_LIMIT
    assert report["omitted"] > 0
    assert report["credentials"]["files"] == 400  # type: ignore[index]  # totals cover every entry
    assert sum(report["owners"].values()) == 802  # type: ignore[union-attr]
    assert [row[0] for row in report["entries"][:2]] == ["~", "~/.claude"]  # type: ignore[index]


def test_audit_command_writes_one_line_and_always_exits_zero(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "termination-log"
    assert cli.main(["audit", f"--home={tmp_path / 'missing'}", "--agent=codex", f"--termination-log={log}"]) == 0
    report = json.loads(log.read_text())
    assert report["error"].startswith("~: ")
    result = ownership.parse_report(log.read_text())
    assert isinstance(result, ownership.AuditUnavailable)
    assert result.reason == "AuditFailed"


@pytest.fixture
def open_tmp() -> Iterator[pathlib.Path]:
    """A scratch directory other uids can reach (pytest's tmp_path is private to its user)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="slot-audit-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@as_root
def test_uid_1000_home_is_seen_from_10001(open_tmp: pathlib.Path) -> None:
    """The uid-1000 story, as the probe's uid sees it: ~/.codex cannot be searched, yet its owner is known."""
    tmp_path = open_tmp
    home = make(tmp_path / "home", None, owner=(1000, 1000), mode=0o755)
    make(home / ".codex", None, owner=(1000, 1000), mode=0o700)
    make(home / ".codex" / "auth.json", owner=(1000, 1000))
    log = tmp_path / "log"
    log.touch()
    log.chmod(0o666)
    pid = os.fork()
    if pid == 0:  # the audit as the probe runs it: uid/gid 10001, no capabilities
        try:
            os.setgroups([])
            os.setgid(10001)
            os.setuid(10001)
            cli.main(["audit", f"--home={home}", "--agent=codex", f"--termination-log={log}"])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)

    result = ownership.parse_report(log.read_text())
    assert isinstance(result, ownership.Audit)
    assessment = ownership.assess(result, expected=(10001, 10001))
    assert assessment.foreign == ("1000:1000",)
    assert assessment.paths[0] == "~/.codex"
    assert assessment.headline() == "~/.codex owned by 1000:1000 (and 1 more), the image runs as 10001:10001"
    assert result.problems == ("~/.codex/auth.json: Permission denied",)


@as_root
def test_migration_changes_exactly_the_old_owners_entries(tmp_path: pathlib.Path) -> None:
    home = make(tmp_path / "home", None, owner=(1000, 1000), mode=0o750)
    make(home / ".codex", None, owner=(1000, 1000), mode=0o700)
    make(home / ".codex" / "auth.json", owner=(1000, 1000))
    make(home / ".codex" / "root-owned", owner=(0, 0))
    make(home / ".codex" / "half", owner=(1000, 2000))  # same uid, another gid: someone else's
    make(home / "notes", None, owner=(1000, 1000), mode=0o755)
    make(home / "notes" / "private", None, owner=(1000, 1000), mode=0o700)
    make(home / "notes" / "private" / "deep.txt", owner=(1000, 1000), mode=0)
    outside = make(tmp_path / "outside", "keep", owner=(1000, 1000))
    (home / "link-out").symlink_to(outside)
    os.lchown(home / "link-out", 1000, 1000)
    (home / "dir-link").symlink_to(tmp_path)
    os.lchown(home / "dir-link", 1000, 1000)
    os.mkfifo(home / "pipe")
    os.lchown(home / "pipe", 1000, 1000)
    before = manifest(home)
    outside_before = outside.lstat()

    counts = migrate.migrate(home, old=(1000, 1000), new=(10001, 10001), dry_run=False)

    after = manifest(home)
    changed = {path for path in before if before[path][1:3] == (1000, 1000)}
    assert changed == {
        ".",
        ".codex",
        ".codex/auth.json",
        "notes",
        "notes/private",
        "notes/private/deep.txt",
        "link-out",
        "dir-link",
        "pipe",
    }
    for path, (mode, uid, gid, size, target) in before.items():
        expected = (10001, 10001) if path in changed else (uid, gid)
        assert after[path] == (mode, *expected, size, target), path  # modes, sizes, targets untouched
    assert (counts.changed, counts.skipped, counts.errors) == (len(changed), len(before) - len(changed), 0)
    # Symlink targets outside the claim: never followed.
    assert outside.lstat().st_uid == outside_before.st_uid == 1000
    assert tmp_path.lstat().st_uid != 10001


@as_root
def test_dry_run_counts_and_changes_nothing(tmp_path: pathlib.Path) -> None:
    home = make(tmp_path / "home", None, owner=(1000, 1000), mode=0o750)
    make(home / ".codex" / "auth.json", owner=(1000, 1000))
    before = manifest(home)
    log = tmp_path / "log"

    code = cli.main(
        [
            "migrate-ownership",
            f"--root={home}",
            "--from=1000:1000",
            "--to=10001:10001",
            "--dry-run",
            f"--termination-log={log}",
        ]
    )

    assert code == 0
    assert manifest(home) == before
    report = ownership.parse_migration_report(log.read_text())
    assert isinstance(report, ownership.MigrationReport)
    assert (report.changed, report.skipped, report.errors) == (2, 1, 0)  # ~/.codex was made by root


def test_migration_command_names_a_bad_owner(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    with pytest.raises(SystemExit):
        cli.main(["migrate-ownership", f"--root={tmp_path}", "--from=root", "--to=10001:10001"])
    assert "expected UID:GID with numeric ids, got 'root'" in capsys.readouterr().err


@pytest.mark.parametrize(("old", "new"), [("0:0", "10001:10001"), ("1000:0", "10001:10001"), ("1000:1000", "0:0")])
def test_the_migration_never_moves_roots_files_nor_hands_anything_to_root(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, old: str, new: str
) -> None:
    """Whoever starts it (a stolen token, a forged Job): the program itself refuses, before it walks anything."""
    (tmp_path / "f").write_text("x")
    before = (tmp_path / "f").lstat()
    with pytest.raises(SystemExit):
        cli.main(["migrate-ownership", f"--root={tmp_path}", f"--from={old}", f"--to={new}"])
    assert "uid 0 and gid 0 are never moved" in capsys.readouterr().err
    assert (tmp_path / "f").lstat() == before


def test_migration_of_a_missing_root_fails_with_its_reason(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "log"
    code = cli.main(
        ["migrate-ownership", f"--root={tmp_path / 'nope'}", "--from=1:1", "--to=2:2", f"--termination-log={log}"]
    )
    assert code == 1
    assert ownership.parse_migration_report(log.read_text()).endswith("No such file or directory")  # type: ignore[union-attr]


def test_modes_are_reported_in_octal(tmp_path: pathlib.Path) -> None:
    make(tmp_path / ".codex" / "auth.json", mode=0o640)
    assert rows(audit.audit(tmp_path, agent="codex"))["~/.codex/auth.json"][4] == f"{stat.S_IMODE(0o640):04o}"
