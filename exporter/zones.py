"""Zone disruption as the node-lifecycle controller sees it, and the evictions it implies.

The node-lifecycle controller (pkg/controller/nodelifecycle) decides, zone by zone, how
fast nodes that stopped heartbeating get the NoExecute taint that evicts their pods.
Whether a heartbeat outage ends as a few replaced pods or as a zone emptied by the
control plane itself depends on that decision, so the exporter recomputes it from the
same inputs, as pure functions of projections and ``now``, and predicts its outcome:

- **Which nodes count as NotReady.** The Ready condition is not ``True``, *or* the
  node's Lease is stale (older than the grace period): the controller is about to set
  Ready to Unknown for it, and counting it now is what makes the metric lead the
  controller instead of trailing it. Nodes labelled
  ``node.kubernetes.io/exclude-disruption`` are left out of the zone's state, as the
  controller does (they are still tainted and their pods still evicted).
- **The zone state** (``ComputeZoneState``): FullDisruption when no node is Ready and
  at least one is NotReady; PartialDisruption when more than two nodes are NotReady and
  they are at least ``--unhealthy-zone-threshold`` of the zone; Normal otherwise.
- **The taint rate** (``setLimiterInZone``, ``ReducedQPSFunc``, ``HealthyQPSFunc``):
  Normal and FullDisruption zones taint at ``--node-eviction-rate``; a PartialDisruption
  zone at ``--secondary-node-eviction-rate`` if it has more than
  ``--large-cluster-size-threshold`` nodes, else not at all. When *every* zone is in
  FullDisruption the controller concludes the control plane, not the nodes, is broken
  ("master disruption mode"): it stops tainting everywhere and removes the
  unreachable/not-ready NoExecute taints it set.
- **Pods evicted soon.** The taint-eviction controller deletes a pod on a
  NoExecute-tainted node at the taint's ``timeAdded`` plus the smallest
  ``tolerationSeconds`` of the tolerations matching the node's NoExecute taints (the
  first matching toleration per taint, ``getMinTolerationTime``): a taint no toleration
  matches evicts at once, a matching toleration without seconds never. For a NotReady
  node *not yet* tainted, the taint time is estimated from the zone's rate queue:
  the zone's untainted NotReady nodes are taken in the order they were queued (the
  moment their Lease went stale, or their Ready condition's transition time), the first
  at ``max(queued, now)`` and each next one ``1 / rate`` seconds after the previous one
  (never before its own queue time). That assumes the controller's token bucket (burst
  1) is full now, so the estimate errs early, which is the side to err on for a warning.
  A zone with rate 0 taints nobody new; in master disruption mode the controller's
  unreachable/not-ready taints do not count (it is removing them), other NoExecute
  taints still do. The count over the next ``eviction_horizon_seconds`` is exported
  per zone, never per pod.

Differences from the controller, all deliberate: zones are keyed by the zone label
alone (the controller's key is region + zone; zone names are unique across regions in
every cloud); the controller's zone states are sticky across passes (master disruption
mode is entered and left on transitions), ours are recomputed from scratch each time,
which is the same in every steady state; a taint without ``timeAdded`` (not one the
controller or kubectl sets) is taken as added now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from kubeballast.core.config import ClusterStateConfig
from kubeballast.exporter.heartbeat import DEFAULT_ZONE_LABEL, lease_age, zone_of
from kubeballast.exporter.projections import LeaseP, NodeP, PodP, TaintP, TolerationP

__all__ = [
    "EXCLUDE_DISRUPTION_LABEL",
    "NOT_READY_TAINT_KEY",
    "UNREACHABLE_TAINT_KEY",
    "ZONE_STATES",
    "ZoneDisruption",
    "ZoneRules",
    "ZoneState",
    "ZoneStatus",
    "compute_zone_state",
    "derive_zones",
    "effective_ready",
    "eviction_delay",
    "tolerates",
    "zone_eviction_rate",
]

ZoneState = Literal["Normal", "PartialDisruption", "FullDisruption"]
ZONE_STATES: Final[tuple[ZoneState, ...]] = ("Normal", "PartialDisruption", "FullDisruption")

NOT_READY_TAINT_KEY: Final = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT_KEY: Final = "node.kubernetes.io/unreachable"
CONTROLLER_TAINT_KEYS: Final = frozenset({NOT_READY_TAINT_KEY, UNREACHABLE_TAINT_KEY})
EXCLUDE_DISRUPTION_LABEL: Final = "node.kubernetes.io/exclude-disruption"
NO_EXECUTE: Final = "NoExecute"

_FINISHED: Final = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class ZoneRules:
    """The controller's flags (defaults: kube-controller-manager's) and the horizon."""

    grace_seconds: float = 50.0
    unhealthy_zone_threshold: float = 0.55
    large_cluster_size_threshold: int = 50
    node_eviction_rate: float = 0.1
    secondary_node_eviction_rate: float = 0.01
    horizon_seconds: float = 300.0
    zone_label: str = DEFAULT_ZONE_LABEL

    @classmethod
    def from_config(cls, config: ClusterStateConfig) -> ZoneRules:
        return cls(
            grace_seconds=config.node_monitor_grace_period_seconds,
            unhealthy_zone_threshold=config.unhealthy_zone_threshold,
            large_cluster_size_threshold=config.large_cluster_size_threshold,
            node_eviction_rate=config.node_eviction_rate,
            secondary_node_eviction_rate=config.secondary_node_eviction_rate,
            horizon_seconds=config.eviction_horizon_seconds,
            zone_label=config.zone_label,
        )


def compute_zone_state(ready: int, not_ready: int, threshold: float) -> ZoneState:
    """``ComputeZoneState`` over the counts of Ready and NotReady nodes of a zone."""
    if ready == 0 and not_ready > 0:
        return "FullDisruption"
    if not_ready > 2 and not_ready / (not_ready + ready) >= threshold:
        return "PartialDisruption"
    return "Normal"


def zone_eviction_rate(
    state: ZoneState, zone_size: int, rules: ZoneRules, *, master_disruption: bool = False
) -> float:
    """Nodes per second the controller taints NoExecute in a zone of ``zone_size``
    nodes in ``state``; 0 everywhere in master disruption mode."""
    if master_disruption:
        return 0.0
    if state == "PartialDisruption":
        if zone_size > rules.large_cluster_size_threshold:
            return rules.secondary_node_eviction_rate
        return 0.0
    return rules.node_eviction_rate


def effective_ready(node: NodeP, lease: LeaseP | None, now: float, grace_seconds: float) -> str:
    """The Ready status the controller holds for the node, or is about to set:
    "Unknown" once the Lease is stale, else the node's own (a node without a Ready
    condition is "Unknown")."""
    age = lease_age(lease, now)
    if age is not None and age > grace_seconds:
        return "Unknown"
    return node.ready or "Unknown"


def tolerates(toleration: TolerationP, taint: TaintP) -> bool:
    """core/v1 ``Toleration.ToleratesTaint``."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator in ("", "Equal"):
        return toleration.value == taint.value
    return toleration.operator == "Exists"


