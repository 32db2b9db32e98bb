"""`make demo`: local control plane + node simulator + operator + examples/, ending in `kubectl get slots`.

Fills each example claim's directory with the files its scenario needs, applies
`examples/`, runs the operator until every Slot shows its expected outcome, prints
`kubectl get slots -o wide`, and tears down what it started. Exit 0 only when
every example reached its expected outcome. `--keep-running` (`make dev`) stays up
until interrupted, for trying things by hand.

`codex-old-uid` tells the uid-pin story: its home was written by the old image, which ran as
uid 1000, and the Slot (still as 1000:1000) is Ready. The next tag runs as uid 10001. The demo
checks it before it rolls (`kubectl slot check`, a SlotImageCheck): it would be NeedsInit, owned
by 1000:1000. It moves the Slot to 10001:10001 (NeedsInit, and the ownership audit in its probe
says why), plays the person who approves the ownership migration (the annotation), sees the Slot
Ready, checks the tag again (every Slot would be Ready) and only then rolls it.

`--operator=process` (default) runs the operator as a host process with the admin
kubeconfig; `--operator=pod` (`make demo OPERATOR=pod`) runs it as users do: `helm
install` of the chart with the image `make image` built (localhost/slot-operator:dev),
the node simulator running the Deployment's pod from that image, and `helm uninstall`
at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from devcluster import build, cluster
from tools import image

NAMESPACE = "slots-demo"
EXAMPLES = cluster.REPO / "examples"
AGENT_UID = 10001
OLD_UID = 1000
VALID_CODEX = json.dumps({"tokens": {"access_token": "demo", "refresh_token": "demo"}, "last_refresh": "2026-11-01"})

MIGRATED = "codex-old-uid"
CANDIDATE = "local/agent-shell:codex-next"  # the next tag: it runs as uid 10001
PLUGIN = pathlib.Path(sys.executable).parent / "kubectl-slot"
# Slot → (phase, ProbeSucceeded) it must reach first (MIGRATED: as uid 1000, before the candidate is checked).
EXPECTED = {
    "codex-ok": ("Ready", "True"),
    "claude-ok": ("Ready", "True"),
    "codex-fresh": ("NeedsInit", "True"),
    "codex-old-uid": ("Ready", "True"),
    "codex-corrupt": ("NeedsReauth", "True"),
    "codex-broken-image": ("ImageBroken", "True"),
    "codex-missing-tag": ("ImageBroken", "True"),
    "codex-crashing-probe": ("Pending", "False"),
}
# Why a Slot above may have no verdict (ProbeSucceeded False); for any other Slot, or another reason, no verdict
# will come: the demo stops at once and says why instead of waiting for its deadline.
NO_VERDICT_BECAUSE = {"codex-crashing-probe": "ProbeCrashed"}
LOG_LINES = 5


def _write(home: pathlib.Path, relative: str, content: str, *, uid: int) -> None:
    path = home / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(0o600)
    path.parent.chmod(0o700)
    for item in (path.parent, path):
        os.chown(item, uid, uid)


def _old_image_home(home: pathlib.Path) -> None:
    """What the uid-1000 image left: its home (0755), ~/.codex (0700) and auth.json (0600), all 1000:1000."""
    _write(home, ".codex/auth.json", VALID_CODEX, uid=OLD_UID)
    os.chown(home, OLD_UID, OLD_UID)
    home.chmod(0o755)


SEEDS: dict[str, Callable[[pathlib.Path], None]] = {
    "codex-ok-home": lambda home: _write(home, ".codex/auth.json", VALID_CODEX, uid=AGENT_UID),
    "claude-ok-home": lambda home: _write(home, ".claude/.credentials.json", '{"claudeAiOauth": {}}', uid=AGENT_UID),
    "codex-fresh-home": lambda home: None,
    "codex-old-uid-home": _old_image_home,
    "codex-corrupt-home": lambda home: _write(home, ".codex/auth.json", '{"tokens": ', uid=AGENT_UID),
}


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _kubectl(kubeconfig: pathlib.Path, *args: str, capture: bool = True) -> str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=capture, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout or ""


def _outcomes(kubeconfig: pathlib.Path) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]:
    """Slot -> (phase, ProbeSucceeded), for MIGRATED also whether the audit has diagnosed the uid; and
    Slot -> (why, probe Job) when it has no verdict and will get none (a probe failed where none should)."""
    data = json.loads(_kubectl(kubeconfig, "get", "slots", "-n", NAMESPACE, "-o", "json"))
    seen, stuck = {}, {}
    for item in data["items"]:
        status = item.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or ()}
        probe = conditions.get("ProbeSucceeded") or {}
        name = item["metadata"]["name"]
        diagnosed = (conditions.get("OwnershipMatches") or {}).get("reason") == "OwnedByOtherUser"
        seen[name] = (status.get("phase", ""), probe.get("status", ""))
        if name == MIGRATED and status.get("phase") == "NeedsInit" and not diagnosed:
            seen[name] = (status.get("phase", ""), "(not yet diagnosed)")
        if probe.get("status") == "False" and probe.get("reason") != NO_VERDICT_BECAUSE.get(name):
            stuck[name] = (
                f"{probe.get('reason')}: {probe.get('message')}",
                (status.get("lastProbe") or {}).get("jobName", ""),
            )
    return seen, stuck


def _log_tails(kubeconfig: pathlib.Path, job: str) -> list[str]:
    """The last lines of every container log of the newest pod of `job` (the cluster keeps them next to its
    admin kubeconfig, in logs/pods/)."""
    logs = kubeconfig.parent / "logs" / "pods"
    pods = sorted(logs.glob(f"{NAMESPACE}_{job}-*.log"), key=lambda p: p.stat().st_mtime) if job else []
    newest = pods[-1].name.rsplit("_", 1)[0] if pods else None
    lines = []
    for log in (p for p in pods if p.name.rsplit("_", 1)[0] == newest):
        tail = log.read_text(errors="replace").strip().splitlines()[-LOG_LINES:]
        lines += [f"  {log.name}:", *(f"    {line}" for line in tail or ["(empty)"])]
    return lines


class _HostOperator:
    """The operator as a process on this machine, with the admin kubeconfig."""

    def __init__(self, running: cluster.Cluster) -> None:
        self.log_path = running.logs_dir / "operator.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "slot_operator", f"--namespace={NAMESPACE}", "--metrics-port=0",
             "--health-port=0", "--retry-base=30s", f"--audit-image={image.operator_image()}",
             "--allow-ownership-migration"],
            env={**os.environ, "KUBECONFIG": str(running.kubeconfig)},
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        _say(f"operator started (log: {self.log_path})")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class _ChartOperator:
    """The operator as users run it: the Helm chart's Deployment, its pod run from localhost/slot-operator:dev."""

    RELEASE = "slot-operator"

    def __init__(self, running: cluster.Cluster) -> None:
        if not image.ARCHIVE.is_file():
            raise SystemExit(f"{image.ARCHIVE} is missing: run `make image` first (make demo OPERATOR=pod does)")
        self.kubeconfig = running.kubeconfig
        self.helm = str(build.tool("helm"))
        repository, tag = image.IMAGE.rsplit(":", 1)
        # Pods share the host's network in the simulator: free ports, so several clusters can run side by side.
        sets = [f"image.repository={repository}", f"image.tag={tag}", "image.pullPolicy=Never",
                f"watchNamespaces={{{NAMESPACE}}}", f"health.port={_free_port()}", f"metrics.port={_free_port()}",
                "operator.retryBase=30s", "operator.logFormat=text", "ownershipMigration.enabled=true"]  # fmt: skip
        self._helm("upgrade", "--install", self.RELEASE, str(cluster.REPO / "charts" / "slot-operator"),
                   "--namespace", NAMESPACE, "--create-namespace", "--wait", "--timeout", "180s",
                   *(item for value in sets for item in ("--set", value)))  # fmt: skip
        selector = f"app.kubernetes.io/instance={self.RELEASE}"
        pods = _kubectl(self.kubeconfig, "get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "name").split()
        _say(f"chart installed, Deployment available; operator {' '.join(pods)} (log: {running.logs_dir / 'pods'})")

    def _helm(self, *args: str) -> None:
        proc = subprocess.run([self.helm, *args, "--kubeconfig", str(self.kubeconfig)], capture_output=True,
                              text=True, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"helm {args[0]}: {proc.stderr.strip()}")

    def alive(self) -> bool:
        return True  # the Deployment replaces a pod that dies; the wait's deadline covers a broken image

    def stop(self) -> None:
        self._helm("uninstall", self.RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "120s")


def _reach(
    kubeconfig: pathlib.Path, expected: dict[str, tuple[str, str]], *, deadline: float, alive: Callable[[], bool]
) -> bool:
    """Wait until every Slot shows its expected outcome, or one shows it will get none (then say why at once);
    print `kubectl get slots -o wide` either way."""
    seen: dict[str, tuple[str, str]] = {}
    stuck: dict[str, tuple[str, str]] = {}
    reached = False
    while time.monotonic() < deadline and alive():
        seen, stuck = _outcomes(kubeconfig)
        stuck = {name: why for name, why in stuck.items() if name in expected}
        if stuck:
            break
        if all(seen.get(name) == want for name, want in expected.items()):
            reached = True
            break
        time.sleep(1)
    print(_kubectl(kubeconfig, "get", "slots", "-n", NAMESPACE, "-o", "wide"), flush=True)
    for name, (why, job) in stuck.items():
        _say(f"{name}: no verdict will come: {why}" + (f"; its probe pod's logs (Job {job}):" if job else ""))
        for line in _log_tails(kubeconfig, job):
            print(line, flush=True)
    for name, want in expected.items():
        if seen.get(name) != want and name not in stuck:
            _say(f"{name}: expected phase/ProbeSucceeded {want}, got {seen.get(name)}")
    return reached


def _check(kubeconfig: pathlib.Path, name: str) -> int:
    """Check the candidate against the uid-pin Slot as a reviewer of the tag bump would; its exit code."""
    command = [str(PLUGIN), "check", "--image", CANDIDATE, "--as", f"{AGENT_UID}:{AGENT_UID}", "-l",
               "demo=uid-pin", "--name", name, "-n", NAMESPACE, "--kubeconfig", str(kubeconfig), "--wait",
               "--timeout", "2m"]  # fmt: skip
    _say(f"kubectl slot check --image {CANDIDATE} --as {AGENT_UID}:{AGENT_UID} -l demo=uid-pin --wait")
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    print(proc.stdout + proc.stderr, flush=True)
    return proc.returncode


def _uid_pin(kubeconfig: pathlib.Path, *, deadline: float, alive: Callable[[], bool]) -> bool:
    """Check the next tag before it rolls, do what the check says, check again, roll."""
    if _check(kubeconfig, "uid-pin-before") != 65:
        _say(f"the check of {CANDIDATE} should have said NeedsInit (exit 65)")
        return False
    _say(f"moving {MIGRATED} to uid {AGENT_UID} with the image, as the check says")
    _kubectl(kubeconfig, "patch", "slot", MIGRATED, "-n", NAMESPACE, "--type=merge",
             "-p", json.dumps({"spec": {"runAsUser": AGENT_UID, "runAsGroup": AGENT_UID}}))  # fmt: skip
    if not _reach(kubeconfig, {MIGRATED: ("NeedsInit", "True")}, deadline=deadline, alive=alive):
        return False
    if not _migrate(kubeconfig, deadline=deadline, alive=alive):
        return False
    if _check(kubeconfig, "uid-pin-after") != 0:
        _say(f"the check of {CANDIDATE} should have said every Slot would be Ready (exit 0)")
        return False
    _say(f"rolling the tag: {MIGRATED} spec.image={CANDIDATE}")
    _kubectl(kubeconfig, "patch", "slot", MIGRATED, "-n", NAMESPACE, "--type=merge",
             "-p", json.dumps({"spec": {"image": CANDIDATE}}))  # fmt: skip
    generation = json.loads(_kubectl(kubeconfig, "get", "slot", MIGRATED, "-n", NAMESPACE, "-o", "json"))
    ok = _judged(kubeconfig, int(generation["metadata"]["generation"]), deadline=deadline, alive=alive)
    print(_kubectl(kubeconfig, "get", "slots", "-n", NAMESPACE, "-o", "wide"), flush=True)
    _say(f"{MIGRATED}: checked -> migrated -> checked -> rolled -> Ready" if ok else f"{MIGRATED} did not roll")
    return ok


def _judged(kubeconfig: pathlib.Path, generation: int, *, deadline: float, alive: Callable[[], bool]) -> bool:
    """Wait until the Slot's Ready=True speaks for `generation` (the rolled tag), not the one before."""
    while time.monotonic() < deadline and alive():
        slot = json.loads(_kubectl(kubeconfig, "get", "slot", MIGRATED, "-n", NAMESPACE, "-o", "json"))
        ready = next((c for c in slot["status"].get("conditions") or () if c["type"] == "Ready"), {})
        if ready.get("observedGeneration") == generation and ready.get("status") == "True":
            return True
        time.sleep(1)
    return False


def _migrate(kubeconfig: pathlib.Path, *, deadline: float, alive: Callable[[], bool]) -> bool:
    """Play the person who reads the diagnosis and approves the ownership migration; wait for Ready."""
    slot = json.loads(_kubectl(kubeconfig, "get", "slot", MIGRATED, "-n", NAMESPACE, "-o", "json"))
    matches = next(c for c in slot["status"]["conditions"] if c["type"] == "OwnershipMatches")
    _say(f"{MIGRATED} is NeedsInit, and the audit says why: {matches['message']}")
    # The approval is the token status offers for this very audit (bound to this Slot, its claim and what was found).
    approval = f"woved.dev/ownership-migration-requested-at={slot['status']['ownership']['approval']}"
    _say(f"approving the ownership migration: kubectl annotate slot/{MIGRATED} --overwrite {approval}")
    _kubectl(kubeconfig, "annotate", "slot", MIGRATED, "-n", NAMESPACE, "--overwrite", approval)
    ok = _reach(kubeconfig, {MIGRATED: ("Ready", "True")}, deadline=deadline, alive=alive)
    last = json.loads(_kubectl(kubeconfig, "get", "slot", MIGRATED, "-n", NAMESPACE, "-o", "json"))["status"]
    _say(f"migration: {(last.get('lastOwnershipMigration') or {}).get('message')}")
    return ok


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-running", action="store_true", help="stay up until interrupted (make dev)")
    parser.add_argument("--timeout", type=float, default=360, help="seconds for the whole story")
    parser.add_argument(
        "--operator",
        choices=["process", "pod"],
        default="process",
        help="run the operator as a host process, or as the chart's Deployment from the built image",
    )
    args = parser.parse_args()

    started_cluster = cluster.status() is None
    running = cluster.up()
    kubeconfig = running.kubeconfig
    _say(f"control plane up; kubeconfig: {kubeconfig}")
    for claim, seed in SEEDS.items():
        home = running.volumes_dir / NAMESPACE / claim
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, AGENT_UID, AGENT_UID)
        seed(home)
    _kubectl(kubeconfig, "apply", "-f", str(EXAMPLES))
    operator = _ChartOperator(running) if args.operator == "pod" else _HostOperator(running)
    _say(f"waiting for {len(EXPECTED)} verdicts")
    ok = False
    try:
        deadline = time.monotonic() + args.timeout
        ok = _reach(kubeconfig, EXPECTED, deadline=deadline, alive=operator.alive)
        _say("every example reached its expected verdict" if ok else "some examples did not reach their verdict")
        if ok:
            ok = _uid_pin(kubeconfig, deadline=deadline, alive=operator.alive)
        if args.keep_running:
            _say(f"running; try: export KUBECONFIG={kubeconfig}; kubectl get slots -A -w   (Ctrl-C to stop)")
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    finally:
        operator.stop()
        if started_cluster:
            cluster.down()
            _say("torn down")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
