"""SlotImageCheck end to end (docs/design.md §2.5): the real operator probes a candidate against real claims.

A mixed fleet gets each Slot's would-be phase and no Slot changes; a candidate that runs as another uid
than the one that wrote the volumes is diagnosed as an ownership problem; kstatus and the shipped Lua read
the live check; `kubectl slot check` exits with the answer; a check's probes never take a place a Slot
probe waits for; a finished check goes after its TTL, with its Jobs.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch

from devcluster import cluster, gitops
from tests import image_check_contract
from tests.gitops_states import CHECK_EXPECTED
from tests.integration import slots
from tests.integration.kubewait import NotYet, wait_for
from tests.integration.slots import (
    VALID_CODEX,
    create_check,
    create_slot,
    get_check,
    get_slot,
    patch_slot,
    wait_check,
    wait_verdict,
    write_file,
)

pytestmark = pytest.mark.integration

CHECK_LUA = cluster.REPO / "charts" / "slot-operator" / "argocd" / "SlotImageCheck" / "health.lua"
PLUGIN = pathlib.Path(sys.executable).parent / "kubectl-slot"
SLOW = [{"name": "SMOKE_TEST_SLEEP", "value": "4"}]
PROBE_REQUEST = "woved.dev/probe-requested-at"


def kept(check: dict[str, Any]) -> dict[str, Any]:
    """The check, after asserting its status keeps the contract."""
    assert image_check_contract.problems(check) == [], check.get("status")
    return check


def read(check: dict[str, Any]) -> tuple[str, str]:
    (reading,) = gitops.read([check], health_lua=CHECK_LUA)
    assert reading.agree, reading
    return reading.pair


def fleet(api: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path],
          homes: dict[str, Callable[[pathlib.Path], object]], pool: str = "codex",
          **spec: Any) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Slots (label pool) with their claims prepared, each with its own verdict: returns them as they are then."""
    for name, prepare in homes.items():
        prepare(claim(f"{name}-home"))
        create_slot(api, namespace, name, claim=f"{name}-home", labels={"pool": pool}, interval="2h", **spec)
    return {name: wait_verdict(api, namespace, name, phase) for name, phase in _phases(homes).items()}


def _phases(homes: dict[str, Callable[[pathlib.Path], object]]) -> dict[str, str]:
    return {name: PHASE_OF[prepare] for name, prepare in homes.items()}


def valid(home: pathlib.Path) -> None:
    write_file(home, ".codex/auth.json", VALID_CODEX)


def missing(home: pathlib.Path) -> None:
    pass


def empty(home: pathlib.Path) -> None:
    write_file(home, ".codex/auth.json", "")


def old_uid(home: pathlib.Path) -> None:
    """Written by the uid-1000 image: the home, ~/.codex (0700) and auth.json all 1000:1000."""
    write_file(home, ".codex/auth.json", VALID_CODEX, uid=1000, gid=1000)
    os.chown(home, 1000, 1000)
    home.chmod(0o755)


PHASE_OF: dict[Callable[[pathlib.Path], object], str] = {valid: "Ready", missing: "NeedsInit", empty: "NeedsReauth"}


