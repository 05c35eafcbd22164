"""The /metrics the real control-plane components serve, consistent with what the simulator did.

Why this exists: kube-ballast's exporter, alert rules and dashboards read the apiserver's,
the scheduler's and the controller-manager's own metrics (request rates and latencies,
APF rejections, inflight requests, stored object counts, leader election, work queues).
To test them end to end against the simulator, the simulator must serve those series under
the exact names, labels, buckets and HELP strings the real components use, and the values
must follow from what actually happened: the HTTP layer reports every request here, the
fault injector's decisions show up as APF rejections, the store reports its object counts.

How it fits: ``ApiserverMetrics`` and ``ComponentMetrics`` are plain in-memory recorders
with a ``collect()`` that yields metric families (the prometheus_client ``Collector``
protocol), each registered in its own ``CollectorRegistry`` (never the global one, so
several simulated clusters can live in one test process). ``render()`` produces the body
and content type for the HTTP handler: the classic text format from :class:`_TextWriter`
(byte for byte what prometheus_client's generate_latest writes, at a fraction of the CPU:
it keeps each series' text until its value changes), OpenMetrics through
prometheus_client. Recording and collecting do no I/O.

Fidelity notes, with the source each follows (kubernetes/kubernetes):

* names, labels, buckets and "[STABLE]"-style HELP prefixes: staging/src/k8s.io/apiserver/
  pkg/endpoints/metrics/metrics.go, pkg/util/flowcontrol/metrics/metrics.go,
  pkg/storage/etcd3/metrics/metrics.go, pkg/scheduler/metrics/metrics.go,
  component-base/metrics/prometheus/workqueue and .../clientgo/leaderelection;
* counters are written as families by hand rather than with prometheus_client's
  ``Counter``, which would add ``*_created`` series the real components never expose, and
  keeps the real names (``apiserver_request_total``) in the text format;
* etcd_request_duration_seconds uses the {operation, type} labels of Kubernetes up to 1.32
  (type = "pods", "leases.coordination.k8s.io"); later releases split it into
  {operation, group, resource};
* bucket bounds are formatted as Go does ("1", not "1.0") and exponential buckets are
  computed by repeated multiplication as Go's ExponentialBuckets does, so the float
  artefacts match too (workqueue's le="9.999999999999999e-06").

Cardinality is bounded: resource labels must come from the simulator's resource table,
APF labels from the FlowSchemas and priority levels that were in force (the defaults,
and those clients stored: ``set_apf_configuration``), and free-form names (work queues,
leases) are capped; anything else is a programming error and raises ValueError.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from prometheus_client import CollectorRegistry
from prometheus_client import utils as prometheus_utils
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics import exposition as om_exposition

from .apf import (
    EXEMPT,
    PRIORITY_LEVEL_NAMES,
    PRIORITY_LEVEL_OF,
    Configuration,
    nominal_limit_seats,
)
from .resources import RESOURCES, lookup

LabelValues = tuple[str, ...]


def _exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    # component-base/metrics ExponentialBuckets == client_golang's: next *= factor.
    out = []
    value = start
    for _ in range(count):
        out.append(value)
        value *= factor
    return tuple(out)


REQUEST_DURATION_BUCKETS: Final = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3,
    4, 5, 6, 8, 10, 15, 20, 30, 45, 60,
)  # fmt: skip
"""apiserver_request_duration_seconds (endpoints/metrics/metrics.go)."""
ETCD_REQUEST_DURATION_BUCKETS: Final = REQUEST_DURATION_BUCKETS
"""etcd_request_duration_seconds: "keep consistent with apiserver metric 'requestLatencies'"."""
APF_WAIT_BUCKETS: Final = (0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30)
"""apiserver_flowcontrol_request_wait_duration_seconds (requestDurationSecondsBuckets)."""
SCHEDULING_ATTEMPT_BUCKETS: Final = _exponential_buckets(0.001, 2, 15)
WORKQUEUE_QUEUE_DURATION_BUCKETS: Final = _exponential_buckets(10e-9, 10, 12)

READ_ONLY_KIND: Final = "readOnly"
MUTATING_KIND: Final = "mutating"
APF_REJECT_REASONS: Final = frozenset({"queue-full", "concurrency-limit", "time-out", "cancelled"})
SCOPES: Final = frozenset({"resource", "namespace", "cluster", ""})
SUBRESOURCES: Final = frozenset(
    {
        "",
        "status",
        "scale",
        "binding",
        "eviction",
        "ephemeralcontainers",
        "resize",
        "log",
        "exec",
        "attach",
        "portforward",
        "proxy",
        "token",
        "approval",
    }
)
COMPONENTS: Final = frozenset({"apiserver"})
ETCD_OPERATIONS: Final = frozenset({"get", "list", "listWithCount", "create", "update", "delete"})
STORAGE_RESOURCES: Final = frozenset(
    f"{rt.plural}.{rt.group}" if rt.group else rt.plural for rt in RESOURCES
)
"""GroupResource.String() of every served resource: the storage metrics' resource/type."""

