"""The source runner: snapshots kept across failures, backoff, Retry-After, supervision,
and the ``kubeballast_source_*`` metrics it feeds."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kubeballast.core.promtext import parse
from kubeballast.exporter.contract import SourceError
from kubeballast.exporter.runner import (
    ERROR_REASONS,
    MAX_BACKOFF_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    SelfMetricsCollector,
    SourceRunner,
    SourceSet,
    SourceTaskDiedError,
    backoff_delay,
    success_delay,
)


class _Boom(BaseException):
    """Escapes the runner's error handling, as a bug in the runner itself would."""


# --------------------------------------------------------------------------------------
# One refresh at a time
# --------------------------------------------------------------------------------------


async def test_a_success_stores_the_snapshot_with_wall_time(step_clock: Any, scripted: Any) -> None:
    async def slow() -> dict[str, int]:
        step_clock.advance(0.25)  # the refresh takes a quarter of a second
        return {"ready": 1}

    runner = SourceRunner(scripted([slow]), clock=step_clock, rng=random.Random(1))
    assert runner.snapshot is None
    assert not runner.up
    assert not runner.attempted

    delay = await runner.refresh_once()

    assert runner.snapshot is not None
    assert runner.snapshot.value == {"ready": 1}
    assert runner.snapshot.taken_at == step_clock.time()
    assert runner.up
    assert runner.attempted
    assert runner.last_success == step_clock.time()
    assert runner.last_duration_seconds == pytest.approx(0.25)
    assert 9.0 <= delay <= 11.0  # interval 10 s +- 10 %
    assert runner.refreshes == 1
    assert set(runner.errors.values()) == {0}


async def test_a_failure_keeps_the_last_snapshot_and_counts_the_reason(
    step_clock: Any, scripted: Any
) -> None:
    source = scripted(
        ["first", SourceError("connect", "refused"), SourceError("http_5xx", "boom"), "second"]
    )
    runner = SourceRunner(source, clock=step_clock, rng=random.Random(2))
    await runner.refresh_once()
    first = runner.snapshot

    await runner.refresh_once()
    assert runner.snapshot is first
    assert not runner.up
    assert runner.last_error == "refused"
    await runner.refresh_once()
    assert runner.snapshot is first
    assert runner.errors["connect"] == 1
    assert runner.errors["http_5xx"] == 1
    assert runner.consecutive_failures == 2

    step_clock.advance(30)
    await runner.refresh_once()
    assert runner.snapshot is not None
    assert runner.snapshot.value == "second"
    assert runner.up
    assert runner.consecutive_failures == 0
    assert runner.last_error is None
    assert runner.last_success == step_clock.time()


async def test_the_first_refresh_failing_still_counts_as_attempted(
    step_clock: Any, scripted: Any
) -> None:
    runner = SourceRunner(scripted([SourceError("auth", "403")]), clock=step_clock)
    await runner.refresh_once()
    assert runner.attempted
    assert runner.snapshot is None
    assert runner.last_success is None
    assert not runner.up


async def test_a_refresh_that_takes_too_long_is_a_timeout(scripted: Any) -> None:
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    # The real clock: asyncio.timeout is what is under test.
    runner = SourceRunner(scripted([hang], timeout=0.05))
    await runner.refresh_once()
    assert runner.errors["timeout"] == 1
    assert not runner.up
    assert runner.last_error == "no answer within 0.05 s"


async def test_a_client_timeout_raised_by_the_source_is_a_timeout(
    step_clock: Any, scripted: Any
) -> None:
    runner = SourceRunner(scripted([TimeoutError()]), clock=step_clock)
    await runner.refresh_once()
    assert runner.errors["timeout"] == 1


