"""Running sources: each on its own schedule, keeping its last good snapshot.

A :class:`~kubeballast.exporter.contract.Source` only knows how to do one refresh. This
module owns everything around it, the same way for every source, so the collectors
never see a half-done refresh and the control plane never sees a thundering herd:

- :class:`SourceRunner` refreshes one source forever: each refresh under the source's
  timeout, the last good snapshot kept when a refresh fails, jittered exponential
  backoff after failures (and never sooner than the server's ``Retry-After``), the
  interval with +-10 % jitter after successes, so that many exporters (or many sources
  in one) started together drift apart instead of probing in lockstep. It records what
  the ``kubeballast_source_*`` metrics report.
- :class:`SourceSet` is the explicit registry of runners (refusing a duplicate
  ``(kind, instance)``), starts them as supervised tasks, knows when every source has
  attempted its first refresh (readiness), and stops them.
- :class:`SelfMetricsCollector` exposes the runners' health.

The runner loop itself never dies on a refresh error: a ``SourceError`` is the expected
failure, and any other exception from ``refresh()`` is a bug in that source, logged with
its traceback and counted under the runner-only reason ``internal`` (deliberately not
one of ``SourceError.REASONS``: no source may claim it), after which the loop carries
on with backoff. Should the loop task end anyway, that is a bug in this module: the
set's supervisor logs it and :meth:`SourceSet.wait` raises, which stops the process
(STYLE.md item 10) rather than leaving it serving stale data as if all was well.

Time comes from an injectable :class:`Clock` and randomness from an injectable
``random.Random``, so tests step a runner through failures and backoff without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, NoReturn, Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kubeballast.core.logging import get_logger
from kubeballast.exporter.contract import MetricSpec, Snapshot, Source, SourceError

__all__ = [
    "INTERNAL_REASON",
    "MAX_BACKOFF_SECONDS",
    "MAX_RETRY_AFTER_SECONDS",
    "SYSTEM_CLOCK",
    "Clock",
    "SelfMetricsCollector",
    "SourceRunner",
    "SourceSet",
    "SourceTaskDiedError",
    "SystemClock",
    "backoff_delay",
    "success_delay",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

INTERNAL_REASON = "internal"
"""Error reason for an exception other than ``SourceError`` out of ``refresh()``: a bug
in the source. Only the runner uses it; ``SourceError`` refuses it."""

ERROR_REASONS: tuple[str, ...] = (*sorted(SourceError.REASONS), INTERNAL_REASON)
"""Every reason a refresh can fail with, in the order the metrics list them."""

MAX_BACKOFF_SECONDS = 300.0
"""Backoff grows to at most 10x the interval and at most this (but never below the
interval itself): a source that recovers is seen again within five minutes."""

MAX_RETRY_AFTER_SECONDS = 3600.0
"""A ``Retry-After`` longer than this is treated as this long: honouring an absurd value
(a misconfigured proxy sending a day) would silence a source for good."""

SUCCESS_JITTER = 0.1
"""After a success the next refresh comes after the interval +- 10 %."""


class Clock(Protocol):
    """Where a runner gets time and waits; tests substitute a fake that steps."""

    def monotonic(self) -> float: ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for snapshot timestamps)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()


def backoff_delay(
    interval: float,
    failures: int,
    retry_after: float | None,
    rng: random.Random,
) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1 for the first).

    The base is the interval, doubling with each failure, capped at 10x the interval and
    at :data:`MAX_BACKOFF_SECONDS` (but not below the interval); a uniform draw between
    half and all of it spreads retries out. The server's ``Retry-After`` is a floor.
    """
    cap = max(interval, min(10 * interval, MAX_BACKOFF_SECONDS))
    # min() before the power would overflow: 2**failures is unbounded.
    base = min(cap, interval * 2.0 ** min(failures - 1, 64))
    delay = base * rng.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay


def success_delay(interval: float, rng: random.Random) -> float:
    """Seconds to wait after a successful refresh: the interval +- 10 %."""
    return interval * rng.uniform(1 - SUCCESS_JITTER, 1 + SUCCESS_JITTER)


