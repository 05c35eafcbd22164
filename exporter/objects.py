"""Object pressure on etcd: what is stored, how fast Events are written, the big ConfigMaps.

etcd is the cluster's only persistent store and its change-notification hub, and the
seed names its two main burdens: Events (so many writes that large clusters move them
to an etcd of their own with ``--etcd-servers-overrides=/events#...``) and large
ConfigMaps (up to 1 MiB each, stored and sent to every watcher whole). This module
makes both visible so that the quota (``--quota-backend-bytes``) is not the first sign:

- **Objects stored per resource**, from each apiserver's ``apiserver_storage_objects``
  (read from the configured ``exporter.apiservers``' /metrics through the target's
  shared scrape, :class:`~kubeballast.exporter.http.SharedMetricsScrape`).
  The apiserver counts them from etcd itself, which is far cheaper than any LIST; -1
  (its "fetch failed" value) is passed through as it is.
- **Event writes**, as ``kubeballast_apiserver_event_writes_total``: the sum of the
  apiserver's ``apiserver_request_total`` for the ``events`` resource (core and
  events.k8s.io) with verbs POST, PUT and PATCH and a 2xx code: a new Event is a POST,
  and a repeated one is a PATCH of its count, and both are etcd writes. Counting Event
  objects instead would need a LIST of every Event (the largest collection in a busy
  cluster) and would still only give a number over their one-hour TTL, not a rate.
  The sum is exported as a counter for ``rate()`` in PromQL, which handles apiserver
  restarts (counter resets) and scrape timing; summing over the apiservers gives the
  cluster's rate. It is left out while its scrape fails, rather than served stale.
  The page is the one the apiserver area reads for its congestion verdict: the shared
  scrape fetches and parses it once per interval for both (a failed fetch fails both).
- **The largest ConfigMaps**, the top N by size (default 10), from a paginated LIST of
  every ConfigMap through the shared KubeReader. Each page is decoded into a slim
  projection and reduced at once to (namespace, name, size); the data itself is dropped
  with its page. The size is that of ``data`` and ``binaryData`` (keys plus values,
  binary values decoded from base64): what the 1 MiB object limit mostly counts, short
  of metadata and managedFields. Pages are 100 ConfigMaps, not 500: a page of 500
  ConfigMaps near 1 MiB each would be a 500 MiB response. The whole list is read every
  few minutes only (it moves all the bytes of all the ConfigMaps); a watch would move
  only changes and is the better design at scale, noted as the next step.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kubeballast.core import promtext
from kubeballast.core.config import TargetConfig
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.contract import MetricsCollector, MetricSpec, SnapshotView, SourceError
from kubeballast.exporter.http import PARSE_ALLOWANCE_SECONDS, Families, MetricsPageReader
from kubeballast.exporter.kubeobjects import KubeReader, ObjectMeta, object_path, shared_reader

__all__ = [
    "APISERVER_FAMILIES",
    "CONFIGMAP_PAGE_SIZE",
    "DEFAULT_TOP_CONFIGMAPS",
    "ApiserverObjects",
    "ApiserverObjectsSource",
    "ConfigMapSize",
    "ConfigMapSizes",
    "ConfigMapSizesSource",
    "ObjectsCollector",
    "apiserver_objects",
    "build_objects",
    "configmap_size",
    "parse_apiserver_objects",
    "top_configmaps",
]

DEFAULT_TOP_CONFIGMAPS = 10
"""How many of the largest ConfigMaps to report (the default of
``exporter.objects.top_configmaps``; bounded: it is the cardinality of the series)."""

CONFIGMAP_PAGE_SIZE = 100
"""ConfigMaps per LIST page (see the module docstring for why not 500)."""

CONFIGMAP_INTERVAL_SECONDS = 300.0
"""How often every ConfigMap is listed (the default of
``exporter.objects.configmaps_interval_seconds``)."""

CONFIGMAP_TIMEOUT_SECONDS = 120.0

EVENT_RESOURCE = "events"
EVENT_WRITE_VERBS = frozenset({"POST", "PUT", "PATCH"})

APISERVER_FAMILIES = frozenset({"apiserver_storage_objects", "apiserver_request_total"})
"""The families of an apiserver's /metrics this area reads."""


