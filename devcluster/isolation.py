"""Isolation for the local cluster: root, or a user namespace on the invoking user's subordinate ids.

The node simulator runs each container in its own mount namespace, bind-mounts its volumes
(read-only ones remounted `ro`) and switches to the pod's uid/gid; the tests, the demo and the
bench write claim files owned by the ids a scenario asks for (10001, 1000, ...). All of that
needs root. Without root, `run` does what rootless container engines do: it re-executes a
command as root of a new user namespace whose id 0 is the invoking user and whose ids 1.. are
the user's subordinate ranges from /etc/subuid and /etc/subgid, mapped by the setuid
`newuidmap`/`newgidmap` of the `uidmap` package. Everything started inside (control plane, node
simulator, tests, demo) then behaves as under root, and sees the same owners: a file owned by
uid N > 0 inside belongs to subordinate id start + N - 1 on disk. Each container still gets its
own mount namespace from the node simulator, owned by this user namespace.

Nothing degrades silently: `check` (the Makefile's preflight, before anything is built) and
`run` stop with a message naming what is missing and how to get it; as root, `check` installs
the missing host packages itself (devcluster/host_tools.py).

Usage: python -m devcluster.isolation check [--for-tests]
       python -m devcluster.isolation run [--join-cluster .cluster] -- COMMAND [ARG...]
Standard library only: the preflight runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import pathlib
import pwd
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import NoReturn

from devcluster import host_tools

# Ids 0..65535 must exist inside: any uid/gid a pod may ask for below 65536 (10001, 1000, nobody).
REQUIRED_IDS = 65536
CLONE_NEWUSER = 0x10000000
SUBUID = pathlib.Path("/etc/subuid")
SUBGID = pathlib.Path("/etc/subgid")
THROUGH_RUN = "python -m devcluster.isolation run -- COMMAND"
# Commands -> the Debian packages that have them: every container's mount namespace and identity switch,
# a user namespace on subordinate ids, and the temporary account of the suite's rootless test (as root).
CONTAINER_TOOLS = {"unshare": "util-linux", "setpriv": "util-linux"}
USER_NAMESPACE_TOOLS = {"newuidmap": "uidmap", "newgidmap": "uidmap"}
ACCOUNT_TOOLS = {"useradd": "passwd", "userdel": "passwd"}


class IsolationUnavailable(RuntimeError):
    """Containers cannot be isolated here; the message names each missing piece and how to get it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class IdRange:
    start: int
    count: int


def parse_subordinate(text: str, *, user: str, uid: int) -> list[IdRange]:
    """The ranges of /etc/subuid or /etc/subgid text that belong to `user` (by name or numeric id), in file order."""
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if count > 0:
            ranges.append(IdRange(start=start, count=count))
    return ranges


def id_map(own: int, ranges: Sequence[IdRange]) -> list[str]:
    """newuidmap/newgidmap arguments: inside 0 is `own`, then each range follows the previous one."""
    args = ["0", str(own), "1"]
    inside = 1
    for r in ranges:
        args += [str(inside), str(r.start), str(r.count)]
        inside += r.count
    return args


