"""The exporter's HTTP server: /metrics for Prometheus, /healthz for the kubelet.

This is the exporter's process boundary. Today it serves only the build info; the
sources (probes, informers) will be started next to it as supervised tasks and their
collectors registered into the same registry, which is created here and passed down,
never taken from prometheus-client's global ``REGISTRY``. Serving stays thin: a scrape
calls ``collect()`` on snapshots that the sources refreshed earlier and does no I/O.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from kubeballast.core.config import ExporterConfig
from kubeballast.core.web import create_base_app, serve

__all__ = ["create_app", "run_exporter"]


def create_app(
    config: ExporterConfig, registry: CollectorRegistry | None = None
) -> web.Application:
    """The exporter's application, metrics in ``registry`` (a new one by default)."""
    return create_base_app(registry if registry is not None else CollectorRegistry())


async def run_exporter(config: ExporterConfig) -> None:
    """Serve until cancelled (``kube-ballast exporter``)."""
    await serve(create_app(config), config.listen.host, config.listen.port, name="exporter")
