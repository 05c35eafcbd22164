"""Fixtures for driving the simulated apiserver over HTTP, as a real client would.

``apiserver`` is a live server on a free loopback port over a small generated cluster
(6 workers in 3 zones, 5 pods per node, one control-plane node) with no kubelets or
controllers, so nothing changes unless the test changes it. ``api`` is a
kubernetes-asyncio ``ApiClient`` configured from a kubeconfig the server wrote, the way
users connect; ``admin_session`` is a bare aiohttp session with the admin token for
checks on the wire format. Everything is closed at teardown (warnings are errors, and an
unclosed client session is a warning).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubeballast.simulator.kubeconfig import api_client, write_kubeconfig
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

USER_TOKENS = {
    "token-sa-tester": "system:serviceaccount:team-a:tester",
    "token-node-0": "system:node:node-0000",
    "token-alice": "alice",
}
"""Non-admin users of the small cluster: a service account, a kubelet, a plain user."""


def small_settings(**overrides: Any) -> SimulatorSettings:
    scenario = ScenarioSettings(
        nodes=6, zones=3, pods_per_node=5, control_plane_nodes=1, seed=7, users=USER_TOKENS
    )
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "kubelets": False,
        "controllers": False,
        "scenario": scenario,
    }
    values.update(overrides)
    return SimulatorSettings(**values)


@pytest.fixture
def sim_settings() -> Callable[..., SimulatorSettings]:
    """A factory of small-cluster settings, with keyword overrides (``history_seconds=``)."""
    return small_settings


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    server = build_server(small_settings())
    server.bookmark_interval = 0.2
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def kubeconfig(apiserver: ApiServer, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, apiserver.url, apiserver.admin_token)
    return path


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[Any]:
    client = await api_client(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


def _session(server: ApiServer, token: str | None) -> aiohttp.ClientSession:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return aiohttp.ClientSession(base_url=server.url, headers=headers)


@pytest.fixture
async def admin_session(apiserver: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with _session(apiserver, apiserver.admin_token) as session:
        yield session


@pytest.fixture
async def user_session(apiserver: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    """A non-exempt user (a service account): APF congestion applies to it."""
    async with _session(apiserver, "token-sa-tester") as session:
        yield session


@pytest.fixture
async def anonymous_session(apiserver: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with _session(apiserver, None) as session:
        yield session


Eventually = Callable[..., Awaitable[None]]


async def _eventually(
    check: Callable[[], Awaitable[bool]], within: float = 5.0, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(interval)


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(check)``: poll the async ``check`` until it returns true, failing
    after a deadline (5 real seconds by default). The way to wait for the server to get
    somewhere, instead of sleeping a guessed time."""
    return _eventually
