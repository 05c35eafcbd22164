"""The scenario model: the objects a simulated cluster starts with.

Most tests read one small cluster (10 workers over 3 zones, 10 pods per worker, 2
containers per pod); one test generates the full 5000 x 30 cluster and prints how long
that took (run with ``-s`` to read it).
"""

from __future__ import annotations

import collections
import datetime
import re
import time
from typing import Any

import pytest

from kubeballast.simulator.scenario import (
    ANTI_AFFINITY_DEPLOYMENTS,
    CONTROL_PLANE_COMPONENTS,
    CONTROL_PLANE_LABEL,
    CROWDED_DEPLOYMENTS,
    CUSTOM_TOLERATION_SECONDS,
    DAEMONSET_NAMES,
    LARGE_CONFIGMAPS,
    NIC_DEPLOYMENTS,
    NIC_RESOURCE,
    NODE_LEASE_NAMESPACE,
    REGION_LABEL,
    SPREAD_DEPLOYMENTS,
    SYSTEM_NAMESPACES,
    TENANT_NAMESPACES,
    ZONE_LABEL,
    control_plane_size,
    format_micro_time,
    format_time,
    generate,
    node_name,
    zone_name,
)
from kubeballast.simulator.settings import NodeLifecycleSettings, ScenarioSettings

NOW = datetime.datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=datetime.UTC)
SMALL = ScenarioSettings(
    nodes=10, zones=3, pods_per_node=10, containers_per_pod=2, control_plane_nodes=3, seed=7
)
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MICRO_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def cluster() -> list[tuple[str, Obj]]:
    return [(rt.kind, obj) for rt, obj in generate(SMALL, NOW)]


def of_kind(cluster: list[tuple[str, Obj]], kind: str) -> list[Obj]:
    return [obj for k, obj in cluster if k == kind]


def find(objs: list[Obj], namespace: str | None, name: str) -> Obj:
    for obj in objs:
        meta = obj["metadata"]
        if meta["name"] == name and meta.get("namespace") == namespace:
            return obj
    raise AssertionError(f"{namespace}/{name} not generated")


def workers(cluster: list[tuple[str, Obj]]) -> dict[str, Obj]:
    return {
        n["metadata"]["name"]: n
        for n in of_kind(cluster, "Node")
        if CONTROL_PLANE_LABEL not in n["metadata"]["labels"]
    }


def pods_of(cluster: list[tuple[str, Obj]], namespace: str, deployment: str) -> list[Obj]:
    """The pods of a Deployment, found through its ReplicaSet's owner references."""
    deploy = find(of_kind(cluster, "Deployment"), namespace, deployment)
    rs_uids = {
        rs["metadata"]["uid"]
        for rs in of_kind(cluster, "ReplicaSet")
        if rs["metadata"]["ownerReferences"][0]["uid"] == deploy["metadata"]["uid"]
    }
    return [
        p
        for p in of_kind(cluster, "Pod")
        if p["metadata"].get("ownerReferences", [{}])[0].get("uid") in rs_uids
    ]


def zone_of(cluster: list[tuple[str, Obj]]) -> dict[str, str]:
    return {
        n["metadata"]["name"]: n["metadata"]["labels"][ZONE_LABEL] for n in of_kind(cluster, "Node")
    }


# --- shape and counts ----------------------------------------------------------------------


def test_counts_per_kind(cluster: list[tuple[str, Obj]]) -> None:
    counts = collections.Counter(kind for kind, _ in cluster)
    nodes = SMALL.nodes + SMALL.control_plane_nodes
    assert counts["Namespace"] == len(SYSTEM_NAMESPACES) + len(TENANT_NAMESPACES)
    assert counts["Node"] == nodes
    assert counts["Lease"] == nodes + 2  # one per node, plus two leader-election leases
    assert counts["DaemonSet"] == len(DAEMONSET_NAMES)
    assert counts["Deployment"] == counts["ReplicaSet"]
    assert counts["StatefulSet"] >= 1
    assert counts["Service"] == counts["Endpoints"] >= 1
    assert counts["Event"] >= 1
    # Workers hold exactly pods_per_node each; control-plane nodes hold their static pods
    # and the daemon pods.
    per_cp = len(CONTROL_PLANE_COMPONENTS) + len(DAEMONSET_NAMES)
    assert counts["Pod"] == SMALL.nodes * SMALL.pods_per_node + SMALL.control_plane_nodes * per_cp


