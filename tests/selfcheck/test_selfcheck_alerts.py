"""The alert checks against the real chain: Prometheus loading the rule files,
Alertmanager, and kube-ballast's own receiver webhook.

Prometheus and Alertmanager are the Debian packages' binaries on loopback (stopped by
PID); the receiver is the real webhook application (``remediations.webhook.create_app``)
with bearer-token authentication, whose intake fails the test if anything reaches it:
the self-check's unauthenticated POST must be refused before that. Broken variants:
Prometheus loading one rule file of six and knowing no Alertmanager, a receiver that
accepts anyone, a rule pointing at a runbook that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from selfcheck_support import REPO, Cluster, check, run

from kubeballast.core.config import ReceiverAuthConfig, ReceiverConfig
from kubeballast.remediations.webhook import create_app
from kubeballast.selfcheck.alerts import load_alerts
from kubeballast.selfcheck.model import Status

pytestmark = pytest.mark.timeout(180)

PROMETHEUS = Path("/usr/bin/prometheus")
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
RULES = sorted((REPO / "alerts").glob("*.yaml"))


class RefusingIntake:
    """Nothing may reach the intake: the self-check's POST carries no credentials."""

    async def accept(self, group: Any) -> None:
        raise AssertionError(f"an unauthenticated request reached the intake: {group!r}")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def installed(binary: Path) -> bool:
    return binary.exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def process(args: list[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
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


async def wait_ready(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.returncode is None, tail(log)
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/-/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready: {tail(log)}")


@contextlib.asynccontextmanager
async def prometheus(
    tmp_path: Path, rules: list[Path], alertmanager: str | None
) -> AsyncIterator[str]:
    if not installed(PROMETHEUS):
        pytest.fail("prometheus is not installed (make test installs the Debian package)")
    config: dict[str, Any] = {
        "global": {"evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rules],
    }
    if alertmanager is not None:
        target = alertmanager.removeprefix("http://")
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "prometheus.log"
    args = [
        str(PROMETHEUS),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    async with process(args, log) as proc:
        await wait_ready(url, proc, log)
        yield url


@contextlib.asynccontextmanager
async def alertmanager(tmp_path: Path, webhook: str) -> AsyncIterator[str]:
    if not installed(ALERTMANAGER):
        pytest.fail("prometheus-alertmanager is not installed (make test installs it)")
    config = {
        "route": {"receiver": "kube-ballast"},
        "receivers": [{"name": "kube-ballast", "webhook_configs": [{"url": webhook}]}],
    }
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "alertmanager.log"
    args = [
        str(ALERTMANAGER),
        f"--config.file={tmp_path / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    async with process(args, log) as proc:
        await wait_ready(url, proc, log)
        yield url


@contextlib.asynccontextmanager
async def receiver(tmp_path: Path, *, authenticated: bool) -> AsyncIterator[str]:
    token = tmp_path / "receiver-token"
    token.write_text("selfcheck-test-token\n")
    auth = (
        ReceiverAuthConfig(bearer_token_file=str(token))
        if authenticated
        else ReceiverAuthConfig(allow_unauthenticated=True)
    )
    config = ReceiverConfig(auth=auth)
    runner = web.AppRunner(create_app(config, RefusingIntake()), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{config.path}"
    finally:
        await runner.cleanup()


async def test_selfcheck_alert_chain_alive_and_every_alert_loaded(
    quiet: Cluster, tmp_path: Path
) -> None:
    async with (
        receiver(tmp_path, authenticated=True) as webhook,
        alertmanager(tmp_path, webhook) as am,
        prometheus(tmp_path, RULES, am) as prom,
    ):
        settings = quiet.settings(prometheus_url=prom, alertmanager_url=am, receiver_url=webhook)

        async def discovered() -> bool:
            result = check(await run(settings, "alerts.chain"), "alerts.chain")
            return result.status is Status.PASS

        # Prometheus discovers its Alertmanager a moment after it is ready.
        deadline = time.monotonic() + 60
        while not await discovered():
            assert time.monotonic() < deadline, "Prometheus never listed its Alertmanager"
            await asyncio.sleep(0.2)
        report = await run(settings, "alerts")

    loaded = check(report, "alerts.loaded")
    assert loaded.status is Status.PASS, loaded
    assert (
        loaded.evidence["loaded"]
        == loaded.evidence["expected"]
        == len(load_alerts(REPO / "alerts"))
    )
    chain = check(report, "alerts.chain")
    assert chain.status is Status.PASS, chain
    assert chain.evidence["receiver_unauthenticated_post_status"] == 401
    assert chain.evidence["alertmanager_ready_status"] == 200
    assert chain.evidence["prometheus_alertmanagers"]
    assert check(report, "alerts.runbooks").status is Status.PASS


async def test_selfcheck_alerts_missing_and_chain_broken(quiet: Cluster, tmp_path: Path) -> None:
    only_apiserver = [REPO / "alerts" / "apiserver.yaml"]
    async with (
        receiver(tmp_path, authenticated=False) as webhook,
        prometheus(tmp_path, only_apiserver, None) as prom,
    ):
        settings = quiet.settings(prometheus_url=prom, receiver_url=webhook)
        report = await run(settings, "alerts")

    loaded = check(report, "alerts.loaded")
    assert loaded.status is Status.FAIL
    assert "EtcdNoSpaceAlarm" in loaded.evidence["missing"]
    assert "KubeApiserverDown" not in loaded.evidence["missing"]
    assert "not loaded" in loaded.summary
    chain = check(report, "alerts.chain")
    assert chain.status is Status.FAIL
    assert "Prometheus has no active Alertmanager" in chain.summary
    assert "unauthenticated POST with 422, not 401" in chain.summary


async def test_selfcheck_alert_chain_partly_checked_warns(quiet: Cluster, tmp_path: Path) -> None:
    async with (
        receiver(tmp_path, authenticated=True) as webhook,
        alertmanager(tmp_path, webhook) as am,
    ):
        report = await run(quiet.settings(alertmanager_url=am), "alerts.chain")
    chain = check(report, "alerts.chain")
    assert chain.status is Status.WARN
    assert "not checked: Prometheus, receiver" in chain.summary


async def test_selfcheck_alert_without_runbook_fails(quiet: Cluster, tmp_path: Path) -> None:
    rules = tmp_path / "alerts"
    rules.mkdir()
    shutil.copy(REPO / "alerts" / "network.yaml", rules / "network.yaml")
    document = {
        "groups": [
            {
                "name": "extra",
                "rules": [
                    {
                        "alert": "KubeSomethingNew",
                        "expr": "vector(1)",
                        "annotations": {"runbook_url": "docs/runbooks/KubeSomethingNew.md"},
                    }
                ],
            }
        ]
    }
    (rules / "extra.yaml").write_text(yaml.safe_dump(document))

    report = await run(quiet.settings(alerts_dir=rules), "alerts.runbooks")

    result = check(report, "alerts.runbooks")
    assert result.status is Status.FAIL
    assert "KubeSomethingNew" in result.summary
    assert result.evidence["problems"] == {
        "KubeSomethingNew": "docs/runbooks/KubeSomethingNew.md does not exist"
    }
