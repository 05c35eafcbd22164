"""The scenario model: every object a simulated large cluster starts with.

The simulator serves a cluster that never existed, so something has to invent one that
looks, to a client, like a real kubeadm cluster of up to 5000 nodes and 150 000 pods:
objects shaped as the real apiserver returns them (defaults filled in by admission and
the controllers, status consistent with the pods), placed the way a scheduler would have
placed them, and with the features the product looks for planted on purpose:

* workload pods spread over zones by topologySpreadConstraints, one per node by
  podAntiAffinity, and a documented few Deployments crowded into ``zone-a``
  (:data:`CROWDED_DEPLOYMENTS`) so that zone risk can be detected;
* the default tolerations of the DefaultTolerationSeconds admission plugin on every
  ordinary pod, and a few Deployments with their own ``tolerationSeconds``
  (:data:`CUSTOM_TOLERATION_SECONDS`) so that taint-based eviction timing can be tested;
* the per-node NIC extended resource (:data:`NIC_RESOURCE`) on one node pool, requested
  by :data:`NIC_DEPLOYMENTS`;
* large ConfigMaps (:data:`LARGE_CONFIGMAPS`) and Events, the seed's etcd burdens;
* control-plane static pods whose command lines carry the flags the self-check reads.

:func:`generate` yields ``(ResourceType, object)`` pairs lazily, owners before what they
own, without ``metadata.resourceVersion`` (the store assigns it on insert). It is
deterministic: all randomness comes from ``random.Random(settings.seed)`` and all times
from the ``now`` argument, so two runs with the same settings are identical and tests
can name objects.

Speed: 150 000 pods must be generated in a few seconds on one core, so each workload
builds its pod template pieces once (containers, tolerations, affinity, labels, owner
references, conditions) and every pod of the workload *shares* them. Consumers encode
each object (msgspec) as it arrives, so sharing is invisible on the wire; anyone who
keeps a yielded object and mutates it in place must copy it first. Nodes and Leases,
which simulated kubelets and controllers update, are built fresh for each object.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .resources import (
    APPS,
    BY_KEY,
    CONFIGMAPS,
    CORE,
    EVENTS,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    SERVICE_ACCOUNTS,
    ResourceType,
)
from .settings import NodeLifecycleSettings, ScenarioSettings

Obj = dict[str, Any]

SERVICES = BY_KEY[(CORE, "services")]
ENDPOINTS = BY_KEY[(CORE, "endpoints")]
DEPLOYMENTS = BY_KEY[(APPS, "deployments")]
REPLICASETS = BY_KEY[(APPS, "replicasets")]
STATEFULSETS = BY_KEY[(APPS, "statefulsets")]
DAEMONSETS = BY_KEY[(APPS, "daemonsets")]

# --- Well-known names, exported for the simulator's other parts and for tests ----------

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
HOSTNAME_LABEL = "kubernetes.io/hostname"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
NODE_POOL_LABEL = "example.com/node-pool"
"""Stands for the cloud-specific pool labels (each provider has its own name for it)."""
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
NIC_RESOURCE = "example.com/dongle"
"""The seed's per-node extra NIC, advertised as an extended resource."""
NODE_LEASE_NAMESPACE = "kube-node-lease"
REGION = "region-1"
KUBERNETES_VERSION = "v1.31.4"
ETCD_VERSION = "3.5.15-0"

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", NODE_LEASE_NAMESPACE)
TENANT_NAMESPACES = ("team-a", "team-b", "team-c", "team-d", "team-e")

DAEMONSET_NAMES = ("calico-node", "kube-proxy")
"""DaemonSets in kube-system: one pod on every node, control plane included (only as many
as ``pods_per_node`` leaves room for: with 1 pod per node, only calico-node)."""

CONTROL_PLANE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
"""Static pods on every control-plane node, named ``<component>-<node>``."""

SPREAD_DEPLOYMENTS = (("team-a", "web"), ("team-b", "api"))
"""Deployments with a zone topologySpreadConstraint (maxSkew 1, DoNotSchedule)."""
ANTI_AFFINITY_DEPLOYMENTS = (("team-a", "cache"),)
"""Deployments with required podAntiAffinity on the hostname: one pod per node."""
CROWDED_DEPLOYMENTS = (("team-c", "legacy-billing"), ("team-c", "legacy-reports"))
"""Deployments with every pod in zone-a and nothing in their spec that asks for it, as
happens when a workload was scheduled while the other zones were full: zone risk that
only the placement reveals."""
CUSTOM_TOLERATION_SECONDS = {("team-e", "fast-failover"): 60, ("team-e", "sticky-cache"): 3600}
"""Deployments that set their own not-ready/unreachable tolerationSeconds."""
NIC_DEPLOYMENTS = (("team-d", "packet-gateway"),)
"""Deployments whose pods request one :data:`NIC_RESOURCE` (nic pool nodes only)."""
LARGE_CONFIGMAPS = (
    ("team-d", "feature-model-0"),
    ("team-d", "feature-model-1"),
    ("team-d", "feature-model-2"),
)
"""ConfigMaps of about 500 KiB each: the seed's example of what bloats etcd."""
LARGE_CONFIGMAP_BYTES = 500 * 1024

NODE_LEASE_DURATION_SECONDS = 40
LEADER_LEASE_DURATION_SECONDS = 15

# Worker node pools, assigned by row within a zone so every zone gets every pool.
# (name, instance type, CPUs, memory GiB, NICs)
_POOLS = {
    "general": ("standard-16", 16, 64, 0),
    "memory": ("highmem-16", 16, 128, 0),
    "nic": ("network-32", 32, 128, 4),
}
_POOL_PATTERN = ("general", "general", "nic", "memory")

# The seed's control-plane sizing table: (largest worker count, CPUs, memory GiB).
_CONTROL_PLANE_SIZING = (
    (5, 1, 4),
    (10, 2, 8),
    (100, 4, 16),
    (250, 8, 32),
    (500, 16, 64),
)
_CONTROL_PLANE_LARGEST = (32, 120)

# utilrand.String's alphabet (no vowels, no confusable digits): pod name suffixes and
# pod-template-hash values are drawn from it, as in k8s.io/apimachinery/pkg/util/rand.
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"

_SIDECARS = (
    ("log-shipper", "docker.io/fluent/fluent-bit:3.1.9"),
    ("metrics-exporter", "quay.io/prometheus/statsd-exporter:v0.27.2"),
    ("config-reloader", "ghcr.io/jimmidyson/configmap-reload:v0.14.0"),
    ("envoy", "docker.io/envoyproxy/envoy:v1.31.2"),
)

_FILLER_APPS = (
    "checkout",
    "search",
    "catalog",
    "payments",
    "inventory",
    "orders",
    "profile",
    "recommend",
    "notify",
    "ledger",
    "auth",
    "media",
    "reviews",
    "shipping",
    "pricing",
    "quotes",
    "gateway",
    "reports",
    "indexer",
    "scheduler",
)
# Replica counts of filler workloads; a long tail like real clusters, mean about 11.
_FILLER_SIZES = (1, 2, 2, 3, 3, 3, 4, 5, 5, 6, 8, 10, 12, 15, 20, 30, 50)

_MAX_PODS_PER_NODE = 250
_SERVICE_CIDR = "10.96.0.0/12"
_CLUSTER_CIDR = "10.64.0.0/10"


# --- Small public helpers ----------------------------------------------------------------


def zone_name(i: int) -> str:
    """The i-th zone (0-based): zone-a ... zone-z, then zone-aa, zone-ab ..."""
    if i < 0:
        raise ValueError(f"zone index must be >= 0, got {i}")
    letters = ""
    n = i + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return f"zone-{letters}"


def node_name(i: int) -> str:
    """The i-th worker node (0-based)."""
    return f"node-{i:04d}"


def node_zone_index(i: int, zones: int) -> int:
    """The zone of worker ``i``: round robin, so zones differ by at most one node."""
    return i % zones


def control_plane_node_name(i: int) -> str:
    """The i-th control-plane node (0-based): cp-1, cp-2 ..."""
    return f"cp-{i + 1}"


def control_plane_size(workers: int) -> tuple[int, int]:
    """(CPUs, memory GiB) of a control-plane node per the seed's sizing table."""
    for largest, cpus, gib in _CONTROL_PLANE_SIZING:
        if workers <= largest:
            return cpus, gib
    return _CONTROL_PLANE_LARGEST