def mapped_from_zero(map_text: str) -> int:
    """How many consecutive ids from 0 up a /proc/<pid>/uid_map (or gid_map) maps."""
    extents = sorted(tuple(int(f) for f in line.split()) for line in map_text.splitlines() if line.strip())
    covered = 0
    for inside, _outside, count in extents:
        if inside > covered:
            break
        covered = max(covered, inside + count)
    return covered


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _read(path: pathlib.Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _ranges(path: pathlib.Path) -> list[IdRange]:
    return parse_subordinate(_read(path) or "", user=_user(), uid=os.getuid())


def _missing(tools: dict[str, str], *, why: str) -> list[str]:
    """The commands of `tools` (command -> Debian package) not on PATH, as a line saying how to install them."""
    absent = host_tools.missing(tools)
    return [host_tools.advice(absent, why=why)] if absent else []


def _rootless_problems() -> list[str]:
    """What stops a user namespace on this user's subordinate ids, as lines saying how to fix each."""
    user, problems = _user(), _missing(USER_NAMESPACE_TOOLS, why="they map the subordinate ids")
    short = [
        f"{path} ({have} ids)" if have else str(path)
        for path in (SUBUID, SUBGID)
        if (have := sum(r.count for r in _ranges(path))) < REQUIRED_IDS - 1
    ]
    if short:
        problems.append(
            f"no subordinate id range of at least {REQUIRED_IDS - 1} ids for {user} in {' and '.join(short)} "
            f"(they become ids 1..{REQUIRED_IDS - 1} inside): sudo usermod --add-subuids 100000-165535 "
            f"--add-subgids 100000-165535 {user}   (a range no other user has: see {SUBUID})"
        )
    sysctls = (
        ("user/max_user_namespaces", "0", "user namespaces are disabled", "user.max_user_namespaces=15000"),
        (
            "kernel/unprivileged_userns_clone",
            "0",
            "unprivileged user namespaces are disabled",
            "kernel.unprivileged_userns_clone=1",
        ),
        (
            "kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "AppArmor restricts unprivileged user namespaces",
            "kernel.apparmor_restrict_unprivileged_userns=0",
        ),
    )
    for name, bad, what, fix in sysctls:
        if (_read(pathlib.Path("/proc/sys") / name) or "").strip() == bad:
            problems.append(f"{what}: sudo sysctl -w {fix}")
    return problems


def _tool_problems() -> list[str]:
    return _missing(CONTAINER_TOOLS, why="every container gets a mount namespace and the pod's identity")


def _refuse(problems: list[str], *, intro: str) -> NoReturn:
    raise IsolationUnavailable("\n  - ".join([intro, *problems]))


def in_user_namespace() -> bool:
    """True inside a user namespace (whose ids are not the host's own)."""
    return (_read(pathlib.Path("/proc/self/uid_map")) or "").split() != ["0", "0", "4294967295"]


def real_root() -> bool:
    """Root of the host, not of a user namespace (where `make` runs everything for an ordinary user)."""
    return os.geteuid() == 0 and not in_user_namespace()


def require() -> str:
    """Check that this process can isolate containers (root with ids 0..65535, mount namespaces); says how."""
    if os.geteuid() != 0:
        _refuse(
            [f"prefix the command with `{THROUGH_RUN}` (make does), which needs root or a subordinate id range"],
            intro=f"the local cluster needs root or a user namespace; this process runs as {_user()} without one:",
        )
    problems = _tool_problems()
    for kind in ("uid", "gid"):
        covered = mapped_from_zero(_read(pathlib.Path(f"/proc/self/{kind}_map")) or "")
        if covered < REQUIRED_IDS:
            problems.append(
                f"this user namespace maps only {kind}s 0..{covered - 1}; {kind}s 0..{REQUIRED_IDS - 1} are needed: "
                f"start from outside it with `{THROUGH_RUN}`"
            )
    if not problems:
        unshare = shutil.which("unshare")
        assert unshare is not None
        trial = subprocess.run(
            [unshare, "-m", "--propagation", "private", "true"], capture_output=True, text=True, check=False
        )
        if trial.returncode != 0:
            problems.append(f"cannot create mount namespaces: {trial.stderr.strip()}")
    if problems:
        _refuse(problems, intro="containers of the local cluster cannot be isolated:")
    if in_user_namespace():
        uid_map = " ".join((_read(pathlib.Path("/proc/self/uid_map")) or "").split())
        return f"root of a user namespace (uid_map: {uid_map})"
    return "root"


def check(*, for_tests: bool = False) -> str:
    """The preflight: what `run` would do, or IsolationUnavailable naming what is missing; builds nothing.

    As root, what is missing from the host's packages is installed with apt-get first.
    """
    if os.geteuid() == 0:
        # Root sets itself up (a fresh machine, CI); as root the suite also runs the cluster as a temporary
        # unprivileged account in a user namespace (tests/integration/test_rootless.py).
        tools = CONTAINER_TOOLS | (USER_NAMESPACE_TOOLS | ACCOUNT_TOOLS if for_tests else {})
        try:
            host_tools.ensure(tools, why="the local cluster" + (" and its rootless test" if for_tests else ""))
        except host_tools.MissingTools as exc:
            _refuse([str(exc)], intro="root, but missing:")
        return "root: containers are isolated directly"
    problems = _tool_problems() + _rootless_problems()
    if problems:
        _refuse(problems, intro=f"not root, and {_user()} cannot have a user namespace on subordinate ids:")
    # The definitive test: enter the namespace for real and create a mount namespace in it.
    inside = ["unshare", "-m", "--propagation", "private", "true"]
    trial = subprocess.run(
        [sys.executable, "-m", "devcluster.isolation", "run", "--", *inside],
        capture_output=True,
        text=True,
        check=False,
        cwd=pathlib.Path(__file__).resolve().parent.parent,
    )
    if trial.returncode != 0:
        _refuse([trial.stderr.strip() or f"exit {trial.returncode}"], intro="entering a user namespace failed:")
    return f"{_user()}: containers run in a user namespace on subordinate ids ({SUBUID}, {SUBGID})"


def _enter_user_namespace() -> None:
    """Make this (single-threaded) process root of a new user namespace mapped by newuidmap/newgidmap."""
    uids, gids = id_map(os.getuid(), _ranges(SUBUID)), id_map(os.getgid(), _ranges(SUBGID))
    parent = os.getpid()
    ready_r, ready_w = os.pipe()
    # The maps of a process can only be written from outside its namespace: a child does it once we unshared.
    helper = os.fork()
    if helper == 0:
        os.close(ready_w)
        if not os.read(ready_r, 1):
            os._exit(1)  # the parent could not unshare
        codes = [
            subprocess.run([tool, str(parent), *args], check=False).returncode
            for tool, args in (("newuidmap", uids), ("newgidmap", gids))
        ]
        os._exit(1 if any(codes) else 0)
    os.close(ready_r)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER) != 0:
        errno = ctypes.get_errno()
        os.close(ready_w)
        os.waitpid(helper, 0)
        _refuse(
            [f"unshare(CLONE_NEWUSER): {os.strerror(errno)}", *_rootless_problems()],
            intro="the kernel refused a user namespace:",
        )
    os.write(ready_w, b"1")
    os.close(ready_w)
    _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        _refuse(
            [f"newuidmap {' '.join(uids)} / newgidmap {' '.join(gids)} failed (their message is above)"],
            intro="mapping the subordinate ids failed:",
        )
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.setgroups([])  # the host's supplementary groups are unmapped here (they would show as nobody)


