"""The receiver's process: Alertmanager's webhook target, /metrics and /healthz.

This is the remediation side's process boundary. :func:`run_receiver` checks the
credentials and TLS settings first (a receiver without authentication refuses to
start), then builds the engine's :class:`~.contract.Intake` and serves the
application of :mod:`.webhook` until cancelled. It shares the HTTP plumbing with the
exporter through ``kubeballast.core.web`` and never imports the exporter: the two run
as separate processes with separate permissions.

The intake comes from the engine, ``kubeballast.remediations.engine.build_intake``,
unless the caller passes a factory (tests do). It is imported when the receiver
starts, not when this module is imported, so the HTTP side can be built, tested and
documented on its own. The engine's own endpoints (``GET /records``,
``POST /approvals/{id}``) are mounted behind the same authentication as the webhook;
docs/receiver-openapi.yaml describes every endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, runtime_checkable

from aiohttp import web
from prometheus_client import CollectorRegistry

from kubeballast.core.config import ReceiverConfig
from kubeballast.core.web import serve
from kubeballast.remediations.auth import Authenticator, authenticated, server_ssl_context
from kubeballast.remediations.contract import Intake
from kubeballast.remediations.webhook import create_app

__all__ = ["Engine", "IntakeFactory", "create_app", "run_receiver"]

log = logging.getLogger(__name__)


class IntakeFactory(Protocol):
    """Builds the intake from the receiver's configuration, its metrics in ``registry``
    (``kubeballast.remediations.engine.build_intake`` has this shape)."""

    def __call__(self, config: ReceiverConfig, *, registry: CollectorRegistry) -> Intake: ...


@runtime_checkable
class Engine(Intake, Protocol):
    """An intake with a lifecycle and HTTP endpoints of its own: the engine.

    ``run_receiver`` starts it before serving, mounts its endpoints behind the
    webhook's authentication, fails when one of its tasks dies (``wait`` raises), and
    stops it after the server has answered its last request. An intake without these
    methods (a test's fake) is used as it is.
    """

    async def start(self) -> None: ...

    async def wait(self) -> None: ...

    async def stop(self) -> None: ...

    async def records_handler(self, request: web.Request) -> web.Response: ...

    async def approval_handler(self, request: web.Request) -> web.Response: ...


def _engine_intake_factory() -> IntakeFactory:
    # Imported when the receiver starts: the engine (ledger, guards, actions, a
    # Kubernetes client) is the heavier half, and nothing on the HTTP side needs it.
    from kubeballast.remediations.engine import build_intake

    return build_intake


async def run_receiver(
    config: ReceiverConfig,
    *,
    build_intake: IntakeFactory | None = None,
    registry: CollectorRegistry | None = None,
) -> None:
    """Serve until cancelled (``kube-ballast receiver``).

    Raises :class:`~kubeballast.core.errors.ConfigError` before listening when the
    credentials or the TLS files are unusable, or when no authentication is configured.
    """
    authenticator = Authenticator.from_config(config.auth)
    ssl_context = server_ssl_context(config.tls)
    if config.dry_run:
        log.info("receiver in dry-run mode: remediations are decided and recorded, not run")
    else:
        log.warning("receiver in live mode: guarded remediations will change the cluster")
    registry = registry if registry is not None else CollectorRegistry()
    factory = build_intake if build_intake is not None else _engine_intake_factory()
    intake = factory(config, registry=registry)
    app = create_app(config, intake, registry, authenticator=authenticator)
    if not isinstance(intake, Engine):
        await serve(
            app, config.listen.host, config.listen.port, name="receiver", ssl_context=ssl_context
        )
        return
    app.router.add_get("/records", authenticated(intake.records_handler))
    app.router.add_post("/approvals/{id}", authenticated(intake.approval_handler))
    await intake.start()
    # Supervised together: a dead engine task ends the process (exit 1) rather than
    # leaving a receiver that accepts groups nobody handles.
    server = asyncio.create_task(
        serve(
            app, config.listen.host, config.listen.port, name="receiver", ssl_context=ssl_context
        ),
        name="receiver-server",
    )
    watch = asyncio.create_task(intake.wait(), name="engine-watch")
    try:
        done, _ = await asyncio.wait({server, watch}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raises what ended it
        raise RuntimeError("the remediation engine stopped on its own")
    finally:
        # The server first: its cleanup waits for groups still being recorded.
        for task in (server, watch):
            task.cancel()
        await asyncio.gather(server, watch, return_exceptions=True)
        await intake.stop()
