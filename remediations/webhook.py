"""The webhook Alertmanager posts to: authenticate, validate, hand over, answer.

The handler is thin on purpose (STYLE.md 9). In order, and stopping at the first
failure, which changes nothing:

1. credentials (:mod:`.auth`): 401 with ``WWW-Authenticate``, before the body is read;
2. ``Content-Type: application/json`` (charset UTF-8 if given): 415;
3. the body, read in chunks up to ``receiver.max_body_bytes``: 413, as soon as the
   declared ``Content-Length`` or the bytes actually read exceed it, so an oversized
   body never sits in memory;
4. decoding and validation into a :class:`~.contract.AlertGroup` (:mod:`.payload`):
   400 for malformed JSON, 422 for a missing or mistyped field, an unknown payload
   version or more than ``receiver.max_alerts`` alerts, the message naming the field;
5. ``await intake.accept(group)``, which records the group durably and schedules its
   handling: 200 ``{"status": "accepted", "alerts": N}``, or 503 when it raises
   :class:`~.contract.RecordError`, the one answer that makes Alertmanager retry
   (it retries 5xx and gives up on 4xx, which is right for a body that cannot change).

``accept`` runs in its own task and the handler awaits it through
:func:`asyncio.shield`: if the handler is cancelled (the server shutting down past its
grace period, or a client disconnect with ``handler_cancellation`` on), recording
carries on to the end rather than stopping half-way, and the application's cleanup
waits for such tasks before the process exits. Alertmanager then delivers the group
again (it saw no answer) and the intake, which must be idempotent, recognises it.

Nothing here logs a request header; a refusal is logged with its reason and the
client's address, an acceptance with the group key and the number of alerts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from kubeballast.core.config import ReceiverConfig
from kubeballast.core.web import create_base_app
from kubeballast.remediations.auth import AUTHENTICATOR_KEY, Authenticator
from kubeballast.remediations.contract import AlertGroup, Intake, RecordError
from kubeballast.remediations.payload import PayloadError, decode_group

__all__ = ["OUTCOMES", "WEBHOOK_KEY", "Webhook", "create_app"]

log = logging.getLogger(__name__)

DRAIN_SECONDS = 10.0
"""How long shutdown waits for groups still being recorded by abandoned requests."""

OUTCOMES: Final = (
    "accepted",
    "unauthorized",
    "unsupported_media_type",
    "too_large",
    "invalid_json",
    "invalid_payload",
    "unknown_version",
    "too_many_alerts",
    "record_failed",
    "error",
)
"""Every value of the ``outcome`` label of ``kubeballast_receiver_webhook_requests_total``."""


class _RefusedError(Exception):
    """A refusal decided before the payload is decoded (415, 413)."""

    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class Webhook:
    """The webhook route's handler and what it needs: intake, limits, credentials."""

    def __init__(
        self,
        config: ReceiverConfig,
        intake: Intake,
        authenticator: Authenticator,
        registry: CollectorRegistry,
    ) -> None:
        self._intake = intake
        self._authenticator = authenticator
        self._max_body_bytes = config.max_body_bytes
        self._max_alerts = config.max_alerts
        self._pending: set[asyncio.Future[None]] = set()
        self._requests = Counter(
            "kubeballast_receiver_webhook_requests",
            "Webhook requests by outcome (accepted, or why they were refused).",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self._requests.labels(outcome)
        self._alerts = Counter(
            "kubeballast_receiver_alerts_accepted",
            "Alerts in accepted webhook groups, by the alert's status.",
            ["status"],
            registry=registry,
        )
        for status in ("firing", "resolved"):
            self._alerts.labels(status)
        self._duration = Histogram(
            "kubeballast_receiver_webhook_duration_seconds",
            "Time from a webhook request's arrival to its answer, accepted or refused.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )

    async def handle(self, request: web.Request) -> web.Response:
        """``POST receiver.path``: the webhook itself."""
        started = time.perf_counter()
        outcome = "error"  # anything not caught below is a bug: aiohttp answers 500
        try:
            try:
                self._authenticator.require(request)
            except web.HTTPUnauthorized:
                outcome = "unauthorized"
                raise
            try:
                self._check_content_type(request)
                body = await self._read_body(request)
                group = decode_group(body, max_alerts=self._max_alerts)
            except _RefusedError as refused:
                outcome = refused.outcome
                return self._refuse(request, refused.status, str(refused))
            except PayloadError as error:
                outcome = error.reason
                return self._refuse(request, error.http_status, str(error))
            try:
                await self._accept(group)
            except RecordError as error:
                outcome = "record_failed"
                log.error(
                    "could not record group %s (%d alerts), answering 503 so that"
                    " Alertmanager retries: %s",
                    group.group_key,
                    len(group.alerts),
                    error,
                )
                return _answer(503, status="unavailable", error="could not record the group")
            outcome = "accepted"
            self._count_alerts(group)
            log.info(
                "accepted group %s from receiver %r: %d alerts (%s)",
                group.group_key,
                group.receiver,
                len(group.alerts),
                group.status,
            )
            return _answer(200, status="accepted", alerts=len(group.alerts))
        finally:
            self._requests.labels(outcome).inc()
            self._duration.observe(time.perf_counter() - started)

    def _check_content_type(self, request: web.Request) -> None:
        header = request.headers.get("Content-Type")
        charset = (request.charset or "utf-8").lower()
        if header is None or request.content_type != "application/json" or charset != "utf-8":
            got = "none" if header is None else repr(header[:80])
            raise _RefusedError(
                415,
                "unsupported_media_type",
                f"expected Content-Type application/json, got {got}",
            )

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _RefusedError(413, "too_large", _too_large(f"{declared} bytes", limit))
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise _RefusedError(413, "too_large", _too_large(f"more than {limit} bytes", limit))
            chunks.append(chunk)
        return b"".join(chunks)

    async def _accept(self, group: AlertGroup) -> None:
        task = asyncio.ensure_future(self._intake.accept(group))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # The request is gone, the recording is not: let it finish, and say how.
            log.warning(
                "the request delivering group %s was cancelled; recording it continues",
                group.group_key,
            )
            task.add_done_callback(_report_abandoned(group))
            raise

    def _count_alerts(self, group: AlertGroup) -> None:
        firing = sum(1 for alert in group.alerts if alert.status == "firing")
        if firing:
            self._alerts.labels("firing").inc(firing)
        if len(group.alerts) - firing:
            self._alerts.labels("resolved").inc(len(group.alerts) - firing)

    def _refuse(self, request: web.Request, status: int, message: str) -> web.Response:
        log.warning("refused a webhook from %s with %d: %s", request.remote, status, message)
        return _answer(status, status="rejected", error=message)

    async def drain(self, grace: float = DRAIN_SECONDS) -> None:
        """Wait for groups still being recorded; cancel what is left after ``grace`` seconds."""
        if not self._pending:
            return
        log.info("waiting for %d group(s) still being recorded", len(self._pending))
        pending = set(self._pending)
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            log.error("%d group(s) were still being recorded after %g s", len(late), grace)
            await asyncio.gather(*late, return_exceptions=True)


def _too_large(size: str, limit: int) -> str:
    return f"body of {size} exceeds the limit of {limit} bytes (receiver.max_body_bytes)"


def _answer(http_status: int, /, **body: Any) -> web.Response:
    return web.json_response(body, status=http_status)


def _report_abandoned(group: AlertGroup) -> Any:
    def report(task: asyncio.Future[None]) -> None:
        if task.cancelled():
            log.error("recording group %s was cancelled after its request", group.group_key)
        elif (error := task.exception()) is not None:
            log.error(
                "recording group %s failed after its request was cancelled: %s",
                group.group_key,
                error,
            )
        else:
            log.info("recorded group %s after its request was cancelled", group.group_key)

    return report


WEBHOOK_KEY = web.AppKey("webhook", Webhook)
"""The application's :class:`Webhook` (its pending recordings, for tests and shutdown)."""


def create_app(
    config: ReceiverConfig,
    intake: Intake,
    registry: CollectorRegistry | None = None,
    *,
    authenticator: Authenticator | None = None,
) -> web.Application:
    """The receiver's application: ``/healthz``, ``/metrics`` and the webhook.

    ``authenticator`` defaults to one built from ``config.auth`` (reading its secret
    files; :class:`~kubeballast.core.errors.ConfigError` if none is configured). The
    engine adds its own routes to the returned application, wrapping them with
    :func:`~.auth.authenticated`.
    """
    registry = registry if registry is not None else CollectorRegistry()
    if authenticator is None:
        authenticator = Authenticator.from_config(config.auth)
    webhook = Webhook(config, intake, authenticator, registry)
    app = create_base_app(registry)
    app[AUTHENTICATOR_KEY] = authenticator
    app[WEBHOOK_KEY] = webhook
    app.router.add_post(config.path, webhook.handle)

    async def drain_on_cleanup(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[WEBHOOK_KEY].drain()

    app.cleanup_ctx.append(drain_on_cleanup)
    return app
