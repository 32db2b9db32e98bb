"""The simulator's API access: the few calls it makes on raw JSON, and list+watch reflectors."""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast
from urllib.parse import urlsplit

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

LOG = logging.getLogger("nodesim")
JSON = dict[str, Any]
WATCH_TIMEOUT_SECONDS = 240
MERGE_PATCH = "application/merge-patch+json"


class Kube:
    """The few API calls the simulator makes, on raw JSON (no model (de)serialisation).

    Responses are read with `_preload_content=False`: it is cheaper on a small box,
    and it sidesteps the client's known failure to deserialise a Binding response.
    """

    def __init__(self, kubeconfig: pathlib.Path) -> None:
        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api_client)

    @property
    def server(self) -> tuple[str, int]:
        """Host and port of the API server, for a container's KUBERNETES_SERVICE_HOST/PORT."""
        url = urlsplit(self.api_client.configuration.host)
        return url.hostname or "127.0.0.1", url.port or 443

    @staticmethod
    def _json(resp: Any) -> Any:
        try:
            data = resp.read()
        finally:
            resp.release_conn()
        return json.loads(data) if data else None

    def list(self, func: Callable[..., Any]) -> tuple[list[JSON], str]:
        body = self._json(func(_preload_content=False, _request_timeout=60))
        return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])

    def watch(self, func: Callable[..., Any], resource_version: str) -> Iterator[JSON]:
        resp = func(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            _preload_content=False,
            _request_timeout=(10, WATCH_TIMEOUT_SECONDS + 30),
        )
        try:
            for line in iter_resp_lines(resp):
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.close()
            resp.release_conn()

    def get_node(self, name: str) -> JSON | None:
        try:
            return dict(self._json(self.core.read_node(name, _preload_content=False)))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_node(self, body: JSON) -> None:
        self._json(self.core.create_node(cast(Any, body), _preload_content=False))

    def patch_node_status(self, name: str, status: JSON) -> None:
        self._json(
            self.core.patch_node_status(name, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False)
        )

    def bind(self, namespace: str, name: str, node: str) -> None:
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=node),
        )
        # Known client issue: the Binding response may fail to deserialise although the
        # binding was created. Raw reads avoid it; keep the guard regardless.
        with contextlib.suppress(ValueError):
            self._json(self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False))

    def patch_pod_status(self, namespace: str, name: str, status: JSON) -> JSON:
        return dict(
            self._json(
                self.core.patch_namespaced_pod_status(
                    name, namespace, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False
                )
            )
        )

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        body = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid))
        self._json(
            self.core.delete_namespaced_pod(name, namespace, body=body, grace_period_seconds=0, _preload_content=False)
        )

    def patch_pvc_status(self, namespace: str, name: str, status: JSON) -> JSON:
        return dict(
            self._json(
                self.core.patch_namespaced_persistent_volume_claim_status(
                    name, namespace, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False
                )
            )
        )

    def read_optional(self, kind: str, namespace: str, name: str) -> JSON | None:
        """A ConfigMap or Secret (`kind`: configmap|secret) of a pod's namespace, None when it does not exist."""
        read = self.core.read_namespaced_config_map if kind == "configmap" else self.core.read_namespaced_secret
        try:
            return dict(self._json(read(name, namespace, _preload_content=False)))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_token(self, pod: JSON, *, audience: str | None, seconds: int) -> str:
        """A token of the pod's ServiceAccount bound to the pod, from the TokenRequest API (as the kubelet asks)."""
        meta = pod["metadata"]
        spec: JSON = {
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
        }
        if audience:
            spec["audiences"] = [audience]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        account = pod["spec"].get("serviceAccountName") or "default"
        response = self._json(
            self.core.create_namespaced_service_account_token(
                account, meta["namespace"], cast(Any, body), _preload_content=False
            )
        )
        return str(response["status"]["token"])


class Reflector(threading.Thread):
    """List + watch one resource type into callbacks; re-lists on 410 Gone or any error."""

    def __init__(
        self,
        name: str,
        kube: Kube,
        func: Callable[..., Any],
        *,
        on_replace: Callable[[list[JSON]], None],
        on_event: Callable[[str, JSON], None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"reflector-{name}", daemon=True)
        self.kube = kube
        self.func = func
        self.on_replace = on_replace
        self.on_event = on_event
        self.stop = stop
        self.synced = threading.Event()
        self.what = name

    def run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                items, rv = self.kube.list(self.func)
                self.on_replace(items)
                self.synced.set()
                backoff = 0.5
                while not self.stop.is_set():
                    rv = self._watch_once(rv)
            except _Relist:
                continue
            except Exception as exc:
                if self.stop.is_set():
                    return
                LOG.warning(
                    "%s watch failed (%s: %s); re-listing in %.1fs", self.what, type(exc).__name__, exc, backoff
                )
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _watch_once(self, rv: str) -> str:
        for event in self.kube.watch(self.func, rv):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                # 410 Gone: our resourceVersion is too old; anything else: start over too.
                raise _Relist()
            new_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if new_rv:
                rv = str(new_rv)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.on_event(str(kind), obj)
            if self.stop.is_set():
                break
        return rv


class _Relist(Exception):
    pass
