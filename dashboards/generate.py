"""kube-ballast's Grafana dashboards, generated from this one file.

Operators look before they read: the dashboards answer the seed's questions at a glance
(is the control plane congested, is etcd about to stop writes, is a zone about to be
evicted, how close is the cluster to its limits, what did the bot do), built on what
``kube-ballast exporter`` and ``kube-ballast receiver`` serve and on the recording rules
in alerts/*.yaml. Hand-edited dashboard JSON drifts (a threshold changed in one panel
and not in the alert, a panel overlapping another after a resize), so every dashboard
is code here and the JSON is its output. From the definitions below this script writes:

- ``dashboards/<name>.json``: the dashboards (Grafana schemaVersion 39), each with a
  ``${datasource}`` (Prometheus) and a ``${cluster}`` variable, a stable uid, units on
  every axis, thresholds taken from the alert rules (:class:`Threshold` names the alert
  a value comes from, and the tests check that the alert's expression holds it), and
  links to the runbooks;
- ``dashboards/provisioning/dashboards.yaml``: a Grafana file provider for them;
- ``deploy/dashboards/<name>.yaml``: each dashboard as a ConfigMap labelled
  ``grafana_dashboard: "1"`` (the kube-prometheus-stack sidecar's convention), plus a
  ``kustomization.yaml`` listing them;
- ``docs/dashboards.md``: every dashboard and panel with its description.

Runbook links are ``${runbook_base_url}/<Alert>.md``, where ``runbook_base_url`` is a
hidden constant variable holding ``docs/runbooks`` in the committed files (the alert
rules' repository paths); ``--runbook-base-url URL --output DIR`` writes the dashboards
and ConfigMaps with a real base URL for a deployment, as alerts/render.py does for the
PrometheusRule resources.

Layout is computed: panels are placed left to right in rows of 24 columns, so they
never overlap (the tests check the rectangles anyway). Queries use ``$cluster`` in every
selector (``cluster=~"$cluster"``: with the "All" value ``.*`` it also matches series
without a cluster label, a Prometheus per cluster), ``$__rate_interval`` in rates and
``$__range`` in totals over the dashboard's time range. Queries that have no series
when nothing is wrong (firing alerts, refused remediations) end in
``or on() vector(0)``, so a panel shows 0 rather than "No data", which reads as broken
(``on()``: the 0 only when the query has no series at all, also for ``sum by``).

``python dashboards/generate.py`` writes the files (``make docs`` runs it); ``--check``
exits 1 when a generated file is stale. It runs under the project's venv (standard
library and PyYAML) and imports nothing of kube-ballast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parent
REPO_ROOT = DASHBOARDS_DIR.parent
PROVISIONING_DIR = DASHBOARDS_DIR / "provisioning"
CONFIGMAP_DIR = REPO_ROOT / "deploy" / "dashboards"
DOC = REPO_ROOT / "docs" / "dashboards.md"

SCHEMA_VERSION = 39
"""Grafana's dashboard schema version the JSON is written for (Grafana 10.x/11.x)."""
RUNBOOK_BASE = "docs/runbooks"
"""The committed runbook base: the repository path of the runbooks."""
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
C = 'cluster=~"$cluster"'
"""The cluster matcher every selector carries."""
E = 'etcd_cluster=~"$etcd_cluster"'
"""The etcd cluster matcher of the etcd dashboard."""
FOLDER = "kube-ballast"
TAG = "kube-ballast"

GREEN, YELLOW, ORANGE, RED, BLUE = "green", "yellow", "orange", "red", "blue"


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """A threshold step: from ``value`` up the panel is ``color``.

    ``alert`` names the alert (or recording rule) whose expression holds ``value``;
    the tests check that it does, so a threshold cannot drift from its alert. ``metric``
    instead names an exporter metric whose description states the value (``text``),
    for verdicts the exporter computes itself (the 10 ms SSD fsync threshold).
    """

    value: float
    color: str
    alert: str | None = None
    metric: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    format: str = "time_series"
    column: str = ""
    """A table's name for the query's value column (tables only)."""
    unit: str = ""
    """The query's unit when it differs from the panel's (a table column's unit, or a
    time series' right axis)."""


@dataclass
class Panel:
    """One panel; :meth:`Board.add` places it and :meth:`render` writes its JSON."""

    type: str
    title: str
    description: str
    queries: Sequence[Query]
    unit: str
    width: int = 8
    height: int = 8
    base_color: str = GREEN
    thresholds: Sequence[Threshold] = ()
    runbooks: Sequence[str] = ()
    mappings: Sequence[Mapping[str, Any]] = ()
    min: float | None = None
    max: float | None = None
    stack: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    transformations: Sequence[Mapping[str, Any]] = ()

    def render(self, panel_id: int, grid: Mapping[str, int], runbook_base: str) -> dict[str, Any]:
        steps: list[dict[str, Any]] = [{"color": self.base_color, "value": None}]
        steps += [{"color": t.color, "value": t.value} for t in self.thresholds]
        defaults: dict[str, Any] = {
            "unit": self.unit,
            "thresholds": {"mode": "absolute", "steps": steps},
            "mappings": list(self.mappings),
            "color": {
                "mode": "thresholds" if self.type in _THRESHOLD_COLORED else "palette-classic"
            },
        }
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.type == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 10 if self.stack else 0,
                "showPoints": "never",
                "spanNulls": False,
                "stacking": {"mode": "normal" if self.stack else "none", "group": "A"},
                "axisLabel": "",
                "axisPlacement": "auto",
                "thresholdsStyle": {"mode": "line+area" if self.thresholds else "off"},
            }
        panel: dict[str, Any] = {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "datasource": dict(DATASOURCE),
            "gridPos": dict(grid),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": _options(self),
            "targets": [
                {
                    "refId": chr(ord("A") + index),
                    "datasource": dict(DATASOURCE),
                    "expr": query.expr,
                    "legendFormat": query.legend,
                    "instant": query.instant,
                    "range": not query.instant,
                    "format": query.format,
                }
                for index, query in enumerate(self.queries)
            ],
            "links": [
                {
                    "title": f"Runbook: {alert}",
                    "url": f"${{runbook_base_url}}/{alert}.md",
                    "targetBlank": True,
                }
                for alert in self.runbooks
            ],
        }
        if self.type == "table":
            panel["transformations"] = self._table_transformations()
            panel["fieldConfig"]["overrides"] = [
                {
                    "matcher": {"id": "byName", "options": name},
                    "properties": [{"id": "unit", "value": query.unit}],
                }
                for name, query in zip(self._columns(), self.queries, strict=True)
                if query.unit
            ]
        else:
            # A query in another unit than the panel's: its own unit, and in a time
            # series its own axis on the right.
            axis = [{"id": "custom.axisPlacement", "value": "right"}]
            panel["fieldConfig"]["overrides"] = [
                {
                    "matcher": {"id": "byFrameRefID", "options": chr(ord("A") + index)},
                    "properties": [
                        {"id": "unit", "value": query.unit},
                        *(axis if self.type == "timeseries" else []),
                    ],
                }
                for index, query in enumerate(self.queries)
                if query.unit
            ]
            if self.transformations:
                panel["transformations"] = [dict(t) for t in self.transformations]
        return panel

    def _value_fields(self) -> list[str]:
        """Grafana's names of the value fields of instant table queries."""
        if len(self.queries) == 1:
            return ["Value"]
        return [f"Value #{chr(ord('A') + index)}" for index in range(len(self.queries))]

    def _columns(self) -> list[str]:
        return [
            query.column or field_name
            for field_name, query in zip(self._value_fields(), self.queries, strict=True)
        ]

    def _table_transformations(self) -> list[dict[str, Any]]:
        """Merge the queries on their labels, drop the time, name the value columns."""
        rename = {
            field_name: query.column
            for field_name, query in zip(self._value_fields(), self.queries, strict=True)
            if query.column
        }
        return [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {"excludeByName": {"Time": True}, "renameByName": rename},
            },
        ]


_THRESHOLD_COLORED = frozenset({"stat", "gauge", "bargauge", "state-timeline", "table"})


def _options(panel: Panel) -> dict[str, Any]:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.type == "stat":
        options: dict[str, Any] = {
            "reduceOptions": reduce,
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    elif panel.type == "bargauge":
        options = {
            "reduceOptions": reduce,
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
        }
    elif panel.type == "timeseries":
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.type == "state-timeline":
        options = {
            "showValue": "auto",
            "mergeValues": True,
            "rowHeight": 0.9,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "single"},
        }
    elif panel.type == "table":
        options = {"showHeader": True, "cellHeight": "sm"}
    else:
        options = {}
    options.update(panel.options)
    return options


def timeseries(title: str, description: str, *queries: Query, **kw: Any) -> Panel:
    return Panel("timeseries", title, description, queries, **kw)


