"""End to end: triggers, one probe per Slot, restarts, deletion, the cap, placement, validation, metrics."""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch

from tests.integration import slots
from tests.integration.factories import ClaimFactory, OperatorFactory, ValidSlotFactory, WorkerFactory
from tests.integration.kubewait import wait_for
from tests.integration.slots import (
    condition,
    create_slot,
    get_slot,
    patch_slot,
    valid_home,
    valid_homes,
    wait_reason,
    wait_slot,
    wait_verdict,
)

pytestmark = pytest.mark.integration


def test_image_change_reprobes_and_ready_generation_follows(
    api_client: client.ApiClient, namespace: str, valid_slot: ValidSlotFactory
) -> None:
    valid_slot()
    first = wait_verdict(api_client, namespace, "s", "Ready")
    assert condition(first, "Ready")["observedGeneration"] == 1

    patch_slot(api_client, namespace, "s", {"spec": {"image": slots.BROKEN_IMAGE}})
    second = wait_verdict(api_client, namespace, "s", "ImageBroken", generation=2)

    assert second["status"]["lastProbe"]["trigger"] == "spec-changed"
    assert second["status"]["lastProbe"]["image"] == slots.BROKEN_IMAGE
    assert condition(second, "Ready")["observedGeneration"] == 2
    # The last Ready verdict is still on record, for the image it was given to.
    assert second["status"]["lastReadyImage"] == slots.CODEX_IMAGE
    assert len({job.metadata.name for job in slots.probe_jobs(api_client, namespace)}) == 2


def test_manual_request_reprobes_and_is_acknowledged(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    home = valid_home(claim)
    operator()
    create_slot(api_client, namespace, "s", claim="home")
    first = wait_verdict(api_client, namespace, "s", "Ready")

    (home / ".codex" / "auth.json").write_text("")  # credentials went bad between probes
    patch_slot(api_client, namespace, "s", {"metadata": {"annotations": {"woved.dev/probe-requested-at": "t-1"}}})
    slot = wait_slot(
        api_client,
        namespace,
        "s",
        lambda s: (s.get("status") or {}).get("lastHandledProbeRequest") == "t-1",
        message="ack t-1",
    )

    assert slot["status"]["phase"] == "NeedsReauth"
    assert slot["status"]["lastProbe"]["trigger"] == "manual"
    assert slot["status"]["lastProbe"]["jobName"] != first["status"]["lastProbe"]["jobName"]
    # The request is handled once: no further probe for the same token.
    assert len(slots.probe_jobs(api_client, namespace)) == 2


def test_operator_restart_adopts_running_probe(
    api_client: client.ApiClient, namespace: str, operator: OperatorFactory, valid_slot: ValidSlotFactory
) -> None:
    first = valid_slot(env=[{"name": "SMOKE_TEST_SLEEP", "value": "6"}])
    wait_reason(api_client, namespace, "s", "Reconciling", "Probing")
    wait_for(lambda: len(slots.probe_jobs(api_client, namespace)) == 1, timeout=30, message="one probe Job")
    running_job = slots.probe_jobs(api_client, namespace)[0].metadata.name

    first.kill()
    operator()

    slot = wait_verdict(api_client, namespace, "s", "Ready", timeout=90)
    assert slot["status"]["lastProbe"]["jobName"] == running_job
    assert [job.metadata.name for job in slots.probe_jobs(api_client, namespace)] == [running_job]


def test_interval_is_computed_from_status_across_restarts(
    api_client: client.ApiClient, namespace: str, operator: OperatorFactory, valid_slot: ValidSlotFactory
) -> None:
    first = valid_slot(interval="1h")
    slot = wait_verdict(api_client, namespace, "s", "Ready")
    next_time = datetime.datetime.fromisoformat(slot["status"]["nextProbeTime"].replace("Z", "+00:00"))
    completed = datetime.datetime.fromisoformat(slot["status"]["lastProbe"]["completionTime"].replace("Z", "+00:00"))
    # The interval, plus up to 5% jitter so that Slots created together do not probe together forever.
    assert datetime.timedelta(minutes=60) <= next_time - completed <= datetime.timedelta(minutes=63, seconds=1)

    # An hour passes while the operator is down: only status records when the next probe is due.
    first.stop()
    past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        slots.GROUP, slots.VERSION, namespace, slots.PLURAL, "s", {"status": {"nextProbeTime": past}}
    )
    operator()

    slot = wait_slot(
        api_client,
        namespace,
        "s",
        lambda s: (
            (s["status"].get("lastProbe") or {}).get("trigger") == "interval" and s["status"]["nextProbeTime"] > past
        ),
        message="interval re-probe",
    )
    assert slot["status"]["phase"] == "Ready"
    assert len(slots.probe_jobs(api_client, namespace)) == 2


