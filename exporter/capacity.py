"""Capacity: the cluster against its scale limits, the control plane against its size,
node pools, and extended resources.

The seed sets the sizes kube-ballast is built for (5000 nodes, 150 000 pods, 300 000
containers, 100 pods per node) and a table that sizes control-plane nodes by the number
of workers. Past those numbers the cluster still works, until it does not: etcd, the
apiservers' watch caches and the scheduler were sized for less. So these are pure
functions of projections and aggregates that say how close the cluster is:

- **Scale** (:func:`derive_scale`): nodes, pods, containers and the fullest node against
  their limits, with a histogram of pods per node whose buckets are tenths of the
  per-node limit (plus 110 % of it), so the histogram's meaning follows the configured
  limit. Pods are those holding a node or waiting for one, as the cluster state counts
  them (finished pods hold nothing).
- **Control-plane sizing** (:func:`derive_control_plane`): the seed's table row for the
  current number of *workers* (nodes without the control-plane label), and each
  control-plane node's CPU and memory. The verdict compares the node's *capacity* with
  the row, because the table sizes machines; allocatable (capacity less the kubelet's
  reservations) is exported beside it. The table's "GB" are read as GiB, as cloud
  machine sizes are, and memory gets 10 % of slack (:data:`MEMORY_SLACK`): a machine
  of 16 GiB reports a little less in MemTotal (firmware and kernel reservations), and
  must not be called undersized for it. A managed control plane shows no control-plane
  nodes; then there is a recommendation but no verdict.
- **Node pools** (:func:`derive_pools`): nodes, schedulable nodes, pods, pod slots and
  allocatable CPU and memory per pool (the first of the configured pool labels a node
  carries; the seed's tenants that do not share nodes). Given the CPU and memory
  requested per node (the requests of the pods holding it, as the scheduler sums
  them), also what is requested and what is free per pool: allocatable less requested,
  per node and never below zero (an overcommitted node frees nothing for its
  neighbours), summed over the pool. Without them (the pod projection does not keep
  CPU and memory requests yet) those stay unknown (None).
- **Extended resources** (:func:`derive_extended_resources`): the seed's NICs as an
  extended resource (``example.com/dongle``), and any other resource whose name has a
  "/": per resource and zone the capacity, allocatable and requested amounts and the
  nodes with none left, plus what pending pods ask for (demand the zones cannot meet).
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from kubeballast.core.config import ScaleLimitsConfig
from kubeballast.exporter.heartbeat import DEFAULT_ZONE_LABEL, zone_of
from kubeballast.exporter.projections import CONTROL_PLANE_LABELS, NodeP, parse_quantity

__all__ = [
    "GIB",
    "MAX_POOLS",
    "MEMORY_SLACK",
    "OTHER_POOL",
    "SIZING_TABLE",
    "ControlPlaneNode",
    "ControlPlaneSize",
    "ControlPlaneSizing",
    "ExtendedResourceZone",
    "ExtendedResources",
    "PoolUsage",
    "ScaleDimension",
    "ScaleUsage",
    "derive_control_plane",
    "derive_extended_resources",
    "derive_pools",
    "derive_scale",
    "is_control_plane",
    "pods_per_node_buckets",
    "quantity",
    "recommended_control_plane",
]

GIB: Final = 2.0**30

SIZING_TABLE: Final[tuple[tuple[int | None, int, int], ...]] = (
    (5, 1, 4),
    (10, 2, 8),
    (100, 4, 16),
    (250, 8, 32),
    (500, 16, 64),
    (None, 32, 120),
)
"""The seed's control-plane sizing: (most workers of the row, CPUs, memory GiB); the
last row (None) is every size above 500."""

MEMORY_SLACK: Final = 0.10
"""Memory capacity may be this share below the table before a node is undersized."""

MAX_POOLS: Final = 100
"""Pools exported by name; beyond, the smallest are summed into :data:`OTHER_POOL`
(a label that is really per-node would otherwise make one series per node)."""
OTHER_POOL: Final = "_other"

NodeCounts = tuple[int, int]
"""(pods, containers) holding a node: the cluster state's ``NodePods``."""


