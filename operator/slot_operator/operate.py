"""The operator itself: `slot-operator [flags]` (see cli.py for the other commands)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import kopf

from slot_operator import config as config_module
from slot_operator import logs, standby
from slot_operator.kube import leadership
from slot_operator.metrics import Metrics
from slot_operator.runtime import timing

logger = logging.getLogger(__name__)


def main(argv: Sequence[str]) -> int:
    try:
        config = config_module.parse(argv, os.environ)
        if config.leader_elect:
            lease_namespace = leadership.default_namespace(config.leader_elect_namespace)
    except (config_module.ConfigError, ValueError) as exc:
        print(f"slot-operator: error: {exc}", file=sys.stderr)
        return 2
    kopf.configure(log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL)
    logs.install()  # the probe's words reach log lines: mask credentials as in status and Events
    # kopf logs every successful low-level handler call at INFO: one line per watch event. Failures still show.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if os.environ.get("SLOT_OPERATOR_TIMING_LOG"):  # one line per verdict, where its time went (`make bench`)
        timing.enable()
    import slot_operator.lifecycle  # noqa: F401 - registers the start-up, clean-up and health handlers with kopf

    # Metrics are served by every replica (a standby reports slot_operator_leader 0), like controller-runtime.
    metrics = Metrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    try:
        if config.leader_elect:
            asyncio.run(_lead(config, metrics, lease_namespace))
        else:
            metrics.leader.set(1)
            asyncio.run(_operate(config, metrics))
    except leadership.LeadershipLost as exc:
        logger.error("%s: stopping", exc)
        return 1
    return 0


async def _operate(config: config_module.Config, metrics: Metrics) -> None:
    await kopf.operator(
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
        memo=kopf.Memo(config=config, metrics=metrics),
    )


async def _lead(config: config_module.Config, metrics: Metrics, namespace: str) -> None:
    waiting = await standby.serve(config.health_port) if config.health_port else None

    async def operate() -> None:
        if waiting is not None:
            await waiting.cleanup()  # kopf's health endpoint takes over the port
        metrics.leader.set(1)
        await _operate(config, metrics)

    await leadership.run_as_leader(
        operate,
        namespace=namespace,
        lease=config.leader_elect_lease,
        holder=leadership.identity(os.environ.get("POD_NAME")),
        observe=metrics.observe_request,
    )