def test_deleting_slot_mid_probe_removes_its_job(
    api_client: client.ApiClient, namespace: str, valid_slot: ValidSlotFactory
) -> None:
    valid_slot(env=[{"name": "SMOKE_TEST_SLEEP", "value": "120"}])
    wait_for(lambda: len(slots.probe_jobs(api_client, namespace)) == 1, timeout=30, message="probe Job")

    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        slots.GROUP, slots.VERSION, namespace, slots.PLURAL, "s"
    )

    # No finalizer holds the Slot; the garbage collector takes its Job (and the Job's pod).
    wait_for(lambda: not slots.probe_jobs(api_client, namespace), timeout=60, message="Job garbage-collected")
    wait_for(
        lambda: (
            not client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=slots.PROBE_SELECTOR).items
        ),
        timeout=60,
        message="probe pod gone",
    )


def test_concurrency_cap_holds_and_every_slot_gets_a_verdict(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    valid_homes(claim, 10)
    active: dict[str, bool] = {}
    peak = 0
    stop = threading.Event()

    def observe() -> None:
        # A probe is running while its pod has not ended. The verdict is recorded from the pod's exit code, so
        # the next probe may start before the Job controller marks the previous Job finished: count pods.
        nonlocal peak
        core = client.CoreV1Api(api_client)
        while not stop.is_set():
            for event in watch.Watch().stream(
                core.list_namespaced_pod, namespace, label_selector=slots.PROBE_SELECTOR, timeout_seconds=2
            ):
                pod = event["object"]
                active[pod.metadata.name] = event["type"] != "DELETED" and pod.status.phase in ("Pending", "Running")
                peak = max(peak, sum(active.values()))

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    operator("--max-concurrent-probes=2")
    for index in range(10):
        create_slot(
            api_client, namespace, f"s-{index}", claim=f"home-{index}", env=[{"name": "SMOKE_TEST_SLEEP", "value": "1"}]
        )

    for index in range(10):
        wait_verdict(api_client, namespace, f"s-{index}", "Ready", timeout=180)
    stop.set()
    watcher.join(timeout=30)

    assert peak == 2, f"{peak} probe pods were running at once (cap 2)"
    assert len(slots.probe_jobs(api_client, namespace)) == 10


def test_queued_slots_show_queued_reason(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    valid_homes(claim, 3)
    operator("--max-concurrent-probes=1")
    for index in range(3):
        create_slot(
            api_client, namespace, f"s-{index}", claim=f"home-{index}", env=[{"name": "SMOKE_TEST_SLEEP", "value": "3"}]
        )

    def one_is_queued() -> bool:
        return any(
            condition(get_slot(api_client, namespace, f"s-{i}"), "Reconciling").get("reason") == "Queued"
            for i in range(3)
        )

    wait_for(one_is_queued, timeout=60, message="a Slot reports Reconciling=True/Queued")
    queued = [get_slot(api_client, namespace, f"s-{i}") for i in range(3)]
    for slot in queued:
        if condition(slot, "Reconciling").get("reason") == "Queued":
            assert slot["status"]["phase"] == "Pending"
            assert condition(slot, "Reconciling")["status"] == "True"
    for index in range(3):
        wait_verdict(api_client, namespace, f"s-{index}", "Ready", timeout=120)


@pytest.fixture
def slot_on_a_claim_in_use(
    api_client: client.ApiClient,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
    worker_pod: WorkerFactory,
) -> Callable[[str, str], None]:
    """Factory: `slot_on_a_claim_in_use(access_mode, node)`: a valid claim `home` of that access mode, a worker on
    `node` holding it, then the operator and a Slot `s` on the claim."""

    def make(access_mode: str, node: str) -> None:
        valid_home(claim, access_modes=(access_mode,))
        worker_pod("worker", claim="home", node=node)
        operator()
        create_slot(api_client, namespace, "s", claim="home")

    return make


def test_rwo_claim_in_use_is_probed_on_the_same_node(
    api_client: client.ApiClient, namespace: str, slot_on_a_claim_in_use: Callable[[str, str], None]
) -> None:
    slot_on_a_claim_in_use("ReadWriteOnce", "sim-node-b")

    wait_verdict(api_client, namespace, "s", "Ready")
    job = slots.probe_jobs(api_client, namespace)[0]
    terms = job.spec.template.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert terms.node_selector_terms[0].match_expressions[0].values == ["sim-node-b"]
    assert job.spec.template.spec.node_name is None
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=slots.PROBE_SELECTOR).items
    assert [pod.spec.node_name for pod in pods] == ["sim-node-b"]


def test_rwop_claim_in_use_is_not_probed(
    api_client: client.ApiClient, namespace: str, slot_on_a_claim_in_use: Callable[[str, str], None]
) -> None:
    slot_on_a_claim_in_use("ReadWriteOncePod", "sim-node-a")

    slot = wait_reason(api_client, namespace, "s", "ProbeSucceeded", "ClaimInUse")
    assert "worker" in condition(slot, "ProbeSucceeded")["message"]
    assert not slots.probe_jobs(api_client, namespace)
    assert slot["status"]["nextProbeTime"]  # retried later


INVALID_SPECS = {
    "spec.agent": {"agent": "gemini"},
    "spec.claimName": {"claimName": None},
    "spec.interval": {"interval": "every hour"},
    "spec.timeout": {"timeout": "0s"},
    "spec.runAsUser": {"runAsUser": 0},
}


@pytest.mark.parametrize("field", list(INVALID_SPECS))
def test_invalid_spec_rejected_naming_the_field(field: str, api_client: client.ApiClient, namespace: str) -> None:
    spec: dict[str, Any] = {"agent": "codex", "claimName": "home", "image": slots.CODEX_IMAGE, **INVALID_SPECS[field]}
    spec = {key: value for key, value in spec.items() if value is not None}
    body = {"apiVersion": f"{slots.GROUP}/{slots.VERSION}", "kind": "Slot", "metadata": {"name": "bad"}, "spec": spec}

    with pytest.raises(client.ApiException) as caught:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            slots.GROUP, slots.VERSION, namespace, slots.PLURAL, body
        )

    assert caught.value.status == 422
    assert field in json.loads(caught.value.body)["message"]


