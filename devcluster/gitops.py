"""What the GitOps tools that gate rollouts make of objects, through their own libraries.

`read(objects)` runs devcluster/gitopscheck (Go, built and cached by devcluster.build):
kstatus from sigs.k8s.io/cli-utils, as Flux computes it, and the chart's Argo CD
health.lua on gopher-lua, as Argo CD runs it. Tests assert the Slot contract with it
(docs/design.md, "How GitOps tools read a Slot") on live objects and on fixtures.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from devcluster import build

HEALTH_LUA = pathlib.Path(__file__).resolve().parents[1] / "charts" / "slot-operator" / "argocd" / "health.lua"

# What a rollout gate does with each result: Flux's `wait: true` and Argo CD's sync waves.
GATE = {
    "Current": "pass",
    "InProgress": "wait",
    "Failed": "stop",
    "Healthy": "pass",
    "Progressing": "wait",
    "Suspended": "wait",
    "Degraded": "stop",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reading:
    kstatus: str
    kstatus_message: str
    argo: str
    argo_message: str

    @property
    def pair(self) -> tuple[str, str]:
        return self.kstatus, self.argo

    @property
    def agree(self) -> bool:
        """Both tools take the same decision: pass, wait or stop."""
        decision = GATE.get(self.kstatus)
        return decision is not None and decision == GATE.get(self.argo)


def read(objects: Sequence[Mapping[str, Any]], *, health_lua: pathlib.Path = HEALTH_LUA) -> list[Reading]:
    binary = build.tool("gitopscheck")
    proc = subprocess.run(
        [str(binary), "-health-lua", str(health_lua)],
        input=json.dumps(list(objects), default=str),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"gitopscheck failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return [
        Reading(
            kstatus=entry["kstatus"]["status"],
            kstatus_message=entry["kstatus"]["message"],
            argo=entry["argo"]["status"],
            argo_message=entry["argo"]["message"],
        )
        for entry in json.loads(proc.stdout)
    ]


def read_one(obj: Mapping[str, Any]) -> Reading:
    return read([obj])[0]


def flux_gate(readings: Sequence[Reading]) -> str:
    """What a Flux Kustomization with `wait: true` does with these objects' kstatus.

    pass: every one is Current (the Kustomization is Ready; Kustomizations that depend on it run).
    stop: one is Failed (Flux ends the health check early, the Kustomization is not Ready).
    wait: otherwise (until every one is Current, one fails, or the Kustomization's timeout).
    """
    statuses = {reading.kstatus for reading in readings}
    if "Failed" in statuses:
        return "stop"
    return "pass" if statuses == {"Current"} else "wait"
