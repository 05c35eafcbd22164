"""Helpers of the webhook tests: fake intakes, credentials, captured payloads.

A module of its own, not conftest.py: test folders here are not packages, so every
``conftest`` module is imported under the same name and only one of them can be
imported from by tests (the etcd folder's, in a full run).

The webhook's one collaborator is the engine's :class:`Intake`, our own boundary, so
it is the one thing faked:

- :class:`RecordingIntake` records the groups it is given (optionally failing with a
  :class:`RecordError`, or waiting on a gate so a test can hold a recording open);
- :class:`RefusingIntake` is for every test that sends something the webhook must
  refuse: any call fails the test loudly, both through the 500 it causes and through
  the recorded call that the test asserts is absent.

Everything else is real: aiohttp serving on 127.0.0.1 with a free port, the
``Authenticator`` reading real files, and (in test_webhook_alertmanager.py) the real
Alertmanager.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from kubeballast.core.config import ReceiverConfig
from kubeballast.remediations.contract import AlertGroup, RecordError
from kubeballast.remediations.webhook import create_app

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "s3cr3t-t0ken-for-tests"
USER = "alertmanager"
PASSWORD = "pa55-w0rd:with-colon"
WEBHOOK_PATH = "/webhook/alertmanager"


def fixture_payload(name: str) -> dict[str, Any]:
    """A webhook body captured from the real Alertmanager (capture_payloads.py)."""
    payload: dict[str, Any] = json.loads((FIXTURES / f"alertmanager_{name}.json").read_text())
    return payload


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


JSON = {"Content-Type": "application/json"}


class RecordingIntake:
    """Records accepted groups; ``fail`` makes ``accept`` raise RecordError instead,
    ``gate`` makes it wait until the test sets the event."""

    def __init__(self, *, fail: bool = False, gate: asyncio.Event | None = None) -> None:
        self.groups: list[AlertGroup] = []
        self.started: list[AlertGroup] = []
        self.fail = fail
        self.gate = gate
        self.arrived = asyncio.Event()

    async def accept(self, group: AlertGroup) -> None:
        self.started.append(group)
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RecordError("the ledger is unavailable")
        self.groups.append(group)


class RefusingIntake:
    """An intake that no request may reach: a call is a test failure."""

    def __init__(self) -> None:
        self.calls: list[AlertGroup] = []

    async def accept(self, group: AlertGroup) -> None:
        self.calls.append(group)
        raise AssertionError(f"accept() called for a body that must be refused: {group!r}")


@dataclass
class Served:
    """An application served on loopback, with a client session pointed at it."""

    url: str
    session: aiohttp.ClientSession
    app: web.Application
    registry: CollectorRegistry
    runner: web.AppRunner = field(repr=False)

    async def post(
        self, body: bytes, headers: dict[str, str] | None = None, path: str = WEBHOOK_PATH
    ) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
        async with self.session.post(self.url + path, data=body, headers=headers) as response:
            text = await response.text()
            parsed = json.loads(text) if text.startswith("{") else {"text": text}
            return response.status, parsed, response.headers

    async def close(self) -> None:
        await self.session.close()
        await self.runner.cleanup()


ServeFactory = Callable[..., Awaitable[Served]]


async def serve_app(config: ReceiverConfig, intake: Any, **options: Any) -> Served:
    """Serve the receiver's application on loopback; the caller calls ``close``."""
    registry = CollectorRegistry()
    app = create_app(config, intake, registry, **options)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    session = aiohttp.ClientSession()
    return Served(f"http://{host}:{port}", session, app, registry, runner)


# --- TLS material, made with the openssl binary ----------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path
    other_client_key: Path


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=directory, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and
    a client certificate from an unrelated CA (P-256 keys: quick to make)."""
    directory.mkdir()
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign"]
    for ca in ("ca", "other-ca"):
        _openssl(
            directory, "req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
            "-days", "2", "-subj", f"/CN=test {ca}", *ca_ext,
        )  # fmt: skip
    leaves = {
        "server": ("ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        "client": ("ca", "extendedKeyUsage=clientAuth\n"),
        "other-client": ("other-ca", "extendedKeyUsage=clientAuth\n"),
    }
    for leaf, (ca, extensions) in leaves.items():
        (directory / f"{leaf}.ext").write_text(extensions)
        _openssl(
            directory, "req", "-new", *key, "-keyout", f"{leaf}.key", "-out", f"{leaf}.csr",
            "-subj", f"/CN=test {leaf}",
        )  # fmt: skip
        _openssl(
            directory, "x509", "-req", "-in", f"{leaf}.csr", "-CA", f"{ca}.crt",
            "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "2",
            "-extfile", f"{leaf}.ext", "-out", f"{leaf}.crt",
        )  # fmt: skip
    return TlsFiles(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_client_cert=directory / "other-client.crt",
        other_client_key=directory / "other-client.key",
    )
