"""The dashboards are valid, laid out, consistent with the alerts, and generated.

- every dashboards/*.json loads and matches dashboards/schema.json (the parts Grafana
  needs: uid, title, schemaVersion, panels with gridPos and targets, templating), and
  the schema rejects what Grafana could not load;
- panels stay inside the 24 columns and never overlap;
- every selector carries the ``cluster`` matcher; every metric is one the exporter or
  the receiver serves, a recording rule of alerts/*.yaml or an upstream metric listed
  in dashboards/upstream-metrics.txt, with label matchers the metric has;
- thresholds are the values of the alerts they name, runbook links lead to runbooks;
- the committed JSON, ConfigMaps, provisioning file and docs/dashboards.md are what
  dashboards/generate.py writes.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dashboards_support import (
    DASHBOARDS,
    REPO_ROOT,
    RUNBOOKS,
    exporter_help,
    exporter_metrics,
    generate,
    load_dashboards,
    queries,
    receiver_metrics,
    recording_rules,
    render,
    selectors,
    upstream_metrics,
)

SCHEMA = json.loads((DASHBOARDS / "schema.json").read_text())
EXPECTED = {
    "control-plane": "kube-ballast-control-plane",
    "etcd": "kube-ballast-etcd",
    "heartbeats-eviction": "kube-ballast-heartbeats",
    "capacity-topology": "kube-ballast-capacity",
    "remediations": "kube-ballast-remediations",
}
"""File stem -> uid. The uids are stable: links and bookmarks to them must not break."""

SCRAPE_LABELS = frozenset({"cluster", "job", "instance"})
DASHBOARDS_BY_STEM = load_dashboards()


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


# --------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------


def test_the_five_dashboards_with_stable_uids() -> None:
    assert {stem: d["uid"] for stem, d in DASHBOARDS_BY_STEM.items()} == EXPECTED


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("stem", sorted(DASHBOARDS_BY_STEM))
def test_dashboard_matches_the_schema(stem: str) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(DASHBOARDS_BY_STEM[stem])
    ]
    assert errors == []


def _broken(change: str) -> dict[str, Any]:
    dashboard = copy.deepcopy(DASHBOARDS_BY_STEM["control-plane"])
    panel = _panels(dashboard)[0]
    if change == "no gridPos":
        del panel["gridPos"]
    elif change == "no targets":
        panel["targets"] = []
    elif change == "no unit":
        del panel["fieldConfig"]["defaults"]["unit"]
    elif change == "too wide":
        panel["gridPos"]["w"] = 25
    elif change == "no uid":
        del dashboard["uid"]
    elif change == "no cluster variable":
        dashboard["templating"]["list"] = [
            v for v in dashboard["templating"]["list"] if v["name"] != "cluster"
        ]
    elif change == "fixed datasource":
        panel["targets"][0]["datasource"]["uid"] = "prometheus-1"
    elif change == "old schema":
        dashboard["schemaVersion"] = 27
    return dashboard


@pytest.mark.parametrize(
    "change",
    [
        "no gridPos",
        "no targets",
        "no unit",
        "too wide",
        "no uid",
        "no cluster variable",
        "fixed datasource",
        "old schema",
    ],
)
def test_the_schema_rejects_what_grafana_or_the_conventions_cannot_take(change: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_broken(change), SCHEMA)


def _layout_problems(dashboard: dict[str, Any]) -> list[str]:
    """Panels outside the 24 columns, overlapping rectangles, repeated ids."""
    problems = []
    cells: dict[tuple[int, int], str] = {}
    ids = [panel["id"] for panel in dashboard["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("panel ids repeat")
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        if grid["x"] + grid["w"] > 24:
            problems.append(f"{panel['title']!r} is wider than the grid")
        overlapped = {
            other
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
            if (other := cells.setdefault((x, y), panel["title"])) != panel["title"]
        }
        problems += [f"{panel['title']!r} overlaps {other!r}" for other in sorted(overlapped)]
    return problems


@pytest.mark.parametrize("stem", sorted(DASHBOARDS_BY_STEM))
def test_panels_stay_in_the_grid_and_do_not_overlap(stem: str) -> None:
    assert _layout_problems(DASHBOARDS_BY_STEM[stem]) == []


def test_the_layout_check_sees_an_overlap() -> None:
    dashboard = copy.deepcopy(DASHBOARDS_BY_STEM["etcd"])
    first, second = _panels(dashboard)[:2]
    second["gridPos"] = dict(first["gridPos"], x=first["gridPos"]["x"] + 1)
    assert _layout_problems(dashboard) == [f"{second['title']!r} overlaps {first['title']!r}"]


@pytest.mark.parametrize("stem", sorted(DASHBOARDS_BY_STEM))
def test_every_axis_has_a_unit(stem: str) -> None:
    for panel in _panels(DASHBOARDS_BY_STEM[stem]):
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        if panel["type"] == "heatmap":
            assert panel["options"]["yAxis"]["unit"], panel["title"]
            assert panel["options"]["cellValues"]["unit"], panel["title"]


@pytest.mark.parametrize("stem", sorted(DASHBOARDS_BY_STEM))
def test_variables_datasource_cluster_and_runbooks(stem: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS_BY_STEM[stem]["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    cluster = variables["cluster"]
    assert cluster["type"] == "query"
    assert cluster["datasource"]["uid"] == "${datasource}"
    assert cluster["includeAll"]
    assert cluster["allValue"] == ".*"
    assert variables["runbook_base_url"]["query"] == "docs/runbooks"


def test_every_query_selects_by_cluster() -> None:
    missing = sorted(
        f"{query.name}: {selector.name}"
        for query in queries()
        for selector in selectors(query.expr)
        if "cluster" not in selector.labels
    )
    assert missing == []


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def _known() -> dict[str, frozenset[str]]:
    exporter, receiver = exporter_metrics(), receiver_metrics()
    return exporter | receiver


def _unknown_metrics(found: list[Any]) -> list[str]:
    known = _known()
    records = recording_rules()
    upstream = upstream_metrics()
    return sorted(
        f"{query.name}: {selector.name}"
        for query in found
        for selector in selectors(query.expr)
        if selector.name not in known
        and selector.name not in records
        and selector.name not in upstream
    )


def test_every_metric_is_served_recorded_or_documented_upstream() -> None:
    unknown = _unknown_metrics(queries())
    assert unknown == [], "metrics neither kube-ballast, the rules nor upstream-metrics.txt name"


def test_label_matchers_use_labels_the_metric_has() -> None:
    known = _known()
    wrong = sorted(
        f"{query.name}: {selector.name}{{{label}}}"
        for query in queries()
        for selector in selectors(query.expr)
        if selector.name in known
        for label in selector.labels
        if label not in known[selector.name] | SCRAPE_LABELS
    )
    assert wrong == []


def test_upstream_list_names_only_used_upstream_metrics() -> None:
    used = {selector.name for query in queries() for selector in selectors(query.expr)}
    upstream = upstream_metrics()
    assert sorted(set(upstream) - used) == [], "listed but not used: remove them"
    assert sorted(set(upstream) & set(_known())) == [], "kube-ballast serves these"


def test_the_metric_check_catches_a_misspelled_metric() -> None:
    broken = copy.deepcopy(DASHBOARDS_BY_STEM)
    _panels(broken["etcd"])[0]["targets"][0]["expr"] = 'kubeballast_etcd_membr_up{cluster=~"x"}'
    assert "etcd: Quorum [A]: kubeballast_etcd_membr_up" in _unknown_metrics(queries(broken))


# --------------------------------------------------------------------------------------
# Thresholds and runbooks
# --------------------------------------------------------------------------------------


def _numbers(expr: str) -> set[float]:
    """Numbers in a PromQL expression, label values included, and products ``a * b``."""
    found = {float(n) for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", expr)}
    for a, b in re.findall(r"\(?(\d+(?:\.\d+)?)\s*\*\s*(\d+(?:\.\d+)?)\)?", expr):
        found.add(round(float(a) * float(b), 10))
    return found


def _thresholds() -> list[tuple[str, str, Any]]:
    return [
        (board.uid, panel.title, threshold)
        for board in generate.boards().values()
        for panel in board.panels()
        for threshold in panel.thresholds
        if threshold.alert is not None or threshold.metric is not None
    ]


def _threshold_problems(thresholds: list[tuple[str, str, Any]]) -> list[str]:
    rules = render.load_rules()
    helps = exporter_help()
    problems = []
    for uid, title, threshold in thresholds:
        where = f"{uid}: {title}: {threshold.value}"
        if threshold.alert is not None:
            exprs = [r.expr for r in rules if threshold.alert in (r.alert, r.record)]
            if not any(threshold.value in _numbers(e) for e in exprs):
                problems.append(f"{where}: not a value of {threshold.alert}")
        elif threshold.text not in helps[threshold.metric]:
            problems.append(f"{where}: {threshold.metric}'s description lacks {threshold.text!r}")
    return problems


def test_thresholds_are_the_values_their_alerts_fire_at() -> None:
    thresholds = _thresholds()
    assert len(thresholds) >= 20
    assert _threshold_problems(thresholds) == []


def test_the_threshold_check_catches_a_drifted_value() -> None:
    drifted = generate.Threshold(0.9, "red", alert="EtcdDatabaseQuotaLowSpace")
    assert _threshold_problems([("etcd", "Quota used", drifted)]) == [
        "etcd: Quota used: 0.9: not a value of EtcdDatabaseQuotaLowSpace"
    ]


def test_threshold_steps_in_the_json_are_the_generators() -> None:
    for uid, title, threshold in _thresholds():
        dashboard = next(d for d in DASHBOARDS_BY_STEM.values() if d["uid"] == uid)
        panel = next(p for p in _panels(dashboard) if p["title"] == title)
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert {"color": threshold.color, "value": threshold.value} in steps, (uid, title)


def test_runbook_links_lead_to_runbooks() -> None:
    alerts = {rule.alert for rule in render.load_rules() if rule.alert is not None}
    linked = set()
    for dashboard in DASHBOARDS_BY_STEM.values():
        for panel in _panels(dashboard):
            for link in panel["links"]:
                match = re.fullmatch(r"\$\{runbook_base_url\}/(\w+)\.md", link["url"])
                assert match, link
                name = match.group(1)
                assert link["title"] == f"Runbook: {name}"
                if name in {"KubeEvictionPauseOverdue", "KubeEvictionPauseCapReached"} and (
                    name not in alerts
                ):
                    continue  # the eviction guard's alerts, being added with issue 9
                assert (RUNBOOKS / f"{name}.md").exists(), name
                linked.add(name)
    assert len(linked) >= 30


# --------------------------------------------------------------------------------------
# Generated files
# --------------------------------------------------------------------------------------


def test_committed_files_are_the_generators_output() -> None:
    stale = [
        str(path.relative_to(REPO_ROOT))
        for path, text in generate.outputs().items()
        if not path.exists() or path.read_text() != text
    ]
    assert stale == [], "run `make docs` (python dashboards/generate.py)"


def test_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "control-plane.json"
    target.write_text("{}\n")
    monkeypatch.setattr(generate, "outputs", lambda: {target: "{ }\n"})
    monkeypatch.setattr(generate, "REPO_ROOT", tmp_path)
    assert generate.main(["--check"]) == 1
    assert target.read_text() == "{}\n", "--check changes nothing"


def test_configmaps_carry_the_dashboards_for_the_grafana_sidecar() -> None:
    deploy = REPO_ROOT / "deploy" / "dashboards"
    kustomization = yaml.safe_load((deploy / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [f"{stem}.yaml" for stem in generate.BOARDS]
    for stem, dashboard in DASHBOARDS_BY_STEM.items():
        resource = yaml.safe_load((deploy / f"{stem}.yaml").read_text())
        assert resource["apiVersion"] == "v1"
        assert resource["kind"] == "ConfigMap"
        assert resource["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = resource["data"].items()
        assert key.endswith(".json")
        assert json.loads(text) == dashboard


def test_the_provisioning_file_is_a_grafana_file_provider() -> None:
    provider = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards.yaml").read_text())
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"]


def test_runbook_base_url_rebases_every_link(tmp_path: Path) -> None:
    base = "https://git.example.com/kube-ballast/blob/main/docs/runbooks"
    assert generate.main(["--runbook-base-url", base + "/", "--output", str(tmp_path)]) == 0
    for stem in DASHBOARDS_BY_STEM:
        dashboard = json.loads((tmp_path / f"{stem}.json").read_text())
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["runbook_base_url"]["query"] == base
        resource = yaml.safe_load((tmp_path / f"{stem}.yaml").read_text())
        assert json.loads(next(iter(resource["data"].values()))) == dashboard
    assert (REPO_ROOT / "dashboards" / "control-plane.json").read_text().count(base) == 0


def test_the_doc_names_every_dashboard_and_panel() -> None:
    doc = (REPO_ROOT / "docs" / "dashboards.md").read_text()
    for stem, dashboard in DASHBOARDS_BY_STEM.items():
        assert f"`dashboards/{stem}.json`, uid `{dashboard['uid']}`" in doc
        for panel in _panels(dashboard):
            assert f"| {panel['title']} |" in doc, panel["title"]


def test_zero_defaults_never_add_a_series_to_a_result() -> None:
    # `a or vector(0)` adds the unlabelled 0 whenever `a` has no unlabelled series, so a
    # `sum by (...)` panel would always show a bogus 0 series; `or on() vector(0)` adds
    # it only when `a` is empty.
    wrong = [q.name for q in queries() if re.search(r"\bor\s+vector\s*\(", q.expr)]
    assert wrong == []


def test_kustomize_builds_the_configmaps_and_each_fits_kubectl_apply() -> None:
    # Real kubectl (installed by scripts/test). Client-side `kubectl apply` keeps the
    # whole object in an annotation limited to 256 KiB, so each ConfigMap stays below.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing: `make test` installs it")
    built = subprocess.run(
        [kubectl, "kustomize", str(REPO_ROOT / "deploy" / "dashboards")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    resources = list(yaml.safe_load_all(built.stdout))
    assert sorted(r["metadata"]["name"] for r in resources) == sorted(
        f"kube-ballast-dashboard-{stem}" for stem in DASHBOARDS_BY_STEM
    )
    for resource in resources:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", resource["metadata"]["name"])
        for key in resource["data"]:
            assert re.fullmatch(r"[-._a-zA-Z0-9]+", key)
        assert len(json.dumps(resource)) < 256 * 1024, resource["metadata"]["name"]


def test_variable_queries_read_labels_kube_ballast_serves() -> None:
    known = _known()
    checked = 0
    for stem, dashboard in DASHBOARDS_BY_STEM.items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert match, (stem, variable["name"])
            (selector,) = selectors(match.group(1))
            assert selector.name in known, (stem, variable["name"])
            assert match.group(2) in known[selector.name] | SCRAPE_LABELS, (stem, variable["name"])
            assert variable["definition"] == variable["query"]["query"]
            checked += 1
    assert checked == len(DASHBOARDS_BY_STEM) + 1  # cluster everywhere, etcd_cluster once
