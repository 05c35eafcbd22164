"""The node-lifecycle and taint-eviction controllers of kube-controller-manager, simulated.

Why this exists: kube-ballast's central failure story (the seed's first self-check item)
is the control plane turning its own congestion into an outage: kubelet heartbeats
starve, the node-lifecycle controller marks the nodes Unknown, taints them NoExecute at
its per-zone rate, and the taint-eviction controller deletes every pod once its
tolerationSeconds run out, although the containers were fine. The product's alerts watch
that sequence (zone states, taints, evictions) and its guarded remediation stops it with
a ValidatingAdmissionPolicy that denies the controller's pod deletions. Both only mean
something if the simulator's controllers do what the real ones do, at the real rates,
through the same admission path, as the same user.

How it fits: :class:`NodeLifecycleController` reads nodes, Leases and pods from the
:class:`~.store.Store` (its informer caches) and writes through the
:class:`~.registry.Registry` as ``system:serviceaccount:kube-system:node-controller``, so
every ValidatingAdmissionPolicy applies to it. It owns a :class:`TaintEvictionController`
that uses the same identity (kube-controller-manager builds the taint-eviction
controller's client with ``ClientOrDie("node-controller")``,
cmd/kube-controller-manager/app/core.go). One task drives both (:meth:`run`); tests
drive them with :meth:`tick` on an advanced :class:`~.clock.SimClock`. All timing and the
token buckets are on simulated time.

What it follows (kubernetes/kubernetes):

- pkg/controller/nodelifecycle/node_lifecycle_controller.go: ``monitorNodeHealth``
  (every --node-monitor-period), ``tryUpdateNodeHealth`` (probe timestamps refreshed
  when the Ready heartbeat or the Lease renewTime moves; after the grace period Ready,
  MemoryPressure, DiskPressure and PIDPressure become Unknown/NodeStatusUnknown),
  ``processTaintBaseEviction`` (queue a node for its NoExecute taint, swap
  not-ready/unreachable at once, untaint when Ready), ``doNoScheduleTaintingPass``
  (condition taints with effect NoSchedule, right after a node changes),
  ``doNoExecuteTaintingPass`` (per-zone RateLimitedTimedQueue, token bucket of burst 1),
  ``handleDisruption``, ``ComputeZoneState``, ``setLimiterInZone``,
  ``ReducedQPSFunc``/``HealthyQPSFunc``, ``markNodeAsReachable``; MarkPodsNotReady
  (pkg/controller/util/node/controller_utils.go) on a Ready -> not-Ready transition;
- pkg/controller/nodelifecycle/scheduler/rate_limited_queue.go: ``Try`` takes a token
  before looking at the head; ``UniqueQueue`` remembers processed nodes until
  ``Remove``; ``SwapLimiter`` drains the new bucket if the old one was empty;
- pkg/controller/tainteviction/taint_eviction.go and timed_workers.go:
  ``processPodOnNode`` (first matching toleration per taint, ``getMinTolerationTime``:
  no match -> delete now, no tolerationSeconds -> never, <= 0 -> now; an existing
  schedule is kept), ``addConditionAndDeletePod`` (DisruptionTarget condition, then
  DELETE with default options), 5 attempts, then the work item is dropped: a DENIED
  deletion is retried only when the node's NoExecute taints or the pod's tolerations
  change, exactly as in the real controller (the informers' resync does not count,
  ``PodUpdated``/``NodeUpdated`` filter it out).

Known differences: informer events are emulated by comparing resourceVersions on each
pass (node changes by other writers are seen within one monitor period, pods on tainted
nodes within :data:`TAINT_SCAN_PERIOD`); a taint swap is one node update instead of the
real two; no Events are recorded; the controllers' own requests do not pass through the
fault injector (only kubelets' do); the NoExecute pass runs when a token is due instead
of polling every 100 ms, which differs only after a failed taint (retried 50 ms later).
Zones are keyed by the zone label alone (the real key is ``region:\\x00:zone``).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import msgspec

from .admission import AdmissionDeniedError, UserInfo
from .clock import SimClock
from .errors import ApiError, not_found
from .kubelet import NODE_LEASE_NAMESPACE, format_time, parse_time
from .registry import Registry
from .resources import LEASES, NODES, PODS
from .settings import NodeLifecycleSettings
from .store import Entry, Store

log = logging.getLogger(__name__)

NODE_CONTROLLER: Final = UserInfo(
    username="system:serviceaccount:kube-system:node-controller",
    groups=("system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"),
)
"""The identity of both controllers' requests (under --use-service-account-credentials;
since 1.29 the separate taint-eviction controller still builds its client as
"node-controller")."""

CONTROLLER_MANAGER: Final = UserInfo(
    username="system:kube-controller-manager",
    groups=("system:authenticated",),
)
"""The identity of every controller without --use-service-account-credentials."""

STATE_INITIAL: Final = "Initial"
STATE_NORMAL: Final = "Normal"
STATE_PARTIAL_DISRUPTION: Final = "PartialDisruption"
STATE_FULL_DISRUPTION: Final = "FullDisruption"

NOT_READY_TAINT_KEY: Final = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT_KEY: Final = "node.kubernetes.io/unreachable"
UNSCHEDULABLE_TAINT_KEY: Final = "node.kubernetes.io/unschedulable"
NO_SCHEDULE: Final = "NoSchedule"
NO_EXECUTE: Final = "NoExecute"

ZONE_LABEL: Final = "topology.kubernetes.io/zone"
BETA_ZONE_LABEL: Final = "failure-domain.beta.kubernetes.io/zone"
EXCLUDE_DISRUPTION_LABEL: Final = "node.kubernetes.io/exclude-disruption"

NODE_STARTUP_GRACE_PERIOD: Final = 60.0
"""--node-startup-grace-period default: a node that never posted status gets this long."""
EVICTION_RATE_LIMITER_BURST: Final = 1
"""scheduler.EvictionRateLimiterBurst."""
NODE_HEALTH_UPDATE_RETRY: Final = 5
"""scheduler.NodeHealthUpdateRetry."""
TAINT_UPDATE_RETRIES: Final = 5
"""UpdateTaintBackoff steps (retry on conflict)."""
TAINT_EVICTION_RETRIES: Final = 5
"""taint_eviction.go ``retries`` per deletion."""
TAINT_RETRY_AFTER_MISSING_CONDITION: Final = 0.05
"""doNoExecuteTaintingPass retries a node without a Ready condition 50 ms later."""
TAINT_SCAN_PERIOD: Final = 1.0
"""Simulated seconds between looks for new or changed pods on NoExecute-tainted nodes."""
MAX_IDLE: Final = 1.0
"""Simulated seconds the driver sleeps at most (notices clock jumps)."""
MIN_REAL_SLEEP: Final = 0.002
"""Real seconds the driver sleeps at least between ticks."""
YIELD_EVERY: Final = 200
"""Nodes (or pods) processed between two returns to the event loop in :meth:`run`."""
YIELD_AFTER_WRITES: Final = 50
"""Writes between two returns to the event loop: marking a zone's pods not ready is tens
of thousands of pod status updates at 5000 nodes, which must not block the server."""

# nodeConditionToTaintKeyStatusMap: which condition status gives which NoSchedule taint.
CONDITION_TAINTS: Final[Mapping[str, Mapping[str, str]]] = {
    "Ready": {"False": NOT_READY_TAINT_KEY, "Unknown": UNREACHABLE_TAINT_KEY},
    "MemoryPressure": {"True": "node.kubernetes.io/memory-pressure"},
    "DiskPressure": {"True": "node.kubernetes.io/disk-pressure"},
    "NetworkUnavailable": {"True": "node.kubernetes.io/network-unavailable"},
    "PIDPressure": {"True": "node.kubernetes.io/pid-pressure"},
}
_CONDITION_TAINT_KEYS: Final = frozenset(
    key for statuses in CONDITION_TAINTS.values() for key in statuses.values()
)
# tryUpdateNodeHealth: NetworkUnavailable is the network plugin's, never set Unknown.
_UNKNOWN_ON_TIMEOUT: Final = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")

_encoder = msgspec.json.Encoder()
_EPSILON: Final = 1e-9


# --------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------


def compute_zone_state(
    ready_statuses: Sequence[str | None], unhealthy_zone_threshold: float
) -> tuple[int, str]:
    """(not-ready nodes, zone state) as ``ComputeZoneState`` computes them.

    ``ready_statuses`` holds each node's Ready condition status (None: no condition).
    FullDisruption when no node is Ready; PartialDisruption when more than two nodes
    are not Ready and they are at least the threshold fraction; Normal otherwise.
    """
    ready = sum(1 for s in ready_statuses if s == "True")
    not_ready = len(ready_statuses) - ready
    if ready == 0 and not_ready > 0:
        return not_ready, STATE_FULL_DISRUPTION
    if not_ready > 2 and not_ready / (not_ready + ready) >= unhealthy_zone_threshold:
        return not_ready, STATE_PARTIAL_DISRUPTION
    return not_ready, STATE_NORMAL


def zone_of(labels: Mapping[str, str]) -> str:
    """The zone a node counts in (its zone label; "" when it has none)."""
    return labels.get(ZONE_LABEL) or labels.get(BETA_ZONE_LABEL) or ""


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """core/v1 ``Toleration.ToleratesTaint``."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return operator == "Exists"


