"""The network plugin (CNI) DaemonSets: are its agents up, in every zone?

The seed's first self-check asks whether a component that fails hurts running
containers, and names the network plugin's metadata store (Calico's datastore: etcd or
the Kubernetes API) as one to check. The answer for Calico is "not at once": the routes
and iptables rules felix and BIRD already programmed stay, so existing pods keep
talking; what stops is everything new (IP allocation for new pods, new policy, routes to
new nodes). So the exporter must show the agents' state *apart from* application pod
health, per zone (a zone whose agents all go not-ready is the outage pattern), and
without claiming to see more than the Kubernetes API shows.

What the API shows, and what this module reports from it:

- the DaemonSet's status: desired, ready and unavailable agents overall;
- the agent pods' Ready condition joined with their node's
  ``topology.kubernetes.io/zone``: agents and ready agents per zone. calico-node's
  readiness probe is ``calico-node -felix-ready -bird-ready``: felix reports not ready
  while it is out of sync with its datastore, BIRD while BGP sessions are down. Both
  show as the same Ready=False here; *which* one (the probe's message) is only in the
  kubelet's ``Unhealthy`` Events and logs;
- container restarts of the agents per zone, as a counter (liveness failures: felix
  or BIRD wedged, typically after a long datastore outage);
- nodes whose ``NetworkUnavailable`` condition is True, per zone: the network plugin
  itself sets it (Calico to False with reason ``CalicoIsUp`` when calico-node starts),
  and the scheduler keeps new pods off such nodes.

The limitation, said plainly: a datastore outage is not directly observable through
the Kubernetes API. It shows as agents going not-ready across every zone at once while
their restarts stay flat and NetworkUnavailable stays False, which is what the alert
rules look for; a direct check needs the datastore's own health endpoint (for Calico
in etcd mode, the etcd cluster's; in KDD mode, the apiserver is the datastore), which
is a later, configurable probe.

Reads go through the shared :class:`~kubeballast.exporter.kubeobjects.KubeReader`:
one LIST of DaemonSets (all namespaces: the agents live in kube-system, calico-system
or a vendor namespace), one LIST of each matching DaemonSet's pods by its selector, one
LIST of nodes; paginated, with slim projections. At 5000 nodes that is about 10 pages
of pods and 10 of nodes per refresh, hence the slow default interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.contract import MetricsCollector, MetricSpec, SnapshotView
from kubeballast.exporter.kubeobjects import (
    KubeReader,
    ObjectMeta,
    label_selector,
    object_path,
    shared_reader,
)

__all__ = [
    "DEFAULT_CNI_DAEMONSETS",
    "NO_ZONE",
    "ZONE_LABEL",
    "DaemonSetState",
    "NetworkCollector",
    "NetworkPluginSource",
    "NetworkSnapshot",
    "ZoneCounts",
    "build_network",
]

DEFAULT_CNI_DAEMONSETS = (
    "calico-node",
    "cilium",
    "kube-flannel-ds",
    "weave-net",
    "antrea-agent",
    "kube-router",
    "aws-node",
)
"""DaemonSet names of the common network plugins, matched in any namespace; the
setting ``exporter.network.daemonsets`` has the same default."""

NETWORK_INTERVAL_SECONDS = 60.0
"""How often the agents, their pods and the nodes are listed (the default of
``exporter.network.interval_seconds``)."""

NETWORK_TIMEOUT_SECONDS = 45.0
"""Give up on one refresh after this long (a few dozen pages on a slow apiserver)."""

ZONE_LABEL = "topology.kubernetes.io/zone"
NO_ZONE = "none"
"""The ``zone`` label value for nodes without a zone label (or pods whose node is
gone): an empty label value would be indistinguishable from no label in PromQL."""


# --------------------------------------------------------------------------------------
# Projections (only these fields are decoded; everything else in the JSON is skipped)
# --------------------------------------------------------------------------------------


class _Selector(msgspec.Struct, rename="camel"):
    match_labels: dict[str, str] | None = None
    match_expressions: list[dict[str, object]] | None = None


class _DaemonSetSpec(msgspec.Struct):
    selector: _Selector = msgspec.field(default_factory=_Selector)


class _DaemonSetStatus(msgspec.Struct, rename="camel"):
    desired_number_scheduled: int = 0
    number_ready: int = 0
    number_unavailable: int = 0


class _DaemonSet(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: _DaemonSetSpec = msgspec.field(default_factory=_DaemonSetSpec)
    status: _DaemonSetStatus = msgspec.field(default_factory=_DaemonSetStatus)


class _Condition(msgspec.Struct):
    type: str = ""
    status: str = ""


class _ContainerStatus(msgspec.Struct, rename="camel"):
    restart_count: int = 0


class _PodSpec(msgspec.Struct, rename="camel"):
    node_name: str = ""


class _PodStatus(msgspec.Struct, rename="camel"):
    conditions: list[_Condition] | None = None
    container_statuses: list[_ContainerStatus] | None = None


class _Pod(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: _PodSpec = msgspec.field(default_factory=_PodSpec)
    status: _PodStatus = msgspec.field(default_factory=_PodStatus)


class _NodeStatus(msgspec.Struct):
    conditions: list[_Condition] | None = None


class _Node(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    status: _NodeStatus = msgspec.field(default_factory=_NodeStatus)


@dataclass(frozen=True)
class _AgentPod:
    uid: str
    owner_uid: str
    node: str
    ready: bool
    restarts: int


@dataclass(frozen=True)
class _NodeInfo:
    name: str
    zone: str
    network_unavailable: bool


def _condition_true(conditions: Sequence[_Condition] | None, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in conditions or ())


def _agent_pod(pod: _Pod) -> _AgentPod:
    owner = next((o.uid for o in pod.metadata.owner_references or () if o.kind == "DaemonSet"), "")
    return _AgentPod(
        uid=pod.metadata.uid,
        owner_uid=owner,
        node=pod.spec.node_name,
        ready=_condition_true(pod.status.conditions, "Ready"),
        restarts=sum(c.restart_count for c in pod.status.container_statuses or ()),
    )


def _node_info(node: _Node) -> _NodeInfo:
    labels = node.metadata.labels or {}
    return _NodeInfo(
        name=node.metadata.name,
        zone=labels.get(ZONE_LABEL) or NO_ZONE,
        network_unavailable=_condition_true(node.status.conditions, "NetworkUnavailable"),
    )


# --------------------------------------------------------------------------------------
# Snapshot and derivation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZoneCounts:
    pods: int = 0
    ready: int = 0
    restarts_total: float = 0.0
    """Container restarts of the agents in this zone since the exporter started
    watching (a counter: replaced pods do not make it go down)."""


@dataclass(frozen=True)
class DaemonSetState:
    namespace: str
    name: str
    desired: int
    ready: int
    unavailable: int
    zones: Mapping[str, ZoneCounts]


@dataclass(frozen=True)
class NetworkSnapshot:
    daemonsets: tuple[DaemonSetState, ...]
    nodes_by_zone: Mapping[str, int]
    network_unavailable_by_zone: Mapping[str, int]


class RestartCounter:
    """Turns the restart counts of current pods into counters that never go down.

    A pod's ``restartCount`` is per pod; summing it over the current pods would drop
    whenever a restarting pod is replaced. So the increase of each known pod (by uid)
    is added, a new pod adds its whole count, and a pod that is gone adds nothing.
    The first refresh starts each counter at the sum it sees. Memory: one int per
    current agent pod.
    """

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._totals: dict[tuple[str, str, str], float] = {}

    def update(self, key: tuple[str, str], pods: Iterable[tuple[str, str, int]]) -> None:
        """``pods`` of DaemonSet ``key`` (namespace, name): (uid, zone, restarts)."""
        for uid, zone, restarts in pods:
            before = self._seen.get(uid, 0)
            increase = restarts - before if restarts >= before else restarts
            self._seen[uid] = restarts
            total_key = (*key, zone)
            self._totals[total_key] = self._totals.get(total_key, 0.0) + increase

    def forget_except(self, uids: set[str]) -> None:
        for uid in set(self._seen) - uids:
            del self._seen[uid]

    def total(self, key: tuple[str, str], zone: str) -> float:
        return self._totals.get((*key, zone), 0.0)


def summarise(
    daemonset: _DaemonSet,
    pods: Iterable[_AgentPod],
    zone_of: Mapping[str, str],
    restarts: RestartCounter,
) -> DaemonSetState:
    """One DaemonSet's state: its status, and its own pods (owned by its uid) by zone."""
    key = (daemonset.metadata.namespace, daemonset.metadata.name)
    counts: dict[str, list[int]] = {}
    observed: list[tuple[str, str, int]] = []
    for pod in pods:
        if pod.owner_uid != daemonset.metadata.uid:
            continue  # matched by the selector but not this DaemonSet's
        zone = zone_of.get(pod.node, NO_ZONE)
        entry = counts.setdefault(zone, [0, 0])
        entry[0] += 1
        entry[1] += 1 if pod.ready else 0
        observed.append((pod.uid, zone, pod.restarts))
    restarts.update(key, observed)
    zones = {
        zone: ZoneCounts(pods=n, ready=ready, restarts_total=restarts.total(key, zone))
        for zone, (n, ready) in sorted(counts.items())
    }
    status = daemonset.status
    return DaemonSetState(
        namespace=key[0],
        name=key[1],
        desired=status.desired_number_scheduled,
        ready=status.number_ready,
        unavailable=status.number_unavailable,
        zones=zones,
    )


