"""Projected volumes as the kubelet writes them: ServiceAccount token, ConfigMap, Secret and downward API files.

The ServiceAccount admission plugin gives every pod that automounts a token a
projected volume `kube-api-access-*` at /var/run/secrets/kubernetes.io/serviceaccount
(`token` from the TokenRequest API, `ca.crt` from the kube-root-ca.crt ConfigMap,
`namespace` from the downward API). With those files and KUBERNETES_SERVICE_HOST/PORT
a client's in-cluster config works. The simulator writes a token once when the
container starts and does not rotate it (tokens live an hour by default; test pods
do not live that long).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
from collections.abc import Callable
from typing import Any

JSON = dict[str, Any]
DEFAULT_MODE = 0o644
DEFAULT_TOKEN_SECONDS = 3600


class VolumeNotReady(Exception):
    """A source the volume needs is missing (the kubelet keeps the container in ContainerCreating)."""


class EnvSourceMissing(Exception):
    """An env var's Secret/ConfigMap (or key) is missing: the kubelet's CreateContainerConfigError, its message."""


class EnvSourceUnsupported(Exception):
    """An env var's `valueFrom` the simulator does not resolve (resourceFieldRef, node-only fieldRefs)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sources:
    """How the kubelet side reads what a projected volume needs from the API server."""

    config_map: Callable[[str], JSON | None]  # name -> ConfigMap in the pod's namespace, or None
    secret: Callable[[str], JSON | None]  # name -> Secret in the pod's namespace, or None
    token: Callable[[str | None, int], str]  # (audience, expirationSeconds) -> a token for the pod
    field: Callable[[str], str | None]  # downward API fieldPath -> value, None when unsupported


def _keyed(kind: str, source: JSON, data: dict[str, bytes] | None, mode: int) -> dict[str, tuple[bytes, int]]:
    name = source.get("name", "")
    if data is None:
        if source.get("optional"):
            return {}
        raise VolumeNotReady(f'{kind} "{name}" not found')
    items = source.get("items")
    if not items:
        return {key: (value, mode) for key, value in data.items()}
    files = {}
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise VolumeNotReady(f'{kind} "{name}": key "{item["key"]}" not found')
        files[item["path"]] = (data[item["key"]], int(item.get("mode", mode)))
    return files


def _config_map_data(cm: JSON | None) -> dict[str, bytes] | None:
    if cm is None:
        return None
    data = {key: value.encode() for key, value in (cm.get("data") or {}).items()}
    return {**data, **{key: base64.b64decode(value) for key, value in (cm.get("binaryData") or {}).items()}}


def _secret_data(secret: JSON | None) -> dict[str, bytes] | None:
    return None if secret is None else {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def env_value(value_from: JSON, *, namespace: str, sources: Sources) -> str | None:
    """An env var's `valueFrom` as the kubelet resolves it; None when the reference is optional and
    missing. Raises EnvSourceMissing with the kubelet's message, or EnvSourceUnsupported."""
    if "fieldRef" in value_from:
        path = value_from["fieldRef"].get("fieldPath", "")
        value = sources.field(path) if path else None
        if value is None:
            raise EnvSourceUnsupported(f"fieldRef {path!r}")
        return value
    if "secretKeyRef" in value_from:
        ref, kind, label = value_from["secretKeyRef"], "secret", "Secret"
        data = _secret_data(sources.secret(ref.get("name", "")))
    elif "configMapKeyRef" in value_from:
        ref, kind, label = value_from["configMapKeyRef"], "configmap", "ConfigMap"
        data = _config_map_data(sources.config_map(ref.get("name", "")))
    else:
        raise EnvSourceUnsupported(", ".join(sorted(value_from)) or "an empty valueFrom")
    name, key = ref.get("name", ""), ref.get("key", "")
    if data is None or key not in data:
        if ref.get("optional"):
            return None
        if data is None:
            raise EnvSourceMissing(f'{kind} "{name}" not found')
        raise EnvSourceMissing(f"couldn't find key {key} in {label} {namespace}/{name}")
    # Environment values are bytes on Linux: undecodable bytes pass through unchanged.
    return data[key].decode("utf-8", "surrogateescape")


def projected_files(volume: JSON, *, sources: Sources) -> dict[str, tuple[bytes, int]]:
    """Relative path -> (content, mode) for a pod's `projected` volume source."""
    default_mode = int(volume.get("defaultMode", DEFAULT_MODE))
    files: dict[str, tuple[bytes, int]] = {}
    for entry in volume.get("sources") or []:
        if "serviceAccountToken" in entry:
            spec = entry["serviceAccountToken"]
            expiry = int(spec.get("expirationSeconds", DEFAULT_TOKEN_SECONDS))
            files[spec["path"]] = (sources.token(spec.get("audience"), expiry).encode(), default_mode)
        elif "configMap" in entry:
            data = _config_map_data(sources.config_map(entry["configMap"].get("name", "")))
            files.update(_keyed("configmap", entry["configMap"], data, default_mode))
        elif "secret" in entry:
            data = _secret_data(sources.secret(entry["secret"].get("name", "")))
            files.update(_keyed("secret", entry["secret"], data, default_mode))
        elif "downwardAPI" in entry:
            for item in entry["downwardAPI"].get("items") or []:
                path = (item.get("fieldRef") or {}).get("fieldPath", "")
                value = sources.field(path)
                if value is None:
                    raise VolumeNotReady(f"downwardAPI {item['path']}: fieldPath {path!r} is not simulated")
                files[item["path"]] = (value.encode(), int(item.get("mode", default_mode)))
    return files


def downward_field(pod: JSON, path: str) -> str | None:
    """The downward API's fieldRef paths that make sense without a real node (labels and annotations as files)."""
    meta = pod["metadata"]
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.split(".")[1]) or {}
        return "\n".join(f"{key}={json.dumps(value)}" for key, value in sorted(values.items()))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
    }
    return simple.get(path)


def write_files(directory: pathlib.Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Write the volume's files below `directory` (which the container then sees read-only)."""
    for relative, (content, mode) in files.items():
        parts = pathlib.PurePosixPath(relative).parts
        if not parts or ".." in parts or relative.startswith("/"):
            raise VolumeNotReady(f"projected path {relative!r} must be relative without '..'")
        path = directory.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
