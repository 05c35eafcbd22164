"""Is this apiserver congested? Pure derivations over two scrapes of its /metrics.

Why this exists: an apiserver's /metrics in a 5000-node cluster is tens of megabytes
and thousands of series, and many monitoring setups drop most of it at scrape time to
keep Prometheus alive. The signals that say "the control plane is shedding load" are a
handful of aggregates of it, and one verdict over them is what an alert rule (and the
receiver's guards) want. So the exporter scrapes each apiserver itself, keeps only
those aggregates (:class:`ApiserverSummary`, a few hundred numbers), and this module
turns the last two summaries into a verdict (:class:`Evaluation`).

How it fits: ``exporter/apiserver.py`` does the I/O (``TargetClient.get("/metrics")``),
parses the wanted families with ``core/promtext.parse(text, WANTED_FAMILIES)``, calls
:func:`summarize` and then :func:`evaluate` with the previous summary, and stores
both in its snapshot; its collector only formats them. Everything here is pure and
table-tested from fixture scrapes (tests/exporter/fixtures/apiserver_*.txt).

The verdict rule (``congested`` is 1 when any reason is active in the window between
the previous scrape and this one):

====================================  ==================================================
reason                                active when
====================================  ==================================================
``apf_rejections_node_high``          API Priority and Fairness rejected any request of
                                      the ``node-high`` level: kubelet heartbeats are
                                      shed, and nodes go NotReady (then get evicted) if
                                      it lasts
``apf_rejections_leader_election``    any rejection on ``leader-election``: controllers
                                      and the scheduler may lose their leases
``mutating_latency_slo``              the p99 latency of single-object mutating calls of
                                      some (resource, verb) pair exceeds 1 s, the
                                      Kubernetes "mutating API call latency" SLO
                                      (sig-scalability slos/api_call_latency.md), with
                                      at least ``min_mutating_requests`` such calls in
                                      the window
``ratio_429``                         more than 1 % of all requests were answered 429,
                                      with at least ``min_requests`` in the window
====================================  ==================================================

Latency is read from ``apiserver_request_duration_seconds``, which includes the time a
request waited in its APF queue, rather than ``apiserver_request_sli_duration_seconds``
(which the SLO dashboards of newer releases use and which leaves that wait out): the
wait is precisely what congestion adds, and what a kubelet renewing its Lease feels.
The p99s are computed as PromQL's ``histogram_quantile`` over the buckets observed
between the two scrapes (``promtext.bucket_deltas``), so a slow hour long ago cannot
keep the verdict up, and a fresh slowdown shows in one interval rather than being
averaged into a five-minute window.

Edge cases, decided once here:

- **First scrape**: nothing to compare with, so no verdict: ``evaluated`` is False and
  no reason is active (the collector reports ``congested`` 0 with
  ``congestion_evaluated`` 0, so a rule can tell "fine" from "not known yet").
- **Counter resets** (the apiserver restarted): when ``process_start_time_seconds``
  changed, or any summed counter or bucket went down, everything in the new scrape
  was counted since the restart and is taken as the window's increase, as
  ``increase()`` does.
- **Missing series**: a series that appears between the scrapes started from zero
  (client_golang creates a vector's child on its first increment), so all of it is
  new: the very first rejection on ``node-high`` creates its series and must count.
  A family absent altogether (an older apiserver, metrics filtered by a proxy) makes
  the reasons that need it inactive, never active.
- **NaN** (a broken bucket, a NaN counter): the aggregate it is in becomes NaN, and a
  NaN never activates a reason and is never exported (the p99 is left out instead).

Aggregation happens at :func:`summarize` time (summed over flow schemas, resources,
verbs ...). Within one apiserver process a sum of counters can only grow, so reset
detection on the sums is as good as on each series, and the snapshot stays small.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from kubeballast.core.promtext import (
    Buckets,
    Sample,
    bucket_deltas,
    counter_delta,
    histogram_buckets,
    histogram_quantile,
    sum_by,
)

__all__ = [
    "APF_REJECT_REASONS",
    "CALL_KINDS",
    "COARSE_LATENCY_BOUNDS",
    "CODE_CLASSES",
    "CONGESTION_REASONS",
    "DEFAULT_PRIORITY_LEVELS",
    "DEFAULT_THRESHOLDS",
    "WANTED_FAMILIES",
    "ApiserverSummary",
    "Evaluation",
    "HistogramTotals",
    "Thresholds",
    "coarsen",
    "code_class",
    "evaluate",
    "summarize",
]

# --- what is read --------------------------------------------------------------------

REQUESTS: Final = "apiserver_request_total"
REQUEST_DURATION: Final = "apiserver_request_duration_seconds"
INFLIGHT: Final = "apiserver_current_inflight_requests"
APF_REJECTED: Final = "apiserver_flowcontrol_rejected_requests_total"
APF_INQUEUE: Final = "apiserver_flowcontrol_current_inqueue_requests"
APF_WAIT: Final = "apiserver_flowcontrol_request_wait_duration_seconds"
APF_NOMINAL_SEATS: Final = "apiserver_flowcontrol_nominal_limit_seats"
ETCD_DURATION: Final = "etcd_request_duration_seconds"
PROCESS_START: Final = "process_start_time_seconds"

WANTED_FAMILIES: Final = frozenset(
    {
        REQUESTS,
        REQUEST_DURATION,
        INFLIGHT,
        APF_REJECTED,
        APF_INQUEUE,
        APF_WAIT,
        APF_NOMINAL_SEATS,
        ETCD_DURATION,
        PROCESS_START,
    }
)
"""The families :func:`summarize` reads; ``promtext.parse`` skips every other line."""

# --- bounded label values ------------------------------------------------------------

NODE_HIGH: Final = "node-high"
LEADER_ELECTION: Final = "leader-election"

DEFAULT_PRIORITY_LEVELS: Final = (
    "exempt",
    "system",
    NODE_HIGH,
    LEADER_ELECTION,
    "workload-high",
    "workload-low",
    "global-default",
    "catch-all",
)
"""The priority levels every apiserver has by default (flowcontrol bootstrap,
default.go). Reported even before their first request, as 0, so that ``rate()`` sees
the first rejection; custom levels of a cluster are reported once they appear."""

APF_REJECT_REASONS: Final = ("queue-full", "concurrency-limit", "time-out", "cancelled")
"""``reason`` values of apiserver_flowcontrol_rejected_requests_total
(pkg/util/flowcontrol/metrics)."""

CODE_CLASSES: Final = ("2xx", "3xx", "4xx", "429", "5xx")
"""``code_class`` values: 429 is its own class (and not part of ``4xx``), because it is
the one client error that means the server is overloaded rather than the client wrong.
The classes partition the requests, so they add up to the total."""

CALL_KINDS: Final = ("mutating", "read_only", "lease_update")
"""``call`` values of the coarse latency histogram. ``lease_update`` (PUT of a
coordination.k8s.io Lease: kubelet heartbeats, leader election) is also counted in
``mutating``; it gets its own series because its latency decides whether nodes and
controllers keep their leases."""

CONGESTION_REASONS: Final = (
    "apf_rejections_node_high",
    "apf_rejections_leader_election",
    "mutating_latency_slo",
    "ratio_429",
)
"""Every ``reason`` of the verdict, in the order the collector reports them."""

COARSE_LATENCY_BOUNDS: Final = (0.05, 0.1, 0.2, 0.4, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds of the re-exported latency histogram: bounds that both bucket layouts of
apiserver_request_duration_seconds have (up to 60 s since Kubernetes 1.23, and the
older 37-bucket layout), so the coarse buckets are exact counts, not estimates. 1 s is
the SLO threshold."""

