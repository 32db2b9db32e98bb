"""Local image store for the node simulator: directory images and OCI images.

There is no registry on the machines that run the tests. Two kinds of image resolve:

- directory images: a small JSON config (entrypoint, cmd, env, user, working dir, PATH
  entries) next to a directory of executables on the host, run without a chroot.
  `REPO:TAG` resolves to `<store>/<REPO>/<TAG>/image.json`; a digest (`@sha256:...`) is
  ignored and a missing tag means `latest`, so the references an operator writes into a
  Job work unchanged. See devcluster/images/README.md for the format.
- OCI images: a reference named in an OCI archive (`*.oci.tar`, what `make image` writes
  to dist/) is unpacked once per manifest digest (whiteouts applied) into a cache, and
  its container runs chrooted into that root filesystem with the image config's
  Entrypoint/Cmd/Env/User/WorkingDir.

Directory images win when a reference names both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
import threading

from devcluster import oci

LOG = logging.getLogger("nodesim")

# Appended after the image's own bin directories, like a typical image's PATH.
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")


class ImageNotFound(LookupError):
    """The reference has no image.json in the store (the kubelet's ErrImagePull)."""


class ImageInvalid(ValueError):
    """image.json exists but cannot be used; the message says which field is wrong."""


class RegistryFault(RuntimeError):
    """The registry did not hand out the image this time (rate limit, outage): the message is what it said."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Image:
    reference: str
    repository: str
    tag: str
    config_path: pathlib.Path
    image_id: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: dict[str, str]
    working_dir: str
    uid: int
    gid: int
    rootfs: pathlib.Path
    path_dirs: tuple[pathlib.Path, ...]
    # True for an OCI image: the container runs chrooted into `rootfs` (paths are the image's).
    chroot: bool = False

    @property
    def path_env(self) -> str:
        """PATH for the container: image bin dirs first, then the system's."""
        return ":".join([*(str(p) for p in self.path_dirs), *SYSTEM_PATH])


def parse_reference(reference: str) -> tuple[str, str]:
    """Split `REPO[:TAG][@DIGEST]` into (repository, tag); no tag means `latest`."""
    ref = reference.strip()
    if "@" in ref:
        ref = ref.split("@", 1)[0]
    # A ':' before the last '/' belongs to a registry host:port, not to the tag.
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        repository, tag = ref[:colon], ref[colon + 1 :]
    else:
        repository, tag = ref, "latest"
    return repository, tag or "latest"


def _safe_parts(text: str) -> list[str]:
    parts = text.split("/")
    if not text or any(p in ("", ".", "..") for p in parts):
        raise ImageNotFound(f"invalid image reference component {text!r}")
    return parts


def _parse_user(value: object, where: pathlib.Path) -> tuple[int, int]:
    """`"UID[:GID]"` (numeric only: the store has no /etc/passwd); absent means root."""
    if value in (None, ""):
        return 0, 0
    if isinstance(value, int):
        return value, 0
    if not isinstance(value, str):
        raise ImageInvalid(f"{where}: user must be a string like '10001:10001'")
    uid_text, _, gid_text = value.partition(":")
    try:
        return int(uid_text), int(gid_text or "0")
    except ValueError:
        raise ImageInvalid(f"{where}: user {value!r} must be numeric UID[:GID]") from None


def _str_list(config: dict[str, object], key: str, where: pathlib.Path) -> tuple[str, ...]:
    value = config.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageInvalid(f"{where}: {key} must be a list of strings")
    return tuple(value)


def _entry(rootfs: pathlib.Path, database: str, *, field: int, value: str) -> list[str] | None:
    """The first line of the image's /etc/passwd or /etc/group whose `field` is `value`, split on ':'."""
    try:
        lines = (rootfs / "etc" / database).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) > 3 and fields[field] == value and fields[2].isdigit():
            return fields
    return None


def oci_user(value: str, rootfs: pathlib.Path, where: str) -> tuple[int, int]:
    """An OCI config's `User` (`uid`, `uid:gid`, `name`, `name:group`; empty is root) as numeric ids."""
    if not value:
        return 0, 0
    user, _, group = value.partition(":")
    named = None if user.isdigit() else _entry(rootfs, "passwd", field=0, value=user)
    if not user.isdigit() and named is None:
        raise ImageInvalid(f"{where}: user {user!r} is not in the image's /etc/passwd")
    uid = int(user) if named is None else int(named[2])
    if not group:
        # The user's primary group from /etc/passwd, as a runtime takes it; 0 when the user is not listed.
        own = _entry(rootfs, "passwd", field=2, value=str(uid))
        return uid, int(own[3]) if own is not None and own[3].isdigit() else 0
    if group.isdigit():
        return uid, int(group)
    found = _entry(rootfs, "group", field=0, value=group)
    if found is None:
        raise ImageInvalid(f"{where}: group {group!r} is not in the image's /etc/group")
    return uid, int(found[2])


