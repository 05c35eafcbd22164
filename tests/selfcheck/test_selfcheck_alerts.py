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

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from loopback import poll, serve, start_alertmanager, start_prometheus
from selfcheck_support import REPO, Cluster, check, run

from kubeballast.core.config import ReceiverAuthConfig, ReceiverConfig
from kubeballast.remediations.webhook import create_app
from kubeballast.selfcheck.alerts import load_alerts
from kubeballast.selfcheck.model import Status

pytestmark = pytest.mark.timeout(180)

RULES = sorted((REPO / "alerts").glob("*.yaml"))


class RefusingIntake:
    """Nothing may reach the intake: the self-check's POST carries no credentials."""

    async def accept(self, group: Any) -> None:
        raise AssertionError(f"an unauthenticated request reached the intake: {group!r}")


def prometheus(
    tmp_path: Path, rules: list[Path], alertmanager: str | None
) -> contextlib.AbstractAsyncContextManager[str]:
    config: dict[str, Any] = {
        "global": {"evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rules],
    }
    if alertmanager is not None:
        target = alertmanager.removeprefix("http://")
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    return start_prometheus(tmp_path, config)


def alertmanager(tmp_path: Path, webhook: str) -> contextlib.AbstractAsyncContextManager[str]:
    config = {
        "route": {"receiver": "kube-ballast"},
        "receivers": [{"name": "kube-ballast", "webhook_configs": [{"url": webhook}]}],
    }
    return start_alertmanager(tmp_path, config)


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
    async with serve(create_app(config, RefusingIntake())) as url:
        yield f"{url}{config.path}"


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
        await poll(discovered, "Prometheus never listed its Alertmanager")
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