def _utc(dt: datetime.datetime) -> datetime.datetime:
    # A naive datetime is taken as UTC: the simulator's clock never runs in local time.
    if dt.tzinfo is None:
        return dt
    return dt.astimezone(datetime.UTC).replace(tzinfo=None)


def format_time(dt: datetime.datetime) -> str:
    """metav1.Time as the apiserver writes it: RFC3339, whole seconds, 'Z'."""
    return _utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(dt: datetime.datetime) -> str:
    """metav1.MicroTime as the apiserver writes it: six fractional digits, 'Z'."""
    return _utc(dt).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@functools.cache
def _image_id(image: str) -> str:
    """A stable digest reference for an image, as containerd reports it in imageID."""
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{image.rsplit(':', 1)[0]}@sha256:{digest}"


def _go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration.String() prints it (50s, 5m0s, 500ms)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    frac = seconds - whole
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    sec = f"{s + frac:g}s"
    if h:
        return f"{h}h{m}m{sec}"
    if m:
        return f"{m}m{sec}"
    return sec


# --- Placement ---------------------------------------------------------------------------


class _Slots:
    """Free pod slots per worker node, handed out the way the workloads need them.

    Workers are numbered so that node ``i`` is in zone ``i % zones``. Special workloads
    are placed first through per-zone cursors that rotate over the zone's nodes, so the
    consecutive picks of one workload land on distinct nodes (anti-affinity) and zones
    are taken in turn (maxSkew 1). Whatever stays free is then handed out layer by layer
    over all nodes (:meth:`remaining`), which fills every worker to exactly its quota.
    """

    def __init__(self, workers: int, zones: int, per_node: int) -> None:
        self.free = [per_node] * workers
        self.zone_nodes = [list(range(z, workers, zones)) for z in range(zones)]
        self.cursor = [0] * zones
        self.zones = zones

    def _take_in_zone(self, z: int) -> int | None:
        nodes = self.zone_nodes[z]
        for _ in range(len(nodes)):
            pos = self.cursor[z]
            self.cursor[z] = (pos + 1) % len(nodes)
            node = nodes[pos]
            if self.free[node] > 0:
                self.free[node] -= 1
                return node
        return None

    def _commit(self, taken: list[int], ok: bool, distinct: bool) -> list[int] | None:
        if ok and (not distinct or len(set(taken)) == len(taken)):
            return taken
        for node in taken:  # roll back: the workload is skipped, the slots stay free
            self.free[node] += 1
        return None

    def spread(self, count: int, start_zone: int, distinct: bool) -> list[int] | None:
        """``count`` slots taking zones in turn from ``start_zone``; None if impossible."""
        taken: list[int] = []
        for j in range(count):
            node = self._take_in_zone((start_zone + j) % self.zones)
            if node is None:
                return self._commit(taken, False, distinct)
            taken.append(node)
        return self._commit(taken, True, distinct)

    def in_zone(self, count: int, z: int) -> list[int] | None:
        taken: list[int] = []
        for _ in range(count):
            node = self._take_in_zone(z)
            if node is None:
                return self._commit(taken, False, False)
            taken.append(node)
        return self._commit(taken, True, False)

    def on_nodes(self, nodes: list[int]) -> list[int] | None:
        """One slot on each of ``nodes``."""
        taken: list[int] = []
        for node in nodes:
            if self.free[node] <= 0:
                return self._commit(taken, False, False)
            self.free[node] -= 1
            taken.append(node)
        return self._commit(taken, True, False)

    def remaining(self) -> list[int]:
        """Every free slot, layer by layer (one per node per layer), then none are free.

        Layer order means consecutive slots are on different nodes and zones, as the
        scheduler's default spreading would put a workload's pods.
        """
        order: list[int] = []
        free = self.free
        for layer in range(max(free, default=0)):
            order.extend(i for i, f in enumerate(free) if f > layer)
        self.free = [0] * len(free)
        return order


@dataclass
class _Workload:
    """One planned Deployment or StatefulSet with the worker index of each replica."""

    kind: str
    namespace: str
    name: str
    nodes: list[int]
    image: str
    spread: bool = False
    anti_affinity: bool = False
    preferred_anti_affinity: bool = False
    toleration_seconds: int | None = None
    nic: bool = False
    service: bool = False
    young: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[tuple[str, int, str], ...] = (("http", 8080, "TCP"),)


@dataclass
class _Backend:
    """What a Service's Endpoints need to know about one ready pod."""

    name: str
    uid: str
    ip: str
    node: str
    hostname: str | None


@dataclass
class _EventSeed:
    """An Event to emit at the end, once every object it refers to exists."""

    namespace: str
    kind: str
    api_version: str
    name: str
    uid: str
    reason: str
    message: str
    component: str
    host: str | None
    when: datetime.datetime
    type: str = "Normal"
    count: int = 1
    field_path: str | None = None
    first: datetime.datetime | None = None


# --- The generator -----------------------------------------------------------------------


def _validate(s: ScenarioSettings) -> None:
    problems = []
    if s.nodes < 1:
        problems.append(f"scenario.nodes must be at least 1, got {s.nodes}")
    if s.zones < 1:
        problems.append(f"scenario.zones must be at least 1, got {s.zones}")
    if s.pods_per_node < 0:
        problems.append(f"scenario.pods_per_node must be at least 0, got {s.pods_per_node}")
    if s.pods_per_node > _MAX_PODS_PER_NODE:
        problems.append(
            f"scenario.pods_per_node must be at most {_MAX_PODS_PER_NODE} (pod IPs come "
            f"from one /24 per node), got {s.pods_per_node}"
        )
    if s.containers_per_pod < 1:
        problems.append(
            f"scenario.containers_per_pod must be at least 1, got {s.containers_per_pod}"
        )
    if s.control_plane_nodes < 0:
        problems.append(
            f"scenario.control_plane_nodes must be at least 0, got {s.control_plane_nodes}"
        )
    if problems:
        raise ValueError("; ".join(problems))


def generate(
    settings: ScenarioSettings,
    now: datetime.datetime,
    *,
    lifecycle: NodeLifecycleSettings | None = None,
) -> Iterator[tuple[ResourceType, Obj]]:
    """Every object of the simulated cluster at ``now``, owners first.

    ``lifecycle`` only shapes what the objects say (the default tolerationSeconds added to
    pods and the kube-controller-manager flags); it defaults to the real defaults.
    Raises ValueError, before yielding anything, if the settings cannot make a cluster.
    """
    _validate(settings)
    return _Generator(settings, now, lifecycle or NodeLifecycleSettings()).run()


