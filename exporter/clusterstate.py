"""The cluster's state as the cluster-state metrics need it: caches, indexes, snapshots.

Heartbeat lag per node, zone disruption, pods and extended resources per node, and how
each workload's pods spread over zones are all questions about *every* node, Lease and
pod at once, asked on every scrape. :class:`ClusterState` answers them from six
informers (nodes, the node Leases in ``kube-node-lease``, pods, ReplicaSets,
Deployments, StatefulSets; :mod:`~kubeballast.exporter.informer`) without walking
150 000 pods per scrape: the informers' callbacks keep the per-node and per-owner
aggregates up to date one change at a time, so a pod change costs a few dictionary
updates, and a scrape costs a copy of what changed since the last one.

Consistency for the collectors comes from two rules:

- **Everything happens on the event loop.** Informer callbacks run between awaits and
  each is applied whole, so no reader on the loop sees an aggregate half-updated.
- **Snapshots are copies.** :meth:`ClusterState.snapshot` returns a
  :class:`ClusterSnapshot` of plain immutable-by-convention data (tuples, fresh
  dicts), built once per state *version* (every applied change bumps it) and shared by
  every collector until the next change. A collector holding a snapshot can take its
  time; the caches move on without it.

Pods are counted against their node while they hold it: phase neither Succeeded nor
Failed (a finished pod's resources are free), terminating ones included (their
containers are still running until the kubelet confirms). Pods are indexed by their
*direct* controller owner (a ReplicaSet, a StatefulSet, a DaemonSet ...), and
ReplicaSets are resolved to their Deployment when a snapshot is built, not when a pod
arrives: the pod and ReplicaSet informers sync concurrently, so a pod can arrive before
its ReplicaSet, and resolving late means the order never matters.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

from kubeballast.core.kube import KubeClientProvider
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.contract import SnapshotView
from kubeballast.exporter.informer import (
    PAGE_SIZE,
    Informer,
    InformerCollector,
    InformerStatus,
    KubeHttp,
    ResourceSpec,
    SyncMode,
    check_health,
)
from kubeballast.exporter.projections import (
    LeaseP,
    NodeP,
    PodP,
    RawDeployment,
    RawLease,
    RawNode,
    RawPod,
    RawReplicaSet,
    RawStatefulSet,
    ReplicaSetP,
    WorkloadP,
    decode_deployment,
    decode_lease,
    decode_node,
    decode_pod,
    decode_replicaset,
    decode_statefulset,
)

__all__ = [
    "NODE_LEASE_NAMESPACE",
    "ClusterSnapshot",
    "ClusterState",
    "NodePods",
    "OwnerKey",
    "shared_cluster_state",
]

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"

OwnerKey = tuple[str, str, str]
"""(kind, namespace, name) of a pod's owning workload: ``("Deployment", "team-a",
"web")``; a pod without an owner is not indexed by owner."""

_FINISHED = frozenset({"Succeeded", "Failed"})


class NodePods(NamedTuple):
    """Pods holding a node and their regular containers."""

    pods: int
    containers: int


@dataclass(frozen=True)
class ClusterSnapshot:
    """The cluster state at one version: plain data, never changed after it is built.

    Mappings are fresh dicts owned by the snapshot; treat them (and the dicts inside
    projections) as read-only.
    """

    version: int
    taken_at: float
    """Wall-clock time the snapshot was built."""
    synced: bool
    """Every informer has read its initial state: before that, aggregates are partial
    and collectors should say nothing rather than report a half-known cluster."""
    informers: Mapping[str, InformerStatus]
    nodes: Mapping[str, NodeP]
    """By node name."""
    node_leases: Mapping[str, LeaseP]
    """The Leases of ``kube-node-lease`` by name (a node's Lease has the node's name)."""
    pods: tuple[PodP, ...]
    replicasets: Mapping[str, ReplicaSetP]
    """By ``namespace/name``."""
    workloads: Mapping[OwnerKey, WorkloadP]
    """Deployments and StatefulSets by (kind, namespace, name)."""
    pods_by_node: Mapping[str, NodePods]
    """Pods holding each node; nodes without pods are absent. Pending pods (no node
    yet) are under ""."""
    extended_requests_by_node: Mapping[str, Mapping[str, float]]
    """Requests of extended resources (``example.com/dongle``) summed per node, for
    nodes where some pod requests one."""
    owner_pods_by_node: Mapping[OwnerKey, Mapping[str, int]]
    """Pods per node of every owning workload, ReplicaSets resolved to their Deployment
    (a ReplicaSet without one stays ``("ReplicaSet", ns, name)``)."""
    nodes_by_zone: Mapping[str, tuple[str, ...]]
    """Node names per zone (sorted); nodes without a zone label under ""."""
    requests_by_node: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """``cpu`` (cores) and ``memory`` (bytes) requested by the pods holding each node."""


class _Counter:
    """Bumps the state's version on every change of a kind that has no index."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state

    def on_add(self, new: object) -> None:
        self._state.version += 1

    def on_update(self, old: object, new: object) -> None:
        self._state.version += 1

    def on_delete(self, old: object) -> None:
        self._state.version += 1


