"""A healthy cluster passes every check.

The cluster is the simulator made healthy (Events split, the guard installed, no
crowded workloads) with a real etcd member holding an explicit quota and a fresh,
verified backup, and the simulated controller-manager's /metrics as a target. What
cannot be checked without its input (Prometheus, Alertmanager, the receiver) must say
SKIP, and nothing may WARN or FAIL. (The read-only proof is test_selfcheck_readonly.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from selfcheck_support import Cluster, check, not_passing, run

from kubeballast.selfcheck.model import EXIT_OK, Status

pytestmark = pytest.mark.timeout(180)


async def test_selfcheck_healthy_cluster_passes(healthy: Cluster, etcd_factory: Any) -> None:
    etcd = await etcd_factory(1, in_memory=True)
    # Enough writes (each one WAL fsync) for the disk check's p99 to mean something.
    async with etcd.cluster.client() as client:
        for index in range(20):
            await client.put(etcd.cluster.endpoints[0], f"/registry/leases/l{index}", b"x")
    settings = healthy.settings(etcd=(etcd.config,))

    report = await run(settings)

    assert not_passing(report) == {}
    skipped = {c.id for c in report.checks if c.status is Status.SKIP}
    # Only the checks whose inputs were not given.
    assert skipped == {"alerts.loaded", "alerts.chain"}
    assert check(report, "alerts.chain").summary.startswith("none of --prometheus-url")
    assert report.exit_code() == EXIT_OK
    assert report.exit_code(strict=True) == EXIT_OK
    assert report.timed_out == ()
    # The evidence names what was read.
    scale = check(report, "scale.limits").evidence
    assert scale["nodes"]["current"] == 10  # 9 workers and 1 control-plane node
    assert check(report, "etcd.quota").evidence[next(iter(check(report, "etcd.quota").evidence))][
        "quota_backend_bytes"
    ] == pytest.approx(4 * 1024**3)
    assert check(report, "etcd.backups").evidence["main"]["newest_verified"] is True
    assert check(report, "apiserver.apf").evidence["node_lease_renewal"] == {
        "flowschema": "system-node-high",
        "priority_level": "node-high",
    }
