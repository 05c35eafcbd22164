"""kube-apiserver: is each instance alive, ready, and is it shedding load?

The apiserver is what fails first in a large cluster, and it rarely fails by going
away: it gets slow, API Priority and Fairness starts rejecting requests, and the first
casualties are kubelet heartbeats and leader-election renewals, which turn an
overloaded control plane into NotReady nodes, evictions and controller restarts. So
each configured apiserver (``exporter.apiservers``, each instance on its own address,
not through the load balancer) gets two sources:

- :class:`ApiserverHealthSource` (kind ``apiserver_health``) reads ``/livez?verbose``
  and ``/readyz?verbose`` and keeps each named check (``[+]etcd ok``,
  ``[-]informer-sync failed: reason withheld``, ``poststarthook/...``) and how long
  each probe took. A 500 from ``/readyz`` is an answer, not a failure: its body names
  the failing checks. A probe that gets no answer (refused, timed out) fails the
  refresh, so ``kubeballast_source_up`` says the exporter lost the apiserver, and the
  collector reports ``kubeballast_apiserver_up`` 0 and no per-check series rather than
  the last, stale, verdicts.
- :class:`ApiserverMetricsSource` (kind ``apiserver_metrics``) reads ``/metrics``,
  only the families in :data:`~kubeballast.exporter.congestion.WANTED_FAMILIES`
  (``core/promtext`` skips the rest of a page that is tens of megabytes at 5000 nodes),
  reduces them to a small :class:`~kubeballast.exporter.congestion.ApiserverSummary`
  and evaluates the congestion verdict against the previous scrape
  (:func:`~kubeballast.exporter.congestion.evaluate`, which documents the rule). The
  page comes from the target's shared scrape
  (:class:`~kubeballast.exporter.http.SharedMetricsScrape`), which the object counts of
  ``exporter/objects.py`` read too: one fetch and one parse per interval for both.
  Parsing and summarizing run in worker threads so that a big page does not stall the
  event loop that serves /metrics and runs every other source.

:class:`ApiserverCollector` re-exports a curated, low-cardinality set that alert rules
can use even where the apiserver's own metrics are not scraped (or are dropped at
ingestion to save Prometheus): requests by code class, APF rejections and queue
lengths by priority level, APF wait p99, inflight requests against the server's seat
total, a coarse latency histogram, etcd p99 by operation, and the verdict. Cardinality
per apiserver is fixed by the label value sets in ``congestion.py`` (priority levels:
the eight defaults plus whatever levels the cluster defines; etcd operations: a
handful), never by resources, users or flow schemas.

While the metrics source is down, only the verdict series are served, with
``kubeballast_apiserver_congestion_evaluated`` 0: re-exporting counters from a stale
scrape would show the apiserver as idle. The exporter's own scrape should not be the
request that APF sheds: deploy it with an identity whose FlowSchema maps to an exempt
or high priority level (a throttled scrape shows as
``kubeballast_source_refresh_errors_total{reason="throttled"}``).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from kubeballast.core import promtext
from kubeballast.core.config import TargetConfig
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.congestion import (
    APF_REJECT_REASONS,
    CALL_KINDS,
    CODE_CLASSES,
    CONGESTION_REASONS,
    DEFAULT_PRIORITY_LEVELS,
    DEFAULT_THRESHOLDS,
    WANTED_FAMILIES,
    ApiserverSummary,
    Evaluation,
    Thresholds,
    coarsen,
    evaluate,
    summarize,
)
from kubeballast.exporter.contract import MetricsCollector, MetricSpec, SnapshotView, SourceError
from kubeballast.exporter.http import (
    PARSE_ALLOWANCE_SECONDS,
    MetricsPageReader,
    TargetClient,
)

__all__ = [
    "ENDPOINTS",
    "HEALTH_KIND",
    "METRICS_KIND",
    "SPECS",
    "ApiserverCollector",
    "ApiserverHealth",
    "ApiserverHealthSource",
    "ApiserverMetricsSnapshot",
    "ApiserverMetricsSource",
    "HealthCheck",
    "HealthProbe",
    "build_apiserver",
    "parse_health_checks",
]

HEALTH_KIND: Final = "apiserver_health"
METRICS_KIND: Final = "apiserver_metrics"

Endpoint = Literal["livez", "readyz"]
ENDPOINTS: Final[tuple[Endpoint, ...]] = ("livez", "readyz")

MAX_CHECKS: Final = 200
"""Checks kept per endpoint. A kube-apiserver has about 40 (post-start hooks included);
the cap only keeps a misbehaving endpoint from creating series without bound."""

# healthz.go writes "[+]<name> ok", "[+]<name> excluded: ok" and
# "[-]<name> failed: reason withheld" (the reason only goes to the apiserver's log).
_CHECK_LINE: Final = re.compile(r"^\[([+-])\](\S+)(?:\s|$)")


# --- health ------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    """One named check of a verbose health answer (``etcd``, ``poststarthook/...``)."""

    name: str
    ok: bool


@dataclass(frozen=True)
class HealthProbe:
    """One ``/livez`` or ``/readyz`` answer."""

    endpoint: Endpoint
    status: int
    """The HTTP status: 200 passed, 500 some check failed."""
    checks: tuple[HealthCheck, ...]
    duration_seconds: float

    @property
    def passed(self) -> bool:
        """Only a 200 passes: a 500 lists failed checks, and a 404 (an apiserver older
        than 1.16, without /livez and /readyz) says nothing good."""
        return self.status == 200


@dataclass(frozen=True)
class ApiserverHealth:
    """Both probes of one refresh."""

    probes: tuple[HealthProbe, ...]

    def probe(self, endpoint: Endpoint) -> HealthProbe | None:
        return next((p for p in self.probes if p.endpoint == endpoint), None)


def parse_health_checks(text: str) -> tuple[HealthCheck, ...]:
    """The named checks of a verbose ``/livez`` or ``/readyz`` body, in order.

    Lines that are not checks (the closing "livez check passed", the warning about
    unknown exclusions, a plain "ok" from a non-verbose answer) are skipped; a name
    that repeats keeps its first verdict; at most :data:`MAX_CHECKS` are kept.
    """
    checks: list[HealthCheck] = []
    seen: set[str] = set()
    for line in text.splitlines():
        match = _CHECK_LINE.match(line.strip())
        if match is None:
            continue
        sign, name = match.groups()
        if name in seen:
            continue
        seen.add(name)
        checks.append(HealthCheck(name, sign == "+"))
        if len(checks) >= MAX_CHECKS:
            break
    return tuple(checks)


class ApiserverHealthSource:
    """``/livez?verbose`` and ``/readyz?verbose`` of one apiserver."""

    def __init__(
        self,
        target: TargetConfig,
        client: TargetClient,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._client = client
        self._monotonic = monotonic

    @property
    def kind(self) -> str:
        return HEALTH_KIND

    @property
    def instance(self) -> str:
        return self._target.name

    @property
    def interval_seconds(self) -> float:
        return self._target.interval_seconds

    @property
    def timeout_seconds(self) -> float:
        # Two probes, one after the other, each bounded by the client's timeout.
        return 2 * self._target.timeout_seconds

    async def refresh(self) -> ApiserverHealth:
        # One after the other, not concurrently: they are cheap, and the probe of an
        # apiserver in trouble should add one request at a time.
        return ApiserverHealth(tuple([await self._probe(endpoint) for endpoint in ENDPOINTS]))

    async def _probe(self, endpoint: Endpoint) -> HealthProbe:
        started = self._monotonic()
        result = await self._client.get_ok_or_status(f"/{endpoint}?verbose")
        duration = max(0.0, self._monotonic() - started)
        return HealthProbe(endpoint, result.status, parse_health_checks(result.text), duration)


# --- metrics and congestion ----------------------------------------------------------


@dataclass(frozen=True)
class ApiserverMetricsSnapshot:
    """The latest scrape's summary and the verdict over the window before it."""

    summary: ApiserverSummary
    evaluation: Evaluation


