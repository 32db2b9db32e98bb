"""Prometheus metrics. Label values are identifiers and enums only: never messages or images.

Per-Slot series are read from the watch cache at scrape time, as kube-state-metrics does: what a
scrape shows is what the cache holds, a deleted Slot's series vanish with it, and nothing is pushed
on every reconcile. Each Slot's rows are kept until its resourceVersion changes, so a scrape of
10,000 Slots recomputes only the ones that changed. Events (probe results, reconciles, API calls,
migrations, impostors) are counted as they happen.

Every metric is listed, with its labels and meaning, in the README's metrics table; the chart's
alert rules and dashboard use only these (tests/unit/chart/test_monitoring.py checks both ways).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from slot_operator.logic import checking, conditions, durations, report, timestamps
from slot_operator.logic.phases import Phase

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


# Reconciles take milliseconds, slower ones an API round trip or a few.
_RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SLOT = ("namespace", "slot")
# The per-Slot gauges: (name, documentation, extra label).
_SLOT_GAUGES = (
    ("slot_phase", "1 for the Slot's current phase, 0 for the others (a state set).", "phase"),
    ("slot_ready", "1 when the Slot's latest verdict on its current generation is Ready.", None),
    ("slot_verdict_current", "1 when the Slot's current generation (its current spec) has a verdict.", None),
    ("slot_suspended", "1 while spec.suspend is true (no new probes).", None),
    (
        "slot_interval_seconds",
        "The Slot's effective re-probe interval (spec.interval or the operator's default).",
        None,
    ),
    (
        "slot_next_probe_timestamp_seconds",
        "When the Slot's next probe is due (interval or retry); absent: none.",
        None,
    ),
    ("slot_last_probe_timestamp_seconds", "When the Slot's latest probe attempt finished (verdict or not).", None),
    ("slot_last_ready_timestamp_seconds", "When the Slot last had a Ready verdict.", None),
    ("slot_consecutive_probe_failures", "Probes in a row that ended without a verdict (0 after a verdict).", None),
    (
        "slot_ownership_matches",
        "1 when the Slot's audited files belong to the uid/gid its image runs as, 0 when not; absent: unknown.",
        None,
    ),
    (
        "slot_credentials_last_modified_timestamp_seconds",
        "Newest modification time of the Slot's credential files, as the ownership audit saw it.",
        None,
    ),
)
Row = tuple[str, tuple[str, ...], float]  # (gauge name, label values, value)


class SlotSeries(Collector):
    """The per-Slot series, read from the Slots in the cache when Prometheus scrapes (kube-state-metrics' way)."""

    def __init__(self) -> None:
        self._slots: Callable[[], Iterable[Mapping[str, Any]]] = tuple
        self._default_interval: datetime.timedelta | None = None
        self._rows: dict[tuple[str, str], tuple[str, list[Row]]] = {}  # Slot -> (resourceVersion, its rows)
        self.results: collections.defaultdict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def watch(self, slots: Callable[[], Iterable[Mapping[str, Any]]], *, default_interval: datetime.timedelta) -> None:
        self._slots, self._default_interval = slots, default_interval

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected only when scraped, never at registration

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(f"{_PREFIX}_{name}", text, labels=[*_SLOT, *([extra] if extra else [])])
            for name, text, extra in _SLOT_GAUGES
        }
        results = CounterMetricFamily(
            f"{_PREFIX}_probe_results",
            "Finished probe attempts per Slot by result: a phase for verdicts, a reason when there was none.",
            labels=[*_SLOT, "result"],
        )
        seen: dict[tuple[str, str], tuple[str, list[Row]]] = {}
        for slot in self._slots():
            meta = slot.get("metadata") or {}
            key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            version = str(meta.get("resourceVersion") or "")
            cached = self._rows.get(key)
            seen[key] = cached if cached is not None and cached[0] == version else (version, self._slot_rows(slot))
            for name, labels, value in seen[key][1]:
                families[name].add_metric(labels, value)
            for result, count in self.results.get(key, {}).items():
                results.add_metric([*key, result], count)
        self._rows = seen
        for gone in [key for key in self.results if key not in seen]:
            del self.results[gone]
        yield from families.values()
        yield results

    def _slot_rows(self, slot: Mapping[str, Any]) -> list[Row]:
        view = report.view(slot)
        key = (view.namespace, view.name)
        rows: list[Row] = [("slot_phase", (*key, phase.value), float(phase is view.phase)) for phase in Phase]
        rows += [
            ("slot_ready", key, float(view.ready)),
            ("slot_verdict_current", key, float(view.verdict_current)),
            ("slot_suspended", key, float(view.suspended)),
            ("slot_consecutive_probe_failures", key, float(view.failures)),
        ]
        status = slot.get("status") or {}
        matches = (conditions.find(status.get("conditions") or (), conditions.OWNERSHIP_MATCHES) or {}).get("status")
        modified = timestamps.parse_time((status.get("credentials") or {}).get("lastModified"))
        optional = (
            ("slot_interval_seconds", self._interval(slot, view)),
            ("slot_next_probe_timestamp_seconds", _timestamp(view.next_probe)),
            ("slot_last_probe_timestamp_seconds", _timestamp(view.last_probe)),
            ("slot_last_ready_timestamp_seconds", _timestamp(view.last_ready)),
            ("slot_ownership_matches", {"True": 1.0, "False": 0.0}.get(str(matches))),
            ("slot_credentials_last_modified_timestamp_seconds", _timestamp(modified)),
        )
        rows += [(name, key, value) for name, value in optional if value is not None]
        return rows

    def _interval(self, slot: Mapping[str, Any], view: report.SlotView) -> float | None:
        """The effective interval; absent while the spec is invalid."""
        if view.invalid_spec or self._default_interval is None:
            return None
        raw = (slot.get("spec") or {}).get("interval")
        try:
            return (durations.parse_duration(str(raw)) if raw else self._default_interval).total_seconds()
        except ValueError:
            return None


