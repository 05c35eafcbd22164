"""Capture webhook bodies from the real Alertmanager into tests/receiver/fixtures/.

Run by hand when the Alertmanager version changes (``.venv/bin/python
tests/receiver/capture_payloads.py``); the tests read the files it writes. It also
prints the size of a 5000-alert group's body, which sizes ``receiver.max_body_bytes``.

A local HTTP server records what Alertmanager posts; the alerts are posted to
Alertmanager's API as Prometheus would (``am_harness.realistic_alert``). Group keys,
fingerprints and times are whatever Alertmanager produced: the fixtures are its
output, not ours.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from am_harness import realistic_alert, running_alertmanager

FIXTURES = Path(__file__).parent / "fixtures"


async def _capture() -> None:
    bodies: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    async def record(request: web.Request) -> web.Response:
        await bodies.put((dict(request.headers), await request.read()))
        return web.json_response({"status": "accepted"})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/webhook/alertmanager", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    token = tempfile.NamedTemporaryFile("w", suffix=".token", delete=False)  # noqa: SIM115
    token.write("capture-token\n")
    token.close()

    async def next_body(alertname: str) -> dict[str, Any]:
        while True:
            headers, body = await asyncio.wait_for(bodies.get(), 60)
            payload: dict[str, Any] = json.loads(body)
            if payload["groupLabels"].get("alertname") == alertname:
                assert headers["Authorization"] == "Bearer capture-token"
                assert headers["Content-Type"] == "application/json"
                print(f"{alertname}: {len(payload['alerts'])} alerts, {len(body)} bytes")
                return payload

    with (
        tempfile.TemporaryDirectory() as directory,
        running_alertmanager(
            Path(directory),
            f"http://127.0.0.1:{port}/webhook/alertmanager",
            credentials_file=Path(token.name),
        ) as manager,
    ):
        loop = asyncio.get_running_loop()
        firing = [realistic_alert(i) for i in range(3)]
        await loop.run_in_executor(None, manager.post_alerts, firing)
        FIXTURES.mkdir(exist_ok=True)
        payload = await next_body("KubeBallastNodeHeartbeatStale")
        _write("alertmanager_firing.json", payload)

        resolved = [realistic_alert(i, resolved=True) for i in range(3)]
        await loop.run_in_executor(None, manager.post_alerts, resolved)
        while (payload := await next_body("KubeBallastNodeHeartbeatStale"))["status"] != (
            "resolved"
        ):
            pass
        _write("alertmanager_resolved.json", payload)

        mixed = [realistic_alert(i, alertname="KubeBallastZoneDisrupted") for i in range(2)]
        mixed.append(realistic_alert(2, alertname="KubeBallastZoneDisrupted", resolved=True))
        await loop.run_in_executor(None, manager.post_alerts, mixed)
        _write("alertmanager_mixed.json", await next_body("KubeBallastZoneDisrupted"))

        big = [realistic_alert(i, alertname="KubeBallastBig") for i in range(5000)]
        await loop.run_in_executor(None, manager.post_alerts, big)
        # With group_wait 0s the first flush may catch the group half-inserted; the
        # next one (group_interval 1s later) has every alert.
        while len((await next_body("KubeBallastBig"))["alerts"]) < len(big):
            pass
    await runner.cleanup()
    os.unlink(token.name)


def _write(name: str, payload: dict[str, Any]) -> None:
    (FIXTURES / name).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    asyncio.run(_capture())
