"""End to end on loopback: every panel of every dashboard has data, healthy and congested.

Everything a dashboard reads runs for real: the simulator (12 nodes in 3 zones, its
kubelets renewing their Leases in-process at a clock factor of 20, its scheduler and
controller-manager on ports of their own), a three-member etcd cluster (the harness of
tests/etcd, with ``--metrics=extensive`` for the gRPC latency) with one verified backup
taken before the exporter starts, the eviction guard's ConfigMap holding a pause that
ended, the exporter (the default catalog, probing the
apiserver, the components and etcd), the receiver (``run_receiver``, its ledger and
leader Lease in the simulator), and a real Prometheus that scrapes both every second and
evaluates the repository's rules (alerts/*.yaml, unchanged) every second.

The test asks Prometheus every panel query of every dashboard, as Grafana would after
substituting the template variables (``dashboards_support.substitute``), and requires a
non-empty result for each: first after a warm-up, then during an injected congestion
(every kubelet heartbeat rejected, and node-0000's Lease renewed over HTTP so that the
apiserver counts 429s, as in tests/alerts/test_alerts_e2e.py), once Prometheus sees
the congestion verdict and stale Leases. Annotation queries are not required to have
data (they mark events). What the test changes against a deployment: the cluster-state
collector reads the simulator's clock (Lease renewTimes are simulated time).

Prometheus and etcd are required: the test fails, it does not skip, when they are
missing. Nothing sleeps to synchronise: every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import yaml
from dashboards_support import PanelQuery, queries, substitute
from loopback import (
    catalog_on_simulated_clock,
    free_port,
    poll,
    renew_lease_over_http,
    require,
    serve,
)
from loopback import process as run_process

from kubeballast.core.config import (
    EtcdBackupConfig,
    EtcdClusterConfig,
    EtcdConfig,
    ExporterConfig,
    KubernetesAccessConfig,
    ListenConfig,
    ReceiverAuthConfig,
    ReceiverConfig,
    RemediationsConfig,
    TargetConfig,
)
from kubeballast.core.etcdops import BackupSettings, backup
from kubeballast.exporter.app import build_exporter
from kubeballast.remediations.server import run_receiver
from kubeballast.simulator.faults import Congestion
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

PROMETHEUS = Path("/usr/bin/prometheus")
RULES = sorted((Path(__file__).resolve().parents[2] / "alerts").glob("*.yaml"))
NODE_TOKEN = "token-node-0"
NAMESPACE = "kube-ballast"
DEADLINE_SECONDS = 90.0
"""Each wait's deadline: generous for a loaded two-core machine (the whole test takes
about 30 s on an idle one)."""


CONGESTION_SHOWN: dict[tuple[str, str], Callable[[list[float]], bool]] = {
    ("control-plane", "Congestion verdict"): lambda values: max(values, default=0) == 1,
    ("control-plane", "APF rejections by priority level"): lambda v: max(v, default=0) > 0,
    ("heartbeats-eviction", "Stale Leases per zone"): lambda v: len(v) == 3 and min(v) > 0,
    ("heartbeats-eviction", "Correlated wave"): lambda values: max(values, default=0) > 0,
}
"""Panels (first query) that must show the congestion, with what they must show."""
LAST_PAUSE_ENDED = ("control-plane", "Last pause ended")


# -- helpers -----------------------------------------------------------------------------


def _etcd_harness() -> ModuleType:
    """tests/etcd/harness.py, the one way the tests run real etcd members (it is not
    importable by name from here: test folders are not packages)."""
    if "harness" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "etcd" / "harness.py"
        spec = importlib.util.spec_from_file_location("harness", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["harness"] = module
        spec.loader.exec_module(module)
    return sys.modules["harness"]


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def simulator() -> AsyncIterator[ApiServer]:
    scenario = ScenarioSettings(
        nodes=12,
        zones=3,
        pods_per_node=4,
        control_plane_nodes=1,
        seed=7,
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
    attach_control_plane(server)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[Any]:
    harness = _etcd_harness()
    directory = tmp_path / "etcd"
    directory.mkdir()
    with harness.running_cluster(directory, 3, extra_args=("--metrics=extensive",)) as cluster:
        yield cluster


@pytest.fixture
async def etcd_backups(etcd_cluster: Any, tmp_path: Path) -> Path:
    """A folder holding one verified snapshot of the etcd cluster."""
    directory = tmp_path / "backups"
    settings = BackupSettings(directory=directory, etcdctl=_etcd_harness().binary("etcdctl"))
    async with etcd_cluster.client() as client:
        result = await backup(client, "main", settings)
    assert result.ok
    return directory


@pytest.fixture
def kubeconfig(simulator: ApiServer, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, simulator.url, simulator.admin_token)
    return path


@pytest.fixture
async def exporter(
    etcd_cluster: Any,
    etcd_backups: Path,
    simulator: ApiServer,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> AsyncIterator[str]:
    """The exporter's application on loopback; yields its URL once it is ready. (etcd
    first: its harness blocks while the members start, and the simulator's kubelets
    should not be blocked with it.)"""
    token = tmp_path / "exporter-token"
    # A cluster admin (APF's exempt level), as a deployment arranges for the exporter.
    token.write_text(simulator.admin_token + "\n")

    def target(name: str, url: str) -> TargetConfig:
        return TargetConfig(
            name=name,
            url=url,
            bearer_token_file=str(token),
            timeout_seconds=1.0,
            interval_seconds=1.0,
        )

    config = ExporterConfig(
        listen=ListenConfig(host="127.0.0.1", port=0),
        kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)),
        apiservers=(target("apiserver-1", simulator.url),),
        schedulers=(target("scheduler-1", simulator.components["kube-scheduler"].url),),
        controller_managers=(
            target("controller-manager-1", simulator.components["kube-controller-manager"].url),
        ),
        etcd=EtcdConfig(
            clusters=(
                EtcdClusterConfig(
                    name="main",
                    endpoints=tuple(etcd_cluster.endpoints),
                    backup=EtcdBackupConfig(directory=str(etcd_backups)),
                ),
            )
        ),
    )
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
async def namespace(simulator: ApiServer) -> str:
    """The kube-ballast namespace, holding the eviction guard's ConfigMap of a pause
    that ended (so the "last pause ended" panel has one to show)."""
    headers = {"Authorization": f"Bearer {simulator.admin_token}"}
    ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 900))
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(
            f"{simulator.url}/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        ) as response:
            assert response.status == 201, await response.text()
        async with session.post(
            f"{simulator.url}/api/v1/namespaces/{NAMESPACE}/configmaps",
            json={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "eviction-guard", "namespace": NAMESPACE},
                "data": {
                    "paused": "false",
                    "reason": "KubeNodeHeartbeatStorm",
                    "startedAt": started,
                    "endedAt": ended,
                    "endReason": "recovered",
                },
            },
        ) as response:
            assert response.status == 201, await response.text()
    return NAMESPACE


@pytest.fixture
async def receiver(kubeconfig: Path, namespace: str, tmp_path: Path) -> AsyncIterator[str]:
    """``kube-ballast receiver`` (dry run, the default) with its state in the simulator."""
    token = tmp_path / "receiver-token"
    token.write_text("receiver-token-of-the-test\n")
    port = free_port()
    config = ReceiverConfig(
        listen=ListenConfig(host="127.0.0.1", port=port),
        auth=ReceiverAuthConfig(bearer_token_file=str(token)),
        remediations=RemediationsConfig(
            kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)),
            namespace=namespace,
            scan_interval_seconds=0.5,
        ),
    )
    task = asyncio.create_task(run_receiver(config), name="receiver-under-test")
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                if task.done():
                    task.result()  # the receiver died: show why
                async with session.get(f"{url}/healthz") as response:
                    return response.status == 200

            await poll(ready, "the receiver did not become ready", DEADLINE_SECONDS)
        yield url
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def prometheus(exporter: str, receiver: str, tmp_path: Path) -> AsyncIterator[str]:
    require(PROMETHEUS, "prometheus")
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(path) for path in RULES],
                "scrape_configs": [
                    {
                        "job_name": "kube-ballast-exporter",
                        "static_configs": [{"targets": [exporter.removeprefix("http://")]}],
                    },
                    {
                        "job_name": "kube-ballast-receiver",
                        "static_configs": [{"targets": [receiver.removeprefix("http://")]}],
                    },
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


async def test_every_panel_query_has_data_healthy_and_congested(
    prometheus: str, simulator: ApiServer
) -> None:
    panel_queries = [query for query in queries() if not query.annotation]
    assert len(panel_queries) >= 100
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def query(expression: str) -> list[dict[str, Any]]:
            async with session.get(
                f"{prometheus}/api/v1/query", params={"query": expression}
            ) as response:
                payload = await response.json()
            assert payload["status"] == "success", (expression, payload)
            result: list[dict[str, Any]] = payload["data"]["result"]
            return result

        empty: list[str] = []

        async def all_have_data() -> bool:
            async def empty_one(panel_query: PanelQuery) -> str | None:
                result = await query(substitute(panel_query.expr))
                return None if result else f"{panel_query.name}: {panel_query.expr}"

            found = await asyncio.gather(*(empty_one(q) for q in panel_queries))
            empty[:] = [name for name in found if name is not None]
            return not empty

        try:
            await poll(
                all_have_data,
                "panel queries still without data after the warm-up",
                DEADLINE_SECONDS,
            )
        finally:
            print(f"healthy: {len(empty)} empty after {time.monotonic() - started:.1f} s", empty)
        # The eviction guard's panels read the pause ConfigMap: no pause, the last one
        # ended (recovered) ten minutes ago.
        (last_end,) = [q.expr for q in panel_queries if (q.dashboard, q.panel) == LAST_PAUSE_ENDED]
        (ended,) = await query(substitute(last_end))
        assert ended["metric"] == {"reason": "recovered"}
        assert 500 < time.time() - float(ended["value"][1]) / 1000 < 3600
        (paused,) = [
            q.expr
            for q in panel_queries
            if (q.dashboard, q.panel) == ("control-plane", "Eviction pause")
        ]
        assert [s["value"][1] for s in await query(substitute(paused))] == ["0"]
        healthy_at = time.monotonic()

        # The congestion: every heartbeat rejected, the kubelets' and node-0000's.
        stop = asyncio.Event()
        renewals = asyncio.create_task(renew_lease_over_http(simulator.url, NODE_TOKEN, stop))
        simulator.faults.set_congestion(Congestion(reject_fraction=0.0, lease_reject_fraction=1.0))
        try:

            async def congested() -> bool:
                verdict = await query("max(kubeballast_apiserver_congested) == 1")
                stale = await query("max(kubeballast_zone_lease_stale_ratio) > 0")
                return bool(verdict and stale)

            await poll(
                congested,
                "Prometheus did not see the congestion and stale Leases",
                DEADLINE_SECONDS,
            )

            # The panels that should show it do.
            async def shown() -> bool:
                for (dashboard, title), check in CONGESTION_SHOWN.items():
                    (expr,) = [
                        q.expr
                        for q in panel_queries
                        if (q.dashboard, q.panel, q.ref) == (dashboard, title, "A")
                    ]
                    values = [float(s["value"][1]) for s in await query(substitute(expr))]
                    seen[title] = values
                    if not check(values):
                        return False
                return True

            seen: dict[str, list[float]] = {}
            try:
                await poll(shown, "the dashboards did not show the congestion", DEADLINE_SECONDS)
            finally:
                print("congestion panels:", seen)
            try:
                await poll(
                    all_have_data,
                    "panel queries without data during the congestion",
                    DEADLINE_SECONDS,
                )
            finally:
                print(
                    f"congested: {len(empty)} empty after {time.monotonic() - healthy_at:.1f} s",
                    empty,
                )
        finally:
            stop.set()
            await renewals
            simulator.faults.set_congestion(None)
