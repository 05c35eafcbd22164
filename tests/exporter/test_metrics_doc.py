"""docs/metrics.md stays generated from the code, and every metric the exporter declares
follows the Prometheus naming conventions the project holds itself to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubeballast.exporter.app import all_metric_specs, exposed_name, render_metrics_doc
from kubeballast.exporter.contract import MetricSpec

SPECS = [spec for _, spec in all_metric_specs()]
NAME = re.compile(r"^kubeballast_[a-z][a-z0-9_]*[a-z0-9]$")
LABEL = re.compile(r"^[a-z][a-z0-9_]*$")
# Units spelled out rather than in base units (Prometheus: seconds, bytes, ratios).
NON_BASE_UNITS = re.compile(
    r"_(milliseconds|microseconds|nanoseconds|minutes|hours|days|ms|kilobytes|megabytes"
    r"|kb|mb|gb|percent|percentage)(_|$)"
)


def test_the_metrics_doc_is_generated_from_the_specs(repo_root: Path) -> None:
    path = repo_root / "docs" / "metrics.md"
    assert path.read_text() == render_metrics_doc(), (
        "docs/metrics.md is stale: regenerate it with `make docs`"
    )


def test_every_metric_is_declared_once() -> None:
    names = [spec.name for spec in SPECS]
    assert len(names) == len(set(names))
    assert "kubeballast_source_up" in names


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_metric_names_follow_the_conventions(spec: MetricSpec) -> None:
    assert NAME.match(spec.name), "prefix kubeballast_, lower snake case"
    assert not NON_BASE_UNITS.search(spec.name), "base units: _seconds, _bytes, _ratio"
    if spec.type == "counter":
        # prometheus-client adds _total; a spec carrying it would expose _total_total.
        assert not spec.name.endswith("_total")
        assert exposed_name(spec).endswith("_total")
    else:
        assert not spec.name.endswith("_total"), "_total is for counters"
    if spec.type == "info":
        assert not spec.name.endswith("_info"), "prometheus-client adds _info"
    assert spec.help.strip(), "every metric has help"
    assert spec.help.rstrip().endswith((".", ")")), "help is a sentence"
    for label in spec.labels:
        assert LABEL.match(label)
        # instance and job are the labels Prometheus gives every scraped series; one
        # brought by the exporter would be renamed exported_instance / exported_job.
        assert label not in ("le", "quantile", "job", "instance"), "reserved label"
    assert len(set(spec.labels)) == len(spec.labels)


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_no_label_has_unbounded_values(spec: MetricSpec) -> None:
    # Identities of single objects (pods, UIDs, URLs, request paths) would make the
    # series count grow with the cluster; areas aggregate them instead.
    unbounded = {"pod", "uid", "url", "path", "ip", "container_id", "error", "message"}
    assert not unbounded.intersection(spec.labels)
