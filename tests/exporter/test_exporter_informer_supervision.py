"""A bug inside an informer restarts its cache; it never leaves a half-alive exporter.

The projection is the informer's own boundary with the decoded JSON, so the test wraps
the real one (``decode_pod``) to raise on one pod while a flag is set: that is what a
projection bug tripping on an unusual object looks like. The informer must keep its
task alive, count and log the failure, report itself down through ``check_health``
(which turns into ``kubeballast_source_up{kind="informer"} 0``, what
KubeBallastSourceDown watches) for as long as every resync trips on the object, and
come back consistent with the server once it no longer does.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubeballast.core.config import KubernetesAccessConfig
from kubeballast.core.kube import KubeClientProvider
from kubeballast.exporter.contract import SourceError
from kubeballast.exporter.informer import (
    Informer,
    InformerCollector,
    InformerStatus,
    KubeHttp,
    ResourceSpec,
    check_health,
)
from kubeballast.exporter.projections import PodP, RawPod, decode_pod
from kubeballast.simulator import resources
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

TOKEN = "token-informer-supervision"
POISON = "team-a/poison"


class PoisonedProjection:
    """``decode_pod``, raising for the pod ``POISON`` while ``armed``."""

    def __init__(self) -> None:
        self.armed = False
        self.raised = 0

    def __call__(self, raw: RawPod) -> PodP:
        if self.armed and f"{raw.metadata.namespace}/{raw.metadata.name}" == POISON:
            self.raised += 1
            raise ValueError("projection bug: cannot read this pod")
        return decode_pod(raw)


class Recorder:
    """Replays the callbacks into its own store: the aggregates' point of view."""

    def __init__(self) -> None:
        self.store: dict[str, PodP] = {}
        self.errors: list[str] = []

    def on_add(self, new: PodP) -> None:
        key = f"{new.namespace}/{new.name}"
        if key in self.store:
            self.errors.append(f"add of a known pod {key}")
        self.store[key] = new

    def on_update(self, old: PodP, new: PodP) -> None:
        key = f"{old.namespace}/{old.name}"
        if self.store.get(key) != old:
            self.errors.append(f"update from a state not seen {key}")
        self.store[key] = new

    def on_delete(self, old: PodP) -> None:
        if self.store.pop(f"{old.namespace}/{old.name}", None) is None:
            self.errors.append(f"delete of an unknown pod {old.namespace}/{old.name}")


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    scenario = ScenarioSettings(
        nodes=5,
        zones=3,
        pods_per_node=4,
        control_plane_nodes=0,
        seed=5,
        users={TOKEN: "system:serviceaccount:monitoring:kube-ballast"},
    )
    srv = build_server(
        SimulatorSettings(
            host="127.0.0.1", port=0, kubelets=False, controllers=False, scenario=scenario
        )
    )
    srv.bookmark_interval = 0.2
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def http(server: ApiServer, tmp_path: Path) -> AsyncIterator[KubeHttp]:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, server.url, TOKEN)
    provider = KubeClientProvider(KubernetesAccessConfig(kubeconfig_path=path))
    client = await KubeHttp.from_provider(provider)
    try:
        yield client
    finally:
        await client.close()
        await provider.close()


async def create_pod(server: ApiServer, name: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"nodeName": "node-0001", "containers": [{"name": "c", "image": "busybox"}]},
    }
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with (
        aiohttp.ClientSession(server.url, headers=headers) as admin,
        admin.post("/api/v1/namespaces/team-a/pods", json=body) as resp,
    ):
        assert resp.status == 201, await resp.text()


def server_pods(server: ApiServer) -> set[str]:
    return {f"{e.namespace}/{e.name}" for e in server.store.iter_current(resources.PODS)}


def health(status: InformerStatus) -> str:
    try:
        check_health(status)
    except SourceError as error:
        return f"down: {error}"
    return "up"


async def test_exporter_informer_restarts_after_a_bug_and_recovers(
    server: ApiServer, http: KubeHttp, eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    projection = PoisonedProjection()
    spec = ResourceSpec("pods", "v1", "pods", RawPod, projection)
    informer: Informer[RawPod, PodP] = Informer(spec, http, rng=random.Random(4))
    recorder = Recorder()
    informer.add_handler(recorder)
    task = asyncio.create_task(informer.run(), name="informer-under-test")
    try:
        await asyncio.wait_for(informer.wait_synced(), 20)
        assert health(informer.status()) == "up"

        # A new pod the projection trips on: first in the watch, then in every resync.
        projection.armed = True
        with caplog.at_level(logging.ERROR, logger="kubeballast.exporter.informer"):
            await create_pod(server, "poison")
            await eventually(lambda: informer.status().restarts >= 3, within=30)
        status = informer.status()
        assert not task.done()  # supervised: the bug did not end the task
        assert status.restarting
        assert status.errors["internal"] == status.restarts
        assert "ValueError" in (status.last_error or "")
        assert health(status).startswith("down: pods: restarting: internal error")
        # The first failure of the streak is logged with its traceback, later ones in a
        # line each: a bug that persists does not flood the log with tracebacks.
        tracebacks = [r for r in caplog.records if r.exc_info]
        assert len(tracebacks) == 1
        assert "ValueError: projection bug" in caplog.text
        assert any("failed again" in r.getMessage() for r in caplog.records)
        # The restart counter reaches /metrics.
        families = {f.name: f for f in InformerCollector([informer]).collect()}
        restarts = families["kubeballast_informer_restarts"].samples
        assert [s.value for s in restarts if s.name.endswith("_total")] == [status.restarts]
        internal = [
            s.value
            for s in families["kubeballast_informer_watch_errors"].samples
            if s.labels.get("reason") == "internal" and s.name.endswith("_total")
        ]
        assert internal == [status.restarts]

        # The bug is gone (the object changed, a fix rolled out): the next resync
        # succeeds, and the cache and the handlers' view equal the server's again.
        projection.armed = False
        await eventually(lambda: not informer.status().restarting, within=60)
        await eventually(lambda: set(informer.items()) == server_pods(server), within=20)
        assert set(recorder.store) == set(informer.items())
        assert POISON in informer.items()
        assert recorder.errors == []
        assert health(informer.status()) == "up"
        # The resync after a restart is a restart, not a relist for a 410.
        assert informer.status().relists == {"initial": 1, "gone": 0}
        # And it keeps watching.
        await create_pod(server, "after")
        await eventually(lambda: "team-a/after" in informer.items())
        assert Counter(p.node_name for p in informer.items().values())["node-0001"] >= 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_exporter_informer_health_is_down_while_restarting() -> None:
    status = InformerStatus(
        resource="nodes",
        synced=True,
        objects=10,
        events=3,
        relists={"initial": 1, "gone": 0},
        errors={"internal": 1},
        consecutive_failures=1,
        last_error="internal error: KeyError('x')",
        last_event=None,
        last_sync=None,
        last_sync_duration_seconds=None,
        mode="list",
        restarts=1,
        restarting=True,
    )
    assert health(status) == "down: nodes: restarting: internal error: KeyError('x')"
    recovered = InformerStatus(**{**status.__dict__, "restarting": False})
    assert health(recovered) == "up"
