"""A real Alertmanager for tests: the installed binary, on loopback, in a temporary folder.

The webhook's contract is with Alertmanager, so the end-to-end tests (and the capture
of the payload fixtures) use the real thing rather than our idea of what it sends:
field names, time formats, how it authenticates (``http_config.authorization`` with a
``credentials_file``), what it does with a 401.

The binary is required: the tests fail, they do not skip, when it is missing
(``make test`` installs the Debian package). ``--cluster.listen-address=`` is empty,
which turns gossip off; otherwise Alertmanager listens on every interface. The web
port is chosen at run time by binding port 0 and releasing it just before
Alertmanager binds it; if another process takes it in between, Alertmanager exits
and is started again on a new port (up to three times). The process runs in its own
session and is stopped by its PID (SIGTERM, then SIGKILL), at teardown and at exit.

Readiness (``/-/ready``) and alert posting use the standard library's HTTP client:
nothing in the harness depends on the code under test.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
START_TIMEOUT = 60.0
"""Alertmanager is ready in well under a second on an idle machine; a loaded two-core
runner gets much longer."""

_RUNNING: set[subprocess.Popen[bytes]] = set()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
    _RUNNING.discard(process)


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_RUNNING):
        _stop(process)


def require_binary() -> str:
    if not os.access(ALERTMANAGER, os.X_OK):
        pytest.fail(
            f"{ALERTMANAGER} is required (Debian package prometheus-alertmanager;"
            " `make test` installs it)"
        )
    return ALERTMANAGER


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Alertmanager:
    """One Alertmanager routing every alert to one webhook, grouped by ``alertname``."""

    def __init__(
        self,
        directory: Path,
        webhook_url: str,
        *,
        credentials_file: Path | None = None,
        basic_auth: tuple[str, Path] | None = None,
        group_wait: str = "0s",
        group_interval: str = "1s",
    ) -> None:
        self.directory = directory
        self.webhook_url = webhook_url
        self.credentials_file = credentials_file
        self.basic_auth = basic_auth
        self.group_wait = group_wait
        self.group_interval = group_interval
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "alertmanager.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        http_config: dict[str, Any] = {}
        if self.credentials_file is not None:
            http_config["authorization"] = {
                "type": "Bearer",
                "credentials_file": str(self.credentials_file),
            }
        if self.basic_auth is not None:
            http_config["basic_auth"] = {
                "username": self.basic_auth[0],
                "password_file": str(self.basic_auth[1]),
            }
        webhook: dict[str, Any] = {"url": self.webhook_url, "send_resolved": True}
        if http_config:
            webhook["http_config"] = http_config
        config = {
            "route": {
                "receiver": "kube-ballast",
                "group_by": ["alertname"],
                "group_wait": self.group_wait,
                "group_interval": self.group_interval,
                "repeat_interval": "4h",
            },
            "receivers": [{"name": "kube-ballast", "webhook_configs": [webhook]}],
        }
        path = self.directory / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> None:
        binary = require_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        for _attempt in range(3):
            self.port = _free_port()
            storage = self.directory / f"data-{self.port}"
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config}",
                        f"--storage.path={storage}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--cluster.listen-address=",
                        "--log.level=debug",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            _RUNNING.add(self.process)
            if self._wait_ready():
                return
            _stop(self.process)
            if "address already in use" not in self.log_tail():
                break
        pytest.fail(f"alertmanager did not become ready:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        return False

    def post_alerts(self, alerts: Sequence[dict[str, Any]]) -> None:
        """POST ``alerts`` to Alertmanager's API (``/api/v2/alerts``), as Prometheus does."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(list(alerts)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200, response.read()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@contextlib.contextmanager
def running_alertmanager(
    directory: Path, webhook_url: str, **options: Any
) -> Iterator[Alertmanager]:
    manager = Alertmanager(directory, webhook_url, **options)
    try:
        manager.start()
        yield manager
    finally:
        manager.stop()


def realistic_alert(
    index: int,
    *,
    alertname: str = "KubeBallastNodeHeartbeatStale",
    now: datetime | None = None,
    resolved: bool = False,
) -> dict[str, Any]:
    """An alert as Prometheus posts it for one node of a 5000-node cluster.

    Labels, annotations and the generator URL are sized like kube-ballast's own rules:
    a node, its zone, the exporter's instance, a summary, a description and a runbook
    link. Used for the captured fixtures and for sizing ``receiver.max_body_bytes``.
    """
    now = now or datetime.now(UTC)
    node = f"node-{index:05d}"
    zone = f"eu-west-1{'abc'[index % 3]}"
    expr = (
        "time() - kubeballast_node_lease_renew_time_seconds"
        '{job="kube-ballast-exporter"} > 3 * kubeballast_node_lease_duration_seconds'
    )
    alert: dict[str, Any] = {
        "labels": {
            "alertname": alertname,
            "severity": "critical",
            "cluster": "prod-eu-west-1",
            "namespace": "kube-ballast",
            "job": "kube-ballast-exporter",
            "instance": "10.20.3.17:9808",
            "node": node,
            "zone": zone,
            "prometheus": "monitoring/k8s",
        },
        "annotations": {
            "summary": f"Node {node} has not renewed its lease for more than 120 s.",
            "description": (
                f"The kubelet on {node} in zone {zone} last renewed its Lease 124 s ago;"
                " the node-lifecycle controller marks it NotReady after 40 s and starts"
                " evicting its pods after the toleration of 300 s."
            ),
            "runbook_url": (
                "https://github.com/kube-ballast/kube-ballast/blob/main/docs/runbooks/"
                f"{alertname}.md"
            ),
        },
        "startsAt": (now - timedelta(minutes=5)).isoformat(),
        "generatorURL": (
            "http://prometheus-k8s-0.prometheus-operated.monitoring.svc:9090/graph?g0.expr="
            + urllib.request.quote(expr, safe="")
            + "&g0.tab=1"
        ),
    }
    if resolved:
        alert["endsAt"] = (now - timedelta(seconds=1)).isoformat()
    return alert
