"""Schedulers and controller-managers: health probes, leader Leases, queues and latency.

The pure derivations are fed with /metrics pages rendered by the simulator's own
``ComponentMetrics`` (the real names, labels and buckets); the sources run against a
simulated cluster with its scheduler and controller-manager endpoints attached, built
through the catalog factory exactly as the exporter builds them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from kubeballast.core.config import ExporterConfig, KubernetesAccessConfig, TargetConfig
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.components import (
    SPECS,
    ComponentsCollector,
    build_components,
    busiest_queue,
    parse_controller_manager_metrics,
    parse_scheduler_metrics,
)
from kubeballast.exporter.contract import MetricsCollector
from kubeballast.exporter.runner import SourceRunner, SourceSet
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.metrics import ComponentMetrics
from kubeballast.simulator.resources import PODS
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

# -- pure derivations --------------------------------------------------------------------


def scheduler_page(metrics: ComponentMetrics) -> str:
    return metrics.render()[0].decode()


def test_scheduler_p99_covers_only_the_attempts_since_the_previous_scrape() -> None:
    metrics = ComponentMetrics("kube-scheduler")
    metrics.set_pending_pods("active", 3)
    metrics.set_pending_pods("unschedulable", 2)
    for _ in range(100):
        metrics.observe_scheduling("scheduled", 4.0)  # slow history before the interval
    first, buckets = parse_scheduler_metrics(scheduler_page(metrics), None)
    assert first.attempt_p99_seconds is None  # no previous scrape: no interval yet
    assert first.pending_pods == {"active": 3.0, "unschedulable": 2.0}

    for _ in range(100):
        metrics.observe_scheduling("scheduled", 0.003)
    second, buckets = parse_scheduler_metrics(scheduler_page(metrics), buckets)
    assert second.attempt_p99_seconds is not None
    assert second.attempt_p99_seconds < 0.01  # the old 4 s attempts are not in it

    third, _ = parse_scheduler_metrics(scheduler_page(metrics), buckets)
    assert third.attempt_p99_seconds is None  # no attempts during the interval


def test_controller_manager_queues_busiest_and_counter_reset() -> None:
    metrics = ComponentMetrics("kube-controller-manager")
    metrics.set_workqueue("replicaset", 1, 10, 0.01)
    metrics.set_workqueue("endpoint", 0, 10, 0.01)
    first, adds, buckets = parse_controller_manager_metrics(
        metrics.render()[0].decode(), None, None
    )
    assert first.busiest is None  # nothing to compare with yet
    assert first.queues["replicaset"].depth == 1.0
    assert first.queues["replicaset"].adds_in_interval is None

    metrics.set_workqueue("replicaset", 40, 100, 2.0)  # churning: +90
    metrics.set_workqueue("endpoint", 0, 20, 0.01)  # +10
    second, adds, buckets = parse_controller_manager_metrics(
        metrics.render()[0].decode(), adds, buckets
    )
    assert second.busiest == "replicaset"
    assert second.busiest_adds_ratio == pytest.approx(0.9)
    assert second.queues["replicaset"].adds_in_interval == 90.0
    assert second.queues["replicaset"].depth == 40.0
    p99 = second.queues["replicaset"].queue_p99_seconds
    assert p99 is not None
    assert 1.0 <= p99 <= 10.0

    # A restarted controller-manager counts from zero: the new value is the increase.
    restarted = ComponentMetrics("kube-controller-manager")
    restarted.set_workqueue("replicaset", 0, 5, 0.0)
    restarted.set_workqueue("endpoint", 0, 15, 0.0)
    third, _, _ = parse_controller_manager_metrics(restarted.render()[0].decode(), adds, buckets)
    assert third.queues["replicaset"].adds_in_interval == 5.0
    assert third.busiest == "endpoint"
    assert third.busiest_adds_ratio == pytest.approx(0.75)


def test_busiest_queue_ties_and_silence() -> None:
    assert busiest_queue({}) == (None, None)
    assert busiest_queue({"a": 0.0, "b": 0.0}) == (None, None)
    assert busiest_queue({"b": 5.0, "a": 5.0}) == ("a", 0.5)


def test_specs_follow_the_naming_conventions() -> None:
    for spec in SPECS:
        assert spec.name.startswith("kubeballast_")
        assert not spec.name.endswith("_total")  # counters are named without it
        assert "target" in spec.labels or "component" in spec.labels


# -- against the simulator ---------------------------------------------------------------


@dataclass
class Exporter:
    server: ApiServer
    context: ExporterContext
    collectors: list[MetricsCollector]
    registry: CollectorRegistry

    def runner(self, kind: str, instance: str) -> SourceRunner[object]:
        return self.context.sources.views[(kind, instance)]

    def value(self, metric: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(metric, labels)

    async def refresh(self, kind: str, instance: str) -> SourceRunner[object]:
        runner = self.runner(kind, instance)
        await runner.refresh_once()
        return runner


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    """Poll ``check`` until it holds; generous, for a loaded two-core machine."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.05)


