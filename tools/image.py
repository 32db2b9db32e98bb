"""`make image`: build the Dockerfile into localhost/slot-operator:dev and an OCI archive under dist/.

With a Docker engine that answers, `docker build`; otherwise buildah (daemonless,
chroot isolation, the storage driver containers/storage is configured with). The
base is the Dockerfile's pinned `python:3.11.x-slim-bookworm`; when that registry
cannot be reached the build uses a stand-in of the same Debian release and Python
minor, bootstrapped from Debian's packages with mmdebstrap, cached in the user cache
dir, and says so loudly (the image label org.opencontainers.image.base.name records
which base was used). Missing tools are installed with apt-get when run as root (as
CI does); otherwise the error names the packages.

The build host's CA bundle is handed to the build as the `ca-bundle` secret, for
networks whose TLS proxy only the host trusts; secrets never reach a layer.

The builder stage is tagged too (localhost/slot-operator-builder:dev) so that both
images a rebuild replaces can be named: they are removed once the new ones are
tagged. Without that every changed rebuild leaves ~100 MB of untagged images
(and their cached layers) behind in the engine's store.

Usage: python -m tools.image [--if-buildable]   (--if-buildable: see `make image-if-buildable`)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

from devcluster import build, host_tools, oci

REPO = pathlib.Path(__file__).resolve().parent.parent
IMAGE = "localhost/slot-operator:dev"
# The Dockerfile's builder stage, tagged only so that the image it replaces can be removed.
BUILDER_STAGE, BUILDER_IMAGE = "builder", "localhost/slot-operator-builder:dev"
ARCHIVE = REPO / "dist" / "slot-operator_dev.oci.tar"
# The same operator as a directory image in the node simulator's store, running this repository's package.
DIRECTORY_IMAGE = "local/slot-operator:repo"
DOCKERFILE = REPO / "Dockerfile"
# The stand-in base: Debian release and Python minor of the upstream base, from Debian's packages.
STANDIN_SUITE = "bookworm"
STANDIN_PYTHON = "3.11"
# Bump when the stand-in recipe changes, so cached stand-ins are rebuilt.
STANDIN_REVISION = 1
STANDIN_IMAGE = f"localhost/slot-operator-base:python{STANDIN_PYTHON}-{STANDIN_SUITE}-r{STANDIN_REVISION}"
# What the python image offers that the Dockerfile uses: `python` on PATH with venv/ensurepip,
# groupadd/useradd, the CA store; docs, man pages and translations are left out as slim does.
STANDIN_PACKAGES = ("passwd", f"python{STANDIN_PYTHON}", f"python{STANDIN_PYTHON}-venv", "python-is-python3",
                    "ca-certificates")  # fmt: skip
STANDIN_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


class ImageError(RuntimeError):
    """The image could not be built; the message says which step and what to do."""


def operator_image() -> str:
    """The operator's image for pods in the local cluster (the ownership audit and migration): the one
    `make image` built when there is one, else the directory image (devcluster/images/local/slot-operator)."""
    return IMAGE if ARCHIVE.is_file() else DIRECTORY_IMAGE


def _log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def _banner(lines: list[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n" + "!" * width, file=sys.stderr)
    for line in lines:
        print(f"! {line.ljust(width - 4)} !", file=sys.stderr)
    print("!" * width + "\n", file=sys.stderr, flush=True)


def upstream_base(dockerfile_text: str) -> str:
    """The default of the Dockerfile's global `ARG BASE_IMAGE=...`."""
    match = re.search(r"^ARG\s+BASE_IMAGE=(\S+)\s*$", dockerfile_text, flags=re.MULTILINE)
    if match is None:
        raise ImageError(f"{DOCKERFILE} has no `ARG BASE_IMAGE=<image>` line")
    return match.group(1).strip('"')


def host_ca_bundle() -> pathlib.Path | None:
    for candidate in (os.environ.get("SSL_CERT_FILE"), os.environ.get("PIP_CERT"), *HOST_CA_BUNDLES):
        if candidate and pathlib.Path(candidate).is_file():
            return pathlib.Path(candidate)
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Labels:
    version: str
    revision: str
    created: str