# --------------------------------------------------------------------------------------
# Source
# --------------------------------------------------------------------------------------


class NetworkPluginSource:
    """Lists the network plugin's DaemonSets, their pods and the nodes."""

    kind = "network_plugin"
    instance = "cluster"

    def __init__(
        self,
        reader: KubeReader,
        *,
        daemonsets: Sequence[str] = DEFAULT_CNI_DAEMONSETS,
        interval_seconds: float = NETWORK_INTERVAL_SECONDS,
        timeout_seconds: float = NETWORK_TIMEOUT_SECONDS,
    ) -> None:
        self._reader = reader
        self._names = frozenset(daemonsets)
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._restarts = RestartCounter()

    @property
    def interval_seconds(self) -> float:
        return self._interval

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    async def refresh(self) -> NetworkSnapshot:
        listed = await self._reader.list(object_path("apps/v1", "daemonsets"), _DaemonSet)
        daemonsets = sorted(
            (ds for ds in listed.items if ds.metadata.name in self._names),
            key=lambda ds: (ds.metadata.namespace, ds.metadata.name),
        )
        nodes = (
            await self._reader.list(object_path("v1", "nodes"), _Node, project=_node_info)
        ).items
        zone_of = {node.name: node.zone for node in nodes}
        states: list[DaemonSetState] = []
        current: set[str] = set()
        for ds in daemonsets:
            selector = label_selector(
                ds.spec.selector.match_labels, ds.spec.selector.match_expressions
            )
            if not selector:
                continue  # an empty selector would list every pod in the namespace
            pods = await self._reader.list(
                object_path("v1", "pods", ds.metadata.namespace),
                _Pod,
                project=_agent_pod,
                label_selector=selector,
            )
            current.update(pod.uid for pod in pods.items)
            states.append(summarise(ds, pods.items, zone_of, self._restarts))
        self._restarts.forget_except(current)
        by_zone: dict[str, int] = {}
        unavailable: dict[str, int] = {}
        for node in nodes:
            by_zone[node.zone] = by_zone.get(node.zone, 0) + 1
            unavailable.setdefault(node.zone, 0)
            if node.network_unavailable:
                unavailable[node.zone] += 1
        return NetworkSnapshot(tuple(states), by_zone, unavailable)