def min_toleration_seconds(
    taints: Sequence[Mapping[str, Any]], tolerations: Sequence[Mapping[str, Any]]
) -> float | None:
    """How long a pod may stay on a node with these NoExecute ``taints``.

    0 when a taint is not tolerated (delete now), None when every used toleration
    tolerates forever, else the smallest tolerationSeconds (<= 0 counts as 0). The used
    tolerations are the first match per taint (``GetMatchingTolerations``), then
    ``getMinTolerationTime``.
    """
    used: list[Mapping[str, Any]] = []
    for taint in taints:
        match = next((t for t in tolerations if tolerates(t, taint)), None)
        if match is None:
            return 0.0
        used.append(match)
    if not used:
        return 0.0
    smallest: float | None = None
    for t in used:
        seconds = t.get("tolerationSeconds")
        if seconds is None:
            continue
        if seconds <= 0:
            return 0.0
        if smallest is None or seconds < smallest:
            smallest = float(seconds)
    return smallest


# --------------------------------------------------------------------------------------
# Rate limiting on simulated time
# --------------------------------------------------------------------------------------


class TokenBucket:
    """flowcontrol.NewTokenBucketRateLimiter (golang.org/x/time/rate), starting full."""

    def __init__(self, qps: float, burst: int, now: float) -> None:
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def _available(self, now: float) -> float:
        # Computed from the last consumption, not accumulated tick by tick, so that
        # 10 s at 0.1 qps is exactly one token whatever the polling pattern.
        return min(float(self.burst), self._tokens + max(0.0, now - self._last) * self.qps)

    def try_accept(self, now: float) -> bool:
        available = self._available(now)
        if available >= 1.0 - _EPSILON:
            self._tokens = max(0.0, available - 1.0)
            self._last = max(now, self._last)
            return True
        return False

    def next_token_at(self, now: float) -> float | None:
        available = self._available(now)
        if available >= 1.0 - _EPSILON:
            return now
        return now + (1.0 - available) / self.qps


