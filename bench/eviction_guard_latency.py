"""How long from an injected congestion to the eviction pause in effect, through real
Prometheus and Alertmanager, and the margin that leaves before the first taint-based
deletion.

Production-like intervals (the default): the simulator at clock factor 1 (real time),
Prometheus scraping and evaluating every 15 s, KubeNodeHeartbeatStorm's shipped
``for: 1m``, Alertmanager's shipped ``group_wait``; the node-lifecycle controller's
defaults (50 s grace period, 0.1 nodes/s, 300 s toleration). ``--short`` runs the
test's 1 s intervals and ``for: 5s`` at clock factor 5. Reports real seconds to the
pause and the simulated margin: the earliest the first eviction could come (grace +
toleration after the congestion began) minus the time the pause landed.

It reuses the scenario tests' stack (tests/evictionguard/guard_support.py and
guard_pipeline.py), so the benchmark measures exactly what the tests exercise.

    .venv/bin/python bench/eviction_guard_latency.py [--short]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from support import use_test_harness

use_test_harness("evictionguard", "support")

from guard_pipeline import Intervals, pipeline  # noqa: E402 (after the path)
from guard_support import eventually, guard_stack  # noqa: E402

GRACE = 50.0
TOLERATION = 300.0


async def measure(short: bool) -> None:
    factor = 5.0 if short else 1.0
    intervals = (
        Intervals()
        if short
        else Intervals(scrape="15s", evaluation="15s", storm_for=None, group_wait=None)
    )
    with tempfile.TemporaryDirectory() as tmp:
        async with guard_stack(Path(tmp), clock_factor=factor) as stack:
            config = stack.receiver_config(stack.guard_config())
            engine = await stack.start_engine(config)
            async with pipeline(engine, config, stack.exporter_url, Path(tmp), intervals):
                # Let Prometheus take a few scrapes of the healthy cluster first.
                await asyncio.sleep(2 if short else 35)
                started_real, started_sim = time.monotonic(), stack.now()
                stack.congest()
                await eventually(stack.paused, "the pause is in force", within=600)
                real = time.monotonic() - started_real
                simulated = stack.now() - started_sim
                margin = GRACE + TOLERATION - simulated
                print(
                    f"intervals: scrape {intervals.scrape}, evaluation {intervals.evaluation}, "
                    f"storm for: {intervals.storm_for or 'shipped (1m)'}, group_wait: "
                    f"{intervals.group_wait or 'shipped'}; clock factor {factor:g}"
                )
                print(
                    f"congestion -> pause in effect: {real:.1f} s real, {simulated:.0f} s simulated"
                )
                print(
                    f"margin before the earliest taint-based deletion (grace {GRACE:g} s + "
                    f"toleration {TOLERATION:g} s): {margin:.0f} s"
                )
                print(f"pods deleted before the pause: {stack.counters.evictions_done}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the test's 1 s intervals")
    args, _ = parser.parse_known_args()
    asyncio.run(measure(args.short))


if __name__ == "__main__":
    main()
