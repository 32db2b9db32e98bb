"""Prometheus metrics. Label values are identifiers and enums only: never messages or images."""

from __future__ import annotations

import contextlib
import datetime

import prometheus_client

from slot_operator.logic.verdict import Phase

_PREFIX = "slot_operator"
# Probes take seconds to minutes; buckets cover the 5s..1h timeout range.
_DURATION_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry or prometheus_client.CollectorRegistry()
        r = self.registry
        self.phase = prometheus_client.Gauge(
            f"{_PREFIX}_slot_phase",
            "1 for the Slot's current phase, 0 for the others (a state set).",
            ["namespace", "slot", "phase"],
            registry=r,
        )
        self.ready = prometheus_client.Gauge(
            f"{_PREFIX}_slot_ready",
            "1 when the Slot's latest verdict on its current generation is Ready.",
            ["namespace", "slot"],
            registry=r,
        )
        self.last_probe = prometheus_client.Gauge(
            f"{_PREFIX}_slot_last_probe_timestamp_seconds",
            "When the Slot's latest probe attempt finished.",
            ["namespace", "slot"],
            registry=r,
        )
        self.last_ready = prometheus_client.Gauge(
            f"{_PREFIX}_slot_last_ready_timestamp_seconds",
            "When the Slot last had a Ready verdict.",
            ["namespace", "slot"],
            registry=r,
        )
        self.duration = prometheus_client.Histogram(
            f"{_PREFIX}_probe_duration_seconds",
            "Probe wall time from Job creation to its outcome.",
            ["outcome"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.results = prometheus_client.Counter(
            f"{_PREFIX}_probe_results_total",
            "Finished probe attempts by result: a phase for verdicts, a reason when there was none.",
            ["result"],
            registry=r,
        )
        self.queue_depth = prometheus_client.Gauge(
            f"{_PREFIX}_probe_queue_depth", "Slots due for a probe and waiting for the concurrency cap.", registry=r
        )
        self.running = prometheus_client.Gauge(f"{_PREFIX}_probes_running", "Probe Jobs currently running.", registry=r)
        self.api_requests = prometheus_client.Counter(
            f"{_PREFIX}_api_requests_total",
            "Requests to the Kubernetes API by verb, resource and HTTP status (0: no answer).",
            ["verb", "resource", "code"],
            registry=r,
        )
        self.leader = prometheus_client.Gauge(
            f"{_PREFIX}_leader", "1 when this replica runs the operator (holds the Lease, or runs alone).", registry=r
        )

    def observe_slot(
        self,
        namespace: str,
        slot: str,
        *,
        phase: Phase,
        ready: bool,
        last_probe: datetime.datetime | None,
        last_ready: datetime.datetime | None,
    ) -> None:
        for candidate in Phase:
            self.phase.labels(namespace, slot, candidate.value).set(1 if candidate is phase else 0)
        self.ready.labels(namespace, slot).set(1 if ready else 0)
        if last_probe is not None:
            self.last_probe.labels(namespace, slot).set(last_probe.timestamp())
        if last_ready is not None:
            self.last_ready.labels(namespace, slot).set(last_ready.timestamp())

    def observe_request(self, verb: str, resource: str, code: int) -> None:
        self.api_requests.labels(verb, resource, str(code)).inc()

    def forget_slot(self, namespace: str, slot: str) -> None:
        for candidate in Phase:
            _remove(self.phase, namespace, slot, candidate.value)
        for gauge in (self.ready, self.last_probe, self.last_ready):
            _remove(gauge, namespace, slot)

    def serve(self, port: int) -> None:
        prometheus_client.start_http_server(port, registry=self.registry)


def _remove(metric: prometheus_client.Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
