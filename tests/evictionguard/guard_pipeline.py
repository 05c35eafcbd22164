"""The alert path in front of the eviction guard: real Prometheus with the shipped rules,
real Alertmanager with the shipped routing, and the real receiver application (webhook,
bearer authentication) in front of the engine of guard_support's stack.

Used by test_guard_e2e.py with short intervals, and by bench/eviction_guard_latency.py
with production-like ones (15 s scrape and evaluation, ``for: 1m``, the shipped
``group_wait``). Only what a test must change is changed: the receiver's URL and token
file, the scrape and evaluation intervals, KubeNodeHeartbeatStorm's ``for:`` (when
asked), and Alertmanager's ``group_wait`` (when asked).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from loopback import ALERTMANAGER, PROMETHEUS, require, serve, start_alertmanager, start_prometheus

from kubeballast.core.config import ReceiverAuthConfig, ReceiverConfig
from kubeballast.remediations.engine import Engine
from kubeballast.remediations.webhook import create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((REPO_ROOT / "alerts").glob("*.yaml"))
ALERTMANAGER_EXAMPLE = REPO_ROOT / "alerts" / "alertmanager" / "alertmanager.yml"
CLUSTER = "guard-e2e"


def storm_for(text: str, duration: str) -> str:
    """KubeNodeHeartbeatStorm's ``for:`` set to ``duration``; nothing else changes."""
    pattern = re.compile(r"(- alert: KubeNodeHeartbeatStorm\n(?:(?!\s*- alert:).*\n)*?\s+for: )\S+")
    shortened, count = pattern.subn(rf"\g<1>{duration}", text)
    assert count <= 1
    return shortened


@dataclass(frozen=True)
class Intervals:
    scrape: str = "1s"
    evaluation: str = "1s"
    storm_for: str | None = "5s"
    """None keeps the shipped ``for: 1m``."""
    group_wait: str | None = "1s"
    """None keeps the shipped group_wait."""


@dataclass
class Pipeline:
    prometheus: str
    alertmanager: str
    receiver: str


@contextlib.asynccontextmanager
async def pipeline(
    engine: Engine, config: ReceiverConfig, exporter_url: str, tmp: Path, intervals: Intervals
) -> AsyncIterator[Pipeline]:
    require(PROMETHEUS, "prometheus")
    require(ALERTMANAGER, "prometheus-alertmanager")
    token_file = tmp / "receiver-token"
    token_file.write_text("guard-e2e-token\n")
    receiver_config = ReceiverConfig(
        dry_run=config.dry_run,
        remediations=config.remediations,
        auth=ReceiverAuthConfig(bearer_token_file=str(token_file)),
    )
    app = create_app(receiver_config, engine)
    async with serve(app) as receiver:
        am_config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
        if intervals.group_wait is not None:
            am_config["route"]["group_wait"] = intervals.group_wait
            for route in am_config["route"]["routes"]:
                route.pop("group_wait", None)
        for entry in am_config["receivers"]:
            if entry["name"] == "kube-ballast":
                (hook,) = entry["webhook_configs"]
                hook["url"] = f"{receiver}{receiver_config.path}"
                hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
            else:
                for key in [key for key in entry if key.endswith("_configs")]:
                    del entry[key]
        rules = tmp / "rules"
        rules.mkdir()
        rule_files = []
        for rule_file in RULES:
            text = rule_file.read_text()
            if intervals.storm_for is not None:
                text = storm_for(text, intervals.storm_for)
            (rules / rule_file.name).write_text(text)
            rule_files.append(str(rules / rule_file.name))
        async with start_alertmanager(tmp, am_config) as am_url:
            prom_config = {
                "global": {
                    "scrape_interval": intervals.scrape,
                    "scrape_timeout": intervals.scrape,
                    "evaluation_interval": intervals.evaluation,
                    "external_labels": {"cluster": CLUSTER},
                },
                "rule_files": rule_files,
                "alerting": {
                    "alertmanagers": [
                        {"static_configs": [{"targets": [am_url.removeprefix("http://")]}]}
                    ]
                },
                "scrape_configs": [
                    {
                        "job_name": "kube-ballast-exporter",
                        "static_configs": [{"targets": [exporter_url.removeprefix("http://")]}],
                    }
                ],
            }
            async with start_prometheus(
                tmp, prom_config, "--rules.alert.resend-delay=1s"
            ) as prom_url:
                yield Pipeline(prom_url, am_url, receiver)
