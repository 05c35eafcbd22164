"""The alert rules' other forms, generated from alerts/*.yaml, and the checks on them.

The rule files in this folder are the one source. From them this script renders:

- ``deploy/prometheusrule/<area>.yaml``: each rule file as a PrometheusRule custom
  resource (monitoring.coreos.com/v1) for the Prometheus Operator, plus a
  ``kustomization.yaml`` listing them. A rule file's ``groups`` is exactly the CR's
  ``spec.groups``, so the CR embeds the file's text, comments included, under ``spec:``;
- ``docs/alerts.md``: every alert with its severity, ``for``, automation and runbook,
  and every recording rule.

``python alerts/render.py`` writes them (``make docs`` runs it); ``--check`` exits 1
when a generated file is stale. ``--runbook-base-url URL`` renders the CRs with the
runbook links rebased for a deployment (the rule files hold repository-relative paths,
``docs/runbooks/<AlertName>.md``; see docs/alerts.md).

It also holds what the tests (tests/alerts/) use to check the rules against the
exporter: :func:`selectors` finds the metric names and label matchers in a PromQL
expression with a small tokenizer. promtool validates the syntax but has no parser
output, and a full PromQL parser is not worth a dependency for this; the tokenizer's
limits are listed in its docstring.

It runs under the project's venv (PyYAML) and imports nothing of kube-ballast, so
``make docs`` and the tests share it without it being part of the package.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ALERTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = ALERTS_DIR.parent
PROMETHEUSRULE_DIR = REPO_ROOT / "deploy" / "prometheusrule"
ALERTS_DOC = REPO_ROOT / "docs" / "alerts.md"
RUNBOOK_PREFIX = "docs/runbooks/"
"""What every ``runbook_url`` starts with in the rule files (a repository path)."""

AREA_TITLES: Mapping[str, str] = {
    "apiserver": "kube-apiserver",
    "controlplane": "Scheduler and controller-manager",
    "network": "Network plugin",
    "etcd": "etcd",
    "cluster-state": "Cluster state: heartbeats, zones, evictions, scale, placement",
    "kube-ballast": "kube-ballast itself",
}
"""Rule files by area (file stem) and their headings in docs/alerts.md, in order.
A rule file not listed here is an error, so a new area cannot go undocumented."""


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule of a rule file."""

    area: str
    group: str
    rule: Mapping[str, Any]

    @property
    def alert(self) -> str | None:
        name = self.rule.get("alert")
        return str(name) if name is not None else None

    @property
    def record(self) -> str | None:
        name = self.rule.get("record")
        return str(name) if name is not None else None

    @property
    def expr(self) -> str:
        return str(self.rule["expr"])

    @property
    def labels(self) -> Mapping[str, str]:
        return {str(k): str(v) for k, v in (self.rule.get("labels") or {}).items()}

    @property
    def annotations(self) -> Mapping[str, str]:
        return {str(k): str(v) for k, v in (self.rule.get("annotations") or {}).items()}


def rule_files() -> list[Path]:
    """The rule files, in the order of :data:`AREA_TITLES`."""
    found = {path.stem: path for path in ALERTS_DIR.glob("*.yaml")}
    unknown = sorted(set(found) - set(AREA_TITLES))
    if unknown:
        raise ValueError(f"rule files without a title in AREA_TITLES: {unknown}")
    return [found[area] for area in AREA_TITLES if area in found]


def load_rules() -> list[Rule]:
    """Every rule of every rule file, in file order."""
    rules: list[Rule] = []
    for path in rule_files():
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            rules.extend(Rule(path.stem, str(group["name"]), rule) for rule in group["rules"])
    return rules


# --------------------------------------------------------------------------------------
# PrometheusRule custom resources
# --------------------------------------------------------------------------------------

_HEADER = "# Generated from alerts/{area}.yaml by alerts/render.py (`make docs`); do not edit.\n"


