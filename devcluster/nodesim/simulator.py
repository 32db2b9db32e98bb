"""The simulator: watches pods and claims, and hands each change to the scheduler, provisioner or kubelet."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid

from kubernetes.client.exceptions import ApiException

from devcluster.nodesim.api import Reflector
from devcluster.nodesim.lifecycle import Kubelet
from devcluster.nodesim.runtime import ContainerRunner
from devcluster.nodesim.scheduling import Scheduler
from devcluster.nodesim.state import JSON, Key, State, is_terminal, now_rfc3339
from devcluster.nodesim.volumes import Provisioner

LOG = logging.getLogger("nodesim")
RESYNC_SECONDS = 2.0  # re-check pending/unschedulable pods and claims this often


class Simulator:
    """One controller thread reconciles pods (schedule, or run on a simulated node) and claims (provision)."""

    def __init__(
        self,
        state: State,
        *,
        scheduler: Scheduler,
        provisioner: Provisioner,
        runner: ContainerRunner,
        kubelet: Kubelet,
        isolated_as: str,
    ) -> None:
        self.state = state
        self.isolated_as = isolated_as  # how containers are isolated: isolation.require()'s answer
        self.scheduler = scheduler
        self.provisioner = provisioner
        self.runner = runner
        self.kubelet = kubelet

    def register_nodes(self) -> None:
        for node in self.state.nodes:
            if self.state.kube.get_node(node) is None:
                with contextlib.suppress(ApiException):  # a racing creator is fine
                    self.state.kube.create_node(
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "metadata": {"name": node, "labels": self.state.node_labels(node)},
                            "spec": {},
                        }
                    )
                LOG.info("node %s: registered", node)
            now = now_rfc3339()
            resources = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
            self.state.kube.patch_node_status(
                node,
                {
                    "capacity": resources,
                    "allocatable": resources,
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": node},
                    ],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "node simulator is posting ready status",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                    "nodeInfo": {
                        "machineID": node,
                        "systemUUID": node,
                        "bootID": str(uuid.uuid4()),
                        "kernelVersion": os.uname().release,
                        "osImage": "devcluster node simulator",
                        "containerRuntimeVersion": "nodesim://1",
                        "kubeletVersion": "v0.0.0-nodesim",
                        "kubeProxyVersion": "",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                    },
                },
            )

    def start(self) -> None:
        self.runner.log_dir.mkdir(parents=True, exist_ok=True)
        self.provisioner.volumes_dir.mkdir(parents=True, exist_ok=True)
        # Containers reach claims only through their mounts: without a chroot the host path would
        # otherwise lead a container to the writable original behind a read-only mount.
        self.provisioner.volumes_dir.chmod(0o700)
        self.register_nodes()
        pods = Reflector(
            "pods",
            self.state.kube,
            self.state.kube.core.list_pod_for_all_namespaces,
            on_replace=self._replace_pods,
            on_event=self._pod_event,
            stop=self.state.stop,
        )
        pvcs = Reflector(
            "pvcs",
            self.state.kube,
            self.state.kube.core.list_persistent_volume_claim_for_all_namespaces,
            on_replace=self._replace_pvcs,
            on_event=self._pvc_event,
            stop=self.state.stop,
        )
        controller = threading.Thread(target=self._controller, name="controller", daemon=True)
        resync = threading.Thread(target=self._resync_loop, name="resync", daemon=True)
        pvcs.start()
        pods.start()
        # Claims first: scheduling decisions need them.
        pvcs.synced.wait(60)
        pods.synced.wait(60)
        controller.start()
        resync.start()
        LOG.info(
            "simulating nodes %s (images from %s, claims in %s, isolation: %s)",
            ",".join(self.state.nodes),
            self.kubelet.images.describe(),
            self.provisioner.volumes_dir,
            self.isolated_as,
        )

    # -- informer callbacks (reflector threads)

    def _replace_pods(self, items: list[JSON]) -> None:
        with self.state.lock:
            fresh = {p["metadata"]["uid"]: p for p in items}
            gone = set(self.state.pods) - set(fresh)
            self.state.pods = fresh
        for uid in [*fresh, *gone]:
            self.state.queue.add(("pod", uid))

    def _pod_event(self, kind: str, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        with self.state.lock:
            if kind == "DELETED":
                self.state.pods.pop(uid, None)
            else:
                self.state.pods[uid] = pod
        self.state.queue.add(("pod", uid))

    def _replace_pvcs(self, items: list[JSON]) -> None:
        with self.state.lock:
            self.state.pvcs = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in items}
            keys = list(self.state.pvcs)
        for ns, name in keys:
            self.state.queue.add(("pvc", ns, name))

    def _pvc_event(self, kind: str, pvc: JSON) -> None:
        key = (pvc["metadata"]["namespace"], pvc["metadata"]["name"])
        with self.state.lock:
            if kind == "DELETED":
                self.state.pvcs.pop(key, None)
            else:
                self.state.pvcs[key] = pvc
        self.state.queue.add(("pvc", *key))

    # -- controller loop

    def _resync_loop(self) -> None:
        while not self.state.stop.wait(RESYNC_SECONDS):
            with self.state.lock:
                keys: list[Key] = []
                for uid, pod in self.state.pods.items():
                    node = pod["spec"].get("nodeName")
                    if pod["metadata"].get("deletionTimestamp") and (not node or node in self.state.nodes):
                        keys.append(("pod", uid))
                    elif is_terminal(pod):
                        continue
                    elif not node or node in self.state.nodes:
                        keys.append(("pod", uid))
                keys.extend(("pod", uid) for uid in self.kubelet.runtimes if uid not in self.state.pods)
                keys.extend(
                    ("pvc", ns, n)
                    for (ns, n), c in self.state.pvcs.items()
                    if (c.get("status") or {}).get("phase", "Pending") == "Pending"
                )
            for key in keys:
                self.state.queue.add(key)

    def _controller(self) -> None:
        while not self.state.stop.is_set():
            key = self.state.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                with self.state.lock:
                    if self.state.stop.is_set():
                        return
                    if key[0] == "pod":
                        self._reconcile_pod(key[1])
                    elif key[0] == "pvc":
                        self.provisioner.reconcile(key[1], key[2])
            except Exception:
                LOG.exception("reconciling %s failed; retrying in 2s", "/".join(key))
                self.state.queue.add_after(key, 2.0)

    def _reconcile_pod(self, uid: str) -> None:
        pod = self.state.pods.get(uid)
        rt = self.kubelet.runtimes.get(uid)
        if pod is None:
            if rt is not None:
                self.kubelet.pod_gone(rt)
            self.scheduler.forget(uid)
            self.kubelet.forget(uid)
            return
        node = pod["spec"].get("nodeName")
        if not node:
            if pod["metadata"].get("deletionTimestamp"):
                self.scheduler.gc_unscheduled_terminating(pod)
            elif not is_terminal(pod) and self.scheduler.responsible(pod):
                self.scheduler.schedule(pod)
            return
        if node in self.state.nodes:
            self.kubelet.sync(pod)

    def shutdown(self) -> None:
        self.kubelet.shutdown()
