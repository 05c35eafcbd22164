"""The command line as a user meets it: help, usage errors, config errors, servers.

Most tests run ``python -m kubeballast`` in a subprocess, exactly as installed; the
simulate wiring runs in-process against a fake ``run_simulator`` so it does not depend
on the simulator's server.
"""

from __future__ import annotations

import json
import logging
import platform
import signal
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kubeballast import __version__, cli
from kubeballast.core.config import render_example, render_reference
from kubeballast.simulator.settings import SimulatorSettings

DEADLINE_SECONDS = 30.0


def kube_ballast(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubeballast", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


# --- help, version, usage errors -----------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["simulate"],
        ["exporter"],
        ["receiver"],
        ["config"],
        ["config", "check"],
        ["config", "reference"],
        ["config", "example"],
    ],
    ids=lambda command: " ".join(command) or "main",
)
def test_help(command: list[str]) -> None:
    result = kube_ballast(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {' '.join(['kube-ballast', *command])}")
    assert result.stderr == ""


def test_simulate_help_lists_the_overrides() -> None:
    result = kube_ballast("simulate", "--help")
    for flag in (
        "--nodes",
        "--zones",
        "--pods-per-node",
        "--clock-factor",
        "--port",
        "--host",
        "--kubeconfig",
        "--no-kubelets",
        "--no-controllers",
    ):
        assert flag in result.stdout


def test_version() -> None:
    result = kube_ballast("--version")
    assert (result.returncode, result.stdout) == (0, f"kube-ballast {__version__}\n")


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "kube-ballast"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (0, f"kube-ballast {__version__}\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["simulate", "--nodes", "many"],
            "kube-ballast: usage: argument --nodes: invalid int value: 'many'"
            " (see 'kube-ballast simulate --help')",
        ),
        (
            ["--frobnicate"],
            "kube-ballast: usage: the following arguments are required: COMMAND"
            " (see 'kube-ballast --help')",
        ),
        (
            ["exporter", "--frobnicate"],
            "kube-ballast: usage: unrecognized arguments: --frobnicate (see 'kube-ballast --help')",
        ),
        (
            ["deploy"],
            "kube-ballast: usage: argument COMMAND: invalid choice: 'deploy'"
            " (choose from simulate, simctl, etcd, selfcheck, exporter, receiver, remediations,"
            " eviction-guard, demo, config)"
            " (see 'kube-ballast --help')",
        ),
        (
            ["config"],
            "kube-ballast: usage: the following arguments are required: ACTION"
            " (see 'kube-ballast config --help')",
        ),
        (
            ["--log-format", "xml", "config", "check"],
            "kube-ballast: usage: argument --log-format: invalid choice: 'xml'"
            " (choose from text, json) (see 'kube-ballast --help')",
        ),
        (
            ["simulate", "--nodes", "6000"],
            "kube-ballast: usage: argument --nodes: must be between 1 and 5000, got 6000",
        ),
        (
            ["simulate", "--host", "0.0.0.0"],
            "kube-ballast: usage: argument --host: must be a loopback address such as"
            " 127.0.0.1 or ::1, got '0.0.0.0'",
        ),
        (
            ["simulate", "--clock-factor", "0"],
            "kube-ballast: usage: argument --clock-factor: must be greater than 0 and at"
            " most 1000, got 0.0",
        ),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = kube_ballast(*args)
    assert (result.returncode, result.stdout) == (2, "")
    # argparse quotes the choices differently across Python versions: compare unquoted.
    assert result.stderr.replace("'", "") == message.replace("'", "") + "\n"


# --- configuration -------------------------------------------------------------------


def test_config_check_ok(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"exporter": {"listen": {"port": 9100}}})
    result = kube_ballast("--config", str(path), "config", "check")
    assert (result.returncode, result.stdout, result.stderr) == (0, "config: ok\n", "")


def test_config_check_accepts_the_example(repo_root: Path) -> None:
    example = repo_root / "docs" / "config.example.yaml"
    result = kube_ballast("config", "check", "--config", str(example))
    assert (result.returncode, result.stdout) == (0, "config: ok\n")


@pytest.mark.parametrize("command", [["config", "check"], ["exporter"], ["receiver"]])
def test_a_bad_config_is_one_line_naming_the_key_path_and_exit_2(
    tmp_path: Path, command: list[str]
) -> None:
    path = write_config(
        tmp_path,
        {
            "exporter": {
                "etcd": {
                    "clusters": [
                        {"name": "main", "endpoints": ["https://10.0.0.11:2379"]},
                        {"name": "events", "endpoints": []},
                    ]
                }
            }
        },
    )
    result = kube_ballast("--config", str(path), *command)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "kube-ballast: config: exporter.etcd.clusters[1].endpoints: must not be empty\n"
    )


def test_a_missing_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = kube_ballast("--config", str(path), "exporter")
    assert (result.returncode, result.stderr) == (
        2,
        f"kube-ballast: config: cannot read {path}: no such file\n",
    )


def test_config_reference_and_example_print_the_generated_documents() -> None:
    assert kube_ballast("config", "reference").stdout == render_reference()
    assert kube_ballast("config", "example").stdout == render_example()


# --- simulate: the wiring to the simulator, in-process ------------------------------


