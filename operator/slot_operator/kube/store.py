"""The operator's one storage layer: every API call it makes goes through `KubeStore`.

Objects travel as the plain JSON dicts the API server sends (camelCase), the
same shape kopf hands to handlers, so the pure logic never sees client models.
Reads are consistent reads (no resourceVersion), so decisions see fresh state.
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any

import aiohttp
import pydantic
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

from slot_operator.logic import jobs, timestamps
from slot_operator.logic.outcome import NoVerdict

logger = logging.getLogger(__name__)

SLOT_PLURAL = "slots"


class JobRejected(RuntimeError):
    """The API server (or the client's model) refused a probe Job: `outcome` says why, naming the Slot field."""

    def __init__(self, outcome: NoVerdict) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str, causes: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.causes = causes  # (field, message) pairs from a Status's details, when the server gives them


async def _json(call: Awaitable[aiohttp.ClientResponse]) -> dict[str, Any]:
    response = await call
    body = await response.read()
    if response.status >= 400:
        causes: tuple[tuple[str, str], ...] = ()
        try:
            failure = json.loads(body)
            message = str(failure.get("message") or body[:300])
            causes = tuple(
                (str(cause.get("field")), str(cause.get("message") or cause.get("reason") or ""))
                for cause in (failure.get("details") or {}).get("causes") or ()
                if cause.get("field")
            )
        except (ValueError, AttributeError):
            message = body[:300].decode(errors="replace")
        raise ApiError(int(response.status), message, causes)
    return dict(json.loads(body)) if body else {}


async def _optional(call: Awaitable[aiohttp.ClientResponse]) -> dict[str, Any] | None:
    try:
        return await _json(call)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


async def new_api_client() -> kclient.ApiClient:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
    configuration = kclient.Configuration()
    try:
        kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kconfig.ConfigException:
        await kconfig.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return kclient.ApiClient(configuration)


class KubeStore:
    def __init__(self, api: kclient.ApiClient) -> None:
        self._api = api
        self._core = kclient.CoreV1Api(api)
        self._batch = kclient.BatchV1Api(api)
        self._custom = kclient.CustomObjectsApi(api)
        self._coordination = kclient.CoordinationV1Api(api)

    async def close(self) -> None:
        await self._api.close()  # type: ignore[no-untyped-call]

    # Slots
    async def get_slot(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _optional(
            self._custom.get_namespaced_custom_object_without_preload_content(
                jobs.GROUP, jobs.VERSION, namespace, SLOT_PLURAL, name
            )
        )

    async def patch_slot_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch status; with `resource_version`, only if the Slot is still that version (else 409)."""
        body: dict[str, Any] = {"status": dict(patch)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return await _json(
            self._custom.patch_namespaced_custom_object_status_without_preload_content(
                jobs.GROUP,
                jobs.VERSION,
                namespace,
                SLOT_PLURAL,
                name,
                body,
                _content_type="application/merge-patch+json",
            )
        )

    # Probe Jobs and their pods
    async def list_slot_jobs(self, namespace: str, slot_uid: str) -> list[dict[str, Any]]:
        selector = f"{jobs.PROBE_SELECTOR},{jobs.LABEL_SLOT_UID}={slot_uid}"
        result = await _json(
            self._batch.list_namespaced_job_without_preload_content(namespace, label_selector=selector)
        )
        return list(result.get("items") or [])

    async def list_probe_jobs(self, namespaces: tuple[str, ...]) -> list[dict[str, Any]]:
        """Every probe Job in the watched namespaces (all when empty)."""
        if not namespaces:
            result = await _json(
                self._batch.list_job_for_all_namespaces_without_preload_content(label_selector=jobs.PROBE_SELECTOR)
            )
            return list(result.get("items") or [])
        items: list[dict[str, Any]] = []
        for namespace in namespaces:
            result = await _json(
                self._batch.list_namespaced_job_without_preload_content(namespace, label_selector=jobs.PROBE_SELECTOR)
            )
            items.extend(result.get("items") or [])
        return items

    async def create_job(self, manifest: Mapping[str, Any]) -> bool:
        """Create a probe Job; False when one of that name already exists (it is the same probe)."""
        try:
            body = kclient.V1Job.model_validate(manifest)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
            raise JobRejected(
                jobs.rejection(status=422, message=error["msg"], causes=[(field, error["msg"])])
            ) from None
        try:
            await _json(
                self._batch.create_namespaced_job_without_preload_content(manifest["metadata"]["namespace"], body)
            )
        except ApiError as exc:
            if exc.status == 409:
                return False
            if 400 <= exc.status < 500 and exc.status not in (401, 429):
                raise JobRejected(jobs.rejection(status=exc.status, message=exc.message, causes=exc.causes)) from None
            raise
        return True

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a probe Job and (in the background) its pods; absent is fine."""
        await _optional(
            self._batch.delete_namespaced_job_without_preload_content(name, namespace, propagation_policy="Background")
        )

    async def list_job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        result = await _json(
            self._core.list_namespaced_pod_without_preload_content(
                namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
            )
        )
        return list(result.get("items") or [])

    # Claims (read-only: the operator never writes to a slot volume or its claim)
    async def get_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _optional(
            self._core.read_namespaced_persistent_volume_claim_without_preload_content(name, namespace)
        )

    async def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        result = await _json(self._core.list_namespaced_pod_without_preload_content(namespace))
        return list(result.get("items") or [])

    # Events
    async def emit_event(
        self, slot: Mapping[str, Any], *, kind: str, reason: str, message: str, now: datetime.datetime
    ) -> None:
        """A core/v1 Event on the Slot; failures are logged, never raised (events are best effort)."""
        meta = slot.get("metadata") or {}
        stamp = timestamps.format_time(now)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": f"{jobs.GROUP}/{jobs.VERSION}",
                "kind": "Slot",
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": jobs.MANAGED_BY},
            "reportingComponent": f"{jobs.GROUP}/{jobs.MANAGED_BY}",
            "reportingInstance": jobs.MANAGED_BY,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await _json(
                self._core.create_namespaced_event_without_preload_content(
                    str(meta.get("namespace")), kclient.CoreV1Event.model_validate(event)
                )
            )
        except (ApiError, OSError) as exc:
            logger.warning(
                "could not post event %s on slot %s/%s: %s", reason, meta.get("namespace"), meta.get("name"), exc
            )

    # Leases (leader election)
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _optional(self._coordination.read_namespaced_lease_without_preload_content(name, namespace))

    async def write_lease(self, lease: Mapping[str, Any]) -> bool:
        """Create (no resourceVersion) or replace (conditional on it) a Lease; False when another writer won."""
        meta = lease["metadata"]
        body = kclient.V1Lease.model_validate(lease)
        try:
            if meta.get("resourceVersion"):
                await _json(
                    self._coordination.replace_namespaced_lease_without_preload_content(
                        meta["name"], meta["namespace"], body
                    )
                )
            else:
                await _json(self._coordination.create_namespaced_lease_without_preload_content(meta["namespace"], body))
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True
