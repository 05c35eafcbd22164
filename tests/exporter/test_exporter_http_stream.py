"""A metrics page that arrives in many TCP chunks is read whole: an apiserver's /metrics
is megabytes, streamed, and a client that keeps only the first buffered chunk parses a
truncated page (the bug this pins: StreamReader.read(n) returns what is buffered)."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from kubeballast.core.config import TargetConfig
from kubeballast.exporter.http import TargetClient


async def test_exporter_http_reads_a_streamed_body_whole() -> None:
    lines = [f'metric_total{{n="{i}"}} {i}\n'.encode() for i in range(40000)]

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(lines), 1000):
            await response.write(b"".join(lines[start : start + 1000]))
            await asyncio.sleep(0)  # let each write go out as its own chunk
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/metrics", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = TargetClient(
        TargetConfig(name="t", url=f"http://127.0.0.1:{port}", timeout_seconds=10)
    )
    try:
        result = await client.get("/metrics")
    finally:
        await client.close()
        await runner.cleanup()
    assert result.text.encode() == b"".join(lines)