@pytest.fixture
def fake_simulator(monkeypatch: pytest.MonkeyPatch) -> list[SimulatorSettings]:
    """Replaces kubeballast.simulator.server with a run_simulator that records its call."""
    calls: list[SimulatorSettings] = []

    async def run_simulator(settings: SimulatorSettings) -> None:
        calls.append(settings)

    module = types.ModuleType("kubeballast.simulator.server")
    module.run_simulator = run_simulator  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kubeballast.simulator.server", module)
    return calls


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_simulate_builds_settings_from_config_and_flags(
    tmp_path: Path, fake_simulator: list[SimulatorSettings]
) -> None:
    users = tmp_path / "users.yaml"
    users.write_text("token-1: alice\n")
    path = write_config(
        tmp_path,
        {
            "simulator": {
                "port": 7000,
                "scenario": {"nodes": 10, "zones": 5, "users_file": str(users)},
                "node_lifecycle": {"default_toleration_seconds": 30},
            }
        },
    )
    status = cli.main(
        [
            "--config",
            str(path),
            "simulate",
            "--nodes",
            "7",
            "--pods-per-node",
            "3",
            "--clock-factor",
            "10",
            "--host",
            "::1",
            "--kubeconfig",
            str(tmp_path / "kc"),
            "--no-kubelets",
        ]
    )
    assert status == 0
    [settings] = fake_simulator
    assert settings.scenario.nodes == 7  # flag over file
    assert settings.scenario.zones == 5  # file over default
    assert settings.scenario.pods_per_node == 3
    assert settings.scenario.users == {"token-1": "alice"}
    assert settings.port == 7000
    assert settings.host == "::1"
    assert settings.clock_factor == 10.0
    assert settings.kubeconfig_path == str(tmp_path / "kc")
    assert settings.kubelets is False
    assert settings.controllers is True
    assert settings.node_lifecycle.default_toleration_seconds == 30


@pytest.mark.usefixtures("restore_root_logger")
def test_simulate_without_config_runs_the_default_scenario(
    fake_simulator: list[SimulatorSettings],
) -> None:
    assert cli.main(["simulate"]) == 0
    assert fake_simulator == [SimulatorSettings()]


# --- exporter and receiver: real servers in a subprocess -----------------------------


def wait_for_http(url: str, process: subprocess.Popen[str]) -> str:
    """GET ``url`` until it answers 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"server exited with {process.returncode}: {stderr}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: str = response.read().decode()
                return body
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer within {DEADLINE_SECONDS} s")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def simulator_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small simulator in its own process, with the namespace the receiver keeps its
    state in: the receiver's engine needs a Kubernetes API to start."""
    directory = tmp_path_factory.mktemp("simulator")
    kubeconfig = directory / "kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeballast",
            "simulate",
            "--nodes",
            "3",
            "--pods-per-node",
            "1",
            "--no-kubelets",
            "--no-controllers",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not kubeconfig.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the simulator did not start: {process.stderr}")
            time.sleep(0.05)
        doc = yaml.safe_load(kubeconfig.read_text())
        server = doc["clusters"][0]["cluster"]["server"]
        token = doc["users"][0]["user"]["token"]
        request = urllib.request.Request(
            f"{server}/api/v1/namespaces",
            data=json.dumps({"metadata": {"name": "kube-ballast"}}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
        yield kubeconfig
    finally:
        process.terminate()
        try:
            process.communicate(timeout=DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@pytest.mark.parametrize(
    ("command", "stop_signal"),
    [("exporter", signal.SIGTERM), ("receiver", signal.SIGTERM), ("exporter", signal.SIGINT)],
    ids=["exporter-SIGTERM", "receiver-SIGTERM", "exporter-SIGINT"],
)
def test_a_server_serves_health_and_metrics_and_stops_cleanly(
    tmp_path: Path,
    free_port: int,
    command: str,
    stop_signal: signal.Signals,
    request: pytest.FixtureRequest,
) -> None:
    section: dict[str, Any] = {"listen": {"host": "127.0.0.1", "port": free_port}}
    if command == "receiver":
        # Authentication is on by default and the engine keeps its state in Kubernetes.
        token = tmp_path / "token"
        token.write_text("a-test-token\n")
        kubeconfig = request.getfixturevalue("simulator_kubeconfig")
        section["auth"] = {"bearer_token_file": str(token)}
        section["remediations"] = {"kubernetes": {"kubeconfig_path": str(kubeconfig)}}
    path = write_config(tmp_path, {"logging": {"format": "json"}, command: section})
    process = subprocess.Popen(
        [sys.executable, "-m", "kubeballast", "--config", str(path), command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{free_port}"
        assert wait_for_http(f"{base}/healthz", process) == "ok"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            exposition = response.read().decode()
        [sample] = [
            sample
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples
            if sample.name == "kubeballast_build_info"
        ]
        assert sample.labels == {"version": __version__, "python": platform.python_version()}
        assert sample.value == 1.0

        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=DEADLINE_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    messages = [json.loads(line)["message"] for line in stderr.splitlines()]
    assert f"{command} listening on http://127.0.0.1:{free_port}" in messages
    assert f"received {stop_signal.name}, shutting down" in messages


def test_simulate_serves_a_cluster_and_stops_cleanly(tmp_path: Path, free_port: int) -> None:
    kubeconfig = tmp_path / "simulator.kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeballast",
            "simulate",
            "--nodes",
            "3",
            "--pods-per-node",
            "2",
            "--port",
            str(free_port),
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{free_port}/readyz", process)
        # The kubeconfig is written once the server listens: poll for it too.
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not (kubeconfig.exists() and "current-context" in kubeconfig.read_text()):
            assert time.monotonic() < deadline, "no kubeconfig written"
            time.sleep(0.05)
        [cluster] = yaml.safe_load(kubeconfig.read_text())["clusters"]
        assert cluster["cluster"]["server"] == f"http://127.0.0.1:{free_port}"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=DEADLINE_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "received SIGTERM, shutting down" in stderr
