"""End to end: the cluster state over the simulator, and the derivations against the
simulator's own node-lifecycle controller.

Three failures look alike from one node's Lease and must not look alike from the
exporter: a zone cut off the network (one zone's Leases stale, the others fresh: that
zone is FullDisruption and evicts), a congestion wave (every zone's Leases stale at
once: master disruption mode, nothing is evicted), and a few dead kubelets (a Normal
zone tainting them at its rate). The simulator runs its kubelets and controllers at a
clock factor of 20 (the 50 s grace period is 2.5 real seconds); its object timestamps
are simulated time, so the derivations get the simulator clock's ``now``. Agreement is
awaited with ``eventually``: the exporter's caches follow the store through watches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kubeballast.core.config import ClusterStateConfig, KubernetesAccessConfig
from kubeballast.core.kube import KubeClientProvider
from kubeballast.exporter.clusterstate import ClusterState
from kubeballast.exporter.heartbeat import derive_heartbeats
from kubeballast.exporter.informer import KubeHttp
from kubeballast.exporter.state import render_state
from kubeballast.exporter.zones import ZoneDisruption, ZoneRules, derive_zones
from kubeballast.simulator.faults import Congestion
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

TOKEN = "token-state-derive"
GRACE = 50.0
Eventually = Callable[..., Awaitable[None]]


def settings() -> SimulatorSettings:
    scenario = ScenarioSettings(
        nodes=12,
        zones=3,
        pods_per_node=4,
        control_plane_nodes=1,
        seed=5,
        users={TOKEN: "system:serviceaccount:monitoring:kube-ballast"},
    )
    return SimulatorSettings(
        host="127.0.0.1",
        port=0,
        kubelets=True,
        controllers=True,
        clock_factor=20.0,
        scenario=scenario,
    )


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    srv = build_server(settings())
    srv.bookmark_interval = 0.2
    attach_control_plane(srv)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def state(server: ApiServer, tmp_path: Path) -> AsyncIterator[ClusterState]:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, server.url, TOKEN)
    provider = KubeClientProvider(KubernetesAccessConfig(kubeconfig_path=str(path)))
    http = await KubeHttp.from_provider(provider)
    cluster = ClusterState(http)
    try:
        await cluster.start()
        await cluster.wait_synced()
        yield cluster
    finally:
        await cluster.stop()
        await http.close()
        await provider.close()


def zones_now(state: ClusterState, server: ApiServer) -> ZoneDisruption:
    snap = state.snapshot()
    return derive_zones(
        snap.nodes.values(), snap.node_leases, snap.pods, server.clock.time(), ZoneRules()
    )


def stale_by_zone(state: ClusterState, server: ApiServer) -> dict[str, int]:
    snap = state.snapshot()
    beats = derive_heartbeats(
        snap.nodes.values(), snap.node_leases, server.clock.time(), grace_seconds=GRACE
    )
    return {z.zone: z.stale for z in beats.zones}


def agrees_with_the_controller(state: ClusterState, server: ApiServer) -> bool:
    """Our zone states and rates are the simulated controller's."""
    lifecycle = server.node_lifecycle
    assert lifecycle is not None
    ours = zones_now(state, server)
    theirs = lifecycle.zone_states()
    return {z.zone: z.state for z in ours.zones} == theirs and all(
        z.eviction_rate == lifecycle.eviction_rate(z.zone) for z in ours.zones
    )


async def test_state_collect_zone_partition(
    server: ApiServer, state: ClusterState, eventually: Eventually
) -> None:
    await eventually(
        lambda: stale_by_zone(state, server) == {"zone-a": 0, "zone-b": 0, "zone-c": 0}
    )
    server.faults.set_partition(frozenset({"zone-b"}))

    def partitioned() -> bool:
        return stale_by_zone(state, server) == {"zone-a": 0, "zone-b": 4, "zone-c": 0}

    await eventually(partitioned)

    def full_in_b() -> bool:
        result = zones_now(state, server)
        states = {z.zone: z.state for z in result.zones}
        return states == {
            "zone-a": "Normal",
            "zone-b": "FullDisruption",
            "zone-c": "Normal",
        } and agrees_with_the_controller(state, server)

    await eventually(full_in_b)
    result = zones_now(state, server)
    b = result.zone("zone-b")
    assert b is not None
    assert not result.master_disruption
    assert b.eviction_rate == 0.1
    assert b.pods_on_not_ready_nodes > 0
    # The controller taints zone-b at 0.1 node/s: the pods' evictions are predicted.
    await eventually(lambda: (zones_now(state, server).zone("zone-b") or b).tainted_nodes >= 1)
    assert (zones_now(state, server).zone("zone-b") or b).evictions_within_horizon > 0

    # The same through the collector's rendering.
    families = render_state(state.snapshot(), ClusterStateConfig(), server.clock.time())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    assert samples[("kubeballast_zone_lease_stale_ratio", (("zone", "zone-b"),))] == 1.0
    assert samples[("kubeballast_zone_lease_stale_ratio", (("zone", "zone-a"),))] == 0.0
    full = ("kubeballast_zone_disruption_state", (("state", "FullDisruption"), ("zone", "zone-b")))
    assert samples[full] == 1.0
    assert samples[("kubeballast_node_lifecycle_master_disruption", ())] == 0.0