def test_negative_timeout_rejected(api_client: client.ApiClient, namespace: str) -> None:
    body = {
        "apiVersion": f"{slots.GROUP}/{slots.VERSION}",
        "kind": "Slot",
        "metadata": {"name": "bad"},
        "spec": {"agent": "codex", "claimName": "home", "image": slots.CODEX_IMAGE, "timeout": "-5s"},
    }
    with pytest.raises(client.ApiException) as caught:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            slots.GROUP, slots.VERSION, namespace, slots.PLURAL, body
        )
    assert "spec.timeout" in json.loads(caught.value.body)["message"]


def test_metrics_report_phases(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    valid_home(claim, "good")
    claim("empty")
    instance = operator()
    create_slot(api_client, namespace, "good", claim="good")
    create_slot(api_client, namespace, "empty", claim="empty")
    wait_verdict(api_client, namespace, "good", "Ready")
    wait_verdict(api_client, namespace, "empty", "NeedsInit")

    expected = [
        f'slot_operator_slot_phase{{namespace="{namespace}",phase="Ready",slot="good"}} 1.0',
        f'slot_operator_slot_phase{{namespace="{namespace}",phase="NeedsInit",slot="empty"}} 1.0',
        f'slot_operator_slot_ready{{namespace="{namespace}",slot="good"}} 1.0',
        f'slot_operator_slot_ready{{namespace="{namespace}",slot="empty"}} 0.0',
        f'slot_operator_probe_results_total{{namespace="{namespace}",result="Ready",slot="good"}} 1.0',
        f'slot_operator_probe_results_total{{namespace="{namespace}",result="NeedsInit",slot="empty"}} 1.0',
        'slot_operator_probe_duration_seconds_count{outcome="verdict"} 2.0',
        "slot_operator_probe_queue_depth 0.0",
        "slot_operator_probes_running 0.0",
        "slot_operator_leader 1.0",
        f'slot_operator_slot_last_ready_timestamp_seconds{{namespace="{namespace}",slot="good"}}',
    ]
    # The counters move just after the status write the test waited on: poll them too.
    wait_for(
        lambda: not [line for line in expected if line not in instance.metrics()],
        timeout=30,
        message="metrics",
        describe=lambda: [line for line in expected if line not in instance.metrics()],
    )


def test_no_kopf_bookkeeping_on_the_users_object(
    api_client: client.ApiClient, namespace: str, valid_slot: ValidSlotFactory
) -> None:
    valid_slot()
    slot = wait_verdict(api_client, namespace, "s", "Ready")

    assert not slot["metadata"].get("finalizers")
    assert not any("kopf" in key for key in (slot["metadata"].get("annotations") or {}))


def test_spec_change_mid_probe_supersedes_the_running_probe(
    api_client: client.ApiClient, namespace: str, valid_slot: ValidSlotFactory
) -> None:
    valid_slot(env=[{"name": "SMOKE_TEST_SLEEP", "value": "300"}])
    wait_for(lambda: len(slots.probe_jobs(api_client, namespace)) == 1, timeout=30, message="first probe Job")
    stale = slots.probe_jobs(api_client, namespace)[0].metadata.name

    patch_slot(api_client, namespace, "s", {"spec": {"env": None}})  # generation 2, a quick probe

    slot = wait_verdict(api_client, namespace, "s", "Ready", generation=2)
    assert slot["status"]["lastProbe"]["generation"] == 2
    assert slot["status"]["lastProbe"]["jobName"] != stale
    # The generation-1 probe is stopped rather than left to run for its 300 s.
    wait_for(
        lambda: stale not in {job.metadata.name for job in slots.probe_jobs(api_client, namespace)},
        timeout=30,
        message="superseded probe Job deleted",
    )


def test_spec_the_schema_cannot_reject_is_reported_in_conditions(
    api_client: client.ApiClient, namespace: str, valid_slot: ValidSlotFactory
) -> None:
    # Kubernetes' Job validation refuses a toleration value with operator Exists; the Slot schema does not check it.
    valid_slot(tolerations=[{"key": "k", "operator": "Exists", "value": "v"}])

    slot = wait_reason(api_client, namespace, "s", "Stalled", "InvalidSpec")
    assert condition(slot, "Stalled")["status"] == "True"
    assert "spec.tolerations[0].operator" in condition(slot, "Stalled")["message"]
    assert condition(slot, "ProbeSucceeded")["reason"] == "InvalidSpec"
    assert not slots.probe_jobs(api_client, namespace)
    slots.wait_event(api_client, namespace, "s", reason="InvalidSpec", kind="Warning")

    patch_slot(api_client, namespace, "s", {"spec": {"tolerations": None}})
    fixed = wait_verdict(api_client, namespace, "s", "Ready", generation=2)
    assert condition(fixed, "Stalled")["status"] == "False"


def test_queue_moves_on_when_a_waiting_slot_is_deleted(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    valid_homes(claim, 3)
    operator("--max-concurrent-probes=1")
    create_slot(api_client, namespace, "s-0", claim="home-0", env=[{"name": "SMOKE_TEST_SLEEP", "value": "3"}])
    wait_for(lambda: len(slots.probe_jobs(api_client, namespace)) == 1, timeout=30, message="s-0 probing")
    for index in (1, 2):
        create_slot(api_client, namespace, f"s-{index}", claim=f"home-{index}")
        wait_slot(
            api_client,
            namespace,
            f"s-{index}",
            lambda s: condition(s, "Reconciling").get("reason") == "Queued",
            message=f"s-{index} queued",
        )

    # The first in line leaves the queue before its turn: the next one must still get the place.
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        slots.GROUP, slots.VERSION, namespace, slots.PLURAL, "s-1"
    )

    wait_verdict(api_client, namespace, "s-0", "Ready")
    wait_verdict(api_client, namespace, "s-2", "Ready")


def test_leader_election_keeps_one_replica_active(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    valid_home(claim, "home-1")
    valid_home(claim, "home-2")
    lease = [f"--leader-elect-namespace={namespace}", "--leader-elect-lease=slot-operator", "--leader-elect"]
    first = operator(*lease)
    wait_for(lambda: "slot_operator_leader 1.0" in first.metrics(), timeout=30, message="first replica leads")
    second = operator(*lease)
    assert "slot_operator_leader 0.0" in second.metrics()

    create_slot(api_client, namespace, "s-1", claim="home-1")
    wait_verdict(api_client, namespace, "s-1", "Ready")
    assert len(slots.probe_jobs(api_client, namespace)) == 1  # the standby did not probe too

    first.kill()  # no clean hand-over: the standby waits for the Lease to expire
    wait_for(lambda: "slot_operator_leader 1.0" in second.metrics(), timeout=60, message="standby takes over")
    create_slot(api_client, namespace, "s-2", claim="home-2")
    wait_verdict(api_client, namespace, "s-2", "Ready")
    assert len(slots.probe_jobs(api_client, namespace)) == 2

    third = operator(*lease)
    second.stop()  # a clean stop releases the Lease: no wait for it to expire
    wait_for(lambda: "slot_operator_leader 1.0" in third.metrics(), timeout=10, message="hand-over on clean stop")
