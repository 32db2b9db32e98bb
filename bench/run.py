"""Probe N Slots with the operator, then with the raw-client baseline, on the same control plane; report both.

Then (unless --idle-slots 0) create that many suspended Slots for the operator alone: how soon each
has a status, and what the operator costs once nothing happens. Figures are from one run on a
shared machine: compare the ratios and per-probe counts, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from slot_operator.kube.api import ApiClient

from bench import audit, timing, workload
from bench.observe import Observer
from devcluster import cluster
from tools import image

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Targets:
    """Issue 7's targets, as the report checks them, with issue 19's tighter ones: the tail, CPU, reads, idle RSS."""

    wall_ratio: float
    writes_per_probe: float = 3.0
    reads_per_probe: float = 0.0
    latency_p99: float = 0.25
    cpu_ms_per_verdict: float = 13.0
    rss_mb: float = 150.0
    idle_status_within: float = 60.0
    idle_cpu_percent: float = 2.0
    idle_rss_mb: float = 205.0


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)] if ordered else float("nan")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _process(command: list[str], *, kubeconfig: pathlib.Path, log: pathlib.Path) -> Iterator[subprocess.Popen[bytes]]:
    # Probes run the ownership audit, as with the chart (an environment variable: older checkouts ignore it).
    # SLOT_OPERATOR_TIMING_LOG: one line per verdict, where its time went (bench/timing.py reads them).
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
           "SLOT_OPERATOR_AUDIT_IMAGE": image.operator_image(), "SLOT_OPERATOR_TIMING_LOG": "1"}  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _until(what: str, check: Any, *, within: float, proc: subprocess.Popen[bytes], log: pathlib.Path) -> None:
    deadline = time.monotonic() + within
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {within:.0f}s; see {log}")
        await asyncio.sleep(0.2)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


async def _settled(log: pathlib.Path, user: str, *, quiet: float = 1.0, within: float = 15.0) -> int:
    """The audit log's offset once `user` has made no call for `quiet` seconds (or after `within`)."""
    deadline = time.monotonic() + within
    since = audit.offset(log)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        if not audit.calls(log, since=since, user=user):
            return since
        since = audit.offset(log)
    return since


async def _idle_cpu(pid: int, seconds: float) -> float:
    """Percent of one core the process uses over `seconds` once a run has settled."""
    before = _cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (_cpu_seconds(pid) - before) / seconds * 100


async def _namespace_with_claims(api: ApiClient, running: cluster.Cluster, prefix: str, names: list[str]) -> str:
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    workload.kubectl(running.kubeconfig, "create", "namespace", namespace)
    for name in names:
        workload.write_home(running.volumes_dir / namespace / f"{name}-home")
    await workload.create_all(api, (workload.claim(namespace, f"{name}-home") for name in names))
    return namespace


