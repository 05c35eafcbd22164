"""Heartbeats and zone disruption, derived from hand-made projections.

The zone rules are the node-lifecycle controller's (ComputeZoneState, setLimiterInZone,
master disruption mode), so the tables sit on their boundaries: 2 versus 3 NotReady
nodes, a NotReady share of exactly 0.55, zones of 50 versus 51 nodes, every zone down.
"""

from __future__ import annotations

import pytest

from kubeballast.exporter.heartbeat import LAG_BUCKETS, derive_heartbeats, lease_age
from kubeballast.exporter.projections import LeaseP, NodeP, PodP, TaintP, TolerationP
from kubeballast.exporter.zones import (
    NOT_READY_TAINT_KEY,
    UNREACHABLE_TAINT_KEY,
    ZoneRules,
    compute_zone_state,
    derive_zones,
    eviction_delay,
    tolerates,
    zone_eviction_rate,
)

NOW = 1_700_000_000.0
GRACE = 50.0


def node(
    name: str,
    zone: str = "zone-a",
    *,
    ready: str = "True",
    ready_since: float | None = None,
    taints: tuple[TaintP, ...] = (),
    labels: dict[str, str] | None = None,
) -> NodeP:
    return NodeP(
        name=name,
        labels={"topology.kubernetes.io/zone": zone, **(labels or {})},
        zone=zone,
        unschedulable=False,
        taints=taints,
        ready=ready,
        ready_since=ready_since,
        capacity={},
        allocatable={},
        control_plane=False,
    )


def lease(name: str, age: float | None) -> LeaseP:
    return LeaseP(name, "kube-node-lease", name, None if age is None else NOW - age, 40)


def pod(
    name: str,
    node_name: str,
    tolerations: tuple[TolerationP, ...] = (),
    *,
    terminating: bool = False,
    phase: str = "Running",
) -> PodP:
    return PodP(
        namespace="team-a",
        name=name,
        uid=f"uid-{name}",
        node_name=node_name,
        phase=phase,
        ready=True,
        containers=1,
        owner_kind="",
        owner_name="",
        tolerations=tolerations,
        extended_requests={},
        terminating=terminating,
        labels={},
    )


def default_tolerations(seconds: int | None = 300) -> tuple[TolerationP, ...]:
    """What DefaultTolerationSeconds gives every pod."""
    return (
        TolerationP(NOT_READY_TAINT_KEY, "Exists", "", "NoExecute", seconds),
        TolerationP(UNREACHABLE_TAINT_KEY, "Exists", "", "NoExecute", seconds),
    )


def unreachable(added: float | None) -> TaintP:
    return TaintP(UNREACHABLE_TAINT_KEY, "", "NoExecute", added)


def zone_of_nodes(count: int, not_ready: int, zone: str = "zone-a") -> list[NodeP]:
    return [
        node(f"{zone}-{i:03}", zone, ready="Unknown" if i < not_ready else "True")
        for i in range(count)
    ]


# -- heartbeats ---------------------------------------------------------------------------


def test_state_derive_lease_age_is_clamped_and_absent_without_renew_time() -> None:
    assert lease_age(lease("n", 12.5), NOW) == 12.5
    # A kubelet clock ahead of ours: fresh, not negative.
    assert lease_age(lease("n", -3.0), NOW) == 0.0
    assert lease_age(lease("n", None), NOW) is None
    assert lease_age(None, NOW) is None


@pytest.mark.parametrize(
    ("age", "stale"),
    [(0.0, False), (49.999, False), (50.0, False), (50.001, True), (600.0, True)],
)
def test_state_derive_a_lease_is_stale_only_strictly_past_the_grace_period(
    age: float, stale: bool
) -> None:
    beats = derive_heartbeats([node("n1")], {"n1": lease("n1", age)}, NOW, grace_seconds=GRACE)
    assert beats.nodes[0].stale is stale
    assert beats.stale == int(stale)


