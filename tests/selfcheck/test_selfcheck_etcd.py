"""The etcd checks against real etcd: quota nearly full, stale and missing backups,
members down, quorum lost, no restore plan.

Each case starts from a healthy member (an explicit quota, a fresh verified backup
taken by ``kube-ballast etcd backup``'s own function), breaks one thing for real
(writes until the database approaches its quota, ages the backup's sidecar, kills
members), runs the etcd checks and asserts the status, the cause in the summary and
the values in the evidence.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from loopback import poll
from selfcheck_support import Cluster, check, run

from kubeballast.core.config import EtcdClusterConfig
from kubeballast.selfcheck.model import Status

pytestmark = pytest.mark.timeout(180)


async def db_size(etcd: Any) -> int:
    async with etcd.cluster.client() as client:
        status = await client.status(etcd.cluster.endpoints[0])
    size: int = status.db_size
    return size


async def fill(etcd: Any, mib: int) -> None:
    value = os.urandom(64 * 1024)
    async with etcd.cluster.client(timeout=10.0) as client:
        for index in range(mib * 16):
            await client.put(
                etcd.cluster.endpoints[0], f"/registry/configmaps/big/cm{index}", value
            )


async def requota(etcd: Any, quota: int) -> None:
    """Restart the member with another --quota-backend-bytes (its data kept)."""
    etcd.cluster.quota_backend_bytes = quota
    await asyncio.to_thread(etcd.cluster.stop, 0)
    await asyncio.to_thread(etcd.cluster.restart, 0)


async def test_selfcheck_etcd_quota_nearly_full_warns_then_fails(
    quiet: Cluster, etcd_factory: Any
) -> None:
    etcd = await etcd_factory(1, with_backup=False)
    settings = quiet.settings(etcd=(etcd.config,))
    await fill(etcd, 2)
    # etcd commits its backend in batches (every 100 ms): a restart settles the size.
    await requota(etcd, etcd.cluster.quota_backend_bytes)
    size = await db_size(etcd)

    # The database grows in steps of bbolt's allocations, so rather than writing up to
    # a ratio, the quota is set (by restarting the member, as an operator would) so
    # that the database stands at 88 %, then at 97 % of it.
    await requota(etcd, int(size / 0.88))
    assert await db_size(etcd) == size
    result = check(await run(settings, "etcd.quota"), "etcd.quota")
    assert result.status is Status.WARN, result
    assert "at 88% of its quota" in result.summary
    (values,) = result.evidence.values()
    assert values["quota_backend_bytes"] == int(size / 0.88)
    assert values["db_size_bytes"] == size
    assert values["usage_ratio"] == pytest.approx(0.88, abs=0.001)

    await requota(etcd, int(size / 0.97))
    result = check(await run(settings, "etcd.quota"), "etcd.quota")
    assert result.status is Status.FAIL, result
    assert "at 97% of its quota" in result.summary
    assert "EtcdDatabaseQuotaLowSpace" in result.fix


async def test_selfcheck_etcd_default_quota_warns(quiet: Cluster, etcd_factory: Any) -> None:
    etcd = await etcd_factory(1, quota=2 * 1024**3, with_backup=False)
    result = check(await run(quiet.settings(etcd=(etcd.config,)), "etcd.quota"), "etcd.quota")
    assert result.status is Status.WARN
    assert "2 GiB default" in result.summary
    assert "--quota-backend-bytes" in result.fix


def age_backup(backups: Path, seconds: float) -> None:
    (sidecar,) = backups.glob("*.json")
    document = json.loads(sidecar.read_text())
    document["created_unix"] = time.time() - seconds
    sidecar.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("age_hours", "status", "cause"),
    [(0.0, Status.PASS, ""), (4.0, Status.WARN, "4.0 h old"), (30.0, Status.FAIL, "30.0 h old")],
)
async def test_selfcheck_etcd_backup_freshness(
    quiet: Cluster, etcd_factory: Any, age_hours: float, status: Status, cause: str
) -> None:
    etcd = await etcd_factory(1)
    await asyncio.to_thread(age_backup, etcd.backups, age_hours * 3600)

    result = check(await run(quiet.settings(etcd=(etcd.config,)), "etcd.backups"), "etcd.backups")

    assert result.status is status, result
    assert cause in result.summary
    assert result.evidence["main"]["newest_age_seconds"] == pytest.approx(age_hours * 3600, abs=60)
    assert result.evidence["main"]["newest_verified"] is True


async def test_selfcheck_etcd_no_backup_fails_and_the_plan_lacks_strategy_3(
    quiet: Cluster, etcd_factory: Any
) -> None:
    etcd = await etcd_factory(1, with_backup=False)

    report = await run(quiet.settings(etcd=(etcd.config,)), "etcd.backups", "etcd.restore_plan")

    backups = check(report, "etcd.backups")
    assert backups.status is Status.FAIL
    assert "no finished backup" in backups.summary
    assert backups.evidence["main"]["snapshots"] == 0
    plan = check(report, "etcd.restore_plan")
    assert plan.status is Status.WARN
    assert "no verified backup" in plan.summary
    assert plan.evidence["main"]["quorum"] is True
    assert len(plan.evidence["main"]["strategies"]) >= 2


async def test_selfcheck_etcd_restore_plan_fails_when_no_member_is_known(
    quiet: Cluster, free_port: int
) -> None:
    # Nothing answers, and the configuration names no members for the plan.
    dead = EtcdClusterConfig(name="main", endpoints=(f"http://127.0.0.1:{free_port}",))

    report = await run(quiet.settings(etcd=(dead,)), "etcd.restore_plan", "etcd.members")

    plan = check(report, "etcd.restore_plan")
    assert plan.status is Status.FAIL
    assert "no members configured" in plan.summary
    members = check(report, "etcd.members")
    assert members.status is Status.FAIL
    assert "quorum lost" in members.summary


async def test_selfcheck_etcd_member_down_warns_and_quorum_lost_fails(
    quiet: Cluster, etcd_factory: Any
) -> None:
    etcd = await etcd_factory(3, with_backup=False)
    settings = quiet.settings(etcd=(etcd.config,))

    await asyncio.to_thread(etcd.cluster.kill, 2)
    # When the killed member led, the others elect a new leader within an election
    # timeout or two; until then the cluster has no leader, which is a FAIL of its own.
    result = check(await run(settings, "etcd.members"), "etcd.members")
    deadline = asyncio.get_running_loop().time() + 30
    while result.status is Status.FAIL and asyncio.get_running_loop().time() < deadline:
        result = check(await run(settings, "etcd.members"), "etcd.members")
    assert result.status is Status.WARN, result
    assert "m2" in result.summary
    assert "unreachable" in result.summary
    assert result.evidence["main"]["quorum"] is True

    await asyncio.to_thread(etcd.cluster.kill, 1)
    result = check(await run(settings, "etcd.members"), "etcd.members")
    assert result.status is Status.FAIL, result
    assert "quorum lost" in result.summary
    assert result.evidence["main"]["quorum"] is False


async def test_selfcheck_etcd_fragmented_database_warns(quiet: Cluster, etcd_factory: Any) -> None:
    # In memory (tmpfs): 160 MiB of rewrites take seconds rather than a disk's minutes.
    etcd = await etcd_factory(1, with_backup=False, in_memory=True)
    endpoint = etcd.cluster.endpoints[0]
    value = os.urandom(512 * 1024)
    async with etcd.cluster.client(timeout=30.0) as client:
        # Events churn: the same few keys rewritten, every old version kept until a
        # compaction frees it; the file keeps its size, only a defragmentation shrinks it.
        revision = 0
        for index in range(320):
            revision = await client.put(endpoint, f"/registry/events/e{index % 4}", value)
        await client.compact(endpoint, revision)

        # Freed pages are released to the free list by the backend's next commits.
        async def released() -> bool:
            await client.put(endpoint, "/registry/events/tick", b"x")
            status = await client.status(endpoint)
            return status.db_size_in_use is not None and status.db_size_in_use < status.db_size / 3

        await poll(released, "the compacted pages were not released to the free list", 30)

    result = check(
        await run(quiet.settings(etcd=(etcd.config,)), "etcd.fragmentation"), "etcd.fragmentation"
    )

    assert result.status is Status.WARN, result
    assert "reclaimable" in result.summary
    (values,) = result.evidence.values()
    assert values["in_use_ratio"] < 0.5
    assert values["db_size_bytes"] - values["db_size_in_use_bytes"] > 100 * 1024 * 1024
    assert "kube-ballast etcd defrag" in result.fix