# The verbs apiserver_request_total reports (validRequestMethods in metrics.go); others are
# reported as "other". Request-info verbs are translated as the installer's routes do.
_VALID_METRIC_VERBS: Final = frozenset(
    {
        "APPLY",
        "CONNECT",
        "CREATE",
        "DELETE",
        "DELETECOLLECTION",
        "GET",
        "LIST",
        "PATCH",
        "POST",
        "PROXY",
        "PUT",
        "UPDATE",
        "WATCH",
    }
)
_REQUEST_INFO_VERBS: Final = {
    "get": "GET",
    "list": "LIST",
    "watch": "WATCH",
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "apply": "APPLY",
    "delete": "DELETE",
    "deletecollection": "DELETECOLLECTION",
    "connect": "CONNECT",
    "proxy": "PROXY",
}
_WATCH_VERBS: Final = frozenset({"watch", "WATCH", "WATCHLIST"})

_MAX_FREE_FORM_NAMES: Final = 64
"""Cap on distinct work-queue and lease names: real components have a few dozen."""


def metric_verb(verb: str) -> str:
    """The verb label as apiserver_request_total reports it (metrics.go cleanVerb)."""
    if verb in _REQUEST_INFO_VERBS:
        return _REQUEST_INFO_VERBS[verb]
    upper = verb.upper()
    if upper == "WATCHLIST":  # "normalize the legacy WATCHLIST to WATCH"
        return "WATCH"
    return upper if upper in _VALID_METRIC_VERBS else "other"


def storage_resource(group: str, plural: str) -> str:
    """GroupResource.String(): "pods", "leases.coordination.k8s.io"."""
    return f"{plural}.{group}" if group else plural


def _go_float(value: float) -> str:
    # strconv.FormatFloat(v, 'g', -1, 64) for the values we use: shortest round-trip
    # digits, with no trailing ".0".
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


class _Histogram:
    """Cumulative-bucket histograms keyed by label values, rendered as one family."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str], buckets: Sequence[float]):
        self.name = name
        self.help = help_text
        self.labels = list(labels)
        self.bounds = tuple(float(b) for b in buckets)
        self._le = [_go_float(b) for b in self.bounds] + ["+Inf"]
        # label values -> (per-bucket non-cumulative counts incl. +Inf, sum)
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, key: LabelValues, value: float) -> None:
        counts, total = self._series.setdefault(key, ([0] * (len(self.bounds) + 1), [0.0]))
        # A value equal to a bound falls in that bucket (le = "less than or equal").
        counts[bisect.bisect_left(self.bounds, value)] += 1
        total[0] += value

    def family(self) -> _Family:
        return _Family(self.name, "histogram", self.help, tuple(self.labels), histogram=self)

    def metric(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        for key in sorted(self._series):
            counts, total = self._series[key]
            cumulative, buckets = 0, []
            for le, n in zip(self._le, counts, strict=True):
                cumulative += n
                buckets.append((le, float(cumulative)))
            fam.add_metric(list(key), buckets, total[0])
        return fam

    def __bool__(self) -> bool:
        return bool(self._series)


@dataclass(frozen=True, slots=True)
class _Family:
    """One family as ``collect()`` and the text writer both see it: the recorders' own
    mappings, turned into prometheus_client objects only when asked (``metric``)."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...]
    values: Mapping[LabelValues, float] = field(default_factory=dict)
    histogram: _Histogram | None = None

    def metric(self) -> Metric:
        if self.histogram is not None:
            return self.histogram.metric()
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        fam = cls(self.name, self.help, labels=list(self.labels))
        for key in sorted(self.values):
            fam.add_metric(list(key), self.values[key])
        return fam


def _counter(
    name: str, help_text: str, labels: Sequence[str], values: Mapping[LabelValues, float]
) -> _Family:
    return _Family(name, "counter", help_text, tuple(labels), values)


def _gauge(
    name: str, help_text: str, labels: Sequence[str], values: Mapping[LabelValues, float]
) -> _Family:
    return _Family(name, "gauge", help_text, tuple(labels), values)


