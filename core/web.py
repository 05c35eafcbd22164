"""What every kube-ballast HTTP server has in common: /healthz, /metrics, build info.

The exporter and the receiver are separate processes that must not import each other,
yet both answer the kubelet's probes and Prometheus' scrapes the same way; that shared
plumbing lives here, one layer below both. Each server owns a ``CollectorRegistry``
passed in explicitly (never prometheus-client's global ``REGISTRY``), so tests can run
several servers in one process and a registry holds exactly what its server reports.

``serve()`` runs an application until it is cancelled and then shuts it down
gracefully; the process-level signal handling that cancels it is in
``kubeballast.core.runtime``.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import ssl
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubeballast import __version__

__all__ = ["REGISTRY_KEY", "BuildInfoCollector", "create_base_app", "healthz", "serve"]

log = logging.getLogger(__name__)

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
"""The application's metrics registry, for handlers and start-up hooks that add to it."""

SHUTDOWN_TIMEOUT_SECONDS = 5.0
"""How long in-flight requests may take to finish once shutdown starts (the kubelet's
default grace period is 30 s; a scrape or a webhook call takes well under a second)."""


class BuildInfoCollector(Collector):
    """``kubeballast_build_info{version, python} 1``: which build is running where."""

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "kubeballast_build_info",
            "Always 1; the labels say which kube-ballast version runs on which Python.",
            labels=["version", "python"],
        )
        family.add_metric([__version__, platform.python_version()], 1)
        yield family


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers. Readiness checks come with the sources."""
    return web.Response(text="ok")


def create_base_app(registry: CollectorRegistry) -> web.Application:
    """An application serving ``/healthz`` and ``/metrics`` from ``registry``.

    The build info collector is registered into ``registry`` here; the caller adds its
    own collectors and routes.
    """
    registry.register(BuildInfoCollector())
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    return app


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    name: str,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled, then shut down gracefully;
    over TLS when ``ssl_context`` is given.

    Access logs are off: Prometheus scrapes every few seconds and the kubelet probes
    as often, which would drown everything else.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context is not None else "http"
        for address in runner.addresses:
            log.info("%s listening on %s://%s:%d", name, scheme, *address[:2])
        await asyncio.Event().wait()  # until cancelled
    finally:
        log.info("%s shutting down", name)
        await runner.cleanup()
