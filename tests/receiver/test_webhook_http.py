"""The webhook over HTTP: what each kind of request gets back, and that a refused one
never reaches the intake; 503 only when recording fails; recording survives a
cancelled request; the metrics count every outcome."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from webhook_support import (
    JSON,
    WEBHOOK_PATH,
    RecordingIntake,
    RefusingIntake,
    ServeFactory,
    bearer,
    fixture_payload,
)

from kubeballast.core.config import ReceiverConfig
from kubeballast.remediations.payload import decode_group
from kubeballast.remediations.webhook import WEBHOOK_KEY, create_app

FIRING = json.dumps(fixture_payload("firing")).encode()
AUTHED_JSON = {**bearer(), **JSON}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def eventually(condition: object, what: str, within: float = 30.0) -> None:
    """Poll ``condition()`` until true; fail after ``within`` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {within:g} s")
        await asyncio.sleep(0.01)


async def test_a_valid_group_is_accepted_recorded_and_answered(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    intake = RecordingIntake()
    served = await serve(receiver_config, intake)
    status, body, _ = await served.post(FIRING, AUTHED_JSON)
    assert (status, body) == (200, {"status": "accepted", "alerts": 3})
    assert intake.groups == [decode_group(FIRING, max_alerts=10)]
    assert (
        sample(served.registry, "kubeballast_receiver_webhook_requests_total", outcome="accepted")
        == 1
    )
    assert (
        sample(served.registry, "kubeballast_receiver_alerts_accepted_total", status="firing") == 3
    )
    assert sample(served.registry, "kubeballast_receiver_webhook_duration_seconds_count") == 1


async def test_record_error_is_503_so_alertmanager_retries_and_the_retry_succeeds(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    intake = RecordingIntake(fail=True)
    served = await serve(receiver_config, intake)
    status, body, _ = await served.post(FIRING, AUTHED_JSON)
    assert (status, body) == (503, {"status": "unavailable", "error": "could not record the group"})
    assert intake.groups == []
    intake.fail = False
    status, _, _ = await served.post(FIRING, AUTHED_JSON)
    assert status == 200
    assert len(intake.groups) == 1
    counts = {
        outcome: sample(
            served.registry, "kubeballast_receiver_webhook_requests_total", outcome=outcome
        )
        for outcome in ("accepted", "record_failed")
    }
    assert counts == {"accepted": 1, "record_failed": 1}


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, "expected Content-Type application/json, got none"),
        ("text/plain", "expected Content-Type application/json, got 'text/plain'"),
        ("application/x-www-form-urlencoded", None),
        ("application/json; charset=latin-1", None),
    ],
)
async def test_a_wrong_content_type_is_415(
    serve: ServeFactory,
    receiver_config: ReceiverConfig,
    content_type: str | None,
    expected: str | None,
) -> None:
    intake = RefusingIntake()
    served = await serve(receiver_config, intake)
    headers = bearer()
    if content_type is not None:
        headers["Content-Type"] = content_type
    # aiohttp's client adds application/octet-stream to a bytes body unless told not to;
    # skip_auto_headers leaves the header out entirely, as a bare client would.
    async with served.session.post(
        served.url + WEBHOOK_PATH,
        data=FIRING,
        headers=headers,
        skip_auto_headers=["Content-Type"] if content_type is None else (),
    ) as response:
        assert response.status == 415
        body = await response.json()
    assert body["status"] == "rejected"
    if expected is not None:
        assert body["error"] == expected
    assert intake.calls == []


async def test_json_with_an_explicit_utf8_charset_is_accepted(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    served = await serve(receiver_config, RecordingIntake())
    headers = {**bearer(), "Content-Type": "application/json; charset=UTF-8"}
    assert (await served.post(FIRING, headers))[0] == 200


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"version": "4", "alerts": [', 400, "invalid JSON: input data was truncated"),
        (b"", 400, "invalid JSON: the body is empty"),
        (
            FIRING.replace(b'"status": "firing"', b'"status": "pending"', 1),
            422,
            'status: expected "firing" or "resolved", got "pending"',
        ),
        (
            FIRING.replace(b'"version": "4"', b'"version": "5"'),
            422,
            'version: unsupported payload version "5" (this receiver reads version "4")',
        ),
    ],
    ids=["truncated", "empty", "mistyped", "version"],
)
async def test_bad_bodies_get_a_4xx_naming_the_problem_and_change_nothing(
    serve: ServeFactory, receiver_config: ReceiverConfig, body: bytes, status: int, error: str
) -> None:
    intake = RefusingIntake()
    served = await serve(receiver_config, intake)
    got_status, got_body, _ = await served.post(body, AUTHED_JSON)
    assert (got_status, got_body) == (status, {"status": "rejected", "error": error})
    assert intake.calls == []


