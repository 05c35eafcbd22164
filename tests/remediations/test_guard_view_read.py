"""The receiver reads the exporter's eviction-guard view, and only falls back to parsing
/metrics when the exporter does not serve it.

The exporter side is a fake at our own boundary (the exporter is ours; its real view is
tested in tests/exporter/test_exporter_guard_view.py): a loopback server playing the
view's wire format as written here, which pins the contract from the receiver's side.
It answers only the requests a test scripts; any other request is recorded and fails
the test. The action's check runs against the simulator's API (the pause ConfigMap).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from loopback import serve

from kubeballast.core import evictionguard as eg
from kubeballast.core.config import EvictionGuardConfig, KubernetesAccessConfig
from kubeballast.core.kube import kube_client
from kubeballast.remediations.actions import ActionContext
from kubeballast.remediations.contract import Alert
from kubeballast.remediations.evictionguard import (
    EvictionGuard,
    SignalsUnavailableError,
    read_signals,
    view_url,
)
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

NOW = 1_700_000_000.0


def view(**overrides: Any) -> dict[str, Any]:
    """A view of a storm: 10 nodes, a wave of 4 in 2 zones, node-9 dead for long."""
    body: dict[str, Any] = {
        "kind": "kube-ballast/eviction-guard-view",
        "version": 1,
        "generated_at": NOW,
        "synced": True,
        "congestion": [
            {
                "target": "apiserver-1",
                "evaluated": True,
                "congested": True,
                "reasons": ["apf_rejections_node_high", "ratio_429"],
            },
            {"target": "apiserver-2", "evaluated": True, "congested": False, "reasons": []},
        ],
        "nodes": 10,
        "grace_seconds": 50.0,
        "wave": {
            "nodes": 4,
            "ratio": 0.4,
            "zones": 2,
            "start": NOW - 40,
            "stale_from": 1,
        },
        "stale": ["node-9", "node-1", "node-3", "node-2", "node-4", "node-5"],
        # A field a newer exporter may add: ignored.
        "future": {"anything": 1},
    }
    body.update(overrides)
    return body


METRICS = """\
# TYPE kubeballast_cluster_state_synced gauge
kubeballast_cluster_state_synced 1
kubeballast_apiserver_congested{target="apiserver-1"} 1
kubeballast_apiserver_congestion_reason{target="apiserver-1",reason="ratio_429"} 1
kubeballast_apiserver_congestion_evaluated{target="apiserver-1"} 1
kubeballast_node_lease_grace_period_seconds 50
kubeballast_node_lease_age_seconds{node="node-1"} 90
kubeballast_node_lease_age_seconds{node="node-2"} 75
kubeballast_node_lease_age_seconds{node="node-7"} 3
kubeballast_lease_stale_wave_nodes 2
kubeballast_lease_stale_wave_ratio 0.2
kubeballast_lease_stale_wave_zones 2
kubeballast_lease_stale_wave_start_timestamp_seconds 1699999960
kubeballast_lease_stale_nodes 2
kubeballast_scale_current{dimension="nodes"} 10
"""


@dataclass
class FakeExporter:
    """Answers the scripted paths; records every request; anything else is a failure."""

    pages: dict[str, Callable[[], web.Response]]
    requests: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.requests.append(request.path)
            page = self.pages.get(request.path)
            if page is None:
                self.unexpected.append(request.path)
                return web.Response(status=500, text="unexpected request")
            return page()

        return web.Application(middlewares=[record])


def json_page(body: Any, status: int = 200) -> Callable[[], web.Response]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda: web.Response(status=status, body=raw, content_type="application/json")


def not_found() -> web.Response:
    return web.Response(status=404, text="404: Not Found")


def metrics_page() -> web.Response:
    return web.Response(text=METRICS)


@pytest.fixture
def exporter() -> Callable[..., Any]:
    """``async with exporter(pages) as (fake, metrics_url)``."""

    @contextlib.asynccontextmanager
    async def start(pages: dict[str, Callable[[], web.Response]]) -> AsyncIterator[Any]:
        fake = FakeExporter(pages)
        async with serve(fake.app()) as url:
            yield fake, f"{url}/metrics"
        assert fake.unexpected == []

    return start


async def test_guard_view_read_the_view(exporter: Any) -> None:
    async with exporter({"/eviction-guard": json_page(view())}) as (fake, url):
        signals = await read_signals(url, timeout_seconds=10.0, now=NOW)
    assert fake.requests == ["/eviction-guard"]
    assert signals.source == "view"
    assert signals.generated_at == NOW
    assert signals.congested
    assert signals.congestion_evaluated
    assert signals.congestion_reasons == (
        "apiserver-1:apf_rejections_node_high",
        "apiserver-1:ratio_429",
    )
    assert (signals.nodes, signals.wave_nodes, signals.wave_ratio, signals.wave_zones) == (
        10,
        4,
        0.4,
        2,
    )
    assert signals.grace_seconds == 50.0
    assert signals.stale_nodes == ("node-9", "node-1", "node-3", "node-2", "node-4", "node-5")
    # At or after the wave's start: the members and node-5 (stale later), not node-9.
    assert signals.wave_nodes_named == ("node-1", "node-2", "node-3", "node-4", "node-5")


async def test_guard_view_read_falls_back_to_metrics_on_404(
    exporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pages = {"/eviction-guard": not_found, "/metrics": metrics_page}
    with caplog.at_level(logging.WARNING, logger="kubeballast.remediations.evictionguard"):
        async with exporter(pages) as (fake, url):
            first = await read_signals(url, timeout_seconds=10.0, now=NOW)
            second = await read_signals(url, timeout_seconds=10.0, now=NOW)
    assert fake.requests == ["/eviction-guard", "/metrics"] * 2
    assert first == second
    assert first.source == "metrics"
    assert first.generated_at is None
    assert (first.wave_nodes, first.wave_ratio, first.nodes) == (2, 0.2, 10)
    assert first.congestion_reasons == ("apiserver-1:ratio_429",)
    assert first.wave_nodes_named == ("node-1", "node-2")
    # Said once, not at every check.
    fallbacks = [r for r in caplog.records if "parsing its /metrics instead" in r.getMessage()]
    assert len(fallbacks) == 1
    assert "HTTP 404" in fallbacks[0].getMessage()


async def test_guard_view_read_unknown_version_falls_back(exporter: Any) -> None:
    pages = {
        "/eviction-guard": json_page(view(version=2, wave="changed")),
        "/metrics": metrics_page,
    }
    async with exporter(pages) as (fake, url):
        signals = await read_signals(url, timeout_seconds=10.0, now=NOW)
    assert fake.requests == ["/eviction-guard", "/metrics"]
    assert signals.source == "metrics"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "is malformed: JSON is malformed"),
        (b"", "is malformed"),
        (json.dumps(view(wave={**view()["wave"], "ratio": "high"})).encode(), "`$.wave.ratio`"),
        (json.dumps(view(stale=[["node-1", 90.0]])).encode(), "`$.stale[0]`"),
        (
            json.dumps(view(wave={**view()["wave"], "stale_from": 6})).encode(),
            "wave.stale_from 6 is not an index of stale (6 nodes)",
        ),
        (json.dumps(view(congestion=None)).encode(), "`$.congestion`"),
        (json.dumps([1, 2]).encode(), "is malformed"),
        (json.dumps(view(kind="something-else")).encode(), "not an eviction-guard view"),
        (json.dumps(view(wave=None)).encode(), "synced without wave"),
        (json.dumps(view(synced=False)).encode(), "not synced yet"),
    ],
    ids=[
        "not-json",
        "empty",
        "wrong-type",
        "not-a-name",
        "index-out-of-range",
        "null-list",
        "not-an-object",
        "wrong-kind",
        "missing-wave",
        "not-synced",
    ],
)
async def test_guard_view_read_fails_closed_on_a_bad_view(
    exporter: Any, body: bytes, reason: str
) -> None:
    async with exporter({"/eviction-guard": json_page(body)}) as (fake, url):
        with pytest.raises(SignalsUnavailableError) as error:
            await read_signals(url, timeout_seconds=10.0, now=NOW)
    assert reason in str(error.value)
    # A bad view is not an old exporter: /metrics is not read instead.
    assert fake.requests == ["/eviction-guard"]


async def test_guard_view_read_fails_closed_on_a_server_error(exporter: Any) -> None:
    pages = {"/eviction-guard": json_page({"error": "the cluster-state families are missing"}, 503)}
    async with exporter(pages) as (fake, url):
        with pytest.raises(SignalsUnavailableError, match="answered HTTP 503"):
            await read_signals(url, timeout_seconds=10.0)
    assert fake.requests == ["/eviction-guard"]


@pytest.mark.parametrize(
    ("configured", "derived"),
    [
        ("http://exporter:9808/metrics", "http://exporter:9808/eviction-guard"),
        ("https://exporter.ns.svc:9808/metrics?x=1", "https://exporter.ns.svc:9808/eviction-guard"),
        ("http://proxy/kube-ballast/metrics", "http://proxy/kube-ballast/eviction-guard"),
        ("http://exporter:9808", "http://exporter:9808/eviction-guard"),
    ],
)
def test_guard_view_read_url(configured: str, derived: str) -> None:
    assert view_url(configured) == derived


# --- the action's check fails closed: no pause -------------------------------------------


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[Any]:
    settings = SimulatorSettings(
        host="127.0.0.1",
        port=0,
        kubelets=False,
        controllers=False,
        scenario=ScenarioSettings(nodes=3, zones=3, pods_per_node=1, seed=3),
    )
    server: ApiServer = build_server(settings)
    await server.start()
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, server.url, server.admin_token)
    api = await kube_client(KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)), "test")
    try:
        yield api
    finally:
        await api.close()
        await server.stop()


class _Clock:
    def time(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return 0.0


def storm_alert() -> Alert:
    return Alert(
        status="firing",
        labels={"alertname": "KubeNodeHeartbeatStorm", "severity": "critical"},
        annotations={},
        starts_at=datetime.datetime.now(tz=datetime.UTC),
        ends_at=None,
        generator_url="http://prometheus.invalid/graph",
        fingerprint="storm-0001",
    )


async def test_guard_view_read_check_refuses_on_a_malformed_view(exporter: Any, kube: Any) -> None:
    async with exporter({"/eviction-guard": json_page(b'{"kind": "kube-ballast/eviction')}) as (
        _fake,
        url,
    ):
        guard = EvictionGuard(EvictionGuardConfig(exporter_url=url))
        ctx = ActionContext(
            kube=kube,
            clock=_Clock(),  # type: ignore[arg-type]
            identity="receiver-0",
            dry_run=False,
            log=logging.LoggerAdapter(logging.getLogger("test")),
        )
        verdict = await guard.check(ctx, storm_alert())
    assert not verdict.ok
    assert "eviction-guard view" in verdict.reason
    assert "malformed" in verdict.reason
    assert await eg.read_pause(kube) is None
