"""OCI image archives (`oci-archive:` tarballs of an OCI image layout): read, flatten, unpack.

`make image` writes the operator image as such an archive; the node simulator runs
images found in them and the image tests inspect them. Layers are applied in order
with the layout's whiteouts (`.wh.NAME` removes NAME from the layers below,
`.wh..wh..opq` hides everything below in its directory), so what a container sees
is what a container runtime would unpack. Only gzip-compressed and plain tar layers
are read (what buildah, docker and skopeo write by default).
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import os
import pathlib
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from typing import IO, Any, cast

REF_NAME = "org.opencontainers.image.ref.name"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_LAYERS = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar")
GZIP_LAYERS = (GZIP_LAYER, "application/vnd.docker.image.rootfs.diff.tar.gzip")


class OciError(ValueError):
    """The archive is not a usable OCI image; the message names the archive and what is wrong."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layer:
    digest: str
    media_type: str
    size: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class OciImage:
    archive: pathlib.Path
    reference: str
    manifest_digest: str
    config_digest: str
    config: dict[str, Any]
    layers: tuple[Layer, ...]

    @property
    def image_id(self) -> str:
        """What `buildah images`/`docker images` call the image ID: the config's digest."""
        return self.config_digest

    @property
    def compressed_size(self) -> int:
        return sum(layer.size for layer in self.layers)


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise OciError(f"unsupported blob digest {digest!r}")
    return f"blobs/sha256/{hexdigest}"


