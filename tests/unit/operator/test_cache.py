"""What the watch caches keep (kube/cache.py): trimmed objects, and indexes every reconcile reads from.

The indexes are fed through the informers' stores exactly as a watch feeds them; nothing is sent
to an API server here (the client is built, never called).
"""

from __future__ import annotations

import copy
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slot_operator.kube.api import ApiClient
from slot_operator.kube.cache import Cache, Listener, trim_claim_user, trim_job, trim_probe_pod, trim_slot
from slot_operator.kube.informer import Key
from slot_operator.logic import names

NS = "agents"
OTHER_NS = "tenant-b"


def meta(name: str, rv: str = "1", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": rv, **extra}


def slot(name: str, claim: str, rv: str = "1") -> dict[str, Any]:
    return {"metadata": meta(name, rv, generation=1), "spec": {"claimName": claim, "agent": "codex"}, "status": {}}


def owner(kind: str, name: str, api_version: str) -> list[dict[str, Any]]:
    return [{"apiVersion": api_version, "kind": kind, "name": name, "uid": f"uid-{name}", "controller": True}]


def probe_job(name: str, slot_name: str, *, namespace: str = NS, owned: bool = True) -> dict[str, Any]:
    job_meta = meta(
        name,
        labels={names.LABEL_SLOT_UID: f"uid-{slot_name}", names.LABEL_MANAGED_BY: names.MANAGED_BY},
        annotations={names.ANNOTATION_SLOT: slot_name},
        managedFields=[{"manager": "kube-controller-manager"}],
    )
    job_meta["namespace"] = namespace
    if owned:
        job_meta["ownerReferences"] = owner("Slot", slot_name, "woved.dev/v1alpha1")
    return {
        "metadata": job_meta,
        "spec": {"template": {"spec": {"containers": [{"image": "img:1", "env": [{"name": "X"}] * 50}]}}},
        "status": {"active": 1, "conditions": [], "uncountedTerminatedPods": {}},
    }


def probe_pod(name: str, job: str, slot_name: str, rv: str = "1") -> dict[str, Any]:
    return {
        "metadata": meta(
            name,
            rv,
            labels={"batch.kubernetes.io/job-name": job},
            annotations={names.ANNOTATION_SLOT: slot_name},
            ownerReferences=owner("Job", job, "batch/v1"),
        ),
        "spec": {"containers": [{"name": "probe"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "probe", "state": {"running": {}}, "image": "x"}],
        },
    }


def worker(name: str, claim: str, node: str = "n1", rv: str = "1") -> dict[str, Any]:
    return {
        "metadata": meta(name, rv, labels={"app": "worker"}),
        "spec": {
            "nodeName": node,
            "containers": [{"name": "w", "image": "w"}],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": claim}}, {"name": "t", "emptyDir": {}}],
        },
        "status": {"phase": "Running", "podIP": "10.0.0.1"},
    }


class Heard:
    def __init__(self) -> None:
        self.slots: list[Key] = []
        self.probes: list[Key] = []
        self.claims: list[Key] = []
        self.users: list[Key] = []
        self.impostors: list[tuple[Key, str]] = []
        self.checks: list[Key] = []

    def listener(self) -> Listener:
        return Listener(
            slot_changed=lambda key, old, new: self.slots.append(key),
            probe_changed=self.probes.append,
            claim_changed=self.claims.append,
            claim_users_changed=self.users.append,
            impostor=lambda slot, job: self.impostors.append(
                (slot, f"{job['metadata']['namespace']}/{job['metadata']['name']}")
            ),
            check_changed=self.checks.append,
        )


@pytest.fixture
async def cache_and_heard() -> AsyncIterator[tuple[Cache, Heard]]:
    heard = Heard()
    api = ApiClient(server="https://127.0.0.1:1", ssl_context=ssl.create_default_context())
    yield Cache(api, namespaces=(NS, OTHER_NS), listener=heard.listener()), heard
    await api.close()


def _store(cache: Cache, watch: str, namespace: str = NS) -> Any:
    return cache.store(watch, namespace)


async def test_jobs_and_pods_are_found_by_slot_and_job(cache_and_heard: tuple[Cache, Heard]) -> None:
    cache, heard = cache_and_heard
    _store(cache, "slots").replace([slot("s1", "home-1"), slot("s2", "home-2")])
    _store(cache, "jobs").replace([probe_job("s1-probe-a", "s1"), probe_job("s2-probe-b", "s2")])
    _store(cache, "probe-pods").apply("ADDED", probe_pod("s1-probe-a-x", "s1-probe-a", "s1"))
    assert [j["metadata"]["name"] for j in cache.slot_jobs(NS, "uid-s1")] == ["s1-probe-a"]
    assert [p["metadata"]["name"] for p in cache.job_pods(NS, "uid-s1-probe-a")] == ["s1-probe-a-x"]
    assert cache.job_pods(NS, "uid-s2-probe-b") == []
    assert sorted(heard.probes) == [(NS, "s1"), (NS, "s1"), (NS, "s2")]
    assert sorted(key for key, _ in cache.owned_probe_jobs()) == [(NS, "s1"), (NS, "s2")]

    _store(cache, "jobs").apply("DELETED", probe_job("s1-probe-a", "s1"))
    _store(cache, "probe-pods").apply("DELETED", probe_pod("s1-probe-a-x", "s1-probe-a", "s1"))
    assert cache.slot_jobs(NS, "uid-s1") == []
    assert cache.job_pods(NS, "uid-s1-probe-a") == []
    assert [j["metadata"]["name"] for j in cache.slot_jobs(NS, "uid-s2")] == ["s2-probe-b"]


async def test_a_job_is_a_slots_only_by_namespace_and_controller_uid(cache_and_heard: tuple[Cache, Heard]) -> None:
    """Labels and names are the tenant's to write: a Job elsewhere, or without the owner, is never the Slot's."""
    cache, heard = cache_and_heard
    _store(cache, "slots").replace([slot("s1", "home-1")])
    forged_elsewhere = probe_job("nightly-backup", "s1", namespace=OTHER_NS)  # owner names s1's uid, wrong namespace
    unowned = probe_job("s1-probe-fake", "s1", owned=False)  # labels only
    _store(cache, "jobs", OTHER_NS).apply("ADDED", forged_elsewhere)
    _store(cache, "jobs").apply("ADDED", unowned)
    assert cache.slot_jobs(NS, "uid-s1") == []
    assert cache.slot_jobs(OTHER_NS, "uid-s1") == [trim_job(forged_elsewhere)]  # filed under its own namespace
    assert cache.owned_probe_jobs() == []
    assert heard.probes == []
    assert heard.impostors == [((NS, "s1"), f"{OTHER_NS}/nightly-backup"), ((NS, "s1"), f"{NS}/s1-probe-fake")]


async def test_a_pod_is_a_jobs_only_by_its_controller_uid(cache_and_heard: tuple[Cache, Heard]) -> None:
    cache, heard = cache_and_heard
    _store(cache, "slots").replace([slot("s1", "home-1")])
    _store(cache, "jobs").replace([probe_job("s1-probe-a", "s1")])
    heard.probes.clear()
    stray = probe_pod("stray", "s1-probe-a", "s1")
    stray["metadata"]["ownerReferences"] = owner("Job", "another-job", "batch/v1")  # the job-name label lies
    _store(cache, "probe-pods").apply("ADDED", stray)
    assert cache.job_pods(NS, "uid-s1-probe-a") == []
    assert heard.probes == []


async def test_slots_are_found_by_claim_and_follow_a_claim_change(cache_and_heard: tuple[Cache, Heard]) -> None:
    cache, heard = cache_and_heard
    store = _store(cache, "slots")
    store.replace([slot("a", "home-1"), slot("b", "home-1"), slot("c", "home-2")])
    assert cache.slots_of_claim(NS, "home-1") == [(NS, "a"), (NS, "b")]
    store.apply("MODIFIED", slot("b", "home-2", rv="2"))
    assert cache.slots_of_claim(NS, "home-1") == [(NS, "a")]
    assert cache.slots_of_claim(NS, "home-2") == [(NS, "b"), (NS, "c")]
    store.replace([slot("c", "home-2")])  # a relist: a and b were deleted meanwhile
    assert cache.slots_of_claim(NS, "home-1") == []
    assert cache.slot((NS, "a")) is None
    assert (NS, "a") in heard.slots


async def test_pods_using_a_claim_are_indexed_by_claim(cache_and_heard: tuple[Cache, Heard]) -> None:
    cache, heard = cache_and_heard
    users = _store(cache, "claim-users")
    users.replace([worker("w1", "home-1"), worker("w2", "home-1", node="n2"), worker("other", "home-9")])
    assert sorted(p["metadata"]["name"] for p in cache.claim_users(NS, "home-1")) == ["w1", "w2"]
    users.apply("DELETED", worker("w1", "home-1"))  # it ended: the field selector no longer matches it
    assert [p["spec"]["nodeName"] for p in cache.claim_users(NS, "home-1")] == ["n2"]
    assert (NS, "home-1") in heard.users


async def test_own_writes_update_the_indexes_without_waking_the_controller(
    cache_and_heard: tuple[Cache, Heard],
) -> None:
    cache, heard = cache_and_heard
    cache.wrote_job(probe_job("s1-probe-a", "s1"))
    assert len(cache.slot_jobs(NS, "uid-s1")) == 1
    written = cache.wrote_slot(slot("s1", "home-1", rv="5"))
    assert written["metadata"]["resourceVersion"] == "5"
    assert cache.slots_of_claim(NS, "home-1") == [(NS, "s1")]
    assert heard.probes == []
    assert heard.slots == []


def test_trimmed_objects_keep_what_decisions_read_and_drop_the_rest() -> None:
    job = trim_job(probe_job("j", "s"))
    assert "managedFields" not in job["metadata"]
    assert job["spec"] == {"template": {"spec": {"containers": [{"image": "img:1"}]}}}
    assert job["status"] == {"conditions": []}

    assert job["metadata"]["ownerReferences"] == owner("Slot", "s", "woved.dev/v1alpha1")

    pod = trim_probe_pod(probe_pod("p", "j", "s"))
    assert pod["status"]["containerStatuses"] == [{"name": "probe", "state": {"running": {}}}]
    assert "annotations" not in pod["metadata"]
    assert pod["metadata"]["ownerReferences"] == owner("Job", "j", "batch/v1")

    user = trim_claim_user(worker("w", "home-1"))
    assert user == {
        "metadata": {"name": "w", "namespace": NS, "uid": "uid-w", "resourceVersion": "1"},
        "spec": {"nodeName": "n1", "volumes": [{"persistentVolumeClaim": {"claimName": "home-1"}}]},
        "status": {"phase": "Running"},
    }

    applied = slot("s", "home")
    applied["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": "{...}",
        "woved.dev/probe-requested-at": "t1",
    }
    assert trim_slot(applied)["metadata"]["annotations"] == {"woved.dev/probe-requested-at": "t1"}


def test_a_claim_user_keeps_its_controller_not_its_labels() -> None:
    """Whose pod it is comes from its controller reference: the operator's label on a tenant's pod means nothing."""
    pod = worker("p", "home-1")
    pod["metadata"]["labels"] = {names.LABEL_MANAGED_BY: names.MANAGED_BY, "other": "x"}
    pod["metadata"]["ownerReferences"] = owner("Job", "j", "batch/v1")
    record = trim_claim_user(pod)
    assert "labels" not in record["metadata"]
    assert record["metadata"]["ownerReferences"] == owner("Job", "j", "batch/v1")


async def test_a_change_the_trim_drops_is_no_news(cache_and_heard: tuple[Cache, Heard]) -> None:
    """A Job's pod counts, a pod's IP: not what a decision reads. The cached object takes the new version only."""
    cache, heard = cache_and_heard
    _store(cache, "slots").replace([slot("s1", "home-1")])
    _store(cache, "jobs").apply("ADDED", probe_job("s1-probe-a", "s1"))
    counted = probe_job("s1-probe-a", "s1")
    counted["metadata"]["resourceVersion"] = "2"
    counted["status"]["ready"] = 1
    _store(cache, "jobs").apply("MODIFIED", counted)
    assert heard.probes == [(NS, "s1")]  # the ADDED only
    (job,) = cache.slot_jobs(NS, "uid-s1")
    assert job["metadata"]["resourceVersion"] == "2"
    _store(cache, "jobs").apply("MODIFIED", counted)  # the same version again: older than the cache's
    done = probe_job("s1-probe-a", "s1")
    done["metadata"]["resourceVersion"] = "3"
    done["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    _store(cache, "jobs").apply("MODIFIED", done)
    assert heard.probes == [(NS, "s1"), (NS, "s1")]

    _store(cache, "claim-users").apply("ADDED", worker("w1", "home-1"))
    moved_ip = worker("w1", "home-1", rv="2")
    moved_ip["status"]["podIP"] = "10.0.0.2"
    _store(cache, "claim-users").apply("MODIFIED", moved_ip)
    assert heard.users == [(NS, "home-1")]
    _store(cache, "claim-users").apply("MODIFIED", worker("w1", "home-1", node="n2", rv="3"))
    assert heard.users == [(NS, "home-1"), (NS, "home-1")]


async def test_the_operators_own_pods_are_claim_users_from_its_own_watch(cache_and_heard: tuple[Cache, Heard]) -> None:
    """The claim-users watch leaves pods with the operator's managed-by label to the watch of its pods: each once."""
    cache, heard = cache_and_heard
    _store(cache, "slots").replace([slot("s1", "home-1")])
    _store(cache, "jobs").apply("ADDED", probe_job("s1-probe-a", "s1"))
    pod = probe_pod("s1-probe-a-x", "s1-probe-a", "s1")
    pod["spec"] = {"nodeName": "n1", "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "home-1"}}]}
    _store(cache, "probe-pods").apply("ADDED", pod)
    assert [p["spec"]["nodeName"] for p in cache.claim_users(NS, "home-1")] == ["n1"]
    assert heard.users == [(NS, "home-1")]
    audited = copy.deepcopy(pod)
    audited["metadata"]["resourceVersion"] = "2"
    audited["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 0}}
    _store(cache, "probe-pods").apply("MODIFIED", audited)
    assert heard.users == [(NS, "home-1")]  # its containers are the probe's news, not the claim's
    done = copy.deepcopy(audited)
    done["metadata"]["resourceVersion"] = "3"
    done["status"]["phase"] = "Succeeded"
    _store(cache, "probe-pods").apply("MODIFIED", done)
    assert cache.claim_users(NS, "home-1") == []
    assert heard.users == [(NS, "home-1"), (NS, "home-1")]


def test_the_two_pod_watches_split_the_pods_by_the_operators_label() -> None:
    assert names.OTHER_PODS_SELECTOR.replace("!=", "=") == names.OWN_PODS_SELECTOR
