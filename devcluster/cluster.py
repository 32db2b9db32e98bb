"""Start and stop the local control plane: etcd, kube-apiserver, kube-controller-manager, node simulator.

Everything listens on loopback at free ports; state lives in `.cluster/` at the
repository root. Processes run in their own sessions so `make cluster-up` can
return while they keep running; their pids are recorded in `.cluster/state.json`
and `down()` (or the next `up()` after a crash) stops exactly those processes.

Containers run the repository's images from a copy every uid can reach (devcluster/reachable.py),
made by `up` and removed by `down`: the checkout itself may be in a private directory.

Without root, `up` must run inside `python -m devcluster.isolation run` (the make targets
do that): every process it starts, the node simulator included, inherits that user namespace.

Usage: python -m devcluster.cluster up|down|env|status
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

from devcluster import build, isolation, pki, reachable

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO / ".cluster"
NODES = ("sim-node-a", "sim-node-b")
# API calls made as a ServiceAccount of this namespace are written to logs/audit.log (see `make bench`).
AUDITED_NAMESPACE = "audited"
# What probes need (Jobs, their pods' garbage collection, TTL cleanup, namespaces and service accounts)
# and what the chart's operator Deployment needs (rollouts through ReplicaSets).
CONTROLLERS = (
    "job-controller",
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    # Without it no PVC finalizer is ever removed and namespaces that had claims never finish deleting.
    "persistentvolumeclaim-protection-controller",
    "pod-garbage-collector-controller",
    # Type-checks ValidatingAdmissionPolicies against the schemas they match (status.typeChecking): the chart's
    # policy is tested to have no CEL type warnings.
    "validatingadmissionpolicy-status-controller",
)


class ClusterError(RuntimeError):
    """The control plane could not be started; the message says which part and where its log is."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cluster:
    root: pathlib.Path
    api_url: str
    # The image store the node simulator runs images from: a copy of devcluster/images every uid can reach
    # (devcluster/reachable.py). Tests add images here, not in the checkout.
    images_dir: pathlib.Path
    nodes: tuple[str, ...] = NODES

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.root / "kubeconfig"

    @property
    def volumes_dir(self) -> pathlib.Path:
        return self.root / "volumes"

    @property
    def audit_log(self) -> pathlib.Path:
        return self.root / "logs" / "audit.log"

    @property
    def logs_dir(self) -> pathlib.Path:
        return self.root / "logs"

    @property
    def registry_faults(self) -> pathlib.Path:
        """{image reference: error}: the node simulator's pulls of those images fail with that error."""
        return self.root / "registry-faults.json"


def _log(message: str) -> None:
    print(f"[devcluster] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _state_path(root: pathlib.Path) -> pathlib.Path:
    return root / "state.json"


def _read_state(root: pathlib.Path) -> dict[str, object] | None:
    try:
        return dict(json.loads(_state_path(root).read_text()))
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int, marker: str) -> bool:
    """True if `pid` runs and is still our process (pids get reused after a crash)."""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline


def _ssl_context(root: pathlib.Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root / "pki" / "ca.crt"))
    context.load_cert_chain(str(root / "pki" / "admin.crt"), str(root / "pki" / "admin.key"))
    return context


def _get(root: pathlib.Path, api_url: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{api_url}{path}", context=_ssl_context(root), timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ssl.SSLError):
        return 0, b""


def _wait(what: str, check: object, *, timeout: float, log: pathlib.Path | None = None) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    hint = f"; see {log}" if log else ""
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{hint}")


def _spawn(root: pathlib.Path, name: str, args: list[str], *, env: dict[str, str] | None = None) -> int:
    log = root / "logs" / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=root,
            env=env,
        )
    return proc.pid


