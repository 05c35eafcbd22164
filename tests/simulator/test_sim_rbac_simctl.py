"""`kube-ballast simctl token | authz | authz-usage` against a live simulator: switching
RBAC on from the shell, minting a service-account token and reading who used what."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubeballast.simulator.server import ApiServer


async def simctl(kubeconfig: Path, *args: str) -> tuple[int, Any, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kubeballast",
        "simctl",
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    parsed = json.loads(out) if proc.returncode == 0 else None
    return proc.returncode, parsed, err.decode()


async def test_rbac_on_a_token_and_the_usage_from_the_shell(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    assert apiserver.authorization_mode == "AlwaysAllow"
    code, answer, _ = await simctl(kubeconfig, "authz", "--mode", "RBAC")
    assert (code, answer) == (0, {"mode": "RBAC"})
    code, minted, _ = await simctl(kubeconfig, "token", "kube-ballast/exporter")
    assert code == 0
    assert minted["username"] == "system:serviceaccount:kube-ballast:exporter"

    headers = {"Authorization": f"Bearer {minted['token']}"}
    async with aiohttp.ClientSession(base_url=apiserver.url, headers=headers) as exporter:
        async with exporter.get("/api/v1/nodes") as response:
            assert response.status == 403
        async with exporter.get("/version") as response:
            assert response.status == 200

    code, usage, _ = await simctl(kubeconfig, "authz-usage")
    assert code == 0
    mine = usage["users"]["system:serviceaccount:kube-ballast:exporter"]
    assert [(e["verb"], e["resource"]) for e in mine["denied"]] == [("list", "nodes")]
    assert [e["path"] for e in mine["allowed"]] == ["/version"]
    assert mine["allowed"][0]["allowedBy"]["role"]["name"] == "system:discovery"

    code, answer, _ = await simctl(kubeconfig, "authz", "--mode", "AlwaysAllow", "--reset-usage")
    assert (code, answer) == (0, {"mode": "AlwaysAllow"})
    assert apiserver.access_log.usage() == {"users": {}}


@pytest.mark.parametrize("bad", ["exporter", "kube-ballast/", "/exporter", "a/b/c"])
async def test_token_needs_namespace_slash_name(kubeconfig: Path, bad: str) -> None:
    code, _, err = await simctl(kubeconfig, "token", bad)
    assert code == 2
    assert "NAMESPACE/NAME" in err
