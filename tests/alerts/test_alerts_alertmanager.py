"""The example Alertmanager configuration, run by a real Alertmanager on loopback.

The configuration under test is alerts/alertmanager/alertmanager.yml with only what a
test must change: the receivers' URLs point at a local webhook that records what it
gets, the token file is a temporary one, and the first delivery waits 1 s instead of
10-30 s. Routing, grouping and inhibition are the example's own. Alertmanager is
required: the test fails, it does not skip, when the binary is missing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "alerts" / "alertmanager" / "alertmanager.yml"
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
TOKEN = "test-token-of-the-receiver"
DEADLINE_SECONDS = 60.0


@dataclass
class Webhook:
    """A local webhook recording every delivery: (path, Authorization header, body)."""

    url: str = ""
    deliveries: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    def to(self, path: str) -> list[dict[str, Any]]:
        return [body for where, _, body in self.deliveries if where == path]


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    recorded = Webhook()

    async def receive(request: web.Request) -> web.Response:
        body = await request.json()
        recorded.deliveries.append((request.path, request.headers.get("Authorization"), body))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{path}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorded.url = f"http://127.0.0.1:{port}"
    try:
        yield recorded
    finally:
        await runner.cleanup()


def _config(webhook: Webhook, token_file: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    config["route"]["group_wait"] = "1s"
    for route in config["route"]["routes"]:
        route.pop("group_wait", None)
    for receiver in config["receivers"]:
        if receiver["name"] == "kube-ballast":
            (hook,) = receiver["webhook_configs"]
            assert hook["http_config"]["authorization"]["credentials_file"].startswith("/")
            hook["url"] = f"{webhook.url}/kube-ballast"
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        else:
            # People's integrations (chat, paging) replaced by the recording webhook.
            for key in [key for key in receiver if key.endswith("_configs")]:
                del receiver[key]
            receiver["webhook_configs"] = [{"url": f"{webhook.url}/{receiver['name']}"}]
    return config


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook, free_port: int) -> Iterator[str]:
    if not ALERTMANAGER.exists():
        pytest.fail(f"{ALERTMANAGER} is missing: install prometheus-alertmanager (`make test`)")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config_file = tmp_path / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(_config(webhook, token_file)))
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            str(ALERTMANAGER),
            f"--config.file={config_file}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{free_port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{free_port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def _until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            result = await check()
        except aiohttp.ClientError:
            result = None
        if result:
            return result
        await asyncio.sleep(0.1)
    pytest.fail(f"{what} within {DEADLINE_SECONDS:g} s")


def _alert(**labels: str) -> dict[str, Any]:
    return {"labels": labels, "annotations": {"summary": labels["alertname"]}}


async def _post(session: aiohttp.ClientSession, base: str, alerts: list[dict[str, Any]]) -> None:
    async with session.post(f"{base}/api/v2/alerts", json=alerts) as response:
        assert response.status == 200, await response.text()


async def _ready(session: aiohttp.ClientSession, base: str) -> None:
    async def ready() -> bool:
        async with session.get(f"{base}/-/ready") as response:
            return response.status == 200

    await _until(ready, "Alertmanager ready")


async def test_a_storm_reaches_the_receiver_as_one_authenticated_notification(
    alertmanager: str, webhook: Webhook
) -> None:
    storm = [
        _alert(
            alertname="KubeApiserverCongested",
            cluster="prod",
            severity="critical",
            automation="eviction-pause",
            target=f"apiserver-{n}",
            reason="apf_rejections_node_high",
        )
        for n in range(25)
    ]
    unautomated = [
        _alert(
            alertname="KubeNetworkPluginZoneDown",
            cluster="prod",
            severity="critical",
            automation="none",
            zone=f"zone-{n}",
        )
        for n in range(3)
    ]
    async with aiohttp.ClientSession() as session:
        await _ready(session, alertmanager)
        await _post(session, alertmanager, storm + unautomated)

        async def delivered() -> bool:
            names = {body["groupLabels"]["alertname"] for body in webhook.to("/oncall")}
            return bool(webhook.to("/kube-ballast")) and len(names) == 2

        await _until(delivered, "notifications to the receiver and to people")

    (notification,) = webhook.to("/kube-ballast")
    assert notification["groupLabels"] == {"cluster": "prod", "alertname": "KubeApiserverCongested"}
    assert len(notification["alerts"]) == 25
    assert {alert["labels"]["target"] for alert in notification["alerts"]} == {
        f"apiserver-{n}" for n in range(25)
    }
    authorizations = {auth for path, auth, _ in webhook.deliveries if path == "/kube-ballast"}
    assert authorizations == {f"Bearer {TOKEN}"}
    # People get both groups, each as one notification, without the token.
    sizes = {
        body["groupLabels"]["alertname"]: len(body["alerts"]) for body in webhook.to("/oncall")
    }
    assert sizes == {"KubeApiserverCongested": 25, "KubeNetworkPluginZoneDown": 3}
    assert {auth for path, auth, _ in webhook.deliveries if path == "/oncall"} == {None}


async def test_a_control_plane_incident_mutes_the_per_node_symptoms_it_causes(
    alertmanager: str,
) -> None:
    sources = [
        _alert(
            alertname="KubeApiserverCongested",
            cluster="prod",
            severity="critical",
            automation="eviction-pause",
            target="apiserver-1",
            reason="apf_rejections_node_high",
        ),
        # alerts/etcd.yaml. Its `cluster` label is the Kubernetes cluster's (Prometheus'
        # external label); the etcd cluster's name is `etcd_cluster`.
        _alert(
            alertname="EtcdNoLeader",
            cluster="staging",
            etcd_cluster="main",
            severity="critical",
            member="10.0.0.11:2379",
        ),
    ]
    symptoms = [
        _alert(alertname="KubeNodeNotReady", cluster="prod", severity="warning", node=f"node-{n}")
        for n in range(40)
    ]
    symptoms += [
        _alert(alertname="TargetDown", cluster="staging", severity="warning", job="kubelet"),
        # alerts/cluster-state.yaml's few-node-failures alert is the same symptom.
        _alert(alertname="KubeNodeHeartbeatsMissing", cluster="prod", severity="warning"),
        # Another cluster's nodes are not explained by this cluster's apiserver.
        _alert(alertname="KubeNodeNotReady", cluster="other", severity="warning", node="node-1"),
    ]
    async with aiohttp.ClientSession() as session:
        await _ready(session, alertmanager)
        await _post(session, alertmanager, sources + symptoms)

        async def statuses() -> dict[tuple[str, str, str], list[str]] | None:
            async with session.get(f"{alertmanager}/api/v2/alerts") as response:
                alerts = json.loads(await response.text())
            found = {
                (
                    a["labels"]["alertname"],
                    a["labels"]["cluster"],
                    a["labels"].get("node", ""),
                ): a["status"]["inhibitedBy"]
                for a in alerts
            }
            inhibited = [key for key, by in found.items() if by]
            complete = len(found) == len(sources + symptoms) and len(inhibited) >= 42
            return found if complete else None

        found = await _until(statuses, "the symptoms inhibited")

    muted = sorted(key for key, by in found.items() if by)
    assert muted == sorted(
        [("KubeNodeNotReady", "prod", f"node-{n}") for n in range(40)]
        + [("TargetDown", "staging", ""), ("KubeNodeHeartbeatsMissing", "prod", "")]
    )
    assert found[("KubeNodeNotReady", "other", "node-1")] == []
    assert found[("KubeApiserverCongested", "prod", "")] == []
    assert found[("EtcdNoLeader", "staging", "")] == []


async def test_an_etcd_without_leader_mutes_its_kubernetes_clusters_node_symptoms(
    alertmanager: str,
) -> None:
    # EtcdNoLeader alone, as Prometheus sends it: the exporter's series name the etcd
    # cluster `etcd_cluster`, and `cluster` is the Kubernetes cluster's external label
    # (Prometheus adds it because the alert does not carry one already).
    source = _alert(
        alertname="EtcdNoLeader",
        cluster="prod",
        etcd_cluster="main",
        severity="critical",
        automation="none",
        member="10.0.0.11:2379",
    )
    symptoms = [
        _alert(alertname="KubeNodeNotReady", cluster="prod", severity="warning", node=f"node-{n}")
        for n in range(5)
    ]
    symptoms += [
        # Another Kubernetes cluster's nodes are not explained by prod's etcd.
        _alert(alertname="KubeNodeNotReady", cluster="other", severity="warning", node="node-1"),
        # Nor by a Kubernetes cluster that happens to share the etcd cluster's name.
        _alert(alertname="KubeNodeNotReady", cluster="main", severity="warning", node="node-1"),
    ]
    async with aiohttp.ClientSession() as session:
        await _ready(session, alertmanager)
        await _post(session, alertmanager, [source, *symptoms])

        async def statuses() -> dict[tuple[str, str, str], list[str]] | None:
            async with session.get(f"{alertmanager}/api/v2/alerts") as response:
                alerts = json.loads(await response.text())
            found = {
                (
                    a["labels"]["alertname"],
                    a["labels"]["cluster"],
                    a["labels"].get("node", ""),
                ): a["status"]["inhibitedBy"]
                for a in alerts
            }
            inhibited = [key for key, by in found.items() if by]
            complete = len(found) == 1 + len(symptoms) and len(inhibited) >= 5
            return found if complete else None

        found = await _until(statuses, "the symptoms inhibited")

    sources = {
        fingerprint
        for key, by in found.items()
        if key[0] == "KubeNodeNotReady"
        for fingerprint in by
    }
    assert len(sources) == 1  # one source mutes them all: EtcdNoLeader
    muted = sorted(key for key, by in found.items() if by)
    assert muted == sorted(("KubeNodeNotReady", "prod", f"node-{n}") for n in range(5))
    assert found[("KubeNodeNotReady", "other", "node-1")] == []
    assert found[("KubeNodeNotReady", "main", "node-1")] == []
    assert found[("EtcdNoLeader", "prod", "")] == []
