"""The eviction guard end to end: a congestion in the simulator reaches the pause through
the exporter, real Prometheus (the shipped rules, 1 s intervals, KubeNodeHeartbeatStorm's
``for:`` shortened to 5 s), real Alertmanager (the shipped routing, group_wait 1 s) and
the receiver's real webhook, and lands before the first taint-based deletion.

The simulator runs at a clock factor of 5 here (not 20 as in the scenario tests): the
alert path's timings are real seconds, so the margin before the first eviction (50 s
grace + tainting + 300 s toleration, simulated) must be measured on a clock that does
not shrink it to a few real seconds. The time from the injected congestion to the pause
in effect is printed, in real and simulated seconds (docs/performance.md records it;
bench/eviction_guard_latency.py measures the same with production-like intervals).
"""

from __future__ import annotations

import time
from pathlib import Path

from guard_pipeline import Intervals, pipeline
from guard_support import eventually, guard_stack

E2E_CLOCK_FACTOR = 5.0


async def test_guard_e2e_congestion_to_pause_through_prometheus_and_alertmanager(
    tmp_path: Path,
) -> None:
    async with guard_stack(tmp_path, clock_factor=E2E_CLOCK_FACTOR) as stack:
        config = stack.receiver_config(stack.guard_config())
        engine = await stack.start_engine(config)
        async with pipeline(engine, config, stack.exporter_url, tmp_path, Intervals()):
            started_real, started_sim = time.monotonic(), stack.now()
            stack.congest()
            await eventually(stack.paused, "the pause is in force", within=120)
            real = time.monotonic() - started_real
            simulated = stack.now() - started_sim
            print(
                f"\nguard e2e: congestion -> pause in effect in {real:.1f} s real "
                f"({simulated:.0f} s simulated at factor {E2E_CLOCK_FACTOR:g})"
            )
            assert stack.counters.evictions_done == 0, "no pod was deleted before the pause"
            # The first deletion cannot come before grace (50 s) + toleration (300 s).
            assert simulated < 350

            async def executed_records() -> list[object]:
                records = await engine.ledger.records()
                return [r for r in records.values() if r.state == "succeeded"]

            await eventually(executed_records, "the execution is recorded")
            executed = await executed_records()
            assert [r.action for r in executed] == ["eviction-pause"]  # type: ignore[attr-defined]
            assert executed[0].alertname in (  # type: ignore[attr-defined]
                "KubeNodeHeartbeatStorm",
                "KubeApiserverCongested",
            )
