"""Running a long-lived component as a process: until it ends or a signal stops it.

Kubernetes stops a pod with SIGTERM and a person at a terminal with SIGINT; both must
lead to the same orderly shutdown (finish in-flight requests, close connections, write
what has to be written) and exit status 0. Components are therefore plain coroutines
that run until cancelled and clean up in ``finally``; this module turns a signal into
that cancellation, in one place for every command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

__all__ = ["run_until_signalled"]

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_until_signalled(main: Coroutine[Any, Any, None]) -> int:
    """Run ``main`` in a new event loop; SIGTERM or SIGINT cancels it. Returns 0.

    An exception from ``main`` propagates: a component that dies on its own is a
    failure, not a shutdown.
    """
    return asyncio.run(_supervise(main))


async def _supervise(main: Coroutine[Any, Any, None]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        stop.set()

    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    main_task = asyncio.create_task(main, name="main")
    stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({main_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if main_task.done():
            main_task.result()  # re-raises what killed it
            return 0
        log.info("received %s, shutting down", received[0].name)
        main_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main_task
        return 0
    finally:
        stop_task.cancel()
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