def _write_kubeconfig(root: pathlib.Path, api_url: str) -> None:
    def b64(name: str) -> str:
        return base64.b64encode((root / "pki" / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "devcluster", "cluster": {"server": api_url, "certificate-authority-data": b64("ca.crt")}}
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")},
            }
        ],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": "admin"}}],
        "current-context": "devcluster",
    }
    path = root / "kubeconfig"
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def _kubectl(root: pathlib.Path, *args: str) -> str:
    try:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(root / "kubeconfig"), *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise ClusterError("kubectl is not on PATH (it applies the CRDs); install kubectl >= 1.31") from None
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def status(root: pathlib.Path = DEFAULT_ROOT) -> Cluster | None:
    """The running cluster at `root`, or None when any of its processes is gone or the API is not ready."""
    state = _read_state(root)
    if not state:
        return None
    pids = state.get("pids")
    if not isinstance(pids, dict) or not all(_alive(int(pid), name) for name, pid in pids.items()):
        return None
    api_url, stage = str(state["api_url"]), state.get("stage")
    if not isinstance(stage, str) or _get(root, api_url, "/readyz")[0] != 200:
        return None
    return Cluster(root=root, api_url=api_url, images_dir=_images_dir(pathlib.Path(stage)))


def down(root: pathlib.Path = DEFAULT_ROOT) -> None:
    """Stop every process recorded in `root`'s state, newest first; safe to call on a dead or absent cluster."""
    state = _read_state(root) or {}
    pids = state.get("pids") if isinstance(state.get("pids"), dict) else {}
    assert isinstance(pids, dict)
    for name, pid in reversed(list(pids.items())):
        if not _alive(int(pid), name):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(int(pid), name) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(int(pid), name):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)
    stage = state.get("stage")
    if isinstance(stage, str):
        reachable.remove(pathlib.Path(stage))
    with contextlib.suppress(FileNotFoundError):
        _state_path(root).unlink()


def _write_audit_policy(root: pathlib.Path) -> pathlib.Path:
    """Metadata-level audit of ServiceAccounts in AUDITED_NAMESPACE only: nothing else is logged."""
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Metadata", "userGroups": [f"system:serviceaccounts:{AUDITED_NAMESPACE}"]},
            {"level": "None"},
        ],
    }
    path = root / "audit-policy.json"
    path.write_text(json.dumps(policy))
    return path


def _images_dir(stage: pathlib.Path) -> pathlib.Path:
    return stage / "devcluster" / "images"


def _binary(name: str) -> str:
    return str(build.bin_dir() / name)


