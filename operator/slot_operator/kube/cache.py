"""What the operator knows of the cluster: Slots, SlotImageChecks, its Jobs (probes, ownership migrations, the
checks' probes) and their pods, claims and the pods using them.

Fed by one informer per kind (per watched namespace, or cluster-wide), trimmed at ingest to
the fields the decisions read, and indexed so every lookup a reconcile makes is a dict access:
the Jobs of a Slot, the pods of a Job, the Slots of a claim, the running pods that mount a claim.

Pods using claims (for ReadWriteOnce placement and ReadWriteOncePod in-use checks) come from a
watch of every non-terminal pod in the watched namespaces, kept as a record of a few fields
(name, node, phase, claim names): a few hundred bytes a pod, where listing the namespace's pods
on every probe start cost a full decode of every pod each time. The pods with the operator's
managed-by label are left to the watch of its own pods (which keeps the same fields): the two
label selectors split the pods between them, so each pod event is decoded once. Volume attachments would only
cover attachable (CSI) volumes and say nothing of ReadWriteOncePod use, so they are not used.

Ownership is by identity, never by label (docs/security.md): a Job is a Slot's only when it is in the
Slot's namespace and its controller ownerReference names the Slot's uid (a check's probe: the
SlotImageCheck's uid); a pod is a Job's only when
its controller ownerReference names that Job's uid. The operator's labels only narrow the watches.
A Job that carries them and names a Slot it does not belong to is an impostor: ignored, and reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from slot_operator.kube import api as api_module
from slot_operator.kube.informer import Informer, Key, Object, Store, key_of
from slot_operator.logic import names
from slot_operator.logic.identity import check_owner_uid, controller_of, job_owner_uid, slot_owner_uid

_KEEP_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp")
G = TypeVar("G", bound=Hashable)


def _meta(obj: Mapping[str, Any], *extra: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {field: meta[field] for field in (*_KEEP_META, *extra) if field in meta}


def _with_controller(meta: dict[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the controller ownerReference (identity), and of it only what identity needs."""
    ref = controller_of(obj)
    if ref is not None:
        meta["ownerReferences"] = [
            {key: ref[key] for key in ("apiVersion", "kind", "name", "uid", "controller") if key in ref}
        ]
    return meta


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


def trim_check(obj: Mapping[str, Any]) -> Object:
    """A SlotImageCheck as its reconcile reads it: its identity, spec and status."""
    return {"metadata": _meta(obj), "spec": dict(obj.get("spec") or {}), "status": dict(obj.get("status") or {})}


def trim_job(obj: Mapping[str, Any]) -> Object:
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    status = obj.get("status") or {}
    return {
        "metadata": _with_controller(_meta(obj, "labels", "annotations"), obj),
        "spec": {"template": {"spec": {"containers": [{"image": containers[0].get("image")}]}}},
        "status": {k: status[k] for k in ("conditions", "completionTime", "startTime") if k in status},
    }


def trim_probe_pod(obj: Mapping[str, Any]) -> Object:
    """A probe's or a migration's pod: its containers' states (the audit is the probe's second container),
    and, as for every pod using a claim, its node and the claims it mounts."""
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    return {
        "metadata": _with_controller(_meta(obj, "labels"), obj),
        "spec": {"nodeName": spec.get("nodeName"), "volumes": _claim_volumes(spec)},
        "status": {
            "phase": status.get("phase"),
            "conditions": status.get("conditions") or [],
            "containerStatuses": [
                {"name": c.get("name"), "state": c.get("state") or {}} for c in status.get("containerStatuses") or ()
            ],
        },
    }


