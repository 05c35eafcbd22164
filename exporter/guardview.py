"""The eviction guard's view: what the receiver's ``eviction-pause`` action re-checks
live, as a few kilobytes of JSON at ``GET /eviction-guard``.

Why: the receiver's live check (``remediations/evictionguard.py``) needs a handful of
values (the apiserver congestion verdict, the correlated heartbeat wave, which nodes'
Leases are stale) and used to read them from the whole /metrics page: several
megabytes at 5000 nodes, a fifth of a second of the receiver's CPU to parse, at every
check and keeper pass. This view hands it exactly those values.

It never disagrees with /metrics because it is not a second derivation: the handler
collects the same two areas a scrape collects (``apiserver`` and ``state``, through
the same :class:`~kubeballast.exporter.app.GuardedCollector` wrappers, so the
cluster-state families are the cached render the next scrape would serve) and reads
the values out of those families. Which stale nodes went stale at or after the wave's
start, which /metrics does not say by name, is recomputed from the served Lease ages
with :func:`~kubeballast.exporter.heartbeat.correlated_wave`: a wave depends only on
the differences between onsets (``renewTime + grace``, i.e. the render's ``now`` minus
the age plus the grace period), and the ``now`` shared by every age cancels out, so the
wave is the render's without knowing when it ran. ``generated_at`` is when the view
was assembled (the exporter's clock); the families are at most the state collector's
stale limit older.

The wire format (``kind``/``version`` below) is the contract with the receiver, which
decodes it with its own schema (the two packages do not import each other): fields may
be added; removing or changing one bumps ``version``, and a receiver that does not know
the version reads /metrics instead. An exporter that does not serve the view at all
(older than this module) answers 404, and the receiver reads /metrics then too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Protocol

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.core import Metric

from kubeballast.exporter.heartbeat import NodeHeartbeat, correlated_wave

__all__ = [
    "VIEW_AREAS",
    "VIEW_KIND",
    "VIEW_PATH",
    "VIEW_VERSION",
    "GuardView",
    "TargetCongestion",
    "ViewUnavailableError",
    "Wave",
    "build_guard_view",
    "encode_guard_view",
    "make_guard_view_handler",
]

VIEW_PATH: Final = "/eviction-guard"
VIEW_KIND: Final = "kube-ballast/eviction-guard-view"
VIEW_VERSION: Final = 1
VIEW_AREAS: Final = ("apiserver", "state")
"""The exporter areas whose families the view reads (the catalog's names)."""


class TargetCongestion(msgspec.Struct, frozen=True):
    """One apiserver's congestion verdict, as ``kubeballast_apiserver_congest*`` say."""

    target: str
    evaluated: bool
    congested: bool
    reasons: list[str]
    """The active reasons (``apf_rejections_node_high`` ...), sorted."""


class Wave(msgspec.Struct, frozen=True):
    """The correlated wave of stale Leases (``kubeballast_lease_stale_wave_*``)."""

    nodes: int
    ratio: float
    zones: int
    start: float | None
    """Unix time of its earliest onset; None without a wave."""
    stale_from: int | None
    """Where in the view's ``stale`` (stalest first, so in the order the nodes went
    stale) the wave's first node is: ``stale[stale_from:]`` went stale at or after the
    wave's start (the wave's nodes, then those that went stale since), the nodes before
    it were stale before the wave (not its victims). None without a wave."""


class GuardView(msgspec.Struct, frozen=True):
    """The view. Until the cluster state has synced only ``synced`` (false), the
    congestion verdicts and the header are set."""

    kind: str
    version: int
    generated_at: float
    synced: bool
    congestion: list[TargetCongestion]
    nodes: int | None = None
    """``kubeballast_scale_current{dimension="nodes"}``."""
    grace_seconds: float | None = None
    wave: Wave | None = None
    stale: list[str] = msgspec.field(default_factory=list)
    """Every node whose Lease is older than the grace period, by name, stalest first
    (ties: the name, descending). Ages are on /metrics; the guard needs the order."""


class ViewUnavailableError(Exception):
    """The families do not say enough for a view (an area missing or failing)."""


def _by_name(families: Iterable[Metric]) -> dict[str, Metric]:
    return {family.name: family for family in families}


def _one(families: Mapping[str, Metric], name: str, **labels: str) -> float | None:
    family = families.get(name)
    for sample in family.samples if family is not None else ():
        if all(sample.labels.get(key) == value for key, value in labels.items()):
            return float(sample.value)
    return None


def _congestion(families: Mapping[str, Metric]) -> list[TargetCongestion]:
    """Per target, as parsing /metrics would: a sample at 1 is true."""
    evaluated: dict[str, bool] = {}
    congested: dict[str, bool] = {}
    reasons: dict[str, list[str]] = {}
    for name, into in (
        ("kubeballast_apiserver_congested", congested),
        ("kubeballast_apiserver_congestion_evaluated", evaluated),
    ):
        family = families.get(name)
        for sample in family.samples if family is not None else ():
            into[sample.labels.get("target", "")] = sample.value == 1
    family = families.get("kubeballast_apiserver_congestion_reason")
    for sample in family.samples if family is not None else ():
        active = reasons.setdefault(sample.labels.get("target", ""), [])
        if sample.value == 1:
            active.append(sample.labels.get("reason", ""))
    return [
        TargetCongestion(
            target=target,
            evaluated=evaluated.get(target, False),
            congested=congested.get(target, False),
            reasons=sorted(reasons.get(target, ())),
        )
        for target in sorted({*evaluated, *congested, *reasons})
    ]


def build_guard_view(
    families: Iterable[Metric], *, generated_at: float, wave_window_seconds: float
) -> GuardView:
    """The view over the families of the ``apiserver`` and ``state`` areas (pure).

    Raises :class:`ViewUnavailableError` when ``kubeballast_cluster_state_synced`` is
    missing (the state area failed this collection), or when the state is synced but a
    family the view needs is missing.
    """
    named = _by_name(families)
    synced = _one(named, "kubeballast_cluster_state_synced")
    if synced is None:
        raise ViewUnavailableError("the cluster-state families are missing")
    congestion = _congestion(named)
    if synced != 1:
        return GuardView(VIEW_KIND, VIEW_VERSION, generated_at, False, congestion)
    grace = _one(named, "kubeballast_node_lease_grace_period_seconds")
    wave_nodes = _one(named, "kubeballast_lease_stale_wave_nodes")
    wave_ratio = _one(named, "kubeballast_lease_stale_wave_ratio")
    wave_zones = _one(named, "kubeballast_lease_stale_wave_zones")
    nodes = _one(named, "kubeballast_scale_current", dimension="nodes")
    if grace is None or wave_nodes is None or wave_ratio is None or wave_zones is None:
        raise ViewUnavailableError("the heartbeat families are missing")
    ages = named.get("kubeballast_node_lease_age_seconds")
    stale = sorted(
        (
            (float(s.value), s.labels.get("node", ""))
            for s in (ages.samples if ages is not None else ())
            if s.value > grace
        ),
        reverse=True,
    )
    # Onsets relative to the render's (unknown) now: now - age + grace, less now. The
    # wave does not depend on that now.
    wave = correlated_wave(
        (NodeHeartbeat(node, "", age, True, grace - age) for age, node in stale),
        wave_window_seconds,
    )
    stale_from: int | None = None
    if wave.nodes:
        # The wave's first node has the largest age in it; stalest first, everything
        # from the first age not above that went stale at or after the wave's start.
        members = frozenset(wave.nodes)
        oldest = max(age for age, node in stale if node in members)
        stale_from = next(i for i, (age, _node) in enumerate(stale) if age <= oldest)
    return GuardView(
        kind=VIEW_KIND,
        version=VIEW_VERSION,
        generated_at=generated_at,
        synced=True,
        congestion=congestion,
        nodes=None if nodes is None else int(nodes),
        grace_seconds=grace,
        wave=Wave(
            nodes=int(wave_nodes),
            ratio=wave_ratio,
            zones=int(wave_zones),
            start=_one(named, "kubeballast_lease_stale_wave_start_timestamp_seconds"),
            stale_from=stale_from,
        ),
        stale=[node for _age, node in stale],
    )


_ENCODER: Final = msgspec.json.Encoder()


def encode_guard_view(view: GuardView) -> bytes:
    return _ENCODER.encode(view)


class _Collector(Protocol):
    name: str

    def collect(self) -> Iterable[Metric]: ...


def make_guard_view_handler(
    collectors: Sequence[_Collector],
    *,
    wave_window_seconds: float,
    clock: Callable[[], float] = time.time,
) -> Handler:
    """The ``GET /eviction-guard`` handler over the exporter's guarded collectors (those
    of :data:`VIEW_AREAS` are collected, as a scrape collects them)."""
    wanted = [collector for collector in collectors if collector.name in VIEW_AREAS]

    async def eviction_guard_view(request: web.Request) -> web.StreamResponse:
        families = [family for collector in wanted for family in collector.collect()]
        try:
            view = build_guard_view(
                families, generated_at=clock(), wave_window_seconds=wave_window_seconds
            )
        except ViewUnavailableError as error:
            return web.json_response({"error": str(error)}, status=503)
        response = web.Response(body=encode_guard_view(view), content_type="application/json")
        # A storm's view lists thousands of node names: compressed when asked.
        response.enable_compression()
        return response

    return eviction_guard_view
