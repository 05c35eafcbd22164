"""The alert rules keep their conventions, and everything generated from them is in sync.

- every alert has severity, automation, summary, description and a runbook that exists,
  and every runbook belongs to an alert;
- every metric a rule reads is one the exporter describes (its metric specs, the source
  of docs/metrics.md), one the receiver registers (its registry, built as the receiver
  builds it), a recording rule, or an upstream metric listed with its component in
  alerts/upstream-metrics.txt; label matchers use labels the metric has;
- the promtool tests cover every alert (firing with full labels and annotations, at the
  ``for:`` boundary, negative) and every recording rule;
- the PrometheusRule resources and docs/alerts.md match what alerts/render.py renders.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from kubeballast.core.config import ReceiverConfig
from kubeballast.exporter.app import all_metric_specs, exposed_name
from kubeballast.remediations.auth import Authenticator
from kubeballast.remediations.engine import build_intake
from kubeballast.remediations.webhook import create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS = REPO_ROOT / "alerts"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks"

AUTOMATIONS = frozenset(
    {"none", "eviction-pause", "notify", "etcd-backup", "etcd-defrag", "etcd-recover-nospace"}
)
"""The remediations an ``automation`` label may name. A new remediation adds its name
here together with its receiver action (remediations/actions.py)."""

AUTOMATIONS_WITHOUT_ACTION: frozenset[str] = frozenset()
"""Automations the rules may name before the receiver ships their action (none now)."""

SEVERITIES = frozenset({"critical", "warning"})

SCRAPE_LABELS = frozenset({"cluster", "job", "instance"})
"""Labels every series may carry besides its own: Prometheus' target labels and the
external ``cluster`` label of federated setups."""

RUNBOOK_SECTIONS = (
    "## What it means",
    "## Impact",
    "## How to confirm",
    "## What to do",
    "## What kube-ballast does automatically",
)


def _load_render() -> ModuleType:
    """alerts/render.py, which is a script beside the rules, not part of the package."""
    name = "kube_ballast_alerts_render"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ALERTS / "render.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


render = _load_render()


def _alerts() -> list[Any]:
    return [rule for rule in render.load_rules() if rule.alert is not None]


def _records() -> list[Any]:
    return [rule for rule in render.load_rules() if rule.record is not None]


def _seconds(duration: str) -> int:
    """A Prometheus duration (``5m``, ``1h30m``, ``3d``) in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    parts = re.findall(r"(\d+)([smhdw])", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


# --------------------------------------------------------------------------------------
# Conventions and runbooks
# --------------------------------------------------------------------------------------


def test_rule_files_are_found() -> None:
    names = {rule.alert for rule in _alerts()}
    assert {"KubeApiserverCongested", "KubeControlPlaneNoLeader"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule.alert)
def test_alert_has_labels_annotations_and_a_for(rule: Any) -> None:
    labels, annotations = rule.labels, rule.annotations
    assert labels.get("severity") in SEVERITIES
    assert labels.get("automation") in AUTOMATIONS
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["runbook_url"] == f"docs/runbooks/{rule.alert}.md"
    assert "\n" not in annotations["summary"].strip()
    # The description carries the values that matter.
    assert "$value" in annotations["description"] or "$labels" in annotations["description"]
    # A `for:` boundary case needs a `for:`.
    assert _seconds(rule.rule["for"]) > 0


def test_every_alert_has_a_runbook_and_every_runbook_an_alert() -> None:
    alerts = {rule.alert for rule in _alerts()}
    runbooks = {path.stem for path in RUNBOOKS.glob("*.md")}
    assert sorted(alerts - runbooks) == [], "alerts without a runbook"
    assert sorted(runbooks - alerts) == [], "runbooks without an alert"


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule.alert)
def test_runbook_has_every_section_and_names_its_automation(rule: Any) -> None:
    text = (RUNBOOKS / f"{rule.alert}.md").read_text()
    assert text.startswith(f"# {rule.alert}\n")
    positions = [text.find(section) for section in RUNBOOK_SECTIONS]
    assert -1 not in positions, f"missing sections: {RUNBOOK_SECTIONS}"
    assert positions == sorted(positions)
    assert f"**Automation:** {rule.labels['automation']}" in text
    automatic = text[text.index("## What kube-ballast does automatically") :]
    assert f"`automation: {rule.labels['automation']}`" in automatic
    # How to confirm: commands to run, in code blocks.
    confirm = text[text.index("## How to confirm") : text.index("## What to do")]
    assert "```" in confirm