async def test_state_collect_congestion_wave(
    server: ApiServer, state: ClusterState, eventually: Eventually
) -> None:
    await eventually(lambda: sum(stale_by_zone(state, server).values()) == 0)
    started = server.clock.time()
    # Heartbeats starve; everything else (the exporter's watches included) goes through.
    server.faults.set_congestion(Congestion(reject_fraction=0.0, lease_reject_fraction=1.0))

    def everywhere() -> bool:
        stale = stale_by_zone(state, server)
        # Every node, the control plane's too (cp-1 is in zone-a).
        return stale == {"zone-a": 5, "zone-b": 4, "zone-c": 4}

    await eventually(everywhere)

    def master_mode() -> bool:
        result = zones_now(state, server)
        return result.master_disruption and agrees_with_the_controller(state, server)

    await eventually(master_mode)
    result = zones_now(state, server)
    assert {z.eviction_rate for z in result.zones} == {0.0}
    assert result.evictions_within_horizon == 0
    snap = state.snapshot()
    beats = derive_heartbeats(
        snap.nodes.values(), snap.node_leases, server.clock.time(), grace_seconds=GRACE
    )
    # Leases were last renewed within one 10 s renewal interval before the congestion
    # (plus 5 simulated seconds, a quarter of a real second at this clock factor, for
    # the kubelets' loop on a loaded machine).
    assert beats.wave_onset is not None
    assert started + GRACE - 10 - 5 <= beats.wave_onset <= started + GRACE + 2


async def test_state_collect_a_few_dead_nodes(
    server: ApiServer, state: ClusterState, eventually: Eventually
) -> None:
    await eventually(lambda: sum(stale_by_zone(state, server).values()) == 0)
    dead = frozenset({"node-0000", "node-0003"})  # both in zone-a
    assert {state.snapshot().nodes[n].zone for n in dead} == {"zone-a"}
    server.faults.set_kubelets_stopped(dead)
    await eventually(
        lambda: stale_by_zone(state, server) == {"zone-a": 2, "zone-b": 0, "zone-c": 0}
    )

    lifecycle = server.node_lifecycle
    assert lifecycle is not None

    def both_tainted_and_predicted() -> bool:
        result = zones_now(state, server)
        a = result.zone("zone-a")
        if a is None or (a.state, a.not_ready, a.tainted_nodes) != ("Normal", 2, 2):
            return False
        if not agrees_with_the_controller(state, server):
            return False
        # Our predictions are the taint-eviction controller's schedule.
        now = server.clock.time()
        schedule = lifecycle.eviction_schedule()
        due = [at for at in schedule.values() if at <= now + 300]
        if a.evictions_within_horizon != len(due) or not due:
            return False
        assert a.next_eviction_at is not None
        return abs(a.next_eviction_at - min(due)) < 2.0

    await eventually(both_tainted_and_predicted)
    result = zones_now(state, server)
    assert not result.master_disruption
    others: list[Any] = [z for z in result.zones if z.zone != "zone-a"]
    assert all(z.evictions_within_horizon == 0 and z.tainted_nodes == 0 for z in others)


async def test_state_collect_pool_requests_match_the_pods(
    server: ApiServer, state: ClusterState, eventually: Eventually
) -> None:
    """Requested and free CPU and memory per pool, against the pods the simulator holds."""
    from kubeballast.exporter.projections import parse_quantity
    from kubeballast.simulator.resources import NODES, PODS

    pool_of = {
        node["metadata"]["name"]: node["metadata"]
        .get("labels", {})
        .get("example.com/node-pool", "")
        for node in (e.obj() for e in server.store.iter_current(NODES))
    }
    expected: dict[str, list[float]] = {}
    for pod in (e.obj() for e in server.store.iter_current(PODS)):
        node = pod["spec"].get("nodeName", "")
        if not node or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        totals = expected.setdefault(pool_of[node], [0.0, 0.0])
        for container in pod["spec"]["containers"]:
            requests = container.get("resources", {}).get("requests", {})
            totals[0] += parse_quantity(requests.get("cpu", "0"))
            totals[1] += parse_quantity(requests.get("memory", "0"))
    assert any(cpu > 0 for cpu, _ in expected.values())

    families = {
        f.name: f for f in render_state(state.snapshot(), ClusterStateConfig(), server.clock.time())
    }

    def by_pool(name: str) -> dict[str, float]:
        return {s.labels["pool"]: s.value for s in families[name].samples}

    requested_cpu = by_pool("kubeballast_pool_requested_cpu_cores")
    requested_memory = by_pool("kubeballast_pool_requested_memory_bytes")
    for pool, (cpu, memory) in expected.items():
        assert requested_cpu[pool] == pytest.approx(cpu)
        assert requested_memory[pool] == pytest.approx(memory)
    allocatable = by_pool("kubeballast_pool_allocatable_cpu_cores")
    free = by_pool("kubeballast_pool_free_cpu_cores")
    for pool in expected:
        assert 0 <= free[pool] <= allocatable[pool]
        assert free[pool] >= allocatable[pool] - requested_cpu[pool] - 1e-6