def test_state_derive_heartbeats_per_zone_overall_and_onset() -> None:
    nodes = [node("a1", "zone-a"), node("a2", "zone-a"), node("b1", "zone-b"), node("b2", "zone-b")]
    leases = {
        "a1": lease("a1", 5.0),
        "a2": lease("a2", 80.0),  # stale since NOW - 30
        "b1": lease("b1", 120.0),  # stale since NOW - 70: the wave's start
        # b2 has none: missing, not stale
    }
    beats = derive_heartbeats(nodes, leases, NOW, grace_seconds=GRACE)
    assert (beats.total, beats.stale, beats.missing) == (4, 2, 1)
    assert beats.stale_ratio == 0.5
    assert beats.wave_onset == NOW - 70.0
    by_zone = {z.zone: (z.nodes, z.stale, z.missing, z.stale_ratio) for z in beats.zones}
    assert by_zone == {"zone-a": (2, 1, 0, 0.5), "zone-b": (2, 1, 1, 0.5)}
    stale_since = {n.node: n.stale_since for n in beats.nodes}
    assert stale_since == {"a1": None, "a2": NOW - 30.0, "b1": NOW - 70.0, "b2": None}


def test_state_derive_no_stale_lease_means_no_wave() -> None:
    beats = derive_heartbeats([node("a1")], {"a1": lease("a1", 10.0)}, NOW, grace_seconds=GRACE)
    assert beats.wave_onset is None
    assert beats.stale_ratio == 0.0


def test_state_derive_empty_cluster_has_no_ratio_to_divide_by() -> None:
    beats = derive_heartbeats([], {}, NOW, grace_seconds=GRACE)
    assert (beats.total, beats.stale_ratio, beats.lag_count) == (0, 0.0, 0)


def test_state_derive_lag_histogram_is_cumulative_with_inclusive_bounds() -> None:
    ages = {"n0": 0.5, "n1": 1.0, "n2": 1.5, "n3": 50.0, "n4": 50.5, "n5": 10_000.0}
    beats = derive_heartbeats(
        [node(n) for n in ages],
        {n: lease(n, a) for n, a in ages.items()},
        NOW,
        grace_seconds=GRACE,
    )
    buckets = dict(beats.lag_buckets)
    assert [b for b, _ in beats.lag_buckets] == [*map(float, LAG_BUCKETS), float("inf")]
    assert buckets[1.0] == 2  # 0.5 and exactly 1.0
    assert buckets[2.0] == 3
    assert buckets[50.0] == 4  # exactly the grace period is not stale, and le is inclusive
    assert buckets[60.0] == 5
    assert buckets[600.0] == 5
    assert buckets[float("inf")] == beats.lag_count == 6
    assert beats.lag_sum == pytest.approx(sum(ages.values()))


def test_state_derive_custom_zone_label() -> None:
    n = node("a1", "zone-a", labels={"example.com/rack": "r7"})
    beats = derive_heartbeats(
        [n], {"a1": lease("a1", 1.0)}, NOW, grace_seconds=GRACE, zone_label="example.com/rack"
    )
    assert [z.zone for z in beats.zones] == ["r7"]


# -- zone state ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "not_ready", "state"),
    [
        (0, 0, "Normal"),  # an empty zone
        (0, 1, "FullDisruption"),  # no Ready node and one NotReady
        (0, 50, "FullDisruption"),
        (1, 2, "Normal"),  # 2 NotReady: never partial, whatever the share
        (0, 2, "FullDisruption"),
        (1, 3, "PartialDisruption"),  # 3 NotReady, 75 %
        (9, 11, "PartialDisruption"),  # exactly 0.55
        (10, 11, "Normal"),  # 11/21 = 0.5238 < 0.55
        (2, 3, "PartialDisruption"),  # 3/5 = 0.6
        (3, 3, "Normal"),  # 0.5
        (100, 0, "Normal"),
    ],
)
def test_state_derive_compute_zone_state_boundaries(ready: int, not_ready: int, state: str) -> None:
    assert compute_zone_state(ready, not_ready, 0.55) == state


