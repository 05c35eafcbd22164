"""When the exporter's cluster-state collector renders: once per scrape, just before it.

A render costs 150-300 ms of CPU at the seed's scale, so the steady-state budget (5 %
of a core) depends on how many renders there are. The collector as the exporter runs
it (``background``, ``cache_seconds`` 10 s) must render in its worker thread only
when a scrape will read the result: after a scrape has read the last families, timed
to finish just before the next scrape is expected, never more often than every 10 s,
and not at all once the scrapes stop. Time is a :class:`StepClock` (the refresher's
sleeps, its monotonic clock and the wall clock), so every decision is checked exactly
and nothing waits; the renders themselves run for real in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kubeballast.core.config import ClusterStateConfig
from kubeballast.exporter.clusterstate import ClusterSnapshot
from kubeballast.exporter.state import StateCollector


class Snapshots:
    """The collector's snapshot source, recording when (step-clock time) it was read."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.taken: list[float] = []

    def __call__(self) -> ClusterSnapshot:
        self.taken.append(self.clock.now)
        return ClusterSnapshot(
            version=len(self.taken),
            taken_at=self.clock.time(),
            synced=False,  # renders only the synced gauge: the schedule is what is tested
            informers={},
            nodes={},
            node_leases={},
            pods=(),
            replicasets={},
            workloads={},
            pods_by_node={},
            extended_requests_by_node={},
            owner_pods_by_node={},
            nodes_by_zone={},
        )


@pytest.fixture
async def scheduled(step_clock: Any) -> AsyncIterator[tuple[StateCollector, Snapshots]]:
    snapshots = Snapshots(step_clock)
    collector = StateCollector(
        snapshots,
        ClusterStateConfig(),
        clock=step_clock.time,
        monotonic=step_clock.monotonic,
        sleep=step_clock.sleep,
        background=True,
        cache_seconds=10.0,
        stale_limit_seconds=20.0,
        idle_seconds=300.0,
    )
    try:
        yield collector, snapshots
    finally:
        step_clock.release()
        await collector.aclose()


async def step(clock: Any) -> float:
    """Let the refresher's current sleep pass; return the next sleep it asks for."""
    clock.release()
    return float(await clock.next_sleep())


async def test_exporter_state_schedule_renders_once_per_scrape_just_before_it(
    scheduled: tuple[StateCollector, Snapshots], step_clock: Any
) -> None:
    collector, snapshots = scheduled
    clock = step_clock
    list(collector.collect())  # t=1000: the first scrape renders itself
    assert collector.renders == 1
    # Until two scrapes show the interval, every cache_seconds.
    assert await clock.next_sleep() == 10.0
    assert await step(clock) == 10.0  # t=1010: rendered, waits again
    assert collector.renders == 2

    clock.advance(5)  # t=1015: second scrape, interval 15 s
    list(collector.collect())
    # Woken at 1025 (the sleep it was in), it waits for 1029: the next scrape is due at
    # 1030, minus twice the render time (0 on this clock) and a 1 s margin.
    assert await step(clock) == 4.0
    assert clock.now == 1025
    assert collector.renders == 2
    assert await step(clock) == 10.0  # t=1029: rendered; no more until it is read
    assert collector.renders == 3
    assert snapshots.taken[-1] == 1029

    clock.advance(1)  # t=1030: the scrape gets the families of 1 s ago
    list(collector.collect())
    assert collector.renders == 3
    assert await step(clock) == 4.0  # t=1040, waits for 1044
    assert await step(clock) == 10.0  # t=1044: rendered for the scrape due at 1045
    assert collector.renders == 4

    # The scrapes stop: nothing reads the last render, so no other is made ...
    for _ in range(5):
        assert await step(clock) == 10.0
    assert collector.renders == 4
    # ... and after idle_seconds without a scrape the refresher ends.
    refresher = collector._refresher
    assert refresher is not None
    while clock.now + 10 < 1030 + 300:
        assert await step(clock) == 10.0
    clock.release()
    await asyncio.wait_for(refresher, 10)
    assert collector._refresher is None
    assert collector.renders == 4


async def test_exporter_state_schedule_short_intervals_render_every_cache_period(
    scheduled: tuple[StateCollector, Snapshots], step_clock: Any
) -> None:
    collector, snapshots = scheduled
    clock = step_clock
    list(collector.collect())  # t=1000
    assert await clock.next_sleep() == 10.0
    clock.advance(5)  # t=1005
    list(collector.collect())
    # Scraped every 5 s: the next scrape is due at 1010, but a render per 10 s (at the
    # earliest 10 s after the last one) serves two scrapes, never one per scrape.
    assert collector.next_render_at() == 1010.0
    assert await step(clock) == 10.0  # woken at 1015: rendered at once
    assert collector.renders == 2
    assert snapshots.taken[-1] == 1015


async def test_exporter_state_schedule_a_burst_of_scrapes_is_one_demand(
    scheduled: tuple[StateCollector, Snapshots], step_clock: Any
) -> None:
    collector, snapshots = scheduled
    clock = step_clock
    # Two Prometheus servers of an HA pair scrape within milliseconds, every 25 s.
    list(collector.collect())  # t=1000
    clock.advance(0.01)
    list(collector.collect())
    assert await clock.next_sleep() == pytest.approx(10.0 - 0.01)
    assert await step(clock) == 10.0  # t=1010: rendered (interval still unknown)
    assert collector.renders == 2
    clock.advance(15)  # t=1025: the next burst
    list(collector.collect())
    clock.advance(0.01)
    list(collector.collect())
    # The interval is 25 s between the bursts, not 0.01 s: the next render waits for
    # the next burst (due at 1050, started 1 s before), waking every 10 s meanwhile.
    wait = await step(clock)
    while wait == 10.0:
        assert collector.renders == 2
        wait = await step(clock)
    assert clock.now + wait == pytest.approx(1049.0)
    await step(clock)
    assert collector.renders == 3
    assert snapshots.taken[-1] == pytest.approx(1049.0)


async def test_exporter_state_schedule_periodic_when_not_following_scrapes(
    step_clock: Any,
) -> None:
    clock = step_clock
    collector = StateCollector(
        Snapshots(clock),
        ClusterStateConfig(),
        clock=clock.time,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        background=True,
        follow_scrapes=False,
        cache_seconds=10.0,
        stale_limit_seconds=20.0,
    )
    try:
        list(collector.collect())
        assert await clock.next_sleep() == 10.0
        clock.advance(5)
        list(collector.collect())
        # Every 10 s whether or not a scrape read the last render.
        for expected in (2, 3, 4):
            assert await step(clock) == 10.0
            assert collector.renders == expected
    finally:
        clock.release()
        await collector.aclose()


def test_exporter_state_schedule_a_late_scrape_never_gets_stale_families(
    step_clock: Any,
) -> None:
    # Without a running loop the refresher cannot run; the stale limit is what protects
    # a scrape here, as in the exporter when a scrape comes far earlier than expected.
    clock = step_clock
    collector = StateCollector(
        Snapshots(clock), ClusterStateConfig(), clock=clock.time, monotonic=clock.monotonic
    )
    list(collector.collect())
    clock.advance(0.5)
    list(collector.collect())
    assert collector.renders == 1
    clock.advance(30)
    list(collector.collect())
    assert collector.renders == 2
