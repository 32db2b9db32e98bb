"""Every API call `kubectl slot` makes, with the user's own kubeconfig and credentials."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from slot_operator.logic import names

# Each call gives up after this long (seconds); a watch ends earlier by its own timeout.
REQUEST_TIMEOUT = 30
# No answer at all: refused, reset, DNS, TLS (urllib3 wraps some of them in its own errors).
_UNREACHABLE = (OSError, urllib3.exceptions.HTTPError)


class ClientError(RuntimeError):
    """A kubeconfig or API problem, said in one line for the terminal; `status` is the HTTP status, if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def _reason(exc: BaseException) -> str:
    """The innermost cause: urllib3's retry error wraps the refused connection in two layers."""
    reason = getattr(exc, "reason", None)
    return _reason(reason) if isinstance(reason, BaseException) else str(exc)


class SlotClient:
    def __init__(self, *, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        try:
            self._api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, persist_config=False
            )
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as exc:
            raise ClientError(f"kubeconfig: {exc}") from None
        chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
        # Like kubectl: --namespace, else the context's namespace, else "default".
        self.namespace = namespace or str((chosen or {}).get("context", {}).get("namespace") or "default")
        self._custom = client.CustomObjectsApi(self._api)
        self._core = client.CoreV1Api(self._api)

    def close(self) -> None:
        self._api.close()

    def _call(self, function: Callable[..., object], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One API call returning an object (a dict: custom objects come back as JSON)."""
        try:
            result = function(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            raise ClientError(f"{exc.status} {_message(exc)}", status=exc.status) from None
        except _UNREACHABLE as exc:
            raise ClientError(f"cannot reach the API server: {_reason(exc)}") from None
        if not isinstance(result, dict):
            raise ClientError(f"unexpected answer from the API server: {type(result).__name__}")
        return result

    def _list(self, plural: str, namespace: str | None, *, field_selector: str | None) -> dict[str, Any]:
        if namespace is None:
            return self._call(self._custom.list_cluster_custom_object, names.GROUP, names.VERSION, plural)
        return self._call(self._custom.list_namespaced_custom_object, names.GROUP, names.VERSION, namespace, plural,
                          field_selector=field_selector)  # fmt: skip

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call(self._custom.get_namespaced_custom_object, names.GROUP, names.VERSION, namespace,
                              plural, name)  # fmt: skip
        except ClientError as exc:
            if exc.status == 404:
                return None
            raise

    def list_slots(self, namespace: str | None, *, field_selector: str | None = None) -> dict[str, Any]:
        """A SlotList (items and metadata.resourceVersion); every namespace when `namespace` is None."""
        return self._list(names.SLOT_PLURAL, namespace, field_selector=field_selector)

    def get_slot(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(names.SLOT_PLURAL, namespace, name)

    def create_check(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a SlotImageCheck (docs/design.md §2.5); ClientError with status 409 when its name is taken."""
        return self._call(self._custom.create_namespaced_custom_object, names.GROUP, names.VERSION, namespace,
                          names.CHECK_PLURAL, dict(body))  # fmt: skip

    def get_check(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(names.CHECK_PLURAL, namespace, name)

    def list_checks(self, namespace: str, *, field_selector: str | None = None) -> dict[str, Any]:
        """A SlotImageCheckList (items and metadata.resourceVersion)."""
        return self._list(names.CHECK_PLURAL, namespace, field_selector=field_selector)

    def request_probe(self, namespace: str, name: str, token: str) -> dict[str, Any]:
        """Set the probe-request annotation (docs/design.md: the operator echoes it in status)."""
        patch = {"metadata": {"annotations": {names.PROBE_REQUEST_ANNOTATION: token}}}
        return self._call(
            self._custom.patch_namespaced_custom_object,
            names.GROUP,
            names.VERSION,
            namespace,
            names.SLOT_PLURAL,
            name,
            patch,
            _content_type="application/merge-patch+json",
        )

    def watch_slots(
        self, namespace: str, *, resource_version: str, timeout: int, field_selector: str | None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, Slot) from `resource_version` on, for at most `timeout` seconds.

        Ends early on 410 Gone (the version is too old): the caller lists again.
        """
        return self._watch(names.SLOT_PLURAL, namespace, resource_version=resource_version, timeout=timeout,
                           field_selector=field_selector)  # fmt: skip

    def watch_checks(
        self, namespace: str, *, resource_version: str, timeout: int, field_selector: str | None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, SlotImageCheck), like watch_slots."""
        return self._watch(names.CHECK_PLURAL, namespace, resource_version=resource_version, timeout=timeout,
                           field_selector=field_selector)  # fmt: skip

    def _watch(
        self, plural: str, namespace: str, *, resource_version: str, timeout: int, field_selector: str | None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in stream.stream(  # type: ignore[no-untyped-call]
                self._custom.list_namespaced_custom_object,
                names.GROUP,
                names.VERSION,
                namespace,
                plural,
                resource_version=resource_version,
                timeout_seconds=max(timeout, 1),
                field_selector=field_selector,
            ):
                yield str(event["type"]), dict(event["raw_object"])
        except ApiException as exc:
            if exc.status != 410:
                raise ClientError(f"{exc.status} {_message(exc)}", status=exc.status) from None
        except _UNREACHABLE as exc:
            raise ClientError(f"cannot reach the API server: {_reason(exc)}") from None
        finally:
            stream.stop()  # type: ignore[no-untyped-call]

    def slot_events(self, slot: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Events on this Slot (this object: a deleted namesake's are left out), oldest first."""
        meta = slot.get("metadata") or {}
        try:
            listing = self._core.list_namespaced_event(
                str(meta.get("namespace")),
                field_selector=f"involvedObject.kind=Slot,involvedObject.name={meta.get('name')}",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            raise ClientError(f"{exc.status} {_message(exc)}") from None
        except _UNREACHABLE as exc:
            raise ClientError(f"cannot reach the API server: {_reason(exc)}") from None
        items = [event.model_dump(by_alias=True, mode="json", exclude_none=True) for event in listing.items]
        own = [e for e in items if (e.get("involvedObject") or {}).get("uid") in (None, meta.get("uid"))]
        return sorted(own, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
