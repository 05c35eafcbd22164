"""The receiver's HTTP server: Alertmanager's webhook target, /metrics and /healthz.

This is the remediation side's process boundary. Today it serves only the build info
and health; the webhook route (validate the v4 payload, record it in the ledger, hand
it to a tracked task, answer at once) and the guard kernel come next. It shares the
HTTP plumbing with the exporter through ``kubeballast.core.web`` and never imports the
exporter: the two run as separate processes with separate permissions.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CollectorRegistry

from kubeballast.core.config import ReceiverConfig
from kubeballast.core.web import create_base_app, serve

__all__ = ["create_app", "run_receiver"]

log = logging.getLogger(__name__)


def create_app(
    config: ReceiverConfig, registry: CollectorRegistry | None = None
) -> web.Application:
    """The receiver's application, metrics in ``registry`` (a new one by default)."""
    return create_base_app(registry if registry is not None else CollectorRegistry())


async def run_receiver(config: ReceiverConfig) -> None:
    """Serve until cancelled (``kube-ballast receiver``)."""
    if config.dry_run:
        log.info("receiver in dry-run mode: remediations are decided and recorded, not run")
    else:
        log.warning("receiver in live mode: guarded remediations will change the cluster")
    await serve(create_app(config), config.listen.host, config.listen.port, name="receiver")