# Untyped in prometheus_client; pinned as the text writers use it (Go's float format).
_float_text: Callable[[float], str] = prometheus_utils.floatToGoString


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    # generate_latest's sample_line: label names sorted, values escaped (backslash,
    # newline, double quote), braces only when there are labels.
    if not names:
        return ""
    pairs = sorted(zip(names, values, strict=True))
    return "{" + ",".join(f'{k}="{_escape_value(v)}"' for k, v in pairs) + "}"


class _TextWriter:
    """The classic text format (0.0.4), byte for byte as prometheus_client's
    ``generate_latest`` writes it, but remembering every series' text.

    Why: generate_latest escapes and validates every label of every sample on every
    scrape, which was the largest single CPU cost of the simulator under a scraping
    exporter (about 40 ms for a 2600-line page). Here a series' label text is built once,
    and a series whose value (a histogram: whose count) did not change since the last
    render is not formatted again, so a render costs a sort and a join plus the series
    that moved. The page is always current: nothing is cached across a change.
    """

    def __init__(self) -> None:
        self._headers: dict[str, str] = {}
        self._simple: dict[str, dict[LabelValues, tuple[float, str, str]]] = {}
        self._histograms: dict[str, dict[LabelValues, tuple[int, str, tuple[str, ...]]]] = {}

    def render(self, families: Sequence[_Family]) -> bytes:
        out: list[str] = []
        for fam in families:
            header = self._headers.get(fam.name)
            if header is None:
                header = self._headers[fam.name] = _header(fam)
            out.append(header)
            if fam.histogram is not None:
                self._histogram_lines(fam.histogram, out)
                continue
            memo = self._simple.setdefault(fam.name, {})
            sample = (
                fam.name.removesuffix("_total") + "_total" if fam.kind == "counter" else fam.name
            )
            values = fam.values
            for key in sorted(values):
                value = values[key]
                hit = memo.get(key)
                if hit is None or hit[0] != value:
                    prefix = hit[2] if hit is not None else sample + _label_text(fam.labels, key)
                    hit = memo[key] = (value, f"{prefix} {_float_text(value)}\n", prefix)
                out.append(hit[1])
        return "".join(out).encode("utf-8")

    def _histogram_lines(self, hist: _Histogram, out: list[str]) -> None:
        memo = self._histograms.setdefault(hist.name, {})
        names = (*hist.labels, "le")
        for key, (counts, total) in sorted(hist._series.items()):
            n = sum(counts)  # only grows: an unchanged count is an unchanged series
            hit = memo.get(key)
            if hit is not None and hit[0] == n:
                out.append(hit[1])
                continue
            if hit is not None:
                prefixes = hit[2]
            else:
                plain = _label_text(hist.labels, key)
                prefixes = (
                    *(f"{hist.name}_bucket{_label_text(names, (*key, le))} " for le in hist._le),
                    f"{hist.name}_count{plain} ",
                    f"{hist.name}_sum{plain} ",
                )
            lines, cumulative = [], 0
            for prefix, count in zip(prefixes[:-2], counts, strict=True):
                cumulative += count
                lines.append(f"{prefix}{_float_text(float(cumulative))}\n")
            lines.append(f"{prefixes[-2]}{_float_text(float(cumulative))}\n")
            lines.append(f"{prefixes[-1]}{_float_text(total[0])}\n")
            text = "".join(lines)
            memo[key] = (n, text, prefixes)
            out.append(text)


def _header(fam: _Family) -> str:
    kind = "histogram" if fam.histogram is not None else fam.kind
    help_text = fam.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {fam.name} {help_text}\n# TYPE {fam.name} {kind}\n"


# prometheus_client's OpenMetrics writer has no annotations; pin the signature we rely on.
_generate_openmetrics: Callable[[CollectorRegistry], bytes] = om_exposition.generate_latest


_PROCESS_START_HELP: Final = "Start time of the process since unix epoch in seconds."