class OciStore:
    """OCI images in `*.oci.tar` archives under a directory, each unpacked once into `cache`.

    Archives are re-read when their size or mtime changes, so a rebuilt image (`make
    image`) is picked up by the next pull; a new manifest digest gets its own rootfs.
    """

    def __init__(self, archives: pathlib.Path, cache: pathlib.Path) -> None:
        self.archives = archives
        self.cache = cache
        self._index: dict[pathlib.Path, tuple[tuple[int, int], dict[str, oci.OciImage]]] = {}
        self._lock = threading.Lock()

    def find(self, reference: str) -> oci.OciImage | None:
        wanted = reference.split("@", 1)[0]
        for path in sorted(self.archives.glob("*.oci.tar")) if self.archives.is_dir() else []:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            cached = self._index.get(path)
            if cached is None or cached[0] != stamp:
                try:
                    cached = (stamp, oci.read_archive(path))
                except oci.OciError as exc:
                    raise ImageInvalid(str(exc)) from None
                self._index[path] = cached
            if wanted in cached[1]:
                return cached[1][wanted]
        return None

    def rootfs(self, image: oci.OciImage) -> pathlib.Path:
        """The unpacked root filesystem of `image` (unpacked now if this is its first use)."""
        target = self.cache / image.manifest_digest.split(":", 1)[1] / "rootfs"
        with self._lock:
            if target.is_dir():
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = pathlib.Path(tempfile.mkdtemp(prefix="unpack-", dir=target.parent))
            try:
                partial.chmod(0o755)
                oci.unpack(image, partial)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            os.rename(partial, target)
            LOG.info("image %s: unpacked %s into %s", image.reference, image.manifest_digest, target)
        return target

    def resolve(self, reference: str, image: oci.OciImage) -> Image:
        config = image.config.get("config") or {}
        rootfs = self.rootfs(image)
        env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
        uid, gid = oci_user(str(config.get("User") or ""), rootfs, f"{image.archive}:{reference}")
        repository, tag = parse_reference(reference)
        return Image(
            reference=reference,
            repository=repository,
            tag=tag,
            config_path=image.archive,
            image_id=f"{repository}@{image.manifest_digest}",
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            env=env,
            working_dir=str(config.get("WorkingDir") or ""),
            uid=uid,
            gid=gid,
            rootfs=rootfs,
            path_dirs=(),
            chroot=True,
        )


class ImageStore:
    """Resolves image references against a directory tree, then OCI archives; reads image.json on every call.

    Reading on every resolve (a few hundred bytes) means an image added or fixed
    while the simulator runs is picked up on the next pull attempt, like a registry.
    """

    def __init__(
        self, root: pathlib.Path, *, oci_store: OciStore | None = None, faults: pathlib.Path | None = None
    ) -> None:
        self.root = root.resolve()
        self.oci = oci_store
        self.faults = faults

    def describe(self) -> str:
        return f"{self.root}" + (f" and OCI archives in {self.oci.archives}" if self.oci is not None else "")

    def config_path(self, reference: str) -> pathlib.Path:
        repository, tag = parse_reference(reference)
        return self.root.joinpath(*_safe_parts(repository), *_safe_parts(tag), "image.json")

    def _fault(self, reference: str) -> str | None:
        """The error the registry gives for `reference` right now, if a test injected one."""
        if self.faults is None:
            return None
        try:
            faults = json.loads(self.faults.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(faults, dict):
            return None
        fault = faults.get(reference) or faults.get(reference.split("@", 1)[0])  # the exact reference first
        return str(fault) if fault else None

    def resolve(self, reference: str) -> Image:
        fault = self._fault(reference)
        if fault is not None:
            raise RegistryFault(fault)
        repository, tag = parse_reference(reference)
        path = self.config_path(reference)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            found = self.oci.find(reference) if self.oci is not None else None
            if found is not None:
                assert self.oci is not None
                return self.oci.resolve(reference, found)
            raise ImageNotFound(f"{repository}:{tag} not found in local image store") from None
        except OSError as exc:
            raise ImageNotFound(f"{repository}:{tag}: cannot read {path}: {exc.strerror}") from None
        try:
            config = json.loads(raw)
        except ValueError as exc:
            raise ImageInvalid(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise ImageInvalid(f"{path}: must hold a JSON object")
        env = config.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ImageInvalid(f"{path}: env must map strings to strings")
        # Path entries are relative to the rootfs: an explicit "rootfs" (relative
        # to image.json, so several tags can share one), else ./rootfs, else the tag dir.
        rootfs_key = config.get("rootfs")
        if rootfs_key is not None and not isinstance(rootfs_key, str):
            raise ImageInvalid(f"{path}: rootfs must be a string")
        rootfs = (path.parent / (rootfs_key or "rootfs")).resolve()
        if rootfs_key is None and not rootfs.is_dir():
            rootfs = path.parent
        path_dirs = tuple((rootfs / entry).resolve() for entry in _str_list(config, "path", path))
        working_dir = config.get("workingDir") or ""
        if not isinstance(working_dir, str):
            raise ImageInvalid(f"{path}: workingDir must be a string")
        uid, gid = _parse_user(config.get("user"), path)
        return Image(
            reference=reference,
            repository=repository,
            tag=tag,
            config_path=path,
            image_id=f"{repository}@sha256:{hashlib.sha256(raw).hexdigest()}",
            entrypoint=_str_list(config, "entrypoint", path),
            cmd=_str_list(config, "cmd", path),
            env=dict(env),
            working_dir=working_dir,
            uid=uid,
            gid=gid,
            rootfs=rootfs,
            path_dirs=path_dirs,
        )