def stat(title: str, description: str, *queries: Query, **kw: Any) -> Panel:
    kw.setdefault("width", 4)
    kw.setdefault("height", 4)
    return Panel("stat", title, description, queries, **kw)


def table(title: str, description: str, *queries: Query, **kw: Any) -> Panel:
    """An instant table; several queries are merged on their labels."""
    return Panel("table", title, description, queries, **kw)


def timeline(title: str, description: str, *queries: Query, **kw: Any) -> Panel:
    return Panel("state-timeline", title, description, queries, **kw)


def q(expr: str, legend: str = "", unit: str = "") -> Query:
    return Query(" ".join(expr.split()), legend, unit=unit)


def instant(expr: str, column: str = "", unit: str = "") -> Query:
    """An instant query in table format (for tables), its value column named."""
    return Query(" ".join(expr.split()), "", instant=True, format="table", column=column, unit=unit)


def value_map(values: Mapping[int, tuple[str, str]]) -> list[dict[str, Any]]:
    """Value mappings: number -> (text, color)."""
    return [
        {
            "type": "value",
            "options": {
                str(v): {"text": text, "color": color, "index": i}
                for i, (v, (text, color)) in enumerate(values.items())
            },
        }
    ]


OK_BAD = value_map({0: ("bad", RED), 1: ("ok", GREEN)})


@dataclass
class Board:
    """A dashboard being laid out: rows of panels, 24 columns wide."""

    uid: str
    title: str
    description: str
    extra_variables: Sequence[Mapping[str, Any]] = ()
    annotations: Sequence[Mapping[str, Any]] = ()
    items: list[tuple[str, Any]] = field(default_factory=list)

    def row(self, title: str) -> Board:
        self.items.append(("row", title))
        return self

    def add(self, *panels: Panel) -> Board:
        self.items.extend(("panel", panel) for panel in panels)
        return self

    def panels(self) -> Iterator[Panel]:
        for kind, item in self.items:
            if kind == "panel":
                yield item

    def render(self, runbook_base: str = RUNBOOK_BASE) -> dict[str, Any]:
        rendered: list[dict[str, Any]] = []
        x = y = row_height = 0
        for kind, item in self.items:
            if kind == "row" or x + (item.width if kind == "panel" else 0) > 24:
                y, x, row_height = y + row_height, 0, 0
            if kind == "row":
                rendered.append(
                    {
                        "id": len(rendered) + 1,
                        "type": "row",
                        "title": item,
                        "collapsed": False,
                        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                        "panels": [],
                    }
                )
                y += 1
                continue
            grid = {"h": item.height, "w": item.width, "x": x, "y": y}
            rendered.append(item.render(len(rendered) + 1, grid, runbook_base))
            x += item.width
            row_height = max(row_height, item.height)
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": [TAG],
            "editable": True,
            "graphTooltip": 1,
            "timezone": "utc",
            "time": {"from": "now-3h", "to": "now"},
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "links": [
                {
                    "title": "kube-ballast dashboards",
                    "type": "dashboards",
                    "tags": [TAG],
                    "asDropdown": True,
                    "includeVars": True,
                    "keepTime": True,
                }
            ],
            "annotations": {"list": [_BUILTIN_ANNOTATION, *map(dict, self.annotations)]},
            "templating": {
                "list": [
                    *_variables(runbook_base),
                    *map(dict, self.extra_variables),
                ]
            },
            "panels": rendered,
        }


_BUILTIN_ANNOTATION = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": dict(DATASOURCE),
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "options": [],
        "regex": "",
    }


def _variables(runbook_base: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
        },
        _query_variable("cluster", "Cluster", "label_values(kubeballast_build_info, cluster)"),
        {
            "name": "runbook_base_url",
            "label": "Runbooks",
            "type": "constant",
            "query": runbook_base,
            "current": {"text": runbook_base, "value": runbook_base},
            "hide": 2,
            "options": [],
        },
    ]


def annotation(name: str, expr: str, color: str, title: str) -> dict[str, Any]:
    """A Prometheus annotation: a region wherever ``expr`` has a sample."""
    return {
        "name": name,
        "datasource": dict(DATASOURCE),
        "enable": True,
        "hide": False,
        "iconColor": color,
        "expr": " ".join(expr.split()),
        "step": "30s",
        "titleFormat": title,
        "textFormat": "",
        "tagKeys": "",
        "useValueForTime": False,
    }


# --------------------------------------------------------------------------------------
# 1. Control-plane overview
# --------------------------------------------------------------------------------------


