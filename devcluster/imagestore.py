"""Local image store for the node simulator: image references resolve to directories.

There is no container runtime or registry on the machines that run the tests, so
an "image" is a small JSON config (entrypoint, cmd, env, user, working dir, PATH
entries) next to a directory of executables on the host. `REPO:TAG` resolves to
`<store>/<REPO>/<TAG>/image.json`; a digest (`@sha256:...`) is ignored and a
missing tag means `latest`, so the references an operator writes into a Job work
unchanged. See devcluster/images/README.md for the format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

# Appended after the image's own bin directories, like a typical image's PATH.
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")


class ImageNotFound(LookupError):
    """The reference has no image.json in the store (the kubelet's ErrImagePull)."""


class ImageInvalid(ValueError):
    """image.json exists but cannot be used; the message says which field is wrong."""


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


class ImageStore:
    """Resolves image references against a directory tree; reads image.json on every call.

    Reading on every resolve (a few hundred bytes) means an image added or fixed
    while the simulator runs is picked up on the next pull attempt, like a registry.
    """

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root.resolve()

    def config_path(self, reference: str) -> pathlib.Path:
        repository, tag = parse_reference(reference)
        return self.root.joinpath(*_safe_parts(repository), *_safe_parts(tag), "image.json")

    def resolve(self, reference: str) -> Image:
        repository, tag = parse_reference(reference)
        path = self.config_path(reference)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
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