class _NodeIndex:
    """Node names by zone."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state
        self.by_zone: dict[str, set[str]] = {}

    def on_add(self, new: NodeP) -> None:
        self._state.version += 1
        self.by_zone.setdefault(new.zone, set()).add(new.name)

    def on_update(self, old: NodeP, new: NodeP) -> None:
        self._state.version += 1
        if old.zone != new.zone:
            self._remove(old)
            self.by_zone.setdefault(new.zone, set()).add(new.name)

    def on_delete(self, old: NodeP) -> None:
        self._state.version += 1
        self._remove(old)

    def _remove(self, node: NodeP) -> None:
        names = self.by_zone.get(node.zone)
        if names is not None:
            names.discard(node.name)
            if not names:
                del self.by_zone[node.zone]


class _PodIndex:
    """Pods and containers per node, extended requests per node, pods per owner and node.

    Every update is "remove the old contribution, add the new one", which keeps the
    arithmetic trivially right whatever changed (node, phase, owner, requests).
    """

    def __init__(self, state: ClusterState) -> None:
        self._state = state
        self.pods: dict[str, int] = {}
        self.containers: dict[str, int] = {}
        self.extended: dict[str, dict[str, float]] = {}
        self.requests: dict[str, list[float]] = {}
        """Node -> [cpu cores, memory bytes] requested."""
        self.owners: dict[OwnerKey, dict[str, int]] = {}

    def on_add(self, new: PodP) -> None:
        self._state.version += 1
        self._apply(new, 1)

    def on_update(self, old: PodP, new: PodP) -> None:
        self._state.version += 1
        self._apply(old, -1)
        self._apply(new, 1)

    def on_delete(self, old: PodP) -> None:
        self._state.version += 1
        self._apply(old, -1)

    def _apply(self, pod: PodP, sign: int) -> None:
        if pod.phase in _FINISHED:
            return
        node = pod.node_name
        _add(self.pods, node, sign)
        _add(self.containers, node, sign * pod.containers)
        if pod.cpu_request or pod.memory_request:
            totals = self.requests.setdefault(node, [0.0, 0.0])
            totals[0] += sign * pod.cpu_request
            totals[1] += sign * pod.memory_request
            if abs(totals[0]) < 1e-9 and abs(totals[1]) < 1e-3:
                del self.requests[node]
        if pod.extended_requests:
            per_node = self.extended.setdefault(node, {})
            for name, amount in pod.extended_requests.items():
                total = per_node.get(name, 0.0) + sign * amount
                # Sums of floats that should cancel exactly (1.0 - 1.0) do; a residue
                # from fractional quantities is rounded away rather than kept forever.
                if abs(total) < 1e-9:
                    per_node.pop(name, None)
                else:
                    per_node[name] = total
            if not per_node:
                del self.extended[node]
        if pod.owner_kind:
            key = (pod.owner_kind, pod.namespace, pod.owner_name)
            nodes = self.owners.setdefault(key, {})
            _add(nodes, node, sign)
            if not nodes:
                del self.owners[key]


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


class ClusterState:
    """Informers over the cluster's nodes, node Leases, pods, ReplicaSets, Deployments
    and StatefulSets, with incrementally maintained indexes and cheap snapshots.

    ``kube`` is the exporter's kube client provider (``context.kube``), whose
    configuration supplies the server and credentials, or a ready :class:`KubeHttp`
    (which the state then does not close). :meth:`start` starts one supervised task per
    informer; :meth:`stop` cancels them and closes what the state opened.
    """

    def __init__(
        self,
        kube: KubeClientProvider | KubeHttp,
        *,
        mode: SyncMode = "auto",
        page_size: int = PAGE_SIZE,
        node_lease_namespace: str = NODE_LEASE_NAMESPACE,
        watch_timeout_seconds: tuple[int, int] | None = None,
    ) -> None:
        self._kube = kube
        self._http = kube if isinstance(kube, KubeHttp) else None
        self._owns_http = not isinstance(kube, KubeHttp)
        self._mode: SyncMode = mode
        self._page_size = page_size
        self._watch_timeout = watch_timeout_seconds
        self.version = 0
        """Bumped by every change applied to any cache."""
        self._snapshot: ClusterSnapshot | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._start_lock = asyncio.Lock()
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()

        self._node_index = _NodeIndex(self)
        self._pod_index = _PodIndex(self)
        self._specs = (
            ResourceSpec("nodes", "v1", "nodes", RawNode, decode_node),
            ResourceSpec(
                "leases",
                "coordination.k8s.io/v1",
                "leases",
                RawLease,
                decode_lease,
                namespace=node_lease_namespace,
            ),
            ResourceSpec("pods", "v1", "pods", RawPod, decode_pod),
            ResourceSpec("replicasets", "apps/v1", "replicasets", RawReplicaSet, decode_replicaset),
            ResourceSpec("deployments", "apps/v1", "deployments", RawDeployment, decode_deployment),
            ResourceSpec(
                "statefulsets", "apps/v1", "statefulsets", RawStatefulSet, decode_statefulset
            ),
        )
        self.informers: dict[str, Informer[Any, Any]] = {}

    # --- lifecycle --------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    async def start(self) -> None:
        """Create the informers and start their tasks (idempotent; safe to race)."""
        async with self._start_lock:
            if self._tasks:
                return
            if self._http is None:
                assert isinstance(self._kube, KubeClientProvider)
                self._http = await KubeHttp.from_provider(self._kube)
            options: dict[str, Any] = {"mode": self._mode, "page_size": self._page_size}
            if self._watch_timeout is not None:
                options["watch_timeout_seconds"] = self._watch_timeout
            for spec in self._specs:
                informer: Informer[Any, Any] = Informer(spec, self._http, **options)
                if spec.name == "nodes":
                    informer.add_handler(self._node_index)
                elif spec.name == "pods":
                    informer.add_handler(self._pod_index)
                else:
                    informer.add_handler(_Counter(self))
                self.informers[spec.name] = informer
            for name, informer in self.informers.items():
                task = asyncio.create_task(informer.run(), name=f"informer-{name}")
                task.add_done_callback(self._on_task_done)
                self._tasks.append(task)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        # An informer's run() never returns; ending is a bug. Logged with its
        # traceback, and wait() raises it so the process stops instead of serving a
        # cache that silently stopped moving (STYLE.md item 10).
        error = task.exception() or RuntimeError(f"{task.get_name()} returned")
        log.error("cluster-state task %s died", task.get_name(), exc_info=error)
        if self._failure is None:
            self._failure = error
        self._failed.set()

    async def wait(self) -> NoReturn:
        """Wait until an informer task dies, then raise its exception."""
        await self._failed.wait()
        assert self._failure is not None
        raise RuntimeError("a cluster-state informer died") from self._failure

    async def stop(self) -> None:
        """Cancel the informers and close the HTTP session if the state made it."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def synced(self) -> bool:
        return bool(self.informers) and all(i.synced for i in self.informers.values())

    async def wait_synced(self) -> None:
        """Return once every informer has read its initial state (start() first)."""
        if not self.informers:
            raise RuntimeError("the cluster state is not started")
        synced: asyncio.Future[Any] = asyncio.gather(
            *(i.wait_synced() for i in self.informers.values())
        )
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait([synced, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            synced.cancel()
            failed.cancel()
        if self._failure is not None:
            raise RuntimeError("a cluster-state informer died") from self._failure

    @property
    def http(self) -> KubeHttp | None:
        """The HTTP client in use (its ``requests`` count is the load put on the server)."""
        return self._http

    # --- reading ----------------------------------------------------------------------

    def snapshot(self) -> ClusterSnapshot:
        """The current state as plain data; rebuilt only when something changed."""
        cached = self._snapshot
        if cached is not None and cached.version == self.version:
            return cached
        snapshot = self._build_snapshot()
        self._snapshot = snapshot
        return snapshot

    def _items(self, name: str) -> Mapping[str, Any]:
        informer = self.informers.get(name)
        return informer.items() if informer is not None else {}

    def _build_snapshot(self) -> ClusterSnapshot:
        replicasets: dict[str, ReplicaSetP] = dict(self._items("replicasets"))
        workloads: dict[OwnerKey, WorkloadP] = {}
        for name in ("deployments", "statefulsets"):
            for workload in self._items(name).values():
                workloads[(workload.kind, workload.namespace, workload.name)] = workload
        index = self._pod_index
        owners: dict[OwnerKey, dict[str, int]] = {}
        for (kind, namespace, name), nodes in index.owners.items():
            key: OwnerKey = (kind, namespace, name)
            if kind == "ReplicaSet":
                rs = replicasets.get(f"{namespace}/{name}")
                if rs is not None and rs.owner_kind == "Deployment":
                    key = ("Deployment", namespace, rs.owner_name)
            merged = owners.get(key)
            if merged is None:
                owners[key] = dict(nodes)
            else:
                # Two ReplicaSets of one Deployment (a rollout in progress).
                for node, count in nodes.items():
                    merged[node] = merged.get(node, 0) + count
        containers = index.containers
        return ClusterSnapshot(
            version=self.version,
            taken_at=time.time(),
            synced=self.synced,
            informers={name: i.status() for name, i in self.informers.items()},
            nodes=dict(self._items("nodes")),
            node_leases={lease.name: lease for lease in self._items("leases").values()},
            pods=tuple(self._items("pods").values()),
            replicasets=replicasets,
            workloads=workloads,
            pods_by_node={
                node: NodePods(count, containers.get(node, 0)) for node, count in index.pods.items()
            },
            extended_requests_by_node={
                node: dict(requests) for node, requests in index.extended.items()
            },
            requests_by_node={
                node: {"cpu": cpu, "memory": memory}
                for node, (cpu, memory) in index.requests.items()
            },
            owner_pods_by_node=owners,
            nodes_by_zone={
                zone: tuple(sorted(names)) for zone, names in self._node_index.by_zone.items()
            },
        )

    # --- exporter integration ---------------------------------------------------------

    def health_sources(self) -> list[_HealthSource]:
        """One source of kind ``informer`` per resource, whose refresh starts the state
        (idempotent). Factories build before anything runs; the runner's first refresh
        is the first moment inside the running exporter, so the caches start there."""
        return [_HealthSource(self, spec.name) for spec in self._specs]

    def collector(self) -> InformerCollector:
        """``kubeballast_informer_*`` over this state's informers (once they exist)."""
        return InformerCollector(_LiveInformers(self))


class _LiveInformers:
    """The state's informers as they are when iterated (none before start())."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state

    def __iter__(self) -> Any:
        return iter(list(self._state.informers.values()))


class _HealthSource:
    """An informer's health as a source; starts the cluster state when first run."""

    def __init__(self, state: ClusterState, resource: str) -> None:
        self._state = state
        self._resource = resource

    @property
    def kind(self) -> str:
        return "informer"

    @property
    def instance(self) -> str:
        return self._resource

    @property
    def interval_seconds(self) -> float:
        return 15.0

    @property
    def timeout_seconds(self) -> float:
        return 5.0

    async def refresh(self) -> InformerStatus:
        await self._state.start()
        if self._state._failure is not None:
            raise RuntimeError("a cluster-state informer died") from self._state._failure
        return check_health(self._state.informers[self._resource].status())


_STATES: weakref.WeakKeyDictionary[ExporterContext, ClusterState] = weakref.WeakKeyDictionary()
_VIEWS: weakref.WeakKeyDictionary[ExporterContext, list[SnapshotView[InformerStatus]]] = (
    weakref.WeakKeyDictionary()
)


def shared_cluster_state(context: ExporterContext) -> ClusterState:
    """The exporter's one cluster state (per context), built over ``context.kube``.

    The first call also registers its health sources with the context (kind
    ``informer``), whose first refresh starts the informers. Call it from factories
    only (it does no I/O). It is stopped when the exporter closes the context.
    """
    state = _STATES.get(context)
    if state is None:
        state = _STATES[context] = ClusterState(context.kube)
        context.on_close(state.stop)
        _VIEWS[context] = [context.add_source(source) for source in state.health_sources()]
    return state