def eviction_delay(taints: Sequence[TaintP], tolerations: Sequence[TolerationP]) -> float | None:
    """Seconds a pod may stay once ``taints`` (NoExecute) are on its node: 0 when one is
    not tolerated, None when every used toleration tolerates forever, else the smallest
    tolerationSeconds (``GetMatchingTolerations`` + ``getMinTolerationTime``)."""
    if not taints:
        return None
    smallest: float | None = None
    for taint in taints:
        match = next((t for t in tolerations if tolerates(t, taint)), None)
        if match is None:
            return 0.0
        if match.seconds is None:
            continue
        if match.seconds <= 0:
            return 0.0
        if smallest is None or match.seconds < smallest:
            smallest = float(match.seconds)
    return smallest


@dataclass(frozen=True)
class ZoneStatus:
    zone: str
    nodes: int
    """Nodes counted in the zone's state (excluded ones are not)."""
    not_ready: int
    state: ZoneState
    eviction_rate: float
    """Nodes per second the controller taints NoExecute in this zone."""
    tainted_nodes: int
    """Nodes carrying the unreachable or not-ready NoExecute taint."""
    awaiting_taint: int
    """NotReady nodes without that taint yet: the controller's queue."""
    pods_on_not_ready_nodes: int
    evictions_within_horizon: int
    """Pods whose eviction is predicted before ``now + horizon``."""
    next_eviction_at: float | None
    """The earliest predicted eviction (it may be in the past: due now)."""


@dataclass(frozen=True)
class ZoneDisruption:
    zones: tuple[ZoneStatus, ...]
    """Every zone that has nodes, by name."""
    master_disruption: bool
    """Every zone is in FullDisruption: the controller stops evicting."""
    horizon_seconds: float

    def zone(self, name: str) -> ZoneStatus | None:
        return next((z for z in self.zones if z.zone == name), None)

    @property
    def evictions_within_horizon(self) -> int:
        return sum(z.evictions_within_horizon for z in self.zones)


@dataclass
class _ZoneTally:
    nodes: int = 0
    ready: int = 0
    not_ready: int = 0
    tainted: int = 0
    queued: list[tuple[float, str]] | None = None


