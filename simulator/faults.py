"""Runtime faults for the simulated apiserver: congestion, 5xx bursts, lost watches, dead or
partitioned kubelets.

Why this exists: kube-ballast's alerts and guarded remediations must be exercised against
the failures that actually take large clusters down, and those are rarely "the apiserver
is gone". They are an apiserver that answers slowly and sheds load with 429s (and, under
API Priority and Fairness, sheds it unevenly across priority levels), a burst of 5xx while
etcd elects a leader, every watch dropping at once after an apiserver restart, a zone whose
kubelets cannot reach the control plane, and kubelets that simply die. This module holds
that state and answers one question per request: delay it, fail it, or let it through.

How it fits: the HTTP layer classifies each request with the FlowSchemas and priority
levels in its store (``apf.StoredConfiguration``), builds a ``RequestClass``, calls
``FaultState.decide`` and acts on the ``Decision`` (it also records metrics from it).
Congestion is decided per priority level, so a level of the product's own is shed only by
a congestion on every level or one that names it. Open watches poll ``watch_generation``
and end their stream when it moves. The simulated kubelets ask ``kubelet_stopped`` /
``node_partitioned`` before they renew a Lease or post node status. The control API calls
the setters and serves ``describe()``. Nothing here does I/O or sleeps, so all of it is
testable with a seeded ``random.Random`` and a fake clock; it is used from the event loop
only (no locks).

Time: every duration here (``latency_seconds``, error-burst ``duration_seconds``) is in REAL
seconds, measured by the injected monotonic clock. Faults are operator actions on a running
process ("make the apiserver slow for ten seconds"), so they must not stretch or shrink
with ``SimulatorSettings.clock_factor``, which only scales simulated cluster time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import InitVar, asdict, dataclass
from typing import Any, Final

from .apf import EXEMPT, NODE_HIGH, NODE_USER_PREFIX, PRIORITY_LEVEL_NAMES
from .errors import ApiError, internal, too_many_requests

BURST_CODES: Final[frozenset[int]] = frozenset({500, 503, 504})
"""Status codes an error burst may answer with."""

LEASE_STARVATION_FACTOR: Final = 3.0
"""Default lease_reject_fraction = min(1, 3 * reject_fraction): heartbeats starve first."""

_HEARTBEAT_VERBS: Final = frozenset({"update", "patch"})


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


@dataclass(frozen=True)
class Congestion:
    """An overloaded apiserver, as API Priority and Fairness makes clients see it."""

    latency_seconds: float = 0.0
    """Delay added to every request, in real seconds (not scaled by clock_factor)."""
    reject_fraction: float = 0.0
    """Fraction of non-exempt requests answered 429 with Retry-After."""
    lease_reject_fraction: float | None = None
    """Fraction for node-high heartbeats (Lease and nodes/status updates). None: heartbeats
    starve first, min(1, 3 * reject_fraction), so any congestion above 0 rejects some."""
    retry_after_seconds: int = 1
    """Retry-After of the 429s; the real APF and max-in-flight filters send 1."""
    priority_levels: frozenset[str] = frozenset()
    """Levels the rejections apply to; empty means every non-exempt level, including levels
    clients created. Named levels are the only ones affected: a request a stored FlowSchema
    puts into a level of its own is spared unless that level is named."""
    starved_node_fraction: float = 0.0
    """Fraction of each zone's nodes (drawn once when the congestion is set) whose
    heartbeats are rejected every time, on top of ``lease_reject_fraction``: APF's
    shuffle sharding puts some kubelets' flows into the full queues for as long as the
    congestion lasts, so the same nodes starve (a random per-request draw would starve
    almost none for a whole grace period)."""
    starved_nodes: frozenset[str] = frozenset()
    """Nodes whose heartbeats are rejected every time, named (on top of the drawn ones)."""
    known_priority_levels: InitVar[frozenset[str] | None] = None
    """The level names ``priority_levels`` may use: the server passes the levels in force
    (defaults and stored ones); None means the default levels."""

    def __post_init__(self, known_priority_levels: frozenset[str] | None) -> None:
        if not self.latency_seconds >= 0.0 or math.isinf(self.latency_seconds):
            raise ValueError(
                f"congestion.latency_seconds must be a finite number >= 0, "
                f"got {self.latency_seconds!r}"
            )
        _check_fraction("congestion.reject_fraction", self.reject_fraction)
        if self.lease_reject_fraction is not None:
            _check_fraction("congestion.lease_reject_fraction", self.lease_reject_fraction)
        _check_fraction("congestion.starved_node_fraction", self.starved_node_fraction)
        if self.retry_after_seconds < 1:
            raise ValueError(
                f"congestion.retry_after_seconds must be >= 1, got {self.retry_after_seconds!r}"
            )
        known = PRIORITY_LEVEL_NAMES if known_priority_levels is None else known_priority_levels
        unknown = self.priority_levels - known
        if unknown:
            raise ValueError(
                f"congestion.priority_levels names unknown levels {sorted(unknown)}; "
                f"known: {sorted(known)}"
            )
        if EXEMPT in self.priority_levels:
            # Accepting it would silently do nothing: APF never rejects exempt requests.
            raise ValueError("congestion.priority_levels cannot include 'exempt'")

    @property
    def effective_lease_reject_fraction(self) -> float:
        if self.lease_reject_fraction is not None:
            return self.lease_reject_fraction
        return min(1.0, max(self.reject_fraction * LEASE_STARVATION_FACTOR, self.reject_fraction))

    def applies_to(self, priority_level: str) -> bool:
        if priority_level == EXEMPT:
            return False
        return not self.priority_levels or priority_level in self.priority_levels

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["priority_levels"] = sorted(self.priority_levels)
        out["starved_nodes"] = sorted(self.starved_nodes)
        out["effective_lease_reject_fraction"] = self.effective_lease_reject_fraction
        return out


@dataclass(frozen=True)
class ErrorBurst:
    """A window of 5xx answers, e.g. etcd losing its leader."""

    code: int
    fraction: float
    ends_at: float  # injected-clock seconds


@dataclass(frozen=True)
class RequestClass:
    """What ``decide`` needs to know about one incoming request."""

    verb: str
    """Request-info verb: get, list, watch, create, update, patch, delete, ..."""
    api_group: str
    resource: str
    subresource: str
    namespace: str
    username: str
    groups: tuple[str, ...]
    priority_level: str
    flow_schema: str
    is_watch: bool
    is_long_running: bool
    """Watches, and exec/attach/log/portforward/proxy; the latter skip APF altogether."""

    @property
    def node_name(self) -> str | None:
        """The node of a kubelet's request (user system:node:<name>), else None."""
        if self.username.startswith(NODE_USER_PREFIX):
            return self.username[len(NODE_USER_PREFIX) :]
        return None

    @property
    def is_heartbeat(self) -> bool:
        """A node-high Lease renewal or node status update: what keeps a node Ready."""
        if self.priority_level != NODE_HIGH or self.verb not in _HEARTBEAT_VERBS:
            return False
        if self.api_group == "coordination.k8s.io" and self.resource == "leases":
            return True
        return self.api_group == "" and self.resource == "nodes" and self.subresource == "status"


