"""What the end-to-end tests share to run real servers on loopback.

Several test folders start the same things: Prometheus and Alertmanager as
subprocesses (in their own process groups, stopped by PID, their logs printed when
they end badly), aiohttp applications on a free port, the exporter's cluster-state
area on the simulator's clock (its object timestamps are simulated time), and a
kubelet renewing its Lease over HTTP so that a congestion's 429s show on the
apiserver's /metrics (the in-process kubelets' requests do not go over HTTP). They
live here, once. pyproject.toml puts this folder on pytest's ``pythonpath``; benchmarks
that reuse a test harness add it to ``sys.path`` themselves.

Nothing here sleeps to synchronise: waits poll with a deadline, and the sleeps in the
loops are pacing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from kubeballast.core.config import (
    ExporterConfig,
    KubernetesAccessConfig,
    ListenConfig,
    TargetConfig,
)
from kubeballast.exporter.catalog import Catalog, CollectorFactory, ExporterContext, default_catalog
from kubeballast.exporter.clusterstate import shared_cluster_state
from kubeballast.exporter.contract import MetricsCollector
from kubeballast.exporter.state import BACKGROUND_REFRESH_SECONDS, StateCollector

PROMETHEUS = Path("/usr/bin/prometheus")
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
PROMTOOL = Path("/usr/bin/promtool")
NODE_LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for subprocess servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def print_log(path: Path) -> None:
    print(path.read_text(errors="replace"))


def require(binary: Path, package: str) -> None:
    """Fail (never skip) when a binary the test needs is missing."""
    if not binary.exists():
        pytest.fail(f"{binary} is missing: install {package} (`make test`)")


async def poll(
    check: Callable[[], Awaitable[Any]], what: str, within: float = 60.0, every: float = 0.2
) -> Any:
    """Await ``check`` until it returns something truthy (connection errors count as
    not yet); fail after ``within`` seconds, naming the last error."""
    deadline = time.monotonic() + within
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = await check()
        except (aiohttp.ClientError, OSError) as error:
            result, last_error = None, error
        if result:
            return result
        await asyncio.sleep(every)  # pacing between polls, not synchronisation
    pytest.fail(f"{what} within {within:g} s (last error: {last_error!r})")


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free port of 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def process(args: Sequence[str], log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess in its own process group, stopped by PID (the group killed if it
    does not stop within 30 s); its log is printed when it ended badly."""
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            print_log(log_path)


async def wait_ready(
    url: str, proc: asyncio.subprocess.Process, what: str, within: float = 60
) -> None:
    """Poll ``url``/-/ready (Prometheus, Alertmanager) until 200; fail if it exits."""
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            assert proc.returncode is None, f"{what} exited (its log is printed)"
            async with session.get(f"{url}/-/ready") as response:
                return response.status == 200

        await poll(ready, f"{what} did not become ready", within)


async def run_command(
    args: Sequence[str],
    *,
    within: float = 120.0,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``args`` to its end in its own process group, ``stdin`` fed to it; its exit
    status, stdout and stderr. Past ``within`` seconds its group is killed and the test
    fails."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else dict(env),
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), within)
    except TimeoutError:
        pass
    else:
        assert proc.returncode is not None
        return proc.returncode, stdout, stderr
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    pytest.fail(f"{args[0]} did not end within {within:g} s")


@contextlib.asynccontextmanager
async def start_prometheus(
    directory: Path, config: Mapping[str, Any], *flags: str, within: float = 60
) -> AsyncIterator[str]:
    """Prometheus on a free port of 127.0.0.1 with ``config`` (written to
    ``directory``/prometheus.yml, its TSDB and log beside it) and ``flags``; yields its
    URL once it is ready."""
    require(PROMETHEUS, "prometheus")
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(dict(config)))
    port = free_port()
    args = [
        str(PROMETHEUS),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        *flags,
    ]
    async with process(args, directory / "prometheus.log") as proc:
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, proc, "Prometheus", within)
        yield url


@contextlib.asynccontextmanager
async def start_alertmanager(
    directory: Path, config: Mapping[str, Any], *flags: str, within: float = 60
) -> AsyncIterator[str]:
    """Alertmanager (no cluster) on a free port of 127.0.0.1 with ``config`` (written to
    ``directory``/alertmanager.yml, its data and log beside it) and ``flags``; yields
    its URL once it is ready."""
    require(ALERTMANAGER, "prometheus-alertmanager")
    config_file = directory / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(dict(config)))
    port = free_port()
    args = [
        str(ALERTMANAGER),
        f"--config.file={config_file}",
        f"--storage.path={directory / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
        *flags,
    ]
    async with process(args, directory / "alertmanager.log") as proc:
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, proc, "Alertmanager", within)
        yield url


def state_on_simulated_clock(
    clock: Callable[[], float],
    *,
    cache_seconds: float = BACKGROUND_REFRESH_SECONDS,
    stale_limit_seconds: float = 2 * BACKGROUND_REFRESH_SECONDS,
) -> CollectorFactory:
    """The ``state`` area as build_state builds it, reading ``clock`` (the simulator's)."""

    def build(context: ExporterContext) -> Sequence[MetricsCollector]:
        state = shared_cluster_state(context)
        collector = StateCollector(
            state.snapshot,
            context.config.state,
            clock=clock,
            background=True,
            cache_seconds=cache_seconds,
            stale_limit_seconds=stale_limit_seconds,
        )
        context.on_close(collector.aclose)
        return [collector, state.collector()]

    return build


def exporter_on_simulator(
    server_url: str, kubeconfig: Path, token_file: Path, *, interval_seconds: float = 1.0
) -> ExporterConfig:
    """The exporter as the end-to-end tests run it against the simulator: on a free
    loopback port, watching through ``kubeconfig``, one apiserver target scraped every
    ``interval_seconds`` with the token in ``token_file``."""
    return ExporterConfig(
        listen=ListenConfig(host="127.0.0.1", port=0),
        kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)),
        apiservers=(
            TargetConfig(
                name="apiserver-1",
                url=server_url,
                bearer_token_file=str(token_file),
                timeout_seconds=5.0,
                interval_seconds=interval_seconds,
            ),
        ),
    )


def catalog_on_simulated_clock(clock: Callable[[], float], **state_options: float) -> Catalog:
    """The default catalog with the cluster-state area on ``clock``."""
    catalog = Catalog()
    for name, factory in default_catalog():
        catalog.register(
            name, state_on_simulated_clock(clock, **state_options) if name == "state" else factory
        )
    return catalog


async def renew_lease_over_http(
    base: str, token: str, stop: asyncio.Event, *, node: str = "node-0000", pace: float = 0.05
) -> None:
    """``node``'s Lease renewed over HTTP (GET, PUT, as its kubelet would) until ``stop``:
    under a congestion the PUTs are answered 429 and counted on /metrics."""
    headers = {"Authorization": f"Bearer {token}"}
    url = base + NODE_LEASE_PATH.format(node=node)
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url, headers=headers) as response:
                    lease = await response.json() if response.status == 200 else None
                if lease is not None:
                    async with session.put(url, json=lease, headers=headers) as r:
                        await r.read()
            await asyncio.sleep(pace)  # pacing: keeps a two-core machine responsive
