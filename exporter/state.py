"""The cluster-state metrics: heartbeats, zones, capacity and spread, over one snapshot.

The derivations (:mod:`~kubeballast.exporter.heartbeat`, :mod:`~.zones`,
:mod:`~.capacity`, :mod:`~.spread`) are pure functions of projections; this module
feeds them the cluster state's :class:`~kubeballast.exporter.clusterstate.ClusterSnapshot`
and turns their results into metric families.

Rendering is built for the seed's scale: 5000 nodes and 150 000 pods. Nothing here
keeps a prometheus-client ``Gauge`` with a child per series (5000 children, each with a
lock, updated on every change, would cost more than the data); a render builds the
families directly from the snapshot in one pass of each derivation. That pass costs
150-250 ms of CPU at the seed's scale on a busy two-core machine (the spread
derivation's walk over every pod is most of it, NotReady nodes add a walk over their
pods), far more than a scrape may hold the event loop that also applies informer
events and answers health probes. So the exporter's collector renders in a worker
thread: while it is being scraped, a refresher task takes a snapshot on the event loop
and hands it to a thread, and ``collect()`` only returns the last families
(microseconds on the loop). The refresher renders once per scrape, timed to finish
just before the next scrape is due (it learns the interval from the scrapes it sees),
and never more often than every ``cache_seconds`` (10 s in the exporter): the CPU of
renders follows the scrapes, not a clock, and the families a scrape gets are about one
render time old. The first scrape, and the first after 5 minutes without one, renders
synchronously rather than serve older families (see :class:`StateCollector`). The
thread still takes the GIL in slices, so the loop sees
delays of a few switch intervals during a render rather than one 200 ms stall. Several
Prometheus servers, a federation and someone's curl scraping at once share the same
families. Families are plain lists of samples, never changed once built, so sharing
them across scrapes and threads is safe; so is deriving from a snapshot in a thread,
since a snapshot is never changed after it is built.

Until every informer has read its initial state, only
``kubeballast_cluster_state_synced 0`` is served: a half-listed cluster would show most
nodes without a Lease and most workloads without replicas, and alerts on those would
fire on every exporter restart.

``now`` comes from the injected ``clock`` (wall-clock seconds): Lease renewTimes and
taint times are wall-clock timestamps. Tests of the simulator pass its simulated clock.

Series per cluster: one per node (Lease age) and per control-plane node, a handful per
zone, per pool (at most 100) and per extended resource and zone, and at most
``max_workload_series`` workloads times their zones. Never one per pod.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from kubeballast.core.config import ClusterStateConfig
from kubeballast.exporter.capacity import (
    derive_control_plane,
    derive_extended_resources,
    derive_pools,
    derive_scale,
)
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.clusterstate import ClusterSnapshot, shared_cluster_state
from kubeballast.exporter.contract import MetricsCollector, MetricSpec
from kubeballast.exporter.heartbeat import derive_heartbeats
from kubeballast.exporter.spread import (
    RISK_CLASSES,
    SPREAD_MAX_AGE_SECONDS,
    SpreadCache,
    derive_spread,
)
from kubeballast.exporter.zones import ZONE_STATES, ZoneRules, derive_zones

__all__ = ["CACHE_SECONDS", "SPECS", "StateCollector", "build_state", "render_state"]

log = logging.getLogger(__name__)

CACHE_SECONDS: Final = 1.0
BACKGROUND_REFRESH_SECONDS: Final = 10.0
"""The default of ``exporter.state.min_render_interval_seconds``: the most often the
exporter's background refresher renders while scraped. A render costs 150-300 ms of
CPU at the seed's scale, so rendering every second would cost 15-30 % of a core. The
refresher renders once per scrape, just before it is due; with scrapes closer than
this (or before it has seen two), every 10 s, which bounds the age of served families
to ~10 s: a node whose lease crossed the grace period is shown stale within ~11 s,
under the 15 s the product promises."""
SCRAPE_BURST_SECONDS: Final = 0.5
"""Scrapes closer together than this are one demand (the two Prometheus servers of an
HA pair scraping at the same moment): the scrape interval is measured between bursts."""
RENDER_MARGIN_SECONDS: Final = 1.0
"""A render is started this long plus twice the last render's duration before the next
scrape is expected (at most a tenth of the scrape interval)."""
IDLE_SECONDS: Final = 300.0
"""The background refresher stops this long after the last scrape (Prometheus scrapes
every 15 s to 2 min; an idle exporter should not render every second for nobody)."""
STALE_LIMIT_SECONDS: Final = 5.0
"""Families older than this are rendered by the scrape itself, never served."""

_W: Final = ("kind", "namespace", "workload")

SPECS: Final[tuple[MetricSpec, ...]] = (
    MetricSpec(
        "kubeballast_cluster_state_synced",
        "gauge",
        "1 once every cluster-state cache (nodes, node Leases, pods, ReplicaSets, "
        "Deployments, StatefulSets) has read its initial state; until then no other "
        "cluster-state family is served.",
    ),
    MetricSpec(
        "kubeballast_cluster_state_render_duration_seconds",
        "gauge",
        "How long deriving and rendering the cluster-state families took, last time.",
    ),
    # heartbeats
    MetricSpec(
        "kubeballast_node_lease_age_seconds",
        "gauge",
        "Seconds since the node's Lease in kube-node-lease was renewed (absent for a "
        "node without one).",
        ("node",),
    ),
    MetricSpec(
        "kubeballast_node_lease_age_distribution_seconds",
        "histogram",
        "Lease ages over the nodes that have a Lease, at the time of the scrape.",
    ),
    MetricSpec(
        "kubeballast_node_lease_grace_period_seconds",
        "gauge",
        "The configured --node-monitor-grace-period: a Lease older than this is stale.",
    ),
    MetricSpec(
        "kubeballast_lease_stale_nodes",
        "gauge",
        "Nodes whose Lease is older than the grace period.",
    ),
    MetricSpec(
        "kubeballast_lease_stale_ratio",
        "gauge",
        "Share of all nodes whose Lease is older than the grace period.",
    ),
    MetricSpec(
        "kubeballast_lease_missing_nodes",
        "gauge",
        "Nodes without a Lease or without a renewTime in it.",
    ),
    MetricSpec(
        "kubeballast_lease_stale_wave_start_timestamp_seconds",
        "gauge",
        "When the correlated wave of stale Leases began: the earliest onset (renewTime "
        "plus grace period) among the largest group of stale nodes whose onsets lie "
        "within the wave window of each other (Unix time; absent when none is stale).",
    ),
    MetricSpec(
        "kubeballast_lease_stale_wave_nodes",
        "gauge",
        "Nodes in the correlated wave: the largest group of stale nodes whose Leases went "
        "stale within the wave window (2 min by default) of each other.",
    ),
    MetricSpec(
        "kubeballast_lease_stale_wave_ratio",
        "gauge",
        "Nodes in the correlated wave over all nodes.",
    ),
    MetricSpec(
        "kubeballast_lease_stale_wave_zones",
        "gauge",
        "Zones the correlated wave spans (holding at least 10 % of the zone's nodes): 2 or "
        "more with a congested apiserver is the heartbeat storm the eviction guard pauses "
        "evictions for.",
    ),
    MetricSpec(
        "kubeballast_zone_lease_stale_wave_nodes",
        "gauge",
        "Nodes of the zone in the correlated wave.",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_zone_lease_stale_onset_timestamp_seconds",
        "gauge",
        "The earliest onset of the correlated wave in the zone (Unix time; absent when "
        "the wave has no node in the zone).",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_zone_lease_stale_nodes",
        "gauge",
        "Nodes of the zone whose Lease is older than the grace period.",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_zone_lease_stale_ratio",
        "gauge",
        "Share of the zone's nodes whose Lease is older than the grace period.",
        ("zone",),
    ),
    # zones
    MetricSpec(
        "kubeballast_zone_nodes",
        "gauge",
        "Nodes the node-lifecycle controller counts in the zone (those labelled "
        "node.kubernetes.io/exclude-disruption are not counted).",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_zone_not_ready_nodes",
        "gauge",
        "Counted nodes whose Ready condition is not True or whose Lease is stale.",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_zone_disruption_state",
        "gauge",
        "1 for the zone's state as the node-lifecycle controller computes it (Normal, "
        "PartialDisruption, FullDisruption), 0 for the others.",
        ("zone", "state"),
    ),
    MetricSpec(
        "kubeballast_zone_eviction_rate_nodes_per_second",
        "gauge",
        "Nodes per second the node-lifecycle controller taints NoExecute in the zone, "
        "given its state (0: it does not taint).",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_node_lifecycle_master_disruption",
        "gauge",
        "1 when every zone is in FullDisruption: the controller stops evicting and "
        "removes its NoExecute taints.",
    ),
    MetricSpec(
        "kubeballast_zone_no_execute_tainted_nodes",
        "gauge",
        "Nodes of the zone carrying the unreachable or not-ready NoExecute taint.",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_zone_awaiting_taint_nodes",
        "gauge",
        "NotReady nodes of the zone without that taint yet (the controller's queue).",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_zone_pods_on_not_ready_nodes",
        "gauge",
        "Running or pending pods (not terminating) on the zone's NotReady nodes.",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_eviction_horizon_seconds",
        "gauge",
        "The horizon of kubeballast_zone_imminent_pod_evictions.",
    ),
    MetricSpec(
        "kubeballast_zone_imminent_pod_evictions",
        "gauge",
        "Pods of the zone the taint-eviction controller is predicted to delete within the "
        "eviction horizon, given their nodes' NoExecute taints (present, or expected at "
        "the zone's taint rate) and their tolerations.",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_zone_next_eviction_timestamp_seconds",
        "gauge",
        "The earliest predicted pod eviction in the zone (Unix time; absent when none "
        "is predicted within the horizon; in the past when overdue).",
        ("zone",),
    ),
    # scale
    MetricSpec(
        "kubeballast_scale_current",
        "gauge",
        "Cluster size by dimension: nodes, pods (holding a node or pending), containers, "
        "pods_per_node (the fullest node).",
        ("dimension",),
    ),
    MetricSpec(
        "kubeballast_scale_limit",
        "gauge",
        "The configured scale limit by dimension (the seed's: 5000 nodes, 150000 pods, "
        "300000 containers, 100 pods per node).",
        ("dimension",),
    ),
    MetricSpec(
        "kubeballast_scale_limit_ratio",
        "gauge",
        "kubeballast_scale_current over kubeballast_scale_limit.",
        ("dimension",),
    ),
    MetricSpec(
        "kubeballast_node_pods",
        "histogram",
        "Pods per node over the nodes (buckets: tenths of the per-node limit).",
    ),
    MetricSpec(
        "kubeballast_nodes_over_pod_limit",
        "gauge",
        "Nodes holding more pods than the per-node limit.",
    ),
    # control plane
    MetricSpec(
        "kubeballast_worker_nodes",
        "gauge",
        "Nodes without the control-plane label: what the sizing table is read for.",
    ),
    MetricSpec(
        "kubeballast_control_plane_recommended_cpu_cores",
        "gauge",
        "CPUs the seed's sizing table recommends per control-plane node for the workers.",
    ),
    MetricSpec(
        "kubeballast_control_plane_recommended_memory_bytes",
        "gauge",
        "Memory the seed's sizing table recommends per control-plane node (GB read as GiB).",
    ),
    MetricSpec(
        "kubeballast_control_plane_nodes",
        "gauge",
        "Nodes with the control-plane label (0 with a managed control plane).",
    ),
    MetricSpec(
        "kubeballast_control_plane_node_cpu_capacity_cores",
        "gauge",
        "CPU capacity of the control-plane node.",
        ("node",),
    ),
    MetricSpec(
        "kubeballast_control_plane_node_cpu_allocatable_cores",
        "gauge",
        "Allocatable CPU of the control-plane node.",
        ("node",),
    ),
    MetricSpec(
        "kubeballast_control_plane_node_memory_capacity_bytes",
        "gauge",
        "Memory capacity of the control-plane node.",
        ("node",),
    ),
    MetricSpec(
        "kubeballast_control_plane_node_memory_allocatable_bytes",
        "gauge",
        "Allocatable memory of the control-plane node.",
        ("node",),
    ),
    MetricSpec(
        "kubeballast_control_plane_node_undersized",
        "gauge",
        "1 if the node's CPU capacity is below the recommendation or its memory more "
        "than 10 % below it, else 0 (absent when the node reports no capacity).",
        ("node",),
    ),
    MetricSpec(
        "kubeballast_control_plane_undersized",
        "gauge",
        "1 if any control-plane node is undersized, else 0 (absent without any).",
    ),
    # pools
    MetricSpec(
        "kubeballast_pool_nodes",
        "gauge",
        "Nodes of the pool (the first configured pool label a node carries; '' for none).",
        ("pool",),
    ),
    MetricSpec(
        "kubeballast_pool_schedulable_nodes",
        "gauge",
        "Nodes of the pool that are Ready and not cordoned.",
        ("pool",),
    ),
    MetricSpec("kubeballast_pool_pods", "gauge", "Pods holding nodes of the pool.", ("pool",)),
    MetricSpec(
        "kubeballast_pool_pod_capacity",
        "gauge",
        "Allocatable pods summed over the pool's nodes.",
        ("pool",),
    ),
    MetricSpec(
        "kubeballast_pool_allocatable_cpu_cores",
        "gauge",
        "Allocatable CPU summed over the pool's nodes.",
        ("pool",),
    ),
    MetricSpec(
        "kubeballast_pool_allocatable_memory_bytes",
        "gauge",
        "Allocatable memory summed over the pool's nodes.",
        ("pool",),
    ),
    MetricSpec(
        "kubeballast_pool_requested_cpu_cores",
        "gauge",
        "CPU requested by the pods holding the pool's nodes (regular containers).",
        ("pool",),
    ),
    MetricSpec(
        "kubeballast_pool_requested_memory_bytes",
        "gauge",
        "Memory requested by the pods holding the pool's nodes (regular containers).",
        ("pool",),
    ),
    MetricSpec(
        "kubeballast_pool_free_cpu_cores",
        "gauge",
        "Allocatable less requested CPU, per node and never below 0, summed over the pool: "
        "what the scheduler can still place there.",
        ("pool",),
    ),
    MetricSpec(
        "kubeballast_pool_free_memory_bytes",
        "gauge",
        "Allocatable less requested memory, per node and never below 0, summed over the pool.",
        ("pool",),
    ),
    # extended resources
    MetricSpec(
        "kubeballast_extended_resource_capacity",
        "gauge",
        "Capacity of the extended resource (such as example.com/dongle) over the zone's nodes.",
        ("resource", "zone"),
    ),
    MetricSpec(
        "kubeballast_extended_resource_allocatable",
        "gauge",
        "Allocatable amount of the extended resource over the zone's nodes.",
        ("resource", "zone"),
    ),
    MetricSpec(
        "kubeballast_extended_resource_requested",
        "gauge",
        "Requests of the extended resource by the pods holding the zone's nodes.",
        ("resource", "zone"),
    ),
    MetricSpec(
        "kubeballast_extended_resource_exhausted_nodes",
        "gauge",
        "Nodes of the zone advertising the extended resource with none left to allocate.",
        ("resource", "zone"),
    ),
    MetricSpec(
        "kubeballast_extended_resource_pending_requests",
        "gauge",
        "Requests of the extended resource by pods not scheduled yet.",
        ("resource",),
    ),
    # spread
    MetricSpec(
        "kubeballast_schedulable_zones",
        "gauge",
        "Zones with at least one Ready, uncordoned, untainted worker node.",
    ),
    MetricSpec(
        "kubeballast_workloads_by_zone_risk",
        "gauge",
        "Deployments and StatefulSets by zone risk (single_zone, skew_exceeded, ok, "
        "not_applicable) and whether they declare zone spread (true, false).",
        ("risk", "spread_declared"),
    ),
    MetricSpec(
        "kubeballast_workload_zone_risk",
        "gauge",
        "1 for a workload at zone risk, with its class (single_zone, skew_exceeded); the "
        "riskiest first, up to exporter.state.max_workload_series workloads.",
        (*_W, "risk"),
    ),
    MetricSpec(
        "kubeballast_workload_zone_ready_replicas",
        "gauge",
        "Ready replicas per zone of a workload at zone risk.",
        (*_W, "zone"),
    ),
    MetricSpec(
        "kubeballast_workload_zone_skew",
        "gauge",
        "Most minus fewest ready replicas over the schedulable zones, of a workload at zone risk.",
        _W,
    ),
    MetricSpec(
        "kubeballast_workload_zone_max_skew",
        "gauge",
        "The smallest maxSkew of the zone topologySpreadConstraints of a workload at zone "
        "risk (absent without one).",
        _W,
    ),
    MetricSpec(
        "kubeballast_workload_zones_used",
        "gauge",
        "Zones holding ready replicas of a workload at zone risk.",
        _W,
    ),
    MetricSpec(
        "kubeballast_workload_zone_spread_declared",
        "gauge",
        "1 if a workload at zone risk declares zone spread (topologySpreadConstraint or "
        "anti-affinity on the zone label), else 0.",
        _W,
    ),
    MetricSpec(
        "kubeballast_workload_zone_risk_dropped",
        "gauge",
        "Workloads at zone risk left without series of their own by "
        "exporter.state.max_workload_series.",
    ),
)

_SPEC: Final = {spec.name: spec for spec in SPECS}


def _le(bound: float) -> str:
    """A bucket bound as the ``le`` label ("1", "0.5", "+Inf")."""
    if math.isinf(bound):
        return "+Inf"
    text = repr(float(bound))
    return text[:-2] if text.endswith(".0") else text


class _Families:
    """The families of one render, in SPECS order; each created on first use."""

    def __init__(self) -> None:
        self._made: dict[str, Metric] = {}

    def _family(self, name: str) -> Metric:
        family = self._made.get(name)
        if family is None:
            spec = _SPEC[name]
            cls = HistogramMetricFamily if spec.type == "histogram" else GaugeMetricFamily
            family = self._made[name] = cls(name, spec.help, labels=list(spec.labels))
        return family

    def gauge(self, name: str, value: float | None, *labels: str) -> None:
        if value is None or math.isnan(value):
            return
        family = self._family(name)
        assert isinstance(family, GaugeMetricFamily)
        family.add_metric(list(labels), value)

    def histogram(
        self, name: str, buckets: Sequence[tuple[float, int]], total: float, *labels: str
    ) -> None:
        family = self._family(name)
        assert isinstance(family, HistogramMetricFamily)
        family.add_metric(list(labels), [(_le(b), float(c)) for b, c in buckets], total)

    def ordered(self) -> list[Metric]:
        return [self._made[s.name] for s in SPECS if s.name in self._made]


def render_state(
    snapshot: ClusterSnapshot,
    config: ClusterStateConfig,
    now: float,
    *,
    spread_cache: SpreadCache | None = None,
) -> list[Metric]:
    """Every cluster-state family for ``snapshot`` at ``now`` (pure: no clock, no I/O;
    with a ``spread_cache``, the zone-spread families may come from an earlier snapshot
    of the cache's age)."""
    out = _Families()
    out.gauge("kubeballast_cluster_state_synced", float(snapshot.synced))
    if not snapshot.synced:
        return out.ordered()
    nodes = snapshot.nodes
    rules = ZoneRules.from_config(config)

    beats = derive_heartbeats(
        nodes.values(),
        snapshot.node_leases,
        now,
        grace_seconds=config.node_monitor_grace_period_seconds,
        zone_label=config.zone_label,
        wave_window_seconds=config.wave_window_seconds,
    )
    for beat in beats.nodes:
        out.gauge("kubeballast_node_lease_age_seconds", beat.age_seconds, beat.node)
    out.histogram(
        "kubeballast_node_lease_age_distribution_seconds", beats.lag_buckets, beats.lag_sum
    )
    out.gauge("kubeballast_node_lease_grace_period_seconds", beats.grace_seconds)
    out.gauge("kubeballast_lease_stale_nodes", beats.stale)
    out.gauge("kubeballast_lease_stale_ratio", beats.stale_ratio)
    out.gauge("kubeballast_lease_missing_nodes", beats.missing)
    out.gauge("kubeballast_lease_stale_wave_start_timestamp_seconds", beats.wave.start)
    out.gauge("kubeballast_lease_stale_wave_nodes", beats.wave.size)
    out.gauge("kubeballast_lease_stale_wave_ratio", beats.wave_ratio)
    out.gauge("kubeballast_lease_stale_wave_zones", beats.wave_zones)
    wave_zones = {zone: (count, first) for zone, count, first in beats.wave.zones}
    for zone_beats in beats.zones:
        out.gauge("kubeballast_zone_lease_stale_nodes", zone_beats.stale, zone_beats.zone)
        out.gauge("kubeballast_zone_lease_stale_ratio", zone_beats.stale_ratio, zone_beats.zone)
        count, first = wave_zones.get(zone_beats.zone, (0, None))
        out.gauge("kubeballast_zone_lease_stale_wave_nodes", count, zone_beats.zone)
        out.gauge("kubeballast_zone_lease_stale_onset_timestamp_seconds", first, zone_beats.zone)

    zones = derive_zones(nodes.values(), snapshot.node_leases, snapshot.pods, now, rules)
    for z in zones.zones:
        out.gauge("kubeballast_zone_nodes", z.nodes, z.zone)
        out.gauge("kubeballast_zone_not_ready_nodes", z.not_ready, z.zone)
        for state in ZONE_STATES:
            out.gauge("kubeballast_zone_disruption_state", float(z.state == state), z.zone, state)
        out.gauge("kubeballast_zone_eviction_rate_nodes_per_second", z.eviction_rate, z.zone)
        out.gauge("kubeballast_zone_no_execute_tainted_nodes", z.tainted_nodes, z.zone)
        out.gauge("kubeballast_zone_awaiting_taint_nodes", z.awaiting_taint, z.zone)
        out.gauge("kubeballast_zone_pods_on_not_ready_nodes", z.pods_on_not_ready_nodes, z.zone)
        out.gauge("kubeballast_zone_imminent_pod_evictions", z.evictions_within_horizon, z.zone)
        out.gauge("kubeballast_zone_next_eviction_timestamp_seconds", z.next_eviction_at, z.zone)
    out.gauge("kubeballast_node_lifecycle_master_disruption", float(zones.master_disruption))
    out.gauge("kubeballast_eviction_horizon_seconds", zones.horizon_seconds)

    scale = derive_scale(nodes.keys(), snapshot.pods_by_node, config.limits)
    for dim in scale.dimensions:
        out.gauge("kubeballast_scale_current", dim.current, dim.name)
        out.gauge("kubeballast_scale_limit", dim.limit, dim.name)
        out.gauge("kubeballast_scale_limit_ratio", dim.ratio, dim.name)
    out.histogram("kubeballast_node_pods", scale.pods_per_node_buckets, scale.pods_per_node_sum)
    out.gauge("kubeballast_nodes_over_pod_limit", scale.nodes_over_pod_limit)

    sizing = derive_control_plane(nodes.values(), config.control_plane_label)
    out.gauge("kubeballast_worker_nodes", sizing.workers)
    out.gauge("kubeballast_control_plane_recommended_cpu_cores", sizing.recommended.cpu_cores)
    out.gauge("kubeballast_control_plane_recommended_memory_bytes", sizing.recommended.memory_bytes)
    out.gauge("kubeballast_control_plane_nodes", len(sizing.nodes))
    for cp in sizing.nodes:
        out.gauge("kubeballast_control_plane_node_cpu_capacity_cores", cp.cpu_capacity, cp.name)
        out.gauge(
            "kubeballast_control_plane_node_cpu_allocatable_cores", cp.cpu_allocatable, cp.name
        )
        out.gauge(
            "kubeballast_control_plane_node_memory_capacity_bytes", cp.memory_capacity, cp.name
        )
        out.gauge(
            "kubeballast_control_plane_node_memory_allocatable_bytes",
            cp.memory_allocatable,
            cp.name,
        )
        if cp.undersized is not None:
            out.gauge("kubeballast_control_plane_node_undersized", float(cp.undersized), cp.name)
    if sizing.undersized is not None:
        out.gauge("kubeballast_control_plane_undersized", float(sizing.undersized))

    if config.pool_labels:
        for pool in derive_pools(
            nodes.values(),
            snapshot.pods_by_node,
            config.pool_labels,
            requests_by_node=snapshot.requests_by_node,
        ):
            out.gauge("kubeballast_pool_nodes", pool.nodes, pool.pool)
            out.gauge("kubeballast_pool_schedulable_nodes", pool.schedulable_nodes, pool.pool)
            out.gauge("kubeballast_pool_pods", pool.pods, pool.pool)
            out.gauge("kubeballast_pool_pod_capacity", pool.pod_capacity, pool.pool)
            out.gauge(
                "kubeballast_pool_allocatable_cpu_cores", pool.cpu_allocatable_cores, pool.pool
            )
            out.gauge(
                "kubeballast_pool_allocatable_memory_bytes",
                pool.memory_allocatable_bytes,
                pool.pool,
            )
            out.gauge("kubeballast_pool_requested_cpu_cores", pool.cpu_requested_cores, pool.pool)
            out.gauge(
                "kubeballast_pool_requested_memory_bytes", pool.memory_requested_bytes, pool.pool
            )
            out.gauge("kubeballast_pool_free_cpu_cores", pool.cpu_free_cores, pool.pool)
            out.gauge("kubeballast_pool_free_memory_bytes", pool.memory_free_bytes, pool.pool)

    extended = derive_extended_resources(
        nodes.values(), snapshot.extended_requests_by_node, config.zone_label
    )
    for row in extended.zones:
        labels = (row.resource, row.zone)
        out.gauge("kubeballast_extended_resource_capacity", row.capacity, *labels)
        out.gauge("kubeballast_extended_resource_allocatable", row.allocatable, *labels)
        out.gauge("kubeballast_extended_resource_requested", row.requested, *labels)
        out.gauge("kubeballast_extended_resource_exhausted_nodes", row.exhausted_nodes, *labels)
    for resource, amount in extended.pending_requests.items():
        out.gauge("kubeballast_extended_resource_pending_requests", amount, resource)

    spread = (derive_spread if spread_cache is None else spread_cache.derive)(
        snapshot.workloads.values(),
        snapshot.replicasets,
        snapshot.pods,
        nodes,
        zone_label=config.zone_label,
        max_series=config.max_workload_series,
    )
    out.gauge("kubeballast_schedulable_zones", len(spread.schedulable_zones))
    for risk in RISK_CLASSES:
        for declared in (False, True):
            out.gauge(
                "kubeballast_workloads_by_zone_risk",
                spread.counts[(risk, declared)],
                risk,
                "true" if declared else "false",
            )
    for w in spread.at_risk:
        key = (w.kind, w.namespace, w.name)
        out.gauge("kubeballast_workload_zone_risk", 1.0, *key, w.risk)
        for zone, count in w.ready_by_zone:
            out.gauge("kubeballast_workload_zone_ready_replicas", count, *key, zone)
        out.gauge("kubeballast_workload_zone_skew", w.skew, *key)
        out.gauge(
            "kubeballast_workload_zone_max_skew",
            None if w.max_skew is None else float(w.max_skew),
            *key,
        )
        out.gauge("kubeballast_workload_zones_used", w.zones_used, *key)
        out.gauge("kubeballast_workload_zone_spread_declared", float(w.declared), *key)
    out.gauge("kubeballast_workload_zone_risk_dropped", spread.dropped)
    return out.ordered()


class StateCollector:
    """Every cluster-state family, rendered from ``snapshot()`` at most once per
    ``cache_seconds``.

    With ``background`` (what the exporter uses), a scrape on the event loop does not
    render: the first scrape renders once, synchronously, and starts a refresher task
    that, while scrapes keep coming (within ``idle_seconds``), takes a snapshot on the
    loop and renders it in a worker thread; ``collect()`` only returns the last
    families. When the refresher renders:

    - ``follow_scrapes`` (the default): once it has seen two scrapes, it renders only
      after a scrape has read the last families (a render nobody reads is not made:
      when the scrapes stop, so do the renders), timed to finish just before the next
      scrape is expected (the last scrape plus the interval between the last two,
      minus twice the last render's duration and a margin), and never sooner than
      ``cache_seconds`` after the previous render. One render per scrape for a scrape
      interval of ``cache_seconds`` or more, each served about one render time old;
      for shorter intervals, one render per ``cache_seconds``.
    - otherwise, and until two scrapes have shown the interval: every ``cache_seconds``.

    Families older than ``stale_limit_seconds`` (the refresher idle, behind, or the
    scrape much earlier than expected) are never served: the scrape renders them itself
    instead.

    With ``spread_max_age_seconds``, the zone-spread derivation (most of a render's
    CPU) goes through a :class:`~kubeballast.exporter.spread.SpreadCache` of that age.

    Without a running event loop (a registry read from a thread, tests), ``collect()``
    renders when the cache has expired, as without ``background``.
    """

    def __init__(
        self,
        snapshot: Callable[[], ClusterSnapshot],
        config: ClusterStateConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        cache_seconds: float = CACHE_SECONDS,
        background: bool = False,
        idle_seconds: float = IDLE_SECONDS,
        stale_limit_seconds: float = STALE_LIMIT_SECONDS,
        follow_scrapes: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        spread_max_age_seconds: float = 0.0,
    ) -> None:
        self._snapshot = snapshot
        self._config = config
        self._clock = clock
        self._monotonic = monotonic
        self._cache_seconds = cache_seconds
        self._background = background
        self._idle_seconds = idle_seconds
        self._stale_limit = max(stale_limit_seconds, cache_seconds)
        self._follow_scrapes = follow_scrapes
        self._spread = (
            SpreadCache(spread_max_age_seconds, monotonic=monotonic)
            if spread_max_age_seconds > 0
            else None
        )
        self._sleep = sleep
        self._cached: list[Metric] | None = None
        self._cached_at = 0.0
        self._served = False
        """Whether a scrape has read the cached families since they were rendered."""
        self._demanded_at: float | None = None
        """The last scrape (for idleness)."""
        self._burst_at: float | None = None
        """The first scrape of the last burst (for the interval)."""
        self._scrape_gap: float | None = None
        """Seconds between the last two bursts of scrapes: the expected interval."""
        self._render_seconds = 0.0
        self._refresher: asyncio.Task[None] | None = None
        # collect() runs on the event loop in the exporter; the lock only matters for a
        # registry read from threads (generate_latest in a worker), where two renders
        # at once would each cost the full price.
        self._lock = threading.Lock()
        self.renders = 0
        """How many times the families were computed (the cache's hit rate, for tests)."""
        self.render_cpu_seconds: deque[float] = deque(maxlen=100)
        """CPU time of the last renders, wherever they ran (for benchmarks)."""

    def metric_specs(self) -> Sequence[MetricSpec]:
        return SPECS

    def _render(self, snapshot: ClusterSnapshot, now: float, started: float) -> list[Metric]:
        cpu = time.thread_time()
        families = render_state(snapshot, self._config, now, spread_cache=self._spread)
        duration = GaugeMetricFamily(
            "kubeballast_cluster_state_render_duration_seconds",
            _SPEC["kubeballast_cluster_state_render_duration_seconds"].help,
            value=max(0.0, self._monotonic() - started),
        )
        families.insert(1, duration)
        self._render_seconds = duration.samples[0].value
        self.render_cpu_seconds.append(time.thread_time() - cpu)
        return families

    def _store(self, families: list[Metric], started: float) -> None:
        self._cached, self._cached_at = families, started
        self.renders += 1

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            started = self._monotonic()
            cached = self._cached
            loop = _running_loop() if self._background else None
            if loop is None:
                if cached is not None and started - self._cached_at < self._cache_seconds:
                    return cached
            else:
                self._note_scrape(started)
                if self._refresher is None:
                    self._refresher = loop.create_task(
                        self._refresh(), name="state-render-refresher"
                    )
                if cached is not None and started - self._cached_at < self._stale_limit:
                    self._served = True
                    return cached
            families = self._render(self._snapshot(), self._clock(), started)
            self._store(families, started)
            self._served = True
            return families

    def _note_scrape(self, at: float) -> None:
        last = self._demanded_at
        if last is None or at - last >= SCRAPE_BURST_SECONDS:
            if self._burst_at is not None:
                self._scrape_gap = at - self._burst_at
            self._burst_at = at
        self._demanded_at = at

    def next_render_at(self) -> float | None:
        """When the refresher should render next (monotonic seconds), or None: not
        before a scrape has read the last families."""
        earliest = self._cached_at + self._cache_seconds
        gap, burst = self._scrape_gap, self._burst_at
        if not self._follow_scrapes or gap is None or burst is None:
            return earliest
        if not self._served:
            return None
        lead = 2 * self._render_seconds + min(RENDER_MARGIN_SECONDS, gap / 10)
        return max(earliest, burst + gap - lead)

    async def _refresh(self) -> None:
        """Render in a worker thread when :meth:`next_render_at` says, while scrapes
        keep coming."""
        try:
            while True:
                due = self.next_render_at()
                now = self._monotonic()
                # Awake at least every cache_seconds: a scrape may move the due time
                # earlier, and idleness is noticed there.
                wait = self._cache_seconds if due is None else max(0.0, due - now)
                await self._sleep(min(wait, self._cache_seconds))
                started = self._monotonic()
                demanded = self._demanded_at
                if demanded is None or started - demanded >= self._idle_seconds:
                    return
                due = self.next_render_at()
                if due is None or started < due:
                    continue
                # The snapshot is taken here, on the loop, where the caches change; the
                # snapshot is immutable, so the worker can read it at leisure.
                snapshot, now = self._snapshot(), self._clock()
                families = await asyncio.to_thread(self._render, snapshot, now, started)
                with self._lock:
                    if started >= self._cached_at:
                        self._store(families, started)
                        self._served = False
        except Exception:
            # Scrapes fall back to rendering themselves once the families are too old.
            log.exception("the cluster-state refresher failed")
        finally:
            self._refresher = None

    async def aclose(self) -> None:
        """Stop the refresher (the exporter calls this when it shuts down)."""
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def exporter_collector(
    snapshot: Callable[[], ClusterSnapshot],
    config: ClusterStateConfig,
    *,
    clock: Callable[[], float] = time.time,
) -> StateCollector:
    """The collector as the exporter runs it: rendered in the background once per
    scrape, just before it is due, at most every ``min_render_interval_seconds``
    (``BACKGROUND_REFRESH_SECONDS`` by default), never served older than twice that;
    zone spread derived at most every ``SPREAD_MAX_AGE_SECONDS`` while the schedulable
    zones stay the same."""
    return StateCollector(
        snapshot,
        config,
        clock=clock,
        background=True,
        cache_seconds=config.min_render_interval_seconds,
        stale_limit_seconds=2 * config.min_render_interval_seconds,
        spread_max_age_seconds=SPREAD_MAX_AGE_SECONDS,
    )


def build_state(context: ExporterContext) -> Sequence[MetricsCollector]:
    """The cluster-state metrics and the health of the caches behind them.

    The caches (one :class:`~kubeballast.exporter.clusterstate.ClusterState` per
    exporter, shared with any other area that asks for it) start on the first refresh of
    their health sources, not here: factories do no I/O.
    """
    state = shared_cluster_state(context)
    collector = exporter_collector(state.snapshot, context.config.state)
    context.on_close(collector.aclose)
    return [collector, state.collector()]