async def test_a_bug_in_a_source_is_logged_counted_as_internal_and_survived(
    step_clock: Any, scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    runner = SourceRunner(scripted([KeyError("items"), "recovered"]), clock=step_clock)
    with caplog.at_level(logging.ERROR, logger="kubeballast.exporter.runner"):
        delay = await runner.refresh_once()
    assert runner.errors["internal"] == 1
    assert delay > 0
    crash = [record for record in caplog.records if "crashed" in record.getMessage()]
    assert crash
    assert crash[0].exc_info is not None
    assert isinstance(crash[0].exc_info[1], KeyError)

    await runner.refresh_once()
    assert runner.up


async def test_warns_once_when_a_source_goes_down_and_says_when_it_is_back(
    step_clock: Any, scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[Any] = [SourceError("connect", "refused") for _ in range(3)]
    runner = SourceRunner(scripted(["ok", *failures, "ok"]), clock=step_clock)
    with caplog.at_level(logging.DEBUG, logger="kubeballast.exporter.runner"):
        for _ in range(5):
            await runner.refresh_once()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "fake/one" in warnings[0].getMessage()
    back = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len(back) == 1
    assert "3 failed" in back[0].getMessage()


# --------------------------------------------------------------------------------------
# Delays
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "failures", "base"),
    [
        (10.0, 1, 10.0),
        (10.0, 2, 20.0),
        (10.0, 3, 40.0),
        (10.0, 4, 80.0),
        (10.0, 5, 100.0),  # capped at 10x the interval
        (10.0, 500, 100.0),  # no overflow
        (60.0, 4, MAX_BACKOFF_SECONDS),  # capped at five minutes
        (600.0, 3, 600.0),  # but never below the interval
    ],
)
def test_backoff_doubles_with_full_jitter_up_to_its_cap(
    interval: float, failures: int, base: float
) -> None:
    rng = random.Random(3)
    delays = [backoff_delay(interval, failures, None, rng) for _ in range(200)]
    assert all(0.5 * base <= delay <= base for delay in delays)
    assert max(delays) - min(delays) > 0.3 * base  # really jittered


def test_retry_after_is_a_floor_for_the_delay() -> None:
    rng = random.Random(4)
    assert backoff_delay(10.0, 1, 42.0, rng) == 42.0
    assert 5.0 <= backoff_delay(10.0, 1, 0.5, rng) <= 10.0  # shorter than backoff: backoff
    assert backoff_delay(10.0, 1, 10**9, rng) == MAX_RETRY_AFTER_SECONDS


def test_success_delay_is_the_interval_within_ten_percent() -> None:
    rng = random.Random(5)
    delays = [success_delay(15.0, rng) for _ in range(200)]
    assert all(13.5 <= delay <= 16.5 for delay in delays)
    assert max(delays) - min(delays) > 2.0


async def test_the_runner_waits_at_least_the_servers_retry_after(
    step_clock: Any, scripted: Any
) -> None:
    runner = SourceRunner(
        scripted([SourceError("throttled", "429", delay=120.0)], interval=5.0),
        clock=step_clock,
    )
    assert await runner.refresh_once() == 120.0


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


async def test_run_refreshes_then_sleeps_the_delay_it_computed(
    step_clock: Any, scripted: Any
) -> None:
    source = scripted(
        ["a", SourceError("connect", "refused"), SourceError("connect", "refused"), "b"],
        interval=10.0,
    )
    runner = SourceRunner(source, clock=step_clock, rng=random.Random(6))
    task = asyncio.create_task(runner.run())
    try:
        after_success = await step_clock.next_sleep()
        assert 9.0 <= after_success <= 11.0
        assert runner.snapshot is not None
        assert runner.snapshot.value == "a"
        step_clock.release()

        first_backoff = await step_clock.next_sleep()
        assert 5.0 <= first_backoff <= 10.0
        step_clock.release()
        second_backoff = await step_clock.next_sleep()
        assert 10.0 <= second_backoff <= 20.0
        assert runner.snapshot.value == "a"  # kept while failing
        step_clock.release()

        await step_clock.next_sleep()
        assert runner.snapshot.value == "b"
        assert source.calls == 4
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --------------------------------------------------------------------------------------
# The set
# --------------------------------------------------------------------------------------


def test_the_set_refuses_a_duplicate_source(scripted: Any) -> None:
    sources = SourceSet()
    sources.add(scripted([], kind="apiserver_health", instance="a"))
    sources.add(scripted([], kind="apiserver_health", instance="b"))
    sources.add(scripted([], kind="apiserver_metrics", instance="a"))
    with pytest.raises(ValueError, match="duplicate source kind='apiserver_health'"):
        sources.add(scripted([], kind="apiserver_health", instance="a"))
    assert len(sources) == 3