class NeverLimiter:
    """flowcontrol.NewFakeNeverRateLimiter: what a zone gets when evictions stop."""

    qps = 0.0

    def try_accept(self, now: float) -> bool:
        return False

    def next_token_at(self, now: float) -> float | None:
        return None


class RateLimitedTimedQueue:
    """scheduler.RateLimitedTimedQueue over a UniqueQueue: nodes waiting for a taint."""

    def __init__(self, qps: float, now: float) -> None:
        self.limiter: TokenBucket | NeverLimiter = (
            TokenBucket(qps, EVICTION_RATE_LIMITER_BURST, now) if qps > 0 else NeverLimiter()
        )
        self._heap: list[tuple[float, int, str]] = []
        self._queued: dict[str, tuple[float, int]] = {}
        self._set: set[str] = set()
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, value: object) -> bool:
        return value in self._queued

    def add(self, value: str, now: float) -> bool:
        """Queue ``value`` unless it was added before and not ``remove``d."""
        if value in self._set:
            return False
        self._push(value, now)
        self._set.add(value)
        return True

    def remove(self, value: str) -> bool:
        """Drop ``value`` and forget it, so that it may be added again."""
        self._set.discard(value)
        return self._queued.pop(value, None) is not None

    def _remove_from_queue(self, value: str) -> None:
        self._queued.pop(value, None)  # stays in the set: not added a second time

    def _push(self, value: str, at: float) -> None:
        seq = next(self._seq)
        self._queued[value] = (at, seq)
        heapq.heappush(self._heap, (at, seq, value))

    def head(self) -> tuple[float, str] | None:
        heap = self._heap
        while heap:
            at, seq, value = heap[0]
            if self._queued.get(value) == (at, seq):
                return at, value
            heapq.heappop(heap)  # superseded or removed
        return None

    def try_process(self, now: float, fn: Callable[[str], tuple[bool, float]]) -> None:
        """``Try``: while a token is available, process due heads with ``fn`` (which
        returns done, or not done and a delay before the next attempt)."""
        while True:
            head = self.head()
            if head is None or not self.limiter.try_accept(now):
                return
            at, value = head
            if now < at:
                return
            done, wait = fn(value)
            if done:
                self._remove_from_queue(value)
            else:
                self._push(value, now + wait + 1e-9)

    def next_attempt_at(self, now: float) -> float | None:
        head = self.head()
        if head is None:
            return None
        token = self.limiter.next_token_at(now)
        return None if token is None else max(token, head[0])

    def swap_limiter(self, qps: float, now: float) -> None:
        """``SwapLimiter``: a new bucket for a new rate, drained if the old one was."""
        if self.limiter.qps == qps:
            return
        if qps <= 0:
            self.limiter = NeverLimiter()
            return
        new = TokenBucket(qps, EVICTION_RATE_LIMITER_BURST, now)
        if not self.limiter.try_accept(now):
            new.try_accept(now)
        self.limiter = new


# --------------------------------------------------------------------------------------
# Observable state
# --------------------------------------------------------------------------------------


@dataclass
class LifecycleCounters:
    """What the controllers did: for tests and the simulator's metrics."""

    node_status_updates: int = 0
    """Node statuses the controller wrote (conditions set to Unknown)."""
    no_schedule_taints_added: int = 0
    no_execute_taints_added: int = 0
    """Successful NoExecute taints (node_collector_evictions_total, summed over zones)."""
    no_execute_taints_by_zone: dict[str, int] = field(default_factory=dict)
    taints_removed: int = 0
    pods_marked_not_ready: int = 0
    evictions_scheduled: int = 0
    """Taint-eviction work items created (pods whose deletion was scheduled)."""
    evictions_attempted: int = 0
    """DELETE requests the taint-eviction controller sent."""
    evictions_denied: int = 0
    """Of those, the ones admission denied (a ValidatingAdmissionPolicy)."""
    evictions_failed: int = 0
    """Of those, the ones that failed otherwise."""
    evictions_done: int = 0
    """Pods deleted (now Terminating, or gone)."""
    evictions_abandoned: int = 0
    """Work items given up after every attempt failed (retried on the next change)."""
    evictions_cancelled: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Health:
    """nodeHealthData: what the controller last observed of a node, on its own clock."""

    probe: float
    ready_transition: float
    ready: tuple[str, str, str] | None
    """(status, lastHeartbeatTime, lastTransitionTime) of the Ready condition seen."""
    lease: float | None = None
    """renewTime of the Lease seen."""


class _NodeView:
    """The parts of a node object the controllers look at, cached by resourceVersion."""

    __slots__ = (
        "conditions",
        "creation",
        "excluded",
        "name",
        "no_execute",
        "rv",
        "taints",
        "unschedulable",
        "zone",
    )

    def __init__(self, entry: Entry) -> None:
        node = entry.obj()
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        self.rv = entry.rv
        self.name = entry.name
        self.zone = zone_of(entry.labels)
        self.excluded = EXCLUDE_DISRUPTION_LABEL in entry.labels
        self.creation = str(meta.get("creationTimestamp") or "")
        self.conditions: dict[str, dict[str, Any]] = {
            str(c.get("type")): c
            for c in (node.get("status") or {}).get("conditions") or ()
            if isinstance(c, dict)
        }
        self.taints: list[dict[str, Any]] = [
            t for t in spec.get("taints") or () if isinstance(t, dict)
        ]
        self.no_execute = tuple(
            (str(t.get("key")), str(t.get("value") or ""), str(t.get("timeAdded") or ""))
            for t in self.taints
            if t.get("effect") == NO_EXECUTE
        )
        self.unschedulable = bool(spec.get("unschedulable"))

    @property
    def ready(self) -> dict[str, Any] | None:
        return self.conditions.get("Ready")

    def has_taint(self, key: str, effect: str) -> bool:
        return any(t.get("key") == key and t.get("effect") == effect for t in self.taints)


