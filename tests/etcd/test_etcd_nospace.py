"""NOSPACE recovery against a real three-member cluster with a small quota: filled by
rewriting a few keys (as Events churn does) until etcd refuses writes, then
``recover_nospace`` compacts, defragments member by member, disarms every alarm and
proves with a test write that writes are accepted again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import EtcdCluster, binary

from kubeballast.core.etcd import NoSpace, hex_id
from kubeballast.core.etcdops import PROBE_KEY, BackupSettings, recover_nospace

QUOTA = 2 * 1024 * 1024


async def fill_until_nospace(cluster: EtcdCluster) -> None:
    value = os.urandom(100 * 1024)
    async with cluster.client(timeout=10.0) as client:
        for attempt in range(500):
            try:
                await client.put(cluster.endpoints[0], f"/registry/events/e{attempt % 4}", value)
            except NoSpace:
                return
    pytest.fail(f"no NOSPACE after 500 writes of 100 KiB with a {QUOTA} byte quota")


async def test_recover_nospace_brings_writes_back(
    etcd_cluster: Callable[..., EtcdCluster], tmp_path: Path
) -> None:
    cluster = etcd_cluster(3, quota_backend_bytes=QUOTA)
    await fill_until_nospace(cluster)
    leader = cluster.members[await cluster.leader()]

    async with cluster.client(timeout=10.0) as client:
        plan = await recover_nospace(client, "main")
        assert plan.dry_run
        assert plan.alarms_before
        assert all(alarm.endswith(":NOSPACE") for alarm in plan.alarms_before)
        assert [s.role for s in plan.steps] == ["follower", "follower", "leader"]
        with pytest.raises(NoSpace):  # the dry run changed nothing
            await client.put(cluster.endpoints[1], "/still", "refused")

        result = await recover_nospace(
            client,
            "main",
            dry_run=False,
            backup_settings=BackupSettings(
                directory=tmp_path / "backups", etcdctl=binary("etcdctl")
            ),
            deadline_seconds=120.0,
            health_timeout=60.0,
        )

        assert not result.dry_run
        assert not result.nothing_to_do
        assert result.compacted_revision is not None
        assert result.backup is not None
        assert result.backup.revision <= result.compacted_revision
        assert [s.state for s in result.steps] == ["done"] * 3
        assert result.steps[-1].member_id == hex_id(leader.member_id)
        assert result.disarmed >= 1
        assert result.probe_revision is not None
        assert result.probe_revision > result.compacted_revision
        assert result.reclaimed_bytes > QUOTA // 2
        assert set(result.db_size_after) == {m.name for m in cluster.members}
        assert all(size < QUOTA // 2 for size in result.db_size_after.values())

        # Writes work on every member, no alarm is left, the probe key is gone.
        for endpoint in cluster.endpoints:
            assert await client.put(endpoint, "/after/recovery", endpoint) > 0
        assert await client.alarms(cluster.endpoints[0]) == []
        assert (await client.range(cluster.endpoints[0], PROBE_KEY)).count == 0
        assert all([(await client.health(e)).healthy for e in cluster.endpoints])

        line = result.to_json()
        assert line["operation"] == "recover-nospace"
        assert line["reclaimed_bytes"] == result.reclaimed_bytes

        # Run again: nothing to do.
        again = await recover_nospace(client, "main", dry_run=False)
    assert again.nothing_to_do
    assert again.steps == ()
