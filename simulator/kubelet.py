"""Simulated kubelets: what keeps a simulated node Ready, and what finishes pod deletions.

Why this exists: the failure the seed's first self-check item describes (apiserver
congestion starves kubelet heartbeats, the node-lifecycle controller marks healthy nodes
NotReady, and taint-based eviction deletes pods whose containers were fine) only appears
if something renews node Leases the way a real kubelet does, through the same request
classes that API Priority and Fairness sheds first, with the same timeouts and retries.
This module is that something, for up to 5000 nodes.

How it fits: :class:`Kubelets` reads and writes through the :class:`~.registry.Registry`
(so admission applies, as it would to a real kubelet's requests) as user
``system:node:<name>``, and asks :meth:`~.faults.FaultState.decide` before each request,
with the request class a real kubelet request has (classified by the FlowSchemas in
force: the server passes its :class:`~.apf.StoredConfiguration`). Stopped kubelets
(:meth:`~.faults.FaultState.kubelet_stopped`) do nothing at all; kubelets in partitioned
zones send nothing that arrives (each request hangs until the client timeout). The
node-lifecycle controller (:mod:`.nodelifecycle`) reacts to what lands in the store.

What it follows (kubernetes/kubernetes):

- staging/src/k8s.io/component-helpers/apimachinery/lease/controller.go: ``sync`` updates
  the cached Lease (``retryUpdateLease``: up to 5 immediate attempts, a conflict re-reads
  it), falls back to ``backoffEnsureLease`` (GET, create if missing, sleeping 200 ms
  doubling to 7 s between failures), and runs every renew interval with 4 % jitter
  (``wait.JitterUntil``, sliding); ``newLease`` stamps ``renewTime`` *before* sending, so
  a slow apiserver stores a stale renewTime;
- pkg/kubelet/kubelet.go and cmd/kubelet/app/server.go: renew interval = 25 % of the
  40 s lease duration = 10 s; the heartbeat client has throttling off and a timeout of
  min(nodeStatusUpdateFrequency, leaseDuration) = 10 s; client-go retries a 429 after
  its Retry-After up to 10 times (rest/request.go ``maxRetries``), inside that timeout;
- pkg/kubelet/kubelet_node_status.go: ``syncNodeStatus`` every nodeStatusUpdateFrequency
  (10 s), 5 tries (``nodeStatusUpdateRetry``); it patches status only when it changed
  (``nodeStatusHasChanged`` ignores heartbeat times: a controller-set Ready=Unknown is a
  change) or nodeStatusReportFrequency (5 min) passed since the last report;
- pkg/kubelet/status/status_manager.go: a pod with a deletionTimestamp is deleted with
  grace 0 and a UID precondition once its containers stopped (here: once the grace
  period elapsed), and the pod status the apiserver holds is reconciled with the
  kubelet's (here: Ready=True restored on Running pods after the node-lifecycle
  controller marked them not ready, since simulated containers never fail).

Cost: ONE asyncio task drives every kubelet. Each kubelet's Lease loop and status loop are
Python generators that yield the simulated seconds they want to sleep; a heap orders
them. A renewal is a heap pop, a ``decide`` and one registry update of a Lease built
directly from the cached one (no GET), as the real kubelet does. Pod deletions are found
through one store watch on pods filtered by a byte search, not by scanning pods. See
:meth:`Kubelets.tick` for the numbers measured at 5000 nodes.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import heapq
import itertools
import logging
import random
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from typing import Any, Final, TypeVar

from . import apf
from .admission import UserInfo
from .clock import SimClock
from .errors import ApiError, not_found
from .faults import FaultState, RequestClass
from .registry import Registry
from .resources import COORDINATION, LEASES, NODES, PODS
from .selectors import FieldSelector, LabelSelector
from .store import Entry, Store, Watch, decode

log = logging.getLogger(__name__)

T = TypeVar("T")
Step = Generator[float, None, T]
"""A kubelet activity: yields simulated seconds to sleep, returns its result."""

NODE_LEASE_NAMESPACE: Final = "kube-node-lease"
LEASE_DURATION_SECONDS: Final = 40
"""--node-lease-duration-seconds default."""
RENEW_INTERVAL: Final = LEASE_DURATION_SECONDS * 0.25
"""nodeLeaseRenewIntervalFraction (0.25) of the lease duration: 10 s."""
RENEW_JITTER: Final = 0.04
"""wait.JitterUntil's jitter factor in the lease controller's Run."""
HEARTBEAT_TIMEOUT: Final = 10.0
"""The heartbeat client's timeout: min(nodeStatusUpdateFrequency, leaseDuration)."""
MAX_UPDATE_RETRIES: Final = 5
"""lease controller maxUpdateRetries."""
ENSURE_BACKOFF_START: Final = 0.1
"""backoffEnsureLease's initial sleep (doubled before the first wait: 200 ms)."""
MAX_BACKOFF: Final = 7.0
"""lease controller maxBackoff."""
CLIENT_MAX_RETRIES: Final = 10
"""client-go rest.Request maxRetries for 429 with Retry-After."""
NODE_STATUS_UPDATE_FREQUENCY: Final = 10.0
"""--node-status-update-frequency default."""
NODE_STATUS_REPORT_FREQUENCY: Final = 300.0
"""nodeStatusReportFrequency default: report unchanged status every 5 minutes."""
NODE_STATUS_UPDATE_RETRY: Final = 5
"""kubelet nodeStatusUpdateRetry."""
POD_SYNC_RETRY: Final = 10.0
"""How soon a kubelet retries a failed or deferred pod deletion (its status manager's
syncPeriod is 10 s)."""
NODE_RESYNC: Final = 30.0
"""Simulated seconds between checks for added or removed nodes."""
MAX_STEPS_PER_TICK: Final = 4000
"""Steps one tick runs before giving the event loop back (startup and clock jumps)."""
MIN_REAL_SLEEP: Final = 0.002
"""Real seconds the driver sleeps at least between ticks: batches steps under load."""
MAX_IDLE: Final = 1.0
"""Simulated seconds the driver sleeps at most (notices clock jumps and new faults)."""

