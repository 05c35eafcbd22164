"""The configuration's documentation and its mirror of the simulator stay in sync.

docs/config-reference.md and docs/config.example.yaml are generated from the
dataclasses (``make docs``); these tests fail when someone edits one side only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeballast.cli import simulator_settings
from kubeballast.core import config as config_module
from kubeballast.core.config import (
    Config,
    SimulatorConfig,
    attribute_docs,
    config_from_mapping,
    example_config,
    key_paths,
    load_config,
    render_example,
    render_reference,
)
from kubeballast.simulator.settings import SimulatorSettings

REGENERATE = "regenerate it with `make docs`"


def config_classes() -> list[type]:
    return [
        cls
        for cls in vars(config_module).values()
        if isinstance(cls, type)
        and dataclasses.is_dataclass(cls)
        and cls.__module__ == config_module.__name__
        and cls.__name__.endswith("Config")
    ]


def test_every_setting_has_a_docstring() -> None:
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in config_classes()
        for f in dataclasses.fields(cls)
        if not attribute_docs(cls).get(f.name)
    ]
    assert missing == []


def test_every_group_has_a_docstring() -> None:
    assert [cls.__name__ for cls in config_classes() if not cls.__doc__] == []


def test_every_setting_has_a_default() -> None:
    Config()  # raises TypeError if a field were required
    for cls in config_classes():
        cls()


def test_the_reference_file_is_generated(repo_root: Path) -> None:
    text = (repo_root / "docs" / "config-reference.md").read_text()
    assert text == render_reference(), f"docs/config-reference.md is stale: {REGENERATE}"


def test_the_reference_documents_every_key() -> None:
    reference = render_reference()
    rows = [path for path in key_paths() if "." in path]
    sections = [path for path in key_paths() if "." not in path]
    assert [path for path in rows if f"| `{path}` |" not in reference] == []
    assert [path for path in sections if f"## `{path}`" not in reference] == []


def test_the_example_file_is_generated(repo_root: Path) -> None:
    text = (repo_root / "docs" / "config.example.yaml").read_text()
    assert text == render_example(), f"docs/config.example.yaml is stale: {REGENERATE}"


def test_the_example_loads_to_the_example_config(repo_root: Path) -> None:
    assert load_config(repo_root / "docs" / "config.example.yaml") == example_config()


def _document_paths(value: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            paths |= _document_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                paths |= _document_paths(item, f"{prefix}[]")
    return paths


def test_the_example_shows_every_key(repo_root: Path) -> None:
    document = yaml.safe_load((repo_root / "docs" / "config.example.yaml").read_text())
    assert set(key_paths()) - _document_paths(document) == set()


def test_the_example_differs_from_the_defaults_where_it_teaches_something() -> None:
    example = example_config()
    assert example.exporter.apiservers
    assert example.exporter.etcd.clusters
    assert example != Config()


@pytest.mark.parametrize("render", [render_reference, render_example])
def test_generated_documents_have_no_trailing_whitespace(render: Any) -> None:
    assert [line for line in render().splitlines() if line != line.rstrip()] == []


# --- the simulator section mirrors the simulator's own settings ----------------------


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_the_simulator_section_has_every_simulator_setting() -> None:
    from kubeballast.core.config import NodeLifecycleConfig, ScenarioConfig
    from kubeballast.simulator.settings import NodeLifecycleSettings, ScenarioSettings

    assert _fields(SimulatorConfig) == _fields(SimulatorSettings)
    assert _fields(NodeLifecycleConfig) == _fields(NodeLifecycleSettings)
    # Tokens are secrets: the config names a file, the settings hold what it contains.
    assert [
        "users_file" if name == "users" else name for name in _fields(ScenarioSettings)
    ] == _fields(ScenarioConfig)


def test_the_simulator_defaults_are_the_simulators_defaults() -> None:
    assert simulator_settings(SimulatorConfig()) == SimulatorSettings()


def test_every_simulator_value_is_carried_over(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text("token-1: alice\n")
    config = config_from_mapping(
        {
            "simulator": {
                "host": "::1",
                "port": 6443,
                "clock_factor": 10,
                "kubelets": False,
                "controllers": False,
                "kubeconfig_path": "kc",
                "history_seconds": 60,
                "scenario": {
                    "nodes": 5,
                    "zones": 2,
                    "pods_per_node": 4,
                    "containers_per_pod": 3,
                    "control_plane_nodes": 1,
                    "seed": 9,
                    "users_file": str(users),
                },
                "node_lifecycle": {
                    "node_monitor_period_seconds": 1,
                    "node_monitor_grace_period_seconds": 2,
                    "node_eviction_rate": 3,
                    "secondary_node_eviction_rate": 4,
                    "unhealthy_zone_threshold": 0.5,
                    "large_cluster_size_threshold": 6,
                    "default_toleration_seconds": 7,
                },
            }
        }
    )
    settings = simulator_settings(config.simulator)
    as_settings = dataclasses.asdict(settings)
    as_config = dataclasses.asdict(config.simulator)
    as_config["scenario"]["users"] = {"token-1": "alice"}
    del as_config["scenario"]["users_file"]
    assert as_settings == as_config
