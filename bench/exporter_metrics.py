"""Benchmark: what a Prometheus scrape of the exporter costs, and parsing a big /metrics.

A scrape calls every collector's ``collect()`` on the event loop, so its render time is
time during which the exporter answers nothing else; its size is what Prometheus
ingests every scrape interval. The exporter is built as in production (the default
catalog) for a control plane of 3 apiservers, 3 schedulers and 3 controller managers,
all pointed at one in-process simulator whose /metrics carry the real families, and
every source refreshes once for real, so the snapshots have the shapes collectors
really see. The sources are then stopped and only rendering is timed.

Second, the exporter's own scrape of an apiserver: a synthetic kube-apiserver /metrics
page the size a 5000-node cluster produces (mostly request-latency buckets for every
resource and verb), parsed with :func:`kubeballast.core.promtext.parse` keeping only a
few families, against prometheus-client's parser reading everything.

    python bench/exporter_metrics.py --nodes 500 --scrapes 50
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from kubeballast.core.config import (
    ExporterConfig,
    KubernetesAccessConfig,
    ListenConfig,
    TargetConfig,
)
from kubeballast.core.promtext import parse
from kubeballast.exporter.app import build_exporter
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

REPLICAS = 3


def _timed(function: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    durations: list[float] = []
    result: object = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        durations.append(time.perf_counter() - started)
    return durations, result


def _report(label: str, durations: list[float]) -> None:
    ordered = sorted(durations)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    print(
        f"{label:<44} median {statistics.median(ordered) * 1000:8.2f} ms"
        f"   p95 {p95 * 1000:8.2f} ms   ({len(ordered)} runs)"
    )


async def scrape_cost(nodes: int, scrapes: int) -> None:
    scenario = ScenarioSettings(nodes=nodes, zones=3, pods_per_node=30, control_plane_nodes=3)
    server = build_server(
        SimulatorSettings(
            host="127.0.0.1", port=0, kubelets=False, controllers=False, scenario=scenario
        )
    )
    attach_control_plane(server)
    await server.start()
    try:
        with tempfile.TemporaryDirectory() as directory:
            token = Path(directory) / "token"
            token.write_text(server.admin_token)
            kubeconfig = Path(directory) / "kubeconfig"
            write_kubeconfig(kubeconfig, server.url, server.admin_token)

            def targets(prefix: str, url: str) -> tuple[TargetConfig, ...]:
                return tuple(
                    TargetConfig(name=f"{prefix}-{i}", url=url, bearer_token_file=str(token))
                    for i in range(1, REPLICAS + 1)
                )

            config = ExporterConfig(
                listen=ListenConfig(host="127.0.0.1", port=0),
                kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)),
                apiservers=targets("apiserver", server.url),
                schedulers=targets("scheduler", server.components["kube-scheduler"].url),
                controller_managers=targets(
                    "controller-manager", server.components["kube-controller-manager"].url
                ),
            )
            exporter = build_exporter(config)
            started = time.perf_counter()
            exporter.sources.start()
            try:
                await asyncio.wait_for(exporter.sources.wait_ready(), 300)
            finally:
                await exporter.sources.stop()
                await exporter.context.aclose()
            print(
                f"{len(exporter.sources)} sources, first refreshes in"
                f" {time.perf_counter() - started:.2f} s"
                f" ({sum(r.up for r in exporter.sources)} up)"
            )
            registry = exporter.registry
            text_runs, text = _timed(lambda: generate_latest(registry), scrapes)
            om_runs, openmetrics = _timed(lambda: generate_openmetrics(registry), scrapes)
            assert isinstance(text, bytes)
            assert isinstance(openmetrics, bytes)
            series = sum(
                1 for line in text.decode().splitlines() if line and not line.startswith("#")
            )
            _report("render /metrics, text format", text_runs)
            _report("render /metrics, OpenMetrics", om_runs)
            print(
                f"exposition: {series} series, {len(text) / 1024:.1f} KiB text,"
                f" {len(gzip.compress(text)) / 1024:.1f} KiB gzipped"
            )
    finally:
        await server.stop()


def synthetic_apiserver_page(resources: int = 250) -> str:
    """A kube-apiserver /metrics page the size of a big cluster's (mostly buckets)."""
    verbs = ("GET", "LIST", "WATCH", "CREATE", "UPDATE", "PATCH", "DELETE")
    # kube-apiserver's buckets for apiserver_request_duration_seconds.
    bounds = [
        *("0.005", "0.025", "0.05", "0.1", "0.2", "0.4", "0.6", "0.8", "1", "1.25", "1.5"),
        *("2", "3", "4", "5", "6", "8", "10", "15", "20", "30", "45", "60", "+Inf"),
    ]
    lines = [
        "# HELP apiserver_request_duration_seconds Response latency distribution.",
        "# TYPE apiserver_request_duration_seconds histogram",
    ]
    for r in range(resources):
        for verb in verbs:
            labels = (
                f'component="apiserver",dry_run="",group="g{r % 20}.example.com",'
                f'resource="resource{r}",scope="cluster",subresource="",verb="{verb}",'
                f'version="v1"'
            )
            count = 0
            for bound in bounds:
                count += 7
                lines.append(
                    f'apiserver_request_duration_seconds_bucket{{{labels},le="{bound}"}} {count}'
                )
            lines.append(f"apiserver_request_duration_seconds_sum{{{labels}}} {count * 0.1}")
            lines.append(f"apiserver_request_duration_seconds_count{{{labels}}} {count}")
    lines.append("# TYPE apiserver_request_total counter")
    for r in range(resources):
        for verb in verbs:
            for code in ("200", "201", "404", "429"):
                lines.append(
                    f'apiserver_request_total{{code="{code}",resource="resource{r}",'
                    f'verb="{verb}"}} {r * 10 + 1}'
                )
    lines.append("# TYPE apiserver_flowcontrol_current_inqueue_requests gauge")
    for level in ("exempt", "system", "leader-election", "workload-high", "global-default"):
        lines.append(
            f'apiserver_flowcontrol_current_inqueue_requests{{priority_level="{level}"}} 3'
        )
    return "\n".join(lines) + "\n"


def parse_cost(repeat: int) -> None:
    page = synthetic_apiserver_page()
    lines = page.count("\n")
    print(f"synthetic apiserver /metrics: {len(page) / 2**20:.1f} MiB, {lines} lines")
    wanted = ("apiserver_request_total", "apiserver_flowcontrol_current_inqueue_requests")
    runs, _ = _timed(lambda: parse(page, wanted), repeat)
    _report("promtext.parse, 2 small families wanted", runs)
    runs, _ = _timed(lambda: parse(page, ("apiserver_request_duration_seconds",)), repeat)
    _report("promtext.parse, the big histogram wanted", runs)
    runs, _ = _timed(lambda: parse(page), max(1, repeat // 3))
    _report("promtext.parse, everything", runs)
    runs, _ = _timed(
        lambda: sum(len(f.samples) for f in text_string_to_metric_families(page)),
        max(1, repeat // 3),
    )
    _report("prometheus_client parser, everything", runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500, help="simulated worker nodes")
    parser.add_argument("--scrapes", type=int, default=50, help="renders to time")
    parser.add_argument("--parses", type=int, default=9, help="page parses to time")
    args = parser.parse_args()
    asyncio.run(scrape_cost(args.nodes, args.scrapes))
    parse_cost(args.parses)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