class ApiserverMetrics:
    """kube-apiserver's /metrics: requests, inflight, APF, storage and etcd."""

    def __init__(
        self,
        max_requests_inflight: int = 400,
        max_mutating_requests_inflight: int = 200,
        *,
        start_time: float | None = None,
    ) -> None:
        if max_requests_inflight < 0 or max_mutating_requests_inflight < 0:
            raise ValueError(
                "max_requests_inflight and max_mutating_requests_inflight must be >= 0"
            )
        # APF divides --max-requests-inflight + --max-mutating-requests-inflight among the
        # priority levels (server/options/recommended.go).
        self._server_concurrency_limit = max_requests_inflight + max_mutating_requests_inflight
        self._nominal_seats = nominal_limit_seats(self._server_concurrency_limit)
        # Every (flow schema -> levels) pair ever in force: a request classified just
        # before a FlowSchema changed is still recorded under the labels it got.
        self._apf_levels_of: dict[str, set[str]] = {
            fs: {pl} for fs, pl in PRIORITY_LEVEL_OF.items()
        }
        self._apf_level_names: set[str] = set(PRIORITY_LEVEL_NAMES)
        self._start_time = time.time() if start_time is None else start_time
        self._requests: dict[LabelValues, float] = {}
        self._terminations: dict[LabelValues, float] = {}
        self._durations = _Histogram(
            "apiserver_request_duration_seconds",
            "[STABLE] Response latency distribution in seconds for each verb, dry run value, "
            "group, version, resource, subresource, scope and component.",
            (
                "verb",
                "dry_run",
                "group",
                "version",
                "resource",
                "subresource",
                "scope",
                "component",
            ),
            REQUEST_DURATION_BUCKETS,
        )
        self._inflight = {READ_ONLY_KIND: 0, MUTATING_KIND: 0}
        self._inflight_peak = dict(self._inflight)
        self._longrunning: dict[LabelValues, float] = {}
        self._apf_rejected: dict[LabelValues, float] = {}
        self._apf_dispatched: dict[LabelValues, float] = {}
        self._apf_inqueue: dict[LabelValues, float] = {}
        self._apf_wait = _Histogram(
            "apiserver_flowcontrol_request_wait_duration_seconds",
            "[BETA] Length of time a request spent waiting in its queue",
            ("priority_level", "flow_schema", "execute"),
            APF_WAIT_BUCKETS,
        )
        self._etcd_requests: dict[LabelValues, float] = {}
        self._etcd_durations = _Histogram(
            "etcd_request_duration_seconds",
            "[ALPHA] Etcd request latency in seconds for each operation and object type.",
            ("operation", "type"),
            ETCD_REQUEST_DURATION_BUCKETS,
        )
        self._storage_objects: dict[LabelValues, float] = {}
        self._text = _TextWriter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # --- inflight ----------------------------------------------------------------------

    def request_started(self, verb: str, mutating: bool) -> None:
        """A request began executing. Watches are long-running and not counted here (the
        max-in-flight and APF filters do not hold a seat for an established watch); use
        ``longrunning_started`` for them."""
        if verb in _WATCH_VERBS:
            return
        kind = MUTATING_KIND if mutating else READ_ONLY_KIND
        self._inflight[kind] += 1
        self._inflight_peak[kind] = max(self._inflight_peak[kind], self._inflight[kind])

    def request_finished(self, verb: str, mutating: bool) -> None:
        if verb in _WATCH_VERBS:
            return
        kind = MUTATING_KIND if mutating else READ_ONLY_KIND
        if self._inflight[kind] == 0:
            raise ValueError(f"request_finished without request_started ({kind})")
        self._inflight[kind] -= 1

    def longrunning_started(
        self,
        verb: str,
        group: str,
        version: str,
        resource: str,
        subresource: str,
        scope: str,
        component: str = "apiserver",
    ) -> None:
        """An open watch (or exec/log/proxy): apiserver_longrunning_requests goes up."""
        key = self._request_key(verb, group, version, resource, subresource, scope, component)
        self._longrunning[key] = self._longrunning.get(key, 0) + 1

    def longrunning_finished(
        self,
        verb: str,
        group: str,
        version: str,
        resource: str,
        subresource: str,
        scope: str,
        component: str = "apiserver",
    ) -> None:
        key = self._request_key(verb, group, version, resource, subresource, scope, component)
        if self._longrunning.get(key, 0) <= 0:
            raise ValueError(f"longrunning_finished without longrunning_started {key}")
        self._longrunning[key] -= 1

    # --- requests ----------------------------------------------------------------------

    def observe_request(
        self,
        verb: str,
        group: str,
        version: str,
        resource: str,
        subresource: str,
        scope: str,
        component: str,
        code: int,
        duration_seconds: float,
        *,
        dry_run: bool = False,
    ) -> None:
        """One request the handler answered (MonitorRequest): request_total and duration.

        ``verb`` may be a request-info verb ("create") or a metric verb ("POST"). ``scope``
        is metrics.go CleanScope: "resource" (named object, or create), "namespace",
        "cluster", or "" for non-resource requests (then group, version and resource are "").
        """
        key = self._request_key(verb, group, version, resource, subresource, scope, component)
        if not 100 <= code <= 599:
            raise ValueError(f"code must be an HTTP status, got {code}")
        if duration_seconds < 0:
            raise ValueError(f"duration_seconds must be >= 0, got {duration_seconds}")
        dry = "All" if dry_run else ""
        mverb, grp, ver, res, sub, scp, comp = key
        labels = (mverb, dry, grp, ver, res, sub, scp, comp)
        counter_key = (*labels, str(code))
        self._requests[counter_key] = self._requests.get(counter_key, 0) + 1
        self._durations.observe(labels, duration_seconds)

    def observe_dropped(
        self,
        verb: str,
        group: str,
        version: str,
        resource: str,
        subresource: str,
        scope: str,
        component: str = "apiserver",
        *,
        dry_run: bool = False,
    ) -> None:
        """A request APF rejected with 429 before any handler ran.

        As the priority-and-fairness filter does (RecordDroppedRequest and
        RecordRequestTermination): apiserver_request_total{code="429"} and
        apiserver_request_terminations_total go up, the duration histogram does not.
        """
        key = self._request_key(verb, group, version, resource, subresource, scope, component)
        mverb, grp, ver, res, sub, scp, comp = key
        dry = "All" if dry_run else ""
        counter_key = (mverb, dry, grp, ver, res, sub, scp, comp, "429")
        self._requests[counter_key] = self._requests.get(counter_key, 0) + 1
        term_key = (*key, "429")
        self._terminations[term_key] = self._terminations.get(term_key, 0) + 1

    @staticmethod
    def _request_key(
        verb: str,
        group: str,
        version: str,
        resource: str,
        subresource: str,
        scope: str,
        component: str,
    ) -> tuple[str, str, str, str, str, str, str]:
        if resource or group or version:
            rt = lookup(group, resource)
            if rt is None:
                raise ValueError(f"unknown resource {storage_resource(group, resource)!r}")
            if version != rt.version:
                raise ValueError(f"{rt.plural}: version {version!r}, served {rt.version!r}")
        if subresource not in SUBRESOURCES:
            raise ValueError(f"unknown subresource {subresource!r}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {sorted(SCOPES)}, got {scope!r}")
        if component not in COMPONENTS:
            raise ValueError(f"component must be one of {sorted(COMPONENTS)}, got {component!r}")
        return (metric_verb(verb), group, version, resource, subresource, scope, component)

    # --- API Priority and Fairness -----------------------------------------------------

    def set_apf_configuration(self, config: Configuration) -> None:
        """The FlowSchemas and levels now in force (``apf.StoredConfiguration`` calls this
        after every rebuild): their names become valid labels and the nominal seats are
        recomputed, as apf_controller.go sets apiserver_flowcontrol_nominal_limit_seats."""
        for fs, pl in config.level_of.items():
            self._apf_levels_of.setdefault(fs, set()).add(pl)
        self._apf_level_names.update(config.priority_levels)
        self._nominal_seats = config.nominal_limit_seats(self._server_concurrency_limit)

    def note_enqueued(self, priority_level: str, flow_schema: str) -> None:
        """A request entered an APF queue: apiserver_flowcontrol_current_inqueue_requests +1.
        Its outcome later comes with ``observe_flowcontrol(..., inqueue_delta=-1)``."""
        self._check_apf(priority_level, flow_schema)
        self._add_inqueue((priority_level, flow_schema), 1)

    def observe_flowcontrol(
        self,
        priority_level: str,
        flow_schema: str,
        *,
        rejected_reason: str | None,
        wait_seconds: float,
        inqueue_delta: int = 0,
    ) -> None:
        """The APF outcome of one request: dispatched (``rejected_reason`` None) or rejected.

        As apf_controller.go Handle: a rejection counts in rejected_requests_total, a
        dispatch in dispatched_requests_total, and for non-exempt levels the time spent
        waiting is observed with execute="true"/"false" (exempt requests never queue).
        ``inqueue_delta`` adjusts the in-queue gauge in the same step.
        """
        self._check_apf(priority_level, flow_schema)
        if rejected_reason is not None and rejected_reason not in APF_REJECT_REASONS:
            raise ValueError(
                f"rejected_reason must be one of {sorted(APF_REJECT_REASONS)}, "
                f"got {rejected_reason!r}"
            )
        if wait_seconds < 0:
            raise ValueError(f"wait_seconds must be >= 0, got {wait_seconds}")
        if rejected_reason is not None and priority_level == EXEMPT:
            raise ValueError("APF never rejects requests of the exempt priority level")
        key = (priority_level, flow_schema)
        if inqueue_delta:
            self._add_inqueue(key, inqueue_delta)
        if rejected_reason is None:
            self._apf_dispatched[key] = self._apf_dispatched.get(key, 0) + 1
        else:
            reject_key = (*key, rejected_reason)
            self._apf_rejected[reject_key] = self._apf_rejected.get(reject_key, 0) + 1
        if priority_level != EXEMPT:
            executed = "true" if rejected_reason is None else "false"
            self._apf_wait.observe((*key, executed), wait_seconds)

    def _add_inqueue(self, key: LabelValues, delta: int) -> None:
        value = self._apf_inqueue.get(key, 0) + delta
        if value < 0:
            raise ValueError(f"in-queue requests of {key} would go negative")
        self._apf_inqueue[key] = value

    def _check_apf(self, priority_level: str, flow_schema: str) -> None:
        levels = self._apf_levels_of.get(flow_schema)
        if levels is None:
            raise ValueError(f"unknown flow schema {flow_schema!r}")
        if priority_level not in self._apf_level_names:
            raise ValueError(f"unknown priority level {priority_level!r}")
        if priority_level not in levels:
            raise ValueError(
                f"flow schema {flow_schema!r} belongs to {sorted(levels)}, not {priority_level!r}"
            )

    # --- storage -----------------------------------------------------------------------

    def observe_etcd(self, operation: str, type_: str, duration_seconds: float) -> None:
        """One storage round trip. ``type_`` is the GroupResource string ("pods",
        "leases.coordination.k8s.io"), as etcd3/store.go passes it."""
        if operation not in ETCD_OPERATIONS:
            raise ValueError(f"operation must be one of {sorted(ETCD_OPERATIONS)}")
        if type_ not in STORAGE_RESOURCES:
            raise ValueError(f"unknown storage type {type_!r}")
        if duration_seconds < 0:
            raise ValueError(f"duration_seconds must be >= 0, got {duration_seconds}")
        key = (operation, type_)
        self._etcd_requests[key] = self._etcd_requests.get(key, 0) + 1
        self._etcd_durations.observe(key, duration_seconds)

    def set_storage_objects(self, counts: Mapping[str, int]) -> None:
        """Object counts by GroupResource string. Resources not named keep their last value,
        as the real apiserver updates each resource's count on its own schedule."""
        unknown = set(counts) - STORAGE_RESOURCES
        if unknown:
            raise ValueError(f"unknown storage resources {sorted(unknown)}")
        for resource, count in counts.items():
            self._storage_objects[(resource,)] = count

    # --- exposition --------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The families, in the prometheus_client Collector protocol (OpenMetrics)."""
        for fam in self._families():
            yield fam.metric()

    def _families(self) -> list[_Family]:
        """The families to expose. Families with no series are left out, as client_golang
        leaves out vectors with no children."""
        families: list[_Family] = []
        if self._requests:
            families.append(
                _counter(
                    "apiserver_request_total",
                    "[STABLE] Counter of apiserver requests broken out for each verb, dry run "
                    "value, group, version, resource, scope, component, and HTTP response code.",
                    (
                        "verb",
                        "dry_run",
                        "group",
                        "version",
                        "resource",
                        "subresource",
                        "scope",
                        "component",
                        "code",
                    ),
                    self._requests,
                )
            )
        if self._durations:
            families.append(self._durations.family())
        if self._terminations:
            families.append(
                _counter(
                    "apiserver_request_terminations_total",
                    "[ALPHA] Number of requests which apiserver terminated in self-defense.",
                    (
                        "verb",
                        "group",
                        "version",
                        "resource",
                        "subresource",
                        "scope",
                        "component",
                        "code",
                    ),
                    self._terminations,
                )
            )
        # The real gauge is a watermark: "Maximal number of currently used inflight request
        # limit of this apiserver per request kind in last second". Ours is the maximum since
        # the previous scrape, which shows the same bursts.
        families.append(
            _gauge(
                "apiserver_current_inflight_requests",
                "[STABLE] Maximal number of currently used inflight request limit of this "
                "apiserver per request kind in last second.",
                ("request_kind",),
                {(kind,): float(peak) for kind, peak in self._inflight_peak.items()},
            )
        )
        self._inflight_peak = dict(self._inflight)
        if self._longrunning:
            families.append(
                _gauge(
                    "apiserver_longrunning_requests",
                    "[STABLE] Gauge of all active long-running apiserver requests broken out by "
                    "verb, group, version, resource, scope and component. Not all requests are "
                    "tracked this way.",
                    ("verb", "group", "version", "resource", "subresource", "scope", "component"),
                    self._longrunning,
                )
            )
        if self._apf_rejected:
            families.append(
                _counter(
                    "apiserver_flowcontrol_rejected_requests_total",
                    "[BETA] Number of requests rejected by API Priority and Fairness subsystem",
                    ("priority_level", "flow_schema", "reason"),
                    self._apf_rejected,
                )
            )
        if self._apf_dispatched:
            families.append(
                _counter(
                    "apiserver_flowcontrol_dispatched_requests_total",
                    "[BETA] Number of requests executed by API Priority and Fairness subsystem",
                    ("priority_level", "flow_schema"),
                    self._apf_dispatched,
                )
            )
        if self._apf_inqueue:
            families.append(
                _gauge(
                    "apiserver_flowcontrol_current_inqueue_requests",
                    "[BETA] Number of requests currently pending in queues of the API Priority "
                    "and Fairness subsystem",
                    ("priority_level", "flow_schema"),
                    self._apf_inqueue,
                )
            )
        if self._apf_wait:
            families.append(self._apf_wait.family())
        families.append(
            _gauge(
                "apiserver_flowcontrol_nominal_limit_seats",
                "[BETA] Nominal number of execution seats configured for each priority level",
                ("priority_level",),
                {(pl,): float(seats) for pl, seats in self._nominal_seats.items()},
            )
        )
        if self._storage_objects:
            families.append(
                _gauge(
                    "apiserver_storage_objects",
                    "[STABLE] Number of stored objects at the time of last check split by kind. "
                    "In case of a fetching error, the value will be -1.",
                    ("resource",),
                    self._storage_objects,
                )
            )
        if self._etcd_durations:
            families.append(self._etcd_durations.family())
        if self._etcd_requests:
            families.append(
                _counter(
                    "etcd_requests_total",
                    "[ALPHA] Etcd request counts for each operation and object type.",
                    ("operation", "type"),
                    self._etcd_requests,
                )
            )
        families.append(
            _gauge("process_start_time_seconds", _PROCESS_START_HELP, (), {(): self._start_time})
        )
        return families

    def render(self, openmetrics: bool = False) -> tuple[bytes, str]:
        """(body, content type) for GET /metrics: the classic text format (what the real
        components answer a plain scrape with, version 0.0.4) from the remembering
        writer, or OpenMetrics through prometheus_client when asked for."""
        if openmetrics:
            return _generate_openmetrics(self.registry), om_exposition.CONTENT_TYPE_LATEST
        return self._text.render(self._families()), CONTENT_TYPE_PLAIN_0_0_4