async def test_the_set_is_ready_once_every_source_attempted(step_clock: Any, scripted: Any) -> None:
    sources = SourceSet(clock=step_clock, rng=random.Random(7))
    blocker = asyncio.Event()

    async def blocked() -> str:
        await blocker.wait()
        return "late"

    sources.add(scripted(["fast"], instance="fast"))
    sources.add(scripted([SourceError("connect", "refused")], instance="down"))
    sources.add(scripted([blocked], instance="slow"))
    assert not sources.ready
    sources.start()
    try:
        for _ in range(2):
            await step_clock.next_sleep()
        assert sources.pending() == [("fake", "slow")]
        assert not sources.ready
        blocker.set()
        await asyncio.wait_for(sources.wait_ready(), 10)
        assert sources.ready
        assert sources.pending() == []
    finally:
        await sources.stop()


async def test_a_dying_runner_task_is_reported_and_raised_by_wait(
    step_clock: Any, scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sources = SourceSet(clock=step_clock)
    sources.add(scripted(["fine"], instance="fine"))
    sources.add(scripted([_Boom("runner bug")], instance="doomed"))
    sources.start()
    try:
        with (
            caplog.at_level(logging.ERROR, logger="kubeballast.exporter.runner"),
            pytest.raises(SourceTaskDiedError, match="fake/doomed") as raised,
        ):
            await asyncio.wait_for(sources.wait(), 10)
        assert isinstance(raised.value.__cause__, _Boom)
        assert any("ended unexpectedly" in r.getMessage() for r in caplog.records)
    finally:
        await sources.stop()


async def test_stop_cancels_every_runner(step_clock: Any, scripted: Any) -> None:
    sources = SourceSet(clock=step_clock)
    source = sources.add(scripted(["x"]))
    sources.start()
    await step_clock.next_sleep()
    await sources.stop()
    assert source.refreshes == 1
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("source:")]


# --------------------------------------------------------------------------------------
# Self metrics
# --------------------------------------------------------------------------------------


async def test_self_metrics_report_each_sources_health(step_clock: Any, scripted: Any) -> None:
    sources = SourceSet(clock=step_clock)
    good = sources.add(scripted(["v"], kind="apiserver_health", instance="api-1"))
    bad = sources.add(
        scripted([SourceError("throttled", "429")], kind="apiserver_health", instance="api-2")
    )
    sources.add(scripted([], kind="scheduler_health", instance="sched-1"))  # not yet run
    await good.refresh_once()
    await bad.refresh_once()
    registry = CollectorRegistry()
    registry.register(SelfMetricsCollector(sources))

    families = parse(generate_latest(registry).decode())

    def values(family: str) -> dict[tuple[str, ...], float]:
        return {
            tuple(sorted(sample.labels.items())): sample.value
            for sample in families[family]
            if not sample.name.endswith("_created")
        }

    up = values("kubeballast_source_up")
    assert up[(("kind", "apiserver_health"), ("target", "api-1"))] == 1.0
    assert up[(("kind", "apiserver_health"), ("target", "api-2"))] == 0.0
    assert up[(("kind", "scheduler_health"), ("target", "sched-1"))] == 0.0
    last_success = values("kubeballast_source_last_success_timestamp_seconds")
    assert last_success == {(("kind", "apiserver_health"), ("target", "api-1")): step_clock.time()}
    errors = values("kubeballast_source_refresh_errors_total")
    # Every reason from zero for every source, so rate() sees the first error.
    assert len(errors) == 3 * len(ERROR_REASONS)
    key = (("kind", "apiserver_health"), ("reason", "throttled"), ("target", "api-2"))
    assert errors[key] == 1.0
    assert sum(errors.values()) == 1.0
    refreshes = values("kubeballast_source_refreshes_total")
    assert sorted(refreshes.values()) == [0.0, 1.0, 1.0]
    assert len(values("kubeballast_source_refresh_duration_seconds")) == 2