async def probe_run(
    *,
    label: str,
    api: ApiClient,
    running: cluster.Cluster,
    kubeconfig: pathlib.Path,
    identity: str,
    slots: int,
    cap: int,
    deadline: float,
    idle_sample: float,
    python: str,
    check_beside: bool = False,
) -> dict[str, Any]:
    names = [f"slot-{index:05d}" for index in range(slots)]
    namespace = await _namespace_with_claims(api, running, f"bench-{label}", names)
    log = running.logs_dir / f"bench-{namespace}.log"
    health = _free_port()
    if label == "operator":
        command = [
            python, "-m", "slot_operator", f"--namespace={namespace}", f"--max-concurrent-probes={cap}",
            "--metrics-port=0", f"--health-port={health}",
        ]  # fmt: skip
    else:
        command = [python, "-m", "bench.baseline", f"--namespace={namespace}", f"--cap={cap}"]
    observer = Observer(api, namespace, done=lambda s: (s.get("status") or {}).get("phase") == "Ready")
    await observer.start()
    try:
        with _process(command, kubeconfig=kubeconfig, log=log) as proc:
            if label == "operator":
                await _until("operator health", lambda: _healthy(health), within=120, proc=proc, log=log)
            else:
                await _until("baseline watches", lambda: b"watching" in log.read_bytes(), within=60, proc=proc, log=log)
            # Start-up's one-time calls (kopf's API discovery just after /healthz answers) are not per probe.
            since = await _settled(running.audit_log, workload.username(identity))
            cpu0, started = _cpu_seconds(proc.pid), time.monotonic()
            await workload.create_all(api, (workload.slot(namespace, name) for name in names))
            if check_beside:  # over the Slots just made: its probes queue behind theirs for the same cap
                await workload.create_all(api, [workload.image_check(namespace, CHECK_NAME)])
                check_created = time.monotonic() - started
            await observer.wait(slots, within=deadline)
            wall = time.monotonic() - started
            cpu = _cpu_seconds(proc.pid) - cpu0
            check = (
                await _check_answered(api, namespace, created=check_created, within=deadline) if check_beside else None
            )
            idle = await _idle_cpu(proc.pid, idle_sample)
            rss = _peak_rss_mb(proc.pid)
            calls = audit.calls(running.audit_log, since=since, user=workload.username(identity))
    finally:
        await observer.stop()
        workload.kubectl(running.kubeconfig, "delete", "namespace", namespace, "--wait=false")
    latencies = [observer.finished[n] - observer.terminated[n] for n in names if n in observer.terminated]
    from_probe = [observer.finished[n] - observer.probe_terminated[n] for n in names if n in observer.probe_terminated]
    groups = audit.split(calls)
    waited = timing.breakdown(observer, log) if label == "operator" else None
    return {
        "slots": slots,
        "cap": cap,
        "wall_s": round(wall, 2),
        "verdicts_per_s": round(slots / wall, 2),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p99_s": round(_percentile(latencies, 0.99), 3) if latencies else None,
        "from_probe_p99_s": round(_percentile(from_probe, 0.99), 3) if from_probe else None,
        "writes_per_probe": round(sum(groups["writes"].values()) / slots, 3),
        "check_writes_per_slot": round(sum(groups["check_writes"].values()) / slots, 3),
        "check_reads": sum(groups["check_reads"].values()),
        "event_writes_per_probe": round(sum(groups["event_writes"].values()) / slots, 3),
        "reads_per_probe": round(sum(groups["reads"].values()) / slots, 3),
        "calls": groups,
        "cpu_ms_per_verdict": round(cpu / slots * 1000, 1),
        "peak_rss_mb": round(rss, 1),
        "idle_cpu_percent": round(idle, 2),
        **({"timing": waited} if waited is not None else {}),
        **({"check": {**check, "wall_s": round(wall, 2)}} if check is not None else {}),
    }


CHECK_NAME = "bench-candidate"


async def _check_answered(api: ApiClient, namespace: str, *, created: float, within: float) -> dict[str, Any]:
    """Wait for the check beside the Slots to answer for every one of them (polled: a bench, not a test)."""
    path = f"/apis/woved.dev/v1alpha1/namespaces/{namespace}/slotimagechecks/{CHECK_NAME}"
    waiting, deadline = time.monotonic(), time.monotonic() + within
    while time.monotonic() < deadline:
        status = (await api.request("get", path, resource="slotimagecheck")).get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed", "Error"):
            return {
                "created_s": round(created, 2),
                "after_last_slot_s": round(time.monotonic() - waiting, 2),
                "phase": status["phase"],
                "summary": status.get("summary") or {},
            }
        await asyncio.sleep(1)
    raise RuntimeError(f"SlotImageCheck {namespace}/{CHECK_NAME}: no answer within {within:.0f}s")


async def idle_run(
    *, api: ApiClient, running: cluster.Cluster, kubeconfig: pathlib.Path, slots: int, idle_sample: float, python: str
) -> dict[str, Any]:
    """`slots` suspended Slots: each one's time from creation to its first status, then the idle cost."""
    namespace = f"bench-idle-{uuid.uuid4().hex[:6]}"
    workload.kubectl(running.kubeconfig, "create", "namespace", namespace)
    log = running.logs_dir / f"bench-{namespace}.log"
    health = _free_port()
    created: dict[str, float] = {}

    def record(answer: Mapping[str, Any]) -> None:
        created[str(answer["metadata"]["name"])] = time.monotonic()

    observer = Observer(api, namespace, done=lambda s: bool((s.get("status") or {}).get("observedGeneration")))
    await observer.start()
    command = [python, "-m", "slot_operator", f"--namespace={namespace}", "--metrics-port=0", f"--health-port={health}"]
    try:
        with _process(command, kubeconfig=kubeconfig, log=log) as proc:
            await _until("operator health", lambda: _healthy(health), within=120, proc=proc, log=log)
            started = time.monotonic()
            names = [f"idle-{index:05d}" for index in range(slots)]
            await workload.create_all(
                api, (workload.slot(namespace, name, suspend=True) for name in names), created=record
            )
            creating = time.monotonic() - started
            await observer.wait(slots, within=600)
            settled = time.monotonic() - started
            # The echoes of its own writes must cost nothing: sample once the last status has landed.
            idle = await _idle_cpu(proc.pid, idle_sample)
            rss = _peak_rss_mb(proc.pid)
    finally:
        await observer.stop()
        workload.kubectl(running.kubeconfig, "delete", "namespace", namespace, "--wait=false")
    delays = [observer.finished[name] - created[name] for name in created if name in observer.finished]
    return {
        "slots": slots,
        "create_s": round(creating, 1),
        "all_status_s": round(settled, 1),
        "status_delay_p50_s": round(statistics.median(delays), 2),
        "status_delay_max_s": round(max(delays), 2),
        "idle_cpu_percent": round(idle, 2),
        "peak_rss_mb": round(rss, 1),
    }


