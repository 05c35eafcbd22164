"""Scale against limits, control-plane sizing, pools, extended resources and zone spread,
derived from hand-made projections."""

from __future__ import annotations

import pytest

from kubeballast.core.config import ScaleLimitsConfig
from kubeballast.exporter.capacity import (
    GIB,
    OTHER_POOL,
    derive_control_plane,
    derive_extended_resources,
    derive_pools,
    derive_scale,
    pods_per_node_buckets,
    recommended_control_plane,
)
from kubeballast.exporter.projections import NodeP, PodP, ReplicaSetP, SpreadP, TaintP, WorkloadP
from kubeballast.exporter.spread import derive_spread

ZONE = "topology.kubernetes.io/zone"
POOL = "example.com/node-pool"
CP = "node-role.kubernetes.io/control-plane"


def node(
    name: str,
    zone: str = "zone-a",
    *,
    pool: str | None = None,
    control_plane: bool = False,
    ready: str = "True",
    unschedulable: bool = False,
    taints: tuple[TaintP, ...] = (),
    capacity: dict[str, str] | None = None,
    allocatable: dict[str, str] | None = None,
) -> NodeP:
    labels = {ZONE: zone}
    if pool is not None:
        labels[POOL] = pool
    if control_plane:
        labels[CP] = ""
    return NodeP(
        name=name,
        labels=labels,
        zone=zone,
        unschedulable=unschedulable,
        taints=taints,
        ready=ready,
        ready_since=None,
        capacity=capacity or {},
        allocatable=allocatable if allocatable is not None else dict(capacity or {}),
        control_plane=control_plane,
    )


# -- scale --------------------------------------------------------------------------------


def test_state_derive_scale_counts_against_limits() -> None:
    limits = ScaleLimitsConfig(nodes=4, pods=20, containers=40, pods_per_node=10)
    pods_by_node = {"n1": (10, 20), "n2": (11, 11), "": (3, 6), "gone": (1, 1)}
    usage = derive_scale(["n1", "n2", "n3"], pods_by_node, limits)
    current = {d.name: (d.current, d.limit, d.ratio) for d in usage.dimensions}
    assert current == {
        # "gone" still holds a pod: a node as far as the limit is concerned.
        "nodes": (4, 4, 1.0),
        "pods": (25, 20, 1.25),  # pending pods count
        "containers": (38, 40, 0.95),
        "pods_per_node": (11, 10, 1.1),
    }
    assert usage.nodes_over_pod_limit == 1
    buckets = dict(usage.pods_per_node_buckets)
    assert buckets[1.0] == 2  # n3 with 0, gone with 1
    assert buckets[10.0] == 3  # n1 with exactly the limit
    assert buckets[11.0] == 4
    assert buckets[float("inf")] == 4
    assert usage.pods_per_node_sum == 22


def test_state_derive_pods_per_node_buckets_follow_the_limit() -> None:
    assert pods_per_node_buckets(100) == (10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110)
    assert pods_per_node_buckets(250)[-2:] == (250, 275)


# -- control plane ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "cpus", "gib"),
    [
        (0, 1, 4),
        (1, 1, 4),
        (5, 1, 4),
        (6, 2, 8),
        (10, 2, 8),
        (11, 4, 16),
        (100, 4, 16),
        (101, 8, 32),
        (250, 8, 32),
        (251, 16, 64),
        (500, 16, 64),
        (501, 32, 120),
        (5000, 32, 120),
    ],
)
def test_state_derive_sizing_table_rows(workers: int, cpus: int, gib: int) -> None:
    size = recommended_control_plane(workers)
    assert (size.cpu_cores, size.memory_bytes) == (cpus, gib * GIB)


def _cp(name: str, cpu: str, memory: str, alloc_cpu: str = "", alloc_memory: str = "") -> NodeP:
    capacity = {"cpu": cpu, "memory": memory}
    allocatable = {"cpu": alloc_cpu or cpu, "memory": alloc_memory or memory}
    return node(name, control_plane=True, capacity=capacity, allocatable=allocatable)


