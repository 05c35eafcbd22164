"""The eviction guard's "Done when": scenario by scenario in the simulator, counting the
pods the taint-eviction controller deletes (see guard_support for the stack).

Each scenario runs at a clock factor of 20: from the congestion's start, the first
taint-based deletion would come after the 50 s grace period, the controller's tainting
(0.1 nodes/s per zone) and the 300 s toleration, about 18 real seconds.
"""

from __future__ import annotations

from pathlib import Path

from guard_support import eventually, guard_stack, storm_alert

from kubeballast.core import evictionguard as eg


async def test_guard_congestion_is_paused_before_any_eviction_and_resumed_after(
    tmp_path: Path,
) -> None:
    async with guard_stack(tmp_path) as stack:
        engine = await stack.start_engine(stack.receiver_config(stack.guard_config()))
        starved = stack.congest()
        assert len(starved) >= 9
        started = stack.now()

        async def wave() -> bool:
            return (await stack.metric("kubeballast_lease_stale_wave_zones") or 0) >= 2 and (
                await stack.metric("kubeballast_apiserver_congested") or 0
            ) == 1

        await eventually(wave, "the exporter sees the congestion and the wave")
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
    state = await stack.pause()  # type: ignore[attr-defined]
    return state is not None and not state.paused and state.end_reason == reason


async def test_guard_disabled_lets_the_controller_delete_healthy_pods(tmp_path: Path) -> None:
    async with guard_stack(tmp_path) as stack:
        engine = await stack.start_engine(
            stack.receiver_config(stack.guard_config(), enabled=False)
        )
        stack.congest()
        await engine.accept(storm_alert())
        await eventually(
            lambda: stack.counters.evictions_done > 0, "the baseline: healthy pods deleted", 120
        )
        assert not await stack.paused()


async def test_guard_dead_nodes_with_a_healthy_apiserver_are_evicted(tmp_path: Path) -> None:
    async with guard_stack(tmp_path) as stack:
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
        records = await engine.ledger.records()
        assert any(r.state == "refused" for r in records.values())


async def test_guard_zone_partition_with_a_healthy_apiserver_is_not_paused(
    tmp_path: Path,
) -> None:
    async with guard_stack(tmp_path) as stack:
        engine = await stack.start_engine(stack.receiver_config(stack.guard_config()))
        stack.server.faults.set_partition(frozenset({"zone-a"}))

        async def zone_stale() -> bool:
            return (await stack.metric("kubeballast_lease_stale_wave_nodes") or 0) >= 5

        await eventually(zone_stale, "zone-a's Leases go stale")
        assert await stack.metric("kubeballast_lease_stale_wave_zones") == 1
        await engine.accept(storm_alert())

        async def refused() -> bool:
            records = await engine.ledger.records()
            return any(r.state == "refused" for r in records.values())

        await eventually(refused, "the guard refuses")
        records = await engine.ledger.records()
        detail = " ".join(r.detail for r in records.values())
        assert "no apiserver is congested" in detail
        assert "spans 1 zone" in detail
        assert not await stack.paused()


async def test_guard_janitor_ends_the_pause_of_a_dead_receiver(tmp_path: Path) -> None:
    async with guard_stack(tmp_path) as stack:
        engine = await stack.start_engine(
            stack.receiver_config(
                stack.guard_config(pause_seconds=120.0, renew_before_seconds=60.0)
            )
        )
        stack.congest()

        async def storm() -> bool:
            # What KubeNodeHeartbeatStorm waits for: the wave and the congestion verdict
            # (the wave alone can come first, and the guard would rightly refuse).
            return (await stack.metric("kubeballast_lease_stale_wave_zones") or 0) >= 2 and (
                await stack.metric("kubeballast_apiserver_congested") or 0
            ) == 1

        await eventually(storm, "the wave")
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


async def test_guard_pause_ends_at_its_cap_while_congestion_lasts(tmp_path: Path) -> None:
    async with guard_stack(tmp_path) as stack:
        guard = stack.guard_config(
            pause_seconds=60.0, renew_before_seconds=40.0, max_pause_seconds=150.0
        )
        engine = await stack.start_engine(stack.receiver_config(guard))
        stack.congest()

        async def storm() -> bool:
            # What KubeNodeHeartbeatStorm waits for: the wave and the congestion verdict
            # (the wave alone can come first, and the guard would rightly refuse).
            return (await stack.metric("kubeballast_lease_stale_wave_zones") or 0) >= 2 and (
                await stack.metric("kubeballast_apiserver_congested") or 0
            ) == 1

        await eventually(storm, "the wave")
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


async def _has(stack: object, series: str) -> bool:
    return series in await stack.metrics()  # type: ignore[attr-defined]


async def test_guard_without_the_policy_api_removes_taints_instead(tmp_path: Path) -> None:
    async with guard_stack(tmp_path, policy_api=False) as stack:
        engine = await stack.start_engine(
            stack.receiver_config(stack.guard_config(mode="taint-removal"))
        )
        stack.congest()

        async def storm() -> bool:
            # What KubeNodeHeartbeatStorm waits for: the wave and the congestion verdict
            # (the wave alone can come first, and the guard would rightly refuse).
            return (await stack.metric("kubeballast_lease_stale_wave_zones") or 0) >= 2 and (
                await stack.metric("kubeballast_apiserver_congested") or 0
            ) == 1

        await eventually(storm, "the wave")
        await engine.accept(storm_alert())
        await eventually(stack.paused, "the pause is in force")
        state = await stack.pause()
        assert state is not None
        assert state.mode == "taint-removal"
        await eventually(
            lambda: stack.counters.taints_removed > 0 or stack.counters.no_execute_taints_added > 0,
            "the controller taints",
        )
        # Well past grace + toleration of the first taints: nothing was deleted.
        start = stack.now()
        await eventually(lambda: stack.now() - start > 450, "450 simulated seconds pass", 60)
        assert stack.counters.no_execute_taints_added > 0
        assert stack.counters.evictions_done == 0


async def test_guard_refuses_without_service_account_credentials(tmp_path: Path) -> None:
    async with guard_stack(tmp_path, service_account_credentials=False) as stack:
        engine = await stack.start_engine(stack.receiver_config(stack.guard_config()))
        stack.congest()

        async def storm() -> bool:
            return (await stack.metric("kubeballast_lease_stale_wave_zones") or 0) >= 2 and (
                await stack.metric("kubeballast_apiserver_congested") or 0
            ) == 1

        await eventually(storm, "the wave")
        await engine.accept(storm_alert())

        async def refused() -> bool:
            records = await engine.ledger.records()
            return any(r.state == "refused" for r in records.values())

        await eventually(refused, "the guard refuses")
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


async def test_guard_nodes_that_die_during_the_pause_are_evicted_after_it(
    tmp_path: Path,
) -> None:
    async with guard_stack(tmp_path) as stack:
        engine = await stack.start_engine(stack.receiver_config(stack.guard_config()))
        starved = sorted(stack.congest())

        async def storm() -> bool:
            return (await stack.metric("kubeballast_lease_stale_wave_zones") or 0) >= 2 and (
                await stack.metric("kubeballast_apiserver_congested") or 0
            ) == 1

        await eventually(storm, "the wave")
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
