"""Container probes: the Kubernetes API's defaults and named ports, and the thresholds' hysteresis."""

from __future__ import annotations

import pytest

from devcluster.nodesim import probes

CONTAINER = {
    "name": "operator",
    "ports": [{"name": "health", "containerPort": 8081}, {"name": "metrics", "containerPort": 8080}],
    "startupProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 2, "failureThreshold": 60},
    "livenessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 5},
    "readinessProbe": {"httpGet": {"port": "8081", "httpHeaders": [{"name": "X-A", "value": "b"}]}},
}


def test_probes_resolve_named_ports_and_take_api_defaults() -> None:
    startup, liveness, readiness = probes.container_probes(CONTAINER)
    assert (startup.kind, startup.port, startup.path, startup.period, startup.failure_threshold) == (
        "startup", 8081, "/healthz", 2.0, 60,
    )  # fmt: skip
    assert (liveness.port, liveness.path, liveness.timeout, liveness.period) == (8080, None, 5.0, 10.0)
    assert (readiness.port, readiness.path, readiness.headers) == (8081, "/", (("X-A", "b"),))
    assert (readiness.success_threshold, readiness.failure_threshold, readiness.initial_delay) == (1, 3, 0.0)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"exec": {"command": ["true"]}}, "exec is not simulated"),
        ({"httpGet": {"port": "nope"}}, "'nope' is not a number or a named container port"),
        ({"httpGet": {"port": 1, "scheme": "HTTPS"}}, "only scheme HTTP"),
    ],
)
def test_unsupported_probes_are_named(spec: dict[str, object], needle: str) -> None:
    with pytest.raises(probes.ProbeInvalid, match=needle):
        probes.build_probe("liveness", spec, ports={})


def test_thresholds_need_consecutive_outcomes() -> None:
    result = probes.Result(probes.Probe(kind="liveness", port=1, path="/", success_threshold=2, failure_threshold=3))
    assert [result.record(ok) for ok in (True, True, True)] == [None, True, None]
    assert [result.record(ok) for ok in (False, False, True, False, False, False)] == [None] * 5 + [False]
    assert [result.record(ok) for ok in (True, False, True, True)] == [None, None, None, True]
