"""Proof that the test harness is real: real controllers act, the simulator runs real processes.

Each test exercises one behaviour the operator's integration tests rely on
(docs/design.md section 5): the Job controller's podFailurePolicy, activeDeadlineSeconds
and ttlSecondsAfterFinished, the garbage collector, image pulls, scheduling by node
affinity and claims, read-only claim mounts, uid/gid, termination messages, and the
fake agent image giving the section-1 contract's exit code from real files.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch

from devcluster import cluster
from tests.claimdirs import snapshot
from tests.integration.factories import ClaimFactory
from tests.integration.kubewait import NotYet, read_or_none, wait_for

pytestmark = pytest.mark.integration

AGENT_IMAGE = "local/agent-shell:{agent}"
SLOT_UID = 10001  # the agent images' uid/gid (docs/design.md section 1)
SLOT_GID = 10001
OLD_UID = 1000  # the uid that wrote pre-migration slot PVCs (docs/design.md section 1)


# ------------------------------------------------------------------------------ helpers


def probe_container(
    *,
    agent: str = "codex",
    image: str | None = None,
    env: dict[str, str] | None = None,
    read_only: bool = True,
    with_claim: bool = True,
    policy: str = "FallbackToLogsOnError",
    command: list[str] | None = None,
) -> dict[str, Any]:
    """A probe container shaped like the operator's (docs/design.md section 3: restricted profile)."""
    container: dict[str, Any] = {
        "name": "probe",
        "image": image or AGENT_IMAGE.format(agent=agent),
        "env": [
            {"name": "AGENT_MODE", "value": "smoke-test"},
            {"name": "WOVED_TASK_AGENT", "value": agent},
            {"name": "HOME", "value": f"/home/{agent}"},
            *({"name": k, "value": v} for k, v in (env or {}).items()),
        ],
        "terminationMessagePolicy": policy,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        },
    }
    if command:
        container["command"] = command
    if with_claim:
        container["volumeMounts"] = [{"name": "slot", "mountPath": f"/home/{agent}", "readOnly": read_only}]
    return container


def pod_spec(
    container: dict[str, Any],
    *,
    claim: str | None = None,
    pvc_read_only: bool = False,
    uid: int = SLOT_UID,
    gid: int = SLOT_GID,
    node: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 2,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if claim:
        spec["volumes"] = [{"name": "slot", "persistentVolumeClaim": {"claimName": claim, "readOnly": pvc_read_only}}]
    if node:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
                    ]
                }
            }
        }
    return spec


def create_pod(core: client.CoreV1Api, namespace: str, name: str, spec: dict[str, Any]) -> None:
    core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def job_body(name: str, spec: dict[str, Any], **job_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 2, **job_spec, "template": {"metadata": {"labels": {"test": name}}, "spec": spec}},
    }


def pod_summary(pod: client.V1Pod | None) -> object:
    if pod is None:
        return "pod not found"
    status = pod.status
    states = [cs.state.to_dict() if cs.state else None for cs in (status.container_statuses or [])] if status else []
    conditions = [(c.type, c.status, c.reason) for c in (status.conditions or [])] if status else []
    return {
        "phase": status.phase if status else None,
        "node": pod.spec.node_name if pod.spec else None,
        "states": states,
        "conditions": conditions,
    }


def wait_terminated(
    core: client.CoreV1Api, namespace: str, name: str, *, timeout: float = 60
) -> client.V1ContainerStateTerminated:
    """The first container's terminated state once the pod reached a terminal phase."""

    def done() -> client.V1ContainerStateTerminated | NotYet:
        pod = read_or_none(core.read_namespaced_pod, name, namespace)
        if pod is not None and pod.status and pod.status.phase in ("Succeeded", "Failed"):
            for cs in pod.status.container_statuses or []:
                if cs.state and cs.state.terminated:
                    return cs.state.terminated
        return NotYet(pod_summary(pod))

    return wait_for(done, timeout=timeout, message=f"pod {namespace}/{name} to terminate")