def _verdicts(results: dict[str, Any], targets: Targets) -> list[tuple[str, str, bool]]:
    op, raw = results["operator"], results["baseline"]
    ratio = op["wall_s"] / raw["wall_s"]
    rows = [
        (f"wall time ÷ raw client = {ratio:.2f}", f"≤ {targets.wall_ratio}", ratio <= targets.wall_ratio),
        (f"API writes per probe = {op['writes_per_probe']}", f"≤ {targets.writes_per_probe}",
         op["writes_per_probe"] <= targets.writes_per_probe),
        (f"API reads per probe = {op['reads_per_probe']}", f"≤ {targets.reads_per_probe}",
         op["reads_per_probe"] <= targets.reads_per_probe),
        (f"pod terminated → status p99 = {op['latency_p99_s']} s", f"≤ {targets.latency_p99} s",
         (op["latency_p99_s"] or 0) <= targets.latency_p99),
        (f"CPU per verdict = {op['cpu_ms_per_verdict']} ms", f"≤ {targets.cpu_ms_per_verdict} ms",
         op["cpu_ms_per_verdict"] <= targets.cpu_ms_per_verdict),
        (f"peak RSS = {op['peak_rss_mb']} MB", f"≤ {targets.rss_mb} MB", op["peak_rss_mb"] <= targets.rss_mb),
    ]  # fmt: skip
    idle = results.get("idle")
    if idle:
        rows += [
            (f"{idle['slots']} suspended: slowest status = {idle['status_delay_max_s']} s",
             f"≤ {targets.idle_status_within} s", idle["status_delay_max_s"] <= targets.idle_status_within),
            (f"{idle['slots']} suspended: idle CPU = {idle['idle_cpu_percent']} %",
             f"< {targets.idle_cpu_percent} %", idle["idle_cpu_percent"] < targets.idle_cpu_percent),
            (f"{idle['slots']} suspended: peak RSS = {idle['peak_rss_mb']} MB", f"≤ {targets.idle_rss_mb} MB",
             idle["peak_rss_mb"] <= targets.idle_rss_mb),
        ]  # fmt: skip
    return rows


def _print_report(results: dict[str, Any], targets: Targets) -> None:
    op, raw = results["operator"], results["baseline"]
    print(f"\nbench: {op['slots']} Slots with valid credentials, probe cap {op['cap']} (one run; shared machine)\n")
    rows = [
        ("wall time, create → last verdict (s)", "wall_s"),
        ("verdicts/s", "verdicts_per_s"),
        ("pod terminated → status written, p50 (s)", "latency_p50_s"),
        ("pod terminated → status written, p99 (s)", "latency_p99_s"),
        ("probe container terminated → status, p99 (s)", "from_probe_p99_s"),
        ("API writes per probe (Events apart)", "writes_per_probe"),
        ("a SlotImageCheck's API writes per Slot", "check_writes_per_slot"),
        ("a SlotImageCheck's API reads (its selection)", "check_reads"),
        ("API Event writes per probe", "event_writes_per_probe"),
        ("API reads per probe", "reads_per_probe"),
        ("CPU per verdict (ms)", "cpu_ms_per_verdict"),
        ("peak RSS (MB)", "peak_rss_mb"),
        ("idle CPU after the run (% of a core)", "idle_cpu_percent"),
    ]
    print(f"{'':46s} {'operator':>10s} {'raw client':>11s}")
    for title, key in rows:
        print(f"{title:46s} {op[key]!s:>10s} {raw[key]!s:>11s}")
    for who, result in (("operator", op), ("raw client", raw)):
        print(f"\nAPI calls by {who}, per probe:")
        for group in ("writes", "event_writes", "check_writes", "check_reads", "reads", "watches"):
            for call, count in result["calls"][group].items():
                print(f"  {group:13s} {call:40s} {count / result['slots']:8.3f}  ({count})")
    if "timing" in op:
        print("\n".join(timing.report(op["timing"])))
    if "check" in op:
        check = op["check"]
        print(
            f"\nbeside: a SlotImageCheck over the {op['slots']} Slots, created {check['created_s']} s after the first "
            f"Slot; the Slots' last verdict came {check['wall_s']} s after it, the check's answer ({check['phase']}, "
            f"{check['summary']}) {check['after_last_slot_s']} s later"
        )
    idle = results.get("idle")
    if idle:
        print(
            f"\nidle: {idle['slots']} suspended Slots created in {idle['create_s']} s; every one had a status "
            f"{idle['all_status_s']} s after the first was created (per Slot: p50 {idle['status_delay_p50_s']} s, "
            f"max {idle['status_delay_max_s']} s); then {idle['idle_cpu_percent']} % of a core, "
            f"peak RSS {idle['peak_rss_mb']} MB"
        )
    print("\ntargets:")
    for text, target, met in _verdicts(results, targets):
        print(f"  [{'met' if met else 'MISSED'}] {text} (target {target})")


