"""kube-scheduler and kube-controller-manager: health, leadership, queues.

The seed asks that every component's own health checks and performance data be
monitored, and names the two ways these components hurt a large cluster: a
controller-manager in which one churning controller takes the resources of all the
others (split it out), and a scheduler that falls behind. Both run as leader-elected
replicas, so "is it up" has two halves: is each replica's endpoint healthy, and does
the Lease say some replica is leading and renewing. Sources, per configured target
(``exporter.schedulers`` / ``exporter.controller_managers``):

- :class:`HealthSource` probes ``/healthz``. The probe's outcome *is* its data: a
  refused connection or a 500 is a successful refresh with ``healthy=False`` (were it a
  failed refresh, the runner would keep serving the last, healthy, snapshot). Only
  answers that say nothing about health raise: 401/403 (our credentials) and 429.
  The source's timeout is the target's plus a second, so the probe's own timeout is
  what ends a hung probe and is recorded as unhealthy.
- :class:`SchedulerMetricsSource` and :class:`ControllerManagerMetricsSource` scrape
  ``/metrics`` and keep the previous scrape, to turn cumulative histograms and counters
  into what happened during the last interval (p99 latencies, the busiest work queue).
  A failed scrape fails the refresh (the last values stay, ``kubeballast_source_up``
  says 0): unlike the probe, stale numbers are better than none here.

And per component, read through the Kubernetes API with the shared
:class:`~kubeballast.exporter.kubeobjects.KubeReader`:

- :class:`LeaderLeaseSource` reads the leader Lease (``kube-system/kube-scheduler``,
  ``kube-system/kube-controller-manager``).

Cardinality: ``holder`` is a label of ``kubeballast_component_leader_info`` only, with
one series per component for the current holder (a holder changes on failover, which
is rare; old holders are not kept). Work queue names are a fixed set of about 40 in a
given controller-manager version, so per-queue series are bounded; "which controller
churns" is then ``topk()`` in PromQL over the per-queue series, plus one derived series
here, ``kubeballast_controller_manager_busiest_workqueue_info{name}``, naming the queue
with the most adds over the last interval, with its share of all adds. A rank-labelled
top list (``rank="1".."5"``) was not built: it duplicates ``topk()`` and makes every
reordering a series churn.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kubeballast.core import promtext
from kubeballast.core.config import TargetConfig
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.contract import MetricsCollector, MetricSpec, SnapshotView, SourceError
from kubeballast.exporter.http import TargetClient
from kubeballast.exporter.kubeobjects import KubeReader, object_path, shared_reader
from kubeballast.exporter.runner import SYSTEM_CLOCK, Clock

__all__ = [
    "COMPONENTS",
    "ComponentName",
    "ComponentsCollector",
    "ControllerManagerMetrics",
    "ControllerManagerMetricsSource",
    "HealthResult",
    "HealthSource",
    "LeaderLease",
    "LeaderLeaseSource",
    "LeaseState",
    "QueueStats",
    "SchedulerMetrics",
    "SchedulerMetricsSource",
    "build_components",
    "busiest_queue",
    "parse_controller_manager_metrics",
    "parse_scheduler_metrics",
]

ComponentName = Literal["kube-scheduler", "kube-controller-manager"]

COMPONENTS: Mapping[ComponentName, str] = {
    "kube-scheduler": "scheduler",
    "kube-controller-manager": "controller_manager",
}
"""Component (the ``component`` label, also its Lease's name) -> the source-kind prefix."""

LEASE_NAMESPACE = "kube-system"

LEASE_INTERVAL_SECONDS = 15.0
"""How often the leader Leases are read. One GET of one small object per component: the
Lease duration is 15 s by default, so this sees every failover. Becomes a setting
(``exporter.leader_leases.interval_seconds``) if anyone needs another value."""

LEASE_TIMEOUT_SECONDS = 10.0

HEALTH_PATH = "/healthz"
"""Both components serve /healthz, /livez and /readyz on their secure port; /healthz
includes the ``leaderElection`` check (a replica whose leadership renewal is stuck past
its deadline fails it), which is what a monitor wants to see."""

PROBE_GRACE_SECONDS = 1.0
"""Added to the target's timeout for the source's: the probe's own timeout must fire
first so that a hung component is recorded as unhealthy, not as a failed refresh."""

QUANTILE = 0.99

_SCHEDULER_FAMILIES = (
    "scheduler_pending_pods",
    "scheduler_scheduling_attempt_duration_seconds",
    "leader_election_master_status",
)
_KCM_FAMILIES = (
    "workqueue_depth",
    "workqueue_adds_total",
    "workqueue_queue_duration_seconds",
    "leader_election_master_status",
)


# --------------------------------------------------------------------------------------
# Snapshots and pure derivations
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthResult:
    """One probe: its verdict, HTTP status (0 when there was no answer) and duration."""

    healthy: bool
    status_code: int
    duration_seconds: float
    failure: str | None = None
    """Why it is unhealthy: a SourceError reason (``connect``, ``timeout`` ...) or
    ``http_5xx``/``http_4xx`` for an answer that was not 200 ``ok``."""


@dataclass(frozen=True)
class SchedulerMetrics:
    pending_pods: Mapping[str, float]
    """By queue: active, backoff, unschedulable, gated."""
    attempt_p99_seconds: float | None
    """p99 of scheduling attempts during the last interval; None without attempts."""
    is_leader: bool | None
    """leader_election_master_status of this replica; None when not exposed."""


@dataclass(frozen=True)
class QueueStats:
    depth: float
    adds_total: float
    adds_in_interval: float | None
    """Adds since the previous scrape (resets handled); None on the first scrape."""
    queue_p99_seconds: float | None
    """p99 of how long items waited during the last interval; None without items."""


@dataclass(frozen=True)
class ControllerManagerMetrics:
    queues: Mapping[str, QueueStats]
    is_leader: bool | None
    busiest: str | None
    """The queue with the most adds during the last interval (None: no adds, or first)."""
    busiest_adds_ratio: float | None
    """Its share of all adds during the interval."""


@dataclass(frozen=True)
class LeaseState:
    holder: str
    renew_time: float | None
    """Unix time of the last renewal, as the holder stamped it."""
    lease_duration_seconds: float | None
    transitions: int


@dataclass(frozen=True)
class LeaderLease:
    """The Lease as read; ``state`` is None when the Lease does not exist (leader
    election disabled, or the component never started)."""

    state: LeaseState | None


def _quantile(buckets: promtext.Buckets) -> float | None:
    value = promtext.histogram_quantile(QUANTILE, buckets)
    return None if math.isnan(value) else value


def _leader(samples: Mapping[str, list[promtext.Sample]]) -> bool | None:
    statuses = samples.get("leader_election_master_status")
    if not statuses:
        return None
    return any(s.value == 1 for s in statuses)


Histograms = Mapping[tuple[str, ...], Sequence[tuple[float, float]]]


def parse_scheduler_metrics(
    text: str, previous_buckets: Sequence[tuple[float, float]] | None
) -> tuple[SchedulerMetrics, list[tuple[float, float]]]:
    """The scheduler's metrics from a /metrics page, and the cumulative attempt
    histogram to pass as ``previous_buckets`` next time."""
    samples = promtext.parse(text, _SCHEDULER_FAMILIES)
    pending = {
        key[0]: value
        for key, value in promtext.sum_by(
            samples.get("scheduler_pending_pods", ()), ("queue",)
        ).items()
    }
    # All profiles and results together: the latency of an attempt, whatever its outcome.
    histograms = promtext.histogram_buckets(
        samples.get("scheduler_scheduling_attempt_duration_seconds", ())
    )
    buckets = histograms.get((), [])
    p99: float | None = None
    if previous_buckets is not None and buckets:
        p99 = _quantile(promtext.bucket_deltas(previous_buckets, buckets))
    return SchedulerMetrics(pending, p99, _leader(samples)), buckets


def parse_controller_manager_metrics(
    text: str,
    previous_adds: Mapping[str, float] | None,
    previous_buckets: Histograms | None,
) -> tuple[ControllerManagerMetrics, dict[str, float], Histograms]:
    """The controller-manager's work queues from a /metrics page, and the cumulative
    adds and histograms to pass as ``previous_*`` next time."""
    samples = promtext.parse(text, _KCM_FAMILIES)
    depth = {
        k[0]: v for k, v in promtext.sum_by(samples.get("workqueue_depth", ()), ("name",)).items()
    }
    adds = {
        k[0]: v
        for k, v in promtext.sum_by(samples.get("workqueue_adds_total", ()), ("name",)).items()
    }
    histograms = promtext.histogram_buckets(
        samples.get("workqueue_queue_duration_seconds", ()), ("name",)
    )
    queues: dict[str, QueueStats] = {}
    for name in sorted(set(depth) | set(adds)):
        interval_adds: float | None = None
        if previous_adds is not None and name in adds:
            interval_adds = promtext.counter_delta(previous_adds.get(name, 0.0), adds[name])
        p99: float | None = None
        current = histograms.get((name,))
        previous = previous_buckets.get((name,)) if previous_buckets is not None else None
        if current and previous is not None:
            p99 = _quantile(promtext.bucket_deltas(previous, current))
        queues[name] = QueueStats(
            depth=depth.get(name, 0.0),
            adds_total=adds.get(name, 0.0),
            adds_in_interval=interval_adds,
            queue_p99_seconds=p99,
        )
    busiest, ratio = busiest_queue(
        {n: q.adds_in_interval for n, q in queues.items() if q.adds_in_interval is not None}
    )
    metrics = ControllerManagerMetrics(queues, _leader(samples), busiest, ratio)
    return metrics, adds, histograms


def busiest_queue(adds: Mapping[str, float]) -> tuple[str | None, float | None]:
    """The queue with the most adds and its share of all adds; (None, None) when no
    queue had any. Ties go to the name that sorts first, so the answer is stable."""
    total = sum(adds.values())
    if total <= 0:
        return None, None
    name = min(adds, key=lambda n: (-adds[n], n))
    return name, adds[name] / total


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------


class HealthSource:
    """Probes one component replica's /healthz; the outcome is the snapshot."""

    def __init__(
        self,
        component: ComponentName,
        target: TargetConfig,
        client: TargetClient,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.component = component
        self.target = target
        self._client = client
        self._clock = clock

    @property
    def kind(self) -> str:
        return f"{COMPONENTS[self.component]}_health"

    @property
    def instance(self) -> str:
        return self.target.name

    @property
    def interval_seconds(self) -> float:
        return self.target.interval_seconds

    @property
    def timeout_seconds(self) -> float:
        return self.target.timeout_seconds + PROBE_GRACE_SECONDS

    async def refresh(self) -> HealthResult:
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self.target.timeout_seconds):
                result = await self._client.get_ok_or_status(HEALTH_PATH)
        except SourceError as error:
            if error.reason in ("auth", "throttled"):
                raise  # about us or the target's load, not its health
            return HealthResult(False, 0, self._elapsed(started), error.reason)
        except TimeoutError:
            return HealthResult(False, 0, self._elapsed(started), "timeout")
        healthy = result.status == 200 and result.text.strip() == "ok"
        failure = None
        if not healthy:
            failure = "http_5xx" if result.status >= 500 else "http_4xx"
        return HealthResult(healthy, result.status, self._elapsed(started), failure)

    def _elapsed(self, started: float) -> float:
        return max(0.0, self._clock.monotonic() - started)


class SchedulerMetricsSource:
    """Scrapes one kube-scheduler's /metrics."""

    def __init__(self, target: TargetConfig, client: TargetClient) -> None:
        self.target = target
        self._client = client
        self._previous: list[tuple[float, float]] | None = None

    kind = "scheduler_metrics"

    @property
    def instance(self) -> str:
        return self.target.name

    @property
    def interval_seconds(self) -> float:
        return self.target.interval_seconds

    @property
    def timeout_seconds(self) -> float:
        return self.target.timeout_seconds

    async def refresh(self) -> SchedulerMetrics:
        result = await self._client.get("/metrics")
        try:
            metrics, buckets = parse_scheduler_metrics(result.text, self._previous)
        except promtext.ParseError as error:
            raise SourceError("parse", f"{self.target.name} /metrics: {error}") from error
        self._previous = buckets
        return metrics


class ControllerManagerMetricsSource:
    """Scrapes one kube-controller-manager's /metrics."""

    def __init__(self, target: TargetConfig, client: TargetClient) -> None:
        self.target = target
        self._client = client
        self._previous_adds: dict[str, float] | None = None
        self._previous_buckets: Histograms | None = None

    kind = "controller_manager_metrics"

    @property
    def instance(self) -> str:
        return self.target.name

    @property
    def interval_seconds(self) -> float:
        return self.target.interval_seconds

    @property
    def timeout_seconds(self) -> float:
        return self.target.timeout_seconds

    async def refresh(self) -> ControllerManagerMetrics:
        result = await self._client.get("/metrics")
        try:
            metrics, adds, buckets = parse_controller_manager_metrics(
                result.text, self._previous_adds, self._previous_buckets
            )
        except promtext.ParseError as error:
            raise SourceError("parse", f"{self.target.name} /metrics: {error}") from error
        self._previous_adds, self._previous_buckets = adds, buckets
        return metrics


class _LeaseSpec(msgspec.Struct, rename="camel"):
    holder_identity: str | None = None
    lease_duration_seconds: int | None = None
    renew_time: datetime.datetime | None = None
    lease_transitions: int | None = None


class _Lease(msgspec.Struct):
    spec: _LeaseSpec = msgspec.field(default_factory=_LeaseSpec)


def lease_state(spec: _LeaseSpec) -> LeaseState:
    renew = spec.renew_time
    if renew is not None and renew.tzinfo is None:
        renew = renew.replace(tzinfo=datetime.UTC)  # MicroTime is UTC
    return LeaseState(
        holder=spec.holder_identity or "",
        renew_time=renew.timestamp() if renew is not None else None,
        lease_duration_seconds=(
            float(spec.lease_duration_seconds) if spec.lease_duration_seconds else None
        ),
        transitions=spec.lease_transitions or 0,
    )


class LeaderLeaseSource:
    """Reads one component's leader Lease through the Kubernetes API."""

    kind = "leader_lease"

    def __init__(
        self,
        component: ComponentName,
        reader: KubeReader,
        *,
        interval_seconds: float = LEASE_INTERVAL_SECONDS,
        timeout_seconds: float = LEASE_TIMEOUT_SECONDS,
    ) -> None:
        self.component = component
        self._reader = reader
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._path = object_path("coordination.k8s.io/v1", "leases", LEASE_NAMESPACE, component)

    @property
    def instance(self) -> str:
        return self.component

    @property
    def interval_seconds(self) -> float:
        return self._interval

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    async def refresh(self) -> LeaderLease:
        lease = await self._reader.get(self._path, _Lease)
        return LeaderLease(None if lease is None else lease_state(lease.spec))


# --------------------------------------------------------------------------------------
# Collector
# --------------------------------------------------------------------------------------

_C = ("component",)
_CT = ("component", "target")

SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "kubeballast_component_healthy",
        "gauge",
        "1 if the replica's /healthz answered 200 ok at the last probe, else 0.",
        _CT,
    ),
    MetricSpec(
        "kubeballast_component_health_probe_duration_seconds",
        "gauge",
        "How long the last /healthz probe of the replica took.",
        _CT,
    ),
    MetricSpec(
        "kubeballast_component_health_http_status_code",
        "gauge",
        "HTTP status of the last /healthz probe; 0 when there was no answer.",
        _CT,
    ),
    MetricSpec(
        "kubeballast_component_is_leader",
        "gauge",
        "1 if the replica reports holding its leader lease (leader_election_master_status).",
        _CT,
    ),
    MetricSpec(
        "kubeballast_component_leader_lease_exists",
        "gauge",
        "1 if the component's leader Lease exists in kube-system, else 0.",
        _C,
    ),
    MetricSpec(
        "kubeballast_component_leader_info",
        "gauge",
        "The current holder of the component's leader Lease (value always 1).",
        ("component", "holder"),
    ),
    MetricSpec(
        "kubeballast_component_leader_renew_age_seconds",
        "gauge",
        "Seconds since the leader last renewed its Lease (as stamped by the leader; "
        "0 if its clock is ahead). Above the lease duration: no component is leading.",
        _C,
    ),
    MetricSpec(
        "kubeballast_component_leader_lease_duration_seconds",
        "gauge",
        "The Lease's leaseDurationSeconds: how long a non-renewed lease stays valid.",
        _C,
    ),
    MetricSpec(
        "kubeballast_component_leader_transitions",
        "gauge",
        "The Lease's leaseTransitions: how many times leadership changed hands.",
        _C,
    ),
    MetricSpec(
        "kubeballast_scheduler_pending_pods",
        "gauge",
        "Pods waiting in the scheduler's queues (scheduler_pending_pods), by queue.",
        ("target", "queue"),
    ),
    MetricSpec(
        "kubeballast_scheduler_scheduling_attempt_duration_p99_seconds",
        "gauge",
        "p99 of scheduling attempt latency over the last probe interval (all profiles "
        "and results); absent when there were no attempts.",
        ("target",),
    ),
    MetricSpec(
        "kubeballast_controller_manager_workqueue_depth",
        "gauge",
        "Items waiting in a controller's work queue (workqueue_depth).",
        ("target", "name"),
    ),
    MetricSpec(
        "kubeballast_controller_manager_workqueue_adds",
        "counter",
        "Items added to a controller's work queue (workqueue_adds_total, passed through).",
        ("target", "name"),
    ),
    MetricSpec(
        "kubeballast_controller_manager_workqueue_queue_duration_p99_seconds",
        "gauge",
        "p99 of how long items waited in a controller's work queue over the last probe "
        "interval; absent when nothing was dequeued.",
        ("target", "name"),
    ),
    MetricSpec(
        "kubeballast_controller_manager_busiest_workqueue_info",
        "gauge",
        "The work queue with the most adds over the last probe interval (value always 1): "
        "the churning controller, a candidate to run in its own process.",
        ("target", "name"),
    ),
    MetricSpec(
        "kubeballast_controller_manager_busiest_workqueue_adds_ratio",
        "gauge",
        "The busiest work queue's share of all work queue adds over the last interval.",
        ("target",),
    ),
)


