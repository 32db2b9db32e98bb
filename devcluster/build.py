"""Build pinned Kubernetes components from the Go module proxy and cache them.

`k8s.io/kubernetes` cannot be `go install`ed (its go.mod replaces every staging
module with a local path), so components are built in a throwaway module that
requires the release and maps each staging module to its published `v0.Y.Z`
twin. Binaries are cached under the user cache directory, keyed by component and
version, so only the first run pays for the build, and only for what it asks for
(`make demo` needs the control plane; helm, promtool and gitopscheck are built by
the targets that use them).

A first run is made as short as it can be: the components of one group (etcd,
kube-apiserver and kube-controller-manager) are built by one `go build` in one
module, so the packages they share compile once and the compiler keeps both cores
busy; the next group's modules download while the previous group compiles; the
compiler writes no debug information the stripped binaries would drop anyway.
Each step says what it builds, how long the last one took and how long the rest
should take (from the times below, scaled by how fast this machine turned out).

Usage: python -m devcluster.build [component ...]   (prints the bin directory)
       python -m devcluster.build --notice LABEL [--then SECONDS] [component ...]   (what a first run costs)
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
import tempfile
import threading
import time

KUBERNETES_VERSION = "v1.36.3"
# The etcd release that KUBERNETES_VERSION's go.mod pins (go.etcd.io/etcd/*/v3).
ETCD_VERSION = "v3.6.8"
HELM_VERSION = "v3.22.0"
# Prometheus 3.16.0: its Go module is tagged v0.316.0 (the v3 tags are not Go-module versions).
PROMETHEUS_VERSION = "v0.316.0"
# What `make venv` takes on a fresh machine (the locked wheels downloaded and installed), for the notice.
VENV_SECONDS = 40
# Cold builds on 2 cores, module downloads included (measured: see the README), for the estimates.
COLD_ETCD = 50
COLD_APISERVER = 210
COLD_CONTROLLER_MANAGER = 60
COLD_HELM = 80
COLD_PROMTOOL = 110
COLD_GITOPSCHECK = 25


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
    # Components of one group are built by one `go build` in one module (default: a group of their own).
    group: str = ""
    # Seconds a cold build of this component takes on 2 cores (its share of its group's), for the estimates.
    cold_seconds: int

    @property
    def group_name(self) -> str:
        return self.group or self.name


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


def _kubernetes(command: str, *, cold_seconds: int) -> Component:
    """One of k8s.io/kubernetes's commands, in the control plane's group."""
    return Component(
        name=command,
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        package=f"k8s.io/kubernetes/cmd/{command}",
        ldflags=_kube_ldflags(KUBERNETES_VERSION),
        group="control-plane",
        cold_seconds=cold_seconds,
    )


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        # The control plane, one group: etcd compiles against the same dependency versions as the API server
        # that embeds its client (one module graph), so what they share compiles once.
        Component(
            name="etcd",
            module="go.etcd.io/etcd/server/v3",
            version=ETCD_VERSION,
            package="go.etcd.io/etcd/server/v3",
            group="control-plane",
            revision=2,
            cold_seconds=COLD_ETCD,
        ),
        _kubernetes("kube-apiserver", cold_seconds=COLD_APISERVER),
        _kubernetes("kube-controller-manager", cold_seconds=COLD_CONTROLLER_MANAGER),
        Component(
            name="helm",
            module="helm.sh/helm/v3",
            version=HELM_VERSION,
            package="helm.sh/helm/v3/cmd/helm",
            ldflags=(f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",),
            stamp_helm_kube_version=True,
            revision=2,
            cold_seconds=COLD_HELM,
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
            cold_seconds=COLD_PROMTOOL,
        ),
        # What Flux (kstatus) and Argo CD (health.lua on gopher-lua) make of live Slots: tests read the
        # contract through the real libraries (devcluster/gitops.py).
        Component(
            name="gitopscheck",
            module="slot-operator.test/gitopscheck",
            version=source_digest(GITOPSCHECK_SOURCE),
            package=".",
            source=GITOPSCHECK_SOURCE,
            cold_seconds=COLD_GITOPSCHECK,
        ),
    )
}


def binary_path(component: Component) -> pathlib.Path:
    revision = f"-r{component.revision}" if component.revision > 1 else ""
    return cache_root() / "build" / f"{component.name}-{component.version}{revision}" / component.name


def _log(message: str) -> None:
    print(f"[devcluster.build] {message}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def _names(components: list[Component]) -> str:
    return ", ".join(c.name for c in components)


def _run(args: list[str], *, cwd: pathlib.Path, label: str, env: dict[str, str], expect: float = 0) -> str:
    """Run a go command, saying every 30 s that it still runs (with `expect` seconds: how long it should take)."""
    started = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(30):
            elapsed = time.monotonic() - started
            if not expect:
                _log(f"{label}: {duration(elapsed)} so far")
            elif elapsed < expect:
                _log(f"{label}: {duration(elapsed)} so far, about {duration(expect - elapsed)} to go")
            else:
                _log(f"{label}: {duration(elapsed)} so far, more than the {duration(expect)} expected (busy?)")

    threading.Thread(target=beat, daemon=True).start()
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


def _go_env(*, readonly: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOFLAGS=f"-mod={'readonly' if readonly else 'mod'} -buildvcs=false", GOWORK="off")
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Prepared:
    """A group whose modules are downloaded: where to run `go build`, and with which flags."""

    members: tuple[Component, ...]
    workdir: pathlib.Path
    ldflags: tuple[str, ...]
    tags: tuple[str, ...]
    readonly: bool


def _prepare(members: tuple[Component, ...]) -> Prepared:
    """Resolve and download every module the group's packages need (network-bound: runs ahead of compiles)."""
    label = f"{_names(list(members))}: modules"
    if members[0].source is not None:
        source = members[0].source
        _run(["go", "mod", "download"], cwd=source, label=label, env=_go_env(readonly=True))
        return Prepared(members=members, workdir=source, ldflags=("-s", "-w"), tags=(), readonly=True)
    # The whole group's modules, whichever members are built now: a binary's dependencies never depend on what
    # else happened to be missing from the cache.
    group = [c for c in COMPONENTS.values() if c.group_name == members[0].group_name]
    requires = dict.fromkeys((c.module, c.version) for c in group)
    key = hashlib.sha256(repr(sorted(requires)).encode()).hexdigest()[:12]
    workdir = cache_root() / "work" / f"{members[0].group_name}-{key}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    env = _go_env()
    replaces = []
    for module, version in requires:
        if module == "k8s.io/kubernetes":
            replaces = _staging_replaces(module, version, cwd=workdir, env=env)
    (workdir / "go.mod").write_text(
        "module localbuild\n\ngo 1.26\n\n"
        + "".join(f"require {module} {version}\n" for module, version in requires)
        + "\n"
        + "\n".join(replaces)
        + "\n"
    )
    _run(["go", "get", *(f"{c.package}@{c.version}" for c in members)], cwd=workdir, label=label, env=env)
    ldflags = ["-s", "-w", *dict.fromkeys(flag for c in members for flag in c.ldflags)]
    if any(c.stamp_helm_kube_version for c in members):
        client_go = _run(
            ["go", "list", "-m", "-f", "{{.Version}}", "k8s.io/client-go"], cwd=workdir, label=label, env=env
        ).strip()
        minor = client_go.lstrip("v").split(".")[1]
        for package in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
            ldflags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={minor}"]
    tags = tuple(sorted({tag for c in members for tag in c.tags}))
    return Prepared(members=members, workdir=workdir, ldflags=tuple(ldflags), tags=tags, readonly=False)


