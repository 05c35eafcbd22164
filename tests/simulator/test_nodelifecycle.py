"""The simulated kubelets, node-lifecycle and taint-eviction controllers, by behaviour.

Everything runs in process on a frozen :class:`SimClock` that only ``advance`` moves, so
the tests step simulated time second by second and check what the real controllers would
have done at each moment (pkg/controller/nodelifecycle/node_lifecycle_controller.go,
pkg/controller/tainteviction/taint_eviction.go, the kubelet's lease controller). No real
time passes and nothing sleeps.
"""

from __future__ import annotations

import datetime
import itertools
import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from kubeballast.simulator import scenario
from kubeballast.simulator.admission import Admission, UserInfo
from kubeballast.simulator.clock import SimClock
from kubeballast.simulator.faults import FaultState
from kubeballast.simulator.kubelet import (
    NODE_LEASE_NAMESPACE,
    RENEW_INTERVAL,
    Kubelets,
    parse_time,
)
from kubeballast.simulator.nodelifecycle import (
    STATE_FULL_DISRUPTION,
    STATE_NORMAL,
    STATE_PARTIAL_DISRUPTION,
    NodeLifecycleController,
    RateLimitedTimedQueue,
    compute_zone_state,
    min_toleration_seconds,
)
from kubeballast.simulator.registry import Registry
from kubeballast.simulator.resources import LEASES, NODES, PODS, ResourceType, lookup
from kubeballast.simulator.settings import NodeLifecycleSettings, ScenarioSettings
from kubeballast.simulator.store import Store

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
ADMIN = UserInfo("kubernetes-admin", groups=("system:masters", "system:authenticated"))


class StorePolicies:
    """Admission's view of the store (the server wires the same thing)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def list_objects(self, rt: ResourceType) -> list[dict[str, Any]]:
        return [e.obj() for e in self.store.iter_current(rt)]

    def get_object(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        entry = self.store.get(rt, namespace, name)
        return None if entry is None else entry.obj()


class Cluster:
    """A generated cluster with kubelets and controllers on a frozen simulated clock."""

    def __init__(
        self,
        nodes: int = 60,
        zones: int = 3,
        settings: NodeLifecycleSettings | None = None,
    ) -> None:
        self.settings = settings or NodeLifecycleSettings()
        self.clock = SimClock(1.0, start=START, monotonic=lambda: 0.0)
        self.store = Store()
        self.store.bulk_load(
            scenario.generate(
                ScenarioSettings(nodes=nodes, zones=zones, pods_per_node=5, control_plane_nodes=1),
                self.clock.now(),
                lifecycle=self.settings,
            )
        )
        self.registry = Registry(
            self.store,
            self.clock,
            Admission(StorePolicies(self.store)),
            default_toleration_seconds=self.settings.default_toleration_seconds,
        )
        self.faults = FaultState(random.Random(7), lambda: 0.0)
        self.kubelets = Kubelets(self.store, self.registry, self.clock, self.faults)
        self.controller = NodeLifecycleController(
            self.store, self.registry, self.clock, self.settings
        )

    def now(self) -> float:
        return self.clock.time()

    def step(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        self.kubelets.tick()
        self.controller.tick()

    def run(self, seconds: float, step: float = 1.0) -> None:
        for _ in range(round(seconds / step)):
            self.step(step)

    def run_until(self, condition: Callable[[], bool], limit: float, step: float = 1.0) -> float:
        """Step until ``condition`` holds; return the simulated time it first held."""
        end = self.now() + limit
        while self.now() < end:
            self.step(step)
            if condition():
                return self.now()
        raise AssertionError(f"condition not met within {limit} simulated seconds")

    def node(self, name: str) -> dict[str, Any]:
        entry = self.store.get(NODES, "", name)
        assert entry is not None
        return entry.obj()

    def ready(self, name: str) -> str:
        conditions = self.node(name)["status"]["conditions"]
        return next(c["status"] for c in conditions if c["type"] == "Ready")

    def taints(self, name: str, effect: str) -> dict[str, str]:
        """Taint key -> timeAdded for the node's taints with ``effect``."""
        return {
            t["key"]: t.get("timeAdded", "")
            for t in self.node(name)["spec"].get("taints") or ()
            if t["effect"] == effect
        }

    def zone_nodes(self, zone: str) -> list[str]:
        return sorted(
            e.name
            for e in self.store.iter_current(NODES)
            if e.labels.get(scenario.ZONE_LABEL) == zone
            and scenario.CONTROL_PLANE_LABEL not in e.labels
        )

    def lease_renewed_at(self, name: str) -> float:
        entry = self.store.get(LEASES, NODE_LEASE_NAMESPACE, name)
        assert entry is not None
        return parse_time(entry.obj()["spec"]["renewTime"])

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        entry = self.store.get(PODS, namespace, name)
        return None if entry is None else entry.obj()

    def add_pod(self, name: str, node: str, toleration_seconds: int | None) -> None:
        """A pod on ``node`` tolerating not-ready/unreachable for ``toleration_seconds``;
        None leaves the tolerations to DefaultTolerationSeconds."""
        spec: dict[str, Any] = {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}],
        }
        if toleration_seconds is not None:
            spec["tolerations"] = [
                {
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": toleration_seconds,
                }
                for key in (NOT_READY, UNREACHABLE)
            ]
        self.registry.create(PODS, "default", {"metadata": {"name": name}, "spec": spec}, ADMIN)