def up(root: pathlib.Path = DEFAULT_ROOT) -> Cluster:
    """Start the control plane (or return the one already running at `root`); returns once /readyz is ok.

    Refuses unless this process can isolate containers and own claim files (root, or inside
    `python -m devcluster.isolation run`): the node simulator and whoever fills claims run in it.
    """
    try:
        how = isolation.require()
    except isolation.IsolationUnavailable as exc:
        raise ClusterError(str(exc)) from None
    running = status(root)
    if running:
        return running
    if _read_state(root) is not None:
        _log(f"recovering stale state in {root}")
    down(root)
    build.ensure(["etcd", "kube-apiserver", "kube-controller-manager"])
    if root.exists():
        # Volumes hold files owned by other uids (subordinate ids when rootless: removable from inside the user
        # namespace only, where this runs); read-only bind mounts are gone with their process.
        shutil.rmtree(root)
    for sub in ("pki", "etcd", "logs", "volumes"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    pki.generate(root / "pki")
    pids: dict[str, int] = {}
    try:
        stage = reachable.stage(REPO)
    except reachable.Unreachable as exc:
        raise ClusterError(str(exc)) from None

    def record(api_url: str = "") -> None:
        _state_path(root).write_text(json.dumps({"pids": pids, "api_url": api_url, "stage": str(stage)}))

    record()
    try:
        etcd_port, etcd_peer, api_port = _free_port(), _free_port(), _free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        pids["etcd"] = _spawn(
            root,
            "etcd",
            [
                _binary("etcd"),
                "--name=devcluster",
                f"--data-dir={root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=devcluster=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        record()
        p = root / "pki"
        api_url = f"https://127.0.0.1:{api_port}"
        pids["kube-apiserver"] = _spawn(
            root,
            "kube-apiserver",
            [
                _binary("kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=RBAC",
                # As real clusters run (kubeadm, kind, managed ones): privileged pods are the admission chain's
                # business, so tests see the chart's ValidatingAdmissionPolicy refuse them, not this flag.
                "--allow-privileged=true",
                "--service-cluster-ip-range=10.0.0.0/24",
                f"--cert-dir={p}",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
                "--event-ttl=1h",
                # Only identities in the audited namespace are logged (`make bench` counts their API calls).
                f"--audit-policy-file={_write_audit_policy(root)}",
                f"--audit-log-path={root / 'logs' / 'audit.log'}",
                "--audit-log-format=json",
                "--audit-log-maxsize=1024",
                "--v=1",
            ],
        )
        record(api_url)
        _wait(
            "kube-apiserver /readyz",
            lambda: _get(root, api_url, "/readyz")[0] == 200,
            timeout=180,
            log=root / "logs" / "kube-apiserver.log",
        )
        _write_kubeconfig(root, api_url)
        # CRDs before the controller manager: its garbage collector rescans new types only every 30 s.
        _kubectl(root, "apply", "--server-side", "-f", str(REPO / "crds"))
        _kubectl(root, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
        pids["kube-controller-manager"] = _spawn(
            root,
            "kube-controller-manager",
            [
                _binary("kube-controller-manager"),
                f"--kubeconfig={root / 'kubeconfig'}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--concurrent-job-syncs=10",
                "--v=1",
            ],
        )
        record(api_url)
        pids["devcluster.nodesim"] = _spawn(
            root,
            "devcluster.nodesim",
            [
                sys.executable,
                "-m",
                "devcluster.nodesim",
                f"--kubeconfig={root / 'kubeconfig'}",
                f"--volumes-dir={root / 'volumes'}",
                f"--images-dir={_images_dir(stage)}",
                f"--oci-dir={REPO / 'dist'}",
                f"--registry-faults={root / 'registry-faults.json'}",
                f"--nodes={','.join(NODES)}",
                # Not under /tmp: a pod mounting an emptyDir at /tmp would hide its own scratch files.
                f"--state-dir={root / 'nodesim'}",
                f"--log-dir={root / 'logs' / 'pods'}",
            ],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
        )
        record(api_url)
        # The service-account controller creating "default" shows the controller manager is working.
        _wait(
            "kube-controller-manager (default ServiceAccount)",
            lambda: _get(root, api_url, "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            timeout=120,
            log=root / "logs" / "kube-controller-manager.log",
        )
        _wait(
            "node simulator (Node objects)",
            lambda: all(_get(root, api_url, f"/api/v1/nodes/{node}")[0] == 200 for node in NODES),
            timeout=60,
            log=root / "logs" / "devcluster.nodesim.log",
        )
        for name, pid in pids.items():
            if not _alive(pid, name):
                raise ClusterError(f"{name} exited during start-up; see {root / 'logs' / (name + '.log')}")
    except BaseException:
        down(root)
        raise
    _log(f"control plane ready in {time.monotonic() - started:.1f}s at {api_url} (containers isolated as {how})")
    return Cluster(root=root, api_url=api_url, images_dir=_images_dir(stage))


def env_lines(root: pathlib.Path = DEFAULT_ROOT) -> str:
    return f"export KUBECONFIG={root / 'kubeconfig'}\nexport PATH={build.bin_dir()}:$PATH\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="Local control plane for slot-operator tests and the demo.")
    parser.add_argument("command", choices=["up", "down", "env", "status"])
    parser.add_argument("--root", type=pathlib.Path, default=DEFAULT_ROOT)
    args = parser.parse_args()
    root: pathlib.Path = args.root.resolve()
    try:
        if args.command == "up":
            cluster = up(root)
            print(f"kubeconfig: {cluster.kubeconfig}")
        elif args.command == "down":
            down(root)
        elif args.command == "env":
            print(env_lines(root), end="")
        else:
            running = status(root)
            print(f"running at {running.api_url}" if running else "not running")
            return 0 if running else 1
    except (ClusterError, build.BuildError) as exc:
        _log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