def control_plane() -> Board:
    board = Board(
        "kube-ballast-control-plane",
        "kube-ballast / Control-plane overview",
        "Is the control plane up and is it congested: components, API Priority and "
        "Fairness, latency against the 1 s SLO, the eviction guard and firing alerts.",
    )
    board.row("Components")
    board.add(
        stat(
            "Apiservers live / ready",
            "Apiservers passing their /livez and /readyz probes (kubeballast_apiserver_up, "
            "kubeballast_apiserver_ready). 0 live is KubeApiserverDown.",
            q(f"sum(kubeballast_apiserver_up{{{C}}})", "live"),
            q(f"sum(kubeballast_apiserver_ready{{{C}}})", "ready"),
            unit="none",
            base_color=RED,
            thresholds=[Threshold(1, GREEN)],
            runbooks=["KubeApiserverDown", "KubeApiserverReadyzCheckFailing"],
        ),
        stat(
            "etcd clusters with quorum",
            "etcd clusters whose voting members have a majority that names a leader, out "
            "of those configured.",
            q(f"sum(kubeballast_etcd_cluster_quorum_healthy{{{C}}})", "with quorum"),
            q(f"count(kubeballast_etcd_cluster_quorum_healthy{{{C}}})", "configured"),
            unit="none",
            base_color=RED,
            thresholds=[Threshold(1, GREEN)],
            runbooks=["EtcdInsufficientMembers", "EtcdNoLeader"],
        ),
        stat(
            "Schedulers healthy",
            "kube-scheduler replicas answering /healthz with 200 ok.",
            q(f'sum(kubeballast_component_healthy{{{C}, component="kube-scheduler"}})'),
            unit="none",
            base_color=RED,
            thresholds=[Threshold(1, GREEN)],
            runbooks=["KubeControlPlaneComponentDown"],
        ),
        stat(
            "Controller-managers healthy",
            "kube-controller-manager replicas answering /healthz with 200 ok.",
            q(f'sum(kubeballast_component_healthy{{{C}, component="kube-controller-manager"}})'),
            unit="none",
            base_color=RED,
            thresholds=[Threshold(1, GREEN)],
            runbooks=["KubeControlPlaneComponentDown"],
        ),
        stat(
            "Network plugin agents ready",
            "Ready agent pods of the network plugin's DaemonSet(s) over the pods there are; "
            "KubeNetworkPluginAgentsUnavailable fires above 10 % unready.",
            q(
                f"sum(kubeballast_network_plugin_ready_pods{{{C}}})"
                f" / sum(kubeballast_network_plugin_pods{{{C}}})"
            ),
            unit="percentunit",
            base_color=RED,
            thresholds=[Threshold(0.9, GREEN)],
            runbooks=["KubeNetworkPluginAgentsUnavailable", "KubeNetworkPluginZoneDown"],
        ),
        stat(
            "Cluster-state caches synced",
            "1 once the exporter's caches of nodes, Leases, pods and workloads have read "
            "their initial state; the heartbeat and capacity panels are empty until then.",
            q(f"min(kubeballast_cluster_state_synced{{{C}}})"),
            unit="none",
            base_color=RED,
            thresholds=[Threshold(1, GREEN)],
            mappings=value_map({0: ("syncing", RED), 1: ("synced", GREEN)}),
            runbooks=["KubeBallastSourceDown"],
        ),
    )
    board.add(
        timeline(
            "Component health",
            "Every probed replica's /healthz (1 healthy) and whether it holds its leader lease.",
            q(
                f"max by (component, target) (kubeballast_component_healthy{{{C}}})",
                "{{component}} {{target}} healthy",
            ),
            q(
                f"max by (component, target) (kubeballast_component_is_leader{{{C}}})",
                "{{component}} {{target}} leader",
            ),
            unit="none",
            width=12,
            base_color=RED,
            thresholds=[Threshold(1, GREEN)],
            mappings=value_map({0: ("no", RED), 1: ("yes", GREEN)}),
            runbooks=["KubeControlPlaneComponentUnhealthy", "KubeControlPlaneNoLeader"],
        ),
        timeseries(
            "Leader lease renew age",
            "Seconds since each component's leader renewed its Lease, against the lease "
            "duration: above it no replica is leading (KubeControlPlaneNoLeader).",
            q(
                f"max by (component) (kubeballast_component_leader_renew_age_seconds{{{C}}})",
                "{{component}} renew age",
            ),
            q(
                f"max by (component) (kubeballast_component_leader_lease_duration_seconds{{{C}}})",
                "{{component}} lease duration",
            ),
            unit="s",
            width=12,
            min=0,
            runbooks=["KubeControlPlaneNoLeader", "KubeControlPlaneLeaderFlapping"],
        ),
    )
    board.row("Apiserver congestion")
    board.add(
        timeline(
            "Congestion verdict",
            "kube-ballast's congestion verdict per apiserver and its active reasons "
            "(APF rejections of node-high or leader-election, mutating p99 above 1 s, "
            "over 1 % 429s). KubeApiserverCongested fires after a minute, and the "
            "receiver's eviction pause acts on it.",
            q(f"max by (target) (kubeballast_apiserver_congested{{{C}}})", "{{target}}"),
            q(
                f"max by (reason) (kubeballast_apiserver_congestion_reason{{{C}}})",
                "{{reason}}",
            ),
            unit="none",
            width=12,
            thresholds=[Threshold(1, RED)],
            mappings=value_map({0: ("clear", GREEN), 1: ("congested", RED)}),
            runbooks=["KubeApiserverCongested", "KubeApiserverCongestionUnknown"],
        ),
        timeseries(
            "APF rejections by priority level",
            "Requests API Priority and Fairness rejected, per second. Rejections of "
            "node-high are lost kubelet heartbeats; of leader-election, lost leases.",
            q(
                "sum by (priority_level) (rate("
                f"kubeballast_apiserver_flowcontrol_rejected_requests_total{{{C}}}"
                "[$__rate_interval])) or on() vector(0)",
                "{{priority_level}}",
            ),
            unit="reqps",
            width=12,
            min=0,
            runbooks=[
                "KubeApiserverRejectingNodeHeartbeats",
                "KubeApiserverRejectingLeaderElection",
            ],
        ),
    )
    board.add(
        timeseries(
            "APF queued requests by priority level",
            "Requests waiting in API Priority and Fairness queues.",
            q(
                "sum by (priority_level) "
                f"(kubeballast_apiserver_flowcontrol_inqueue_requests{{{C}}})",
                "{{priority_level}}",
            ),
            unit="short",
            min=0,
        ),
        timeseries(
            "Inflight requests vs the limit",
            "Peak executing requests per apiserver (readOnly + mutating) against its "
            "concurrency limit in seats.",
            q(
                f"sum by (target) (kubeballast_apiserver_inflight_requests{{{C}}})",
                "{{target}} inflight",
            ),
            q(
                f"max by (target) (kubeballast_apiserver_inflight_limit_seats{{{C}}})",
                "{{target}} limit",
            ),
            unit="short",
            min=0,
        ),
        timeseries(
            "429 and 5xx share of responses",
            "Share of requests answered 429 (KubeApiserverTooManyRequests above 1 %) and "
            "5xx (KubeApiserverServerErrors above 3 %), 5-minute rates.",
            q(
                "max by (target, code_class) ("
                "cluster_target_code_class:kubeballast_apiserver_requests:ratio_rate5m"
                f'{{{C}, code_class=~"429|5xx"}})',
                "{{target}} {{code_class}}",
            ),
            unit="percentunit",
            min=0,
            thresholds=[
                Threshold(0.01, ORANGE, alert="KubeApiserverTooManyRequests"),
                Threshold(0.03, RED, alert="KubeApiserverServerErrors"),
            ],
            runbooks=["KubeApiserverTooManyRequests", "KubeApiserverServerErrors"],
        ),
    )
    board.add(
        timeseries(
            "Request latency p99 vs the 1 s SLO",
            "p99 of request latency by call, from the exporter's coarse histogram, "
            "against the 1 s SLO of single-object mutating calls (read-only calls have "
            "5 s). Watches are excluded.",
            q(
                "histogram_quantile(0.99, sum by (call, le) (rate("
                "kubeballast_apiserver_request_duration_seconds_bucket"
                f'{{{C}, call=~"mutating|read_only"}}'
                "[$__rate_interval])))",
                "{{call}} p99",
            ),
            unit="s",
            width=12,
            min=0,
            thresholds=[
                Threshold(
                    1, RED, alert="cluster_call:kubeballast_apiserver_request_slow:ratio_rate5m"
                )
            ],
            runbooks=["KubeApiserverLatencyBudgetBurn", "KubeApiserverCongested"],
        ),
        timeseries(
            "Slow requests (latency budget)",
            "Share of calls slower than the SLO (mutating 1 s, read-only 5 s) over 5 "
            "minutes and 1 hour. KubeApiserverLatencyBudgetBurn pages when both exceed "
            "14.4 times the 1 % budget.",
            q(
                f"cluster_call:kubeballast_apiserver_request_slow:ratio_rate5m{{{C}}}",
                "{{call}} 5m",
            ),
            q(
                f"cluster_call:kubeballast_apiserver_request_slow:ratio_rate1h{{{C}}}",
                "{{call}} 1h",
            ),
            unit="percentunit",
            width=12,
            min=0,
            thresholds=[Threshold(0.144, RED, alert="KubeApiserverLatencyBudgetBurn")],
            runbooks=["KubeApiserverLatencyBudgetBurn"],
        ),
    )
    board.row("Eviction guard")
    board.add(
        stat(
            "Eviction pause",
            "Whether the eviction guard pauses taint-based pod eviction now (ConfigMap "
            "kube-ballast/eviction-guard). Why and by whom: `kube-ballast eviction-guard "
            "status`; the receiver's decisions are below.",
            q(f"max(kubeballast_eviction_pause_active{{{C}}})"),
            unit="none",
            thresholds=[Threshold(1, ORANGE)],
            mappings=value_map({0: ("not paused", GREEN), 1: ("PAUSED", ORANGE)}),
            runbooks=["KubeEvictionPauseOverdue"],
        ),
        stat(
            "Pause expires in",
            "Time left until the pause in force expires unless renewed; negative: it "
            "outlived its expiry (KubeEvictionPauseOverdue). 0 without a pause.",
            q(
                "max(kubeballast_eviction_pause_expires_timestamp_seconds"
                f"{{{C}}}) - time() or on() vector(0)"
            ),
            unit="s",
            base_color=RED,
            thresholds=[Threshold(0, GREEN)],
            runbooks=["KubeEvictionPauseOverdue"],
        ),
        stat(
            "Pause hard cap in",
            "Time left until the pause's hard cap, which no renewal extends; negative: it "
            "outlived its cap. 0 without a pause.",
            q(
                "max(kubeballast_eviction_pause_max_until_timestamp_seconds"
                f"{{{C}}}) - time() or on() vector(0)"
            ),
            unit="s",
            base_color=RED,
            thresholds=[Threshold(0, GREEN)],
            runbooks=["KubeEvictionPauseCapReached"],
        ),
        stat(
            "Renewals / allowed nodes",
            "Renewals of the pause in force, and nodes on its allow-list (confirmed "
            "dead: their pods may still be evicted).",
            q(f"max(kubeballast_eviction_pause_renewals{{{C}}})", "renewals"),
            q(f"max(kubeballast_eviction_pause_allowed_nodes{{{C}}})", "allowed nodes"),
            unit="none",
        ),
        stat(
            "Guard installed",
            "1 when the ValidatingAdmissionPolicy and its binding exist (without them a "
            "pause stops nothing), and whether the pause ConfigMap parses.",
            q(f"min(kubeballast_eviction_guard_installed{{{C}}})", "installed"),
            q(f"min(kubeballast_eviction_pause_valid{{{C}}})", "ConfigMap valid"),
            unit="none",
            base_color=RED,
            thresholds=[Threshold(1, GREEN)],
            mappings=value_map({0: ("no", RED), 1: ("yes", GREEN)}),
        ),
        stat(
            "Last pause ended",
            "When the last pause ended and why (recovered, alert-resolved, expired, cap, "
            "manual, janitor).",
            q(
                "max by (reason) (kubeballast_eviction_pause_last_end_timestamp_seconds"
                f"{{{C}}}) * 1000 or on() vector(0)",
                "{{reason}}",
            ),
            unit="dateTimeFromNow",
            base_color=BLUE,
            mappings=value_map({0: ("never", BLUE)}),
            options={"textMode": "value_and_name"},
        ),
    )
    board.add(
        timeseries(
            "Eviction-pause decisions",
            "The receiver's eviction-pause decisions per second, by outcome and the "
            "guard's reason.",
            q(
                "sum by (outcome, reason) (rate(kubeballast_remediation_decisions_total"
                f'{{{C}, action="eviction-pause"}}[$__rate_interval])) or on() vector(0)',
                "{{outcome}} ({{reason}})",
            ),
            unit="ops",
            width=12,
            height=6,
            min=0,
        ),
        timeline(
            "Eviction pause over time",
            "Pause windows: when the guard paused evictions.",
            q(f"max(kubeballast_eviction_pause_active{{{C}}})", "paused"),
            unit="none",
            width=12,
            height=6,
            thresholds=[Threshold(1, ORANGE)],
            mappings=value_map({0: ("not paused", GREEN), 1: ("PAUSED", ORANGE)}),
        ),
    )
    board.row("Alerts")
    board.add(
        stat(
            "Firing kube-ballast alerts",
            "kube-ballast alerts firing now (every kube-ballast alert has an `automation` label).",
            q(f'count(ALERTS{{{C}, alertstate="firing", automation!=""}}) or on() vector(0)'),
            unit="none",
            width=6,
            height=8,
            thresholds=[Threshold(1, RED)],
        ),
        table(
            "Alerts firing and pending",
            "kube-ballast alerts by name, severity and state; the runbooks are in "
            "docs/runbooks/<alertname>.md (one row with value 0 when none).",
            instant(
                "count by (alertname, severity, alertstate, automation) "
                f'(ALERTS{{{C}, automation!=""}}) or on() vector(0)',
                "Series",
            ),
            unit="none",
            width=18,
        ),
    )
    return board


