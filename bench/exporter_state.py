"""Benchmark: the exporter's cluster-state caches at the seed's maximum scale.

Three processes, so that the exporter's CPU time and RSS are its own:

1. ``kube-ballast simulate`` with kubelets and controllers on at clock factor 1: at
   5000 nodes every kubelet renews its Lease every 10 s, 500 renewals per second;
2. a load generator (this script, ``--role load``) patching a label of one pod every
   10 ms: 100 pod changes per second;
3. the cluster state (this script, ``--role exporter``): :class:`ClusterState` over a
   kubeconfig, nothing else.

Reported, per sync mode (paginated LIST, WatchList): the exporter's CPU seconds and
wall time for the initial sync of nodes, node Leases, pods, ReplicaSets, Deployments
and StatefulSets; its RSS after the sync; its CPU share over a 60 s steady state with
the lease renewals and pod changes flowing (with the event rates it actually saw); the
cost of one snapshot at this size.

    .venv/bin/python bench/exporter_state.py --nodes 5000 --pods-per-node 30

Budget (issue 4): sync <= 5 s of exporter CPU, RSS after sync <= 400 MB, steady state
<= 5 % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
import msgspec
import psutil
from support import REAL_TIME, kill, measured, read_kubeconfig, simulator, start_script

HERE = Path(__file__).resolve()


# --- role: exporter ----------------------------------------------------------------------


async def run_exporter(kubeconfig: str, mode: str, gc_freeze: bool) -> None:
    """Sync, report, then answer "status" lines on stdin until "quit"."""
    from kubeballast.core.config import KubernetesAccessConfig
    from kubeballast.core.kube import KubeClientProvider
    from kubeballast.exporter.clusterstate import ClusterState
    from kubeballast.exporter.informer import SyncMode

    provider = KubeClientProvider(KubernetesAccessConfig(kubeconfig_path=Path(kubeconfig)))
    # Imports and the client's configuration are start-up costs of any exporter, not
    # of the sync: the clock starts after them.
    await provider.get()
    state = ClusterState(provider, mode=cast(SyncMode, mode))
    cpu0, wall0 = time.process_time(), time.monotonic()
    await state.start()
    await state.wait_synced()
    sync_cpu, sync_wall = time.process_time() - cpu0, time.monotonic() - wall0
    if gc_freeze:
        # Everything built by the sync lives as long as the process: move it out of
        # the collector's generations, so full collections do not walk it again.
        gc.freeze()
    started = time.perf_counter()
    snapshot = state.snapshot()
    snapshot_ms = (time.perf_counter() - started) * 1000
    report = {
        "sync_cpu_seconds": round(sync_cpu, 2),
        "sync_wall_seconds": round(sync_wall, 2),
        "snapshot_ms": round(snapshot_ms, 1),
        "counts": {name: s.objects for name, s in snapshot.informers.items()},
        "modes": {name: s.mode for name, s in snapshot.informers.items()},
        "requests": state.http.requests if state.http else 0,
    }
    print(json.dumps(report), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line in ("", "quit"):
            break
        started = time.perf_counter()
        snapshot = state.snapshot()
        snapshot_ms = (time.perf_counter() - started) * 1000
        print(
            json.dumps(
                {
                    "events": {name: s.events for name, s in snapshot.informers.items()},
                    "relists": {name: dict(s.relists) for name, s in snapshot.informers.items()},
                    "pods": len(snapshot.pods),
                    "snapshot_ms": round(snapshot_ms, 1),
                }
            ),
            flush=True,
        )
    await state.stop()
    await provider.close()


# --- role: load ---------------------------------------------------------------------------


class _Meta(msgspec.Struct):
    name: str
    namespace: str


class _Item(msgspec.Struct):
    metadata: _Meta


class _ListMeta(msgspec.Struct):
    continue_: str = msgspec.field(default="", name="continue")


class _List(msgspec.Struct):
    metadata: _ListMeta
    items: list[_Item]


async def run_load(kubeconfig: str, rate: float, duration: float) -> None:
    """Patch one pod's label every 1/rate seconds for ``duration`` seconds."""
    server, token = read_kubeconfig(Path(kubeconfig))
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(server, headers=headers) as session:
        pods: list[_Meta] = []
        cont = ""
        while len(pods) < 5000:
            params = {"limit": "500", "labelSelector": "app"}
            if cont:
                params["continue"] = cont
            async with session.get("/api/v1/pods", params=params) as resp:
                page = msgspec.json.decode(await resp.read(), type=_List)
            pods.extend(item.metadata for item in page.items)
            cont = page.metadata.continue_
            if not cont:
                break
        # Values unique to this run: patching a label to the value it has is a no-op
        # that the apiserver does not even report as an event.
        run = int(time.time())
        sent = failed = 0
        in_flight: set[asyncio.Task[None]] = set()

        async def patch(meta: _Meta, tick: int) -> None:
            nonlocal failed
            body = {"metadata": {"labels": {"bench-tick": f"{run}-{tick}"}}}
            async with session.patch(
                f"/api/v1/namespaces/{meta.namespace}/pods/{meta.name}",
                json=body,
                headers={"Content-Type": "application/merge-patch+json"},
            ) as resp:
                await resp.read()
                if resp.status != 200:
                    failed += 1

        start = time.monotonic()
        while time.monotonic() - start < duration:
            # Absolute schedule: a slow response does not lower the rate.
            due = start + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(patch(pods[sent % len(pods)], sent))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += 1
        await asyncio.gather(*in_flight)
    print(json.dumps({"patches": sent, "failed": failed, "seconds": round(duration, 1)}))