NODE_GROUPS: Final = (apf.NODES_GROUP, apf.ALL_AUTHENTICATED)

_TERMINATING_MARK: Final = b'"deletionTimestamp"'

# The conditions a kubelet owns and what it reports when healthy
# (pkg/kubelet/nodestatus/setters.go ReadyCondition, MemoryPressureCondition,
# DiskPressureCondition, PIDPressureCondition). NetworkUnavailable belongs to the
# network plugin and is left alone.
KUBELET_CONDITIONS: Final = (
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def format_time(t: float) -> str:
    """metav1.Time: RFC 3339, whole seconds."""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(t: float) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds (Lease renewTime)."""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """Seconds since the epoch of a metav1.Time or MicroTime."""
    return datetime.datetime.fromisoformat(text).timestamp()


def node_user(node: str) -> UserInfo:
    """The identity a kubelet's client certificate gives it."""
    return UserInfo(username=f"{apf.NODE_USER_PREFIX}{node}", groups=NODE_GROUPS)


class _KubeletStoppedError(Exception):
    """Raised inside a kubelet activity when its kubelet was stopped: the process died."""


def _client_timeout() -> ApiError:
    # Not an apiserver answer: the client gave up (net/http's wording).
    return ApiError(
        504, "Timeout", "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    )


@dataclass
class KubeletStats:
    """What the simulated kubelets did, for tests and the simulator's metrics."""

    lease_renewals: int = 0
    lease_update_failures: int = 0
    lease_gets: int = 0
    leases_created: int = 0
    status_updates: int = 0
    status_update_failures: int = 0
    client_timeouts: int = 0
    pod_deletions: int = 0
    pods_marked_ready: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class _Kubelet:
    """One node's kubelet state (what the real process keeps in memory)."""

    __slots__ = (
        "alive",
        "last_report",
        "latest_lease",
        "name",
        "node_rv_seen",
        "stopped_lease",
        "stopped_status",
        "user",
        "username",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.user = node_user(name)
        self.username = self.user.username
        self.alive = True
        self.latest_lease: dict[str, Any] | None = None
        self.last_report: float | None = None
        self.node_rv_seen = 0
        # Each loop notices a stop on its own, so that each resets its own state once.
        self.stopped_lease = False
        self.stopped_status = False


class Kubelets:
    """Every simulated kubelet, driven by one task (:meth:`run`) or by :meth:`tick`."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: SimClock,
        faults: FaultState | None = None,
        *,
        rng: random.Random | None = None,
        classify: apf.Classifier = apf.classify,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.faults = faults
        self.classify = classify
        """Puts a request into its FlowSchema and priority level: the server's stored
        configuration (``ApiServer.apf.classify``, a revision check per call, rebuilt only
        after a FlowSchema or level was written), or the default objects."""
        self.rng = rng or random.Random(0)
        self.stats = KubeletStats()
        self._kubelets: dict[str, _Kubelet] = {}
        self._heap: list[tuple[float, int, Step[None]]] = []
        self._seq = itertools.count()
        self._next_node_sync = -1.0
        self._pod_watch: Watch | None = None
        self._terminating: set[tuple[str, str, str]] = set()

    # -- public ------------------------------------------------------------------

    @property
    def nodes(self) -> frozenset[str]:
        """Nodes that have a simulated kubelet."""
        return frozenset(self._kubelets)

    async def run(self) -> None:
        """Drive every kubelet until cancelled (for ``ApiServer.add_background``)."""
        while True:
            next_due = self.tick()
            now = self.clock.time()
            wait = MAX_IDLE if next_due is None else min(max(0.0, next_due - now), MAX_IDLE)
            await asyncio.sleep(max(MIN_REAL_SLEEP, self.clock.real_seconds(wait)))

    def tick(self) -> float | None:
        """Run every step due by now; return when the next one is due (simulated time).

        Synchronous, so tests can ``clock.advance`` and call it. Measured at 5000 nodes
        and 150 000 pods without faults: 500 Lease renewals per simulated second cost
        about 46 ms of CPU (90 us each, 40 % of it ``copy.deepcopy`` in
        ``Registry.update``), so the kubelets need ~5 % of a core at clock factor 1,
        ~46 % at 10 and a whole core at 20.
        """
        now = self.clock.time()
        if now >= self._next_node_sync:
            self._sync_nodes(now)
            self._next_node_sync = now + NODE_RESYNC
        self._drain_pod_watch()
        heap = self._heap
        steps = 0
        while heap and heap[0][0] <= now and steps < MAX_STEPS_PER_TICK:
            _, _, step = heapq.heappop(heap)
            steps += 1
            try:
                delay = next(step)
            except StopIteration:
                continue
            heapq.heappush(heap, (self.clock.time() + delay, next(self._seq), step))
        return heap[0][0] if heap else None

    # -- scheduling --------------------------------------------------------------

    def _start(self, step: Step[None], at: float) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), step))

    def _sync_nodes(self, now: float) -> None:
        names = [e.name for e in self.store.iter_current(NODES)]
        current = set(names)
        added = [n for n in names if n not in self._kubelets]
        for name in set(self._kubelets) - current:
            self._kubelets.pop(name).alive = False
        first = not self._kubelets
        for i, name in enumerate(added):
            k = _Kubelet(name)
            self._kubelets[name] = k
            if first:
                # Kubelets that were running before the simulator started: renewals spread
                # evenly over the interval, each at a random point of its report cycle.
                lease_at = now + RENEW_INTERVAL * i / len(added)
                k.last_report = now - self.rng.uniform(0.0, NODE_STATUS_REPORT_FREQUENCY)
            else:
                lease_at = now  # a kubelet that just registered its node
            self._start(self._lease_loop(k), lease_at)
            status_at = now + self.rng.uniform(0.0, NODE_STATUS_UPDATE_FREQUENCY)
            self._start(self._status_loop(k), status_at)

    # -- requests ----------------------------------------------------------------

    def _stopped(self, k: _Kubelet) -> bool:
        return self.faults is not None and self.faults.kubelet_stopped(k.name)

    def _partitioned(self, k: _Kubelet) -> bool:
        return self.faults is not None and self.faults.node_partitioned(k.name)

    def _request_class(
        self, k: _Kubelet, verb: str, group: str, resource: str, subresource: str, namespace: str
    ) -> RequestClass:
        schema, level = self.classify(
            k.username, NODE_GROUPS, verb, group, resource, namespace, subresource=subresource
        )
        return RequestClass(
            verb=verb,
            api_group=group,
            resource=resource,
            subresource=subresource,
            namespace=namespace,
            username=k.username,
            groups=NODE_GROUPS,
            priority_level=level,
            flow_schema=schema,
            is_watch=False,
            is_long_running=False,
        )

    def _request(
        self,
        k: _Kubelet,
        verb: str,
        group: str,
        resource: str,
        namespace: str,
        perform: Callable[[], T],
        subresource: str = "",
    ) -> Step[T | ApiError]:
        """One client-go call from ``k``: faults, latency, 429 retries, the 10 s timeout.

        A fault's delay is real seconds (faults.py); the request is in flight that long,
        so simulated time moves ``delay * clock_factor`` meanwhile, and a request slower
        than the client timeout fails at the timeout without being served. Retry-After
        is honoured in simulated seconds: the kubelet waits with its own clock.
        """
        deadline = self.clock.time() + HEARTBEAT_TIMEOUT
        retries = 0
        while True:
            if self._stopped(k):
                raise _KubeletStoppedError
            now = self.clock.time()
            if self._partitioned(k):
                # Nothing arrives; the connection hangs until the client gives up.
                yield max(0.0, deadline - now)
                self.stats.client_timeouts += 1
                return _client_timeout()
            decision = None
            if self.faults is not None:
                decision = self.faults.decide(
                    self._request_class(k, verb, group, resource, subresource, namespace)
                )
            delay = 0.0 if decision is None else decision.delay_seconds * self.clock.factor
            if delay > 0.0:
                if now + delay >= deadline:
                    yield deadline - now
                    self.stats.client_timeouts += 1
                    return _client_timeout()
                yield delay
                if self._stopped(k):
                    raise _KubeletStoppedError
            if decision is None or decision.error is None:
                try:
                    return perform()
                except ApiError as e:
                    return e
            error = decision.error
            wait = error.retry_after_seconds
            if wait is None or retries >= CLIENT_MAX_RETRIES:
                return error
            now = self.clock.time()
            if now + wait >= deadline:
                yield max(0.0, deadline - now)
                self.stats.client_timeouts += 1
                return _client_timeout()
            retries += 1
            yield float(wait)

    # -- the Lease ---------------------------------------------------------------

    def _lease_loop(self, k: _Kubelet) -> Step[None]:
        while k.alive:
            if self._stopped(k):
                k.stopped_lease = True
            else:
                if k.stopped_lease:
                    # A restarted kubelet has no cached Lease: it GETs it first.
                    k.stopped_lease = False
                    k.latest_lease = None
                try:
                    yield from self._lease_sync(k)
                except _KubeletStoppedError:
                    k.stopped_lease = True
            yield RENEW_INTERVAL * (1.0 + self.rng.random() * RENEW_JITTER)

    def _lease_sync(self, k: _Kubelet) -> Step[None]:
        # Update from the cached Lease without a GET (controller.go sync).
        if k.latest_lease is not None and (yield from self._retry_update_lease(k, k.latest_lease)):
            return
        lease, created = yield from self._backoff_ensure_lease(k)
        k.latest_lease = lease
        if not created:
            yield from self._retry_update_lease(k, lease)

    def _retry_update_lease(self, k: _Kubelet, base: dict[str, Any]) -> Step[bool]:
        for _ in range(MAX_UPDATE_RETRIES):
            body = self._new_lease(k, base)
            result = yield from self._request(
                k,
                "update",
                COORDINATION,
                "leases",
                NODE_LEASE_NAMESPACE,
                functools.partial(self._write_lease, k, body),
            )
            if not isinstance(result, ApiError):
                k.latest_lease = result
                self.stats.lease_renewals += 1
                return True
            self.stats.lease_update_failures += 1
            if result.code == 409:
                # OptimisticLockError: re-read the Lease before trying again.
                base, _ = yield from self._backoff_ensure_lease(k)
        return False

    def _backoff_ensure_lease(self, k: _Kubelet) -> Step[tuple[dict[str, Any], bool]]:
        sleep = ENSURE_BACKOFF_START
        while True:
            result = yield from self._ensure_lease(k)
            if not isinstance(result, ApiError):
                return result
            sleep = min(2 * sleep, MAX_BACKOFF)
            yield sleep

    def _ensure_lease(self, k: _Kubelet) -> Step[tuple[dict[str, Any], bool] | ApiError]:
        self.stats.lease_gets += 1
        got = yield from self._request(
            k,
            "get",
            COORDINATION,
            "leases",
            NODE_LEASE_NAMESPACE,
            functools.partial(self._get_lease, k),
        )
        if not isinstance(got, ApiError):
            return got, False
        if got.code != 404:
            return got
        created = yield from self._request(
            k,
            "create",
            COORDINATION,
            "leases",
            NODE_LEASE_NAMESPACE,
            functools.partial(self._create_lease, k),
        )
        if isinstance(created, ApiError):
            return created
        self.stats.leases_created += 1
        return created, True

    def _get_lease(self, k: _Kubelet) -> dict[str, Any]:
        entry = self.store.get(LEASES, NODE_LEASE_NAMESPACE, k.name)
        if entry is None:
            raise not_found("leases", COORDINATION, k.name)
        return entry.obj()

    def _new_lease(self, k: _Kubelet, base: dict[str, Any]) -> dict[str, Any]:
        # newLease: a copy of the cached Lease with renewTime = now, stamped before sending.
        spec = dict(base.get("spec") or {})
        spec["holderIdentity"] = k.name
        spec["renewTime"] = format_micro_time(self.clock.time())
        return {**base, "spec": spec}

    def _write_lease(self, k: _Kubelet, body: dict[str, Any]) -> dict[str, Any]:
        _, raw = self.registry.update(LEASES, NODE_LEASE_NAMESPACE, k.name, body, k.user)
        lease: dict[str, Any] = decode(raw)
        return lease

    def _create_lease(self, k: _Kubelet) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": k.name, "namespace": NODE_LEASE_NAMESPACE}
        node = self.store.get(NODES, "", k.name)
        if node is not None:
            # setNodeOwnerFunc (pkg/kubelet/nodelease.go): the Node owns its Lease.
            uid = node.obj().get("metadata", {}).get("uid", "")
            meta["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": k.name, "uid": uid}
            ]
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": k.name,
                "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                "renewTime": format_micro_time(self.clock.time()),
            },
        }
        _, raw = self.registry.create(LEASES, NODE_LEASE_NAMESPACE, body, k.user)
        lease: dict[str, Any] = decode(raw)
        return lease

    # -- node status -------------------------------------------------------------

    def _status_loop(self, k: _Kubelet) -> Step[None]:
        while k.alive:
            if self._stopped(k):
                k.stopped_status = True
            else:
                if k.stopped_status:
                    # A restarted kubelet reports its status at once.
                    k.stopped_status = False
                    k.last_report = None
                    k.node_rv_seen = 0
                try:
                    yield from self._update_node_status(k)
                except _KubeletStoppedError:
                    k.stopped_status = True
            yield NODE_STATUS_UPDATE_FREQUENCY

    def _update_node_status(self, k: _Kubelet) -> Step[None]:
        for _ in range(NODE_STATUS_UPDATE_RETRY):
            error = yield from self._try_update_node_status(k)
            if error is None:
                return
            self.stats.status_update_failures += 1

    def _try_update_node_status(self, k: _Kubelet) -> Step[ApiError | None]:
        got = yield from self._request(
            k, "get", "", "nodes", "", functools.partial(self._get_node, k)
        )
        if isinstance(got, ApiError):
            return got
        now = self.clock.time()
        report_due = k.last_report is None or now - k.last_report >= NODE_STATUS_REPORT_FREQUENCY
        if got.rv == k.node_rv_seen and not report_due:
            return None  # nobody touched the node since we last looked: nothing changed
        node = got.obj()
        k.node_rv_seen = got.rv
        was_ready = _condition_status(node, "Ready") == "True"
        changed = _set_healthy_conditions(node, now)
        if not changed and not report_due:
            return None
        result = yield from self._request(
            k,
            "patch",
            "",
            "nodes",
            "",
            functools.partial(self._write_status, k, node),
            subresource="status",
        )
        if isinstance(result, ApiError):
            return result
        k.last_report = now
        k.node_rv_seen = result
        self.stats.status_updates += 1
        if not was_ready:
            # The node-lifecycle controller marked the node (and its pods) not ready; the
            # status manager now reconciles the pods' status with the kubelet's own.
            self._start(self._restore_pod_readiness(k), self.clock.time())
        return None

    def _get_node(self, k: _Kubelet) -> Entry:
        entry = self.store.get(NODES, "", k.name)
        if entry is None:
            raise not_found("nodes", "", k.name)
        return entry

    def _write_status(self, k: _Kubelet, node: dict[str, Any]) -> int:
        # The real kubelet sends a strategic-merge patch of its status without a
        # resourceVersion; an update without one has the same effect.
        node.get("metadata", {}).pop("resourceVersion", None)
        self.registry.update(NODES, "", k.name, node, k.user, subresource="status")
        entry = self.store.get(NODES, "", k.name)
        return 0 if entry is None else entry.rv

    def _restore_pod_readiness(self, k: _Kubelet) -> Step[None]:
        for entry in self.store.by_index(PODS, "spec.nodeName", k.name):
            if _TERMINATING_MARK in entry.raw or b'"False"' not in entry.raw:
                continue  # cheap filters before decoding
            pod = entry.obj()
            if (pod.get("status") or {}).get("phase") != "Running":
                continue
            if not _set_pod_ready(pod, format_time(self.clock.time())):
                continue
            pod["metadata"].pop("resourceVersion", None)
            result = yield from self._request(
                k,
                "update",
                "",
                "pods",
                entry.namespace,
                functools.partial(
                    self.registry.update,
                    PODS,
                    entry.namespace,
                    entry.name,
                    pod,
                    k.user,
                    subresource="status",
                ),
                subresource="status",
            )
            if not isinstance(result, ApiError):
                self.stats.pods_marked_ready += 1

    # -- graceful pod deletion ---------------------------------------------------

    def _drain_pod_watch(self) -> None:
        watch = self._pod_watch
        if watch is None or watch.closed:
            # Start (or restart after an overflow) from now, then catch up by a scan.
            self._pod_watch = self.store.watch(
                PODS,
                labels=LabelSelector(),
                fields=FieldSelector(),
                resource_version=str(self.store.resource_version),
            )
            for entry in self.store.iter_current(PODS):
                if _TERMINATING_MARK in entry.raw:
                    self._schedule_pod_deletion(entry.obj())
            return
        for kind, raw, _rv in watch.drain():
            if kind != "DELETED" and _TERMINATING_MARK in raw:
                self._schedule_pod_deletion(decode(raw))

    def _schedule_pod_deletion(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        node = (pod.get("spec") or {}).get("nodeName") or ""
        stamp = meta.get("deletionTimestamp")
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta.get("uid", "")))
        if not node or not stamp or key in self._terminating:
            return
        self._terminating.add(key)
        self._start(self._finish_deletion(key, node), parse_time(stamp))

    def _finish_deletion(self, key: tuple[str, str, str], node: str) -> Step[None]:
        namespace, name, uid = key
        try:
            while True:
                k = self._kubelets.get(node)
                if k is None:
                    return  # no kubelet will ever finish it (the pod GC's job, not ours)
                if self.store.get(PODS, namespace, name) is None:
                    return
                if not self._stopped(k):
                    try:
                        result = yield from self._request(
                            k,
                            "delete",
                            "",
                            "pods",
                            namespace,
                            functools.partial(
                                self.registry.delete,
                                PODS,
                                namespace,
                                name,
                                k.user,
                                options={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                            ),
                        )
                    except _KubeletStoppedError:
                        result = None
                    if result is not None and (
                        not isinstance(result, ApiError) or result.code in (404, 409)
                    ):
                        # Gone (404), replaced by a pod of another UID (409), or deleted now.
                        if not isinstance(result, ApiError):
                            self.stats.pod_deletions += 1
                        return
                # Stopped, unreachable or refused: the pod stays Terminating for now.
                yield POD_SYNC_RETRY
        finally:
            self._terminating.discard(key)


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    status = obj.setdefault("status", {})
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        conditions = []
        status["conditions"] = conditions
    return conditions


def _condition_status(obj: dict[str, Any], type_: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


def _set_healthy_conditions(node: dict[str, Any], now: float) -> bool:
    """Set the kubelet's conditions to healthy with a fresh heartbeat; True if any of
    them changed apart from the heartbeat (nodeStatusHasChanged)."""
    stamp = format_time(now)
    conditions = _conditions(node)
    by_type = {c.get("type"): c for c in conditions}
    changed = False
    for type_, status, reason, message in KUBELET_CONDITIONS:
        c = by_type.get(type_)
        if c is None:
            conditions.append(
                {
                    "type": type_,
                    "status": status,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                    "reason": reason,
                    "message": message,
                }
            )
            changed = True
            continue
        if c.get("status") != status:
            c["status"] = status
            c["lastTransitionTime"] = stamp
            changed = True
        if c.get("reason") != reason or c.get("message") != message:
            c["reason"] = reason
            c["message"] = message
            changed = True
        c["lastHeartbeatTime"] = stamp
    return changed


def _set_pod_ready(pod: dict[str, Any], stamp: str) -> bool:
    """Ready=True on a pod whose Ready condition is False; True if it changed."""
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready" and c.get("status") != "True":
            c["status"] = "True"
            c["lastTransitionTime"] = stamp
            return True
    return False
