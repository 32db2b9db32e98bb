"""Container runtime: turns a container spec and its image into a process, and watches it until it exits.

Isolation (root, or root of a user namespace on the user's subordinate ids: see
devcluster/isolation.py; the simulator refuses to run without it): every container
runs in a private mount namespace
(`unshare -m --propagation private`) where container-setup.sh gives it a minimal
/dev, bind-mounts its volumes (remounting read-only ones `ro`, so writes fail with
EROFS) and its termination-message file. For a directory image the process then sees
the host filesystem and `setpriv` switches uid/gid/groups. For an OCI image the
script mounts the image's unpacked root filesystem (read-only with
readOnlyRootFilesystem, else under a tmpfs overlay) with /proc and /dev, mounts the
volumes inside it, and enter_rootfs.py chroots, switches identity, limits
capabilities and execs the image's command. Missing mount points are created on a
tmpfs that shadows the nearest existing ancestor directory (its entries are
bind-mounted back), so neither the host nor the unpacked image is ever written; the
one exception is a directory image's mount point directly below `/` (e.g. `/data`),
created on the host as an empty directory (as real root only).

Capabilities: `drop: [ALL]` empties the bounding set; a container that stays root
keeps exactly what `add` lists (e.g. CHOWN, DAC_OVERRIDE) when it drops ALL, and the
runtime's default set otherwise (for a directory image: setpriv's bounding set).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

from devcluster.nodesim import projected
from devcluster.nodesim.images import Image
from devcluster.nodesim.pods import ContainerRuntime, PodRuntime
from devcluster.nodesim.state import JSON, StartError, State, Waiting, now_rfc3339
from devcluster.nodesim.volumes import Volumes

LOG = logging.getLogger("nodesim")
HERE = pathlib.Path(__file__).resolve().parent
SETUP_SCRIPT = HERE / "container-setup.sh"
ENTER_ROOTFS = HERE / "enter_rootfs.py"
TERMINATION_MESSAGE_CAP = 4096  # bytes read from the termination-message file
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
# What containerd gives a container by default (the capabilities `drop`/`add` start from).
DEFAULT_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip
SYMLINK_LIMIT = 40

_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z0-9]+)\)")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined vars are replaced, `$$` escapes, others stay."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(repl, text)


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


def resolve_in_root(rootfs: pathlib.Path, path: str) -> str:
    """`path` inside the image with every symlink resolved inside it (`..` stops at its root), as a runtime does.

    The setup script works on host paths below the root filesystem: an absolute link in the
    image (Debian's /var/run -> /run) must lead to the image's /run, never to the host's.
    """
    pending = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = rootfs.joinpath(*resolved, part)
        if host.is_symlink():
            links += 1
            if links > SYMLINK_LIMIT:
                raise StartError(f"too many levels of symbolic links resolving {path} in the image")
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
            continue
        resolved.append(part)
    return "/" + "/".join(resolved)


def capabilities(security: JSON, *, uid: int) -> str:
    """enter_rootfs.py's CAPS argument from a container securityContext (see the module docstring)."""
    caps = security.get("capabilities") or {}
    drop = {c.upper().removeprefix("CAP_") for c in caps.get("drop") or []}
    add = {c.upper().removeprefix("CAP_") for c in caps.get("add") or []}
    if security.get("privileged"):
        return "all"
    keep = set() if "ALL" in drop else set(DEFAULT_CAPABILITIES) - drop
    keep |= add
    return ",".join(sorted(keep)) if uid == 0 or keep else ""


@dataclasses.dataclass
class Launch:
    """Everything needed to start one container process."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: pathlib.Path
    term_file: pathlib.Path | None
    start_error: pathlib.Path | None = None  # written by the setup script when it could not start the command


class ContainerRunner:
    """Prepares container processes (env, argv, identity, mounts), runs them and kills them."""

    def __init__(self, state: State, *, volumes: Volumes, log_dir: pathlib.Path) -> None:
        self.state = state
        self.volumes = volumes
        self.log_dir = log_dir
        self.unshare = shutil.which("unshare") or "unshare"
        self.setpriv = shutil.which("setpriv") or "setpriv"

    def _env(self, pod: JSON, rt: PodRuntime, c: JSON, image: Image) -> dict[str, str]:
        env = dict(image.env)
        env.setdefault("PATH", image.path_env)
        env["HOSTNAME"] = rt.name
        # The kubelet sets these for every container: with the token volume, in-cluster config works.
        host, port = self.state.kube.server
        env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"] = host, str(port)
        sources = self.volumes.sources(pod)
        for item in c.get("env") or []:
            name, source = item["name"], item.get("valueFrom")
            if source is None:
                env[name] = expand_vars(item.get("value", ""), env)
                continue
            try:
                value = projected.env_value(source, namespace=rt.namespace, sources=sources)
            except projected.EnvSourceMissing as exc:
                raise Waiting("CreateContainerConfigError", str(exc)) from None
            except projected.EnvSourceUnsupported as exc:
                rt.warn_once(f"env {name}: valueFrom {exc} is not supported by the simulator; skipped")
                continue
            if value is not None:
                env[name] = value
        if c.get("envFrom"):
            rt.warn_once("envFrom is not supported by the simulator; skipped")
        env.setdefault("HOME", "/")  # what a runtime sets when the image has no passwd entry
        return env

    def prepare(self, pod: JSON, rt: PodRuntime, c: JSON, image: Image) -> Launch:
        """Resolve env, command, identity and mounts; raise Waiting/StartError like a kubelet would."""
        ns, spec = rt.namespace, pod["spec"]
        psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}
        uid = int(csc.get("runAsUser", psc.get("runAsUser", image.uid)))
        gid = int(csc.get("runAsGroup", psc.get("runAsGroup", image.gid if uid == image.uid else 0)))
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and uid == 0:
            raise Waiting("CreateContainerConfigError", "container has runAsNonRoot and image will run as root")
        env = self._env(pod, rt, c, image)

        command = [expand_vars(a, env) for a in c.get("command") or []]
        args = [expand_vars(a, env) for a in c.get("args") or []]
        # Kubernetes semantics: command replaces the entrypoint and drops the image's cmd.
        argv = command + args if command else list(image.entrypoint) + (args or list(image.cmd))
        if not argv:
            raise StartError("no command specified")
        if image.chroot:
            found = "/" in argv[0] or any(
                (image.rootfs / resolve_in_root(image.rootfs, f"{d}/{argv[0]}").lstrip("/")).is_file()
                for d in env["PATH"].split(":")
                if d
            )
        else:
            # An absolute command names a file of the image, as inside a chroot: the directory image's own
            # file when it has one (e.g. the operator image's /opt/venv/bin/python), else the host's.
            in_image = image.rootfs / argv[0].lstrip("/")
            if argv[0].startswith("/") and in_image.is_file():
                argv[0] = str(in_image)
            found = "/" in argv[0] or shutil.which(argv[0], path=env["PATH"]) is not None
        if not found:
            raise StartError(f'exec: "{argv[0]}": executable file not found in $PATH')
        workdir = c.get("workingDir") or image.working_dir or "/"

        state = rt.state_dir / c["name"]
        state.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{ns}_{rt.name}_{c['name']}.log"
        ops = self.volumes.mount_ops(pod, rt, c)
        term_file = state / "termination-log"
        term_file.write_bytes(b"")
        term_file.chmod(0o666)  # any uid may write its message, as with a kubelet
        ops += ["file", str(term_file), c.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH, "rw"]
        if image.chroot:
            # Mount points inside the image: its own symlinks resolved inside it, never on the host.
            for i in range(2, len(ops), 4):
                ops[i] = resolve_in_root(image.rootfs, ops[i])
            workdir = resolve_in_root(image.rootfs, workdir)
        else:
            # The image's files are host paths here (no chroot): lay them back over any container mount that
            # hides them (an emptyDir at /tmp when the repository is under /tmp), read-only like an image layer.
            refuse_mounts_on_image_files(ops, image.rootfs)
            ops += ["image", str(image.rootfs), str(image.rootfs), "ro"]
        stage = state / "stage"
        stage.mkdir(exist_ok=True)
        start_error = stage / "start-error"
        start_error.unlink(missing_ok=True)

        # Like container runtimes: the primary gid, supplementalGroups and fsGroup are all
        # supplementary groups of the process.
        groups = [gid, *(int(g) for g in psc.get("supplementalGroups") or [])]
        if psc.get("fsGroup") is not None:
            groups.append(int(psc["fsGroup"]))
        group_list = ",".join(str(g) for g in dict.fromkeys(groups))
        no_new_privs = csc.get("allowPrivilegeEscalation") is False
        if image.chroot:
            enter = [sys.executable, "-I", "-S", str(ENTER_ROOTFS), str(stage / "root"), workdir, str(uid), str(gid)]
            enter += [group_list, capabilities(csc, uid=uid), "1" if no_new_privs else "0"]
            root_mode = "ro" if csc.get("readOnlyRootFilesystem") else "rw"
            script_args = [str(stage), str(image.rootfs), root_mode, workdir]
        else:
            enter = [self.setpriv, "--reuid", str(uid), "--regid", str(gid), "--groups", group_list]
            enter += ["--pdeathsig", "KILL"]  # if the simulator dies, its containers die too
            if no_new_privs:
                enter.append("--no-new-privs")
            if "ALL" in ((csc.get("capabilities") or {}).get("drop") or []):
                # What `add` lists stays in the bounding set: a root process then has exactly those.
                added = "".join(f",+{cap.lower()}" for cap in capabilities(csc, uid=uid).split(",") if cap)
                enter += ["--bounding-set", "-all" + added, "--inh-caps", "-all"]
            script_args = [str(stage), "", "rw", workdir]
        # bash, not sh: the script allocates file descriptors with {var}<
        full = [self.unshare, "-m", "--propagation", "private", "--", "/bin/bash", str(SETUP_SCRIPT)]
        full += [*script_args, *ops, "--", *enter, "--", *argv]
        return Launch(argv=full, env=env, cwd="/", log_path=log_path, term_file=term_file, start_error=start_error)

    def run(self, rt: PodRuntime, cr: ContainerRuntime, launch: Launch) -> None:
        """Runner thread: owns the process (and is its parent for --pdeathsig) until it exits."""
        try:
            with launch.log_path.open("ab") as log, self.state.lock:
                if self.state.stop.is_set():
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
            with self.state.lock:
                cr.state, cr.reason, cr.exit_code = "terminated", "StartError", 128
                cr.message, cr.finished_at = f"failed to start container: {exc}", now_rfc3339()
            cr.spawned.set()
            cr.exited.set()
            self.state.queue.add(("pod", rt.uid))
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
        with self.state.lock:
            cr.state, cr.exit_code, cr.process = "terminated", exit_code, None
            cr.reason = reason
            cr.finished_at, cr.message = now_rfc3339(), message
        cr.exited.set()
        LOG.info("pod %s container %s: exited %d", rt.key, cr.name, exit_code)
        self.state.queue.add(("pod", rt.uid))

    @staticmethod
    def kill(cr: ContainerRuntime, grace: float) -> None:
        """SIGTERM to the container's process group, SIGKILL after `grace` seconds (runs in its own thread)."""
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


def refuse_mounts_on_image_files(ops: list[str], rootfs: pathlib.Path) -> None:
    """A directory volume whose mount point is a file of the image fails to mount, as in a real runtime.

    The set-up script finds this by itself, unless another volume hides the image's file first
    (the repository, so the image, under /tmp, where the container has its emptyDir).
    """
    for i in range(0, len(ops), 4):
        kind, source, target = ops[i], ops[i + 1], pathlib.Path(ops[i + 2])
        inside = target == rootfs or rootfs in target.parents
        if kind == "dir" and inside and (target.is_file() or target.is_symlink()):
            raise StartError(
                "failed to start container: error during container init: "
                f'error mounting "{source}" to rootfs at "{target}": mount point {target} exists but is not a dir'
            )
