"""The slim projections, and the cluster state built over them.

Projections are decoded from the API's JSON, so they are tested on JSON: hand-written
objects for the edge cases (absent fields, odd quantities, owner references) and real
objects of the simulator's generated cluster for the shapes that matter in practice.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from kubeballast.core.config import KubernetesAccessConfig
from kubeballast.core.kube import KubeClientProvider
from kubeballast.exporter import projections as p
from kubeballast.exporter.clusterstate import ClusterSnapshot, ClusterState
from kubeballast.exporter.contract import SourceError
from kubeballast.simulator import resources
from kubeballast.simulator.faults import Congestion
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server


def _decode(raw_type: type[Any], obj: dict[str, Any]) -> Any:
    return msgspec.json.decode(msgspec.json.encode(obj), type=raw_type)


# -- value parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("100m", 0.1),
        ("1.5", 1.5),
        (".5", 0.5),
        ("2k", 2000.0),
        ("128Mi", 128 * 2.0**20),
        ("1Ki", 1024.0),
        ("3Gi", 3 * 2.0**30),
        ("1Ti", 2.0**40),
        ("1Ei", 2.0**60),
        ("1M", 1e6),
        ("1.5G", 1.5e9),
        ("2T", 2e12),
        ("1E", 1e18),
        ("2e3", 2000.0),
        ("2E3", 2000.0),
        ("12e-3", 0.012),
        ("500n", 5e-7),
        ("10u", 1e-5),
        ("+1", 1.0),
        ("-1m", -0.001),
        ("104857600Ki", 104857600 * 1024.0),
    ],
)
def test_state_quantities_parse_to_base_units(text: str, value: float) -> None:
    assert math.isclose(p.parse_quantity(text), value, rel_tol=1e-12)


@pytest.mark.parametrize("text", ["", "m", "1mi", "1 Gi", "1KiB", "abc", "1e", "0x10"])
def test_state_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        p.parse_quantity(text)


def test_state_times_parse_rfc3339_and_microtime() -> None:
    assert p.parse_time("1970-01-01T00:01:00Z") == 60.0
    assert p.parse_time("1970-01-01T00:01:00.250000Z") == 60.25
    assert p.parse_time("1970-01-01T01:01:00+01:00") == 60.0
    # Zone-less means UTC, never the local zone of the exporter.
    assert p.parse_time("1970-01-01T00:01:00") == 60.0
    assert p.parse_time(None) is None
    assert p.parse_time("") is None
    assert p.parse_time("yesterday") is None


# -- nodes -------------------------------------------------------------------------------


def test_state_node_projection_reads_zone_ready_taints_and_resources() -> None:
    raw = _decode(
        p.RawNode,
        {
            "metadata": {
                "name": "n1",
                "resourceVersion": "42",
                "labels": {"topology.kubernetes.io/zone": "zone-b", "a": "b"},
                "managedFields": [{"manager": "kubelet"}],
            },
            "spec": {
                "unschedulable": True,
                "taints": [
                    {
                        "key": "node.kubernetes.io/unreachable",
                        "effect": "NoExecute",
                        "timeAdded": "1970-01-01T00:00:10Z",
                    },
                    {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
                ],
            },
            "status": {
                "capacity": {"cpu": "16", "example.com/dongle": "4"},
                "allocatable": {"cpu": "15900m"},
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {
                        "type": "Ready",
                        "status": "Unknown",
                        "lastTransitionTime": "1970-01-01T00:00:05Z",
                    },
                ],
            },
        },
    )
    assert raw.metadata.resource_version == "42"
    node = p.decode_node(raw)
    assert node == p.NodeP(
        name="n1",
        labels={"topology.kubernetes.io/zone": "zone-b", "a": "b"},
        zone="zone-b",
        unschedulable=True,
        taints=(
            p.TaintP("node.kubernetes.io/unreachable", "", "NoExecute", 10.0),
            p.TaintP("dedicated", "db", "NoSchedule", None),
        ),
        ready="Unknown",
        ready_since=5.0,
        capacity={"cpu": "16", "example.com/dongle": "4"},
        allocatable={"cpu": "15900m"},
        control_plane=False,
    )


def test_state_node_projection_of_a_bare_node() -> None:
    node = p.decode_node(
        _decode(
            p.RawNode,
            {
                "metadata": {
                    "name": "cp",
                    "labels": {
                        "failure-domain.beta.kubernetes.io/zone": "old-zone",
                        "node-role.kubernetes.io/master": "",
                    },
                }
            },
        )
    )
    assert node.zone == "old-zone"
    assert node.control_plane is True
    assert (node.ready, node.ready_since, node.taints, node.capacity) == ("", None, (), {})


# -- leases ------------------------------------------------------------------------------


def test_state_lease_projection_reads_microtime() -> None:
    lease = p.decode_lease(
        _decode(
            p.RawLease,
            {
                "metadata": {"name": "n1", "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": "n1",
                    "renewTime": "1970-01-01T00:00:01.500000Z",
                    "leaseDurationSeconds": 40,
                },
            },
        )
    )
    assert lease == p.LeaseP("n1", "kube-node-lease", "n1", 1.5, 40)
    empty = p.decode_lease(_decode(p.RawLease, {"metadata": {"name": "x"}}))
    assert (empty.holder, empty.renew_time, empty.duration_seconds) == ("", None, None)


# -- pods --------------------------------------------------------------------------------


def _pod(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {
            "namespace": "team-a",
            "name": "web-1",
            "uid": "u1",
            "resourceVersion": "7",
            "labels": {"app": "web"},
            "ownerReferences": [
                {"kind": "Node", "name": "not-the-controller"},
                {"kind": "ReplicaSet", "name": "web-abc", "controller": True},
            ],
        },
        "spec": {
            "nodeName": "n1",
            "containers": [
                {
                    "name": "a",
                    "resources": {
                        "requests": {"cpu": "1", "example.com/dongle": "1"},
                        "limits": {"example.com/dongle": "1"},
                    },
                },
                {
                    "name": "b",
                    "resources": {"requests": {"example.com/dongle": "2", "memory": "64Mi"}},
                },
                {"name": "c"},
            ],
            "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "4"}}}],
            "tolerations": [
                {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
                {"operator": "Exists"},
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 60,
                },
            ],
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    for path, value in changes.items():
        section, key = path.split("__")
        obj[section][key] = value
    return obj


def test_state_pod_projection_keeps_what_the_derivations_need() -> None:
    pod = p.decode_pod(_decode(p.RawPod, _pod()))
    assert pod == p.PodP(
        namespace="team-a",
        name="web-1",
        uid="u1",
        node_name="n1",
        phase="Running",
        ready=True,
        containers=3,
        owner_kind="ReplicaSet",
        owner_name="web-abc",
        # NoSchedule tolerations cannot hold off an eviction: dropped.
        tolerations=(
            p.TolerationP("", "Exists", "", "", None),
            p.TolerationP("node.kubernetes.io/unreachable", "Exists", "", "NoExecute", 60),
        ),
        extended_requests={"example.com/dongle": 3.0},
        terminating=False,
        labels={"app": "web"},
        # Regular containers only: the init container's 4 CPUs are not counted.
        cpu_request=1.0,
        memory_request=64 * 1024 * 1024,
    )


def test_state_pod_projection_of_pending_terminating_and_bare_pods() -> None:
    obj = _pod(spec__nodeName="", status__phase="Pending", status__conditions=None)
    obj["metadata"]["deletionTimestamp"] = "1970-01-01T00:00:00Z"
    del obj["metadata"]["ownerReferences"]
    del obj["metadata"]["labels"]
    pod = p.decode_pod(_decode(p.RawPod, obj))
    assert (pod.node_name, pod.phase, pod.ready, pod.terminating) == ("", "Pending", False, True)
    assert (pod.owner_kind, pod.owner_name, pod.labels) == ("", "", {})
    not_ready = _pod(status__conditions=[{"type": "Ready", "status": "False"}])
    assert p.decode_pod(_decode(p.RawPod, not_ready)).ready is False


def test_state_pods_share_equal_labels_and_tolerations() -> None:
    # 150 000 pods of a few hundred workloads must not hold 150 000 label dicts.
    first = p.decode_pod(_decode(p.RawPod, _pod()))
    second = p.decode_pod(_decode(p.RawPod, _pod()))
    assert first.labels is second.labels
    assert first.tolerations is second.tolerations
    other = _pod()
    other["metadata"]["labels"] = {"app": "db"}
    assert p.decode_pod(_decode(p.RawPod, other)).labels == {"app": "db"}


# -- ReplicaSets and workloads -----------------------------------------------------------


def test_state_replicaset_projection_names_its_deployment() -> None:
    rs = p.decode_replicaset(
        _decode(
            p.RawReplicaSet,
            {
                "metadata": {
                    "namespace": "team-a",
                    "name": "web-abc",
                    "uid": "r1",
                    "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}],
                },
                "spec": {"replicas": 3},
            },
        )
    )
    assert rs == p.ReplicaSetP("team-a", "web-abc", "r1", "Deployment", "web")


def test_state_workload_projection_reads_spread_and_anti_affinity() -> None:
    obj = {
        "metadata": {"namespace": "team-a", "name": "web", "uid": "d1"},
        "spec": {
            "replicas": 6,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 2,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                        }
                    ],
                    "affinity": {
                        "podAntiAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [
                                {"topologyKey": "kubernetes.io/hostname"}
                            ],
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "topology.kubernetes.io/zone"
                                    },
                                }
                            ],
                        }
                    },
                },
            },
        },
    }
    deployment = p.decode_deployment(_decode(p.RawDeployment, obj))
    assert deployment == p.WorkloadP(
        kind="Deployment",
        namespace="team-a",
        name="web",
        uid="d1",
        replicas=6,
        spread=(p.SpreadP(2, "topology.kubernetes.io/zone", "ScheduleAnyway"),),
        zone_anti_affinity=True,
        selector_labels={"app": "web"},
        anti_affinity_keys=("kubernetes.io/hostname",),
    )
    bare = p.decode_statefulset(_decode(p.RawStatefulSet, {"metadata": {"name": "db"}}))
    assert (bare.kind, bare.replicas, bare.spread, bare.zone_anti_affinity) == (
        "StatefulSet",
        1,
        (),
        False,
    )


# -- the cluster state over the simulator ----------------------------------------------

EXPORTER_TOKEN = "token-state-cache"


def _settings() -> Any:
    from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

    return SimulatorSettings(
        host="127.0.0.1",
        port=0,
        kubelets=True,
        controllers=False,
        clock_factor=20.0,
        scenario=ScenarioSettings(
            nodes=30,
            zones=3,
            pods_per_node=10,
            control_plane_nodes=1,
            seed=5,
            users={EXPORTER_TOKEN: "system:serviceaccount:monitoring:kube-ballast"},
        ),
    )


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    srv = build_server(_settings())
    srv.bookmark_interval = 0.2
    attach_control_plane(srv)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def state(server: ApiServer, tmp_path: Path) -> AsyncIterator[ClusterState]:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, server.url, EXPORTER_TOKEN)
    provider = KubeClientProvider(KubernetesAccessConfig(kubeconfig_path=path))
    cluster = ClusterState(provider, watch_timeout_seconds=(2, 4))
    await cluster.start()
    try:
        await asyncio.wait_for(cluster.wait_synced(), 30)
        yield cluster
    finally:
        await cluster.stop()
        await provider.close()


@pytest.fixture
async def admin(server: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with aiohttp.ClientSession(server.url, headers=headers) as session:
        yield session


def _expected(server: ApiServer) -> dict[str, Any]:
    """The aggregates computed straight from the simulator's store."""
    pods: Counter[str] = Counter()
    containers: Counter[str] = Counter()
    extended: dict[str, Counter[str]] = {}
    for entry in server.store.iter_current(resources.PODS):
        obj = entry.obj()
        if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        node = obj["spec"].get("nodeName", "")
        pods[node] += 1
        containers[node] += len(obj["spec"]["containers"])
        for container in obj["spec"]["containers"]:
            for name, quantity in container.get("resources", {}).get("requests", {}).items():
                if "/" in name:
                    extended.setdefault(node, Counter())[name] += p.parse_quantity(quantity)
    zones: dict[str, set[str]] = {}
    for entry in server.store.iter_current(resources.NODES):
        zone = entry.obj()["metadata"]["labels"].get("topology.kubernetes.io/zone", "")
        zones.setdefault(zone, set()).add(entry.name)
    return {
        "pods": dict(pods),
        "containers": dict(containers),
        "extended": {node: dict(c) for node, c in extended.items()},
        "zones": {zone: tuple(sorted(names)) for zone, names in zones.items()},
    }