def test_state_derive_control_plane_verdicts() -> None:
    workers = [node(f"w{i}") for i in range(11)]  # 11 workers: 4 CPUs, 16 GiB
    nodes = [
        *workers,
        # The simulator's shape: capacity as the table, allocatable a little less.
        _cp("cp-exact", "4", "16Gi", "3900m", "15772Mi"),
        # MemTotal a little under the nominal size: within the 10 % slack.
        _cp("cp-memtotal", "4", f"{int(16 * 0.95 * 1024 * 1024)}Ki"),
        _cp("cp-small-cpu", "2", "16Gi"),
        _cp("cp-small-memory", "8", "14Gi"),  # 12.5 % short
        node("cp-unknown", control_plane=True),
    ]
    sizing = derive_control_plane(nodes, CP)
    assert sizing.workers == 11
    verdicts = {n.name: n.undersized for n in sizing.nodes}
    assert verdicts == {
        "cp-exact": False,
        "cp-memtotal": False,
        "cp-small-cpu": True,
        "cp-small-memory": True,
        "cp-unknown": None,
    }
    assert sizing.undersized is True
    exact = sizing.nodes[0]
    assert (exact.cpu_capacity, exact.cpu_allocatable) == (4.0, 3.9)
    assert exact.memory_allocatable == 15772 * 2**20


def test_state_derive_managed_control_plane_has_no_verdict() -> None:
    sizing = derive_control_plane([node("w1"), node("w2")], CP)
    assert (sizing.workers, sizing.nodes, sizing.undersized) == (2, (), None)
    assert sizing.recommended.cpu_cores == 1


def test_state_derive_control_plane_label_is_configurable() -> None:
    custom = NodeP(
        "m1", {"example.com/role": "master"}, "a", False, (), "True", None, {}, {}, False
    )
    sizing = derive_control_plane([custom, node("w1")], "example.com/role")
    assert [n.name for n in sizing.nodes] == ["m1"]
    assert sizing.workers == 1


# -- pools --------------------------------------------------------------------------------


def test_state_derive_pools() -> None:
    resources = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    nodes = [
        node("g1", pool="general", allocatable=resources),
        node("g2", pool="general", ready="Unknown", allocatable=resources),
        node("n1", pool="nic", unschedulable=True, allocatable=resources),
        node("x1", allocatable={"cpu": "bad"}),  # no pool label; an unparseable quantity
    ]
    pods = {"g1": (30, 60), "g2": (10, 10), "n1": (5, 5)}
    pools = {p.pool: p for p in derive_pools(nodes, pods, (POOL,))}
    general = pools["general"]
    assert (general.nodes, general.schedulable_nodes, general.pods) == (2, 1, 40)
    assert (general.pod_capacity, general.free_pod_slots) == (220, 180)
    assert general.cpu_allocatable_cores == 32
    assert general.memory_allocatable_bytes == 128 * GIB
    assert (pools["nic"].schedulable_nodes, pools["nic"].pods) == (0, 5)
    assert (pools[""].nodes, pools[""].cpu_allocatable_cores) == (1, 0.0)


def test_state_derive_pool_label_order_and_cap() -> None:
    first = NodeP("a", {"b-label": "b", "a-label": "a"}, "", False, (), "True", None, {}, {}, False)
    assert [p.pool for p in derive_pools([first], {}, ("a-label", "b-label"))] == ["a"]
    # A per-node label used as a pool: capped, the smallest folded into _other.
    nodes = [node(f"n{i}", pool=f"p{i % 5}") for i in range(12)]
    pools = {p.pool: p.nodes for p in derive_pools(nodes, {}, (POOL,), max_pools=3)}
    assert pools == {"p0": 3, "p1": 3, OTHER_POOL: 6}


# -- extended resources -------------------------------------------------------------------


