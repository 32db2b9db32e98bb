"""The reconciles without a cluster: the real Slot and SlotImageCheck reconcilers, cache and cap; a fake writer,
recorder and clock.

The cache is fed through its public stores as the watches would feed it; the fake writer keeps the
objects it was asked to write and answers as the API server would (a conditional status patch that
is stale answers 409, a Job name taken answers with the existing Job). Tests play the Job
controller and the kubelet by feeding Jobs' conditions and pods' container states into the cache.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import itertools
import ssl
from collections.abc import Mapping
from typing import Any

from slot_operator import metrics as metrics_module
from slot_operator.config import Config
from slot_operator.kube.api import ApiClient, ApiError
from slot_operator.kube.cache import Cache, Listener
from slot_operator.kube.informer import Key, Object
from slot_operator.kube.writer import JobRejected
from slot_operator.logic import jobs, names, timestamps
from slot_operator.logic.status import diff
from slot_operator.runtime.capacity import Capacity, ProbeKey, is_check_probe, namespace_of
from slot_operator.runtime.checks import CheckCollaborators, CheckReconciler
from slot_operator.runtime.context import Collaborators
from slot_operator.runtime.reconciler import Result, SlotReconciler

NS = "agents"
T0 = datetime.datetime(2026, 11, 1, 7, 0, 0, tzinfo=datetime.UTC)
_versions = itertools.count(100)


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386), as the API server applies it."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merge(dict(result[key]), value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@dataclasses.dataclass
class Call:
    verb: str
    what: str
    body: Any = None


class FakeWriter:
    """The API as the reconcile writes to it: status patches, Jobs, the FailedCreate read."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.calls: list[Call] = []
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.reject: ApiError | None = None  # the next Job create answers this
        self.failed_create: str | None = None  # the Job controller's FailedCreate message, if any
        self.unseen_slots: list[dict[str, Any]] = []  # Slots the API server has and the cache has not seen yet

    def writes(self, verb: str | None = None) -> list[Call]:
        return [call for call in self.calls if verb is None or call.verb == verb]

    async def patch_slot_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]:
        self.calls.append(Call("patch-status", f"{namespace}/{name}", dict(patch)))
        return self._patch_status(self.harness.slots, name, patch, resource_version)

    async def patch_check_status(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, resource_version: str
    ) -> dict[str, Any]:
        self.calls.append(Call("patch-check-status", f"{namespace}/{name}", dict(patch)))
        return self._patch_status(self.harness.checks, name, patch, resource_version)

    @staticmethod
    def _patch_status(
        objects: dict[str, dict[str, Any]], name: str, patch: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """The API server's status merge patch on `objects[name]`, conditional on its resourceVersion (409 if not)."""
        current = objects[name]
        if current["metadata"]["resourceVersion"] != resource_version:
            raise ApiError(409, "the object has been modified", reason="Conflict")
        updated = copy.deepcopy(current)
        updated["status"] = _merge(current.get("status") or {}, patch)
        updated["metadata"]["resourceVersion"] = str(next(_versions))
        objects[name] = updated
        return copy.deepcopy(updated)

    async def delete_check(self, namespace: str, name: str, *, uid: str) -> None:
        self.calls.append(Call("delete-check", f"{namespace}/{name}", uid))

    async def list_slots(self, namespace: str) -> list[dict[str, Any]]:
        self.calls.append(Call("list-slots", namespace))
        listed = [*self.harness.cache.slots_in(namespace), *self.unseen_slots]
        return copy.deepcopy([slot for slot in listed if slot["metadata"]["namespace"] == namespace])

    async def get_check(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(Call("get-check", f"{namespace}/{name}"))
        return copy.deepcopy(self.harness.checks.get(name))

    async def create_job(self, manifest: Mapping[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        meta = manifest["metadata"]
        self.calls.append(Call("create-job", f"{meta['namespace']}/{meta['name']}", manifest))
        if self.reject is not None:
            error, self.reject = self.reject, None
            outcome = jobs.rejection(status=error.status, message=error.message, causes=error.causes)
            raise JobRejected(outcome, error)
        key = (meta["namespace"], meta["name"])
        if key in self.jobs:
            return False, copy.deepcopy(self.jobs[key])
        job = copy.deepcopy(dict(manifest))
        job["metadata"].update(
            uid=f"job-uid-{meta['name']}",
            resourceVersion=str(next(_versions)),
            creationTimestamp=timestamps.format_time(self.harness.now),
        )
        job["status"] = {}
        self.jobs[key] = job
        return True, copy.deepcopy(job)

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(Call("get-job", f"{namespace}/{name}"))
        job = self.jobs.get((namespace, name))
        return copy.deepcopy(job) if job is not None else None

    async def delete_job(self, namespace: str, name: str, *, uid: str) -> None:
        self.calls.append(Call("delete-job", f"{namespace}/{name}", uid))
        job = self.jobs.get((namespace, name))
        if job is not None and job["metadata"]["uid"] == uid:
            del self.jobs[(namespace, name)]

    async def pod_creation_failure(self, namespace: str, job_name: str) -> str | None:
        self.calls.append(Call("list-events", f"{namespace}/{job_name}"))
        return self.failed_create


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def emit(
        self, slot: Mapping[str, Any], *, kind: str, reason: str, message: str, now: datetime.datetime
    ) -> None:
        self.events.append((kind, reason, message))


class Harness:
    """One namespace, a reconciler over it, and the objects in it."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config(namespaces=(NS,), audit_image="ghcr.io/woved/slot-operator:1")
        self.now = T0
        self.slots: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.woken: list[ProbeKey] = []
        self.impostors: list[tuple[Key, str]] = []
        self.api = ApiClient(server="https://127.0.0.1:1", ssl_context=ssl.create_default_context())
        self.cache = Cache(
            self.api,
            namespaces=(NS,),
            listener=Listener(
                slot_changed=lambda key, old, new: None,
                probe_changed=lambda key: None,
                claim_changed=lambda key: None,
                claim_users_changed=lambda key: None,
                impostor=lambda slot, job: self.impostors.append((slot, job["metadata"]["name"])),
                check_changed=lambda key: None,
            ),
        )
        self.writer = FakeWriter(self)
        self.recorder = FakeRecorder()
        self.capacity: Capacity[ProbeKey] = Capacity(
            self.config.max_concurrent_probes,
            group_limit=self.config.probes_per_namespace,
            group=namespace_of,
            background=is_check_probe,
        )
        self.metrics = metrics_module.Metrics()
        # What the Slot and the SlotImageCheck reconcilers share, as in the operator: one cache, one cap, one clock.
        shared: dict[str, Any] = {
            "cache": self.cache,
            "writer": self.writer,
            "capacity": self.capacity,
            "config": self.config,
            "clock": lambda: self.now,
            "wake": self.woken.append,
        }
        self.reconciler = SlotReconciler(Collaborators(**shared, recorder=self.recorder, metrics=self.metrics))
        self.checker = CheckReconciler(CheckCollaborators(**shared))

    async def close(self) -> None:
        await self.api.close()

    def later(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)

    # The Slot
    def put_slot(self, name: str, *, generation: int = 1, annotations: Mapping[str, str] | None = None,
                 labels: Mapping[str, str] | None = None, **spec: Any) -> dict[str, Any]:  # fmt: skip
        """Create or change the Slot (a spec change: a new generation), as a user's apply would."""
        old = self.slots.get(name)
        body = {"agent": "codex", "claimName": f"{name}-home", "image": "img:1", **spec}
        meta: dict[str, Any] = {
            "name": name,
            "namespace": NS,
            "uid": old["metadata"]["uid"] if old else f"slot-uid-{name}",
            "generation": generation,
            "resourceVersion": str(next(_versions)),
        }
        if annotations:
            meta["annotations"] = dict(annotations)
        if labels:
            meta["labels"] = dict(labels)
        slot = {"metadata": meta, "spec": body, "status": (old or {}).get("status") or {}}
        self.slots[name] = slot
        self.cache.store("slots", NS).apply("MODIFIED" if old else "ADDED", copy.deepcopy(slot))
        return slot

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.slots[name].get("status") or {})

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        return next((dict(c) for c in self.status(name).get("conditions") or () if c["type"] == kind), {})

    async def reconcile(self, name: str) -> Result:
        return await self.reconciler.reconcile((NS, name))

    def delete_slot(self, name: str) -> None:
        self.cache.store("slots", NS).apply("DELETED", self.slots.pop(name))

    # SlotImageChecks
    def put_check(self, name: str, **spec: Any) -> dict[str, Any]:
        """Create a check (its spec is immutable), as `kubectl slot check` would, with the CRD's defaults."""
        meta = {"name": name, "namespace": NS, "uid": f"check-uid-{name}", "generation": 1,
                "resourceVersion": str(next(_versions)),
                "creationTimestamp": timestamps.format_time(self.now)}  # fmt: skip
        check = {"metadata": meta, "spec": {"ttlAfterFinished": "24h", **spec}, "status": {"observedGeneration": 0}}
        self.checks[name] = check
        self.cache.store("checks", NS).apply("ADDED", copy.deepcopy(check))
        return check

    def check_status(self, name: str) -> dict[str, Any]:
        return dict(self.checks[name].get("status") or {})

    def results(self, name: str) -> dict[str, dict[str, Any]]:
        return {str(result["slot"]): dict(result) for result in self.check_status(name).get("results") or ()}

    async def reconcile_check(self, name: str) -> Result:
        return await self.checker.reconcile((NS, name))

    # The claim and who uses it
    def put_claim(self, name: str, *, modes: tuple[str, ...] = ("ReadWriteOnce",)) -> None:
        claim = {
            "metadata": {"name": name, "namespace": NS, "uid": f"claim-uid-{name}", "resourceVersion": "1"},
            "spec": {"accessModes": list(modes)},
            "status": {"phase": "Bound"},
        }
        self.cache.store("claims", NS).apply("ADDED", claim)

    def put_worker(self, name: str, claim: str, *, labels: Mapping[str, str] | None = None,
                   owner_job: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"pod-uid-{name}", "resourceVersion": "1"}
        if labels:
            meta["labels"] = dict(labels)
        if owner_job is not None:
            meta["ownerReferences"] = [_owner("batch/v1", "Job", owner_job)]
        pod = {
            "metadata": meta,
            "spec": {"nodeName": "node-a", "volumes": [{"name": "h", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": "Running"},
        }
        self.cache.store("claim-users", NS).apply("ADDED", pod)

    # Jobs and pods, as the Job controller and the kubelet report them
    def job(self, name: str) -> dict[str, Any]:
        return self.writer.jobs[(NS, name)]

    def job_names(self) -> list[str]:
        return sorted(name for (_, name) in self.writer.jobs)

    def watch_job(self, name: str, *, conditions: list[dict[str, Any]] | None = None) -> None:
        """The Job as the watch delivers it (after the Job controller wrote its conditions)."""
        job = self.job(name)
        if conditions is not None:
            job["status"] = {"conditions": conditions}
            job["metadata"]["resourceVersion"] = str(next(_versions))
        self.cache.store("jobs", NS).apply("MODIFIED", copy.deepcopy(job))

    def job_gone(self, name: str) -> None:
        job = self.writer.jobs.pop((NS, name))
        self.cache.store("jobs", NS).apply("DELETED", job)

    def pod(self, job_name: str, *, probe: Mapping[str, Any], audit: Mapping[str, Any] | None = None,
            conditions: list[dict[str, Any]] | None = None, index: int = 0) -> None:  # fmt: skip
        """The Job's pod with its containers' states (the probe, and the audit beside it)."""
        states = {names.PROBE_CONTAINER: probe, **({names.AUDIT_CONTAINER: audit} if audit is not None else {})}
        self._job_pod(job_name, states, conditions=conditions, index=index)

    def migration_pod(self, job_name: str, state: Mapping[str, Any]) -> None:
        self._job_pod(job_name, {names.MIGRATE_CONTAINER: state})

    def _job_pod(self, job_name: str, states: Mapping[str, Mapping[str, Any]], *,
                 conditions: list[dict[str, Any]] | None = None, index: int = 0) -> None:  # fmt: skip
        """A pod of the Job (by identity: its controller reference), its containers in `states` (name -> state)."""
        job = self.job(job_name)
        pod = {
            "metadata": {
                "name": f"{job_name}-{index}",
                "namespace": NS,
                "uid": f"pod-uid-{job_name}-{index}",
                "resourceVersion": str(next(_versions)),
                "creationTimestamp": timestamps.format_time(self.now),
                "labels": dict(job["metadata"]["labels"]),
                "ownerReferences": [_owner("batch/v1", "Job", job)],
            },
            "status": {
                "phase": "Running",
                "conditions": conditions or [],
                "containerStatuses": [{"name": name, "state": dict(state)} for name, state in states.items()],
            },
        }
        self.cache.store("probe-pods", NS).apply("ADDED", pod)

    def forge_job(self, name: str, *, namespace: str = NS, owner: Mapping[str, Any] | None = None,
                  labels: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
        meta: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "uid": f"forged-{name}",
            "resourceVersion": str(next(_versions)),
            "creationTimestamp": timestamps.format_time(self.now),
            "labels": dict(labels or {}),
        }
        if owner is not None:
            meta["ownerReferences"] = [_owner(names.API_VERSION, names.SLOT_KIND, owner)]
        job = {"metadata": meta, "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}, "status": {}}
        self.cache.store("jobs", namespace).apply("ADDED", job)
        return job


def _owner(api_version: str, kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": api_version, "kind": kind, "name": meta["name"], "uid": meta["uid"], "controller": True}


def exited(code: int, message: str = "", *, at: datetime.datetime = T0) -> dict[str, Any]:
    reason = "Completed" if code == 0 else "Error"
    return {
        "terminated": {"exitCode": code, "reason": reason, "message": message, "finishedAt": timestamps.format_time(at)}
    }


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}}


def condition(kind: str, reason: str = "", message: str = "", *, at: datetime.datetime = T0) -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": timestamps.format_time(at)}  # fmt: skip


def audit_report(*entries: list[Any], agent: str = "codex") -> dict[str, Any]:
    """The audit container's termination, reporting `entries` ([path, kind, uid, gid, mode, mtime, credential])."""
    import json

    from slot_operator.logic import ownership

    report = ownership.build_report(agent=agent, runs_as="10001:10001", entries=list(entries), problems=(),
                                    truncated=False)  # fmt: skip
    return {"terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(report)}}


# The audit beside a probe: everything the image's uid's, or everything the old uid-1000 image's.
AUDIT_OK = audit_report(["~", "d", 10001, 10001, "0750", 1, 0], ["~/.codex", "d", 10001, 10001, "0700", 1, 0])
AUDIT_OLD = audit_report(["~", "d", 1000, 1000, "0750", 1, 0], ["~/.codex", "d", 1000, 1000, "0700", 1, 0])


def diffed(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    return diff(old, new)


Object_ = Object
