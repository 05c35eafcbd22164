"""Node heartbeats: how old each node's Lease is, which are stale, and when the wave began.

A kubelet renews its Lease in ``kube-node-lease`` every 10 s; the node-lifecycle
controller marks a node Unknown once the Lease has not moved for the grace period
(``--node-monitor-grace-period``, 50 s), and from there the node is on its way to a
NoExecute taint and its pods to eviction. Lease age is therefore the earliest signal of
the seed's first failure story: an apiserver congested enough to starve heartbeats
makes *every* zone's leases age at once, while a zone that lost its network makes one
zone's leases age. This module derives, as pure functions of projections and a ``now``:

- each node's Lease age (``now - renewTime``),
- per zone and overall, the nodes whose Lease is stale (age strictly above the grace
  period, as the controller's ``now > probeTimestamp + grace``) and their share,
- a histogram of Lease ages over the nodes (how the heartbeat lag is distributed; a
  congested apiserver moves the whole distribution, a dead rack moves its tail),
- the *correlated wave*: the largest group of stale nodes whose onsets (the moment each
  Lease went stale, ``renewTime + grace``) fall within a window of each other (2 min by
  default), with the zones it spans and when it began. A congested apiserver starves
  hundreds of kubelets within seconds of each other, in every zone; nodes that die one
  by one, or one node dead for hours, never form such a group. The wave's start lets an
  alert say "nodes have been going stale for 40 s" instead of only "12 nodes are
  stale", and is not dragged into the past by one long-dead node.

Ages are computed against the kubelets' own clocks (renewTime is written by the
kubelet), while the controller measures against its own observation times. A kubelet
whose clock runs ahead would show a negative age; it is clamped to 0 (fresh), since a
Lease that moves is alive whatever its clock says. A node without a Lease (or with a
Lease that has no renewTime: a node registering, or a kubelet older than 1.17) has no
age; it is counted as *missing*, never as stale: for such nodes the controller falls
back to the Ready condition, which :mod:`~kubeballast.exporter.zones` reads.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from kubeballast.exporter.projections import ZONE_LABELS, LeaseP, NodeP

__all__ = [
    "DEFAULT_ZONE_LABEL",
    "LAG_BUCKETS",
    "WAVE_ZONE_MIN_RATIO",
    "Heartbeats",
    "NodeHeartbeat",
    "StaleWave",
    "ZoneHeartbeats",
    "correlated_wave",
    "derive_heartbeats",
    "lease_age",
    "zone_of",
    "zones_spanned",
]

DEFAULT_ZONE_LABEL: Final = ZONE_LABELS[0]

LAG_BUCKETS: Final[tuple[float, ...]] = (1, 2, 5, 10, 20, 40, 50, 60, 120, 300, 600)
"""Upper bounds (seconds) of the Lease age histogram. 10 is the renewal interval, 40
the Lease duration, 50 the default grace period, 300 the default toleration: the
buckets put a boundary at every point where the controller's behaviour changes."""


def zone_of(node: NodeP, zone_label: str = DEFAULT_ZONE_LABEL) -> str:
    """The node's zone: ``zone_label``'s value; with the standard label, the projection's
    zone (which also reads the deprecated beta label). "" for a node without one."""
    if zone_label == DEFAULT_ZONE_LABEL:
        return node.zone
    return node.labels.get(zone_label, "")


def lease_age(lease: LeaseP | None, now: float) -> float | None:
    """Seconds since the Lease was renewed (never negative); None without a renewTime."""
    if lease is None or lease.renew_time is None:
        return None
    return max(0.0, now - lease.renew_time)


@dataclass(frozen=True)
class NodeHeartbeat:
    node: str
    zone: str
    age_seconds: float | None
    """None: the node has no Lease, or its Lease has no renewTime."""
    stale: bool
    """The age is above the grace period."""
    stale_since: float | None
    """When the Lease went stale (``renewTime + grace``), for stale nodes."""


@dataclass(frozen=True)
class ZoneHeartbeats:
    zone: str
    nodes: int
    stale: int
    missing: int

    @property
    def stale_ratio(self) -> float:
        """Stale nodes over all nodes of the zone (0 for an empty zone)."""
        return self.stale / self.nodes if self.nodes else 0.0


@dataclass(frozen=True)
class StaleWave:
    """The largest group of stale nodes that went stale within ``window`` of each other."""

    nodes: tuple[str, ...]
    """By name."""
    zones: tuple[tuple[str, int, float], ...]
    """(zone, nodes of the wave in it, earliest onset in it), by zone."""
    start: float | None
    """Earliest onset in the wave; None for an empty wave."""
    end: float | None
    """Latest onset in the wave."""

    @property
    def size(self) -> int:
        return len(self.nodes)


EMPTY_WAVE: Final = StaleWave((), (), None, None)

WAVE_ZONE_MIN_RATIO: Final = 0.1
"""A wave *spans* a zone when it holds at least this share of the zone's nodes: one
node of another zone dying in the same two minutes as a partitioned zone does not make
the partition a multi-zone wave."""


