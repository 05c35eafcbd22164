"""The exporter process as Prometheus and the kubelet see it: /metrics, /healthz,
/readyz; collectors that fail without failing the scrape; registries that refuse
duplicates; supervision; the context factories build with; ``--list-metrics``."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.core import GaugeMetricFamily, Metric

from kubeballast.cli import main
from kubeballast.core.config import (
    ConfigError,
    ExporterConfig,
    KubernetesAccessConfig,
    ListenConfig,
    TargetConfig,
)
from kubeballast.core.kube import kube_client
from kubeballast.core.promtext import parse
from kubeballast.exporter.app import (
    build_exporter,
    render_metrics_doc,
    render_metrics_table,
)
from kubeballast.exporter.catalog import Catalog, ExporterContext
from kubeballast.exporter.contract import MetricSpec, SnapshotView, SourceError
from kubeballast.exporter.http import TargetClient
from kubeballast.exporter.runner import SourceSet, SourceTaskDiedError
from kubeballast.exporter.server import create_app, run_exporter
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class ValueCollector:
    """``kb_test_value{target}``: each view's snapshot value, as a real collector does."""

    def __init__(self, views: dict[str, SnapshotView[float]], name: str = "kb_test_value"):
        self.views = views
        self.name = name

    def metric_specs(self) -> Sequence[MetricSpec]:
        return (MetricSpec(self.name, "gauge", "A test value.", ("target",)),)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, "A test value.", labels=["target"])
        for instance, view in self.views.items():
            if view.snapshot is not None:
                family.add_metric([instance], view.snapshot.value)
        yield family


class BrokenCollector:
    """Yields one family, then fails: none of it may reach the scrape."""

    def metric_specs(self) -> Sequence[MetricSpec]:
        return (MetricSpec("kb_test_broken", "gauge", "Never served."),)

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("kb_test_broken", "Never served.", value=1)
        raise ZeroDivisionError("a bug in a collector")


def value_area(scripted: Any, **scripts: list[Any]) -> Any:
    """A factory adding one scripted source per keyword and a collector over them."""

    def factory(context: ExporterContext) -> Sequence[Any]:
        views = {
            name: context.add_source(scripted(script, kind="value", instance=name))
            for name, script in scripts.items()
        }
        return [ValueCollector(views)]

    return factory


@pytest.fixture
async def scrape_client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# --------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------


