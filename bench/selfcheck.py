"""Benchmark: ``kube-ballast selfcheck`` against a 5000-node / 150 000-pod simulator.

The issue's budget: the whole check list finishes within 60 s on a cluster of the
seed's maximum size. The simulator runs as its own process (no kubelets or
controllers, so nothing else competes for its core; its scheduler and
controller-manager endpoints are up and the controller-manager is configured as a
target), and the self-check runs as the command CI would run, a subprocess with
``--format json``. No etcd and no Prometheus: those checks cost the same at any
cluster size, and they SKIP here.

Reported per round: wall time of the command, its CPU seconds and peak RSS, the
simulator's CPU seconds during the run, the slowest checks, and the statuses.

    python bench/selfcheck.py --nodes 5000 --pods-per-node 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml
from support import API_ONLY, KUBE_BALLAST, measured, simulator


async def sim_state(url: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{url}/_sim/state") as resp,
    ):
        state: dict[str, Any] = await resp.json()
        return state


def run_selfcheck(kubeconfig: Path, config: Path, deadline: float) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        [
            *KUBE_BALLAST,
            "--config",
            str(config),
            "--log-level",
            "warning",
            "selfcheck",
            "--kubeconfig",
            str(kubeconfig),
            "--format",
            "json",
            "--deadline",
            str(deadline),
        ],
        capture_output=True,
        check=False,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(done.stdout)
    slowest = sorted(report["checks"], key=lambda c: -c["duration_seconds"])[:5]
    return {
        "exit_code": done.returncode,
        "wall_seconds": round(wall, 2),
        "report_duration_seconds": report["duration_seconds"],
        "cpu_seconds": round(
            (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2
        ),
        "peak_rss_mib": round(after.ru_maxrss / 1024, 1),
        "counts": report["counts"],
        "timed_out": report["timed_out"],
        "slowest_checks": {c["id"]: c["duration_seconds"] for c in slowest},
        "statuses": {c["id"]: c["status"] for c in report["checks"]},
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with simulator(
        nodes=args.nodes,
        pods_per_node=args.pods_per_node,
        options=API_ONLY,
        start_timeout=args.start_timeout,
    ) as sim:
        state = asyncio.run(sim_state(sim.url, sim.token))
        kcm = state["components"]["kube-controller-manager"]["url"]
        config = sim.directory / "config.yaml"
        config.write_text(
            yaml.safe_dump({"exporter": {"controller_managers": [{"name": "kcm-0", "url": kcm}]}})
        )
        server = psutil.Process(sim.process.pid)
        rounds = []
        for _ in range(args.rounds):
            with measured(server) as used:
                result = run_selfcheck(sim.kubeconfig, config, args.deadline)
            result["simulator_cpu_seconds"] = round(used.cpu_seconds, 2)
            rounds.append(result)
    return {
        "nodes": args.nodes,
        "pods_per_node": args.pods_per_node,
        "pods": state["counts"].get("pods"),
        "simulator_startup_seconds": round(sim.startup_seconds, 1),
        "cpus": os.cpu_count(),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--start-timeout", type=float, default=300.0)
    args, _ = parser.parse_known_args()
    print(json.dumps(measure(args), indent=2))


if __name__ == "__main__":
    main()