class _Generator:
    def __init__(
        self, s: ScenarioSettings, now: datetime.datetime, lifecycle: NodeLifecycleSettings
    ) -> None:
        self.s = s
        self.lifecycle = lifecycle
        self.now = _utc(now)
        self.now_time = format_time(self.now)
        self.now_micro = format_micro_time(self.now)
        self.rng = random.Random(s.seed)
        self.cluster_start = self.now - datetime.timedelta(days=120)
        self.events: list[_EventSeed] = []
        self.backends: dict[tuple[str, str], list[_Backend]] = {}
        self.services: list[_Workload] = []

        workers, zones = s.nodes, s.zones
        self.worker_names = [node_name(i) for i in range(workers)]
        # Nodes live in 10.0.0.0/16 (workers from .1), control plane in 10.1.0.0/24.
        self.worker_ips = [f"10.0.{(i + 1) >> 8}.{(i + 1) & 255}" for i in range(workers)]
        self.worker_zone = [zone_name(node_zone_index(i, zones)) for i in range(workers)]
        self.worker_pool = [
            _POOL_PATTERN[(i // zones) % len(_POOL_PATTERN)] for i in range(workers)
        ]
        # Pod CIDR per node is a /24 out of 10.64.0.0/10; pod IPs count up from .2.
        self.pod_prefix = [f"10.{64 + (i >> 8)}.{i & 255}." for i in range(workers)]
        self.next_pod_host = [2] * workers
        self.worker_uids: list[str] = []
        self.cp_names = [control_plane_node_name(j) for j in range(s.control_plane_nodes)]
        self.cp_ips = [f"10.1.0.{j + 10}" for j in range(s.control_plane_nodes)]
        self.cp_uids: list[str] = []
        self.cp_created = [self.cluster_start] * s.control_plane_nodes
        joined = self.cluster_start + datetime.timedelta(days=1)
        # Workers joined one after another over two days, a day after the control plane.
        self.worker_created = [joined + datetime.timedelta(seconds=37 * i) for i in range(workers)]

        # Requests per container sized so a full node of the smallest pool (16 CPU, 64 GiB)
        # is at most ~60 % booked, whatever the pod and container counts.
        slots = max(1, s.pods_per_node * s.containers_per_pod)
        self.cpu_request_m = max(1, min(500, 16000 * 6 // 10 // slots))
        self.mem_request_mi = max(1, min(1024, 64 * 1024 * 6 // 10 // slots))
        # Daemon pods also run on the control plane, which on the seed's smallest row has
        # 1 CPU with 650m already booked by the static pods: 50m and 64Mi a pod in all.
        self.daemon_requests = (
            max(1, 50 // s.containers_per_pod),
            max(1, 64 // s.containers_per_pod),
        )
        # A worker holds one pod of each DaemonSet that fits in pods_per_node.
        self.daemonset_names = DAEMONSET_NAMES[: s.pods_per_node]
        # With more zones than workers, the zones past the last worker stay empty.
        self.populated_zones = min(s.zones, s.nodes)
        self.default_tolerations = self._not_ready_tolerations(lifecycle.default_toleration_seconds)
        self.cluster_ip_next = 100

    # -- randomness ---------------------------------------------------------------------

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def token(self, n: int) -> str:
        return "".join(self.rng.choices(_ALPHANUMS, k=n))

    def hex(self, digits: int) -> str:
        return f"{self.rng.getrandbits(digits * 4):0{digits}x}"

    def unique_suffix(self, used: set[str]) -> str:
        # Five characters give 14M names: a 5000-pod DaemonSet will collide, so re-draw.
        while True:
            suffix = self.token(5)
            if suffix not in used:
                used.add(suffix)
                return suffix

    def cluster_ip(self) -> str:
        k = self.cluster_ip_next
        self.cluster_ip_next += 1
        return f"10.96.{k >> 8}.{k & 255}"

    # -- the whole cluster --------------------------------------------------------------

    def run(self) -> Iterator[tuple[ResourceType, Obj]]:
        # Owners before what they own: nodes before their Leases and pods, controllers
        # before their pods, pods before the Endpoints and Events that name them.
        yield from self.namespaces()
        yield from self.nodes()
        yield from self.node_leases()
        yield from self.leader_leases()
        yield from self.configmaps()
        yield from self.service_accounts()
        yield from self.static_pods()
        yield from self.daemonsets()
        for workload in self.plan():
            yield from self.workload(workload)
        yield from self.service_objects()
        yield from self.event_objects()

    # -- namespaces ---------------------------------------------------------------------

    def namespaces(self) -> Iterator[tuple[ResourceType, Obj]]:
        for ns in SYSTEM_NAMESPACES + TENANT_NAMESPACES:
            created = self.cluster_start
            if ns in TENANT_NAMESPACES:
                created += datetime.timedelta(days=1, minutes=TENANT_NAMESPACES.index(ns))
            labels = {"kubernetes.io/metadata.name": ns}
            if ns in TENANT_NAMESPACES:
                labels["team"] = ns.removeprefix("team-")
            yield (
                NAMESPACES,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": ns,
                        "uid": self.uid(),
                        "labels": labels,
                        "creationTimestamp": format_time(created),
                    },
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )

    # -- nodes --------------------------------------------------------------------------

    def nodes(self) -> Iterator[tuple[ResourceType, Obj]]:
        s = self.s
        cp_cpu, cp_gib = control_plane_size(s.nodes)
        for j, name in enumerate(self.cp_names):
            uid = self.uid()
            self.cp_uids.append(uid)
            labels = self._node_labels(
                name, zone_name(j % self.populated_zones), f"control-{cp_cpu}", "control-plane"
            )
            labels[CONTROL_PLANE_LABEL] = ""
            labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
            yield (
                NODES,
                self._node(
                    name,
                    uid,
                    labels,
                    self.cp_ips[j],
                    f"10.127.{j}.0/24",
                    cp_cpu,
                    cp_gib,
                    0,
                    self.cluster_start,
                    taints=[{"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"}],
                ),
            )
        for i, name in enumerate(self.worker_names):
            uid = self.uid()
            self.worker_uids.append(uid)
            pool = self.worker_pool[i]
            instance, cpu, gib, nics = _POOLS[pool]
            labels = self._node_labels(name, self.worker_zone[i], instance, pool)
            yield (
                NODES,
                self._node(
                    name,
                    uid,
                    labels,
                    self.worker_ips[i],
                    f"{self.pod_prefix[i]}0/24",
                    cpu,
                    gib,
                    nics,
                    self.worker_created[i],
                ),
            )

    @staticmethod
    def _node_labels(name: str, zone: str, instance: str, pool: str) -> dict[str, str]:
        return {
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/os": "linux",
            HOSTNAME_LABEL: name,
            INSTANCE_TYPE_LABEL: instance,
            REGION_LABEL: REGION,
            ZONE_LABEL: zone,
            NODE_POOL_LABEL: pool,
        }

    def _node(
        self,
        name: str,
        uid: str,
        labels: dict[str, str],
        ip: str,
        pod_cidr: str,
        cpu: int,
        gib: int,
        nics: int,
        created: datetime.datetime,
        taints: list[Obj] | None = None,
    ) -> Obj:
        mem_ki = gib * 1024 * 1024
        disk_ki = 100 * 1024 * 1024
        capacity = {
            "cpu": str(cpu),
            "ephemeral-storage": f"{disk_ki}Ki",
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
            "memory": f"{mem_ki}Ki",
            "pods": str(max(110, self.s.pods_per_node)),
        }
        # Allocatable as the kubelet computes it: capacity minus kube/system reserved and
        # the hard eviction thresholds (memory.available 100Mi, nodefs.available 10 %).
        allocatable = {
            **capacity,
            "cpu": f"{cpu * 1000 - 100}m",
            "ephemeral-storage": str(disk_ki * 1024 * 9 // 10),
            "memory": f"{mem_ki - 512 * 1024 - 100 * 1024}Ki",
        }
        if nics:
            capacity[NIC_RESOURCE] = str(nics)
            allocatable[NIC_RESOURCE] = str(nics)
        ready_since = format_time(created + datetime.timedelta(seconds=30))
        conditions = [
            self._node_condition(
                "NetworkUnavailable",
                "False",
                "CalicoIsUp",
                "Calico is running on this node",
                ready_since,
            ),
            self._node_condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                ready_since,
            ),
            self._node_condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                ready_since,
            ),
            self._node_condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                ready_since,
            ),
            self._node_condition(
                "Ready", "True", "KubeletReady", "kubelet is posting ready status", ready_since
            ),
        ]
        # Calico updates NetworkUnavailable only when it changes; its heartbeat is old.
        conditions[0]["lastHeartbeatTime"] = ready_since
        spec: Obj = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "providerID": f"sim://{name}"}
        if taints:
            spec["taints"] = taints
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": uid,
                "labels": labels,
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "projectcalico.org/IPv4Address": f"{ip}/16",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
                "creationTimestamp": format_time(created),
            },
            "spec": spec,
            "status": {
                "capacity": capacity,
                "allocatable": allocatable,
                "conditions": conditions,
                "addresses": [
                    {"type": "InternalIP", "address": ip},
                    {"type": "Hostname", "address": name},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "machineID": self.hex(32),
                    "systemUUID": self.uid(),
                    "bootID": self.uid(),
                    "kernelVersion": "6.8.0-1015-generic",
                    "osImage": "Ubuntu 24.04.1 LTS",
                    "containerRuntimeVersion": "containerd://1.7.22",
                    "kubeletVersion": KUBERNETES_VERSION,
                    "kubeProxyVersion": KUBERNETES_VERSION,
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }

    def _node_condition(
        self, type_: str, status: str, reason: str, message: str, since: str
    ) -> Obj:
        return {
            "type": type_,
            "status": status,
            "lastHeartbeatTime": self.now_time,
            "lastTransitionTime": since,
            "reason": reason,
            "message": message,
        }

    def _all_nodes(self) -> Iterator[tuple[str, str, str, datetime.datetime]]:
        """(name, uid, InternalIP, creation time) of every node, control plane first."""
        yield from zip(self.cp_names, self.cp_uids, self.cp_ips, self.cp_created, strict=True)
        yield from zip(
            self.worker_names, self.worker_uids, self.worker_ips, self.worker_created, strict=True
        )

    # -- leases -------------------------------------------------------------------------

    def node_leases(self) -> Iterator[tuple[ResourceType, Obj]]:
        created = format_time(self.cluster_start)
        for name, uid, _ip, _created in self._all_nodes():
            yield (
                LEASES,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": name,
                        "namespace": NODE_LEASE_NAMESPACE,
                        "uid": self.uid(),
                        "creationTimestamp": created,
                        # The kubelet's reference (pkg/kubelet/nodelease.go) names the Node
                        # without controller/blockOwnerDeletion; the garbage collector
                        # still deletes the Lease with its Node.
                        "ownerReferences": [
                            {"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}
                        ],
                    },
                    "spec": {
                        "holderIdentity": name,
                        "leaseDurationSeconds": NODE_LEASE_DURATION_SECONDS,
                        "renewTime": self.now_micro,
                    },
                },
            )

    def leader_leases(self) -> Iterator[tuple[ResourceType, Obj]]:
        acquired = self.now - datetime.timedelta(days=3, hours=4, seconds=12.25)
        for k, component in enumerate(("kube-controller-manager", "kube-scheduler")):
            # Without control-plane nodes (a managed control plane) the holder is hidden.
            holder = (
                self.cp_names[k % len(self.cp_names)] if self.cp_names else "managed-control-plane"
            )
            yield (
                LEASES,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": component,
                        "namespace": "kube-system",
                        "uid": self.uid(),
                        "creationTimestamp": format_time(self.cluster_start),
                    },
                    "spec": {
                        "holderIdentity": f"{holder}_{self.uid()}",
                        "leaseDurationSeconds": LEADER_LEASE_DURATION_SECONDS,
                        "acquireTime": format_micro_time(acquired),
                        "renewTime": self.now_micro,
                        "leaseTransitions": 2 + k,
                    },
                },
            )

    # -- configmaps ---------------------------------------------------------------------

    def service_accounts(self) -> Iterator[tuple[ResourceType, Obj]]:
        """The controllers' ServiceAccounts in kube-system, which kube-controller-manager
        creates for itself only under --use-service-account-credentials."""
        if not self.lifecycle.use_service_account_credentials:
            return
        for name in ("node-controller", "replicaset-controller", "deployment-controller"):
            yield (
                SERVICE_ACCOUNTS,
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {
                        "name": name,
                        "namespace": "kube-system",
                        "uid": self.uid(),
                        "creationTimestamp": format_time(self.cluster_start),
                    },
                },
            )

    def configmaps(self) -> Iterator[tuple[ResourceType, Obj]]:
        created = format_time(self.cluster_start)
        # The root-CA publisher puts kube-root-ca.crt in every namespace.
        ca = (
            "-----BEGIN CERTIFICATE-----\n"
            + "\n".join(self.hex(32) for _ in range(16))
            + "\n-----END CERTIFICATE-----\n"
        )
        for ns in SYSTEM_NAMESPACES + TENANT_NAMESPACES:
            yield (
                CONFIGMAPS,
                self._configmap(
                    ns,
                    "kube-root-ca.crt",
                    {"ca.crt": ca},
                    created,
                    annotations={"kubernetes.io/description": "Contains a CA bundle..."},
                ),
            )
        yield (
            CONFIGMAPS,
            self._configmap(
                "kube-system",
                "kube-proxy",
                {
                    "config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: "
                    "KubeProxyConfiguration\nmode: iptables\nclusterCIDR: " + _CLUSTER_CIDR + "\n"
                },
                created,
                labels={"app": "kube-proxy"},
            ),
        )
        yield (
            CONFIGMAPS,
            self._configmap(
                "kube-system",
                "coredns",
                {
                    "Corefile": ".:53 {\n    errors\n    health\n    ready\n    kubernetes "
                    "cluster.local in-addr.arpa ip6.arpa\n    forward . /etc/resolv.conf\n"
                    "    cache 30\n    loop\n    reload\n}\n"
                },
                created,
            ),
        )
        for ns in TENANT_NAMESPACES:
            yield (
                CONFIGMAPS,
                self._configmap(
                    ns, "app-settings", {"LOG_LEVEL": "info", "FEATURE_FLAGS": "a,b,c"}, created
                ),
            )
        line_count = LARGE_CONFIGMAP_BYTES // 65
        for ns, name in LARGE_CONFIGMAPS:
            # 64 hex characters and a newline per line: incompressible, like real blobs.
            blob = "\n".join(self.rng.randbytes(32).hex() for _ in range(line_count)) + "\n"
            yield CONFIGMAPS, self._configmap(ns, name, {"model.txt": blob}, created)

    def _configmap(
        self,
        ns: str,
        name: str,
        data: dict[str, str],
        created: str,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> Obj:
        meta: Obj = {"name": name, "namespace": ns, "uid": self.uid(), "creationTimestamp": created}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}

    # -- control plane static pods ------------------------------------------------------

    def _component_command(self, component: str, j: int) -> list[str]:
        ip, name = self.cp_ips[j], self.cp_names[j]
        pki = "/etc/kubernetes/pki"
        lc = self.lifecycle
        if component == "etcd":
            cluster = ",".join(
                f"{n}=https://{a}:2380" for n, a in zip(self.cp_names, self.cp_ips, strict=True)
            )
            return [
                "etcd",
                f"--advertise-client-urls=https://{ip}:2379",
                f"--cert-file={pki}/etcd/server.crt",
                "--client-cert-auth=true",
                "--data-dir=/var/lib/etcd",
                "--experimental-initial-corrupt-check=true",
                "--experimental-watch-progress-notify-interval=5s",
                f"--initial-advertise-peer-urls=https://{ip}:2380",
                f"--initial-cluster={cluster}",
                "--initial-cluster-state=new",
                "--initial-cluster-token=kube-ballast-etcd",
                f"--key-file={pki}/etcd/server.key",
                f"--listen-client-urls=https://127.0.0.1:2379,https://{ip}:2379",
                "--listen-metrics-urls=http://127.0.0.1:2381",
                f"--listen-peer-urls=https://{ip}:2380",
                f"--name={name}",
                f"--peer-cert-file={pki}/etcd/peer.crt",
                "--peer-client-cert-auth=true",
                f"--peer-key-file={pki}/etcd/peer.key",
                f"--peer-trusted-ca-file={pki}/etcd/ca.crt",
                "--quota-backend-bytes=8589934592",
                "--snapshot-count=10000",
                f"--trusted-ca-file={pki}/etcd/ca.crt",
            ]
        if component == "kube-apiserver":
            return [
                "kube-apiserver",
                f"--advertise-address={ip}",
                "--allow-privileged=true",
                "--authorization-mode=Node,RBAC",
                f"--client-ca-file={pki}/ca.crt",
                f"--default-not-ready-toleration-seconds={lc.default_toleration_seconds}",
                f"--default-unreachable-toleration-seconds={lc.default_toleration_seconds}",
                "--enable-admission-plugins=NodeRestriction",
                "--enable-bootstrap-token-auth=true",
                f"--etcd-cafile={pki}/etcd/ca.crt",
                f"--etcd-certfile={pki}/apiserver-etcd-client.crt",
                f"--etcd-keyfile={pki}/apiserver-etcd-client.key",
                "--etcd-servers=https://127.0.0.1:2379",
                f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
                f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
                "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
                "--max-mutating-requests-inflight=200",
                "--max-requests-inflight=400",
                f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
                f"--proxy-client-key-file={pki}/front-proxy-client.key",
                "--requestheader-allowed-names=front-proxy-client",
                f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-username-headers=X-Remote-User",
                "--secure-port=6443",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki}/sa.pub",
                f"--service-account-signing-key-file={pki}/sa.key",
                f"--service-cluster-ip-range={_SERVICE_CIDR}",
                f"--tls-cert-file={pki}/apiserver.crt",
                f"--tls-private-key-file={pki}/apiserver.key",
            ]
        if component == "kube-controller-manager":
            return [
                "kube-controller-manager",
                "--allocate-node-cidrs=true",
                "--authentication-kubeconfig=/etc/kubernetes/controller-manager.conf",
                "--authorization-kubeconfig=/etc/kubernetes/controller-manager.conf",
                "--bind-address=127.0.0.1",
                f"--client-ca-file={pki}/ca.crt",
                f"--cluster-cidr={_CLUSTER_CIDR}",
                "--cluster-name=kube-ballast",
                f"--cluster-signing-cert-file={pki}/ca.crt",
                f"--cluster-signing-key-file={pki}/ca.key",
                "--controllers=*,bootstrapsigner,tokencleaner",
                "--kubeconfig=/etc/kubernetes/controller-manager.conf",
                f"--large-cluster-size-threshold={lc.large_cluster_size_threshold}",
                "--leader-elect=true",
                "--node-cidr-mask-size=24",
                f"--node-eviction-rate={lc.node_eviction_rate:g}",
                "--node-monitor-grace-period=" + _go_duration(lc.node_monitor_grace_period_seconds),
                f"--node-monitor-period={_go_duration(lc.node_monitor_period_seconds)}",
                f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
                f"--root-ca-file={pki}/ca.crt",
                f"--secondary-node-eviction-rate={lc.secondary_node_eviction_rate:g}",
                f"--service-account-private-key-file={pki}/sa.key",
                f"--service-cluster-ip-range={_SERVICE_CIDR}",
                f"--unhealthy-zone-threshold={lc.unhealthy_zone_threshold:g}",
                "--use-service-account-credentials="
                + ("true" if lc.use_service_account_credentials else "false"),
            ]
        return [
            "kube-scheduler",
            "--authentication-kubeconfig=/etc/kubernetes/scheduler.conf",
            "--authorization-kubeconfig=/etc/kubernetes/scheduler.conf",
            "--bind-address=127.0.0.1",
            "--kubeconfig=/etc/kubernetes/scheduler.conf",
            "--leader-elect=true",
        ]

    def static_pods(self) -> Iterator[tuple[ResourceType, Obj]]:
        requests = {
            "etcd": {"cpu": "100m", "memory": "100Mi"},
            "kube-apiserver": {"cpu": "250m"},
            "kube-controller-manager": {"cpu": "200m"},
            "kube-scheduler": {"cpu": "100m"},
        }
        created_dt = self.cluster_start + datetime.timedelta(seconds=20)
        created = format_time(created_dt)
        for j, (node, node_uid) in enumerate(zip(self.cp_names, self.cp_uids, strict=True)):
            ip = self.cp_ips[j]
            for component in CONTROL_PLANE_COMPONENTS:
                image = (
                    f"registry.k8s.io/etcd:{ETCD_VERSION}"
                    if component == "etcd"
                    else f"registry.k8s.io/{component}:{KUBERNETES_VERSION}"
                )
                config_hash = self.hex(32)
                annotations = {
                    "kubernetes.io/config.hash": config_hash,
                    "kubernetes.io/config.mirror": config_hash,
                    "kubernetes.io/config.seen": format_micro_time(created_dt),
                    "kubernetes.io/config.source": "file",
                }
                if component == "kube-apiserver":
                    key = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"
                    annotations[key] = f"{ip}:6443"
                if component == "etcd":
                    key = "kubeadm.kubernetes.io/etcd.advertise-client-urls"
                    annotations[key] = f"https://{ip}:2379"
                container = {
                    "name": component,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": self._component_command(component, j),
                    "resources": {"requests": requests[component]},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }
                name = f"{component}-{node}"
                uid = self.uid()
                yield (
                    PODS,
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": name,
                            "namespace": "kube-system",
                            "uid": uid,
                            "labels": {"component": component, "tier": "control-plane"},
                            "annotations": annotations,
                            "creationTimestamp": created,
                            # A mirror pod's reference, as the kubelet writes it
                            # (pkg/kubelet/pod/mirror_client.go): controller, no
                            # blockOwnerDeletion.
                            "ownerReferences": [
                                {
                                    "apiVersion": "v1",
                                    "kind": "Node",
                                    "name": node,
                                    "uid": node_uid,
                                    "controller": True,
                                }
                            ],
                        },
                        "spec": {
                            "containers": [container],
                            "dnsPolicy": "ClusterFirst",
                            "enableServiceLinks": True,
                            "hostNetwork": True,
                            "nodeName": node,
                            "preemptionPolicy": "PreemptLowerPriority",
                            "priority": 2000001000,
                            "priorityClassName": "system-node-critical",
                            "restartPolicy": "Always",
                            "schedulerName": "default-scheduler",
                            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                            "terminationGracePeriodSeconds": 30,
                            # The kubelet gives static pods a toleration of every NoExecute
                            # taint, so taint eviction never removes the control plane.
                            "tolerations": [{"operator": "Exists", "effect": "NoExecute"}],
                        },
                        "status": self._pod_status(
                            ip,
                            ip,
                            created,
                            self._pod_conditions(created, created),
                            [self._container_status(component, image, created, uid, 0)],
                        ),
                    },
                )

    # -- pod building blocks ------------------------------------------------------------

    @staticmethod
    def _not_ready_tolerations(seconds: int) -> list[Obj]:
        # Exactly what the DefaultTolerationSeconds admission plugin appends.
        return [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": seconds,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": seconds,
            },
        ]

    def _containers(
        self,
        main: str,
        image: str,
        ports: tuple[tuple[str, int, str], ...],
        nic: bool = False,
        requests_per_container: tuple[int, int] | None = None,
    ) -> list[Obj]:
        cpu, mem = requests_per_container or (self.cpu_request_m, self.mem_request_mi)
        containers = []
        for k in range(self.s.containers_per_pod):
            if k == 0:
                name, img = main, image
            else:
                base, img = _SIDECARS[(k - 1) % len(_SIDECARS)]
                lap = (k - 1) // len(_SIDECARS)
                name = base if lap == 0 else f"{base}-{lap + 1}"
            requests = {"cpu": f"{cpu}m", "memory": f"{mem}Mi"}
            limits = {"cpu": f"{cpu * 2}m", "memory": f"{mem * 2}Mi"}
            if nic and k == 0:
                # Extended resources cannot be overcommitted: requests must equal limits.
                requests[NIC_RESOURCE] = "1"
                limits[NIC_RESOURCE] = "1"
            container: Obj = {
                "name": name,
                "image": img,
                "imagePullPolicy": "IfNotPresent",
                "resources": {"requests": requests, "limits": limits},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }
            if k == 0 and ports:
                container["ports"] = [
                    {"name": pname, "containerPort": port, "protocol": proto}
                    for pname, port, proto in ports
                ]
            containers.append(container)
        return containers

    @staticmethod
    def _pod_conditions(scheduled: str, ready: str) -> list[Obj]:
        # The order and types a v1.31 kubelet reports.
        return [
            {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": at}
            for t, at in (
                ("PodReadyToStartContainers", ready),
                ("Initialized", scheduled),
                ("Ready", ready),
                ("ContainersReady", ready),
                ("PodScheduled", scheduled),
            )
        ]

    @staticmethod
    def _container_status(name: str, image: str, started: str, pod_uid: str, index: int) -> Obj:
        return {
            "name": name,
            "state": {"running": {"startedAt": started}},
            "lastState": {},
            "ready": True,
            "restartCount": 0,
            "image": image,
            "imageID": _image_id(image),
            # Derived from the pod uid: unique per container without another draw.
            "containerID": f"containerd://{pod_uid.replace('-', '')}{index:032x}",
            "started": True,
        }

    @staticmethod
    def _pod_status(
        host_ip: str,
        pod_ip: str,
        started: str,
        conditions: list[Obj],
        statuses: list[Obj],
    ) -> Obj:
        return {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": started,
            "containerStatuses": statuses,
            "qosClass": "Burstable",
        }

    # -- daemonsets ---------------------------------------------------------------------

    def daemonsets(self) -> Iterator[tuple[ResourceType, Obj]]:
        images = {
            "calico-node": "docker.io/calico/node:v3.28.2",
            "kube-proxy": f"registry.k8s.io/kube-proxy:{KUBERNETES_VERSION}",
        }
        # What the DaemonSet controller adds to every daemon pod
        # (pkg/controller/daemon/util.AddOrUpdateDaemonPodTolerations), after the
        # manifests' own tolerate-everything entry.
        ds_tolerations: list[Obj] = [
            {"operator": "Exists"},
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
            },
            {
                "key": "node.kubernetes.io/disk-pressure",
                "operator": "Exists",
                "effect": "NoSchedule",
            },
            {
                "key": "node.kubernetes.io/memory-pressure",
                "operator": "Exists",
                "effect": "NoSchedule",
            },
            {
                "key": "node.kubernetes.io/pid-pressure",
                "operator": "Exists",
                "effect": "NoSchedule",
            },
            {
                "key": "node.kubernetes.io/unschedulable",
                "operator": "Exists",
                "effect": "NoSchedule",
            },
            {
                "key": "node.kubernetes.io/network-unavailable",
                "operator": "Exists",
                "effect": "NoSchedule",
            },
        ]
        node_count = len(self.cp_names) + len(self.worker_names)
        ds_created_dt = self.cluster_start + datetime.timedelta(minutes=10)
        for ds in self.daemonset_names:
            uid = self.uid()
            revision = self.token(10)
            selector = {"k8s-app": ds}
            containers = self._containers(
                ds, images[ds], (), requests_per_container=self.daemon_requests
            )
            template_spec: Obj = {
                "containers": containers,
                "dnsPolicy": "ClusterFirst",
                "hostNetwork": True,
                "priorityClassName": "system-node-critical",
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "serviceAccountName": ds,
                "serviceAccount": ds,
                "terminationGracePeriodSeconds": 30,
                "tolerations": [{"operator": "Exists"}],
            }
            yield (
                DAEMONSETS,
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "metadata": {
                        "name": ds,
                        "namespace": "kube-system",
                        "uid": uid,
                        "generation": 1,
                        "labels": selector,
                        "annotations": {"deprecated.daemonset.template.generation": "1"},
                        "creationTimestamp": format_time(ds_created_dt),
                    },
                    "spec": {
                        "selector": {"matchLabels": selector},
                        "template": {"metadata": {"labels": selector}, "spec": template_spec},
                        "updateStrategy": {
                            "type": "RollingUpdate",
                            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
                        },
                        "revisionHistoryLimit": 10,
                    },
                    "status": {
                        "currentNumberScheduled": node_count,
                        "numberMisscheduled": 0,
                        "desiredNumberScheduled": node_count,
                        "numberReady": node_count,
                        "observedGeneration": 1,
                        "updatedNumberScheduled": node_count,
                        "numberAvailable": node_count,
                    },
                },
            )
            owner = [self._owner("apps/v1", "DaemonSet", ds, uid)]
            labels = {
                **selector,
                "controller-revision-hash": revision,
                "pod-template-generation": "1",
            }
            pod_spec_base = {
                **template_spec,
                "enableServiceLinks": True,
                "preemptionPolicy": "PreemptLowerPriority",
                "priority": 2000001000,
                "tolerations": ds_tolerations,
            }
            used: set[str] = set()
            for node, _node_uid, ip, node_created in self._all_nodes():
                # Daemon pods started as their node joined, before any other pod there.
                started = format_time(node_created + datetime.timedelta(seconds=5))
                ready = format_time(node_created + datetime.timedelta(seconds=25))
                name = f"{ds}-{self.unique_suffix(used)}"
                pod_uid = self.uid()
                yield (
                    PODS,
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": name,
                            "generateName": f"{ds}-",
                            "namespace": "kube-system",
                            "uid": pod_uid,
                            "labels": labels,
                            "creationTimestamp": started,
                            "ownerReferences": owner,
                        },
                        "spec": {
                            **pod_spec_base,
                            "nodeName": node,
                            # The DaemonSet controller pins each pod to its node by name.
                            "affinity": {
                                "nodeAffinity": {
                                    "requiredDuringSchedulingIgnoredDuringExecution": {
                                        "nodeSelectorTerms": [
                                            {
                                                "matchFields": [
                                                    {
                                                        "key": "metadata.name",
                                                        "operator": "In",
                                                        "values": [node],
                                                    }
                                                ]
                                            }
                                        ]
                                    }
                                }
                            },
                        },
                        "status": self._pod_status(
                            ip,
                            ip,
                            started,
                            self._pod_conditions(started, ready),
                            [
                                self._container_status(c["name"], c["image"], started, pod_uid, k)
                                for k, c in enumerate(containers)
                            ],
                        ),
                    },
                )

    @staticmethod
    def _owner(api_version: str, kind: str, name: str, uid: str) -> Obj:
        return {
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    # -- workload plan ------------------------------------------------------------------

    def plan(self) -> list[_Workload]:
        """Every Deployment and StatefulSet, with each replica's worker, before any is built.

        Specials first, through the zone-aware picks; a special that cannot fit (a tiny
        cluster) is dropped rather than placed against its own constraints. Filler
        workloads then take every remaining slot, so each worker ends up with exactly
        ``pods_per_node`` pods.
        """
        s = self.s
        n, z = s.nodes, self.populated_zones
        per_node = s.pods_per_node - len(self.daemonset_names)
        slots = _Slots(n, z, per_node)
        # Specials may take at most half the capacity; the filler needs room too.
        budget = n * per_node // 2
        used = 0
        plans: list[_Workload] = []

        def add(w: _Workload | None, nodes: list[int] | None) -> None:
            nonlocal used
            if w is None or nodes is None:
                return
            w.nodes = nodes
            used += len(nodes)
            plans.append(w)

        def fits(count: int) -> bool:
            return count > 0 and used + count <= budget

        def special(ns: str, name: str, image: str, **kw: Any) -> _Workload:
            return _Workload("Deployment", ns, name, [], image, **kw)

        start = iter(range(1 << 30))  # rotates the first zone of successive spreads

        # Required anti-affinity first, while every node still has room.
        r = min(n, max(3, n // 100))
        if fits(r):
            w = special(
                "team-a",
                "cache",
                "docker.io/library/redis:7.4.1",
                anti_affinity=True,
                service=True,
                ports=(("redis", 6379, "TCP"),),
            )
            add(w, slots.spread(r, next(start) % z, distinct=True))
        for ns, name, image, port, replicas in (
            ("team-b", "postgres", "docker.io/library/postgres:16.4", 5432, min(n, 3)),
            ("team-d", "kafka", "docker.io/bitnami/kafka:3.8.0", 9092, min(n, max(3, n // 500))),
        ):
            if fits(replicas):
                w = _Workload(
                    "StatefulSet",
                    ns,
                    name,
                    [],
                    image,
                    anti_affinity=True,
                    service=True,
                    ports=((name, port, "TCP"),),
                )
                add(w, slots.spread(replicas, next(start) % z, distinct=True))
        r = min(n, max(2, n // 250))
        if fits(r):
            w = special(
                "kube-system",
                "coredns",
                "registry.k8s.io/coredns/coredns:v1.11.3",
                preferred_anti_affinity=True,
                service=True,
                labels={"k8s-app": "kube-dns"},
                ports=(("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")),
            )
            add(w, slots.spread(r, next(start) % z, distinct=True))
        nic_nodes = [i for i in range(n) if self.worker_pool[i] == "nic"]
        r = len(nic_nodes) // 2 or len(nic_nodes)
        if fits(r):
            ns, name = NIC_DEPLOYMENTS[0]
            w = special(ns, name, "registry.example.com/team-d/packet-gateway:2.3.1", nic=True)
            # Every other nic node, so the pods still cover every zone.
            add(w, slots.on_nodes(nic_nodes[::2] if len(nic_nodes) > 1 else nic_nodes))
        for (ns, name), r in zip(
            SPREAD_DEPLOYMENTS, (max(z, min(n, n // 50)), max(2 * z, min(n, n // 100))), strict=True
        ):
            if fits(r):
                w = special(
                    ns, name, f"registry.example.com/{ns}/{name}:1.4.2", spread=True, service=True
                )
                add(w, slots.spread(r, next(start) % z, distinct=False))
        for (ns, name), r in zip(
            CROWDED_DEPLOYMENTS, (max(3, n // 200), max(2, n // 500)), strict=True
        ):
            if fits(r):
                add(
                    special(ns, name, f"registry.example.com/{ns}/{name}:0.9.7"),
                    slots.in_zone(r, 0),
                )
        for (ns, name), seconds in CUSTOM_TOLERATION_SECONDS.items():
            r = max(2, n // 250)
            if fits(r):
                w = special(
                    ns, name, f"registry.example.com/{ns}/{name}:3.0.0", toleration_seconds=seconds
                )
                add(w, slots.spread(r, next(start) % z, distinct=False))

        # Filler: the long tail of ordinary services, round robin over the tenants.
        remaining = slots.remaining()
        pos, k = 0, 0
        while pos < len(remaining):
            # No more replicas than nodes: a small cluster gets small workloads.
            size = min(self.rng.choice(_FILLER_SIZES), n, len(remaining) - pos)
            app = _FILLER_APPS[k % len(_FILLER_APPS)]
            ns = TENANT_NAMESPACES[k % len(TENANT_NAMESPACES)]
            kind = "StatefulSet" if k % 15 == 14 else "Deployment"
            plans.append(
                _Workload(
                    kind,
                    ns,
                    f"{app}-{k // len(_FILLER_APPS)}",
                    remaining[pos : pos + size],
                    f"registry.example.com/{ns}/{app}:1.{k % 17}.{k % 5}",
                    service=kind == "StatefulSet",
                    # One Deployment in a hundred was rolled out in the last hour; its
                    # Events are still within the apiserver's --event-ttl.
                    young=kind == "Deployment" and k % 100 == 0,
                )
            )
            pos += size
            k += 1
        return plans

    # -- workloads ----------------------------------------------------------------------

    def workload(self, w: _Workload) -> Iterator[tuple[ResourceType, Obj]]:
        rng = self.rng
        if w.young:
            created_dt = self.now - datetime.timedelta(minutes=rng.randint(3, 50))
        else:
            created_dt = self.now - datetime.timedelta(
                days=rng.randint(1, 60), seconds=rng.randint(0, 86399)
            )
        created = format_time(created_dt)
        started_dt = created_dt + datetime.timedelta(seconds=2)
        started = format_time(started_dt)
        ready = format_time(created_dt + datetime.timedelta(seconds=9))
        selector = w.labels or {"app": w.name}
        replicas = len(w.nodes)

        # The pod template as the user wrote it, with the apiserver's defaults.
        containers = self._containers(w.name, w.image, w.ports, nic=w.nic)
        template_spec: Obj = {
            "containers": containers,
            "dnsPolicy": "ClusterFirst",
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "terminationGracePeriodSeconds": 30,
        }
        if w.spread:
            template_spec["topologySpreadConstraints"] = [
                {
                    "maxSkew": 1,
                    "topologyKey": ZONE_LABEL,
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": selector},
                }
            ]
        if w.anti_affinity:
            template_spec["affinity"] = {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": selector}, "topologyKey": HOSTNAME_LABEL}
                    ]
                }
            }
        if w.preferred_anti_affinity:
            template_spec["affinity"] = {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": {"matchLabels": selector},
                                "topologyKey": HOSTNAME_LABEL,
                            },
                        }
                    ]
                }
            }
        if w.nic:
            template_spec["nodeSelector"] = {NODE_POOL_LABEL: "nic"}
        if w.toleration_seconds is not None:
            # Declared by the user; DefaultTolerationSeconds then adds nothing.
            template_spec["tolerations"] = self._not_ready_tolerations(w.toleration_seconds)
        pod_tolerations = template_spec.get("tolerations", self.default_tolerations)
        sa = "coredns" if w.name == "coredns" else "default"
        pod_spec_base = {
            **template_spec,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "serviceAccountName": sa,
            "serviceAccount": sa,
            "tolerations": pod_tolerations,
        }
        if w.name == "coredns":
            pod_spec_base["priorityClassName"] = "system-cluster-critical"
            pod_spec_base["priority"] = 2000000000
            template_spec["priorityClassName"] = "system-cluster-critical"
            template_spec["serviceAccountName"] = sa

        uid = self.uid()
        if w.kind == "Deployment":
            template_hash = self.token(10)
            rs_name = f"{w.name}-{template_hash}"
            rs_uid = self.uid()
            pod_labels = {**selector, "pod-template-hash": template_hash}
            yield DEPLOYMENTS, self._deployment(w, uid, created, ready, selector, template_spec)
            yield (
                REPLICASETS,
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": rs_name,
                        "namespace": w.namespace,
                        "uid": rs_uid,
                        "generation": 1,
                        "labels": pod_labels,
                        "annotations": {
                            "deployment.kubernetes.io/desired-replicas": str(replicas),
                            "deployment.kubernetes.io/max-replicas": str(
                                replicas + max(1, -(-replicas // 4))
                            ),
                            "deployment.kubernetes.io/revision": "1",
                        },
                        "creationTimestamp": created,
                        "ownerReferences": [self._owner("apps/v1", "Deployment", w.name, uid)],
                    },
                    "spec": {
                        "replicas": replicas,
                        "selector": {"matchLabels": pod_labels},
                        "template": {"metadata": {"labels": pod_labels}, "spec": template_spec},
                    },
                    "status": {
                        "replicas": replicas,
                        "fullyLabeledReplicas": replicas,
                        "readyReplicas": replicas,
                        "availableReplicas": replicas,
                        "observedGeneration": 1,
                    },
                },
            )
            owner = [self._owner("apps/v1", "ReplicaSet", rs_name, rs_uid)]
            if w.young:
                self.events.append(
                    _EventSeed(
                        w.namespace,
                        "Deployment",
                        "apps/v1",
                        w.name,
                        uid,
                        "ScalingReplicaSet",
                        f"Scaled up replica set {rs_name} to {replicas}",
                        "deployment-controller",
                        None,
                        created_dt,
                    )
                )
        else:
            revision = f"{w.name}-{self.token(10)}"
            yield (
                STATEFULSETS,
                self._statefulset(w, uid, created, revision, selector, template_spec),
            )
            pod_labels = {**selector, "controller-revision-hash": revision}
            owner = [self._owner("apps/v1", "StatefulSet", w.name, uid)]
            rs_name, rs_uid = w.name, uid

        if w.service:
            self.services.append(w)
        backends = self.backends.setdefault((w.namespace, w.name), []) if w.service else None

        # Shared by every pod of the workload (see the module docstring).
        conditions = self._pod_conditions(started, ready)
        # Container statuses are copied per pod, which adds its own containerID.
        status_templates = [
            self._container_status(c["name"], c["image"], started, "", 0) for c in containers
        ]
        used: set[str] = set()
        worker_names, worker_ips = self.worker_names, self.worker_ips
        pod_prefix, next_host = self.pod_prefix, self.next_pod_host
        is_sts = w.kind == "StatefulSet"
        for ordinal, node_i in enumerate(w.nodes):
            pod_uid = self.uid()
            node = worker_names[node_i]
            host = next_host[node_i]
            next_host[node_i] = host + 1
            pod_ip = f"{pod_prefix[node_i]}{host}"
            host_ip = worker_ips[node_i]
            spec = {**pod_spec_base, "nodeName": node}
            meta: Obj = {"namespace": w.namespace, "uid": pod_uid}
            if is_sts:
                name = f"{w.name}-{ordinal}"
                meta["name"] = name
                meta["labels"] = {
                    **pod_labels,
                    "apps.kubernetes.io/pod-index": str(ordinal),
                    "statefulset.kubernetes.io/pod-name": name,
                }
                spec["hostname"] = name
                spec["subdomain"] = w.name
            else:
                name = f"{rs_name}-{self.unique_suffix(used)}"
                meta["name"] = name
                meta["generateName"] = f"{rs_name}-"
                meta["labels"] = pod_labels
            meta["creationTimestamp"] = created
            meta["ownerReferences"] = owner
            uid_hex = pod_uid.replace("-", "")
            statuses = [
                {**tmpl, "containerID": f"containerd://{uid_hex}{k:032x}"}
                for k, tmpl in enumerate(status_templates)
            ]
            pod_conditions = conditions
            # About one pod in 256 has restarted recently: restart metrics and BackOff
            # Events have something to show.
            if pod_uid[0] == "0" and pod_uid[1] == "0":
                restarts = 1 + int(pod_uid[2], 16) % 5
                restarted_dt = self.now - datetime.timedelta(minutes=1 + int(pod_uid[3], 16))
                restarted = format_time(restarted_dt)
                first = statuses[0]
                first["restartCount"] = restarts
                first["state"] = {"running": {"startedAt": restarted}}
                first["lastState"] = {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "startedAt": started,
                        "finishedAt": restarted,
                        "containerID": f"containerd://{uid_hex}{'f' * 32}",
                    }
                }
                pod_conditions = self._pod_conditions(started, restarted)
                self.events.append(
                    _EventSeed(
                        w.namespace,
                        "Pod",
                        "v1",
                        name,
                        pod_uid,
                        "BackOff",
                        f"Back-off restarting failed container {first['name']} in pod "
                        f"{name}_{w.namespace}({pod_uid})",
                        "kubelet",
                        node,
                        restarted_dt,
                        type="Warning",
                        count=restarts,
                        field_path=f"spec.containers{{{first['name']}}}",
                        first=restarted_dt - datetime.timedelta(minutes=restarts * 2),
                    )
                )
            yield (
                PODS,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": meta,
                    "spec": spec,
                    "status": {
                        "phase": "Running",
                        "conditions": pod_conditions,
                        "hostIP": host_ip,
                        "hostIPs": [{"ip": host_ip}],
                        "podIP": pod_ip,
                        "podIPs": [{"ip": pod_ip}],
                        "startTime": started,
                        "containerStatuses": statuses,
                        "qosClass": "Burstable",
                    },
                },
            )
            if backends is not None:
                backends.append(_Backend(name, pod_uid, pod_ip, node, name if is_sts else None))
            if w.young:
                self._pod_start_events(
                    w, rs_name, rs_uid, name, pod_uid, node, containers, started_dt
                )

    def _pod_start_events(
        self,
        w: _Workload,
        rs_name: str,
        rs_uid: str,
        pod: str,
        pod_uid: str,
        node: str,
        containers: list[Obj],
        started: datetime.datetime,
    ) -> None:
        ns = w.namespace
        add = self.events.append
        add(
            _EventSeed(
                ns,
                "ReplicaSet",
                "apps/v1",
                rs_name,
                rs_uid,
                "SuccessfulCreate",
                f"Created pod: {pod}",
                "replicaset-controller",
                None,
                started,
            )
        )
        add(
            _EventSeed(
                ns,
                "Pod",
                "v1",
                pod,
                pod_uid,
                "Scheduled",
                f"Successfully assigned {ns}/{pod} to {node}",
                "default-scheduler",
                None,
                started,
            )
        )
        for c in containers:
            cname, image = c["name"], c["image"]
            path = f"spec.containers{{{cname}}}"
            for reason, message in (
                ("Pulled", f'Container image "{image}" already present on machine'),
                ("Created", f"Created container {cname}"),
                ("Started", f"Started container {cname}"),
            ):
                add(
                    _EventSeed(
                        ns,
                        "Pod",
                        "v1",
                        pod,
                        pod_uid,
                        reason,
                        message,
                        "kubelet",
                        node,
                        started + datetime.timedelta(seconds=1),
                        field_path=path,
                    )
                )

    def _deployment(
        self,
        w: _Workload,
        uid: str,
        created: str,
        ready: str,
        selector: dict[str, str],
        template_spec: Obj,
    ) -> Obj:
        replicas = len(w.nodes)
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": w.name,
                "namespace": w.namespace,
                "uid": uid,
                "generation": 1,
                "labels": selector,
                "annotations": {"deployment.kubernetes.io/revision": "1"},
                "creationTimestamp": created,
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "template": {"metadata": {"labels": selector}, "spec": template_spec},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                },
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
            },
            "status": {
                "observedGeneration": 1,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True",
                        "lastUpdateTime": ready,
                        "lastTransitionTime": ready,
                        "reason": "MinimumReplicasAvailable",
                        "message": "Deployment has minimum availability.",
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "lastUpdateTime": ready,
                        "lastTransitionTime": created,
                        "reason": "NewReplicaSetAvailable",
                        "message": f'ReplicaSet "{w.name}" has successfully progressed.',
                    },
                ],
            },
        }

    def _statefulset(
        self,
        w: _Workload,
        uid: str,
        created: str,
        revision: str,
        selector: dict[str, str],
        template_spec: Obj,
    ) -> Obj:
        replicas = len(w.nodes)
        return {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {
                "name": w.name,
                "namespace": w.namespace,
                "uid": uid,
                "generation": 1,
                "labels": selector,
                "creationTimestamp": created,
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "serviceName": w.name,
                "template": {"metadata": {"labels": selector}, "spec": template_spec},
                "podManagementPolicy": "OrderedReady",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "revisionHistoryLimit": 10,
                "persistentVolumeClaimRetentionPolicy": {
                    "whenDeleted": "Retain",
                    "whenScaled": "Retain",
                },
            },
            "status": {
                "observedGeneration": 1,
                "replicas": replicas,
                "readyReplicas": replicas,
                "currentReplicas": replicas,
                "updatedReplicas": replicas,
                "availableReplicas": replicas,
                "currentRevision": revision,
                "updateRevision": revision,
                "collisionCount": 0,
            },
        }

    # -- services and endpoints ---------------------------------------------------------

    def service_objects(self) -> Iterator[tuple[ResourceType, Obj]]:
        created = format_time(self.cluster_start)
        yield from self._service(
            "default",
            "kubernetes",
            {"component": "apiserver", "provider": "kubernetes"},
            None,
            "10.96.0.1",
            [("https", 443, 6443, "TCP")],
            # A managed control plane still has an apiserver endpoint, just not a node.
            [_Backend("", "", ip, "", None) for ip in self.cp_ips or ["10.1.0.10"]],
            created,
        )
        for w in self.services:
            # Service port 80 in front of an http container port; others keep their number.
            ports = [
                (pname, 80 if pname == "http" else port, port, proto)
                for pname, port, proto in w.ports
            ]
            headless = w.kind == "StatefulSet"
            labels = w.labels or {"app": w.name}
            if w.name == "coredns":
                name = "kube-dns"
                ip: str | None = "10.96.0.10"
                labels = {**labels, "kubernetes.io/cluster-service": "true"}
            else:
                name = w.name
                ip = None if headless else self.cluster_ip()
            yield from self._service(
                w.namespace,
                name,
                labels,
                w.labels or {"app": w.name},
                ip,
                ports,
                self.backends[(w.namespace, w.name)],
                created,
            )

    def _service(
        self,
        ns: str,
        name: str,
        labels: dict[str, str],
        selector: dict[str, str] | None,
        cluster_ip: str | None,
        ports: list[tuple[str, int, int, str]],
        backends: list[_Backend],
        created: str,
    ) -> Iterator[tuple[ResourceType, Obj]]:
        ip = cluster_ip or "None"
        spec: Obj = {
            "clusterIP": ip,
            "clusterIPs": [ip],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [
                {"name": n, "port": port, "protocol": proto, "targetPort": target}
                for n, port, target, proto in ports
            ],
            "sessionAffinity": "None",
            "type": "ClusterIP",
        }
        if selector is not None:
            spec["selector"] = selector
        if cluster_ip is None:
            spec["publishNotReadyAddresses"] = False
        yield (
            SERVICES,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": self.uid(),
                    "labels": labels,
                    "creationTimestamp": created,
                },
                "spec": spec,
                "status": {"loadBalancer": {}},
            },
        )
        addresses = []
        for b in backends:
            address: Obj = {"ip": b.ip}
            if b.hostname:
                address["hostname"] = b.hostname
            if b.name:
                address["nodeName"] = b.node
                address["targetRef"] = {
                    "kind": "Pod",
                    "namespace": ns,
                    "name": b.name,
                    "uid": b.uid,
                }
            addresses.append(address)
        # Endpoints name their ports by target port number, as the endpoints controller
        # resolves them against the pods.
        yield (
            ENDPOINTS,
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": self.uid(),
                    "labels": labels,
                    "annotations": {
                        "endpoints.kubernetes.io/last-change-trigger-time": self.now_time
                    },
                    "creationTimestamp": created,
                },
                "subsets": [
                    {
                        "addresses": addresses,
                        "ports": [
                            {"name": n, "port": target, "protocol": proto}
                            for n, _port, target, proto in ports
                        ],
                    }
                ],
            },
        )

    # -- events -------------------------------------------------------------------------

    def event_objects(self) -> Iterator[tuple[ResourceType, Obj]]:
        for seq, e in enumerate(self.events):
            when = format_time(e.when)
            first = format_time(e.first) if e.first else when
            # client-go names an Event after its object and the nanosecond clock; the
            # sequence number keeps names unique when several share a second.
            nanos = int(e.when.replace(tzinfo=datetime.UTC).timestamp()) * 10**9 + seq
            involved: Obj = {
                "kind": e.kind,
                "namespace": e.namespace,
                "name": e.name,
                "uid": e.uid,
                "apiVersion": e.api_version,
            }
            if e.field_path:
                involved["fieldPath"] = e.field_path
            source: Obj = {"component": e.component}
            if e.host:
                source["host"] = e.host
            yield (
                EVENTS,
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {
                        "name": f"{e.name}.{nanos:x}",
                        "namespace": e.namespace,
                        "uid": self.uid(),
                        "creationTimestamp": first,
                    },
                    "involvedObject": involved,
                    "reason": e.reason,
                    "message": e.message,
                    "source": source,
                    "firstTimestamp": first,
                    "lastTimestamp": when,
                    "count": e.count,
                    "type": e.type,
                    "eventTime": None,
                    "reportingComponent": e.component,
                    "reportingInstance": e.host or "",
                },
            )