# --------------------------------------------------------------------------------------
# 2. etcd
# --------------------------------------------------------------------------------------


def etcd() -> Board:
    board = Board(
        "kube-ballast-etcd",
        "kube-ballast / etcd",
        "etcd per cluster and member: leader and quorum, disk latency against the SSD "
        "threshold, database size against the quota, fragmentation, raft, peers, alarms, "
        "backups, and the Events cluster next to the main one.",
        extra_variables=[
            _query_variable(
                "etcd_cluster",
                "etcd cluster",
                f"label_values(kubeballast_etcd_cluster_members{{{C}}}, etcd_cluster)",
            )
        ],
    )
    by = "etcd_cluster, member"
    board.row("Quorum and leader")
    board.add(
        stat(
            "Quorum",
            "Per etcd cluster: a majority of voting members answers and names a leader.",
            q(
                f"min by (etcd_cluster) (kubeballast_etcd_cluster_quorum_healthy{{{C}, {E}}})",
                "{{etcd_cluster}}",
            ),
            unit="none",
            base_color=RED,
            thresholds=[Threshold(1, GREEN)],
            mappings=value_map({0: ("LOST", RED), 1: ("ok", GREEN)}),
            runbooks=["EtcdInsufficientMembers"],
        ),
        stat(
            "Members up / voting",
            "Members answering their status call, and voting members in the member list.",
            q(
                f"sum by (etcd_cluster) (kubeballast_etcd_member_up{{{C}, {E}}})",
                "{{etcd_cluster}} up",
            ),
            q(
                f"max by (etcd_cluster) (kubeballast_etcd_cluster_voting_members{{{C}, {E}}})",
                "{{etcd_cluster}} voting",
            ),
            unit="none",
            runbooks=["EtcdMembersDown"],
        ),
        stat(
            "Leader agreed",
            "Every member that answered names the same leader.",
            q(
                f"min by (etcd_cluster) (kubeballast_etcd_cluster_leader_agreed{{{C}, {E}}})",
                "{{etcd_cluster}}",
            ),
            unit="none",
            base_color=RED,
            thresholds=[Threshold(1, GREEN)],
            mappings=OK_BAD,
            runbooks=["EtcdLeaderDisagreement", "EtcdNoLeader"],
        ),
        stat(
            "Alarms",
            "NOSPACE (the cluster refuses writes) and CORRUPT alarms raised on any member.",
            q(
                f"max by (etcd_cluster, alarm) (kubeballast_etcd_cluster_alarm{{{C}, {E}}})",
                "{{etcd_cluster}} {{alarm}}",
            ),
            unit="none",
            width=8,
            thresholds=[Threshold(1, RED, alert="EtcdNoSpaceAlarm")],
            mappings=value_map({0: ("clear", GREEN), 1: ("RAISED", RED)}),
            runbooks=["EtcdNoSpaceAlarm", "EtcdCorruptAlarm"],
        ),
        stat(
            "Raft index spread",
            "How far the slowest member's raft index is behind the furthest.",
            q(
                f"max by (etcd_cluster) (kubeballast_etcd_cluster_raft_index_spread{{{C}, {E}}})",
                "{{etcd_cluster}}",
            ),
            unit="none",
        ),
    )
    board.add(
        timeline(
            "Leader",
            "Which member says it is the leader.",
            q(f"max by ({by}) (kubeballast_etcd_member_is_leader{{{C}, {E}}})", "{{member}}"),
            unit="none",
            width=12,
            base_color="transparent",
            thresholds=[Threshold(1, BLUE)],
            mappings=value_map({0: ("follower", "transparent"), 1: ("leader", BLUE)}),
            runbooks=["EtcdNoLeader"],
        ),
        timeseries(
            "Leader changes (15 minutes)",
            "Leader changes each member saw in the last 15 minutes; "
            "EtcdHighNumberOfLeaderChanges fires at 4.",
            q(
                f"sum by ({by}) (increase("
                f"kubeballast_etcd_server_leader_changes_seen_total{{{C}, {E}}}[15m]))",
                "{{etcd_cluster}} {{member}}",
            ),
            unit="none",
            width=12,
            min=0,
            thresholds=[Threshold(4, RED, alert="EtcdHighNumberOfLeaderChanges")],
            runbooks=["EtcdHighNumberOfLeaderChanges"],
        ),
    )
    board.row("Disk")
    board.add(
        timeseries(
            "WAL fsync p99",
            "p99 of WAL fsync latency (5 minutes). etcd needs SSD-class disks: above "
            "10 ms the exporter's verdict says slow (EtcdDiskSlow); the mixin's alerts "
            "fire at 0.5 s and 1 s.",
            q(
                "cluster_member:kubeballast_etcd_disk_wal_fsync_duration_seconds:p99_rate5m"
                f"{{{C}, {E}}}",
                "{{etcd_cluster}} {{member}}",
            ),
            unit="s",
            min=0,
            thresholds=[
                Threshold(0.01, YELLOW, metric="kubeballast_etcd_disk_slow", text="above 10 ms"),
                Threshold(0.5, ORANGE, alert="EtcdHighFsyncDurations"),
                Threshold(1, RED, alert="EtcdHighFsyncDurations"),
            ],
            runbooks=["EtcdHighFsyncDurations", "EtcdDiskSlow"],
        ),
        timeseries(
            "Backend commit p99",
            "p99 of backend commit latency (5 minutes); EtcdHighCommitDurations at 0.25 s.",
            q(
                "cluster_member:kubeballast_etcd_disk_backend_commit_duration_seconds:"
                f"p99_rate5m{{{C}, {E}}}",
                "{{etcd_cluster}} {{member}}",
            ),
            unit="s",
            min=0,
            thresholds=[Threshold(0.25, RED, alert="EtcdHighCommitDurations")],
            runbooks=["EtcdHighCommitDurations"],
        ),
        timeline(
            "Disk verdict",
            "The exporter's disk verdict per member: slow when the WAL fsync p99 of the "
            "last probe interval is above 10 ms.",
            q(f"max by ({by}) (kubeballast_etcd_disk_slow{{{C}, {E}}})", "{{member}}"),
            unit="none",
            thresholds=[Threshold(1, RED)],
            mappings=value_map({0: ("ok", GREEN), 1: ("slow", RED)}),
            runbooks=["EtcdDiskSlow"],
        ),
    )
    board.row("Database")
    board.add(
        timeseries(
            "Database size, in use and quota",
            "The database file (what the quota is compared with), the bytes in use, and "
            "--quota-backend-bytes.",
            q(
                f"max by ({by}) (kubeballast_etcd_db_total_size_bytes{{{C}, {E}}})",
                "{{member}} size",
            ),
            q(
                f"max by ({by}) (kubeballast_etcd_db_total_size_in_use_bytes{{{C}, {E}}})",
                "{{member}} in use",
            ),
            q(
                f"max by (etcd_cluster) (kubeballast_etcd_server_quota_backend_bytes{{{C}, {E}}})",
                "{{etcd_cluster}} quota",
            ),
            unit="bytes",
            min=0,
            runbooks=["EtcdExcessiveDatabaseGrowth"],
        ),
        timeseries(
            "Quota used",
            "Database file over the quota; at 100 % etcd raises NOSPACE and refuses "
            "writes. EtcdDatabaseQuotaLowSpace at 95 %.",
            q(
                f"max by ({by}) (kubeballast_etcd_db_quota_usage_ratio{{{C}, {E}}})",
                "{{etcd_cluster}} {{member}}",
            ),
            unit="percentunit",
            min=0,
            max=1,
            thresholds=[Threshold(0.95, RED, alert="EtcdDatabaseQuotaLowSpace")],
            runbooks=["EtcdDatabaseQuotaLowSpace", "EtcdNoSpaceAlarm"],
        ),
        timeseries(
            "In use (fragmentation)",
            "Bytes in use over the file size: below 50 % a defragmentation gives back "
            "more than half (EtcdDatabaseHighFragmentationRatio, above 100 MiB in use).",
            q(
                f"max by ({by}) (kubeballast_etcd_db_in_use_ratio{{{C}, {E}}})",
                "{{etcd_cluster}} {{member}}",
            ),
            unit="percentunit",
            min=0,
            max=1,
            base_color=ORANGE,
            thresholds=[Threshold(0.5, GREEN, alert="EtcdDatabaseHighFragmentationRatio")],
            runbooks=["EtcdDatabaseHighFragmentationRatio"],
        ),
    )
    board.row("Raft and peers")
    board.add(
        timeseries(
            "Proposals",
            "Consensus proposals committed and failed per second, and pending, on the "
            "busiest member (EtcdHighNumberOfFailedProposals above 5 failed/s).",
            q(
                "max by (etcd_cluster) (deriv("
                f"kubeballast_etcd_server_proposals_committed{{{C}, {E}}}[$__rate_interval]))",
                "{{etcd_cluster}} committed/s",
            ),
            q(
                "max by (etcd_cluster) (rate("
                f"kubeballast_etcd_server_proposals_failed_total{{{C}, {E}}}[$__rate_interval]))",
                "{{etcd_cluster}} failed/s",
            ),
            q(
                f"max by (etcd_cluster) (kubeballast_etcd_server_proposals_pending{{{C}, {E}}})",
                "{{etcd_cluster}} pending",
                unit="short",
            ),
            unit="ops",
            min=0,
            thresholds=[Threshold(5, RED, alert="EtcdHighNumberOfFailedProposals")],
            runbooks=["EtcdHighNumberOfFailedProposals"],
        ),
        timeseries(
            "Peer round-trip time p99",
            "p99 of the round trip to each peer (5 minutes); EtcdMemberCommunicationSlow "
            "at 0.15 s.",
            q(
                "cluster_member_peer:kubeballast_etcd_network_peer_round_trip_time_seconds:"
                f"p99_rate5m{{{C}, {E}}}",
                "{{member}} to {{peer}}",
            ),
            unit="s",
            min=0,
            thresholds=[Threshold(0.15, RED, alert="EtcdMemberCommunicationSlow")],
            runbooks=["EtcdMemberCommunicationSlow", "EtcdMembersDown"],
        ),
        timeseries(
            "gRPC failures and p99",
            "Share of gRPC calls failing (EtcdHighNumberOfFailedGRPCRequests at 1 % and "
            "5 %) and the unary call p99 (EtcdGRPCRequestsSlow at 0.15 s; needs etcd's "
            "--metrics=extensive).",
            q(
                f"cluster_member:kubeballast_etcd_grpc_server_failed:ratio_rate5m{{{C}, {E}}}",
                "{{member}} failed",
            ),
            q(
                "cluster_member:kubeballast_etcd_grpc_server_unary_handling_seconds:"
                f"p99_rate5m{{{C}, {E}}}",
                "{{member}} p99",
                unit="s",
            ),
            unit="percentunit",
            min=0,
            thresholds=[
                Threshold(0.01, ORANGE, alert="EtcdHighNumberOfFailedGRPCRequests"),
                Threshold(0.05, RED, alert="EtcdHighNumberOfFailedGRPCRequests"),
            ],
            runbooks=["EtcdHighNumberOfFailedGRPCRequests", "EtcdGRPCRequestsSlow"],
        ),
    )
    board.row("Backups")
    board.add(
        stat(
            "Newest backup age",
            "Since the newest finished snapshot was taken; EtcdBackupStale after 3 hours.",
            q(
                f"max by (etcd_cluster) (kubeballast_etcd_backup_newest_age_seconds{{{C}, {E}}})",
                "{{etcd_cluster}}",
            ),
            unit="s",
            width=6,
            thresholds=[Threshold(10800, RED, alert="EtcdBackupStale")],
            runbooks=["EtcdBackupStale"],
        ),
        stat(
            "Newest backup verification",
            "The newest snapshot's verification: verified (its digest matched and "
            "etcdctl read it), failed or unchecked.",
            q(
                "max by (etcd_cluster, result) "
                f"(kubeballast_etcd_backup_newest_verification{{{C}, {E}}}) == 1",
                "{{etcd_cluster}} {{result}}",
            ),
            unit="none",
            width=6,
            options={"textMode": "name"},
            runbooks=["EtcdBackupVerificationFailed"],
        ),
        stat(
            "Snapshots kept",
            "Snapshot files in the backup location, and unfinished ones among them.",
            q(
                f"max by (etcd_cluster) (kubeballast_etcd_backup_snapshots{{{C}, {E}}})",
                "{{etcd_cluster}} kept",
            ),
            q(
                f"max by (etcd_cluster) (kubeballast_etcd_backup_unfinished_snapshots{{{C}, {E}}})",
                "{{etcd_cluster}} unfinished",
            ),
            unit="none",
            width=6,
        ),
        stat(
            "Newest backup size",
            "Size of the newest snapshot.",
            q(
                f"max by (etcd_cluster) (kubeballast_etcd_backup_newest_size_bytes{{{C}, {E}}})",
                "{{etcd_cluster}}",
            ),
            unit="bytes",
            width=6,
        ),
    )
    board.row("Events cluster vs main")
    board.add(
        timeseries(
            "Database size by etcd cluster",
            "The largest member database of each etcd cluster (all clusters, whatever "
            "the etcd cluster selection): a separate Events cluster grows on its own.",
            q(
                f"max by (etcd_cluster) (kubeballast_etcd_db_total_size_bytes{{{C}}})",
                "{{etcd_cluster}}",
            ),
            unit="bytes",
            min=0,
        ),
        timeseries(
            "Event writes",
            "Event writes the apiservers served per second: the Event load on etcd.",
            q(
                f"sum(rate(kubeballast_apiserver_event_writes_total{{{C}}}[$__rate_interval]))",
                "event writes",
            ),
            unit="wps",
            min=0,
        ),
        timeseries(
            "Stored objects (top 10 resources)",
            "Objects stored in etcd per resource, as the apiserver counts them.",
            q(
                f"topk(10, max by (resource) (kubeballast_apiserver_storage_objects{{{C}}}))",
                "{{resource}}",
            ),
            unit="short",
            min=0,
        ),
    )
    return board


