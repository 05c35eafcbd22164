"""How fast kube-ballast takes an etcd snapshot, next to ``etcdctl snapshot save`` on
the same database in the same run (``make bench``; numbers, not pass/fail).

One etcd member on loopback in a temporary folder is filled with ``--mib`` MiB of
values (written concurrently through the gateway), then snapshotted alternately by
``etcdctl snapshot save`` and by kube-ballast: the streaming write alone
(``EtcdClient.save_snapshot``: gateway JSON, base64, fsync) and the whole backup
(``write_snapshot``: that plus re-hashing the file and ``etcdctl snapshot status``).
The medians and the ratio to etcdctl are printed. The member is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support import free_ports, kill

from kubeballast.core.etcd import EtcdClient
from kubeballast.core.etcdbackup import write_snapshot


def start_etcd(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    client, peer = free_ports(2)
    url = f"http://127.0.0.1:{client}"
    log = open(directory / "etcd.log", "wb")  # noqa: SIM115 (lives as long as etcd)
    process = subprocess.Popen(
        [
            etcd,
            f"--data-dir={directory / 'data'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--quota-backend-bytes=8589934592",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, url


async def wait_ready(client: EtcdClient, url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if (await client.health(url)).healthy:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def fill(client: EtcdClient, url: str, mib: int) -> None:
    value = os.urandom(64 * 1024)
    count = mib * 16
    queue = iter(range(count))

    async def writer() -> None:
        for index in queue:
            await client.put(url, f"/registry/configmaps/bench/c{index}", value)

    await asyncio.gather(*(writer() for _ in range(8)))


def etcdctl_save(url: str, path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["etcdctl", f"--endpoints={url}", "snapshot", "save", str(path)],
        check=True,
        capture_output=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    return time.perf_counter() - started


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="MiB of values to write")
    parser.add_argument("--rounds", type=int, default=3)
    args, _ = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="kb-etcd-bench-") as folder:
        directory = Path(folder)
        process, url = start_etcd(directory)
        try:
            async with EtcdClient([url], timeout=30) as client:
                await wait_ready(client, url)
                started = time.perf_counter()
                await fill(client, url, args.mib)
                status = await client.status(url)
                print(
                    f"filled {args.mib} MiB in {time.perf_counter() - started:.1f} s;"
                    f" db {status.db_size / 2**20:.0f} MiB, revision {status.revision}"
                )
                timings: dict[str, list[float]] = {"etcdctl": [], "stream": [], "backup": []}
                for round_ in range(args.rounds):
                    timings["etcdctl"].append(
                        await asyncio.to_thread(etcdctl_save, url, directory / f"e{round_}.db")
                    )
                    begin = time.perf_counter()
                    await client.save_snapshot(url, directory / f"s{round_}.db")
                    timings["stream"].append(time.perf_counter() - begin)
                    begin = time.perf_counter()
                    await write_snapshot(
                        client, url, directory / f"b{round_}.db", etcdctl="etcdctl"
                    )
                    timings["backup"].append(time.perf_counter() - begin)
                    for name in (f"e{round_}.db", f"s{round_}.db", f"b{round_}.db"):
                        (directory / name).unlink()
        finally:
            kill(process, group=True)
    base = statistics.median(timings["etcdctl"])
    size = status.db_size / 2**20
    for name, values in timings.items():
        median = statistics.median(values)
        print(
            f"{name:8s} median {median:6.2f} s  {size / median:7.1f} MiB/s"
            f"  x{median / base:.2f} of etcdctl  (runs: {', '.join(f'{v:.2f}' for v in values)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
