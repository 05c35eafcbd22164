"""The catalog: which areas the exporter has, and how each is built from the config.

An *area* (apiserver health, scheduler and controller-manager, CNI DaemonSets, object
pressure ...) lives in its own module and contributes one :class:`CollectorFactory`: a
plain function that, given an :class:`ExporterContext`, creates its sources, registers
each with :meth:`ExporterContext.add_source` (which returns the typed view its
collectors read) and returns its collectors::

    def build_apiserver(context: ExporterContext) -> Sequence[MetricsCollector]:
        views = {}
        for target in context.apiserver_targets():
            client = context.target_client(target)      # shared, closed for you
            views[target.name] = context.add_source(ReadyzSource(target, client))
        return [ApiserverHealthCollector(views)] if views else []

A collector covers every instance of its area (one collector over many views, each
sample labelled with its instance): the registry refuses two collectors that declare
the same metric family, so two collectors of one class would not both register.

Factories only *build*: no I/O, no awaiting, nothing started. That keeps start-up
errors (a duplicate source, a bad combination of settings) synchronous and early, and
it lets ``kube-ballast exporter --list-metrics`` and docs/metrics.md run every factory
over the example configuration to learn every metric family that can exist, without
reaching any cluster. Resources a source needs at run time come from the context and
are created lazily on first use: HTTP sessions (:meth:`ExporterContext.target_client`),
a target's /metrics page that several areas read, fetched and parsed once per interval
for all of them (:meth:`ExporterContext.metrics_scrape`), and the Kubernetes client
(:attr:`ExporterContext.kube`, ``await context.kube.get()``).

The catalog is an explicit registry that refuses duplicate names (STYLE.md item 8):
:func:`default_catalog` lists the areas in one place, with ordinary imports that
import-linter can see, rather than modules registering themselves as a side effect of
being imported.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from kubeballast.core.config import ExporterConfig, TargetConfig
from kubeballast.core.kube import KubeClientProvider
from kubeballast.exporter.contract import MetricsCollector, SnapshotView, Source
from kubeballast.exporter.http import (
    SharedMetricsScrape,
    TargetClient,
    default_in_cluster_apiserver,
)
from kubeballast.exporter.runner import SourceSet

log = logging.getLogger(__name__)

__all__ = [
    "Catalog",
    "CollectorFactory",
    "ExporterContext",
    "default_catalog",
]

T = TypeVar("T")


class ExporterContext:
    """What a factory builds with: the config, source registration, shared clients.

    One context per exporter process (and per test). :meth:`aclose` closes every client
    handed out; the exporter calls it after stopping the sources.
    """

    def __init__(self, config: ExporterConfig, sources: SourceSet) -> None:
        self.config = config
        self.sources = sources
        self.kube = KubeClientProvider(config.kubernetes)
        """The shared Kubernetes API client: ``api = await context.kube.get()``."""
        self._clients: dict[TargetConfig, TargetClient] = {}
        self._scrapes: dict[str, SharedMetricsScrape] = {}
        self._on_close: list[Callable[[], Awaitable[None]]] = []

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` when the exporter shuts down, after the sources stopped and
        before the shared clients close (caches that hold connections or tasks)."""
        self._on_close.append(callback)

    def add_source(self, source: Source[T]) -> SnapshotView[T]:
        """Run ``source`` with the exporter; the result is what its collectors read.

        Raises ``ValueError`` when a source with the same ``(kind, instance)`` exists.
        """
        return self.sources.add(source)

    def target_client(self, target: TargetConfig) -> TargetClient:
        """The HTTP client of ``target``, one per target however many sources use it."""
        client = self._clients.get(target)
        if client is None:
            client = self._clients[target] = TargetClient(target)
        return client

    def metrics_scrape(self, target: TargetConfig) -> SharedMetricsScrape:
        """The one /metrics scrape of ``target`` (by name) that every area reading that
        page shares: one fetch and one parse per interval, not one per area."""
        scrape = self._scrapes.get(target.name)
        if scrape is None:
            scrape = self._scrapes[target.name] = SharedMetricsScrape(self.target_client(target))
            self.on_close(scrape.aclose)
        elif scrape.client.target.url != target.url:
            raise ValueError(
                f"target name {target.name!r} names two URLs: "
                f"{scrape.client.target.url} and {target.url}"
            )
        return scrape

    def apiserver_targets(self) -> tuple[TargetConfig, ...]:
        """``exporter.apiservers``, or the in-cluster apiserver when none are listed and
        ``exporter.kubernetes.in_cluster`` is set."""
        if self.config.apiservers:
            return self.config.apiservers
        if self.config.kubernetes.in_cluster:
            return (default_in_cluster_apiserver(),)
        return ()

    async def aclose(self) -> None:
        """Run the close callbacks (newest first), then close every client handed out
        (idempotent)."""
        callbacks, self._on_close = self._on_close[::-1], []
        clients, self._clients = list(self._clients.values()), {}
        try:
            for callback in callbacks:
                try:
                    await callback()
                except Exception:
                    # One failing cleanup must not leave the other clients open.
                    log.exception("exporter shutdown: a close callback failed")
            for client in clients:
                await client.close()
        finally:
            await self.kube.close()


class CollectorFactory(Protocol):
    """Builds one area: registers its sources with ``context``, returns its collectors.

    Must not do I/O: it is also run over the example configuration to list metrics.
    Returns no collectors when the configuration leaves the area out.
    """

    def __call__(self, context: ExporterContext) -> Sequence[MetricsCollector]: ...


class Catalog:
    """The areas of the exporter by name, in registration order; duplicates refused."""

    def __init__(self) -> None:
        self._factories: dict[str, CollectorFactory] = {}

    def register(self, name: str, factory: CollectorFactory) -> None:
        """Add the area ``name`` (also the ``collector`` label of its error counter)."""
        if name in self._factories:
            raise ValueError(f"duplicate exporter area {name!r}")
        self._factories[name] = factory

    def __iter__(self) -> Iterator[tuple[str, CollectorFactory]]:
        return iter(self._factories.items())

    def __len__(self) -> int:
        return len(self._factories)

    def build(self, context: ExporterContext) -> list[tuple[str, MetricsCollector]]:
        """Run every factory; the collectors with their area's name."""
        built: list[tuple[str, MetricsCollector]] = []
        for name, factory in self._factories.items():
            built.extend((name, collector) for collector in factory(context))
        return built


def default_catalog() -> Catalog:
    """Every area kube-ballast ships, in the order /metrics lists them."""
    # Imported here, not at the top: the area modules import this one (for
    # ExporterContext), and import-linter sees function-level imports all the same.
    from kubeballast.exporter.apiserver import build_apiserver
    from kubeballast.exporter.components import build_components
    from kubeballast.exporter.etcd import build_etcd
    from kubeballast.exporter.evictionguard import build_eviction_guard
    from kubeballast.exporter.network import build_network
    from kubeballast.exporter.objects import build_objects
    from kubeballast.exporter.state import build_state

    catalog = Catalog()
    catalog.register("apiserver", build_apiserver)
    catalog.register("components", build_components)
    catalog.register("etcd", build_etcd)
    catalog.register("network", build_network)
    catalog.register("objects", build_objects)
    catalog.register("state", build_state)
    catalog.register("eviction_guard", build_eviction_guard)
    return catalog