def test_every_worker_runs_exactly_pods_per_node(cluster: list[tuple[str, Obj]]) -> None:
    per_node = collections.Counter(p["spec"]["nodeName"] for p in of_kind(cluster, "Pod"))
    for name in workers(cluster):
        assert per_node[name] == SMALL.pods_per_node, name
    assert set(workers(cluster)) == {node_name(i) for i in range(SMALL.nodes)}


def test_every_pod_on_a_worker_has_containers_per_pod(cluster: list[tuple[str, Obj]]) -> None:
    worker_names = set(workers(cluster))
    for pod in of_kind(cluster, "Pod"):
        if pod["spec"]["nodeName"] in worker_names:
            containers = pod["spec"]["containers"]
            assert len(containers) == SMALL.containers_per_pod
            assert len({c["name"] for c in containers}) == len(containers)
            assert len(pod["status"]["containerStatuses"]) == len(containers)


def test_metadata_is_what_the_apiserver_returns_before_the_store_versions_it(
    cluster: list[tuple[str, Obj]],
) -> None:
    uids = set()
    names = set()
    for kind, obj in cluster:
        meta = obj["metadata"]
        assert obj["kind"] == kind
        assert "resourceVersion" not in meta
        assert TIME_RE.match(meta["creationTimestamp"]), meta
        assert meta["uid"] not in uids
        uids.add(meta["uid"])
        key = (kind, meta.get("namespace"), meta["name"])
        assert key not in names
        names.add(key)


def test_owners_exist_and_come_first(cluster: list[tuple[str, Obj]]) -> None:
    seen: dict[str, Obj] = {}
    owned = 0
    for _, obj in cluster:
        for ref in obj["metadata"].get("ownerReferences", []):
            owner = seen.get(ref["uid"])
            assert owner is not None, (obj["metadata"]["name"], ref)
            assert owner["kind"] == ref["kind"]
            assert owner["apiVersion"] == ref["apiVersion"]
            assert owner["metadata"]["name"] == ref["name"]
            if owner["metadata"].get("namespace"):
                assert owner["metadata"]["namespace"] == obj["metadata"]["namespace"]
            owned += 1
        seen[obj["metadata"]["uid"]] = obj
    assert owned > 100


def test_controllers_own_with_controller_and_block_owner_deletion(
    cluster: list[tuple[str, Obj]],
) -> None:
    for kind in ("ReplicaSet", "Pod"):
        for obj in of_kind(cluster, kind):
            (ref,) = obj["metadata"]["ownerReferences"]
            assert ref["controller"] is True
            if ref["kind"] != "Node":  # mirror pods: the kubelet sets controller only
                assert ref["blockOwnerDeletion"] is True


# --- nodes ---------------------------------------------------------------------------------


def test_zones_are_balanced(cluster: list[tuple[str, Obj]]) -> None:
    counts = collections.Counter(
        n["metadata"]["labels"][ZONE_LABEL] for n in workers(cluster).values()
    )
    assert set(counts) == {zone_name(z) for z in range(SMALL.zones)}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_worker_nodes_look_like_kubelet_registered_nodes(cluster: list[tuple[str, Obj]]) -> None:
    for name, node in workers(cluster).items():
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == name
        assert labels["kubernetes.io/os"] == "linux"
        assert labels[REGION_LABEL] == "region-1"
        assert labels["node.kubernetes.io/instance-type"]
        assert "taints" not in node["spec"]
        status = node["status"]
        for key in ("cpu", "memory", "ephemeral-storage"):
            assert status["allocatable"][key] != status["capacity"][key]
        assert status["capacity"]["pods"] == "110"
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Ready"]["status"] == "True"
        assert conditions["Ready"]["lastHeartbeatTime"] == format_time(NOW)
        for pressure in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            assert conditions[pressure]["status"] == "False"
        addresses = {a["type"]: a["address"] for a in status["addresses"]}
        assert addresses["Hostname"] == name
        assert addresses["InternalIP"].startswith("10.")
        assert status["nodeInfo"]["kubeletVersion"].startswith("v1.31.")


