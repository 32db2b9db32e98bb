"""Lease-based leader election: with several replicas, only the Lease holder runs the operator.

kopf's own peering pauses only kopf's watch streams; this operator also has its own
reconcile workers and timers, so the whole operator runs under the Lease instead.
Losing the Lease stops the operator (the pod restarts and queues up again), the
standard behaviour of Kubernetes controllers; a clean shutdown hands the Lease over.

The algorithm is client-go's: a candidate takes the Lease when it is free or when its
holder has not renewed it for `LEASE_DURATION` as measured on the candidate's own
clock (since it last saw the record change), so clock skew between nodes does not
matter; every write is conditional on the resourceVersion read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import pathlib
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from slot_operator.kube.api import ApiClient, ApiError, Observer
from slot_operator.kube.writer import KubeWriter

logger = logging.getLogger(__name__)

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15, 10, 2  # seconds; client-go's defaults
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


def _micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Candidate:
    """One candidate's view of one Lease object."""

    def __init__(self, store: KubeWriter, *, namespace: str, name: str, holder: str) -> None:
        self._store = store
        self.namespace, self.name, self.holder = namespace, name, holder
        self._seen: tuple[Any, ...] | None = None  # (holder, renewTime) last observed ...
        self._seen_at = 0.0  # ... and when, on our monotonic clock

    async def try_acquire_or_renew(self) -> bool:
        lease = await self._store.get_lease(self.namespace, self.name)
        now = _micro_time()
        if lease is None:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"leaseTransitions": 0},
            }
        spec = dict(lease.get("spec") or {})
        record = (spec.get("holderIdentity"), spec.get("renewTime"))
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        holder = spec.get("holderIdentity")
        duration = int(spec.get("leaseDurationSeconds") or LEASE_DURATION)
        if holder and holder != self.holder and time.monotonic() - self._seen_at < duration:
            return False  # held by a live candidate
        if holder != self.holder:
            spec["acquireTime"] = now
            if holder:  # taken over from an expired holder
                spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.holder, renewTime=now, leaseDurationSeconds=LEASE_DURATION)
        return await self._store.write_lease({**lease, "spec": spec}, within=RENEW_DEADLINE)

    async def release(self) -> bool:
        """Hand the Lease over at once on a clean stop, instead of making the next leader wait for it to expire."""
        lease = await self._store.get_lease(self.namespace, self.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.holder:
            return False
        return await self._store.write_lease(
            {**lease, "spec": {**lease["spec"], "holderIdentity": None, "renewTime": None}}, within=RENEW_DEADLINE
        )


async def run_as_leader(
    run: Callable[[], Coroutine[Any, Any, None]],
    *,
    namespace: str,
    lease: str,
    holder: str,
    observe: Observer | None = None,
) -> None:
    """Wait for the Lease, then `run()` while renewing it; raise LeadershipLost if renewal fails.

    `observe` counts the Lease's API calls with the operator's own (slot_operator_api_requests_total).
    """
    api = await ApiClient.from_environment(observe=observe)
    store = KubeWriter(api)
    candidate = _Candidate(store, namespace=namespace, name=lease, holder=holder)
    try:
        logger.info("waiting for Lease %s/%s as %s", namespace, lease, holder)
        while not await _attempt(candidate, within=RENEW_DEADLINE):  # noqa: ASYNC110 - polling a remote Lease
            await asyncio.sleep(RETRY_PERIOD)
        logger.info("acquired Lease %s/%s", namespace, lease)
        working = asyncio.create_task(run(), name="operator")
        renewing = asyncio.create_task(_renew(candidate), name="lease-renewal")
        await asyncio.wait({working, renewing}, return_when=asyncio.FIRST_COMPLETED)
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)  # no renewal in flight while releasing below
        if not working.done():
            working.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await working
            raise LeadershipLost(f"could not renew Lease {namespace}/{lease} within {RENEW_DEADLINE}s")
        working.result()
        if await candidate.release():
            logger.info("released Lease %s/%s", namespace, lease)
    finally:
        await api.close()


async def _attempt(candidate: _Candidate, *, within: float) -> bool:
    """One read-and-write of the Lease, bounded in time: a hung call must not outlive the renew deadline."""
    try:
        async with asyncio.timeout(within):
            return await candidate.try_acquire_or_renew()
    except (ApiError, OSError, aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("Lease %s/%s: %s", candidate.namespace, candidate.name, exc or type(exc).__name__)
        return False


async def _renew(candidate: _Candidate) -> None:
    """Returns once the Lease has not been renewed for RENEW_DEADLINE seconds (then another may take it)."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(RETRY_PERIOD)
        remaining = last + RENEW_DEADLINE - time.monotonic()
        if remaining <= 0:
            return
        started = time.monotonic()  # a renewal counts from when it was sent, not when it was answered
        if await _attempt(candidate, within=remaining):
            last = started