async def test_a_body_over_the_limit_is_413_by_declared_length(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    intake = RefusingIntake()
    served = await serve(replace(receiver_config, max_body_bytes=len(FIRING) - 1), intake)
    status, body, _ = await served.post(FIRING, AUTHED_JSON)
    assert status == 413
    assert body["error"] == (
        f"body of {len(FIRING)} bytes exceeds the limit of {len(FIRING) - 1} bytes"
        " (receiver.max_body_bytes)"
    )
    assert intake.calls == []
    assert (
        sample(served.registry, "kubeballast_receiver_webhook_requests_total", outcome="too_large")
        == 1
    )


async def test_a_chunked_body_over_the_limit_is_413_while_reading(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    intake = RefusingIntake()
    served = await serve(replace(receiver_config, max_body_bytes=4096), intake)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):  # 64 KiB in all, no Content-Length
            yield b" " * 1024

    async with served.session.post(
        served.url + WEBHOOK_PATH, data=chunks(), headers=AUTHED_JSON
    ) as response:
        assert response.status == 413
        assert (await response.json())["error"] == (
            "body of more than 4096 bytes exceeds the limit of 4096 bytes (receiver.max_body_bytes)"
        )
    assert intake.calls == []


async def test_a_body_at_the_limit_is_read(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    served = await serve(replace(receiver_config, max_body_bytes=len(FIRING)), RecordingIntake())
    assert (await served.post(FIRING, AUTHED_JSON))[0] == 200


async def test_too_many_alerts_is_422(serve: ServeFactory, receiver_config: ReceiverConfig) -> None:
    intake = RefusingIntake()
    served = await serve(replace(receiver_config, max_alerts=2), intake)
    status, body, _ = await served.post(FIRING, AUTHED_JSON)
    assert status == 422
    assert body["error"].startswith("alerts: 3 alerts in one group, more than the 2 allowed")
    assert intake.calls == []


async def test_an_unauthenticated_request_is_401_before_anything_else(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    intake = RefusingIntake()
    served = await serve(receiver_config, intake)
    # Wrong content type and a broken body too: the credentials are checked first, so
    # an anonymous client learns nothing about what the webhook would accept.
    status, body, headers = await served.post(b"{", {"Content-Type": "text/plain"})
    assert status == 401
    assert body == {"status": "rejected", "error": "missing or wrong credentials"}
    assert headers.getall("WWW-Authenticate") == [  # type: ignore[union-attr]
        'Bearer realm="kube-ballast"',
        'Basic realm="kube-ballast", charset="UTF-8"',
    ]
    assert intake.calls == []


async def test_the_webhook_path_takes_only_post(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    served = await serve(receiver_config, RefusingIntake())
    async with served.session.get(served.url + WEBHOOK_PATH, headers=bearer()) as response:
        assert response.status == 405


async def test_the_webhook_path_is_configurable(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    intake = RecordingIntake()
    served = await serve(replace(receiver_config, path="/hooks/am"), intake)
    assert (await served.post(FIRING, AUTHED_JSON, path="/hooks/am"))[0] == 200
    assert (await served.post(FIRING, AUTHED_JSON))[0] == 404
    assert len(intake.groups) == 1


async def test_health_and_metrics_need_no_credentials(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    served = await serve(receiver_config, RefusingIntake())
    async with served.session.get(served.url + "/healthz") as response:
        assert (response.status, await response.text()) == (200, "ok")
    await served.post(b"{}", {"Content-Type": "application/json"})  # a 401, counted
    async with served.session.get(served.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert 'kubeballast_receiver_webhook_requests_total{outcome="unauthorized"} 1.0' in text
    assert 'kubeballast_receiver_webhook_requests_total{outcome="invalid_json"} 0.0' in text
    assert "kubeballast_build_info{" in text


async def test_concurrent_groups_are_all_recorded(
    serve: ServeFactory, receiver_config: ReceiverConfig
) -> None:
    intake = RecordingIntake()
    served = await serve(receiver_config, intake)
    results = await asyncio.gather(*(served.post(FIRING, AUTHED_JSON) for _ in range(50)))
    assert [status for status, _, _ in results] == [200] * 50
    assert len(intake.groups) == 50


async def test_a_cancelled_request_does_not_cut_recording_short(
    receiver_config: ReceiverConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """With handler cancellation on, a client that hangs up cancels the handler; the
    shielded recording still runs to its end, and shutdown waits for it."""
    caplog.set_level(logging.INFO, logger="kubeballast.remediations.webhook")
    gate = asyncio.Event()
    intake = RecordingIntake(gate=gate)
    app = create_app(receiver_config, intake, CollectorRegistry())
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(
                session.post(
                    f"http://{host}:{port}{WEBHOOK_PATH}", data=FIRING, headers=AUTHED_JSON
                )
            )
            await asyncio.wait_for(intake.arrived.wait(), 30)
            request.cancel()  # the client hangs up while the group is being recorded
            with pytest.raises(asyncio.CancelledError):
                await request

        def cancelled() -> bool:
            return any("was cancelled; recording it continues" in r.message for r in caplog.records)

        await eventually(cancelled, "the handler was cancelled")
        assert intake.groups == []  # still recording
        gate.set()
        await app[WEBHOOK_KEY].drain(grace=30)
        assert intake.groups == [decode_group(FIRING, max_alerts=10)]
        assert any(
            "after its request was cancelled" in r.message
            and r.message.startswith("recorded group")
            for r in caplog.records
        )
    finally:
        gate.set()
        await runner.cleanup()


async def test_shutdown_waits_for_a_group_being_recorded(
    receiver_config: ReceiverConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Shutdown cancels handlers after its grace period; a recording in progress goes
    on, and the application's cleanup waits for it rather than dropping it."""
    caplog.set_level(logging.INFO, logger="kubeballast.remediations.webhook")
    gate = asyncio.Event()
    intake = RecordingIntake(gate=gate)
    app = create_app(receiver_config, intake, CollectorRegistry())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(
            session.post(f"http://{host}:{port}{WEBHOOK_PATH}", data=FIRING, headers=AUTHED_JSON)
        )
        await asyncio.wait_for(intake.arrived.wait(), 30)
        cleanup = asyncio.create_task(runner.cleanup())

        def cancelled() -> bool:
            return any("was cancelled; recording it continues" in r.message for r in caplog.records)

        await eventually(cancelled, "shutdown cancelled the handler")
        assert not cleanup.done()  # held by the recording, not dropped
        assert intake.groups == []
        gate.set()
        await asyncio.wait_for(cleanup, 30)
        with pytest.raises(aiohttp.ClientError):
            await request  # the client saw the connection close without an answer
    assert len(intake.groups) == 1