def is_terminating(pod: dict[str, Any] | None) -> bool:
    return pod is None or "deletionTimestamp" in pod["metadata"]


# --------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], (0, STATE_NORMAL)),
        (["True"] * 10, (0, STATE_NORMAL)),
        (["Unknown"] * 3, (3, STATE_FULL_DISRUPTION)),
        ([None], (1, STATE_FULL_DISRUPTION)),
        (["True"] + ["False"] * 2, (2, STATE_NORMAL)),  # two are never a disruption
        (["True"] * 2 + ["Unknown"] * 3, (3, STATE_PARTIAL_DISRUPTION)),  # 60 % >= 55 %
        (["True"] * 9 + ["Unknown"] * 11, (11, STATE_PARTIAL_DISRUPTION)),  # exactly 55 %
        (["True"] * 10 + ["Unknown"] * 10, (10, STATE_NORMAL)),  # 50 %
        (["True", "Unknown", "False", None], (3, STATE_PARTIAL_DISRUPTION)),
    ],
)
def test_compute_zone_state_follows_the_real_table(
    statuses: list[str | None], expected: tuple[int, str]
) -> None:
    assert compute_zone_state(statuses, 0.55) == expected


@pytest.mark.parametrize(
    ("tolerations", "expected"),
    [
        ([], 0.0),  # nothing tolerates the taint: delete now
        ([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}], None),
        ([{"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 300}], 300.0),
        ([{"operator": "Exists", "tolerationSeconds": 0}], 0.0),
        ([{"key": NOT_READY, "operator": "Exists", "tolerationSeconds": 60}], 0.0),
        # The first matching toleration per taint is used, not the smallest.
        (
            [
                {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 3600},
                {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 60},
            ],
            3600.0,
        ),
        ([{"key": UNREACHABLE, "operator": "Equal", "value": "x"}], 0.0),
    ],
)
def test_min_toleration_seconds(tolerations: list[dict[str, Any]], expected: float | None) -> None:
    taints = [{"key": UNREACHABLE, "effect": "NoExecute"}]
    assert min_toleration_seconds(taints, tolerations) == expected


def test_taint_queue_releases_one_node_per_token_on_simulated_time() -> None:
    queue = RateLimitedTimedQueue(0.1, now=0.0)
    for name in ("a", "b", "c"):
        assert queue.add(name, 0.0)
    assert not queue.add("a", 0.0)  # a UniqueQueue takes a node once until removed
    done: list[tuple[float, str]] = []
    for t in range(0, 25):
        queue.try_process(float(t), lambda name, t=t: (done.append((t, name)) is None, 0.0))
    assert done == [(0, "a"), (10, "b"), (20, "c")]
    assert not queue.add("a", 30.0)  # processed nodes stay known ...
    assert not queue.remove("a")
    assert queue.add("a", 30.0)  # ... until removed


# --------------------------------------------------------------------------------------
# Kubelets and node health
# --------------------------------------------------------------------------------------


def test_healthy_cluster_stays_normal() -> None:
    c = Cluster()
    c.run(300)
    nodes = [e.name for e in c.store.iter_current(NODES)]
    assert c.controller.zone_states() == dict.fromkeys(("zone-a", "zone-b", "zone-c"), STATE_NORMAL)
    assert all(c.ready(n) == "True" for n in nodes)
    assert not any(c.taints(n, "NoExecute") or c.taints(n, "NoSchedule") for n in nodes[1:])
    # Every Lease is fresh: renewed within one interval (plus jitter).
    assert all(c.now() - c.lease_renewed_at(n) <= RENEW_INTERVAL * 1.05 + 1 for n in nodes)
    # About one renewal per node every 10 s (1 s steps make it up to 1 s later), and
    # nearly every node re-reported its unchanged status within the 5 min report period.
    assert c.kubelets.stats.lease_renewals >= len(nodes) * 300 // 12
    assert c.kubelets.stats.status_updates >= len(nodes) * 0.9
    counters = c.controller.counters
    assert counters.node_status_updates == counters.no_execute_taints_added == 0
    assert counters.evictions_attempted == 0


def test_stopped_kubelets_lose_their_nodes_then_pods_by_toleration() -> None:
    c = Cluster()
    c.run(30)
    zone_a = c.zone_nodes("zone-a")
    stopped = zone_a[: round(len(zone_a) * 0.3)]  # 30 % of one zone
    victim = stopped[0]
    for name, seconds in (("fast", 60), ("default", None), ("sticky", 3600)):
        c.add_pod(name, victim, seconds)
    # "default" got the DefaultTolerationSeconds tolerations: 300 s.
    default_pod = c.pod("default", "default")
    assert default_pod is not None
    assert {t.get("tolerationSeconds") for t in default_pod["spec"]["tolerations"]} == {300}

    c.faults.set_kubelets_stopped(frozenset(stopped))
    last_renewal = {n: c.lease_renewed_at(n) for n in stopped}
    grace = c.settings.node_monitor_grace_period_seconds
    period = c.settings.node_monitor_period_seconds

    unknown_at: dict[str, float] = {}

    def all_unknown() -> bool:
        for n in stopped:
            if n not in unknown_at and c.ready(n) == "Unknown":
                unknown_at[n] = c.now()
                # The NoSchedule taint comes with the status change, in the same pass.
                assert UNREACHABLE in c.taints(n, "NoSchedule")
        return len(unknown_at) == len(stopped)

    c.run_until(all_unknown, limit=grace + 2 * RENEW_INTERVAL + period)
    for n in stopped:
        # Not before the grace period since the last renewal, and within one monitor
        # period (plus the controller's observation delay) after it.
        assert last_renewal[n] + grace <= unknown_at[n] <= last_renewal[n] + grace + 2 * period + 1
    running = [n for n in zone_a if n not in stopped]
    assert all(c.ready(n) == "True" for n in running)
    assert c.controller.zone_states()["zone-a"] == STATE_NORMAL  # 30 % < 55 %

    # NoExecute taints follow at the zone's rate: one node per 1 / 0.1 s.
    c.run_until(
        lambda: all(c.taints(n, "NoExecute") for n in stopped), limit=len(stopped) * 10 + 20
    )
    added = sorted(parse_time(c.taints(n, "NoExecute")[UNREACHABLE]) for n in stopped)
    gaps = [b - a for a, b in itertools.pairwise(added)]
    assert all(gap >= 1 / c.settings.node_eviction_rate - 1 for gap in gaps), gaps
    assert c.controller.counters.no_execute_taints_by_zone["zone-a"] == len(stopped)
    assert c.controller.counters.no_execute_taints_added == len(stopped)

    tainted_at = parse_time(c.taints(victim, "NoExecute")[UNREACHABLE])
    schedule = c.controller.eviction_schedule()
    assert schedule["default/fast"] == pytest.approx(tainted_at + 60, abs=1.5)
    assert schedule["default/default"] == pytest.approx(tainted_at + 300, abs=1.5)
    assert "default/sticky" in schedule

    c.run_until(lambda: is_terminating(c.pod("default", "fast")), limit=70)
    assert c.now() >= tainted_at + 59
    assert not is_terminating(c.pod("default", "default"))
    c.run_until(lambda: is_terminating(c.pod("default", "default")), limit=260)
    assert c.now() >= tainted_at + 299
    c.run(60)
    assert not is_terminating(c.pod("default", "sticky"))
    # A stopped kubelet cannot finish the deletions: the pods stay Terminating.
    fast = c.pod("default", "fast")
    assert fast is not None
    assert "deletionTimestamp" in fast["metadata"]
    disruption = [x for x in fast["status"]["conditions"] if x["type"] == "DisruptionTarget"]
    assert disruption
    assert disruption[0]["reason"] == "DeletionByTaintManager"
    assert c.controller.counters.evictions_denied == 0

    # The kubelets come back: Ready again, taints gone, Terminating pods finished.
    c.faults.set_kubelets_stopped(frozenset())
    c.run_until(
        lambda: all(
            c.ready(n) == "True" and not c.taints(n, "NoExecute") and not c.taints(n, "NoSchedule")
            for n in stopped
        ),
        limit=60,
    )
    c.run(20)
    assert c.pod("default", "fast") is None
    assert "default/sticky" not in c.controller.eviction_schedule()  # cancelled by untaint
    assert not is_terminating(c.pod("default", "sticky"))


def test_zone_states_full_and_partial_disruption() -> None:
    c = Cluster()
    c.run(20)
    zone_b, zone_c = c.zone_nodes("zone-b"), c.zone_nodes("zone-c")
    c.faults.set_kubelets_stopped(frozenset(zone_b + zone_c[:12]))  # zone-c: 12 of 20
    c.run_until(
        lambda: (
            c.controller.zone_states().get("zone-b") == STATE_FULL_DISRUPTION
            and c.controller.zone_states().get("zone-c") == STATE_PARTIAL_DISRUPTION
        ),
        limit=120,
    )
    assert c.controller.zone_states()["zone-a"] == STATE_NORMAL
    assert c.controller.unhealthy_nodes()["zone-b"] == len(zone_b)
    # FullDisruption keeps the normal rate; a small partially disrupted zone stops.
    assert c.controller.eviction_rate("zone-b") == c.settings.node_eviction_rate
    assert c.controller.eviction_rate("zone-c") == 0.0
    c.run(60)
    assert c.controller.counters.no_execute_taints_by_zone["zone-c"] == 0
    assert c.controller.counters.no_execute_taints_by_zone["zone-b"] >= 5


def test_large_partially_disrupted_zone_uses_the_secondary_rate() -> None:
    settings = NodeLifecycleSettings(large_cluster_size_threshold=10)
    c = Cluster(settings=settings)
    c.run(20)
    zone_c = c.zone_nodes("zone-c")
    c.faults.set_kubelets_stopped(frozenset(zone_c[:15]))
    c.run_until(
        lambda: c.controller.zone_states().get("zone-c") == STATE_PARTIAL_DISRUPTION, limit=120
    )
    assert c.controller.eviction_rate("zone-c") == settings.secondary_node_eviction_rate


def test_all_zones_down_stops_every_eviction() -> None:
    c = Cluster(nodes=30)
    c.run(20)
    everyone = frozenset(e.name for e in c.store.iter_current(NODES))
    c.faults.set_kubelets_stopped(everyone)
    c.run_until(
        lambda: set(c.controller.zone_states().values()) == {STATE_FULL_DISRUPTION}, limit=120
    )
    c.run(120)
    # Master disruption mode: no NoExecute taint anywhere, every zone's limiter at 0.
    assert all(not c.taints(n, "NoExecute") for n in everyone)
    assert all(c.controller.eviction_rate(z) == 0.0 for z in c.controller.zone_states())
    assert c.controller.counters.evictions_attempted == 0
    assert all(c.ready(n) == "Unknown" for n in everyone)


def _deny_policy_objects() -> Iterable[tuple[str, dict[str, Any]]]:
    yield (
        "validatingadmissionpolicies",
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "pause-taint-eviction"},
            "spec": {
                "failurePolicy": "Ignore",
                "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["DELETE"],
                            "resources": ["pods"],
                        }
                    ]
                },
                "matchConditions": [
                    {
                        "name": "node-controller",
                        "expression": "request.userInfo.username == "
                        "'system:serviceaccount:kube-system:node-controller'",
                    }
                ],
                "validations": [
                    {
                        "expression": "!has(params.data) || !('paused' in params.data) "
                        "|| params.data.paused != 'true'",
                        "message": "taint-based eviction is paused",
                    }
                ],
            },
        },
    )
    yield (
        "validatingadmissionpolicybindings",
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "pause-taint-eviction"},
            "spec": {
                "policyName": "pause-taint-eviction",
                "validationActions": ["Deny"],
                "paramRef": {
                    "name": "eviction-pause",
                    "namespace": "kube-system",
                    "parameterNotFoundAction": "Allow",
                },
            },
        },
    )
    yield (
        "configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "eviction-pause", "namespace": "kube-system"},
            "data": {"paused": "true"},
        },
    )