class ApiserverMetricsSource:
    """Reads one apiserver's /metrics; keeps the previous summary for the verdict.

    ``page`` is this source's reader of the target's shared scrape, wanting
    :data:`~kubeballast.exporter.congestion.WANTED_FAMILIES`.
    """

    def __init__(
        self,
        target: TargetConfig,
        page: MetricsPageReader,
        *,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> None:
        self._target = target
        self._page = page
        self._thresholds = thresholds
        self._previous: ApiserverSummary | None = None

    @property
    def kind(self) -> str:
        return METRICS_KIND

    @property
    def instance(self) -> str:
        return self._target.name

    @property
    def interval_seconds(self) -> float:
        return self._target.interval_seconds

    @property
    def timeout_seconds(self) -> float:
        # The fetch is bounded by the client's timeout; parsing a page of tens of
        # megabytes takes a moment more, which must not count as the target's fault.
        return self._target.timeout_seconds + PARSE_ALLOWANCE_SECONDS

    async def refresh(self) -> ApiserverMetricsSnapshot:
        try:
            families = await self._page.read()
        except promtext.ParseError as error:
            raise SourceError(
                "parse", f"target {self._target.name} GET /metrics: {error}"
            ) from error
        summary = await asyncio.to_thread(summarize, families)
        # Only a successful scrape becomes the base of the next window: after a failed
        # refresh the window simply spans more time.
        evaluation = evaluate(self._previous, summary, self._thresholds)
        self._previous = summary
        return ApiserverMetricsSnapshot(summary, evaluation)


# --- the collector -------------------------------------------------------------------

# Labelled ``target`` (the configured name), as every exporter family is: Prometheus
# attaches its own ``instance`` (the exporter's address) to every series it scrapes.
_T: Final = ("target",)

SPECS: Final[tuple[MetricSpec, ...]] = (
    # health
    MetricSpec(
        "kubeballast_apiserver_up",
        "gauge",
        "1 if the apiserver answered its last /livez probe with 200; 0 if it failed the "
        'probe or did not answer (then kubeballast_source_up{kind="apiserver_health"} '
        "is 0 too).",
        _T,
    ),
    MetricSpec(
        "kubeballast_apiserver_ready",
        "gauge",
        "1 if the apiserver answered its last /readyz probe with 200, else 0.",
        _T,
    ),
    MetricSpec(
        "kubeballast_apiserver_check_ok",
        "gauge",
        "1 if the named check of /livez or /readyz passed in the last probe, 0 if it "
        "failed. Absent while the apiserver does not answer.",
        (*_T, "endpoint", "check"),
    ),
    MetricSpec(
        "kubeballast_apiserver_probe_duration_seconds",
        "gauge",
        "How long the last /livez or /readyz probe took.",
        (*_T, "endpoint"),
    ),
    # requests
    MetricSpec(
        "kubeballast_apiserver_requests",
        "counter",
        "Requests the apiserver answered, by code class (2xx, 3xx, 4xx without 429, "
        "429, 5xx), re-exported from apiserver_request_total.",
        (*_T, "code_class"),
    ),
    MetricSpec(
        "kubeballast_apiserver_request_duration_seconds",
        "histogram",
        "Request latency by call (mutating, read_only: GET and LIST, lease_update: PUT "
        "of a Lease, also counted in mutating), re-exported from "
        "apiserver_request_duration_seconds with coarse buckets. Watches excluded.",
        (*_T, "call"),
    ),
    MetricSpec(
        "kubeballast_apiserver_mutating_request_p99_seconds",
        "gauge",
        "Worst p99 latency over the (resource, verb) pairs of single-object mutating "
        "calls in the last scrape interval (the API call latency SLO is 1 s). Absent "
        "when no pair had enough calls.",
        _T,
    ),
    MetricSpec(
        "kubeballast_apiserver_throttled_requests_ratio",
        "gauge",
        "Share of the requests answered 429 in the last scrape interval. Absent when "
        "there were too few requests to say.",
        _T,
    ),
    # API Priority and Fairness
    MetricSpec(
        "kubeballast_apiserver_flowcontrol_rejected_requests",
        "counter",
        "Requests API Priority and Fairness rejected, by priority level and reason, "
        "re-exported from apiserver_flowcontrol_rejected_requests_total.",
        (*_T, "priority_level", "reason"),
    ),
    MetricSpec(
        "kubeballast_apiserver_flowcontrol_inqueue_requests",
        "gauge",
        "Requests waiting in API Priority and Fairness queues, by priority level.",
        (*_T, "priority_level"),
    ),
    MetricSpec(
        "kubeballast_apiserver_flowcontrol_request_wait_p99_seconds",
        "gauge",
        "p99 of the time requests waited in APF queues in the last scrape interval, by "
        "priority level. Absent for levels without requests in the interval.",
        (*_T, "priority_level"),
    ),
    # concurrency
    MetricSpec(
        "kubeballast_apiserver_inflight_requests",
        "gauge",
        "Peak requests executing in the last second, by request_kind (readOnly, "
        "mutating), re-exported from apiserver_current_inflight_requests.",
        (*_T, "request_kind"),
    ),
    MetricSpec(
        "kubeballast_apiserver_inflight_limit_seats",
        "gauge",
        "The apiserver's concurrency limit: apiserver_flowcontrol_nominal_limit_seats "
        "summed over priority levels (= --max-requests-inflight + "
        "--max-mutating-requests-inflight, rounded up per level).",
        _T,
    ),
    MetricSpec(
        "kubeballast_apiserver_inflight_utilization_ratio",
        "gauge",
        "Inflight requests (readOnly + mutating) over kubeballast_apiserver_inflight_limit_seats.",
        _T,
    ),
    # storage
    MetricSpec(
        "kubeballast_apiserver_etcd_request_p99_seconds",
        "gauge",
        "p99 latency of the apiserver's etcd requests in the last scrape interval, by "
        "operation. Absent for operations without requests in the interval.",
        (*_T, "operation"),
    ),
    MetricSpec(
        "kubeballast_apiserver_process_start_time_seconds",
        "gauge",
        "When the apiserver process started (Unix time): a change is a restart.",
        _T,
    ),
    # verdict
    MetricSpec(
        "kubeballast_apiserver_congested",
        "gauge",
        "1 if any congestion reason is active over the last scrape interval, else 0 (also "
        "0 while not evaluated: see kubeballast_apiserver_congestion_evaluated).",
        _T,
    ),
    MetricSpec(
        "kubeballast_apiserver_congestion_reason",
        "gauge",
        "1 for each active congestion reason (apf_rejections_node_high, "
        "apf_rejections_leader_election, mutating_latency_slo, ratio_429), 0 for the others.",
        (*_T, "reason"),
    ),
    MetricSpec(
        "kubeballast_apiserver_congestion_evaluated",
        "gauge",
        "1 if the verdict was computed from the last two scrapes; 0 after the first "
        "scrape, or while the apiserver's /metrics cannot be scraped.",
        _T,
    ),
)


def _go_float(value: float) -> str:
    """A bucket bound as the ``le`` label, as client_golang formats it ("1", "0.05")."""
    if math.isinf(value):
        return "+Inf"
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _finite(value: float | None) -> float | None:
    """``value`` if it is a number worth exporting; NaN, infinities and None are not."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return value


class _Families:
    """The families of one collect(), one per spec, each typed as its spec says."""

    def __init__(self) -> None:
        self.gauges: dict[str, GaugeMetricFamily] = {}
        self.counters: dict[str, CounterMetricFamily] = {}
        self.histograms: dict[str, HistogramMetricFamily] = {}
        self.ordered: list[Metric] = []
        for spec in SPECS:
            labels = list(spec.labels)
            family: Metric
            if spec.type == "counter":
                family = self.counters[spec.name] = CounterMetricFamily(
                    spec.name, spec.help, labels=labels
                )
            elif spec.type == "histogram":
                family = self.histograms[spec.name] = HistogramMetricFamily(
                    spec.name, spec.help, labels=labels
                )
            else:
                family = self.gauges[spec.name] = GaugeMetricFamily(
                    spec.name, spec.help, labels=labels
                )
            self.ordered.append(family)

    def gauge(self, name: str, labels: Sequence[str], value: float | None) -> None:
        """Add a sample, unless the value is not a finite number (then it is absent)."""
        number = _finite(value)
        if number is not None:
            self.gauges[name].add_metric(list(labels), number)

    def counter(self, name: str, labels: Sequence[str], value: float) -> None:
        number = _finite(value)
        if number is not None:
            self.counters[name].add_metric(list(labels), number)


class ApiserverCollector:
    """Every ``kubeballast_apiserver_*`` family, from the sources' snapshots.

    Views are keyed by target name; a target may have a health view, a metrics view, or
    both (the factory gives it both).
    """

    def __init__(
        self,
        *,
        health: Mapping[str, SnapshotView[ApiserverHealth]],
        metrics: Mapping[str, SnapshotView[ApiserverMetricsSnapshot]],
    ) -> None:
        self._health = health
        self._metrics = metrics

    def metric_specs(self) -> Sequence[MetricSpec]:
        return SPECS

    def collect(self) -> Iterable[Metric]:
        families = _Families()
        for target, view in sorted(self._health.items()):
            _collect_health(families, target, view)
        for target, metrics_view in sorted(self._metrics.items()):
            _collect_metrics(families, target, metrics_view)
        return families.ordered


def _collect_health(families: _Families, target: str, view: SnapshotView[ApiserverHealth]) -> None:
    # A failed refresh leaves the last snapshot in place; its verdicts are stale and
    # would claim checks pass on an apiserver that no longer answers.
    snapshot = view.snapshot if view.up else None
    health = snapshot.value if snapshot is not None else None
    live = health.probe("livez") if health is not None else None
    ready = health.probe("readyz") if health is not None else None
    families.gauge("kubeballast_apiserver_up", [target], float(live is not None and live.passed))
    families.gauge(
        "kubeballast_apiserver_ready", [target], float(ready is not None and ready.passed)
    )
    if health is None:
        return
    for probe in health.probes:
        families.gauge(
            "kubeballast_apiserver_probe_duration_seconds",
            [target, probe.endpoint],
            probe.duration_seconds,
        )
        for check in probe.checks:
            families.gauge(
                "kubeballast_apiserver_check_ok",
                [target, probe.endpoint, check.name],
                float(check.ok),
            )


def _collect_metrics(
    families: _Families, target: str, view: SnapshotView[ApiserverMetricsSnapshot]
) -> None:
    snapshot = view.snapshot if view.up else None
    evaluation = snapshot.value.evaluation if snapshot is not None else Evaluation()
    # The verdict series always exist, so that "absent" never has to mean "fine".
    families.gauge("kubeballast_apiserver_congested", [target], float(evaluation.congested))
    for reason in CONGESTION_REASONS:
        families.gauge(
            "kubeballast_apiserver_congestion_reason",
            [target, reason],
            float(reason in evaluation.reasons),
        )
    families.gauge(
        "kubeballast_apiserver_congestion_evaluated", [target], float(evaluation.evaluated)
    )
    if snapshot is None:
        return
    _collect_summary(families, target, snapshot.value.summary)
    _collect_evaluation(families, target, evaluation)


def _collect_summary(families: _Families, target: str, summary: ApiserverSummary) -> None:
    if summary.has_requests:
        for klass in CODE_CLASSES:
            families.counter(
                "kubeballast_apiserver_requests",
                [target, klass],
                summary.requests.get(klass, 0.0),
            )

    latency = families.histograms["kubeballast_apiserver_request_duration_seconds"]
    for call in CALL_KINDS:
        totals = summary.latency.get(call)
        if totals is None:
            continue
        buckets = coarsen(totals.buckets)
        if not buckets or not math.isinf(buckets[-1][0]):
            continue  # no +Inf bucket: not a histogram that can be re-exported
        latency.add_metric(
            [target, call],
            [(_go_float(bound), count) for bound, count in buckets],
            totals.sum,
        )

    # Rejections: every default non-exempt level and reason from zero (rate() must see
    # the first rejection), plus whatever else the apiserver reports.
    rejected: dict[tuple[str, str], float] = {
        (level, reason): 0.0
        for level in DEFAULT_PRIORITY_LEVELS
        if level != "exempt"
        for reason in APF_REJECT_REASONS
    }
    rejected.update(summary.apf_rejected)
    for (level, reason), value in sorted(rejected.items()):
        families.counter(
            "kubeballast_apiserver_flowcontrol_rejected_requests", [target, level, reason], value
        )
    inqueue = dict.fromkeys(DEFAULT_PRIORITY_LEVELS, 0.0)
    inqueue.update(summary.apf_inqueue)
    for level, value in sorted(inqueue.items()):
        families.gauge("kubeballast_apiserver_flowcontrol_inqueue_requests", [target, level], value)

    for kind, value in sorted(summary.inflight.items()):
        families.gauge("kubeballast_apiserver_inflight_requests", [target, kind], value)
    families.gauge(
        "kubeballast_apiserver_inflight_limit_seats", [target], summary.inflight_limit_seats
    )
    families.gauge(
        "kubeballast_apiserver_inflight_utilization_ratio",
        [target],
        summary.inflight_utilization_ratio,
    )
    families.gauge(
        "kubeballast_apiserver_process_start_time_seconds",
        [target],
        summary.process_start_time_seconds,
    )


def _collect_evaluation(families: _Families, target: str, evaluation: Evaluation) -> None:
    for level, value in sorted(evaluation.apf_wait_p99_seconds.items()):
        families.gauge(
            "kubeballast_apiserver_flowcontrol_request_wait_p99_seconds", [target, level], value
        )
    for operation, value in sorted(evaluation.etcd_p99_seconds.items()):
        families.gauge("kubeballast_apiserver_etcd_request_p99_seconds", [target, operation], value)
    families.gauge(
        "kubeballast_apiserver_mutating_request_p99_seconds",
        [target],
        evaluation.mutating_p99_seconds,
    )
    families.gauge("kubeballast_apiserver_throttled_requests_ratio", [target], evaluation.ratio_429)


# --- the factory ---------------------------------------------------------------------


def build_apiserver(context: ExporterContext) -> Sequence[MetricsCollector]:
    """Health and metrics sources for every apiserver target, and their collector."""
    health: dict[str, SnapshotView[ApiserverHealth]] = {}
    metrics: dict[str, SnapshotView[ApiserverMetricsSnapshot]] = {}
    for target in context.apiserver_targets():
        client = context.target_client(target)
        health[target.name] = context.add_source(ApiserverHealthSource(target, client))
        page = context.metrics_scrape(target).reader(
            METRICS_KIND, WANTED_FAMILIES, max_age_seconds=target.interval_seconds
        )
        metrics[target.name] = context.add_source(ApiserverMetricsSource(target, page))
    if not health:
        return []
    return [ApiserverCollector(health=health, metrics=metrics)]