def quantity(resources: Mapping[str, str], name: str) -> float | None:
    """A resource quantity in base units; None when absent or unparseable."""
    text = resources.get(name)
    return None if text is None else _parse(text)


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> float | None:
    # Nodes of a pool report the same few strings ("16", "65288144Ki"): 5000 nodes
    # times their resources is 25 000 parses per scrape without the cache, a handful
    # with it.
    try:
        return parse_quantity(text)
    except ValueError:
        return None


# --- scale ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleDimension:
    name: str
    """``nodes``, ``pods``, ``containers`` or ``pods_per_node`` (the fullest node)."""
    current: float
    limit: float

    @property
    def ratio(self) -> float:
        return self.current / self.limit


@dataclass(frozen=True)
class ScaleUsage:
    dimensions: tuple[ScaleDimension, ...]
    pods_per_node_buckets: tuple[tuple[float, int], ...]
    """Cumulative (upper bound, nodes with at most that many pods); last is +Inf."""
    pods_per_node_sum: int
    nodes_over_pod_limit: int

    def dimension(self, name: str) -> ScaleDimension:
        return next(d for d in self.dimensions if d.name == name)


def pods_per_node_buckets(limit: int) -> tuple[float, ...]:
    """Tenths of the per-node limit, and 110 % of it (100 -> 10, 20 ... 100, 110)."""
    return tuple(limit * step / 10 for step in range(1, 12))


def derive_scale(
    node_names: Iterable[str],
    pods_by_node: Mapping[str, NodeCounts],
    limits: ScaleLimitsConfig,
) -> ScaleUsage:
    """Usage against ``limits``. ``pods_by_node`` holds (pods, containers) per node,
    pending pods under ""; nodes absent from it have none."""
    names = set(node_names)
    # Pods may still hold a node the cache no longer has (deleted, pods not yet gone).
    names.update(name for name in pods_by_node if name)
    pods = sum(counts[0] for counts in pods_by_node.values())
    containers = sum(counts[1] for counts in pods_by_node.values())
    buckets = pods_per_node_buckets(limits.pods_per_node)
    counts = [0] * (len(buckets) + 1)
    fullest = 0
    over = 0
    total_on_nodes = 0
    for name in names:
        on_node = pods_by_node.get(name, (0, 0))[0]
        counts[bisect.bisect_left(buckets, on_node)] += 1
        fullest = max(fullest, on_node)
        total_on_nodes += on_node
        if on_node > limits.pods_per_node:
            over += 1
    cumulative: list[tuple[float, int]] = []
    running = 0
    for bound, count in zip((*buckets, float("inf")), counts, strict=True):
        running += count
        cumulative.append((bound, running))
    return ScaleUsage(
        dimensions=(
            ScaleDimension("nodes", len(names), limits.nodes),
            ScaleDimension("pods", pods, limits.pods),
            ScaleDimension("containers", containers, limits.containers),
            ScaleDimension("pods_per_node", fullest, limits.pods_per_node),
        ),
        pods_per_node_buckets=tuple(cumulative),
        pods_per_node_sum=total_on_nodes,
        nodes_over_pod_limit=over,
    )


# --- control plane ----------------------------------------------------------------------


@dataclass(frozen=True)
class ControlPlaneSize:
    cpu_cores: float
    memory_bytes: float


def recommended_control_plane(workers: int) -> ControlPlaneSize:
    """The seed's row for ``workers`` worker nodes (0 reads as the first row)."""
    for most, cpus, gib in SIZING_TABLE:
        if most is None or workers <= most:
            return ControlPlaneSize(float(cpus), gib * GIB)
    raise AssertionError("the sizing table ends with an open row")  # pragma: no cover


def is_control_plane(node: NodeP, label: str) -> bool:
    """Whether ``node`` carries ``label`` (any value); with the standard label, the
    pre-1.20 ``node-role.kubernetes.io/master`` counts too."""
    if label == CONTROL_PLANE_LABELS[0]:
        return node.control_plane
    return label in node.labels