def git_labels() -> Labels:
    """Version from pyproject.toml; revision and creation time from the checked-out commit (reproducible)."""
    version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), flags=re.MULTILINE)

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    revision = git("rev-parse", "HEAD") or "unknown"
    if revision != "unknown" and git("status", "--porcelain", "--untracked-files=no"):
        revision += "-dirty"
    created = git("show", "-s", "--format=%cI", "HEAD") or "1970-01-01T00:00:00Z"
    return Labels(version=version.group(1) if version else "0.0.0", revision=revision, created=created)


def build_args(*, base: str | None, labels: Labels) -> list[str]:
    args = [f"VERSION={labels.version}", f"REVISION={labels.revision}", f"CREATED={labels.created}"]
    if base is not None:
        args.insert(0, f"BASE_IMAGE={base}")
    return [item for arg in args for item in ("--build-arg", arg)]


def _target(tag: str) -> list[str]:
    return ["--target", BUILDER_STAGE, "--tag", tag] if tag == BUILDER_IMAGE else ["--tag", tag]


def buildah_bud(*, tag: str, base: str | None, labels: Labels, ca_bundle: pathlib.Path | None) -> list[str]:
    """The `buildah bud` command line; `--layers` keeps a cache so an unchanged rebuild takes seconds."""
    cmd = ["buildah", "bud", "--layers", "--isolation", "chroot", "--file", str(DOCKERFILE), *_target(tag)]
    if ca_bundle is not None:
        cmd += ["--secret", f"id=ca-bundle,src={ca_bundle}"]
    return [*cmd, *build_args(base=base, labels=labels), str(REPO)]


def docker_build(*, tag: str, base: str | None, labels: Labels, ca_bundle: pathlib.Path | None) -> list[str]:
    cmd = ["docker", "build", "--file", str(DOCKERFILE), *_target(tag)]
    if ca_bundle is not None:
        cmd += ["--secret", f"id=ca-bundle,src={ca_bundle}"]
    return [*cmd, *build_args(base=base, labels=labels), str(REPO)]


def mmdebstrap_command(output: pathlib.Path) -> list[str]:
    """A slim Debian root filesystem with Debian's Python, as a tarball."""
    return [
        "mmdebstrap",
        "--variant=essential",
        # Merged /usr by symlinks, without pulling perl in through the usrmerge package.
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        f"--include={','.join(STANDIN_PACKAGES)}",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--aptopt=Acquire::Retries=3",
        STANDIN_SUITE,
        str(output),
    ]


def _run(cmd: list[str], *, what: str, quiet: bool = False) -> str:
    _log(f"{what}: {' '.join(cmd)}" if not quiet else what)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE if quiet else None, text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd[:3])} ...")
    return proc.stdout or ""


