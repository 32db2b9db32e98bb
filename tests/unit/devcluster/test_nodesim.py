"""Pure pieces of the node simulator and image store: reference parsing, node matching, env expansion, log tails.

The behaviour against a real API server is covered by tests/integration/test_harness.py;
these pin the scheduler/kubelet rules that are easy to get subtly wrong.
"""

from __future__ import annotations

import json
import pathlib
import threading
from typing import Any

import pytest

from devcluster.nodesim import pods, runtime, scheduling, state
from devcluster.nodesim.images import (
    ImageInvalid,
    ImageNotFound,
    ImageStore,
    RegistryFault,
    parse_reference,
)
from tests import repo

REPO = repo.ROOT

LABELS = {"kubernetes.io/hostname": "sim-node-b", "kubernetes.io/os": "linux"}


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("local/agent-shell:codex", ("local/agent-shell", "codex")),
        ("local/agent-shell", ("local/agent-shell", "latest")),
        ("local/agent-shell@sha256:" + "a" * 64, ("local/agent-shell", "latest")),
        ("local/agent-shell:claude@sha256:" + "a" * 64, ("local/agent-shell", "claude")),
        ("registry:5000/team/agent", ("registry:5000/team/agent", "latest")),
        ("registry:5000/team/agent:v2", ("registry:5000/team/agent", "v2")),
    ],
)
def test_parse_reference(reference: str, expected: tuple[str, str]) -> None:
    assert parse_reference(reference) == expected


def test_store_resolves_and_rejects(tmp_path: pathlib.Path) -> None:
    image_dir = tmp_path / "ghcr.io" / "example" / "agent" / "v1"
    (image_dir / "rootfs" / "bin").mkdir(parents=True)
    (image_dir / "image.json").write_text(
        json.dumps(
            {
                "entrypoint": ["run"],
                "cmd": ["--x"],
                "env": {"A": "1"},
                "user": "10001:10002",
                "path": ["bin"],
            }
        )
    )
    store = ImageStore(tmp_path)
    image = store.resolve("ghcr.io/example/agent:v1@sha256:" + "b" * 64)
    assert (image.uid, image.gid, image.entrypoint, image.cmd) == (10001, 10002, ("run",), ("--x",))
    assert image.path_env.split(":")[0] == str(image_dir / "rootfs" / "bin")
    assert image.image_id.startswith("ghcr.io/example/agent@sha256:")
    with pytest.raises(ImageNotFound):
        store.resolve("ghcr.io/example/agent:v2")
    with pytest.raises(ImageNotFound):
        store.resolve("../../etc/passwd:x")
    (image_dir / "image.json").write_text('{"user": "agent"}')
    with pytest.raises(ImageInvalid):
        store.resolve("ghcr.io/example/agent:v1")


def test_injected_registry_faults_fail_those_pulls_until_removed(tmp_path: pathlib.Path) -> None:
    (tmp_path / "local" / "agent" / "v1").mkdir(parents=True)
    (tmp_path / "local" / "agent" / "v1" / "image.json").write_text("{}")
    faults = tmp_path / "faults.json"
    store = ImageStore(tmp_path, faults=faults)
    assert store.resolve("local/agent:v1").tag == "v1"  # no file: no fault
    pinned = "local/agent:v1@sha256:" + "c" * 64
    faults.write_text(json.dumps({pinned: "503 Service Unavailable"}))
    with pytest.raises(RegistryFault, match="503 Service Unavailable"):
        store.resolve(pinned)
    assert store.resolve("local/agent:v1").tag == "v1"  # a key with a digest matches only itself
    faults.write_text(json.dumps({"local/agent:v1": "429 Too Many Requests"}))
    with pytest.raises(RegistryFault, match="429"):
        store.resolve(pinned)  # a key without one matches every digest
    faults.write_text("{}")
    assert store.resolve(pinned).tag == "v1"


def _pod(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"containers": [], **spec}}


def _affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}
        }
    }


