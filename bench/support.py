"""What the benchmarks share: processes on loopback, started, awaited, measured, stopped.

Benchmarks run the thing they measure as its own process, so that its CPU time and RSS
are its own: the simulator (``kube-ballast simulate``), a role of the benchmark script
itself (an exporter, a load generator, a receiver), Prometheus, etcd. Each of them
needs a free port, a readiness poll with a deadline, a stop by PID that escalates to
SIGKILL, and CPU seconds read with psutil; those live here, once.

The scripts run as ``python bench/NAME.py``, which puts bench/ first on ``sys.path``:
they import this module as ``support``. Nothing here sleeps to synchronise; the sleeps
in the polling loop are pacing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

TESTS = Path(__file__).resolve().parents[1] / "tests"
#: The command line of ``kube-ballast`` in this interpreter (the venv's, not PATH's).
KUBE_BALLAST = (sys.executable, "-m", "kubeballast")
#: ``simulate`` options: only the API, nothing else competing for the simulator's core.
API_ONLY = ("--no-kubelets", "--no-controllers")
#: ``simulate`` options: kubelets and controllers on, in real time.
REAL_TIME = ("--clock-factor", "1")


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def read_kubeconfig(kubeconfig: Path) -> tuple[str, str]:
    """(server URL, bearer token) of the kubeconfig the simulator wrote."""
    doc = yaml.safe_load(kubeconfig.read_text())
    return doc["clusters"][0]["cluster"]["server"], doc["users"][0]["user"]["token"]


def start_script(script: Path | str, *args: str, **popen: Any) -> subprocess.Popen[Any]:
    """``script`` (a benchmark, usually in one of its roles) as a child in this Python."""
    return subprocess.Popen([sys.executable, str(script), *args], **popen)


async def wait_ready(
    url: str, process: subprocess.Popen[Any], deadline: float, what: str = "simulator"
) -> None:
    """Poll ``url`` until it answers 200; exit if ``process`` ends or the deadline (a
    ``time.monotonic()`` value) passes first."""
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{what} exited with {process.returncode}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{what} did not become ready in time")


def stop(process: subprocess.Popen[Any], timeout: float = 30, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds (to the whole process group with
    ``group``, for children started in a session of their own); reaps the child."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(process, group=group)


def kill(process: subprocess.Popen[Any], *, group: bool = False) -> None:
    """SIGKILL at once (the process group with ``group``) and reap the child."""
    if process.poll() is None:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    process.wait()


def cpu_seconds(process: psutil.Process) -> float:
    """User plus system CPU seconds ``process`` has used so far."""
    times = process.cpu_times()
    return times.user + times.system


@dataclasses.dataclass
class Usage:
    """What a process used during a ``with measured(...)`` block (set when it ends)."""

    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


@contextlib.contextmanager
def measured(process: psutil.Process) -> Iterator[Usage]:
    """The CPU seconds ``process`` used, and the wall time, while the block ran."""
    usage = Usage()
    cpu, wall = cpu_seconds(process), time.monotonic()
    yield usage
    usage.wall_seconds = time.monotonic() - wall
    usage.cpu_seconds = cpu_seconds(process) - cpu


@dataclasses.dataclass(frozen=True)
class Simulator:
    """A ``kube-ballast simulate`` child that answered ``/readyz``."""

    process: subprocess.Popen[bytes]
    url: str
    #: A temporary folder that lives as long as the simulator, for the bench's files too.
    directory: Path
    kubeconfig: Path
    startup_seconds: float

    @property
    def token(self) -> str:
        return read_kubeconfig(self.kubeconfig)[1]


@contextlib.contextmanager
def simulator(
    *,
    nodes: int,
    pods_per_node: int,
    options: Sequence[str] = (),
    start_timeout: float = 300.0,
    prefix: str = "kb-bench-",
) -> Iterator[Simulator]:
    """The simulator (3 zones) on a free port, with its kubeconfig in a new temporary
    folder; stopped by PID, and the folder removed, when the block ends. ``options``
    are more ``simulate`` flags (``API_ONLY``, ``REAL_TIME``)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        directory = Path(name)
        kubeconfig = directory / "kubeconfig"
        command = [
            *KUBE_BALLAST,
            "--log-level",
            "warning",
            "simulate",
            "--nodes",
            str(nodes),
            "--zones",
            "3",
            "--pods-per-node",
            str(pods_per_node),
            "--port",
            str(port),
            "--kubeconfig",
            str(kubeconfig),
            *options,
        ]
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(wait_ready(f"{url}/readyz", process, started + start_timeout))
            yield Simulator(process, url, directory, kubeconfig, time.monotonic() - started)
        finally:
            stop(process)


def use_test_harness(*folders: str) -> None:
    """Put ``tests/<folder>`` first on ``sys.path``, in the order given, for benchmarks
    that reuse a test harness, so that they measure exactly what the tests exercise."""
    sys.path[:0] = [str(TESTS / folder) for folder in folders]