def _read_json(tar: tarfile.TarFile, name: str, archive: pathlib.Path) -> dict[str, Any]:
    try:
        member = tar.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise OciError(f"{archive}: no {name}")
    try:
        value = json.loads(member.read())
    except ValueError as exc:
        raise OciError(f"{archive}: {name} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise OciError(f"{archive}: {name} is not a JSON object")
    return value


def _open(archive: pathlib.Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r:")
    except (OSError, tarfile.TarError) as exc:
        raise OciError(f"{archive}: cannot read as a tar archive: {exc}") from None


def read_archive(archive: pathlib.Path) -> dict[str, OciImage]:
    """Every image manifest of the archive's index.json that carries a ref name, by that name."""
    images: dict[str, OciImage] = {}
    with _open(archive) as tar:
        index = _read_json(tar, "index.json", archive)
        for entry in index.get("manifests") or []:
            reference = (entry.get("annotations") or {}).get(REF_NAME)
            if not reference:
                continue
            manifest = _read_json(tar, _blob_name(entry["digest"]), archive)
            config_digest = manifest["config"]["digest"]
            images[reference] = OciImage(
                archive=archive,
                reference=reference,
                manifest_digest=entry["digest"],
                config_digest=config_digest,
                config=_read_json(tar, _blob_name(config_digest), archive),
                layers=tuple(
                    Layer(digest=layer["digest"], media_type=layer["mediaType"], size=int(layer["size"]))
                    for layer in manifest.get("layers") or []
                ),
            )
    return images


def _layer_stream(tar: tarfile.TarFile, image: OciImage, layer: Layer) -> IO[bytes]:
    blob = tar.extractfile(_blob_name(layer.digest))
    if blob is None:
        raise OciError(f"{image.archive}: layer {layer.digest} is missing")
    if layer.media_type in GZIP_LAYERS:
        return cast(IO[bytes], gzip.GzipFile(fileobj=blob, mode="rb"))
    if layer.media_type in TAR_LAYERS:
        return blob
    raise OciError(f"{image.archive}: layer {layer.digest} has unsupported media type {layer.media_type}")


def iter_layers(image: OciImage) -> Iterator[tarfile.TarFile]:
    """Each layer of `image` as a streaming tar, bottom layer first."""
    with _open(image.archive) as outer:
        for layer in image.layers:
            with tarfile.open(fileobj=_layer_stream(outer, image, layer), mode="r|") as inner:
                yield inner


def _normal(name: str) -> str:
    path = posixpath.normpath("/" + name).lstrip("/")
    return path or "."


def _hidden(path: str, whiteouts: set[str], opaque: set[str]) -> bool:
    """True when a path of a lower layer is removed by this layer's whiteouts."""
    parts = path.split("/")
    if any("/".join(parts[:i]) in whiteouts for i in range(1, len(parts) + 1)):
        return True
    return any(directory == "." or path.startswith(f"{directory}/") for directory in opaque)


def _split_whiteouts(members: list[tarfile.TarInfo]) -> tuple[set[str], set[str], list[tarfile.TarInfo]]:
    whiteouts: set[str] = set()
    opaque: set[str] = set()
    regular: list[tarfile.TarInfo] = []
    for member in members:
        path = _normal(member.name)
        directory, base = posixpath.split(path)
        if base == OPAQUE:
            opaque.add(directory or ".")
        elif base.startswith(WHITEOUT):
            whiteouts.add(posixpath.join(directory, base[len(WHITEOUT) :]))
        else:
            member.name = path
            regular.append(member)
    return whiteouts, opaque, regular


def flatten(image: OciImage) -> dict[str, tarfile.TarInfo]:
    """The image's final file tree, path -> tar header, without extracting any content."""
    tree: dict[str, tarfile.TarInfo] = {}
    for layer in iter_layers(image):
        whiteouts, opaque, regular = _split_whiteouts(list(layer))
        for path in [p for p in tree if _hidden(p, whiteouts, opaque)]:
            del tree[path]
        for member in regular:
            tree[member.name] = member
    return tree


# Newer Pythons warn without an explicit filter (and 3.14 changes the default); ours ran already.
_TRUSTED: dict[str, str] = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def unpack(image: OciImage, dest: pathlib.Path) -> None:
    """Extract the image's root filesystem into the empty directory `dest`, whiteouts applied.

    Every member is checked to land inside `dest` after resolving the symlinks already
    extracted (a layer cannot write through a link to the host). Device nodes and fifos
    are skipped (a container gets its /dev from the runtime); owners are kept when run
    as root. Directory modes are applied last, so a read-only directory of a lower
    layer still takes the files of the layers above when unpacked without root.
    """
    root = os.path.realpath(dest)
    directory_modes: dict[str, int] = {}

    def check(member: tarfile.TarInfo, _path: str) -> tarfile.TarInfo | None:
        if member.ischr() or member.isblk() or member.isfifo():
            return None
        parent = os.path.realpath(os.path.join(root, os.path.dirname(member.name)))
        if not _inside(root, parent):
            raise OciError(f"{image.archive}: {member.name!r} would be written outside the root filesystem")
        if member.islnk() and not _inside(root, os.path.realpath(os.path.join(root, _normal(member.linkname)))):
            raise OciError(f"{image.archive}: hard link {member.name!r} points outside the root filesystem")
        if member.isdir():
            directory_modes[member.name] = stat.S_IMODE(member.mode)
            writable = copy.copy(member)
            writable.mode = member.mode | stat.S_IRWXU
            return writable
        return member

    for layer in iter_layers(image):
        # Whiteouts only hide what the layers below hold, never what their own layer adds.
        added: set[str] = set()
        for member in layer:
            path = _normal(member.name)
            directory, base = posixpath.split(path)
            target = pathlib.Path(root, directory)
            if base == OPAQUE:
                for child in target.iterdir() if target.is_dir() and not target.is_symlink() else ():
                    if posixpath.join(directory, child.name) not in added:
                        _remove(child)
            elif base.startswith(WHITEOUT):
                _remove(target / base[len(WHITEOUT) :])
            else:
                member.name = path
                existing = pathlib.Path(root, path)
                # A file replacing a directory (or the reverse) replaces it whole, as overlayfs shows it.
                if (existing.is_symlink() or existing.exists()) and not (member.isdir() and existing.is_dir()):
                    _remove(existing)
                # `check` does what tarfile's extraction filters do (Python 3.11.4+, absent before): run it
                # here, so any Python 3.11 unpacks the same way.
                checked = check(member, root)
                if checked is not None:
                    layer.extract(checked, root, set_attrs=True, **_TRUSTED)
                added.add(path)
    for name, mode in sorted(directory_modes.items(), key=lambda item: -item[0].count("/")):
        made = pathlib.Path(root, name)
        if made.is_dir() and not made.is_symlink():
            made.chmod(mode)