def test_the_nic_resource_is_on_one_pool_only(cluster: list[tuple[str, Obj]]) -> None:
    pools: dict[str, set[bool]] = collections.defaultdict(set)
    for node in workers(cluster).values():
        has = NIC_RESOURCE in node["status"]["capacity"]
        pools[node["metadata"]["labels"]["example.com/node-pool"]].add(has)
        if has:
            assert (
                node["status"]["allocatable"][NIC_RESOURCE]
                == node["status"]["capacity"][NIC_RESOURCE]
            )
    assert pools["nic"] == {True}
    assert all(flags == {False} for pool, flags in pools.items() if pool != "nic")


def test_control_plane_nodes_are_tainted_and_sized_by_the_seed_table(
    cluster: list[tuple[str, Obj]],
) -> None:
    cps = [n for n in of_kind(cluster, "Node") if CONTROL_PLANE_LABEL in n["metadata"]["labels"]]
    assert [n["metadata"]["name"] for n in cps] == ["cp-1", "cp-2", "cp-3"]
    for node in cps:
        assert node["metadata"]["labels"][CONTROL_PLANE_LABEL] == ""
        assert node["spec"]["taints"] == [{"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"}]
        # 10 workers: the seed's 6-10 row, 2 CPU / 8 GB.
        assert node["status"]["capacity"]["cpu"] == "2"
        assert node["status"]["capacity"]["memory"] == f"{8 * 1024 * 1024}Ki"


@pytest.mark.parametrize(
    ("workers", "size"),
    [
        (1, (1, 4)),
        (5, (1, 4)),
        (6, (2, 8)),
        (100, (4, 16)),
        (250, (8, 32)),
        (500, (16, 64)),
        (501, (32, 120)),
        (5000, (32, 120)),
    ],
)
def test_control_plane_size_follows_the_seed_table(workers: int, size: tuple[int, int]) -> None:
    assert control_plane_size(workers) == size


@pytest.mark.parametrize(
    "settings",
    [
        SMALL,
        ScenarioSettings(nodes=3, zones=3, pods_per_node=30),
        ScenarioSettings(nodes=3, pods_per_node=110, containers_per_pod=50),
        ScenarioSettings(nodes=60),
    ],
    ids=["small", "1-cpu-control-plane", "most-containers", "default-60"],
)
def test_nodes_have_room_for_what_is_scheduled_on_them(settings: ScenarioSettings) -> None:
    cluster = [(rt.kind, obj) for rt, obj in generate(settings, NOW)]

    def millicores(q: str) -> int:
        return int(q[:-1]) if q.endswith("m") else int(q) * 1000

    requested: dict[str, int] = collections.Counter()
    dongles: dict[str, int] = collections.Counter()
    for pod in of_kind(cluster, "Pod"):
        for c in pod["spec"]["containers"]:
            req = c["resources"].get("requests", {})
            requested[pod["spec"]["nodeName"]] += millicores(req.get("cpu", "0"))
            dongles[pod["spec"]["nodeName"]] += int(req.get(NIC_RESOURCE, "0"))
    for node in of_kind(cluster, "Node"):
        name, alloc = node["metadata"]["name"], node["status"]["allocatable"]
        assert requested[name] <= millicores(alloc["cpu"]), name
        assert dongles[name] <= int(alloc.get(NIC_RESOURCE, "0")), name


# --- leases --------------------------------------------------------------------------------


def test_every_node_has_a_lease_it_renewed_now(cluster: list[tuple[str, Obj]]) -> None:
    nodes = {n["metadata"]["name"]: n["metadata"]["uid"] for n in of_kind(cluster, "Node")}
    leases = [
        lease
        for lease in of_kind(cluster, "Lease")
        if lease["metadata"]["namespace"] == NODE_LEASE_NAMESPACE
    ]
    assert {lease["metadata"]["name"] for lease in leases} == set(nodes)
    for lease in leases:
        name = lease["metadata"]["name"]
        assert lease["spec"] == {
            "holderIdentity": name,
            "leaseDurationSeconds": 40,
            "renewTime": "2025-03-14T09:26:53.589793Z",
        }
        (ref,) = lease["metadata"]["ownerReferences"]
        assert (ref["apiVersion"], ref["kind"], ref["name"], ref["uid"]) == (
            "v1",
            "Node",
            name,
            nodes[name],
        )


