"""Build pinned Kubernetes components from the Go module proxy and cache them.

`k8s.io/kubernetes` cannot be `go install`ed (its go.mod replaces every staging
module with a local path), so each component is built from a throwaway module
that requires the release and maps each staging module to its published
`v0.Y.Z` twin. Binaries are cached under the user cache directory, keyed by
component and version, so only the first run pays for the build.

Usage: python -m devcluster.build [component ...]   (prints the bin directory)
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time

KUBERNETES_VERSION = "v1.36.3"
# The etcd release that KUBERNETES_VERSION's go.mod pins (go.etcd.io/etcd/*/v3).
ETCD_VERSION = "v3.6.8"
HELM_VERSION = "v3.22.0"
# Prometheus 3.16.0: its Go module is tagged v0.316.0 (the v3 tags are not Go-module versions).
PROMETHEUS_VERSION = "v0.316.0"


class BuildError(RuntimeError):
    """A component could not be built; the message names the missing piece."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Component:
    name: str
    module: str
    version: str
    package: str
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    # Stamp the Kubernetes version helm reports as its default (`.Capabilities.KubeVersion`, deprecation lint)
    # from the client-go it is built with, as helm's own release build does; unstamped it claims v1.20.
    stamp_helm_kube_version: bool = False
    # Bump to rebuild a cached binary after a change in how it is built.
    revision: int = 1
    # A Go module in this repository (its go.mod and go.sum pin every dependency) built instead of `module`
    # at `version`; its cache key is then a digest of its sources.
    source: pathlib.Path | None = None


def cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "slot-operator"


def bin_dir() -> pathlib.Path:
    """One directory of symlinks to the pinned binaries, for PATH."""
    return cache_root() / "bin"