def wait_waiting(
    core: client.CoreV1Api, namespace: str, name: str, reasons: set[str]
) -> client.V1ContainerStateWaiting:
    def waiting() -> client.V1ContainerStateWaiting | NotYet:
        pod = read_or_none(core.read_namespaced_pod, name, namespace)
        for cs in (pod.status.container_statuses or []) if pod and pod.status else []:
            if cs.state and cs.state.waiting and cs.state.waiting.reason in reasons:
                return cs.state.waiting
        return NotYet(pod_summary(pod))

    return wait_for(waiting, timeout=30, message=f"pod {namespace}/{name} waiting with reason in {sorted(reasons)}")


def wait_condition(core: client.CoreV1Api, namespace: str, name: str, ctype: str, status: str) -> client.V1PodCondition:
    def has() -> client.V1PodCondition | NotYet:
        pod = read_or_none(core.read_namespaced_pod, name, namespace)
        for cond in (pod.status.conditions or []) if pod and pod.status else []:
            if cond.type == ctype and cond.status == status:
                return cond
        return NotYet(pod_summary(pod))

    return wait_for(has, timeout=30, message=f"pod {namespace}/{name} condition {ctype}={status}")


def wait_running(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    def running() -> client.V1Pod | NotYet:
        pod = read_or_none(core.read_namespaced_pod, name, namespace)
        if pod is not None and pod.status and pod.status.phase == "Running":
            return pod
        return NotYet(pod_summary(pod))

    return wait_for(running, timeout=30, message=f"pod {namespace}/{name} Running")


def job_condition(batch: client.BatchV1Api, namespace: str, name: str, ctype: str) -> client.V1JobCondition:
    def has() -> client.V1JobCondition | NotYet:
        job = read_or_none(batch.read_namespaced_job, name, namespace)
        conditions = (job.status.conditions or []) if job and job.status else []
        for cond in conditions:
            if cond.type == ctype and cond.status == "True":
                return cond
        return NotYet([(c.type, c.status, c.reason) for c in conditions] if job else "job not found")

    return wait_for(has, timeout=60, message=f"Job {namespace}/{name} condition {ctype}=True")


def job_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items)


def result_line(message: str | None) -> dict[str, Any]:
    """The probe's JSON result: the last non-empty line of a FallbackToLogsOnError message."""
    lines = [line for line in (message or "").splitlines() if line.strip()]
    assert lines, f"no termination message: {message!r}"
    return dict(json.loads(lines[-1]))


def write(home: pathlib.Path, rel: str, content: str, *, owner: int = SLOT_UID, mode: int = 0o600) -> None:
    """Create `home/rel` (and missing parent dirs, mode 0755) owned by `owner`, as the agent would have."""
    path = home / rel
    for parent in reversed(pathlib.PurePosixPath(rel).parents[:-1]):
        directory = home / parent
        if not directory.exists():
            directory.mkdir()
            directory.chmod(0o755)
            os.chown(directory, owner, owner)
    path.write_text(content)
    path.chmod(mode)
    os.chown(path, owner, owner)


def marker_pids(marker: str) -> list[int]:
    """Pids of processes whose environment carries `NODESIM_TEST_MARKER=<marker>`."""
    needle = f"NODESIM_TEST_MARKER={marker}".encode()
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


# ----------------------------------------------------------------- (a) podFailurePolicy