@dataclass(frozen=True)
class Decision:
    """What to do with one request. With no ``error``, serve it after ``delay_seconds``."""

    delay_seconds: float = 0.0
    """Real seconds to wait before answering (or before serving)."""
    error: ApiError | None = None
    """The failure to answer with, if any (429 carries ``retry_after_seconds``)."""
    apf_rejected_reason: str | None = None
    """For a 429, the apiserver_flowcontrol_rejected_requests_total reason: "time-out" when
    the request waited in its queue first (latency > 0), else "queue-full"."""
    disconnect: bool = False
    """The client cannot reach the apiserver (partitioned or dead kubelet): the HTTP layer
    should drop the connection without an answer; ``error`` is a 503 fallback."""

    @property
    def passed(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "delay_seconds": self.delay_seconds,
            "code": None if self.error is None else self.error.code,
            "reason": None if self.error is None else self.error.reason,
            "apf_rejected_reason": self.apf_rejected_reason,
            "disconnect": self.disconnect,
        }


PASS: Final = Decision()


@dataclass
class _Stats:
    decided: int = 0
    rejected_429: int = 0
    errors_5xx: int = 0
    unreachable: int = 0


class FaultState:
    """The faults in force on one simulated apiserver. Changed by the control API."""

    def __init__(self, rng: random.Random, clock: Callable[[], float]) -> None:
        """``clock`` returns monotonic real seconds (time.monotonic in production)."""
        self.rng = rng
        self.clock = clock
        self._congestion: Congestion | None = None
        self._burst: ErrorBurst | None = None
        self._watch_generation = 0
        self._stopped: frozenset[str] = frozenset()
        self._partitioned: frozenset[str] = frozenset()
        self._starved: frozenset[str] = frozenset()
        self._zone_of: dict[str, str] = {}
        self._stats = _Stats()

    # --- topology ----------------------------------------------------------------------

    def set_topology(self, nodes_by_zone: Mapping[str, Sequence[str]]) -> None:
        """Which node is in which zone; the scenario calls this once it built the nodes."""
        self._zone_of = {node: zone for zone, nodes in nodes_by_zone.items() for node in nodes}

    @property
    def zones(self) -> frozenset[str]:
        return frozenset(self._zone_of.values())

    # --- setters -----------------------------------------------------------------------

    def set_congestion(self, c: Congestion | None) -> None:
        self._congestion = c
        self._starved = frozenset() if c is None else c.starved_nodes
        if c is not None and c.starved_node_fraction > 0 and self._zone_of:
            by_zone: dict[str, list[str]] = {}
            for node, zone in self._zone_of.items():
                by_zone.setdefault(zone, []).append(node)
            drawn = pick_nodes(by_zone, by_zone, c.starved_node_fraction, self.rng)
            self._starved = self._starved | drawn

    @property
    def starved_nodes(self) -> frozenset[str]:
        """The nodes whose heartbeats the congestion rejects every time."""
        return self._starved

    @property
    def congestion(self) -> Congestion | None:
        return self._congestion

    def set_error_burst(
        self, code: int = 500, fraction: float = 1.0, duration_seconds: float = 10.0
    ) -> None:
        """Answer ``fraction`` of all requests with ``code`` for ``duration_seconds`` (real
        seconds by the injected clock); the burst then ends on its own."""
        if code not in BURST_CODES:
            raise ValueError(f"error_burst.code must be one of {sorted(BURST_CODES)}, got {code}")
        _check_fraction("error_burst.fraction", fraction)
        if not duration_seconds > 0 or math.isinf(duration_seconds):
            raise ValueError(
                f"error_burst.duration_seconds must be a finite number > 0, "
                f"got {duration_seconds!r}"
            )
        self._burst = ErrorBurst(code, fraction, self.clock() + duration_seconds)

    def disconnect_watches(self) -> int:
        """End every open watch (as an apiserver restart does); returns the new generation.

        Watches remember the generation they started in and end their stream when it
        changes; clients then re-watch from their last resourceVersion, or re-list.
        """
        self._watch_generation += 1
        return self._watch_generation

    @property
    def watch_generation(self) -> int:
        return self._watch_generation

    def set_kubelets_stopped(self, nodes: frozenset[str]) -> None:
        """Kubelets that are dead: they renew no Lease and post no status."""
        self._stopped = frozenset(nodes)

    def kubelet_stopped(self, node: str) -> bool:
        return node in self._stopped

    def set_partition(self, zones: frozenset[str]) -> None:
        """Cut the kubelets of these zones off the apiserver (the nodes keep running)."""
        if zones and not self._zone_of:
            # Without a topology no node would be cut off: refuse rather than do nothing.
            raise ValueError("partition needs the node topology: call set_topology first")
        if zones:
            unknown = zones - self.zones
            if unknown:
                raise ValueError(
                    f"partition.zones names unknown zones {sorted(unknown)}; "
                    f"known: {sorted(self.zones)}"
                )
        self._partitioned = frozenset(zones)

    @property
    def partitioned_zones(self) -> frozenset[str]:
        return self._partitioned

    def node_partitioned(self, node: str) -> bool:
        zone = self._zone_of.get(node)
        return zone is not None and zone in self._partitioned

    def kubelet_can_reach_apiserver(self, node: str) -> bool:
        """What a simulated kubelet checks before each Lease renewal or status update."""
        return not (self.kubelet_stopped(node) or self.node_partitioned(node))

    def clear(self) -> None:
        """Remove every fault. The watch generation stays: it only ever moves forward, so
        a watch opened before the clear cannot mistake a reset for "nothing happened"."""
        self._congestion = None
        self._starved = frozenset()
        self._burst = None
        self._stopped = frozenset()
        self._partitioned = frozenset()

    # --- the per-request decision ------------------------------------------------------

    def decide(self, req: RequestClass) -> Decision:
        """Delay, fail or pass one incoming request. Deterministic for a given rng seed
        and sequence of calls: the rng is drawn only when a fraction lies strictly
        between 0 and 1."""
        self._stats.decided += 1
        node = req.node_name
        if node is not None and not self.kubelet_can_reach_apiserver(node):
            # The request would never arrive. Checked first: nothing else applies to it.
            self._stats.unreachable += 1
            return Decision(
                error=ApiError(
                    503,
                    "ServiceUnavailable",
                    f"node {node!r} cannot reach the apiserver (simulated fault)",
                ),
                disconnect=True,
            )
        congestion = self._congestion
        congested = (
            congestion is not None
            and self._subject_to_apf(req)
            and congestion.applies_to(req.priority_level)
        )
        # The added latency is time waiting in an APF queue: exempt requests (and the
        # priority levels the congestion spares) are never queued.
        delay = congestion.latency_seconds if congestion is not None and congested else 0.0

        # A burst hits everyone, exempt included: it models etcd or the apiserver failing,
        # not load shedding.
        burst = self._active_burst()
        if burst is not None and self._draw(burst.fraction):
            self._stats.errors_5xx += 1
            return Decision(delay_seconds=delay, error=_burst_error(burst.code))

        if congestion is not None and congested:
            fraction = (
                congestion.effective_lease_reject_fraction
                if req.is_heartbeat
                else congestion.reject_fraction
            )
            starved = req.is_heartbeat and node is not None and node in self._starved
            if starved or self._draw(fraction):
                self._stats.rejected_429 += 1
                return Decision(
                    delay_seconds=delay,
                    error=too_many_requests(congestion.retry_after_seconds),
                    apf_rejected_reason="time-out" if delay > 0 else "queue-full",
                )
        if delay == 0.0:
            return PASS
        return Decision(delay_seconds=delay)

    @staticmethod
    def _subject_to_apf(req: RequestClass) -> bool:
        # filters/priority-and-fairness.go: non-watch long-running requests (exec, logs,
        # proxy) bypass APF entirely; a watch's initial request goes through it, and once
        # established it is never rejected again (decide is only called on arrival).
        if req.is_long_running and not req.is_watch:
            return False
        return req.priority_level != EXEMPT

    def _active_burst(self) -> ErrorBurst | None:
        burst = self._burst
        if burst is not None and self.clock() >= burst.ends_at:
            self._burst = burst = None
        return burst

    def _draw(self, fraction: float) -> bool:
        if fraction <= 0.0:
            return False
        if fraction >= 1.0:
            return True
        return self.rng.random() < fraction

    # --- the control API's view --------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Everything in force, JSON-serialisable, for the control API."""
        burst = self._active_burst()
        return {
            "congestion": None if self._congestion is None else self._congestion.to_dict(),
            "error_burst": None
            if burst is None
            else {
                "code": burst.code,
                "fraction": burst.fraction,
                "remaining_seconds": max(0.0, burst.ends_at - self.clock()),
            },
            "watch_generation": self._watch_generation,
            "kubelets_stopped": sorted(self._stopped),
            "partitioned_zones": sorted(self._partitioned),
            "stats": asdict(self._stats),
        }