def test_state_derive_extended_resources_per_zone() -> None:
    nic = {"cpu": "32", "example.com/dongle": "4"}
    nodes = [
        node("a1", "zone-a", capacity=nic),
        node("a2", "zone-a", capacity=nic),
        node("b1", "zone-b", capacity=nic, allocatable={"example.com/dongle": "3"}),
        node("b2", "zone-b", capacity={"cpu": "16"}),
    ]
    requests = {
        "a1": {"example.com/dongle": 4.0},
        "a2": {"example.com/dongle": 1.0},
        "b1": {"example.com/dongle": 3.0},
        "": {"example.com/dongle": 2.0, "nvidia.com/gpu": 1.0},
    }
    result = derive_extended_resources(nodes, requests)
    rows = {(r.resource, r.zone): r for r in result.zones}
    assert set(rows) == {("example.com/dongle", "zone-a"), ("example.com/dongle", "zone-b")}
    a = rows[("example.com/dongle", "zone-a")]
    assert (a.nodes, a.capacity, a.allocatable, a.requested, a.exhausted_nodes) == (
        2,
        8.0,
        8.0,
        5.0,
        1,
    )
    b = rows[("example.com/dongle", "zone-b")]
    # Allocatable below capacity: exhausted when the allocatable part is used up.
    assert (b.nodes, b.capacity, b.allocatable, b.requested, b.exhausted_nodes) == (
        1,
        4.0,
        3.0,
        3.0,
        1,
    )
    assert result.pending_requests == {"example.com/dongle": 2.0, "nvidia.com/gpu": 1.0}


def test_state_derive_extended_resources_sum_fractions_exactly_enough() -> None:
    nodes = [node("a1", capacity={"example.com/slice": "300m"})]
    result = derive_extended_resources(nodes, {"a1": {"example.com/slice": 0.1 + 0.1 + 0.1}})
    assert result.zones[0].exhausted_nodes == 1


# -- spread -------------------------------------------------------------------------------


def pod(
    name: str,
    node_name: str,
    owner: tuple[str, str],
    *,
    ready: bool = True,
    namespace: str = "team-a",
    terminating: bool = False,
) -> PodP:
    return PodP(
        namespace=namespace,
        name=name,
        uid=name,
        node_name=node_name,
        phase="Running",
        ready=ready,
        containers=1,
        owner_kind=owner[0],
        owner_name=owner[1],
        tolerations=(),
        extended_requests={},
        terminating=terminating,
        labels={},
    )


def deployment(
    name: str,
    replicas: int = 3,
    *,
    max_skew: int | None = None,
    key: str = ZONE,
    anti: bool = False,
    kind: str = "Deployment",
) -> WorkloadP:
    spread = () if max_skew is None else (SpreadP(max_skew, key, "DoNotSchedule"),)
    return WorkloadP(kind, "team-a", name, f"uid-{name}", replicas, spread, anti, {})  # type: ignore[arg-type]


NODES = {
    n.name: n
    for n in (
        node("a1", "zone-a"),
        node("a2", "zone-a"),
        node("b1", "zone-b"),
        node("c1", "zone-c"),
        node("cp", "zone-d", control_plane=True),  # not a schedulable zone
    )
}


def _rs(name: str, deployment_name: str) -> ReplicaSetP:
    return ReplicaSetP("team-a", name, f"uid-{name}", "Deployment", deployment_name)


