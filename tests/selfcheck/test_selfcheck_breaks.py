"""Each check, driven to WARN and to FAIL by breaking exactly its item on the simulator.

Every case starts from the healthy cluster (selfcheck_support.make_healthy), breaks one
thing the way an operator's cluster breaks (an undersized control-plane node, a node
over 100 pods, heartbeats moved into a general APF level, the guard's policy deleted,
a pause past its expiry, a workload crowded into one zone, network agents not ready
...), runs the whole check list and asserts that exactly that check changed, to the
expected status, with a summary and evidence that name the cause.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selfcheck_support import (
    EVENTS_OVERRIDE,
    Admin,
    Cluster,
    check,
    control_plane_node,
    create_deployment,
    create_pod,
    nodes_by_zone,
    not_passing,
    run,
    set_pods_ready,
    settings_for,
    small,
    start_cluster,
    strategic_patch,
    write_pause,
)

from kubeballast.selfcheck.model import Status

pytestmark = pytest.mark.timeout(180)

Break = Callable[[Admin], Awaitable[None]]


async def undersize_control_plane(admin: Admin) -> None:
    name = await control_plane_node(admin)
    await admin.merge_patch(
        f"/api/v1/nodes/{name}/status", {"status": {"capacity": {"cpu": "1", "memory": "2Gi"}}}
    )


async def hide_control_plane_capacity(admin: Admin) -> None:
    name = await control_plane_node(admin)
    await admin.merge_patch(f"/api/v1/nodes/{name}/status", {"status": {"capacity": None}})


def crowd_node(total: int) -> Break:
    async def crowd(admin: Admin) -> None:
        node = (await nodes_by_zone(admin))["zone-a"][0]
        listed = await admin.get(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
        for index in range(total - len(listed["items"])):
            await create_pod(admin, "team-a", f"crowd-{index}", node)

    return crowd


def heartbeats_to(level: str) -> Break:
    async def move(admin: Admin) -> None:
        await admin.merge_patch(
            "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/system-node-high",
            {"spec": {"priorityLevelConfiguration": {"name": level}}},
        )

    return move


async def leader_election_with_heartbeats(admin: Admin) -> None:
    await admin.merge_patch(
        "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/system-leader-election",
        {"spec": {"priorityLevelConfiguration": {"name": "node-high"}}},
    )


async def fail_readyz(admin: Admin) -> None:
    await admin.sim("readyz", {"check": "etcd", "ok": False})


async def delete_guard_policy(admin: Admin) -> None:
    await admin.delete(
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/"
        "kube-ballast-eviction-guard"
    )


async def delete_guard_flowschema(admin: Admin) -> None:
    await admin.delete("/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/kube-ballast-receiver")


async def pause_now(admin: Admin) -> None:
    await write_pause(admin, expires_in=600)


async def pause_overdue(admin: Admin) -> None:
    await write_pause(admin, expires_in=-120)


async def single_zone_workload(admin: Admin) -> None:
    zone_a = (await nodes_by_zone(admin))["zone-a"]
    await create_deployment(admin, "team-a", "one-zone-api", zone_a[:2])


async def skewed_workload(admin: Admin) -> None:
    zones = await nodes_by_zone(admin)
    nodes = [zones["zone-a"][0], zones["zone-a"][1], zones["zone-b"][0]]
    await create_deployment(admin, "team-a", "skewed-api", nodes, max_skew=1)


def calico_not_ready(zone_wide: bool) -> Break:
    async def stop(admin: Admin) -> None:
        zone_a = (await nodes_by_zone(admin, control_plane=True))["zone-a"]
        chosen = set(zone_a if zone_wide else zone_a[:1])
        changed = await set_pods_ready(admin, "kube-system", "k8s-app%3Dcalico-node", chosen)
        assert changed == len(chosen)

    return stop


async def network_unavailable(admin: Admin) -> None:
    node = (await nodes_by_zone(admin))["zone-b"][0]
    await strategic_patch(
        admin,
        f"/api/v1/nodes/{node}/status",
        {"status": {"conditions": [{"type": "NetworkUnavailable", "status": "True"}]}},
    )


async def split_events_off(admin: Admin) -> None:
    for name in await admin.static_pods("kube-apiserver"):
        await admin.recreate_static_pod(name, lambda cmd: [c for c in cmd if c != EVENTS_OVERRIDE])


async def no_service_account_credentials(admin: Admin) -> None:
    for name in await admin.static_pods("kube-controller-manager"):
        await admin.recreate_static_pod(
            name, lambda cmd: [c for c in cmd if not c.startswith("--use-service-account")]
        )


@dataclass(frozen=True)
class Case:
    check: str
    status: Status
    breaks: Break
    cause: str
    """A phrase the summary must contain."""
    evidence: str = ""
    """A phrase the evidence's JSON must contain."""
    settings: dict[str, Any] = field(default_factory=dict)


