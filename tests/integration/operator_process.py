"""Run the real operator (`python -m slot_operator`) as a subprocess against the test cluster."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from tests.integration.kubewait import wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _PortTaken(Exception):
    pass


class OperatorProcess:
    """One operator instance watching `namespaces`; `kill()` is SIGKILL (a crash), `stop()` a clean SIGTERM."""

    def __init__(
        self, *, kubeconfig: pathlib.Path, namespaces: list[str], log_path: pathlib.Path, args: list[str] | None = None
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.log_path = log_path
        self.args = args or []
        self.metrics_port = _free_port()
        self.health_port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> OperatorProcess:
        # A port found free can be taken by another process before the operator binds it: pick again.
        for _ in range(3):
            self._launch()
            try:
                wait_for(self._healthy, timeout=60, message=f"operator health endpoint (log: {self.log_path})")
                return self
            except _PortTaken:
                self.metrics_port, self.health_port = _free_port(), _free_port()
        raise AssertionError(f"operator could not bind its ports three times; log: {self.log_path}")

    def _launch(self) -> None:
        command = [
            sys.executable,
            "-m",
            "slot_operator",
            f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}",
            *(f"--namespace={ns}" for ns in self.namespaces),
            *self.args,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def _healthy(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            if b"address already in use" in self.log_path.read_bytes()[self._log_offset :]:
                raise _PortTaken
            raise AssertionError(f"operator exited with {self._proc.returncode}; log:\n{self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return bytes(response.read()).decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signum)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
