"""tools/image.py: the stand-in base stays what the Dockerfile's pinned base is, and the build command says so."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from tools import image

LABELS = image.Labels(version="1.2.3", revision="abc", created="2026-01-01T00:00:00Z")


def test_standin_has_the_upstream_debian_release_and_python_minor() -> None:
    upstream = image.upstream_base(image.DOCKERFILE.read_text())
    assert upstream.startswith(f"python:{image.STANDIN_PYTHON}.")
    assert upstream.endswith(f"-slim-{image.STANDIN_SUITE}")
    assert f"python{image.STANDIN_PYTHON}" in image.STANDIN_PACKAGES
    assert f"--include={','.join(image.STANDIN_PACKAGES)}" in image.mmdebstrap_command(pathlib.Path("out.tar"))


def test_a_dockerfile_without_a_base_argument_is_named() -> None:
    with pytest.raises(image.ImageError, match="no `ARG BASE_IMAGE=<image>` line"):
        image.upstream_base("FROM python:3.11.14-slim-bookworm\n")


def test_build_command_passes_the_standin_and_the_host_ca_bundle_only_when_there_is_one() -> None:
    plain = image.buildah_bud(tag=image.IMAGE, base=None, labels=LABELS, ca_bundle=None)
    assert not any(arg.startswith("BASE_IMAGE=") for arg in plain)
    assert "--secret" not in plain
    standin = image.buildah_bud(
        tag=image.IMAGE, base="localhost/base:1", labels=LABELS, ca_bundle=pathlib.Path("/ca.crt")
    )
    assert standin[standin.index("--secret") + 1] == "id=ca-bundle,src=/ca.crt"
    assert "BASE_IMAGE=localhost/base:1" in standin
    assert {"VERSION=1.2.3", "REVISION=abc", "CREATED=2026-01-01T00:00:00Z"} <= set(standin)
    assert standin[-1] == str(image.REPO)


@pytest.mark.parametrize("command", [image.buildah_bud, image.docker_build])
def test_the_builder_stage_is_built_under_its_own_tag(command: Callable[..., list[str]]) -> None:
    builder = command(tag=image.BUILDER_IMAGE, base=None, labels=LABELS, ca_bundle=None)
    assert builder[builder.index("--target") + 1] == image.BUILDER_STAGE
    assert builder[builder.index("--tag") + 1] == image.BUILDER_IMAGE
    assert f"FROM base AS {image.BUILDER_STAGE}" in image.DOCKERFILE.read_text()
    final = command(tag=image.IMAGE, base=None, labels=LABELS, ca_bundle=None)
    assert "--target" not in final
    assert final[final.index("--tag") + 1] == image.IMAGE


def test_a_rebuild_supersedes_only_the_images_its_tags_moved_from() -> None:
    before = {image.BUILDER_IMAGE: "sha256:b1", image.IMAGE: "sha256:i1"}
    assert image.superseded(before, dict(before)) == []
    assert image.superseded(before, {image.BUILDER_IMAGE: "sha256:b1", image.IMAGE: "sha256:i2"}) == ["sha256:i1"]
    moved = {image.BUILDER_IMAGE: "sha256:b2", image.IMAGE: "sha256:i2"}
    assert image.superseded(before, moved) == ["sha256:b1", "sha256:i1"]
    # A first build replaces nothing.
    assert image.superseded({image.BUILDER_IMAGE: None, image.IMAGE: None}, moved) == []
