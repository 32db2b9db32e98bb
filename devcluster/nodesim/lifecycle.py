"""Pod lifecycle: the kubelet's sync loop for pods bound to a simulated node, and the status it writes.

Runs init containers in order, each to completion, then each container once its
image resolves (ErrImagePull then ImagePullBackOff
while it does not, retried so an image added later is found), restarts containers
as restartPolicy says (Always, OnFailure) with a short crash-loop back-off, runs
their startup/liveness/readiness probes (readiness drives Ready, a failed startup or
liveness probe restarts the container), honours activeDeadlineSeconds and graceful
deletion, and writes phase, conditions and containerStatuses like a kubelet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shutil
import signal
import threading
import time
import uuid

from kubernetes.client.exceptions import ApiException

from devcluster.nodesim.images import ImageInvalid, ImageNotFound, ImageStore, RegistryFault
from devcluster.nodesim.pods import ContainerRuntime, PodRuntime
from devcluster.nodesim.probes import ProbeInvalid, Prober, container_probes
from devcluster.nodesim.runtime import ContainerRunner
from devcluster.nodesim.state import JSON, StartError, State, Waiting, is_terminal, now_rfc3339, parse_rfc3339, pod_key

LOG = logging.getLogger("nodesim")
PULL_RETRY_SECONDS = 2.0  # ErrImagePull -> ImagePullBackOff after this, then retry every 2x
KILL_GRACE_CAP_SECONDS = 3.0  # SIGTERM -> SIGKILL at most this long (tests stay fast)
# Crash-loop back-off: the kubelet's 10 s doubling to 5 min, scaled down so tests stay fast.
RESTART_BACKOFF_SECONDS = 1.0
RESTART_BACKOFF_CAP_SECONDS = 10.0
MANAGED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


class Kubelet:
    def __init__(self, state: State, *, runner: ContainerRunner, images: ImageStore, state_dir: pathlib.Path) -> None:
        self.state = state
        self.runner = runner
        self.images = images
        self.state_dir = state_dir
        self.runtimes: dict[str, PodRuntime] = {}
        self.final_deleted: set[str] = set()  # uids of terminal pods this kubelet deleted (grace 0)

    def forget(self, uid: str) -> None:
        self.final_deleted.discard(uid)

    def _new_runtime(self, pod: JSON) -> PodRuntime:
        meta, status = pod["metadata"], pod.get("status") or {}
        start_time = status.get("startTime") or now_rfc3339()
        rt = PodRuntime(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            node=pod["spec"]["nodeName"],
            start_time=start_time,
            start_epoch=parse_rfc3339(start_time) or time.time(),
            state_dir=self.state_dir / meta["uid"],
            restart_policy=pod["spec"].get("restartPolicy", "Always"),
        )
        for cond in status.get("conditions") or []:
            rt.transitions[cond["type"]] = (cond.get("status", ""), cond.get("lastTransitionTime") or now_rfc3339())
        statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        previous = {cs["name"]: cs for cs in statuses}
        for c in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]:
            cr = ContainerRuntime(name=c["name"])
            state = (previous.get(c["name"]) or {}).get("state") or {}
            # Containers a previous simulator run started are gone with it: report them lost.
            if "terminated" in state:
                t = state["terminated"]
                cr.state, cr.exit_code = "terminated", int(t.get("exitCode", 137))
                cr.reason, cr.message = t.get("reason", "Error"), t.get("message", "")
                cr.started_at, cr.finished_at = t.get("startedAt", ""), t.get("finishedAt") or now_rfc3339()
                cr.spawned.set()
                cr.exited.set()
            elif "running" in state:
                cr.started_at = state["running"].get("startedAt", "")
                cr.terminate_unstarted(
                    "ContainerStatusUnknown", "The container could not be located when the pod was terminated"
                )
            (rt.containers if c in pod["spec"]["containers"] else rt.init_containers)[c["name"]] = cr
        deadline = pod["spec"].get("activeDeadlineSeconds")
        if deadline:
            self.state.queue.add_after(("pod", rt.uid), rt.start_epoch + int(deadline) - time.time() + 0.05)
        return rt

    def sync(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        rt = self.runtimes.get(uid)
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        if rt is None:
            if is_terminal(pod):
                # Finished before this simulator started: nothing to run, only the final delete.
                if deleting and uid not in self.final_deleted:
                    self.final_deleted.add(uid)
                    self._final_delete_terminal(pod)
                return
            rt = self.runtimes[uid] = self._new_runtime(pod)
        if rt.final_delete_done:
            return
        if deleting:
            self._stop_pod(rt, pod, grace=self._grace(pod), why="deleted")
            if not rt.running():
                self._write_status(pod, rt)
                self._final_delete(pod, rt)
            return
        deadline = pod["spec"].get("activeDeadlineSeconds")
        if deadline and not rt.stopping and time.time() >= rt.start_epoch + int(deadline):
            rt.reason = "DeadlineExceeded"
            rt.message = "Pod was active on the node longer than the specified deadline"
            LOG.info("pod %s: DeadlineExceeded after %ss: killing", rt.key, deadline)
            self._stop_pod(rt, pod, grace=self._grace(pod), why="deadline")
        if not rt.stopping:
            self._sync_init_containers(pod, rt)
        if not rt.stopping and rt.initialized:
            for c in pod["spec"]["containers"]:
                self._sync_container(pod, rt, c)
        self._write_status(pod, rt)

    def _sync_init_containers(self, pod: JSON, rt: PodRuntime) -> None:
        """Init containers one at a time, in order, each to completion before the next (sidecars are not simulated)."""
        for c in pod["spec"].get("initContainers") or []:
            cr = rt.init_containers[c["name"]]
            if c.get("restartPolicy") == "Always":
                rt.warn_once(f"init container {c['name']}: sidecar containers are not simulated; run to completion")
            if cr.state == "terminated" and cr.exit_code == 0:
                continue
            self._sync_container(pod, rt, c, init=True)
            return

    @staticmethod
    def _grace(pod: JSON) -> float:
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(min(max(int(grace), 0), KILL_GRACE_CAP_SECONDS))

    def _stop_pod(self, rt: PodRuntime, pod: JSON | None, *, grace: float, why: str) -> None:
        rt.stopping = True
        for cr in rt.all_containers():
            if cr.prober is not None:
                cr.prober.stop()
            if cr.state == "waiting":
                cr.terminate_unstarted(
                    "ContainerStatusUnknown", "The container could not be located when the pod was terminated"
                )
                LOG.info("pod %s container %s: never started, %s", rt.key, cr.name, why)
            elif cr.state == "running" and not cr.kill_started:
                cr.kill_started = True
                LOG.info("pod %s container %s: killing (%s, grace %.0fs)", rt.key, cr.name, why, grace)
                threading.Thread(target=self.runner.kill, args=(cr, grace), name=f"kill-{rt.name}", daemon=True).start()

    def _final_delete_terminal(self, pod: JSON) -> None:
        meta = pod["metadata"]
        try:
            self.state.kube.delete_pod_now(meta["namespace"], meta["name"], meta["uid"])
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
        LOG.info("pod %s: already terminated, deleted (grace 0)", pod_key(pod))

    def _final_delete(self, pod: JSON, rt: PodRuntime) -> None:
        try:
            self.state.kube.delete_pod_now(rt.namespace, rt.name, rt.uid)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
        rt.final_delete_done = True
        LOG.info("pod %s: terminated, deleted (grace 0)", rt.key)

    def pod_gone(self, rt: PodRuntime) -> None:
        """The pod object vanished: kill what still runs, then forget it."""
        if rt.running():
            self._stop_pod(rt, None, grace=KILL_GRACE_CAP_SECONDS, why="pod vanished")
            return  # the runner thread re-queues the pod when the process exits
        self.runtimes.pop(rt.uid, None)
        shutil.rmtree(rt.state_dir, ignore_errors=True)

    def _sync_container(self, pod: JSON, rt: PodRuntime, c: JSON, *, init: bool = False) -> None:
        cr = (rt.init_containers if init else rt.containers)[c["name"]]
        if cr.state == "terminated" and cr.exit_code is not None and rt.restarts(cr.exit_code, init=init):
            self._schedule_restart(rt, cr)
        if cr.state != "waiting":
            return
        if time.monotonic() < cr.next_start_at:
            return  # crash-loop back-off: a queued re-sync starts it when the delay is over
        ref = c.get("image", "")
        if time.monotonic() < cr.next_pull_at:
            return  # backing off: resyncs do not retry the pull early
        try:
            image = self.images.resolve(ref)
        except (ImageNotFound, ImageInvalid, RegistryFault) as exc:
            detail = (
                "not found in local image store"
                if isinstance(exc, ImageNotFound)
                else str(exc)
                if isinstance(exc, RegistryFault)
                else f"invalid image: {exc}"
            )
            cr.pull_failures += 1
            if cr.pull_failures == 1:
                self._set_waiting(rt, cr, "ErrImagePull", f'failed to pull image "{ref}": {detail}')
            else:
                self._set_waiting(rt, cr, "ImagePullBackOff", f'Back-off pulling image "{ref}": ErrImagePull: {detail}')
            # Like the kubelet: ErrImagePull first, then ImagePullBackOff while retrying
            # with a growing (here short and capped) delay, so an image added later is found.
            delay = PULL_RETRY_SECONDS * min(cr.pull_failures, 3)
            cr.next_pull_at = time.monotonic() + delay
            self.state.queue.add_after(("pod", rt.uid), delay + 0.05)
            return
        cr.image_id = image.image_id
        try:
            launch = self.runner.prepare(pod, rt, c, image)
        except Waiting as waiting:
            self._set_waiting(rt, cr, waiting.reason, waiting.message)
            return
        except StartError as err:
            cr.state, cr.reason, cr.message, cr.exit_code = "terminated", "StartError", err.message, 128
            cr.finished_at = now_rfc3339()
            cr.spawned.set()
            cr.exited.set()
            LOG.info("pod %s container %s: StartError: %s", rt.key, cr.name, err.message)
            return
        cr.state, cr.reason, cr.message = "running", "", ""
        cr.started_at = now_rfc3339()
        cr.container_id = f"nodesim://{uuid.uuid4().hex}"
        cr.log_path, cr.term_file = launch.log_path, launch.term_file
        cr.fallback_to_logs = c.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        LOG.info("pod %s container %s: starting %s on %s", rt.key, cr.name, ref, rt.node)
        threading.Thread(target=self.runner.run, args=(rt, cr, launch), name=f"run-{rt.name}", daemon=True).start()
        if not init:
            self._start_probes(rt, cr, c)

    def _set_waiting(self, rt: PodRuntime, cr: ContainerRuntime, reason: str, message: str) -> None:
        if (cr.reason, cr.message) != (reason, message):
            LOG.info("pod %s container %s: waiting %s: %s", rt.key, cr.name, reason, message)
        cr.state, cr.reason, cr.message = "waiting", reason, message

    def _schedule_restart(self, rt: PodRuntime, cr: ContainerRuntime) -> None:
        """A container that exited goes back to waiting, in CrashLoopBackOff when it failed, for its next run."""
        failed = cr.exit_code != 0
        delay = min(RESTART_BACKOFF_SECONDS * 2 ** min(cr.restart_count, 10), RESTART_BACKOFF_CAP_SECONDS)
        if cr.prober is not None:
            cr.prober.stop()
        LOG.info("pod %s container %s: exited %s, restarting in %.0fs", rt.key, cr.name, cr.exit_code, delay)
        cr.reset_for_restart()
        if failed:
            cr.reason = "CrashLoopBackOff"
            cr.message = f"back-off {delay:.0f}s restarting failed container={cr.name} pod={rt.name}"
        else:
            cr.reason, cr.message = "ContainerCreating", ""
        cr.next_start_at = time.monotonic() + delay
        self.state.queue.add_after(("pod", rt.uid), delay + 0.05)

    def _start_probes(self, rt: PodRuntime, cr: ContainerRuntime, c: JSON) -> None:
        try:
            probes = container_probes(c)
        except ProbeInvalid as exc:
            rt.warn_once(f"container {cr.name}: {exc}; the probe is ignored")
            return
        if not probes:
            return
        kinds = {p.kind for p in probes}
        cr.startup_passed = "startup" not in kinds
        cr.readiness_passed = "readiness" not in kinds

        def changed(kind: str, passing: bool, why: str) -> None:
            with self.state.lock:
                if cr.prober is not prober or cr.state != "running":
                    return  # a verdict about a run that is over
                if kind == "startup":
                    cr.startup_passed = passing
                elif kind == "readiness":
                    cr.readiness_passed = passing
                LOG.info("pod %s container %s: %s probe %s%s", rt.key, cr.name, kind,
                         "passed" if passing else "failed", f": {why}" if why else "")  # fmt: skip
                if not passing and kind in ("startup", "liveness") and not cr.kill_started:
                    # The kubelet: "Container X failed liveness probe, will be restarted".
                    cr.kill_started = True
                    grace = self._grace_for_container(rt)
                    threading.Thread(target=self.runner.kill, args=(cr, grace), daemon=True).start()
            self.state.queue.add(("pod", rt.uid))

        prober = Prober(probes, on_change=changed, name=f"probe-{rt.name}-{cr.name}")
        cr.prober = prober
        prober.start()

    def _grace_for_container(self, rt: PodRuntime) -> float:
        pod = self.state.pods.get(rt.uid)
        return self._grace(pod) if pod is not None else KILL_GRACE_CAP_SECONDS

    def _condition(self, rt: PodRuntime, ctype: str, status: str, reason: str = "", message: str = "") -> JSON:
        previous = rt.transitions.get(ctype)
        if previous is None or previous[0] != status:
            rt.transitions[ctype] = (status, now_rfc3339())
        cond: JSON = {
            "type": ctype,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": rt.transitions[ctype][1],
        }
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        return cond

    def _phase(self, rt: PodRuntime) -> str:
        if rt.init_failed:
            return "Failed"
        if not rt.initialized:
            return "Pending"
        # A container waiting to be restarted has run before: the pod stays Running, as with a kubelet.
        if any(cr.state == "waiting" and not cr.restart_count for cr in rt.containers.values()):
            return "Pending"
        if any(cr.state != "terminated" for cr in rt.containers.values()):
            return "Running"
        if rt.reason == "DeadlineExceeded":
            return "Failed"
        return "Succeeded" if all(cr.exit_code == 0 for cr in rt.containers.values()) else "Failed"

    def _write_status(self, pod: JSON, rt: PodRuntime) -> None:
        phase = self._phase(rt)
        terminal = phase in ("Succeeded", "Failed")
        specs = pod["spec"]["containers"]
        statuses = [rt.containers[c["name"]].status(c.get("image", "")) for c in specs]
        init_specs = pod["spec"].get("initContainers") or []
        init_statuses = [rt.init_containers[c["name"]].status(c.get("image", "")) for c in init_specs]
        pending = [c["name"] for c in init_specs if rt.init_containers[c["name"]].exit_code != 0]
        if not rt.initialized:
            # Containers wait until every init container has completed, as the kubelet reports them.
            for entry in statuses:
                entry["state"] = {"waiting": {"reason": "PodInitializing"}}
        unready = [c["name"] for c in specs if not rt.containers[c["name"]].ready]
        if terminal:
            ready_reason, ready_message = "PodCompleted", ""
        elif unready:
            ready_reason, ready_message = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
        else:
            ready_reason, ready_message = "", ""
        ready = "False" if terminal or unready else "True"
        conditions = [
            self._condition(rt, "PodReadyToStartContainers", "False" if terminal else "True"),
            self._condition(rt, "Initialized", "True")
            if rt.initialized
            else self._condition(
                rt,
                "Initialized",
                "False",
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending)}]",
            ),
            self._condition(rt, "Ready", ready, ready_reason, ready_message),
            self._condition(rt, "ContainersReady", ready, ready_reason, ready_message),
            self._condition(rt, "PodScheduled", "True"),
        ]
        ours: JSON = {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": statuses,
            **({"initContainerStatuses": init_statuses} if init_specs else {}),
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": rt.start_time,
            "reason": rt.reason or None,
            "message": rt.message or None,
        }
        digest = json.dumps(ours, sort_keys=True)
        if digest == rt.last_written:
            return
        existing = (pod.get("status") or {}).get("conditions") or []
        others = [c for c in existing if c.get("type") not in MANAGED_CONDITIONS]
        body = {**ours, "conditions": [*others, *conditions]}
        try:
            updated = self.state.kube.patch_pod_status(rt.namespace, rt.name, body)
        except ApiException as exc:
            if exc.status == 404:
                return
            if exc.status == 422:
                LOG.error("pod %s: status rejected: %s", rt.key, (exc.body or exc.reason or "")[:500])
                rt.last_written = digest  # do not hammer the API with an invalid status
                return
            raise
        previous = json.loads(rt.last_written)["phase"] if rt.last_written else (pod.get("status") or {}).get("phase")
        rt.last_written = digest
        if updated.get("metadata", {}).get("uid") == rt.uid:
            self.state.pods[rt.uid] = updated
        if previous != phase:
            LOG.info("pod %s: phase %s -> %s%s", rt.key, previous, phase, f" ({rt.reason})" if rt.reason else "")

    def shutdown(self) -> None:
        """Stop all loops and kill every container process (SIGTERM, then SIGKILL)."""
        with self.state.lock:
            self.state.stop.set()
            containers = [cr for rt in self.runtimes.values() for cr in rt.all_containers()]
            for cr in containers:
                if cr.prober is not None:
                    cr.prober.stop()
            procs = [cr for cr in containers if cr.process is not None]
        for cr in procs:
            if cr.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(cr.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_CAP_SECONDS
        for cr in procs:
            cr.exited.wait(max(0.0, deadline - time.monotonic()))
        for cr in procs:
            proc = cr.process
            if proc is not None and not cr.exited.is_set():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for cr in procs:
            cr.exited.wait(5)
        LOG.info("stopped; killed %d container process(es)", len(procs))
