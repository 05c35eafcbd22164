"""The eviction pause as Prometheus sees it: whether one is in force, until when, and
whether the guard is installed at all.

The receiver's own metrics vanish with the receiver; a pause outliving its receiver is
exactly the failure that must be seen. So the exporter reads the pause ConfigMap
(``kube-ballast/eviction-guard``, parsed by :mod:`kubeballast.core.evictionguard`) and
the policy and binding objects itself, one GET each every interval (three small
requests a minute: nothing a congested apiserver notices), and KubeEvictionPauseOverdue
fires from these numbers when a pause outlives its expiry or its cap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
from prometheus_client.core import GaugeMetricFamily, Metric

from kubeballast.core import evictionguard as eg
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.contract import MetricsCollector, MetricSpec, SnapshotView
from kubeballast.exporter.kubeobjects import KubeReader, object_path, shared_reader

__all__ = ["EvictionGuardSource", "GuardState", "build_eviction_guard"]

INTERVAL_SECONDS: Final = 20.0
TIMEOUT_SECONDS: Final = 10.0

SPECS: Final[tuple[MetricSpec, ...]] = (
    MetricSpec(
        "kubeballast_eviction_pause_active",
        "gauge",
        "1 while the eviction guard's pause is in force (ConfigMap kube-ballast/eviction-guard "
        "says paused): taint-based pod eviction is stopped.",
    ),
    MetricSpec(
        "kubeballast_eviction_pause_valid",
        "gauge",
        "0 when the pause ConfigMap exists but cannot be parsed (the janitor ends such a "
        "pause), else 1.",
    ),
    MetricSpec(
        "kubeballast_eviction_pause_started_timestamp_seconds",
        "gauge",
        "When the pause in force began (Unix time; absent without one).",
    ),
    MetricSpec(
        "kubeballast_eviction_pause_expires_timestamp_seconds",
        "gauge",
        "When the pause in force expires unless renewed (Unix time; absent without one).",
    ),
    MetricSpec(
        "kubeballast_eviction_pause_max_until_timestamp_seconds",
        "gauge",
        "The pause's hard cap: it ends then whatever the conditions (Unix time; absent "
        "without one).",
    ),
    MetricSpec(
        "kubeballast_eviction_pause_renewals",
        "gauge",
        "Renewals of the pause in force (0 without one).",
    ),
    MetricSpec(
        "kubeballast_eviction_pause_allowed_nodes",
        "gauge",
        "Nodes on the pause's allow-list (confirmed dead: their pods may still be evicted).",
    ),
    MetricSpec(
        "kubeballast_eviction_pause_last_end_timestamp_seconds",
        "gauge",
        "When the last pause ended, labelled with why (recovered, alert-resolved, expired, "
        "cap, manual, janitor); absent when none has ended.",
        ("reason",),
    ),
    MetricSpec(
        "kubeballast_eviction_guard_installed",
        "gauge",
        "1 when the eviction guard's ValidatingAdmissionPolicy and its binding are installed.",
    ),
)


class _ConfigMap(msgspec.Struct):
    data: dict[str, str] | None = None


class _Named(msgspec.Struct):
    metadata: dict[str, object] | None = None


@dataclass(frozen=True)
class GuardState:
    pause: eg.PauseState | None
    valid: bool
    installed: bool


class EvictionGuardSource:
    """GETs the pause ConfigMap, the policy and the binding."""

    kind = "eviction_guard"
    instance = "cluster"

    def __init__(self, reader: KubeReader, *, interval_seconds: float = INTERVAL_SECONDS) -> None:
        self._reader = reader
        self._interval = interval_seconds

    @property
    def interval_seconds(self) -> float:
        return self._interval

    @property
    def timeout_seconds(self) -> float:
        return TIMEOUT_SECONDS

    async def refresh(self) -> GuardState:
        cm = await self._reader.get(
            object_path("v1", "configmaps", eg.PARAM_NAMESPACE, eg.PARAM_NAME), _ConfigMap
        )
        pause: eg.PauseState | None = None
        valid = True
        if cm is not None:
            try:
                pause = eg.PauseState.from_data(cm.data or {})
            except ValueError:
                valid = False
        policy = await self._reader.get(
            object_path(
                "admissionregistration.k8s.io/v1",
                "validatingadmissionpolicies",
                name=eg.POLICY_NAME,
            ),
            _Named,
        )
        binding = await self._reader.get(
            object_path(
                "admissionregistration.k8s.io/v1",
                "validatingadmissionpolicybindings",
                name=eg.BINDING_NAME,
            ),
            _Named,
        )
        return GuardState(pause, valid, policy is not None and binding is not None)


def _gauges() -> Mapping[str, GaugeMetricFamily]:
    return {s.name: GaugeMetricFamily(s.name, s.help, labels=list(s.labels)) for s in SPECS}


class EvictionGuardCollector:
    def __init__(self, view: SnapshotView[GuardState]) -> None:
        self._view = view

    def metric_specs(self) -> Sequence[MetricSpec]:
        return SPECS

    def collect(self) -> Iterable[Metric]:
        snapshot = self._view.snapshot
        if snapshot is None:
            return
        state = snapshot.value
        families = _gauges()
        pause = state.pause
        active = pause is not None and pause.paused
        families["kubeballast_eviction_pause_active"].add_metric([], float(active))
        families["kubeballast_eviction_pause_valid"].add_metric([], float(state.valid))
        families["kubeballast_eviction_guard_installed"].add_metric([], float(state.installed))
        if pause is not None and active:
            for name, value in (
                ("kubeballast_eviction_pause_started_timestamp_seconds", pause.started_at),
                ("kubeballast_eviction_pause_expires_timestamp_seconds", pause.expires_at),
                ("kubeballast_eviction_pause_max_until_timestamp_seconds", pause.max_until),
            ):
                if value is not None:
                    families[name].add_metric([], value)
        families["kubeballast_eviction_pause_renewals"].add_metric(
            [], float(pause.renewals if active and pause is not None else 0)
        )
        families["kubeballast_eviction_pause_allowed_nodes"].add_metric(
            [], float(len(pause.allow_nodes) if active and pause is not None else 0)
        )
        if pause is not None and pause.ended_at is not None and pause.end_reason:
            families["kubeballast_eviction_pause_last_end_timestamp_seconds"].add_metric(
                [pause.end_reason], pause.ended_at
            )
        yield from families.values()


def build_eviction_guard(context: ExporterContext) -> Sequence[MetricsCollector]:
    """Always built: every exporter reads the Kubernetes API."""
    view = context.add_source(EvictionGuardSource(shared_reader(context)))
    return [EvictionGuardCollector(view)]
