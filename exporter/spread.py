"""Zone spread of workloads: which Deployments and StatefulSets one zone's loss would take down.

The seed asks that workloads spread across zones (topologySpreadConstraints, zone
anti-affinity). Declaring it is not enough: a workload scheduled while the other zones
were full, or one whose constraint says ScheduleAnyway, can sit in one zone for months,
and a zone outage then takes all of it at once. Placement is the only truth, so this
module reads it from the pods, as a pure function of projections:

- pods are resolved to their workload through their controller owner reference, a
  ReplicaSet resolved to its Deployment, as the cluster state does;
- per workload: **ready** replicas per zone (a replica that is not ready does not serve,
  wherever it is), the zones used, and the **skew** (most minus fewest ready replicas
  over the zones that have schedulable nodes: Ready, not cordoned, not control plane,
  without a ``node.kubernetes.io/`` NoSchedule or NoExecute taint). The scheduler's own
  skew counts matching pods rather than ready ones; ours is what an outage would cost;
- whether it declares zone spread: a topologySpreadConstraint on the zone label (its
  smallest maxSkew is kept) or a zone podAntiAffinity term.

Risk classes, exactly one per workload:

- ``single_zone``: at least 2 replicas desired, every ready replica in one zone, while
  the cluster has more than one zone with schedulable nodes;
- ``skew_exceeded``: a declared zone maxSkew, and the skew is above it;
- ``ok``: spread (or not needing it);
- ``not_applicable``: fewer than 2 replicas desired, no ready replica, or a single
  schedulable zone (nothing to spread over).

Every workload is counted by class; only those at risk get series of their own, the
riskiest first (``single_zone`` before ``skew_exceeded``, then more ready replicas,
then the larger excess of skew) up to ``max_workload_series``, so a cluster with
thousands of crowded workloads stays within a bounded number of series.

Deriving all this is a walk over every pod and every workload: 120-150 ms of CPU at
the seed's scale (150 000 pods, 13 000 workloads), most of a render. Placement changes
slowly and the alert on it waits 30 minutes (KubeWorkloadSingleZone), so the exporter
derives it through a :class:`SpreadCache`: a report is reused for up to
``SPREAD_MAX_AGE_SECONDS`` (60 s), and derived again at once when the schedulable zones
change (a zone going down changes every workload's skew and risk). At a 15 s scrape
interval that is one walk in four renders.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from kubeballast.exporter.heartbeat import DEFAULT_ZONE_LABEL, zone_of
from kubeballast.exporter.projections import ZONE_LABELS, NodeP, PodP, ReplicaSetP, WorkloadP

__all__ = [
    "AT_RISK",
    "RISK_CLASSES",
    "SPREAD_MAX_AGE_SECONDS",
    "Risk",
    "SpreadCache",
    "SpreadReport",
    "WorkloadSpread",
    "derive_spread",
    "schedulable_zones",
]

Risk = Literal["single_zone", "skew_exceeded", "ok", "not_applicable"]
RISK_CLASSES: Final[tuple[Risk, ...]] = ("single_zone", "skew_exceeded", "ok", "not_applicable")
AT_RISK: Final[frozenset[Risk]] = frozenset({"single_zone", "skew_exceeded"})

SPREAD_MAX_AGE_SECONDS: Final = 60.0
"""How long :class:`SpreadCache` reuses a report while the schedulable zones stay the
same."""

WorkloadKey = tuple[str, str, str]
"""(kind, namespace, name)."""


@dataclass(frozen=True)
class WorkloadSpread:
    kind: str
    namespace: str
    name: str
    replicas: int
    """Desired."""
    ready: int
    ready_by_zone: tuple[tuple[str, int], ...]
    """Ready replicas per zone, over the schedulable zones and the zones used, by zone."""
    zones_used: int
    skew: int
    declared: bool
    """Declares zone spread (a zone topologySpreadConstraint or zone anti-affinity)."""
    max_skew: int | None
    """The smallest maxSkew of its zone topologySpreadConstraints; None without one."""
    risk: Risk


@dataclass(frozen=True)
class SpreadReport:
    schedulable_zones: tuple[str, ...]
    at_risk: tuple[WorkloadSpread, ...]
    """The riskiest first, at most ``max_series``."""
    dropped: int
    """At-risk workloads left out by the cap."""
    counts: Mapping[tuple[Risk, bool], int]
    """Workloads by (risk class, declares zone spread); every pair present."""


def _schedulable(node: NodeP) -> bool:
    if node.control_plane or node.unschedulable or node.ready != "True":
        return False
    return not any(
        t.key.startswith("node.kubernetes.io/") and t.effect in ("NoSchedule", "NoExecute")
        for t in node.taints
    )


def schedulable_zones(nodes: Iterable[NodeP], zone_label: str = DEFAULT_ZONE_LABEL) -> set[str]:
    """Zones with at least one node a workload pod could be scheduled on now."""
    return {zone_of(n, zone_label) for n in nodes if _schedulable(n)}


def _zone_keys(zone_label: str) -> frozenset[str]:
    return frozenset((zone_label, *ZONE_LABELS))


def derive_spread(
    workloads: Iterable[WorkloadP],
    replicasets: Mapping[str, ReplicaSetP],
    pods: Iterable[PodP],
    nodes: Mapping[str, NodeP],
    *,
    zone_label: str = DEFAULT_ZONE_LABEL,
    max_series: int = 200,
    domains: Collection[str] | None = None,
) -> SpreadReport:
    """The spread of every Deployment and StatefulSet. ``replicasets`` by
    ``namespace/name``, ``nodes`` by name; ``domains``, the schedulable zones, when the
    caller has computed them already."""
    node_zone = {name: zone_of(node, zone_label) for name, node in nodes.items()}
    zones = schedulable_zones(nodes.values(), zone_label) if domains is None else set(domains)
    # One pass over the pods, as cheap per pod as Python allows (the Counter counts in
    # C), keyed by zone rather than node: a workload's replicas mostly sit on distinct
    # nodes, so per (owner, zone) there are a few times fewer keys than pods, and
    # owners are resolved once per distinct (owner, zone), not once per pod.
    zone_get = node_zone.get
    placed = Counter(
        (pod.owner_kind, pod.namespace, pod.owner_name, zone_get(pod.node_name))
        for pod in pods
        if pod.ready and not pod.terminating
    )
    ready: dict[WorkloadKey, dict[str, int]] = {}
    for (kind, namespace, name, zone), count in placed.items():
        if zone is None:
            continue
        if kind == "ReplicaSet":
            rs = replicasets.get(f"{namespace}/{name}")
            if rs is None or rs.owner_kind != "Deployment":
                continue
            kind, name = "Deployment", rs.owner_name
        elif kind != "StatefulSet":
            continue
        per_zone = ready.setdefault((kind, namespace, name), {})
        per_zone[zone] = per_zone.get(zone, 0) + count

    zone_keys = _zone_keys(zone_label)
    counts: dict[tuple[Risk, bool], int] = {
        (risk, declared): 0 for risk in RISK_CLASSES for declared in (False, True)
    }
    risky: list[WorkloadSpread] = []
    for workload in workloads:
        per_zone = ready.get((workload.kind, workload.namespace, workload.name), {})
        skews = [s.max_skew for s in workload.spread if s.topology_key in zone_keys]
        max_skew = min(skews) if skews else None
        declared = max_skew is not None or workload.zone_anti_affinity
        total = sum(per_zone.values())
        in_domains = [per_zone.get(zone, 0) for zone in zones]
        skew = max(in_domains) - min(in_domains) if in_domains else 0
        used = sum(1 for count in per_zone.values() if count)
        risk: Risk
        if workload.replicas < 2 or total == 0 or len(zones) < 2:
            risk = "not_applicable"
        elif used == 1:
            risk = "single_zone"
        elif max_skew is not None and skew > max_skew:
            risk = "skew_exceeded"
        else:
            risk = "ok"
        counts[(risk, declared)] += 1
        if risk in AT_RISK:
            risky.append(
                WorkloadSpread(
                    kind=workload.kind,
                    namespace=workload.namespace,
                    name=workload.name,
                    replicas=workload.replicas,
                    ready=total,
                    ready_by_zone=tuple(
                        (zone, per_zone.get(zone, 0)) for zone in sorted(zones | set(per_zone))
                    ),
                    zones_used=used,
                    skew=skew,
                    declared=declared,
                    max_skew=max_skew,
                    risk=risk,
                )
            )
    risky.sort(
        key=lambda w: (
            w.risk != "single_zone",
            -w.ready,
            -(w.skew - (w.max_skew or 0)),
            w.kind,
            w.namespace,
            w.name,
        )
    )
    kept = tuple(risky[:max_series])
    return SpreadReport(
        schedulable_zones=tuple(sorted(zones)),
        at_risk=kept,
        dropped=len(risky) - len(kept),
        counts=counts,
    )


class SpreadCache:
    """:func:`derive_spread` through a cache: the last report is reused for up to
    ``max_age_seconds`` while the schedulable zones and the settings stay the same.

    Thread-safe (the exporter renders in worker threads, and a scrape may render on the
    event loop meanwhile): two derivations at once each pay the walk, neither sees the
    other's report half-built.
    """

    def __init__(
        self,
        max_age_seconds: float = SPREAD_MAX_AGE_SECONDS,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age = max_age_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._key: tuple[object, ...] | None = None
        self._report: SpreadReport | None = None
        self._at = 0.0
        self.derivations = 0
        """How many times the report was derived (not reused)."""

    def derive(
        self,
        workloads: Iterable[WorkloadP],
        replicasets: Mapping[str, ReplicaSetP],
        pods: Iterable[PodP],
        nodes: Mapping[str, NodeP],
        *,
        zone_label: str = DEFAULT_ZONE_LABEL,
        max_series: int = 200,
    ) -> SpreadReport:
        """:func:`derive_spread`'s report, or the cached one if young enough."""
        domains = frozenset(schedulable_zones(nodes.values(), zone_label))
        key = (domains, zone_label, max_series)
        now = self._monotonic()
        with self._lock:
            report = self._report
            if report is not None and self._key == key and now - self._at < self._max_age:
                return report
        report = derive_spread(
            workloads,
            replicasets,
            pods,
            nodes,
            zone_label=zone_label,
            max_series=max_series,
            domains=domains,
        )
        with self._lock:
            if now >= self._at:
                self._key, self._report, self._at = key, report, now
            self.derivations += 1
        return report
