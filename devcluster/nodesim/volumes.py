"""Volumes: the provisioner that binds claims to directories, and the kubelet's view of a pod's volumes.

A claim is the directory `<volumes-dir>/<namespace>/<claim>` (the provisioner only
ever creates it, never changes what is in it); an emptyDir is a directory in the
pod's state; configMap, secret, downwardAPI and projected volumes (the ServiceAccount
token of kube-api-access-*) are files written once per pod and mounted read-only.
"""

from __future__ import annotations

import logging
import pathlib

from kubernetes.client.exceptions import ApiException

from devcluster.nodesim import projected
from devcluster.nodesim.pods import PodRuntime
from devcluster.nodesim.state import JSON, State, Waiting, claim_names

LOG = logging.getLogger("nodesim")


def _as_projection(volume: JSON) -> JSON | None:
    """configMap, secret and downwardAPI volumes as the one-source projected volume they are equivalent to."""
    if "projected" in volume:
        return dict(volume["projected"])
    for kind in ("configMap", "secret", "downwardAPI"):
        if kind in volume:
            source = dict(volume[kind])
            mode = source.pop("defaultMode", projected.DEFAULT_MODE)
            if kind == "secret":
                source["name"] = source.pop("secretName", "")
            return {"defaultMode": mode, "sources": [{kind: source}]}
    return None


class Provisioner:
    """A Pending claim gets its directory (mkdir -p only) and `status.phase: Bound`."""

    def __init__(self, state: State, *, volumes_dir: pathlib.Path, enabled: bool) -> None:
        self.state = state
        self.volumes_dir = volumes_dir
        self.enabled = enabled

    def reconcile(self, namespace: str, name: str) -> None:
        pvc = self.state.pvcs.get((namespace, name))
        if pvc is None or not self.enabled or pvc["metadata"].get("deletionTimestamp"):
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
            self.state.pvcs[(namespace, name)] = self.state.kube.patch_pvc_status(namespace, name, status)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        LOG.info("claim %s/%s: Bound to %s", namespace, name, directory)
        # Pods waiting for this claim can be scheduled now.
        for uid, pod in self.state.pods.items():
            if pod["metadata"]["namespace"] == namespace and name in claim_names(pod):
                self.state.queue.add(("pod", uid))


class Volumes:
    """Resolves a container's volumeMounts to host sources, writing projected files as the kubelet does."""

    def __init__(self, state: State, *, volumes_dir: pathlib.Path) -> None:
        self.state = state
        self.volumes_dir = volumes_dir

    def mount_ops(self, pod: JSON, rt: PodRuntime, c: JSON) -> list[str]:
        """`KIND SRC DST MODE` quadruples for the container setup script, outermost mount points first."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        ops: list[str] = []
        mounts = sorted(c.get("volumeMounts") or [], key=lambda m: m["mountPath"].rstrip("/").count("/"))
        for vm in mounts:
            vol = volumes.get(vm["name"])
            if vol is None:
                raise Waiting("CreateContainerConfigError", f'volume "{vm["name"]}" not found in pod spec')
            read_only = bool(vm.get("readOnly"))
            if vol.get("persistentVolumeClaim"):
                source = vol["persistentVolumeClaim"]
                claim = source["claimName"]
                pvc = self.state.pvcs.get((rt.namespace, claim))
                if pvc is None:
                    raise Waiting("ContainerCreating", f'persistentvolumeclaim "{claim}" not found')
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
                    raise Waiting("ContainerCreating", f"hostPath {src} does not exist")
            elif projection := _as_projection(vol):
                src = self._projected(pod, rt, vm["name"], projection)
                read_only = True
            else:
                kind = next((k for k in vol if k != "name"), "unknown")
                rt.warn_once(f'volume "{vm["name"]}" ({kind}) is not supported: mounted empty and read-only')
                src = rt.state_dir / "unsupported" / vm["name"]
                src.mkdir(parents=True, exist_ok=True)
                read_only = True
            if vm.get("subPath"):
                sub = src / vm["subPath"]
                if ".." in pathlib.PurePosixPath(vm["subPath"]).parts or not sub.exists():
                    # A kubelet would create it; that would change the claim, so refuse instead.
                    raise Waiting(
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
            for p in self.state.pods.values()
            if p["metadata"]["uid"] != rt.uid
            and p["metadata"]["namespace"] == rt.namespace
            and p["spec"].get("nodeName") not in (None, rt.node)
            and (p.get("status") or {}).get("phase") == "Running"
            and claim in claim_names(p)
        )
        if users:
            raise Waiting(
                "ContainerCreating",
                f'Multi-Attach error for volume "{claim}" Volume is already used by pod(s) {", ".join(users)}',
            )

    def sources(self, pod: JSON) -> projected.Sources:
        """Where the kubelet side reads a pod's ConfigMaps, Secrets, tokens and downward API fields."""
        namespace = pod["metadata"]["namespace"]
        kube = self.state.kube
        return projected.Sources(
            config_map=lambda cm: kube.read_optional("configmap", namespace, cm),
            secret=lambda secret: kube.read_optional("secret", namespace, secret),
            token=lambda audience, seconds: kube.create_token(pod, audience=audience, seconds=seconds),
            field=lambda path: projected.downward_field(pod, path),
        )

    def _projected(self, pod: JSON, rt: PodRuntime, name: str, volume: JSON) -> pathlib.Path:
        """The volume's files, written when the pod's first container starts (tokens are not rotated)."""
        directory = rt.state_dir / "projected" / name
        if directory.is_dir():
            return directory
        try:
            files = projected.projected_files(volume, sources=self.sources(pod))
        except projected.VolumeNotReady as exc:
            raise Waiting("ContainerCreating", f'MountVolume.SetUp failed for volume "{name}": {exc}') from None
        partial = directory.with_name(f".{name}.partial")
        partial.mkdir(parents=True, exist_ok=True)
        projected.write_files(partial, files)
        partial.chmod(0o755)
        partial.rename(directory)
        return directory
