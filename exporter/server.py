"""The exporter process: serve the application and supervise the sources.

``kube-ballast exporter`` runs :func:`run_exporter` until SIGTERM/SIGINT cancels it
(``kubeballast.core.runtime``). Two things run side by side and either ending ends the
process: the HTTP server (which starts the sources with the application and stops them,
and closes their clients, when it shuts down gracefully) and the source set's
supervisor, which raises if a runner task ever dies, so that a half-alive exporter
serving frozen snapshots is restarted by its Deployment instead (STYLE.md item 10).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry

from kubeballast.core.config import ExporterConfig
from kubeballast.core.web import serve
from kubeballast.exporter.app import build_exporter
from kubeballast.exporter.catalog import Catalog

__all__ = ["create_app", "run_exporter"]


def create_app(
    config: ExporterConfig,
    registry: CollectorRegistry | None = None,
    *,
    catalog: Catalog | None = None,
) -> web.Application:
    """The exporter's application, metrics in ``registry`` (a new one by default).

    Starting the application starts the sources; use :func:`run_exporter` to also
    supervise them. ``catalog`` defaults to every area kube-ballast ships.
    """
    return build_exporter(config, registry=registry, catalog=catalog).create_app()


async def run_exporter(config: ExporterConfig, *, catalog: Catalog | None = None) -> None:
    """Serve until cancelled; raise if a source's task dies (``kube-ballast exporter``)."""
    exporter = build_exporter(config, catalog=catalog)
    app = exporter.create_app()
    server = asyncio.create_task(
        serve(app, config.listen.host, config.listen.port, name="exporter"), name="exporter-http"
    )
    supervisor = asyncio.create_task(exporter.sources.wait(), name="exporter-sources")
    try:
        done, _ = await asyncio.wait({server, supervisor}, return_when=asyncio.FIRST_COMPLETED)
        # Whichever ended first: its exception (or a clean end of the server) ends us;
        # the finally clause shuts the other down.
        for task in done:
            task.result()
    finally:
        for task in (supervisor, server):
            task.cancel()
        await asyncio.gather(server, supervisor, return_exceptions=True)