def _ready_key(condition: Mapping[str, Any] | None) -> tuple[str, str, str] | None:
    if condition is None:
        return None
    return (
        str(condition.get("status")),
        str(condition.get("lastHeartbeatTime")),
        str(condition.get("lastTransitionTime")),
    )


def _time_or(text: str, default: float) -> float:
    try:
        return parse_time(text)
    except ValueError:
        return default


# --------------------------------------------------------------------------------------
# Taint eviction
# --------------------------------------------------------------------------------------


@dataclass
class _Work:
    """A TimedWorker: delete ``key`` at ``fire_at``."""

    key: str
    namespace: str
    name: str
    created_at: float
    fire_at: float
    cancelled: bool = False


class TaintEvictionController:
    """Deletes pods from NoExecute-tainted nodes once their tolerations run out."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: SimClock,
        counters: LifecycleCounters,
        user: UserInfo = NODE_CONTROLLER,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.counters = counters
        self.user = user
        self._tainted: dict[str, tuple[dict[str, Any], ...]] = {}
        self._node_seen: dict[str, tuple[tuple[str, str, str], ...]] = {}
        self._work: dict[str, _Work] = {}
        self._heap: list[tuple[float, int, _Work]] = []
        self._seq = itertools.count()
        # Per tainted node: pod key -> (resourceVersion, what PodUpdated compares).
        self._pods_seen: dict[str, dict[str, tuple[int, bytes]]] = {}
        self._next_scan = 0.0

    # -- observable ----------------------------------------------------------------

    def schedule(self) -> dict[str, float]:
        """Pending deletions: ``namespace/name`` -> simulated time they fire at."""
        return {k: w.fire_at for k, w in self._work.items() if not w.cancelled}

    @property
    def tainted_nodes(self) -> frozenset[str]:
        return frozenset(self._tainted)

    # -- events (emulated informer callbacks) --------------------------------------

    def node_changed(self, view: _NodeView | None, name: str) -> None:
        """``NodeUpdated``: react when the node's NoExecute taints changed."""
        seen = view.no_execute if view is not None else ()
        if self._node_seen.get(name, ()) == seen and (
            view is not None or name not in self._tainted
        ):
            return
        self._node_seen[name] = seen
        self._handle_node_update(view, name)

    def _handle_node_update(self, view: _NodeView | None, name: str) -> None:
        now = self.clock.time()
        taints = tuple(t for t in view.taints if t.get("effect") == NO_EXECUTE) if view else ()
        if taints:
            self._tainted[name] = taints
        else:
            self._tainted.pop(name, None)
        entries = self.store.by_index(PODS, "spec.nodeName", name)
        if not taints:
            self._pods_seen.pop(name, None)
            for entry in entries:
                self._cancel(_pod_key(entry))
            return
        seen: dict[str, tuple[int, bytes]] = {}
        for entry in entries:
            pod = entry.obj()
            fingerprint = _pod_fingerprint(pod)
            seen[entry.key] = (entry.rv, fingerprint)
            self._process_pod(entry, pod, taints, now)
        self._pods_seen[name] = seen

    def scan_pods(self, now: float) -> None:
        """``PodUpdated`` for pods on tainted nodes: new pods, changed tolerations."""
        if now < self._next_scan:
            return
        self._next_scan = now + TAINT_SCAN_PERIOD
        for name, taints in list(self._tainted.items()):
            old = self._pods_seen.get(name, {})
            seen: dict[str, tuple[int, bytes]] = {}
            for entry in self.store.by_index(PODS, "spec.nodeName", name):
                before = old.get(entry.key)
                if before is not None and before[0] == entry.rv:
                    seen[entry.key] = before
                    continue
                pod = entry.obj()
                fingerprint = _pod_fingerprint(pod)
                seen[entry.key] = (entry.rv, fingerprint)
                if before is None or before[1] != fingerprint:
                    self._process_pod(entry, pod, taints, now)
            for gone in old.keys() - seen.keys():
                self._cancel(gone)
            self._pods_seen[name] = seen

    def _process_pod(
        self,
        entry: Entry,
        pod: Mapping[str, Any],
        taints: Sequence[Mapping[str, Any]],
        now: float,
    ) -> None:
        """``processPodOnNode``."""
        key = _pod_key(entry)
        tolerations = [
            t for t in (pod.get("spec") or {}).get("tolerations") or () if isinstance(t, dict)
        ]
        seconds = min_toleration_seconds(taints, tolerations)
        if seconds is None:
            self._cancel(key)  # tolerates forever
            return
        existing = self._work.get(key)
        start, trigger = now, now + seconds
        if existing is not None:
            start = existing.created_at
            if start + seconds < trigger:
                return  # the earlier schedule stands
            self._cancel(key)
        self._add_work(entry.namespace, entry.name, key, start, trigger)

    def _add_work(self, namespace: str, name: str, key: str, created: float, fire: float) -> None:
        if key in self._work:
            return
        work = _Work(key, namespace, name, created, fire)
        self._work[key] = work
        heapq.heappush(self._heap, (fire, next(self._seq), work))
        self.counters.evictions_scheduled += 1

    def _cancel(self, key: str) -> None:
        work = self._work.pop(key, None)
        if work is not None:
            work.cancelled = True
            self.counters.evictions_cancelled += 1

    # -- firing --------------------------------------------------------------------

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        times = [t for t in (heap[0][0] if heap else None,) if t is not None]
        if self._tainted:
            times.append(self._next_scan)
        return min(times) if times else None

    def fire_due(self, now: float) -> Iterator[None]:
        heap = self._heap
        done = 0
        while heap and heap[0][0] <= now:
            _, _, work = heapq.heappop(heap)
            if work.cancelled:
                continue
            self._delete_pod(work)
            # The worker is removed whatever the outcome (timed_workers.go): only a
            # later change schedules this pod again.
            if self._work.get(work.key) is work:
                del self._work[work.key]
            done += 1
            if done % YIELD_EVERY == 0:
                yield

    def _delete_pod(self, work: _Work) -> None:
        """``deletePodHandler``: up to 5 attempts of condition + DELETE."""
        for _ in range(TAINT_EVICTION_RETRIES):
            try:
                self._add_condition_and_delete(work.namespace, work.name)
            except ApiError:
                continue
            self.counters.evictions_done += 1
            return
        self.counters.evictions_abandoned += 1

    def _add_condition_and_delete(self, namespace: str, name: str) -> None:
        entry = self.store.get(PODS, namespace, name)
        if entry is None:
            raise not_found("pods", "", name)
        pod = entry.obj()
        if _set_disruption_target(pod, format_time(self.clock.time())):
            self.registry.update(PODS, namespace, name, pod, self.user, subresource="status")
        self.counters.evictions_attempted += 1
        try:
            self.registry.delete(PODS, namespace, name, self.user, options={})
        except AdmissionDeniedError:
            self.counters.evictions_denied += 1
            raise
        except ApiError:
            self.counters.evictions_failed += 1
            raise


