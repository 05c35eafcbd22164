"""The alert path in front of the eviction guard: real Prometheus with the shipped rules,
real Alertmanager with the shipped routing, and the real receiver application (webhook,
bearer authentication) in front of the engine of guard_support's stack.

Used by test_guard_e2e.py with short intervals, and by bench/eviction_guard_latency.py
with production-like ones (15 s scrape and evaluation, ``for: 1m``, the shipped
``group_wait``). Only what a test must change is changed: the receiver's URL and token
file, the scrape and evaluation intervals, KubeNodeHeartbeatStorm's ``for:`` (when
asked), and Alertmanager's ``group_wait`` (when asked).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from kubeballast.core.config import ReceiverAuthConfig, ReceiverConfig
from kubeballast.remediations.engine import Engine
from kubeballast.remediations.webhook import create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((REPO_ROOT / "alerts").glob("*.yaml"))
ALERTMANAGER_EXAMPLE = REPO_ROOT / "alerts" / "alertmanager" / "alertmanager.yml"
PROMETHEUS = Path("/usr/bin/prometheus")
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
CLUSTER = "guard-e2e"


class MissingBinaryError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _require(binary: Path, package: str) -> None:
    if not binary.exists():
        raise MissingBinaryError(f"{binary} is missing: install {package} (`make test`)")


def storm_for(text: str, duration: str) -> str:
    """KubeNodeHeartbeatStorm's ``for:`` set to ``duration``; nothing else changes."""
    pattern = re.compile(r"(- alert: KubeNodeHeartbeatStorm\n(?:(?!\s*- alert:).*\n)*?\s+for: )\S+")
    shortened, count = pattern.subn(rf"\g<1>{duration}", text)
    assert count <= 1
    return shortened


@contextlib.asynccontextmanager
async def _process(args: list[str], log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


async def _ready(url: str, process: asyncio.subprocess.Process, what: str, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    async with aiohttp.ClientSession() as session:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{url}/-/ready") as response:
                    if response.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"{what} did not become ready within {within} s")
            await asyncio.sleep(0.2)  # pacing between polls


@dataclass(frozen=True)
class Intervals:
    scrape: str = "1s"
    evaluation: str = "1s"
    storm_for: str | None = "5s"
    """None keeps the shipped ``for: 1m``."""
    group_wait: str | None = "1s"
    """None keeps the shipped group_wait."""


@dataclass
class Pipeline:
    prometheus: str
    alertmanager: str
    receiver: str


@contextlib.asynccontextmanager
async def pipeline(
    engine: Engine, config: ReceiverConfig, exporter_url: str, tmp: Path, intervals: Intervals
) -> AsyncIterator[Pipeline]:
    _require(PROMETHEUS, "prometheus")
    _require(ALERTMANAGER, "prometheus-alertmanager")
    token_file = tmp / "receiver-token"
    token_file.write_text("guard-e2e-token\n")
    receiver_config = ReceiverConfig(
        dry_run=config.dry_run,
        remediations=config.remediations,
        auth=ReceiverAuthConfig(bearer_token_file=str(token_file)),
    )
    app = create_app(receiver_config, engine)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        am_config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
        if intervals.group_wait is not None:
            am_config["route"]["group_wait"] = intervals.group_wait
            for route in am_config["route"]["routes"]:
                route.pop("group_wait", None)
        for entry in am_config["receivers"]:
            if entry["name"] == "kube-ballast":
                (hook,) = entry["webhook_configs"]
                hook["url"] = f"{receiver}{receiver_config.path}"
                hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
            else:
                for key in [key for key in entry if key.endswith("_configs")]:
                    del entry[key]
        am_file = tmp / "alertmanager.yml"
        am_file.write_text(yaml.safe_dump(am_config))
        am_port = _free_port()
        am_args = [
            str(ALERTMANAGER),
            f"--config.file={am_file}",
            f"--storage.path={tmp / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        rules = tmp / "rules"
        rules.mkdir()
        rule_files = []
        for rule_file in RULES:
            text = rule_file.read_text()
            if intervals.storm_for is not None:
                text = storm_for(text, intervals.storm_for)
            (rules / rule_file.name).write_text(text)
            rule_files.append(str(rules / rule_file.name))
        prom_file = tmp / "prometheus.yml"
        prom_file.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": intervals.scrape,
                        "scrape_timeout": intervals.scrape,
                        "evaluation_interval": intervals.evaluation,
                        "external_labels": {"cluster": CLUSTER},
                    },
                    "rule_files": rule_files,
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
                        ]
                    },
                    "scrape_configs": [
                        {
                            "job_name": "kube-ballast-exporter",
                            "static_configs": [{"targets": [exporter_url.removeprefix("http://")]}],
                        }
                    ],
                }
            )
        )
        prom_port = _free_port()
        prom_args = [
            str(PROMETHEUS),
            f"--config.file={prom_file}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ]
        async with (
            _process(am_args, tmp / "alertmanager.log") as am,
            _process(prom_args, tmp / "prometheus.log") as prom,
        ):
            am_url = f"http://127.0.0.1:{am_port}"
            prom_url = f"http://127.0.0.1:{prom_port}"
            await _ready(am_url, am, "Alertmanager", 60)
            await _ready(prom_url, prom, "Prometheus", 60)
            yield Pipeline(prom_url, am_url, receiver)
    finally:
        await runner.cleanup()
