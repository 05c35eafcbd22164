"""Authentication: the credentials Alertmanager can send are accepted, anything else is
401 with a challenge; secrets are compared in constant time, reloaded when their files
change, never logged; a receiver without authentication refuses to start; TLS with
client certificates."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import os
import ssl
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from webhook_support import (
    JSON,
    PASSWORD,
    TOKEN,
    USER,
    RecordingIntake,
    RefusingIntake,
    ServeFactory,
    TlsFiles,
    basic,
    bearer,
    fixture_payload,
)

from kubeballast.core.config import (
    ConfigError,
    ReceiverAuthConfig,
    ReceiverConfig,
    ReceiverTLSConfig,
    config_from_mapping,
)
from kubeballast.remediations.auth import Authenticator, FileSecret, server_ssl_context
from kubeballast.remediations.server import run_receiver

FIRING = json.dumps(fixture_payload("firing")).encode()


async def status_of(served: Any, headers: dict[str, str]) -> int:
    status, _, _ = await served.post(FIRING, {**JSON, **headers})
    return int(status)


# --- which credentials pass ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (bearer(), 200),
        ({"Authorization": f"bearer {TOKEN}"}, 200),  # the scheme is case-insensitive
        (basic(), 200),
        (bearer("wrong"), 401),
        (bearer(TOKEN + "x"), 401),
        (bearer(TOKEN[:-1]), 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": f"Token {TOKEN}"}, 401),
        (basic(USER, "wrong"), 401),
        (basic("someone", PASSWORD), 401),
        (basic(USER, ""), 401),
        ({"Authorization": "Basic !!!not-base64"}, 401),
        ({"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, 401),
        (
            {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}x".encode()).decode()},
            401,
        ),
        ({"Authorization": "Bearer t\u00f6ken"}, 401),
        ({}, 401),
    ],
    ids=lambda value: str(value)[:40],
)
async def test_credentials(
    serve: ServeFactory, receiver_config: ReceiverConfig, headers: dict[str, str], status: int
) -> None:
    intake = RecordingIntake()
    served = await serve(receiver_config, intake)
    assert await status_of(served, headers) == status
    assert len(intake.groups) == (1 if status == 200 else 0)


async def test_with_only_a_token_configured_basic_auth_is_refused(
    serve: ServeFactory, token_file: Path
) -> None:
    config = ReceiverConfig(auth=ReceiverAuthConfig(bearer_token_file=str(token_file)))
    served = await serve(config, RecordingIntake())
    assert await status_of(served, basic()) == 401
    status, _, headers = await served.post(FIRING, JSON)
    assert status == 401
    assert headers.getall("WWW-Authenticate") == ['Bearer realm="kube-ballast"']  # type: ignore[union-attr]
    assert await status_of(served, bearer()) == 200


async def test_with_only_basic_auth_configured_a_token_is_refused(
    serve: ServeFactory, password_file: Path
) -> None:
    config = ReceiverConfig(
        auth=ReceiverAuthConfig(
            basic_auth_username=USER, basic_auth_password_file=str(password_file)
        )
    )
    served = await serve(config, RecordingIntake())
    status, _, headers = await served.post(FIRING, {**JSON, **bearer()})
    assert status == 401
    assert headers.getall("WWW-Authenticate") == [  # type: ignore[union-attr]
        'Basic realm="kube-ballast", charset="UTF-8"'
    ]
    assert await status_of(served, basic()) == 200


def test_secrets_are_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, receiver_config: ReceiverConfig
) -> None:
    """Every comparison goes through hmac.compare_digest, and basic auth compares both
    the user name and the password even when the user name is already wrong."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    authenticator = Authenticator.from_config(receiver_config.auth)
    assert authenticator.check(f"Bearer {TOKEN}") is True
    assert calls == [(TOKEN.encode(), TOKEN.encode())]
    calls.clear()
    assert authenticator.check(basic("intruder", "guess")["Authorization"]) is False
    assert calls == [(b"intruder", USER.encode()), (b"guess", PASSWORD.encode())]


# --- rotation ---------------------------------------------------------------------------


class StepClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rewrite(path: Path, text: str) -> None:
    """Replace the file as a Secret volume does: a new inode swapped in."""
    new = path.with_suffix(".new")
    new.write_text(text)
    os.replace(new, path)


def test_a_rotated_token_is_used_after_the_recheck_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "token"
    path.write_text("old-token\n")
    clock = StepClock()
    secret = FileSecret(str(path), key_path="receiver.auth.bearer_token_file", clock=clock)
    authenticator = Authenticator(bearer=secret)
    assert authenticator.check("Bearer old-token")
    rewrite(path, "new-token\n")
    clock.now += 0.5  # within the interval: not looked at yet
    assert authenticator.check("Bearer old-token")
    clock.now += 0.5
    assert authenticator.check("Bearer new-token")
    assert not authenticator.check("Bearer old-token")
    assert f"reloaded the secret in {path}" in caplog.messages


@pytest.mark.parametrize("breakage", ["empty", "missing"])
def test_a_broken_rotation_keeps_the_last_good_secret_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, breakage: str
) -> None:
    path = tmp_path / "token"
    path.write_text("good-token")
    clock = StepClock()
    authenticator = Authenticator(
        bearer=FileSecret(str(path), key_path="receiver.auth.bearer_token_file", clock=clock)
    )
    if breakage == "empty":
        rewrite(path, "\n")
    else:
        path.unlink()
    for _ in range(3):
        clock.now += 1
        assert authenticator.check("Bearer good-token")
        assert not authenticator.check("Bearer ")
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"cannot reload the secret in {path} (")
    rewrite(path, "next-token")
    clock.now += 1
    assert authenticator.check("Bearer next-token")


# --- nothing secret in the logs ---------------------------------------------------------


async def test_no_credential_reaches_a_log_line(
    serve: ServeFactory, receiver_config: ReceiverConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    served = await serve(receiver_config, RecordingIntake())
    await status_of(served, bearer())
    await status_of(served, bearer("a-wrong-token-value"))
    await status_of(served, basic(USER, "a-wrong-password"))
    await status_of(served, basic())
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused POST /webhook/alertmanager" in text
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for secret in (TOKEN, PASSWORD, "a-wrong-token-value", "a-wrong-password", encoded):
        assert secret not in text


# --- refusing to start ------------------------------------------------------------------


class FailingFactory:
    """An intake factory that must not be reached: start-up fails on the config first."""

    def __call__(self, config: ReceiverConfig, *, registry: object) -> RefusingIntake:
        raise AssertionError("the intake was built although the configuration is unusable")


async def test_the_receiver_refuses_to_start_without_authentication() -> None:
    with pytest.raises(ConfigError) as caught:
        await run_receiver(ReceiverConfig(), build_intake=FailingFactory())
    assert caught.value.key_path == "receiver.auth"
    assert str(caught.value) == (
        "receiver.auth: no authentication configured: set bearer_token_file, or"
        " basic_auth_username and basic_auth_password_file"
        " (allow_unauthenticated: true is for tests and demos only)"
    )


def test_the_command_refuses_to_start_without_authentication(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"receiver": {"listen": {"port": 0}}}))
    result = subprocess.run(
        [sys.executable, "-m", "kubeballast", "--config", str(path), "receiver"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(
        "kube-ballast: config: receiver.auth: no authentication configured"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read {path}: no such file or directory"), ("  \n", "{path} is empty")],
)
async def test_an_unusable_token_file_is_a_config_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    config = ReceiverConfig(auth=ReceiverAuthConfig(bearer_token_file=str(path)))
    with pytest.raises(ConfigError) as caught:
        await run_receiver(config, build_intake=FailingFactory())
    assert str(caught.value) == "receiver.auth.bearer_token_file: " + message.format(path=path)


async def test_allow_unauthenticated_is_explicit_and_warned_about(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    config = ReceiverConfig(auth=ReceiverAuthConfig(allow_unauthenticated=True))
    intake = RecordingIntake()
    served = await serve(config, intake)
    assert await status_of(served, {}) == 200
    assert len(intake.groups) == 1
    assert any("allow_unauthenticated is true" in message for message in caplog.messages)


def test_allow_unauthenticated_cannot_be_combined_with_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(
            {"receiver": {"auth": {"bearer_token_file": "t", "allow_unauthenticated": True}}}
        )
    assert str(caught.value) == (
        "receiver.auth.allow_unauthenticated: cannot be true when credentials are configured"
        " (bearer_token_file or basic_auth_username)"
    )


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        ({"path": "webhook"}, "receiver.path: must start with '/', got 'webhook'"),
        ({"path": "/metrics"}, "receiver.path: is one of the receiver's own endpoints,"
         " got '/metrics'"),
        ({"path": "/approvals/x"}, "receiver.path: is one of the receiver's own endpoints,"
         " got '/approvals/x'"),
        ({"max_body_bytes": 10}, "receiver.max_body_bytes: must be between 1024 and"
         " 1.07374e+09, got 10"),
        ({"max_alerts": 0}, "receiver.max_alerts: must be between 1 and 1e+06, got 0"),
        ({"tls": {"cert_file": "c"}}, "receiver.tls.key_file: must be set together with"
         " cert_file"),
        ({"tls": {"client_ca_file": "ca"}}, "receiver.tls.client_ca_file: needs cert_file"
         " and key_file (client certificates need TLS)"),
    ],
)  # fmt: skip
def test_receiver_settings_are_validated(receiver: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"receiver": receiver})
    assert str(caught.value) == message