def _cluster_simulator(root: pathlib.Path) -> int | None:
    """The pid of the node simulator of the cluster running at `root`, if it is one of this user's."""
    try:
        pid = int(json.loads((root / "state.json").read_text())["pids"]["devcluster.nodesim"])
        running = b"devcluster.nodesim" in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        mine = pathlib.Path(f"/proc/{pid}").stat().st_uid == os.getuid()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if running and mine else None


def _join_user_namespace(pid: int) -> bool:
    """Become root of the user namespace `pid` runs in (this user owns it); False if it is not another one."""
    try:
        if os.stat(f"/proc/{pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino:
            return False
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
    except OSError:
        return False
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWUSER) != 0:
            return False
    finally:
        os.close(fd)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.setgroups([])
    return True


def run(argv: Sequence[str], *, cluster: pathlib.Path | None = None) -> NoReturn:
    """Exec `argv` isolated: directly as root, else as root of a user namespace on the subordinate ids.

    With `cluster`, a cluster already running there is joined in its namespace (as rootless container
    engines join their pause process): tests look at its containers' processes, which only the
    namespace they run in may inspect. Otherwise the namespace is new; owners on disk read the same.
    """
    if os.geteuid() != 0:
        problems = _tool_problems() + _rootless_problems()
        if problems:
            _refuse(problems, intro=f"not root, and {_user()} cannot have a user namespace on subordinate ids:")
        pid = _cluster_simulator(cluster) if cluster is not None else None
        if pid is None or not _join_user_namespace(pid):
            _enter_user_namespace()
    os.execvp(argv[0], list(argv))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    checking = sub.add_parser("check", help="say how containers will be isolated, or what is missing")
    checking.add_argument("--for-tests", action="store_true", help="also what the test suite's rootless test needs")
    running = sub.add_parser("run", help="run a command isolated (as root: directly)")
    running.add_argument("--join-cluster", type=pathlib.Path, help="join the namespace of the cluster running here")
    running.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    try:
        if args.command == "check":
            print(f"[isolation] {check(for_tests=args.for_tests)}", file=sys.stderr)
            return 0
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            parser.error("run needs a command")
        run(argv, cluster=args.join_cluster)
    except IsolationUnavailable as exc:
        print(f"[isolation] error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
