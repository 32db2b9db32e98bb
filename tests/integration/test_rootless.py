"""The rootless path end to end: an unprivileged account with a subordinate id range runs the local cluster.

Run as real root (as CI does), the rest of the suite never enters the user namespace of
devcluster/isolation.py. Here a temporary account (created for the test, removed after)
starts its own control plane, so its node simulator runs in that account's user namespace;
the account fills the claims inside it with the same preparations as the root suite
(test_operator_verdicts.py), and the real operator must give the same verdicts: Ready,
NeedsInit, NeedsReauth, uid-1000 files, with the claim mounted read-only and unchanged, and
the owners a scenario wrote seen the same way inside containers. An account without a range
is refused before anything starts. When the suite itself runs rootless, every integration
test already is this proof, and these are skipped.

The account reuses root's binaries read-only (hard links into its own cache, a copy across
file systems) instead of a 7-minute build, and runs the suite's interpreter when it can
reach it, else the system Python of the same version with the suite's site-packages. It runs
a copy of the repository's code and of those site-packages in its own home
(devcluster/reachable.py): the checkout and its virtualenv may be in a private directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from devcluster import build, cluster, isolation, reachable
from tests.integration import slots, test_operator_verdicts
from tests.integration.kubewait import NotYet, read_or_none, wait_for
from tests.integration.operator_process import OperatorProcess
from tools import image as image_tool

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not isolation.real_root(),
        reason="the suite runs rootless itself: every integration test is the rootless proof",
    ),
]

SETPRIV = shutil.which("setpriv") or "setpriv"
# What the account runs of the checkout: the cluster (with the CRDs and the images it stages), and the claim
# preparations of the root suite.
CHECKOUT = ("devcluster", "operator", "tests", "tools", "crds")
CASES = ["codex-valid", "claude-valid", "codex-missing", "codex-corrupt", "codex-uid-1000-home", "codex-uid-1000-file"]
NAMESPACE = "rootless"
OLD_UID = 1000

# Runs as the account inside its user namespace: each claim prepared exactly as the root suite does.
PREPARE = r"""
import json, os, pathlib, sys
from tests.claimdirs import snapshot
from tests.integration.test_operator_verdicts import CASES
volumes = pathlib.Path(sys.argv[1])
for case in sys.argv[2:]:
    home = volumes / case
    home.mkdir(parents=True)
    os.chown(home, 10001, 10001)
    home.chmod(0o750)
    CASES[case][2](home)