def test_leader_election_leases(cluster: list[tuple[str, Obj]]) -> None:
    leases = of_kind(cluster, "Lease")
    for component in ("kube-scheduler", "kube-controller-manager"):
        spec = find(leases, "kube-system", component)["spec"]
        assert re.match(r"^cp-\d+_[0-9a-f-]{36}$", spec["holderIdentity"])
        assert spec["leaseDurationSeconds"] == 15
        assert MICRO_TIME_RE.match(spec["acquireTime"])
        assert spec["renewTime"] == format_micro_time(NOW)
        assert spec["leaseTransitions"] >= 0


# --- pods and workloads -----------------------------------------------------------------


def test_daemonset_pods_run_on_every_node(cluster: list[tuple[str, Obj]]) -> None:
    all_nodes = {n["metadata"]["name"] for n in of_kind(cluster, "Node")}
    for ds_name in DAEMONSET_NAMES:
        ds = find(of_kind(cluster, "DaemonSet"), "kube-system", ds_name)
        pods = [
            p
            for p in of_kind(cluster, "Pod")
            if p["metadata"].get("ownerReferences", [{}])[0].get("uid") == ds["metadata"]["uid"]
        ]
        assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(all_nodes)
        assert ds["status"]["desiredNumberScheduled"] == ds["status"]["numberReady"] == len(pods)
        for pod in pods:
            assert {"operator": "Exists"} in pod["spec"]["tolerations"]
            assert pod["spec"]["hostNetwork"] is True
            assert pod["status"]["podIP"] == pod["status"]["hostIP"]


def test_ordinary_pods_carry_the_default_tolerations(cluster: list[tuple[str, Obj]]) -> None:
    pods = pods_of(cluster, "team-a", "web")
    assert pods
    for pod in pods:
        assert pod["spec"]["tolerations"] == [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ]


def test_default_toleration_seconds_follow_the_lifecycle_settings() -> None:
    objs = generate(SMALL, NOW, lifecycle=NodeLifecycleSettings(default_toleration_seconds=120))
    for rt, obj in objs:
        if rt.kind == "Pod" and obj["metadata"]["namespace"] == "team-a":
            assert {t.get("tolerationSeconds") for t in obj["spec"]["tolerations"]} == {120}
            return
    raise AssertionError("no team-a pod")


def test_some_deployments_set_their_own_toleration_seconds(cluster: list[tuple[str, Obj]]) -> None:
    assert sorted(CUSTOM_TOLERATION_SECONDS.values()) == [60, 3600]
    for (ns, name), seconds in CUSTOM_TOLERATION_SECONDS.items():
        pods = pods_of(cluster, ns, name)
        assert pods
        for pod in pods:
            tolerations = {t["key"]: t["tolerationSeconds"] for t in pod["spec"]["tolerations"]}
            assert tolerations == {
                "node.kubernetes.io/not-ready": seconds,
                "node.kubernetes.io/unreachable": seconds,
            }


def test_crowded_deployments_are_all_in_zone_a(cluster: list[tuple[str, Obj]]) -> None:
    zones = zone_of(cluster)
    for ns, name in CROWDED_DEPLOYMENTS:
        pods = pods_of(cluster, ns, name)
        assert len(pods) >= 2
        assert {zones[p["spec"]["nodeName"]] for p in pods} == {"zone-a"}
        # Nothing in the spec asks for it: only the placement shows the risk.
        spec = pods[0]["spec"]
        assert "nodeSelector" not in spec
        assert "affinity" not in spec


def test_spread_deployments_cover_every_zone_within_max_skew(
    cluster: list[tuple[str, Obj]],
) -> None:
    zones = zone_of(cluster)
    for ns, name in SPREAD_DEPLOYMENTS:
        pods = pods_of(cluster, ns, name)
        (constraint,) = pods[0]["spec"]["topologySpreadConstraints"]
        assert constraint == {
            "maxSkew": 1,
            "topologyKey": ZONE_LABEL,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": name}},
        }
        counts = collections.Counter(zones[p["spec"]["nodeName"]] for p in pods)
        assert set(counts) == {zone_name(z) for z in range(SMALL.zones)}
        assert max(counts.values()) - min(counts.values()) <= 1


