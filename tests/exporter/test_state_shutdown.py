"""The exporter owns its cluster-state caches: it starts them with its first refresh and
stops them when it shuts down, leaving no informer task or HTTP session behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubeballast.core.config import ExporterConfig, KubernetesAccessConfig
from kubeballast.exporter.app import build_exporter
from kubeballast.exporter.clusterstate import shared_cluster_state
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

Eventually = Callable[..., Awaitable[None]]


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    scenario = ScenarioSettings(nodes=6, zones=3, pods_per_node=3, control_plane_nodes=1)
    srv = build_server(SimulatorSettings(kubelets=False, controllers=False, scenario=scenario))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def informer_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("informer-")]


async def test_shutdown_stops_the_cluster_state(
    server: ApiServer, tmp_path: Path, local_server: Any, eventually: Eventually
) -> None:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, server.url, server.admin_token)
    config = ExporterConfig(kubernetes=KubernetesAccessConfig(kubeconfig_path=str(path)))
    exporter = build_exporter(config)
    state = shared_cluster_state(exporter.context)
    async with local_server(exporter.create_app()) as url, aiohttp.ClientSession() as client:

        async def ready() -> bool:
            async with client.get(f"{url}/readyz") as response:
                return response.status == 200

        await eventually(ready, within=60)
        await eventually(lambda: state.synced, within=60)
        assert state.started
        assert informer_tasks()
    # The app's cleanup ran: sources stopped, then the context closed the caches.
    assert not state.started
    assert informer_tasks() == []
