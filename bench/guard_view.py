"""What one live check of the eviction guard costs the receiver: the exporter's
/eviction-guard view against its whole /metrics page, at 5000 nodes.

The receiver's ``eviction-pause`` action re-reads the exporter at every check and
keeper pass (``check_interval_seconds``, 10 s by default, while a pause is in force).
It used to GET /metrics and parse out a handful of values; it now GETs the view and
decodes a few kilobytes of JSON (falling back to /metrics for an exporter that
predates the view). Three processes, so that each side's CPU is its own:

1. ``kube-ballast simulate`` with only its API (no kubelets, no controllers) in real
   time, whose node Leases this script sets (merge patches) for two states, measured
   one after the other: ``storm``, renewTimes spread over the 100 s before the grace
   period (as the kubelets' last renewals before a congestion): every node stale,
   their onsets within the 120 s wave window, so one correlated wave of all nodes in
   every zone, the storm the guard checks during and the largest view (every node
   listed), with ages as varied as a real storm's (identical ages would flatter both
   pages' compression); then ``healthy``, every Lease fresh (the smallest view);
2. the exporter (this script, ``--role exporter``), as ``kube-ballast exporter`` runs
   it with only a kubeconfig (its cluster state, and the kubeconfig's server probed
   as the apiserver);
3. this process, the receiver's side: ``read_signals`` as the action calls it (the
   view) and the previous read (GET /metrics, ``parse_signals``), ``--reads`` times
   each, alternating.

Reported per read, median and p95: the receiver's CPU (``time.process_time``: the
request, decompression, decoding and parsing), wall time, the bytes on the wire (what
aiohttp's client asks for by default: gzip) and decompressed; and the exporter's CPU
per read (psutil, over the reads; it includes its background renders, which any read
of either page keeps going, as a scrape does).

    .venv/bin/python bench/guard_view.py --nodes 5000 --pods-per-node 30 --reads 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import (
    API_ONLY,
    cpu_seconds,
    free_port,
    simulator,
    start_script,
    stop,
    wait_ready,
)

HERE = Path(__file__).resolve()


# --- role: exporter ----------------------------------------------------------------------


async def run_exporter_role(kubeconfig: str, port: int) -> None:
    from kubeballast.core.config import ExporterConfig, KubernetesAccessConfig, ListenConfig
    from kubeballast.exporter.server import run_exporter

    config = ExporterConfig(
        listen=ListenConfig(host="127.0.0.1", port=port),
        kubernetes=KubernetesAccessConfig(kubeconfig_path=kubeconfig),
    )
    await run_exporter(config)


# --- the receiver's side -----------------------------------------------------------------


async def read_view(metrics_url: str) -> Any:
    from kubeballast.remediations.evictionguard import read_signals

    signals = await read_signals(metrics_url, timeout_seconds=30.0, now=time.time())
    assert signals.source == "view", signals.source
    return signals


async def read_metrics(metrics_url: str) -> Any:
    """The read before the view (and the fallback): GET /metrics, parse the families."""
    from kubeballast.remediations.evictionguard import parse_signals

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30.0)) as session,
        session.get(metrics_url) as response,
    ):
        assert response.status == 200, response.status
        text = await response.text()
    return parse_signals(text, time.time())


async def wire_bytes(url: str) -> tuple[int, int]:
    """(bytes on the wire, decompressed bytes) of one GET with aiohttp's default headers."""
    import zlib

    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(url) as response,
    ):
        raw = await response.read()
        encoding = response.headers.get("Content-Encoding", "")
    if encoding in ("gzip", "deflate"):
        plain = zlib.decompress(raw, 47)  # gzip or zlib header, auto-detected
    elif encoding:
        raise SystemExit(f"unexpected Content-Encoding {encoding}")
    else:
        plain = raw
    return len(raw), len(plain)


LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
GRACE = 50.0


async def set_leases(server: str, token: str, renewed: Callable[[], float]) -> int:
    """Set every node Lease's renewTime to ``renewed()`` (one merge patch each, 16 at a
    time); returns how many were set."""
    import datetime

    headers = {"Authorization": f"Bearer {token}"}
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(server + LEASES) as response:
            names = [item["metadata"]["name"] for item in (await response.json())["items"]]

        async def one(name: str) -> None:
            stamp = datetime.datetime.fromtimestamp(renewed(), datetime.UTC)
            patch = {"spec": {"renewTime": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
            async with (
                limit,
                session.patch(
                    f"{server}{LEASES}/{name}",
                    json=patch,
                    headers={"Content-Type": "application/merge-patch+json"},
                ) as response,
            ):
                if response.status != 200:
                    raise SystemExit(f"patching Lease {name}: HTTP {response.status}")

        await asyncio.gather(*(one(name) for name in names))
    return len(names)


def storm_renewals(spread_seconds: float) -> Callable[[], float]:
    """now - grace - U(0, spread): every node stale, onsets within ``spread`` (< the
    120 s wave window) of each other."""
    import random

    rng = random.Random(7)
    return lambda: time.time() - GRACE - 1.0 - rng.uniform(0.0, spread_seconds)


def healthy_renewals() -> float:
    """An hour ahead: a Lease renewed by a kubelet whose clock runs ahead is fresh (its
    age is clamped to 0) however long the benchmark takes without kubelets."""
    return time.time() + 3600.0


async def wait_for_view(
    view_url: str, done: Callable[[dict[str, Any]], bool], deadline: float
) -> dict[str, Any]:
    """Poll the view until ``done`` says the state has arrived."""
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(view_url) as response:
                    if response.status == 200:
                        view: dict[str, Any] = await response.json()
                        if view.get("synced") and done(view):
                            return view
            await asyncio.sleep(1.0)
    raise SystemExit("the exporter's view did not reach the state in time")


def _summary(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered) * scale, 2), "p95": round(p95 * scale, 2)}


