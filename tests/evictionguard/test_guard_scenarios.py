"""The eviction guard's "Done when": scenario by scenario in the simulator, counting the
pods the taint-eviction controller deletes (see guard_support for the stack).

Each scenario runs at a clock factor of 20 (the cap's at 10: CAP_CLOCK_FACTOR): from the
congestion's start, the first taint-based deletion would come after the 50 s grace
period, the controller's tainting (0.1 nodes/s per zone) and the 300 s toleration, about
18 real seconds.

Those are waits for simulated time, not work: the scenarios run side by side, each on
its own stack (guard_support.Scenarios, SIDE_BY_SIDE at a time), and each test below
awaits its scenario's outcome. The scenarios are the ``_``-prefixed functions, each
one's assertions as they were when the tests ran one by one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from guard_support import Scenario, Scenarios, eventually, guard_stack, storm_alert

from kubeballast.core import evictionguard as eg
from kubeballast.remediations.engine import Engine

pytestmark = pytest.mark.asyncio(loop_scope="module")

SIDE_BY_SIDE = int(os.environ.get("GUARD_SCENARIOS_SIDE_BY_SIDE", "2"))
"""Stacks at once. A stack takes about a sixth of a core, and one event loop keeps every
running stack going at a factor of 20 on a loaded two-core machine. Measured with busy
loops beside the tests: two or three held with two busy loops; with three, and
other tests running (a load of 9 to 10), three side by side let the storm come 5
simulated seconds past the 350 s margin, two held. 1 runs them one after the other."""
CAP_CLOCK_FACTOR = 10.0
"""The cap scenario's clock: it asserts the pause ends within 30 simulated seconds of
its cap, 1.5 real seconds at a factor of 20, which a loaded two-core machine overran
(by 15 s, run alone as well as side by side); 3 real seconds here."""


async def _congestion_is_paused_before_any_eviction_and_resumed_after(tmp: Path) -> None:
    async with guard_stack(tmp) as stack:
        engine = await stack.start_engine(stack.receiver_config(stack.guard_config()))
        starved = stack.congest()
        assert len(starved) >= 9
        started = stack.now()

        await stack.storm()
        await engine.accept(storm_alert())
        await eventually(stack.paused, "the pause is in force")
        paused_at = stack.now()
        assert stack.counters.evictions_done == 0
        # The first taint-based deletion could come no earlier than grace + toleration.
        assert paused_at - started < 50 + 300

        # The controller taints and tries to evict: admission denies it.
        await eventually(lambda: stack.counters.evictions_denied > 0, "an eviction is denied")
        assert stack.counters.evictions_done == 0

        stack.relieve()
        await eventually(
            lambda: _ended(stack, "recovered"), "the pause is lifted after the recovery", 120
        )
        state = await stack.pause()
        assert state is not None
        assert state.ended_at is not None
        assert state.recovering_since is None
        # Hysteresis: at least two grace periods of fresh heartbeats before resuming.
        assert stack.counters.evictions_done == 0, "no healthy pod was deleted"


async def _ended(stack: object, reason: str) -> bool:
    """The pause ended, for ``reason``: an end for any other reason fails at once."""
    state = await stack.pause()  # type: ignore[attr-defined]
    if state is None or state.paused:
        return False
    assert state.end_reason == reason, f"the pause ended for {state.end_reason!r}: {state}"
    return True


async def _disabled_lets_the_controller_delete_healthy_pods(tmp: Path) -> None:
    async with guard_stack(tmp) as stack:
        engine = await stack.start_engine(
            stack.receiver_config(stack.guard_config(), enabled=False)
        )
        stack.congest()
        await engine.accept(storm_alert())
        await eventually(
            lambda: stack.counters.evictions_done > 0, "the baseline: healthy pods deleted", 120
        )
        assert not await stack.paused()


async def _dead_nodes_with_a_healthy_apiserver_are_evicted(tmp: Path) -> None:
    async with guard_stack(tmp) as stack:
        engine = await stack.start_engine(stack.receiver_config(stack.guard_config()))
        dead = frozenset({"node-0003", "node-0006"})
        stack.server.faults.set_kubelets_stopped(dead)
        await eventually(
            lambda: stack.counters.no_execute_taints_added >= 1, "the dead nodes are tainted"
        )
        # Even an alert that reaches the receiver (a stale one) must not pause anything.
        await engine.accept(storm_alert("KubeApiserverCongested"))
        await eventually(
            lambda: stack.counters.evictions_done > 0, "the dead nodes' pods are evicted", 120
        )
        assert not await stack.paused()
        # Refused at once, or (the precondition being worth waiting for) once the wait
        # for the evidence is over: either way never executed.
        await eventually(lambda: _refused(engine), "the guard refuses", 120)
        assert not await stack.paused()


async def _zone_partition_with_a_healthy_apiserver_is_not_paused(tmp: Path) -> None:
    async with guard_stack(tmp) as stack:
        engine = await stack.start_engine(stack.receiver_config(stack.guard_config()))
        stack.server.faults.set_partition(frozenset({"zone-a"}))

        async def zone_stale() -> bool:
            return (await stack.metric("kubeballast_lease_stale_wave_nodes") or 0) >= 5

        await eventually(zone_stale, "zone-a's Leases go stale")
        assert await stack.metric("kubeballast_lease_stale_wave_zones") == 1
        await engine.accept(storm_alert())
        await eventually(lambda: _refused(engine), "the guard refuses")
        records = await engine.ledger.records()
        detail = " ".join(r.detail for r in records.values())
        assert "no apiserver is congested" in detail
        assert "spans 1 zone" in detail
        assert not await stack.paused()


async def _janitor_ends_the_pause_of_a_dead_receiver(tmp: Path) -> None:
    async with guard_stack(tmp) as stack:
        engine = await stack.start_engine(
            stack.receiver_config(
                stack.guard_config(pause_seconds=120.0, renew_before_seconds=60.0)
            )
        )
        stack.congest()

        await stack.storm()
        await engine.accept(storm_alert())
        await eventually(stack.paused, "the pause is in force")
        await stack.stop_engine(engine, abort=True)  # the receiver is killed

        state = await stack.pause()
        assert state is not None
        assert state.expires_at is not None
        assert await eg.janitor(stack.api, stack.now()) is None, "not yet expired"
        await eventually(lambda: stack.now() >= state.expires_at, "expiresAt passes")  # type: ignore[operator]
        ended = await eg.janitor(stack.api, stack.now())
        assert ended is not None
        assert ended.end_reason == "expired"
        assert not await stack.paused()
        assert await stack.metric("kubeballast_eviction_pause_active") is not None


async def _pause_ends_at_its_cap_while_congestion_lasts(tmp: Path) -> None:
    async with guard_stack(tmp, clock_factor=CAP_CLOCK_FACTOR) as stack:
        guard = stack.guard_config(
            pause_seconds=60.0, renew_before_seconds=40.0, max_pause_seconds=150.0
        )
        engine = await stack.start_engine(stack.receiver_config(guard))
        stack.congest()

        await stack.storm()
        await engine.accept(storm_alert())
        await eventually(stack.paused, "the pause is in force")
        first = await stack.pause()
        assert first is not None
        assert first.max_until is not None
        assert first.started_at is not None

        await eventually(lambda: _ended(stack, "cap"), "the pause ends at its cap", 120)
        state = await stack.pause()
        assert state is not None
        assert state.renewals >= 1, "renewed while the conditions held"
        assert state.ended_at is not None
        assert state.ended_at >= first.max_until
        assert state.ended_at - first.started_at <= 150 + 30
        # What KubeEvictionPauseCapReached reads.
        await eventually(
            lambda: _has(
                stack, 'kubeballast_eviction_pause_last_end_timestamp_seconds{reason="cap"}'
            ),
            "the exporter shows the cap",
        )
        assert await stack.metric("kubeballast_apiserver_congested") == 1, "still congested"


async def _refused(engine: Engine) -> bool:
    records = await engine.ledger.records()
    return any(r.state == "refused" for r in records.values())


async def _has(stack: object, series: str) -> bool:
    return series in await stack.metrics()  # type: ignore[attr-defined]


async def _without_the_policy_api_removes_taints_instead(tmp: Path) -> None:
    async with guard_stack(tmp, policy_api=False) as stack:
        engine = await stack.start_engine(
            stack.receiver_config(stack.guard_config(mode="taint-removal"))
        )
        stack.congest()

        await stack.storm()
        await engine.accept(storm_alert())
        await eventually(stack.paused, "the pause is in force")
        state = await stack.pause()
        assert state is not None
        assert state.mode == "taint-removal"
        await eventually(
            lambda: stack.counters.taints_removed > 0 or stack.counters.no_execute_taints_added > 0,
            "the controller taints",
        )
        # The first taints came before ``start``: their pods' deletions were due 300 s
        # (the toleration) later. Well past that (a grace period more): nothing deleted.
        start = stack.now()
        await eventually(lambda: stack.now() - start > 350, "350 simulated seconds pass", 60)
        assert stack.counters.no_execute_taints_added > 0
        assert stack.counters.evictions_done == 0


async def _refuses_without_service_account_credentials(tmp: Path) -> None:
    async with guard_stack(tmp, service_account_credentials=False) as stack:
        engine = await stack.start_engine(stack.receiver_config(stack.guard_config()))
        stack.congest()

        await stack.storm()
        await engine.accept(storm_alert())
        await eventually(lambda: _refused(engine), "the guard refuses")
        records = await engine.ledger.records()
        detail = " ".join(r.detail for r in records.values())
        assert "--use-service-account-credentials" in detail
        assert not await stack.paused()


async def _doomed_pods(stack: object, node: str) -> int:
    """Workload pods on ``node`` that are deleted or being deleted."""
    from kubernetes_asyncio import client

    api = client.CoreV1Api(stack.api)  # type: ignore[attr-defined]
    pods = await api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
    live = [p for p in pods.items if p.metadata.deletion_timestamp is None]
    return 5 - len(live)


async def _nodes_that_die_during_the_pause_are_evicted_after_it(tmp: Path) -> None:
    async with guard_stack(tmp) as stack:
        engine = await stack.start_engine(stack.receiver_config(stack.guard_config()))
        starved = sorted(stack.congest())

        await stack.storm()
        await engine.accept(storm_alert())
        await eventually(stack.paused, "the pause is in force")
        # Two of the starved nodes really die while evictions are paused.
        dead, healthy = starved[:2], starved[2:]
        stack.server.faults.set_kubelets_stopped(frozenset(dead))
        await eventually(lambda: stack.counters.evictions_denied > 0, "an eviction is denied")

        stack.relieve()
        await eventually(lambda: _ended(stack, "recovered"), "the pause is lifted", 120)

        async def dead_evicted() -> bool:
            return all([await _doomed_pods(stack, node) >= 3 for node in dead])

        # The denied evictions were dropped by the controller; the taint bounce after the
        # pause makes it count the tolerations again, and the dead nodes' pods go.
        await eventually(dead_evicted, "the dead nodes' pods are evicted after the pause", 120)
        for node in healthy:
            assert await _doomed_pods(stack, node) == 0, f"{node} lost pods"


# The longest first, so that the short ones fill the gaps.
SCENARIOS: tuple[Scenario, ...] = (
    _nodes_that_die_during_the_pause_are_evicted_after_it,
    _pause_ends_at_its_cap_while_congestion_lasts,  # at half the clock factor
    _congestion_is_paused_before_any_eviction_and_resumed_after,
    _without_the_policy_api_removes_taints_instead,
    _dead_nodes_with_a_healthy_apiserver_are_evicted,
    _disabled_lets_the_controller_delete_healthy_pods,
    _zone_partition_with_a_healthy_apiserver_is_not_paused,
    _janitor_ends_the_pause_of_a_dead_receiver,
    _refuses_without_service_account_credentials,
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scenarios(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scenarios]:
    """Every scenario whose test was selected, started at once (SIDE_BY_SIDE running)."""
    running = Scenarios(tmp_path_factory.mktemp, SIDE_BY_SIDE)
    selected = {item.name for item in request.session.items if item.module is request.module}
    for scenario in SCENARIOS:
        if f"test_guard{scenario.__name__}" in selected:
            running.start(scenario)
    try:
        yield running
    finally:
        await running.aclose()


async def test_guard_congestion_is_paused_before_any_eviction_and_resumed_after(
    scenarios: Scenarios,
) -> None:
    await scenarios.outcome(_congestion_is_paused_before_any_eviction_and_resumed_after)


async def test_guard_disabled_lets_the_controller_delete_healthy_pods(
    scenarios: Scenarios,
) -> None:
    await scenarios.outcome(_disabled_lets_the_controller_delete_healthy_pods)


async def test_guard_dead_nodes_with_a_healthy_apiserver_are_evicted(
    scenarios: Scenarios,
) -> None:
    await scenarios.outcome(_dead_nodes_with_a_healthy_apiserver_are_evicted)


async def test_guard_zone_partition_with_a_healthy_apiserver_is_not_paused(
    scenarios: Scenarios,
) -> None:
    await scenarios.outcome(_zone_partition_with_a_healthy_apiserver_is_not_paused)


async def test_guard_janitor_ends_the_pause_of_a_dead_receiver(scenarios: Scenarios) -> None:
    await scenarios.outcome(_janitor_ends_the_pause_of_a_dead_receiver)


async def test_guard_pause_ends_at_its_cap_while_congestion_lasts(scenarios: Scenarios) -> None:
    await scenarios.outcome(_pause_ends_at_its_cap_while_congestion_lasts)


async def test_guard_without_the_policy_api_removes_taints_instead(scenarios: Scenarios) -> None:
    await scenarios.outcome(_without_the_policy_api_removes_taints_instead)


async def test_guard_refuses_without_service_account_credentials(scenarios: Scenarios) -> None:
    await scenarios.outcome(_refuses_without_service_account_credentials)


async def test_guard_nodes_that_die_during_the_pause_are_evicted_after_it(
    scenarios: Scenarios,
) -> None:
    await scenarios.outcome(_nodes_that_die_during_the_pause_are_evicted_after_it)


async def test_guard_every_scenario_has_its_test() -> None:
    """The fixture starts a test's scenario by name: each test has its scenario."""
    tests = {name for name in globals() if name.startswith("test_guard_")}
    expected = {f"test_guard{scenario.__name__}" for scenario in SCENARIOS}
    assert tests - {"test_guard_every_scenario_has_its_test"} == expected