def _progress(label: str, result: dict[str, Any]) -> None:
    """Each run's figures as soon as it ends (stderr), so a long bench shows where it is."""
    figures = {k: v for k, v in result.items() if not isinstance(v, dict)}
    print(f"bench: {label} done: {json.dumps(figures)}", file=sys.stderr, flush=True)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    root: pathlib.Path = args.cluster_root
    started_cluster = cluster.status(root) is None
    running = cluster.up(root)
    workdir = running.root / "bench"
    workdir.mkdir(exist_ok=True)
    api = await ApiClient.from_environment(kubeconfig=str(running.kubeconfig))
    python = (
        str(pathlib.Path(args.operator_repo) / ".venv" / "bin" / "python") if args.operator_repo else sys.executable
    )
    try:
        operator_kc = workload.identity_kubeconfig(running, workload.OPERATOR_IDENTITY, workdir / "operator.kubeconfig")
        baseline_kc = workload.identity_kubeconfig(running, workload.BASELINE_IDENTITY, workdir / "raw.kubeconfig")
        common = {
            "api": api,
            "running": running,
            "slots": args.slots,
            "cap": args.cap,
            "deadline": args.timeout,
            "idle_sample": args.idle_sample,
        }
        results: dict[str, Any] = {}
        results["operator"] = await probe_run(
            label="operator", kubeconfig=operator_kc, identity=workload.OPERATOR_IDENTITY, python=python,
            check_beside=args.check_beside, **common,
        )  # fmt: skip
        _progress("operator", results["operator"])
        results["baseline"] = await probe_run(
            label="baseline", kubeconfig=baseline_kc, identity=workload.BASELINE_IDENTITY, python=sys.executable,
            **common,
        )  # fmt: skip
        _progress("raw client", results["baseline"])
        if args.idle_slots:
            results["idle"] = await idle_run(
                api=api, running=running, kubeconfig=operator_kc, slots=args.idle_slots,
                idle_sample=args.idle_sample, python=python,
            )  # fmt: skip
            _progress("idle", results["idle"])
        return results
    finally:
        await api.close()
        if started_cluster:
            cluster.down(root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=1000, help="Slots probed in each run (default: %(default)s)")
    parser.add_argument("--cap", type=int, default=20, help="concurrent probes (default: %(default)s)")
    parser.add_argument(
        "--idle-slots",
        type=int,
        default=10000,
        help="suspended Slots for the idle run, 0 skips it (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per run, seconds (default: %(default)s)")
    parser.add_argument(
        "--idle-sample", type=float, default=30, help="seconds of idle CPU sampled (default: %(default)s)"
    )
    parser.add_argument("--cluster-root", default=str(cluster.DEFAULT_ROOT), help="the local cluster's state directory")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a report")
    parser.add_argument(
        "--check-beside",
        action="store_true",
        help="with the operator's Slots, a SlotImageCheck over all of them (its probes share the cap, Slots first)",
    )
    parser.add_argument("--operator-repo", help="run the operator from this checkout's .venv (to compare two versions)")
    args = parser.parse_args()
    args.cluster_root = pathlib.Path(args.cluster_root).resolve()
    results = asyncio.run(main_async(args))
    targets = Targets(wall_ratio=1.1 if args.slots <= 200 else 1.2)
    if args.json:
        results["targets"] = [{"what": w, "target": t, "met": m} for w, t, m in _verdicts(results, targets)]
        print(json.dumps(results, indent=2))
    else:
        _print_report(results, targets)
    return 0
