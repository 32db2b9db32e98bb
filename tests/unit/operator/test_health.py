"""Liveness (lifecycle/health.py): a dead or silent watch, or a stuck worker, fails the health endpoint."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator

import kopf
import pytest
from slot_operator import metrics
from slot_operator.config import Config
from slot_operator.kube.api import ApiClient
from slot_operator.kube.cache import Cache
from slot_operator.kube.writer import KubeWriter
from slot_operator.lifecycle import health
from slot_operator.runtime import controller as controller_module


@pytest.fixture
async def memo() -> AsyncIterator[kopf.Memo]:
    api = ApiClient(server="https://127.0.0.1:1", ssl_context=ssl.create_default_context())
    ctl = controller_module.Controller(writer=KubeWriter(api), config=Config(), metrics=metrics.Metrics())
    cache = Cache(api, namespaces=("ns",), listener=ctl.listener())
    ctl.cache = cache
    yield kopf.Memo(controller=ctl, cache=cache)
    await api.close()


def test_healthy_reports_the_counts(memo: kopf.Memo) -> None:
    assert health.probe_counts(memo=memo) == {"running": 0, "queued": 0}


def test_a_silent_watch_fails_liveness(memo: kopf.Memo) -> None:
    informer = memo.cache.informers[0]
    informer.last_contact = time.monotonic() - health.SILENT_WATCH - 1
    with pytest.raises(kopf.PermanentError, match="slots"):
        health.probe_counts(memo=memo)


def test_a_stuck_worker_fails_liveness(memo: kopf.Memo) -> None:
    since = time.monotonic() - controller_module.STUCK_AFTER - 1
    memo.controller.busy.begin("worker-3", ("ns", "s"), since=since)
    with pytest.raises(kopf.PermanentError, match="worker-3 on ns/s"):
        health.probe_counts(memo=memo)


def test_a_busy_worker_within_bounds_is_fine(memo: kopf.Memo) -> None:
    memo.controller.busy.begin("worker-0", ("ns", "s"), since=time.monotonic() - 5)
    assert health.probe_counts(memo=memo)["running"] == 0


def test_not_started_yet_is_not_a_failure() -> None:
    assert health.probe_counts(memo=kopf.Memo()) == {}
