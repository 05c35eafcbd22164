"""A real Prometheus scrapes the exporter, which probes a simulated cluster.

This is the contract with the other side of /metrics: Prometheus must accept every
scrape (no parse errors, target up), the series must be queryable by the names
docs/metrics.md promises, and ``promtool check metrics`` must have nothing to say about
a scrape body (its lint covers naming, units and help). Prometheus and promtool are
required: the test fails, it does not skip, when they are missing (``make test``
installs them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from loopback import PROMTOOL, free_port, poll, require, run_command, start_prometheus

from kubeballast.core.config import (
    ExporterConfig,
    KubernetesAccessConfig,
    ListenConfig,
    TargetConfig,
)
from kubeballast.exporter.server import run_exporter
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

DEADLINE_SECONDS = 90.0
"""Prometheus starts in a second or two on an idle machine; a loaded CI runner with two
cores gets much longer before the test gives up."""


@pytest.fixture
async def simulator() -> AsyncIterator[ApiServer]:
    scenario = ScenarioSettings(nodes=6, zones=3, pods_per_node=3, control_plane_nodes=1, seed=9)
    server = build_server(
        SimulatorSettings(
            host="127.0.0.1", port=0, kubelets=False, controllers=False, scenario=scenario
        )
    )
    attach_control_plane(server)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def exporter_url(simulator: ApiServer, tmp_path: Path) -> AsyncIterator[str]:
    """The exporter, run as ``kube-ballast exporter`` runs it, against the simulator."""
    token = tmp_path / "token"
    token.write_text(simulator.admin_token)
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, simulator.url, simulator.admin_token)

    def target(name: str, url: str) -> TargetConfig:
        return TargetConfig(name=name, url=url, bearer_token_file=str(token), interval_seconds=1.0)

    port = free_port()
    config = ExporterConfig(
        listen=ListenConfig(host="127.0.0.1", port=port),
        kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)),
        apiservers=(target("apiserver-1", simulator.url),),
        schedulers=(target("scheduler-1", simulator.components["kube-scheduler"].url),),
        controller_managers=(
            target("controller-manager-1", simulator.components["kube-controller-manager"].url),
        ),
    )
    task = asyncio.create_task(run_exporter(config), name="exporter-under-test")
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                if task.done():
                    task.result()  # the exporter died: show why
                async with session.get(f"{url}/readyz") as response:
                    return response.status == 200

            await poll(ready, "the exporter did not become ready", DEADLINE_SECONDS)
        yield url
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def prometheus(exporter_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """Prometheus on loopback scraping the exporter every second; yields its URL."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "kube-ballast",
                "static_configs": [{"targets": [exporter_url.removeprefix("http://")]}],
            }
        ],
    }
    async with start_prometheus(tmp_path, config, within=DEADLINE_SECONDS) as url:
        yield url


async def test_prometheus_scrapes_the_exporter_and_queries_its_metrics(
    prometheus: str, exporter_url: str
) -> None:
    async with aiohttp.ClientSession() as session:

        async def target_up() -> dict[str, Any] | None:
            async with session.get(f"{prometheus}/api/v1/targets") as response:
                if response.status != 200:
                    return None
                targets = (await response.json())["data"]["activeTargets"]
            healthy = [t for t in targets if t["health"] == "up"]
            return healthy[0] if healthy else None

        target = await poll(
            target_up, "Prometheus did not report the exporter up", DEADLINE_SECONDS
        )
        assert target["lastError"] == ""
        assert target["labels"]["job"] == "kube-ballast"

        async def query(expression: str) -> list[dict[str, Any]]:
            async with session.get(
                f"{prometheus}/api/v1/query", params={"query": expression}
            ) as response:
                assert response.status == 200
                payload = await response.json()
            assert payload["status"] == "success"
            result: list[dict[str, Any]] = payload["data"]["result"]
            return result

        async def build_info() -> list[dict[str, Any]]:
            return await query("kubeballast_build_info")

        (series,) = await poll(
            build_info, "kubeballast_build_info was not queryable", DEADLINE_SECONDS
        )
        assert series["metric"]["job"] == "kube-ballast"
        assert series["value"][1] == "1"
        # The exporter's own health counter is there from zero for every area.
        errors = await query("kubeballast_collector_errors_total")
        assert {s["metric"]["collector"] for s in errors} >= {"exporter"}
        assert all(s["value"][1] == "0" for s in errors)

        # The configured targets are probed, each source reporting its health.
        async def sources() -> list[dict[str, Any]]:
            return await query("kubeballast_source_up")

        health = await poll(sources, "kubeballast_source_up was not queryable", DEADLINE_SECONDS)
        # Prometheus' own instance label is the exporter; the source's is target.
        assert {s["metric"]["instance"] for s in health} == {exporter_url.removeprefix("http://")}
        assert not [s for s in health if "exported_instance" in s["metric"]]
        targets = {s["metric"]["target"] for s in health}
        assert {"apiserver-1", "scheduler-1", "controller-manager-1"} <= targets


async def test_promtool_has_nothing_to_say_about_a_scrape(exporter_url: str) -> None:
    require(PROMTOOL, "prometheus")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{exporter_url}/metrics") as response,
    ):
        assert response.status == 200
        body = await response.read()
    returncode, stdout, stderr = await run_command(
        [str(PROMTOOL), "check", "metrics"], stdin=body, within=DEADLINE_SECONDS
    )
    assert (returncode, (stdout + stderr).decode()) == (0, "")
