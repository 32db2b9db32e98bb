"""Operator start-up and shutdown: kopf settings, the shared API client and the controller, kept in memo."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from slot_operator.config import Config
from slot_operator.kube.store import KubeStore, new_api_client
from slot_operator.logic import jobs
from slot_operator.metrics import Metrics
from slot_operator.runtime.controller import Controller


@kopf.on.startup()
async def start(*, settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    config: Config = memo.config
    # Our own Events describe verdicts; kopf's per-handler success events would only be noise.
    settings.posting.level = logging.WARNING
    # kopf's bookkeeping goes to status (declared in the CRD), never to annotations a GitOps tool would diff.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.last-handled-configuration")
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Only the operator's own Jobs and pods matter: filter server-side, not after receiving every pod.
    settings.watching.label_selectors["jobs"] = jobs.PROBE_SELECTOR
    settings.watching.label_selectors["pods"] = jobs.PROBE_SELECTOR

    metrics: Metrics = memo.metrics
    store = KubeStore(await new_api_client())
    controller = Controller(store=store, config=config, metrics=metrics)
    await controller.start()
    memo.store, memo.controller = store, controller


@kopf.on.cleanup()
async def stop(*, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = getattr(memo, "controller", None)
    store: KubeStore | None = getattr(memo, "store", None)
    if controller is not None:
        await controller.stop()
    if store is not None:
        await store.close()
