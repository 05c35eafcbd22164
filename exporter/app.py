"""The exporter assembled: sources, collectors, registry and the aiohttp application.

:func:`build_exporter` turns an ``ExporterConfig`` into an :class:`Exporter`: it runs
the catalog's factories (which register sources and return collectors), adds the
exporter's own metrics (build info, ``kubeballast_source_*``, collector errors) and
registers every collector, wrapped, into a ``CollectorRegistry`` of its own (never
prometheus-client's global ``REGISTRY``). The application serves:

- ``/metrics``: prometheus-client's aiohttp handler, which negotiates the text format or
  OpenMetrics from ``Accept`` and compresses when ``Accept-Encoding`` asks;
- ``/healthz``: liveness, the event loop answers;
- ``/readyz``: 200 once every source has attempted its first refresh (successfully or
  not: a target that is down is something to report, not a reason to keep the exporter
  out of its Service), 503 listing the sources still pending before that;
- ``/eviction-guard``: the few values the receiver's eviction guard re-checks, as JSON
  read from the same families /metrics serves (:mod:`~kubeballast.exporter.guardview`).

The sources start with the application (``cleanup_ctx``) and stop, and their clients
close, when it shuts down.

A scrape never fails because of one collector: each is wrapped in a
:class:`GuardedCollector` that collects it completely into a list first, so an
exception (a bug, since collectors only read snapshots) drops that collector's families
from this scrape, is logged, and counts in ``kubeballast_collector_errors_total``;
everything else is still served. A family the collector did not declare in its
``metric_specs()`` is dropped and counted the same way, so the declared specs (and the
docs and alert checks built on them) cannot drift from what is served. The wrapper also
*describes* the collector from its ``metric_specs()``, so the registry refuses two
collectors that claim the same family.

The same specs drive :func:`all_metric_specs`, which ``kube-ballast exporter
--list-metrics`` prints and docs/metrics.md is generated from (:func:`render_metrics_doc`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from kubeballast.core.config import ExporterConfig, example_config
from kubeballast.core.web import create_base_app
from kubeballast.exporter.catalog import Catalog, ExporterContext, default_catalog
from kubeballast.exporter.contract import MetricsCollector, MetricSpec
from kubeballast.exporter.guardview import VIEW_PATH, make_guard_view_handler
from kubeballast.exporter.runner import SYSTEM_CLOCK, Clock, SelfMetricsCollector, SourceSet

__all__ = [
    "CORE_AREA",
    "EXPORTER_KEY",
    "Exporter",
    "GuardedCollector",
    "all_metric_specs",
    "build_exporter",
    "exposed_name",
    "render_metrics_doc",
    "render_metrics_table",
]

log = logging.getLogger(__name__)

CORE_AREA = "exporter"
"""The area name of the exporter's own metrics (``collector`` label, docs section)."""

BUILD_INFO_SPEC = MetricSpec(
    "kubeballast_build_info",
    "gauge",
    "Always 1; the labels say which kube-ballast version runs on which Python.",
    ("version", "python"),
)
"""Served by ``kubeballast.core.web.BuildInfoCollector``, which predates the specs."""

COLLECTOR_ERRORS_SPEC = MetricSpec(
    "kubeballast_collector_errors",
    "counter",
    "Scrapes in which a collector raised; its families were left out of that scrape.",
    ("collector",),
)


class CollectorErrors:
    """``kubeballast_collector_errors_total{collector}``, counted by the guards."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def declare(self, collector: str) -> None:
        """Expose ``collector``'s series from zero, so the first error shows in rate()."""
        self._counts.setdefault(collector, 0)

    def count(self, collector: str) -> None:
        self._counts[collector] = self._counts.get(collector, 0) + 1

    def get(self, collector: str) -> int:
        return self._counts.get(collector, 0)

    def metric_specs(self) -> Sequence[MetricSpec]:
        return (COLLECTOR_ERRORS_SPEC,)

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            COLLECTOR_ERRORS_SPEC.name,
            COLLECTOR_ERRORS_SPEC.help,
            labels=list(COLLECTOR_ERRORS_SPEC.labels),
        )
        for collector, count in sorted(self._counts.items()):
            family.add_metric([collector], count)
        yield family