@pytest.mark.parametrize(
    ("state", "size", "master", "rate"),
    [
        ("Normal", 10, False, 0.1),
        ("FullDisruption", 10, False, 0.1),
        ("PartialDisruption", 50, False, 0.0),  # not larger than the threshold: stops
        ("PartialDisruption", 51, False, 0.01),  # larger: the secondary rate
        ("Normal", 10, True, 0.0),
        ("FullDisruption", 51, True, 0.0),
    ],
)
def test_state_derive_zone_eviction_rate(state: str, size: int, master: bool, rate: float) -> None:
    assert zone_eviction_rate(state, size, ZoneRules(), master_disruption=master) == rate  # type: ignore[arg-type]


def test_state_derive_stale_lease_counts_not_ready_even_while_ready_says_true() -> None:
    nodes = zone_of_nodes(5, 0)
    leases = {n.name: lease(n.name, 5.0) for n in nodes}
    for name in ("zone-a-000", "zone-a-001", "zone-a-002"):
        leases[name] = lease(name, 60.0)
    result = derive_zones(nodes, leases, [], NOW)
    status = result.zones[0]
    assert (status.not_ready, status.state) == (3, "PartialDisruption")


@pytest.mark.parametrize(
    ("size", "not_ready", "state", "rate"),
    [
        (50, 2, "Normal", 0.1),
        (50, 3, "Normal", 0.1),  # 3/50 is below the threshold
        (20, 11, "PartialDisruption", 0.0),  # exactly 0.55, small zone: stops
        (50, 28, "PartialDisruption", 0.0),  # 0.56 of 50: not large
        (51, 29, "PartialDisruption", 0.01),  # 0.5686 of 51: large
        (51, 51, "FullDisruption", 0.1),  # another zone is fine: not master mode
    ],
)
def test_state_derive_zone_table(size: int, not_ready: int, state: str, rate: float) -> None:
    nodes = zone_of_nodes(size, not_ready) + zone_of_nodes(3, 0, "zone-b")
    result = derive_zones(nodes, {}, [], NOW)
    a = result.zone("zone-a")
    assert a is not None
    assert (a.nodes, a.not_ready, a.state, a.eviction_rate) == (size, not_ready, state, rate)
    assert not result.master_disruption


def test_state_derive_all_zones_full_is_master_disruption_and_stops_evicting() -> None:
    nodes = zone_of_nodes(4, 4, "zone-a") + zone_of_nodes(4, 4, "zone-b")
    pods = [pod(f"p{i}", n.name, default_tolerations()) for i, n in enumerate(nodes)]
    result = derive_zones(nodes, {}, pods, NOW)
    assert result.master_disruption
    assert {z.state for z in result.zones} == {"FullDisruption"}
    assert {z.eviction_rate for z in result.zones} == {0.0}
    assert result.evictions_within_horizon == 0
    assert all(z.pods_on_not_ready_nodes == 4 for z in result.zones)


def test_state_derive_master_mode_ignores_controller_taints_but_not_others() -> None:
    dedicated = TaintP("example.com/drain", "", "NoExecute", NOW - 10)
    nodes = [
        node("a1", "zone-a", ready="Unknown", taints=(unreachable(NOW - 400),)),
        node("b1", "zone-b", ready="Unknown", taints=(unreachable(NOW - 400), dedicated)),
    ]
    pods = [pod("p1", "a1", default_tolerations()), pod("p2", "b1", default_tolerations())]
    result = derive_zones(nodes, {}, pods, NOW)
    assert result.master_disruption
    a, b = result.zones
    assert a.evictions_within_horizon == 0
    # The drain taint is tolerated by nobody: p2 goes at once.
    assert (b.evictions_within_horizon, b.next_eviction_at) == (1, NOW - 10)


