"""End to end: the operator decides from watch caches; they must stay right when the network does not.

- a partition long enough that the watches cannot resume (410): the operator lists again and
  forgets what was deleted meanwhile, and sees what changed;
- a decision from a stale cache: the conditional status write fails (409), the Slot is read
  fresh, and the verdict lands without losing anyone else's change;
- the operator killed while 200 probes run: no duplicate Job, no lost verdict.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator

import pytest
from kubernetes import client

from devcluster import cluster
from tests.integration import slots
from tests.integration.apiproxy import ApiProxy
from tests.integration.factories import ClaimFactory, OperatorFactory
from tests.integration.kubewait import wait_for
from tests.integration.operator_process import OperatorProcess

pytestmark = pytest.mark.integration


def _metric(operator: OperatorProcess, name: str, **labels: str) -> float | None:
    """The value of one series on the operator's /metrics, or None when it is absent."""
    for line in operator.metrics().splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return None


@pytest.fixture
def proxy(kube_cluster: cluster.Cluster) -> Iterator[ApiProxy]:
    running = ApiProxy(upstream=kube_cluster.api_url, pki=kube_cluster.root / "pki").start()
    yield running
    running.heal()
    running.thaw()
    running.stop()


@pytest.fixture
def proxied_operator(
    kube_cluster: cluster.Cluster, namespace: str, proxy: ApiProxy, tmp_path: pathlib.Path, operator: OperatorFactory
) -> Iterator[OperatorProcess]:
    """The real operator, talking to the API server through the fault-injecting proxy.

    (`operator` is requested for its namespace set-up: Pod Security "restricted" enforced.)
    """
    process = OperatorProcess(
        kubeconfig=proxy.kubeconfig(kube_cluster.kubeconfig, tmp_path / "proxied.kubeconfig"),
        namespaces=[namespace],
        log_path=kube_cluster.logs_dir / "operators" / f"{namespace}-proxied.log",
        args=["--retry-base=2s", "--retry-max=10s"],
    )
    yield process.start()
    process.stop()


def test_watches_that_cannot_resume_relist_and_forget_what_was_deleted(
    api_client: client.ApiClient,
    namespace: str,
    claim: ClaimFactory,
    proxy: ApiProxy,
    proxied_operator: OperatorProcess,
) -> None:
    for name in ("a", "b"):
        slots.valid_home(claim, f"home-{name}")
        slots.create_slot(api_client, namespace, name, claim=f"home-{name}")
    for name in ("a", "b"):
        slots.wait_verdict(api_client, namespace, name, "Ready")
    wait_for(lambda: _metric(proxied_operator, "slot_operator_slot_ready", slot="a") == 1, timeout=30,
             message="slot a in the operator's metrics")  # fmt: skip
    lists_before = _metric(proxied_operator, "slot_operator_api_requests_total", verb="list", resource="slots")

    # While the operator is cut off: one Slot deleted, another one asked for a probe.
    proxy.partition()
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        slots.GROUP, slots.VERSION, namespace, slots.PLURAL, "a"
    )
    slots.patch_slot(
        api_client, namespace, "b", {"metadata": {"annotations": {"woved.dev/probe-requested-at": "after"}}}
    )
    proxy.heal(expire=True)  # every watch now resumes from a version the server no longer has: 410

    slots.wait_slot(
        api_client,
        namespace,
        "b",
        lambda s: (s.get("status") or {}).get("lastHandledProbeRequest") == "after",
        message="the request made during the partition handled",
    )
    wait_for(
        lambda: _metric(proxied_operator, "slot_operator_slot_ready", slot="a") is None,
        timeout=30,
        message="the Slot deleted during the partition gone from the operator's metrics",
    )
    assert any("resourceVersion=1&" in path or path.endswith("resourceVersion=1") for path in proxy.watch_requests)
    lists_after = _metric(proxied_operator, "slot_operator_api_requests_total", verb="list", resource="slots")
    assert lists_after is not None
    assert lists_before is not None
    assert lists_after > lists_before, "the Slots were listed again after the watch expired"
    assert "watch expired, listing again" in proxied_operator.log()


def test_a_write_from_a_stale_cache_conflicts_and_the_slot_is_read_again(
    api_client: client.ApiClient,
    namespace: str,
    claim: ClaimFactory,
    proxy: ApiProxy,
    proxied_operator: OperatorProcess,
) -> None:
    slots.valid_home(claim, "home")
    slots.create_slot(api_client, namespace, "s", claim="home", env=[{"name": "SMOKE_TEST_SLEEP", "value": "4"}])
    slots.wait_reason(api_client, namespace, "s", "Reconciling", "Probing")
    # The operator stops hearing about Slots; someone else changes this one meanwhile.
    proxy.freeze_watches("slots")
    slots.patch_slot(api_client, namespace, "s", {"metadata": {"labels": {"team": "agents"}}})

    # The probe ends (pod events still flow): the verdict write carries the stale resourceVersion.
    slot = slots.wait_verdict(api_client, namespace, "s", "Ready")
    proxy.thaw()

    assert slot["metadata"]["labels"] == {"team": "agents"}
    conflicts = _metric(proxied_operator, "slot_operator_api_requests_total", verb="patch", resource="slots/status",
                        code="409")  # fmt: skip
    fresh_reads = _metric(proxied_operator, "slot_operator_api_requests_total", verb="get", resource="slots")
    assert conflicts is not None
    assert conflicts >= 1
    assert fresh_reads is not None
    assert fresh_reads >= 1


def test_operator_killed_while_200_probes_run_loses_no_verdict_and_duplicates_no_job(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    count = 200
    slots.valid_homes(claim, count)
    first = operator("--max-concurrent-probes=200")
    for index in range(count):
        slots.create_slot(api_client, namespace, f"s-{index}", claim=f"home-{index}",
                          env=[{"name": "SMOKE_TEST_SLEEP", "value": "8"}])  # fmt: skip
    wait_for(
        lambda: len(slots.probe_jobs(api_client, namespace)) >= count // 2,
        timeout=300,
        message="half the probes started",
    )
    first.kill()
    operator("--max-concurrent-probes=200")

    def all_ready() -> bool:
        items = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
            slots.GROUP, slots.VERSION, namespace, slots.PLURAL
        )["items"]
        return sum((i.get("status") or {}).get("phase") == "Ready" for i in items) == count

    wait_for(all_ready, timeout=900, message=f"{count} verdicts")
    jobs = slots.probe_jobs(api_client, namespace)
    owners = [job.metadata.annotations["woved.dev/slot"] for job in jobs]
    assert len(owners) == count, f"{len(owners)} probe Jobs for {count} Slots"
    assert len(set(owners)) == count
    for index in range(count):
        slot = slots.get_slot(api_client, namespace, f"s-{index}")
        assert slot["status"]["lastProbe"]["jobName"] in {job.metadata.name for job in jobs}