def test_anti_affinity_deployments_have_one_pod_per_node(cluster: list[tuple[str, Obj]]) -> None:
    for ns, name in ANTI_AFFINITY_DEPLOYMENTS:
        pods = pods_of(cluster, ns, name)
        assert len(pods) >= 2
        anti = pods[0]["spec"]["affinity"]["podAntiAffinity"]
        (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        nodes = [p["spec"]["nodeName"] for p in pods]
        assert len(set(nodes)) == len(nodes)


def test_nic_pods_request_the_extended_resource_on_nic_nodes(
    cluster: list[tuple[str, Obj]],
) -> None:
    nodes = {n["metadata"]["name"]: n for n in of_kind(cluster, "Node")}
    for ns, name in NIC_DEPLOYMENTS:
        pods = pods_of(cluster, ns, name)
        assert pods
        for pod in pods:
            resources = pod["spec"]["containers"][0]["resources"]
            assert resources["requests"][NIC_RESOURCE] == resources["limits"][NIC_RESOURCE] == "1"
            assert NIC_RESOURCE in nodes[pod["spec"]["nodeName"]]["status"]["allocatable"]


def test_pods_are_running_and_ready(cluster: list[tuple[str, Obj]]) -> None:
    ips = set()
    for pod in of_kind(cluster, "Pod"):
        status = pod["status"]
        assert status["phase"] == "Running"
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            assert conditions[t] == "True"
        assert TIME_RE.match(status["startTime"])
        assert status["hostIP"]
        assert status["podIP"]
        for cs in status["containerStatuses"]:
            assert cs["ready"] is True
            assert cs["restartCount"] >= 0
            assert TIME_RE.match(cs["state"]["running"]["startedAt"])
        if not pod["spec"].get("hostNetwork"):
            assert status["podIP"] not in ips
            ips.add(status["podIP"])


def test_workload_status_matches_the_pods(cluster: list[tuple[str, Obj]]) -> None:
    owned = collections.Counter(
        p["metadata"]["ownerReferences"][0]["uid"]
        for p in of_kind(cluster, "Pod")
        if "ownerReferences" in p["metadata"]
    )
    for rs in of_kind(cluster, "ReplicaSet"):
        n = owned[rs["metadata"]["uid"]]
        assert rs["spec"]["replicas"] == rs["status"]["readyReplicas"] == n >= 1
        pod_labels = rs["spec"]["template"]["metadata"]["labels"]
        assert "pod-template-hash" in pod_labels
        assert rs["metadata"]["name"].endswith(pod_labels["pod-template-hash"])
    rs_replicas = {
        rs["metadata"]["ownerReferences"][0]["uid"]: rs["spec"]["replicas"]
        for rs in of_kind(cluster, "ReplicaSet")
    }
    for d in of_kind(cluster, "Deployment"):
        status = d["status"]
        assert d["spec"]["replicas"] == rs_replicas[d["metadata"]["uid"]]
        assert status["replicas"] == status["readyReplicas"] == status["availableReplicas"]
        assert status["replicas"] == d["spec"]["replicas"]
    for sts in of_kind(cluster, "StatefulSet"):
        n = owned[sts["metadata"]["uid"]]
        assert sts["spec"]["replicas"] == sts["status"]["readyReplicas"] == n


def test_statefulset_pods_are_numbered(cluster: list[tuple[str, Obj]]) -> None:
    sts = find(of_kind(cluster, "StatefulSet"), "team-b", "postgres")
    pods = [
        p
        for p in of_kind(cluster, "Pod")
        if p["metadata"].get("ownerReferences", [{}])[0].get("uid") == sts["metadata"]["uid"]
    ]
    assert [p["metadata"]["name"] for p in pods] == [f"postgres-{i}" for i in range(len(pods))]
    assert pods[0]["spec"]["subdomain"] == "postgres"


def test_control_plane_static_pods_carry_their_flags(cluster: list[tuple[str, Obj]]) -> None:
    pods = of_kind(cluster, "Pod")
    for cp in ("cp-1", "cp-2", "cp-3"):
        for component in CONTROL_PLANE_COMPONENTS:
            pod = find(pods, "kube-system", f"{component}-{cp}")
            assert pod["spec"]["nodeName"] == cp
            assert pod["metadata"]["ownerReferences"][0]["kind"] == "Node"
    kcm = find(pods, "kube-system", "kube-controller-manager-cp-1")["spec"]["containers"][0]
    assert "--use-service-account-credentials=true" in kcm["command"]
    assert "--node-monitor-grace-period=50s" in kcm["command"]
    api = find(pods, "kube-system", "kube-apiserver-cp-1")["spec"]["containers"][0]["command"]
    assert "--max-requests-inflight=400" in api
    assert "--max-mutating-requests-inflight=200" in api
    assert not any(flag.startswith("--etcd-servers-overrides") for flag in api)
    etcd = find(pods, "kube-system", "etcd-cp-2")["spec"]["containers"][0]["command"]
    assert "--name=cp-2" in etcd
    assert any(flag.startswith("--initial-cluster=cp-1=https://") for flag in etcd)


# --- services, configmaps, events --------------------------------------------------------


def test_endpoints_list_the_ready_pods_of_their_service(cluster: list[tuple[str, Obj]]) -> None:
    pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in of_kind(cluster, "Pod")}
    endpoints = of_kind(cluster, "Endpoints")
    web = find(endpoints, "team-a", "web")
    (subset,) = web["subsets"]
    backends = pods_of(cluster, "team-a", "web")
    assert sorted(a["ip"] for a in subset["addresses"]) == sorted(
        p["status"]["podIP"] for p in backends
    )
    for address in subset["addresses"]:
        pod = pods[("team-a", address["targetRef"]["name"])]
        assert address["targetRef"]["uid"] == pod["metadata"]["uid"]
        assert address["nodeName"] == pod["spec"]["nodeName"]
    kubernetes = find(endpoints, "default", "kubernetes")
    assert len(kubernetes["subsets"][0]["addresses"]) == SMALL.control_plane_nodes
    assert find(of_kind(cluster, "Service"), "kube-system", "kube-dns")["spec"]["clusterIP"] == (
        "10.96.0.10"
    )