def _burst_error(code: int) -> ApiError:
    # Bodies as the apiserver writes them: 500 from an internal error, 503 from an
    # unavailable storage backend, 504 from the timeout filter
    # (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go,
    # apimachinery/pkg/api/errors NewServiceUnavailable / NewTimeoutError).
    if code == 503:
        return ApiError(
            503, "ServiceUnavailable", "the server is currently unable to handle the request"
        )
    if code == 504:
        return ApiError(
            504,
            "Timeout",
            "Timeout: request did not complete within requested timeout - "
            "context deadline exceeded",
        )
    return internal("etcdserver: leader changed")


def pick_nodes(
    nodes_by_zone: Mapping[str, Sequence[str]],
    zones: Iterable[str],
    fraction: float,
    rng: random.Random,
) -> frozenset[str]:
    """A deterministic ``fraction`` of the nodes of each chosen zone.

    Each zone contributes round-half-up(fraction * its size) nodes, so a fraction of 1
    takes whole zones and 0.5 of a 5-node zone takes 3.
    Zones and nodes are sorted before drawing, so the result depends only on the inputs
    and the rng state, not on dict or set ordering.
    """
    _check_fraction("fraction", fraction)
    chosen: set[str] = set()
    for zone in sorted(set(zones)):
        if zone not in nodes_by_zone:
            raise ValueError(f"unknown zone {zone!r}; known: {sorted(nodes_by_zone)}")
        nodes = sorted(nodes_by_zone[zone])
        count = min(len(nodes), math.floor(fraction * len(nodes) + 0.5))
        chosen.update(rng.sample(nodes, count))
    return frozenset(chosen)