def _matches(server: ApiServer, snap: ClusterSnapshot) -> bool:
    expected = _expected(server)
    return (
        {n: v.pods for n, v in snap.pods_by_node.items()} == expected["pods"]
        and {n: v.containers for n, v in snap.pods_by_node.items()} == expected["containers"]
        and snap.extended_requests_by_node == expected["extended"]
        and snap.nodes_by_zone == expected["zones"]
        and len(snap.pods) == server.store.count(resources.PODS)
    )


async def test_state_snapshot_matches_the_simulator(
    server: ApiServer, state: ClusterState, eventually: Any
) -> None:
    snap = state.snapshot()
    assert snap.synced
    assert len(snap.nodes) == server.store.count(resources.NODES) == 31
    assert set(snap.node_leases) == set(snap.nodes)  # one Lease per node, kube-node-lease only
    assert len(snap.replicasets) == sum(
        1 for _ in server.store.iter_current(resources.BY_KIND[("apps", "ReplicaSet")])
    )
    assert len(snap.workloads) == sum(
        1
        for kind in ("Deployment", "StatefulSet")
        for _ in server.store.iter_current(resources.BY_KIND[("apps", kind)])
    )
    await eventually(lambda: _matches(server, state.snapshot()))
    snap = state.snapshot()
    assert snap.extended_requests_by_node, "the scenario puts dongle pods on some nodes"
    # Pods of a Deployment are counted under the Deployment, through their ReplicaSet.
    deployment = next(
        w
        for w in snap.workloads.values()
        if w.kind == "Deployment" and w.namespace != "kube-system"
    )
    per_node = snap.owner_pods_by_node[("Deployment", deployment.namespace, deployment.name)]
    assert sum(per_node.values()) == deployment.replicas
    assert not any(kind == "ReplicaSet" for kind, _, _ in snap.owner_pods_by_node)
    # Heartbeats: the kubelets renew at clock factor 20, so Leases move.
    renewed = {name: lease.renew_time for name, lease in snap.node_leases.items()}
    await eventually(
        lambda: any(
            lease.renew_time != renewed[name]
            for name, lease in state.snapshot().node_leases.items()
        )
    )