def test_large_configmaps_are_about_500_kib(cluster: list[tuple[str, Obj]]) -> None:
    for ns, name in LARGE_CONFIGMAPS:
        cm = find(of_kind(cluster, "ConfigMap"), ns, name)
        size = sum(len(v) for v in cm["data"].values())
        assert 480 * 1024 <= size <= 520 * 1024  # well under the 1 MiB ConfigMap limit


def test_events_refer_to_existing_objects_and_are_recent(cluster: list[tuple[str, Obj]]) -> None:
    uids = {obj["metadata"]["uid"] for _, obj in cluster}
    events = of_kind(cluster, "Event")
    assert {e["reason"] for e in events} >= {"Scheduled", "Started", "SuccessfulCreate"}
    for event in events:
        assert event["involvedObject"]["uid"] in uids
        assert TIME_RE.match(event["lastTimestamp"])
        last = datetime.datetime.strptime(event["lastTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
        # Within the apiserver's default --event-ttl of one hour.
        assert NOW.replace(tzinfo=None) - last <= datetime.timedelta(hours=1)


# --- determinism, helpers, validation -------------------------------------------------


def test_same_settings_give_the_same_cluster(cluster: list[tuple[str, Obj]]) -> None:
    again = [(rt.kind, obj) for rt, obj in generate(SMALL, NOW)]
    assert again == cluster


def test_another_seed_gives_other_uids(cluster: list[tuple[str, Obj]]) -> None:
    other = ScenarioSettings(**{**SMALL.__dict__, "seed": SMALL.seed + 1})
    first = next(obj for rt, obj in generate(other, NOW))
    assert first["metadata"]["uid"] != cluster[0][1]["metadata"]["uid"]


def test_time_formats_are_the_apiservers() -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    local = datetime.datetime(2025, 3, 14, 11, 26, 53, 5, tzinfo=plus_two)
    assert format_time(local) == "2025-03-14T09:26:53Z"
    assert format_micro_time(local) == "2025-03-14T09:26:53.000005Z"
    assert format_time(datetime.datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02T03:04:05Z"


def test_names() -> None:
    assert [zone_name(i) for i in (0, 1, 25, 26, 27)] == [
        "zone-a",
        "zone-b",
        "zone-z",
        "zone-aa",
        "zone-ab",
    ]
    assert node_name(7) == "node-0007"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"nodes": 0}, "scenario.nodes"),
        ({"zones": 0}, "scenario.zones"),
        ({"pods_per_node": -1}, "scenario.pods_per_node"),
        ({"pods_per_node": 251}, "scenario.pods_per_node"),
        ({"containers_per_pod": 0}, "scenario.containers_per_pod"),
        ({"control_plane_nodes": -1}, "scenario.control_plane_nodes"),
    ],
)
def test_impossible_settings_are_refused_before_anything_is_yielded(
    change: dict[str, int], key: str
) -> None:
    settings = ScenarioSettings(**{**SMALL.__dict__, **change})
    with pytest.raises(ValueError, match=re.escape(key)):
        generate(settings, NOW)