def _succeeds(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, check=False, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_engine() -> bool:
    return shutil.which("docker") is not None and _succeeds(["docker", "info"])


def ensure_tools(tools: dict[str, str]) -> None:
    """Each tool (command -> Debian package) on PATH; installed with apt-get when root, else named."""
    try:
        host_tools.ensure(tools, why="building the image")
    except host_tools.MissingTools as exc:
        raise ImageError(f"{exc}, or run with a Docker engine") from None


def standin_archive() -> pathlib.Path:
    return build.cache_root() / "image" / f"base-python{STANDIN_PYTHON}-{STANDIN_SUITE}-r{STANDIN_REVISION}.oci.tar"


def _bootstrap_standin(*, engine: str) -> None:
    """mmdebstrap a root filesystem and commit it as STANDIN_IMAGE; also cache it as an OCI archive."""
    ensure_tools({"mmdebstrap": "mmdebstrap"})
    cache = standin_archive()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="standin-", dir=cache.parent) as tmp:
        rootfs = pathlib.Path(tmp) / "rootfs.tar"
        started = time.monotonic()
        _run(mmdebstrap_command(rootfs), what="bootstrapping the stand-in base from Debian packages")
        _log(f"bootstrapped in {time.monotonic() - started:.0f}s")
        if engine == "docker":
            changes = [item for env in STANDIN_ENV for item in ("--change", f"ENV {env}")]
            _run(["docker", "import", *changes, "--change", 'CMD ["python3"]', str(rootfs), STANDIN_IMAGE],
                 what="importing the stand-in base")  # fmt: skip
            return
        container = _run(["buildah", "from", "scratch"], what="buildah from scratch", quiet=True).strip()
        try:
            _run(["buildah", "add", "--quiet", container, str(rootfs), "/"], what="adding the root filesystem")
            env_flags = [item for env in STANDIN_ENV for item in ("--env", env)]
            _run(["buildah", "config", *env_flags, "--cmd", "python3", container], what="configuring the base")
            _run(["buildah", "commit", "--quiet", container, STANDIN_IMAGE], what="committing the stand-in base")
        finally:
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        partial = pathlib.Path(tmp) / "base.oci.tar"
        _run(["buildah", "push", "--quiet", STANDIN_IMAGE, f"oci-archive:{partial}:{STANDIN_IMAGE}"],
             what="caching the stand-in base")  # fmt: skip
        partial.replace(cache)


def standin_base(*, engine: str) -> str:
    """STANDIN_IMAGE in the local store: already there, loaded from the cache, or bootstrapped."""
    if engine == "docker":
        present = _succeeds(["docker", "image", "inspect", STANDIN_IMAGE])
    else:
        present = _succeeds(["buildah", "inspect", "--type", "image", STANDIN_IMAGE])
    if present:
        return STANDIN_IMAGE
    cache = standin_archive()
    if cache.is_file() and engine == "buildah":
        _run(["buildah", "pull", "--quiet", f"oci-archive:{cache}"], what=f"loading the stand-in base from {cache}")
        return STANDIN_IMAGE
    _bootstrap_standin(engine=engine)
    return STANDIN_IMAGE


def pull_error(*, engine: str, image: str) -> str | None:
    """None when `image` is in the local store or could be pulled; else the engine's reason."""
    if engine == "docker":
        inspect, pull = ["docker", "image", "inspect", image], ["docker", "pull", "--quiet", image]
    else:
        inspect, pull = ["buildah", "inspect", "--type", "image", image], ["buildah", "pull", "--quiet", image]
    if _succeeds(inspect):
        return None
    try:
        proc = subprocess.run(pull, capture_output=True, text=True, check=False, timeout=600)
    except subprocess.TimeoutExpired:
        return "the pull timed out after 600s"
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {proc.returncode}"


def write_archive(*, engine: str, image_id: str) -> oci.OciImage:
    """dist/slot-operator_dev.oci.tar, rewritten only when the image changed."""
    if ARCHIVE.is_file():
        current = oci.read_archive(ARCHIVE).get(IMAGE)
        if current is not None and current.image_id == image_id:
            return current
    ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
    partial = ARCHIVE.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    if engine == "docker":
        ensure_tools({"skopeo": "skopeo"})
        with tempfile.TemporaryDirectory() as tmp:
            saved = pathlib.Path(tmp) / "image.tar"
            _run(["docker", "save", "--output", str(saved), IMAGE], what="docker save")
            _run(["skopeo", "copy", "--quiet", f"docker-archive:{saved}", f"oci-archive:{partial}:{IMAGE}"],
                 what="converting to an OCI archive")  # fmt: skip
    else:
        _run(["buildah", "push", "--quiet", IMAGE, f"oci-archive:{partial}:{IMAGE}"], what="writing the OCI archive")
    partial.replace(ARCHIVE)
    return oci.read_archive(ARCHIVE)[IMAGE]


def local_image_id(*, engine: str, ref: str) -> str | None:
    """The ID `ref` names in the engine's store; None when it names nothing."""
    if engine == "docker":
        cmd = ["docker", "image", "inspect", "--format", "{{.Id}}", ref]
    else:
        cmd = ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    image_id = proc.stdout.strip()
    if proc.returncode != 0 or not image_id:
        return None
    return image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"


