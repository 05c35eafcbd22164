"""The zone-spread derivation through its cache: reused while young, derived again when
it ages out, when the schedulable zones change, or when the settings do; always the
report :func:`derive_spread` would give for the inputs it was derived from."""

from __future__ import annotations

from kubeballast.exporter.projections import NodeP, PodP, ReplicaSetP, WorkloadP
from kubeballast.exporter.spread import SpreadCache, derive_spread

ZONE = "topology.kubernetes.io/zone"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def node(name: str, zone: str, *, ready: str = "True") -> NodeP:
    return NodeP(
        name=name,
        labels={ZONE: zone},
        zone=zone,
        unschedulable=False,
        taints=(),
        ready=ready,
        ready_since=None,
        capacity={},
        allocatable={},
        control_plane=False,
    )


def pod(name: str, node_name: str, owner: str = "web-rs") -> PodP:
    return PodP(
        namespace="team-a",
        name=name,
        uid=name,
        node_name=node_name,
        phase="Running",
        ready=True,
        containers=1,
        owner_kind="ReplicaSet",
        owner_name=owner,
        tolerations=(),
        extended_requests={},
        terminating=False,
        labels={},
    )


WORKLOADS = (
    WorkloadP(
        kind="Deployment",
        namespace="team-a",
        name="web",
        uid="w",
        replicas=2,
        spread=(),
        zone_anti_affinity=False,
        selector_labels={},
    ),
)
REPLICASETS = {
    "team-a/web-rs": ReplicaSetP(
        namespace="team-a", name="web-rs", uid="rs", owner_kind="Deployment", owner_name="web"
    )
}
NODES = {"a1": node("a1", "zone-a"), "b1": node("b1", "zone-b")}
SPREAD_PODS = (pod("p1", "a1"), pod("p2", "b1"))
CROWDED_PODS = (pod("p1", "a1"), pod("p2", "a1"))


def risks(report: object) -> list[tuple[str, str]]:
    return [(w.name, w.risk) for w in report.at_risk]  # type: ignore[attr-defined]


def test_exporter_spread_cache_reuses_a_young_report() -> None:
    clock = Clock()
    cache = SpreadCache(60.0, monotonic=clock)
    first = cache.derive(WORKLOADS, REPLICASETS, SPREAD_PODS, NODES, zone_label=ZONE)
    assert first == derive_spread(WORKLOADS, REPLICASETS, SPREAD_PODS, NODES, zone_label=ZONE)
    assert risks(first) == []
    # Both replicas move into one zone: within the age limit the report is reused ...
    clock.now += 59.9
    again = cache.derive(WORKLOADS, REPLICASETS, CROWDED_PODS, NODES, zone_label=ZONE)
    assert again is first
    assert cache.derivations == 1
    # ... and derived again once it has aged out.
    clock.now += 0.1
    later = cache.derive(WORKLOADS, REPLICASETS, CROWDED_PODS, NODES, zone_label=ZONE)
    assert risks(later) == [("web", "single_zone")]
    assert later == derive_spread(WORKLOADS, REPLICASETS, CROWDED_PODS, NODES, zone_label=ZONE)
    assert cache.derivations == 2


def test_exporter_spread_cache_derives_again_when_the_schedulable_zones_change() -> None:
    clock = Clock()
    cache = SpreadCache(60.0, monotonic=clock)
    cache.derive(WORKLOADS, REPLICASETS, CROWDED_PODS, NODES, zone_label=ZONE)
    # zone-b's only node goes NotReady: one schedulable zone left, nothing to spread
    # over. A zone outage must not wait a minute to show.
    clock.now += 1
    down = {**NODES, "b1": node("b1", "zone-b", ready="Unknown")}
    report = cache.derive(WORKLOADS, REPLICASETS, CROWDED_PODS, down, zone_label=ZONE)
    assert cache.derivations == 2
    assert report.schedulable_zones == ("zone-a",)
    assert risks(report) == []
    assert report == derive_spread(WORKLOADS, REPLICASETS, CROWDED_PODS, down, zone_label=ZONE)


def test_exporter_spread_cache_derives_again_when_the_settings_change() -> None:
    clock = Clock()
    cache = SpreadCache(60.0, monotonic=clock)
    capped = cache.derive(
        WORKLOADS, REPLICASETS, CROWDED_PODS, NODES, zone_label=ZONE, max_series=0
    )
    assert (capped.at_risk, capped.dropped) == ((), 1)
    full = cache.derive(WORKLOADS, REPLICASETS, CROWDED_PODS, NODES, zone_label=ZONE)
    assert (risks(full), full.dropped) == ([("web", "single_zone")], 0)
    assert cache.derivations == 2