# --------------------------------------------------------------------------------------
# Collector
# --------------------------------------------------------------------------------------

_DS = ("namespace", "daemonset")
_DSZ = ("namespace", "daemonset", "zone")

SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "kubeballast_network_plugin_daemonset_desired_pods",
        "gauge",
        "Nodes that should run the network plugin's agent (desiredNumberScheduled).",
        _DS,
    ),
    MetricSpec(
        "kubeballast_network_plugin_daemonset_ready_pods",
        "gauge",
        "Agents that are ready (numberReady).",
        _DS,
    ),
    MetricSpec(
        "kubeballast_network_plugin_daemonset_unavailable_pods",
        "gauge",
        "Nodes that should run an available agent and do not (numberUnavailable).",
        _DS,
    ),
    MetricSpec(
        "kubeballast_network_plugin_pods",
        "gauge",
        "Agent pods of the DaemonSet by their node's zone.",
        _DSZ,
    ),
    MetricSpec(
        "kubeballast_network_plugin_ready_pods",
        "gauge",
        "Agent pods whose Ready condition is True, by zone. For calico-node, not ready "
        "means felix (out of sync with its datastore) or BIRD (BGP) failed its probe.",
        _DSZ,
    ),
    MetricSpec(
        "kubeballast_network_plugin_container_restarts",
        "counter",
        "Container restarts of the agent pods by zone, since the exporter started.",
        _DSZ,
    ),
    MetricSpec(
        "kubeballast_network_nodes",
        "gauge",
        "Nodes by zone (the denominator for the per-zone agent counts).",
        ("zone",),
    ),
    MetricSpec(
        "kubeballast_network_nodes_network_unavailable",
        "gauge",
        "Nodes whose NetworkUnavailable condition is True (set by the network plugin), by zone.",
        ("zone",),
    ),
)


