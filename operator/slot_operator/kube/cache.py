"""What the operator knows of the cluster: Slots, its Jobs (probes, ownership migrations) and their pods, claims
and the pods using them.

Fed by one informer per kind (per watched namespace, or cluster-wide), trimmed at ingest to
the fields the decisions read, and indexed so every lookup a reconcile makes is a dict access:
the Jobs of a Slot, the pods of a Job, the Slots of a claim, the running pods that mount a claim.

Pods using claims (for ReadWriteOnce placement and ReadWriteOncePod in-use checks) come from a
watch of every non-terminal pod in the watched namespaces, kept as a record of a few fields
(name, node, phase, claim names): a few hundred bytes a pod, where listing the namespace's pods
on every probe start cost a full decode of every pod each time. Volume attachments would only
cover attachable (CSI) volumes and say nothing of ReadWriteOncePod use, so they are not used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from slot_operator.kube import api as api_module
from slot_operator.kube.informer import Informer, Key, Object, key_of
from slot_operator.logic import jobs

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
_KEEP_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp")


def _meta(obj: Mapping[str, Any], *extra: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {field: meta[field] for field in (*_KEEP_META, *extra) if field in meta}


def trim_slot(obj: Mapping[str, Any]) -> Object:
    """The whole Slot but the server's field bookkeeping and kubectl's copy of the last applied spec."""
    meta = _meta(obj, "labels")
    annotations = {
        k: v
        for k, v in ((obj.get("metadata") or {}).get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": dict(obj.get("spec") or {}), "status": dict(obj.get("status") or {})}


def trim_job(obj: Mapping[str, Any]) -> Object:
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    status = obj.get("status") or {}
    return {
        "metadata": _meta(obj, "labels", "annotations"),
        "spec": {"template": {"spec": {"containers": [{"image": containers[0].get("image")}]}}},
        "status": {k: status[k] for k in ("conditions", "completionTime", "startTime") if k in status},
    }


def trim_probe_pod(obj: Mapping[str, Any]) -> Object:
    """A probe's or a migration's pod: its containers' states (the audit is an init container)."""
    status = obj.get("status") or {}
    return {
        "metadata": _meta(obj, "labels", "annotations"),
        "status": {
            "phase": status.get("phase"),
            "conditions": status.get("conditions") or [],
            **{
                key: [{"name": c.get("name"), "state": c.get("state") or {}} for c in status.get(key) or ()]
                for key in ("initContainerStatuses", "containerStatuses")
            },
        },
    }


