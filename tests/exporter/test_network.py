"""The network plugin's DaemonSets: desired/ready/unavailable overall, agents per zone,
restarts as a counter, nodes whose network is unavailable; read through the shared
KubeReader from a simulated cluster (calico-node on every node), paginated."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kubeballast.core.config import ExporterConfig, KubernetesAccessConfig
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.kubeobjects import KubeReader, label_selector
from kubeballast.exporter.network import (
    NO_ZONE,
    NetworkPluginSource,
    RestartCounter,
    build_network,
)
from kubeballast.exporter.runner import SourceRunner, SourceSet
from kubeballast.simulator.admission import UserInfo
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.resources import NODES, PODS
from kubeballast.simulator.scenario import DAEMONSETS, ZONE_LABEL
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings
from kubeballast.simulator.store import decode

ADMIN = UserInfo(username="test-admin", groups=("system:masters",))

# -- pure pieces -------------------------------------------------------------------------


def test_label_selector_renders_match_labels_and_expressions() -> None:
    assert label_selector({"k8s-app": "calico-node", "a": "b"}) == "a=b,k8s-app=calico-node"
    expressions = [
        {"key": "tier", "operator": "In", "values": ["x", "y"]},
        {"key": "gone", "operator": "DoesNotExist"},
        {"key": "here", "operator": "Exists"},
        {"key": "env", "operator": "NotIn", "values": ["dev"]},
    ]
    assert label_selector(None, expressions) == "tier in (x,y),!gone,here,env notin (dev)"
    assert label_selector(None) == ""
    with pytest.raises(ValueError, match="operator"):
        label_selector(None, [{"key": "k", "operator": "Near"}])


def test_restart_counter_never_goes_down_when_pods_are_replaced() -> None:
    counter = RestartCounter()
    key = ("kube-system", "calico-node")
    counter.update(key, [("a", "z1", 2), ("b", "z1", 0)])
    assert counter.total(key, "z1") == 2  # starts at what it sees
    counter.update(key, [("a", "z1", 5), ("b", "z1", 0)])
    assert counter.total(key, "z1") == 5
    # "a" is replaced by "c" (restart count back to 0): the counter keeps 5.
    counter.forget_except({"b", "c"})
    counter.update(key, [("c", "z1", 0), ("b", "z1", 1)])
    assert counter.total(key, "z1") == 6
    assert counter.total(key, "z2") == 0


# -- against the simulator ---------------------------------------------------------------


@dataclass
class Setup:
    server: ApiServer
    context: ExporterContext
    registry: CollectorRegistry
    runner: SourceRunner[Any]

    def value(self, metric: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(metric, labels)


def nodes_by_zone(server: ApiServer) -> Counter[str]:
    zones: Counter[str] = Counter()
    for entry in server.store.iter_current(NODES):
        labels = decode(entry.raw)["metadata"].get("labels") or {}
        zones[labels.get(ZONE_LABEL) or NO_ZONE] += 1
    return zones


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    scenario = ScenarioSettings(nodes=6, zones=3, pods_per_node=5, control_plane_nodes=1, seed=7)
    server = build_server(
        SimulatorSettings(
            host="127.0.0.1", port=0, kubelets=False, controllers=False, scenario=scenario
        )
    )
    await server.start()
    context: ExporterContext | None = None
    try:
        kubeconfig = tmp_path / "kubeconfig"
        write_kubeconfig(kubeconfig, server.url, server.admin_token)
        config = ExporterConfig(kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)))
        context = ExporterContext(config, SourceSet())
        registry = CollectorRegistry()
        for collector in build_network(context):
            registry.register(collector)  # type: ignore[arg-type]
        runner = context.sources.views[("network_plugin", "cluster")]
        yield Setup(server, context, registry, runner)
    finally:
        if context is not None:
            await context.aclose()
        await server.stop()


async def test_calico_node_desired_ready_and_zones(setup: Setup) -> None:
    await setup.runner.refresh_once()
    assert setup.runner.up, setup.runner.last_error
    node_count = setup.server.store.count(NODES)
    ds = {"namespace": "kube-system", "daemonset": "calico-node"}
    assert setup.value("kubeballast_network_plugin_daemonset_desired_pods", **ds) == node_count
    assert setup.value("kubeballast_network_plugin_daemonset_ready_pods", **ds) == node_count
    assert setup.value("kubeballast_network_plugin_daemonset_unavailable_pods", **ds) == 0
    # kube-proxy runs on every node too, but is not a network plugin.
    assert (
        setup.value(
            "kubeballast_network_plugin_daemonset_desired_pods",
            namespace="kube-system",
            daemonset="kube-proxy",
        )
        is None
    )
    zones = nodes_by_zone(setup.server)
    assert len(zones) >= 3
    for zone, count in zones.items():
        assert setup.value("kubeballast_network_plugin_pods", **ds, zone=zone) == count
        assert setup.value("kubeballast_network_plugin_ready_pods", **ds, zone=zone) == count
        assert (
            setup.value("kubeballast_network_plugin_container_restarts_total", **ds, zone=zone) == 0
        )
        assert setup.value("kubeballast_network_nodes", zone=zone) == count
        assert setup.value("kubeballast_network_nodes_network_unavailable", zone=zone) == 0


def calico_pods(server: ApiServer) -> list[dict[str, Any]]:
    selector = decode(server.store.get(DAEMONSETS, "kube-system", "calico-node").raw)["spec"][
        "selector"
    ]["matchLabels"]
    pods = [decode(e.raw) for e in server.store.iter_current(PODS, "kube-system")]
    return [
        p
        for p in pods
        if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
    ]


async def test_not_ready_agent_restarts_and_unavailable_network_show_in_its_zone(
    setup: Setup,
) -> None:
    await setup.runner.refresh_once()
    pod = calico_pods(setup.server)[0]
    node = decode(setup.server.store.get(NODES, "", pod["spec"]["nodeName"]).raw)
    zone = node["metadata"]["labels"].get(ZONE_LABEL) or NO_ZONE
    in_zone = nodes_by_zone(setup.server)[zone]

    # The agent fails its readiness probe and its container restarted 3 times.
    status = pod["status"]
    for condition in status["conditions"]:
        if condition["type"] in ("Ready", "ContainersReady"):
            condition["status"] = "False"
    status["containerStatuses"][0]["restartCount"] += 3
    status["containerStatuses"][0]["ready"] = False
    setup.server.registry.update(
        PODS, "kube-system", pod["metadata"]["name"], pod, ADMIN, subresource="status"
    )
    # The plugin marks the node's network unavailable.
    for condition in node["status"]["conditions"]:
        if condition["type"] == "NetworkUnavailable":
            condition["status"] = "True"
            condition["reason"] = "CalicoIsDown"
    setup.server.registry.update(
        NODES, "", node["metadata"]["name"], node, ADMIN, subresource="status"
    )

    await setup.runner.refresh_once()
    assert setup.runner.up, setup.runner.last_error
    ds = {"namespace": "kube-system", "daemonset": "calico-node", "zone": zone}
    assert setup.value("kubeballast_network_plugin_pods", **ds) == in_zone
    assert setup.value("kubeballast_network_plugin_ready_pods", **ds) == in_zone - 1
    assert setup.value("kubeballast_network_plugin_container_restarts_total", **ds) == 3
    assert setup.value("kubeballast_network_nodes_network_unavailable", zone=zone) == 1
    for other in set(nodes_by_zone(setup.server)) - {zone}:
        labels = {**ds, "zone": other}
        assert setup.value("kubeballast_network_plugin_ready_pods", **labels) == setup.value(
            "kubeballast_network_plugin_pods", **labels
        )


async def test_reads_are_paginated_and_slim(setup: Setup) -> None:
    """With pages of 2 the source still sees every agent (continue tokens), and it
    sends one LIST per kind, in pages: DaemonSets, nodes, and calico-node's pods."""
    api = await setup.context.kube.get()

    async def client() -> Any:
        return api

    reader = KubeReader(client, page_size=2)
    source = NetworkPluginSource(reader, daemonsets=("calico-node",))
    snapshot = await source.refresh()
    (calico,) = snapshot.daemonsets
    node_count = setup.server.store.count(NODES)
    assert sum(z.pods for z in calico.zones.values()) == node_count
    daemonsets = setup.server.store.count(DAEMONSETS)
    pages = -(-daemonsets // 2) + 2 * -(-node_count // 2)  # ceil: DS + nodes + pods
    assert reader.requests == pages
