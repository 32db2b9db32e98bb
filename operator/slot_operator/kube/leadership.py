"""Lease-based leader election: with several replicas, only the Lease holder runs the operator.

kopf's own peering pauses only kopf's watch streams; this operator also has its own
reconcile workers and timers, so the whole operator runs under the Lease instead.
Losing the Lease stops the operator (the pod restarts and queues up again), the
standard behaviour of Kubernetes controllers; a clean shutdown hands the Lease over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import socket
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from kubernetes.aio import client as kclient
from kubernetes.aio.leaderelection import electionconfig, leaderelection
from kubernetes.aio.leaderelection.resourcelock import leaselock

from slot_operator.kube.store import new_api_client

logger = logging.getLogger(__name__)

# client-go's defaults: a dead leader is replaced within ~15 s.
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15.0, 10.0, 2.0
_SERVICE_ACCOUNT_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LeadershipLost(RuntimeError):
    """The Lease was lost while leading: the process must stop acting."""


def default_namespace(configured: str | None) -> str:
    if configured:
        return configured
    try:
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        raise ValueError("--leader-elect needs --leader-elect-namespace (or $POD_NAMESPACE) outside a pod") from None


def identity(pod_name: str | None) -> str:
    return pod_name or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


async def run_as_leader(
    run: Callable[[], Coroutine[Any, Any, None]], *, namespace: str, lease: str, holder: str
) -> None:
    """Wait for the Lease, then `run()` while renewing it; raise LeadershipLost if renewal fails."""
    api = await new_api_client()
    acquired = asyncio.Event()

    async def started() -> None:
        acquired.set()

    async def stopped() -> None:
        logger.error("lost Lease %s/%s", namespace, lease)

    election = leaderelection.LeaderElection(
        electionconfig.Config(
            leaselock.LeaseLock(lease, namespace, holder, api),
            lease_duration=LEASE_DURATION,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
            onstarted_leading=started,
            onstopped_leading=stopped,
        )
    )
    logger.info("waiting for Lease %s/%s as %s", namespace, lease, holder)
    renewing = asyncio.create_task(election.run(), name="leader-election")
    try:
        waiting = asyncio.create_task(acquired.wait())
        await asyncio.wait({renewing, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if renewing.done():
            renewing.result()
            raise LeadershipLost(f"leader election for Lease {namespace}/{lease} ended before it was acquired")
        logger.info("acquired Lease %s/%s", namespace, lease)
        working = asyncio.create_task(run(), name="operator")
        await asyncio.wait({renewing, working}, return_when=asyncio.FIRST_COMPLETED)
        if not working.done():
            working.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await working
            raise LeadershipLost(f"lost Lease {namespace}/{lease}")
        working.result()
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        await _release(api, namespace=namespace, lease=lease, holder=holder)
        await api.close()  # type: ignore[no-untyped-call]


async def _release(api: kclient.ApiClient, *, namespace: str, lease: str, holder: str) -> None:
    """Hand the Lease over at once on a clean stop, instead of making the next leader wait for it to expire."""
    leases = kclient.CoordinationV1Api(api)
    try:
        current = await leases.read_namespaced_lease(lease, namespace)
        if current.spec is None or current.spec.holder_identity != holder:
            return
        current.spec.holder_identity = None
        current.spec.renew_time = None
        current.spec.acquire_time = None
        await leases.replace_namespaced_lease(lease, namespace, current)
        logger.info("released Lease %s/%s", namespace, lease)
    except Exception as exc:  # best effort: the Lease expires anyway
        logger.warning("could not release Lease %s/%s: %s", namespace, lease, exc)
