"""Benchmark: what the exporter's etcd area costs the exporter, per refresh and scrape.

Every refresh asks each member for /health, its status, the member list and /metrics
(a page of about 220 KB, of which the summary keeps a few families), so the exporter's
cost grows with members x clusters. This starts real etcd clusters on loopback
(default: 2 clusters of 5 members, the "main" and "events" split of a large cluster;
10 etcd processes; mutual TLS as in production, ``--plain`` for HTTP), refreshes
both clusters' sources as the exporter does, and reports:

- the exporter's CPU time per refresh of all clusters (``time.process_time``: the
  etcd processes are not counted), and its wall time;
- the CPU time of parsing and summarising one member's page;
- the render time and size of the etcd families in one Prometheus scrape.

A light write load runs between refreshes so that the histograms move.

    python bench/exporter_etcd.py --clusters 2 --members 5 --refreshes 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from support import use_test_harness

from kubeballast.core import promtext
from kubeballast.core.config import EtcdClusterConfig
from kubeballast.exporter.etcd import EtcdClusterSource, EtcdCollector
from kubeballast.exporter.etcdhealth import WANTED_FAMILIES, summarize
from kubeballast.exporter.runner import SourceSet

use_test_harness("etcd")

from harness import EtcdCluster, make_tls_material  # noqa: E402 (after the path)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _report(label: str, values: list[float]) -> None:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    print(
        f"{label:<44} median {_ms(statistics.median(ordered)):>9}  p90 {_ms(p90):>9}"
        f"  max {_ms(ordered[-1]):>9}"
    )


async def _load(cluster: EtcdCluster, writes: int) -> None:
    async with cluster.client() as client:
        endpoint = cluster.endpoints[await cluster.leader()]
        for index in range(writes):
            await client.put(endpoint, f"/registry/bench/{index % 100}", "v" * 512)


async def run(clusters: list[EtcdCluster], refreshes: int, writes: int) -> None:
    sources = SourceSet()
    views = {}
    for index, cluster in enumerate(clusters):
        name = ("main", "events")[index] if index < 2 else f"cluster{index}"
        tls = cluster.tls
        config = EtcdClusterConfig(
            name=name,
            endpoints=tuple(cluster.endpoints),
            ca_file=str(tls.ca_cert) if tls else None,
            cert_file=str(tls.client_cert) if tls else None,
            key_file=str(tls.client_key) if tls else None,
        )
        views[name] = sources.add(EtcdClusterSource(config))
    collector = EtcdCollector(views)  # type: ignore[arg-type]
    runners = list(sources)

    cpu: list[float] = []
    wall: list[float] = []
    for round_ in range(refreshes + 1):
        await asyncio.gather(*(_load(cluster, writes) for cluster in clusters))
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(runner.refresh_once() for runner in runners))
        if round_ == 0:
            continue  # the first refresh opens nothing the others do not, but warms up
        cpu.append(time.process_time() - cpu_started)
        wall.append(time.perf_counter() - wall_started)
    assert all(runner.up for runner in runners)

    members = sum(cluster.size for cluster in clusters)
    transport = "mutual TLS" if clusters[0].tls else "plain HTTP"
    print(
        f"{len(clusters)} clusters x {clusters[0].size} members over {transport},"
        f" {refreshes} refreshes"
    )
    _report("refresh of all clusters: exporter CPU", cpu)
    _report("refresh of all clusters: wall", wall)
    per_member = statistics.median(cpu) / members
    print(f"{'exporter CPU per member per refresh':<44} median {_ms(per_member):>9}")

    async with clusters[0].client() as client:
        text = await client.metrics(clusters[0].endpoints[0])
    parse: list[float] = []
    for _ in range(50):
        started = time.process_time()
        summarize(promtext.parse(text, WANTED_FAMILIES))
        parse.append(time.process_time() - started)
    print(f"one member's /metrics page: {len(text) / 1024:.0f} KiB")
    _report("parse + summarise one page: CPU", parse)

    registry = CollectorRegistry()
    registry.register(collector)
    render: list[float] = []
    body = b""
    for _ in range(50):
        started = time.perf_counter()
        body = generate_latest(registry)
        render.append(time.perf_counter() - started)
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    print(f"etcd families in one scrape: {series} series, {len(body) / 1024:.0f} KiB")
    _report("render the etcd families", render)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--refreshes", type=int, default=20)
    parser.add_argument("--writes", type=int, default=50, help="writes per cluster per round")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain HTTP instead of mutual TLS (then the client builds its TLS context from"
        " the system trust store every refresh, about 20 ms of CPU per cluster)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kube-ballast-bench-etcd-") as directory:
        # Mutual TLS by default, as etcd is deployed: the handshakes are part of the cost.
        tls = None if args.plain else make_tls_material(Path(directory) / "pki")
        clusters = [
            EtcdCluster(Path(directory) / f"c{index}", args.members, tls=tls)
            for index in range(args.clusters)
        ]
        try:
            for cluster in clusters:
                cluster.directory.mkdir(parents=True)
                cluster.start()
            asyncio.run(run(clusters, args.refreshes, args.writes))
        finally:
            for cluster in clusters:
                cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
