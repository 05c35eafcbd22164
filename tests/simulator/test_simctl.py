"""`kube-ballast simctl` against a live simulator: the shell side of the control API."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

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


async def test_congestion_is_set_described_and_cleared(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    code, answer, _ = await simctl(kubeconfig, "congest", "--reject-fraction", "0.4")
    assert code == 0
    assert apiserver.faults.congestion is not None
    assert apiserver.faults.congestion.reject_fraction == 0.4
    assert answer == apiserver.faults.describe()
    code, _, _ = await simctl(kubeconfig, "clear")
    assert code == 0
    assert apiserver.faults.congestion is None


async def test_stop_kubelets_in_a_zone_and_read_state(
    apiserver: ApiServer, kubeconfig: Path
) -> None:
    code, _, _ = await simctl(kubeconfig, "stop-kubelets", "--zones", "zone-a", "--fraction", "1")
    assert code == 0
    stopped = [n for n in ("node-0000", "node-0003") if apiserver.faults.kubelet_stopped(n)]
    assert stopped == ["node-0000", "node-0003"]  # the zone-a workers (i % 3 == 0)
    assert not apiserver.faults.kubelet_stopped("node-0001")
    code, state, _ = await simctl(kubeconfig, "state")
    assert code == 0
    assert state["counts"]["pods"] == apiserver.store.count(
        next(rt for rt in apiserver.store.counts() if rt.plural == "pods")
    )


async def test_advance_moves_simulated_time(apiserver: ApiServer, kubeconfig: Path) -> None:
    before = apiserver.clock.time()
    code, _, _ = await simctl(kubeconfig, "advance", "3600")
    assert code == 0
    assert apiserver.clock.time() - before >= 3600


async def test_errors_are_one_line(apiserver: ApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    code, _, err = await simctl(kubeconfig, "congest", "--reject-fraction", "7")
    assert code == 1
    assert "simulator answered 400" in err
    assert "reject_fraction" in err
    assert apiserver.faults.congestion is None
    missing = tmp_path / "nope"
    code, _, err = await simctl(missing, "state")
    assert code == 2
    assert err.strip().splitlines() == [
        f"kube-ballast: config: --kubeconfig: cannot read {missing}: No such file or directory"
    ]
