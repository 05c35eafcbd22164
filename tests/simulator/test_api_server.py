"""The server around the API: health endpoints, /version, /metrics, the /_sim control
API, request parsing, periodic compaction, supervised tasks, and the CLI entry point."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client as k8s
from multidict import MultiDict

from kubeballast.simulator.kubeconfig import api_client, write_kubeconfig
from kubeballast.simulator.resources import NAMESPACES, NODES
from kubeballast.simulator.server import (
    ApiServer,
    BackgroundTaskError,
    CompactionSchedule,
    build_server,
    parse_request_info,
    run_simulator,
    user_for,
)
from kubeballast.simulator.settings import SimulatorSettings

Eventually = Callable[..., Awaitable[None]]
"""The ``eventually`` fixture: ``await eventually(async_check)``."""
Settings = Callable[..., SimulatorSettings]
"""The ``sim_settings`` fixture: small-cluster settings with overrides."""

# -- health and version ------------------------------------------------------------------


async def test_health_endpoints(anonymous_session: aiohttp.ClientSession) -> None:
    for endpoint in ("livez", "readyz", "healthz"):
        async with anonymous_session.get(f"/{endpoint}") as resp:
            assert resp.status == 200
            assert await resp.text() == "ok"
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    async with anonymous_session.get("/readyz?verbose") as resp:
        text = await resp.text()
    lines = text.splitlines()
    assert lines[0] == "[+]ping ok"
    assert "[+]etcd ok" in lines
    assert "[+]informer-sync ok" in lines
    assert lines[-2] == "[+]shutdown ok"
    assert lines[-1] == "readyz check passed"
    async with anonymous_session.get("/livez?verbose") as resp:
        text = await resp.text()
    assert "[+]etcd ok" in text
    assert "shutdown" not in text
    assert text.endswith("livez check passed\n")


async def test_a_failing_check_fails_readyz(
    anonymous_session: aiohttp.ClientSession, admin_session: aiohttp.ClientSession
) -> None:
    async with admin_session.post("/_sim/readyz", json={"check": "etcd", "ok": False}) as resp:
        assert resp.status == 200
    async with anonymous_session.get("/readyz") as resp:
        assert resp.status == 500
        text = await resp.text()
    # Always verbose on failure, the reason withheld on the public endpoint.
    assert "[-]etcd failed: reason withheld\n" in text
    assert "[+]ping ok\n" in text
    assert text.endswith("readyz check failed\n")
    async with anonymous_session.get("/livez") as resp:
        assert resp.status == 500
    async with anonymous_session.get("/readyz/etcd") as resp:
        assert resp.status == 500
        assert (await resp.text()).startswith("internal server error: ")
    async with anonymous_session.get("/readyz/ping") as resp:
        assert await resp.text() == "ok"
    async with anonymous_session.get("/readyz?exclude=etcd&verbose") as resp:
        assert resp.status == 200
        assert "[+]etcd excluded: ok" in await resp.text()

    async with admin_session.post("/_sim/readyz", json={"check": "etcd", "ok": True}) as resp:
        assert resp.status == 200
    async with anonymous_session.get("/readyz") as resp:
        assert resp.status == 200
    async with admin_session.post("/_sim/readyz", json={"check": "nope", "ok": False}) as resp:
        assert resp.status == 400


async def test_version(api: Any) -> None:
    info = await k8s.VersionApi(api).get_code()
    assert info.git_version == "v1.31.0-kube-ballast-sim"
    assert (info.major, info.minor) == ("1", "31")
    assert info.platform == "linux/amd64"


async def test_metrics_follow_the_requests(api: Any, admin_session: aiohttp.ClientSession) -> None:
    core = k8s.CoreV1Api(api)
    await core.list_namespaced_pod("team-a")
    await core.create_namespaced_config_map("team-a", {"metadata": {"name": "counted"}})
    async with admin_session.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    assert (
        'apiserver_request_total{code="200",component="apiserver",dry_run="",group="",'
        'resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 1.0'
    ) in text
    assert 'resource="configmaps",scope="resource",subresource="",verb="POST"' in text
    assert 'apiserver_storage_objects{resource="pods"} 36.0' in text
    assert 'apiserver_flowcontrol_dispatched_requests_total{flow_schema="exempt"' in text
    assert "apiserver_current_inflight_requests" in text


# -- control API --------------------------------------------------------------------------


async def test_state_and_clock(admin_session: aiohttp.ClientSession, apiserver: ApiServer) -> None:
    async with admin_session.get("/_sim/state") as resp:
        state = await resp.json()
    assert state["revision"] == apiserver.store.resource_version
    assert state["counts"]["nodes"] == 7
    assert state["counts"]["flowschemas.flowcontrol.apiserver.k8s.io"] >= 2
    assert state["faults"]["congestion"] is None
    before = apiserver.clock.time()
    async with admin_session.post("/_sim/clock/advance", json={"seconds": 3600}) as resp:
        assert resp.status == 200
    assert apiserver.clock.time() - before >= 3600
    async with admin_session.post("/_sim/clock/advance", json={"seconds": -1}) as resp:
        assert resp.status == 400


async def test_kubelets_stopped_by_zone_fraction(
    admin_session: aiohttp.ClientSession, apiserver: ApiServer
) -> None:
    async with admin_session.post(
        "/_sim/faults", json={"kubelets_stopped": {"zones": ["zone-a"], "fraction": 1.0}}
    ) as resp:
        described = await resp.json()
    stopped = set(described["kubelets_stopped"])
    zone_of = {
        entry.name: entry.labels.get("topology.kubernetes.io/zone")
        for entry in apiserver.store.iter_current(NODES)
    }
    assert stopped
    assert stopped == {name for name, zone in zone_of.items() if zone == "zone-a"}
    assert all(apiserver.faults.kubelet_stopped(name) for name in stopped)


async def test_periodic_compaction_keeps_history_seconds(
    eventually: Eventually, sim_settings: Settings
) -> None:
    server = build_server(sim_settings(history_seconds=60.0))
    server.compaction_interval = 0.02
    await server.start()
    try:
        loaded = server.store.resource_version
        assert server.store.compacted_revision == loaded  # the bulk load is not replayable
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "history"}}
        server.registry.create(NAMESPACES, "", namespace, user_for("system:admin"))
        written = server.store.resource_version

        async def written_is_marked() -> bool:
            return any(rv >= written for _, rv in server.compaction._marks)

        await eventually(written_is_marked)
        # Less than history_seconds of simulated time has passed: nothing is compacted.
        assert server.store.compacted_revision == loaded
        server.clock.advance(61)

        async def compacted() -> bool:
            return server.store.compacted_revision >= written

        await eventually(compacted)
    finally:
        await server.stop()


def test_compaction_schedule() -> None:
    schedule = CompactionSchedule(history_seconds=300)
    assert schedule.mark(1000.0, 10) is None
    assert schedule.mark(1200.0, 20) is None
    assert schedule.mark(1299.0, 25) is None
    assert schedule.mark(1300.0, 30) == 10  # 1000 is exactly 300 s old
    assert schedule.mark(1550.0, 40) == 20  # the newest mark at least 300 s old (1200)
    assert schedule.mark(1551.0, 41) is None


# -- request parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/pods", {}, ("list", "", "pods", "", "", "")),
        ("GET", "/api/v1/pods", {"watch": "1"}, ("watch", "", "pods", "", "", "")),
        ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
        ("GET", "/api/v1/namespaces/a", {}, ("get", "", "namespaces", "a", "a", "")),
        (
            "PUT",
            "/api/v1/namespaces/a/status",
            {},
            ("update", "", "namespaces", "a", "a", "status"),
        ),
        ("POST", "/api/v1/namespaces/a/pods", {}, ("create", "", "pods", "a", "", "")),
        (
            "PATCH",
            "/api/v1/namespaces/status/pods/p/status",
            {},
            ("patch", "", "pods", "status", "p", "status"),
        ),
        ("DELETE", "/api/v1/namespaces/a/pods", {}, ("deletecollection", "", "pods", "a", "", "")),
        ("DELETE", "/api/v1/nodes/n", {}, ("delete", "", "nodes", "", "n", "")),
        (
            "GET",
            "/apis/apps/v1/namespaces/a/deployments",
            {"watch": "true"},
            ("watch", "apps", "deployments", "a", "", ""),
        ),
        (
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/x/leases/l",
            {},
            ("get", "coordination.k8s.io", "leases", "x", "l", ""),
        ),
    ],
)
def test_request_info(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    info = parse_request_info(method, path, MultiDict(query))
    assert info.is_resource_request
    got = (
        info.verb,
        info.api_group,
        info.resource,
        info.namespace,
        info.name,
        info.subresource,
    )
    assert got == expected


@pytest.mark.parametrize("path", ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1"])
def test_discovery_paths_are_not_resource_requests(path: str) -> None:
    info = parse_request_info("GET", path, MultiDict())
    assert not info.is_resource_request
    assert info.verb == "get"


# -- lifecycle ----------------------------------------------------------------------------


async def test_a_dying_background_task_stops_the_server(sim_settings: Settings) -> None:
    server = build_server(sim_settings())

    async def doomed() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("kubelet crashed")

    server.add_background(doomed, name="doomed")
    await server.start()
    url = server.url
    with pytest.raises(BackgroundTaskError, match="doomed"):
        await asyncio.wait_for(server.wait(), timeout=10)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{url}/livez")


async def test_background_tasks_are_cancelled_on_stop(sim_settings: Settings) -> None:
    server = build_server(sim_settings())
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await server.start()
    server.add_background(forever, name="forever")  # added after start: runs at once
    await asyncio.wait_for(started.wait(), timeout=5)
    await server.stop()
    assert cancelled.is_set()
    await asyncio.wait_for(server.wait(), timeout=1)  # a clean stop raises nothing


async def test_stop_ends_open_watches(apiserver: ApiServer, eventually: Eventually) -> None:
    async with aiohttp.ClientSession(
        base_url=apiserver.url, headers={"Authorization": f"Bearer {apiserver.admin_token}"}
    ) as session:
        resp = await session.get("/api/v1/nodes?watch=true&timeoutSeconds=600")
        async with resp:

            async def watching() -> bool:
                return int(apiserver.state()["watchers"]) == 1

            await eventually(watching)
            stopper = asyncio.create_task(apiserver.stop())
            rest = await asyncio.wait_for(resp.content.read(), timeout=10)
            assert rest.count(b'"type":"ADDED"') == 7  # the initial nodes, then the end
            await asyncio.wait_for(stopper, timeout=10)


async def test_run_simulator_serves_until_cancelled(
    tmp_path: Path, eventually: Eventually, sim_settings: Settings
) -> None:
    kubeconfig = tmp_path / "sim" / "kubeconfig"
    task = asyncio.create_task(run_simulator(sim_settings(kubeconfig_path=str(kubeconfig))))

    async def written() -> bool:
        return kubeconfig.exists()

    try:
        await eventually(written, within=30)
        assert stat.S_IMODE(os.stat(kubeconfig).st_mode) == 0o600
        client = await api_client(kubeconfig)
        try:
            nodes = await k8s.CoreV1Api(client).list_node()
            assert len(nodes.items) == 7
        finally:
            await client.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.done()


def test_kubeconfig_is_standard(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    write_kubeconfig(path, "http://127.0.0.1:1234", "s3cret", user="me")
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "Config"
    context = doc["contexts"][0]
    assert doc["current-context"] == context["name"]
    assert context["context"]["user"] == "me"
    cluster = doc["clusters"][0]
    assert cluster["name"] == context["context"]["cluster"]
    assert cluster["cluster"]["server"] == "http://127.0.0.1:1234"
    assert doc["users"][0] == {"name": "me", "user": {"token": "s3cret"}}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
