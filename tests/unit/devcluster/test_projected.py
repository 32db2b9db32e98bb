"""Projected volumes: what the kubelet writes for kube-api-access-* (token, ca.crt, namespace) and friends."""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import pytest

from devcluster.nodesim import projected

POD = {"metadata": {"name": "op-1", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}}, "spec": {"nodeName": "n"}}
# What the ServiceAccount admission plugin adds to a pod that automounts its token.
KUBE_API_ACCESS = {
    "defaultMode": 420,
    "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ],
}


def _sources(*, config_maps: dict[str, Any] | None = None, secrets: dict[str, Any] | None = None) -> projected.Sources:
    tokens: list[tuple[str | None, int]] = []
    return projected.Sources(
        config_map=lambda name: (config_maps or {}).get(name),
        secret=lambda name: (secrets or {}).get(name),
        token=lambda audience, seconds: tokens.append((audience, seconds)) or f"token-{audience}-{seconds}",
        field=lambda path: projected.downward_field(POD, path),
    )


def test_kube_api_access_volume() -> None:
    sources = _sources(config_maps={"kube-root-ca.crt": {"data": {"ca.crt": "PEM"}}})
    files = projected.projected_files(KUBE_API_ACCESS, sources=sources)
    assert files == {"token": (b"token-None-3607", 0o644), "ca.crt": (b"PEM", 0o644), "namespace": (b"ns", 0o644)}


def test_a_missing_source_keeps_the_container_waiting_unless_optional() -> None:
    with pytest.raises(projected.VolumeNotReady, match=r'configmap "kube-root-ca\.crt" not found'):
        projected.projected_files(KUBE_API_ACCESS, sources=_sources())
    optional = {"sources": [{"configMap": {"name": "absent", "optional": True}}]}
    assert projected.projected_files(optional, sources=_sources()) == {}


def test_secret_items_modes_and_labels() -> None:
    volume = {
        "sources": [
            {"secret": {"name": "s", "items": [{"key": "k", "path": "dir/k", "mode": 0o400}]}},
            {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        ]
    }
    sources = _sources(secrets={"s": {"data": {"k": base64.b64encode(b"v").decode()}}})
    files = projected.projected_files(volume, sources=sources)
    assert files == {"dir/k": (b"v", 0o400), "labels": (b'app="x"', 0o644)}


def test_write_files_refuses_paths_out_of_the_volume(tmp_path: pathlib.Path) -> None:
    projected.write_files(tmp_path, {"a/b": (b"x", 0o600)})
    assert (tmp_path / "a" / "b").read_bytes() == b"x"
    with pytest.raises(projected.VolumeNotReady, match=r"without '\.\.'"):
        projected.write_files(tmp_path, {"../escape": (b"x", 0o600)})


def test_env_values_from_secrets_and_config_maps() -> None:
    sources = _sources(
        config_maps={"cm": {"data": {"region": "eu"}, "binaryData": {"blob": base64.b64encode(b"\xff").decode()}}},
        secrets={"s": {"data": {"token": base64.b64encode(b"t0k").decode()}}},
    )

    def value(kind: str, name: str, key: str, **extra: Any) -> str | None:
        return projected.env_value({kind: {"name": name, "key": key, **extra}}, namespace="ns", sources=sources)

    assert value("secretKeyRef", "s", "token") == "t0k"
    assert value("configMapKeyRef", "cm", "region") == "eu"
    assert value("configMapKeyRef", "cm", "blob").encode("utf-8", "surrogateescape") == b"\xff"
    assert value("secretKeyRef", "absent", "k", optional=True) is None
    assert value("configMapKeyRef", "cm", "absent", optional=True) is None
    # The kubelet's own CreateContainerConfigError messages.
    with pytest.raises(projected.EnvSourceMissing, match=r'^secret "absent" not found$'):
        value("secretKeyRef", "absent", "k")
    with pytest.raises(projected.EnvSourceMissing, match=r"^couldn't find key other in Secret ns/s$"):
        value("secretKeyRef", "s", "other")
    with pytest.raises(projected.EnvSourceMissing, match=r'^configmap "absent" not found$'):
        value("configMapKeyRef", "absent", "k")
    with pytest.raises(projected.EnvSourceMissing, match=r"^couldn't find key other in ConfigMap ns/cm$"):
        value("configMapKeyRef", "cm", "other")


def test_env_values_from_fields_and_what_is_not_simulated() -> None:
    def value(source: dict[str, Any]) -> str | None:
        return projected.env_value(source, namespace="ns", sources=_sources())

    assert value({"fieldRef": {"fieldPath": "metadata.name"}}) == "op-1"
    with pytest.raises(projected.EnvSourceUnsupported, match=r"fieldRef 'status.podIPs'"):
        value({"fieldRef": {"fieldPath": "status.podIPs"}})
    with pytest.raises(projected.EnvSourceUnsupported, match=r"resourceFieldRef"):
        value({"resourceFieldRef": {"resource": "limits.memory"}})