# --- orchestration ------------------------------------------------------------------------


def start_load(kubeconfig: Path, rate: float, duration: float) -> subprocess.Popen[str]:
    """The load generator (``--role load``) as a child; it prints its summary as JSON on
    its stdout when ``duration`` is over (``bench/exporter_steady.py`` uses it too)."""
    return start_script(
        HERE,
        "--role",
        "load",
        "--kubeconfig",
        str(kubeconfig),
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        stdout=subprocess.PIPE,
        text=True,
    )


def measure_mode(args: argparse.Namespace, kubeconfig: Path, mode: str) -> dict[str, Any]:
    extra = ["--gc-freeze"] if args.gc_freeze else []
    exporter: subprocess.Popen[str] = start_script(
        HERE,
        "--role",
        "exporter",
        "--kubeconfig",
        str(kubeconfig),
        "--mode",
        mode,
        *extra,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert exporter.stdin is not None
    assert exporter.stdout is not None
    ps = psutil.Process(exporter.pid)
    try:
        sync = json.loads(exporter.stdout.readline())
        rss_sync = ps.memory_info().rss
        load = start_load(kubeconfig, args.pod_changes, args.warmup + args.window + 5)
        time.sleep(args.warmup)  # the load generator lists and reaches its rate

        def status() -> dict[str, Any]:
            assert exporter.stdin is not None
            assert exporter.stdout is not None
            exporter.stdin.write("status\n")
            exporter.stdin.flush()
            result: dict[str, Any] = json.loads(exporter.stdout.readline())
            return result

        before = status()
        with measured(ps) as steady:
            time.sleep(args.window)
        after = status()
        rss_end = ps.memory_info().rss
        load_out, _ = load.communicate(timeout=120)
        wall = steady.wall_seconds
        rates = {
            name: round((after["events"][name] - before["events"][name]) / wall, 1)
            for name in after["events"]
        }
        exporter.stdin.write("quit\n")
        exporter.stdin.flush()
        exporter.wait(timeout=60)
    finally:
        kill(exporter)
    return {
        "mode": mode,
        "sync_cpu_seconds": sync["sync_cpu_seconds"],
        "sync_wall_seconds": sync["sync_wall_seconds"],
        "sync_requests": sync["requests"],
        "objects": sync["counts"],
        "modes_used": sorted(set(sync["modes"].values())),
        "rss_after_sync_mib": round(rss_sync / 2**20, 1),
        "rss_after_steady_mib": round(rss_end / 2**20, 1),
        "steady_cpu_percent": round(100 * steady.cpu_seconds / wall, 2),
        "steady_window_seconds": round(wall, 1),
        "steady_events_per_second": rates,
        "relists": after["relists"],
        "load": json.loads(load_out),
        "snapshot_ms_first": sync["snapshot_ms"],
        "snapshot_ms_steady": after["snapshot_ms"],
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    with simulator(nodes=args.nodes, pods_per_node=args.pods_per_node, options=REAL_TIME) as sim:
        results = [measure_mode(args, sim.kubeconfig, mode) for mode in args.modes.split(",")]
    return {
        "nodes": args.nodes,
        "pods_per_node": args.pods_per_node,
        "lease_renewals_per_second_expected": args.nodes / 10,
        "pod_changes_per_second": args.pod_changes,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("main", "exporter", "load"), default="main")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--pod-changes", type=float, default=100.0)
    parser.add_argument("--modes", default="list,watchlist")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--gc-freeze", action="store_true")
    # Roles' own arguments.
    parser.add_argument("--kubeconfig", default="")
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    if args.role == "exporter":
        asyncio.run(run_exporter(args.kubeconfig, args.mode, args.gc_freeze))
    elif args.role == "load":
        asyncio.run(run_load(args.kubeconfig, args.rate, args.duration))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        print(json.dumps(orchestrate(args), indent=2))


if __name__ == "__main__":
    main()
