"""How soon a dead kubelet's node counts stale, in real time, through the exporter's path.

The alert on stale Leases is only as early as the exporter's view of them, and that
view has three delays stacked on the Lease's own age: the watch that brings the last
renewal, the collector's cache (1 s) and, since the render moved to a worker thread,
the refresher's period. The state tests elsewhere run the simulator 20 times faster
than real time, which shrinks the watch delay out of sight; here the clock factor is
1, kubelets run as they do (a renewal every 10 s, 4 % jitter) and the families are
read the way a scrape reads them: ``collect()`` on the event loop of a background
collector.

The grace period is 15 s instead of the real 50 s (it is configurable for exactly
this: it must repeat kube-controller-manager's flag) so the test takes about 30 s; it
stays above the 10 s renewal interval, so live nodes are never stale and
``kubeballast_lease_stale_nodes`` counting 1 means the stopped node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from kubeballast.core.config import ClusterStateConfig, KubernetesAccessConfig
from kubeballast.core.kube import KubeClientProvider
from kubeballast.exporter.clusterstate import ClusterState
from kubeballast.exporter.informer import KubeHttp
from kubeballast.exporter.projections import parse_time
from kubeballast.exporter.state import StateCollector, exporter_collector
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

TOKEN = "token-state-stale-timing"
GRACE = 15.0
RENEW_INTERVAL = 10.0 * 1.04  # the kubelet's interval with its jitter
DETECTION_BUDGET = 15.0
DEAD = "node-0001"


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    scenario = ScenarioSettings(
        nodes=6,
        zones=3,
        pods_per_node=2,
        control_plane_nodes=0,
        seed=11,
        users={TOKEN: "system:serviceaccount:kube-ballast:kube-ballast-exporter"},
    )
    settings = SimulatorSettings(
        host="127.0.0.1", port=0, kubelets=True, controllers=False, clock_factor=1.0,
        scenario=scenario,
    )  # fmt: skip
    srv = build_server(settings)
    srv.bookmark_interval = 0.2
    attach_control_plane(srv)  # the kubelets (controllers are off)
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


def scrape(collector: StateCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


async def stored_renew_time(server: ApiServer, node: str) -> float:
    """The Lease's renewTime as the apiserver stores it (not as the exporter saw it)."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    url = f"{server.url}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
    async with aiohttp.ClientSession(headers=headers) as session, session.get(url) as resp:
        assert resp.status == 200
        lease = await resp.json()
    renewed = parse_time(lease["spec"]["renewTime"])
    assert renewed is not None
    return renewed


async def test_state_stale_dead_kubelet_detected_within_budget(
    server: ApiServer, state: ClusterState
) -> None:
    config = ClusterStateConfig(node_monitor_grace_period_seconds=GRACE)
    # The collector exactly as the exporter builds it (background refresh every 10 s).
    collector = exporter_collector(state.snapshot, config)
    try:
        # Every node has a fresh Lease before the kubelet stops.
        deadline = time.monotonic() + 30
        while True:
            samples = scrape(collector)
            ages = {
                dict(labels)["node"]: value
                for (name, labels), value in samples.items()
                if name == "kubeballast_node_lease_age_seconds"
            }
            if len(ages) == 6 and samples[("kubeballast_lease_stale_nodes", ())] == 0:
                break
            assert time.monotonic() < deadline, f"leases never all fresh: {ages}"
            await asyncio.sleep(0.1)

        server.faults.set_kubelets_stopped(frozenset({DEAD}))
        stopped_at = time.time()
        deadline = time.monotonic() + RENEW_INTERVAL + GRACE + DETECTION_BUDGET + 10
        while True:
            samples = scrape(collector)
            if samples[("kubeballast_lease_stale_nodes", ())] >= 1:
                detected_at = time.time()
                break
            assert time.monotonic() < deadline, "the stopped node never counted stale"
            await asyncio.sleep(0.1)
    finally:
        await collector.aclose()

    # The one stale node is the stopped one.
    assert samples[("kubeballast_lease_stale_nodes", ())] == 1
    assert samples[("kubeballast_node_lease_age_seconds", (("node", DEAD),))] > GRACE
    renewed = await stored_renew_time(server, DEAD)
    # Its last renewal came before the stop (one may have been in flight), and it has
    # not moved since: the kubelet is really stopped.
    assert renewed <= stopped_at + 1.0
    stale_from = renewed + GRACE
    # Never early (stale means strictly older than the grace period) ...
    assert detected_at > stale_from
    # ... and no later than the budget after the Lease crossed the grace period.
    assert detected_at - stale_from <= DETECTION_BUDGET, (detected_at, stale_from)