@pytest.mark.parametrize(
    ("spec", "fits"),
    [
        ({}, True),
        ({"nodeSelector": {"kubernetes.io/hostname": "sim-node-b"}}, True),
        ({"nodeSelector": {"kubernetes.io/hostname": "sim-node-a"}}, False),
        (
            _affinity(
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["sim-node-b"]}]}
            ),
            True,
        ),
        (
            _affinity({"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["nope"]}]}),
            False,
        ),
        # Terms are ORed, expressions within a term ANDed.
        (
            _affinity(
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["nope"]}]},
                {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "Exists"}]},
            ),
            True,
        ),
        (
            _affinity(
                {
                    "matchExpressions": [
                        {"key": "kubernetes.io/os", "operator": "Exists"},
                        {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["sim-node-b"]},
                    ]
                }
            ),
            False,
        ),
        (_affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["sim-node-b"]}]}), True),
        (_affinity({}), False),  # an empty term matches nothing
    ],
)
def test_node_fits(spec: dict[str, Any], fits: bool) -> None:
    assert scheduling.node_fits(_pod(spec), "sim-node-b", LABELS) is fits


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$(A)/x", "1/x"), ("$(MISSING)", "$(MISSING)"), ("$$(A)", "$(A)"), ("a$b", "a$b"), ("$$", "$")],
)
def test_expand_vars(text: str, expected: str) -> None:
    assert runtime.expand_vars(text, {"A": "1"}) == expected


def test_tail_log_keeps_last_80_lines_and_2_kib(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    tail = runtime.tail_log(log)
    assert tail.splitlines() == [f"line {i}" for i in range(120, 200)]
    log.write_text("x" * 5000 + "\nlast\n")
    assert len(runtime.tail_log(log).encode()) == 2048
    assert runtime.tail_log(log).endswith("last\n")
    assert runtime.tail_log(tmp_path / "missing") == ""


def test_work_queue_dedupes_and_delays() -> None:
    queue = state.WorkQueue()
    queue.add(("pod", "a"))
    queue.add(("pod", "a"))
    queue.add_after(("pod", "b"), 0.2)
    assert queue.get(timeout=1) == ("pod", "a")
    assert queue.get(timeout=0.01) is None  # deduplicated, and b is not due yet
    assert queue.get(timeout=5) == ("pod", "b")


def test_work_queue_wakes_on_add() -> None:
    queue = state.WorkQueue()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(queue.get(timeout=10)))
    waiter.start()
    queue.add(("pvc", "ns", "c"))
    waiter.join(timeout=10)
    assert got == [("pvc", "ns", "c")]


def test_container_status_shapes() -> None:
    cr = pods.ContainerRuntime(name="probe")
    waiting = cr.status("img")
    assert waiting["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert (waiting["ready"], waiting["started"], waiting["imageID"]) == (False, False, "")
    cr.state, cr.exit_code, cr.reason, cr.message = "terminated", 65, "Error", "msg"
    cr.started_at, cr.finished_at, cr.image_id = "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "img@sha256:x"
    terminated = cr.status("img")["state"]["terminated"]
    assert terminated == {
        "exitCode": 65,
        "reason": "Error",
        "message": "msg",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:01Z",
    }


def test_a_directory_volume_on_a_file_of_a_directory_image_is_a_start_error(tmp_path: pathlib.Path) -> None:
    """As a real runtime refuses it, wherever the repository (so the image) lives, /tmp included."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "entrypoint").write_text("#!/bin/sh\n")
    claim = tmp_path / "claim"
    claim.mkdir()
    ops = ["dir", "/scratch", "/tmp", "rw", "dir", str(claim), str(rootfs / "bin" / "entrypoint"), "ro"]
    with pytest.raises(state.StartError, match=r"error mounting .* exists but is not a dir"):
        runtime.refuse_mounts_on_image_files(ops, rootfs)
    runtime.refuse_mounts_on_image_files(["dir", str(claim), str(rootfs / "bin"), "ro"], rootfs)
    runtime.refuse_mounts_on_image_files(["dir", str(claim), "/home/codex", "ro"], rootfs)