class CheckSeries(Collector):
    """A SlotImageCheck's series, read from the checks (and their Slots) in the cache when Prometheus scrapes."""

    def __init__(self) -> None:
        self._checks: Callable[[], Iterable[Mapping[str, Any]]] = tuple
        self._slot: Callable[[tuple[str, str]], Mapping[str, Any] | None] = lambda key: None

    def watch(
        self,
        checks: Callable[[], Iterable[Mapping[str, Any]]],
        slot: Callable[[tuple[str, str]], Mapping[str, Any] | None],
    ) -> None:
        self._checks, self._slot = checks, slot

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected only when scraped, never at registration

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "check"]
        results = GaugeMetricFamily(
            f"{_PREFIX}_image_check_results",
            "A SlotImageCheck's selected Slots per would-be phase (status.results[].phase).",
            labels=[*labels, "phase"],
        )
        failed = GaugeMetricFamily(
            f"{_PREFIX}_image_check_failed",
            "1 when the SlotImageCheck finished Failed or Error, else 0.",
            labels=labels,
        )
        on_image = GaugeMetricFamily(
            f"{_PREFIX}_image_check_slots_on_image",
            "Slots of the SlotImageCheck's selection whose spec.image is the check's image now.",
            labels=labels,
        )
        for check in self._checks():
            meta, status = check.get("metadata") or {}, check.get("status") or {}
            key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            phases = collections.Counter(str(result.get("phase")) for result in status.get("results") or ())
            for phase in CHECK_RESULT_PHASES:
                results.add_metric([*key, phase], float(phases[phase]))
            failed.add_metric(list(key), float(status.get("phase") in ("Failed", "Error")))
            image = (check.get("spec") or {}).get("image")
            slots = (self._slot((key[0], str(result.get("slot")))) for result in status.get("results") or ())
            on_image.add_metric(list(key), float(sum(1 for slot in slots if slot and _image(slot) == image)))
        yield from (results, failed, on_image)


# A check's results[].phase values (crds/slotimagechecks.woved.dev.yaml), each a series from the start.
CHECK_RESULT_PHASES = tuple(checking.SUMMARY_KEYS)


def _image(slot: Mapping[str, Any]) -> object:
    return (slot.get("spec") or {}).get("image")


@dataclasses.dataclass(frozen=True)
class _Metrics:
    """Makes the operator's own metrics in one registry, each named slot_operator_<name>."""

    registry: prometheus_client.CollectorRegistry

    def counter(self, name: str, doc: str, *labels: str) -> prometheus_client.Counter:
        return prometheus_client.Counter(f"{_PREFIX}_{name}", doc, labels, registry=self.registry)

    def histogram(self, name: str, doc: str, label: str, buckets: Sequence[float]) -> prometheus_client.Histogram:
        return prometheus_client.Histogram(f"{_PREFIX}_{name}", doc, [label], buckets=buckets, registry=self.registry)

    def gauge(self, name: str, doc: str) -> prometheus_client.Gauge:
        return prometheus_client.Gauge(f"{_PREFIX}_{name}", doc, registry=self.registry)