def zones_spanned(wave: StaleWave, zone_sizes: Mapping[str, int]) -> int:
    """Zones holding at least WAVE_ZONE_MIN_RATIO of their nodes in ``wave``."""
    return sum(
        1
        for zone, count, _first in wave.zones
        if zone_sizes.get(zone, 0) and count / zone_sizes[zone] >= WAVE_ZONE_MIN_RATIO
    )


def correlated_wave(stale: Iterable[NodeHeartbeat], window: float) -> StaleWave:
    """The largest set of ``stale`` nodes whose onsets lie within ``window`` seconds of
    each other (a sliding window over the sorted onsets; among equally large groups, the
    most recent, since the newest wave is the one still unfolding)."""
    onsets = sorted(
        (beat.stale_since, beat.node, beat.zone)
        for beat in stale
        if beat.stale and beat.stale_since is not None
    )
    if not onsets:
        return EMPTY_WAVE
    best_lo, best_hi = 0, 0
    lo = 0
    for hi in range(len(onsets)):
        while onsets[hi][0] - onsets[lo][0] > window:
            lo += 1
        if hi - lo >= best_hi - best_lo:
            best_lo, best_hi = lo, hi
    members = onsets[best_lo : best_hi + 1]
    zones: dict[str, list[float]] = {}
    for since, _node, zone in members:
        tally = zones.setdefault(zone, [0.0, since])
        tally[0] += 1
        tally[1] = min(tally[1], since)
    return StaleWave(
        nodes=tuple(sorted(node for _since, node, _zone in members)),
        zones=tuple((zone, int(count), first) for zone, (count, first) in sorted(zones.items())),
        start=members[0][0],
        end=members[-1][0],
    )


@dataclass(frozen=True)
class Heartbeats:
    grace_seconds: float
    nodes: tuple[NodeHeartbeat, ...]
    """Every node, by name."""
    zones: tuple[ZoneHeartbeats, ...]
    """Every zone that has nodes, by name."""
    stale: int
    missing: int
    lag_buckets: tuple[tuple[float, int], ...]
    """Cumulative (upper bound, nodes with an age at most that) over the nodes that have
    an age; the last bound is +Inf and counts all of them."""
    lag_sum: float
    wave_onset: float | None
    """Earliest ``renewTime + grace`` over the nodes stale now; None when none is."""
    wave: StaleWave = EMPTY_WAVE
    """The correlated wave among the stale nodes."""

    @property
    def wave_ratio(self) -> float:
        """Nodes of the wave over all nodes."""
        return self.wave.size / self.total if self.total else 0.0

    @property
    def wave_zones(self) -> int:
        """Zones the wave spans (see :func:`zones_spanned`)."""
        return zones_spanned(self.wave, {z.zone: z.nodes for z in self.zones})

    @property
    def total(self) -> int:
        return len(self.nodes)

    @property
    def stale_ratio(self) -> float:
        return self.stale / self.total if self.total else 0.0

    @property
    def lag_count(self) -> int:
        return self.lag_buckets[-1][1]


def derive_heartbeats(
    nodes: Iterable[NodeP],
    leases: Mapping[str, LeaseP],
    now: float,
    *,
    grace_seconds: float,
    zone_label: str = DEFAULT_ZONE_LABEL,
    buckets: tuple[float, ...] = LAG_BUCKETS,
    wave_window_seconds: float = 120.0,
) -> Heartbeats:
    """Heartbeat ages of ``nodes`` at ``now``; ``leases`` are the node Leases by name
    (a node's Lease carries the node's name)."""
    per_node: list[NodeHeartbeat] = []
    zones: dict[str, list[int]] = {}  # zone -> [nodes, stale, missing]
    counts = [0] * (len(buckets) + 1)
    lag_sum = 0.0
    onset: float | None = None
    stale_total = missing_total = 0
    for node in sorted(nodes, key=lambda n: n.name):
        zone = zone_of(node, zone_label)
        tally = zones.setdefault(zone, [0, 0, 0])
        tally[0] += 1
        lease = leases.get(node.name)
        renewed = lease.renew_time if lease is not None else None
        age = None if renewed is None else max(0.0, now - renewed)
        stale = False
        since: float | None = None
        if renewed is None or age is None:
            tally[2] += 1
            missing_total += 1
        else:
            # Bucket i holds ages in (buckets[i-1], buckets[i]]: "le" is inclusive.
            counts[bisect.bisect_left(buckets, age)] += 1
            lag_sum += age
            if age > grace_seconds:
                stale = True
                since = renewed + grace_seconds
                onset = since if onset is None else min(onset, since)
                tally[1] += 1
                stale_total += 1
        per_node.append(NodeHeartbeat(node.name, zone, age, stale, since))
    cumulative: list[tuple[float, int]] = []
    running = 0
    for bound, count in zip((*buckets, float("inf")), counts, strict=True):
        running += count
        cumulative.append((float(bound), running))
    return Heartbeats(
        grace_seconds=grace_seconds,
        nodes=tuple(per_node),
        zones=tuple(
            ZoneHeartbeats(zone, total, stale, missing)
            for zone, (total, stale, missing) in sorted(zones.items())
        ),
        stale=stale_total,
        missing=missing_total,
        lag_buckets=tuple(cumulative),
        lag_sum=lag_sum,
        wave_onset=onset,
        wave=correlated_wave((beat for beat in per_node if beat.stale), wave_window_seconds),
    )