def render_prometheusrule(path: Path, runbook_base_url: str | None = None) -> str:
    """The PrometheusRule resource of one rule file.

    The rule file's text is indented under ``spec:`` as it is, so the resource carries
    the same rules byte for byte (and the comments that explain them). With
    ``runbook_base_url``, ``runbook_url: docs/runbooks/`` becomes that base.
    """
    text = path.read_text()
    if not text.startswith("#") and not text.startswith("groups:"):
        raise ValueError(f"{path.name}: expected comments and `groups:` only")
    if runbook_base_url is not None:
        base = runbook_base_url if runbook_base_url.endswith("/") else runbook_base_url + "/"
        text = text.replace(f"runbook_url: {RUNBOOK_PREFIX}", f"runbook_url: {base}")
    body = "".join(f"  {line}" if line.strip() else "\n" for line in text.splitlines(True))
    return (
        _HEADER.format(area=path.stem)
        + "apiVersion: monitoring.coreos.com/v1\n"
        + "kind: PrometheusRule\n"
        + "metadata:\n"
        + f"  name: kube-ballast-{path.stem}\n"
        + "  labels:\n"
        + "    app.kubernetes.io/name: kube-ballast\n"
        + "    app.kubernetes.io/component: alert-rules\n"
        + "spec:\n"
        + body
    )


def render_kustomization(paths: Sequence[Path]) -> str:
    resources = "".join(f"  - {path.stem}.yaml\n" for path in paths)
    return (
        _HEADER.format(area="*")
        + "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        + "kind: Kustomization\n"
        + "resources:\n"
        + resources
    )


def prometheusrule_outputs(runbook_base_url: str | None = None) -> dict[Path, str]:
    paths = rule_files()
    outputs = {
        PROMETHEUSRULE_DIR / f"{path.stem}.yaml": render_prometheusrule(path, runbook_base_url)
        for path in paths
    }
    outputs[PROMETHEUSRULE_DIR / "kustomization.yaml"] = render_kustomization(paths)
    return outputs


# --------------------------------------------------------------------------------------
# docs/alerts.md
# --------------------------------------------------------------------------------------