@dataclass(frozen=True)
class ControlPlaneNode:
    name: str
    cpu_capacity: float | None
    memory_capacity: float | None
    cpu_allocatable: float | None
    memory_allocatable: float | None
    undersized: bool | None
    """None when the node does not report its capacity."""


@dataclass(frozen=True)
class ControlPlaneSizing:
    workers: int
    recommended: ControlPlaneSize
    nodes: tuple[ControlPlaneNode, ...]
    """Control-plane nodes by name (none with a managed control plane)."""

    @property
    def undersized(self) -> bool | None:
        """Any control-plane node undersized; None when no node could be judged."""
        verdicts = [n.undersized for n in self.nodes if n.undersized is not None]
        return any(verdicts) if verdicts else None


def derive_control_plane(
    nodes: Iterable[NodeP], control_plane_label: str = CONTROL_PLANE_LABELS[0]
) -> ControlPlaneSizing:
    """The recommended size for the current workers, and each control-plane node's."""
    control: list[NodeP] = []
    workers = 0
    for node in nodes:
        if is_control_plane(node, control_plane_label):
            control.append(node)
        else:
            workers += 1
    wanted = recommended_control_plane(workers)
    judged: list[ControlPlaneNode] = []
    for node in sorted(control, key=lambda n: n.name):
        cpu = quantity(node.capacity, "cpu")
        memory = quantity(node.capacity, "memory")
        undersized = None
        if cpu is not None and memory is not None:
            undersized = cpu < wanted.cpu_cores or memory < wanted.memory_bytes * (1 - MEMORY_SLACK)
        judged.append(
            ControlPlaneNode(
                name=node.name,
                cpu_capacity=cpu,
                memory_capacity=memory,
                cpu_allocatable=quantity(node.allocatable, "cpu"),
                memory_allocatable=quantity(node.allocatable, "memory"),
                undersized=undersized,
            )
        )
    return ControlPlaneSizing(workers, wanted, tuple(judged))


# --- node pools -------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolUsage:
    pool: str
    nodes: int
    schedulable_nodes: int
    """Ready and not cordoned."""
    pods: int
    pod_capacity: float
    """Allocatable ``pods`` summed over the pool's nodes."""
    cpu_allocatable_cores: float
    memory_allocatable_bytes: float
    cpu_requested_cores: float | None = None
    """CPU requested by the pods holding the pool's nodes (None: requests not known)."""
    memory_requested_bytes: float | None = None
    cpu_free_cores: float | None = None
    """Allocatable less requested CPU, per node and never below 0, summed."""
    memory_free_bytes: float | None = None

    @property
    def free_pod_slots(self) -> float:
        return max(0.0, self.pod_capacity - self.pods)


def pool_of(node: NodeP, pool_labels: Sequence[str]) -> str:
    """The value of the first of ``pool_labels`` the node carries; "" with none."""
    for label in pool_labels:
        value = node.labels.get(label)
        if value is not None:
            return value
    return ""


