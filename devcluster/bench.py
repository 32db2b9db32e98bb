"""`make bench`: verdict throughput and latency of the operator on the local control plane.

Creates N Slots (valid codex credentials) in a fresh namespace, runs the operator with a
concurrency cap C, and measures, from the client's side, how long until every Slot has
its verdict; then requests a re-probe of all of them (warm run). Prints one line per run
with medians (the machine is shared: compare ratios within one run, not absolute times).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from devcluster import cluster

VALID_CODEX = json.dumps({"tokens": {"access_token": "bench", "refresh_token": "bench"}})


def _kubectl(kubeconfig: pathlib.Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_all(
    kubeconfig: pathlib.Path,
    namespace: str,
    names: list[str],
    started: float,
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> dict[str, float]:
    """Poll until done(slot) for every Slot; returns seconds from `started` to when each was first seen done."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)}/{len(names)} Slots reached a verdict in {timeout:.0f}s")
        items = json.loads(_kubectl(kubeconfig, "get", "slots", "-n", namespace, "-o", "json"))["items"]
        now = time.monotonic()
        for item in items:
            if item["metadata"]["name"] not in seen and done(item):
                seen[item["metadata"]["name"]] = now - started
        time.sleep(0.2)
    return seen


def _report(label: str, latencies: dict[str, float], wall: float, cpu: float, count: int, cap: int) -> None:
    values = sorted(latencies.values())
    p90 = values[max(int(len(values) * 0.9) - 1, 0)]
    print(
        f"bench {label:6s} slots={count} cap={cap} wall={wall:.1f}s throughput={count / wall:.2f} verdicts/s "
        f"latency_median={statistics.median(values):.1f}s latency_p90={p90:.1f}s operator_cpu={cpu:.1f}s "
        f"cpu_per_verdict={cpu / count * 1000:.0f}ms",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=40)
    parser.add_argument("--cap", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    started_cluster = cluster.status() is None
    running = cluster.up()
    kubeconfig = running.kubeconfig
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    names = [f"slot-{index:03d}" for index in range(args.slots)]
    _kubectl(kubeconfig, "create", "namespace", namespace)
    manifests = []
    for name in names:
        home = running.volumes_dir / namespace / f"{name}-home"
        (home / ".codex").mkdir(parents=True)
        (home / ".codex" / "auth.json").write_text(VALID_CODEX)
        for path in (home, home / ".codex", home / ".codex" / "auth.json"):
            os.chown(path, 10001, 10001)
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": f"{name}-home", "namespace": namespace},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }
        )
    _kubectl(kubeconfig, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    log = (running.logs_dir / f"operator-{namespace}.log").open("ab")
    operator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slot_operator",
            f"--namespace={namespace}",
            f"--max-concurrent-probes={args.cap}",
            "--metrics-port=0",
            "--health-port=0",
        ],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        slots = [
            {
                "apiVersion": "woved.dev/v1alpha1",
                "kind": "Slot",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"agent": "codex", "claimName": f"{name}-home", "image": "local/agent-shell:codex"},
            }
            for name in names
        ]
        cpu0, started = _cpu_seconds(operator.pid), time.monotonic()
        _kubectl(kubeconfig, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": slots}))
        cold = _wait_all(
            kubeconfig,
            namespace,
            names,
            started,
            lambda s: (s.get("status") or {}).get("phase") == "Ready",
            args.timeout,
        )
        _report("create", cold, time.monotonic() - started, _cpu_seconds(operator.pid) - cpu0, len(names), args.cap)

        token = uuid.uuid4().hex[:8]
        cpu0, started = _cpu_seconds(operator.pid), time.monotonic()
        _kubectl(
            kubeconfig,
            "annotate",
            "slots",
            "--all",
            "-n",
            namespace,
            "--overwrite",
            f"woved.dev/probe-requested-at={token}",
        )
        warm = _wait_all(
            kubeconfig,
            namespace,
            names,
            started,
            lambda s: (s.get("status") or {}).get("lastHandledProbeRequest") == token,
            args.timeout,
        )
        _report("reprobe", warm, time.monotonic() - started, _cpu_seconds(operator.pid) - cpu0, len(names), args.cap)
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        _kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")
        if started_cluster:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
