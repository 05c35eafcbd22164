"""The list+watch cache against the simulated apiserver: sync, changes, and the faults
it must ride out without losing or double-counting objects.

The informer connects as a service account, so API Priority and Fairness (the
simulator's congestion fault) applies to it, while the test changes the cluster as the
admin, which is exempt. Nothing sleeps to synchronise: tests poll for the state they
expect with a deadline (``eventually``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kubeballast.core.config import KubernetesAccessConfig
from kubeballast.core.kube import KubeClientProvider
from kubeballast.exporter.contract import SourceError
from kubeballast.exporter.informer import (
    Informer,
    InformerCollector,
    KubeHttp,
    ResourceSpec,
    check_health,
)
from kubeballast.exporter.projections import (
    NodeP,
    PodP,
    RawNode,
    RawPod,
    decode_node,
    decode_pod,
)
from kubeballast.simulator import resources
from kubeballast.simulator.faults import Congestion
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

EXPORTER_TOKEN = "token-state-exporter"
PODS = ResourceSpec("pods", "v1", "pods", RawPod, decode_pod)
NODES = ResourceSpec("nodes", "v1", "nodes", RawNode, decode_node)


def state_settings(**overrides: Any) -> SimulatorSettings:
    scenario = ScenarioSettings(
        nodes=30,
        zones=3,
        pods_per_node=10,
        control_plane_nodes=1,
        seed=11,
        users={EXPORTER_TOKEN: "system:serviceaccount:monitoring:kube-ballast"},
    )
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "kubelets": True,
        "controllers": False,
        "clock_factor": 20.0,
        "scenario": scenario,
    }
    values.update(overrides)
    return SimulatorSettings(**values)


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    srv = build_server(state_settings())
    srv.bookmark_interval = 0.2
    attach_control_plane(srv)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def http(server: ApiServer, tmp_path: Path) -> AsyncIterator[KubeHttp]:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, server.url, EXPORTER_TOKEN)
    provider = KubeClientProvider(KubernetesAccessConfig(kubeconfig_path=path))
    client = await KubeHttp.from_provider(provider)
    try:
        yield client
    finally:
        await client.close()
        await provider.close()


@pytest.fixture
async def admin(server: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with aiohttp.ClientSession(server.url, headers=headers) as session:
        yield session


class Recorder:
    """A handler that replays the callbacks into its own store, to check that they
    alone reproduce the informer's state (what the aggregates rely on)."""

    def __init__(self) -> None:
        self.store: dict[str, Any] = {}
        self.calls: Counter[str] = Counter()
        self.errors: list[str] = []

    @staticmethod
    def key(p: Any) -> str:
        return f"{p.namespace}/{p.name}" if getattr(p, "namespace", "") else str(p.name)

    def on_add(self, new: Any) -> None:
        self.calls["add"] += 1
        if self.key(new) in self.store:
            self.errors.append(f"add of a known object {self.key(new)}")
        self.store[self.key(new)] = new

    def on_update(self, old: Any, new: Any) -> None:
        self.calls["update"] += 1
        if self.store.get(self.key(old)) != old:
            self.errors.append(f"update from a state not seen {self.key(old)}")
        self.store[self.key(new)] = new

    def on_delete(self, old: Any) -> None:
        self.calls["delete"] += 1
        if self.store.pop(self.key(old), None) is None:
            self.errors.append(f"delete of an unknown object {self.key(old)}")


@pytest.fixture
async def run_informer() -> AsyncIterator[Callable[..., Any]]:
    tasks: list[asyncio.Task[Any]] = []

    def start(spec: ResourceSpec[Any, Any], http: KubeHttp, **options: Any) -> Informer[Any, Any]:
        options.setdefault("rng", random.Random(3))
        informer: Informer[Any, Any] = Informer(spec, http, **options)
        recorder = Recorder()
        informer.add_handler(recorder)
        informer.recorder = recorder  # type: ignore[attr-defined]
        tasks.append(asyncio.create_task(informer.run()))
        return informer

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task


