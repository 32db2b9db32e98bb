"""Node simulator: plays scheduler, kubelet and a trivial volume provisioner for simulated nodes.

The local control plane (devcluster.cluster) has no kubelet, scheduler or container
runtime, and the machines running tests have no Docker. This process fills that gap
against the real API server so the real Job controller, garbage collector and TTL
controller see pods behave like on a cluster:

- registers one Node per `--nodes` name;
- scheduler: binds unscheduled pods (nodeSelector, required node affinity, claim
  existence, ReadWriteOncePod conflicts) or marks them `PodScheduled=False/Unschedulable`;
- kubelet: runs each container of a pod bound to one of its nodes as a local process,
  with the image's and pod's env, command/args semantics, uid/gid, volumes (a claim is
  the directory `<volumes-dir>/<namespace>/<claim>`, read-only really enforced), a real
  termination-message file, `activeDeadlineSeconds`, graceful kill on deletion, and
  writes pod status (phase, conditions, containerStatuses) like a kubelet;
- podgc stand-in: an unscheduled pod that is being deleted is marked Failed (as the
  pod GC controller does), so the Job controller can drop its tracking finalizer;
- provisioner: a Pending PVC gets its directory (mkdir -p only) and `status.phase: Bound`.

Images resolve through the local image store (devcluster/imagestore.py); an unknown
image gives `ErrImagePull` then `ImagePullBackOff`, and is retried.

Isolation: every container runs in a private mount namespace
(`unshare -m --propagation private`) where a shell script gives it a minimal /dev,
bind-mounts its volumes (remounting read-only ones `ro`, so writes fail with EROFS)
and its termination-message file, then execs `setpriv` to switch uid/gid/groups.
Missing mount points are created on a tmpfs that shadows the nearest existing
ancestor directory (its entries are bind-mounted back), so the host filesystem is
never written; the one exception is a mount point directly below `/` (e.g. `/data`),
which is created on the host as an empty directory (as root only). This needs root,
or root of a user namespace on the invoking user's subordinate ids
(devcluster/isolation.py, which the cluster and make targets enter); the simulator
refuses to start without it rather than run containers unisolated.

Simplifications (documented, deliberate): init containers and ephemeral containers
are ignored (Initialized is always True); restartPolicy Always/OnFailure containers
are not restarted (the pod simply ends Succeeded/Failed); env `valueFrom` supports
only simple fieldRefs and `envFrom` is skipped, both with a warning; configMap,
secret, projected and downwardAPI volumes are mounted as empty read-only directories;
resources, probes, tolerations, taints and events are not simulated. A subPath must
already exist in the volume (a kubelet would create it, which would change the claim).
A volume mounted inside another volume's mount point shadows that mount point's
directory with a tmpfs if the inner mount point does not already exist there.

Usage: python -m devcluster.nodesim --kubeconfig PATH --volumes-dir DIR --images-dir DIR
                                    --nodes a,b --log-dir DIR
       [--state-dir DIR] [--scheduler-name NAME] [--no-provisioner]
Runs until SIGTERM/SIGINT, then kills every container process it started and exits
(containers also get SIGKILL via setpriv --pdeathsig if the simulator itself is killed).
`--scheduler-name`/`--no-provisioner` let a second simulator share a cluster (tests).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import heapq
import itertools
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from devcluster import isolation
from devcluster.imagestore import Image, ImageInvalid, ImageNotFound, ImageStore

LOG = logging.getLogger("nodesim")

JSON = dict[str, Any]
Key = tuple[str, ...]

RESYNC_SECONDS = 2.0  # re-check pending/unschedulable pods and claims this often
PULL_RETRY_SECONDS = 2.0  # ErrImagePull -> ImagePullBackOff after this, then retry every 2x
KILL_GRACE_CAP_SECONDS = 3.0  # SIGTERM -> SIGKILL at most this long (tests stay fast)
WATCH_TIMEOUT_SECONDS = 240
TERMINATION_MESSAGE_CAP = 4096  # bytes read from the termination-message file
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
MERGE_PATCH = "application/merge-patch+json"
SCHEDULER_NAME = "default-scheduler"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MANAGED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
FIELD_REFS: dict[str, Callable[[JSON], str]] = {
    "metadata.name": lambda pod: pod["metadata"]["name"],
    "metadata.namespace": lambda pod: pod["metadata"]["namespace"],
    "metadata.uid": lambda pod: pod["metadata"]["uid"],
    "spec.nodeName": lambda pod: pod["spec"].get("nodeName", ""),
    "spec.serviceAccountName": lambda pod: pod["spec"].get("serviceAccountName", ""),
    "status.hostIP": lambda pod: "127.0.0.1",
    "status.podIP": lambda pod: "127.0.0.1",
}

# Runs inside the container's private mount namespace, as root, before exec'ing
# setpriv + the command. Arguments: STAGE WORKDIR {KIND SRC DST MODE}... -- ARGV...
# KIND is dir|file, MODE is ro|rw. Everything it mounts disappears with the namespace.
CONTAINER_SETUP_SCRIPT = r"""
set -eu
container_path=${PATH-}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
stage=$1 workdir=$2
shift 2
# Every host path this script needs (its stage, each volume's source) is opened first and used
# through /proc/self/fd: a container mount over an ancestor (an emptyDir at /tmp, say) would
# otherwise hide paths that later mounts still need. `mount -c` keeps those paths as given; `-n` leaves the
# host's /run/mount/utab alone (not writable in a user namespace, and these mounts die with the namespace).
exec {stage_fd}<"$stage"
stage=/proc/self/fd/$stage_fd
declare -a sources=()
ops=("$@")
i=0
while [ "${ops[$i]}" != -- ]; do
  exec {fd}<"${ops[$((i + 1))]}"
  sources+=("/proc/self/fd/$fd")
  i=$((i + 4))