def is_migration(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(jobs.LABEL_COMPONENT) == jobs.COMPONENT_MIGRATION


def trim_claim(obj: Mapping[str, Any]) -> Object:
    return {
        "metadata": _meta(obj),
        "spec": {"accessModes": list((obj.get("spec") or {}).get("accessModes") or ())},
        "status": {"phase": (obj.get("status") or {}).get("phase")},
    }


def trim_claim_user(obj: Mapping[str, Any]) -> Object:
    """A pod as placement sees it: node, phase, the claims it mounts, whether it is one of our probes."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    labels = meta.get("labels") or {}
    record_meta: dict[str, Any] = {k: meta[k] for k in ("name", "namespace", "resourceVersion") if k in meta}
    if jobs.LABEL_MANAGED_BY in labels:
        record_meta["labels"] = {jobs.LABEL_MANAGED_BY: labels[jobs.LABEL_MANAGED_BY]}
    volumes = [
        {"persistentVolumeClaim": {"claimName": str(volume["persistentVolumeClaim"].get("claimName"))}}
        for volume in spec.get("volumes") or ()
        if (volume.get("persistentVolumeClaim") or {}).get("claimName")
    ]
    return {
        "metadata": record_meta,
        "spec": {"nodeName": spec.get("nodeName"), "volumes": volumes},
        "status": {"phase": (obj.get("status") or {}).get("phase")},
    }


def claims_of(pod: Mapping[str, Any]) -> list[str]:
    return [
        str(volume["persistentVolumeClaim"]["claimName"])
        for volume in (pod.get("spec") or {}).get("volumes") or ()
        if volume.get("persistentVolumeClaim")
    ]


class CacheError(RuntimeError):
    """The caches could not be filled: the message names each watch and its last error."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Listener:
    """What the cache tells the controller; each callback is cheap and only enqueues."""

    slot_changed: Callable[[Key, Object | None, Object | None], None]
    probe_changed: Callable[[Key], None]  # a probe Job or pod of this Slot changed
    claim_changed: Callable[[Key], None]  # (namespace, claim name)
    claim_users_changed: Callable[[Key], None]  # a pod mounting this claim came, went or moved


def _path(group_version: str, plural: str, namespace: str | None) -> str:
    root = f"/api/{group_version}" if group_version == "v1" else f"/apis/{group_version}"
    return f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"


class Cache:
    def __init__(self, api: api_module.ApiClient, *, namespaces: tuple[str, ...], listener: Listener) -> None:
        self._listener = listener
        self._jobs_by_slot: dict[str, dict[Key, Object]] = {}  # slot uid -> Jobs
        self._pods_by_job: dict[Key, dict[Key, Object]] = {}  # (namespace, Job name) -> pods
        self._slots_by_claim: dict[Key, set[Key]] = {}
        self._users_by_claim: dict[Key, dict[Key, Object]] = {}
        scopes: tuple[str | None, ...] = namespaces or (None,)
        self._slots = {
            ns: self._informer(api, "slots", f"{jobs.GROUP}/{jobs.VERSION}", ns, trim_slot, self._on_slot)
            for ns in scopes
        }
        self._jobs = {
            ns: self._informer(
                api, "jobs", "batch/v1", ns, trim_job, self._on_job, {"labelSelector": jobs.OWN_SELECTOR}
            )
            for ns in scopes
        }
        self._probe_pods = {
            ns: self._informer(
                api, "pods", "v1", ns, trim_probe_pod, self._on_probe_pod, {"labelSelector": jobs.OWN_SELECTOR}
            )
            for ns in scopes
        }
        self._claims = {
            ns: self._informer(api, "persistentvolumeclaims", "v1", ns, trim_claim, self._on_claim) for ns in scopes
        }
        self._users = {
            ns: self._informer(
                api,
                "pods",
                "v1",
                ns,
                trim_claim_user,
                self._on_claim_user,
                {"fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"},
            )
            for ns in scopes
        }
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def _informer(
        api: api_module.ApiClient,
        resource: str,
        group_version: str,
        namespace: str | None,
        transform: Callable[[Mapping[str, Any]], Object],
        on_change: Callable[[Object | None, Object | None], None],
        selectors: Mapping[str, str] | None = None,
    ) -> Informer:
        return Informer(
            api,
            resource=resource,
            path=_path(group_version, resource, namespace),
            selectors=selectors,
            transform=transform,
            on_change=on_change,
        )

    @property
    def informers(self) -> list[Informer]:
        return [
            informer
            for group in (self._slots, self._jobs, self._probe_pods, self._claims, self._users)
            for informer in group.values()
        ]

    # Lifecycle
    async def start(self, *, within: float) -> None:
        """Start every watch; return once each has listed (decisions need the whole picture)."""
        self._tasks = [asyncio.create_task(i.run(), name=f"informer {i!r}") for i in self.informers]
        synced: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*(i.synced.wait() for i in self.informers)))
        watched: list[asyncio.Future[Any]] = [synced, *self._tasks]
        await asyncio.wait(watched, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        if not synced.done():
            synced.cancel()
            waiting = [f"{i!r}: {i.last_error or 'no answer'}" for i in self.informers if not i.synced.is_set()]
            dead = [task for task in self._tasks if task.done()]
            await self.stop()
            if dead:
                dead[0].result()  # raise what killed it
            raise CacheError(f"could not list within {within:.0f}s: {'; '.join(waiting)}")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stale(self, *, older_than: float) -> list[str]:
        """Informers that died or heard nothing from the server for `older_than` seconds (for liveness)."""
        now = time.monotonic()
        dead = [task.get_name() for task in self._tasks if task.done()]
        silent = [repr(i) for i in self.informers if now - i.last_contact > older_than]
        return dead + silent

    # Reads: dict lookups only
    def _scope(self, group: Mapping[str | None, Informer], namespace: str) -> Informer | None:
        return group.get(namespace) or group.get(None)

    def slot(self, key: Key) -> Object | None:
        informer = self._scope(self._slots, key[0])
        return informer.store.get(key) if informer else None

    def slot_keys(self) -> list[Key]:
        return [key for informer in self._slots.values() for key in informer.store.items]

    def slot_jobs(self, slot_uid: str) -> list[Object]:
        """The Slot's probe Jobs."""
        return [job for job in (self._jobs_by_slot.get(slot_uid) or {}).values() if not is_migration(job)]

    def slot_migration_jobs(self, slot_uid: str) -> list[Object]:
        """The Slot's ownership migration Jobs."""
        return [job for job in (self._jobs_by_slot.get(slot_uid) or {}).values() if is_migration(job)]

    def job_pods(self, namespace: str, job_name: str) -> list[Object]:
        return list((self._pods_by_job.get((namespace, job_name)) or {}).values())

    def claim(self, namespace: str, name: str) -> Object | None:
        informer = self._scope(self._claims, namespace)
        return informer.store.get((namespace, name)) if informer else None

    def claim_users(self, namespace: str, claim: str) -> list[Object]:
        return list((self._users_by_claim.get((namespace, claim)) or {}).values())

    def slots_of_claim(self, namespace: str, claim: str) -> list[Key]:
        return sorted(self._slots_by_claim.get((namespace, claim)) or ())

    def probe_jobs(self) -> list[Object]:
        return [
            job for informer in self._jobs.values() for job in informer.store.items.values() if not is_migration(job)
        ]

    # Writes the operator made: cache the API's answer, so the watch's echo of it is no news
    def wrote_slot(self, obj: Mapping[str, Any]) -> Object:
        informer = self._scope(self._slots, key_of(obj)[0])
        changed = informer.store.apply_write(obj) if informer else None
        if changed is None:
            return trim_slot(obj)
        old, new = changed
        self._index_slot(old, new)
        return new

    def wrote_job(self, obj: Mapping[str, Any]) -> None:
        informer = self._scope(self._jobs, key_of(obj)[0])
        changed = informer.store.apply_write(obj) if informer else None
        if changed is not None:
            self._index_job(*changed)

    # Index maintenance, then tell the controller
    def _index_slot(self, old: Object | None, new: Object | None) -> None:
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            key = key_of(obj)
            claim = (obj.get("spec") or {}).get("claimName")
            if not claim:
                continue
            members = self._slots_by_claim.setdefault((key[0], str(claim)), set())
            if add:
                members.add(key)
            else:
                members.discard(key)
                if not members:
                    del self._slots_by_claim[(key[0], str(claim))]

    def _on_slot(self, old: Object | None, new: Object | None) -> None:
        self._index_slot(old, new)
        self._listener.slot_changed(key_of(new or old or {}), old, new)

    def _index_job(self, old: Object | None, new: Object | None) -> None:
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            uid = ((obj.get("metadata") or {}).get("labels") or {}).get(jobs.LABEL_SLOT_UID)
            if not uid:
                continue
            group = self._jobs_by_slot.setdefault(str(uid), {})
            if add:
                group[key_of(obj)] = obj
            else:
                group.pop(key_of(obj), None)
                if not group:
                    del self._jobs_by_slot[str(uid)]

    def _on_job(self, old: Object | None, new: Object | None) -> None:
        self._index_job(old, new)
        self._notify_probe(new or old or {})

    def _on_probe_pod(self, old: Object | None, new: Object | None) -> None:
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            job = ((obj.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL)
            if not job:
                continue
            index = (key_of(obj)[0], str(job))
            group = self._pods_by_job.setdefault(index, {})
            if add:
                group[key_of(obj)] = obj
            else:
                group.pop(key_of(obj), None)
                if not group:
                    del self._pods_by_job[index]
        self._notify_probe(new or old or {})

    def _notify_probe(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        slot = (meta.get("annotations") or {}).get(jobs.ANNOTATION_SLOT)  # Jobs and their pods carry it
        if slot:
            self._listener.probe_changed((str(meta.get("namespace")), str(slot)))

    def _on_claim(self, old: Object | None, new: Object | None) -> None:
        self._listener.claim_changed(key_of(new or old or {}))

    def _on_claim_user(self, old: Object | None, new: Object | None) -> None:
        touched: set[Key] = set()
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            namespace, name = key_of(obj)
            for claim in claims_of(obj):
                index = (namespace, claim)
                group = self._users_by_claim.setdefault(index, {})
                if add:
                    group[(namespace, name)] = obj
                else:
                    group.pop((namespace, name), None)
                    if not group:
                        del self._users_by_claim[index]
                touched.add(index)
        for index in touched:
            self._listener.claim_users_changed(index)