def test_state_derive_excluded_nodes_do_not_count_in_the_state() -> None:
    excluded = {"node.kubernetes.io/exclude-disruption": ""}
    nodes = [
        node("a1", ready="Unknown", labels=excluded),
        node("a2", ready="Unknown", labels=excluded),
        node("a3"),
    ]
    result = derive_zones(nodes, {}, [], NOW)
    a = result.zones[0]
    assert (a.nodes, a.not_ready, a.state) == (1, 0, "Normal")
    # ... but they are still queued for their taint.
    assert a.awaiting_taint == 2


# -- evictions ----------------------------------------------------------------------------


def test_state_derive_tolerates_follows_the_api() -> None:
    taint = TaintP("k", "v", "NoExecute", None)
    assert tolerates(TolerationP("k", "Equal", "v", "NoExecute", None), taint)
    assert tolerates(TolerationP("k", "", "v", "", None), taint)
    assert not tolerates(TolerationP("k", "Equal", "w", "NoExecute", None), taint)
    assert tolerates(TolerationP("k", "Exists", "", "NoExecute", None), taint)
    assert tolerates(TolerationP("", "Exists", "", "", None), taint)  # tolerates everything
    assert not tolerates(TolerationP("k", "Exists", "", "NoSchedule", None), taint)
    assert not tolerates(TolerationP("other", "Exists", "", "", None), taint)


@pytest.mark.parametrize(
    ("tolerations", "delay"),
    [
        ((), 0.0),  # nothing matches: now
        (default_tolerations(300), 300.0),
        (default_tolerations(None), None),  # tolerates forever
        (default_tolerations(0), 0.0),
        (default_tolerations(-5), 0.0),
        (
            (
                TolerationP(UNREACHABLE_TAINT_KEY, "Exists", "", "NoExecute", 60),
                TolerationP(UNREACHABLE_TAINT_KEY, "Exists", "", "NoExecute", 10),
            ),
            60.0,  # the first matching toleration is the one used
        ),
    ],
)
def test_state_derive_eviction_delay(
    tolerations: tuple[TolerationP, ...], delay: float | None
) -> None:
    assert eviction_delay((unreachable(NOW),), tolerations) == delay


def test_state_derive_eviction_delay_takes_the_smallest_over_taints() -> None:
    taints = (unreachable(NOW), TaintP("dedicated", "x", "NoExecute", NOW))
    tolerations = (
        TolerationP(UNREACHABLE_TAINT_KEY, "Exists", "", "NoExecute", 300),
        TolerationP("dedicated", "Equal", "x", "NoExecute", 60),
    )
    assert eviction_delay(taints, tolerations) == 60.0
    assert eviction_delay(taints, tolerations[:1]) == 0.0  # one taint untolerated
    assert eviction_delay((), tolerations) is None


def test_state_derive_pods_on_tainted_nodes_within_the_horizon() -> None:
    tainted = node("a1", ready="Unknown", taints=(unreachable(NOW - 200),))
    healthy = [node(f"a{i}") for i in range(2, 10)]
    pods = [
        pod("default", "a1", default_tolerations(300)),  # at NOW + 100: within
        pod("fast", "a1", default_tolerations(60)),  # at NOW - 140: overdue, counts
        pod("sticky", "a1", default_tolerations(3600)),  # at NOW + 3400: not within
        pod("daemon", "a1", default_tolerations(None)),  # never
        pod("bare", "a1"),  # no toleration: when tainted, NOW - 200 (overdue)
        pod("leaving", "a1", terminating=True),  # already being deleted
        pod("done", "a1", phase="Succeeded"),
        pod("elsewhere", "a2", default_tolerations(300)),
    ]
    result = derive_zones([tainted, *healthy], {}, pods, NOW)
    a = result.zones[0]
    assert a.tainted_nodes == 1
    assert a.awaiting_taint == 0
    assert a.pods_on_not_ready_nodes == 5
    assert a.evictions_within_horizon == 3
    assert a.next_eviction_at == NOW - 200