def test_pod_failure_policy_fails_job_on_exit_65(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str, claim: ClaimFactory
) -> None:
    claim("slot")  # empty home: the probe exits 65 (creds-missing)
    spec = pod_spec(probe_container(agent="codex"), claim="slot")
    batch.create_namespaced_job(
        namespace,
        job_body(
            "probe",
            spec,
            podFailurePolicy={
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": "probe", "operator": "In", "values": [64, 65, 66]},
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
        ),
    )
    failed = job_condition(batch, namespace, "probe", "Failed")
    assert failed.reason == "PodFailurePolicy"
    pods = job_pods(core, namespace, "probe")
    assert len(pods) == 1, "FailJob must not retry"
    assert pods[0].status.container_statuses[0].state.terminated.exit_code == 65


# ------------------------------------------------------------------------- (b) GC


def test_garbage_collector_deletes_job_and_kills_its_process(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    owner = core.create_namespaced_config_map(
        namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}
    )
    marker = uuid.uuid4().hex
    container = probe_container(with_claim=False, env={"AGENT_MODE": "idle", "NODESIM_TEST_MARKER": marker})
    body = job_body("worker", pod_spec(container))
    body["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    ]
    batch.create_namespaced_job(namespace, body)
    wait_for(lambda: marker_pids(marker), timeout=30, message="the Job's process to run")

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")
    wait_for(
        lambda: read_or_none(batch.read_namespaced_job, "worker", namespace) is None,
        timeout=60,
        message="the garbage collector to delete the Job",
    )
    wait_for(lambda: not marker_pids(marker), timeout=30, message="the Job's process to be killed")

    def pods_gone() -> bool | NotYet:
        left = [p.metadata.name for p in job_pods(core, namespace, "worker")]
        return NotYet(left) if left else True

    wait_for(pods_gone, timeout=60, message="the Job's pods to be deleted")


# ------------------------------------------------------------------------- (c) TTL


@pytest.mark.parametrize("ttl", [0, 1])
def test_ttl_after_finished_removes_job(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str, ttl: int
) -> None:
    container = probe_container(with_claim=False, command=["true"])
    created = batch.create_namespaced_job(namespace, job_body("done", pod_spec(container), ttlSecondsAfterFinished=ttl))
    # A watch from the creation sees every change in order, however briefly the finished Job lives
    # (polling can miss a Complete that lasts one second): it completes first, then it is deleted.
    seen: list[tuple[str, bool]] = []
    for event in watch.Watch().stream(
        batch.list_namespaced_job,
        namespace,
        field_selector="metadata.name=done",
        resource_version=created.metadata.resource_version,
        timeout_seconds=60,
    ):
        conditions = event["object"].status.conditions or []
        complete = any(c.type == "Complete" and c.status == "True" for c in conditions)
        seen.append((event["type"], complete))
        if event["type"] == "DELETED":
            break
    assert [kind for kind, _ in seen][-1:] == ["DELETED"], f"the TTL controller deletes the Job (ttl {ttl}): {seen}"
    assert any(complete for kind, complete in seen if kind == "MODIFIED"), f"completed before deletion: {seen}"


# ----------------------------------------------------------------- (d) image pulls


def test_unknown_image_is_err_image_pull(core: client.CoreV1Api, namespace: str) -> None:
    image = "local/no-such-image:" + uuid.uuid4().hex[:8]
    create_pod(core, namespace, "p", pod_spec(probe_container(image=image, with_claim=False)))
    waiting = wait_waiting(core, namespace, "p", {"ErrImagePull"})
    assert waiting.message == f'failed to pull image "{image}": not found in local image store'
    backoff = wait_waiting(core, namespace, "p", {"ImagePullBackOff"})
    assert image in (backoff.message or "")
    pod = core.read_namespaced_pod("p", namespace)
    assert pod.status.phase == "Pending"


def test_image_added_later_is_pulled(kube_cluster: cluster.Cluster, core: client.CoreV1Api, namespace: str) -> None:
    repo = f"local/nodesim-test-{uuid.uuid4().hex[:8]}"
    store = kube_cluster.images_dir
    create_pod(core, namespace, "p", pod_spec(probe_container(image=f"{repo}:v1", with_claim=False)))
    wait_waiting(core, namespace, "p", {"ErrImagePull", "ImagePullBackOff"})
    image_dir = store / repo / "v1"
    try:
        image_dir.mkdir(parents=True)
        (image_dir / "image.json").write_text(json.dumps({"entrypoint": ["true"], "user": "10001:10001"}))
        assert wait_terminated(core, namespace, "p").exit_code == 0
    finally:
        shutil.rmtree(store / repo, ignore_errors=True)


# ------------------------------------------------- (e) the fake image's probe contract


def _codex_valid(home: pathlib.Path) -> None:
    write(home, ".codex/auth.json", json.dumps({"tokens": {"refresh_token": "fake"}}))


def _codex_empty(home: pathlib.Path) -> None:
    write(home, ".codex/auth.json", "")


def _codex_corrupt(home: pathlib.Path) -> None:
    write(home, ".codex/auth.json", '{"tokens": {"refresh_tok')


def _claude_baseline(home: pathlib.Path) -> None:
    for name in ("CLAUDE.md", "settings.json", "config.toml"):
        write(home, f".claude/{name}", "# baseline\n" if name != "settings.json" else "{}")


def _claude_valid(home: pathlib.Path) -> None:
    _claude_baseline(home)
    write(home, ".claude/.credentials.json", json.dumps({"claudeAiOauth": {"accessToken": "fake"}}))


def _claude_empty(home: pathlib.Path) -> None:
    _claude_baseline(home)
    write(home, ".claude/.credentials.json", "")


def _old_uid(agent: str, dir_mode: int) -> Callable[[pathlib.Path], None]:
    """Pre-migration layout: files written by uid 1000, mode 0600, directory mode `dir_mode`."""

    def prepare(home: pathlib.Path) -> None:
        if agent == "codex":
            write(home, ".codex/auth.json", '{"tokens": {}}', owner=OLD_UID)
            (home / ".codex").chmod(dir_mode)
        else:
            write(home, ".claude/.credentials.json", '{"claudeAiOauth": {}}', owner=OLD_UID)
            (home / ".claude").chmod(dir_mode)

    return prepare


def _nothing(home: pathlib.Path) -> None:
    pass


CONTRACT_CASES = [
    pytest.param("codex", None, _codex_valid, {}, 0, "ok", id="codex-valid"),
    pytest.param("codex", None, _nothing, {}, 65, "creds-missing", id="codex-none"),
    pytest.param("codex", None, _codex_empty, {}, 66, "creds-invalid", id="codex-empty"),
    pytest.param("codex", None, _codex_corrupt, {}, 66, "creds-invalid", id="codex-corrupt"),
    pytest.param("claude", None, _claude_valid, {}, 0, "ok", id="claude-valid"),
    pytest.param("claude", None, _claude_baseline, {}, 65, "creds-missing", id="claude-baseline-only"),
    pytest.param("claude", None, _claude_empty, {}, 66, "creds-invalid", id="claude-empty"),
    # uid 1000 wrote the files (0600); the probe runs as 10001. Readable directory:
    # the credentials are visibly there but unreadable -> 66 (NeedsReauth-class).
    pytest.param("codex", None, _old_uid("codex", 0o755), {}, 66, "creds-invalid", id="codex-uid1000-file"),
    pytest.param("claude", None, _old_uid("claude", 0o755), {}, 66, "creds-invalid", id="claude-uid1000-file"),
    # Directory 0700 owned by uid 1000: nothing under it is visible -> 65 (invisible because of uid mismatch).
    pytest.param("codex", None, _old_uid("codex", 0o700), {}, 65, "creds-missing", id="codex-uid1000-dir"),
    pytest.param("claude", None, _old_uid("claude", 0o700), {}, 65, "creds-missing", id="claude-uid1000-dir"),
    pytest.param("codex", "local/agent-shell:broken-cli", _codex_valid, {}, 64, "cli-broken", id="broken-cli"),
    pytest.param("codex", None, _codex_valid, {"SMOKE_TEST_CRASH": "1"}, 1, "error", id="crash"),
]


@pytest.mark.parametrize(("agent", "image", "prepare", "env", "code", "status"), CONTRACT_CASES)
def test_fake_agent_contract_from_real_files(
    core: client.CoreV1Api,
    namespace: str,
    claim: ClaimFactory,
    agent: str,
    image: str | None,
    prepare: Callable[[pathlib.Path], None],
    env: dict[str, str],
    code: int,
    status: str,
) -> None:
    home = claim("slot")
    prepare(home)
    before = snapshot(home)
    create_pod(core, namespace, "probe", pod_spec(probe_container(agent=agent, image=image, env=env), claim="slot"))
    terminated = wait_terminated(core, namespace, "probe")
    assert terminated.exit_code == code, terminated.message
    if code != 0:
        result = result_line(terminated.message)  # FallbackToLogsOnError carries the JSON line
        assert result["status"] == status
        assert result["agent"] == agent
    assert snapshot(home) == before, "the probe changed the slot"


# ---------------------------------------------------------- (f) read-only mounts, uid/gid

WRITE_ATTEMPTS = r"""
import errno, json, os, sys
home = sys.argv[1]
attempts = {
    "create": lambda: open(os.path.join(home, "new-file"), "w"),
    "append": lambda: open(os.path.join(home, "existing"), "a"),
    "mkdir": lambda: os.mkdir(os.path.join(home, "new-dir")),
    "unlink": lambda: os.unlink(os.path.join(home, "existing")),
    "chmod": lambda: os.chmod(os.path.join(home, "existing"), 0o777),
    "utime": lambda: os.utime(os.path.join(home, "existing")),
}
result = {}
for name, attempt in attempts.items():
    try:
        attempt()
        result[name] = "ok"
    except OSError as exc:
        result[name] = errno.errorcode.get(exc.errno, str(exc.errno))
with open("/dev/termination-log", "w") as f:
    json.dump(result, f)
"""


@pytest.mark.parametrize("where", ["volumeMount", "pvcSource"])
def test_read_only_claim_rejects_writes(
    core: client.CoreV1Api, namespace: str, claim: ClaimFactory, where: str
) -> None:
    home = claim("slot")
    write(home, "existing", "keep me\n", mode=0o644)
    before = snapshot(home)
    container = probe_container(
        command=["python3", "-c", WRITE_ATTEMPTS, "/home/codex"], read_only=where == "volumeMount"
    )
    create_pod(core, namespace, "writer", pod_spec(container, claim="slot", pvc_read_only=where == "pvcSource"))
    terminated = wait_terminated(core, namespace, "writer")
    assert terminated.exit_code == 0, terminated.message
    assert json.loads(terminated.message) == dict.fromkeys(
        ["create", "append", "mkdir", "unlink", "chmod", "utime"], "EROFS"
    )
    assert snapshot(home) == before


def test_mount_over_the_simulators_own_directories(core: client.CoreV1Api, namespace: str, claim: ClaimFactory) -> None:
    """An emptyDir laid over the repository (as a probe's /tmp is, when the repository lives under /tmp) must
    not hide the claim, the simulator's scratch (termination-log, stage) or the image store."""
    home = claim("slot")
    write(home, ".codex/auth.json", '{"tokens": {}}')
    container = probe_container()
    container["volumeMounts"].append({"name": "scratch", "mountPath": str(cluster.REPO)})
    spec = pod_spec(container, claim="slot")
    spec["volumes"].append({"name": "scratch", "emptyDir": {}})
    create_pod(core, namespace, "overlaid", spec)

    terminated = wait_terminated(core, namespace, "overlaid")

    assert terminated.exit_code == 0, terminated.message


def test_a_mount_the_runtime_cannot_make_is_a_start_error(
    kube_cluster: cluster.Cluster, core: client.CoreV1Api, namespace: str, claim: ClaimFactory
) -> None:
    """Like containerd with runc: a claim mounted onto a file never starts the container (StartError, exit 128)
    and the message names the mount; the container's own exit codes stay its own."""
    claim("slot")
    target = str(kube_cluster.images_dir / "local" / "agent-shell" / "rootfs" / "bin" / "entrypoint")
    container = probe_container()
    container["volumeMounts"][0]["mountPath"] = target
    create_pod(core, namespace, "onto-a-file", pod_spec(container, claim="slot"))

    terminated = wait_terminated(core, namespace, "onto-a-file")

    assert (terminated.exit_code, terminated.reason) == (128, "StartError")
    assert f'to rootfs at "{target}"' in terminated.message
    assert terminated.message.startswith("failed to start container: error during container init: error mounting")


REACH_HOST_PATH = r"""
import sys
try:
    open(sys.argv[1], "a").write("x")
    outcome = "wrote"
except OSError as exc:
    outcome = type(exc).__name__
open("/dev/termination-log", "w").write(outcome)
"""


def test_read_only_claim_is_not_writable_through_its_host_path(
    core: client.CoreV1Api, namespace: str, claim: ClaimFactory
) -> None:
    """No chroot: the claim's host directory must not be a way around its read-only mount."""
    home = claim("slot")
    write(home, "shared", "keep me\n", mode=0o666)  # even a world-writable file
    before = snapshot(home)
    container = probe_container(command=["python3", "-c", REACH_HOST_PATH, str(home / "shared")])
    create_pod(core, namespace, "escape", pod_spec(container, claim="slot"))

    terminated = wait_terminated(core, namespace, "escape")

    assert terminated.message == "PermissionError"
    assert snapshot(home) == before


def test_read_write_claim_is_the_real_directory(core: client.CoreV1Api, namespace: str, claim: ClaimFactory) -> None:
    home = claim("slot")
    script = "import os, sys; open(os.path.join(sys.argv[1], 'hello'), 'w').write(str(os.getuid()))"
    container = probe_container(command=["python3", "-c", script, "/home/codex"], read_only=False)
    create_pod(core, namespace, "writer", pod_spec(container, claim="slot"))
    assert wait_terminated(core, namespace, "writer").exit_code == 0
    written = home / "hello"
    assert written.read_text() == str(SLOT_UID)
    assert (written.stat().st_uid, written.stat().st_gid) == (SLOT_UID, SLOT_GID)


IDENTITY = r"""
import json, os
json.dump({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
           "home": os.environ.get("HOME"), "cwd": os.getcwd()}, open("/dev/termination-log", "w"))
"""


def test_process_runs_with_requested_uid_gid(core: client.CoreV1Api, namespace: str) -> None:
    container = probe_container(with_claim=False, command=["python3", "-c", IDENTITY])
    container["securityContext"]["runAsGroup"] = 10005  # container level wins over the pod's 10002
    spec = pod_spec(container, uid=10001, gid=10002)
    spec["securityContext"]["supplementalGroups"] = [10003]
    create_pod(core, namespace, "who", spec)
    terminated = wait_terminated(core, namespace, "who")
    assert terminated.exit_code == 0, terminated.message
    identity = json.loads(terminated.message)
    # As with container runtimes, the primary gid is among the supplementary groups.
    assert identity == {
        "uid": 10001,
        "euid": 10001,
        "gid": 10005,
        "groups": [10003, 10005],
        "home": "/home/codex",
        "cwd": "/",
    }


def test_run_as_non_root_refuses_root(core: client.CoreV1Api, namespace: str) -> None:
    create_pod(core, namespace, "root", pod_spec(probe_container(with_claim=False), uid=0, gid=0))
    waiting = wait_waiting(core, namespace, "root", {"CreateContainerConfigError"})
    assert waiting.message == "container has runAsNonRoot and image will run as root"


CAPABILITIES = r"""
import json, os
caps = {line.split(":")[0]: int(line.split()[1], 16) for line in open("/proc/self/status") if line.startswith("Cap")}
target = os.path.join(os.environ["TARGET"], "owned")
try:
    os.lchown(target, 10001, 10001)
    chowned = os.lstat(target).st_uid
except OSError as exc:
    chowned = exc.strerror
json.dump({"uid": os.getuid(), "effective": caps["CapEff"], "chowned": chowned}, open("/dev/termination-log", "w"))
"""


@pytest.mark.parametrize(
    ("add", "chowned"), [(["CHOWN", "DAC_OVERRIDE"], 10001), ([], "Permission denied")]
)  # not even into the 0750 home
def test_root_keeps_exactly_the_capabilities_it_adds(
    core: client.CoreV1Api, namespace: str, claim: ClaimFactory, add: list[str], chowned: object
) -> None:
    """Root with drop ALL and add CHOWN, DAC_OVERRIDE (the ownership migration) has those two and no more."""
    home = claim("slot")
    write(home, "owned", "x", owner=OLD_UID)
    container = probe_container(command=["python3", "-c", CAPABILITIES], read_only=False)
    container["env"].append({"name": "TARGET", "value": "/home/codex"})
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": add},
        "runAsNonRoot": False,
        "runAsUser": 0,
        "runAsGroup": 0,
    }
    spec = pod_spec(container, claim="slot", uid=0, gid=0)
    spec["securityContext"]["runAsNonRoot"] = False
    create_pod(core, namespace, "root", spec)

    terminated = wait_terminated(core, namespace, "root")
    assert terminated.exit_code == 0, terminated.message
    report = json.loads(terminated.message)
    cap_chown, cap_dac_override = 1 << 0, 1 << 1
    assert report["uid"] == 0
    assert report["effective"] == (cap_chown | cap_dac_override if add else 0)
    assert report["chowned"] == chowned


# ----------------------------------------------------------- (g) termination messages


@pytest.mark.parametrize(("policy", "expect_json"), [("FallbackToLogsOnError", True), ("File", False)])
def test_fallback_to_logs_on_error_carries_json_line(
    core: client.CoreV1Api, namespace: str, claim: ClaimFactory, policy: str, expect_json: bool
) -> None:
    claim("slot")
    create_pod(core, namespace, "probe", pod_spec(probe_container(policy=policy), claim="slot"))
    terminated = wait_terminated(core, namespace, "probe")
    assert terminated.exit_code == 65
    if expect_json:
        assert result_line(terminated.message) == {
            "status": "creds-missing",
            "agent": "codex",
            "detail": "~/.codex/auth.json does not exist",
        }
        assert all(line.startswith("smoke-test: ") for line in terminated.message.splitlines()[:-1])
    else:
        assert not terminated.message  # the probe writes no termination-message file


# ------------------------------------------------------------------ (h) deadlines


def test_job_active_deadline_kills_sleeping_probe(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str, claim: ClaimFactory
) -> None:
    claim("slot")
    marker = uuid.uuid4().hex
    container = probe_container(env={"SMOKE_TEST_SLEEP": "600", "NODESIM_TEST_MARKER": marker})
    batch.create_namespaced_job(
        namespace, job_body("slow", pod_spec(container, claim="slot"), activeDeadlineSeconds=4, backoffLimit=0)
    )
    wait_for(lambda: marker_pids(marker), timeout=30, message="the sleeping probe to run")
    failed = job_condition(batch, namespace, "slow", "Failed")
    assert failed.reason == "DeadlineExceeded"
    wait_for(lambda: not marker_pids(marker), timeout=30, message="the probe process to be killed")


def test_pod_active_deadline_marks_pod_failed(core: client.CoreV1Api, namespace: str) -> None:
    marker = uuid.uuid4().hex
    container = probe_container(with_claim=False, env={"SMOKE_TEST_SLEEP": "600", "NODESIM_TEST_MARKER": marker})
    spec = pod_spec(container)
    spec["activeDeadlineSeconds"] = 2
    create_pod(core, namespace, "slow", spec)
    terminated = wait_terminated(core, namespace, "slow")
    pod = core.read_namespaced_pod("slow", namespace)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")
    assert terminated.exit_code in (137, 143)
    assert not marker_pids(marker)


# ------------------------------------------------------------ (i) scheduling


def test_required_node_affinity_places_pod(core: client.CoreV1Api, namespace: str) -> None:
    create_pod(
        core, namespace, "pinned", pod_spec(probe_container(with_claim=False, command=["true"]), node="sim-node-b")
    )
    assert wait_terminated(core, namespace, "pinned").exit_code == 0
    assert core.read_namespaced_pod("pinned", namespace).spec.node_name == "sim-node-b"


def test_affinity_to_unknown_node_is_unschedulable(core: client.CoreV1Api, namespace: str) -> None:
    create_pod(core, namespace, "nowhere", pod_spec(probe_container(with_claim=False), node="no-such-node"))
    cond = wait_condition(core, namespace, "nowhere", "PodScheduled", "False")
    assert cond.reason == "Unschedulable"
    assert cond.message == "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    assert core.read_namespaced_pod("nowhere", namespace).spec.node_name is None


def test_missing_claim_is_unschedulable_until_created(
    core: client.CoreV1Api, namespace: str, claim: ClaimFactory
) -> None:
    create_pod(core, namespace, "probe", pod_spec(probe_container(), claim="later"))
    cond = wait_condition(core, namespace, "probe", "PodScheduled", "False")
    assert (cond.reason, cond.message) == (
        "Unschedulable",
        '0/2 nodes are available: persistentvolumeclaim "later" not found.',
    )
    # The waiting pod starts as soon as the claim is Bound: fill it before the PVC exists.
    claim("later", prepare=_codex_valid)
    assert wait_terminated(core, namespace, "probe").exit_code == 0


def test_read_write_once_claim_multi_attach(core: client.CoreV1Api, namespace: str, claim: ClaimFactory) -> None:
    _codex_valid(claim("slot"))
    worker = probe_container(env={"AGENT_MODE": "idle"}, read_only=False)
    create_pod(core, namespace, "worker", pod_spec(worker, claim="slot", node="sim-node-a"))
    wait_running(core, namespace, "worker")
    # Another node: hangs in ContainerCreating like a kubelet whose attach fails.
    create_pod(core, namespace, "elsewhere", pod_spec(probe_container(), claim="slot", node="sim-node-b"))
    waiting = wait_waiting(core, namespace, "elsewhere", {"ContainerCreating"})
    assert waiting.message == 'Multi-Attach error for volume "slot" Volume is already used by pod(s) worker'
    # Same node: fine.
    create_pod(core, namespace, "same-node", pod_spec(probe_container(), claim="slot", node="sim-node-a"))
    assert wait_terminated(core, namespace, "same-node").exit_code == 0
    # Once the worker is gone the stuck probe proceeds.
    core.delete_namespaced_pod("worker", namespace)
    assert wait_terminated(core, namespace, "elsewhere").exit_code == 0


def test_read_write_once_pod_claim_in_use_is_unschedulable(
    core: client.CoreV1Api, namespace: str, claim: ClaimFactory
) -> None:
    claim("slot", access_modes=("ReadWriteOncePod",))
    create_pod(core, namespace, "worker", pod_spec(probe_container(env={"AGENT_MODE": "idle"}), claim="slot"))
    wait_running(core, namespace, "worker")
    create_pod(core, namespace, "probe", pod_spec(probe_container(), claim="slot"))
    cond = wait_condition(core, namespace, "probe", "PodScheduled", "False")
    assert cond.reason == "Unschedulable"
    assert "ReadWriteOncePod" in cond.message
    assert "worker" in cond.message


# ------------------------------------------------------- simulator shutdown leaves nothing


def test_simulator_shutdown_kills_its_containers(
    kube_cluster: cluster.Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    """A second simulator (own node and scheduler name) stopped with SIGTERM leaves no process behind."""
    node, scheduler = f"sim-node-t{uuid.uuid4().hex[:6]}", f"nodesim-test-{uuid.uuid4().hex[:6]}"
    marker = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="nodesim-test-") as tmp:
        log = pathlib.Path(tmp) / "nodesim.log"
        with log.open("wb") as out:
            sim = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devcluster.nodesim",
                    f"--kubeconfig={kube_cluster.kubeconfig}",
                    f"--volumes-dir={tmp}/volumes",
                    f"--images-dir={kube_cluster.images_dir}",
                    f"--nodes={node}",
                    f"--log-dir={tmp}/logs",
                    f"--scheduler-name={scheduler}",
                    "--no-provisioner",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cluster.REPO,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(cluster.REPO)},
            )
        try:
            container = probe_container(with_claim=False, env={"AGENT_MODE": "idle", "NODESIM_TEST_MARKER": marker})
            spec = pod_spec(container, node=node)
            spec["schedulerName"] = scheduler
            create_pod(core, namespace, "held", spec)
            wait_for(lambda: marker_pids(marker), timeout=60, message=f"the pod to run on {node}; see {log}")
            sim.send_signal(signal.SIGTERM)
            assert sim.wait(timeout=20) == 0, log.read_text()
            assert not marker_pids(marker), "container process survived the simulator"
        finally:
            if sim.poll() is None:
                sim.kill()
                sim.wait()
            # Nothing plays kubelet for this node any more: remove its pod and the Node by hand.
            read_or_none(core.delete_namespaced_pod, "held", namespace, grace_period_seconds=0)
            read_or_none(core.delete_node, node)