def _pod_key(entry: Entry) -> str:
    return entry.key  # "namespace/name", the NamespacedName string


def _pod_fingerprint(pod: Mapping[str, Any]) -> bytes:
    # What PodUpdated compares: tolerations and nodeName (and the UID: a pod recreated
    # under the same name is a new pod).
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    return _encoder.encode((meta.get("uid"), spec.get("nodeName"), spec.get("tolerations")))


def _set_disruption_target(pod: dict[str, Any], stamp: str) -> bool:
    """Add the DisruptionTarget condition the taint manager sets before deleting."""
    status = pod.setdefault("status", {})
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        conditions = status["conditions"] = []
    wanted = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
    }
    for c in conditions:
        if c.get("type") == "DisruptionTarget":
            if all(c.get(k) == v for k, v in wanted.items()):
                return False
            if c.get("status") != "True":
                c["lastTransitionTime"] = stamp
            c.update(wanted)
            return True
    conditions.append({**wanted, "lastProbeTime": None, "lastTransitionTime": stamp})
    return True


# --------------------------------------------------------------------------------------
# Node lifecycle
# --------------------------------------------------------------------------------------


class NodeLifecycleController:
    """kube-controller-manager's node-lifecycle controller plus its taint eviction."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: SimClock,
        settings: NodeLifecycleSettings | None = None,
        *,
        user: UserInfo = NODE_CONTROLLER,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.settings = settings or NodeLifecycleSettings()
        self.user = user
        self.counters = LifecycleCounters()
        self.taint_eviction = TaintEvictionController(store, registry, clock, self.counters, user)
        self._views: dict[str, _NodeView] = {}
        self._health: dict[str, _Health] = {}
        self._lease_renew: dict[str, tuple[int, float | None]] = {}
        self._known: set[str] = set()
        self._zone_states: dict[str, str] = {}
        self._zone_sizes: dict[str, int] = {}
        self._zone_unhealthy: dict[str, int] = {}
        self._tainters: dict[str, RateLimitedTimedQueue] = {}
        self._no_schedule_rv: dict[str, int] = {}
        self._nodes_to_retry: set[str] = set()
        self._next_monitor = 0.0
        self._writes = 0

    # -- observable ----------------------------------------------------------------

    def zone_states(self) -> dict[str, str]:
        """Zone -> Initial, Normal, PartialDisruption or FullDisruption."""
        return dict(self._zone_states)

    def zone_sizes(self) -> dict[str, int]:
        """Zone -> nodes counted (node_collector_zone_size)."""
        return dict(self._zone_sizes)

    def unhealthy_nodes(self) -> dict[str, int]:
        """Zone -> nodes not Ready (node_collector_unhealthy_nodes_in_zone)."""
        return dict(self._zone_unhealthy)

    def eviction_schedule(self) -> dict[str, float]:
        """Pending pod deletions: ``namespace/name`` -> simulated time they fire at."""
        return self.taint_eviction.schedule()

    def taint_queue(self) -> dict[str, list[str]]:
        """Zone -> nodes waiting for their NoExecute taint, in order."""
        out: dict[str, list[str]] = {}
        for zone, queue in self._tainters.items():
            pending = sorted((at, seq, v) for v, (at, seq) in queue._queued.items())
            out[zone] = [v for _, _, v in pending]
        return out

    def eviction_rate(self, zone: str) -> float:
        """The zone's current NoExecute tainting rate (nodes per simulated second)."""
        queue = self._tainters.get(zone)
        return 0.0 if queue is None else queue.limiter.qps

    # -- driving -------------------------------------------------------------------

    async def run(self) -> None:
        """Run both controllers until cancelled (for ``ApiServer.add_background``)."""
        while True:
            for _ in self._steps():
                await asyncio.sleep(0)
            next_due = self.next_due()
            now = self.clock.time()
            wait = MAX_IDLE if next_due is None else min(max(0.0, next_due - now), MAX_IDLE)
            await asyncio.sleep(max(MIN_REAL_SLEEP, self.clock.real_seconds(wait)))

    def tick(self) -> float | None:
        """Do everything due by now; return when something is next due."""
        for _ in self._steps():
            pass
        return self.next_due()

    def next_due(self) -> float | None:
        now = self.clock.time()
        times = [self._next_monitor]
        for queue in self._tainters.values():
            at = queue.next_attempt_at(now)
            if at is not None:
                times.append(at)
        te = self.taint_eviction.next_due()
        if te is not None:
            times.append(te)
        return min(times)

    def _steps(self) -> Iterator[None]:
        now = self.clock.time()
        if now >= self._next_monitor:
            yield from self._monitor_node_health(now)
            self._next_monitor = self.clock.time() + self.settings.node_monitor_period_seconds
        self._do_no_execute_tainting_pass(self.clock.time())
        self.taint_eviction.scan_pods(self.clock.time())
        yield from self.taint_eviction.fire_due(self.clock.time())

    # -- monitorNodeHealth -----------------------------------------------------------

    def _view(self, entry: Entry) -> _NodeView:
        view = self._views.get(entry.name)
        if view is None or view.rv != entry.rv:
            view = _NodeView(entry)
            self._views[entry.name] = view
        return view

    def _refresh_view(self, name: str) -> _NodeView | None:
        entry = self.store.get(NODES, "", name)
        if entry is None:
            self._views.pop(name, None)
            return None
        return self._view(entry)

    def _monitor_node_health(self, now: float) -> Iterator[None]:
        views = [self._view(e) for e in self.store.iter_current(NODES)]
        names = {v.name for v in views}
        for name in self._known - names:
            self._known.discard(name)
            self._health.pop(name, None)
            self._views.pop(name, None)
            self._nodes_to_retry.discard(name)
            self.taint_eviction.node_changed(None, name)
        for view in views:
            self._add_evictor_for_zone(view.zone, now)
        zone_ready: dict[str, list[str | None]] = {}
        for i, view in enumerate(views):
            if view.name not in self._known:
                # A node the controller sees for the first time starts reachable.
                self._known.add(view.name)
                self._mark_node_as_reachable(view)
                view = self._refresh_view(view.name) or view
            # Informer events emulated: a node that changed since we last looked.
            if self._no_schedule_rv.get(view.name) != view.rv:
                self._do_no_schedule_tainting_pass(view)
                view = self._refresh_view(view.name) or view
                self.taint_eviction.node_changed(view, view.name)
            result = self._update_node_health_with_retries(view, now)
            if result is not None:
                observed, current, view = result
                if not view.excluded:
                    zone_ready.setdefault(view.zone, []).append(current)
                if current is not None:
                    self._process_taint_based_eviction(view, observed, now)
                    needs_retry = view.name in self._nodes_to_retry
                    if (current != "True" and observed == "True") or (
                        needs_retry and observed != "True"
                    ):
                        if self._mark_pods_not_ready(view.name):
                            self._nodes_to_retry.discard(view.name)
                        else:
                            self._nodes_to_retry.add(view.name)
                    else:
                        self._nodes_to_retry.discard(view.name)
            if i % YIELD_EVERY == YIELD_EVERY - 1 or self._writes >= YIELD_AFTER_WRITES:
                self._writes = 0
                yield
        yield from self._handle_disruption(zone_ready, views, now)

    def _update_node_health_with_retries(
        self, view: _NodeView, now: float
    ) -> tuple[str | None, str | None, _NodeView] | None:
        current_view: _NodeView | None = view
        for _ in range(NODE_HEALTH_UPDATE_RETRY):
            if current_view is None:
                return None  # deleted meanwhile: skipped, no pods evicted
            try:
                observed, current = self._try_update_node_health(current_view, now)
            except ApiError:
                current_view = self._refresh_view(current_view.name)
                continue
            return observed, current, self._refresh_view(current_view.name) or current_view
        return None

    def _try_update_node_health(self, view: _NodeView, now: float) -> tuple[str | None, str | None]:
        """``tryUpdateNodeHealth``: (observed Ready status, current Ready status)."""
        name = view.name
        health = self._health.get(name)
        ready = view.ready
        creation = _time_or(view.creation, now)
        if ready is None:
            observed: dict[str, Any] = {
                "type": "Ready",
                "status": "Unknown",
                "lastHeartbeatTime": view.creation,
                "lastTransitionTime": view.creation,
            }
            grace = NODE_STARTUP_GRACE_PERIOD
            if health is not None:
                health.ready = None
            else:
                health = _Health(creation, creation, None)
        else:
            observed = dict(ready)
            grace = self.settings.node_monitor_grace_period_seconds
        saved = health.ready if health is not None else None
        saved_lease = health.lease if health is not None else None
        current_key = _ready_key(ready)
        if health is None or (saved is None and current_key is not None):
            health = _Health(now, now, current_key)
        elif saved is not None and current_key is None:
            health = _Health(now, now, None)
        elif saved is not None and current_key is not None and saved[1] != current_key[1]:
            transition = now if saved[2] != current_key[2] else health.ready_transition
            health = _Health(now, transition, current_key)
        # Always refresh the probe time when the Lease was renewed.
        renew = self._observed_lease(name)
        if renew is not None and (saved_lease is None or saved_lease < renew):
            health.lease = renew
            health.probe = now
        self._health[name] = health

        if not now > health.probe + grace:
            return str(observed["status"]), None if ready is None else str(ready.get("status"))
        entry = self.store.get(NODES, "", name)
        if entry is None:
            raise not_found("nodes", "", name)
        node = entry.obj()
        conditions = node.setdefault("status", {}).setdefault("conditions", [])
        stamp = format_time(now)
        for type_ in _UNKNOWN_ON_TIMEOUT:
            c = next((c for c in conditions if c.get("type") == type_), None)
            if c is None:
                conditions.append(
                    {
                        "type": type_,
                        "status": "Unknown",
                        "reason": "NodeStatusNeverUpdated",
                        "message": "Kubelet never posted node status.",
                        "lastHeartbeatTime": view.creation,
                        "lastTransitionTime": stamp,
                    }
                )
            elif c.get("status") != "Unknown":
                c["status"] = "Unknown"
                c["reason"] = "NodeStatusUnknown"
                c["message"] = "Kubelet stopped posting node status."
                c["lastTransitionTime"] = stamp
        current = next((c for c in conditions if c.get("type") == "Ready"), None)
        if current != observed:
            self.registry.update(NODES, "", name, node, self.user, subresource="status")
            self.counters.node_status_updates += 1
            self._health[name] = _Health(health.probe, now, _ready_key(current), renew)
            # The node changed: the NoSchedule pass runs for it at once.
            fresh = self._refresh_view(name)
            if fresh is not None:
                self._do_no_schedule_tainting_pass(fresh)
        return str(observed["status"]), None if current is None else str(current.get("status"))

    def _observed_lease(self, name: str) -> float | None:
        entry = self.store.get(LEASES, NODE_LEASE_NAMESPACE, name)
        if entry is None:
            return None
        cached = self._lease_renew.get(name)
        if cached is not None and cached[0] == entry.rv:
            return cached[1]
        renew_text = ((entry.obj().get("spec") or {}).get("renewTime")) or ""
        renew = _time_or(str(renew_text), 0.0) if renew_text else None
        self._lease_renew[name] = (entry.rv, renew)
        return renew

    # -- taints ----------------------------------------------------------------------

    def _swap_taints(
        self, name: str, add: Sequence[tuple[str, str]], remove: Sequence[tuple[str, str]]
    ) -> bool:
        """``SwapNodeControllerTaint`` (as one update): add taints stamped with
        timeAdded, remove others by key and effect; retried on conflict."""
        for _ in range(TAINT_UPDATE_RETRIES):
            entry = self.store.get(NODES, "", name)
            if entry is None:
                return False
            node = entry.obj()
            spec = node.setdefault("spec", {})
            taints = [t for t in spec.get("taints") or () if isinstance(t, dict)]
            stamp = format_time(self.clock.time())
            removing = set(remove) | set(add)
            kept = [t for t in taints if (t.get("key"), t.get("effect")) not in removing]
            removed = sum(1 for t in taints if (t.get("key"), t.get("effect")) in set(remove))
            kept.extend({"key": k, "effect": e, "timeAdded": stamp} for k, e in add)
            if kept:
                spec["taints"] = kept
            else:
                spec.pop("taints", None)
            try:
                self.registry.update(NODES, "", name, node, self.user)
            except ApiError as e:
                if e.code == 409:
                    continue
                log.info("node-controller could not update taints of %s: %s", name, e.message)
                return False
            self.counters.taints_removed += removed
            self._writes += 1
            view = self._refresh_view(name)
            self.taint_eviction.node_changed(view, name)
            return True
        return False

    def _do_no_schedule_tainting_pass(self, view: _NodeView) -> None:
        wanted: set[tuple[str, str]] = set()
        for type_, statuses in CONDITION_TAINTS.items():
            c = view.conditions.get(type_)
            if c is not None and str(c.get("status")) in statuses:
                wanted.add((statuses[str(c.get("status"))], NO_SCHEDULE))
        if view.unschedulable:
            wanted.add((UNSCHEDULABLE_TAINT_KEY, NO_SCHEDULE))
        have = {
            (str(t.get("key")), NO_SCHEDULE)
            for t in view.taints
            if t.get("effect") == NO_SCHEDULE
            and (t.get("key") in _CONDITION_TAINT_KEYS or t.get("key") == UNSCHEDULABLE_TAINT_KEY)
        }
        to_add, to_remove = sorted(wanted - have), sorted(have - wanted)
        if (to_add or to_remove) and self._swap_taints(view.name, to_add, to_remove):
            self.counters.no_schedule_taints_added += len(to_add)
        fresh = self._refresh_view(view.name)
        self._no_schedule_rv[view.name] = fresh.rv if fresh is not None else view.rv

    def _add_evictor_for_zone(self, zone: str, now: float) -> None:
        if zone not in self._zone_states:
            self._zone_states[zone] = STATE_INITIAL
            self._tainters[zone] = RateLimitedTimedQueue(self.settings.node_eviction_rate, now)
            self.counters.no_execute_taints_by_zone.setdefault(zone, 0)

    def _process_taint_based_eviction(
        self, view: _NodeView, observed: str | None, now: float
    ) -> None:
        queue = self._tainters[view.zone]
        if observed == "False":
            if view.has_taint(UNREACHABLE_TAINT_KEY, NO_EXECUTE):
                self._swap_taints(
                    view.name,
                    [(NOT_READY_TAINT_KEY, NO_EXECUTE)],
                    [(UNREACHABLE_TAINT_KEY, NO_EXECUTE)],
                )
            else:
                if not view.has_taint(NOT_READY_TAINT_KEY, NO_EXECUTE):
                    queue.remove(view.name)
                queue.add(view.name, now)
        elif observed == "Unknown":
            if view.has_taint(NOT_READY_TAINT_KEY, NO_EXECUTE):
                self._swap_taints(
                    view.name,
                    [(UNREACHABLE_TAINT_KEY, NO_EXECUTE)],
                    [(NOT_READY_TAINT_KEY, NO_EXECUTE)],
                )
            else:
                if not view.has_taint(UNREACHABLE_TAINT_KEY, NO_EXECUTE):
                    queue.remove(view.name)
                queue.add(view.name, now)
        elif observed == "True":
            self._mark_node_as_reachable(view)

    def _mark_node_as_reachable(self, view: _NodeView) -> bool:
        present = [
            (key, NO_EXECUTE)
            for key in (UNREACHABLE_TAINT_KEY, NOT_READY_TAINT_KEY)
            if view.has_taint(key, NO_EXECUTE)
        ]
        if present and not self._swap_taints(view.name, [], present):
            return False
        queue = self._tainters.get(view.zone)
        return queue.remove(view.name) if queue is not None else False

    def _do_no_execute_tainting_pass(self, now: float) -> None:
        for zone, queue in self._tainters.items():
            queue.try_process(now, functools.partial(self._taint_no_execute, zone=zone))

    def _taint_no_execute(self, name: str, zone: str) -> tuple[bool, float]:
        view = self._refresh_view(name)
        if view is None:
            return True, 0.0
        ready = view.ready
        if ready is None:
            return False, TAINT_RETRY_AFTER_MISSING_CONDITION
        status = ready.get("status")
        if status == "False":
            add, opposite = NOT_READY_TAINT_KEY, UNREACHABLE_TAINT_KEY
        elif status == "Unknown":
            add, opposite = UNREACHABLE_TAINT_KEY, NOT_READY_TAINT_KEY
        else:
            return True, 0.0  # Ready again: nothing to taint
        ok = self._swap_taints(name, [(add, NO_EXECUTE)], [(opposite, NO_EXECUTE)])
        if ok:
            self.counters.no_execute_taints_added += 1
            by_zone = self.counters.no_execute_taints_by_zone
            by_zone[zone] = by_zone.get(zone, 0) + 1
        return ok, 0.0

    # -- pods ------------------------------------------------------------------------

    def _mark_pods_not_ready(self, node: str) -> bool:
        """``MarkPodsNotReady``: Ready=False on every pod of the node; False on errors."""
        ok = True
        stamp = format_time(self.clock.time())
        for entry in self.store.by_index(PODS, "spec.nodeName", node):
            if b'"Ready"' not in entry.raw:
                continue
            pod = entry.obj()
            changed = False
            for c in (pod.get("status") or {}).get("conditions") or ():
                if c.get("type") == "Ready":
                    if c.get("status") != "False":
                        c["status"] = "False"
                        c["lastTransitionTime"] = stamp
                        changed = True
                    break
            if not changed:
                continue
            try:
                self.registry.update(
                    PODS, entry.namespace, entry.name, pod, self.user, subresource="status"
                )
            except ApiError as e:
                if e.code != 404:
                    ok = False
                continue
            self.counters.pods_marked_not_ready += 1
            self._writes += 1
        return ok

    # -- handleDisruption ----------------------------------------------------------

    def _handle_disruption(
        self, zone_ready: dict[str, list[str | None]], views: list[_NodeView], now: float
    ) -> Iterator[None]:
        threshold = self.settings.unhealthy_zone_threshold
        new_states: dict[str, str] = {}
        all_are_fully_disrupted = True
        for zone, statuses in zone_ready.items():
            unhealthy, state = compute_zone_state(statuses, threshold)
            self._zone_sizes[zone] = len(statuses)
            self._zone_unhealthy[zone] = unhealthy
            if state != STATE_FULL_DISRUPTION:
                all_are_fully_disrupted = False
            new_states[zone] = state
            self._zone_states.setdefault(zone, STATE_INITIAL)
        all_were_fully_disrupted = True
        for zone in list(self._zone_states):
            if zone not in zone_ready:
                # A zone without nodes (or with only excluded ones) is forgotten.
                del self._zone_states[zone]
                self._zone_sizes.pop(zone, None)
                self._zone_unhealthy.pop(zone, None)
                continue
            if self._zone_states[zone] != STATE_FULL_DISRUPTION:
                all_were_fully_disrupted = False
                break
        if all_are_fully_disrupted and all_were_fully_disrupted:
            return  # still in master disruption mode: nothing changes
        if all_are_fully_disrupted:
            # Every zone is down: the problem is more likely the control plane than the
            # nodes. Untaint everything and stop all evictions.
            log.info("node-controller: all nodes not ready, entering master disruption mode")
            for i, view in enumerate(views):
                fresh = self._refresh_view(view.name)
                if fresh is not None:
                    self._mark_node_as_reachable(fresh)
                if i % YIELD_EVERY == YIELD_EVERY - 1 or self._writes >= YIELD_AFTER_WRITES:
                    self._writes = 0
                    yield
            for zone in self._zone_states:
                self._tainters[zone].swap_limiter(0.0, now)
                self._zone_states[zone] = STATE_FULL_DISRUPTION
            return
        if all_were_fully_disrupted:
            log.info("node-controller: some nodes ready, exiting master disruption mode")
            for view in views:
                health = self._health.get(view.name)
                if health is not None:
                    health.probe = now
                    health.ready_transition = now
            for zone in list(self._zone_states):
                new = new_states.get(zone)
                if new is None:
                    del self._zone_states[zone]
                    continue
                self._set_limiter_in_zone(zone, len(zone_ready[zone]), new, now)
                self._zone_states[zone] = new
            return
        for zone, state in list(self._zone_states.items()):
            new = new_states.get(zone)
            if new is None:
                del self._zone_states[zone]  # left over by the early break above
                continue
            if state == new:
                continue
            log.info("node-controller: zone %s is now %s", zone, new)
            self._set_limiter_in_zone(zone, len(zone_ready[zone]), new, now)
            self._zone_states[zone] = new

    def _set_limiter_in_zone(self, zone: str, size: int, state: str, now: float) -> None:
        s = self.settings
        if state == STATE_NORMAL:
            qps = s.node_eviction_rate
        elif state == STATE_PARTIAL_DISRUPTION:
            # ReducedQPSFunc: large zones slow down, small ones stop.
            qps = s.secondary_node_eviction_rate if size > s.large_cluster_size_threshold else 0.0
        elif state == STATE_FULL_DISRUPTION:
            qps = s.node_eviction_rate  # HealthyQPSFunc
        else:
            return
        self._tainters[zone].swap_limiter(qps, now)
