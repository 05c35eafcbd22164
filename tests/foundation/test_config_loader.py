"""The configuration loader: good documents load, bad ones fail with one line naming the
key path. The expected messages are spelled out in full: they are the user interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kubeballast.core.config import (
    Config,
    EtcdClusterConfig,
    config_from_mapping,
    load_config,
    load_users_file,
)
from kubeballast.core.errors import ConfigError, KubeBallastError

ETCD_OK = {"name": "main", "endpoints": ["https://10.0.0.11:2379"]}
TARGET_OK = {"name": "a", "url": "https://10.0.0.11:6443"}


def etcd(*clusters: dict[str, Any]) -> dict[str, Any]:
    return {"exporter": {"etcd": {"clusters": list(clusters)}}}


def config_error(document: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(document)
    return caught.value


# --- documents that load -------------------------------------------------------------


def test_no_document_gives_the_defaults() -> None:
    assert config_from_mapping(None) == Config()
    assert config_from_mapping({}) == Config()


def test_an_integer_is_accepted_where_a_number_is_expected() -> None:
    config = config_from_mapping({"simulator": {"clock_factor": 10}})
    assert config.simulator.clock_factor == 10.0
    assert isinstance(config.simulator.clock_factor, float)


def test_lists_become_tuples_of_typed_groups() -> None:
    config = config_from_mapping(etcd(ETCD_OK, {**ETCD_OK, "name": "events"}))
    assert config.exporter.etcd.clusters == (
        EtcdClusterConfig(name="main", endpoints=("https://10.0.0.11:2379",)),
        EtcdClusterConfig(name="events", endpoints=("https://10.0.0.11:2379",)),
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_the_simulator_listens_on_any_loopback_address(host: str) -> None:
    assert config_from_mapping({"simulator": {"host": host}}).simulator.host == host


def test_a_full_document_keeps_every_value() -> None:
    config = config_from_mapping(
        {
            "logging": {"level": "DEBUG", "format": "json"},
            "simulator": {"scenario": {"nodes": 5000, "pods_per_node": 110, "seed": 7}},
            "exporter": {
                "listen": {"host": "0.0.0.0", "port": 9808},
                "kubernetes": {"in_cluster": True},
                "apiservers": [{**TARGET_OK, "client_cert_file": "c", "client_key_file": "k"}],
            },
            "receiver": {"auth": {"basic_auth_username": "am", "basic_auth_password_file": "p"}},
        }
    )
    assert config.logging.format == "json"
    assert config.simulator.scenario.nodes == 5000
    assert config.exporter.listen.host == "0.0.0.0"
    assert config.exporter.apiservers[0].client_key_file == "k"
    assert config.receiver.dry_run is True


# --- documents that fail: exact one-line messages -------------------------------------

BAD_DOCUMENTS: list[tuple[str, Any, str]] = [
    # structure
    ("not a mapping", ["a"], "the configuration must be a mapping, got a list"),
    ("section not a mapping", {"exporter": 5}, "exporter: expected a mapping, got 5"),
    ("key not a string", {"exporter": {1: 2}}, "exporter: keys must be strings, got 1"),
    (
        "unknown top-level key",
        {"metrics": {}},
        "metrics: unknown key (known: logging, simulator, exporter, receiver)",
    ),
    (
        "unknown nested key",
        {"exporter": {"listen": {"prot": 1}}},
        "exporter.listen.prot: unknown key (known: host, port)",
    ),
    (
        "unknown key in a list item",
        {"exporter": {"apiservers": [TARGET_OK, {**TARGET_OK, "token": "x"}]}},
        "exporter.apiservers[1].token: unknown key (known: name, url, bearer_token_file,"
        " client_cert_file, client_key_file, ca_file, insecure_skip_verify, timeout_seconds,"
        " interval_seconds)",
    ),
    # types: no silent coercion
    (
        "string for an integer",
        {"simulator": {"scenario": {"nodes": "abc"}}},
        "simulator.scenario.nodes: expected an integer, got 'abc'",
    ),
    (
        "boolean for an integer",
        {"simulator": {"scenario": {"nodes": True}}},
        "simulator.scenario.nodes: expected an integer, got true",
    ),
    (
        "float for an integer",
        {"simulator": {"scenario": {"nodes": 1.5}}},
        "simulator.scenario.nodes: expected an integer, got 1.5",
    ),
    (
        "quoted port",
        {"exporter": {"listen": {"port": "9808"}}},
        "exporter.listen.port: expected an integer, got '9808'",
    ),
    (
        "string for a number",
        {"simulator": {"clock_factor": "fast"}},
        "simulator.clock_factor: expected a number, got 'fast'",
    ),
    (
        "string for a boolean",
        {"receiver": {"dry_run": "no"}},
        "receiver.dry_run: expected true or false, got 'no'",
    ),
    (
        "integer for an optional string",
        {"simulator": {"scenario": {"users_file": 5}}},
        "simulator.scenario.users_file: expected a string or null, got 5",
    ),
    (
        "not one of the literals",
        {"logging": {"format": "xml"}},
        "logging.format: expected one of 'text', 'json', got 'xml'",
    ),
    (
        "literals are case-sensitive",
        {"logging": {"level": "info"}},
        "logging.level: expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL',"
        " got 'info'",
    ),
    (
        "mapping for a list",
        {"exporter": {"apiservers": TARGET_OK}},
        "exporter.apiservers: expected a list, got a mapping",
    ),
    (
        "string for a list",
        etcd({"name": "main", "endpoints": "https://10.0.0.11:2379"}),
        "exporter.etcd.clusters[0].endpoints: expected a list, got 'https://10.0.0.11:2379'",
    ),
    (
        "wrong type deep in a list",
        {"exporter": {"schedulers": [TARGET_OK, {**TARGET_OK, "timeout_seconds": [1]}]}},
        "exporter.schedulers[1].timeout_seconds: expected a number, got a list",
    ),
    # ranges
    (
        "too few nodes",
        {"simulator": {"scenario": {"nodes": 0}}},
        "simulator.scenario.nodes: must be between 1 and 5000, got 0",
    ),
    (
        "too many nodes",
        {"simulator": {"scenario": {"nodes": 5001}}},
        "simulator.scenario.nodes: must be between 1 and 5000, got 5001",
    ),
    (
        "too many pods per node",
        {"simulator": {"scenario": {"pods_per_node": 111}}},
        "simulator.scenario.pods_per_node: must be between 0 and 110"
        " (the seed's limit is 100), got 111",
    ),
    (
        "clock stopped",
        {"simulator": {"clock_factor": 0}},
        "simulator.clock_factor: must be greater than 0 and at most 1000, got 0.0",
    ),
    (
        "clock too fast",
        {"simulator": {"clock_factor": 1000.5}},
        "simulator.clock_factor: must be greater than 0 and at most 1000, got 1000.5",
    ),
    (
        "port out of range",
        {"receiver": {"listen": {"port": 65536}}},
        "receiver.listen.port: must be between 0 and 65535, got 65536",
    ),
    (
        "negative port",
        {"simulator": {"port": -1}},
        "simulator.port: must be between 0 and 65535, got -1",
    ),
    (
        "threshold above 1",
        {"simulator": {"node_lifecycle": {"unhealthy_zone_threshold": 1.5}}},
        "simulator.node_lifecycle.unhealthy_zone_threshold: must be between 0 and 1, got 1.5",
    ),
    (
        "negative rate",
        {"simulator": {"node_lifecycle": {"node_eviction_rate": -0.1}}},
        "simulator.node_lifecycle.node_eviction_rate: must be at least 0, got -0.1",
    ),
    # addresses and URLs
    (
        "simulator beyond loopback",
        {"simulator": {"host": "0.0.0.0"}},
        "simulator.host: must be a loopback address such as 127.0.0.1 or ::1, got '0.0.0.0'",
    ),
    (
        "empty listen host",
        {"exporter": {"listen": {"host": ""}}},
        "exporter.listen.host: must be set",
    ),
    (
        "URL without a scheme",
        {"exporter": {"apiservers": [{**TARGET_OK, "url": "10.0.0.11:6443"}]}},
        "exporter.apiservers[0].url: must be an http or https URL, got '10.0.0.11:6443'",
    ),
    (
        "URL with another scheme",
        {"exporter": {"apiservers": [{**TARGET_OK, "url": "ftp://10.0.0.11"}]}},
        "exporter.apiservers[0].url: must be an http or https URL, got 'ftp://10.0.0.11'",
    ),
    (
        "URL with a bad port",
        {"exporter": {"apiservers": [{**TARGET_OK, "url": "https://10.0.0.11:99999"}]}},
        "exporter.apiservers[0].url: must be an http or https URL, got 'https://10.0.0.11:99999'",
    ),
    (
        "missing URL",
        {"exporter": {"controller_managers": [{"name": "kcm"}]}},
        "exporter.controller_managers[0].url: must be set",
    ),
    (
        "missing name",
        {"exporter": {"apiservers": [{"url": "https://10.0.0.11:6443"}]}},
        "exporter.apiservers[0].name: must be set",
    ),
    (
        "bad endpoint in a list",
        etcd({"name": "main", "endpoints": ["https://10.0.0.11:2379", "10.0.0.12:2379"]}),
        "exporter.etcd.clusters[0].endpoints[1]: must be an http or https URL,"
        " got '10.0.0.12:2379'",
    ),
    (
        "empty endpoints",
        etcd(ETCD_OK, {"name": "events", "endpoints": []}),
        "exporter.etcd.clusters[1].endpoints: must not be empty",
    ),
    (
        "missing endpoints",
        etcd(ETCD_OK, {"name": "events"}),
        "exporter.etcd.clusters[1].endpoints: must not be empty",
    ),
    # rules across fields
    (
        "duplicate cluster names",
        etcd(ETCD_OK, ETCD_OK),
        "exporter.etcd.clusters[1].name: duplicate name 'main' (first used by item 0)",
    ),
    (
        "duplicate target names",
        {"exporter": {"apiservers": [TARGET_OK, {**TARGET_OK, "url": "https://b:6443"}]}},
        "exporter.apiservers[1].name: duplicate name 'a' (first used by item 0)",
    ),
    (
        "certificate without key",
        etcd({**ETCD_OK, "cert_file": "client.crt"}),
        "exporter.etcd.clusters[0].key_file: must be set together with cert_file",
    ),
    (
        "client key without certificate",
        {"exporter": {"apiservers": [{**TARGET_OK, "client_key_file": "k"}]}},
        "exporter.apiservers[0].client_cert_file: must be set together with client_key_file",
    ),
    (
        "timeout longer than the interval",
        {
            "exporter": {
                "schedulers": [{**TARGET_OK, "timeout_seconds": 20, "interval_seconds": 10}]
            }
        },
        "exporter.schedulers[0].timeout_seconds: must not exceed interval_seconds (10), got 20",
    ),
    (
        "two ways to reach Kubernetes",
        {"exporter": {"kubernetes": {"in_cluster": True, "kubeconfig_path": "kc"}}},
        "exporter.kubernetes.in_cluster: cannot be true together with kubeconfig_path",
    ),
    (
        "basic auth without password",
        {"receiver": {"auth": {"basic_auth_username": "alertmanager"}}},
        "receiver.auth.basic_auth_password_file: must be set together with basic_auth_username",
    ),
]


@pytest.mark.parametrize(
    ("document", "message"),
    [pytest.param(document, message, id=name) for name, document, message in BAD_DOCUMENTS],
)
def test_a_bad_document_fails_with_one_line_naming_the_key_path(
    document: Any, message: str
) -> None:
    error = config_error(document)
    assert str(error) == message
    assert "\n" not in str(error)
    assert isinstance(error, KubeBallastError)


def test_the_error_carries_the_key_path_separately() -> None:
    error = config_error(etcd(ETCD_OK, {"name": "events", "endpoints": []}))
    assert error.key_path == "exporter.etcd.clusters[1].endpoints"
    assert error.reason == "must not be empty"


@given(st.integers(min_value=-10_000, max_value=10_000))
def test_nodes_are_accepted_exactly_in_their_range(nodes: int) -> None:
    document = {"simulator": {"scenario": {"nodes": nodes}}}
    if 1 <= nodes <= 5000:
        assert config_from_mapping(document).simulator.scenario.nodes == nodes
    else:
        with pytest.raises(ConfigError, match=r"^simulator\.scenario\.nodes: must be between"):
            config_from_mapping(document)


# --- files ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "exporter:\n  listen:\n    port: 9100\n")
    assert load_config(path).exporter.listen.port == 9100


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()
    assert load_config(write(tmp_path, "# only a comment\n")) == Config()


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert load_error(path) == f"cannot read {path}: no such file"


def test_a_directory(tmp_path: Path) -> None:
    assert load_error(tmp_path) == f"cannot read {tmp_path}: is a directory"


def test_a_file_that_is_not_text(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xff\xfe\x00")
    assert load_error(path) == f"cannot read {path}: not UTF-8 text"


def test_a_yaml_syntax_error_names_the_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "exporter:\n  listen: [1, 2\n")
    message = load_error(path)
    assert message.startswith(f"{path}:3:1: invalid YAML: ")


def test_a_repeated_key_is_an_error_not_last_one_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "exporter:\n  listen:\n    port: 1\n    port: 2\n")
    assert load_error(path) == f"{path}:4:5: invalid YAML: duplicate key 'port'"


def test_yaml_merge_keys_are_not_repeated_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "exporter:\n"
        "  listen: &listen {host: 127.0.0.1, port: 1}\n"
        "receiver:\n"
        "  listen:\n"
        "    <<: *listen\n"
        "    port: 2\n",
    )
    assert load_config(path).receiver.listen.port == 2


def test_a_validation_error_in_a_file_names_the_key_path(tmp_path: Path) -> None:
    document = etcd(ETCD_OK, {"name": "events", "endpoints": []})
    path = write(tmp_path, yaml.safe_dump(document))
    assert load_error(path) == "exporter.etcd.clusters[1].endpoints: must not be empty"


# --- the simulator's users file ------------------------------------------------------

KEY = "simulator.scenario.users_file"


def test_a_users_file_maps_tokens_to_users(tmp_path: Path) -> None:
    path = write(tmp_path, "token-a: alice\ntoken-b: bob\n", "users.yaml")
    assert load_users_file(str(path), key_path=KEY) == {"token-a": "alice", "token-b": "bob"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("- alice\n", "expected a mapping of token to username, got a list"),
        ("s3cret-token: 5\n", "entry 1: username must be a non-empty string"),
        ("ok: alice\n7: bob\n", "entry 2: token must be a string"),
    ],
)
def test_a_bad_users_file_never_shows_the_tokens(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, text, "users.yaml")
    with pytest.raises(ConfigError) as caught:
        load_users_file(str(path), key_path=KEY)
    assert str(caught.value) == f"{KEY}: {path}: {reason}"
    assert "s3cret" not in str(caught.value)


def test_a_missing_users_file_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    with pytest.raises(ConfigError) as caught:
        load_users_file(str(path), key_path=KEY)
    assert str(caught.value) == f"{KEY}: cannot read {path}: no such file"