# --------------------------------------------------------------------------------------
# 3. Heartbeats and eviction
# --------------------------------------------------------------------------------------


def heartbeats() -> Board:
    board = Board(
        "kube-ballast-heartbeats",
        "kube-ballast / Heartbeats and eviction",
        "Are the nodes' heartbeats getting through, and is the node-lifecycle controller "
        "about to evict: Lease ages, stale Leases per zone, zone disruption states, "
        "NoExecute taints and the pods facing eviction.",
    )
    board.row("Heartbeats")
    board.add(
        Panel(
            "heatmap",
            "Heartbeat lag over the nodes",
            "How many nodes have a Lease of each age (seconds since the last renewal). "
            "A band moving up is a heartbeat storm; compare with the grace period.",
            [
                Query(
                    f"sum by (le) (kubeballast_node_lease_age_distribution_seconds_bucket{{{C}}})",
                    "{{le}}",
                    format="heatmap",
                )
            ],
            unit="short",
            width=12,
            height=9,
            options={
                "calculate": False,
                "yAxis": {"unit": "s", "axisPlacement": "left"},
                "cellValues": {"unit": "short"},
                "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange"},
                "rowsFrame": {"layout": "le"},
                "legend": {"show": True},
                "tooltip": {"show": True, "yHistogram": False},
            },
        ),
        timeseries(
            "Stale Leases per zone",
            "Share of each zone's nodes whose Lease is older than the grace period. Two "
            "zones above 20 % during apiserver congestion is KubeNodeHeartbeatStorm; one "
            "zone above 50 % alone is KubeZonePartitioned.",
            q(f"max by (zone) (kubeballast_zone_lease_stale_ratio{{{C}}})", "{{zone}}"),
            unit="percentunit",
            width=12,
            height=9,
            min=0,
            max=1,
            thresholds=[
                Threshold(0.2, ORANGE, alert="KubeNodeHeartbeatStorm"),
                Threshold(0.5, RED, alert="KubeZonePartitioned"),
            ],
            runbooks=["KubeNodeHeartbeatStorm", "KubeZonePartitioned"],
        ),
    )
    board.add(
        stat(
            "Stale Leases",
            "Nodes whose Lease is older than the grace period, and nodes without a Lease.",
            q(f"max(kubeballast_lease_stale_nodes{{{C}}})", "stale"),
            q(f"max(kubeballast_lease_missing_nodes{{{C}}})", "missing"),
            unit="none",
            thresholds=[Threshold(1, ORANGE)],
            runbooks=["KubeNodeHeartbeatsMissing"],
        ),
        stat(
            "Stale share of all nodes",
            "Below 5 % a few stale nodes are KubeNodeHeartbeatsMissing; more is a wave.",
            q(f"max(kubeballast_lease_stale_ratio{{{C}}})"),
            unit="percentunit",
            thresholds=[Threshold(0.05, ORANGE, alert="KubeNodeHeartbeatsMissing")],
            runbooks=["KubeNodeHeartbeatsMissing", "KubeNodeHeartbeatStorm"],
        ),
        stat(
            "Correlated wave",
            "Nodes whose Leases went stale within the wave window of each other (the "
            "largest such group): one cause, such as a congested apiserver or a partition.",
            q(f"max(kubeballast_lease_stale_wave_nodes{{{C}}})", "nodes"),
            unit="none",
            thresholds=[Threshold(1, ORANGE)],
            runbooks=["KubeNodeHeartbeatStorm"],
        ),
        stat(
            "Zones in the wave",
            "Zones the correlated wave spans. Two or more with a congested apiserver is "
            "the heartbeat storm the eviction guard pauses evictions for.",
            q(f"max(kubeballast_lease_stale_wave_zones{{{C}}})", "zones"),
            unit="none",
            thresholds=[Threshold(1, ORANGE), Threshold(2, RED, alert="KubeNodeHeartbeatStorm")],
            runbooks=["KubeNodeHeartbeatStorm"],
        ),
        stat(
            "Wave age",
            "Since the current wave of stale Leases began (0 when no Lease is stale).",
            q(
                "time() - min(kubeballast_lease_stale_wave_start_timestamp_seconds"
                f"{{{C}}}) or on() vector(0)"
            ),
            unit="s",
            runbooks=["KubeNodeHeartbeatStorm"],
        ),
        stat(
            "Grace period",
            "--node-monitor-grace-period: a Lease older than this is stale.",
            q(f"max(kubeballast_node_lease_grace_period_seconds{{{C}}})"),
            unit="s",
        ),
    )
    board.row("Zones and eviction")
    board.add(
        timeline(
            "Zone disruption state",
            "Each zone's state as the node-lifecycle controller computes it: Normal, "
            "PartialDisruption (evictions slowed) or FullDisruption.",
            q(
                "max by (zone) (kubeballast_zone_disruption_state"
                f'{{{C}, state="PartialDisruption"}})'
                " + 2 * max by (zone) (kubeballast_zone_disruption_state"
                f'{{{C}, state="FullDisruption"}})',
                "{{zone}}",
            ),
            unit="none",
            width=12,
            thresholds=[Threshold(1, ORANGE), Threshold(2, RED)],
            mappings=value_map(
                {0: ("Normal", GREEN), 1: ("PartialDisruption", ORANGE), 2: ("FullDisruption", RED)}
            ),
            runbooks=["KubeZonePartialDisruption", "KubeZoneFullDisruption"],
        ),
        timeseries(
            "NoExecute taints",
            "Nodes per zone carrying the unreachable or not-ready NoExecute taint, and "
            "NotReady nodes still waiting for it (the controller's queue).",
            q(
                f"sum by (zone) (kubeballast_zone_no_execute_tainted_nodes{{{C}}})",
                "{{zone}} tainted",
            ),
            q(f"sum by (zone) (kubeballast_zone_awaiting_taint_nodes{{{C}}})", "{{zone}} awaiting"),
            unit="none",
            width=12,
            min=0,
        ),
    )
    board.add(
        timeseries(
            "Pods facing eviction",
            "Pods the taint-eviction controller is predicted to delete within the "
            "horizon, and the pods on NotReady nodes, per zone.",
            q(
                f"sum by (zone) (kubeballast_zone_imminent_pod_evictions{{{C}}})",
                "{{zone}} imminent",
            ),
            q(
                f"sum by (zone) (kubeballast_zone_pods_on_not_ready_nodes{{{C}}})",
                "{{zone}} on NotReady nodes",
            ),
            unit="none",
            width=12,
            min=0,
            thresholds=[Threshold(1, RED)],
            runbooks=["KubePodEvictionsImminent"],
        ),
        timeseries(
            "Taint rate per zone",
            "Nodes per second the controller taints NoExecute in each zone, given its "
            "state (0: it does not taint).",
            q(
                f"max by (zone) (kubeballast_zone_eviction_rate_nodes_per_second{{{C}}})",
                "{{zone}}",
            ),
            unit="short",
            width=12,
            min=0,
        ),
    )
    board.add(
        timeseries(
            "Correlated wave per zone",
            "Nodes of each zone in the correlated wave of stale Leases: a wave across "
            "zones points at the control plane, a wave in one zone at that zone.",
            q(f"max by (zone) (kubeballast_zone_lease_stale_wave_nodes{{{C}}})", "{{zone}}"),
            unit="none",
            width=12,
            height=10,
            min=0,
            runbooks=["KubeNodeHeartbeatStorm", "KubeZonePartitioned"],
        ),
        table(
            "Stalest nodes",
            "The 20 nodes whose Leases were renewed longest ago; compare with the grace "
            "period above.",
            instant(
                f"topk(20, max by (node) (kubeballast_node_lease_age_seconds{{{C}}}))",
                "Lease age",
            ),
            unit="s",
            width=12,
            height=10,
            options={"sortBy": [{"displayName": "Lease age", "desc": True}]},
        ),
    )
    return board