done
n=0
shadowed=
mounting=
# A failure before the command starts is the runtime's, not the container's: like runc, name the mount
# being set up, and leave the message where the simulator reports it as the container's StartError.
die() {
  msg=${mounting:+error mounting \"$mounting\" to rootfs at \"$dst\": }$*
  echo "nodesim: $msg" >&2
  echo "$msg" >"$stage/start-error" || true
  exit 128
}
set -E
trap 'die "$BASH_COMMAND failed"' ERR
# Replace directory $1 (in this namespace only) by a tmpfs holding bind mounts of
# its original entries, so mount points can be created in it without host writes.
shadow() {
  n=$((n + 1)); t=$stage/shadow$n
  mkdir -p "$t"
  mount -n -c -t tmpfs -o "mode=$(stat -c %a "$1")" nodesim-shadow "$t"
  chown "$(stat -c %u:%g "$1")" "$t"
  for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    b=${e##*/}
    if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$t/$b"
    elif [ -d "$e" ]; then mkdir "$t/$b"; mount -n -c --rbind "$e" "$t/$b"
    else : >"$t/$b"; mount -n -c --bind "$e" "$t/$b"; fi
  done
  mount -n -c --move "$t" "$1"
  shadowed="$shadowed
$1"
}
# A minimal /dev like an OCI runtime gives a container (hides the host's disks).
container_dev() {
  n=$((n + 1)); t=$stage/dev$n
  mkdir -p "$t"
  mount -n -c -t tmpfs -o mode=755,nosuid nodesim-dev "$t"
  for d in null zero full random urandom tty ptmx; do
    [ -e "/dev/$d" ] || continue
    : >"$t/$d"; mount -n -c --bind "/dev/$d" "$t/$d"
  done
  for d in pts shm mqueue; do
    [ -d "/dev/$d" ] || continue
    mkdir "$t/$d"; mount -n -c --rbind "/dev/$d" "$t/$d"
  done
  ln -s /proc/self/fd "$t/fd"; ln -s /proc/self/fd/0 "$t/stdin"
  ln -s /proc/self/fd/1 "$t/stdout"; ln -s /proc/self/fd/2 "$t/stderr"
  mount -n -c --move "$t" /dev
  shadowed="$shadowed
/dev"
}
# Make $2 exist as a mount point of kind $1 (dir|file).
mount_point() {
  if [ "$1" = dir ] && [ -d "$2" ] && [ ! -L "$2" ]; then return 0; fi
  if [ "$1" = file ] && [ -f "$2" ] && [ ! -L "$2" ]; then return 0; fi
  if [ -e "$2" ] || [ -L "$2" ]; then die "mount point $2 exists but is not a $1"; fi
  a=${2%/*}
  while [ -n "$a" ] && [ ! -d "$a" ]; do a=${a%/*}; done
  if [ -z "$a" ]; then
    # Directly below /: shadowing / is not possible, create an empty host directory.
    top=${2#/}; top=/${top%%/*}
    [ "$top" = "$2" ] && [ "$1" = file ] && die "cannot create file mount point $2 directly below /"
    mkdir -p "$top" || die "cannot create mount point $top directly below / (not writable without real root)"
    a=$top
  fi
  case "$shadowed
" in
    *"
$a
"*) ;;
    *) shadow "$a" ;;
  esac
  if [ "$1" = dir ]; then mkdir -p "$2"; else mkdir -p "${2%/*}"; : >"$2"; fi
}
container_dev
k=0
while [ "$1" != -- ]; do
  kind=$1 dst=$3 mode=$4
  shift 4
  if [ "$kind" = image ]; then
    # Only when a volume hides it; the shadow this needs then stands over that volume's directory.
    if [ -d "$dst" ]; then k=$((k + 1)); continue; fi
    kind=dir
  fi
  mounting=${ops[$((k * 4 + 1))]}
  mount_point "$kind" "$dst"
  mount -n -c --bind "${sources[$k]}" "$dst"
  if [ "$mode" = ro ]; then mount -n -c -o remount,bind,ro "$dst"; fi
  mounting=
  k=$((k + 1))
done
shift
if [ ! -d "$workdir" ]; then mount_point dir "$workdir"; fi
# Close every host fd: the container must not reach the writable originals behind its mounts.
for src in "${sources[@]}" "$stage"; do
  eval "exec ${src##*/}<&-"
done
cd "$workdir"
PATH=$container_path
exec "$@"
"""


# ---------------------------------------------------------------------------- helpers


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


_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z0-9]+)\)")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined vars are replaced, `$$` escapes, others stay."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(repl, text)


def match_expression(expr: JSON, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        try:
            have, want = int(labels[key]), int(values[0])
        except (KeyError, IndexError, ValueError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def node_fits(pod: JSON, node: str, labels: dict[str, str]) -> bool:
    """nodeSelector and required node affinity, as the scheduler's NodeAffinity filter."""
    spec = pod["spec"]
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    if not terms:
        return True
    fields = {"metadata.name": node}
    for term in terms:
        exprs = term.get("matchExpressions") or []
        field_exprs = term.get("matchFields") or []
        if not exprs and not field_exprs:
            continue  # an empty term matches nothing
        if all(match_expression(e, labels) for e in exprs) and all(match_expression(e, fields) for e in field_exprs):
            return True
    return False


def tail_log(path: pathlib.Path) -> str:
    """The kubelet's FallbackToLogsOnError text: last 80 lines, at most the last 2048 bytes."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    lines = data.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
    return b"".join(lines)[-FALLBACK_LOG_BYTES:].decode("utf-8", errors="replace")


# ------------------------------------------------------------------------- work queue


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


# --------------------------------------------------------------------------- API access


class Kube:
    """The few API calls the simulator makes, on raw JSON (no model (de)serialisation).

    Responses are read with `_preload_content=False`: it is cheaper on a small box,
    and it sidesteps the client's known failure to deserialise a Binding response.
    """

    def __init__(self, kubeconfig: pathlib.Path) -> None:
        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api_client)

    @staticmethod
    def _json(resp: Any) -> Any:
        try:
            data = resp.read()
        finally:
            resp.release_conn()
        return json.loads(data) if data else None

    def list(self, func: Callable[..., Any]) -> tuple[list[JSON], str]:
        body = self._json(func(_preload_content=False, _request_timeout=60))
        return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])

    def watch(self, func: Callable[..., Any], resource_version: str) -> Iterator[JSON]:
        resp = func(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            _preload_content=False,
            _request_timeout=(10, WATCH_TIMEOUT_SECONDS + 30),
        )
        try:
            for line in iter_resp_lines(resp):
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.close()
            resp.release_conn()

    def get_node(self, name: str) -> JSON | None:
        try:
            return dict(self._json(self.core.read_node(name, _preload_content=False)))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_node(self, body: JSON) -> None:
        self._json(self.core.create_node(cast(Any, body), _preload_content=False))

    def patch_node_status(self, name: str, status: JSON) -> None:
        self._json(
            self.core.patch_node_status(name, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False)
        )

    def bind(self, namespace: str, name: str, node: str) -> None:
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=node),
        )
        # Known client issue: the Binding response may fail to deserialise although the
        # binding was created. Raw reads avoid it; keep the guard regardless.
        with contextlib.suppress(ValueError):
            self._json(self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False))

    def patch_pod_status(self, namespace: str, name: str, status: JSON) -> JSON:
        return dict(
            self._json(
                self.core.patch_namespaced_pod_status(
                    name, namespace, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False
                )
            )
        )

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        body = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid))
        self._json(
            self.core.delete_namespaced_pod(name, namespace, body=body, grace_period_seconds=0, _preload_content=False)
        )

    def patch_pvc_status(self, namespace: str, name: str, status: JSON) -> JSON:
        return dict(
            self._json(
                self.core.patch_namespaced_persistent_volume_claim_status(
                    name, namespace, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False
                )
            )
        )


class Reflector(threading.Thread):
    """List + watch one resource type into callbacks; re-lists on 410 Gone or any error."""

    def __init__(
        self,
        name: str,
        kube: Kube,
        func: Callable[..., Any],
        *,
        on_replace: Callable[[list[JSON]], None],
        on_event: Callable[[str, JSON], None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"reflector-{name}", daemon=True)
        self.kube = kube
        self.func = func
        self.on_replace = on_replace
        self.on_event = on_event
        self.stop = stop
        self.synced = threading.Event()
        self.what = name

    def run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                items, rv = self.kube.list(self.func)
                self.on_replace(items)
                self.synced.set()
                backoff = 0.5
                while not self.stop.is_set():
                    rv = self._watch_once(rv)
            except _Relist:
                continue
            except Exception as exc:
                if self.stop.is_set():
                    return
                LOG.warning(
                    "%s watch failed (%s: %s); re-listing in %.1fs", self.what, type(exc).__name__, exc, backoff
                )
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _watch_once(self, rv: str) -> str:
        for event in self.kube.watch(self.func, rv):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                # 410 Gone: our resourceVersion is too old; anything else: start over too.
                raise _Relist()
            new_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if new_rv:
                rv = str(new_rv)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.on_event(str(kind), obj)
            if self.stop.is_set():
                break
        return rv


class _Relist(Exception):
    pass


# ----------------------------------------------------------------------------- runtime


@dataclasses.dataclass
class Launch:
    """Everything needed to start one container process."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: pathlib.Path
    term_file: pathlib.Path | None
    start_error: pathlib.Path | None = None  # written by the setup script when it could not start the command


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

    def terminate_unstarted(self, reason: str, message: str) -> None:
        """A container that never ran ends like the kubelet reports a lost one."""
        self.state, self.reason, self.message, self.exit_code = "terminated", reason, message, 137
        self.finished_at = now_rfc3339()
        self.spawned.set()
        self.exited.set()

    def status(self, image: str) -> JSON:
        state: JSON
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            terminated: JSON = {"exitCode": self.exit_code, "reason": self.reason, "finishedAt": self.finished_at}
            if self.started_at:
                terminated["startedAt"] = self.started_at
            if self.message:
                terminated["message"] = self.message
            if self.container_id:
                terminated["containerID"] = self.container_id
            state = {"terminated": terminated}
        else:
            waiting: JSON = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        entry: JSON = {
            "name": self.name,
            "image": image,
            "imageID": self.image_id if self.state != "waiting" else "",
            "ready": self.state == "running",
            "restartCount": 0,
            "started": self.state == "running",
            "state": state,
            "lastState": {},
        }
        if self.container_id:
            entry["containerID"] = self.container_id
        return entry


@dataclasses.dataclass
class PodRuntime:
    uid: str
    namespace: str
    name: str
    node: str
    start_time: str
    start_epoch: float
    state_dir: pathlib.Path
    containers: dict[str, ContainerRuntime] = dataclasses.field(default_factory=dict)
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
        return [c for c in self.containers.values() if c.state == "running"]


# --------------------------------------------------------------------------- simulator


class Simulator:
    def __init__(
        self,
        kube: Kube,
        *,
        nodes: list[str],
        volumes_dir: pathlib.Path,
        images: ImageStore,
        log_dir: pathlib.Path,
        state_dir: pathlib.Path,
        scheduler_name: str,
        provisioner: bool,
        isolated_as: str,
    ) -> None:
        self.kube = kube
        self.nodes = nodes
        self.node_labels = {
            n: {"kubernetes.io/hostname": n, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"} for n in nodes
        }
        self.volumes_dir = volumes_dir
        self.images = images
        self.log_dir = log_dir
        self.state_dir = state_dir
        self.scheduler_name = scheduler_name
        self.provisioner = provisioner
        self.lock = threading.RLock()
        self.queue = WorkQueue()
        self.stop = threading.Event()
        self.pods: dict[str, JSON] = {}
        self.pvcs: dict[tuple[str, str], JSON] = {}
        self.runtimes: dict[str, PodRuntime] = {}
        self.unschedulable: dict[str, str] = {}  # pod uid -> message last written
        self.podgc_done: set[str] = set()
        self.isolated_as = isolated_as  # how containers are isolated: isolation.require()'s answer
        self.unshare = shutil.which("unshare") or "unshare"
        self.setpriv = shutil.which("setpriv") or "setpriv"

    # -- setup

    def register_nodes(self) -> None:
        for node in self.nodes:
            if self.kube.get_node(node) is None:
                with contextlib.suppress(ApiException):  # a racing creator is fine
                    self.kube.create_node(
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "metadata": {"name": node, "labels": self.node_labels[node]},
                            "spec": {},
                        }
                    )
                LOG.info("node %s: registered", node)
            now = now_rfc3339()
            resources = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
            self.kube.patch_node_status(
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
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        # Containers reach claims only through their mounts: without a chroot the host path would
        # otherwise lead a container to the writable original behind a read-only mount.
        self.volumes_dir.chmod(0o700)
        self.register_nodes()
        pods = Reflector(
            "pods",
            self.kube,
            self.kube.core.list_pod_for_all_namespaces,
            on_replace=self._replace_pods,
            on_event=self._pod_event,
            stop=self.stop,
        )
        pvcs = Reflector(
            "pvcs",
            self.kube,
            self.kube.core.list_persistent_volume_claim_for_all_namespaces,
            on_replace=self._replace_pvcs,
            on_event=self._pvc_event,
            stop=self.stop,
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
            ",".join(self.nodes),
            self.images.root,
            self.volumes_dir,
            self.isolated_as,
        )

    # -- informer callbacks (reflector threads)

    def _replace_pods(self, items: list[JSON]) -> None:
        with self.lock:
            fresh = {p["metadata"]["uid"]: p for p in items}
            gone = set(self.pods) - set(fresh)
            self.pods = fresh
        for uid in [*fresh, *gone]:
            self.queue.add(("pod", uid))

    def _pod_event(self, kind: str, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            if kind == "DELETED":
                self.pods.pop(uid, None)
            else:
                self.pods[uid] = pod
        self.queue.add(("pod", uid))

    def _replace_pvcs(self, items: list[JSON]) -> None:
        with self.lock:
            self.pvcs = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in items}
            keys = list(self.pvcs)
        for ns, name in keys:
            self.queue.add(("pvc", ns, name))

    def _pvc_event(self, kind: str, pvc: JSON) -> None:
        key = (pvc["metadata"]["namespace"], pvc["metadata"]["name"])
        with self.lock:
            if kind == "DELETED":
                self.pvcs.pop(key, None)
            else:
                self.pvcs[key] = pvc
        self.queue.add(("pvc", *key))

    # -- controller loop

    def _resync_loop(self) -> None:
        while not self.stop.wait(RESYNC_SECONDS):
            with self.lock:
                keys: list[Key] = []
                for uid, pod in self.pods.items():
                    node = pod["spec"].get("nodeName")
                    if pod["metadata"].get("deletionTimestamp") and (not node or node in self.nodes):
                        keys.append(("pod", uid))
                    elif is_terminal(pod):
                        continue
                    elif not node or node in self.nodes:
                        keys.append(("pod", uid))
                keys.extend(("pod", uid) for uid in self.runtimes if uid not in self.pods)
                keys.extend(
                    ("pvc", ns, n)
                    for (ns, n), c in self.pvcs.items()
                    if (c.get("status") or {}).get("phase", "Pending") == "Pending"
                )
            for key in keys:
                self.queue.add(key)

    def _controller(self) -> None:
        while not self.stop.is_set():
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                with self.lock:
                    if self.stop.is_set():
                        return
                    if key[0] == "pod":
                        self._reconcile_pod(key[1])
                    elif key[0] == "pvc":
                        self._reconcile_pvc(key[1], key[2])
            except Exception:
                LOG.exception("reconciling %s failed; retrying in 2s", "/".join(key))
                self.queue.add_after(key, 2.0)

    # -- provisioner

    def _reconcile_pvc(self, namespace: str, name: str) -> None:
        pvc = self.pvcs.get((namespace, name))
        if pvc is None or not self.provisioner or pvc["metadata"].get("deletionTimestamp"):
            return
        if (pvc.get("status") or {}).get("phase", "Pending") != "Pending":
            return
        directory = self.volumes_dir / namespace / name
        directory.mkdir(parents=True, exist_ok=True)
        spec = pvc.get("spec") or {}
        status: JSON = {"phase": "Bound", "accessModes": spec.get("accessModes") or []}
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if storage:
            status["capacity"] = {"storage": storage}
        try:
            # Cache the answer: pods reconciled next must already see the claim Bound.
            self.pvcs[(namespace, name)] = self.kube.patch_pvc_status(namespace, name, status)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        LOG.info("claim %s/%s: Bound to %s", namespace, name, directory)
        # Pods waiting for this claim can be scheduled now.
        for uid, pod in self.pods.items():
            if pod["metadata"]["namespace"] == namespace and name in claim_names(pod):
                self.queue.add(("pod", uid))

    # -- scheduler

    def _reconcile_pod(self, uid: str) -> None:
        pod = self.pods.get(uid)
        rt = self.runtimes.get(uid)
        if pod is None:
            if rt is not None:
                self._pod_gone(rt)
            self.unschedulable.pop(uid, None)
            self.podgc_done.discard(uid)
            return
        node = pod["spec"].get("nodeName")
        if not node:
            if pod["metadata"].get("deletionTimestamp"):
                self._gc_unscheduled_terminating(pod)
            elif not is_terminal(pod) and pod["spec"].get("schedulerName", SCHEDULER_NAME) == self.scheduler_name:
                self._schedule(pod)
            return
        if node in self.nodes:
            self._kubelet_sync(pod)

    def _schedule(self, pod: JSON) -> None:
        uid, ns = pod["metadata"]["uid"], pod["metadata"]["namespace"]
        total = len(self.nodes)
        reason = self._claim_problem(pod)
        fits = [n for n in self.nodes if node_fits(pod, n, self.node_labels[n])]
        if reason is None and not fits:
            reason = f"{total} node(s) didn't match Pod's node affinity/selector"
        if reason is not None:
            message = f"0/{total} nodes are available: {reason}."
            if self.unschedulable.get(uid) != message:
                self._write_conditions(
                    pod,
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastProbeTime": None,
                        "lastTransitionTime": now_rfc3339(),
                    },
                )
                self.unschedulable[uid] = message
                LOG.info("pod %s: Unschedulable: %s", pod_key(pod), message)
            return
        node = fits[0]
        try:
            self.kube.bind(ns, pod["metadata"]["name"], node)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or bound by someone else meanwhile
                return
            raise
        self.unschedulable.pop(uid, None)
        # Reflect the binding locally at once so conflict checks see it before the watch does.
        pod["spec"]["nodeName"] = node
        LOG.info("pod %s: bound to %s", pod_key(pod), node)
        self.queue.add(("pod", uid))

    def _claim_problem(self, pod: JSON) -> str | None:
        """Scheduler-style reason why the pod's claims block scheduling, or None."""
        ns, uid = pod["metadata"]["namespace"], pod["metadata"]["uid"]
        for name in claim_names(pod):
            pvc = self.pvcs.get((ns, name))
            if pvc is None:
                return f'persistentvolumeclaim "{name}" not found'
            if pvc["metadata"].get("deletionTimestamp"):
                return f'persistentvolumeclaim "{name}" is being deleted'
            if (pvc.get("status") or {}).get("phase") != "Bound":
                return "pod has unbound immediate PersistentVolumeClaims"
            if "ReadWriteOncePod" in ((pvc.get("spec") or {}).get("accessModes") or []):
                users = [
                    p["metadata"]["name"]
                    for p in self.pods.values()
                    if p["metadata"]["uid"] != uid
                    and p["metadata"]["namespace"] == ns
                    and p["spec"].get("nodeName")
                    and not is_terminal(p)
                    and name in claim_names(p)
                ]
                if users:
                    return (
                        f'{len(self.nodes)} node(s) unavailable: persistentvolumeclaim "{name}" has access mode '
                        f"ReadWriteOncePod and is already used by pod(s) {', '.join(sorted(users))}"
                    )
        return None

    def _write_conditions(self, pod: JSON, condition: JSON) -> None:
        others = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != condition["type"]]
        try:
            self.kube.patch_pod_status(
                pod["metadata"]["namespace"], pod["metadata"]["name"], {"conditions": [*others, condition]}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _gc_unscheduled_terminating(self, pod: JSON) -> None:
        """What the pod GC controller does: an unscheduled pod being deleted becomes Failed."""
        uid = pod["metadata"]["uid"]
        if is_terminal(pod) or uid in self.podgc_done:
            return
        now = now_rfc3339()
        others = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != "DisruptionTarget"]
        try:
            self.kube.patch_pod_status(
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                {
                    "phase": "Failed",
                    "conditions": [
                        *others,
                        {
                            "type": "DisruptionTarget",
                            "status": "True",
                            "reason": "DeletionByPodGC",
                            "message": "PodGC: node no longer exists",
                            "lastProbeTime": None,
                            "lastTransitionTime": now,
                        },
                    ],
                },
            )
        except ApiException as exc:
            if exc.status not in (404, 422):
                raise
        self.podgc_done.add(uid)
        LOG.info("pod %s: unscheduled and terminating: marked Failed", pod_key(pod))

    # -- kubelet

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
        )
        for cond in status.get("conditions") or []:
            rt.transitions[cond["type"]] = (cond.get("status", ""), cond.get("lastTransitionTime") or now_rfc3339())
        previous = {cs["name"]: cs for cs in status.get("containerStatuses") or []}
        for c in pod["spec"]["containers"]:
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
            rt.containers[c["name"]] = cr
        deadline = pod["spec"].get("activeDeadlineSeconds")
        if deadline:
            self.queue.add_after(("pod", rt.uid), rt.start_epoch + int(deadline) - time.time() + 0.05)
        return rt

    def _kubelet_sync(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        rt = self.runtimes.get(uid)
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        if rt is None:
            if is_terminal(pod):
                # Finished before this simulator started: nothing to run, only the final delete.
                if deleting and uid not in self.podgc_done:
                    self.podgc_done.add(uid)
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
            for c in pod["spec"]["containers"]:
                self._sync_container(pod, rt, c)
        self._write_status(pod, rt)

    @staticmethod
    def _grace(pod: JSON) -> float:
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(min(max(int(grace), 0), KILL_GRACE_CAP_SECONDS))

    def _stop_pod(self, rt: PodRuntime, pod: JSON | None, *, grace: float, why: str) -> None:
        rt.stopping = True
        for cr in rt.containers.values():
            if cr.state == "waiting":
                cr.terminate_unstarted(
                    "ContainerStatusUnknown", "The container could not be located when the pod was terminated"
                )
                LOG.info("pod %s container %s: never started, %s", rt.key, cr.name, why)
            elif cr.state == "running" and not cr.kill_started:
                cr.kill_started = True
                LOG.info("pod %s container %s: killing (%s, grace %.0fs)", rt.key, cr.name, why, grace)
                threading.Thread(target=self._kill, args=(rt, cr, grace), name=f"kill-{rt.name}", daemon=True).start()

    def _kill(self, rt: PodRuntime, cr: ContainerRuntime, grace: float) -> None:
        cr.spawned.wait(30)
        proc = cr.process
        if proc is None or cr.exited.is_set():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        if not cr.exited.wait(grace):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            cr.exited.wait(30)

    def _final_delete_terminal(self, pod: JSON) -> None:
        meta = pod["metadata"]
        try:
            self.kube.delete_pod_now(meta["namespace"], meta["name"], meta["uid"])
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
        LOG.info("pod %s: already terminated, deleted (grace 0)", pod_key(pod))

    def _final_delete(self, pod: JSON, rt: PodRuntime) -> None:
        try:
            self.kube.delete_pod_now(rt.namespace, rt.name, rt.uid)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
        rt.final_delete_done = True
        LOG.info("pod %s: terminated, deleted (grace 0)", rt.key)

    def _pod_gone(self, rt: PodRuntime) -> None:
        """The pod object vanished: kill what still runs, then forget it."""
        if rt.running():
            self._stop_pod(rt, None, grace=KILL_GRACE_CAP_SECONDS, why="pod vanished")
            return  # the runner thread re-queues the pod when the process exits
        self.runtimes.pop(rt.uid, None)
        shutil.rmtree(rt.state_dir, ignore_errors=True)

    def _sync_container(self, pod: JSON, rt: PodRuntime, c: JSON) -> None:
        cr = rt.containers[c["name"]]
        if cr.state != "waiting":
            return
        ref = c.get("image", "")
        if time.monotonic() < cr.next_pull_at:
            return  # backing off: resyncs do not retry the pull early
        try:
            image = self.images.resolve(ref)
        except (ImageNotFound, ImageInvalid) as exc:
            detail = "not found in local image store" if isinstance(exc, ImageNotFound) else f"invalid image: {exc}"
            cr.pull_failures += 1
            if cr.pull_failures == 1:
                self._set_waiting(rt, cr, "ErrImagePull", f'failed to pull image "{ref}": {detail}')
            else:
                self._set_waiting(rt, cr, "ImagePullBackOff", f'Back-off pulling image "{ref}": ErrImagePull: {detail}')
            # Like the kubelet: ErrImagePull first, then ImagePullBackOff while retrying
            # with a growing (here short and capped) delay, so an image added later is found.
            delay = PULL_RETRY_SECONDS * min(cr.pull_failures, 3)
            cr.next_pull_at = time.monotonic() + delay
            self.queue.add_after(("pod", rt.uid), delay + 0.05)
            return
        cr.image_id = image.image_id
        try:
            launch = self._prepare(pod, rt, c, cr, image)
        except _Waiting as waiting:
            self._set_waiting(rt, cr, waiting.reason, waiting.message)
            return
        except _StartError as err:
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
        threading.Thread(target=self._run, args=(rt, cr, launch), name=f"run-{rt.name}", daemon=True).start()

    def _set_waiting(self, rt: PodRuntime, cr: ContainerRuntime, reason: str, message: str) -> None:
        if (cr.reason, cr.message) != (reason, message):
            LOG.info("pod %s container %s: waiting %s: %s", rt.key, cr.name, reason, message)
        cr.state, cr.reason, cr.message = "waiting", reason, message

    def _prepare(self, pod: JSON, rt: PodRuntime, c: JSON, cr: ContainerRuntime, image: Image) -> Launch:
        """Resolve env, command, identity and mounts; raise _Waiting/_StartError like a kubelet would."""
        ns, spec = rt.namespace, pod["spec"]
        psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser", image.uid))
        gid = csc.get("runAsGroup", psc.get("runAsGroup", image.gid if uid == image.uid else 0))
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and uid == 0:
            raise _Waiting("CreateContainerConfigError", "container has runAsNonRoot and image will run as root")

        env = dict(image.env)
        env.setdefault("PATH", image.path_env)
        env["HOSTNAME"] = rt.name
        for item in c.get("env") or []:
            name = item["name"]
            if "valueFrom" in item:
                ref = (item["valueFrom"].get("fieldRef") or {}).get("fieldPath")
                if ref in FIELD_REFS:
                    env[name] = str(FIELD_REFS[ref](pod))
                else:
                    self._warn_once(rt, f"env {name}: valueFrom is not supported by the simulator; skipped")
                continue
            env[name] = expand_vars(item.get("value", ""), env)
        if c.get("envFrom"):
            self._warn_once(rt, "envFrom is not supported by the simulator; skipped")
        env.setdefault("HOME", "/")  # what a runtime sets when the image has no passwd entry

        command = [expand_vars(a, env) for a in c.get("command") or []]
        args = [expand_vars(a, env) for a in c.get("args") or []]
        # Kubernetes semantics: command replaces the entrypoint and drops the image's cmd.
        argv = command + args if command else list(image.entrypoint) + (args or list(image.cmd))
        if not argv:
            raise _StartError("no command specified")
        if "/" not in argv[0] and shutil.which(argv[0], path=env["PATH"]) is None:
            raise _StartError(f'exec: "{argv[0]}": executable file not found in $PATH')
        workdir = c.get("workingDir") or image.working_dir or "/"

        state = rt.state_dir / c["name"]
        state.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{ns}_{rt.name}_{c['name']}.log"
        ops = self._mount_ops(pod, rt, c)
        # The image's files are host paths here (no chroot): lay them back over any container mount that
        # hides them (an emptyDir at /tmp when the repository is under /tmp), read-only like an image layer.
        ops += ["image", str(image.rootfs), str(image.rootfs), "ro"]
        term_file = state / "termination-log"
        term_file.write_bytes(b"")
        term_file.chmod(0o666)  # any uid may write its message, as with a kubelet
        ops += ["file", str(term_file), c.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH, "rw"]
        stage = state / "stage"
        stage.mkdir(exist_ok=True)
        start_error = stage / "start-error"
        start_error.unlink(missing_ok=True)

        # Like container runtimes: the primary gid, supplementalGroups and fsGroup are all
        # supplementary groups of the process.
        groups = [int(gid), *(int(g) for g in psc.get("supplementalGroups") or [])]
        if psc.get("fsGroup") is not None:
            groups.append(int(psc["fsGroup"]))
        setpriv = [self.setpriv, "--reuid", str(uid), "--regid", str(gid)]
        setpriv += ["--groups", ",".join(str(g) for g in dict.fromkeys(groups))]
        setpriv += ["--pdeathsig", "KILL"]  # if the simulator dies, its containers die too
        if csc.get("allowPrivilegeEscalation") is False:
            setpriv.append("--no-new-privs")
        if "ALL" in ((csc.get("capabilities") or {}).get("drop") or []):
            setpriv += ["--bounding-set", "-all", "--inh-caps", "-all"]
        full = [
            self.unshare,
            "-m",
            "--propagation",
            "private",
            "--",
            "/bin/bash",  # bash, not sh: the script allocates file descriptors with {var}<
            "-c",
            CONTAINER_SETUP_SCRIPT,
            "nodesim-container",
            str(stage),
            workdir,
            *ops,
            "--",
            *setpriv,
            "--",
            *argv,
        ]
        return Launch(argv=full, env=env, cwd="/", log_path=log_path, term_file=term_file, start_error=start_error)

    def _mount_ops(self, pod: JSON, rt: PodRuntime, c: JSON) -> list[str]:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        ops: list[str] = []
        mounts = sorted(c.get("volumeMounts") or [], key=lambda m: m["mountPath"].rstrip("/").count("/"))
        for vm in mounts:
            vol = volumes.get(vm["name"])
            if vol is None:
                raise _Waiting("CreateContainerConfigError", f'volume "{vm["name"]}" not found in pod spec')
            read_only = bool(vm.get("readOnly"))
            if vol.get("persistentVolumeClaim"):
                source = vol["persistentVolumeClaim"]
                claim = source["claimName"]
                pvc = self.pvcs.get((rt.namespace, claim))
                if pvc is None:
                    raise _Waiting("ContainerCreating", f'persistentvolumeclaim "{claim}" not found')
                self._check_attach(pod, rt, claim, pvc)
                src = self.volumes_dir / rt.namespace / claim
                src.mkdir(parents=True, exist_ok=True)  # never touches an existing claim's contents
                read_only = read_only or bool(source.get("readOnly"))
            elif "emptyDir" in vol:
                src = rt.state_dir / "volumes" / vm["name"]
                if not src.exists():
                    src.mkdir(parents=True)
                    src.chmod(0o777)
            elif vol.get("hostPath"):
                src = pathlib.Path(vol["hostPath"]["path"])
                if not src.exists():
                    raise _Waiting("ContainerCreating", f"hostPath {src} does not exist")
            else:
                kind = next((k for k in vol if k != "name"), "unknown")
                self._warn_once(rt, f'volume "{vm["name"]}" ({kind}) is not supported: mounted empty and read-only')
                src = rt.state_dir / "unsupported" / vm["name"]
                src.mkdir(parents=True, exist_ok=True)
                read_only = True
            if vm.get("subPath"):
                sub = src / vm["subPath"]
                if ".." in pathlib.PurePosixPath(vm["subPath"]).parts or not sub.exists():
                    # A kubelet would create it; that would change the claim, so refuse instead.
                    raise _Waiting(
                        "CreateContainerConfigError",
                        f'subPath "{vm["subPath"]}" does not exist in volume "{vm["name"]}"',
                    )
                src = sub
            ops += ["dir" if src.is_dir() else "file", str(src), vm["mountPath"], "ro" if read_only else "rw"]
        return ops

    def _check_attach(self, pod: JSON, rt: PodRuntime, claim: str, pvc: JSON) -> None:
        """ReadWriteOnce: a claim in use by a running pod on another node cannot attach here."""
        modes = (pvc.get("spec") or {}).get("accessModes") or []
        if "ReadWriteOnce" not in modes or "ReadWriteMany" in modes or "ReadOnlyMany" in modes:
            return
        users = sorted(
            p["metadata"]["name"]
            for p in self.pods.values()
            if p["metadata"]["uid"] != rt.uid
            and p["metadata"]["namespace"] == rt.namespace
            and p["spec"].get("nodeName") not in (None, rt.node)
            and (p.get("status") or {}).get("phase") == "Running"
            and claim in claim_names(p)
        )
        if users:
            raise _Waiting(
                "ContainerCreating",
                f'Multi-Attach error for volume "{claim}" Volume is already used by pod(s) {", ".join(users)}',
            )

    def _warn_once(self, rt: PodRuntime, message: str) -> None:
        if message not in rt.warned:
            rt.warned.add(message)
            LOG.warning("pod %s: %s", rt.key, message)

    def _run(self, rt: PodRuntime, cr: ContainerRuntime, launch: Launch) -> None:
        """Runner thread: owns the process (and is its parent for --pdeathsig) until it exits."""
        try:
            with launch.log_path.open("wb") as log, self.lock:
                if self.stop.is_set():
                    raise OSError("simulator is shutting down")
                proc = subprocess.Popen(
                    launch.argv,
                    env=launch.env,
                    cwd=launch.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
                cr.process = proc
        except OSError as exc:
            with self.lock:
                cr.state, cr.reason, cr.exit_code = "terminated", "StartError", 128
                cr.message, cr.finished_at = f"failed to start container: {exc}", now_rfc3339()
            cr.spawned.set()
            cr.exited.set()
            self.queue.add(("pod", rt.uid))
            return
        cr.spawned.set()
        code = proc.wait()
        # The container's init process is gone: nothing else of it may survive.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        exit_code = 128 - code if code < 0 else code
        message = self._termination_message(cr, exit_code)
        reason = "Completed" if exit_code == 0 else "Error"
        if launch.start_error is not None and launch.start_error.exists():
            # The container never started (a mount failed): what containerd reports as StartError.
            reason = "StartError"
            failure = launch.start_error.read_text(errors="replace").strip()
            message = f"failed to start container: error during container init: {failure}"
        with self.lock:
            cr.state, cr.exit_code, cr.process = "terminated", exit_code, None
            cr.reason = reason
            cr.finished_at, cr.message = now_rfc3339(), message
        cr.exited.set()
        LOG.info("pod %s container %s: exited %d", rt.key, cr.name, exit_code)
        self.queue.add(("pod", rt.uid))

    @staticmethod
    def _termination_message(cr: ContainerRuntime, exit_code: int) -> str:
        message = ""
        if cr.term_file is not None:
            try:
                with cr.term_file.open("rb") as f:
                    message = f.read(TERMINATION_MESSAGE_CAP).decode("utf-8", errors="replace")
            except OSError:
                message = ""
        if not message and cr.fallback_to_logs and exit_code != 0 and cr.log_path is not None:
            message = tail_log(cr.log_path)
        return message

    # -- pod status

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
        states = [cr.state for cr in rt.containers.values()]
        if "waiting" in states:
            return "Pending"
        if "running" in states:
            return "Running"
        if rt.reason == "DeadlineExceeded":
            return "Failed"
        return "Succeeded" if all(cr.exit_code == 0 for cr in rt.containers.values()) else "Failed"

    def _write_status(self, pod: JSON, rt: PodRuntime) -> None:
        phase = self._phase(rt)
        terminal = phase in ("Succeeded", "Failed")
        specs = pod["spec"]["containers"]
        statuses = [rt.containers[c["name"]].status(c.get("image", "")) for c in specs]
        unready = [c["name"] for c in specs if rt.containers[c["name"]].state != "running"]
        if terminal:
            ready_reason, ready_message = "PodCompleted", ""
        elif unready:
            ready_reason, ready_message = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
        else:
            ready_reason, ready_message = "", ""
        ready = "False" if terminal or unready else "True"
        conditions = [
            self._condition(rt, "PodReadyToStartContainers", "False" if terminal else "True"),
            self._condition(rt, "Initialized", "True"),
            self._condition(rt, "Ready", ready, ready_reason, ready_message),
            self._condition(rt, "ContainersReady", ready, ready_reason, ready_message),
            self._condition(rt, "PodScheduled", "True"),
        ]
        ours: JSON = {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": statuses,
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
            updated = self.kube.patch_pod_status(rt.namespace, rt.name, body)
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
            self.pods[rt.uid] = updated
        if previous != phase:
            LOG.info("pod %s: phase %s -> %s%s", rt.key, previous, phase, f" ({rt.reason})" if rt.reason else "")

    # -- shutdown

    def shutdown(self) -> None:
        """Stop all loops and kill every container process (SIGTERM, then SIGKILL)."""
        with self.lock:
            self.stop.set()
            procs = [cr for rt in self.runtimes.values() for cr in rt.containers.values() if cr.process is not None]
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


class _Waiting(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _StartError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=pathlib.Path, required=True)
    parser.add_argument(
        "--volumes-dir", type=pathlib.Path, required=True, help="claims live at <volumes-dir>/<namespace>/<claim>"
    )
    parser.add_argument("--images-dir", type=pathlib.Path, required=True, help="root of the local image store")
    parser.add_argument("--nodes", required=True, help="comma-separated simulated node names")
    parser.add_argument(
        "--log-dir", type=pathlib.Path, required=True, help="container logs go to <log-dir>/<ns>_<pod>_<container>.log"
    )
    parser.add_argument(
        "--state-dir",
        type=pathlib.Path,
        default=None,
        help="per-pod scratch (emptyDirs, termination files); default: a temp dir removed at exit",
    )
    parser.add_argument(
        "--scheduler-name", default=SCHEDULER_NAME, help="schedule only pods with this spec.schedulerName"
    )
    parser.add_argument(
        "--provisioner",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bind Pending PVCs to directories under --volumes-dir",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s nodesim %(levelname)s %(message)s")
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    if not nodes:
        parser.error("--nodes needs at least one name")
    try:
        how = isolation.require()
    except isolation.IsolationUnavailable as exc:
        LOG.error("refusing to run containers unisolated: %s", exc)
        return 2
    own_state = args.state_dir is None
    state_dir = pathlib.Path(tempfile.mkdtemp(prefix="nodesim-")) if own_state else args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)  # containers switch uid and must reach their emptyDirs
    stop = threading.Event()
    # Signals only set a flag; the main thread does the orderly shutdown.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sim = Simulator(
        Kube(args.kubeconfig),
        nodes=nodes,
        volumes_dir=args.volumes_dir.resolve(),
        images=ImageStore(args.images_dir),
        log_dir=args.log_dir.resolve(),
        state_dir=state_dir.resolve(),
        scheduler_name=args.scheduler_name,
        provisioner=args.provisioner,
        isolated_as=how,
    )
    try:
        while not stop.is_set():
            try:
                sim.start()
                break
            except Exception as exc:  # API server not reachable yet: keep trying until stopped
                LOG.warning("start-up failed (%s: %s); retrying in 2s", type(exc).__name__, exc)
                stop.wait(2)
        while not stop.wait(1.0):
            pass
    finally:
        sim.shutdown()
        if own_state:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
