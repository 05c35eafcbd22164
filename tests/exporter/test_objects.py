"""Object pressure on etcd: stored objects and Event writes from the apiserver's /metrics,
the largest ConfigMaps from a paginated list; and gentleness under APF throttling (a
429 backs the source off for at least its Retry-After and keeps the last snapshot)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from kubeballast.core.config import ExporterConfig, KubernetesAccessConfig, TargetConfig
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.kubeobjects import KubeReader, object_path
from kubeballast.exporter.objects import (
    ConfigMapSize,
    _ConfigMap,
    build_objects,
    configmap_size,
    top_configmaps,
)
from kubeballast.exporter.runner import SourceRunner, SourceSet
from kubeballast.simulator.admission import UserInfo
from kubeballast.simulator.faults import Congestion
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.resources import CONFIGMAPS, EVENTS
from kubeballast.simulator.scenario import LARGE_CONFIGMAP_BYTES, LARGE_CONFIGMAPS
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings
from kubeballast.simulator.store import decode

READER_TOKEN = "token-exporter"
READER_USER = "system:serviceaccount:monitoring:kube-ballast"
"""The exporter's identity: a plain service account, subject to APF (not exempt)."""
ADMIN = UserInfo(username="test-admin", groups=("system:masters",))

# -- pure pieces -------------------------------------------------------------------------


def _configmap(data: dict[str, str] | None = None, binary: dict[str, bytes] | None = None) -> Any:
    body: dict[str, Any] = {"metadata": {"namespace": "ns", "name": "cm"}}
    if data is not None:
        body["data"] = data
    if binary is not None:
        body["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    return msgspec.json.decode(msgspec.json.encode(body), type=_ConfigMap)


@pytest.mark.parametrize(
    ("data", "binary", "size"),
    [
        (None, None, 0),
        ({"a": "xyz"}, None, 4),
        ({"k": "é"}, None, 3),  # UTF-8 bytes, not characters
        (None, {"b": b"\x00\x01"}, 3),  # decoded bytes, not base64 characters
        (None, {"b": b"\x00\x01\x02"}, 4),
        (None, {"b": b"\x00"}, 2),
        ({"a": "1"}, {"bb": b"12345"}, 2 + 2 + 5),
    ],
)
def test_configmap_size_counts_data_and_decoded_binary_data(
    data: dict[str, str] | None, binary: dict[str, bytes] | None, size: int
) -> None:
    assert configmap_size(_configmap(data, binary)) == ConfigMapSize(size, "ns", "cm")


def test_top_configmaps_is_ordered_and_stable_on_ties() -> None:
    sizes = [
        ConfigMapSize(10, "b", "x"),
        ConfigMapSize(30, "a", "y"),
        ConfigMapSize(10, "a", "z"),
        ConfigMapSize(20, "c", "w"),
    ]
    top = top_configmaps(sizes, 3)
    assert [(c.namespace, c.name) for c in top.largest] == [("a", "y"), ("c", "w"), ("a", "z")]
    assert top.count == 4
    assert top.total_bytes == 70
    assert top_configmaps(sizes, 0).largest == ()
    assert top_configmaps([], 5) == top_configmaps([], 5)


# -- against the simulator ---------------------------------------------------------------


@dataclass
class Setup:
    server: ApiServer
    context: ExporterContext
    registry: CollectorRegistry

    def runner(self, kind: str, instance: str) -> SourceRunner[Any]:
        return self.context.sources.views[(kind, instance)]

    def value(self, metric: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(metric, labels)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    scenario = ScenarioSettings(
        nodes=6,
        zones=3,
        pods_per_node=5,
        control_plane_nodes=1,
        seed=7,
        users={READER_TOKEN: READER_USER},
    )
    server = build_server(
        SimulatorSettings(
            host="127.0.0.1", port=0, kubelets=False, controllers=False, scenario=scenario
        )
    )
    await server.start()
    context: ExporterContext | None = None
    try:
        kubeconfig = tmp_path / "kubeconfig"
        write_kubeconfig(kubeconfig, server.url, READER_TOKEN)
        token_file = tmp_path / "token"
        token_file.write_text(READER_TOKEN)
        config = ExporterConfig(
            kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)),
            apiservers=(
                TargetConfig(
                    name="api-0",
                    url=server.url,
                    bearer_token_file=str(token_file),
                    timeout_seconds=10.0,
                    interval_seconds=15.0,
                ),
            ),
        )
        context = ExporterContext(config, SourceSet())
        registry = CollectorRegistry()
        for collector in build_objects(context):
            registry.register(collector)  # type: ignore[arg-type]
        yield Setup(server, context, registry)
    finally:
        if context is not None:
            await context.aclose()
        await server.stop()


def stored_size(server: ApiServer, namespace: str, name: str) -> int:
    body = decode(server.store.get(CONFIGMAPS, namespace, name).raw)
    return sum(len(k.encode()) + len(v.encode()) for k, v in (body.get("data") or {}).items())


