"""The target client against a fake target on loopback: every failure maps onto its
``SourceError`` reason, Retry-After is honoured, the bearer token is sent and re-read,
and TLS verifies the server and presents the client certificate.

The certificates are made per test session with the ``openssl`` command (the
``cryptography`` package is not a dependency); ``openssl`` is part of Debian's base.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from kubeballast.core.config import Config, ExporterConfig, TargetConfig, validate
from kubeballast.exporter.contract import SourceError
from kubeballast.exporter.http import (
    TargetClient,
    default_in_cluster_apiserver,
    parse_retry_after,
)

TOKEN = "s3cr3t-token-value-1"


def target(url: str, **overrides: Any) -> TargetConfig:
    values: dict[str, Any] = {"name": "api-1", "url": url, "timeout_seconds": 5.0}
    values.update(overrides)
    return TargetConfig(**values)


class FakeTarget:
    """A component's HTTP endpoints, answering what each test sets up."""

    def __init__(self) -> None:
        self.seen_authorization: list[str | None] = []
        self.seen_accept: list[str | None] = []
        self.peer_subjects: list[Any] = []
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/ok", self.ok)
        self.app.router.add_get("/status/{code}", self.status)
        self.app.router.add_get("/hang", self.hang)
        self.app.router.add_get("/big", self.big)

    async def ok(self, request: web.Request) -> web.Response:
        self.seen_authorization.append(request.headers.get("Authorization"))
        self.seen_accept.append(request.headers.get("Accept"))
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        self.peer_subjects.append(cert["subject"] if cert else None)
        return web.Response(text="fine ✓", headers={"X-Target": "fake"})

    async def status(self, request: web.Request) -> web.Response:
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        body = request.query.get("body", f"status {request.match_info['code']}")
        return web.Response(status=int(request.match_info["code"]), text=body, headers=headers)

    async def hang(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(text="too late")

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 4096)


@pytest.fixture
async def fake(local_server: Any) -> AsyncIterator[tuple[FakeTarget, str]]:
    target_app = FakeTarget()
    async with local_server(target_app.app) as url:
        try:
            yield target_app, url
        finally:
            target_app.release.set()


async def reason_of(client: TargetClient, path: str) -> SourceError:
    with pytest.raises(SourceError) as raised:
        await client.get(path)
    return raised.value


# --------------------------------------------------------------------------------------
# Answers and failures
# --------------------------------------------------------------------------------------


async def test_get_returns_status_text_and_headers(fake: tuple[FakeTarget, str]) -> None:
    server, url = fake
    async with TargetClient(target(url)) as client:
        result = await client.get("/ok", accept="text/plain;version=0.0.4")
    assert result.status == 200
    assert result.text == "fine ✓"
    assert result.headers["X-Target"] == "fake"
    assert server.seen_accept == ["text/plain;version=0.0.4"]
    assert server.seen_authorization == [None]  # no token configured, none sent


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (401, "auth"),
        (403, "auth"),
        (429, "throttled"),
        (404, "not_found"),
        (400, "http_4xx"),
        (410, "http_4xx"),
        (500, "http_5xx"),
        (503, "http_5xx"),
    ],
)
async def test_http_errors_map_onto_reasons(
    fake: tuple[FakeTarget, str], code: int, reason: str
) -> None:
    _, url = fake
    async with TargetClient(target(url)) as client:
        error = await reason_of(client, f"/status/{code}?body=why+it+failed")
    assert error.reason == reason
    assert error.delay is None
    assert f"HTTP {code}" in str(error)
    assert "why it failed" in str(error)
    assert "api-1" in str(error)


async def test_429_waits_the_retry_after_seconds(fake: tuple[FakeTarget, str]) -> None:
    _, url = fake
    async with TargetClient(target(url)) as client:
        error = await reason_of(client, "/status/429?retry_after=7")
    assert error.reason == "throttled"
    assert error.delay == 7.0


async def test_429_waits_until_a_retry_after_date(fake: tuple[FakeTarget, str]) -> None:
    _, url = fake
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    async with TargetClient(target(url)) as client:
        with pytest.raises(SourceError) as raised:
            await client.get(f"/status/429?retry_after={quote(when)}")
    assert raised.value.reason == "throttled"
    assert raised.value.delay is not None
    assert 100 <= raised.value.delay <= 121


async def test_a_5xx_with_retry_after_carries_the_delay(fake: tuple[FakeTarget, str]) -> None:
    _, url = fake
    async with TargetClient(target(url)) as client:
        error = await reason_of(client, "/status/503?retry_after=3")
    assert (error.reason, error.delay) == ("http_5xx", 3.0)


async def test_a_refused_connection_is_connect(free_port: int) -> None:
    async with TargetClient(target(f"http://127.0.0.1:{free_port}")) as client:
        error = await reason_of(client, "/ok")
    assert error.reason == "connect"


async def test_no_answer_within_the_timeout_is_timeout(fake: tuple[FakeTarget, str]) -> None:
    _, url = fake
    async with TargetClient(target(url, timeout_seconds=0.2)) as client:
        error = await reason_of(client, "/hang")
    assert error.reason == "timeout"


async def test_a_body_over_the_limit_is_refused(fake: tuple[FakeTarget, str]) -> None:
    _, url = fake
    async with TargetClient(target(url), max_body_bytes=1024) as client:
        error = await reason_of(client, "/big")
        assert error.reason == "parse"
        client_ok = await client.get("/ok")  # the session is still usable
    assert client_ok.status == 200