class NetworkCollector:
    """Metrics of the network plugin, from the :class:`NetworkPluginSource` snapshot."""

    def __init__(self, view: SnapshotView[NetworkSnapshot]) -> None:
        self._view = view

    def metric_specs(self) -> Sequence[MetricSpec]:
        return SPECS

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for spec in SPECS:
            cls = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
            families[spec.name] = cls(spec.name, spec.help, labels=list(spec.labels))
        snapshot = self._view.snapshot
        if snapshot is not None:
            value = snapshot.value
            for ds in value.daemonsets:
                key = [ds.namespace, ds.name]
                families["kubeballast_network_plugin_daemonset_desired_pods"].add_metric(
                    key, ds.desired
                )
                families["kubeballast_network_plugin_daemonset_ready_pods"].add_metric(
                    key, ds.ready
                )
                families["kubeballast_network_plugin_daemonset_unavailable_pods"].add_metric(
                    key, ds.unavailable
                )
                for zone, counts in ds.zones.items():
                    zkey = [*key, zone]
                    families["kubeballast_network_plugin_pods"].add_metric(zkey, counts.pods)
                    families["kubeballast_network_plugin_ready_pods"].add_metric(zkey, counts.ready)
                    families["kubeballast_network_plugin_container_restarts"].add_metric(
                        zkey, counts.restarts_total
                    )
            for zone, count in sorted(value.nodes_by_zone.items()):
                families["kubeballast_network_nodes"].add_metric([zone], count)
            for zone, count in sorted(value.network_unavailable_by_zone.items()):
                families["kubeballast_network_nodes_network_unavailable"].add_metric([zone], count)
        yield from families.values()


def build_network(context: ExporterContext) -> Sequence[MetricsCollector]:
    """The network plugin source and collector. Always built: the agents are read
    through the Kubernetes API, which every exporter has."""
    settings = context.config.network
    view = context.add_source(
        NetworkPluginSource(
            shared_reader(context),
            daemonsets=settings.daemonsets,
            interval_seconds=settings.interval_seconds,
        )
    )
    return [NetworkCollector(view)]
