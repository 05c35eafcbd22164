"""Benchmark: the simulator at the seed's maximum scale.

Starts ``kube-ballast simulate`` as its own process (so its CPU time and RSS are its
own), waits until it serves, then reads every pod with paginated LISTs (limit=500, as
client-go's reflector pages) and once with ``resourceVersion=0`` (the watch-cache list
informers start from). The client only receives bytes, so the numbers are the
server's, not a client's decoding (items are counted, not parsed).

Reported: start-up time to /readyz, RSS after start-up and after the LISTs, the
server's CPU seconds spent serving the paginated LIST, pods per server CPU second and
pods per wall second.

    python bench/simulator_list.py --nodes 5000 --pods-per-node 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil
import yaml


class _ListMeta(msgspec.Struct):
    resource_version: str = msgspec.field(default="", name="resourceVersion")
    # The real name of the field; kept as on the wire.
    continue_: str = msgspec.field(default="", name="continue")


class _List(msgspec.Struct):
    """A LIST body with its items left undecoded: the client counts them and reads the
    continue token, so the measurement is the server's, not the client's JSON parsing."""

    metadata: _ListMeta
    items: list[msgspec.Raw]


_decode_list = msgspec.json.Decoder(_List).decode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def read_token(kubeconfig: Path) -> str:
    doc = yaml.safe_load(kubeconfig.read_text())
    token: str = doc["users"][0]["user"]["token"]
    return token


async def wait_ready(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"simulator exited with {proc.returncode}")
            try:
                async with session.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("simulator did not become ready in time")


async def paginated_list(url: str, token: str, limit: int) -> tuple[int, int, int]:
    """Returns (pods, pages, bytes)."""
    headers = {"Authorization": f"Bearer {token}"}
    pods = pages = size = 0
    cont = ""
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            params = {"limit": str(limit)}
            if cont:
                params["continue"] = cont
            async with session.get(f"{url}/api/v1/pods", params=params) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"LIST failed: {resp.status} {body[:200]!r}")
            page = _decode_list(body)
            pods += len(page.items)
            pages += 1
            size += len(body)
            cont = page.metadata.continue_
            if not cont:
                return pods, pages, size


async def full_list(url: str, token: str) -> tuple[int, int]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{url}/api/v1/pods", params={"resourceVersion": "0"}) as resp,
    ):
        body = await resp.read()
    return len(_decode_list(body).items), len(body)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        cmd = [
            sys.executable,
            "-m",
            "kubeballast",
            "--log-level",
            "warning",
            "simulate",
            "--nodes",
            str(args.nodes),
            "--zones",
            "3",
            "--pods-per-node",
            str(args.pods_per_node),
            "--port",
            str(port),
            "--kubeconfig",
            str(kubeconfig),
            "--no-kubelets",
            "--no-controllers",
        ]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(wait_ready(url, proc, started + args.start_timeout))
            startup = time.monotonic() - started
            ps = psutil.Process(proc.pid)
            rss_start = ps.memory_info().rss
            token = read_token(kubeconfig)

            cpu_before = ps.cpu_times()
            wall_before = time.monotonic()
            pods, pages, size = asyncio.run(paginated_list(url, token, args.limit))
            wall = time.monotonic() - wall_before
            cpu_after = ps.cpu_times()
            cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)

            cpu_before = ps.cpu_times()
            wall_before = time.monotonic()
            full_pods, full_size = asyncio.run(full_list(url, token))
            full_wall = time.monotonic() - wall_before
            cpu_after = ps.cpu_times()
            full_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
            rss_end = ps.memory_info().rss
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {
        "nodes": args.nodes,
        "pods_per_node": args.pods_per_node,
        "startup_seconds": round(startup, 2),
        "rss_after_start_mib": round(rss_start / 2**20, 1),
        "rss_after_lists_mib": round(rss_end / 2**20, 1),
        "paginated": {
            "limit": args.limit,
            "pods": pods,
            "pages": pages,
            "mib": round(size / 2**20, 1),
            "wall_seconds": round(wall, 3),
            "server_cpu_seconds": round(cpu, 3),
            "pods_per_server_cpu_second": round(pods / cpu) if cpu else None,
            "pods_per_wall_second": round(pods / wall),
        },
        "rv0_full_list": {
            "pods": full_pods,
            "mib": round(full_size / 2**20, 1),
            "wall_seconds": round(full_wall, 3),
            "server_cpu_seconds": round(full_cpu, 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--start-timeout", type=float, default=300.0)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(json.dumps(measure(args), indent=2))


if __name__ == "__main__":
    main()