# --------------------------------------------------------------------------------------
# 4. Capacity and topology
# --------------------------------------------------------------------------------------


def capacity() -> Board:
    board = Board(
        "kube-ballast-capacity",
        "kube-ballast / Capacity and topology",
        "How close the cluster is to the limits it is built for, whether the control "
        "plane is sized for its nodes, node pools, extended resources per zone, and the "
        "workloads one zone failure would take down.",
    )
    board.row("Scale limits")
    board.add(
        Panel(
            "bargauge",
            "Scale vs limits",
            "Nodes, pods, containers and pods on the fullest node over the configured "
            "limits; KubeClusterNearScaleLimit at 80 % and 95 %.",
            [q(f"max by (dimension) (kubeballast_scale_limit_ratio{{{C}}})", "{{dimension}}")],
            unit="percentunit",
            width=8,
            min=0,
            max=1,
            thresholds=[
                Threshold(0.8, ORANGE, alert="KubeClusterNearScaleLimit"),
                Threshold(0.95, RED, alert="KubeClusterNearScaleLimit"),
            ],
            runbooks=["KubeClusterNearScaleLimit"],
        ),
        timeseries(
            "Cluster size",
            "Nodes, pods, containers and pods on the fullest node.",
            q(f"max by (dimension) (kubeballast_scale_current{{{C}}})", "{{dimension}}"),
            unit="short",
            min=0,
        ),
        stat(
            "Nodes over the pod limit",
            "Nodes holding more pods than the per-node limit.",
            q(f"max(kubeballast_nodes_over_pod_limit{{{C}}})"),
            unit="none",
            thresholds=[Threshold(1, RED)],
            height=8,
        ),
        stat(
            "Schedulable zones",
            "Zones with at least one Ready, uncordoned, untainted worker node.",
            q(f"max(kubeballast_schedulable_zones{{{C}}})"),
            unit="none",
            base_color=RED,
            thresholds=[Threshold(2, GREEN, alert="KubeWorkloadSingleZone")],
            height=8,
        ),
    )
    board.row("Control plane sizing")
    board.add(
        stat(
            "Workers / control-plane nodes",
            "Worker nodes (what the sizing table is read for) and control-plane nodes.",
            q(f"max(kubeballast_worker_nodes{{{C}}})", "workers"),
            q(f"max(kubeballast_control_plane_nodes{{{C}}})", "control plane"),
            unit="none",
            width=6,
            height=6,
        ),
        stat(
            "Recommended per control-plane node",
            "CPU cores and memory the seed's sizing table recommends per control-plane "
            "node for the worker count.",
            q(f"max(kubeballast_control_plane_recommended_cpu_cores{{{C}}})", "CPU cores"),
            q(
                f"max(kubeballast_control_plane_recommended_memory_bytes{{{C}}})",
                "memory",
                unit="bytes",
            ),
            unit="short",
            width=8,
            height=6,
        ),
        table(
            "Control-plane nodes vs the recommendation",
            "Each control-plane node's CPU and memory capacity, and whether it is "
            "undersized (CPU below the recommendation or memory more than 10 % below).",
            instant(
                f"max by (node) (kubeballast_control_plane_node_cpu_capacity_cores{{{C}}})",
                "CPU cores",
            ),
            instant(
                f"max by (node) (kubeballast_control_plane_node_memory_capacity_bytes{{{C}}})",
                "Memory",
                unit="bytes",
            ),
            instant(
                f"max by (node) (kubeballast_control_plane_node_undersized{{{C}}})",
                "Undersized",
                unit="bool_yes_no",
            ),
            unit="short",
            width=10,
            height=6,
            runbooks=["KubeControlPlaneUndersized"],
        ),
    )
    board.row("Pools and extended resources")
    board.add(
        table(
            "Node pools",
            "Per pool: nodes, schedulable nodes, pods and pod capacity.",
            instant(f"max by (pool) (kubeballast_pool_nodes{{{C}}})", "Nodes"),
            instant(f"max by (pool) (kubeballast_pool_schedulable_nodes{{{C}}})", "Schedulable"),
            instant(f"max by (pool) (kubeballast_pool_pods{{{C}}})", "Pods"),
            instant(f"max by (pool) (kubeballast_pool_pod_capacity{{{C}}})", "Pod capacity"),
            unit="short",
            width=12,
        ),
        timeseries(
            "Extended resources requested per zone",
            "Requests of each extended resource over its allocatable amount, per zone; "
            "at 100 % with pods pending for it, KubeExtendedResourceExhausted.",
            q(
                f"sum by (resource, zone) (kubeballast_extended_resource_requested{{{C}}})"
                " / sum by (resource, zone) "
                f"(kubeballast_extended_resource_allocatable{{{C}}})",
                "{{resource}} {{zone}}",
            ),
            unit="percentunit",
            width=12,
            min=0,
            thresholds=[Threshold(1, RED)],
            runbooks=["KubeExtendedResourceExhausted"],
        ),
    )
    board.row("Zone risk")
    board.add(
        Panel(
            "bargauge",
            "Workloads by zone risk",
            "Deployments and StatefulSets by zone risk (single_zone, skew_exceeded, ok, "
            "not_applicable) and whether they declare zone spread.",
            [
                q(
                    f"sum by (risk, spread_declared) (kubeballast_workloads_by_zone_risk{{{C}}})",
                    "{{risk}} (spread declared: {{spread_declared}})",
                )
            ],
            unit="none",
            width=8,
            min=0,
        ),
        table(
            "Workloads at zone risk",
            "The riskiest workloads (up to exporter.state.max_workload_series) and "
            "their class: single_zone (all ready replicas in one zone) or skew_exceeded "
            "(one row with value 0 when none is at risk). Their zones and skew are in "
            "kubeballast_workload_zone_ready_replicas and kubeballast_workload_zone_skew.",
            instant(
                "max by (kind, namespace, workload, risk) "
                f"(kubeballast_workload_zone_risk{{{C}}}) or on() vector(0)",
                "At risk",
            ),
            unit="none",
            width=16,
            runbooks=["KubeWorkloadSingleZone"],
        ),
    )
    return board


