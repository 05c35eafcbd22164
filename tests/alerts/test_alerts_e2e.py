"""End to end on loopback: a congestion wave, from the simulator to a webhook.

The simulator (12 nodes in 3 zones, its kubelets renewing their Leases in-process at a
clock factor of 20, so the 50 s grace period is 2.5 real seconds) is congested so that
every heartbeat is rejected. The exporter (the default catalog, served over HTTP)
watches it and probes its /metrics; a real Prometheus scrapes the exporter every second
and evaluates the repository's rules (alerts/*.yaml) every second; a real Alertmanager
runs the example configuration (alerts/alertmanager/alertmanager.yml) and delivers to a
webhook in the test. The test checks issue 6's "Done when": KubeNodeHeartbeatStorm
arrives as ONE group (per receiver: it is routed both to kube-ballast and, being
critical, to oncall), and per-node alerts (KubeNodeNotReady, pushed straight to
Alertmanager as kubernetes-mixin would send them) are inhibited, never delivered.

What the test changes, and why:

- The exporter's cluster-state collector reads the simulator's clock instead of the
  wall clock (Lease renewTimes are simulated time); everything else is the default
  catalog's, built with ``build_exporter``.
- The rule files are copied with KubeNodeHeartbeatStorm's ``for: 1m`` shortened to
  ``for: 5s`` by one regex substitution (``_shorten_storm_for``) restricted to that
  rule; every other rule is the repository's own.
- Alertmanager's configuration is the example with only what a test must change (as in
  test_alerts_alertmanager.py): the receivers' URLs point at the local webhook, the
  token file is a temporary one, and the first delivery waits 1 s (``group_wait``)
  instead of 10-30 s. Routing, grouping and inhibition are the example's own.
- The apiserver congestion verdict needs 429s on the apiserver's /metrics, and the
  in-process kubelets' rejections do not go over HTTP: the test renews node-0000's
  Lease over HTTP as ``system:node:node-0000`` (APF level node-high) throughout, and
  those renewals are rejected like the kubelets' (and counted).

Prometheus and Alertmanager are required: the test fails, it does not skip, when they
are missing. Nothing sleeps to synchronise: every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from loopback import (
    catalog_on_simulated_clock,
    exporter_on_simulator,
    free_port,
    poll,
    renew_lease_over_http,
    require,
    serve,
)
from loopback import process as run_process

from kubeballast.exporter.app import build_exporter
from kubeballast.simulator.faults import Congestion
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((REPO_ROOT / "alerts").glob("*.yaml"))
ALERTMANAGER_EXAMPLE = REPO_ROOT / "alerts" / "alertmanager" / "alertmanager.yml"
PROMETHEUS = Path("/usr/bin/prometheus")
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")

CLUSTER = "e2e"
"""Prometheus' external label ``cluster``, which the grouping and inhibition use."""
STORM = "KubeNodeHeartbeatStorm"
STORM_FOR = "5s"
RECEIVER_TOKEN = "test-token-of-the-receiver"
NODE_TOKEN = "token-node-0"
NOT_READY_NODES = ("node-0001", "node-0002", "node-0004", "node-0005")
BARRIER = "E2eDeliveryBarrier"
DEADLINE_SECONDS = 60.0
"""Each wait's deadline. On an idle machine the whole test takes about 20 s; a loaded
two-core runner gets much longer before a wait gives up."""


# -- helpers -----------------------------------------------------------------------------


def _shorten_storm_for(text: str) -> str:
    """KubeNodeHeartbeatStorm's ``for:`` (the first after its ``alert:`` line, within
    the rule) set to STORM_FOR; the text is otherwise unchanged."""
    pattern = re.compile(r"(- alert: KubeNodeHeartbeatStorm\n(?:(?!\s*- alert:).*\n)*?\s+for: )\S+")
    shortened, count = pattern.subn(rf"\g<1>{STORM_FOR}", text)
    assert count <= 1
    return shortened


def _rule_files(into: Path) -> list[Path]:
    into.mkdir()
    copies, storms = [], 0
    for rule_file in RULES:
        text = rule_file.read_text()
        shortened = _shorten_storm_for(text)
        storms += shortened != text
        copy = into / rule_file.name
        copy.write_text(shortened)
        copies.append(copy)
    assert storms == 1, f"{STORM}'s for: was not found exactly once in {RULES}"
    return copies


@dataclass
class Webhook:
    """The local webhook: every delivery as (receiver path, body)."""

    url: str = ""
    deliveries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def to(self, receiver: str) -> list[dict[str, Any]]:
        return [body for path, body in self.deliveries if path == f"/{receiver}"]

    def with_alert(self, receiver: str, alertname: str) -> list[dict[str, Any]]:
        return [
            body
            for body in self.to(receiver)
            if any(a["labels"].get("alertname") == alertname for a in body["alerts"])
        ]


def _alertmanager_config(webhook: Webhook, token_file: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    config["route"]["group_wait"] = "1s"
    for route in config["route"]["routes"]:
        route.pop("group_wait", None)
    for receiver in config["receivers"]:
        if receiver["name"] == "kube-ballast":
            (hook,) = receiver["webhook_configs"]
            hook["url"] = f"{webhook.url}/kube-ballast"
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        else:
            for key in [key for key in receiver if key.endswith("_configs")]:
                del receiver[key]
            receiver["webhook_configs"] = [{"url": f"{webhook.url}/{receiver['name']}"}]
    return config


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    recorded = Webhook()

    async def receive(request: web.Request) -> web.Response:
        recorded.deliveries.append((request.path, await request.json()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{receiver}", receive)
    async with serve(app) as url:
        recorded.url = url
        yield recorded


@pytest.fixture
async def simulator() -> AsyncIterator[ApiServer]:
    scenario = ScenarioSettings(
        nodes=12,
        zones=3,
        pods_per_node=2,
        control_plane_nodes=1,
        seed=6,
        users={NODE_TOKEN: "system:node:node-0000"},  # APF level node-high
    )
    server = build_server(
        SimulatorSettings(
            host="127.0.0.1",
            port=0,
            kubelets=True,
            controllers=False,
            clock_factor=20.0,
            scenario=scenario,
        )
    )
    attach_control_plane(server)  # the kubelets (the controllers are not needed)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def exporter(simulator: ApiServer, tmp_path: Path) -> AsyncIterator[str]:
    """The exporter's application on loopback; yields its URL once it is ready."""
    token = tmp_path / "exporter-token"
    # A cluster admin (APF's exempt level), as a deployment arranges for the exporter:
    # the congestion never sheds its own watches and scrapes.
    token.write_text(simulator.admin_token + "\n")
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, simulator.url, simulator.admin_token)
    config = exporter_on_simulator(simulator.url, kubeconfig, token)
    app = build_exporter(
        config, catalog=catalog_on_simulated_clock(simulator.clock.time)
    ).create_app()
    async with serve(app) as url, aiohttp.ClientSession() as session:

        async def ready() -> bool:
            async with session.get(f"{url}/readyz") as response:
                return response.status == 200

        await poll(ready, "the exporter did not become ready", DEADLINE_SECONDS)
        yield url


@pytest.fixture
async def alertmanager(webhook: Webhook, tmp_path: Path) -> AsyncIterator[str]:
    require(ALERTMANAGER, "prometheus-alertmanager")
    token_file = tmp_path / "receiver-token"
    token_file.write_text(RECEIVER_TOKEN + "\n")
    config_file = tmp_path / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(_alertmanager_config(webhook, token_file)))
    port = free_port()
    args = [
        str(ALERTMANAGER),
        f"--config.file={config_file}",
        f"--storage.path={tmp_path / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    async with (
        run_process(args, tmp_path / "alertmanager.log") as process,
        aiohttp.ClientSession() as session,
    ):

        async def ready() -> bool:
            assert process.returncode is None, "Alertmanager exited (its log is printed)"
            async with session.get(f"{url}/-/ready") as response:
                return response.status == 200

        await poll(ready, "Alertmanager did not become ready", DEADLINE_SECONDS)
        yield url


@pytest.fixture
async def prometheus(exporter: str, alertmanager: str, tmp_path: Path) -> AsyncIterator[str]:
    require(PROMETHEUS, "prometheus")
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                    "external_labels": {"cluster": CLUSTER},
                },
                "rule_files": [str(path) for path in _rule_files(tmp_path / "rules")],
                "alerting": {
                    "alertmanagers": [
                        {"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}
                    ]
                },
                "scrape_configs": [
                    {
                        "job_name": "kube-ballast-exporter",
                        "static_configs": [{"targets": [exporter.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    args = [
        str(PROMETHEUS),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--rules.alert.resend-delay=1s",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    async with (
        run_process(args, tmp_path / "prometheus.log") as process,
        aiohttp.ClientSession() as session,
    ):

        async def ready() -> bool:
            assert process.returncode is None, "Prometheus exited (its log is printed)"
            async with session.get(f"{url}/-/ready") as response:
                return response.status == 200

        await poll(ready, "Prometheus did not become ready", DEADLINE_SECONDS)
        yield url


# -- the test ----------------------------------------------------------------------------


async def test_a_congestion_wave_is_one_storm_notification_and_mutes_the_nodes(
    simulator: ApiServer, prometheus: str, alertmanager: str, webhook: Webhook
) -> None:
    async with aiohttp.ClientSession() as session:

        async def query(expression: str) -> list[dict[str, Any]]:
            async with session.get(
                f"{prometheus}/api/v1/query", params={"query": expression}
            ) as response:
                payload = await response.json()
            assert payload["status"] == "success", payload
            result: list[dict[str, Any]] = payload["data"]["result"]
            return result

        async def am_alerts(alertname: str) -> list[dict[str, Any]]:
            async with session.get(
                f"{alertmanager}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'}
            ) as response:
                assert response.status == 200, await response.text()
                alerts: list[dict[str, Any]] = await response.json()
            return alerts

        # Before: every zone's Leases fresh, the congestion verdict evaluated and clear.
        async def healthy() -> bool:
            stale = await query("kubeballast_zone_lease_stale_ratio")
            verdict = await query(
                "kubeballast_apiserver_congested == 0"
                " and kubeballast_apiserver_congestion_evaluated == 1"
            )
            seen["zone_lease_stale_ratio"] = [
                (s["metric"].get("zone"), s["value"][1]) for s in stale
            ]
            seen["verdict_clear"] = bool(verdict)
            return len(stale) == 3 and all(s["value"][1] == "0" for s in stale) and bool(verdict)

        seen: dict[str, Any] = {}
        try:
            await poll(healthy, "Prometheus did not see a healthy cluster", DEADLINE_SECONDS)
        finally:
            print("last seen before the congestion:", seen)
        assert not webhook.with_alert("oncall", STORM)

        # The congestion: every heartbeat rejected, the kubelets' and ours.
        stop = asyncio.Event()
        renewals = asyncio.create_task(renew_lease_over_http(simulator.url, NODE_TOKEN, stop))
        simulator.faults.set_congestion(Congestion(reject_fraction=0.0, lease_reject_fraction=1.0))
        try:

            async def storm_in_alertmanager() -> list[dict[str, Any]]:
                return [a for a in await am_alerts(STORM) if a["status"]["state"] == "active"]

            (storm,) = await poll(
                storm_in_alertmanager, f"{STORM} did not reach Alertmanager", DEADLINE_SECONDS
            )
            assert storm["labels"]["cluster"] == CLUSTER

            # Per-node symptoms of the same cluster arrive while the storm fires.
            posted = [
                {
                    "labels": {
                        "alertname": "KubeNodeNotReady",
                        "cluster": CLUSTER,
                        "node": node,
                        "severity": "warning",
                    },
                    "annotations": {"summary": f"{node} is NotReady"},
                }
                for node in NOT_READY_NODES
            ]
            async with session.post(f"{alertmanager}/api/v2/alerts", json=posted) as response:
                assert response.status == 200, await response.text()

            async def inhibited() -> list[dict[str, Any]]:
                alerts = await am_alerts("KubeNodeNotReady")
                muted = [
                    a
                    for a in alerts
                    if a["status"]["state"] == "suppressed"
                    and storm["fingerprint"] in a["status"]["inhibitedBy"]
                ]
                return muted if len(muted) == len(NOT_READY_NODES) else []

            await poll(
                inhibited,
                "the KubeNodeNotReady alerts were not inhibited by the storm",
                DEADLINE_SECONDS,
            )

            # A barrier: an alert on the same route (group_wait 1 s), posted after the
            # NotReady alerts' group was created, so delivered after that group's first
            # flush, which must have sent nothing.
            barrier = [
                {
                    "labels": {"alertname": BARRIER, "cluster": CLUSTER, "severity": "info"},
                    "annotations": {"summary": "delivery barrier"},
                }
            ]
            async with session.post(f"{alertmanager}/api/v2/alerts", json=barrier) as response:
                assert response.status == 200, await response.text()

            async def delivered() -> bool:
                return bool(
                    webhook.with_alert("oncall", BARRIER)
                    and webhook.with_alert("oncall", STORM)
                    and webhook.with_alert("kube-ballast", STORM)
                )

            await poll(delivered, "the storm and the barrier were not delivered", DEADLINE_SECONDS)
        finally:
            stop.set()
            await renewals

        # The storm: ONE group per receiver, holding the one storm alert of the cluster.
        for receiver in ("kube-ballast", "oncall"):
            bodies = webhook.with_alert(receiver, STORM)
            assert {body["groupKey"] for body in bodies} == {bodies[0]["groupKey"]}, bodies
            for body in bodies:
                assert body["groupLabels"] == {"cluster": CLUSTER, "alertname": STORM}
                assert body["status"] == "firing"
                assert [a["labels"]["alertname"] for a in body["alerts"]] == [STORM]
                assert body["alerts"][0]["labels"]["cluster"] == CLUSTER
                assert body["alerts"][0]["labels"]["automation"] == "eviction-pause"
        # Nothing of the per-node alerts reached anyone.
        leaked = [
            (path, alert["labels"])
            for path, body in webhook.deliveries
            for alert in body["alerts"]
            if alert["labels"].get("alertname") == "KubeNodeNotReady"
        ]
        assert leaked == []
