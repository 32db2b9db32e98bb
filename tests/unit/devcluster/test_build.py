"""devcluster/build.py without building: build steps, output names, the first-run notice, the pinned tools."""

from __future__ import annotations

import os
import pathlib

import pytest

from devcluster import build

CONTROL_PLANE = ["etcd", "kube-apiserver", "kube-controller-manager"]


@pytest.fixture
def empty_cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "slot-operator"


def _fake_binary(component: build.Component) -> pathlib.Path:
    path = build.binary_path(component)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_control_plane_is_one_build_step_and_the_rest_one_each() -> None:
    steps = build.build_steps([build.COMPONENTS[name] for name in [*CONTROL_PLANE, "helm", "promtool", "gitopscheck"]])
    assert [[c.name for c in step] for step in steps] == [
        CONTROL_PLANE,
        ["helm"],
        ["promtool"],
        ["gitopscheck"],
    ]


@pytest.mark.parametrize(
    ("package", "name"),
    [
        ("go.etcd.io/etcd/server/v3", "server"),
        ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
        ("helm.sh/helm/v3/cmd/helm", "helm"),
    ],
)
def test_output_names_follow_go_build(package: str, name: str) -> None:
    assert build.output_name(package) == name


def test_the_cache_key_names_component_version_and_revision(empty_cache: pathlib.Path) -> None:
    etcd = build.COMPONENTS["etcd"]
    assert build.binary_path(etcd) == empty_cache / "build" / f"etcd-{etcd.version}-r{etcd.revision}" / "etcd"


def test_the_notice_of_a_fresh_machine_counts_everything(empty_cache: pathlib.Path) -> None:
    line = build.notice("make demo", CONTROL_PLANE, then=45, venv=True)
    fresh = build.VENV_SECONDS + sum(build.COMPONENTS[n].cold_seconds for n in CONTROL_PLANE) + 45
    assert line.startswith(f"make demo: a first run on a fresh 2-core machine takes about {build.duration(fresh)}")
    assert "builds etcd, kube-apiserver, kube-controller-manager from source once" in line
    assert line.endswith(f"this one about {build.duration(fresh)} (3 of 3 binaries to build)")


def test_the_notice_of_a_warm_machine_counts_only_the_target(empty_cache: pathlib.Path) -> None:
    for name in CONTROL_PLANE:
        _fake_binary(build.COMPONENTS[name])
    line = build.notice("make demo", CONTROL_PLANE, then=45, venv=False)
    assert line.endswith("this one about 45s (the binaries are cached)")


def test_a_tool_is_the_pinned_build_never_one_on_path(
    empty_cache: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "bin"
    elsewhere.mkdir()
    (elsewhere / "helm").write_text("#!/bin/sh\n")
    (elsewhere / "helm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{elsewhere}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HELM", str(elsewhere / "helm"))
    pinned = _fake_binary(build.COMPONENTS["helm"])
    assert build.tool("helm") == pinned


def test_an_unknown_component_is_named(empty_cache: pathlib.Path) -> None:
    with pytest.raises(build.BuildError, match=r"unknown component 'kubectl'; known: etcd, kube-apiserver"):
        build.tool("kubectl")


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.6, "1m00s"), (61, "1m01s"), (425, "7m05s")])
def test_durations_read_as_minutes_and_seconds(seconds: float, text: str) -> None:
    assert build.duration(seconds) == text