class ComponentsCollector:
    """Metrics of the schedulers and controller-managers, from their sources' snapshots.

    Views are keyed by ``(component, target name)``; lease views by component. ``now``
    gives the wall-clock time the Lease's renew age is measured against.
    """

    def __init__(
        self,
        *,
        health: Mapping[tuple[ComponentName, str], SnapshotView[HealthResult]],
        schedulers: Mapping[str, SnapshotView[SchedulerMetrics]],
        controller_managers: Mapping[str, SnapshotView[ControllerManagerMetrics]],
        leases: Mapping[ComponentName, SnapshotView[LeaderLease]],
        now: Callable[[], float] = time.time,
    ) -> None:
        self._health = health
        self._schedulers = schedulers
        self._kcms = controller_managers
        self._leases = leases
        self._now = now

    def metric_specs(self) -> Sequence[MetricSpec]:
        return SPECS

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for spec in SPECS:
            cls = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
            families[spec.name] = cls(spec.name, spec.help, labels=list(spec.labels))

        def add(name: str, labels: Sequence[str], value: float) -> None:
            families[name].add_metric(list(labels), value)

        for (component, target), view in sorted(self._health.items()):
            if view.snapshot is None:
                continue
            probe = view.snapshot.value
            key = (component, target)
            add("kubeballast_component_healthy", key, 1.0 if probe.healthy else 0.0)
            add("kubeballast_component_health_probe_duration_seconds", key, probe.duration_seconds)
            add("kubeballast_component_health_http_status_code", key, float(probe.status_code))

        for target, sview in sorted(self._schedulers.items()):
            if sview.snapshot is None:
                continue
            sched = sview.snapshot.value
            if sched.is_leader is not None:
                add(
                    "kubeballast_component_is_leader",
                    ("kube-scheduler", target),
                    1.0 if sched.is_leader else 0.0,
                )
            for queue_name, count in sorted(sched.pending_pods.items()):
                add("kubeballast_scheduler_pending_pods", (target, queue_name), count)
            if sched.attempt_p99_seconds is not None:
                add(
                    "kubeballast_scheduler_scheduling_attempt_duration_p99_seconds",
                    (target,),
                    sched.attempt_p99_seconds,
                )

        for target, kview in sorted(self._kcms.items()):
            if kview.snapshot is None:
                continue
            kcm = kview.snapshot.value
            if kcm.is_leader is not None:
                add(
                    "kubeballast_component_is_leader",
                    ("kube-controller-manager", target),
                    1.0 if kcm.is_leader else 0.0,
                )
            for name, queue in kcm.queues.items():
                add("kubeballast_controller_manager_workqueue_depth", (target, name), queue.depth)
                if kview.up:  # from a stale scrape, a counter would read as "no adds"
                    add(
                        "kubeballast_controller_manager_workqueue_adds",
                        (target, name),
                        queue.adds_total,
                    )
                if queue.queue_p99_seconds is not None:
                    add(
                        "kubeballast_controller_manager_workqueue_queue_duration_p99_seconds",
                        (target, name),
                        queue.queue_p99_seconds,
                    )
            if kcm.busiest is not None and kcm.busiest_adds_ratio is not None:
                add(
                    "kubeballast_controller_manager_busiest_workqueue_info",
                    (target, kcm.busiest),
                    1.0,
                )
                add(
                    "kubeballast_controller_manager_busiest_workqueue_adds_ratio",
                    (target,),
                    kcm.busiest_adds_ratio,
                )

        now = self._now()
        for component, lview in sorted(self._leases.items()):
            if lview.snapshot is None:
                continue
            state = lview.snapshot.value.state
            add(
                "kubeballast_component_leader_lease_exists",
                (component,),
                0.0 if state is None else 1.0,
            )
            if state is None:
                continue
            if state.holder:
                add("kubeballast_component_leader_info", (component, state.holder), 1.0)
            if state.renew_time is not None:
                # Measured at scrape time, so the age keeps growing while nobody renews
                # (and while this source cannot read the Lease: its up says so).
                add(
                    "kubeballast_component_leader_renew_age_seconds",
                    (component,),
                    max(0.0, now - state.renew_time),
                )
            if state.lease_duration_seconds is not None:
                add(
                    "kubeballast_component_leader_lease_duration_seconds",
                    (component,),
                    state.lease_duration_seconds,
                )
            add("kubeballast_component_leader_transitions", (component,), float(state.transitions))

        yield from families.values()