def sim_settings() -> SimulatorSettings:
    scenario = ScenarioSettings(nodes=6, zones=3, pods_per_node=5, control_plane_nodes=1, seed=7)
    return SimulatorSettings(
        host="127.0.0.1", port=0, kubelets=False, controllers=False, scenario=scenario
    )


@pytest.fixture
async def exporter(tmp_path: Path) -> AsyncIterator[Exporter]:
    server = build_server(sim_settings())
    attach_control_plane(server)
    await server.start()
    context: ExporterContext | None = None
    try:
        kubeconfig = tmp_path / "kubeconfig"
        write_kubeconfig(kubeconfig, server.url, server.admin_token)
        config = ExporterConfig(
            kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)),
            schedulers=(
                TargetConfig(
                    name="sched-0",
                    url=server.components["kube-scheduler"].url,
                    timeout_seconds=3.0,
                    interval_seconds=5.0,
                ),
            ),
            controller_managers=(
                TargetConfig(
                    name="kcm-0",
                    url=server.components["kube-controller-manager"].url,
                    timeout_seconds=3.0,
                    interval_seconds=5.0,
                ),
            ),
        )
        context = ExporterContext(config, SourceSet())
        collectors = list(build_components(context))
        registry = CollectorRegistry()
        for collector in collectors:
            registry.register(collector)  # type: ignore[arg-type]
        yield Exporter(server, context, collectors, registry)
    finally:
        if context is not None:
            await context.aclose()
        await server.stop()


def test_factory_builds_nothing_without_targets() -> None:
    context = ExporterContext(ExporterConfig(), SourceSet())
    assert build_components(context) == []
    assert len(context.sources) == 0


async def test_factory_registers_one_source_per_target_and_lease(exporter: Exporter) -> None:
    assert set(exporter.context.sources.views) == {
        ("scheduler_health", "sched-0"),
        ("scheduler_metrics", "sched-0"),
        ("controller_manager_health", "kcm-0"),
        ("controller_manager_metrics", "kcm-0"),
        ("leader_lease", "kube-scheduler"),
        ("leader_lease", "kube-controller-manager"),
    }
    described = {spec.name for c in exporter.collectors for spec in c.metric_specs()}
    assert "kubeballast_component_leader_info" in described


