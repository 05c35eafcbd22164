"""The issue's "Done when": apiserver congestion turns into pod deletions, and a deny
policy stops the deletions but not the taints.

A 60-node, 3-zone cluster runs with its simulated kubelets and controllers as real
asyncio tasks at clock factor 50. Congestion rejects 97 % of node heartbeats with 429
(``Congestion.lease_reject_fraction``). A real kubelet survives most of that: client-go
retries each 429 after Retry-After for up to the 10 s client timeout, and the lease
controller tries five updates, a GET and five more; only about one sync in twenty fails
outright, so a minority of nodes in every zone loses its Lease at any time. That is what
this scenario needs: starving *every* heartbeat would put every zone in FullDisruption,
and the real controller then stops evicting altogether (master disruption mode, tested in
test_nodelifecycle.py).

Nothing sleeps to synchronise: the tests poll observable state with generous deadlines in
real time while simulated time runs 50 times faster. Tolerations are 30 s and the
eviction rate 0.2 nodes/s per zone (real flags, non-default values) so the whole story
fits in a few real seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Sibling test module (pytest's default prepend import mode puts this folder on sys.path).
from test_nodelifecycle import StorePolicies, install_deny_policy

from kubeballast.simulator import scenario
from kubeballast.simulator.admission import Admission
from kubeballast.simulator.clock import SimClock
from kubeballast.simulator.faults import Congestion, FaultState
from kubeballast.simulator.kubelet import RENEW_INTERVAL, Kubelets, parse_time
from kubeballast.simulator.nodelifecycle import NodeLifecycleController, min_toleration_seconds
from kubeballast.simulator.registry import Registry
from kubeballast.simulator.resources import NODES, PODS
from kubeballast.simulator.selectors import FieldSelector, LabelSelector
from kubeballast.simulator.settings import NodeLifecycleSettings, ScenarioSettings
from kubeballast.simulator.store import Store, Watch, decode

CLOCK_FACTOR = 50.0
DEADLINE_REAL_SECONDS = 120.0
SETTINGS = NodeLifecycleSettings(default_toleration_seconds=30, node_eviction_rate=0.2)
UNREACHABLE_NO_EXECUTE = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}


@dataclass
class Observed:
    """What a watcher saw happen, in simulated seconds."""

    unknown_since: dict[str, float] = field(default_factory=dict)
    no_execute: dict[str, set[float]] = field(default_factory=dict)
    """Node -> every timeAdded of its NoExecute taints."""
    zone_of: dict[str, str] = field(default_factory=dict)
    deletions: dict[str, tuple[str, float, float | None]] = field(default_factory=dict)
    """Pod key -> (node, deletion request time, toleration seconds)."""

    def see_node(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        self.zone_of[name] = node["metadata"].get("labels", {}).get(scenario.ZONE_LABEL, "")
        for c in node.get("status", {}).get("conditions") or ():
            if c["type"] == "Ready" and c["status"] == "Unknown":
                self.unknown_since.setdefault(name, parse_time(c["lastTransitionTime"]))
        for t in node.get("spec", {}).get("taints") or ():
            if t["effect"] == "NoExecute":
                self.no_execute.setdefault(name, set()).add(parse_time(t["timeAdded"]))

    def see_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        stamp = meta.get("deletionTimestamp")
        key = f"{meta['namespace']}/{meta['name']}"
        if stamp is None or key in self.deletions:
            return
        # The registry stamps deletionTimestamp = request time + grace period.
        grace = float(meta.get("deletionGracePeriodSeconds") or 0)
        tolerations = pod["spec"].get("tolerations") or []
        self.deletions[key] = (
            pod["spec"]["nodeName"],
            parse_time(stamp) - grace,
            min_toleration_seconds([UNREACHABLE_NO_EXECUTE], tolerations),
        )


class Run:
    """One cluster with kubelets and controllers as asyncio tasks."""

    def __init__(self) -> None:
        self.clock = SimClock(
            CLOCK_FACTOR, start=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
        )
        self.store = Store()
        self.store.bulk_load(
            scenario.generate(
                ScenarioSettings(nodes=60, zones=3, pods_per_node=5, control_plane_nodes=1),
                self.clock.now(),
                lifecycle=SETTINGS,
            )
        )
        self.registry = Registry(
            self.store,
            self.clock,
            Admission(StorePolicies(self.store)),
            default_toleration_seconds=SETTINGS.default_toleration_seconds,
        )
        self.faults = FaultState(random.Random(3), time.monotonic)
        self.kubelets = Kubelets(self.store, self.registry, self.clock, self.faults)
        self.controller = NodeLifecycleController(self.store, self.registry, self.clock, SETTINGS)
        self.observed = Observed()
        self._watches: list[Watch] = []

    def watch(self) -> None:
        for rt in (NODES, PODS):
            self._watches.append(
                self.store.watch(
                    rt,
                    labels=LabelSelector(),
                    fields=FieldSelector(),
                    resource_version=str(self.store.resource_version),
                )
            )

    def drain(self) -> None:
        if not self._watches:
            return
        nodes, pods = self._watches
        for kind, raw, _ in nodes.drain():
            if kind != "DELETED":
                self.observed.see_node(decode(raw))
        for _kind, raw, _ in pods.drain():
            self.observed.see_pod(decode(raw))

    async def until(self, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE_REAL_SECONDS
        while time.monotonic() < deadline:
            self.drain()
            if condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(
            f"not reached in {DEADLINE_REAL_SECONDS} s: {self.controller.counters}, "
            f"{self.kubelets.stats}, zones {self.controller.zone_states()}"
        )

    async def congest(self, done: Callable[[Run], bool]) -> float:
        """Run until every kubelet renewed once, congest, run until ``done``; returns
        the simulated time the congestion started."""
        tasks = [
            asyncio.create_task(self.kubelets.run()),
            asyncio.create_task(self.controller.run()),
        ]
        try:
            nodes = self.store.count(NODES)
            await self.until(lambda: self.kubelets.stats.lease_renewals >= nodes)
            self.watch()
            started = self.clock.time()
            self.faults.set_congestion(Congestion(lease_reject_fraction=0.97))
            await self.until(lambda: done(self))
            self.drain()
            return started
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in self._watches:
                w.close()


def _tainted_nodes(run: Run) -> int:
    return len(run.observed.no_execute)


async def test_congestion_starves_heartbeats_and_taint_eviction_deletes_pods() -> None:
    run = Run()
    started = await run.congest(lambda r: _tainted_nodes(r) >= 4 and len(r.observed.deletions) >= 8)
    observed = run.observed
    grace = SETTINGS.node_monitor_grace_period_seconds

    # Unknown only after the grace period: the last renewal before the congestion was at
    # most one (jittered) interval earlier; lastTransitionTime has whole seconds.
    assert observed.unknown_since
    earliest_unknown = min(observed.unknown_since.values())
    assert earliest_unknown >= started + grace - RENEW_INTERVAL * 1.04 - 1
    assert run.controller.counters.node_status_updates >= len(observed.unknown_since)

    # NoExecute taints at each zone's rate (0.2 per second: at least 5 s apart).
    by_zone: dict[str, list[float]] = {}
    for node, times in observed.no_execute.items():
        by_zone.setdefault(observed.zone_of[node], []).extend(times)
    for zone, times in by_zone.items():
        times.sort()
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= 1 / SETTINGS.node_eviction_rate - 1 for g in gaps), (zone, times)

    # Each deleted pod went no sooner than its toleration after a NoExecute taint of its
    # node, and only pods with a finite toleration went.
    for key, (node, requested, toleration) in observed.deletions.items():
        assert toleration is not None, key
        assert node in observed.no_execute, key
        assert any(requested >= t + toleration - 1 for t in observed.no_execute[node]), key
    counters = run.controller.counters
    assert counters.evictions_done >= len(observed.deletions)
    assert counters.evictions_denied == 0


async def test_deny_policy_keeps_every_pod_while_taints_still_appear() -> None:
    run = Run()
    install_deny_policy(run.registry)

    def denied_long_enough(r: Run) -> bool:
        if _tainted_nodes(r) < 4 or r.controller.counters.evictions_denied < 5:
            return False
        first_taint = min(min(times) for times in r.observed.no_execute.values())
        return r.clock.time() >= first_taint + SETTINGS.default_toleration_seconds + 30

    await run.congest(denied_long_enough)
    counters = run.controller.counters
    assert run.observed.deletions == {}
    terminating = [e.key for e in run.store.iter_current(PODS) if b"deletionTimestamp" in e.raw]
    assert terminating == []
    assert counters.evictions_done == 0
    assert counters.evictions_attempted == counters.evictions_denied > 0
    assert counters.no_execute_taints_added >= 4