def derive_pools(
    nodes: Iterable[NodeP],
    pods_by_node: Mapping[str, NodeCounts],
    pool_labels: Sequence[str],
    *,
    max_pools: int = MAX_POOLS,
    requests_by_node: Mapping[str, Mapping[str, float]] | None = None,
) -> tuple[PoolUsage, ...]:
    """Usage per pool, by name; at most ``max_pools`` (the rest as ``_other``).

    ``requests_by_node``: the ``cpu`` (cores) and ``memory`` (bytes) requested by the
    pods holding each node (nodes without requests may be absent); without it the
    requested and free amounts are None.
    """
    totals: dict[str, list[float]] = {}
    no_requests: Mapping[str, float] = {}
    for node in nodes:
        row = totals.setdefault(pool_of(node, pool_labels), [0.0] * 10)
        row[0] += 1
        if node.ready == "True" and not node.unschedulable:
            row[1] += 1
        row[2] += pods_by_node.get(node.name, (0, 0))[0]
        row[3] += quantity(node.allocatable, "pods") or 0.0
        cpu = quantity(node.allocatable, "cpu") or 0.0
        memory = quantity(node.allocatable, "memory") or 0.0
        row[4] += cpu
        row[5] += memory
        if requests_by_node is not None:
            requested = requests_by_node.get(node.name, no_requests)
            cpu_requested = requested.get("cpu", 0.0)
            memory_requested = requested.get("memory", 0.0)
            row[6] += cpu_requested
            row[7] += memory_requested
            row[8] += max(0.0, cpu - cpu_requested)
            row[9] += max(0.0, memory - memory_requested)
    if len(totals) > max_pools:
        ranked = sorted(totals, key=lambda pool: (-totals[pool][0], pool))
        other = [0.0] * 10
        for pool in ranked[max_pools - 1 :]:
            other = [a + b for a, b in zip(other, totals.pop(pool), strict=True)]
        totals[OTHER_POOL] = other
    known = requests_by_node is not None
    return tuple(
        PoolUsage(
            pool,
            int(r[0]),
            int(r[1]),
            int(r[2]),
            r[3],
            r[4],
            r[5],
            cpu_requested_cores=r[6] if known else None,
            memory_requested_bytes=r[7] if known else None,
            cpu_free_cores=r[8] if known else None,
            memory_free_bytes=r[9] if known else None,
        )
        for pool, r in sorted(totals.items())
    )


# --- extended resources -----------------------------------------------------------------


@dataclass(frozen=True)
class ExtendedResourceZone:
    resource: str
    zone: str
    nodes: int
    """Nodes advertising the resource (capacity above 0)."""
    capacity: float
    allocatable: float
    requested: float
    """Requests of the pods holding those nodes."""
    exhausted_nodes: int
    """Nodes advertising the resource with nothing left to allocate."""


@dataclass(frozen=True)
class ExtendedResources:
    zones: tuple[ExtendedResourceZone, ...]
    """By (resource, zone)."""
    pending_requests: Mapping[str, float]
    """What pods without a node yet ask for, by resource."""


def _is_extended(name: str) -> bool:
    # Extended resources are the domain-qualified names; "kubernetes.io/" ones are
    # reserved for the built-in kinds.
    return "/" in name and not name.startswith("kubernetes.io/")


def derive_extended_resources(
    nodes: Iterable[NodeP],
    requests_by_node: Mapping[str, Mapping[str, float]],
    zone_label: str = DEFAULT_ZONE_LABEL,
) -> ExtendedResources:
    """Extended resources per resource and zone. ``requests_by_node`` sums the pods'
    extended requests per node (pending pods under "")."""
    # (resource, zone) -> [nodes, capacity, allocatable, requested, exhausted]
    rows: dict[tuple[str, str], list[float]] = {}
    for node in nodes:
        zone = zone_of(node, zone_label)
        requested = requests_by_node.get(node.name, {})
        names = {n for n in (*node.capacity, *node.allocatable) if _is_extended(n)}
        names.update(n for n in requested if _is_extended(n))
        for name in names:
            row = rows.setdefault((name, zone), [0, 0.0, 0.0, 0.0, 0])
            capacity = quantity(node.capacity, name) or 0.0
            allocatable = quantity(node.allocatable, name) or 0.0
            used = requested.get(name, 0.0)
            row[1] += capacity
            row[2] += allocatable
            row[3] += used
            if capacity > 0:
                row[0] += 1
                # 1e-9: requests are sums of floats; 0.1 * 3 must equal 0.3 here.
                if allocatable - used <= 1e-9:
                    row[4] += 1
    return ExtendedResources(
        zones=tuple(
            ExtendedResourceZone(name, zone, int(r[0]), r[1], r[2], r[3], int(r[4]))
            for (name, zone), r in sorted(rows.items())
        ),
        pending_requests={
            name: amount
            for name, amount in sorted(requests_by_node.get("", {}).items())
            if _is_extended(name)
        },
    )
