"""The contract on live Slots: kstatus (Flux) and Argo CD's health.lua read every state as docs/design.md says.

The real operator puts real Slots into each state of tests/gitops_states.py (the table docs/design.md
shows); each live object is then read by the real libraries (devcluster/gitops.py: kstatus from
sigs.k8s.io/cli-utils, health.lua on gopher-lua), which must agree with the table and with each other.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from devcluster import cluster, gitops
from tests.gitops_states import EXPECTED
from tests.integration import slots
from tests.integration.factories import ClaimFactory, OperatorFactory
from tests.integration.kubewait import wait_for
from tests.integration.slots import (
    VALID_CODEX,
    condition,
    create_slot,
    get_slot,
    patch_slot,
    valid_home,
    wait_slot,
    wait_verdict,
    write_file,
)

pytestmark = pytest.mark.integration

# The fake agent's files, in the store the simulator runs images from.
ROOTFS = pathlib.Path("local", "agent-shell", "rootfs")
SLOW = [{"name": "SMOKE_TEST_SLEEP", "value": "300"}]
PROBE_REQUEST = "woved.dev/probe-requested-at"
LONG_CLAIM = "codex-agent-home-for-the-platform-team-number-1"


def assert_state(api: client.ApiClient, namespace: str, names: dict[str, str]) -> None:
    """Read the live Slots `names` (state -> Slot name) and check both tools against the table."""
    live = {state: get_slot(api, namespace, name) for state, name in names.items()}
    readings = dict(zip(live, gitops.read(list(live.values())), strict=True))
    wrong = {
        state: (reading, live[state].get("status"))
        for state, reading in readings.items()
        if reading.pair != EXPECTED[state] or not reading.agree
    }
    assert not wrong, json.dumps({s: [repr(r), st] for s, (r, st) in wrong.items()}, indent=1, default=str)


class MutableImage:
    """An image tag in the local store whose behaviour a test changes in place, like a re-pushed mutable tag."""

    def __init__(self, store: pathlib.Path) -> None:
        self.repository = f"local/gitops-{uuid.uuid4().hex[:8]}/agent-shell"
        self.root = store / self.repository.split("/")[0] / self.repository.split("/")[1]
        self.store = store

    def tag(self, tag: str, **env: str) -> str:
        path = self.store / self.repository / tag / "image.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "rootfs": str(self.store / ROOTFS),
            "entrypoint": ["entrypoint"],
            "env": {"WOVED_TASK_AGENT": "codex", "HOME": "/home/codex", **env},
            "user": "10001:10001",
            "path": ["bin", "cli"],
        }
        path.write_text(json.dumps(config))
        return f"{self.repository}:{tag}"


@pytest.fixture
def mutable_image(kube_cluster: cluster.Cluster) -> Iterator[MutableImage]:
    image = MutableImage(kube_cluster.images_dir)
    yield image
    shutil.rmtree(image.root, ignore_errors=True)


def _reason(kind: str, reason: str) -> Callable[[dict[str, Any]], bool]:
    return lambda slot: condition(slot, kind).get("reason") == reason


def test_not_yet_seen_by_the_operator(api_client: client.ApiClient, namespace: str) -> None:
    """No operator: the API server's status default keeps kstatus from calling a bare Slot Current."""
    create_slot(api_client, namespace, "s", claim="home")
    assert get_slot(api_client, namespace, "s")["status"] == {"observedGeneration": 0}
    assert_state(api_client, namespace, {"not-yet-seen": "s"})


