"""The demo's pieces that need no running demo: the `for:` cap on the shipped rules,
the flags' bounds, and a scenario against no demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from kubeballast.demo.processes import Processes
from kubeballast.demo.stack import RULES_DIR, Demo, DemoOptions, cap_for

RULE = """groups:
  - name: g
    rules:
      - alert: Slow
        expr: up == 0
        for: 10m
      - alert: Quick
        expr: up == 0
        for: 2s
      - alert: Never
        expr: up == 0
"""


def test_demo_cap_for_shortens_only_longer_durations() -> None:
    capped = yaml.safe_load(cap_for(RULE, 30))
    rules = {r["alert"]: r.get("for") for r in capped["groups"][0]["rules"]}
    assert rules == {"Slow": "30s", "Quick": "2s", "Never": None}
    assert cap_for(RULE, None) == RULE


def test_demo_cap_for_keeps_every_shipped_rule_file_valid() -> None:
    for path in sorted(RULES_DIR.glob("*.yaml")):
        original = yaml.safe_load(path.read_text())
        capped = yaml.safe_load(cap_for(path.read_text(), 3))
        for group, capped_group in zip(original["groups"], capped["groups"], strict=True):
            for rule, capped_rule in zip(group["rules"], capped_group["rules"], strict=True):
                assert {k: v for k, v in rule.items() if k != "for"} == {
                    k: v for k, v in capped_rule.items() if k != "for"
                }
                assert ("for" in rule) == ("for" in capped_rule)
                if "for" in rule:
                    assert capped_rule["for"] in (rule["for"], "3s"), (path, rule["alert"])


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubeballast", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_refuses_a_cluster_beyond_the_limits() -> None:
    result = _demo("--nodes", "6000")
    assert result.returncode == 2
    assert "--nodes" in result.stderr
    assert "5000" in result.stderr


def test_demo_scenario_without_a_running_demo_says_so(tmp_path: Path) -> None:
    result = _demo("scenario", "congestion", "--state-file", str(tmp_path / "none.json"))
    assert result.returncode == 1
    assert "no running demo" in result.stderr


def _alertmanager_routes(tmp_path: Path, **options: Any) -> list[dict[str, str]]:
    """Each route's waits: the root, then its child routes in order."""
    demo = Demo(DemoOptions(**options), tmp_path, Processes(tmp_path), tmp_path / "state.json")
    config = demo._alertmanager_config("http://127.0.0.1:1", tmp_path / "token")
    routes = [config["route"], *config["route"]["routes"]]
    return [{k: r[k] for k in ("group_wait", "group_interval") if k in r} for r in routes]


def test_demo_alertmanager_waits_follow_the_cluster_clock(tmp_path: Path) -> None:
    # Shipped: the root 30s / 5m, the kube-ballast route 10s / 1m, the critical
    # oncall route inherits the root's.
    assert _alertmanager_routes(tmp_path, clock_factor=2.0) == [
        {"group_wait": "15s", "group_interval": "150s"},
        {"group_wait": "5s", "group_interval": "30s"},
        {},
    ]
    assert _alertmanager_routes(tmp_path, clock_factor=1.0)[1] == {
        "group_wait": "10s",
        "group_interval": "60s",
    }
    assert _alertmanager_routes(tmp_path, clock_factor=100.0)[1] == {
        "group_wait": "1s",
        "group_interval": "1s",
    }
    assert _alertmanager_routes(tmp_path, fast_notifications=True)[1] == {
        "group_wait": "1s",
        "group_interval": "5s",
    }
