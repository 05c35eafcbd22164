"""What a /metrics scrape of the cluster-state area costs at 5000 nodes / 150 000 pods.

The state collector renders its families from a :class:`ClusterSnapshot`; the cost that
matters is the part paid *on the event loop* (a scrape, an informer callback and the
health probes all wait behind it), and the CPU each render burns wherever it runs.
This builds the snapshot by hand (no simulator, no informers: the snapshot is the
collector's boundary), shaped like the simulator's seed cluster (3 zones, 30 pods per
node, 12 450 Deployments with a ReplicaSet each, 890 StatefulSets), in three states:
healthy, 1 500 nodes with stale Leases, every node stale.

Reported per state, over ``--renders`` cache expiries:

- ``scrape_on_loop_ms``: median and p95 of ``collect()`` as a scrape on the event loop
  sees it, every scrape arriving after the cache expired (the worst case);
- ``worst_loop_lag_ms``: the worst delay a 1 ms ticker on the loop saw over the run (a
  render in a worker thread still takes the GIL in slices);
- ``render_cpu_ms``: median and p95 of the CPU of one full derivation (thread time,
  wherever it ran).

    .venv/bin/python bench/exporter_state_render.py [--scrapes 20] [--sync]

``--sync`` measures rendering inside ``collect()`` (the behaviour before the
background refresh), for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from kubeballast.core.config import ClusterStateConfig
from kubeballast.exporter.clusterstate import ClusterSnapshot, NodePods
from kubeballast.exporter.projections import (
    LeaseP,
    NodeP,
    PodP,
    ReplicaSetP,
    TaintP,
    TolerationP,
    WorkloadP,
)
from kubeballast.exporter.state import StateCollector

NOW = 1_700_000_000.0
ZONE = "topology.kubernetes.io/zone"
ZONES = ("zone-a", "zone-b", "zone-c")
TOLERATIONS = (
    TolerationP("node.kubernetes.io/not-ready", "Exists", "", "NoExecute", 300),
    TolerationP("node.kubernetes.io/unreachable", "Exists", "", "NoExecute", 300),
)


def build_snapshot(nodes: int, pods_per_node: int, stale: int) -> ClusterSnapshot:
    """``stale`` nodes (the first ones) have a Lease 120 s old and are NotReady."""
    node_map: dict[str, NodeP] = {}
    leases: dict[str, LeaseP] = {}
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    for i in range(nodes):
        name = f"node-{i:04d}"
        zone = ZONES[i % len(ZONES)]
        labels = {ZONE: zone, "example.com/node-pool": f"pool-{i % 10}"}
        is_stale = i < stale
        taints = (
            (TaintP("node.kubernetes.io/unreachable", "", "NoExecute", NOW - 30),)
            if is_stale and i % 2
            else ()
        )
        node_map[name] = NodeP(
            name,
            labels,
            zone,
            False,
            taints,
            "Unknown" if is_stale else "True",
            NOW - 70 if is_stale else NOW - 86400,
            resources,
            resources,
            False,
        )
        leases[name] = LeaseP(name, "kube-node-lease", name, NOW - (120 if is_stale else 5), 40)
    total = nodes * pods_per_node
    deployments, statefulsets = 12_450, 890
    workloads: dict[tuple[str, str, str], WorkloadP] = {}
    replicasets: dict[str, ReplicaSetP] = {}
    owners: list[tuple[str, str, str]] = []
    for d in range(deployments):
        ns, name = f"team-{d % 50}", f"app-{d}"
        workloads[("Deployment", ns, name)] = WorkloadP(
            "Deployment", ns, name, f"d{d}", 3, (), False, {"app": name}
        )
        replicasets[f"{ns}/{name}-rs"] = ReplicaSetP(ns, f"{name}-rs", f"r{d}", "Deployment", name)
        owners.append(("ReplicaSet", ns, f"{name}-rs"))
    for s in range(statefulsets):
        ns, name = f"team-{s % 50}", f"db-{s}"
        workloads[("StatefulSet", ns, name)] = WorkloadP(
            "StatefulSet", ns, name, f"s{s}", 3, (), False, {"app": name}
        )
        owners.append(("StatefulSet", ns, name))
    names = list(node_map)
    pods: list[PodP] = []
    per_node: dict[str, int] = {}
    for p in range(total):
        kind, ns, owner = owners[p % len(owners)]
        # Replicas of one workload land on consecutive-ish nodes: mostly spread, some not.
        node = names[(p * 7 + p // len(owners)) % nodes]
        per_node[node] = per_node.get(node, 0) + 1
        pods.append(
            PodP(
                ns, f"pod-{p}", f"u{p}", node, "Running", p % 97 != 0, 2, kind, owner,
                TOLERATIONS, {}, False, {},
            )
        )  # fmt: skip
    return ClusterSnapshot(
        version=1,
        taken_at=NOW,
        synced=True,
        informers={},
        nodes=node_map,
        node_leases=leases,
        pods=tuple(pods),
        replicasets=replicasets,
        workloads=workloads,
        pods_by_node={n: NodePods(c, 2 * c) for n, c in per_node.items()},
        extended_requests_by_node={},
        owner_pods_by_node={},
        nodes_by_zone={z: tuple(n for n in names if node_map[n].zone == z) for z in ZONES},
    )


def _pct(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 2), "p95": round(p95, 2)}


async def measure(snapshot: ClusterSnapshot, scrapes: int, sync: bool) -> dict[str, Any]:
    """``scrapes`` scrapes, each after the cache expired (real clocks; the cache and
    refresh period shortened to 0.25 s so the run stays short)."""
    period = 0.25
    collector = StateCollector(
        lambda: snapshot,
        ClusterStateConfig(),
        clock=lambda: NOW,
        cache_seconds=period,
        background=not sync,
    )
    list(collector.collect())  # the first render is synchronous in both modes
    lag = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal lag
        while not stop:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = max(lag, time.perf_counter() - before - 0.001)

    tick = asyncio.create_task(ticker())
    loop_ms: list[float] = []
    for _ in range(scrapes):
        await asyncio.sleep(period * 1.2)
        started = time.perf_counter()
        list(collector.collect())
        loop_ms.append((time.perf_counter() - started) * 1000)
    stop = True
    await tick
    await collector.aclose()
    return {
        "scrape_on_loop_ms": _pct(loop_ms),
        "worst_loop_lag_ms": round(lag * 1000, 1),
        "renders": collector.renders,
        "render_cpu_ms": _pct([s * 1000 for s in collector.render_cpu_seconds]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--sync", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"mode": "sync" if args.sync else "background"}
    for label, stale in (("healthy", 0), ("stale_1500", 1500), ("stale_all", args.nodes)):
        snap = build_snapshot(args.nodes, args.pods_per_node, stale)
        out[label] = asyncio.run(measure(snap, args.scrapes, args.sync))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