def test_verdicts_failures_and_spec_faults(
    kube_cluster: cluster.Cluster,
    api_client: client.ApiClient,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
) -> None:
    # A file in the image (the simulator has no chroot: image files are host paths): mounting the claim onto
    # it fails in the runtime, the way `/entrypoint.sh` would in a real image.
    image_file = str(kube_cluster.images_dir / ROOTFS / "bin" / "entrypoint")
    valid_home(claim, "valid")
    claim("empty")
    write_file(claim("blank"), ".codex/auth.json", "")
    for name in ("crash", "suspended", "tolerations", "mount"):
        valid_home(claim, name)
    operator("--retry-base=10m", "--retry-max=10m")  # a probe without verdict stays in its state
    create_slot(api_client, namespace, "ready", claim="valid")
    create_slot(api_client, namespace, "needs-init", claim="empty")
    create_slot(api_client, namespace, "needs-reauth", claim="blank")
    create_slot(api_client, namespace, "image-broken", claim="valid", image="local/agent-shell:does-not-exist")
    create_slot(api_client, namespace, "claim-missing", claim=LONG_CLAIM)
    create_slot(api_client, namespace, "crash", claim="crash", env=[{"name": "SMOKE_TEST_CRASH", "value": "1"}])
    create_slot(api_client, namespace, "suspended", claim="suspended", suspend=True)
    # Kubernetes' own Job validation refuses this (a value with operator Exists); the Slot schema does not.
    create_slot(api_client, namespace, "tolerations", claim="tolerations", tolerations=[
        {"key": "k", "operator": "Exists", "value": "v"}])  # fmt: skip
    create_slot(api_client, namespace, "mount", claim="mount", mountPath=image_file)

    for name, phase in (("ready", "Ready"), ("needs-init", "NeedsInit"), ("needs-reauth", "NeedsReauth")):
        wait_verdict(api_client, namespace, name, phase)
    wait_verdict(api_client, namespace, "image-broken", "ImageBroken")
    missing = wait_slot(api_client, namespace, "claim-missing", _reason("ProbeSucceeded", "ClaimNotFound"))
    wait_slot(api_client, namespace, "crash", _reason("ProbeSucceeded", "ProbeCrashed"))
    wait_slot(api_client, namespace, "suspended", _reason("Reconciling", "Suspended"))
    rejected = wait_slot(api_client, namespace, "tolerations", _reason("Stalled", "InvalidSpec"))
    mount = wait_slot(api_client, namespace, "mount", _reason("Stalled", "InvalidSpec"), timeout=120)

    assert_state(api_client, namespace, {
        "ready": "ready", "needs-init": "needs-init", "needs-reauth": "needs-reauth", "image-broken": "image-broken",
        "claim-missing": "claim-missing", "first-probe-crashed": "crash",
        "suspended-before-any-verdict": "suspended", "invalid-spec": "tolerations", "mount-failed": "mount",
    })  # fmt: skip
    # The refused Job and the failed mount name the Slot's field, and neither is retried as if transient.
    assert condition(rejected, "Stalled")["message"].startswith(
        "the API server refused the probe Job: spec.tolerations[0].operator: "
    )
    assert condition(mount, "Stalled")["message"].startswith(
        "spec.mountPath: the container runtime could not mount the claim: error mounting"
    )
    for slot in (rejected, mount):
        assert "nextProbeTime" not in slot["status"]
        assert slot["status"]["consecutiveProbeFailures"] == 1
    # Names in messages survive redaction, however long.
    assert LONG_CLAIM in condition(missing, "ProbeSucceeded")["message"]
    slots.wait_event(api_client, namespace, "mount", reason="InvalidSpec", kind="Warning")
    wait_for(lambda: not _active_jobs(api_client, namespace, "mount"), timeout=30, message="failed mount's Job stopped")


def _active_jobs(api: client.ApiClient, namespace: str, slot: str) -> list[Any]:
    return [
        job
        for job in slots.probe_jobs(api, namespace)
        if job.metadata.annotations.get("woved.dev/slot") == slot and not job.status.completion_time
        and not any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or ())
    ]  # fmt: skip


def _kubectl_wait_ready(kubeconfig: pathlib.Path, namespace: str, name: str) -> bool:
    """`kubectl wait --for=condition=Ready` as a person runs it: does it see the current generation Ready?"""
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", "-n", namespace, "wait", "--for=condition=Ready",
         "--timeout=2s", f"slot/{name}"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return result.returncode == 0


def test_queued_states_including_a_stalled_slot_with_its_fix_in_the_queue(
    kube_cluster: cluster.Cluster,
    api_client: client.ApiClient,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
) -> None:
    valid_home(claim, "a")
    reauth_home = claim("c")
    write_file(reauth_home, ".codex/auth.json", "")
    valid_home(claim, "b")
    valid_home(claim, "d")
    operator("--max-concurrent-probes=1")
    create_slot(api_client, namespace, "a", claim="a")
    create_slot(api_client, namespace, "c", claim="c")
    wait_verdict(api_client, namespace, "a", "Ready")
    wait_verdict(api_client, namespace, "c", "NeedsReauth")
    assert _kubectl_wait_ready(kube_cluster.kubeconfig, namespace, "a")

    create_slot(api_client, namespace, "blocker", claim="b", env=SLOW)  # holds the only probe place
    wait_slot(api_client, namespace, "blocker", _reason("Reconciling", "Probing"))
    create_slot(api_client, namespace, "d", claim="d")
    # New images, pinned by digest (the local store resolves the tag and ignores the digest).
    patch_slot(api_client, namespace, "a", {"spec": {"image": f"{slots.CODEX_IMAGE}@sha256:{'a' * 64}"}})
    # NeedsReauth: a person re-authenticates, and the new image goes out in the same change.
    write_file(reauth_home, ".codex/auth.json", VALID_CODEX)
    patch_slot(api_client, namespace, "c", {"spec": {"image": f"{slots.CODEX_IMAGE}@sha256:{'c' * 64}"}})
    for name in ("d", "a", "c"):
        wait_slot(api_client, namespace, name, _reason("Reconciling", "Queued"), message=f"{name} queued")

    assert_state(api_client, namespace, {
        "probing": "blocker", "queued": "d", "ready-then-new-image-queued": "a",
        "needs-reauth-then-new-image-queued": "c",
    })  # fmt: skip
    # kubectl wait honours Ready's own observedGeneration: generation 1's Ready does not answer for 2.
    assert not _kubectl_wait_ready(kube_cluster.kubeconfig, namespace, "a")

    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        slots.GROUP, slots.VERSION, namespace, slots.PLURAL, "blocker"
    )
    for name in ("a", "c", "d"):
        wait_verdict(api_client, namespace, name, "Ready", timeout=120)
        assert_state(api_client, namespace, {"ready": name})
    assert _kubectl_wait_ready(kube_cluster.kubeconfig, namespace, "a")


