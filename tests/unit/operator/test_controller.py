"""The controller's workers (runtime/controller.py): a reconcile's Result is when its Slot is looked at next.

No sleeps: "not again" is a wait for a second reconcile under an `asyncio.wait_for` deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
from slot_operator import metrics
from slot_operator.config import Config
from slot_operator.kube.api import ApiClient
from slot_operator.kube.cache import Cache
from slot_operator.kube.informer import Key
from slot_operator.kube.writer import KubeWriter
from slot_operator.runtime.controller import Controller
from slot_operator.runtime.reconciler import Result

NS = "ns"
KEY = (NS, "s")
SOON = 0.05  # a wake-up asked for before the reconcile


def slot_appears(controller: Controller) -> None:
    """The Slot's watch event: the cache files it and the controller queues it."""
    assert controller.cache is not None
    meta = {"name": "s", "namespace": NS, "uid": "uid-s", "resourceVersion": "1", "generation": 1}
    controller.cache.store("slots", NS).apply("ADDED", {"metadata": meta, "spec": {}, "status": {}})


class Reconciles:
    """Stands in for SlotReconciler: answers `result`, and says when it was called."""

    def __init__(self, result: Result) -> None:
        self.result = result
        self.calls: asyncio.Queue[Key] = asyncio.Queue()

    async def reconcile(self, key: Key) -> Result:
        self.calls.put_nowait(key)
        return self.result


@pytest.fixture
async def controller() -> AsyncIterator[Controller]:
    api = ApiClient(server="https://127.0.0.1:1", ssl_context=ssl.create_default_context())
    ctl = Controller(writer=KubeWriter(api), config=Config(namespaces=(NS,), workers=1), metrics=metrics.Metrics())
    await ctl.start(Cache(api, namespaces=(NS,), listener=ctl.listener()))
    yield ctl
    await ctl.stop()
    await api.close()


async def test_the_result_replaces_a_wake_up_asked_for_earlier(controller: Controller) -> None:
    stand_in = Reconciles(Result(requeue_after=60))
    controller.reconciler = stand_in  # type: ignore[assignment]
    controller.queue.add_after(KEY, SOON)  # a probe's deadline, say, then the probe ended
    slot_appears(controller)
    assert await asyncio.wait_for(stand_in.calls.get(), 2) == KEY
    with pytest.raises(TimeoutError):  # the earlier wake-up was dropped: next look in 60 s
        await asyncio.wait_for(stand_in.calls.get(), SOON * 6)


async def test_a_result_without_a_time_leaves_no_wake_up(controller: Controller) -> None:
    stand_in = Reconciles(Result())
    controller.reconciler = stand_in  # type: ignore[assignment]
    controller.queue.add_after(KEY, SOON)
    slot_appears(controller)
    assert await asyncio.wait_for(stand_in.calls.get(), 2) == KEY
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stand_in.calls.get(), SOON * 6)
