"""run_receiver with an engine: started before serving, its endpoints behind the
webhook's authentication, stopped after the server, and a dying engine ends the
receiver. The engine here is a fake at our own boundary (the ``Engine`` protocol of
remediations/server.py); the real one is tested in test_engine_*.py."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from webhook_support import JSON, RecordingIntake, bearer, fixture_payload

from kubeballast.core.config import ReceiverConfig
from kubeballast.remediations.contract import AlertGroup
from kubeballast.remediations.server import Engine, run_receiver


class FakeEngine:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.died: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.groups: list[AlertGroup] = []

    async def accept(self, group: AlertGroup) -> None:
        self.events.append("accept")
        self.groups.append(group)

    async def start(self) -> None:
        self.events.append("start")

    async def wait(self) -> None:
        await self.died

    async def stop(self) -> None:
        self.events.append("stop")

    async def records_handler(self, request: web.Request) -> web.Response:
        self.events.append("records")
        return web.json_response({"records": [], "leader": True})

    async def approval_handler(self, request: web.Request) -> web.Response:
        self.events.append(f"approve {request.match_info['id']}")
        return web.json_response({"approved": request.match_info["id"]})


async def wait_serving(url: str, task: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            if task.done():
                task.result()
                pytest.fail("the receiver stopped")
            try:
                async with session.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectorError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.02)


async def test_the_fake_matches_the_engine_protocol() -> None:
    assert isinstance(FakeEngine(), Engine)
    assert not isinstance(RecordingIntake(), Engine)


async def test_an_engine_is_started_served_behind_auth_and_stopped(
    receiver_config: ReceiverConfig, free_port: int
) -> None:
    engine = FakeEngine()
    config = replace(receiver_config, listen=replace(receiver_config.listen, port=free_port))
    task = asyncio.create_task(run_receiver(config, build_intake=lambda c, registry: engine))
    url = f"http://127.0.0.1:{free_port}"
    await wait_serving(url, task)
    assert engine.events == ["start"]
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/records") as response:
            assert response.status == 401
        async with session.post(url + "/approvals/abc") as response:
            assert response.status == 401
        async with session.get(url + "/records", headers=bearer()) as response:
            assert response.status == 200
        async with session.post(url + "/approvals/abc", headers=bearer()) as response:
            assert (response.status, await response.json()) == (200, {"approved": "abc"})
        body = fixture_payload("firing")
        async with session.post(
            url + "/webhook/alertmanager", json=body, headers={**bearer(), **JSON}
        ) as response:
            assert response.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.events == ["start", "records", "approve abc", "accept", "stop"]


async def test_a_dying_engine_ends_the_receiver(
    receiver_config: ReceiverConfig, free_port: int, tmp_path: Path
) -> None:
    engine = FakeEngine()
    config = replace(receiver_config, listen=replace(receiver_config.listen, port=free_port))
    task = asyncio.create_task(run_receiver(config, build_intake=lambda c, registry: engine))
    await wait_serving(f"http://127.0.0.1:{free_port}", task)
    engine.died.set_exception(RuntimeError("leader election task died"))
    with pytest.raises(RuntimeError, match="leader election task died"):
        await asyncio.wait_for(task, 30)
    assert engine.events[-1] == "stop"