def derive_zones(
    nodes: Iterable[NodeP],
    leases: Mapping[str, LeaseP],
    pods: Iterable[PodP],
    now: float,
    rules: ZoneRules = ZoneRules(),
) -> ZoneDisruption:
    """Zone states, taint rates and predicted evictions at ``now``."""
    tallies: dict[str, _ZoneTally] = {}
    node_zone: dict[str, str] = {}
    not_ready_nodes: set[str] = set()
    # Node -> (NoExecute taints that will act, when they started acting).
    acting: dict[str, tuple[tuple[TaintP, ...], float]] = {}
    queued_status: dict[str, str] = {}
    for node in nodes:
        zone = zone_of(node, rules.zone_label)
        node_zone[node.name] = zone
        tally = tallies.setdefault(zone, _ZoneTally())
        lease = leases.get(node.name)
        status = effective_ready(node, lease, now, rules.grace_seconds)
        ready = status == "True"
        if EXCLUDE_DISRUPTION_LABEL not in node.labels:
            tally.nodes += 1
            if ready:
                tally.ready += 1
            else:
                tally.not_ready += 1
        if not ready:
            not_ready_nodes.add(node.name)
        no_execute = tuple(
            t
            for t in node.taints
            # On a Ready node the controller is removing its own taints (markNodeAsReachable).
            if t.effect == NO_EXECUTE and not (ready and t.key in CONTROLLER_TAINT_KEYS)
        )
        if no_execute:
            acting[node.name] = (no_execute, min(_added(t, now) for t in no_execute))
        if any(t.key in CONTROLLER_TAINT_KEYS for t in no_execute):
            tally.tainted += 1
        elif not ready:
            if tally.queued is None:
                tally.queued = []
            tally.queued.append((_queued_at(node, lease, now, rules.grace_seconds), node.name))
            queued_status[node.name] = status

    states = {
        zone: compute_zone_state(t.ready, t.not_ready, rules.unhealthy_zone_threshold)
        for zone, t in tallies.items()
    }
    # Zones of excluded nodes only are not in the controller's zone map: they neither
    # enter nor prevent master disruption mode.
    counted = [states[zone] for zone, t in tallies.items() if t.nodes]
    master = bool(counted) and all(s == "FullDisruption" for s in counted)
    rates = {
        zone: zone_eviction_rate(states[zone], t.nodes, rules, master_disruption=master)
        for zone, t in tallies.items()
    }
    if master:
        # The controller is removing its own taints; only other NoExecute taints act.
        for name, (taints, _) in list(acting.items()):
            others = tuple(t for t in taints if t.key not in CONTROLLER_TAINT_KEYS)
            if others:
                acting[name] = (others, min(_added(t, now) for t in others))
            else:
                del acting[name]
    # Untainted NotReady nodes: when the zone's queue will taint them.
    for zone, tally in tallies.items():
        rate = rates[zone]
        if not tally.queued or rate <= 0:
            continue
        previous: float | None = None
        for queued_at, name in sorted(tally.queued):
            at = max(queued_at, now) if previous is None else max(queued_at, previous + 1 / rate)
            previous = at
            key = NOT_READY_TAINT_KEY if queued_status[name] == "False" else UNREACHABLE_TAINT_KEY
            taint = TaintP(key, "", NO_EXECUTE, at)
            existing = acting.get(name)
            if existing is None:
                acting[name] = ((taint,), at)
            else:
                acting[name] = ((*existing[0], taint), min(existing[1], at))

    deadline = now + rules.horizon_seconds
    on_not_ready: dict[str, int] = {}
    within: dict[str, int] = {}
    earliest: dict[str, float] = {}
    # Only pods on NotReady or NoExecute-tainted nodes matter; in a healthy cluster
    # there are none, and the walk over 150 000 pods is skipped altogether.
    wanted = not_ready_nodes | acting.keys()
    for pod in pods if wanted else ():
        name = pod.node_name
        if name not in wanted or pod.terminating or pod.phase in _FINISHED:
            continue
        pod_zone = node_zone.get(name)
        if pod_zone is None:
            continue  # a pod on a node the cache does not know (yet)
        zone = pod_zone
        if name in not_ready_nodes:
            on_not_ready[zone] = on_not_ready.get(zone, 0) + 1
        plan = acting.get(name)
        if plan is None:
            continue
        taints, since = plan
        delay = eviction_delay(taints, pod.tolerations)
        if delay is None:
            continue
        at = since + delay
        if at <= deadline:
            within[zone] = within.get(zone, 0) + 1
            if zone not in earliest or at < earliest[zone]:
                earliest[zone] = at

    return ZoneDisruption(
        zones=tuple(
            ZoneStatus(
                zone=zone,
                nodes=tally.nodes,
                not_ready=tally.not_ready,
                state=states[zone],
                eviction_rate=rates[zone],
                tainted_nodes=tally.tainted,
                awaiting_taint=len(tally.queued or ()),
                pods_on_not_ready_nodes=on_not_ready.get(zone, 0),
                evictions_within_horizon=within.get(zone, 0),
                next_eviction_at=earliest.get(zone),
            )
            for zone, tally in sorted(tallies.items())
        ),
        master_disruption=master,
        horizon_seconds=rules.horizon_seconds,
    )


def _added(taint: TaintP, now: float) -> float:
    return taint.time_added if taint.time_added is not None else now


def _queued_at(node: NodeP, lease: LeaseP | None, now: float, grace_seconds: float) -> float:
    """When the controller put the NotReady node in its zone's taint queue: when its
    Lease went stale, else when its Ready condition last changed."""
    age = lease_age(lease, now)
    if age is not None and age > grace_seconds and lease is not None:
        assert lease.renew_time is not None
        return lease.renew_time + grace_seconds
    return node.ready_since if node.ready_since is not None else now