def test_state_derive_spread_classes() -> None:
    workloads = [
        deployment("crowded"),  # 3 ready in zone-a
        deployment("spread", max_skew=1),  # 1/1/1
        deployment("skewed", max_skew=1),  # 3/1/0: skew 3
        deployment("lopsided"),  # 3/1/0 but no constraint: ok
        deployment("single", replicas=1),
        deployment("down", replicas=3),  # nothing ready
        deployment("stateful", kind="StatefulSet", anti=True),  # 2 in zone-b
    ]
    replicasets = {
        f"team-a/{rs.name}": rs
        for rs in (
            _rs("crowded-1", "crowded"),
            _rs("crowded-2", "crowded"),  # a rollout: two ReplicaSets
            _rs("spread-1", "spread"),
            _rs("skewed-1", "skewed"),
            _rs("lopsided-1", "lopsided"),
            _rs("single-1", "single"),
            _rs("down-1", "down"),
        )
    }
    pods = [
        pod("c1", "a1", ("ReplicaSet", "crowded-1")),
        pod("c2", "a2", ("ReplicaSet", "crowded-1")),
        pod("c3", "a1", ("ReplicaSet", "crowded-2")),
        pod("c4", "b1", ("ReplicaSet", "crowded-2"), ready=False),  # not ready: not counted
        pod("c5", "c1", ("ReplicaSet", "crowded-2"), terminating=True),
        pod("s1", "a1", ("ReplicaSet", "spread-1")),
        pod("s2", "b1", ("ReplicaSet", "spread-1")),
        pod("s3", "c1", ("ReplicaSet", "spread-1")),
        *(pod(f"k{i}", "a1", ("ReplicaSet", "skewed-1")) for i in range(3)),
        pod("k3", "b1", ("ReplicaSet", "skewed-1")),
        *(pod(f"l{i}", "a2", ("ReplicaSet", "lopsided-1")) for i in range(3)),
        pod("l3", "b1", ("ReplicaSet", "lopsided-1")),
        pod("one", "a1", ("ReplicaSet", "single-1")),
        pod("d1", "a1", ("ReplicaSet", "down-1"), ready=False),
        pod("ss0", "b1", ("StatefulSet", "stateful")),
        pod("ss1", "b1", ("StatefulSet", "stateful")),
        pod("orphan", "a1", ("ReplicaSet", "unknown-rs")),
        pod("ds", "a1", ("DaemonSet", "calico-node")),
    ]
    report = derive_spread(workloads, replicasets, pods, NODES)
    assert report.schedulable_zones == ("zone-a", "zone-b", "zone-c")
    by_name = {w.name: w for w in report.at_risk}
    # single_zone first, the one with more ready replicas first; then skew_exceeded.
    assert [w.name for w in report.at_risk] == ["crowded", "stateful", "skewed"]
    crowded = by_name["crowded"]
    assert (crowded.risk, crowded.ready, crowded.zones_used, crowded.skew) == (
        "single_zone",
        3,
        1,
        3,
    )
    assert crowded.ready_by_zone == (("zone-a", 3), ("zone-b", 0), ("zone-c", 0))
    assert not crowded.declared
    assert by_name["stateful"].declared  # zone anti-affinity, and still in one zone
    skewed = by_name["skewed"]
    assert (skewed.risk, skewed.skew, skewed.max_skew) == ("skew_exceeded", 3, 1)
    assert report.counts[("ok", True)] == 1  # spread
    assert report.counts[("ok", False)] == 1  # lopsided
    assert report.counts[("not_applicable", False)] == 2  # single, down
    assert report.counts[("single_zone", False)] == 1
    assert report.counts[("single_zone", True)] == 1
    assert report.counts[("skew_exceeded", True)] == 1
    assert sum(report.counts.values()) == len(workloads)
    assert report.dropped == 0


def test_state_derive_spread_cap_keeps_the_riskiest() -> None:
    pods = [
        pod(f"p{i}-{j}", "a1", ("StatefulSet", f"w{i}")) for i in range(5) for j in range(i + 1)
    ]
    workloads = [deployment(f"w{i}", kind="StatefulSet") for i in range(5)]
    report = derive_spread(workloads, {}, pods, NODES, max_series=2)
    # w0 has one ready replica (of 3 desired): still in one zone.
    assert [w.name for w in report.at_risk] == ["w4", "w3"]
    assert report.dropped == 3
    assert derive_spread(workloads, {}, pods, NODES, max_series=0).dropped == 5


def test_state_derive_spread_with_one_schedulable_zone_is_not_applicable() -> None:
    nodes = {
        "a1": node("a1", "zone-a"),
        "b1": node("b1", "zone-b", unschedulable=True),
        "c1": node(
            "c1",
            "zone-c",
            taints=(TaintP("node.kubernetes.io/unreachable", "", "NoSchedule", None),),
        ),
    }
    pods = [pod(f"p{i}", "a1", ("StatefulSet", "db")) for i in range(3)]
    report = derive_spread([deployment("db", kind="StatefulSet")], {}, pods, nodes)
    assert report.schedulable_zones == ("zone-a",)
    assert report.at_risk == ()
    assert report.counts[("not_applicable", False)] == 1


def test_state_derive_spread_skew_counts_empty_schedulable_zones() -> None:
    # maxSkew 1 over three zones, replicas in two: 1/1/0 is skew 1, within.
    pods = [
        pod("p1", "a1", ("StatefulSet", "db")),
        pod("p2", "b1", ("StatefulSet", "db")),
    ]
    report = derive_spread([deployment("db", max_skew=1, kind="StatefulSet")], {}, pods, NODES)
    assert report.counts[("ok", True)] == 1
    # A hostname constraint is not a zone constraint.
    host = deployment("db", max_skew=1, key="kubernetes.io/hostname", kind="StatefulSet")
    report = derive_spread([host], {}, pods, NODES)
    assert report.counts[("ok", False)] == 1