# --------------------------------------------------------------------------------------
# 5. Remediations
# --------------------------------------------------------------------------------------


def remediations() -> Board:
    decisions = "kubeballast_remediation_decisions_total"
    board = Board(
        "kube-ballast-remediations",
        "kube-ballast / Remediations",
        "What the receiver's guarded remediations did: actions executed, dry runs and "
        "refusals by the guard (by reason), budgets left, eviction pauses, and the "
        "notifications sent and failed.",
        annotations=[
            annotation(
                "Eviction pauses",
                f"max(kubeballast_eviction_pause_active{{{C}}}) == 1",
                "orange",
                "eviction pause",
            ),
            annotation(
                "Remediations paused",
                f'sum(increase({decisions}{{{C}, reason="paused"}}[2m])) > 0',
                "purple",
                "remediations paused (refused)",
            ),
            annotation(
                "Actions executed",
                f'sum by (action) (increase({decisions}{{{C}, outcome="executed"}}[2m])) > 0',
                "red",
                "{{action}} executed",
            ),
        ],
    )
    board.row("Decisions")
    board.add(
        stat(
            "Executed",
            "Actions that ran, over the time range.",
            q(f'sum(increase({decisions}{{{C}, outcome="executed"}}[$__range])) or on() vector(0)'),
            unit="none",
            base_color=BLUE,
        ),
        stat(
            "Dry runs",
            "Actions decided and recorded but not run (dry-run is the default).",
            q(f'sum(increase({decisions}{{{C}, outcome="dry-run"}}[$__range])) or on() vector(0)'),
            unit="none",
            base_color=BLUE,
        ),
        stat(
            "Refused by a guard",
            "Actions a guard refused (budget, cooldown, kill switch, precondition ...).",
            q(f'sum(increase({decisions}{{{C}, outcome="refused"}}[$__range])) or on() vector(0)'),
            unit="none",
            thresholds=[Threshold(1, ORANGE)],
        ),
        stat(
            "Awaiting approval",
            "Actions waiting for `kube-ballast remediations approve`.",
            q(
                f'sum(increase({decisions}{{{C}, outcome="awaiting-approval"}}[$__range]))'
                " or on() vector(0)"
            ),
            unit="none",
            thresholds=[Threshold(1, ORANGE)],
        ),
        stat(
            "Failed",
            "Actions that failed or were interrupted (KubeBallastRemediationFailed).",
            q(
                f'sum(increase({decisions}{{{C}, outcome=~"failed|interrupted"}}[$__range]))'
                " or on() vector(0)"
            ),
            unit="none",
            thresholds=[Threshold(1, RED)],
            runbooks=["KubeBallastRemediationFailed"],
        ),
        stat(
            "Revert failed",
            "Reversible actions that could not be reverted: a paused safety mechanism "
            "may still be paused (KubeBallastRemediationRevertFailed).",
            q(
                f'sum(increase({decisions}{{{C}, outcome="revert-failed"}}[$__range]))'
                " or on() vector(0)"
            ),
            unit="none",
            thresholds=[Threshold(1, RED)],
            runbooks=["KubeBallastRemediationRevertFailed"],
        ),
    )
    board.add(
        timeseries(
            "Decisions by action and outcome",
            "Guard-kernel decisions per second, by action and outcome.",
            q(
                f"sum by (action, outcome) (rate({decisions}{{{C}}}[$__rate_interval]))"
                " or on() vector(0)",
                "{{action}} {{outcome}}",
            ),
            unit="ops",
            width=12,
            min=0,
            stack=True,
        ),
        table(
            "Refusals by reason",
            "Refused actions over the time range by action and the guard's reason (one "
            "row with value 0 when none).",
            instant(
                "sum by (action, reason) "
                f'(increase({decisions}{{{C}, outcome="refused"}}[$__range])) or on() vector(0)',
                "Refused",
            ),
            unit="none",
            width=12,
        ),
    )
    board.row("Guards")
    board.add(
        timeseries(
            "Budgets left",
            "Executions left in the current sliding hour per budget, as the leader last read them.",
            q(f"min by (budget) (kubeballast_remediation_budget_remaining{{{C}}})", "{{budget}}"),
            unit="none",
            width=8,
            min=0,
            base_color=RED,
            thresholds=[Threshold(1, GREEN)],
        ),
        stat(
            "Reversible actions in force",
            "Actions that pause a safety mechanism and are reverted at their TTL at the latest.",
            q(f"sum(kubeballast_remediation_active_reversible_actions{{{C}}})"),
            unit="none",
            thresholds=[Threshold(1, ORANGE)],
            height=8,
        ),
        stat(
            "Receiver leader",
            "Receiver replicas holding the leader Lease (exactly one may act).",
            q(f"sum(kubeballast_remediation_leader{{{C}}})"),
            unit="none",
            base_color=RED,
            thresholds=[Threshold(1, GREEN), Threshold(2, RED)],
            height=8,
        ),
        stat(
            "Eviction pause",
            "Whether the eviction guard pauses pod evictions now.",
            q(f"max(kubeballast_eviction_pause_active{{{C}}})"),
            unit="none",
            thresholds=[Threshold(1, ORANGE)],
            mappings=value_map({0: ("not paused", GREEN), 1: ("PAUSED", ORANGE)}),
            height=8,
            runbooks=["KubeEvictionPauseOverdue", "KubeEvictionPauseCapReached"],
        ),
        stat(
            "Pause expires in",
            "Time left until the eviction pause in force expires unless renewed; "
            "negative: overdue. 0 without a pause.",
            q(
                "max(kubeballast_eviction_pause_expires_timestamp_seconds"
                f"{{{C}}}) - time() or on() vector(0)"
            ),
            unit="s",
            height=8,
            base_color=RED,
            thresholds=[Threshold(0, GREEN)],
            runbooks=["KubeEvictionPauseOverdue"],
        ),
    )
    board.row("Webhook and notifications")
    board.add(
        timeseries(
            "Notifications",
            "Chat notifications per second by outcome: sent, retried, failed (attempts "
            "used up), dropped (queue full).",
            q(
                "sum by (outcome) (rate(kubeballast_notifications_total"
                f"{{{C}}}[$__rate_interval]))",
                "{{outcome}}",
            ),
            unit="ops",
            min=0,
            runbooks=["KubeBallastNotificationsFailing"],
        ),
        timeseries(
            "Webhook requests",
            "Alertmanager webhook requests per second by outcome (accepted, or why they "
            "were refused).",
            q(
                "sum by (outcome) (rate(kubeballast_receiver_webhook_requests_total"
                f"{{{C}}}[$__rate_interval]))",
                "{{outcome}}",
            ),
            unit="reqps",
            min=0,
            runbooks=["KubeBallastReceiverWebhookErrors"],
        ),
        timeseries(
            "Webhook latency p99",
            "p99 of the time from a webhook request's arrival to its answer (NaN while "
            "there are none).",
            q(
                "histogram_quantile(0.99, sum by (le) (rate("
                f"kubeballast_receiver_webhook_duration_seconds_bucket{{{C}}}"
                "[$__rate_interval])))",
                "p99",
            ),
            unit="s",
            min=0,
        ),
    )
    return board


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------