def test_state_derive_taint_without_time_added_counts_from_now() -> None:
    tainted = node("a1", ready="Unknown", taints=(unreachable(None),))
    result = derive_zones([tainted, node("a2")], {}, [pod("p", "a1", default_tolerations(30))], NOW)
    assert result.zones[0].next_eviction_at == NOW + 30


def test_state_derive_ready_node_keeps_no_controller_taint() -> None:
    # Recovered: the controller removes the taint on its next pass, nothing is evicted.
    recovered = node("a1", taints=(unreachable(NOW - 400),))
    result = derive_zones([recovered], {}, [pod("p", "a1", default_tolerations())], NOW)
    assert (result.zones[0].tainted_nodes, result.zones[0].evictions_within_horizon) == (0, 0)


def test_state_derive_untainted_not_ready_nodes_are_taken_at_the_zone_rate() -> None:
    # Normal zone (2 of 10 NotReady): rate 0.1/s, one node every 10 s.
    nodes = [node(f"a{i}") for i in range(10)]
    leases = {n.name: lease(n.name, 5.0) for n in nodes}
    leases["a0"] = lease("a0", 60.0)  # stale since NOW - 10
    leases["a1"] = lease("a1", 55.0)  # stale since NOW - 5
    pods = [
        pod("first", "a0", default_tolerations(300)),  # taint at NOW, evict NOW + 300
        pod("second", "a1", default_tolerations(300)),  # taint at NOW + 10: NOW + 310
        pod("second-fast", "a1", default_tolerations(60)),  # NOW + 70
    ]
    result = derive_zones(nodes, leases, pods, NOW)
    a = result.zones[0]
    assert (a.state, a.awaiting_taint, a.tainted_nodes) == ("Normal", 2, 0)
    assert a.evictions_within_horizon == 2  # first (at exactly the horizon), second-fast
    assert a.next_eviction_at == NOW + 70


def test_state_derive_queue_respects_each_nodes_own_queue_time() -> None:
    # A node that goes NotReady later than its turn is tainted at its own time.
    nodes = [node(f"a{i}") for i in range(10)]
    nodes[1] = node("a1", ready="False", ready_since=NOW + 0)
    leases = {n.name: lease(n.name, 5.0) for n in nodes}
    leases["a0"] = lease("a0", 51.0)  # stale since NOW - 1: tainted at NOW
    pods = [pod("p", "a1", ())]  # not-ready taint, untolerated: evicted when tainted
    result = derive_zones(nodes, leases, pods, NOW)
    # a1 queued at NOW, but the bucket's next token is at NOW + 10.
    assert result.zones[0].next_eviction_at == NOW + 10


def test_state_derive_stopped_zone_queue_predicts_nothing_new() -> None:
    # 11 of 20 NotReady: PartialDisruption in a small zone, rate 0.
    nodes = zone_of_nodes(20, 11)
    pods = [pod(f"p{i}", n.name, ()) for i, n in enumerate(nodes)]
    result = derive_zones(nodes, {}, pods, NOW)
    a = result.zones[0]
    assert (a.state, a.eviction_rate, a.awaiting_taint) == ("PartialDisruption", 0.0, 11)
    assert a.pods_on_not_ready_nodes == 11
    assert a.evictions_within_horizon == 0
    assert a.next_eviction_at is None


def test_state_derive_large_partial_zone_tainting_at_the_secondary_rate() -> None:
    # 29 of 51 NotReady: the secondary rate, one node per 100 s; with no tolerations
    # the pods go when their node is tainted: NOW, +100, +200, +300 within 300 s.
    nodes = zone_of_nodes(51, 29)
    pods = [pod(f"p{i}", n.name, ()) for i, n in enumerate(nodes[:29])]
    result = derive_zones(nodes, {}, pods, NOW)
    a = result.zones[0]
    assert a.eviction_rate == 0.01
    assert a.evictions_within_horizon == 4