async def test_state_snapshots_are_immutable_and_shared(
    server: ApiServer, state: ClusterState, admin: aiohttp.ClientSession, eventually: Any
) -> None:
    before = state.snapshot()
    # No await in between, so no change could land: the same object, not a rebuild.
    assert state.snapshot() is before
    counts = dict(before.pods_by_node)
    pods = before.pods
    victim = next(p for p in pods if p.node_name == "node-0002" and p.namespace != "kube-system")
    async with admin.delete(
        f"/api/v1/namespaces/{victim.namespace}/pods/{victim.name}",
        params={"gracePeriodSeconds": "0"},
    ) as resp:
        assert resp.status == 200
    await eventually(lambda: victim not in state.snapshot().pods)
    after = state.snapshot()
    assert after.version > before.version
    assert after.pods_by_node["node-0002"].pods == counts["node-0002"].pods - 1
    # The old snapshot did not move.
    assert before.pods_by_node == counts
    assert before.pods is pods
    assert victim in before.pods


async def test_state_faults_neither_lose_nor_double_count_pods(
    server: ApiServer, state: ClusterState, admin: aiohttp.ClientSession, eventually: Any
) -> None:
    async def add(name: str, node: str, dongles: int = 0) -> None:
        resources_ = {"requests": {"example.com/dongle": str(dongles)}} if dongles else {}
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "team-b"},
            "spec": {
                "nodeName": node,
                "containers": [
                    {"name": "a", "image": "busybox", "resources": resources_},
                    {"name": "b", "image": "busybox"},
                ],
            },
        }
        async with admin.post("/api/v1/namespaces/team-b/pods", json=body) as resp:
            assert resp.status == 201, await resp.text()

    async def remove(name: str) -> None:
        async with admin.delete(
            f"/api/v1/namespaces/team-b/pods/{name}", params={"gracePeriodSeconds": "0"}
        ) as resp:
            assert resp.status == 200, await resp.text()

    await eventually(lambda: _matches(server, state.snapshot()))
    # 1. Watches cut: changes right after must come from the history.
    server.disconnect_watches()
    await add("fault-a", "node-0001", dongles=2)
    await add("fault-b", "node-0001")
    await eventually(lambda: _matches(server, state.snapshot()))
    assert state.snapshot().extended_requests_by_node["node-0001"]["example.com/dongle"] >= 2
    # 2. Watches kept out while pods change, history compacted: 410, relist as a diff.
    server.faults.set_congestion(Congestion(reject_fraction=1.0, retry_after_seconds=1))
    server.disconnect_watches()
    await eventually(lambda: state.informers["pods"].status().errors["throttled"] >= 1)
    await remove("fault-a")
    await add("fault-c", "node-0004", dongles=1)
    async with admin.post("/_sim/compact") as resp:
        assert resp.status == 200
    server.faults.set_congestion(None)
    await eventually(lambda: state.informers["pods"].status().relists["gone"] >= 1)
    await eventually(lambda: _matches(server, state.snapshot()))
    assert (
        "example.com/dongle" not in state.snapshot().extended_requests_by_node.get("node-0001", {})
        or server.store.get(resources.PODS, "team-b", "fault-a") is None
    )
    # 3. Disconnect again after the relist: still exact.
    server.disconnect_watches()
    await remove("fault-b")
    await remove("fault-c")
    await eventually(lambda: _matches(server, state.snapshot()))