def output_name(package: str) -> str:
    """The file `go build -o DIR/` writes for a main package: its last path element, before a /vN suffix."""
    parts = package.split("/")
    return parts[-2] if len(parts) > 1 and re.fullmatch(r"v[0-9]+", parts[-1]) else parts[-1]


def _compile(prepared: Prepared, *, expect: float) -> None:
    """One `go build` for every member; each binary then moves into its cache path."""
    members = prepared.members
    builds = binary_path(members[0]).parent.parent
    builds.mkdir(parents=True, exist_ok=True)
    out = pathlib.Path(tempfile.mkdtemp(prefix="out-", dir=builds))
    try:
        single = len(members) == 1
        target = str(out / members[0].name) if single else f"{out}{os.sep}"
        args = ["go", "build", "-trimpath", "-gcflags=all=-dwarf=false", "-ldflags", " ".join(prepared.ldflags)]
        args += ["-tags", ",".join(prepared.tags)] if prepared.tags else []
        args += ["-o", target, *(c.package for c in members)]
        _run(args, cwd=prepared.workdir, label=f"compiling {_names(list(members))}", env=_go_env(
            readonly=prepared.readonly), expect=expect)  # fmt: skip
        for component in members:
            path = binary_path(component)
            path.parent.mkdir(parents=True, exist_ok=True)
            (out / (component.name if single else output_name(component.package))).rename(path)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if not prepared.readonly:
        shutil.rmtree(prepared.workdir, ignore_errors=True)


