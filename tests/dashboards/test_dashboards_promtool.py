"""Every dashboard query parses as PromQL, checked by real promtool.

Grafana sends a panel's query to Prometheus with the template variables replaced, so
the test does the same (``dashboards_support.substitute``: the "All" value of the
query variables, intervals for ``$__rate_interval`` and ``$__range``) and writes every
query into a rule file as a recording rule; ``promtool check rules`` parses each
expression with Prometheus' own parser. promtool is required: the test fails, it does
not skip, when it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dashboards_support import PanelQuery, queries, substitute

PROMTOOL = "promtool"


def _promtool() -> str:
    path = shutil.which(PROMTOOL)
    if path is None:
        pytest.fail("promtool is missing: install the prometheus package (`make test`)")
    return path


def _check(found: list[PanelQuery], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = [
        {"record": f"dashboard:query_{index}:check", "expr": substitute(query.expr)}
        for index, query in enumerate(found)
    ]
    rule_file = tmp_path / "dashboards.rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    return subprocess.run(
        [_promtool(), "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    found = queries()
    assert len(found) >= 100
    result = _check(found, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"SUCCESS: {len(found)} rules found", result.stdout), result.stdout


def test_promtool_refuses_a_broken_query(tmp_path: Path) -> None:
    broken = PanelQuery(
        "x", "broken", "A", 'sum by (zone (kubeballast_zone_nodes{cluster=~"$cluster"})'
    )
    result = _check([broken], tmp_path)
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr)


def test_unknown_template_variables_are_refused() -> None:
    with pytest.raises(AssertionError, match="unknown template variables"):
        substitute('rate(x{cluster=~"$cluster"}[$__rate_intervall])')