async def test_readyz_waits_for_every_sources_first_refresh(
    scripted: Any, local_server: Any, eventually: Any, scrape_client: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def slow() -> float:
        await release.wait()
        return 2.0

    catalog = Catalog()
    catalog.register("values", value_area(scripted, fast=[1.0], slow=[slow]))
    app = build_exporter(ExporterConfig(), catalog=catalog).create_app()
    async with local_server(app) as url:
        async with scrape_client.get(f"{url}/healthz") as response:
            assert (response.status, await response.text()) == (200, "ok")

        async def fast_attempted() -> bool:
            async with scrape_client.get(f"{url}/metrics") as response:
                return 'kb_test_value{target="fast"} 1.0' in await response.text()

        await eventually(fast_attempted)
        async with scrape_client.get(f"{url}/readyz") as response:
            assert response.status == 503
            body = await response.text()
        assert "value/slow" in body
        assert "value/fast" not in body

        release.set()

        async def ready() -> bool:
            async with scrape_client.get(f"{url}/readyz") as response:
                return response.status == 200

        await eventually(ready)


async def test_metrics_serve_the_collectors_and_the_sources_health(
    scripted: Any, local_server: Any, eventually: Any, scrape_client: aiohttp.ClientSession
) -> None:
    catalog = Catalog()
    catalog.register(
        "values", value_area(scripted, up=[4.5], down=[SourceError("connect", "refused")])
    )
    exporter = build_exporter(ExporterConfig(), catalog=catalog)
    async with local_server(exporter.create_app()) as url:
        await eventually(lambda: exporter.sources.ready)
        async with scrape_client.get(f"{url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            families = parse(await response.text())

    assert [s.value for s in families["kb_test_value"]] == [4.5]
    assert {s.labels["target"]: s.value for s in families["kubeballast_source_up"]} == {
        "up": 1.0,
        "down": 0.0,
    }
    errors = {
        (s.labels["target"], s.labels["reason"]): s.value
        for s in families["kubeballast_source_refresh_errors_total"]
    }
    assert errors[("down", "connect")] == 1.0
    assert errors[("up", "connect")] == 0.0
    assert families["kubeballast_build_info"][0].value == 1.0
    assert {s.labels["collector"] for s in families["kubeballast_collector_errors_total"]} == {
        "exporter",
        "values",
    }


async def test_metrics_speak_openmetrics_and_gzip_when_asked(
    local_server: Any, scrape_client: aiohttp.ClientSession
) -> None:
    async with local_server(create_app(ExporterConfig(), catalog=Catalog())) as url:
        headers = {"Accept": OPENMETRICS, "Accept-Encoding": "gzip"}
        async with scrape_client.get(
            f"{url}/metrics", headers=headers, auto_decompress=False
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert response.headers["Content-Encoding"] == "gzip"
            body = gzip.decompress(await response.read()).decode()
    assert body.endswith("# EOF\n")
    assert "kubeballast_build_info" in body


async def test_without_sources_the_exporter_is_ready_at_once(
    local_server: Any, scrape_client: aiohttp.ClientSession
) -> None:
    async with (
        local_server(create_app(ExporterConfig())) as url,
        scrape_client.get(f"{url}/readyz") as response,
    ):
        assert (response.status, await response.text()) == (200, "ok")


async def test_a_failing_collector_costs_only_its_own_families(
    scripted: Any,
    local_server: Any,
    eventually: Any,
    scrape_client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    catalog = Catalog()
    catalog.register("values", value_area(scripted, one=[7.0]))
    catalog.register("broken", lambda context: [BrokenCollector()])
    exporter = build_exporter(ExporterConfig(), catalog=catalog)
    async with local_server(exporter.create_app()) as url:
        await eventually(lambda: exporter.sources.ready)
        with caplog.at_level(logging.DEBUG, logger="kubeballast.exporter.app"):
            for _ in range(3):
                async with scrape_client.get(f"{url}/metrics") as response:
                    assert response.status == 200
                    text = await response.text()

    families = parse(text)
    assert "kb_test_broken" not in families
    assert [s.value for s in families["kb_test_value"]] == [7.0]
    errors = {
        s.labels["collector"]: s.value for s in families["kubeballast_collector_errors_total"]
    }
    assert errors == {"broken": 3.0, "exporter": 0.0, "values": 0.0}
    tracebacks = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(tracebacks) == 1  # once, not once per scrape
    assert tracebacks[0].exc_info is not None
    assert "broken" in tracebacks[0].getMessage()


class UndeclaredCollector(ValueCollector):
    """Yields a family it never declared, next to its declared one."""

    def collect(self) -> Iterable[Metric]:
        yield from super().collect()
        yield GaugeMetricFamily("kb_test_surprise", "Not in the specs.", value=1)


async def test_undeclared_families_are_dropped_and_counted(
    scripted: Any, local_server: Any, eventually: Any, scrape_client: aiohttp.ClientSession
) -> None:
    def factory(context: ExporterContext) -> Sequence[Any]:
        return [UndeclaredCollector({"one": context.add_source(scripted([3.0]))})]

    catalog = Catalog()
    catalog.register("sloppy", factory)
    exporter = build_exporter(ExporterConfig(), catalog=catalog)
    async with local_server(exporter.create_app()) as url:
        await eventually(lambda: exporter.sources.ready)
        async with scrape_client.get(f"{url}/metrics") as response:
            families = parse(await response.text())
    assert "kb_test_surprise" not in families
    assert [s.value for s in families["kb_test_value"]] == [3.0]
    errors = {
        s.labels["collector"]: s.value for s in families["kubeballast_collector_errors_total"]
    }
    assert errors["sloppy"] == 1.0


def test_two_collectors_claiming_one_family_are_refused(scripted: Any) -> None:
    catalog = Catalog()
    catalog.register("a", lambda context: [ValueCollector({})])
    catalog.register("b", lambda context: [ValueCollector({})])
    with pytest.raises(ValueError, match="kb_test_value"):
        build_exporter(ExporterConfig(), catalog=catalog)


def test_two_areas_registering_one_source_are_refused(scripted: Any) -> None:
    catalog = Catalog()
    catalog.register("a", value_area(scripted, same=[]))

    def same_source(context: ExporterContext) -> Sequence[Any]:
        context.add_source(scripted([], kind="value", instance="same"))
        return []

    catalog.register("b", same_source)
    with pytest.raises(ValueError, match="duplicate source kind='value' instance='same'"):
        build_exporter(ExporterConfig(), catalog=catalog)


def test_the_catalog_refuses_a_duplicate_area() -> None:
    catalog = Catalog()
    catalog.register("apiserver", lambda context: [])
    with pytest.raises(ValueError, match="duplicate exporter area 'apiserver'"):
        catalog.register("apiserver", lambda context: [])


# --------------------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------------------


class _Boom(BaseException):
    """Escapes the runner's error handling, as a bug in the runner itself would."""


async def test_the_exporter_stops_when_a_source_task_dies(scripted: Any) -> None:
    catalog = Catalog()
    catalog.register("values", value_area(scripted, doomed=[_Boom("runner bug")]))
    config = ExporterConfig(listen=ListenConfig(host="127.0.0.1", port=0))
    with pytest.raises(SourceTaskDiedError, match="value/doomed"):
        await asyncio.wait_for(run_exporter(config, catalog=catalog), 30)


async def test_a_cancelled_exporter_stops_its_sources_and_closes_its_clients(
    scripted: Any, eventually: Any
) -> None:
    clients: list[TargetClient] = []
    refreshed = asyncio.Event()

    async def first() -> float:
        refreshed.set()
        return 1.0

    def factory(context: ExporterContext) -> Sequence[Any]:
        clients.append(context.target_client(TargetConfig(name="t", url="http://127.0.0.1:1")))
        return value_area(scripted, one=[first])(context)

    catalog = Catalog()
    catalog.register("values", factory)
    config = ExporterConfig(listen=ListenConfig(host="127.0.0.1", port=0))
    task = asyncio.create_task(run_exporter(config, catalog=catalog))
    await asyncio.wait_for(refreshed.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("source:")]
    with pytest.raises(RuntimeError, match="closed"):
        await clients[0].get("/")


# --------------------------------------------------------------------------------------
# The context factories build with
# --------------------------------------------------------------------------------------


def test_the_context_shares_one_client_per_target() -> None:
    context = ExporterContext(ExporterConfig(), SourceSet())
    one = TargetConfig(name="a", url="https://10.0.0.1:6443")
    assert context.target_client(one) is context.target_client(one)
    assert context.target_client(one) is not context.target_client(
        TargetConfig(name="b", url="https://10.0.0.2:6443")
    )


def test_apiserver_targets_fall_back_to_the_in_cluster_service() -> None:
    listed = (TargetConfig(name="a", url="https://10.0.0.1:6443"),)
    in_cluster = KubernetesAccessConfig(in_cluster=True)

    def targets(config: ExporterConfig) -> tuple[TargetConfig, ...]:
        return ExporterContext(config, SourceSet()).apiserver_targets()

    assert targets(ExporterConfig(apiservers=listed, kubernetes=in_cluster)) == listed
    (fallback,) = targets(ExporterConfig(kubernetes=in_cluster))
    assert fallback.url == "https://kubernetes.default.svc"
    assert targets(ExporterConfig()) == ()


@pytest.fixture
async def simulator() -> AsyncIterator[ApiServer]:
    scenario = ScenarioSettings(nodes=4, zones=2, pods_per_node=2, control_plane_nodes=1, seed=5)
    server = build_server(
        SimulatorSettings(
            host="127.0.0.1", port=0, kubelets=False, controllers=False, scenario=scenario
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_the_shared_kubernetes_client_reads_from_a_kubeconfig(
    simulator: ApiServer, tmp_path: Path
) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, simulator.url, simulator.admin_token)
    config = ExporterConfig(kubernetes=KubernetesAccessConfig(kubeconfig_path=str(path)))
    context = ExporterContext(config, SourceSet())
    try:
        api = await context.kube.get()
        assert await context.kube.get() is api
        nodes = await CoreV1Api(api).list_node()
        assert len(nodes.items) == 5
    finally:
        await context.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await context.kube.get()


async def test_unusable_kubernetes_credentials_name_the_setting(tmp_path: Path) -> None:
    missing = KubernetesAccessConfig(kubeconfig_path=str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"^exporter\.kubernetes\.kubeconfig_path: "):
        await kube_client(missing)
    # Not in a pod: no KUBERNETES_SERVICE_HOST, no service account token.
    with pytest.raises(ConfigError, match=r"^exporter\.kubernetes\.in_cluster: "):
        await kube_client(KubernetesAccessConfig(in_cluster=True))


# --------------------------------------------------------------------------------------
# --list-metrics
# --------------------------------------------------------------------------------------


def test_list_metrics_prints_every_family_as_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exporter", "--list-metrics"]) == 0
    out = capsys.readouterr().out
    assert out == render_metrics_table()
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "TYPE", "LABELS", "HELP"]
    names = [row.split()[0] for row in rows]
    assert "kubeballast_source_up" in names
    assert "kubeballast_source_refresh_errors_total" in names
    assert "kubeballast_build_info" in names


def test_list_metrics_markdown_is_the_metrics_doc(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exporter", "--list-metrics", "markdown"]) == 0
    assert capsys.readouterr().out == render_metrics_doc()
