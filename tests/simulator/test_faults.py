"""API Priority and Fairness classification and the fault injector, by behaviour.

The expected classifications follow kube-apiserver's default FlowSchemas
(staging/src/k8s.io/apiserver/pkg/apis/flowcontrol/bootstrap/default.go).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest

from kubeballast.simulator import apf
from kubeballast.simulator.faults import (
    Congestion,
    Decision,
    FaultState,
    RequestClass,
    pick_nodes,
)

KUBELET = ("system:node:node-1", ("system:nodes", "system:authenticated"))


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def faults(clock: FakeClock) -> FaultState:
    state = FaultState(random.Random(1), clock)
    state.set_topology(
        {
            "zone-a": [f"node-a{i}" for i in range(10)],
            "zone-b": [f"node-b{i}" for i in range(10)],
        }
    )
    return state


def request(
    username: str,
    groups: tuple[str, ...] = (),
    verb: str = "get",
    api_group: str = "",
    resource: str = "pods",
    subresource: str = "",
    namespace: str = "default",
    *,
    is_watch: bool = False,
    is_long_running: bool = False,
) -> RequestClass:
    """A RequestClass classified the way the HTTP layer will do it."""
    flow_schema, priority_level = apf.classify(
        username, groups, verb, api_group, resource, namespace, subresource=subresource
    )
    return RequestClass(
        verb=verb,
        api_group=api_group,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        username=username,
        groups=groups,
        priority_level=priority_level,
        flow_schema=flow_schema,
        is_watch=is_watch,
        is_long_running=is_long_running or is_watch,
    )


def lease_renewal(node: str = "node-a1") -> RequestClass:
    return request(
        f"system:node:{node}",
        ("system:nodes",),
        "update",
        "coordination.k8s.io",
        "leases",
        namespace="kube-node-lease",
    )


def workload_list() -> RequestClass:
    return request("system:serviceaccount:default:app", verb="list", namespace="default")


def admin_delete() -> RequestClass:
    return request("kubernetes-admin", ("system:masters",), "delete")


def rejected_fraction(
    faults: FaultState, make: Callable[[], RequestClass], n: int = 10_000
) -> tuple[float, list[Decision]]:
    decisions = [faults.decide(make()) for _ in range(n)]
    rejected = [d for d in decisions if d.error is not None]
    return len(rejected) / n, rejected


# --- APF classification -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "groups", "verb", "api_group", "resource", "namespace", "expected"),
    [
        # The kubelet's heartbeats: its Lease and its node status.
        (*KUBELET, "update", "coordination.k8s.io", "leases", "kube-node-lease",
         ("system-node-high", "node-high")),
        (*KUBELET, "patch", "", "nodes/status", "", ("system-node-high", "node-high")),
        (*KUBELET, "watch", "", "nodes", "", ("system-node-high", "node-high")),
        # Anything else a kubelet does is "system".
        (*KUBELET, "get", "", "pods", "default", ("system-nodes", "system")),
        (*KUBELET, "create", "", "events", "default", ("system-nodes", "system")),
        # A cluster-wide lease list is not a namespaced request: the lease rule has no
        # clusterScope, so it falls through to system-nodes.
        (*KUBELET, "list", "coordination.k8s.io", "leases", "", ("system-nodes", "system")),
        # Leader election of the control plane.
        ("system:kube-controller-manager", (), "update", "coordination.k8s.io", "leases",
         "kube-system", ("system-leader-election", "leader-election")),
        ("system:kube-scheduler", (), "get", "coordination.k8s.io", "leases", "kube-system",
         ("system-leader-election", "leader-election")),
        ("system:serviceaccount:kube-system:some-operator", (), "update",
         "coordination.k8s.io", "leases", "kube-system",
         ("system-leader-election", "leader-election")),
        # Their other work.
        ("system:kube-controller-manager", (), "list", "", "pods", "",
         ("kube-controller-manager", "workload-high")),
        ("system:kube-scheduler", (), "create", "", "pods/binding", "default",
         ("kube-scheduler", "workload-high")),
        ("system:kube-controller-manager", (), "update", "", "endpoints", "default",
         ("endpoint-controller", "workload-high")),
        ("system:serviceaccount:kube-system:endpoint-controller", (), "update", "",
         "endpoints", "default", ("endpoint-controller", "workload-high")),
        # Service accounts.
        ("system:serviceaccount:kube-system:coredns", (), "list", "", "endpoints", "",
         ("kube-system-service-accounts", "workload-high")),
        ("system:serviceaccount:kube-system:foo", (), "update", "", "configmaps", "team-a",
         ("workload-leader-election", "leader-election")),
        ("system:serviceaccount:default:default", (), "list", "", "pods", "default",
         ("service-accounts", "workload-low")),
        ("system:serviceaccount:kube-systemx:a", (), "list", "", "pods", "",
         ("service-accounts", "workload-low")),
        # Humans.
        ("kubernetes-admin", ("system:masters",), "delete", "", "nodes", "",
         ("exempt", "exempt")),
        ("alice", ("system:authenticated",), "list", "", "pods", "", ("global-default",
         "global-default")),
        ("alice", (), "list", "", "pods", "", ("global-default", "global-default")),
        ("system:anonymous", ("system:unauthenticated",), "get", "", "pods", "default",
         ("global-default", "global-default")),
    ],
)  # fmt: skip
def test_classification_follows_the_default_flowschemas(
    username: str,
    groups: tuple[str, ...],
    verb: str,
    api_group: str,
    resource: str,
    namespace: str,
    expected: tuple[str, str],
) -> None:
    assert apf.classify(username, groups, verb, api_group, resource, namespace) == expected


def test_subresource_may_be_passed_apart() -> None:
    assert apf.classify(
        "system:node:n", ["system:nodes"], "patch", "", "nodes", "", subresource="status"
    ) == ("system-node-high", "node-high")


def test_health_probes_are_exempt_and_other_paths_are_not() -> None:
    assert apf.classify("system:anonymous", [], "get", "", "", "", non_resource_path="/readyz") == (
        "probes",
        "exempt",
    )
    assert apf.classify("alice", [], "get", "", "", "", non_resource_path="/metrics") == (
        "global-default",
        "global-default",
    )


def test_default_objects_have_the_real_names_precedences_and_levels() -> None:
    schemas = {fs["metadata"]["name"]: fs for fs in apf.default_flowschemas()}
    assert {name: fs["spec"]["matchingPrecedence"] for name, fs in schemas.items()} == {
        "exempt": 1,
        "probes": 2,
        "system-leader-election": 100,
        "endpoint-controller": 150,
        "workload-leader-election": 200,
        "system-node-high": 400,
        "system-nodes": 500,
        "kube-controller-manager": 800,
        "kube-scheduler": 800,
        "kube-system-service-accounts": 900,
        "service-accounts": 9000,
        "global-default": 9900,
        "catch-all": 10000,
    }
    assert schemas["system-node-high"]["spec"]["priorityLevelConfiguration"] == {
        "name": "node-high"
    }
    assert schemas["exempt"]["spec"]["rules"][0]["subjects"] == [
        {"kind": "Group", "group": {"name": "system:masters"}}
    ]
    assert "distinguisherMethod" not in schemas["exempt"]["spec"]
    assert schemas["kube-scheduler"]["spec"]["distinguisherMethod"] == {"type": "ByNamespace"}

    levels = {pl["metadata"]["name"]: pl for pl in apf.default_priority_levels()}
    assert set(levels) == {
        "exempt",
        "catch-all",
        "system",
        "node-high",
        "leader-election",
        "workload-high",
        "workload-low",
        "global-default",
    }
    assert levels["exempt"]["spec"]["type"] == "Exempt"
    assert levels["catch-all"]["spec"]["limited"]["limitResponse"] == {"type": "Reject"}
    assert levels["node-high"]["spec"]["limited"] == {
        "nominalConcurrencyShares": 40,
        "lendablePercent": 25,
        "limitResponse": {
            "type": "Queue",
            "queuing": {"queues": 64, "handSize": 6, "queueLengthLimit": 50},
        },
    }
    for obj in [*schemas.values(), *levels.values()]:
        assert obj["apiVersion"] == "flowcontrol.apiserver.k8s.io/v1"
        assert obj["metadata"]["annotations"] == {"apf.kubernetes.io/autoupdate-spec": "true"}
        # Every schema names a level that exists (none is dangling).
        if obj["kind"] == "FlowSchema":
            assert obj["spec"]["priorityLevelConfiguration"]["name"] in levels


def test_default_objects_are_fresh_copies() -> None:
    first = apf.default_flowschemas()
    first[0]["metadata"]["name"] = "mutated"
    assert apf.default_flowschemas()[0]["metadata"]["name"] == "exempt"


def test_nominal_seats_divide_the_server_limit_by_shares() -> None:
    # ceil(600 * shares / 245), as the APF controller computes NominalCL.
    assert apf.nominal_limit_seats(600) == {
        "exempt": 0,
        "catch-all": 13,
        "system": 74,
        "node-high": 98,
        "leader-election": 25,
        "workload-high": 98,
        "workload-low": 245,
        "global-default": 49,
    }


# --- fault decisions --------------------------------------------------------------------


def test_without_faults_every_request_passes_undelayed(faults: FaultState) -> None:
    for make in (lease_renewal, workload_list, admin_delete):
        for _ in range(1000):
            assert faults.decide(make()) == Decision()


def test_half_the_requests_are_rejected_with_retry_after(faults: FaultState) -> None:
    faults.set_congestion(Congestion(reject_fraction=0.5, retry_after_seconds=2))
    fraction, rejected = rejected_fraction(faults, workload_list)
    assert 0.45 <= fraction <= 0.55
    for decision in rejected:
        assert decision.error is not None
        assert decision.error.code == 429
        assert decision.error.reason == "TooManyRequests"
        assert decision.error.retry_after_seconds == 2
        assert decision.error.status()["details"] == {"retryAfterSeconds": 2}
        assert decision.apf_rejected_reason == "queue-full"


def test_decisions_are_deterministic_for_a_seed(clock: FakeClock) -> None:
    def run() -> list[bool]:
        state = FaultState(random.Random(1), clock)
        state.set_congestion(Congestion(reject_fraction=0.3))
        return [state.decide(workload_list()).passed for _ in range(500)]

    assert run() == run()


def test_heartbeats_starve_first(faults: FaultState) -> None:
    faults.set_congestion(Congestion(reject_fraction=0.1))
    lease_fraction, _ = rejected_fraction(faults, lease_renewal)
    other_fraction, _ = rejected_fraction(faults, workload_list)
    assert 0.25 <= lease_fraction <= 0.35  # 3 x 0.1
    assert 0.07 <= other_fraction <= 0.13
    assert lease_fraction > 2 * other_fraction


def test_heartbeat_rejection_is_capped_and_overridable(faults: FaultState) -> None:
    assert Congestion(reject_fraction=0.5).effective_lease_reject_fraction == 1.0
    assert Congestion(reject_fraction=0.01).effective_lease_reject_fraction == pytest.approx(0.03)
    assert Congestion(reject_fraction=0.0).effective_lease_reject_fraction == 0.0
    faults.set_congestion(Congestion(reject_fraction=0.5, lease_reject_fraction=0.0))
    assert rejected_fraction(faults, lease_renewal, 1000)[0] == 0.0


def test_only_heartbeats_of_node_high_starve_first(faults: FaultState) -> None:
    # A kubelet reading pods is "system", not a heartbeat: the ordinary fraction applies.
    faults.set_congestion(Congestion(reject_fraction=0.1))
    kubelet_get = request("system:node:node-a1", ("system:nodes",), "get", namespace="default")
    assert kubelet_get.priority_level == "system"
    assert not kubelet_get.is_heartbeat
    assert lease_renewal().is_heartbeat
    fraction, _ = rejected_fraction(faults, lambda: kubelet_get)
    assert 0.07 <= fraction <= 0.13


def test_exempt_is_never_rejected(faults: FaultState) -> None:
    faults.set_congestion(Congestion(reject_fraction=1.0, lease_reject_fraction=1.0))
    assert rejected_fraction(faults, admin_delete, 1000)[0] == 0.0
    assert rejected_fraction(faults, workload_list, 1000)[0] == 1.0


def test_congestion_limited_to_chosen_priority_levels(faults: FaultState) -> None:
    faults.set_congestion(Congestion(reject_fraction=1.0, priority_levels=frozenset({"node-high"})))
    assert rejected_fraction(faults, lease_renewal, 100)[0] == 1.0
    assert rejected_fraction(faults, workload_list, 100)[0] == 0.0


def test_latency_delays_queued_requests_and_rejections_become_timeouts(
    faults: FaultState,
) -> None:
    faults.set_congestion(Congestion(latency_seconds=0.25, reject_fraction=0.5))
    decisions = [faults.decide(workload_list()) for _ in range(200)]
    assert all(d.delay_seconds == 0.25 for d in decisions)
    assert {d.apf_rejected_reason for d in decisions if d.error} == {"time-out"}
    # Exempt requests are never queued by APF, so the latency does not reach them.
    assert faults.decide(admin_delete()) == Decision()


def test_watches_can_be_rejected_on_arrival_but_other_long_running_requests_cannot(
    faults: FaultState,
) -> None:
    faults.set_congestion(Congestion(reject_fraction=1.0))
    watch = request("system:serviceaccount:default:app", verb="watch", is_watch=True)
    logs = request("system:serviceaccount:default:app", subresource="log", is_long_running=True)
    assert faults.decide(watch).error is not None
    assert faults.decide(logs).passed


def test_error_burst_ends_after_its_duration(faults: FaultState, clock: FakeClock) -> None:
    faults.set_error_burst(code=503, fraction=1.0, duration_seconds=10.0)
    decision = faults.decide(admin_delete())  # bursts hit exempt requests too
    assert decision.error is not None
    assert (decision.error.code, decision.error.reason) == (503, "ServiceUnavailable")
    clock.advance(9.999)
    assert faults.describe()["error_burst"]["remaining_seconds"] == pytest.approx(0.001)
    assert not faults.decide(workload_list()).passed
    clock.advance(0.001)
    assert faults.decide(workload_list()).passed
    assert faults.describe()["error_burst"] is None


@pytest.mark.parametrize(("code", "reason"), [(500, "InternalError"), (504, "Timeout")])
def test_error_burst_codes(faults: FaultState, code: int, reason: str) -> None:
    faults.set_error_burst(code=code, fraction=0.5)
    fraction, rejected = rejected_fraction(faults, workload_list)
    assert 0.45 <= fraction <= 0.55
    assert {(d.error.code, d.error.reason) for d in rejected if d.error} == {(code, reason)}


def test_invalid_faults_are_refused(faults: FaultState) -> None:
    with pytest.raises(ValueError, match=r"error_burst\.code"):
        faults.set_error_burst(code=404)
    with pytest.raises(ValueError, match=r"error_burst\.duration_seconds"):
        faults.set_error_burst(duration_seconds=0)
    with pytest.raises(ValueError, match=r"congestion\.reject_fraction"):
        Congestion(reject_fraction=1.5)
    with pytest.raises(ValueError, match="unknown levels"):
        Congestion(priority_levels=frozenset({"node-hgih"}))
    with pytest.raises(ValueError, match="exempt"):
        Congestion(priority_levels=frozenset({"exempt"}))
    with pytest.raises(ValueError, match="unknown zones"):
        faults.set_partition(frozenset({"zone-z"}))


def test_disconnecting_watches_moves_the_generation_forward(faults: FaultState) -> None:
    opened_in = faults.watch_generation
    assert faults.disconnect_watches() == opened_in + 1
    assert faults.watch_generation != opened_in
    faults.clear()  # clearing faults never moves the generation back
    assert faults.watch_generation == opened_in + 1


def test_partitioned_and_stopped_kubelets_cannot_reach_the_apiserver(
    faults: FaultState,
) -> None:
    faults.set_partition(frozenset({"zone-a"}))
    faults.set_kubelets_stopped(frozenset({"node-b3"}))
    assert faults.partitioned_zones == frozenset({"zone-a"})
    assert faults.node_partitioned("node-a1")
    assert not faults.kubelet_can_reach_apiserver("node-a1")
    assert faults.kubelet_stopped("node-b3")
    assert not faults.kubelet_can_reach_apiserver("node-b3")
    assert faults.kubelet_can_reach_apiserver("node-b4")

    cut_off = faults.decide(lease_renewal("node-a1"))
    assert cut_off.disconnect
    assert cut_off.error is not None
    assert cut_off.error.code == 503
    assert faults.decide(lease_renewal("node-b4")).passed
    assert faults.decide(workload_list()).passed  # only kubelets are cut off

    faults.clear()
    assert faults.decide(lease_renewal("node-a1")).passed
    assert faults.kubelet_can_reach_apiserver("node-b3")


def test_describe_is_json_and_reports_what_is_in_force(faults: FaultState) -> None:
    faults.set_congestion(Congestion(reject_fraction=0.2, priority_levels=frozenset({"system"})))
    faults.set_error_burst(code=500, fraction=0.1, duration_seconds=5)
    faults.set_partition(frozenset({"zone-b"}))
    faults.set_kubelets_stopped(frozenset({"node-a2", "node-a1"}))
    faults.decide(workload_list())
    described = json.loads(json.dumps(faults.describe()))
    assert described["congestion"]["priority_levels"] == ["system"]
    assert described["congestion"]["effective_lease_reject_fraction"] == pytest.approx(0.6)
    assert described["error_burst"]["code"] == 500
    assert described["partitioned_zones"] == ["zone-b"]
    assert described["kubelets_stopped"] == ["node-a1", "node-a2"]
    assert described["stats"]["decided"] == 1
    faults.clear()
    cleared = faults.describe()
    assert cleared["congestion"] is None
    assert cleared["error_burst"] is None
    assert cleared["kubelets_stopped"] == []


# --- picking nodes ----------------------------------------------------------------------

NODES_BY_ZONE = {
    "zone-a": [f"a{i:02}" for i in range(40)],
    "zone-b": [f"b{i:02}" for i in range(40)],
    "zone-c": [f"c{i:02}" for i in range(5)],
}


def test_pick_nodes_takes_the_fraction_of_each_chosen_zone() -> None:
    picked = pick_nodes(NODES_BY_ZONE, ["zone-a", "zone-c"], 0.5, random.Random(1))
    assert len([n for n in picked if n.startswith("a")]) == 20
    assert len([n for n in picked if n.startswith("c")]) == 3  # round half up
    assert not [n for n in picked if n.startswith("b")]
    assert pick_nodes(NODES_BY_ZONE, ["zone-b"], 1.0, random.Random(1)) == frozenset(
        NODES_BY_ZONE["zone-b"]
    )
    assert pick_nodes(NODES_BY_ZONE, ["zone-b"], 0.0, random.Random(1)) == frozenset()


def test_pick_nodes_is_deterministic_whatever_the_input_order() -> None:
    shuffled = {zone: list(reversed(nodes)) for zone, nodes in reversed(NODES_BY_ZONE.items())}
    first = pick_nodes(NODES_BY_ZONE, ["zone-a", "zone-b"], 0.3, random.Random(7))
    second = pick_nodes(shuffled, {"zone-b", "zone-a"}, 0.3, random.Random(7))
    assert first == second
    assert first != pick_nodes(NODES_BY_ZONE, ["zone-a", "zone-b"], 0.3, random.Random(8))


def test_pick_nodes_refuses_unknown_zones_and_bad_fractions() -> None:
    with pytest.raises(ValueError, match="unknown zone"):
        pick_nodes(NODES_BY_ZONE, ["zone-z"], 0.5, random.Random(1))
    with pytest.raises(ValueError, match="fraction"):
        pick_nodes(NODES_BY_ZONE, ["zone-a"], -0.1, random.Random(1))


def test_a_partition_without_topology_is_refused(clock: FakeClock) -> None:
    state = FaultState(random.Random(1), clock)
    with pytest.raises(ValueError, match="set_topology"):
        state.set_partition(frozenset({"zone-a"}))
    state.set_partition(frozenset())  # clearing is always fine


def test_starved_nodes_lose_every_heartbeat_and_the_others_none(faults: FaultState) -> None:
    faults.set_congestion(
        Congestion(
            lease_reject_fraction=0.0,
            starved_node_fraction=0.3,
            starved_nodes=frozenset({"node-b9"}),
        )
    )
    starved = faults.starved_nodes
    # 30 % of each zone (3 of 10), drawn once, plus the named node.
    assert len([n for n in starved if n.startswith("node-a")]) == 3
    assert "node-b9" in starved
    assert len(starved) in (6, 7)
    for node in [f"node-a{i}" for i in range(10)] + [f"node-b{i}" for i in range(10)]:
        rejected = [faults.decide(lease_renewal(node)).error is not None for _ in range(20)]
        assert all(rejected) if node in starved else not any(rejected), node
    # The same nodes for as long as the congestion lasts; cleared with it.
    assert faults.starved_nodes == starved
    faults.set_congestion(None)
    assert faults.starved_nodes == frozenset()
    assert faults.decide(lease_renewal(sorted(starved)[0])).error is None