def store_pod_keys(server: ApiServer) -> set[str]:
    return {f"{e.namespace}/{e.name}" for e in server.store.iter_current(resources.PODS)}


def store_pods_per_node(server: ApiServer) -> Counter[str]:
    return Counter(
        e.obj()["spec"].get("nodeName", "") for e in server.store.iter_current(resources.PODS)
    )


def informer_pods_per_node(informer: Informer[Any, PodP]) -> Counter[str]:
    return Counter(p.node_name for p in informer.items().values())


def consistent(server: ApiServer, informer: Informer[Any, PodP]) -> bool:
    """The cache, and the store the callbacks built, equal the simulator's pods."""
    recorder: Recorder = informer.recorder  # type: ignore[attr-defined]
    keys = store_pod_keys(server)
    return (
        set(informer.items()) == keys
        and set(recorder.store) == keys
        and informer_pods_per_node(informer) == store_pods_per_node(server)
    )


async def create_pod(admin: aiohttp.ClientSession, name: str, node: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a", "labels": {"app": "state-test"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }
    async with admin.post("/api/v1/namespaces/team-a/pods", json=body) as resp:
        assert resp.status == 201, await resp.text()


async def delete_pod(admin: aiohttp.ClientSession, namespace: str, name: str) -> None:
    # Grace period 0: gone at once, not left Terminating for the kubelet to finish.
    async with admin.delete(
        f"/api/v1/namespaces/{namespace}/pods/{name}", params={"gracePeriodSeconds": "0"}
    ) as resp:
        assert resp.status == 200, await resp.text()


# -- sync --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["list", "watchlist", "auto"])
async def test_state_initial_sync_matches_the_store(
    server: ApiServer,
    http: KubeHttp,
    run_informer: Callable[..., Informer[Any, Any]],
    eventually: Any,
    mode: str,
) -> None:
    # A page size far below the pod count: the sync must follow continue tokens.
    pods = run_informer(PODS, http, mode=mode, page_size=37)
    nodes = run_informer(NODES, http, mode=mode, page_size=7)
    await asyncio.wait_for(asyncio.gather(pods.wait_synced(), nodes.wait_synced()), 20)

    assert set(pods.items()) == store_pod_keys(server)
    assert len(pods.items()) == server.store.count(resources.PODS) > 300
    assert informer_pods_per_node(pods) == store_pods_per_node(server)
    assert {n.name for n in nodes.items().values()} == {
        e.name for e in server.store.iter_current(resources.NODES)
    }
    assert pods.recorder.calls["add"] == len(pods.items())  # type: ignore[attr-defined]
    assert pods.status().relists == {"initial": 1, "gone": 0}
    expected_mode = "list" if mode == "list" else "watchlist"
    assert pods.mode == expected_mode
    # The caches keep following: lease-driven node status, kubelets' pod updates.
    await eventually(lambda: consistent(server, pods))


async def test_state_creates_deletes_and_updates_are_reflected(
    server: ApiServer,
    http: KubeHttp,
    admin: aiohttp.ClientSession,
    run_informer: Callable[..., Informer[Any, Any]],
    eventually: Any,
) -> None:
    pods = run_informer(PODS, http, mode="list")
    nodes = run_informer(NODES, http, mode="list")
    await asyncio.wait_for(asyncio.gather(pods.wait_synced(), nodes.wait_synced()), 20)

    await create_pod(admin, "state-new", "node-0003")
    await eventually(lambda: "team-a/state-new" in pods.items())
    assert pods.items()["team-a/state-new"].node_name == "node-0003"
    victim = next(p for p in pods.items().values() if p.node_name == "node-0004")
    await delete_pod(admin, victim.namespace, victim.name)
    await eventually(lambda: f"{victim.namespace}/{victim.name}" not in pods.items())
    await eventually(lambda: consistent(server, pods))

    # A node update (cordon): an on_update carrying the new projection.
    patch = {"spec": {"unschedulable": True}}
    async with admin.patch(
        "/api/v1/nodes/node-0005",
        json=patch,
        headers={"Content-Type": "application/merge-patch+json"},
    ) as resp:
        assert resp.status == 200
    await eventually(lambda: nodes.items()["node-0005"].unschedulable)
    node: NodeP = nodes.recorder.store["node-0005"]  # type: ignore[attr-defined]
    assert node.unschedulable
    assert pods.recorder.errors == []  # type: ignore[attr-defined]
    assert nodes.recorder.errors == []  # type: ignore[attr-defined]


# -- faults ------------------------------------------------------------------------------


async def test_state_watch_disconnects_resume_without_relisting(
    server: ApiServer,
    http: KubeHttp,
    admin: aiohttp.ClientSession,
    run_informer: Callable[..., Informer[Any, Any]],
    eventually: Any,
) -> None:
    pods = run_informer(PODS, http, mode="watchlist")
    await asyncio.wait_for(pods.wait_synced(), 20)
    for round_ in range(3):
        server.disconnect_watches()
        # Changes right after the cut land while the informer re-watches: it must get
        # them from the history, after its last resourceVersion.
        await create_pod(admin, f"state-dc-{round_}", f"node-000{round_}")
        victim = next(
            p
            for p in pods.items().values()
            if p.node_name == f"node-001{round_}" and p.namespace != "kube-system"
        )
        await delete_pod(admin, victim.namespace, victim.name)
        await eventually(lambda: consistent(server, pods))
    assert pods.status().relists == {"initial": 1, "gone": 0}
    assert pods.recorder.errors == []  # type: ignore[attr-defined]


async def test_state_gone_relists_once_and_applies_the_difference(
    server: ApiServer,
    http: KubeHttp,
    admin: aiohttp.ClientSession,
    run_informer: Callable[..., Informer[Any, Any]],
    eventually: Any,
) -> None:
    pods = run_informer(PODS, http, mode="list")
    await asyncio.wait_for(pods.wait_synced(), 20)
    await eventually(lambda: consistent(server, pods))

    # Keep the informer out (every new watch of a non-exempt client is refused), change
    # pods while it is away, compact the history past its resourceVersion, let it back.
    server.faults.set_congestion(Congestion(reject_fraction=1.0, retry_after_seconds=1))
    server.disconnect_watches()
    await eventually(lambda: pods.status().errors["throttled"] >= 1)
    await create_pod(admin, "state-while-away", "node-0007")
    gone = [p for p in pods.items().values() if p.node_name == "node-0008"][:3]
    for pod in gone:
        await delete_pod(admin, pod.namespace, pod.name)
    async with admin.post("/_sim/compact") as resp:
        assert resp.status == 200
    server.faults.set_congestion(None)

    await eventually(lambda: pods.status().relists["gone"] == 1)
    await eventually(lambda: consistent(server, pods))
    assert "team-a/state-while-away" in pods.items()
    assert not any(f"{p.namespace}/{p.name}" in pods.items() for p in gone)
    recorder: Recorder = pods.recorder  # type: ignore[attr-defined]
    assert recorder.errors == []
    assert recorder.calls["delete"] >= len(gone)
    # Still following after the relist.
    await create_pod(admin, "state-after-relist", "node-0009")
    await eventually(lambda: "team-a/state-after-relist" in pods.items())
    assert pods.status().relists == {"initial": 1, "gone": 1}


async def test_state_compaction_between_watch_cycles_relists(
    server: ApiServer,
    http: KubeHttp,
    admin: aiohttp.ClientSession,
    run_informer: Callable[..., Informer[Any, Any]],
    eventually: Any,
) -> None:
    # Short watches: the informer re-watches every second or two from its last RV. A
    # compaction while it is between cycles, after changes it has not seen, is a 410.
    pods = run_informer(PODS, http, mode="list", watch_timeout_seconds=(1, 2))
    await asyncio.wait_for(pods.wait_synced(), 20)
    server.faults.set_congestion(Congestion(reject_fraction=1.0, retry_after_seconds=1))
    server.disconnect_watches()
    await eventually(lambda: pods.status().errors["throttled"] >= 1)
    await create_pod(admin, "state-cycle", "node-0001")
    async with admin.post("/_sim/compact") as resp:
        assert resp.status == 200
    server.faults.set_congestion(None)
    await eventually(lambda: pods.status().relists["gone"] >= 1)
    await eventually(lambda: consistent(server, pods))
    assert pods.recorder.errors == []  # type: ignore[attr-defined]


async def test_state_throttling_honours_retry_after(
    server: ApiServer,
    http: KubeHttp,
    run_informer: Callable[..., Informer[Any, Any]],
    eventually: Any,
) -> None:
    # Congested before the informer starts: its LIST is refused with Retry-After: 3.
    # Its own backoff would retry within 0.5 s; the server's word is a floor.
    server.faults.set_congestion(Congestion(reject_fraction=1.0, retry_after_seconds=3))
    pods = run_informer(PODS, http, mode="list")
    await eventually(lambda: pods.status().errors["throttled"] >= 1)
    requests_then = http.requests
    started = time.monotonic()
    await eventually(lambda: http.requests > requests_then, within=30)
    assert time.monotonic() - started >= 2.5  # 3 s floor, minus polling slack
    status = pods.status()
    assert not status.synced
    with pytest.raises(SourceError, match="not synced"):
        check_health(status)
    server.faults.set_congestion(None)
    await asyncio.wait_for(pods.wait_synced(), 30)
    assert check_health(pods.status()).synced


async def test_state_informer_metrics(
    server: ApiServer,
    http: KubeHttp,
    run_informer: Callable[..., Informer[Any, Any]],
) -> None:
    pods = run_informer(PODS, http, mode="list")
    await asyncio.wait_for(pods.wait_synced(), 20)
    collector = InformerCollector([pods])
    families = {f.name: f for f in collector.collect()}
    declared = {spec.name for spec in collector.metric_specs()}
    assert set(families) == declared
    synced = families["kubeballast_informer_synced"].samples
    assert [(s.labels, s.value) for s in synced] == [({"resource": "pods"}, 1.0)]
    objects = families["kubeballast_informer_objects"].samples[0]
    assert objects.value == server.store.count(resources.PODS)
    relists = {
        s.labels["reason"]: s.value
        for s in families["kubeballast_informer_relists"].samples
        if s.name.endswith("_total")
    }
    assert relists == {"initial": 1.0, "gone": 0.0}


async def test_state_auto_falls_back_to_paginated_list_where_watchlist_is_refused(
    local_server: Any, tmp_path: Path
) -> None:
    # An apiserver before 1.27 (or with the WatchList gate off) refuses a watch with
    # resourceVersionMatch as 422 Invalid; the simulator always serves WatchList, so this
    # is a stand-in for the old server: it lists, refuses WatchList, holds watches open.
    seen: list[dict[str, str]] = []
    nodes = [{"metadata": {"name": f"n{i}", "resourceVersion": "5"}} for i in range(3)]

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.query))
        if request.query.get("sendInitialEvents") == "true":
            status = {"kind": "Status", "code": 422, "reason": "Invalid", "message": "no"}
            return web.json_response(status, status=422)
        if request.query.get("watch"):
            response = web.StreamResponse()
            await response.prepare(request)
            await asyncio.sleep(float(request.query["timeoutSeconds"]))
            return response
        body = {"metadata": {"resourceVersion": "9"}, "items": nodes}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/api/v1/nodes", handler)
    async with local_server(app) as url:
        path = tmp_path / "kubeconfig"
        write_kubeconfig(path, url, EXPORTER_TOKEN)
        provider = KubeClientProvider(KubernetesAccessConfig(kubeconfig_path=path))
        client = await KubeHttp.from_provider(provider)
        informer: Informer[Any, Any] = Informer(NODES, client, mode="auto")
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.wait_synced(), 20)
            assert sorted(informer.items()) == ["n0", "n1", "n2"]
            assert informer.mode == "list"
            assert informer.resource_version == "9"
            assert [q.get("sendInitialEvents") for q in seen[:2]] == ["true", None]
            assert seen[1]["limit"] == "500"
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.close()
            await provider.close()