# --------------------------------------------------------------------------------------
# Catalog factory
# --------------------------------------------------------------------------------------


def build_components(context: ExporterContext) -> Sequence[MetricsCollector]:
    """Sources for every configured scheduler and controller-manager, and the leader
    Lease of each component that has at least one target configured."""
    config = context.config
    targets: dict[ComponentName, tuple[TargetConfig, ...]] = {
        "kube-scheduler": config.schedulers,
        "kube-controller-manager": config.controller_managers,
    }
    if not any(targets.values()):
        return []
    health: dict[tuple[ComponentName, str], SnapshotView[HealthResult]] = {}
    schedulers: dict[str, SnapshotView[SchedulerMetrics]] = {}
    kcms: dict[str, SnapshotView[ControllerManagerMetrics]] = {}
    leases: dict[ComponentName, SnapshotView[LeaderLease]] = {}
    for component, component_targets in targets.items():
        for target in component_targets:
            client = context.target_client(target)
            health[(component, target.name)] = context.add_source(
                HealthSource(component, target, client)
            )
            if component == "kube-scheduler":
                schedulers[target.name] = context.add_source(SchedulerMetricsSource(target, client))
            else:
                kcms[target.name] = context.add_source(
                    ControllerManagerMetricsSource(target, client)
                )
        if component_targets:
            leases[component] = context.add_source(
                LeaderLeaseSource(component, shared_reader(context))
            )
    return [
        ComponentsCollector(
            health=health, schedulers=schedulers, controller_managers=kcms, leases=leases
        )
    ]