def test_every_automation_is_a_receiver_action() -> None:
    from kubeballast.remediations.actions import default_actions

    shipped = set(default_actions())
    assert sorted(AUTOMATIONS - {"none"} - AUTOMATIONS_WITHOUT_ACTION - shipped) == []
    assert sorted(AUTOMATIONS_WITHOUT_ACTION & shipped) == [], "it has an action now"


def test_alerts_sharing_a_name_differ_only_in_windows_or_severity() -> None:
    # Multi-window burn rates differ in their windows; the mixin's two-threshold alerts
    # (a warning and a critical variant, as in etcd's mixin) in their severity.
    by_name: dict[str, list[Any]] = {}
    for rule in _alerts():
        by_name.setdefault(rule.alert, []).append(rule)
    for name, rules in by_name.items():
        if len(rules) == 1:
            continue
        windows = {
            (rule.labels.get("long"), rule.labels.get("short"), rule.labels["severity"])
            for rule in rules
        }
        assert len(windows) == len(rules), name
        assert {rule.labels["automation"] for rule in rules} == {rules[0].labels["automation"]}


# --------------------------------------------------------------------------------------
# Metrics the rules read
# --------------------------------------------------------------------------------------


def _series(name: str, kind: str, labels: frozenset[str]) -> dict[str, frozenset[str]]:
    """The series a metric family of ``kind`` is exposed as -> their labels."""
    if kind == "histogram":
        return {f"{name}_bucket": labels | {"le"}, f"{name}_count": labels, f"{name}_sum": labels}
    if kind == "summary":
        return {name: labels | {"quantile"}, f"{name}_count": labels, f"{name}_sum": labels}
    if kind == "counter":
        return {f"{name.removesuffix('_total')}_total": labels}
    return {name: labels}


def _exporter_metrics() -> dict[str, frozenset[str]]:
    """Every series name the exporter can serve -> the labels it has."""
    names: dict[str, frozenset[str]] = {}
    for _, spec in all_metric_specs():
        labels = frozenset(spec.labels)
        if spec.type in {"histogram", "summary"}:
            names.update(_series(spec.name, spec.type, labels))
        else:
            names[exposed_name(spec)] = labels
    return names


def _receiver_metrics() -> dict[str, frozenset[str]]:
    """Every series name the receiver (``kube-ballast receiver``) can serve -> its labels.

    The receiver has no metric specs: its parts (webhook, engine, notifier) register
    prometheus_client collectors in the one registry its ``/metrics`` serves. This builds
    that registry as ``run_receiver`` does (the engine's ``build_intake``, then
    ``create_app``), starting nothing, and reads every collector's name, type and label
    names. prometheus_client has no public accessor for the label names of a labelled
    metric without children, hence ``_labelnames``; a collector without it (a custom
    one) contributes the labels of its samples.
    """
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


def _kube_ballast_metrics() -> dict[str, frozenset[str]]:
    """Every series kube-ballast serves, the exporter's and the receiver's -> labels."""
    exporter, receiver = _exporter_metrics(), _receiver_metrics()
    both = set(exporter) & set(receiver)
    assert {name: exporter[name] for name in both} == {name: receiver[name] for name in both}
    return exporter | receiver


def test_the_receiver_metrics_are_found() -> None:
    receiver = _receiver_metrics()
    assert receiver["kubeballast_remediation_decisions_total"] == {"action", "outcome", "reason"}
    assert receiver["kubeballast_receiver_webhook_requests_total"] == {"outcome"}
    assert receiver["kubeballast_notifications_total"] == {"outcome"}
    assert receiver["kubeballast_receiver_webhook_duration_seconds_bucket"] == {"le"}


def _selectors() -> Iterator[tuple[Any, Any]]:
    yield from render.used_selectors()


def test_rules_read_only_metrics_that_exist() -> None:
    exporter = _kube_ballast_metrics()
    upstream = render.read_upstream_metrics()
    records = {rule.record for rule in _records()}
    unknown = sorted(
        f"{rule.alert or rule.record}: {selector.name}"
        for rule, selector in _selectors()
        if selector.name not in exporter
        and selector.name not in upstream
        and selector.name not in records
    )
    assert unknown == [], "metrics neither kube-ballast nor upstream-metrics.txt describe"


