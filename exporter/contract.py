"""The contract between the exporter's core and its collectors.

Refresh asynchronously, collect synchronously (client_python's ``collect()`` runs on
the event loop inside the scrape handler and must not do I/O). So every area of the
exporter comes as two halves:

- a :class:`Source`: ``refresh()`` does the I/O (an HTTP probe, a scrape of a
  component's /metrics, a read of Kubernetes objects) and returns an immutable
  snapshot value; the core runs it on its interval with a timeout, jittered backoff
  and Retry-After, keeps the last good snapshot, and reports the source's health in
  ``kubeballast_source_*`` metrics;
- a :class:`MetricsCollector`: ``collect()`` turns the current snapshots into metric
  families, and ``metric_specs()`` declares every family it can ever yield, which
  drives ``kube-ballast exporter --list-metrics``, docs/metrics.md and the check that
  alert rules only use metrics that exist.

Derivations (heartbeat lag, congestion verdicts, zone states) are pure functions of
snapshots, tested without I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from prometheus_client.core import Metric

from kubeballast.core.errors import TemporaryError

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

MetricType = Literal["gauge", "counter", "histogram", "summary", "info", "stateset"]


class SourceError(TemporaryError):
    """A refresh that failed; the last good snapshot stays.

    ``reason`` is a short, bounded label value for
    ``kubeballast_source_refresh_errors_total{reason}``: one of ``timeout``,
    ``connect``, ``tls``, ``auth`` (401/403), ``throttled`` (429), ``http_4xx``,
    ``http_5xx``, ``parse``, ``not_found``. ``delay`` (from TemporaryError) is the
    server's Retry-After in seconds when it sent one; the runner waits at least that.
    """

    REASONS = frozenset(
        {
            "timeout",
            "connect",
            "tls",
            "auth",
            "throttled",
            "http_4xx",
            "http_5xx",
            "parse",
            "not_found",
        }
    )

    def __init__(self, reason: str, message: str, *, delay: float | None = None) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown source error reason {reason!r}")
        super().__init__(message, delay=delay)
        self.reason = reason


@dataclass(frozen=True)
class Snapshot(Generic[T]):
    """A source's refreshed value and when it was taken (wall-clock seconds)."""

    value: T
    taken_at: float


class Source(Protocol[T_co]):
    """One thing the exporter refreshes on its own schedule."""

    @property
    def kind(self) -> str:
        """The source's kind, a bounded label value (``apiserver_health``, ...)."""
        ...

    @property
    def instance(self) -> str:
        """Which target of that kind (the configured name); with ``kind`` unique."""
        ...

    @property
    def interval_seconds(self) -> float: ...

    @property
    def timeout_seconds(self) -> float: ...

    async def refresh(self) -> T_co:
        """Do the I/O and return a new immutable snapshot value, or raise SourceError."""
        ...


class SnapshotView(Protocol[T]):
    """What a collector sees of a source: its latest good snapshot, if any."""

    @property
    def snapshot(self) -> Snapshot[T] | None: ...

    @property
    def up(self) -> bool:
        """Whether the most recent refresh succeeded."""
        ...


@dataclass(frozen=True)
class MetricSpec:
    """One metric family an exporter collector can yield."""

    name: str
    """Full name as exposed, without the ``_total`` suffix for counters (as
    prometheus-client names counter families)."""
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()


class MetricsCollector(Protocol):
    """A prometheus-client collector over snapshots, with its families declared."""

    def metric_specs(self) -> Sequence[MetricSpec]: ...

    def collect(self) -> Iterable[Metric]: ...
