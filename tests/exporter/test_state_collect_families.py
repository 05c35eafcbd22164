"""The cluster-state collector over a hand-made snapshot: families, caching, the factory.

The snapshot is our own boundary (a plain ClusterSnapshot), so these tests need no
cluster; the end-to-end behaviour against the simulator is in
test_state_collect_simulator.py.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from kubeballast.core.config import ClusterStateConfig, ExporterConfig
from kubeballast.exporter.catalog import ExporterContext, default_catalog
from kubeballast.exporter.clusterstate import ClusterSnapshot, NodePods
from kubeballast.exporter.projections import LeaseP, NodeP, PodP, TaintP, TolerationP, WorkloadP
from kubeballast.exporter.runner import SourceSet
from kubeballast.exporter.state import SPECS, StateCollector, build_state, render_state

NOW = 1_700_000_000.0
ZONE = "topology.kubernetes.io/zone"


def _node(name: str, zone: str, *, ready: str = "True", cp: bool = False, **extra: Any) -> NodeP:
    labels = {ZONE: zone, "example.com/node-pool": "control" if cp else "general"}
    if cp:
        labels["node-role.kubernetes.io/control-plane"] = ""
    resources = {"cpu": "4", "memory": "16Gi", "pods": "110", **extra}
    return NodeP(name, labels, zone, False, (), ready, None, resources, resources, cp)


def _pod(name: str, node: str, owner: str = "db") -> PodP:
    tolerations = (TolerationP("node.kubernetes.io/unreachable", "Exists", "", "NoExecute", 300),)
    return PodP(
        "team-a",
        name,
        name,
        node,
        "Running",
        True,
        2,
        "StatefulSet",
        owner,
        tolerations,
        {},
        False,
        {},
    )


def snapshot(*, synced: bool = True) -> ClusterSnapshot:
    nodes = {
        "cp-1": _node("cp-1", "zone-a", cp=True),
        "a1": _node("a1", "zone-a", **{"example.com/dongle": "4"}),
        "b1": _node("b1", "zone-b"),
        "b2": NodeP(
            "b2",
            {ZONE: "zone-b"},
            "zone-b",
            False,
            (TaintP("node.kubernetes.io/unreachable", "", "NoExecute", NOW - 100),),
            "Unknown",
            NOW - 150,
            {},
            {},
            False,
        ),
    }
    leases = {
        "cp-1": LeaseP("cp-1", "kube-node-lease", "cp-1", NOW - 3, 40),
        "a1": LeaseP("a1", "kube-node-lease", "a1", NOW - 4, 40),
        "b1": LeaseP("b1", "kube-node-lease", "b1", NOW - 5, 40),
        "b2": LeaseP("b2", "kube-node-lease", "b2", NOW - 200, 40),
    }
    pods = (_pod("db-0", "a1"), _pod("db-1", "a1"), _pod("web-0", "b2", "web"))
    workloads = {
        ("StatefulSet", "team-a", "db"): WorkloadP(
            "StatefulSet", "team-a", "db", "u1", 2, (), False, {}
        ),
        ("StatefulSet", "team-a", "web"): WorkloadP(
            "StatefulSet", "team-a", "web", "u2", 1, (), False, {}
        ),
    }
    return ClusterSnapshot(
        version=7,
        taken_at=NOW,
        synced=synced,
        informers={},
        nodes=nodes,
        node_leases=leases,
        pods=pods,
        replicasets={},
        workloads=workloads,
        pods_by_node={"a1": NodePods(2, 4), "b2": NodePods(1, 2)},
        extended_requests_by_node={"a1": {"example.com/dongle": 1.0}},
        owner_pods_by_node={},
        nodes_by_zone={"zone-a": ("a1", "cp-1"), "zone-b": ("b1", "b2")},
    )


def samples(families: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def value(families: list[Metric], name: str, **labels: str) -> float:
    return samples(families)[(name, tuple(sorted(labels.items())))]


def test_state_collect_before_sync_says_only_that() -> None:
    families = render_state(snapshot(synced=False), ClusterStateConfig(), NOW)
    assert [f.name for f in families] == ["kubeballast_cluster_state_synced"]
    assert families[0].samples[0].value == 0.0


def test_state_collect_families_from_a_snapshot() -> None:
    families = render_state(snapshot(), ClusterStateConfig(), NOW)
    declared = {spec.name: spec for spec in SPECS}
    for family in families:
        spec = declared[family.name]
        assert family.type == spec.type
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(spec.labels), family.name
    assert value(families, "kubeballast_cluster_state_synced") == 1.0
    assert value(families, "kubeballast_node_lease_age_seconds", node="b2") == 200.0
    assert value(families, "kubeballast_lease_stale_nodes") == 1.0
    assert value(families, "kubeballast_lease_stale_wave_start_timestamp_seconds") == NOW - 150
    assert value(families, "kubeballast_zone_lease_stale_ratio", zone="zone-b") == 0.5
    assert value(families, "kubeballast_zone_not_ready_nodes", zone="zone-b") == 1.0
    assert value(families, "kubeballast_zone_disruption_state", zone="zone-b", state="Normal") == 1
    assert (
        value(families, "kubeballast_zone_disruption_state", zone="zone-b", state="FullDisruption")
        == 0
    )
    # web-0 tolerates the taint (added NOW - 100) for 300 s: evicted at NOW + 200.
    assert value(families, "kubeballast_zone_imminent_pod_evictions", zone="zone-b") == 1.0
    assert value(families, "kubeballast_zone_next_eviction_timestamp_seconds", zone="zone-b") == (
        NOW + 200
    )
    assert value(families, "kubeballast_scale_current", dimension="pods") == 3.0
    assert value(families, "kubeballast_scale_limit_ratio", dimension="nodes") == 4 / 5000
    assert value(families, "kubeballast_node_pods_bucket", le="10") == 4.0
    assert value(families, "kubeballast_worker_nodes") == 3.0
    assert value(families, "kubeballast_control_plane_node_undersized", node="cp-1") == 0.0
    assert value(families, "kubeballast_pool_pods", pool="general") == 2.0
    assert (
        value(
            families,
            "kubeballast_extended_resource_requested",
            resource="example.com/dongle",
            zone="zone-a",
        )
        == 1.0
    )
    # db: two ready replicas, both in zone-a, two schedulable zones.
    assert (
        value(
            families,
            "kubeballast_workload_zone_risk",
            kind="StatefulSet",
            namespace="team-a",
            workload="db",
            risk="single_zone",
        )
        == 1.0
    )
    assert (
        value(
            families,
            "kubeballast_workloads_by_zone_risk",
            risk="not_applicable",
            spread_declared="false",
        )
        == 1.0
    )
    # Absent rather than invented: no declared maxSkew, no master disruption.
    names = {s.name for f in families for s in f.samples}
    assert "kubeballast_workload_zone_max_skew" not in names
    assert value(families, "kubeballast_node_lifecycle_master_disruption") == 0.0


def test_state_collect_no_family_is_labelled_by_pod() -> None:
    for spec in SPECS:
        assert not {"pod", "uid"} & set(spec.labels), spec.name


class Clock:
    def __init__(self) -> None:
        self.wall = NOW
        self.mono = 100.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def test_state_collect_caches_rendered_families_briefly() -> None:
    clock = Clock()
    calls = 0

    def source() -> ClusterSnapshot:
        nonlocal calls
        calls += 1
        return snapshot()

    collector = StateCollector(
        source, ClusterStateConfig(), clock=clock.time, monotonic=clock.monotonic
    )
    first = list(collector.collect())
    clock.mono += 0.9
    clock.wall += 30  # leases age, but a scrape within the second gets the cached families
    assert list(collector.collect()) == first
    assert (collector.renders, calls) == (1, 1)
    clock.mono += 0.1
    again = list(collector.collect())
    assert (collector.renders, calls) == (2, 2)
    assert value(again, "kubeballast_node_lease_age_seconds", node="a1") == 34.0
    assert value(again, "kubeballast_cluster_state_render_duration_seconds") == 0.0


def test_state_collect_exposition_parses() -> None:
    registry = CollectorRegistry()
    registry.register(StateCollector(snapshot, ClusterStateConfig(), clock=lambda: NOW))
    text = generate_latest(registry).decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    hist = parsed["kubeballast_node_lease_age_distribution_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets["+Inf"] == 4.0
    assert buckets["50"] == 3.0


def test_state_collect_factory_builds_without_io() -> None:
    sources = SourceSet()
    context = ExporterContext(ExporterConfig(), sources)
    collectors = build_state(context)
    names = {spec.name for c in collectors for spec in c.metric_specs()}
    assert "kubeballast_zone_disruption_state" in names
    assert "kubeballast_informer_synced" in names
    # The caches' health sources are registered, not started.
    assert len(sources) == 6
    assert "state" in dict(default_catalog())