ComponentName = Literal["kube-scheduler", "kube-controller-manager"]
SCHEDULER_QUEUES: Final = frozenset({"active", "backoff", "unschedulable", "gated"})
SCHEDULING_RESULTS: Final = frozenset({"scheduled", "unschedulable", "error"})
DEFAULT_SCHEDULER_PROFILE: Final = "default-scheduler"


class ComponentMetrics:
    """The /metrics of kube-scheduler or kube-controller-manager: leader election, the
    scheduler's queues and attempts, the controllers' work queues."""

    def __init__(self, component: ComponentName, *, start_time: float | None = None) -> None:
        if component not in ("kube-scheduler", "kube-controller-manager"):
            raise ValueError(f"unknown component {component!r}")
        self.component = component
        self._start_time = time.time() if start_time is None else start_time
        self._leader: dict[LabelValues, float] = {}
        self._pending: dict[LabelValues, float] = {}
        self._attempts: dict[LabelValues, float] = {}
        self._attempt_durations = _Histogram(
            "scheduler_scheduling_attempt_duration_seconds",
            "[STABLE] Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            ("profile", "result"),
            SCHEDULING_ATTEMPT_BUCKETS,
        )
        self._wq_depth: dict[LabelValues, float] = {}
        self._wq_adds: dict[LabelValues, float] = {}
        self._wq_queue_durations = _Histogram(
            "workqueue_queue_duration_seconds",
            "[ALPHA] How long in seconds an item stays in workqueue before being requested",
            ("name",),
            WORKQUEUE_QUEUE_DURATION_BUCKETS,
        )
        self._text = _TextWriter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def set_leader(self, is_leader: bool, lease_name: str) -> None:
        """leader_election_master_status{name}: 1 while this instance holds the lease."""
        _check_name("lease_name", lease_name, self._leader)
        self._leader[(lease_name,)] = 1.0 if is_leader else 0.0

    def set_pending_pods(self, queue: str, n: int) -> None:
        """scheduler_pending_pods{queue}: active, backoff, unschedulable or gated."""
        self._require_scheduler()
        if queue not in SCHEDULER_QUEUES:
            raise ValueError(f"queue must be one of {sorted(SCHEDULER_QUEUES)}, got {queue!r}")
        if n < 0:
            raise ValueError(f"pending pods must be >= 0, got {n}")
        self._pending[(queue,)] = float(n)

    def observe_scheduling(
        self, result: str, seconds: float, profile: str = DEFAULT_SCHEDULER_PROFILE
    ) -> None:
        """One scheduling attempt: scheduler_schedule_attempts_total and its duration."""
        self._require_scheduler()
        if result not in SCHEDULING_RESULTS:
            raise ValueError(f"result must be one of {sorted(SCHEDULING_RESULTS)}, got {result!r}")
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        if profile != DEFAULT_SCHEDULER_PROFILE:
            raise ValueError(f"the simulated scheduler only has {DEFAULT_SCHEDULER_PROFILE!r}")
        key = (profile, result)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        self._attempt_durations.observe(key, seconds)

    def set_workqueue(self, name: str, depth: int, adds: int, queue_seconds: float) -> None:
        """A work queue's state: its current ``depth``, its cumulative ``adds`` (a counter,
        so it may not go down), and one observation of how long an item waited."""
        _check_name("workqueue name", name, self._wq_depth)
        if depth < 0 or queue_seconds < 0:
            raise ValueError("depth and queue_seconds must be >= 0")
        previous = self._wq_adds.get((name,), 0)
        if adds < previous:
            raise ValueError(f"workqueue {name!r}: adds went down from {previous} to {adds}")
        self._wq_depth[(name,)] = float(depth)
        self._wq_adds[(name,)] = float(adds)
        self._wq_queue_durations.observe((name,), queue_seconds)

    def _require_scheduler(self) -> None:
        if self.component != "kube-scheduler":
            raise ValueError(f"{self.component} has no scheduler metrics")

    def collect(self) -> Iterator[Metric]:
        """The families, in the prometheus_client Collector protocol (OpenMetrics)."""
        for fam in self._families():
            yield fam.metric()

    def _families(self) -> list[_Family]:
        families: list[_Family] = []
        if self._leader:
            families.append(
                _gauge(
                    "leader_election_master_status",
                    "[ALPHA] Gauge of if the reporting system is master of the relevant lease, "
                    "0 indicates backup, 1 indicates master. 'name' is the string used to "
                    "identify the lease. Please make sure to group by name.",
                    ("name",),
                    self._leader,
                )
            )
        if self._pending:
            families.append(
                _gauge(
                    "scheduler_pending_pods",
                    "[STABLE] Number of pending pods, by the queue type. 'active' means number "
                    "of pods in activeQ; 'backoff' means number of pods in backoffQ; "
                    "'unschedulable' means number of pods in unschedulablePods that the "
                    "scheduler attempted to schedule and failed; 'gated' is the number of "
                    "unschedulable pods that the scheduler never attempted to schedule because "
                    "they are gated.",
                    ("queue",),
                    self._pending,
                )
            )
        if self._attempts:
            families.append(
                _counter(
                    "scheduler_schedule_attempts_total",
                    "[STABLE] Number of attempts to schedule pods, by the result. "
                    "'unschedulable' means a pod could not be scheduled, while 'error' means "
                    "an internal scheduler problem.",
                    ("profile", "result"),
                    self._attempts,
                )
            )
        if self._attempt_durations:
            families.append(self._attempt_durations.family())
        if self._wq_depth:
            families.append(
                _gauge(
                    "workqueue_depth",
                    "[ALPHA] Current depth of workqueue",
                    ("name",),
                    self._wq_depth,
                )
            )
            families.append(
                _counter(
                    "workqueue_adds_total",
                    "[ALPHA] Total number of adds handled by workqueue",
                    ("name",),
                    self._wq_adds,
                )
            )
        if self._wq_queue_durations:
            families.append(self._wq_queue_durations.family())
        families.append(
            _gauge("process_start_time_seconds", _PROCESS_START_HELP, (), {(): self._start_time})
        )
        return families

    def render(self, openmetrics: bool = False) -> tuple[bytes, str]:
        """(body, content type) for GET /metrics: the classic text format (what the real
        components answer a plain scrape with, version 0.0.4) from the remembering
        writer, or OpenMetrics through prometheus_client when asked for."""
        if openmetrics:
            return _generate_openmetrics(self.registry), om_exposition.CONTENT_TYPE_LATEST
        return self._text.render(self._families()), CONTENT_TYPE_PLAIN_0_0_4


def _check_name(what: str, name: str, existing: Mapping[LabelValues, float]) -> None:
    if not name:
        raise ValueError(f"{what} must not be empty")
    if (name,) not in existing and len(existing) >= _MAX_FREE_FORM_NAMES:
        raise ValueError(f"more than {_MAX_FREE_FORM_NAMES} distinct {what}s: unbounded labels?")