def _described(spec: MetricSpec) -> Metric:
    """An empty family standing for ``spec``, for the registry's duplicate check."""
    return Metric(spec.name, spec.help, spec.type)


class GuardedCollector:
    """A collector wrapped so that its failure costs only its own families.

    ``name`` is the area's name, the ``collector`` label of the error counter (bounded:
    one value per area, not per instance). A failing collector is logged with its
    traceback the first time, and at debug level while it keeps failing the same way,
    so a broken collector does not write a traceback per scrape.
    """

    def __init__(self, name: str, collector: MetricsCollector, errors: CollectorErrors) -> None:
        self.name = name
        self.collector = collector
        self._errors = errors
        self._last_failure: str | None = None
        self._declared = frozenset(spec.name for spec in collector.metric_specs())
        errors.declare(name)

    def describe(self) -> Iterable[Metric]:
        return [_described(spec) for spec in self.collector.metric_specs()]

    def collect(self) -> Iterable[Metric]:
        try:
            # Materialised here: a generator failing half-way must not leave half its
            # families in the scrape.
            families = list(self.collector.collect())
        except Exception as error:
            self._failed(type(error).__name__, str(error), with_traceback=True)
            return []
        # The specs are the contract docs/metrics.md and the alert rules rely on: a
        # family that is not declared is a bug, and serving it would let them drift.
        undeclared = [family.name for family in families if family.name not in self._declared]
        if undeclared:
            self._failed("undeclared", f"yielded undeclared families {sorted(undeclared)}", False)
            return [family for family in families if family.name in self._declared]
        self._last_failure = None
        return families

    def _failed(self, failure: str, message: str, with_traceback: bool) -> None:
        self._errors.count(self.name)
        if failure != self._last_failure:
            log.error(
                "collector %s (%s) failed, its metrics are left out of this scrape: %s",
                self.name,
                type(self.collector).__name__,
                message,
                exc_info=with_traceback,
            )
        else:
            log.debug("collector %s failed again: %s", self.name, message)
        self._last_failure = failure


@dataclass
class Exporter:
    """Everything one exporter process runs, built but not started."""

    config: ExporterConfig
    sources: SourceSet
    context: ExporterContext
    registry: CollectorRegistry
    collectors: list[GuardedCollector]
    errors: CollectorErrors

    def create_app(self) -> web.Application:
        """The aiohttp application; starting it starts the sources."""
        app = create_base_app(self.registry)
        app[EXPORTER_KEY] = self
        app.router.add_get("/readyz", readyz)
        app.router.add_get(
            VIEW_PATH,
            make_guard_view_handler(
                self.collectors, wave_window_seconds=self.config.state.wave_window_seconds
            ),
        )
        app.cleanup_ctx.append(self._running)
        return app

    async def _running(self, app: web.Application) -> AsyncIterator[None]:
        self.sources.start()
        log.info("exporter started %d source(s)", len(self.sources))
        try:
            yield
        finally:
            await self.sources.stop()
            await self.context.aclose()


EXPORTER_KEY = web.AppKey("exporter", Exporter)


async def readyz(request: web.Request) -> web.Response:
    """Ready once every source has attempted its first refresh; 503 lists the others."""
    sources = request.app[EXPORTER_KEY].sources
    pending = sources.pending()
    if not pending:
        return web.Response(text="ok")
    lines = [f"waiting for the first refresh of {len(pending)} source(s):"]
    lines.extend(f"  {kind}/{instance}" for kind, instance in pending)
    return web.Response(status=503, text="\n".join(lines) + "\n")