async def test_largest_configmaps_are_the_scenario_ones_with_their_sizes(setup: Setup) -> None:
    runner = setup.runner("configmap_sizes", "cluster")
    await runner.refresh_once()
    assert runner.up, runner.last_error
    largest = runner.snapshot.value.largest
    assert {(c.namespace, c.name) for c in largest[: len(LARGE_CONFIGMAPS)]} == set(
        LARGE_CONFIGMAPS
    )
    for namespace, name in LARGE_CONFIGMAPS:
        size = setup.value("kubeballast_configmap_size_bytes", namespace=namespace, name=name)
        assert size == stored_size(setup.server, namespace, name)
        assert size is not None
        assert size > 0.99 * LARGE_CONFIGMAP_BYTES
    count = setup.server.store.count(CONFIGMAPS)
    assert setup.value("kubeballast_configmaps") == count
    assert len(largest) == min(10, count)
    total = setup.value("kubeballast_configmap_data_bytes")
    assert total is not None
    assert total >= len(LARGE_CONFIGMAPS) * 0.99 * LARGE_CONFIGMAP_BYTES


async def test_storage_objects_and_event_writes_from_the_apiserver(setup: Setup) -> None:
    runner = setup.runner("apiserver_objects", "api-0")
    await runner.refresh_once()
    assert runner.up, runner.last_error
    labels = {"target": "api-0"}
    assert setup.value(
        "kubeballast_apiserver_storage_objects", resource="configmaps", **labels
    ) == setup.server.store.count(CONFIGMAPS)
    events_before = setup.server.store.count(EVENTS)
    assert (
        setup.value("kubeballast_apiserver_storage_objects", resource="events", **labels)
        == events_before
    )
    writes_before = setup.value("kubeballast_apiserver_event_writes_total", **labels)
    assert writes_before is not None

    headers = {"Authorization": f"Bearer {setup.server.admin_token}"}
    async with aiohttp.ClientSession(base_url=setup.server.url, headers=headers) as session:
        for i in range(3):
            event = {
                "metadata": {"name": f"burst-{i}", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "namespace": "default", "name": "x"},
                "reason": "Test",
                "message": "one of a burst",
                "type": "Normal",
            }
            async with session.post("/api/v1/namespaces/default/events", json=event) as resp:
                assert resp.status == 201, await resp.text()
        # A read is not a write.
        async with session.get("/api/v1/namespaces/default/events") as resp:
            assert resp.status == 200

    await runner.refresh_once()
    assert setup.value("kubeballast_apiserver_event_writes_total", **labels) == writes_before + 3
    assert (
        setup.value("kubeballast_apiserver_storage_objects", resource="events", **labels)
        == events_before + 3
    )


async def test_throttled_list_backs_off_with_retry_after_and_keeps_the_snapshot(
    setup: Setup,
) -> None:
    runner = setup.runner("configmap_sizes", "cluster")
    await runner.refresh_once()
    assert runner.up
    snapshot = runner.snapshot
    name = LARGE_CONFIGMAPS[0]
    size = setup.value("kubeballast_configmap_size_bytes", namespace=name[0], name=name[1])

    setup.server.faults.set_congestion(Congestion(reject_fraction=1.0, retry_after_seconds=7))
    delay = await runner.refresh_once()
    assert not runner.up
    assert runner.errors["throttled"] == 1
    assert delay >= 7.0  # never sooner than the apiserver's Retry-After
    assert runner.snapshot is snapshot  # the last good values stay served
    assert setup.value("kubeballast_configmap_size_bytes", namespace=name[0], name=name[1]) == size

    setup.server.faults.set_congestion(None)
    await runner.refresh_once()
    assert runner.up
    assert runner.snapshot is not snapshot


class RecordingApi:
    """The real ApiClient, with each request's query recorded (and an optional hook
    run after each request), to see how the reader pages."""

    def __init__(self, api: Any, after: Any = None) -> None:
        self._api = api
        self._after = after
        self.queries: list[dict[str, str]] = []

    async def call_api(self, path: str, method: str, **kwargs: Any) -> Any:
        self.queries.append(dict(kwargs.get("query_params") or ()))
        response = await self._api.call_api(path, method, **kwargs)
        if self._after is not None:
            self._after(len(self.queries))
        return response


async def test_one_list_per_kind_in_flight(setup: Setup) -> None:
    recording = RecordingApi(await setup.context.kube.get())

    async def client() -> Any:
        return recording

    reader = KubeReader(client, page_size=5)
    path = object_path("v1", "configmaps")
    first, second = await asyncio.gather(
        reader.list(path, _ConfigMap, project=configmap_size),
        reader.list(path, _ConfigMap, project=configmap_size),
    )
    assert first.items == second.items
    pages = first.pages
    assert pages > 1
    # The second LIST starts (a query without continue) only after the first ended.
    starts = [i for i, q in enumerate(recording.queries) if "continue" not in q]
    assert starts == [0, pages]
    assert all(q["limit"] == "5" for q in recording.queries)


async def test_expired_continue_token_restarts_the_list_once(setup: Setup) -> None:
    server = setup.server

    def compact_after_first_page(requests: int) -> None:
        if requests == 1:  # a write, then compaction: the first page's snapshot is gone
            body = decode(server.store.get(CONFIGMAPS, "team-a", "app-settings").raw)
            body["data"]["LOG_LEVEL"] = "debug"
            server.registry.update(CONFIGMAPS, "team-a", "app-settings", body, ADMIN)
            server.store.compact(server.store.resource_version)

    recording = RecordingApi(await setup.context.kube.get(), compact_after_first_page)

    async def client() -> Any:
        return recording

    reader = KubeReader(client, page_size=5)
    listed = await reader.list(object_path("v1", "configmaps"), _ConfigMap, project=configmap_size)
    assert len(listed.items) == server.store.count(CONFIGMAPS)
    # page 1, the 410 on page 2, then the whole list again from a first page
    starts = [i for i, q in enumerate(recording.queries) if "continue" not in q]
    assert starts == [0, 2]
