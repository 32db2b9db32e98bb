"""BENCHMARK BASELINE: not part of the product, never run outside `make bench`.

The least a client must do to give N Slots a verdict: for each new Slot, create the probe Job
the operator would create, learn the probe container's exit code from a watch of the probe
pods once the pod has terminated (the ownership audit beside the probe too: a verdict carries
its report, docs/design.md §2.4), and write one status patch. No conditions, no queue status, no retries, no adoption
after a restart, no events: it exists so that `make bench` can show what the operator's
guarantees cost on top of the unavoidable work (one Job and one status write per probe).

    python -m bench.baseline --namespace NS --cap C      (KUBECONFIG selects the cluster and identity)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
from typing import Any

from slot_operator.kube.api import ApiClient
from slot_operator.kube.informer import Informer, Object
from slot_operator.logic import jobs, names
from slot_operator.logic.phases import phase_for_exit
from slot_operator.logic.spec import parse_spec

from bench.observe import pod_terminated

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


async def run(namespace: str, cap: int) -> None:
    api = await ApiClient.from_environment()
    loop = asyncio.get_running_loop()
    exits: dict[str, asyncio.Future[int]] = {}  # Job name -> the probe container's exit code
    new_slots: asyncio.Queue[Object] = asyncio.Queue()
    seen: set[str] = set()

    def on_pod(old: Object | None, new: Object | None) -> None:
        if new is None or not pod_terminated(new):
            return  # as the operator's verdict, wait for the audit beside the probe
        for status in (new.get("status") or {}).get("containerStatuses") or ():
            terminated = (status.get("state") or {}).get("terminated")
            if status.get("name") == names.PROBE_CONTAINER and terminated:
                job = str(new["metadata"]["labels"][JOB_NAME_LABEL])  # type: ignore[index]
                future = exits.setdefault(job, loop.create_future())
                if not future.done():
                    future.set_result(int(terminated["exitCode"]))

    def on_slot(old: Object | None, new: Object | None) -> None:
        # New Slots only (the CRD defaults status to {observedGeneration: 0}: no probe has written it).
        if new is not None and not (new.get("status") or {}).get("lastProbe") and new["metadata"]["name"] not in seen:
            seen.add(new["metadata"]["name"])
            new_slots.put_nowait(new)

    watches = [
        Informer(
            api, resource="slots", path=f"/apis/woved.dev/v1alpha1/namespaces/{namespace}/slots", on_change=on_slot
        ),
        Informer(
            api,
            resource="pods",
            path=f"/api/v1/namespaces/{namespace}/pods",
            selectors={"labelSelector": names.PROBE_SELECTOR},
            on_change=on_pod,
        ),
    ]
    places = asyncio.Semaphore(cap)
    probes: set[asyncio.Task[None]] = set()

    async def probe(slot: dict[str, Any]) -> None:
        meta = slot["metadata"]
        spec = parse_spec(
            slot["spec"], default_interval=datetime.timedelta(hours=6), default_timeout=datetime.timedelta(minutes=2)
        )
        name = jobs.job_name(meta["name"], meta["uid"], "baseline")
        async with places:
            manifest = jobs.build_probe_job(
                name=name,
                namespace=namespace,
                slot_name=meta["name"],
                slot_uid=meta["uid"],
                generation=int(meta.get("generation") or 1),
                trigger="created",
                spec=spec,
                node=None,
                ttl=datetime.timedelta(hours=1),
                # The same pods as the operator's: with the ownership audit when it runs one.
                audit_image=os.environ.get("SLOT_OPERATOR_AUDIT_IMAGE") or None,
            )
            await api.request("create", f"/apis/batch/v1/namespaces/{namespace}/jobs", resource="jobs", body=manifest)
            code = await exits.setdefault(name, loop.create_future())
        phase = phase_for_exit(code)
        await api.request(
            "patch",
            f"/apis/woved.dev/v1alpha1/namespaces/{namespace}/slots/{meta['name']}/status",
            resource="slots/status",
            body={
                "status": {
                    "phase": phase.value if phase else "Pending",
                    "observedGeneration": int(meta.get("generation") or 1),
                    "lastProbe": {"jobName": name, "exitCode": code},
                }
            },
            content_type="application/merge-patch+json",
        )

    def _finished(task: asyncio.Task[None]) -> None:
        probes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            print(f"probe failed: {task.exception()!r}", flush=True)  # the bench then times out, naming this log

    tasks = [asyncio.create_task(watch.run()) for watch in watches]
    await asyncio.gather(*(watch.synced.wait() for watch in watches))
    print("watching", flush=True)
    try:
        while True:
            task = asyncio.create_task(probe(await new_slots.get()))
            probes.add(task)
            task.add_done_callback(_finished)
    finally:
        for task in [*tasks, *probes]:
            task.cancel()
        await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--cap", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(run(args.namespace, args.cap))


if __name__ == "__main__":
    main()