class SourceRunner(Generic[T]):
    """Refreshes one source on its schedule; a :class:`SnapshotView` for collectors.

    State is only changed by :meth:`refresh_once`, which runs on the event loop, and
    read by ``collect()`` on the same loop, so no lock is needed: a scrape sees either
    the old snapshot or the new one, never a mix.
    """

    def __init__(
        self,
        source: Source[T],
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.source = source
        self.kind = source.kind
        self.instance = source.instance
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._snapshot: Snapshot[T] | None = None
        self._up = False
        self._attempted = False
        self._last_success: float | None = None
        self._last_duration: float | None = None
        self._refreshes = 0
        self._errors: dict[str, int] = dict.fromkeys(ERROR_REASONS, 0)
        self._consecutive_failures = 0
        self._last_error: str | None = None
        self._first_attempt = asyncio.Event()
        self._log = get_logger(__name__, source_kind=self.kind, source_instance=self.instance)

    # --- SnapshotView -----------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot[T] | None:
        """The last good snapshot (kept across failed refreshes), or None before one."""
        return self._snapshot

    @property
    def up(self) -> bool:
        """Whether the most recent refresh succeeded."""
        return self._up

    # --- what the self metrics and readiness read -------------------------------------

    @property
    def attempted(self) -> bool:
        """Whether the first refresh has finished, successfully or not."""
        return self._attempted

    @property
    def last_success(self) -> float | None:
        """Wall-clock time of the last successful refresh."""
        return self._last_success

    @property
    def last_duration_seconds(self) -> float | None:
        """How long the most recent refresh took (failed ones included)."""
        return self._last_duration

    @property
    def refreshes(self) -> int:
        """Refreshes finished so far, successful or not."""
        return self._refreshes

    @property
    def errors(self) -> Mapping[str, int]:
        """Failed refreshes by reason, every reason present (zero until it happens)."""
        return dict(self._errors)

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def last_error(self) -> str | None:
        """The message of the most recent failure, None after a success."""
        return self._last_error

    async def wait_attempted(self) -> None:
        """Return once the first refresh has finished."""
        await self._first_attempt.wait()

    # --- running ----------------------------------------------------------------------

    async def refresh_once(self) -> float:
        """Refresh once, record the outcome, and return the delay until the next one."""
        interval = self.source.interval_seconds
        started = self._clock.monotonic()
        reason: str | None = None  # None: success
        message = ""
        retry_after: float | None = None
        try:
            async with asyncio.timeout(self.source.timeout_seconds):
                value = await self.source.refresh()
        except SourceError as error:
            reason, message, retry_after = error.reason, str(error), error.delay
        except TimeoutError:
            # Ours (asyncio.timeout) or a client's own timeout: the same thing to a user.
            reason, message = "timeout", f"no answer within {self.source.timeout_seconds:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # A bug in the source. Logged in full every time (bugs should be loud),
            # counted, and retried with backoff like any failure: other sources and the
            # last good snapshot stay served.
            self._log.exception("refresh of %s/%s crashed", self.kind, self.instance)
            reason, message = INTERNAL_REASON, f"internal error: {type(error).__name__}"
        finally:
            self._last_duration = max(0.0, self._clock.monotonic() - started)
            self._refreshes += 1

        first = not self._attempted
        self._attempted = True
        self._first_attempt.set()
        if reason is None:
            self._snapshot = Snapshot(value, self._clock.time())
            self._last_success = self._snapshot.taken_at
            if not self._up and not first:
                self._log.info(
                    "%s/%s is back after %d failed refresh(es)",
                    self.kind,
                    self.instance,
                    self._consecutive_failures,
                )
            self._up = True
            self._consecutive_failures = 0
            self._last_error = None
            return success_delay(interval, self._rng)

        self._errors[reason] += 1
        self._consecutive_failures += 1
        self._last_error = message
        delay = backoff_delay(interval, self._consecutive_failures, retry_after, self._rng)
        # Warn on the transition only: a target that stays down would otherwise log a
        # line per retry for as long as the outage lasts; the metrics carry the count.
        if self._up or first:
            self._log.warning(
                "refresh of %s/%s failed (%s): %s; retrying in %.1f s",
                self.kind,
                self.instance,
                reason,
                message,
                delay,
            )
        else:
            self._log.debug(
                "refresh of %s/%s failed again (%s): %s; retrying in %.1f s",
                self.kind,
                self.instance,
                reason,
                message,
                delay,
            )
        self._up = False
        return delay

    async def run(self) -> NoReturn:
        """Refresh forever (until cancelled)."""
        while True:
            delay = await self.refresh_once()
            await self._clock.sleep(delay)


class SourceTaskDiedError(RuntimeError):
    """A runner's task ended on its own: a bug in the runner, which stops the exporter."""


class SourceSet:
    """The exporter's runners, keyed by ``(kind, instance)``, started and stopped together.

    Duplicates are refused: two sources with the same key would report into the same
    metric series and one would silently overwrite the other.
    """

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._runners: dict[tuple[str, str], SourceRunner[Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Set when a runner task ends on its own; an Event binds to a loop only when
        # awaited, so the set can be built (and listed) outside one.
        self._dead = asyncio.Event()
        self._death: SourceTaskDiedError | None = None

    def add(self, source: Source[T]) -> SourceRunner[T]:
        """Register ``source``; its runner is the view collectors read. Before start()."""
        key = (source.kind, source.instance)
        if key in self._runners:
            raise ValueError(f"duplicate source kind={key[0]!r} instance={key[1]!r}")
        if self._tasks:
            raise RuntimeError("sources must be added before the set is started")
        # Each runner gets its own generator seeded from the set's, so a test that
        # seeds the set gets reproducible jitter however the runners interleave.
        runner = SourceRunner(source, clock=self._clock, rng=random.Random(self._rng.random()))
        self._runners[key] = runner
        return runner

    def __iter__(self) -> Iterator[SourceRunner[Any]]:
        return iter(self._runners.values())

    def __len__(self) -> int:
        return len(self._runners)

    @property
    def views(self) -> Mapping[tuple[str, str], SourceRunner[Any]]:
        """The runners by ``(kind, instance)``."""
        return dict(self._runners)

    @property
    def ready(self) -> bool:
        """Whether every source has attempted its first refresh."""
        return all(runner.attempted for runner in self._runners.values())

    def pending(self) -> list[tuple[str, str]]:
        """The ``(kind, instance)`` of sources whose first refresh has not finished."""
        return [key for key, runner in self._runners.items() if not runner.attempted]

    async def wait_ready(self) -> None:
        """Return once every source has attempted its first refresh."""
        for runner in list(self._runners.values()):
            await runner.wait_attempted()

    def start(self) -> None:
        """Start one supervised task per runner (on the running loop)."""
        if self._tasks:
            raise RuntimeError("the source set is already started")
        for (kind, instance), runner in self._runners.items():
            task = asyncio.create_task(runner.run(), name=f"source:{kind}/{instance}")
            task.add_done_callback(self._on_task_done)
            self._tasks.append(task)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._death is not None:
            return
        error = task.exception()
        log.error(
            "source task %s ended unexpectedly; stopping the exporter",
            task.get_name(),
            exc_info=error,
        )
        self._death = SourceTaskDiedError(f"source task {task.get_name()} ended unexpectedly")
        self._death.__cause__ = error
        self._dead.set()

    async def wait(self) -> NoReturn:
        """Wait until a runner task dies, then raise :class:`SourceTaskDiedError`.

        Runs next to the HTTP server: whichever ends first ends the exporter.
        """
        await self._dead.wait()
        assert self._death is not None
        raise self._death

    async def stop(self) -> None:
        """Cancel every runner task and wait for them to finish."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # A task that died already holds its exception, which wait() has reported.
        await asyncio.gather(*tasks, return_exceptions=True)


class SelfMetricsCollector:
    """``kubeballast_source_*``: every source's health, from its runner.

    Labelled ``kind`` and ``target`` (the source's ``instance``). Not ``instance``:
    Prometheus attaches its own ``instance`` label (the scraped address) to every
    series, and a series that brings one keeps it only as ``exported_instance``.

    The refresh duration is a gauge of the *last* refresh rather than a histogram: a
    source refreshes about as often as Prometheus scrapes, so the gauge sees nearly
    every refresh, and a histogram would multiply the series of every source by its
    bucket count for little more insight. Slow refreshes also show as timeouts.
    """

    def __init__(self, sources: Iterable[SourceRunner[Any]]) -> None:
        self._sources = sources

    def metric_specs(self) -> Sequence[MetricSpec]:
        labels = ("kind", "target")
        return (
            MetricSpec(
                "kubeballast_source_up",
                "gauge",
                "1 if the source's most recent refresh succeeded, else 0.",
                labels,
            ),
            MetricSpec(
                "kubeballast_source_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the source's last successful refresh (absent before one).",
                labels,
            ),
            MetricSpec(
                "kubeballast_source_refresh_duration_seconds",
                "gauge",
                "How long the source's most recent refresh took, failed ones included.",
                labels,
            ),
            MetricSpec(
                "kubeballast_source_refreshes",
                "counter",
                "Refreshes the source finished, successful or not.",
                labels,
            ),
            MetricSpec(
                "kubeballast_source_refresh_errors",
                "counter",
                "Failed refreshes of the source by reason (timeout, connect, tls, auth,"
                " throttled, http_4xx, http_5xx, parse, not_found; internal: a bug).",
                (*labels, "reason"),
            ),
        )

    def collect(self) -> Iterable[Metric]:
        specs = {spec.name: spec for spec in self.metric_specs()}

        def gauge(name: str) -> GaugeMetricFamily:
            spec = specs[name]
            return GaugeMetricFamily(name, spec.help, labels=list(spec.labels))

        def counter(name: str) -> CounterMetricFamily:
            spec = specs[name]
            return CounterMetricFamily(name, spec.help, labels=list(spec.labels))

        up = gauge("kubeballast_source_up")
        last_success = gauge("kubeballast_source_last_success_timestamp_seconds")
        duration = gauge("kubeballast_source_refresh_duration_seconds")
        refreshes = counter("kubeballast_source_refreshes")
        errors = counter("kubeballast_source_refresh_errors")
        for runner in self._sources:
            key = [runner.kind, runner.instance]
            up.add_metric(key, 1.0 if runner.up else 0.0)
            if runner.last_success is not None:
                last_success.add_metric(key, runner.last_success)
            if runner.last_duration_seconds is not None:
                duration.add_metric(key, runner.last_duration_seconds)
            refreshes.add_metric(key, runner.refreshes)
            # Every reason from zero, so that rate() and increase() see the first error.
            for reason, count in runner.errors.items():
                errors.add_metric([*key, reason], count)
        yield from (up, last_success, duration, refreshes, errors)
