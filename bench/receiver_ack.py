"""Benchmark: how fast the receiver acknowledges Alertmanager's webhooks.

Alertmanager waits for the answer of each webhook (10 s by default before it gives
up and retries), so the acknowledgement latency is what the receiver's handling path
costs: authentication, reading the body, decoding and validating it into the typed
group, handing it to the intake, answering.

The receiver runs as its own process (this script, ``--serve``), serving the real
application (``kubeballast.remediations.webhook.create_app``) with bearer-token
authentication, so its event loop does not share a core's time with the client's.
Its intake is an in-memory list: the engine's durable recording is not part of this
measurement, only the webhook's own path (add the ledger's write latency to get the
end-to-end figure). Two loads:

1. one group of 5000 realistic alerts (the shape tests/receiver/capture_payloads.py
   captures from Alertmanager: nine labels, three annotations, a generator URL), posted
   ``--big-rounds`` times one after the other;
2. 1000 small groups (3 alerts each) posted all at once, as 1000 Alertmanager groups
   flushing together would (the client keeps up to 100 connections open, as
   Alertmanager's HTTP client may).

Also timed in-process: ``decode_group`` alone on the 5000-alert body, the part of the
path that runs on the event loop without yielding.

    python bench/receiver_ack.py --big-rounds 30 --small-groups 1000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp import web
from prometheus_client import CollectorRegistry
from support import free_port, measured, start_script, stop

from kubeballast.core.config import ReceiverAuthConfig, ReceiverConfig
from kubeballast.remediations.contract import AlertGroup
from kubeballast.remediations.payload import decode_group
from kubeballast.remediations.webhook import create_app

TOKEN = "bench-token"
PATH = "/webhook/alertmanager"


class MemoryIntake:
    """Keeps the last group and a count: the cheapest possible intake."""

    def __init__(self) -> None:
        self.count = 0
        self.last: AlertGroup | None = None

    async def accept(self, group: AlertGroup) -> None:
        self.count += 1
        self.last = group


def alert(index: int, alertname: str, now: datetime.datetime) -> dict[str, Any]:
    node = f"node-{index:05d}"
    zone = f"eu-west-1{'abc'[index % 3]}"
    expr = (
        'time() - kubeballast_node_lease_renew_time_seconds{job="kube-ballast-exporter"}'
        " > 3 * kubeballast_node_lease_duration_seconds"
    )
    return {
        "status": "firing",
        "labels": {
            "alertname": alertname,
            "severity": "critical",
            "cluster": "prod-eu-west-1",
            "namespace": "kube-ballast",
            "job": "kube-ballast-exporter",
            "instance": "10.20.3.17:9808",
            "node": node,
            "zone": zone,
            "prometheus": "monitoring/k8s",
        },
        "annotations": {
            "summary": f"Node {node} has not renewed its lease for more than 120 s.",
            "description": (
                f"The kubelet on {node} in zone {zone} last renewed its Lease 124 s ago;"
                " the node-lifecycle controller marks it NotReady after 40 s and starts"
                " evicting its pods after the toleration of 300 s."
            ),
            "runbook_url": (
                "https://github.com/kube-ballast/kube-ballast/blob/main/docs/runbooks/"
                f"{alertname}.md"
            ),
        },
        "startsAt": (now - datetime.timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": (
            "http://prometheus-k8s-0.prometheus-operated.monitoring.svc:9090/graph?g0.expr="
            + urllib.parse.quote(expr, safe="")
            + "&g0.tab=1"
        ),
        "fingerprint": f"{index:016x}",
    }


def group_body(alertname: str, count: int, offset: int = 0) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    alerts = [alert(offset + i, alertname, now) for i in range(count)]
    payload = {
        "receiver": "kube-ballast",
        "status": "firing",
        "alerts": alerts,
        "groupLabels": {"alertname": alertname},
        "commonLabels": {"alertname": alertname, "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager-main-0:9093",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}"}}',
        "truncatedAlerts": 0,
    }
    return json.dumps(payload).encode()


# --- the receiver process ----------------------------------------------------------------


async def serve(port: int, token_file: str) -> None:
    config = ReceiverConfig(auth=ReceiverAuthConfig(bearer_token_file=token_file))
    app = create_app(config, MemoryIntake(), CollectorRegistry())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# --- the client ----------------------------------------------------------------------


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms"
        f"  max {ordered[-1] * 1000:7.1f} ms  (n={len(ordered)})"
    )


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"answered {response.status}")
    return time.perf_counter() - started


async def client(url: str, server: psutil.Process, big_rounds: int, small_groups: int) -> None:
    big = group_body("KubeBallastNodeHeartbeatStale", 5000)
    print(f"5000-alert body: {len(big)} bytes")
    durations = []
    for _ in range(20):
        started = time.perf_counter()
        decode_group(big, max_alerts=10000)
        durations.append(time.perf_counter() - started)
    print(f"decode_group, 5000 alerts, in-process: {percentiles(durations)}")

    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        await post(session, url, group_body("Warmup", 3))
        with measured(server) as sequential:
            latencies = [await post(session, url, big) for _ in range(big_rounds)]
        print(f"5000-alert group, sequential: {percentiles(latencies)}")
        print(f"  receiver CPU per group: {sequential.cpu_seconds / big_rounds * 1000:.1f} ms")

        bodies = [group_body(f"Group{i}", 3, offset=3 * i) for i in range(small_groups)]
        with measured(server) as burst:
            latencies = await asyncio.gather(*(post(session, url, body) for body in bodies))
        wall, used = burst.wall_seconds, burst.cpu_seconds
        print(f"{small_groups} small groups at once: {percentiles(list(latencies))}")
        print(
            f"  all answered in {wall:.2f} s ({small_groups / wall:.0f} groups/s);"
            f" receiver CPU {used:.2f} s ({used / small_groups * 1000:.2f} ms per group)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-rounds", type=int, default=30)
    parser.add_argument("--small-groups", type=int, default=1000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token-file", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()  # bench/run.py passes its arguments to every bench
    if args.serve is not None:
        asyncio.run(serve(args.serve, args.token_file))
        return 0

    with tempfile.TemporaryDirectory() as directory:
        token_file = Path(directory) / "token"
        token_file.write_text(TOKEN)
        port = free_port()
        process = start_script(
            __file__,
            "--serve",
            str(port),
            "--token-file",
            str(token_file),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError("the receiver did not start")
            print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
            asyncio.run(
                client(
                    f"http://127.0.0.1:{port}{PATH}",
                    psutil.Process(process.pid),
                    args.big_rounds,
                    args.small_groups,
                )
            )
        finally:
            stop(process, timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