_DOC_INTRO = """\
# Alerts

<!-- Generated from alerts/*.yaml by alerts/render.py (`make docs`). \
Edit the rules, not this file. -->

Every alert kube-ballast ships, by rule file. The rules are Prometheus 2.x rule files
in [alerts/](../alerts), each tested with promtool (`alerts/tests/<area>_test.yaml`);
the same rules are rendered as PrometheusRule resources in
[deploy/prometheusrule/](../deploy/prometheusrule) for the Prometheus Operator, and an
example Alertmanager configuration is in
[alerts/alertmanager/alertmanager.yml](../alerts/alertmanager/alertmanager.yml).

Conventions every alert follows (the tests in tests/alerts/ hold them):

- **Labels.** `severity` is `critical` (page: the cluster is failing or about to) or
  `warning` (look today). `automation` names the kube-ballast remediation that acts on
  the alert, `none` where none does; Alertmanager routes every alert whose automation is
  not `none` to the kube-ballast receiver as well as to people. Alerts keep the labels
  that say where (`target`, `component`, `zone` ...); rules aggregate by `cluster`, so a
  Prometheus that carries a `cluster` label (federation, Thanos) keeps clusters apart.
- **Annotations.** `summary` is one line; `description` gives the values that matter
  (`$value`, the labels); `runbook_url` is the repository path of the alert's runbook,
  `docs/runbooks/<AlertName>.md`, which works in any checkout and in code review. To
  turn it into a link for your deployment, render the PrometheusRule resources with the
  base URL where you publish the runbooks:
  `python alerts/render.py --runbook-base-url URL --output DIR`
  (`URL` like `https://git.example.com/kube-ballast/blob/main/docs/runbooks/`).
- **Metrics.** Rules read only what `kube-ballast exporter` serves
  ([metrics.md](metrics.md)), what `kube-ballast receiver` serves on its own `/metrics`
  (`kubeballast_receiver_*`, `kubeballast_remediation_*`, `kubeballast_notifications_total`;
  the tests read them from the receiver's registry), and the upstream names listed, with
  the component that exposes them, in
  [alerts/upstream-metrics.txt](../alerts/upstream-metrics.txt).
  Latency and error ratios are recording rules; the exporter's histograms are already
  low-cardinality, and are still aggregated before anything else reads them.

The example Alertmanager configuration groups by `cluster` and `alertname`, so a storm of
per-node or per-zone alerts of one kind arrives as one notification; routes alerts whose
`automation` is not `none` to the kube-ballast receiver as well as to people; and
inhibits the symptoms of a control-plane incident (`KubeApiserverCongested`,
`KubeApiserverDown`, `EtcdNoLeader`, `KubeNodeHeartbeatStorm`) such as NotReady nodes,
`KubeNodeHeartbeatsMissing` and TargetDown.

The etcd rules cover every alert of etcd's own mixin (etcd-io/etcd `contrib/mixin`, same
names in CamelCase, same thresholds; the two-threshold ones as a warning and a critical
variant of one name) over the exporter's `kubeballast_etcd_*` series, so they work where
Prometheus does not scrape etcd itself. On those series `etcd_cluster` is the etcd
cluster's name in `exporter.etcd.clusters`, which the receiver's etcd actions act on;
`cluster` stays the Kubernetes cluster's, so an etcd alert is grouped and inhibits with
the rest of its Kubernetes cluster's alerts.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_alerts_doc() -> str:
    """docs/alerts.md: one table of alerts and one of recording rules per area."""
    rules = load_rules()
    parts = [_DOC_INTRO]
    for area, title in AREA_TITLES.items():
        area_rules = [rule for rule in rules if rule.area == area]
        if not area_rules:
            continue
        parts.append(f"\n## {title} ([alerts/{area}.yaml](../alerts/{area}.yaml))\n\n")
        parts.append(
            "| Alert | Severity | For | Automation | Summary (template) |\n|---|---|---|---|---|\n"
        )
        for rule in area_rules:
            if rule.alert is None:
                continue
            labels = rule.labels
            runbook = rule.annotations["runbook_url"].removeprefix(RUNBOOK_PREFIX)
            windows = f" ({labels['long']} / {labels['short']})" if "long" in labels else ""
            parts.append(
                f"| [{rule.alert}](runbooks/{runbook}){windows} | {labels['severity']}"
                f" | {rule.rule.get('for', '0s')} | {labels['automation']}"
                f" | {_cell(rule.annotations['summary'])} |\n"
            )
        records = [rule for rule in area_rules if rule.record is not None]
        if records:
            parts.append("\nRecording rules:\n\n| Name | Expression |\n|---|---|\n")
            for rule in records:
                parts.append(f"| `{rule.record}` | `{_cell(rule.expr)}` |\n")
    return "".join(parts)


# --------------------------------------------------------------------------------------
# Metric names in PromQL
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """A vector selector: a metric name and the label names its matchers use."""

    name: str
    labels: tuple[str, ...]


KEYWORDS = frozenset(
    {
        # binary and set operators, modifiers
        "and", "or", "unless", "atan2", "bool", "on", "ignoring", "group_left",
        "group_right", "offset", "by", "without",
        # aggregation operators (may be followed by `by (...)` rather than `(`)
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
        # number literals
        "inf", "nan",
    }
)  # fmt: skip
"""Identifiers that are never metric names (compared in lower case)."""

_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'
_TOKEN = re.compile(
    rf"""
    (?P<space>\s+)
    |(?P<comment>\#[^\n]*)
    |(?P<string>{_STRING})
    |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)
    |(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<range>\[[^\]]*\])
    |(?P<open>\{{)
    |(?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_MATCHER = re.compile(
    rf"""\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*(?:{_STRING})\s*(?P<end>,\s*\}}|,|\}})""",
    re.DOTALL,
)


class PromQLError(ValueError):
    """An expression the tokenizer does not handle (see :func:`selectors`)."""


def _matchers(expr: str, pos: int) -> tuple[tuple[str, ...], int]:
    """The label names of the matchers from ``pos`` (just after ``{``) and the position
    after the closing ``}``."""
    labels: list[str] = []
    rest = expr[pos:]
    if rest.lstrip().startswith("}"):
        return (), pos + rest.index("}") + 1
    while True:
        match = _MATCHER.match(expr, pos)
        if match is None:
            raise PromQLError(f"cannot read the label matchers at {expr[pos : pos + 40]!r}")
        labels.append(match.group("label"))
        pos = match.end()
        if match.group("end").endswith("}"):
            return tuple(labels), pos


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of a PromQL expression, in order.

    A small tokenizer, not a parser; it assumes the expression is valid PromQL (promtool
    checks that) and knows:

    - strings, comments, numbers and durations (``5m``, ``1h30m``, hex), range and
      subquery brackets (``[5m]``, ``[1h:5m]``), which it skips;
    - identifiers followed by ``(`` are functions; :data:`KEYWORDS` are operators,
      modifiers and aggregations; after ``by``/``without``/``on``/``ignoring``/
      ``group_left``/``group_right`` a parenthesised list holds label names;
    - any other identifier is a metric name, with the label names of its ``{...}``
      matchers when it has them.

    Limits: a selector by ``{__name__=...}`` without a metric name, and label matchers
    it cannot read, raise :class:`PromQLError` (so a check built on this fails loudly
    rather than missing a metric); a metric named like a keyword (``sum``, ``on``) or
    directly followed by ``(`` would be misread. Label names in ``by (...)`` clauses are
    not checked against anything.
    """
    found: list[Selector] = []
    pos = 0
    skip_label_list = False
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:  # pragma: no cover - the `other` alternative matches anything
            raise PromQLError(f"cannot tokenize at {expr[pos : pos + 40]!r}")
        kind, text, pos = match.lastgroup, match.group(), match.end()
        if kind in ("space", "comment", "string", "number", "range"):
            continue
        next_char = expr[pos:].lstrip()[:1]
        if kind == "other":
            if text == "(" and skip_label_list:
                pos = expr.index(")", pos) + 1
            skip_label_list = False
            continue
        if kind == "open":
            raise PromQLError(f"selector without a metric name at {expr[pos - 1 : pos + 40]!r}")
        # kind == "name"
        lowered = text.lower()
        if lowered in KEYWORDS:
            skip_label_list = lowered in _LABEL_LIST_KEYWORDS
            continue
        skip_label_list = False
        if next_char == "(":
            continue  # a function call
        labels: tuple[str, ...] = ()
        if next_char == "{":
            pos = expr.index("{", pos) + 1
            labels, pos = _matchers(expr, pos)
        found.append(Selector(text, labels))
    return found


def read_upstream_metrics(path: Path | None = None) -> dict[str, str]:
    """alerts/upstream-metrics.txt: metric name -> the component that exposes it."""
    path = path if path is not None else ALERTS_DIR / "upstream-metrics.txt"
    allowed: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, component = line.partition(" ")
        if not component.strip():
            raise ValueError(f"{path.name}:{number}: {name}: name the component exposing it")
        if name in allowed:
            raise ValueError(f"{path.name}:{number}: {name} is listed twice")
        allowed[name] = component.strip()
    return allowed


def used_selectors() -> Iterator[tuple[Rule, Selector]]:
    """Every (rule, selector) pair of every rule file."""
    for rule in load_rules():
        for selector in selectors(rule.expr):
            yield rule, selector


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def outputs(runbook_base_url: str | None = None) -> dict[Path, str]:
    """Every generated file and its content."""
    result = prometheusrule_outputs(runbook_base_url)
    result[ALERTS_DOC] = render_alerts_doc()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    parser.add_argument(
        "--runbook-base-url",
        help="render the PrometheusRule resources with runbook links under this URL"
        " (implies --output; the committed files keep repository paths)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="write the PrometheusRule resources into this folder instead",
    )
    args = parser.parse_args(argv)
    if args.runbook_base_url is not None and args.output is None:
        parser.error("--runbook-base-url needs --output (the committed files stay as they are)")
    if args.output is not None:
        for path, text in prometheusrule_outputs(args.runbook_base_url).items():
            args.output.mkdir(parents=True, exist_ok=True)
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