def test_a_mixed_fleet_gets_each_would_be_phase_and_no_slot_changes(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    operator()
    before = fleet(api_client, namespace, claim, {"ready": valid, "uninitialised": missing, "expired": empty})
    create_slot(api_client, namespace, "other-pool", claim="ready-home", labels={"pool": "claude"}, suspend=True)
    events = {name: len(slots.slot_events(api_client, namespace, name)) for name in before}
    create_check(api_client, namespace, "c", image=slots.CODEX_IMAGE, selector={"matchLabels": {"pool": "codex"}})
    check = kept(wait_check(api_client, namespace, "c"))
    status = check["status"]
    phases = {result["slot"]: (result["phase"], result.get("exitCode")) for result in status["results"]}
    assert phases == {"ready": ("Ready", 0), "uninitialised": ("NeedsInit", 65), "expired": ("NeedsReauth", 66)}
    assert status["phase"] == "Failed"
    assert status["summary"]["failed"] == 2
    assert read(check) == CHECK_EXPECTED["failed-owned-by-the-old-uid"] == ("Failed", "Degraded")
    for name, slot in before.items():  # byte for byte: not one write, not one Event
        assert (
            get_slot(api_client, namespace, name)["metadata"]["resourceVersion"] == slot["metadata"]["resourceVersion"]
        )
        assert len(slots.slot_events(api_client, namespace, name)) == events[name]
    jobs = client.BatchV1Api(api_client).list_namespaced_job(namespace, label_selector=slots.CHECK_SELECTOR).items
    assert sorted(job.metadata.annotations["woved.dev/slot"] for job in jobs) == sorted(before)
    assert {job.metadata.owner_references[0].uid for job in jobs} == {check["metadata"]["uid"]}


def test_a_candidate_that_runs_as_another_uid_is_diagnosed_as_an_ownership_problem(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    """The uid pin: Slots of the uid-1000 image are Ready; the candidate runs as 10001 and could not read them."""
    operator()
    old_uid(claim("old-home"))
    create_slot(api_client, namespace, "old", claim="old-home", runAsUser=1000, runAsGroup=1000, interval="2h")
    wait_verdict(api_client, namespace, "old", "Ready")
    create_check(api_client, namespace, "pin", image=slots.CODEX_IMAGE, runAsUser=10001, runAsGroup=10001)
    running = wait_check(api_client, namespace, "pin", ("Running", "Failed"))
    assert read(running) in (CHECK_EXPECTED["probing"], CHECK_EXPECTED["failed-owned-by-the-old-uid"])
    check = kept(wait_check(api_client, namespace, "pin"))
    (result,) = check["status"]["results"]
    assert (result["phase"], result["runAs"]) == ("NeedsInit", "10001:10001")
    assert result["ownership"]["found"] == ["1000:1000"]
    assert result["ownership"]["migrationWouldFix"] is True
    assert result["ownership"]["fix"].startswith(
        "owned by 1000:1000: set the Slot's runAsUser/runAsGroup to 10001:10001 with the image"
    )
    ready = next(c for c in check["status"]["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "1 of 1 Slots would need a human: old NeedsInit (owned by 1000:1000)"
    assert get_slot(api_client, namespace, "old")["status"]["phase"] == "Ready"  # the Slot itself is untouched


def test_every_slot_ready_passes_the_gates_and_the_plugin_exits_with_the_answer(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any,
    kube_cluster: cluster.Cluster,
) -> None:  # fmt: skip
    operator()
    fleet(api_client, namespace, claim, {"a": valid, "b": valid})
    ok = plugin(kube_cluster, namespace, "-l", "pool=codex", "--name", "all-ready")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    check = kept(get_check(api_client, namespace, "all-ready"))
    assert read(check) == CHECK_EXPECTED["succeeded"] == ("Current", "Healthy")
    waited = subprocess.run(
        ["kubectl", "--kubeconfig", str(kube_cluster.kubeconfig), "-n", namespace, "wait", "--for=condition=Ready",
         "--timeout=10s", "sic/all-ready"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    fleet(api_client, namespace, claim, {"new": missing})
    failing = plugin(kube_cluster, namespace, "--name", "with-new")
    assert failing.returncode == 65, failing.stdout + failing.stderr  # NeedsInit's code: the worst verdict
    assert "new" in failing.stdout


def plugin(kube_cluster: cluster.Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PLUGIN), "check", "--image", slots.CODEX_IMAGE, "-n", namespace, "--kubeconfig",
         str(kube_cluster.kubeconfig), "--wait", "--timeout", "2m", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_a_check_never_takes_a_place_a_slot_probe_waits_for(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    """Cap 1: while a check probe runs, a Slot probe falls due; the freed place goes to it, then to the check."""
    operator("--max-concurrent-probes=1")
    fleet(api_client, namespace, claim, {"slow-1": valid, "slow-2": valid}, env=SLOW)
    fleet(api_client, namespace, claim, {"urgent": valid}, pool="other")
    created = record_jobs(api_client, namespace)
    create_check(api_client, namespace, "c", image=slots.CODEX_IMAGE, selector={"matchLabels": {"pool": "codex"}},
                 timeout="1m")  # fmt: skip
    wait_for(lambda: len(created) >= 1 or NotYet(created), timeout=30, message="the check's first probe")
    patch_slot(api_client, namespace, "urgent", {"metadata": {"annotations": {PROBE_REQUEST: "now"}}})
    kept(wait_check(api_client, namespace, "c", timeout=180))
    wait_for(lambda: any(job.startswith("urgent-probe-") for job in created) or NotYet(created), timeout=60,
             message="the Slot's probe")  # fmt: skip
    order = ["slot" if "-probe-" in job else "check" for job in created]
    # One check probe runs when the Slot falls due (no preemption); the Slot's probe goes before the next one.
    assert order[:3] == ["check", "slot", "check"], created


def record_jobs(api: client.ApiClient, namespace: str) -> list[str]:
    """The names of the Jobs created in the namespace from now on, in the order the API server made them."""
    seen: list[str] = []
    start = client.BatchV1Api(api).list_namespaced_job(namespace).metadata.resource_version

    def follow() -> None:
        for event in watch.Watch().stream(client.BatchV1Api(api).list_namespaced_job, namespace,
                                          resource_version=start, timeout_seconds=300):  # fmt: skip
            if event["type"] == "ADDED":
                seen.append(event["object"].metadata.name)

    threading.Thread(target=follow, daemon=True).start()
    return seen


def test_a_finished_check_goes_after_its_ttl_and_its_jobs_with_it(
    api_client: client.ApiClient, namespace: str, claim: Callable[..., pathlib.Path], operator: Any
) -> None:
    operator()
    fleet(api_client, namespace, claim, {"a": valid})
    create_check(api_client, namespace, "short", image=slots.CODEX_IMAGE, ttlAfterFinished="1m")
    finished = wait_check(api_client, namespace, "short")
    batch = client.BatchV1Api(api_client)
    assert batch.list_namespaced_job(namespace, label_selector=slots.CHECK_SELECTOR).items
    # The minute passes at once: the answer is dated a minute and a second earlier (the CRD's shortest TTL is
    # 1m, and a test that sleeps through it costs the suite a minute). Until then the check stays.
    assert get_check(api_client, namespace, "short")["metadata"]["uid"] == finished["metadata"]["uid"]
    earlier = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1, seconds=1)
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        slots.GROUP, slots.VERSION, namespace, slots.CHECKS, "short",
        {"status": {"completionTime": earlier.strftime("%Y-%m-%dT%H:%M:%SZ")}},
    )  # fmt: skip

    def gone() -> bool | NotYet:
        names = [c["metadata"]["name"] for c in client.CustomObjectsApi(api_client).list_namespaced_custom_object(
            slots.GROUP, slots.VERSION, namespace, slots.CHECKS)["items"]]  # fmt: skip
        jobs = batch.list_namespaced_job(namespace, label_selector=slots.CHECK_SELECTOR).items
        return (not names and not jobs) or NotYet((names, [job.metadata.name for job in jobs]))

    wait_for(gone, timeout=60, message="the check and its Jobs deleted once a minute has passed since it finished")
