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
from typing import Any

import aiohttp
import msgspec
import psutil
from support import API_ONLY, measured, simulator


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
    with simulator(
        nodes=args.nodes,
        pods_per_node=args.pods_per_node,
        options=API_ONLY,
        start_timeout=args.start_timeout,
    ) as sim:
        ps = psutil.Process(sim.process.pid)
        rss_start = ps.memory_info().rss
        token = sim.token
        with measured(ps) as paged:
            pods, pages, size = asyncio.run(paginated_list(sim.url, token, args.limit))
        with measured(ps) as full:
            full_pods, full_size = asyncio.run(full_list(sim.url, token))
        rss_end = ps.memory_info().rss
    cpu, wall = paged.cpu_seconds, paged.wall_seconds
    return {
        "nodes": args.nodes,
        "pods_per_node": args.pods_per_node,
        "startup_seconds": round(sim.startup_seconds, 2),
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
            "wall_seconds": round(full.wall_seconds, 3),
            "server_cpu_seconds": round(full.cpu_seconds, 3),
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
