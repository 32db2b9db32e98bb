"""What the kubelet side knows about each pod and container it runs, and how a container reports its state."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import subprocess
import threading

from devcluster.nodesim.probes import Prober
from devcluster.nodesim.state import JSON, now_rfc3339

LOG = logging.getLogger("nodesim")


@dataclasses.dataclass
class ContainerRuntime:
    name: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    image_id: str = ""
    container_id: str = ""
    pull_failures: int = 0
    next_pull_at: float = 0.0  # monotonic; image pull back-off
    started_at: str = ""
    finished_at: str = ""
    exit_code: int | None = None
    process: subprocess.Popen[bytes] | None = None
    kill_started: bool = False
    term_file: pathlib.Path | None = None
    log_path: pathlib.Path | None = None
    fallback_to_logs: bool = False
    spawned: threading.Event = dataclasses.field(default_factory=threading.Event)
    exited: threading.Event = dataclasses.field(default_factory=threading.Event)
    # Restarts (restartPolicy Always/OnFailure) and probes.
    restart_count: int = 0
    last_terminated: JSON | None = None  # lastState.terminated of the previous run
    next_start_at: float = 0.0  # monotonic; crash-loop back-off
    startup_passed: bool = True  # False while a startupProbe has not succeeded
    readiness_passed: bool = True  # False while a readinessProbe does not succeed
    prober: Prober | None = None

    def terminate_unstarted(self, reason: str, message: str) -> None:
        """A container that never ran ends like the kubelet reports a lost one."""
        self.state, self.reason, self.message, self.exit_code = "terminated", reason, message, 137
        self.finished_at = now_rfc3339()
        self.spawned.set()
        self.exited.set()

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.startup_passed and self.readiness_passed

    def terminated_state(self) -> JSON:
        terminated: JSON = {"exitCode": self.exit_code, "reason": self.reason, "finishedAt": self.finished_at}
        if self.started_at:
            terminated["startedAt"] = self.started_at
        if self.message:
            terminated["message"] = self.message
        if self.container_id:
            terminated["containerID"] = self.container_id
        return terminated

    def status(self, image: str) -> JSON:
        state: JSON
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated_state()}
        else:
            waiting: JSON = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        entry: JSON = {
            "name": self.name,
            "image": image,
            "imageID": self.image_id if self.state != "waiting" else "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.state == "running" and self.startup_passed,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.container_id:
            entry["containerID"] = self.container_id
        return entry

    def reset_for_restart(self) -> None:
        """Back to waiting for its next run; what the last run ended with becomes lastState."""
        self.last_terminated = self.terminated_state()
        self.restart_count += 1
        self.state, self.exit_code, self.process, self.kill_started = "waiting", None, None, False
        self.started_at = self.finished_at = ""
        self.spawned, self.exited = threading.Event(), threading.Event()
        self.prober = None


@dataclasses.dataclass
class PodRuntime:
    uid: str
    namespace: str
    name: str
    node: str
    start_time: str
    start_epoch: float
    state_dir: pathlib.Path
    restart_policy: str = "Never"
    containers: dict[str, ContainerRuntime] = dataclasses.field(default_factory=dict)
    init_containers: dict[str, ContainerRuntime] = dataclasses.field(default_factory=dict)  # in spec order
    transitions: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    reason: str = ""
    message: str = ""
    stopping: bool = False
    final_delete_done: bool = False
    last_written: str = ""
    warned: set[str] = dataclasses.field(default_factory=set)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def running(self) -> list[ContainerRuntime]:
        return [c for c in self.all_containers() if c.state == "running"]

    def all_containers(self) -> list[ContainerRuntime]:
        return [*self.init_containers.values(), *self.containers.values()]

    @property
    def initialized(self) -> bool:
        """Every init container has run to completion (exit 0), in order."""
        return all(cr.state == "terminated" and cr.exit_code == 0 for cr in self.init_containers.values())

    @property
    def init_failed(self) -> bool:
        """An init container failed and, with restartPolicy Never, is not run again: the pod fails."""
        return self.restart_policy == "Never" and any(
            cr.state == "terminated" and cr.exit_code != 0 for cr in self.init_containers.values()
        )

    def warn_once(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            LOG.warning("pod %s: %s", self.key, message)

    def restarts(self, exit_code: int, *, init: bool = False) -> bool:
        """Whether a container that exited with `exit_code` is started again (the pod's restartPolicy).

        An init container runs until it succeeds, unless the policy is Never.
        """
        if self.stopping or (init and exit_code == 0):
            return False
        return (
            self.restart_policy == "Always"
            or (self.restart_policy == "OnFailure" and exit_code != 0)
            or (init and self.restart_policy != "Never")
        )