# --------------------------------------------------------------------------------------
# apiserver /metrics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiserverObjects:
    objects: Mapping[str, float]
    """apiserver_storage_objects by resource (``pods``, ``leases.coordination.k8s.io``)."""
    event_writes_total: float
    """Successful writes of Events this apiserver has served since it started."""


def parse_apiserver_objects(text: str) -> ApiserverObjects:
    """Stored objects and Event writes from an apiserver's /metrics page."""
    return apiserver_objects(promtext.parse(text, APISERVER_FAMILIES))


def apiserver_objects(samples: Families) -> ApiserverObjects:
    """Stored objects and Event writes from a parsed /metrics page."""
    objects = {
        key[0]: value
        for key, value in promtext.sum_by(
            samples.get("apiserver_storage_objects", ()), ("resource",)
        ).items()
    }
    writes = 0.0
    for sample in samples.get("apiserver_request_total", ()):
        labels = sample.labels
        if (
            labels.get("resource") == EVENT_RESOURCE
            and labels.get("verb") in EVENT_WRITE_VERBS
            and labels.get("code", "").startswith("2")
            and not labels.get("subresource")
            and labels.get("dry_run", "") == ""  # a dry run writes nothing
        ):
            writes += sample.value
    return ApiserverObjects(objects, writes)


class ApiserverObjectsSource:
    """Reads one apiserver's /metrics for storage object counts and Event writes.

    ``page`` is this source's reader of the target's shared scrape, wanting
    :data:`APISERVER_FAMILIES`.
    """

    kind = "apiserver_objects"

    def __init__(self, target: TargetConfig, page: MetricsPageReader) -> None:
        self.target = target
        self._page = page

    @property
    def instance(self) -> str:
        return self.target.name

    @property
    def interval_seconds(self) -> float:
        return self.target.interval_seconds

    @property
    def timeout_seconds(self) -> float:
        # As the apiserver area's reader of the same page: the shared scrape's parse of
        # a page of tens of megabytes must not count as the target's fault.
        return self.target.timeout_seconds + PARSE_ALLOWANCE_SECONDS

    async def refresh(self) -> ApiserverObjects:
        try:
            families = await self._page.read()
        except promtext.ParseError as error:
            raise SourceError("parse", f"{self.target.name} /metrics: {error}") from error
        # In a worker thread: the request counters of an apiserver at 5000 nodes are
        # thousands of series, which would stall every other source and /metrics.
        return await asyncio.to_thread(apiserver_objects, families)


# --------------------------------------------------------------------------------------
# ConfigMap sizes
# --------------------------------------------------------------------------------------


class _ConfigMap(msgspec.Struct, rename="camel"):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    data: dict[str, str] | None = None
    binary_data: dict[str, str] | None = None


@dataclass(frozen=True, order=True)
class ConfigMapSize:
    size_bytes: int
    namespace: str
    name: str


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _base64_decoded_length(text: str) -> int:
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    return len(text) * 3 // 4 - padding


def configmap_size(configmap: _ConfigMap) -> ConfigMapSize:
    """The slim projection: a ConfigMap's name and the bytes of its data."""
    size = sum(_utf8_length(k) + _utf8_length(v) for k, v in (configmap.data or {}).items())
    size += sum(
        _utf8_length(k) + _base64_decoded_length(v)
        for k, v in (configmap.binary_data or {}).items()
    )
    return ConfigMapSize(size, configmap.metadata.namespace, configmap.metadata.name)


@dataclass(frozen=True)
class ConfigMapSizes:
    largest: tuple[ConfigMapSize, ...]
    """The top N, largest first (ties by namespace and name, for stable series)."""
    count: int
    total_bytes: int


def top_configmaps(sizes: Sequence[ConfigMapSize], n: int) -> ConfigMapSizes:
    """The ``n`` largest, with the count and total of all of them. Ties go to the
    smaller namespace and name, so the reported series do not flap between refreshes."""
    largest = heapq.nsmallest(n, sizes, key=lambda c: (-c.size_bytes, c.namespace, c.name))
    return ConfigMapSizes(tuple(largest), len(sizes), sum(c.size_bytes for c in sizes))


