"""Prometheus metrics. Label values are identifiers and enums only: never messages or images.

Every metric is listed, with its labels and meaning, in docs/metrics.md; the chart's alert
rules and dashboard use only these (tests/unit/test_monitoring.py checks both ways).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import prometheus_client

from slot_operator.logic.phases import Phase
from slot_operator.logic.report import SlotView

_PREFIX = "slot_operator"
# Probes take seconds to minutes; buckets cover the 5s..1h timeout range.
_DURATION_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
# Failed reconciles by the Kubernetes API's own StatusReason words (bounded: one per HTTP status it uses).
_API_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
# No answer from the API server (refused, reset, DNS, TLS, none in time).
CONNECTION_ERROR = "ConnectionError"
# A reconcile that failed on something other than the API: a bug, logged with its traceback.
UNEXPECTED = "Unexpected"
ERROR_REASONS = (*_API_REASONS.values(), "ClientError", "ServerError", CONNECTION_ERROR, UNEXPECTED)


def reconcile_error_reason(*, status: int | None, reason: str) -> str:
    """A bounded reason for a failed reconcile: `status` None for a bug, 0 when the API gave no answer.

    The API's own StatusReason when it is one of the known words, else the one for the HTTP status.
    """
    if status is None:
        return UNEXPECTED
    if status == 0:
        return CONNECTION_ERROR
    if reason in _API_REASONS.values():
        return reason
    return _API_REASONS.get(status) or ("ServerError" if status >= 500 else "ClientError")


class Metrics:
    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry or prometheus_client.CollectorRegistry()
        r = self.registry
        self._published: dict[tuple[str, str], tuple[SlotView, datetime.timedelta | None]] = {}
        self._ownership_published: dict[tuple[str, str], tuple[bool | None, datetime.datetime | None]] = {}
        # The defaults a Python exporter serves (process_*, python_gc_*, python_info), in this registry.
        prometheus_client.ProcessCollector(registry=r)
        prometheus_client.PlatformCollector(registry=r)
        prometheus_client.GCCollector(registry=r)

        def per_slot(name: str, documentation: str, *extra: str) -> prometheus_client.Gauge:
            return prometheus_client.Gauge(
                f"{_PREFIX}_{name}", documentation, ["namespace", "slot", *extra], registry=r
            )

        self.phase = per_slot("slot_phase", "1 for the Slot's current phase, 0 for the others (a state set).", "phase")
        self.ready = per_slot("slot_ready", "1 when the Slot's latest verdict on its current generation is Ready.")
        self.verdict_current = per_slot(
            "slot_verdict_current", "1 when the Slot's current generation (its current spec) has a verdict."
        )
        self.suspended = per_slot("slot_suspended", "1 while spec.suspend is true (no new probes).")
        self.interval = per_slot(
            "slot_interval_seconds", "The Slot's effective re-probe interval (spec.interval or the operator's default)."
        )
        self.next_probe = per_slot(
            "slot_next_probe_timestamp_seconds", "When the Slot's next probe is due (interval or retry); absent: none."
        )
        self.last_probe = per_slot(
            "slot_last_probe_timestamp_seconds", "When the Slot's latest probe attempt finished (verdict or not)."
        )
        self.last_ready = per_slot("slot_last_ready_timestamp_seconds", "When the Slot last had a Ready verdict.")
        self.failures = per_slot(
            "slot_consecutive_probe_failures", "Probes in a row that ended without a verdict (0 after a verdict)."
        )
        self.ownership = per_slot(
            "slot_ownership_matches",
            "1 when the Slot's audited files belong to the uid/gid its image runs as, 0 when not; absent: unknown.",
        )
        self.credentials_modified = per_slot(
            "slot_credentials_last_modified_timestamp_seconds",
            "Newest modification time of the Slot's credential files, as the ownership audit saw it.",
        )
        self.results = prometheus_client.Counter(
            f"{_PREFIX}_probe_results_total",
            "Finished probe attempts per Slot by result: a phase for verdicts, a reason when there was none.",
            ["namespace", "slot", "result"],
            registry=r,
        )
        self.duration = prometheus_client.Histogram(
            f"{_PREFIX}_probe_duration_seconds",
            "Probe wall time from Job creation to its outcome.",
            ["outcome"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.reconcile_errors = prometheus_client.Counter(
            f"{_PREFIX}_reconcile_errors_total",
            "Reconciles that failed and were retried, by reason (an API StatusReason, ConnectionError, Unexpected).",
            ["reason"],
            registry=r,
        )
        self.queue_depth = prometheus_client.Gauge(
            f"{_PREFIX}_probe_queue_depth", "Slots due for a probe and waiting for the concurrency cap.", registry=r
        )
        self.queue_oldest = prometheus_client.Gauge(
            f"{_PREFIX}_probe_queue_oldest_wait_seconds",
            "How long the Slot first in line for the concurrency cap has waited (0 when none waits).",
            registry=r,
        )
        self.running = prometheus_client.Gauge(f"{_PREFIX}_probes_running", "Probe Jobs currently running.", registry=r)
        self.api_requests = prometheus_client.Counter(
            f"{_PREFIX}_api_requests_total",
            "Requests to the Kubernetes API by verb, resource and HTTP status (0: no answer).",
            ["verb", "resource", "code"],
            registry=r,
        )
        self.workqueue_depth = prometheus_client.Gauge(
            f"{_PREFIX}_workqueue_depth", "Slots waiting for a reconcile worker.", registry=r
        )
        self.workqueue_oldest = prometheus_client.Gauge(
            f"{_PREFIX}_workqueue_oldest_wait_seconds",
            "How long the Slot first in line for a reconcile worker has waited (0 when none waits).",
            registry=r,
        )
        self.migrations = prometheus_client.Counter(
            f"{_PREFIX}_ownership_migrations_total",
            "Answered ownership migration requests by outcome (Migrated, DryRun, MigrationFailed, or why refused).",
            ["result"],
            registry=r,
        )
        self.impostors = prometheus_client.Counter(
            f"{_PREFIX}_impostors_total",
            "Objects that carry the operator's labels and name a Slot, but are not that Slot's (ignored), by kind.",
            ["kind"],
            registry=r,
        )
        self.leader = prometheus_client.Gauge(
            f"{_PREFIX}_leader", "1 when this replica runs the operator (holds the Lease, or runs alone).", registry=r
        )
        self._per_slot = (
            self.phase,
            self.ready,
            self.verdict_current,
            self.suspended,
            self.interval,
            self.next_probe,
            self.last_probe,
            self.last_ready,
            self.failures,
            self.results,
            self.ownership,
            self.credentials_modified,
        )
        # Known label values start at 0, so the first error or probe shows in rate() and the series always exist.
        for reason in ERROR_REASONS:
            self.reconcile_errors.labels(reason)
        for outcome in ("verdict", "no-verdict"):
            self.duration.labels(outcome)
        self.impostors.labels("Job")

    def observe_slot(self, slot: SlotView, *, interval: datetime.timedelta | None) -> None:
        """Publish a Slot's state as its status now says; `interval` None when the spec cannot be parsed."""
        key = (slot.namespace, slot.name)
        values = (slot, interval)
        if self._published.get(key) == values:
            return  # most reconciles change nothing: skip the label lookups (a third of the CPU at 10,000 Slots)
        self._published[key] = values
        for candidate in Phase:
            self.phase.labels(*key, candidate.value).set(1 if candidate is slot.phase else 0)
        self.ready.labels(*key).set(1 if slot.ready else 0)
        self.verdict_current.labels(*key).set(1 if slot.verdict_current else 0)
        self.suspended.labels(*key).set(1 if slot.suspended else 0)
        self.failures.labels(*key).set(slot.failures)
        for gauge, value in (
            (self.interval, interval.total_seconds() if interval is not None else None),
            (self.next_probe, _timestamp(slot.next_probe)),
            (self.last_probe, _timestamp(slot.last_probe)),
            (self.last_ready, _timestamp(slot.last_ready)),
        ):
            if value is None:
                gauge.remove_by_labels({"namespace": slot.namespace, "slot": slot.name})
            else:
                gauge.labels(*key).set(value)

    def observe_ownership(
        self, namespace: str, slot: str, *, matches: bool | None, credentials_modified: datetime.datetime | None
    ) -> None:
        """What the last ownership audit found (status.ownership, status.credentials); absent while unknown."""
        values = (matches, credentials_modified)
        if self._ownership_published.get((namespace, slot)) == values:
            return  # as observe_slot: most reconciles change nothing
        self._ownership_published[(namespace, slot)] = values
        for gauge, value in (
            (self.ownership, None if matches is None else float(matches)),
            (self.credentials_modified, _timestamp(credentials_modified)),
        ):
            if value is None:
                gauge.remove_by_labels({"namespace": namespace, "slot": slot})
            else:
                gauge.labels(namespace, slot).set(value)

    def reconcile_failed(self, *, status: int | None, reason: str) -> None:
        self.reconcile_errors.labels(reconcile_error_reason(status=status, reason=reason)).inc()

    def probe_finished(self, namespace: str, slot: str, *, result: str, verdict: bool, seconds: float | None) -> None:
        self.results.labels(namespace, slot, result).inc()
        if seconds is not None:
            self.duration.labels("verdict" if verdict else "no-verdict").observe(max(seconds, 0.0))

    def observe_request(self, verb: str, resource: str, code: int) -> None:
        self.api_requests.labels(verb, resource, str(code)).inc()

    def forget_slot(self, namespace: str, slot: str) -> None:
        """A deleted Slot leaves no series behind."""
        self._published.pop((namespace, slot), None)
        self._ownership_published.pop((namespace, slot), None)
        for metric in self._per_slot:
            metric.remove_by_labels({"namespace": namespace, "slot": slot})

    def track_queues(
        self,
        *,
        workqueue_depth: Callable[[], float],
        workqueue_oldest: Callable[[], float],
        probe_queue_oldest: Callable[[], float],
    ) -> None:
        """Read the queue gauges from the controller at scrape time (ages grow between events)."""
        self.workqueue_depth.set_function(workqueue_depth)
        self.workqueue_oldest.set_function(workqueue_oldest)
        self.queue_oldest.set_function(probe_queue_oldest)

    def serve(self, port: int) -> None:
        prometheus_client.start_http_server(port, registry=self.registry)


def _timestamp(value: datetime.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None