# --- TLS and client certificates --------------------------------------------------------


def test_unloadable_tls_files_are_config_errors(tmp_path: Path, tls_files: TlsFiles) -> None:
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(ConfigError) as caught:
        server_ssl_context(ReceiverTLSConfig(cert_file=missing, key_file=str(tls_files.server_key)))
    assert caught.value.key_path == "receiver.tls.cert_file"
    assert "no such file or directory" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        server_ssl_context(
            ReceiverTLSConfig(
                cert_file=str(tls_files.server_cert),
                key_file=str(tls_files.server_key),
                client_ca_file=str(tls_files.server_key),  # a key is not a CA bundle
            )
        )
    assert caught.value.key_path == "receiver.tls.client_ca_file"


def client_context(
    tls: TlsFiles, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def wait_until_serving(url: str, context: ssl.SSLContext, server: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            if server.done():
                server.result()
                pytest.fail("the receiver stopped")
            try:
                async with session.get(url + "/healthz", ssl=context) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectorError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.02)


async def post_once(
    session: aiohttp.ClientSession, url: str, context: ssl.SSLContext, post: dict[str, Any]
) -> None:
    async with session.post(url, ssl=context, **post) as response:
        await response.read()
        pytest.fail(f"answered {response.status} without a valid client certificate")


async def test_tls_with_required_client_certificates(
    tls_files: TlsFiles, token_file: Path, free_port: int
) -> None:
    config = ReceiverConfig(
        auth=ReceiverAuthConfig(bearer_token_file=str(token_file)),
        tls=ReceiverTLSConfig(
            cert_file=str(tls_files.server_cert),
            key_file=str(tls_files.server_key),
            client_ca_file=str(tls_files.ca_cert),
        ),
    )
    config = replace(config, listen=replace(config.listen, port=free_port))
    intake = RecordingIntake()
    server = asyncio.create_task(run_receiver(config, build_intake=lambda config, registry: intake))
    url = f"https://127.0.0.1:{free_port}"
    good = client_context(tls_files, tls_files.client_cert, tls_files.client_key)
    try:
        await wait_until_serving(url, good, server)
        async with aiohttp.ClientSession() as session:
            post = {"data": FIRING, "headers": {**JSON, **bearer()}}
            async with session.post(url + "/webhook/alertmanager", ssl=good, **post) as response:
                assert response.status == 200
            # The certificate is not a substitute for the token: both are required.
            async with session.post(
                url + "/webhook/alertmanager", ssl=good, data=FIRING, headers=JSON
            ) as response:
                assert response.status == 401
            for context in (
                client_context(tls_files),  # no client certificate
                client_context(tls_files, tls_files.other_client_cert, tls_files.other_client_key),
            ):
                with pytest.raises(aiohttp.ClientError):
                    await post_once(session, url + "/webhook/alertmanager", context, post)
        assert len(intake.groups) == 1
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
