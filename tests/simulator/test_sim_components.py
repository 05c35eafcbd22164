"""Simulated scheduler and controller-manager: endpoints, leader Leases, kill/revive."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubeballast.simulator.clock import SimClock
from kubeballast.simulator.components import RENEW_DEADLINE_SECONDS, Component
from kubeballast.simulator.faults import Congestion, FaultState
from kubeballast.simulator.registry import Registry
from kubeballast.simulator.resources import LEASES, NAMESPACES, PODS
from kubeballast.simulator.store import Store, decode


def gauge(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                values[tuple(sorted(sample.labels.items()))] = sample.value
    return values


@pytest.fixture
def registry() -> Registry:
    store = Store()
    store.bulk_load([(NAMESPACES, {"metadata": {"name": "kube-system"}})])
    return Registry(store, SimClock())


@pytest.fixture
async def scheduler(registry: Registry) -> AsyncIterator[Component]:
    faults = FaultState(random.Random(1), time.monotonic)
    component = Component("kube-scheduler", registry, registry.clock, faults)
    await component.start()
    yield component
    await component.stop()


async def test_leader_lease_is_created_and_renewed(scheduler: Component) -> None:
    assert scheduler.renew()
    lease = decode(scheduler.registry.store.get(LEASES, "kube-system", "kube-scheduler").raw)
    assert lease["spec"]["holderIdentity"] == scheduler.identity
    first = lease["spec"]["renewTime"]
    scheduler.clock.advance(2)
    assert scheduler.renew()
    lease = decode(scheduler.registry.store.get(LEASES, "kube-system", "kube-scheduler").raw)
    assert lease["spec"]["renewTime"] > first
    assert lease["spec"]["leaseTransitions"] == 0


async def test_endpoints_and_metrics_follow_state(scheduler: Component) -> None:
    scheduler.renew()
    pending = {
        "metadata": {"name": "waiting", "namespace": "kube-system"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    scheduler.registry.create(PODS, "kube-system", pending, scheduler.user)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{scheduler.url}/healthz") as resp:
            assert resp.status == 200
            assert await resp.text() == "ok"
        async with session.get(f"{scheduler.url}/metrics") as resp:
            text = await resp.text()
    assert gauge(text, "leader_election_master_status") == {(("name", "kube-scheduler"),): 1.0}
    assert gauge(text, "scheduler_pending_pods")[(("queue", "active"),)] == 1.0


async def test_killed_component_refuses_connections_and_revives(scheduler: Component) -> None:
    port = scheduler.port
    await scheduler.kill()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"{scheduler.url}/healthz"):
                pass
        await scheduler.revive()
        assert scheduler.port == port
        async with session.get(f"{scheduler.url}/healthz") as resp:
            assert resp.status == 200


async def test_congestion_on_leader_election_loses_leadership_after_deadline(
    scheduler: Component,
) -> None:
    assert scheduler.renew()
    scheduler.faults.set_congestion(Congestion(reject_fraction=1.0))
    scheduler.clock.advance(RENEW_DEADLINE_SECONDS / 2)
    assert not scheduler.renew()
    assert scheduler.is_leader  # still within the renew deadline
    scheduler.clock.advance(RENEW_DEADLINE_SECONDS)
    assert not scheduler.renew()
    assert not scheduler.is_leader
    scheduler.faults.set_congestion(None)
    assert scheduler.renew()
    assert scheduler.is_leader


async def test_controller_manager_reports_workqueues(registry: Registry) -> None:
    faults = FaultState(random.Random(1), time.monotonic)
    depth = {"node_lifecycle_controller": (7, 12, 3.0)}
    kcm = Component(
        "kube-controller-manager", registry, registry.clock, faults, workqueues=lambda: depth
    )
    kcm.refresh_metrics()
    text = kcm.metrics.render()[0].decode()
    depths = gauge(text, "workqueue_depth")
    assert depths[(("name", "node_lifecycle_controller"),)] == 7.0
    assert depths[(("name", "replicaset"),)] == 0.0