def test_label_matchers_use_labels_the_metric_has() -> None:
    exporter = _kube_ballast_metrics()
    wrong = sorted(
        f"{rule.alert or rule.record}: {selector.name}{{{label}}}"
        for rule, selector in _selectors()
        if selector.name in exporter
        for label in selector.labels
        if label not in exporter[selector.name] | SCRAPE_LABELS
    )
    assert wrong == []


def test_upstream_list_names_only_used_upstream_metrics() -> None:
    upstream = render.read_upstream_metrics()
    used = {selector.name for _, selector in _selectors()}
    assert sorted(set(upstream) - used) == [], "listed but not used: remove them"
    assert sorted(set(upstream) & set(_kube_ballast_metrics())) == [], "kube-ballast serves these"


def test_recording_rules_are_named_by_convention_and_not_like_kube_ballast_metrics() -> None:
    exporter = _kube_ballast_metrics()
    for rule in _records():
        level, metric, operation = rule.record.split(":")  # level:metric:operations
        assert level.startswith("cluster"), rule.record
        assert metric.startswith("kubeballast_"), rule.record
        assert operation, rule.record
        assert rule.record not in exporter
        # Aggregated, keeping `cluster` (a federated Prometheus keeps clusters apart).
        assert "by (cluster" in rule.expr, rule.record


def test_no_rule_reads_histogram_buckets_without_aggregating() -> None:
    for rule, selector in _selectors():
        if selector.name.endswith("_bucket"):
            assert rule.record is not None, f"{rule.alert} reads {selector.name} directly"
            assert "sum by (" in rule.expr


def test_the_check_catches_a_misspelled_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    real = render.load_rules()
    typo = render.Rule("apiserver", "g", {"alert": "X", "expr": "kubeballast_apiserver_upp == 0"})
    monkeypatch.setattr(render, "load_rules", lambda: [*real, typo])
    with pytest.raises(AssertionError, match="kubeballast_apiserver_upp"):
        test_rules_read_only_metrics_that_exist()


# --- the tokenizer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", [("up", ())]),
        ('up{job="a"} == 0 or absent(up{job="a"})', [("up", ("job",)), ("up", ("job",))]),
        (
            'sum by (cluster, target) (rate(a_total{code=~"5..", x!="}"}[5m] offset 1h30m))'
            " / ignoring (code) group_left b",
            [("a_total", ("code", "x")), ("b", ())],
        ),
        (
            'label_replace(a > on (c) b, "reason", "x", "", "") or c == 0',
            [("a", ()), ("b", ()), ("c", ())],
        ),
        ("max_over_time(a[1h:5m]) - min_over_time(a[1h]) > 3e2", [("a", ()), ("a", ())]),
        ("time() - a_seconds > 0x10 # comment with b_total", [("a_seconds", ())]),
        ('topk(3, x{a="1",}) and bool y', [("x", ("a",)), ("y", ())]),
        ("level:metric:rate5m > (14.40 * 0.01)", [("level:metric:rate5m", ())]),
        ("count without (le) (z{})", [("z", ())]),
    ],
)
def test_selectors_finds_metric_names_and_matchers(
    expr: str, expected: list[tuple[str, tuple[str, ...]]]
) -> None:
    assert [(s.name, s.labels) for s in render.selectors(expr)] == expected


def test_selectors_refuses_what_it_cannot_read() -> None:
    with pytest.raises(render.PromQLError, match="without a metric name"):
        render.selectors('{__name__="up"} == 0')


# --------------------------------------------------------------------------------------
# promtool test coverage
# --------------------------------------------------------------------------------------


def _unit_tests(area: str) -> list[dict[str, Any]]:
    document = yaml.safe_load((ALERTS / "tests" / f"{area}_test.yaml").read_text())
    tests: list[dict[str, Any]] = document["tests"]
    return tests


