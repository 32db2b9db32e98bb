"""`make bench` itself, on a tiny fleet: it runs, and what it counts is right.

Not a timed test: no figure here is compared with a time. It checks the tool (a bench that silently
stopped measuring would mislead) and the counts the cost budget is stated in (docs/design.md §3a):
per probe, the operator makes at most three writes and no reads, the raw client exactly two writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devcluster import cluster

pytestmark = pytest.mark.integration


def test_bench_measures_both_clients_and_the_idle_fleet(kube_cluster: cluster.Cluster) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--slots=4", "--cap=2", "--idle-slots=6", "--idle-sample=1",
         "--timeout=300", f"--cluster-root={kube_cluster.root}", "--json"],
        capture_output=True, text=True, timeout=900, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    operator, raw, idle = results["operator"], results["baseline"], results["idle"]

    assert operator["writes_per_probe"] <= 3
    assert operator["reads_per_probe"] == 0
    assert operator["calls"]["writes"]["create jobs"] == 4
    assert raw["writes_per_probe"] == 2
    assert raw["calls"]["writes"] == {"create jobs": 4, "patch slots/status": 4}
    for result in (operator, raw):
        assert result["latency_p99_s"] is not None  # every verdict was matched to its pod's termination
        assert result["verdicts_per_s"] > 0
    assert idle["slots"] == 6
    assert idle["status_delay_max_s"] >= 0
    assert {target["what"].split(" = ")[0] for target in results["targets"]} >= {
        "API writes per probe",
        "API reads per probe",
    }