class ConfigMapSizesSource:
    """Lists every ConfigMap, keeping only the largest."""

    kind = "configmap_sizes"
    instance = "cluster"

    def __init__(
        self,
        reader: KubeReader,
        *,
        top_n: int = DEFAULT_TOP_CONFIGMAPS,
        interval_seconds: float = CONFIGMAP_INTERVAL_SECONDS,
        timeout_seconds: float = CONFIGMAP_TIMEOUT_SECONDS,
        page_size: int = CONFIGMAP_PAGE_SIZE,
    ) -> None:
        self._reader = reader
        self._top_n = top_n
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._page_size = page_size

    @property
    def interval_seconds(self) -> float:
        return self._interval

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    async def refresh(self) -> ConfigMapSizes:
        listed = await self._reader.list(
            object_path("v1", "configmaps"),
            _ConfigMap,
            project=configmap_size,
            page_size=self._page_size,
        )
        return top_configmaps(listed.items, self._top_n)


# --------------------------------------------------------------------------------------
# Collector
# --------------------------------------------------------------------------------------

SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "kubeballast_apiserver_storage_objects",
        "gauge",
        "Objects stored in etcd per resource, as the apiserver counts them "
        "(apiserver_storage_objects; -1 when the apiserver could not count).",
        ("target", "resource"),
    ),
    MetricSpec(
        "kubeballast_apiserver_event_writes",
        "counter",
        "Successful Event writes (POST, PUT, PATCH of events) this apiserver served; "
        "rate() of it is the Event write load on etcd.",
        ("target",),
    ),
    MetricSpec(
        "kubeballast_configmap_size_bytes",
        "gauge",
        "Bytes of data and binaryData of the largest ConfigMaps (top N only).",
        ("namespace", "name"),
    ),
    MetricSpec(
        "kubeballast_configmaps",
        "gauge",
        "ConfigMaps in the cluster.",
    ),
    MetricSpec(
        "kubeballast_configmap_data_bytes",
        "gauge",
        "Bytes of data and binaryData of all ConfigMaps together.",
    ),
)


class ObjectsCollector:
    """Metrics of object pressure, from the apiserver scrapes and the ConfigMap list."""

    def __init__(
        self,
        apiservers: Mapping[str, SnapshotView[ApiserverObjects]],
        configmaps: SnapshotView[ConfigMapSizes],
    ) -> None:
        self._apiservers = apiservers
        self._configmaps = configmaps

    def metric_specs(self) -> Sequence[MetricSpec]:
        return SPECS

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for spec in SPECS:
            cls = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
            families[spec.name] = cls(spec.name, spec.help, labels=list(spec.labels))
        for target, view in sorted(self._apiservers.items()):
            if view.snapshot is None:
                continue
            scraped = view.snapshot.value
            for resource, count in sorted(scraped.objects.items()):
                families["kubeballast_apiserver_storage_objects"].add_metric(
                    [target, resource], count
                )
            if view.up:
                # Not from a stale scrape: a counter that stops moving reads as "no
                # Events written", which is the wrong thing to say about an outage.
                families["kubeballast_apiserver_event_writes"].add_metric(
                    [target], scraped.event_writes_total
                )
        snapshot = self._configmaps.snapshot
        if snapshot is not None:
            sizes = snapshot.value
            for item in sizes.largest:
                families["kubeballast_configmap_size_bytes"].add_metric(
                    [item.namespace, item.name], item.size_bytes
                )
            families["kubeballast_configmaps"].add_metric([], sizes.count)
            families["kubeballast_configmap_data_bytes"].add_metric([], sizes.total_bytes)
        yield from families.values()


def build_objects(context: ExporterContext) -> Sequence[MetricsCollector]:
    """A scrape per apiserver target, and the cluster's ConfigMap sizes."""
    apiservers = {
        target.name: context.add_source(
            ApiserverObjectsSource(
                target,
                context.metrics_scrape(target).reader(
                    ApiserverObjectsSource.kind,
                    APISERVER_FAMILIES,
                    max_age_seconds=target.interval_seconds,
                ),
            )
        )
        for target in context.apiserver_targets()
    }
    settings = context.config.objects
    configmaps = context.add_source(
        ConfigMapSizesSource(
            shared_reader(context),
            top_n=settings.top_configmaps,
            interval_seconds=settings.configmaps_interval_seconds,
        )
    )
    return [ObjectsCollector(apiservers, configmaps)]