async def test_state_health_sources_and_collector(server: ApiServer, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, server.url, EXPORTER_TOKEN)
    provider = KubeClientProvider(KubernetesAccessConfig(kubeconfig_path=path))
    cluster = ClusterState(provider)
    try:
        sources = cluster.health_sources()
        assert [(s.kind, s.instance) for s in sources] == [
            ("informer", name)
            for name in ("nodes", "leases", "pods", "replicasets", "deployments", "statefulsets")
        ]
        collector = cluster.collector()
        # Before anything runs: families declared, no samples, no I/O.
        assert all(not f.samples for f in collector.collect())
        # The first refresh starts the caches; it fails until they are synced.
        with pytest.raises(SourceError):
            await sources[2].refresh()
        assert cluster.started
        await asyncio.wait_for(cluster.wait_synced(), 30)
        status = await sources[2].refresh()
        assert status.synced
        assert status.objects == server.store.count(resources.PODS)
        synced = {
            s.labels["resource"]: s.value
            for f in collector.collect()
            if f.name == "kubeballast_informer_synced"
            for s in f.samples
        }
        assert synced == dict.fromkeys(
            ("nodes", "leases", "pods", "replicasets", "deployments", "statefulsets"), 1.0
        )
    finally:
        await cluster.stop()
        await provider.close()
