"""The `slot-operator` console script (also `python -m slot_operator`)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import kopf

from slot_operator import config as config_module


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = config_module.parse(sys.argv[1:] if argv is None else argv, os.environ)
    except config_module.ConfigError as exc:
        print(f"slot-operator: error: {exc}", file=sys.stderr)
        return 2
    kopf.configure(log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL)
    # kopf logs every successful low-level handler call at INFO: one line per watch event. Failures still show.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import slot_operator.handlers  # noqa: F401 - registers the handlers with kopf

    asyncio.run(
        kopf.operator(
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=config.peering is None,
            peering_name=config.peering,
            priority=config.priority,
            liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
            memo=kopf.Memo(config=config),
        )
    )
    return 0