class Metrics:
    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry or prometheus_client.CollectorRegistry()
        r = self.registry
        # The defaults a Python exporter serves (process_*, python_gc_*, python_info), in this registry.
        prometheus_client.ProcessCollector(registry=r)
        prometheus_client.PlatformCollector(registry=r)
        prometheus_client.GCCollector(registry=r)
        self.slots = SlotSeries()
        r.register(self.slots)
        self.checks = CheckSeries()
        r.register(self.checks)
        self._events(r)
        self._state(r)
        # Known label values start at 0, so the first error or probe shows in rate() and the series always exist.
        for reason in ERROR_REASONS:
            self.reconcile_errors.labels(reason)
        for outcome in ("verdict", "no-verdict"):
            self.duration.labels(outcome)
        for outcome in ("success", "conflict", "error"):
            self.reconcile_duration.labels(outcome)
        self.impostors.labels("Job")

    def _events(self, r: prometheus_client.CollectorRegistry) -> None:
        """What is counted as it happens: probes, reconciles, API calls, migrations, impostors."""
        metric = _Metrics(r)
        self.duration = metric.histogram(
            "probe_duration_seconds", "Probe wall time from Job creation to its outcome.", "outcome", _DURATION_BUCKETS
        )
        self.reconcile_errors = metric.counter(
            "reconcile_errors_total",
            "Reconciles that failed and were retried, by reason (an API StatusReason, ConnectionError, Unexpected).",
            "reason",
        )
        self.reconcile_duration = metric.histogram(
            "reconcile_duration_seconds",
            "Time one reconcile of one Slot took, by outcome (success, conflict, error).",
            "outcome",
            _RECONCILE_BUCKETS,
        )
        self.retries = metric.counter(
            "reconcile_retries_total", "Reconciles the work queue retried after a failure (with a per-Slot backoff)."
        )
        self.api_requests = metric.counter(
            "api_requests_total",
            "Requests to the Kubernetes API by verb, resource and HTTP status (0: no answer).",
            "verb", "resource", "code",
        )  # fmt: skip
        self.migrations = metric.counter(
            "ownership_migrations_total",
            "Answered ownership migration requests by outcome (Migrated, DryRun, MigrationFailed, or why refused).",
            "result",
        )
        self.impostors = metric.counter(
            "impostors_total",
            "Objects that carry the operator's labels and name a Slot, but are not that Slot's (ignored), by kind.",
            "kind",
        )

    def _state(self, r: prometheus_client.CollectorRegistry) -> None:
        """What is read when scraped: the queues, the cap, the leadership."""
        gauge = _Metrics(r).gauge
        self.queue_depth = gauge("probe_queue_depth", "Slots due for a probe and waiting for the concurrency cap.")
        self.queue_oldest = gauge(
            "probe_queue_oldest_wait_seconds",
            "How long the Slot first in line for the concurrency cap has waited (0 when none waits).",
        )
        self.running = gauge("probes_running", "Probe Jobs currently running.")
        self.workqueue_depth = gauge("workqueue_depth", "Slots waiting for a reconcile worker.")
        self.workqueue_oldest = gauge(
            "workqueue_oldest_wait_seconds",
            "How long the Slot first in line for a reconcile worker has waited (0 when none waits).",
        )
        self.leader = gauge("leader", "1 when this replica runs the operator (holds the Lease, or runs alone).")

    def reconcile_failed(self, *, status: int | None, reason: str) -> None:
        self.reconcile_errors.labels(reconcile_error_reason(status=status, reason=reason)).inc()

    def reconciled(self, *, outcome: str, seconds: float) -> None:
        self.reconcile_duration.labels(outcome).observe(seconds)

    def probe_finished(self, namespace: str, slot: str, *, result: str, verdict: bool, seconds: float | None) -> None:
        self.slots.results[(namespace, slot)][result] += 1
        if seconds is not None:
            self.duration.labels("verdict" if verdict else "no-verdict").observe(max(seconds, 0.0))

    def observe_request(self, verb: str, resource: str, code: int) -> None:
        self.api_requests.labels(verb, resource, str(code)).inc()

    def track_queues(
        self,
        *,
        workqueue_depth: Callable[[], float],
        workqueue_oldest: Callable[[], float],
        probe_queue_depth: Callable[[], float],
        probe_queue_oldest: Callable[[], float],
        probes_running: Callable[[], float],
    ) -> None:
        """Read the queue gauges from the controller at scrape time (ages grow between events)."""
        self.workqueue_depth.set_function(workqueue_depth)
        self.workqueue_oldest.set_function(workqueue_oldest)
        self.queue_depth.set_function(probe_queue_depth)
        self.queue_oldest.set_function(probe_queue_oldest)
        self.running.set_function(probes_running)

    def serve(self, port: int) -> None:
        prometheus_client.start_http_server(port, registry=self.registry)


def _timestamp(value: datetime.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None
