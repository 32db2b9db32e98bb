"""What the simulator's parts share: the caches the watches fill, the work queue, and small pod helpers."""

from __future__ import annotations

import dataclasses
import datetime
import heapq
import itertools
import threading
import time
from typing import Any

from devcluster.nodesim.api import Kube

JSON = dict[str, Any]
Key = tuple[str, ...]  # ("pod", uid) or ("pvc", namespace, name)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None


def pod_key(pod: JSON) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def is_terminal(pod: JSON) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def claim_names(pod: JSON) -> list[str]:
    return [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"].get("volumes") or []
        if v.get("persistentVolumeClaim")
    ]


class WorkQueue:
    """Deduplicating queue of keys with delayed adds, for one controller thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: dict[Key, None] = {}
        self._delayed: list[tuple[float, int, Key]] = []
        self._seq = itertools.count()

    def add(self, key: Key) -> None:
        with self._cond:
            self._ready[key] = None
            self._cond.notify()

    def add_after(self, key: Key, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + max(0.0, delay), next(self._seq), key))
            self._cond.notify()

    def get(self, timeout: float) -> Key | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._ready[heapq.heappop(self._delayed)[2]] = None
                if self._ready:
                    key = next(iter(self._ready))
                    del self._ready[key]
                    return key
                wait = deadline - now
                if self._delayed:
                    wait = min(wait, self._delayed[0][0] - now)
                if wait <= 0:
                    return None
                self._cond.wait(wait)


@dataclasses.dataclass(kw_only=True)
class State:
    """Shared by the scheduler, provisioner and kubelet; the caches are read and written under `lock`."""

    kube: Kube
    nodes: list[str]
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    queue: WorkQueue = dataclasses.field(default_factory=WorkQueue)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    pods: dict[str, JSON] = dataclasses.field(default_factory=dict)  # by uid
    pvcs: dict[tuple[str, str], JSON] = dataclasses.field(default_factory=dict)  # by (namespace, name)

    def node_labels(self, node: str) -> dict[str, str]:
        return {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}


class Waiting(Exception):
    """The container cannot start yet; `reason` is the kubelet's waiting reason (ContainerCreating, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class StartError(Exception):
    """The container cannot start at all: it ends terminated with reason StartError, exit 128."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