async def measure(metrics_url: str, exporter: psutil.Process, reads: int) -> dict[str, Any]:
    readers = {"view": read_view, "metrics": read_metrics}
    for reader in readers.values():  # warm up: imports, first renders
        await reader(metrics_url)
    cpu: dict[str, list[float]] = {name: [] for name in readers}
    wall: dict[str, list[float]] = {name: [] for name in readers}
    exporter_cpu = dict.fromkeys(readers, 0.0)
    for _ in range(reads):
        for name, reader in readers.items():
            before_exporter = cpu_seconds(exporter)
            before_cpu, before_wall = time.process_time(), time.monotonic()
            await reader(metrics_url)
            cpu[name].append(time.process_time() - before_cpu)
            wall[name].append(time.monotonic() - before_wall)
            exporter_cpu[name] += cpu_seconds(exporter) - before_exporter
    base = metrics_url.removesuffix("/metrics")
    async with aiohttp.ClientSession() as session, session.get(metrics_url) as response:
        text = await response.text()
    series: dict[str, int] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            series[name] = series.get(name, 0) + 1
    largest = sorted(series.items(), key=lambda item: -item[1])[:5]
    sizes = {
        "view": await wire_bytes(base + "/eviction-guard"),
        "metrics": await wire_bytes(metrics_url),
    }
    return {
        "metrics_series": sum(series.values()),
        "metrics_largest_families": dict(largest),
        **{
            name: {
                "receiver_cpu_ms": _summary(cpu[name]),
                "wall_ms": _summary(wall[name]),
                "wire_bytes": sizes[name][0],
                "decompressed_bytes": sizes[name][1],
                "exporter_cpu_ms_per_read": round(1000 * exporter_cpu[name] / reads, 1),
            }
            for name in readers
        },
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    states: dict[str, Any] = {}
    with simulator(
        nodes=args.nodes,
        pods_per_node=args.pods_per_node,
        options=(*API_ONLY, "--clock-factor", "1"),
        prefix="kb-bench-guard-view-",
    ) as sim:
        port = free_port()
        process = start_script(
            HERE, "--role", "exporter", "--kubeconfig", str(sim.kubeconfig), "--port", str(port)
        )
        try:
            url = f"http://127.0.0.1:{port}"
            view_url = f"{url}/eviction-guard"
            asyncio.run(wait_ready(f"{url}/healthz", process, time.monotonic() + 60, "exporter"))
            exporter = psutil.Process(process.pid)
            plan: list[tuple[str, Callable[[], float], Callable[[dict[str, Any]], bool]]] = [
                (
                    "storm",
                    storm_renewals(args.spread),
                    lambda v: (v.get("wave") or {}).get("nodes", 0) >= 0.9 * args.nodes,
                ),
                ("healthy", healthy_renewals, lambda v: v.get("stale") == []),
            ]
            for name, renewed, arrived in plan:
                leases = asyncio.run(set_leases(sim.url, sim.token, renewed))
                view = asyncio.run(wait_for_view(view_url, arrived, time.monotonic() + 300))
                wave = view["wave"]
                states[name] = {
                    "leases_set": leases,
                    "wave": {k: wave[k] for k in ("nodes", "ratio", "zones")},
                    "stale_nodes_in_view": len(view["stale"]),
                    **asyncio.run(measure(f"{url}/metrics", exporter, args.reads)),
                }
        finally:
            stop(process)
    return {
        "nodes": args.nodes,
        "pods_per_node": args.pods_per_node,
        "reads_each": args.reads,
        "total_seconds": round(time.monotonic() - started, 1),
        **states,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("main", "exporter"), default="main")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--spread", type=float, default=100.0, help="onsets spread (s)")
    parser.add_argument("--kubeconfig", default="")
    parser.add_argument("--port", type=int, default=0)
    args, _ = parser.parse_known_args()
    if args.role == "exporter":
        logging.basicConfig(level=logging.ERROR)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_exporter_role(args.kubeconfig, args.port))
        return
    print(json.dumps(orchestrate(args), indent=2))


if __name__ == "__main__":
    main()