def test_new_generation_after_a_ready_verdict_and_reprobes_of_a_judged_one(
    api_client: client.ApiClient,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
    mutable_image: MutableImage,
) -> None:
    for name in ("crash", "suspend", "reprobe", "recrash", "unseen"):
        valid_home(claim, name)
    good = mutable_image.tag("v1")
    crashing = mutable_image.tag("v2", SMOKE_TEST_CRASH="1")
    slow, flaky = mutable_image.tag("slow"), mutable_image.tag("flaky")
    instance = operator("--retry-base=10m", "--retry-max=10m")
    for name, image in (("crash", good), ("suspend", good), ("reprobe", slow), ("recrash", flaky), ("unseen", good)):
        create_slot(api_client, namespace, name, claim=name, image=image)
    for name in ("crash", "suspend", "reprobe", "recrash", "unseen"):
        wait_verdict(api_client, namespace, name, "Ready")

    # A new image whose probe crashes; a new image suspended in the same change.
    patch_slot(api_client, namespace, "crash", {"spec": {"image": crashing}})
    patch_slot(api_client, namespace, "suspend", {"spec": {"image": crashing, "suspend": True}})
    # The same generation probed again, by request: a re-push of the tag makes it slow, or crash.
    mutable_image.tag("slow", SMOKE_TEST_SLEEP="300")
    mutable_image.tag("flaky", SMOKE_TEST_CRASH="1")
    for name in ("reprobe", "recrash"):
        patch_slot(api_client, namespace, name, {"metadata": {"annotations": {PROBE_REQUEST: "r1"}}})

    wait_slot(api_client, namespace, "crash", lambda s: _reason("Reconciling", "Retrying")(s)
              and s["status"]["lastProbe"]["generation"] == 2)  # fmt: skip
    wait_slot(api_client, namespace, "suspend", lambda s: _reason("Reconciling", "Suspended")(s)
              and s["status"]["observedGeneration"] == 2)  # fmt: skip
    wait_slot(api_client, namespace, "reprobe", _reason("Reconciling", "Probing"))
    wait_slot(api_client, namespace, "recrash", lambda s: _reason("Reconciling", "Retrying")(s)
              and s["status"].get("lastHandledProbeRequest") == "r1")  # fmt: skip
    assert_state(api_client, namespace, {
        "ready-then-new-image-crashed": "crash", "ready-then-new-image-suspended": "suspend",
        "ready-reprobing": "reprobe", "ready-reprobe-crashed": "recrash",
    })  # fmt: skip

    # The operator is away when the spec changes: status still speaks for the older generation.
    instance.stop()
    patch_slot(api_client, namespace, "unseen", {"spec": {"image": crashing}})
    assert_state(api_client, namespace, {"spec-not-yet-observed": "unseen"})


def _jobs_of(api: client.ApiClient, namespace: str, slot: str) -> set[str]:
    return {
        job.metadata.name for job in slots.probe_jobs(api, namespace)
        if (job.metadata.annotations or {}).get("woved.dev/slot") == slot
    }  # fmt: skip


def _at(slot: dict[str, Any], generation: int, *, carried: bool) -> bool:
    """Status speaks for `generation`; with `carried`, so does the verdict (Ready), else it waits, suspended."""
    observed = slot["status"].get("observedGeneration") == generation
    if carried:
        return observed and condition(slot, "Ready").get("observedGeneration") == generation
    return observed and _reason("Reconciling", "Suspended")(slot)