_MUTATING_VERBS: Final = frozenset(
    {"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY", "CREATE", "UPDATE"}
)
_SINGLE_OBJECT_MUTATING_VERBS: Final = _MUTATING_VERBS - {"DELETECOLLECTION"}
_READ_ONLY_VERBS: Final = frozenset({"GET", "LIST"})
"""WATCH, CONNECT and PROXY are long-running: their duration is how long a client stayed
connected, not how fast the apiserver answered, and the SLOs exclude them."""
_LEASE_GROUP: Final = "coordination.k8s.io"


def code_class(code: str) -> str | None:
    """The ``code_class`` of an HTTP status code label, None for anything else."""
    if code == "429":
        return "429"
    try:
        number = int(code)
    except ValueError:
        return None
    if 200 <= number < 600:
        return f"{number // 100}xx"
    # 1xx never ends a request; "0" (a hijacked connection) says nothing about load.
    return None


# --- the summary of one scrape -------------------------------------------------------


@dataclass(frozen=True)
class HistogramTotals:
    """A cumulative histogram summed over some series: buckets, sum and count."""

    buckets: tuple[tuple[float, float], ...]
    """``(upper_bound, cumulative count)`` sorted by bound, ``+Inf`` last."""
    sum: float
    count: float


@dataclass(frozen=True)
class ApiserverSummary:
    """What the exporter keeps of one scrape of an apiserver's /metrics.

    Counters and histograms are cumulative, as scraped (summed over the labels not
    kept); gauges are the scraped values. Keys absent from a mapping had no series.
    """

    process_start_time_seconds: float | None = None
    requests: Mapping[str, float] = field(default_factory=dict)
    """apiserver_request_total by code class (every class present once the family is)."""
    has_requests: bool = False
    """Whether apiserver_request_total was in the scrape at all."""
    inflight: Mapping[str, float] = field(default_factory=dict)
    """apiserver_current_inflight_requests by request_kind (readOnly, mutating)."""
    apf_rejected: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """Rejections by (priority_level, reason)."""
    apf_inqueue: Mapping[str, float] = field(default_factory=dict)
    """Requests waiting in APF queues by priority level."""
    apf_nominal_seats: Mapping[str, float] = field(default_factory=dict)
    """Nominal seats by priority level."""
    apf_wait: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """APF queue wait buckets by priority level (executed and rejected requests)."""
    latency: Mapping[str, HistogramTotals] = field(default_factory=dict)
    """Request latency by call kind (:data:`CALL_KINDS`), full bucket resolution."""
    mutating_by_pair: Mapping[tuple[str, str], tuple[tuple[float, float], ...]] = field(
        default_factory=dict
    )
    """Single-object mutating call buckets by (group/resource[/subresource], verb): the
    SLO's unit. Kept for the verdict, never exported (CRDs make it unbounded)."""
    etcd: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """etcd request latency buckets by operation, as the apiserver sees it."""

    @property
    def inflight_limit_seats(self) -> float | None:
        """The apiserver's total concurrency, the sum of the levels' nominal seats.

        The apiserver does not expose --max-requests-inflight and
        --max-mutating-requests-inflight; with APF (the default since 1.20) their sum
        is the server's concurrency limit, divided among the priority levels
        proportionally to their shares and rounded up per level, so this sum is that
        limit (a few seats over, from the rounding). Borrowing between levels moves
        seats around but does not change the total. None without the family (APF off).
        """
        if not self.apf_nominal_seats:
            return None
        return math.fsum(self.apf_nominal_seats.values())

    @property
    def inflight_utilization_ratio(self) -> float | None:
        """Inflight requests (read-only plus mutating) over the total seats."""
        limit = self.inflight_limit_seats
        if limit is None or limit <= 0 or not self.inflight:
            return None
        ratio = math.fsum(self.inflight.values()) / limit
        return None if math.isnan(ratio) else ratio


