"""Every write the operator makes, and the few reads it makes outside the watch caches.

Objects travel as the plain JSON dicts the API server sends (camelCase), so the pure logic
never sees client models. Reads outside the caches happen only where correctness needs a
fresh answer: after a conflicting status write (409), for a Job that already existed when
created, and for a probe whose deadline passed without a word from the watch.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

from slot_operator.kube.api import ApiClient, ApiError
from slot_operator.logic import jobs, names, timestamps
from slot_operator.logic.outcome import NoVerdict
from slot_operator.logic.verdict import safe_message

logger = logging.getLogger(__name__)

SLOTS = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{{namespace}}/slots/{{name}}"
CHECKS = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{{namespace}}/{names.CHECK_PLURAL}/{{name}}"
JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
EVENTS = "/api/v1/namespaces/{namespace}/events"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
MERGE_PATCH = "application/merge-patch+json"
# Longer Event messages are cut by the events API anyway; a cut here keeps the aggregation key stable.
EVENT_MESSAGE_LIMIT = 1024


class JobRejected(RuntimeError):
    """The API server refused a Job: `outcome` says why, naming the Slot field; `error` is the answer itself."""

    def __init__(self, outcome: NoVerdict, error: ApiError) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome
        self.error = error


class KubeWriter:
    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.events = EventRecorder(api)

    # Slots
    async def get_slot(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _optional(self.api.request("get", SLOTS.format(namespace=namespace, name=name), resource="slots"))

    async def patch_slot_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]:
        """Merge-patch status, only if the Slot is still at `resource_version` (else ApiError 409)."""
        return await self._patch_status(SLOTS.format(namespace=namespace, name=name), "slots", patch, resource_version)

    # SlotImageChecks
    async def get_check(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _optional(
            self.api.request("get", CHECKS.format(namespace=namespace, name=name), resource=names.CHECK_PLURAL)
        )

    async def patch_check_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]:
        """Merge-patch a check's status, only if it is still at `resource_version` (else ApiError 409)."""
        path = CHECKS.format(namespace=namespace, name=name)
        return await self._patch_status(path, names.CHECK_PLURAL, patch, resource_version)

    async def _patch_status(
        self, path: str, plural: str, patch: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        return await self.api.request(
            "patch",
            path + "/status",
            resource=f"{plural}/status",
            body={"metadata": {"resourceVersion": resource_version}, "status": dict(patch)},
            content_type=MERGE_PATCH,
        )

    async def delete_check(self, namespace: str, name: str, *, uid: str) -> None:
        """Delete the finished check `namespace/name` whose uid is `uid` (its Jobs go with it: background
        propagation through their ownerReference). Absent, or another check of that name, is fine."""
        await self._delete(CHECKS.format(namespace=namespace, name=name), names.CHECK_PLURAL, uid=uid)

    # Probe Jobs
    async def create_job(self, manifest: Mapping[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """Create a probe Job: (True, the Job), or (False, the existing Job of that name: the same probe)."""
        meta = manifest["metadata"]
        try:
            created = await self.api.request(
                "create", JOBS.format(namespace=meta["namespace"]), resource="jobs", body=manifest
            )
        except ApiError as exc:
            if exc.status == 409:
                return False, await self.get_job(meta["namespace"], meta["name"])
            if 400 <= exc.status < 500 and exc.status not in (401, 429):  # 403: quota, admission
                outcome = jobs.rejection(status=exc.status, message=exc.message, causes=exc.causes)
                raise JobRejected(outcome, exc) from None
            raise
        return True, created

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _optional(self.api.request("get", f"{JOBS.format(namespace=namespace)}/{name}", resource="jobs"))

    async def delete_job(self, namespace: str, name: str, *, uid: str) -> None:
        """Delete the Job `namespace/name` whose uid is `uid`, and (in the background) its pods.

        The uid is a precondition: a Job of that name that is not the one the operator decided about
        (deleted and created again meanwhile) is left alone. Absent is fine.
        """
        await self._delete(f"{JOBS.format(namespace=namespace)}/{name}", "jobs", uid=uid)

    async def _delete(self, path: str, resource: str, *, uid: str) -> None:
        """Delete exactly the object at `path` whose uid is `uid` (a precondition), its dependents in the background."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
            "preconditions": {"uid": uid},
        }
        try:
            await _optional(self.api.request("delete", path, resource=resource, body=body))
        except ApiError as exc:
            if exc.status != 409:  # the precondition failed: another object of that name, not ours to delete
                raise
            logger.info("%s is no longer %s: not deleted", path, uid)

    async def list_slots(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's Slots as the API server has them now (a consistent read, by pages of 500)."""
        path = SLOTS.format(namespace=namespace, name="").rstrip("/")
        items: list[dict[str, Any]] = []
        params = {"limit": "500"}
        while True:
            page = await self.api.request("list", path, resource="slots", params=params)
            items.extend(page.get("items") or ())
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {"limit": "500", "continue": str(token)}

    async def pod_creation_failure(self, namespace: str, job_name: str) -> str | None:
        """Why the Job controller could not create a Job's pod (its latest FailedCreate Event), if it said so.

        A Pod Security level is enforced on pods, not on the Jobs that make them: a migration Job the
        namespace's level rejects is created, and only this Event says why its pod never appears.
        """
        answer = await self.api.request(
            "list",
            EVENTS.format(namespace=namespace),
            resource="events",
            params={"fieldSelector": f"involvedObject.kind=Job,involvedObject.name={job_name},reason=FailedCreate"},
        )
        events = sorted(
            answer.get("items") or (),
            key=lambda event: str(event.get("lastTimestamp") or event.get("eventTime") or ""),
        )
        return str(events[-1].get("message") or "") if events else None

    # Leases (leader election)
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await _optional(
            self.api.request("get", f"{LEASES.format(namespace=namespace)}/{name}", resource="leases")
        )

    async def write_lease(self, lease: Mapping[str, Any], *, within: float) -> bool:
        """Create (no resourceVersion) or replace (conditional on it) a Lease; False when another writer won."""
        meta = lease["metadata"]
        path = LEASES.format(namespace=meta["namespace"])
        try:
            if meta.get("resourceVersion"):
                await self.api.request("update", f"{path}/{meta['name']}", resource="leases", body=lease, within=within)
            else:
                await self.api.request("create", path, resource="leases", body=lease, within=within)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True


class EventRecorder:
    """core/v1 Events on Slots, aggregated the way the kubelet's are.

    A repeat of the same (Slot, type, reason, message) bumps `count` and `lastTimestamp` on
    one Event instead of posting another, so a probe failing every retry leaves one Event
    "x12 over 3h". The Event's name is derived from those fields, so a restarted operator
    finds (409) and continues the same Event. Best effort: failures are logged, never raised.
    """

    REMEMBERED = 4096  # aggregated Events tracked in memory (least recently used dropped)

    def __init__(self, api: ApiClient) -> None:
        self._api = api
        self._counts: collections.OrderedDict[str, int] = collections.OrderedDict()  # event path -> count

    async def emit(
        self, slot: Mapping[str, Any], *, kind: str, reason: str, message: str, now: datetime.datetime
    ) -> None:
        meta = slot.get("metadata") or {}
        namespace, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
        message = safe_message(message, limit=EVENT_MESSAGE_LIMIT)  # the probe's words: redacted as in status
        digest = hashlib.sha256(f"{uid}/{kind}/{reason}/{message}".encode()).hexdigest()[:16]
        event_name = f"{name[:200]}.{digest}"
        path = f"{EVENTS.format(namespace=namespace)}/{event_name}"
        stamp = timestamps.format_time(now)
        try:
            count = self._counts.get(path)
            if count is not None and await self._bump(path, count + 1, stamp):
                return
            event = build_event(slot, name=event_name, kind=kind, reason=reason, message=message, stamp=stamp)
            try:
                await self._api.request("create", EVENTS.format(namespace=namespace), resource="events", body=event)
                self._remember(path, 1)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                existing = await _optional(self._api.request("get", path, resource="events"))
                await self._bump(path, int((existing or {}).get("count") or 1) + 1, stamp)
        except (ApiError, OSError) as exc:
            logger.warning("could not post event %s on slot %s/%s: %s", reason, namespace, name, exc)

    async def _bump(self, path: str, count: int, stamp: str) -> bool:
        """Set the Event's count; False when it is gone (expired by the API server's --event-ttl)."""
        answer = await _optional(
            self._api.request(
                "patch",
                path,
                resource="events",
                body={"count": count, "lastTimestamp": stamp},
                content_type=MERGE_PATCH,
            )
        )
        if answer is None:
            self._counts.pop(path, None)
            return False
        self._remember(path, count)
        return True

    def _remember(self, path: str, count: int) -> None:
        self._counts[path] = count
        self._counts.move_to_end(path)
        while len(self._counts) > self.REMEMBERED:
            self._counts.popitem(last=False)


def build_event(
    slot: Mapping[str, Any], *, name: str, kind: str, reason: str, message: str, stamp: str
) -> dict[str, Any]:
    meta = slot.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": f"{names.GROUP}/{names.VERSION}",
            "kind": "Slot",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message,
        "source": {"component": names.MANAGED_BY},
        "reportingComponent": f"{names.GROUP}/{names.MANAGED_BY}",
        "reportingInstance": names.MANAGED_BY,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def _optional(call: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return dict(await call)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