BOARDS: Mapping[str, Any] = {
    "control-plane": control_plane,
    "etcd": etcd,
    "heartbeats-eviction": heartbeats,
    "capacity-topology": capacity,
    "remediations": remediations,
}
"""File stem -> the function building the dashboard, in the order of docs/dashboards.md."""


def boards() -> dict[str, Board]:
    return {name: build() for name, build in BOARDS.items()}


def dashboard_json(board: Board, runbook_base: str = RUNBOOK_BASE) -> str:
    return json.dumps(board.render(runbook_base), indent=2, ensure_ascii=False) + "\n"


_YAML_HEADER = "# Generated by dashboards/generate.py (`make docs`); do not edit.\n"


def configmap(name: str, text: str) -> str:
    """The dashboard as a ConfigMap the kube-prometheus-stack Grafana sidecar loads."""
    body = "".join(f"    {line}" if line.strip() else "\n" for line in text.splitlines(True))
    return (
        _YAML_HEADER
        + "apiVersion: v1\n"
        + "kind: ConfigMap\n"
        + "metadata:\n"
        + f"  name: kube-ballast-dashboard-{name}\n"
        + "  labels:\n"
        + '    grafana_dashboard: "1"\n'
        + "    app.kubernetes.io/name: kube-ballast\n"
        + "    app.kubernetes.io/component: dashboards\n"
        + "  annotations:\n"
        + f"    grafana_folder: {FOLDER}\n"
        + "data:\n"
        + f"  kube-ballast-{name}.json: |\n"
        + body
    )


def kustomization(names: Sequence[str]) -> str:
    return (
        _YAML_HEADER
        + "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        + "kind: Kustomization\n"
        + "resources:\n"
        + "".join(f"  - {name}.yaml\n" for name in names)
    )


PROVIDER = f"""\
{_YAML_HEADER.rstrip()}
# A Grafana file provider for kube-ballast's dashboards: copy this file into Grafana's
# provisioning/dashboards/ folder and dashboards/*.json into the path below. The
# dashboards ask for their Prometheus data source (the `datasource` variable), so no
# data source needs a particular name or uid.
apiVersion: 1
providers:
  - name: kube-ballast
    orgId: 1
    folder: {FOLDER}
    folderUid: kube-ballast
    type: file
    disableDeletion: false
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: /var/lib/grafana/dashboards/kube-ballast
      foldersFromFilesStructure: false
"""


_DOC_INTRO = """\
# Dashboards

<!-- Generated by dashboards/generate.py (`make docs`). Edit the generator, not this \
file. -->

kube-ballast ships five Grafana dashboards, built on what `kube-ballast exporter`
([metrics.md](metrics.md)) and `kube-ballast receiver` serve and on the recording rules
of [alerts/](../alerts) ([alerts.md](alerts.md)). They are generated by
[dashboards/generate.py](../dashboards/generate.py), the one source of truth:

- `dashboards/<name>.json`: the dashboards, for Grafana 10 or newer (schemaVersion 39);
- `dashboards/provisioning/dashboards.yaml`: a Grafana file provider that loads them;
- `deploy/dashboards/`: each dashboard as a ConfigMap labelled `grafana_dashboard: "1"`,
  which the Grafana sidecar of kube-prometheus-stack picks up (into the folder named by
  the `grafana_folder` annotation when the sidecar's `folderAnnotation` is set), with a
  `kustomization.yaml`: `kubectl apply -k deploy/dashboards` in Grafana's namespace.

Every dashboard has:

- a **`datasource`** variable (any Prometheus data source) and a **`cluster`** variable
  (the `cluster` label of a federated or Thanos setup; "All" also matches series without
  one, a Prometheus per cluster); the etcd dashboard adds **`etcd_cluster`**;
- a stable uid (`kube-ballast-<name>`), the `kube-ballast` tag and a menu of the others;
- units on every axis, and thresholds taken from the alert rules: a panel's threshold is
  the value its alert fires at (the tests check each against the alert's expression);
- links to the runbooks of the alerts a panel belongs to. In the committed files they
  point at `docs/runbooks/<Alert>.md` (the `runbook_base_url` constant, as the alert
  rules do); render them for your deployment with
  `python dashboards/generate.py --runbook-base-url URL --output DIR`
  (`URL` like `https://git.example.com/kube-ballast/blob/main/docs/runbooks`), which
  writes the dashboards and ConfigMaps into `DIR`.

Queries that have no series while nothing is wrong (firing alerts, refused remediations,
an eviction pause) end in `or on() vector(0)`, so such panels read 0 instead of "No data".
The tests (tests/dashboards/) validate the JSON against
[dashboards/schema.json](../dashboards/schema.json), check that panels do not overlap,
parse every query with promtool, check every metric against the exporter's and the
receiver's registries and the recording rules, and run every query against a real
Prometheus scraping the simulator, the exporter and the receiver, healthy and congested.
"""


def render_doc(built: Mapping[str, Board]) -> str:
    parts = [_DOC_INTRO]
    for name, board in built.items():
        parts.append(
            f"\n## {board.title.removeprefix('kube-ballast / ')}\n\n"
            f"`dashboards/{name}.json`, uid `{board.uid}`. {board.description}\n\n"
            "| Row | Panel | What it shows | Runbooks |\n|---|---|---|---|\n"
        )
        row = ""
        for kind, item in board.items:
            if kind == "row":
                row = item
                continue
            runbooks = ", ".join(f"[{a}](runbooks/{a}.md)" for a in item.runbooks)
            description = " ".join(item.description.split()).replace("|", "\\|")
            parts.append(f"| {row} | {item.title} | {description} | {runbooks} |\n")
        if board.annotations:
            names = ", ".join(a["name"] for a in board.annotations)
            parts.append(f"\nAnnotations: {names}.\n")
    return "".join(parts)


def outputs(runbook_base: str = RUNBOOK_BASE) -> dict[Path, str]:
    """Every generated file and its content."""
    built = boards()
    result: dict[Path, str] = {}
    for name, board in built.items():
        text = dashboard_json(board, runbook_base)
        result[DASHBOARDS_DIR / f"{name}.json"] = text
        result[CONFIGMAP_DIR / f"{name}.yaml"] = configmap(name, text)
    result[CONFIGMAP_DIR / "kustomization.yaml"] = kustomization(list(built))
    result[PROVISIONING_DIR / "dashboards.yaml"] = PROVIDER
    result[DOC] = render_doc(built)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    parser.add_argument(
        "--runbook-base-url",
        help="link the runbooks under this URL (needs --output; the committed files keep"
        " repository paths)",
    )
    parser.add_argument(
        "--output", type=Path, help="write the dashboards and ConfigMaps into this folder instead"
    )
    args = parser.parse_args(argv)
    if args.runbook_base_url is not None and args.output is None:
        parser.error("--runbook-base-url needs --output (the committed files stay as they are)")
    if args.output is not None:
        base = (args.runbook_base_url or RUNBOOK_BASE).rstrip("/")
        args.output.mkdir(parents=True, exist_ok=True)
        for path, text in outputs(base).items():
            if path.suffix in (".json", ".yaml") and path.parent != PROVISIONING_DIR:
                (args.output / path.name).write_text(text)
        return 0
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.relative_to(REPO_ROOT))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print(f"stale (run `make docs`): {', '.join(map(str, stale))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