def is_migration(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(names.LABEL_COMPONENT) == names.COMPONENT_MIGRATION


def trim_claim(obj: Mapping[str, Any]) -> Object:
    return {
        "metadata": _meta(obj),
        "spec": {"accessModes": list((obj.get("spec") or {}).get("accessModes") or ())},
        "status": {"phase": (obj.get("status") or {}).get("phase")},
    }


def trim_claim_user(obj: Mapping[str, Any]) -> Object:
    """A pod as placement sees it: node, phase, the claims it mounts, and its controller (whose pod it is)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    record_meta = _with_controller(
        {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}, obj
    )
    return {
        "metadata": record_meta,
        "spec": {"nodeName": spec.get("nodeName"), "volumes": _claim_volumes(spec)},
        "status": {"phase": (obj.get("status") or {}).get("phase")},
    }


def _claim_volumes(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"persistentVolumeClaim": {"claimName": str(volume["persistentVolumeClaim"].get("claimName"))}}
        for volume in spec.get("volumes") or ()
        if (volume.get("persistentVolumeClaim") or {}).get("claimName")
    ]


def _as_user(pod: Object | None) -> tuple[Any, ...] | None:
    """What placement reads of a pod using claims (a probe pod's container states are not its business)."""
    if pod is None:
        return None
    return (pod["spec"].get("nodeName"), pod["status"].get("phase"), tuple(claims_of(pod)))


def _in_use(pod: Object | None) -> Object | None:
    """The pod, while it may hold its claims (not Succeeded or Failed: the claim-users watch's field selector)."""
    return pod if pod is not None and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") else None


def claims_of(pod: Mapping[str, Any]) -> list[str]:
    return [
        str(volume["persistentVolumeClaim"]["claimName"])
        for volume in (pod.get("spec") or {}).get("volumes") or ()
        if volume.get("persistentVolumeClaim")
    ]


class _Groups(Generic[G]):
    """Objects filed under the groups `groups_of` names for each (a Slot's Jobs, a Job's pods, a claim's users)."""

    def __init__(self, groups_of: Callable[[Object], Iterable[G]]) -> None:
        self._groups_of = groups_of
        self._members: dict[G, dict[Key, Object]] = {}

    def move(self, old: Object | None, new: Object | None) -> set[G]:
        """File `new` where `old` was (either may be None); the groups that changed."""
        touched: set[G] = set()
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            for group in self._groups_of(obj):
                touched.add(group)
                members = self._members.setdefault(group, {})
                if add:
                    members[key_of(obj)] = obj
                else:
                    members.pop(key_of(obj), None)
                    if not members:
                        del self._members[group]
        return touched

    def get(self, group: G) -> list[Object]:
        return list((self._members.get(group) or {}).values())

    def __len__(self) -> int:
        return len(self._members)


class CacheError(RuntimeError):
    """The caches could not be filled: the message names each watch and its last error."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Listener:
    """What the cache tells the controller; each callback is cheap and only enqueues."""

    slot_changed: Callable[[Key, Object | None, Object | None], None]
    probe_changed: Callable[[Key], None]  # a probe Job or pod of this Slot changed
    claim_changed: Callable[[Key], None]  # (namespace, claim name)
    claim_users_changed: Callable[[Key], None]  # a pod mounting this claim came, went or moved
    check_changed: Callable[[Key], None]  # a SlotImageCheck, or one of its Jobs or their pods, changed
    # A Job with the operator's labels that names this Slot (by label or owner) but is not its own:
    # (the Slot it imitates, the impostor). Called for every event of such a Job.
    impostor: Callable[[Key, Object], None]


def _path(group_version: str, plural: str, namespace: str | None) -> str:
    root = f"/api/{group_version}" if group_version == "v1" else f"/apis/{group_version}"
    return f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"


class Cache:
    def __init__(self, api: api_module.ApiClient, *, namespaces: tuple[str, ...], listener: Listener) -> None:
        self._listener = listener
        self._jobs_by_slot: _Groups[Key] = _Groups(_job_group)  # (namespace, Slot uid) -> its Jobs
        self._jobs_by_check: _Groups[Key] = _Groups(_check_job_group)  # (namespace, check uid) -> its Jobs
        self._checks_by_uid: dict[str, Key] = {}  # SlotImageCheck uid -> (namespace, name)
        self._jobs_by_uid: dict[Key, Object] = {}  # (namespace, Job uid) -> Job
        self._pods_by_job: _Groups[Key] = _Groups(_pod_group)  # (namespace, Job uid) -> its pods
        self._slots_by_claim: _Groups[Key] = _Groups(_slot_claim_group)  # (namespace, claim) -> Slots
        self._slots_by_uid: dict[str, Key] = {}  # Slot uid -> (namespace, name), across namespaces
        self._users_by_claim: _Groups[Key] = _Groups(_claim_user_groups)  # (namespace, claim) -> running pods
        scopes: tuple[str | None, ...] = namespaces or (None,)
        self._slots = {
            ns: self._informer(api, "slots", f"{names.GROUP}/{names.VERSION}", ns, trim_slot, self._on_slot)
            for ns in scopes
        }
        self._checks = {
            ns: self._informer(
                api, names.CHECK_PLURAL, f"{names.GROUP}/{names.VERSION}", ns, trim_check, self._on_check
            )
            for ns in scopes
        }
        self._jobs = {
            ns: self._informer(
                api, "jobs", "batch/v1", ns, trim_job, self._on_job, {"labelSelector": names.OWN_SELECTOR}
            )
            for ns in scopes
        }
        self._probe_pods = {
            ns: self._informer(
                api, "pods", "v1", ns, trim_probe_pod, self._on_probe_pod, {"labelSelector": names.OWN_PODS_SELECTOR}
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
                {
                    "fieldSelector": "status.phase!=Succeeded,status.phase!=Failed",
                    "labelSelector": names.OTHER_PODS_SELECTOR,
                },
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

    def store(self, watch: str, namespace: str) -> Store:
        """The store one watch fills: `slots`, `checks`, `jobs`, `probe-pods`, `claims` or `claim-users` (of
        `namespace`).

        Its `replace` (a listing) and `apply` (a watch event) are what the informer calls: a test feeds the
        cache through them as a watch would.
        """
        groups = {
            "slots": self._slots,
            "checks": self._checks,
            "jobs": self._jobs,
            "probe-pods": self._probe_pods,
            "claims": self._claims,
            "claim-users": self._users,
        }
        informer = self._scope(groups[watch], namespace)
        if informer is None:
            raise KeyError(f"the cache does not watch {watch} in namespace {namespace}")
        return informer.store

    @property
    def informers(self) -> list[Informer]:
        return [
            informer
            for group in (self._slots, self._checks, self._jobs, self._probe_pods, self._claims, self._users)
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

    def _get(self, group: Mapping[str | None, Informer], key: Key) -> Object | None:
        informer = self._scope(group, key[0])
        return informer.store.get(key) if informer else None

    @staticmethod
    def _objects(group: Mapping[str | None, Informer]) -> list[Object]:
        return [obj for informer in group.values() for obj in informer.store.items.values()]

    @staticmethod
    def _keys(group: Mapping[str | None, Informer]) -> list[Key]:
        return [key for informer in group.values() for key in informer.store.items]

    def slot(self, key: Key) -> Object | None:
        return self._get(self._slots, key)

    def slots(self) -> list[Object]:
        """Every Slot in the cache (the metrics read them at scrape time)."""
        return self._objects(self._slots)

    def slot_keys(self) -> list[Key]:
        return self._keys(self._slots)

    def check(self, key: Key) -> Object | None:
        return self._get(self._checks, key)

    def checks(self) -> list[Object]:
        """Every SlotImageCheck in the cache (the metrics read them at scrape time)."""
        return self._objects(self._checks)

    def check_keys(self) -> list[Key]:
        return self._keys(self._checks)

    def slots_in(self, namespace: str) -> list[Object]:
        """The Slots of one namespace (a check's selection)."""
        informer = self._scope(self._slots, namespace)
        return [slot for key, slot in informer.store.items.items() if key[0] == namespace] if informer else []

    def check_jobs(self, namespace: str, check_uid: str) -> list[Object]:
        """The check's probe Jobs: in its namespace, controlled by its uid."""
        return self._jobs_by_check.get((namespace, check_uid))

    def owned_check_jobs(self) -> list[tuple[Key, Object]]:
        """Every check probe Job with the SlotImageCheck that owns it (by identity)."""
        return [(check, job) for job in self._objects(self._jobs) if (check := self._owner_check(job)) is not None]

    def slot_jobs(self, namespace: str, slot_uid: str) -> list[Object]:
        """The Slot's probe Jobs: in its namespace, controlled by its uid."""
        return [job for job in self._jobs_by_slot.get((namespace, slot_uid)) if not is_migration(job)]

    def slot_migration_jobs(self, namespace: str, slot_uid: str) -> list[Object]:
        """The Slot's ownership migration Jobs: in its namespace, controlled by its uid."""
        return [job for job in self._jobs_by_slot.get((namespace, slot_uid)) if is_migration(job)]

    def job_pods(self, namespace: str, job_uid: str) -> list[Object]:
        """The Job's pods: in its namespace, controlled by its uid."""
        return self._pods_by_job.get((namespace, job_uid))

    def claim(self, namespace: str, name: str) -> Object | None:
        informer = self._scope(self._claims, namespace)
        return informer.store.get((namespace, name)) if informer else None

    def claim_users(self, namespace: str, claim: str) -> list[Object]:
        return self._users_by_claim.get((namespace, claim))

    def slots_of_claim(self, namespace: str, claim: str) -> list[Key]:
        return sorted(key_of(slot) for slot in self._slots_by_claim.get((namespace, claim)))

    def owned_probe_jobs(self) -> list[tuple[Key, Object]]:
        """Every probe Job with the Slot that owns it (by identity): what runs when the operator starts."""
        return [
            (slot, job)
            for job in self._objects(self._jobs)
            if not is_migration(job) and (slot := self._owner_slot(job)) is not None
        ]

    @staticmethod
    def _owner(job: Mapping[str, Any], uid: str | None, owners: Mapping[str, Key]) -> Key | None:
        """The owner (in `owners`, by uid) that `job`'s controller reference names, if it is of the Job's namespace."""
        owner = owners.get(uid) if uid else None
        return owner if owner is not None and owner[0] == key_of(job)[0] else None

    def _owner_slot(self, job: Mapping[str, Any]) -> Key | None:
        """The Slot that controls `job`: a Slot of its namespace whose uid its controller reference names."""
        return self._owner(job, slot_owner_uid(job), self._slots_by_uid)

    def _owner_check(self, job: Mapping[str, Any]) -> Key | None:
        """The SlotImageCheck that controls `job`: a check of its namespace whose uid its controller reference names."""
        return self._owner(job, check_owner_uid(job), self._checks_by_uid)

    # Writes the operator made: cache the API's answer, so the watch's echo of it is no news
    def wrote_slot(self, obj: Mapping[str, Any]) -> Object:
        return self._wrote(self._slots, obj, trim_slot, self._index_slot)

    def wrote_check(self, obj: Mapping[str, Any]) -> Object:
        return self._wrote(self._checks, obj, trim_check, self._index_check)

    def _wrote(
        self,
        group: Mapping[str | None, Informer],
        obj: Mapping[str, Any],
        trim: Callable[[Mapping[str, Any]], Object],
        index: Callable[[Object | None, Object | None], None],
    ) -> Object:
        informer = self._scope(group, key_of(obj)[0])
        changed = informer.store.apply_write(obj) if informer else None
        if changed is None:
            return trim(obj)
        index(*changed)
        return changed[1]

    def wrote_job(self, obj: Mapping[str, Any]) -> None:
        informer = self._scope(self._jobs, key_of(obj)[0])
        changed = informer.store.apply_write(obj) if informer else None
        if changed is not None:
            self._index_job(*changed)

    # Index maintenance, then tell the controller
    def _index_slot(self, old: Object | None, new: Object | None) -> None:
        self._slots_by_claim.move(old, new)
        if old is not None:
            self._slots_by_uid.pop(str(old["metadata"].get("uid")), None)
        if new is not None:
            self._slots_by_uid[str(new["metadata"].get("uid"))] = key_of(new)

    def _on_slot(self, old: Object | None, new: Object | None) -> None:
        self._index_slot(old, new)
        self._listener.slot_changed(key_of(new or old or {}), old, new)

    def _index_check(self, old: Object | None, new: Object | None) -> None:
        if old is not None:
            self._checks_by_uid.pop(str(old["metadata"].get("uid")), None)
        if new is not None:
            self._checks_by_uid[str(new["metadata"].get("uid"))] = key_of(new)

    def _on_check(self, old: Object | None, new: Object | None) -> None:
        self._index_check(old, new)
        self._listener.check_changed(key_of(new or old or {}))

    def _index_job(self, old: Object | None, new: Object | None) -> None:
        self._jobs_by_slot.move(old, new)
        self._jobs_by_check.move(old, new)
        if old is not None:
            self._jobs_by_uid.pop((key_of(old)[0], str(old["metadata"].get("uid"))), None)
        if new is not None:
            self._jobs_by_uid[(key_of(new)[0], str(new["metadata"].get("uid")))] = new

    def _on_job(self, old: Object | None, new: Object | None) -> None:
        self._index_job(old, new)
        job = new or old or {}
        slot = self._owner_slot(job)
        check = self._owner_check(job) if slot is None else None
        if slot is not None:
            self._listener.probe_changed(slot)
        elif check is not None:
            self._listener.check_changed(check)
        elif new is not None:
            self._check_impostor(new)

    def _check_impostor(self, job: Object) -> None:
        """A Job with the operator's labels that no Slot of its namespace controls: whom does it imitate?"""
        claimed = {slot_owner_uid(job), ((job.get("metadata") or {}).get("labels") or {}).get(names.LABEL_SLOT_UID)}
        for uid in sorted(str(uid) for uid in claimed if uid):
            slot = self._slots_by_uid.get(uid)
            if slot is not None:
                self._listener.impostor(slot, job)
                return

    def _on_probe_pod(self, old: Object | None, new: Object | None) -> None:
        self._pods_by_job.move(old, new)
        used, using = _in_use(old), _in_use(new)  # the claim-users watch leaves the operator's pods to this one
        if _as_user(used) != _as_user(using):
            self._on_claim_user(used, using)
        pod = new or old or {}
        job = self._jobs_by_uid.get((key_of(pod)[0], job_owner_uid(pod) or ""))
        if job is None:
            return
        slot = self._owner_slot(job)
        check = self._owner_check(job) if slot is None else None
        if slot is not None:
            self._listener.probe_changed(slot)
        elif check is not None:
            self._listener.check_changed(check)

    def _on_claim(self, old: Object | None, new: Object | None) -> None:
        self._listener.claim_changed(key_of(new or old or {}))

    def _on_claim_user(self, old: Object | None, new: Object | None) -> None:
        for claim in self._users_by_claim.move(old, new):
            self._listener.claim_users_changed(claim)


def _job_group(job: Object) -> list[Key]:
    uid = slot_owner_uid(job)
    return [(key_of(job)[0], uid)] if uid else []


def _check_job_group(job: Object) -> list[Key]:
    uid = check_owner_uid(job)
    return [(key_of(job)[0], uid)] if uid else []


def _pod_group(pod: Object) -> list[Key]:
    uid = job_owner_uid(pod)
    return [(key_of(pod)[0], uid)] if uid else []


def _slot_claim_group(slot: Object) -> list[Key]:
    claim = (slot.get("spec") or {}).get("claimName")
    return [(key_of(slot)[0], str(claim))] if claim else []


def _claim_user_groups(pod: Object) -> list[Key]:
    return [(key_of(pod)[0], claim) for claim in claims_of(pod)]
