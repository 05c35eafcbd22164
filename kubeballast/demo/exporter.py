"""The demo's exporter: ``kube-ballast exporter`` reading the simulator's clock.

Why: the simulator runs its cluster faster than real time (the clock factor), and the
timestamps it writes (Lease renewTimes, taint times) are simulated time. The exporter
compares them with "now", so against a fast simulator it must take "now" from the
simulator, as the tests do (tests/alerts/test_alerts_e2e.py). Everything else is the
shipped exporter: the default catalog, the configuration file, the HTTP server.

The simulator reports its clock on ``GET /_sim/state`` (``clock.now``, ``clock.factor``);
:class:`MirroredClock` reads it once at start and extrapolates with the factor, and
reads it again every minute (the demo never moves the simulator's clock by hand).

Run as ``python -m kubeballast.demo.exporter --config PATH --simulator-kubeconfig PATH``
by ``kube-ballast demo``; it is not a public command.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import time
import urllib.request
from collections.abc import Sequence

from kubeballast.core.config import load_config
from kubeballast.core.logging import setup_logging
from kubeballast.core.runtime import run_until_signalled
from kubeballast.demo.client import read_kubeconfig
from kubeballast.exporter.catalog import Catalog, CollectorFactory, ExporterContext, default_catalog
from kubeballast.exporter.clusterstate import shared_cluster_state
from kubeballast.exporter.contract import MetricsCollector
from kubeballast.exporter.server import run_exporter
from kubeballast.exporter.state import exporter_collector

RESYNC_SECONDS = 60.0


class MirroredClock:
    """The simulator's clock, read over HTTP and extrapolated with its factor."""

    def __init__(self, kubeconfig: str) -> None:
        self._server, self._token = read_kubeconfig(kubeconfig)
        self._sim_at_sync = time.time()
        self._mono_at_sync = time.monotonic()
        self._factor = 1.0
        self.sync()

    def sync(self) -> None:
        request = urllib.request.Request(
            self._server.rstrip("/") + "/_sim/state",
            headers={"Authorization": f"Bearer {self._token}"},
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=30) as response:
            clock = json.loads(response.read())["clock"]
        now = datetime.datetime.fromisoformat(clock["now"]).timestamp()
        factor = float(clock["factor"])
        # The answer was taken somewhere in the round trip: take its middle.
        middle = (started + time.monotonic()) / 2
        self._sim_at_sync, self._mono_at_sync, self._factor = now, middle, factor

    def time(self) -> float:
        return self._sim_at_sync + (time.monotonic() - self._mono_at_sync) * self._factor


def _state_with_clock(clock: MirroredClock) -> CollectorFactory:
    def build(context: ExporterContext) -> Sequence[MetricsCollector]:
        state = shared_cluster_state(context)
        collector = exporter_collector(state.snapshot, context.config.state, clock=clock.time)
        context.on_close(collector.aclose)
        return [collector, state.collector()]

    return build


def demo_catalog(clock: MirroredClock) -> Catalog:
    """The default catalog with the cluster-state area on the simulator's clock."""
    catalog = Catalog()
    for name, factory in default_catalog():
        catalog.register(name, _state_with_clock(clock) if name == "state" else factory)
    return catalog


async def _run(config_path: str, clock: MirroredClock) -> None:
    config = load_config(config_path)

    async def resync() -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            try:
                await asyncio.to_thread(clock.sync)
            except OSError:
                continue  # keep extrapolating from the last reading

    task = asyncio.create_task(resync(), name="demo-clock-resync")
    try:
        await run_exporter(config.exporter, catalog=demo_catalog(clock))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubeballast.demo.exporter")
    parser.add_argument("--config", required=True)
    parser.add_argument("--simulator-kubeconfig", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    setup_logging(config.logging.level, config.logging.format)
    clock = MirroredClock(args.simulator_kubeconfig)
    return run_until_signalled(_run(args.config, clock))


if __name__ == "__main__":
    sys.exit(main())