CASES = {
    "undersized control plane": Case(
        "controlplane.sizing", Status.FAIL, undersize_control_plane, "undersized", '"cpu_cores":1'
    ),
    "control plane capacity unknown": Case(
        "controlplane.sizing",
        Status.WARN,
        hide_control_plane_capacity,
        "without reported capacity",
        '"undersized":null',
    ),
    "pods per node over the limit": Case(
        "scale.limits",
        Status.FAIL,
        crowd_node(101),
        "pods_per_node 101 > 100",
        '"nodes_over_pod_limit":1',
    ),
    "pods per node near the limit": Case(
        "scale.limits", Status.WARN, crowd_node(85), "pods_per_node at 85%", '"current":85'
    ),
    "heartbeats in a general level": Case(
        "apiserver.apf",
        Status.FAIL,
        heartbeats_to("global-default"),
        "node_lease_renewal shares general level 'global-default'",
        '"priority_level":"global-default"',
    ),
    "heartbeats in a missing level": Case(
        "apiserver.apf",
        Status.FAIL,
        heartbeats_to("gone"),
        "missing priority level 'gone'",
    ),
    "leader election shares the heartbeats' level": Case(
        "apiserver.apf",
        Status.WARN,
        leader_election_with_heartbeats,
        "share priority level node-high",
    ),
    "readyz failing": Case("apiserver.health", Status.FAIL, fail_readyz, "failing: etcd", '"etcd"'),
    "guard not installed": Case(
        "evictionguard.installed",
        Status.FAIL,
        delete_guard_policy,
        "policy kube-ballast-eviction-guard is not installed",
        '"policy":{"name":"kube-ballast-eviction-guard","installed":false}',
    ),
    "guard without its FlowSchema": Case(
        "evictionguard.installed",
        Status.WARN,
        delete_guard_flowschema,
        "FlowSchema kube-ballast-receiver is not installed",
    ),
    "evictions paused now": Case(
        "evictionguard.pause",
        Status.WARN,
        pause_now,
        "paused now by kube-ballast-receiver-0",
        '"reason":"storm"',
    ),
    "pause past its expiry": Case(
        "evictionguard.pause",
        Status.FAIL,
        pause_overdue,
        "past the pause's expiry",
        '"paused":true',
    ),
    "single-zone workload": Case(
        "zones.spread",
        Status.FAIL,
        single_zone_workload,
        "team-a/one-zone-api",
        '"risk":"single_zone"',
    ),
    "zone skew over maxSkew": Case(
        "zones.spread", Status.WARN, skewed_workload, "team-a/skewed-api", '"max_skew":1'
    ),
    "network agents down in a zone": Case(
        "network.plugin",
        Status.FAIL,
        calico_not_ready(zone_wide=True),
        "no ready agent: calico-node in zone-a",
        '"zone-a":"0/4"',
    ),
    "a network agent not ready": Case(
        "network.plugin",
        Status.WARN,
        calico_not_ready(zone_wide=False),
        "calico-node zone-a 3/4",
    ),
    "a node without network": Case(
        "network.plugin",
        Status.FAIL,
        network_unavailable,
        "nodes with NetworkUnavailable: 1 in zone-b",
        '"network_unavailable_by_zone":{"zone-b":1}',
    ),
    "Events not split (small cluster)": Case(
        "etcd.events_split",
        Status.WARN,
        split_events_off,
        "Events share the main etcd",
        '"etcd-servers-overrides":null',
    ),
    "no service-account credentials": Case(
        "controllermanager.service_account_credentials",
        Status.FAIL,
        no_service_account_credentials,
        "without --use-service-account-credentials",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_selfcheck_one_broken_item_shows_in_its_check(healthy: Cluster, name: str) -> None:
    case = CASES[name]
    await case.breaks(healthy.admin)

    report = await run(healthy.settings(**case.settings))

    result = check(report, case.check)
    assert result.status is case.status, result
    assert case.cause in result.summary
    assert case.evidence in json.dumps(result.evidence, separators=(",", ":"))
    assert result.fix
    # Exactly that item changed: everything else still passes.
    assert set(not_passing(report)) == {case.check}, not_passing(report)


async def test_selfcheck_events_not_split_fails_a_large_cluster(tmp_path: Path) -> None:
    server, kubeconfig = await start_cluster(
        small(nodes=501, pods_per_node=1), tmp_path, components=False
    )
    try:
        settings = settings_for(kubeconfig)
        started = time.monotonic()
        report = await run(settings, "etcd.events_split")
        assert time.monotonic() - started < 30
    finally:
        await server.stop()
    result = check(report, "etcd.events_split")
    assert result.status is Status.FAIL
    assert "501 workers" in result.summary
    assert result.evidence["workers"] == 501