async def test_every_series_appears_with_the_cluster_values(exporter: Exporter) -> None:
    scheduler = exporter.server.components["kube-scheduler"]
    kcm = exporter.server.components["kube-controller-manager"]
    for runner in exporter.context.sources:
        await runner.refresh_once()
        assert runner.up, runner.last_error

    # The leader Lease names the simulated component once it has renewed.
    async def holder_is_scheduler() -> bool:
        await exporter.refresh("leader_lease", "kube-scheduler")
        return (
            exporter.value(
                "kubeballast_component_leader_info",
                component="kube-scheduler",
                holder=scheduler.identity,
            )
            == 1.0
        )

    await eventually(holder_is_scheduler)
    await exporter.refresh("leader_lease", "kube-controller-manager")
    assert (
        exporter.value(
            "kubeballast_component_leader_info",
            component="kube-controller-manager",
            holder=kcm.identity,
        )
        == 1.0
    )
    age = exporter.value(
        "kubeballast_component_leader_renew_age_seconds", component="kube-scheduler"
    )
    assert age is not None
    assert 0.0 <= age < 60.0
    assert (
        exporter.value(
            "kubeballast_component_leader_lease_duration_seconds", component="kube-scheduler"
        )
        == 15.0
    )
    transitions = exporter.value(
        "kubeballast_component_leader_transitions", component="kube-scheduler"
    )
    assert transitions is not None
    assert transitions >= 0
    assert (
        exporter.value("kubeballast_component_leader_lease_exists", component="kube-scheduler")
        == 1.0
    )

    for component, target in (("kube-scheduler", "sched-0"), ("kube-controller-manager", "kcm-0")):
        labels = {"component": component, "target": target}
        assert exporter.value("kubeballast_component_healthy", **labels) == 1.0
        assert exporter.value("kubeballast_component_health_http_status_code", **labels) == 200.0
        duration = exporter.value("kubeballast_component_health_probe_duration_seconds", **labels)
        assert duration is not None
        assert duration >= 0.0

    # Scrapes: leadership as each replica reports it, queues, pending pods.
    async def both_lead() -> bool:
        return scheduler.is_leader and kcm.is_leader

    await eventually(both_lead)
    await exporter.refresh("scheduler_metrics", "sched-0")
    await exporter.refresh("controller_manager_metrics", "kcm-0")
    assert (
        exporter.value(
            "kubeballast_component_is_leader", component="kube-scheduler", target="sched-0"
        )
        == 1.0
    )
    assert (
        exporter.value(
            "kubeballast_component_is_leader", component="kube-controller-manager", target="kcm-0"
        )
        == 1.0
    )
    assert (
        exporter.value("kubeballast_scheduler_pending_pods", target="sched-0", queue="active") == 0
    )
    for queue in ("node_lifecycle_controller", "replicaset", "deployment", "daemonset"):
        assert (
            exporter.value(
                "kubeballast_controller_manager_workqueue_depth", target="kcm-0", name=queue
            )
            == 0.0
        )
        assert (
            exporter.value(
                "kubeballast_controller_manager_workqueue_adds_total", target="kcm-0", name=queue
            )
            == 0.0
        )


async def test_pending_pods_and_attempt_latency_follow_the_scheduler(exporter: Exporter) -> None:
    scheduler = exporter.server.components["kube-scheduler"]
    await exporter.refresh("scheduler_metrics", "sched-0")
    assert (
        exporter.value(
            "kubeballast_scheduler_scheduling_attempt_duration_p99_seconds", target="sched-0"
        )
        is None
    )
    # A pod without a node is pending in the simulated scheduler's active queue.
    pod = {
        "metadata": {"name": "waiting", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    exporter.server.registry.create(PODS, "default", pod, scheduler.user)
    for _ in range(50):
        scheduler.metrics.observe_scheduling("scheduled", 0.2)
    await exporter.refresh("scheduler_metrics", "sched-0")
    assert (
        exporter.value("kubeballast_scheduler_pending_pods", target="sched-0", queue="active") == 1
    )
    p99 = exporter.value(
        "kubeballast_scheduler_scheduling_attempt_duration_p99_seconds", target="sched-0"
    )
    assert p99 is not None
    assert 0.1 < p99 <= 0.256
    assert not math.isnan(p99)


async def test_a_killed_scheduler_is_unhealthy_within_one_refresh(exporter: Exporter) -> None:
    await exporter.refresh("scheduler_health", "sched-0")
    labels = {"component": "kube-scheduler", "target": "sched-0"}
    assert exporter.value("kubeballast_component_healthy", **labels) == 1.0

    await exporter.server.components["kube-scheduler"].kill()
    runner = await exporter.refresh("scheduler_health", "sched-0")
    assert runner.up  # the probe worked; its verdict is "unhealthy"
    assert exporter.value("kubeballast_component_healthy", **labels) == 0.0
    assert exporter.value("kubeballast_component_health_http_status_code", **labels) == 0.0
    # The metrics scrape fails instead: its source is down, its last values stay.
    metrics = await exporter.refresh("scheduler_metrics", "sched-0")
    assert not metrics.up
    assert metrics.errors["connect"] == 1
    # The other component is not affected.
    await exporter.refresh("controller_manager_health", "kcm-0")
    assert (
        exporter.value(
            "kubeballast_component_healthy", component="kube-controller-manager", target="kcm-0"
        )
        == 1.0
    )

    await exporter.server.components["kube-scheduler"].revive()
    await exporter.refresh("scheduler_health", "sched-0")
    assert exporter.value("kubeballast_component_healthy", **labels) == 1.0


def test_collector_without_snapshots_yields_empty_families() -> None:
    collector = ComponentsCollector(health={}, schedulers={}, controller_managers={}, leases={})
    families = list(collector.collect())
    assert {f.name for f in families} == {
        spec.name for spec in SPECS
    }  # every declared family, no samples
    assert all(not f.samples for f in families)
