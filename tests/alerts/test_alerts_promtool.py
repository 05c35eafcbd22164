"""The rule files pass promtool, their unit tests pass, and Alertmanager's example
configuration passes amtool and routes as documented.

promtool and amtool are required: the tests fail, they do not skip, when the binaries
are missing (``make test`` installs them). One promtool invocation per kind covers every
file, so the whole module takes a few seconds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS = REPO_ROOT / "alerts"
ALERTMANAGER_CONFIG = ALERTS / "alertmanager" / "alertmanager.yml"
PROMTOOL = Path("/usr/bin/promtool")
AMTOOL = Path("/usr/bin/amtool")


def _binary(path: Path) -> str:
    if not path.exists():
        pytest.fail(f"{path} is missing: install the Debian packages (`make test` does)")
    return str(path)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def _rule_files() -> list[Path]:
    return sorted(ALERTS.glob("*.yaml"))


def _test_files() -> list[Path]:
    return sorted((ALERTS / "tests").glob("*.yaml"))


def test_every_rule_file_has_one_test_file_that_loads_it() -> None:
    rules = {path.stem for path in _rule_files()}
    assert rules, "no rule files found"
    tests = {path.stem.removesuffix("_test"): path for path in _test_files()}
    assert set(tests) == rules
    for area, path in tests.items():
        assert yaml.safe_load(path.read_text())["rule_files"] == [f"../{area}.yaml"], path


def test_rule_files_pass_promtool_check() -> None:
    result = _run(_binary(PROMTOOL), "check", "rules", *map(str, _rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(_rule_files())


def test_rule_unit_tests_pass() -> None:
    result = _run(_binary(PROMTOOL), "test", "rules", *map(str, _test_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(_test_files())


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests are not vacuous: a rule whose threshold changes breaks them."""
    rules = (ALERTS / "network.yaml").read_text()
    changed = rules.replace(
        "kubeballast_network_nodes_network_unavailable > 0",
        "kubeballast_network_nodes_network_unavailable > 5",
    )
    assert changed != rules
    (tmp_path / "tests").mkdir()
    (tmp_path / "network.yaml").write_text(changed)
    test_file = tmp_path / "tests" / "network_test.yaml"
    test_file.write_text((ALERTS / "tests" / "network_test.yaml").read_text())
    result = _run(_binary(PROMTOOL), "test", "rules", str(test_file))
    assert result.returncode != 0
    assert "KubeNetworkNodesNetworkUnavailable" in result.stdout + result.stderr


def test_alertmanager_example_passes_amtool() -> None:
    result = _run(_binary(AMTOOL), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        # An alert with an automation reaches the receiver and people.
        (
            ["alertname=KubeApiserverCongested", "severity=critical", "automation=eviction-pause"],
            "kube-ballast,oncall",
        ),
        (["alertname=KubeApiserverDown", "severity=critical", "automation=none"], "oncall"),
        (["alertname=KubeBallastSourceDown", "severity=warning", "automation=none"], "oncall"),
        # An alert from elsewhere, without the label, never reaches the receiver.
        (["alertname=TargetDown", "severity=warning"], "oncall"),
    ],
)
def test_alertmanager_example_routes_automation_to_the_receiver(
    labels: list[str], receivers: str
) -> None:
    result = _run(
        _binary(AMTOOL), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers
