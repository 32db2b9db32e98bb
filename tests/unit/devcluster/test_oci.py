"""OCI archives as the node simulator and the image tests read them: layers, whiteouts, safe unpacking."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pathlib
import re
import stat
import tarfile
from typing import Any

import pytest

from devcluster import oci

# A layer is a list of (path, kind, payload): kind "file" (payload: bytes), "dir", "symlink"/"link" (payload: target).
Entry = tuple[str, str, Any]


def _layer(entries: list[Entry], *, mode: int | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, kind, payload in entries:
            info = tarfile.TarInfo(path)
            if kind == "file":
                info.size = len(payload)
                info.mode = mode or 0o644
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, payload if isinstance(payload, int) else 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            tar.addfile(info)
    return gzip.compress(buffer.getvalue(), mtime=0)


def write_archive(path: pathlib.Path, layers: list[list[Entry]], *, media_type: str = oci.GZIP_LAYER) -> pathlib.Path:
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    config = blob(json.dumps({"config": {"User": "10001:10001", "Entrypoint": ["/bin/app"]}}).encode())
    manifest = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": media_type, **blob(_layer(entries))} for entries in layers],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [{**blob(json.dumps(manifest).encode()), "annotations": {oci.REF_NAME: "localhost/app:dev"}}],
    }
    with tarfile.open(path, mode="w") as tar:
        for name, data in [
            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
            *((f"blobs/sha256/{digest.split(':')[1]}", data) for digest, data in blobs.items()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


LOWER: list[Entry] = [
    ("etc", "dir", 0o755),
    ("etc/keep", "file", b"keep"),
    ("etc/gone", "file", b"gone"),
    ("etc/replaced", "file", b"old"),
    ("opt", "dir", 0o755),
    ("opt/app", "dir", 0o755),
    ("opt/app/old-a", "file", b"a"),
    ("opt/app/old-b", "file", b"b"),
    ("var", "dir", 0o755),
    ("var/cache", "dir", 0o755),
    ("var/cache/deep", "dir", 0o755),
    ("var/cache/deep/file", "file", b"x"),
    ("bin", "dir", 0o755),
    ("bin/tool", "file", b"tool"),
    ("bin/tool-link", "link", "bin/tool"),
]
UPPER: list[Entry] = [
    ("etc/.wh.gone", "file", b""),
    ("etc/replaced", "file", b"new"),
    ("opt/app", "dir", 0o755),
    ("opt/app/.wh..wh..opq", "file", b""),
    ("opt/app/new", "file", b"n"),
    ("var/.wh.cache", "file", b""),
    ("bin/tool", "dir", 0o755),
]


@pytest.fixture
def archive(tmp_path: pathlib.Path) -> oci.OciImage:
    return oci.read_archive(write_archive(tmp_path / "image.oci.tar", [LOWER, UPPER]))["localhost/app:dev"]


def test_read_archive_finds_the_image_by_its_reference(archive: oci.OciImage) -> None:
    assert archive.config["config"]["User"] == "10001:10001"
    assert len(archive.layers) == 2
    assert archive.image_id.startswith("sha256:")
    assert archive.compressed_size == sum(layer.size for layer in archive.layers)


def test_flatten_applies_whiteouts_and_opaque_directories(archive: oci.OciImage) -> None:
    tree = oci.flatten(archive)
    assert set(tree) == {
        "etc", "etc/keep", "etc/replaced", "opt", "opt/app", "opt/app/new", "var", "bin", "bin/tool", "bin/tool-link",
    }  # fmt: skip
    assert tree["bin/tool"].isdir()


def test_unpack_matches_flatten_and_keeps_the_upper_content(archive: oci.OciImage, tmp_path: pathlib.Path) -> None:
    dest = tmp_path / "rootfs"
    dest.mkdir()
    oci.unpack(archive, dest)
    on_disk = {str(p.relative_to(dest)) for p in dest.rglob("*")}
    assert on_disk == set(oci.flatten(archive))
    assert (dest / "etc/replaced").read_bytes() == b"new"
    assert (dest / "bin/tool").is_dir()
    assert (dest / "bin/tool-link").read_bytes() == b"tool"  # the hard link kept the lower file's content


def test_a_read_only_directory_still_takes_upper_layers(tmp_path: pathlib.Path) -> None:
    lower: list[Entry] = [("ro", "dir", 0o555), ("ro/a", "file", b"a")]
    upper: list[Entry] = [("ro/b", "file", b"b")]
    image = oci.read_archive(write_archive(tmp_path / "i.tar", [lower, upper]))["localhost/app:dev"]
    dest = tmp_path / "rootfs"
    dest.mkdir()
    oci.unpack(image, dest)
    assert sorted(p.name for p in (dest / "ro").iterdir()) == ["a", "b"]
    assert stat.S_IMODE((dest / "ro").stat().st_mode) == 0o555


def test_unpack_refuses_to_write_through_a_link_to_the_host(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    lower: list[Entry] = [("escape", "symlink", str(outside))]
    upper: list[Entry] = [("escape/planted", "file", b"x")]
    image = oci.read_archive(write_archive(tmp_path / "i.tar", [lower, upper]))["localhost/app:dev"]
    dest = tmp_path / "rootfs"
    dest.mkdir()
    with pytest.raises(oci.OciError, match="outside the root filesystem"):
        oci.unpack(image, dest)
    assert not (outside / "planted").exists()


def test_unsupported_layer_compression_is_named(tmp_path: pathlib.Path) -> None:
    zstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    image = oci.read_archive(write_archive(tmp_path / "i.tar", [LOWER], media_type=zstd))["localhost/app:dev"]
    with pytest.raises(oci.OciError, match=re.escape(f"unsupported media type {zstd}")):
        oci.flatten(image)


def test_an_archive_without_an_index_is_named(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.tar"
    with tarfile.open(path, mode="w"):
        pass
    with pytest.raises(oci.OciError, match=f"{path}: no index.json"):
        oci.read_archive(path)
    (tmp_path / "garbage.tar").write_bytes(os.urandom(64))
    with pytest.raises(oci.OciError, match="cannot read as a tar archive"):
        oci.read_archive(tmp_path / "garbage.tar")