def superseded(before: dict[str, str | None], after: dict[str, str | None]) -> list[str]:
    """IDs our tags named before a build and no longer do (an unchanged rebuild supersedes nothing)."""
    return [old for tag, old in before.items() if old is not None and old != after.get(tag)]


def remove_superseded(*, engine: str, before: dict[str, str | None], after: dict[str, str | None]) -> None:
    """Remove the images this build replaced; one still in use elsewhere stays, with a note."""
    for old in superseded(before, after):
        proc = subprocess.run([engine, "rmi", old], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            _log(f"removed the image this build replaced ({old[:19]}...)")
        else:
            _log(f"kept the image this build replaced ({old[:19]}...): {proc.stderr.strip()[-200:]}")


def unpacked_size(image: oci.OciImage) -> int:
    """Bytes of all regular files in the final file tree (whiteouts applied)."""
    return sum(member.size for member in oci.flatten(image).values() if member.isfile())


def build_image() -> oci.OciImage:
    engine = "docker" if docker_engine() else "buildah"
    if engine == "buildah":
        ensure_tools({"buildah": "buildah"})
    upstream = upstream_base(DOCKERFILE.read_text())
    base: str | None = os.environ.get("BASE_IMAGE") or None
    if base is None and (reason := pull_error(engine=engine, image=upstream)) is not None:
        base = standin_base(engine=engine)
        _banner(
            [
                f"The base image {upstream} cannot be pulled here:",
                f"  {reason[:110]}",
                f"USING A STAND-IN BASE: {base}",
                f"(Debian {STANDIN_SUITE} with Debian's python{STANDIN_PYTHON}, bootstrapped by mmdebstrap,",
                f" cached in {standin_archive()}).",
                "Release images must be built where the upstream base can be pulled.",
            ]
        )
    labels = git_labels()
    ca_bundle = host_ca_bundle()
    started = time.monotonic()
    command = docker_build if engine == "docker" else buildah_bud
    before = {tag: local_image_id(engine=engine, ref=tag) for tag in (BUILDER_IMAGE, IMAGE)}
    # The builder stage first, under its own tag; the full build then finds it in the layer cache.
    for tag in before:
        _run(command(tag=tag, base=base, labels=labels, ca_bundle=ca_bundle), what=f"building {tag} with {engine}")
    _log(f"built in {time.monotonic() - started:.0f}s")
    after = {tag: local_image_id(engine=engine, ref=tag) for tag in before}
    image_id = after[IMAGE]
    if image_id is None:
        raise ImageError(f"{engine} built {IMAGE}, but its store does not know it")
    remove_superseded(engine=engine, before=before, after=after)
    image = write_archive(engine=engine, image_id=image_id)
    mib = 1024 * 1024
    print(
        f"{IMAGE}: {len(image.layers)} layers, {unpacked_size(image) / mib:.0f} MiB unpacked, "
        f"{image.compressed_size / mib:.0f} MiB compressed; base {base or upstream}\n"
        f"OCI archive: {ARCHIVE.relative_to(REPO)} (image ID {image.image_id[:19]}...)",
        flush=True,
    )
    return image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--if-buildable",
        action="store_true",
        help="without root or a Docker engine, a build that cannot run is a warning, not a failure (tests skip)",
    )
    args = parser.parse_args()
    try:
        build_image()
    except (ImageError, oci.OciError) as exc:
        _log(f"error: {exc}")
        # Root (as CI) installs what is missing and a Docker engine needs nothing: there, a failure is real.
        if args.if_buildable and os.geteuid() != 0 and not docker_engine():
            _banner(
                [
                    "The image is NOT built (no root, no Docker engine, and buildah could not build it).",
                    "The tests that need the image will be skipped. To build it: install the Debian packages",
                    "buildah and mmdebstrap with rootless containers set up (/etc/subuid), or use a Docker engine,",
                    "then `make image`.",
                ]
            )
            return 0
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