def build_exporter(
    config: ExporterConfig,
    *,
    catalog: Catalog | None = None,
    registry: CollectorRegistry | None = None,
    clock: Clock = SYSTEM_CLOCK,
    rng: random.Random | None = None,
) -> Exporter:
    """Build the exporter for ``config`` from ``catalog`` (the default one if None).

    Raises ``ValueError`` from a factory that registers a duplicate source and from the
    registry when two collectors claim the same metric family.
    """
    catalog = catalog if catalog is not None else default_catalog()
    registry = registry if registry is not None else CollectorRegistry()
    sources = SourceSet(clock=clock, rng=rng)
    context = ExporterContext(config, sources)
    errors = CollectorErrors()
    guarded = [GuardedCollector(CORE_AREA, SelfMetricsCollector(sources), errors)]
    guarded.extend(
        GuardedCollector(name, collector, errors) for name, collector in catalog.build(context)
    )
    for collector in guarded:
        registry.register(collector)
    # The error counter itself is not guarded: it cannot fail, and guarding it with
    # itself would be circular.
    registry.register(errors)
    return Exporter(config, sources, context, registry, guarded, errors)


# --------------------------------------------------------------------------------------
# Every metric the exporter can emit: --list-metrics and docs/metrics.md
# --------------------------------------------------------------------------------------


def exposed_name(spec: MetricSpec) -> str:
    """The name as a scrape shows it: counters get ``_total``."""
    return spec.name + "_total" if spec.type == "counter" else spec.name


def all_metric_specs(catalog: Catalog | None = None) -> list[tuple[str, MetricSpec]]:
    """``(area, spec)`` for every family the exporter can emit, in exposition order.

    The catalog's factories are run over the example configuration, which enables
    every area; factories do no I/O, so nothing is contacted.
    """
    exporter = build_exporter(example_config().exporter, catalog=catalog)
    specs: list[tuple[str, MetricSpec]] = [(CORE_AREA, BUILD_INFO_SPEC)]
    seen: set[type] = set()
    for guarded in exporter.collectors:
        # Several collectors of one class (one per target) declare the same families.
        if type(guarded.collector) in seen:
            continue
        seen.add(type(guarded.collector))
        specs.extend((guarded.name, spec) for spec in guarded.collector.metric_specs())
    specs.append((CORE_AREA, COLLECTOR_ERRORS_SPEC))
    names: set[str] = set()
    for _, spec in specs:
        if spec.name in names:
            raise ValueError(f"metric family {spec.name} is declared twice")
        names.add(spec.name)
    return specs


def render_metrics_table(catalog: Catalog | None = None) -> str:
    """Plain-text columns: name, type, labels, help (``--list-metrics``)."""
    rows = [("NAME", "TYPE", "LABELS", "HELP")]
    rows.extend(
        (exposed_name(spec), spec.type, ",".join(spec.labels) or "-", spec.help)
        for _, spec in all_metric_specs(catalog)
    )
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "".join(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}\n"
        for row in rows
    )


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_metrics_doc(catalog: Catalog | None = None) -> str:
    """The Markdown reference of every metric (docs/metrics.md)."""
    parts = [
        "# Metrics reference\n\n",
        "<!-- Generated from the collectors' metric_specs() by"
        " `kube-ballast exporter --list-metrics markdown` (`make docs`)."
        " Edit the specs, not this file. -->\n\n",
        "Every metric family `kube-ballast exporter` can serve on `/metrics`, by area."
        " Counters are listed with the `_total` suffix they are exposed with. Every source"
        " (one per configured target and kind) also reports its health in the"
        " `kubeballast_source_*` families, whatever its area.\n",
    ]
    area = None
    for name, spec in all_metric_specs(catalog):
        if name != area:
            area = name
            parts.append(
                f"\n## `{area}`\n\n| Metric | Type | Labels | Description |\n|---|---|---|---|\n"
            )
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
        parts.append(f"| `{exposed_name(spec)}` | {spec.type} | {labels} | {_cell(spec.help)} |\n")
    return "".join(parts)
