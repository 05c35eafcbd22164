"""The eviction-guard view (GET /eviction-guard) says what /metrics says.

The receiver reads the view instead of parsing the whole /metrics page; the two must
never disagree. First over one hand-built snapshot (the render's own families), where
the receiver's /metrics parser and its view parser must produce the same signals and
the wave's members must be the derivation's; then end to end over the simulator: a
heartbeat storm, the exporter's HTTP routes, the receiver's reader.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import aiohttp
import msgspec
import pytest
from loopback import catalog_on_simulated_clock, exporter_on_simulator, serve
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from kubeballast.core.config import (
    ClusterStateConfig,
)
from kubeballast.exporter.apiserver import ApiserverCollector, ApiserverMetricsSnapshot
from kubeballast.exporter.app import build_exporter
from kubeballast.exporter.clusterstate import ClusterSnapshot
from kubeballast.exporter.congestion import ApiserverSummary, Evaluation
from kubeballast.exporter.contract import Snapshot
from kubeballast.exporter.guardview import (
    VIEW_KIND,
    VIEW_PATH,
    GuardView,
    ViewUnavailableError,
    build_guard_view,
    encode_guard_view,
)
from kubeballast.exporter.heartbeat import derive_heartbeats
from kubeballast.exporter.projections import LeaseP, NodeP
from kubeballast.exporter.state import render_state
from kubeballast.remediations.evictionguard import parse_signals, parse_view, read_signals
from kubeballast.simulator.faults import Congestion
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

NOW = 1_700_000_123.456
GRACE = 50.0
ZONES = ("zone-a", "zone-b", "zone-c")
Eventually = Callable[..., Awaitable[None]]


# --- one snapshot, both renderings ------------------------------------------------------


def _node(name: str, zone: str) -> NodeP:
    labels = {"topology.kubernetes.io/zone": zone}
    return NodeP(name, labels, zone, False, (), "True", NOW - 86400, {}, {}, False)


def storm_snapshot() -> ClusterSnapshot:
    """30 nodes: one dead for two hours, a wave of 12 (onsets 3 s apart, every zone),
    two that went stale well after the wave's window, one without a Lease, the rest
    fresh."""
    nodes: dict[str, NodeP] = {}
    leases: dict[str, LeaseP] = {}
    for i in range(30):
        name = f"node-{i:02d}"
        nodes[name] = _node(name, ZONES[i % 3])
        if i == 0:
            renewed: float | None = NOW - 7200.25
        elif i <= 12:
            renewed = NOW - 250.125 - 3 * i
        elif i <= 14:
            renewed = NOW - 55.5 - i
        elif i == 29:
            renewed = None
        else:
            renewed = NOW - 3.0
        if renewed is not None:
            leases[name] = LeaseP(name, "kube-node-lease", name, renewed, 40)
    by_zone: dict[str, list[str]] = {}
    for node in nodes.values():
        by_zone.setdefault(node.zone, []).append(node.name)
    return ClusterSnapshot(
        version=1,
        taken_at=NOW,
        synced=True,
        informers={},
        nodes=nodes,
        node_leases=leases,
        pods=(),
        replicasets={},
        workloads={},
        pods_by_node={},
        extended_requests_by_node={},
        owner_pods_by_node={},
        nodes_by_zone={zone: tuple(sorted(names)) for zone, names in by_zone.items()},
    )


@dataclasses.dataclass
class _View:
    snapshot: Snapshot[ApiserverMetricsSnapshot] | None
    up: bool = True


def apiserver_families() -> list[Metric]:
    """Two apiservers: one congested (APF rejects node-high), one fine."""
    return list(
        ApiserverCollector(
            health={},
            metrics={
                "apiserver-1": _View(
                    Snapshot(
                        ApiserverMetricsSnapshot(
                            ApiserverSummary(),
                            Evaluation(
                                evaluated=True, reasons=frozenset({"apf_rejections_node_high"})
                            ),
                        ),
                        NOW,
                    )
                ),
                "apiserver-2": _View(
                    Snapshot(ApiserverMetricsSnapshot(ApiserverSummary(), Evaluation(True)), NOW)
                ),
            },
        ).collect()
    )


def as_text(families: Iterable[Metric]) -> str:
    class Fixed:
        def collect(self) -> Iterable[Metric]:
            return list(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return generate_latest(registry).decode()


def test_exporter_guard_view_agrees_with_the_metrics_of_one_render() -> None:
    config = ClusterStateConfig()
    snapshot = storm_snapshot()
    families = [*apiserver_families(), *render_state(snapshot, config, NOW)]

    view = build_guard_view(
        families, generated_at=NOW + 0.5, wave_window_seconds=config.wave_window_seconds
    )
    from_view = parse_view(encode_guard_view(view), "http://exporter/eviction-guard")
    from_metrics = parse_signals(as_text(families), now=NOW)

    assert from_view is not None
    assert from_view.source == "view"
    assert from_metrics.source == "metrics"
    assert from_view.generated_at == NOW + 0.5
    assert dataclasses.replace(from_view, source="metrics", generated_at=None) == from_metrics

    # Against the derivation itself: the wave is nodes 1-12, three zones, all 30 nodes.
    beats = derive_heartbeats(
        snapshot.nodes.values(), snapshot.node_leases, NOW, grace_seconds=GRACE
    )
    wave = [f"node-{i:02d}" for i in range(1, 13)]
    assert list(beats.wave.nodes) == wave
    assert view.wave is not None
    assert view.wave.start == beats.wave.start
    assert (view.nodes, view.wave.nodes, view.wave.zones) == (30, 12, 3)
    # Stalest first: the node dead for hours, then the wave from its first node (12),
    # then the two that went stale after the wave's window.
    assert view.stale == [
        "node-00",
        *reversed(wave),
        "node-14",
        "node-13",
    ]
    assert view.wave.stale_from == 1
    # The wave's victims (at or after its start, as the derivation's onsets say) include
    # the two that went stale later; the node dead for hours is stale but not one of them.
    assert beats.wave.start is not None
    since_start = sorted(
        beat.node
        for beat in beats.nodes
        if beat.stale_since is not None and beat.stale_since >= beats.wave.start
    )
    assert list(from_view.wave_nodes_named) == since_start == [*wave, "node-13", "node-14"]
    assert from_view.congested
    assert from_view.congestion_evaluated
    assert from_view.congestion_reasons == ("apiserver-1:apf_rejections_node_high",)


def test_exporter_guard_view_before_the_state_synced() -> None:
    config = ClusterStateConfig()
    snapshot = dataclasses.replace(storm_snapshot(), synced=False)
    families = render_state(snapshot, config, NOW)
    view = build_guard_view(families, generated_at=NOW, wave_window_seconds=120.0)
    assert view.synced is False
    assert (view.nodes, view.grace_seconds, view.wave, view.stale) == (None, None, None, [])


def test_exporter_guard_view_without_the_state_families() -> None:
    # The state area failed this collection: the handler answers 503 with this reason.
    with pytest.raises(ViewUnavailableError, match="cluster-state families are missing"):
        build_guard_view(apiserver_families(), generated_at=NOW, wave_window_seconds=120.0)


# --- end to end over the simulator ------------------------------------------------------

TOKEN = "token-guard-view"


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    settings = SimulatorSettings(
        host="127.0.0.1",
        port=0,
        kubelets=True,
        controllers=True,
        clock_factor=20.0,
        scenario=ScenarioSettings(
            nodes=12,
            zones=3,
            pods_per_node=3,
            control_plane_nodes=1,
            seed=11,
            users={TOKEN: "system:serviceaccount:monitoring:kube-ballast"},
        ),
    )
    srv = build_server(settings)
    srv.bookmark_interval = 0.2
    attach_control_plane(srv)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def exporter(server: ApiServer, tmp_path: Path) -> AsyncIterator[str]:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, server.url, TOKEN)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    config = exporter_on_simulator(server.url, kubeconfig, token)
    app = build_exporter(
        config,
        catalog=catalog_on_simulated_clock(
            server.clock.time, cache_seconds=0.5, stale_limit_seconds=1.0
        ),
    ).create_app()
    async with serve(app) as url:
        yield url


async def get_view(url: str) -> GuardView:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + VIEW_PATH) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        return msgspec.json.decode(await response.read(), type=GuardView)


async def test_exporter_guard_view_over_the_simulator_storm(
    server: ApiServer, exporter: str, eventually: Eventually
) -> None:
    async def synced_and_evaluated() -> bool:
        view = await get_view(exporter)
        return view.synced and all(c.evaluated for c in view.congestion) and bool(view.congestion)

    await eventually(synced_and_evaluated)
    healthy = await get_view(exporter)
    assert healthy.kind == VIEW_KIND
    assert healthy.version == 1
    assert healthy.nodes == 13
    assert healthy.stale == []
    assert healthy.wave is not None
    assert healthy.wave.nodes == 0
    assert healthy.wave.start is None

    # Every heartbeat starves (the exporter's watches still go through): one wave.
    server.faults.set_congestion(Congestion(reject_fraction=0.0, lease_reject_fraction=1.0))

    async def whole_wave() -> bool:
        view = await get_view(exporter)
        return view.wave is not None and view.wave.nodes == 13

    await eventually(whole_wave)
    metrics_url = exporter + "/metrics"
    signals = await read_signals(metrics_url, timeout_seconds=10.0)
    async with aiohttp.ClientSession() as session, session.get(metrics_url) as response:
        text = await response.text()
    from_metrics = parse_signals(text, now=server.clock.time())
    assert signals.source == "view"
    # The wave has formed and stays: ages move between the two reads, what the guard
    # decides on does not.
    for field in ("synced", "congestion_evaluated", "nodes", "wave_nodes", "wave_ratio"):
        assert getattr(signals, field) == getattr(from_metrics, field), field
    assert (signals.wave_zones, signals.wave_ratio) == (3, 1.0)
    assert set(signals.stale_nodes) == set(from_metrics.stale_nodes)
    assert signals.wave_nodes_named == from_metrics.wave_nodes_named
    assert len(signals.wave_nodes_named) == 13
    assert signals.grace_seconds == GRACE


async def test_exporter_guard_view_is_compressed_when_asked(
    server: ApiServer, exporter: str, eventually: Eventually
) -> None:
    async def synced() -> bool:
        return (await get_view(exporter)).synced

    await eventually(synced)
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(exporter + VIEW_PATH, headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.headers.get("Content-Encoding") == "gzip"
        body = json.loads(gzip.decompress(await response.read()))
    assert body["kind"] == VIEW_KIND
    assert body["synced"] is True