ODD_SHAPES = [
    ScenarioSettings(nodes=1, zones=1, pods_per_node=2, containers_per_pod=1),
    # More zones than workers, one pod per node, a managed (node-less) control plane.
    ScenarioSettings(nodes=2, zones=5, pods_per_node=1, control_plane_nodes=0),
    ScenarioSettings(nodes=3, zones=1, pods_per_node=0),
    ScenarioSettings(nodes=7, zones=3, pods_per_node=5, containers_per_pod=3),
    # The product config's upper bounds for pods and containers.
    ScenarioSettings(nodes=40, zones=4, pods_per_node=110, containers_per_pod=50),
]


@pytest.mark.parametrize(
    "settings", ODD_SHAPES, ids=lambda s: f"{s.nodes}n-{s.zones}z-{s.pods_per_node}p"
)
def test_odd_shapes_still_fill_every_worker(settings: ScenarioSettings) -> None:
    per_node: dict[str, int] = collections.Counter()
    seen: set[str] = set()
    for rt, obj in generate(settings, NOW):
        for ref in obj["metadata"].get("ownerReferences", []):
            assert ref["uid"] in seen
        seen.add(obj["metadata"]["uid"])
        if rt.kind == "Pod":
            per_node[obj["spec"]["nodeName"]] += 1
            assert len(obj["spec"]["containers"]) in (1, settings.containers_per_pod)
    assert all(per_node[node_name(i)] == settings.pods_per_node for i in range(settings.nodes))


# --- full scale ------------------------------------------------------------------------


def test_full_scale_cluster() -> None:
    settings = ScenarioSettings(nodes=5000, zones=3, pods_per_node=30, containers_per_pod=2)
    worker_names = {node_name(i) for i in range(settings.nodes)}
    counts: dict[str, int] = collections.Counter()
    per_node: dict[str, int] = collections.Counter()
    worker_pods = worker_containers = 0
    zones: dict[str, int] = collections.Counter()
    started = time.perf_counter()
    for rt, obj in generate(settings, NOW):
        counts[rt.kind] += 1
        if rt.kind == "Pod":
            node = obj["spec"]["nodeName"]
            if node in worker_names:
                per_node[node] += 1
                worker_pods += 1
                worker_containers += len(obj["spec"]["containers"])
        elif rt.kind == "Node" and obj["metadata"]["name"] in worker_names:
            zones[obj["metadata"]["labels"][ZONE_LABEL]] += 1
    elapsed = time.perf_counter() - started
    print(f"\nfull scale (5000 nodes x 30 pods): {elapsed:.2f} s, {dict(counts)}")
    assert worker_pods == 150_000
    assert worker_containers == 300_000
    assert set(per_node.values()) == {30}
    assert counts["Node"] == 5003
    assert counts["Lease"] == 5003 + 2
    per_cp = len(CONTROL_PLANE_COMPONENTS) + len(DAEMONSET_NAMES)
    assert counts["Pod"] == 150_000 + 3 * per_cp
    assert max(zones.values()) - min(zones.values()) <= 1
