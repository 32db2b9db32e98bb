"""Container probes as the kubelet runs them: startup, liveness and readiness over HTTP (or TCP).

A pod's containers share the host's network here (as with `hostNetwork: true`), so a
probe connects to 127.0.0.1 on the container's port. `Prober` owns the timing
(initialDelaySeconds, periodSeconds, timeoutSeconds, success/failure thresholds);
the kubelet side reacts to what it reports: readiness drives the Ready condition,
a startup or liveness failure past its threshold restarts the container.
"""

from __future__ import annotations

import dataclasses
import http.client
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

JSON = dict[str, Any]
KINDS = ("startup", "liveness", "readiness")


class ProbeInvalid(ValueError):
    """A probe the simulator cannot run (exec, gRPC, unknown named port); the message says which."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Probe:
    kind: str
    port: int
    path: str | None  # None: a TCP connect probe
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


def _port(value: object, ports: dict[str, int], kind: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, str) and value in ports:
        return ports[value]
    raise ProbeInvalid(f"{kind} probe: port {value!r} is not a number or a named container port")


def build_probe(kind: str, spec: JSON, *, ports: dict[str, int]) -> Probe:
    """A container's `<kind>Probe` as a Probe (defaults as in the Kubernetes API)."""
    timing: dict[str, Any] = {
        "initial_delay": float(spec.get("initialDelaySeconds", 0)),
        "period": float(spec.get("periodSeconds", 10)),
        "timeout": float(spec.get("timeoutSeconds", 1)),
        "success_threshold": int(spec.get("successThreshold", 1)),
        "failure_threshold": int(spec.get("failureThreshold", 3)),
    }
    if "httpGet" in spec:
        action = spec["httpGet"]
        if (action.get("scheme") or "HTTP").upper() != "HTTP":
            raise ProbeInvalid(f"{kind} probe: only scheme HTTP is simulated")
        headers = tuple((h["name"], h["value"]) for h in action.get("httpHeaders") or [])
        port = _port(action.get("port"), ports, kind)
        return Probe(kind=kind, port=port, path=action.get("path") or "/", headers=headers, **timing)
    if "tcpSocket" in spec:
        return Probe(kind=kind, port=_port(spec["tcpSocket"].get("port"), ports, kind), path=None, **timing)
    actions = sorted(k for k in spec if k in ("exec", "grpc"))
    raise ProbeInvalid(f"{kind} probe: {', '.join(actions) or 'no action'} is not simulated (httpGet, tcpSocket)")


def container_probes(container: JSON) -> list[Probe]:
    ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
    return [build_probe(k, container[f"{k}Probe"], ports=ports) for k in KINDS if container.get(f"{k}Probe")]


def check(probe: Probe) -> tuple[bool, str]:
    """One attempt: (success, why not). HTTP success is a status in [200, 400), as the kubelet's."""
    try:
        if probe.path is None:
            with socket.create_connection(("127.0.0.1", probe.port), timeout=probe.timeout):
                return True, ""
        conn = http.client.HTTPConnection("127.0.0.1", probe.port, timeout=probe.timeout)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "kube-probe/nodesim", **dict(probe.headers)})
            status = conn.getresponse().status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"Get http://127.0.0.1:{probe.port}{probe.path or ''}: {exc}"
    if 200 <= status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {status}"


@dataclasses.dataclass
class Result:
    """Consecutive outcomes folded into a verdict, with the thresholds' hysteresis."""

    probe: Probe
    successes: int = 0
    failures: int = 0
    passing: bool | None = None  # None: not decided yet

    def record(self, ok: bool) -> bool | None:
        """Fold one attempt in; return the new verdict when it changed, else None."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.passing is not True and self.successes >= self.probe.success_threshold:
                self.passing = True
                return True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.passing is not False and self.failures >= self.probe.failure_threshold:
                self.passing = False
                return False
        return None


class Prober(threading.Thread):
    """Runs one container's probes until stopped: startup first, then liveness and readiness.

    `on_change(kind, passing, message)` is called on every verdict change; the caller
    restarts the container on a startup or liveness failure and reports readiness.
    """

    def __init__(
        self,
        probes: list[Probe],
        *,
        on_change: Callable[[str, bool, str], None],
        attempt: Callable[[Probe], tuple[bool, str]] = check,
        name: str,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.probes = {p.kind: p for p in probes}
        self.on_change = on_change
        self.attempt = attempt
        self.stopped = threading.Event()
        self.started = time.monotonic()  # initialDelaySeconds count from the container's start

    def stop(self) -> None:
        self.stopped.set()

    def _run_until(self, kind: str, *, until_pass: bool) -> bool:
        """Probe `kind` at its period; with until_pass, return True on its first pass (False if stopped)."""
        probe = self.probes[kind]
        result = Result(probe)
        if self.stopped.wait(max(0.0, self.started + probe.initial_delay - time.monotonic())):
            return False
        while not self.stopped.is_set():
            ok, why = self.attempt(probe)
            verdict = result.record(ok)
            if verdict is not None and not self.stopped.is_set():
                self.on_change(kind, verdict, why)
                if until_pass and verdict:
                    return True
                if verdict is False and kind in ("startup", "liveness"):
                    return False  # the container is restarted; this prober ends with it
            if self.stopped.wait(probe.period):
                break
        return False

    def run(self) -> None:
        if "startup" in self.probes and not self._run_until("startup", until_pass=True):
            return
        workers = [
            threading.Thread(target=self._run_until, args=(kind,), kwargs={"until_pass": False}, daemon=True)
            for kind in ("liveness", "readiness")
            if kind in self.probes
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