async def test_health_probes_read_the_body_of_a_failing_endpoint(
    fake: tuple[FakeTarget, str],
) -> None:
    _, url = fake
    body = "[-]etcd failed: reason withheld\nreadyz check failed"
    async with TargetClient(target(url)) as client:
        result = await client.get_ok_or_status(f"/status/500?body={body}")
        assert result.status == 500
        assert "[-]etcd failed" in result.text
        missing = await client.get_ok_or_status("/status/404")
        assert missing.status == 404
        for code, reason in ((401, "auth"), (403, "auth"), (429, "throttled")):
            with pytest.raises(SourceError) as raised:
                await client.get_ok_or_status(f"/status/{code}")
            assert raised.value.reason == reason


async def test_a_closed_client_refuses_to_work(fake: tuple[FakeTarget, str]) -> None:
    _, url = fake
    client = TargetClient(target(url))
    await client.get("/ok")
    await client.close()
    await client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await client.get("/ok")


# --------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------


async def test_the_bearer_token_is_sent_and_reread_for_every_request(
    fake: tuple[FakeTarget, str], tmp_path: Path
) -> None:
    server, url = fake
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    async with TargetClient(target(url, bearer_token_file=str(token_file))) as client:
        await client.get("/ok")
        token_file.write_text("rotated-token\n")  # the kubelet rotates projected tokens
        await client.get("/ok")
    assert server.seen_authorization == [f"Bearer {TOKEN}", "Bearer rotated-token"]


async def test_an_unreadable_token_file_is_auth_and_the_token_never_leaks(
    fake: tuple[FakeTarget, str], tmp_path: Path
) -> None:
    _, url = fake
    missing = tmp_path / "no-such-token"
    async with TargetClient(target(url, bearer_token_file=str(missing))) as client:
        error = await reason_of(client, "/ok")
    assert error.reason == "auth"
    assert str(missing) in str(error)

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    async with TargetClient(target(url, bearer_token_file=str(token_file))) as client:
        error = await reason_of(client, "/status/403")
    assert TOKEN not in str(error)


# --------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _signed(name: str, cn: str, extensions: str, directory: Path) -> None:
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(
        extensions + "\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    assert shutil.which("openssl"), "the openssl command is needed to make test certificates"
    directory = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=kube-ballast test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _signed(
        "server",
        "127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE",
        directory,
    )
    _signed(
        "client",
        "system:kube-ballast",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE",
        directory,
    )
    return Pki(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


@pytest.fixture
def tls_server(pki: Pki) -> Callable[..., Any]:
    """``async with tls_server(require_client_cert=...) as (fake, url)``."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def serve(*, require_client_cert: bool) -> AsyncIterator[tuple[FakeTarget, str]]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        if require_client_cert:
            context.load_verify_locations(pki.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        fake_target = FakeTarget()
        runner = web.AppRunner(fake_target.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            port = runner.addresses[0][1]
            yield fake_target, f"https://127.0.0.1:{port}"
        finally:
            fake_target.release.set()
            await runner.cleanup()

    return serve


async def test_tls_verifies_the_server_with_the_ca_and_sends_the_client_cert(
    tls_server: Any, pki: Pki
) -> None:
    async with tls_server(require_client_cert=True) as (server, url):
        config = target(
            url,
            ca_file=str(pki.ca),
            client_cert_file=str(pki.client_cert),
            client_key_file=str(pki.client_key),
        )
        async with TargetClient(config) as client:
            result = await client.get("/ok")
    assert result.status == 200
    assert server.peer_subjects == [((("commonName", "system:kube-ballast"),),)]


async def test_a_server_the_ca_does_not_vouch_for_is_tls(tls_server: Any) -> None:
    # Only the system trust store, which does not know the test CA.
    async with (
        tls_server(require_client_cert=False) as (_, url),
        TargetClient(target(url)) as client,
    ):
        error = await reason_of(client, "/ok")
    assert error.reason == "tls"


async def test_a_missing_client_certificate_fails_the_connection(tls_server: Any, pki: Pki) -> None:
    async with (
        tls_server(require_client_cert=True) as (_, url),
        TargetClient(target(url, ca_file=str(pki.ca))) as client,
    ):
        error = await reason_of(client, "/ok")
    # The server refuses by dropping the connection (a reset during the handshake with
    # TLS 1.2, a disconnect right after it with TLS 1.3), which the client cannot tell
    # apart from any other dropped connection.
    assert error.reason in ("tls", "connect")


async def test_an_unreadable_ca_file_is_tls(tmp_path: Path) -> None:
    config = target("https://127.0.0.1:1", ca_file=str(tmp_path / "missing-ca.crt"))
    async with TargetClient(config) as client:
        error = await reason_of(client, "/ok")
    assert error.reason == "tls"


async def test_insecure_skip_verify_works_and_warns_once_naming_the_target(
    tls_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_server(require_client_cert=False) as (_, url):
        with caplog.at_level(logging.WARNING, logger="kubeballast.exporter.http"):
            async with TargetClient(target(url, insecure_skip_verify=True)) as client:
                await client.get("/ok")
                await client.get("/ok")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "api-1" in warnings[0]
    assert "NOT verified" in warnings[0]


# --------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("0", 0.0),
        ("5", 5.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("-3", None),
        ("nan", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
        ("Thu, 01 Jan 1970 00:01:40 GMT", 60.0),  # 100 s after the epoch, now = 40
    ],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    assert (
        parse_retry_after(header, now=40.0 if header != "Wed, 21 Oct 2015 07:28:00 GMT" else None)
        == expected
    )


def test_the_in_cluster_apiserver_uses_the_service_and_the_pods_account() -> None:
    config = default_in_cluster_apiserver()
    assert config.url == "https://kubernetes.default.svc"
    assert config.bearer_token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert config.ca_file == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    assert not config.insecure_skip_verify
    # It passes the same validation as a configured target.
    validate(Config(exporter=ExporterConfig(apiservers=(config,))))