"""
SNAPSHOT = r"""
import json, pathlib, sys
from tests.claimdirs import snapshot
print(json.dumps({case: snapshot(pathlib.Path(sys.argv[1]) / case) for case in sys.argv[2:]}))
"""
# Inside a container on the read-only claim: who it runs as, the owners it sees, and whether it can write.
INSIDE = r"""
import errno, json, os
home = "/home/codex"
def owner(path):
    st = os.stat(path)
    return [st.st_uid, st.st_gid]
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
report = {
    "identity": [os.getuid(), os.getgid(), sorted(os.getgroups())],
    "home": owner(home),
    "codex-dir": owner(home + "/.codex"),
    "auth-file": owner(home + "/.codex/auth.json"),
    "create": attempt(lambda: open(home + "/new-file", "w")),
    "mkdir": attempt(lambda: os.mkdir(home + "/new-dir")),
}
open("/dev/termination-log", "w").write(json.dumps(report))
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Account:
    name: str
    uid: int
    gid: int
    home: pathlib.Path
    python: str
    env: dict[str, str]

    @property
    def repo(self) -> pathlib.Path:
        """The account's copy of the checkout (CHECKOUT)."""
        return self.home / "repo"

    def run(self, *argv: str, isolated: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run as the account; `isolated`: inside its user namespace, as the make targets do."""
        prefix = [self.python, "-m", "devcluster.isolation", "run", "--"] if isolated else []
        return subprocess.run(
            [SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *prefix, *argv],
            env=self.env,
            cwd=self.repo,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ranges(self) -> list[isolation.IdRange]:
        return isolation.parse_subordinate(isolation.SUBUID.read_text(), user=self.name, uid=self.uid)


def _command(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"


def _python_for(account: Account, *, isolated: bool) -> Account:
    """The suite's interpreter if the account can run it (where it will), else the system one of the same version."""
    copies = []
    for index, path in enumerate(
        dict.fromkeys(map(pathlib.Path, [sysconfig.get_paths()[k] for k in ("purelib", "platlib")]))
    ):
        into = account.home / f"packages-{index}"
        into.mkdir()
        reachable.copy_trees(path.parent, into, trees=(path.name,), link=True)
        copies.append(str(into / path.name))
    env = {**account.env, "PYTHONPATH": os.pathsep.join([str(account.repo), *copies])}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    tried = []
    for candidate in (sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")):
        if candidate is None:
            continue
        found = dataclasses.replace(account, python=candidate, env=env)
        proc = found.run(candidate, "-c", "import kubernetes, cryptography, devcluster.cluster", isolated=isolated)
        if proc.returncode == 0:
            return found
        tried.append(f"{candidate}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    pytest.fail(f"account {account.name} cannot run a {version} with the suite's packages ({'; '.join(tried)})")


def _share_binaries(account: Account) -> None:
    """Root's pinned binaries in the account's cache, read-only: hard links (a copy across file systems)."""
    cache = account.home / ".cache" / "slot-operator"
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        source = build.binary_path(build.COMPONENTS[name])
        target = cache / source.relative_to(build.cache_root())
        target.parent.mkdir(parents=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    for directory in [cache.parent, *cache.parent.rglob("*")]:
        if directory.is_dir():
            os.chown(directory, account.uid, account.gid)


@contextlib.contextmanager
def temporary_account(*, with_range: bool) -> Iterator[Account]:
    """A fresh unprivileged account (a normal one gets useradd's subordinate ranges, a system one none)."""
    name = f"slotrl{uuid.uuid4().hex[:8]}"
    home = pathlib.Path(tempfile.mkdtemp(prefix=f"{name}-"))
    kind = [] if with_range else ["--system"]
    _command("useradd", *kind, "--no-create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin", name)
    try:
        entry = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True).stdout
        uid = int(entry)
        gid = int(subprocess.run(["id", "-g", name], capture_output=True, text=True, check=True).stdout)
        os.chown(home, uid, gid)
        home.chmod(0o755)
        env = {
            "HOME": str(home),
            "USER": name,
            "LOGNAME": name,
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "PYTHONUNBUFFERED": "1",
        }
        account = Account(name=name, uid=uid, gid=gid, home=home, python=sys.executable, env=env)
        if with_range and not account.ranges():
            pytest.fail(f"useradd gave {name} no subordinate id range (is {isolation.SUBUID} missing?)")
        account.repo.mkdir()
        reachable.copy_trees(cluster.REPO, account.repo, trees=CHECKOUT)
        yield _python_for(account, isolated=with_range)
    finally:
        _kill_processes_of(name)
        # userdel also drops its subordinate ranges; it refuses while a killed process is not yet reaped.
        wait_for(
            lambda: subprocess.run(["userdel", name], capture_output=True, check=False).returncode in (0, 6),
            timeout=30,
            message=f"userdel {name}",
        )
        shutil.rmtree(home, ignore_errors=True)


def _kill_processes_of(name: str) -> None:
    """Whatever the account still runs (a failed test's cluster): it is this test's own, and blocks userdel."""
    uid = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=False).stdout.strip()
    for entry in pathlib.Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if entry.name.isdigit() and entry.stat().st_uid == int(uid):
                os.kill(int(entry.name), signal.SIGKILL)


# The operator's image for the audit and the migration: the directory image, which runs the repository's package
# with the account's python3 (the OCI image's unpacking needs tarfile filters, which Python 3.11.2 lacks).
AUDIT_IMAGE = image_tool.DIRECTORY_IMAGE


def _slot_verdicts(api: client.ApiClient, tmp_path: pathlib.Path, kubeconfig: pathlib.Path) -> None:
    """The verdicts root gets; the ownership audit (an init container) runs in every probe pod."""
    args = ["--retry-base=2s", f"--audit-image={AUDIT_IMAGE}"]
    operator = OperatorProcess(
        kubeconfig=kubeconfig, namespaces=[NAMESPACE], log_path=tmp_path / "operator.log", args=args
    ).start()
    try:
        for case in CASES:
            agent, image, _, _, _ = test_operator_verdicts.CASES[case]
            slots.create_slot(api, NAMESPACE, case, claim=case, agent=agent, image=image)
        for case in CASES:
            _, _, _, phase, exit_code = test_operator_verdicts.CASES[case]
            slot = slots.wait_verdict(api, NAMESPACE, case, phase, timeout=120)
            assert slot["status"]["lastProbe"]["exitCode"] == exit_code, case
            owned = "OwnedByOtherUser" if case.startswith("codex-uid-1000") else "OwnerMatches"
            assert slots.condition(slot, "OwnershipMatches")["reason"] == owned, case
    finally:
        operator.stop()


def _migrate(api: client.ApiClient, tmp_path: pathlib.Path, kubeconfig: pathlib.Path, case: str) -> None:
    """The ownership migration, approved: root of the user namespace with CAP_CHOWN re-owns uid 1000's files."""
    args = ["--retry-base=2s", f"--audit-image={AUDIT_IMAGE}", "--allow-ownership-migration"]
    operator = OperatorProcess(
        kubeconfig=kubeconfig, namespaces=[NAMESPACE], log_path=tmp_path / "operator-migration.log", args=args
    ).start()
    try:
        approval = slots.get_slot(api, NAMESPACE, case)["status"]["ownership"]["approval"]
        request = {"metadata": {"annotations": {"woved.dev/ownership-migration-requested-at": approval}}}
        slots.patch_slot(api, NAMESPACE, case, request)
        slot = slots.wait_verdict(api, NAMESPACE, case, "Ready", timeout=120)
        assert slot["status"]["lastOwnershipMigration"]["reason"] == "Migrated"
    finally:
        operator.stop()


def _inside_view(core: client.CoreV1Api, claim: str) -> dict[str, Any]:
    """What a container running as 10001 sees on the read-only claim."""
    core.create_namespaced_pod(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "inside"},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001},
                "containers": [
                    {
                        "name": "look",
                        "image": slots.CODEX_IMAGE,
                        "command": ["python3", "-c", INSIDE],
                        "volumeMounts": [{"name": "home", "mountPath": "/home/codex", "readOnly": True}],
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    }
                ],
                "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": claim}}],
            },
        },
    )

    def terminated() -> client.V1ContainerStateTerminated | NotYet:
        pod = core.read_namespaced_pod("inside", NAMESPACE)
        for status in pod.status.container_statuses or []:
            if status.state and status.state.terminated:
                return status.state.terminated
        return NotYet(pod.status.phase)

    state = wait_for(terminated, timeout=60, message="the inside-view pod to finish")
    assert state.exit_code == 0, state.message
    return dict(json.loads(state.message))


