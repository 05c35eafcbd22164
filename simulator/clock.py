"""Simulated time that can run faster than real time.

Scenarios are measured in minutes of cluster time (a 50 s grace period, a 300 s
toleration); with a clock factor of 20 they finish in seconds of real time. Everything
in the simulator that stamps or waits uses this clock, never the wall clock directly,
so object timestamps (lease renewTime, condition transition times) and controller
periods stay consistent with each other at any speed.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable


class SimClock:
    """Simulated UTC time: ``start`` plus real elapsed time multiplied by ``factor``."""

    def __init__(
        self,
        factor: float = 1.0,
        start: datetime.datetime | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if factor <= 0:
            raise ValueError("clock factor must be positive")
        self.factor = factor
        self._monotonic = monotonic
        self._real_start = monotonic()
        self._sim_start = (start or datetime.datetime.now(datetime.UTC)).timestamp()
        self._offset = 0.0

    def time(self) -> float:
        """Simulated seconds since the epoch."""
        return self._sim_start + self._offset + (self._monotonic() - self._real_start) * self.factor

    def now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.time(), datetime.UTC)

    def real_seconds(self, sim_seconds: float) -> float:
        """How long ``sim_seconds`` of simulated time take in real time."""
        return sim_seconds / self.factor

    def advance(self, sim_seconds: float) -> None:
        """Jump simulated time forward (tests and the control API); never backwards."""
        if sim_seconds < 0:
            raise ValueError("time does not go backwards")
        self._offset += sim_seconds

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, self.real_seconds(sim_seconds)))
