"""Operator start-up and shutdown: the API client, the watch caches and the controller, kept in memo."""

from __future__ import annotations

import gc
import logging
from typing import Any

import kopf

from slot_operator.config import Config
from slot_operator.kube.api import ApiClient
from slot_operator.kube.cache import Cache
from slot_operator.kube.writer import KubeWriter
from slot_operator.metrics import Metrics
from slot_operator.runtime.controller import Controller

# Allocations between collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000
# Every watch must have listed within this long, or the operator stops (and its pod restarts) saying which.
CACHE_SYNC_TIMEOUT = 120.0


@kopf.on.startup()
async def start(*, settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Config = memo.config
    metrics: Metrics = memo.metrics
    # Our own Events describe verdicts; kopf's per-handler success events would only be noise.
    settings.posting.level = logging.WARNING
    # kopf runs the lifecycle (start-up, clean-up, health, signals), not the watches: the operator's own
    # informers do (kube/informer.py says why). So kopf need not discover CRDs or Namespaces either.
    settings.scanning.disabled = True
    api = await ApiClient.from_environment(observe=metrics.observe_request)
    memo.api = api
    controller = Controller(writer=KubeWriter(api), config=config, metrics=metrics)
    cache = Cache(api, namespaces=config.namespaces, listener=controller.listener())
    await cache.start(within=CACHE_SYNC_TIMEOUT)
    memo.cache = cache
    metrics.slots.watch(cache.slots, default_interval=config.default_interval)
    metrics.checks.watch(cache.checks, cache.slot)
    await controller.start(cache)
    memo.controller = controller
    _tune_gc()


def _tune_gc() -> None:
    """Keep the garbage collector's pauses of the event loop short; every verdict waits through them.

    Everything alive once the caches are filled (modules, the first listing) lives as long as the process:
    frozen, no full collection walks it again (one walked ~0.2-0.4 s at 1,000 Slots). Decoded watch events
    die young: with a larger first generation they are gone before a collection, not promoted to be walked
    again by the older ones (the default 700 allocations is a fraction of one decoded pod's objects).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


@kopf.on.cleanup()
async def stop(*, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = getattr(memo, "controller", None)
    cache: Cache | None = getattr(memo, "cache", None)
    api: ApiClient | None = getattr(memo, "api", None)
    if controller is not None:
        await controller.stop()
    if cache is not None:
        await cache.stop()
    if api is not None:
        await api.close()
