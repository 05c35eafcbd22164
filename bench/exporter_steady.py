"""Benchmark: the whole exporter's steady-state CPU at the seed's scale, scraped by Prometheus.

Issue 4's steady-state budget is 5 % of one core for the exporter process, with
Prometheus scraping it every 15 s, at 5000 nodes and 150 000 pods with 500 lease
renewals and 100 pod changes per second. ``bench/exporter_state.py`` measures the
caches alone; this measures what a deployment runs. Four kinds of process, so that the
exporter's CPU time and RSS are its own:

1. ``kube-ballast simulate`` with kubelets and controllers at clock factor 1 (every
   kubelet renews its Lease every 10 s: 500 renewals per second at 5000 nodes);
2. a load generator (``bench/exporter_state.py --role load``) patching a label of one
   pod every 10 ms: 100 pod changes per second;
3. the exporter (this script, ``--role exporter``): ``run_exporter`` as
   ``kube-ballast exporter`` runs it, with the default catalog and only a kubeconfig
   configured (cluster state, network plugin, object pressure and the apiserver probes
   the kubeconfig's server gets by default);
4. a real Prometheus scraping the exporter every 15 s (nothing else scrapes it: the
   benchmark reads the exporter's metrics through Prometheus).

After the exporter has synced (``kubeballast_cluster_state_synced`` is 1 in Prometheus)
and ``--settle`` seconds more (the garbage of the sync collected, the first renders
done), the exporter's CPU time is read with psutil over ``--window`` seconds: the whole
process, and split by thread: the main thread runs the event loop (watches, informer
callbacks, snapshots, scrapes, probes), the other threads are the worker threads the
background renders run in. Prometheus tells how many scrapes there were, how long they
took, and how many distinct renders they served (``changes()`` of the render-duration
gauge: a lower bound when a render is never served).

``--variants`` runs the exporter once per render schedule, one after the other against
the same simulator: ``scrapes`` (what the exporter ships: one render per scrape, timed
to finish just before the next one is due) and ``periodic`` (the previous behaviour: a
render every 10 s while scraped, whatever the scrape interval).

    .venv/bin/python bench/exporter_steady.py --nodes 5000 --pods-per-node 30 \
        --variants periodic,scrapes --window 180
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml
from exporter_state import start_load
from support import REAL_TIME, cpu_seconds, free_port, kill, simulator, start_script, stop

HERE = Path(__file__).resolve()
PROMETHEUS = "/usr/bin/prometheus"
VARIANTS = ("scrapes", "periodic")


# --- role: exporter ----------------------------------------------------------------------


async def run_exporter_role(kubeconfig: str, port: int, variant: str) -> None:
    from kubeballast.core.config import ExporterConfig, KubernetesAccessConfig, ListenConfig
    from kubeballast.exporter import state
    from kubeballast.exporter.server import run_exporter

    if variant == "periodic":
        # The schedule before renders followed scrapes: every 10 s while scraped.
        def periodic(snapshot: Any, config: Any) -> state.StateCollector:
            return state.StateCollector(
                snapshot,
                config,
                background=True,
                follow_scrapes=False,
                cache_seconds=state.BACKGROUND_REFRESH_SECONDS,
                stale_limit_seconds=2 * state.BACKGROUND_REFRESH_SECONDS,
            )

        state.exporter_collector = periodic  # type: ignore[assignment]
    config = ExporterConfig(
        listen=ListenConfig(host="127.0.0.1", port=port),
        kubernetes=KubernetesAccessConfig(kubeconfig_path=kubeconfig),
    )
    await run_exporter(config)


# --- orchestration ------------------------------------------------------------------------


def thread_cpu(ps: psutil.Process) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in ps.threads()}


class Prometheus:
    """A real Prometheus on loopback scraping one target every ``interval`` seconds."""

    def __init__(self, target: str, interval: int, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": f"{interval}s",
                        "scrape_timeout": f"{min(interval, 10)}s",
                    },
                    "scrape_configs": [
                        {"job_name": "kube-ballast", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        self._log = (tmp / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )

    def query(self, expression: str, at: float | None = None) -> list[dict[str, Any]]:
        async def ask() -> list[dict[str, Any]]:
            params = {"query": expression}
            if at is not None:
                params["time"] = f"{at:.3f}"
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{self.url}/api/v1/query", params=params) as response,
            ):
                payload = await response.json()
            result: list[dict[str, Any]] = payload["data"]["result"]
            return result

        try:
            return asyncio.run(ask())
        except (aiohttp.ClientError, OSError, KeyError):
            return []

    def scalar(self, expression: str, at: float | None = None) -> float | None:
        result = self.query(expression, at)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        stop(self.process, group=True)
        self._log.close()


def measure_variant(
    args: argparse.Namespace, kubeconfig: Path, variant: str, tmp: Path
) -> dict[str, Any]:
    port = free_port()
    exporter = start_script(
        HERE,
        "--role",
        "exporter",
        "--kubeconfig",
        str(kubeconfig),
        "--port",
        str(port),
        "--variant",
        variant,
        stdin=subprocess.DEVNULL,
    )
    ps = psutil.Process(exporter.pid)
    work = tmp / variant
    work.mkdir()
    prometheus = Prometheus(f"127.0.0.1:{port}", args.scrape_interval, work)
    load: subprocess.Popen[str] | None = None
    try:
        started = time.monotonic()
        deadline = started + 600
        while prometheus.scalar("min(kubeballast_cluster_state_synced)") != 1.0:
            if exporter.poll() is not None:
                raise SystemExit(f"the exporter exited with {exporter.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("the exporter never showed kubeballast_cluster_state_synced 1")
            time.sleep(1.0)
        synced_after = time.monotonic() - started
        rss_synced = ps.memory_info().rss
        load = start_load(kubeconfig, args.pod_changes, args.settle + args.window + 10)
        time.sleep(args.settle)
        threads_before, cpu_before = thread_cpu(ps), cpu_seconds(ps)
        wall_before, unix_before = time.monotonic(), time.time()
        time.sleep(args.window)
        threads_after, cpu_after = thread_cpu(ps), cpu_seconds(ps)
        wall_after, unix_after = time.monotonic(), time.time()
        rss_end = ps.memory_info().rss
        wall = wall_after - wall_before
        main_before, main_after = threads_before.get(ps.pid, 0.0), threads_after.get(ps.pid, 0.0)
        workers = sum(
            cpu - threads_before.get(tid, 0.0)
            for tid, cpu in threads_after.items()
            if tid != ps.pid
        )
        # Let Prometheus take the scrape that closes the window before asking it.
        time.sleep(args.scrape_interval + 2)
        span = f"{int(unix_after - unix_before)}s"
        job = 'job="kube-ballast"'

        def at_end(expression: str) -> float | None:
            return prometheus.scalar(expression, unix_after)

        rates = prometheus.query(f"rate(kubeballast_informer_events_total[{span}])", unix_after)
        events = {r["metric"]["resource"]: round(float(r["value"][1]), 1) for r in rates}
        load_out, _ = load.communicate(timeout=120)
        total = cpu_after - cpu_before
        return {
            "variant": variant,
            "synced_after_seconds": round(synced_after, 1),
            "rss_after_sync_mib": round(rss_synced / 2**20, 1),
            "rss_end_mib": round(rss_end / 2**20, 1),
            "window_seconds": round(wall, 1),
            "cpu_percent_of_one_core": round(100 * total / wall, 2),
            "cpu_percent_event_loop_thread": round(100 * (main_after - main_before) / wall, 2),
            "cpu_percent_worker_threads": round(100 * workers / wall, 2),
            "scrapes": at_end(f"count_over_time(up{{{job}}}[{span}])"),
            "scrapes_up": at_end(f"sum_over_time(up{{{job}}}[{span}])"),
            "renders_served": at_end(
                f"changes(kubeballast_cluster_state_render_duration_seconds[{span}])"
            ),
            "render_seconds_last": at_end("kubeballast_cluster_state_render_duration_seconds"),
            "scrape_duration_ms_median": _ms(
                at_end(f"quantile_over_time(0.5, scrape_duration_seconds{{{job}}}[{span}])")
            ),
            "scrape_duration_ms_max": _ms(
                at_end(f"max_over_time(scrape_duration_seconds{{{job}}}[{span}])")
            ),
            "samples_per_scrape": at_end(f"scrape_samples_scraped{{{job}}}"),
            "informer_events_per_second": events,
            "load": json.loads(load_out),
        }
    finally:
        if load is not None:
            kill(load)
        prometheus.stop()
        stop(exporter)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    assert shutil.which(PROMETHEUS), f"{PROMETHEUS} is required (apt: prometheus)"
    with simulator(
        nodes=args.nodes,
        pods_per_node=args.pods_per_node,
        options=REAL_TIME,
        prefix="kb-bench-steady-",
    ) as sim:
        results = []
        for variant in args.variants.split(","):
            result = measure_variant(args, sim.kubeconfig, variant, sim.directory)
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
    return {
        "nodes": args.nodes,
        "pods_per_node": args.pods_per_node,
        "lease_renewals_per_second_expected": args.nodes / 10,
        "pod_changes_per_second": args.pod_changes,
        "scrape_interval_seconds": args.scrape_interval,
        "budget_percent_of_one_core": 5.0,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("main", "exporter"), default="main")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--pod-changes", type=float, default=100.0)
    parser.add_argument("--scrape-interval", type=int, default=15)
    parser.add_argument("--settle", type=float, default=45.0)
    parser.add_argument("--window", type=float, default=180.0)
    parser.add_argument("--variants", default="scrapes")
    # The exporter role's own arguments.
    parser.add_argument("--kubeconfig", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--variant", choices=VARIANTS, default="scrapes")
    args = parser.parse_args()
    if args.role == "exporter":
        logging.basicConfig(level=logging.ERROR)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_exporter_role(args.kubeconfig, args.port, args.variant))
    else:
        for variant in args.variants.split(","):
            if variant not in VARIANTS:
                parser.error(f"--variants: unknown variant {variant!r} (known: {VARIANTS})")
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        print(json.dumps(orchestrate(args), indent=2))


if __name__ == "__main__":
    main()
