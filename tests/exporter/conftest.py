"""Fakes at the exporter's own boundaries, and a tiny local HTTP server.

- :class:`StepClock` is the runner's ``Clock``: time moves only when a test (or a fake
  source, to simulate a slow refresh) advances it, and ``sleep()`` parks the runner
  until the test releases it, so a test steps a runner through failures and backoff
  without waiting.
- :class:`ScriptedSource` is a ``Source`` that plays a script of outcomes (a value or an
  exception) and fails the test loudly when refreshed more often than scripted.
- ``local_server`` serves an aiohttp application on 127.0.0.1 with a free port, for the
  HTTP client's tests (our side of the wire is what is under test; the server is a fake
  target). ``eventually`` polls a condition with a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web


class StepClock:
    """A clock that only moves when told; ``sleep`` blocks until :meth:`release`."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall_offset
        self.sleeps: asyncio.Queue[float] = asyncio.Queue()
        self._wake = asyncio.Event()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.wall_offset

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self._wake.clear()
        await self.sleeps.put(seconds)
        await self._wake.wait()
        self.now += seconds

    async def next_sleep(self, within: float = 10.0) -> float:
        """The delay the runner asked to sleep next (waits for it to ask)."""
        async with asyncio.timeout(within):
            return await self.sleeps.get()

    def release(self) -> None:
        """Let the sleeping runner continue (its sleep's time passes at once)."""
        self._wake.set()


class ScriptedSource:
    """A source whose refreshes play ``script``: values are returned, exceptions raised.

    A callable entry is awaited instead (to block, or to advance a clock). Refreshing
    past the end of the script fails the test.
    """

    def __init__(
        self,
        script: list[Any],
        *,
        kind: str = "fake",
        instance: str = "one",
        interval: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        self.script = list(script)
        self.kind = kind
        self.instance = instance
        self.interval_seconds = interval
        self.timeout_seconds = timeout
        self.calls = 0

    async def refresh(self) -> Any:
        self.calls += 1
        if not self.script:
            pytest.fail(f"{self.kind}/{self.instance} refreshed more often than scripted")
        step = self.script.pop(0)
        if callable(step):
            step = await step()
        if isinstance(step, BaseException):
            raise step
        return step


@pytest.fixture
def step_clock() -> StepClock:
    return StepClock()


@pytest.fixture
def scripted() -> type[ScriptedSource]:
    """The ``ScriptedSource`` class (tests build sources through this fixture rather
    than importing conftest, which pytest does not make importable reliably)."""
    return ScriptedSource


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port>; yields the base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def local_server() -> Callable[[web.Application], Any]:
    """``async with local_server(app) as url``: a fake target on loopback."""
    return serve_app


Eventually = Callable[..., Awaitable[None]]


async def _eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 20.0,
    interval: float = 0.02,
) -> None:
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(interval)


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(check)``: poll ``check`` (sync or async) until true, failing after
    a generous deadline (the tests must hold on a loaded two-core machine)."""
    return _eventually