def _kube_ldflags(version: str) -> tuple[str, ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    stamp = "k8s.io/component-base/version"
    return (
        f"-X {stamp}.gitVersion={version}",
        f"-X {stamp}.gitMajor={major}",
        f"-X {stamp}.gitMinor={minor}",
        f"-X {stamp}.gitTreeState=clean",
        f"-X {stamp}.buildDate=1970-01-01T00:00:00Z",
    )


def _prometheus_release(module_version: str) -> str:
    """v0.316.0 -> 3.16.0: Prometheus publishes release X.Y.Z as Go module v0.(100X+Y).Z."""
    _, combined, patch = module_version.lstrip("v").split(".")
    major, minor = divmod(int(combined), 100)
    return f"{major}.{minor}.{patch}"


GITOPSCHECK_SOURCE = pathlib.Path(__file__).resolve().parent / "gitopscheck"


def source_digest(source: pathlib.Path) -> str:
    """Digest of a local module's go.mod, go.sum and Go files: a new one means a new build."""
    digest = hashlib.sha256()
    for path in sorted([source / "go.mod", source / "go.sum", *source.glob("*.go")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component(
            name="etcd",
            module="go.etcd.io/etcd/server/v3",
            version=ETCD_VERSION,
            package="go.etcd.io/etcd/server/v3",
        ),
        Component(
            name="kube-apiserver",
            module="k8s.io/kubernetes",
            version=KUBERNETES_VERSION,
            package="k8s.io/kubernetes/cmd/kube-apiserver",
            ldflags=_kube_ldflags(KUBERNETES_VERSION),
        ),
        Component(
            name="kube-controller-manager",
            module="k8s.io/kubernetes",
            version=KUBERNETES_VERSION,
            package="k8s.io/kubernetes/cmd/kube-controller-manager",
            ldflags=_kube_ldflags(KUBERNETES_VERSION),
        ),
        Component(
            name="helm",
            module="helm.sh/helm/v3",
            version=HELM_VERSION,
            package="helm.sh/helm/v3/cmd/helm",
            ldflags=(f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",),
            stamp_helm_kube_version=True,
            revision=2,
        ),
        # promtool checks and unit-tests the chart's alert rules (`promtool check rules`, `promtool test rules`).
        # remove_all_sd leaves out every service-discovery plugin (cloud SDKs): promtool's rule commands need none.
        Component(
            name="promtool",
            module="github.com/prometheus/prometheus",
            version=PROMETHEUS_VERSION,
            package="github.com/prometheus/prometheus/cmd/promtool",
            ldflags=(f"-X github.com/prometheus/common/version.Version={_prometheus_release(PROMETHEUS_VERSION)}",),
            tags=("remove_all_sd",),
        ),
        # What Flux (kstatus) and Argo CD (health.lua on gopher-lua) make of live Slots: tests read the
        # contract through the real libraries (devcluster/gitops.py).
        Component(
            name="gitopscheck",
            module="slot-operator.test/gitopscheck",
            version=source_digest(GITOPSCHECK_SOURCE),
            package=".",
            source=GITOPSCHECK_SOURCE,
        ),
    )
}


def binary_path(component: Component) -> pathlib.Path:
    revision = f"-r{component.revision}" if component.revision > 1 else ""
    return cache_root() / "build" / f"{component.name}-{component.version}{revision}" / component.name


def _log(message: str) -> None:
    print(f"[devcluster.build] {message}", file=sys.stderr, flush=True)


def _run(args: list[str], *, cwd: pathlib.Path, label: str, env: dict[str, str]) -> str:
    """Run a go command, printing elapsed time every 30 s so a long build shows life."""
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            _log(f"{label}: still running, {time.monotonic() - started:.0f}s elapsed")

    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    try:
        proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise BuildError(f"{label}: the tool {args[0]!r} is not installed or not on PATH") from exc
    finally:
        done.set()
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise BuildError(f"{label}: `{' '.join(args[:3])} ...` failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def _go_env(workdir: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false", GOWORK="off")
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def _staging_replaces(module: str, version: str, *, cwd: pathlib.Path, env: dict[str, str]) -> list[str]:
    """Map every `=> ./staging/...` replace of the release to its published v0.Y.Z."""
    listing = _run(
        ["go", "mod", "download", "-json", f"{module}@{version}"], cwd=cwd, label=f"{module} go.mod", env=env
    )
    info = json.loads(listing)
    gomod = pathlib.Path(info["GoMod"]).read_text()
    minor = version.lstrip("v").split(".", 1)[1]
    staging_version = f"v0.{minor}"
    lines = []
    for match in re.finditer(r"^\s*(\S+)\s+=>\s+\./staging/\S+", gomod, flags=re.MULTILINE):
        lines.append(f"replace {match.group(1)} => {match.group(1)} {staging_version}")
    return lines


def build(component: Component) -> pathlib.Path:
    target = binary_path(component)
    if target.exists():
        return target
    if shutil.which("go") is None:
        raise BuildError(f"building {component.name} needs the Go toolchain: `go` is not on PATH")
    if component.source is not None:
        return _build_source(component, target)
    workdir = cache_root() / "work" / f"{component.name}-{component.version}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    env = _go_env(workdir)
    started = time.monotonic()
    _log(f"{component.name} {component.version}: building from {component.module} (first run only)")
    replaces = []
    if component.module == "k8s.io/kubernetes":
        replaces = _staging_replaces(component.module, component.version, cwd=workdir, env=env)
    (workdir / "go.mod").write_text(
        "module localbuild\n\ngo 1.26\n\n"
        f"require {component.module} {component.version}\n\n" + "\n".join(replaces) + "\n"
    )
    _run(
        ["go", "get", f"{component.package}@{component.version}"],
        cwd=workdir,
        label=f"{component.name}: resolve modules",
        env=env,
    )
    ldflags = ["-s", "-w", *component.ldflags]
    if component.stamp_helm_kube_version:
        client_go = _run(
            ["go", "list", "-m", "-f", "{{.Version}}", "k8s.io/client-go"],
            cwd=workdir,
            label=f"{component.name}: client-go version",
            env=env,
        ).strip()
        minor = client_go.lstrip("v").split(".")[1]
        for package in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
            ldflags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={minor}"]
    tmp = target.with_suffix(".tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [
            "go",
            "build",
            "-trimpath",
            *(("-tags", ",".join(component.tags)) if component.tags else ()),
            "-ldflags",
            " ".join(ldflags),
            "-o",
            str(tmp),
            component.package,
        ],
        cwd=workdir,
        label=f"{component.name}: compile",
        env=env,
    )
    tmp.rename(target)
    shutil.rmtree(workdir, ignore_errors=True)
    _log(f"{component.name} {component.version}: built in {time.monotonic() - started:.0f}s -> {target}")
    return target


def _build_source(component: Component, target: pathlib.Path) -> pathlib.Path:
    """Build a module of this repository exactly as its go.sum pins it (-mod=readonly: nothing is re-resolved)."""
    assert component.source is not None
    env = _go_env(component.source)
    env["GOFLAGS"] = "-mod=readonly -buildvcs=false"
    started = time.monotonic()
    _log(f"{component.name} {component.version}: building from {component.source} (first run only)")
    tmp = target.with_suffix(".tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    _run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), component.package],
        cwd=component.source,
        label=f"{component.name}: compile",
        env=env,
    )
    tmp.rename(target)
    _log(f"{component.name} {component.version}: built in {time.monotonic() - started:.0f}s -> {target}")
    return target


def ensure(names: list[str] | None = None) -> pathlib.Path:
    """Build (or reuse) the named components and link them into `bin_dir()`.

    Serialised by a lock in the cache: two test runs starting on a fresh machine would
    otherwise compile into the same work directory.
    """
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    with (cache_root() / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in names or list(COMPONENTS):
            try:
                component = COMPONENTS[name]
            except KeyError:
                raise BuildError(f"unknown component {name!r}; known: {', '.join(COMPONENTS)}") from None
            path = build(component)
            link = out / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(path)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("components", nargs="*", metavar="component", help=f"any of: {', '.join(COMPONENTS)}")
    args = parser.parse_args()
    try:
        print(ensure(args.components or None))
    except BuildError as exc:
        _log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
