"""What the dashboard tests share: the generator and alerts/render.py loaded as modules,
every query of every dashboard, the template variables substituted for Prometheus, and
the metric names kube-ballast serves.

The metric names come from the same places tests/alerts/test_alerts_rules.py reads
them, the exporter's metric specs (the source of docs/metrics.md) and the receiver's
registry built as ``run_receiver`` builds it, so a dashboard cannot read a metric that
no component serves. (A module of its own rather than a conftest, because test
directories are not packages and conftests are not imported by name.)
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from prometheus_client import CollectorRegistry

from kubeballast.core.config import ReceiverConfig
from kubeballast.exporter.app import all_metric_specs, exposed_name
from kubeballast.remediations.auth import Authenticator
from kubeballast.remediations.engine import build_intake
from kubeballast.remediations.webhook import create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO_ROOT / "dashboards"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks"


def _load(name: str, path: Path) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


generate = _load("kube_ballast_dashboards_generate", DASHBOARDS / "generate.py")
render = _load("kube_ballast_alerts_render", REPO_ROOT / "alerts" / "render.py")


def dashboard_files() -> list[Path]:
    """dashboards/*.json without the schema."""
    return sorted(p for p in DASHBOARDS.glob("*.json") if p.name != "schema.json")


def load_dashboards() -> dict[str, dict[str, Any]]:
    """The committed dashboards by file stem (schema.json is not a dashboard)."""
    return {path.stem: json.loads(path.read_text()) for path in dashboard_files()}


@dataclass(frozen=True)
class PanelQuery:
    """One query of a dashboard: a panel target or an annotation."""

    dashboard: str
    panel: str
    ref: str
    expr: str
    annotation: bool = False

    @property
    def name(self) -> str:
        return f"{self.dashboard}: {self.panel} [{self.ref}]"


def queries(dashboards: dict[str, dict[str, Any]] | None = None) -> list[PanelQuery]:
    """Every panel target and annotation query of every dashboard."""
    found: list[PanelQuery] = []
    for stem, dashboard in (dashboards or load_dashboards()).items():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append(PanelQuery(stem, panel["title"], target["refId"], target["expr"]))
        for annotation in dashboard["annotations"]["list"]:
            if "expr" in annotation:
                found.append(
                    PanelQuery(stem, annotation["name"], "annotation", annotation["expr"], True)
                )
    return found


SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$cluster": ".*",
    "$etcd_cluster": ".*",
}
"""What Grafana puts in place of the template variables, for promtool and Prometheus:
the "All" value of the query variables, and intervals that fit a test's 1 s scrapes."""


def substitute(expr: str, substitutions: dict[str, str] | None = None) -> str:
    """The expression as Grafana sends it to Prometheus; fails on an unknown variable."""
    values = substitutions or SUBSTITUTIONS
    unknown: list[str] = []

    def value(match: re.Match[str]) -> str:
        variable = "$" + match.group(1)
        if variable not in values:
            unknown.append(variable)
            return match.group(0)
        return values[variable]

    text = re.sub(r"\$\{?(\w+)\}?", value, expr)
    assert unknown == [], f"unknown template variables {unknown} in {expr!r}"
    return text


# --------------------------------------------------------------------------------------
# What kube-ballast serves (as tests/alerts/test_alerts_rules.py reads it)
# --------------------------------------------------------------------------------------


def _series(name: str, kind: str, labels: frozenset[str]) -> dict[str, frozenset[str]]:
    if kind == "histogram":
        return {f"{name}_bucket": labels | {"le"}, f"{name}_count": labels, f"{name}_sum": labels}
    if kind == "summary":
        return {name: labels | {"quantile"}, f"{name}_count": labels, f"{name}_sum": labels}
    if kind == "counter":
        return {f"{name.removesuffix('_total')}_total": labels}
    return {name: labels}


def exporter_metrics() -> dict[str, frozenset[str]]:
    names: dict[str, frozenset[str]] = {}
    for _, spec in all_metric_specs():
        labels = frozenset(spec.labels)
        if spec.type in {"histogram", "summary"}:
            names.update(_series(spec.name, spec.type, labels))
        else:
            names[exposed_name(spec)] = labels
    return names


def exporter_help() -> dict[str, str]:
    """Exposed series name -> the metric's description."""
    helps: dict[str, str] = {}
    for _, spec in all_metric_specs():
        helps[exposed_name(spec)] = spec.help
    return helps


def receiver_metrics() -> dict[str, frozenset[str]]:
    """The receiver's registry built as ``run_receiver`` does, starting nothing (see
    tests/alerts/test_alerts_rules.py ``_receiver_metrics`` for why ``_labelnames``)."""
    registry = CollectorRegistry()
    config = ReceiverConfig()
    intake = build_intake(config, registry=registry)
    create_app(config, intake, registry, authenticator=Authenticator(allow_unauthenticated=True))
    names: dict[str, frozenset[str]] = {}
    for collector in list(registry._collector_to_names):
        labelnames = getattr(collector, "_labelnames", None)
        for family in collector.collect():
            if labelnames is not None:
                labels = frozenset(labelnames)
            else:
                labels = frozenset(key for sample in family.samples for key in sample.labels)
            names.update(_series(family.name, family.type, labels - {"le", "quantile"}))
    return names


def recording_rules() -> set[str]:
    return {rule.record for rule in render.load_rules() if rule.record is not None}


def upstream_metrics() -> dict[str, str]:
    result: dict[str, str] = render.read_upstream_metrics(DASHBOARDS / "upstream-metrics.txt")
    return result


def selectors(expr: str) -> Iterator[Any]:
    yield from render.selectors(expr)
