"""The whole simulated control plane over HTTP: what `kube-ballast simulate` runs.

Kubelets, the node-lifecycle controller and the scheduler / controller-manager
endpoints run beside the apiserver at a clock factor, and the tests look at them only
the way the product will: through the Kubernetes API, the components' own endpoints
and the control API.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from kubeballast.simulator.kubeconfig import api_client, write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import SimulatorSettings

Eventually = Callable[..., Awaitable[None]]

CLOCK_FACTOR = 20.0


@pytest.fixture
async def cluster(sim_settings: Callable[..., SimulatorSettings]) -> AsyncIterator[ApiServer]:
    server = build_server(sim_settings(kubelets=True, controllers=True, clock_factor=CLOCK_FACTOR))
    attach_control_plane(server)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def admin(cluster: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {cluster.admin_token}"}
    async with aiohttp.ClientSession(cluster.url, headers=headers) as session:
        yield session


async def state(admin: aiohttp.ClientSession) -> dict[str, Any]:
    async with admin.get("/_sim/state") as resp:
        assert resp.status == 200
        result: dict[str, Any] = await resp.json()
        return result


async def lease_renew_time(api: Any, namespace: str, name: str) -> datetime.datetime:
    lease = await client.CoordinationV1Api(api).read_namespaced_lease(name, namespace)
    renew: datetime.datetime = lease.spec.renew_time
    return renew


@pytest.fixture
async def api(cluster: ApiServer, tmp_path: Any) -> AsyncIterator[Any]:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, cluster.url, cluster.admin_token)
    api_client_ = await api_client(path)
    try:
        yield api_client_
    finally:
        await api_client_.close()


async def test_components_serve_their_endpoints_and_leader_leases(
    cluster: ApiServer, admin: aiohttp.ClientSession, api: Any, eventually: Eventually
) -> None:
    components = (await state(admin))["components"]
    assert set(components) == {"kube-scheduler", "kube-controller-manager"}
    async with aiohttp.ClientSession() as plain:
        for info in components.values():
            async with plain.get(f"{info['url']}/healthz") as resp:
                assert resp.status == 200

    async def leader_leases_renewed() -> bool:
        leases = await client.CoordinationV1Api(api).list_namespaced_lease("kube-system")
        held = {item.metadata.name: item.spec.holder_identity for item in leases.items}
        return all(
            str(held.get(name, "")).startswith(f"{name}-sim_")
            for name in ("kube-scheduler", "kube-controller-manager")
        )

    await eventually(leader_leases_renewed, within=30)


async def test_a_killed_scheduler_refuses_and_stops_renewing(
    cluster: ApiServer, admin: aiohttp.ClientSession, api: Any, eventually: Eventually
) -> None:
    url = (await state(admin))["components"]["kube-scheduler"]["url"]
    async with admin.post("/_sim/components", json={"name": "kube-scheduler", "alive": False}) as r:
        assert r.status == 200
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with plain.get(f"{url}/healthz"):
                pass
    assert (await state(admin))["components"]["kube-scheduler"]["leader"] is False
    async with admin.post("/_sim/components", json={"name": "nope", "alive": False}) as r:
        assert r.status == 400
        assert "name" in (await r.json())["message"]
    async with admin.post("/_sim/components", json={"name": "kube-scheduler", "alive": True}) as r:
        assert r.status == 200

    async def leader_again() -> bool:
        return bool((await state(admin))["components"]["kube-scheduler"]["leader"])

    await eventually(leader_again, within=30)


async def test_kubelets_renew_and_stopped_kubelets_go_unknown(
    cluster: ApiServer, admin: aiohttp.ClientSession, api: Any, eventually: Eventually
) -> None:
    first = await lease_renew_time(api, "kube-node-lease", "node-0000")

    async def renewed() -> bool:
        return await lease_renew_time(api, "kube-node-lease", "node-0000") > first

    await eventually(renewed, within=30)

    async with admin.post("/_sim/faults", json={"kubelets_stopped": {"nodes": ["node-0001"]}}) as r:
        assert r.status == 200
    core = client.CoreV1Api(api)

    async def unknown() -> bool:
        node = await core.read_node("node-0001")
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        taints = {(t.key, t.effect) for t in node.spec.taints or []}
        return (
            ready[0].status == "Unknown"
            and ("node.kubernetes.io/unreachable", "NoSchedule") in taints
        )

    # 50 simulated seconds of grace at 20x: 2.5 s; the deadline is generous for a loaded CI.
    await eventually(unknown, within=60)
    other = await core.read_node("node-0000")
    assert [c.status for c in other.status.conditions if c.type == "Ready"] == ["True"]
    zone_states = (await state(admin))["nodeLifecycle"]["zoneStates"]
    assert set(zone_states.values()) == {"Normal"}


async def test_apiserver_metrics_count_what_was_served(
    cluster: ApiServer, admin: aiohttp.ClientSession, api: Any
) -> None:
    await client.CoreV1Api(api).list_namespaced_pod("team-a")
    async with admin.get("/metrics") as resp:
        text = await resp.text()
    totals: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                key = (sample.labels["verb"], sample.labels["resource"], sample.labels["code"])
                totals[key] = totals.get(key, 0) + sample.value
    assert totals[("LIST", "pods", "200")] >= 1