def _frozen(buckets: Iterable[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    return tuple(buckets)


def _single(samples: Sequence[Sample]) -> float | None:
    for sample in samples:
        if not sample.labels:
            return sample.value
    return samples[0].value if samples else None


def summarize(families: Mapping[str, Sequence[Sample]]) -> ApiserverSummary:
    """The summary of one scrape, from ``promtext.parse(text, WANTED_FAMILIES)``."""
    requests: dict[str, float] = {}
    request_samples = families.get(REQUESTS, ())
    if request_samples:
        requests = dict.fromkeys(CODE_CLASSES, 0.0)
        for (code,), value in sum_by(request_samples, ("code",), name=REQUESTS).items():
            klass = code_class(code)
            if klass is not None:
                requests[klass] += value

    start = _single(families.get(PROCESS_START, ()))

    inflight = {
        kind: value
        for (kind,), value in sum_by(families.get(INFLIGHT, ()), ("request_kind",)).items()
    }
    apf_rejected = {
        (level, reason): value
        for (level, reason), value in sum_by(
            families.get(APF_REJECTED, ()), ("priority_level", "reason"), name=APF_REJECTED
        ).items()
    }
    apf_inqueue = {
        level: value
        for (level,), value in sum_by(families.get(APF_INQUEUE, ()), ("priority_level",)).items()
    }
    nominal = {
        level: value
        for (level,), value in sum_by(
            families.get(APF_NOMINAL_SEATS, ()), ("priority_level",)
        ).items()
    }
    apf_wait = {
        level: _frozen(buckets)
        for (level,), buckets in histogram_buckets(
            families.get(APF_WAIT, ()), ("priority_level",)
        ).items()
    }
    etcd = {
        operation: _frozen(buckets)
        for (operation,), buckets in histogram_buckets(
            families.get(ETCD_DURATION, ()), ("operation",)
        ).items()
    }
    latency, by_pair = _request_latency(families.get(REQUEST_DURATION, ()))
    return ApiserverSummary(
        process_start_time_seconds=start,
        requests=requests,
        has_requests=bool(request_samples),
        inflight=inflight,
        apf_rejected=apf_rejected,
        apf_inqueue=apf_inqueue,
        apf_nominal_seats=nominal,
        apf_wait=apf_wait,
        latency=latency,
        mutating_by_pair=by_pair,
        etcd=etcd,
    )


def _request_latency(
    samples: Sequence[Sample],
) -> tuple[dict[str, HistogramTotals], dict[tuple[str, str], tuple[tuple[float, float], ...]]]:
    """Sort apiserver_request_duration_seconds samples into call kinds and SLO pairs."""
    by_kind: dict[str, list[Sample]] = {kind: [] for kind in CALL_KINDS}
    slo: list[Sample] = []
    for sample in samples:
        labels = sample.labels
        verb = labels.get("verb", "")
        if verb in _MUTATING_VERBS:
            by_kind["mutating"].append(sample)
            if verb in _SINGLE_OBJECT_MUTATING_VERBS and labels.get("scope") == "resource":
                slo.append(sample)
            if (
                verb == "PUT"
                and labels.get("group") == _LEASE_GROUP
                and labels.get("resource") == "leases"
                and not labels.get("subresource")
            ):
                by_kind["lease_update"].append(sample)
        elif verb in _READ_ONLY_VERBS:
            by_kind["read_only"].append(sample)
    totals: dict[str, HistogramTotals] = {}
    for kind, kind_samples in by_kind.items():
        if not kind_samples:
            continue
        buckets = histogram_buckets(kind_samples).get((), [])
        sums = sum_by(kind_samples, name=REQUEST_DURATION + "_sum")
        counts = sum_by(kind_samples, name=REQUEST_DURATION + "_count")
        totals[kind] = HistogramTotals(_frozen(buckets), sums.get((), 0.0), counts.get((), 0.0))
    pairs: dict[tuple[str, str], tuple[tuple[float, float], ...]] = {}
    for (group, resource, subresource, verb), buckets in histogram_buckets(
        slo, ("group", "resource", "subresource", "verb")
    ).items():
        name = f"{resource}.{group}" if group else resource
        if subresource:
            name = f"{name}/{subresource}"
        pairs[(name, verb)] = _frozen(buckets)
    return totals, pairs


def coarsen(
    buckets: Buckets, bounds: Sequence[float] = COARSE_LATENCY_BOUNDS
) -> list[tuple[float, float]]:
    """The cumulative buckets at ``bounds`` (those the histogram has) and ``+Inf``.

    A cumulative count at a bound the source has is exact; a bound the source lacks is
    left out rather than estimated.
    """
    have = dict(buckets)
    out = [(bound, have[bound]) for bound in bounds if bound in have]
    if math.inf in have:
        out.append((math.inf, have[math.inf]))
    return out


# --- the verdict ---------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """The verdict's thresholds; the defaults are the Kubernetes SLOs' numbers."""

    mutating_p99_seconds: float = 1.0
    """Single-object mutating calls: p99 at most 1 s (the API call latency SLO)."""
    ratio_429: float = 0.01
    """Share of requests answered 429 above which the apiserver is shedding load."""
    min_requests: float = 20
    """Fewer requests than this in the window say nothing about a 429 ratio."""
    min_mutating_requests: float = 10
    """Fewer calls of a (resource, verb) pair than this say nothing about its p99: one
    slow request out of three would otherwise be "the p99"."""
    guarded_levels: Mapping[str, str] = field(
        default_factory=lambda: {
            NODE_HIGH: "apf_rejections_node_high",
            LEADER_ELECTION: "apf_rejections_leader_election",
        }
    )
    """Priority level -> reason: any rejection on these levels is congestion."""


DEFAULT_THRESHOLDS: Final = Thresholds()


@dataclass(frozen=True)
class Evaluation:
    """The verdict over the window between two scrapes, and the numbers behind it."""

    evaluated: bool = False
    """False on the first scrape: no window, no verdict."""
    reasons: frozenset[str] = frozenset()
    restarted: bool = False
    """The apiserver restarted within the window (its counters were reset)."""
    apf_wait_p99_seconds: Mapping[str, float] = field(default_factory=dict)
    """p99 time in APF queues per priority level, levels with observations only."""
    etcd_p99_seconds: Mapping[str, float] = field(default_factory=dict)
    """p99 etcd request latency per operation, operations with observations only."""
    mutating_p99_seconds: float | None = None
    """The worst p99 of single-object mutating calls over the (resource, verb) pairs
    with at least ``min_mutating_requests`` calls; None when no pair qualifies."""
    ratio_429: float | None = None
    """Share of the window's requests answered 429; None below ``min_requests``."""
    apf_rejections: Mapping[str, float] = field(default_factory=dict)
    """Rejections per priority level within the window."""

    @property
    def congested(self) -> bool:
        return bool(self.reasons)


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def _increase(prev: Mapping[str, float] | None, cur: Mapping[str, float], key: str) -> float:
    if key not in cur:
        return 0.0
    before = 0.0 if prev is None else prev.get(key, 0.0)
    return counter_delta(before, cur[key])


def _window_p99(
    prev: Mapping[str, tuple[tuple[float, float], ...]] | None,
    cur: Mapping[str, tuple[tuple[float, float], ...]],
) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, buckets in cur.items():
        before = None if prev is None else prev.get(key)
        window = list(buckets) if before is None else bucket_deltas(before, buckets)
        value = histogram_quantile(0.99, window)
        if _finite(value):
            out[key] = value
    return out


def _is_reset(prev: ApiserverSummary, cur: ApiserverSummary) -> bool:
    """Whether the apiserver restarted between the two scrapes."""
    if (
        prev.process_start_time_seconds is not None
        and cur.process_start_time_seconds is not None
        and prev.process_start_time_seconds != cur.process_start_time_seconds
    ):
        return True
    # No start time (filtered out, or a proxy in between): a decrease of any summed
    # counter betrays the restart; per series, bucket_deltas and counter_delta also
    # handle it, but the window's counters must agree with each other.
    for key, value in cur.requests.items():
        if value < prev.requests.get(key, 0.0):
            return True
    return any(value < prev.apf_rejected.get(key, 0.0) for key, value in cur.apf_rejected.items())


def evaluate(
    prev: ApiserverSummary | None,
    cur: ApiserverSummary,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Evaluation:
    """The verdict for the window from ``prev`` to ``cur`` (None: first scrape)."""
    if prev is None:
        return Evaluation()
    restarted = _is_reset(prev, cur)
    # After a restart everything in ``cur`` was counted since: compare with nothing.
    base: ApiserverSummary | None = None if restarted else prev

    reasons: set[str] = set()
    rejections = _rejections_by_level(base, cur)
    for level, reason in thresholds.guarded_levels.items():
        # NaN > 0 is False: a broken counter never raises the alarm on its own.
        if rejections.get(level, 0.0) > 0:
            reasons.add(reason)
    ratio = _ratio_429(base, cur, thresholds)
    if ratio is not None and ratio > thresholds.ratio_429:
        reasons.add("ratio_429")
    worst = _worst_mutating_p99(base, cur, thresholds)
    if worst is not None and worst > thresholds.mutating_p99_seconds:
        reasons.add("mutating_latency_slo")

    return Evaluation(
        evaluated=True,
        reasons=frozenset(reasons),
        restarted=restarted,
        apf_wait_p99_seconds=_window_p99(None if base is None else base.apf_wait, cur.apf_wait),
        etcd_p99_seconds=_window_p99(None if base is None else base.etcd, cur.etcd),
        mutating_p99_seconds=worst,
        ratio_429=ratio,
        apf_rejections=rejections,
    )


def _rejections_by_level(base: ApiserverSummary | None, cur: ApiserverSummary) -> dict[str, float]:
    """APF rejections within the window per priority level, summed over reasons."""
    rejections: dict[str, float] = {}
    for (level, reason), value in cur.apf_rejected.items():
        before = 0.0 if base is None else base.apf_rejected.get((level, reason), 0.0)
        rejections[level] = rejections.get(level, 0.0) + counter_delta(before, value)
    return dict(sorted(rejections.items()))


def _ratio_429(
    base: ApiserverSummary | None, cur: ApiserverSummary, thresholds: Thresholds
) -> float | None:
    """The window's share of 429 answers; None without enough requests to say."""
    if not cur.has_requests:
        return None
    base_requests = None if base is None else base.requests
    window = {k: _increase(base_requests, cur.requests, k) for k in CODE_CLASSES}
    total = math.fsum(window.values())
    if not _finite(total) or total < thresholds.min_requests:
        return None
    ratio = window["429"] / total
    return ratio if _finite(ratio) else None


def _worst_mutating_p99(
    base: ApiserverSummary | None, cur: ApiserverSummary, thresholds: Thresholds
) -> float | None:
    """The worst window p99 over the (resource, verb) pairs with enough calls."""
    worst: float | None = None
    for key, buckets in cur.mutating_by_pair.items():
        previous = None if base is None else base.mutating_by_pair.get(key)
        window = list(buckets) if previous is None else bucket_deltas(previous, buckets)
        observed = window[-1][1] if window else 0.0
        if not observed >= thresholds.min_mutating_requests:  # NaN-safe: NaN fails it
            continue
        p99 = histogram_quantile(0.99, window)
        if _finite(p99) and (worst is None or p99 > worst):
            worst = p99
    return worst
