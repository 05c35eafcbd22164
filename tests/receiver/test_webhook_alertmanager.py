"""The real Alertmanager delivers to the receiver: with the right credentials a firing
alert reaches the intake within a deadline; with a wrong token it is refused (401)
and nothing reaches the intake.

The receiver runs in-process through ``run_receiver`` (the command's own entry point)
on a free loopback port, with a recording intake; Alertmanager runs from the installed
binary (am_harness.py), configured as an operator would (``http_config.authorization``
with a ``credentials_file``, or ``basic_auth`` with a ``password_file``), with a
group_wait of 0 s. The test posts alerts to Alertmanager's API as Prometheus does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from am_harness import Alertmanager, realistic_alert, require_binary
from prometheus_client import CollectorRegistry
from webhook_support import TOKEN, USER, RecordingIntake

from kubeballast.core.config import ListenConfig, ReceiverAuthConfig, ReceiverConfig
from kubeballast.remediations.server import run_receiver

DEADLINE_SECONDS = 60.0
"""Alertmanager delivers within a second with group_wait 0s on an idle machine; a
loaded two-core runner gets much longer before the test gives up."""


@dataclass
class Receiver:
    url: str
    intake: RecordingIntake
    registry: CollectorRegistry

    def count(self, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "kubeballast_receiver_webhook_requests_total", {"outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
async def receiver(
    free_port: int, token_file: Path, password_file: Path
) -> AsyncIterator[Receiver]:
    require_binary()  # fail before anything starts if Alertmanager is missing
    config = ReceiverConfig(
        listen=ListenConfig(host="127.0.0.1", port=free_port),
        auth=ReceiverAuthConfig(
            bearer_token_file=str(token_file),
            basic_auth_username=USER,
            basic_auth_password_file=str(password_file),
        ),
    )
    intake = RecordingIntake()
    registry = CollectorRegistry()
    task = asyncio.create_task(
        run_receiver(config, build_intake=lambda config, registry: intake, registry=registry)
    )
    url = f"http://127.0.0.1:{free_port}"
    deadline = time.monotonic() + DEADLINE_SECONDS
    async with aiohttp.ClientSession() as session:
        while True:
            if task.done():
                task.result()
                pytest.fail("the receiver stopped")
            try:
                async with session.get(url + "/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectorError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.02)
    try:
        yield Receiver(url, intake, registry)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def start_alertmanager(
    directory: Path, receiver: Receiver, **options: object
) -> Alertmanager:
    manager = Alertmanager(directory, f"{receiver.url}/webhook/alertmanager", **options)  # type: ignore[arg-type]
    await asyncio.to_thread(manager.start)
    return manager


async def until(condition: object, what: str, manager: Alertmanager) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what} within {DEADLINE_SECONDS:g} s; alertmanager log:\n{manager.log_tail()}"
            )
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("scheme", ["bearer", "basic"])
async def test_alertmanager_delivers_a_firing_alert(
    tmp_path: Path, receiver: Receiver, token_file: Path, password_file: Path, scheme: str
) -> None:
    options: dict[str, object] = (
        {"credentials_file": token_file}
        if scheme == "bearer"
        else {"basic_auth": (USER, password_file)}
    )
    manager = await start_alertmanager(tmp_path / "am", receiver, **options)
    try:
        alert = realistic_alert(7, alertname="KubeBallastEtcdNoSpace")
        started = time.monotonic()
        await asyncio.to_thread(manager.post_alerts, [alert])
        await until(lambda: receiver.intake.groups, "the group reached the intake", manager)
        elapsed = time.monotonic() - started
    finally:
        await asyncio.to_thread(manager.stop)
    [group] = receiver.intake.groups[:1]
    assert group.status == "firing"
    assert group.receiver == "kube-ballast"
    assert group.group_labels == {"alertname": "KubeBallastEtcdNoSpace"}
    assert group.external_url.startswith("http")
    [received] = group.alerts
    assert received.labels == alert["labels"]
    assert received.annotations == alert["annotations"]
    assert received.ends_at is None
    assert len(received.fingerprint) == 16
    assert receiver.count("unauthorized") == 0
    print(f"delivered in {elapsed:.2f} s")  # shown with -s; the deadline is the assertion


async def test_alertmanager_with_a_wrong_token_is_refused_and_nothing_is_recorded(
    tmp_path: Path, receiver: Receiver
) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text(TOKEN[::-1] + "\n")
    manager = await start_alertmanager(tmp_path / "am", receiver, credentials_file=wrong)
    try:
        await asyncio.to_thread(manager.post_alerts, [realistic_alert(1)])
        await until(lambda: receiver.count("unauthorized") >= 1, "a refused delivery", manager)
        await until(lambda: "401" in manager.log_tail(200), "alertmanager logging the 401", manager)
    finally:
        await asyncio.to_thread(manager.stop)
    assert receiver.intake.started == []
    assert receiver.count("accepted") == 0
    assert TOKEN[::-1] not in manager.log_tail(500)  # Alertmanager does not log it either