def _log_tails(root: pathlib.Path) -> str:
    """The end of every control-plane log, for a failure message (the account's home goes with the test)."""
    return "".join(f"\n--- {log} ---\n{log.read_text(errors='replace')[-2000:]}" for log in root.glob("logs/*.log"))


def test_unprivileged_account_gets_the_verdicts_root_gets(tmp_path: pathlib.Path) -> None:
    with temporary_account(with_range=True) as account:
        _share_binaries(account)
        root = account.home / "cluster"
        started = account.run(
            account.python, "-m", "devcluster.cluster", "up", f"--root={root}", isolated=True, timeout=300
        )
        try:
            assert started.returncode == 0, started.stderr + _log_tails(root)
            state = json.loads((root / "state.json").read_text())
            nodesim = int(state["pids"]["devcluster.nodesim"])
            # The simulator runs as the account, root of a user namespace on its subordinate ids.
            status = pathlib.Path(f"/proc/{nodesim}/status").read_text()
            assert f"Uid:\t{account.uid}\t" in status
            (subids,) = account.ranges()
            uid_map = pathlib.Path(f"/proc/{nodesim}/uid_map").read_text().split()
            assert uid_map == ["0", str(account.uid), "1", "1", str(subids.start), str(subids.count)]

            kubeconfig = root / "kubeconfig"
            api = config.new_client_from_config(config_file=str(kubeconfig))
            core = client.CoreV1Api(api)
            core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
            wait_for(
                lambda: read_or_none(core.read_namespaced_service_account, "default", NAMESPACE),
                timeout=60,
                message="the default ServiceAccount",
            )
            volumes = root / "volumes" / NAMESPACE
            prepared = account.run(account.python, "-c", PREPARE, str(volumes), *CASES, isolated=True)
            assert prepared.returncode == 0, prepared.stderr
            # On disk the owners are subordinate ids: uid N inside is start + N - 1 outside.
            auth = volumes / "codex-uid-1000-file" / ".codex" / "auth.json"
            assert (auth.stat().st_uid, auth.parent.stat().st_uid) == (subids.start + 999, subids.start + 10000)

            def snapshots() -> object:
                proc = account.run(account.python, "-c", SNAPSHOT, str(volumes), *CASES, isolated=True)
                assert proc.returncode == 0, proc.stderr
                return json.loads(proc.stdout)

            before = snapshots()
            for case in CASES:
                core.create_namespaced_persistent_volume_claim(
                    NAMESPACE,
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": {"name": case},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
                    },
                )
            _slot_verdicts(api, tmp_path, kubeconfig)

            seen = _inside_view(core, "codex-uid-1000-file")
            assert seen == {
                "identity": [10001, 10001, [10001]],
                "home": [10001, 10001],
                "codex-dir": [10001, 10001],
                "auth-file": [1000, 1000],
                "create": "EROFS",
                "mkdir": "EROFS",
            }
            assert snapshots() == before, "a probe changed a claim"

            migrated = "codex-uid-1000-home"
            _migrate(api, tmp_path, kubeconfig, migrated)
            # Inside the namespace: exactly uid 1000's entries now belong to 10001, nothing else changed.
            expected = json.loads(json.dumps(before))
            for entry in expected[migrated].values():
                if entry[1:3] == [OLD_UID, OLD_UID]:
                    entry[1:3] = [10001, 10001]
            assert expected[migrated] != before[migrated]  # type: ignore[index]
            assert snapshots() == expected
            api.close()
        finally:
            stopped = account.run(account.python, "-m", "devcluster.cluster", "down", f"--root={root}")
            if stopped.returncode != 0:
                cluster.down(root)  # as root, so nothing of the account outlives the test
        # Claims hold files of subordinate ids: the account removes them from inside its namespace.
        removed = account.run("rm", "-rf", str(root), isolated=True)
        assert removed.returncode == 0, removed.stderr
        assert not root.exists()


def test_account_without_subordinate_ids_is_refused_before_anything_starts() -> None:
    with temporary_account(with_range=False) as account:
        root = account.home / "cluster"
        preflight = account.run(account.python, "-m", "devcluster.isolation", "check")
        up = account.run(account.python, "-m", "devcluster.cluster", "up", f"--root={root}", isolated=True)
        for proc in (preflight, up):
            assert proc.returncode == 1
            assert f"no subordinate id range of at least 65535 ids for {account.name}" in proc.stderr
            assert f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {account.name}" in proc.stderr
        assert not root.exists()