def test_a_change_that_cannot_change_the_verdict_keeps_it(
    kube_cluster: cluster.Cluster,
    api_client: client.ApiClient,
    namespace: str,
    claim: ClaimFactory,
    operator: OperatorFactory,
) -> None:
    """Suspending a Slot, or changing its interval or timeout, keeps its verdict for the new generation (Ready:
    Current and Healthy; NeedsReauth: Failed and Degraded), without a probe. Suspended together with a new image,
    the new generation has no verdict and gets no probe: InProgress (kstatus), Suspended (health.lua)."""
    for name in ("suspended", "rescheduled", "new-image"):
        valid_home(claim, name)
    write_file(claim("reauth"), ".codex/auth.json", "")
    operator()
    for name in ("suspended", "rescheduled", "new-image", "reauth"):
        create_slot(api_client, namespace, name, claim=name)
    for name in ("suspended", "rescheduled", "new-image"):
        wait_verdict(api_client, namespace, name, "Ready")
    wait_verdict(api_client, namespace, "reauth", "NeedsReauth")
    first = {
        name: _jobs_of(api_client, namespace, name) for name in ("suspended", "rescheduled", "new-image", "reauth")
    }
    assert all(len(jobs) == 1 for jobs in first.values()), first

    patch_slot(api_client, namespace, "suspended", {"spec": {"suspend": True}})
    patch_slot(api_client, namespace, "reauth", {"spec": {"suspend": True}})
    patch_slot(api_client, namespace, "rescheduled", {"spec": {"interval": "2h", "timeout": "3m"}})
    new_image = f"{slots.CODEX_IMAGE}@sha256:{'b' * 64}"
    patch_slot(api_client, namespace, "new-image", {"spec": {"image": new_image, "suspend": True}})
    states = {"ready-then-suspended": "suspended", "needs-reauth-then-suspended": "reauth", "ready": "rescheduled",
              "ready-then-new-image-suspended": "new-image"}  # fmt: skip
    for generation in (2, 3):
        for state, name in states.items():
            carried = state != "ready-then-new-image-suspended"
            wait_slot(api_client, namespace, name, lambda s, g=generation, c=carried: _at(s, g, carried=c),
                      message=f"{name} at generation {generation}")  # fmt: skip
        assert_state(api_client, namespace, states)
        if generation == 2:
            # Another change of the schedule only: once it is observed, the reconcile of generation 2 has ended
            # (a Slot is reconciled by one worker at a time), so any probe Job it made would be there to see.
            for name in states.values():
                patch_slot(api_client, namespace, name, {"spec": {"interval": "3h"}})

    assert {name: _jobs_of(api_client, namespace, name) for name in first} == first  # not one probe more
    assert _kubectl_wait_ready(kube_cluster.kubeconfig, namespace, "suspended")  # kubectl wait honours it too
    # The next periodic probe follows the interval now in the spec (plus its jitter), counted from the last probe.
    status = get_slot(api_client, namespace, "rescheduled")["status"]
    last = datetime.datetime.fromisoformat(status["lastProbe"]["completionTime"])
    next_time = datetime.datetime.fromisoformat(status["nextProbeTime"])
    assert datetime.timedelta(hours=3) <= next_time - last <= datetime.timedelta(hours=3.15), status


def test_a_probe_in_flight_answers_for_a_schedule_only_change(
    api_client: client.ApiClient, namespace: str, claim: ClaimFactory, operator: OperatorFactory
) -> None:
    """A probe running for generation 1 is not stopped when generation 2 changes only the interval; its verdict
    is generation 2's."""
    valid_home(claim, "s")
    operator()
    create_slot(api_client, namespace, "s", claim="s", env=[{"name": "SMOKE_TEST_SLEEP", "value": "15"}])
    wait_slot(api_client, namespace, "s", _reason("Reconciling", "Probing"))
    (job,) = _jobs_of(api_client, namespace, "s")
    patch_slot(api_client, namespace, "s", {"spec": {"interval": "1h"}})
    seen = wait_slot(api_client, namespace, "s", lambda s: s["status"].get("observedGeneration") == 2)
    assert (seen["status"].get("lastProbe"), seen["status"]["currentProbe"]["jobName"]) == (None, job), seen["status"]
    slot = wait_verdict(api_client, namespace, "s", "Ready", generation=2, timeout=120)
    assert (slot["status"]["lastProbe"]["jobName"], slot["status"]["lastProbe"]["generation"]) == (job, 1)
    assert _jobs_of(api_client, namespace, "s") == {job}
    assert_state(api_client, namespace, {"ready": "s"})
