"""The congestion check on the simulator: calm, then congested while a kubelet's
heartbeats are being rejected, as the seed's first self-check item describes.

A node's kubelet is played over HTTP (its own token, ``system:node:node-0000``),
renewing its Lease every 50 ms: the simulator classifies those requests into the
node-high priority level and, under its ``congestion`` fault, answers most of them 429
and counts them in ``apiserver_flowcontrol_rejected_requests_total``, which is what the
check's two scrapes compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from pathlib import Path

import aiohttp
import pytest
from selfcheck_support import check, run, settings_for, small, start_cluster

from kubeballast.selfcheck.model import Status
from kubeballast.simulator.faults import Congestion

pytestmark = pytest.mark.timeout(120)

NODE_TOKEN = "token-node-0000"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-0000"


async def heartbeats(url: str, stop: asyncio.Event) -> None:
    headers = {
        "Authorization": f"Bearer {NODE_TOKEN}",
        "Content-Type": "application/merge-patch+json",
    }
    async with aiohttp.ClientSession(base_url=url, headers=headers) as session:
        while not stop.is_set():
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            async with session.patch(LEASE, json={"spec": {"renewTime": now}}) as response:
                assert response.status in (200, 429), await response.text()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)  # the kubelet's renewal period


async def test_selfcheck_congestion_now_fails_with_rejected_heartbeats(tmp_path: Path) -> None:
    server, kubeconfig = await start_cluster(
        small(users={NODE_TOKEN: "system:node:node-0000"}), tmp_path, components=False
    )
    stop = asyncio.Event()
    kubelet = asyncio.create_task(heartbeats(server.url, stop))
    try:
        settings = settings_for(kubeconfig, congestion_window_seconds=1.5)
        calm = check(await run(settings, "apiserver.congestion"), "apiserver.congestion")

        server.faults.set_congestion(Congestion(reject_fraction=0.3))
        congested = check(await run(settings, "apiserver.congestion"), "apiserver.congestion")
    finally:
        stop.set()
        await kubelet
        await server.stop()

    assert calm.status is Status.PASS, calm
    assert congested.status is Status.FAIL, congested
    assert "apf_rejections_node_high" in congested.summary
    assert congested.evidence["apf_rejections_by_level"]["node-high"] > 0
    assert "KubeApiserverCongested" in congested.fix