def build_steps(components: list[Component]) -> list[tuple[Component, ...]]:
    """The components in build steps: one per group, in the order the components were asked for."""
    steps: dict[str, list[Component]] = {}
    for component in components:
        steps.setdefault(component.group_name, []).append(component)
    return [tuple(step) for step in steps.values()]


def _build(missing: list[Component]) -> None:
    """Build `missing`, group by group, downloading the next group's modules while the previous one compiles."""
    steps = build_steps(missing)
    estimates = [sum(c.cold_seconds for c in step) for step in steps]
    _log(
        f"first run: building {_names(missing)} from source in {len(steps)} step{'s' if len(steps) > 1 else ''}, "
        f"about {duration(sum(estimates))} on 2 cores (once: cached in {cache_root()})"
    )
    if shutil.which("go") is None:
        raise BuildError(f"building {_names(missing)} needs the Go toolchain: `go` is not on PATH")
    spent = expected = step_time = 0.0
    # One worker, in order: it runs ahead of the compiles, never ahead of itself; a failure cancels the rest.
    downloads = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        prepared = [downloads.submit(_prepare, step) for step in steps]
        for index, (step, future) in enumerate(zip(steps, prepared, strict=True)):
            # How fast this machine is, from what it built so far in this run (1.0 until then).
            pace = spent / expected if expected else 1.0
            estimate = estimates[index] * pace
            left = sum(estimates[index:]) * pace
            last = f"; the last step took {duration(step_time)}" if index else ""
            _log(
                f"step {index + 1}/{len(steps)}: {_names(list(step))}, about {duration(estimate)}"
                f"{last}; about {duration(left)} left in all"
            )
            started = time.monotonic()
            ready = future.result()
            _compile(ready, expect=max(0.0, estimate - (time.monotonic() - started)))
            step_time = time.monotonic() - started
            spent, expected = spent + step_time, expected + estimates[index]
            _log(f"built {_names(list(step))} in {duration(step_time)}")
    finally:
        downloads.shutdown(cancel_futures=True)
    _log(f"all built in {duration(spent)}")


def _lookup(names: list[str]) -> list[Component]:
    try:
        return [COMPONENTS[name] for name in names]
    except KeyError as exc:
        raise BuildError(f"unknown component {exc.args[0]!r}; known: {', '.join(COMPONENTS)}") from None


def ensure(names: list[str] | None = None) -> pathlib.Path:
    """Build (or reuse) the named components and link them into `bin_dir()`.

    Serialised by a lock in the cache: two test runs starting on a fresh machine would
    otherwise compile into the same work directory.
    """
    components = _lookup(names or list(COMPONENTS))
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    with (cache_root() / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [c for c in components if not binary_path(c).exists()]
        if missing:
            _build(missing)
        for component in components:
            link = out / component.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(binary_path(component))
    return out


def tool(name: str) -> pathlib.Path:
    """The pinned binary `name`, built first if this cache does not have it yet (never one from PATH)."""
    (component,) = _lookup([name])
    path = binary_path(component)
    if not path.exists():
        ensure([name])
    return path


def notice(label: str, names: list[str], *, then: float, venv: bool) -> str:
    """What a first run of `label` costs on a fresh machine, and what this one will cost."""
    components = _lookup(names)
    missing = [c for c in components if not binary_path(c).exists()]
    fresh = VENV_SECONDS + sum(c.cold_seconds for c in components) + then
    here = (VENV_SECONDS if venv else 0) + sum(c.cold_seconds for c in missing) + then
    built = f"builds {_names(components)} from source once" if components else "makes the virtualenv"
    now = f"{len(missing)} of {len(components)} binaries to build" if missing else "the binaries are cached"
    return (
        f"{label}: a first run on a fresh 2-core machine takes about {duration(fresh)} (it {built}); "
        f"this one about {duration(here)} ({now})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("components", nargs="*", metavar="component", help=f"any of: {', '.join(COMPONENTS)}")
    parser.add_argument("--notice", metavar="LABEL", help="print what a first run costs instead of building")
    parser.add_argument("--then", type=float, default=0, help="seconds the target takes once everything is built")
    parser.add_argument("--venv-missing", action="store_true", help="the virtualenv is still to be made")
    args = parser.parse_args()
    try:
        if args.notice:
            print(notice(args.notice, args.components, then=args.then, venv=args.venv_missing), flush=True)
        else:
            print(ensure(args.components or None))
    except BuildError as exc:
        _log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