@pytest.mark.parametrize(
    "rule",
    # One case per alert name; variants sharing a name share the tests.
    list({rule.alert: rule for rule in _alerts()}.values()),
    ids=lambda rule: rule.alert,
)
def test_every_alert_has_firing_boundary_and_negative_cases(rule: Any) -> None:
    variants = [other for other in _alerts() if other.alert == rule.alert]
    shortest_for = min(_seconds(other.rule["for"]) for other in variants)
    firing, boundary, negative = False, False, False
    for test in _unit_tests(rule.area):
        cases = [
            case for case in test.get("alert_rule_test", []) if case["alertname"] == rule.alert
        ]
        fired_at = [_seconds(case["eval_time"]) for case in cases if case["exp_alerts"]]
        quiet_at = [_seconds(case["eval_time"]) for case in cases if not case["exp_alerts"]]
        for case in cases:
            for alert in case["exp_alerts"] or []:
                labels, annotations = alert["exp_labels"], alert["exp_annotations"]
                assert labels["alertname"] == rule.alert
                assert {"severity", "automation"} <= set(labels)
                assert set(annotations) == {"summary", "description", "runbook_url"}
                firing = True
        # Quiet shortly before it fires, within the `for:`: the boundary.
        boundary |= any(0 < f - q <= shortest_for for f in fired_at for q in quiet_at)
        negative |= bool(cases) and not fired_at
    assert firing, "no firing case with labels and annotations"
    assert boundary, "no case at the `for:` boundary"
    assert negative, "no negative case"


@pytest.mark.parametrize("rule", _records(), ids=lambda rule: rule.record)
def test_every_recording_rule_has_an_expression_test(rule: Any) -> None:
    exprs = [
        case["expr"]
        for test in _unit_tests(rule.area)
        for case in test.get("promql_expr_test", [])
        if case.get("exp_samples")
    ]
    assert any(re.search(rf"(?<![\w:]){re.escape(rule.record)}(?![\w:])", e) for e in exprs)


# --------------------------------------------------------------------------------------
# Generated files
# --------------------------------------------------------------------------------------


def test_generated_files_are_up_to_date() -> None:
    stale = [
        str(path.relative_to(REPO_ROOT))
        for path, text in render.outputs().items()
        if not path.exists() or path.read_text() != text
    ]
    assert stale == [], "run `make docs`"


@pytest.mark.parametrize("source", render.rule_files(), ids=lambda path: path.name)
def test_prometheusrule_carries_the_same_rules(source: Path) -> None:
    resource = yaml.safe_load((REPO_ROOT / "deploy" / "prometheusrule" / source.name).read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["name"] == f"kube-ballast-{source.stem}"
    assert resource["spec"] == yaml.safe_load(source.read_text())


def test_prometheusrule_kustomization_lists_every_resource() -> None:
    kustomization = yaml.safe_load(
        (REPO_ROOT / "deploy" / "prometheusrule" / "kustomization.yaml").read_text()
    )
    assert kustomization["resources"] == [path.name for path in render.rule_files()]


def test_runbook_base_url_rebases_every_link(tmp_path: Path) -> None:
    base = "https://git.example.com/kube-ballast/blob/main/docs/runbooks"
    assert render.main(["--runbook-base-url", base, "--output", str(tmp_path)]) == 0
    urls = []
    for path in sorted(tmp_path.glob("*.yaml")):
        resource = yaml.safe_load(path.read_text())
        if resource["kind"] != "PrometheusRule":
            continue
        for group in resource["spec"]["groups"]:
            urls += [r["annotations"]["runbook_url"] for r in group["rules"] if "alert" in r]
    assert len(urls) == len(_alerts())
    assert all(re.fullmatch(rf"{re.escape(base)}/\w+\.md", url) for url in urls), urls


def test_alerts_doc_lists_every_alert_with_severity_for_and_automation() -> None:
    doc = (REPO_ROOT / "docs" / "alerts.md").read_text()
    for rule in _alerts():
        row = next(
            line
            for line in doc.splitlines()
            if line.startswith(f"| [{rule.alert}](runbooks/{rule.alert}.md)")
            and (rule.labels.get("long") is None or f"({rule.labels['long']} /" in line)
            and f" | {rule.labels['severity']} | " in line
        )
        cells = [cell.strip() for cell in row.split(" | ")]
        assert cells[1:4] == [rule.labels["severity"], rule.rule["for"], rule.labels["automation"]]


# --------------------------------------------------------------------------------------
# etcd runbooks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    sorted({rule.alert for rule in _alerts() if rule.area == "etcd"}),
)
def test_etcd_runbooks_give_the_three_recovery_strategies(name: str) -> None:
    # The seed's recovery plans, in order, with the command that prints them.
    text = (RUNBOOKS / f"{name}.md").read_text()
    assert "kube-ballast --config config.yaml etcd --cluster <cluster> restore-plan" in text
    strategies = [
        "**Recover from the original members**",
        "**Migrate the data to new members and rebuild**",
        "**Restore from the periodic backup**",
    ]
    positions = [text.find(strategy) for strategy in strategies]
    assert -1 not in positions
    assert positions == sorted(positions)