def install_deny_policy(registry: Registry) -> None:
    for plural, obj in _deny_policy_objects():
        group = obj["apiVersion"].rpartition("/")[0]
        rt = lookup(group, plural)
        assert rt is not None
        registry.create(rt, obj["metadata"].get("namespace", ""), obj, ADMIN)


def test_denied_deletions_leave_pods_alone_and_are_not_retried_until_a_change() -> None:
    c = Cluster(settings=NodeLifecycleSettings(default_toleration_seconds=30))
    install_deny_policy(c.registry)
    c.run(20)
    victim = c.zone_nodes("zone-a")[0]
    c.add_pod("fast", victim, 10)
    c.faults.set_kubelets_stopped(frozenset({victim}))
    c.run_until(lambda: bool(c.taints(victim, "NoExecute")), limit=120)
    c.run(60)
    counters = c.controller.counters
    pods = c.store.by_index(PODS, "spec.nodeName", victim)
    assert pods
    assert not any(is_terminating(e.obj()) for e in pods)
    assert counters.evictions_done == 0
    # Each pod was tried 5 times, then dropped (timed_workers.go removes the worker).
    assert counters.evictions_denied == counters.evictions_attempted
    assert counters.evictions_denied == 5 * counters.evictions_abandoned > 0
    attempts = counters.evictions_attempted
    c.run(120)
    assert c.controller.counters.evictions_attempted == attempts  # no change, no retry
