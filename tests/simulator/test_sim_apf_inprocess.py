"""The in-process kubelets and components are classified with the stored FlowSchemas.

Why: the simulated kubelets, kube-scheduler and kube-controller-manager send their
requests in process (no HTTP), but on a real cluster the apiserver classifies theirs like
anyone's: a FlowSchema a cluster admin creates for ``system:nodes`` or for the
scheduler's leader election applies to them. A congestion that sheds ``node-high`` must
therefore spare heartbeats that a stored FlowSchema moved into a level of their own,
exactly as it spares an HTTP client's requests, and the classification must not be
rebuilt per request.
"""

from __future__ import annotations

from typing import Any

from sim_apf_objects import flow_schema, limited_level

from kubeballast.simulator.admission import UserInfo
from kubeballast.simulator.components import Component
from kubeballast.simulator.faults import Congestion
from kubeballast.simulator.resources import BY_KEY, FLOWCONTROL
from kubeballast.simulator.server import (
    ADMIN_USER,
    ApiServer,
    attach_control_plane,
    build_server,
    user_for,
)
from kubeballast.simulator.settings import SimulatorSettings

FLOW_SCHEMAS = BY_KEY[(FLOWCONTROL, "flowschemas")]
LEVELS = BY_KEY[(FLOWCONTROL, "prioritylevelconfigurations")]


def admin() -> UserInfo:
    return user_for(ADMIN_USER)


def cluster(sim_settings: Any) -> ApiServer:
    settings: SimulatorSettings = sim_settings(kubelets=True, controllers=False)
    server = build_server(settings)
    attach_control_plane(server)
    return server


def run_kubelets(server: ApiServer, sim_seconds: int) -> None:
    """Drive the kubelets through ``sim_seconds`` of simulated time, one second a step."""
    kubelets = server.kubelets
    assert kubelets is not None
    for _ in range(sim_seconds):
        server.clock.advance(1.0)
        kubelets.tick()


def store_level_and_schema(server: ApiServer, level: str, schema: dict[str, Any]) -> None:
    server.registry.create(LEVELS, "", limited_level(level), admin())
    server.registry.create(FLOW_SCHEMAS, "", schema, admin())


def test_kubelet_heartbeats_follow_a_stored_flowschema(sim_settings: Any) -> None:
    server = cluster(sim_settings)
    kubelets = server.kubelets
    assert kubelets is not None
    run_kubelets(server, 12)  # every kubelet renewed once
    nodes = len(kubelets.nodes)
    assert kubelets.stats.lease_renewals >= nodes
    # Shed node-high entirely: the default system-node-high schema puts heartbeats there.
    server.faults.set_congestion(
        Congestion(lease_reject_fraction=1.0, priority_levels=frozenset({"node-high"}))
    )
    before = kubelets.stats.lease_renewals
    run_kubelets(server, 30)
    assert kubelets.stats.lease_renewals == before
    assert kubelets.stats.lease_update_failures > 0

    # An admin moves node heartbeats into a level of their own, ahead of system-node-high.
    rebuilds = server.apf.rebuilds
    store_level_and_schema(
        server,
        "node-critical",
        flow_schema(
            "nodes-critical",
            "node-critical",
            300,
            [{"kind": "Group", "group": {"name": "system:nodes"}}],
            verbs=["update", "get", "create"],
            apiGroups=["coordination.k8s.io"],
            resources=["leases"],
            namespaces=["kube-node-lease"],
            clusterScope=False,
        ),
    )
    before = kubelets.stats.lease_renewals
    run_kubelets(server, 30)
    assert kubelets.stats.lease_renewals - before >= nodes
    # One rebuild for the two writes, none per request.
    assert server.apf.rebuilds == rebuilds + 1
    # What the kubelets used is what an HTTP request from a node gets.
    assert server.apf.classify(
        "system:node:node-0000",
        ("system:nodes",),
        "update",
        "coordination.k8s.io",
        "leases",
        "kube-node-lease",
    ) == ("nodes-critical", "node-critical")


def test_component_leader_election_follows_a_stored_flowschema(sim_settings: Any) -> None:
    server = cluster(sim_settings)
    scheduler: Component = server.components["kube-scheduler"]
    assert scheduler.renew()
    # system-leader-election puts the scheduler's Lease into leader-election: shed it.
    server.faults.set_congestion(
        Congestion(reject_fraction=1.0, priority_levels=frozenset({"leader-election"}))
    )
    assert not scheduler.renew()
    store_level_and_schema(
        server,
        "control-plane",
        flow_schema(
            "scheduler-first",
            "control-plane",
            50,
            [{"kind": "User", "user": {"name": "system:kube-scheduler"}}],
        ),
    )
    assert scheduler.renew()
    # The controller-manager is still classified by the defaults, and still shed.
    assert not server.components["kube-controller-manager"].renew()
