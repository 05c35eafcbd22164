"""Defragmentation against a real three-member cluster: followers one at a time, the
leader last (proven from the members' own answers), a backup first, a dry run that
changes nothing, and refusals: a member down, a leader change, a lost quorum (for
every operation that touches the cluster).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from harness import EtcdCluster, binary

from kubeballast.core.etcd import MemberStatus, hex_id
from kubeballast.core.etcdops import (
    BackupSettings,
    DefragThresholds,
    OperationRefused,
    QuorumLost,
    TermObservation,
    backup,
    defragment,
    recover_nospace,
)

EVERY_MEMBER = DefragThresholds(max_in_use_ratio=1.01, min_reclaimable_bytes=0)
"""Thresholds any member meets, so that the small test databases qualify."""


async def fragment(cluster: EtcdCluster) -> None:
    """Write, overwrite and compact: the freed pages stay in the file until a
    defragmentation (etcd's own picture of fragmentation)."""
    endpoint = cluster.endpoints[0]
    value = b"v" * 4096
    async with cluster.client(timeout=10.0) as client:
        revision = 0
        for _ in range(3):
            for index in range(150):
                revision = await client.put(endpoint, f"/registry/events/e{index}", value)
        await client.compact(endpoint, revision)


def exists(path: Path) -> bool:
    return path.exists()


async def statuses(cluster: EtcdCluster) -> dict[str, MemberStatus]:
    async with cluster.client() as client:
        return {m.name: await client.status(m.client_url) for m in cluster.members}


async def test_dry_run_plans_followers_then_leader_and_changes_nothing(
    etcd3: EtcdCluster,
) -> None:
    await fragment(etcd3)
    leader = etcd3.members[await etcd3.leader()]
    before = await statuses(etcd3)
    async with etcd3.client() as client:
        plan = await defragment(client, "main", thresholds=EVERY_MEMBER)
    assert plan.dry_run
    assert [s.state for s in plan.steps] == ["planned"] * 3
    assert [s.role for s in plan.steps] == ["follower", "follower", "leader"]
    assert plan.steps[-1].member_id == hex_id(leader.member_id)
    assert plan.backup is None
    after = await statuses(etcd3)
    assert {n: s.db_size for n, s in after.items()} == {n: s.db_size for n, s in before.items()}


async def test_followers_one_at_a_time_then_the_leader(etcd3: EtcdCluster, tmp_path: Path) -> None:
    await fragment(etcd3)
    leader = etcd3.members[await etcd3.leader()]
    before = await statuses(etcd3)
    assert all(
        s.db_size_in_use is not None and s.db_size_in_use < s.db_size for s in before.values()
    )
    async with etcd3.client(timeout=10.0) as client:
        result = await defragment(
            client,
            "main",
            thresholds=EVERY_MEMBER,
            observe_seconds=1.0,
            backup_settings=BackupSettings(
                directory=tmp_path / "backups", etcdctl=binary("etcdctl")
            ),
            dry_run=False,
            health_timeout=60.0,
        )
    steps = result.steps
    assert [s.state for s in steps] == ["done"] * 3
    # The member ids are what each member said about itself before its defragment.
    ids = {hex_id(m.member_id): m for m in etcd3.members}
    assert sorted(s.member_id for s in steps) == sorted(ids)
    assert steps[-1].member_id == hex_id(leader.member_id)
    assert [s.role for s in steps] == ["follower", "follower", "leader"]
    # One at a time: each started after the previous one was done and the cluster healthy.
    for previous, current in itertools.pairwise(steps):
        assert previous.started_unix is not None
        assert current.started_unix is not None
        assert previous.duration_seconds is not None
        assert previous.healthy_after_seconds is not None
        assert current.started_unix >= previous.started_unix + previous.duration_seconds
    for step in steps:
        assert step.db_size_after is not None
        assert step.db_size_after < step.db_size_before, step
    assert result.reclaimed_bytes > 0
    # The backup came first.
    assert result.backup is not None
    assert steps[0].started_unix is not None
    assert result.backup.created_unix <= steps[0].started_unix
    assert exists(Path(result.backup.path))

    after = await statuses(etcd3)
    for name, status in after.items():
        assert status.db_size < before[name].db_size
    assert len({s.leader for s in after.values()}) == 1
    line = result.to_json()
    assert line["operation"] == "defrag"
    assert [s["member_id"] for s in line["steps"]] == [s.member_id for s in steps]


async def test_members_below_the_thresholds_are_left_alone(etcd3: EtcdCluster) -> None:
    async with etcd3.client() as client:
        result = await defragment(client, "main", dry_run=False)
    assert result.steps == ()
    assert len(result.skipped) == 3
    assert all("threshold" in why for _, why in result.skipped)


async def test_refuses_when_a_member_is_down(etcd3: EtcdCluster, tmp_path: Path) -> None:
    await fragment(etcd3)
    victim = (await etcd3.leader() + 1) % 3
    etcd3.kill(victim)
    survivors = [m for m in etcd3.members if m.index != victim]
    async with etcd3.client(timeout=3.0) as client:
        before = {m.name: (await client.status(m.client_url)).db_size for m in survivors}
        with pytest.raises(OperationRefused) as caught:
            await defragment(
                client,
                "main",
                thresholds=EVERY_MEMBER,
                dry_run=False,
                backup_settings=BackupSettings(
                    directory=tmp_path / "backups", etcdctl=binary("etcdctl")
                ),
            )
        after = {m.name: (await client.status(m.client_url)).db_size for m in survivors}
    assert not isinstance(caught.value, QuorumLost)
    message = str(caught.value)
    assert f"member {etcd3.members[victim].name} ({etcd3.endpoints[victim]}) does not answer" in (
        message
    )
    assert after == before
    assert not exists(tmp_path / "backups")  # not even the backup


async def test_refuses_after_a_leader_change(etcd3: EtcdCluster) -> None:
    async with etcd3.client() as client:
        term = (await client.status(etcd3.endpoints[0])).raft_term
        with pytest.raises(
            OperationRefused, match=r"the leader changed since .* \(raft term \d+ -> \d+\)"
        ):
            await defragment(
                client,
                "main",
                thresholds=EVERY_MEMBER,
                previous_term=TermObservation(raft_term=term - 1, observed_unix=0.0),
                dry_run=False,
            )
        # The same term: no objection (a dry run, to change nothing).
        plan = await defragment(
            client,
            "main",
            thresholds=EVERY_MEMBER,
            previous_term=TermObservation(raft_term=term, observed_unix=0.0),
        )
    assert len(plan.steps) == 3


async def test_every_operation_refuses_without_quorum(etcd3: EtcdCluster, tmp_path: Path) -> None:
    etcd3.kill(0)
    etcd3.kill(1)
    settings = BackupSettings(directory=tmp_path / "backups", etcdctl=binary("etcdctl"))
    async with etcd3.client(timeout=3.0) as client:
        refusals = []
        for operation in (
            backup(client, "main", settings),
            defragment(client, "main", thresholds=EVERY_MEMBER, dry_run=False),
            defragment(client, "main", thresholds=EVERY_MEMBER),
            recover_nospace(client, "main", dry_run=False),
        ):
            with pytest.raises(QuorumLost) as caught:
                await operation
            refusals.append(str(caught.value))
    for message in refusals:
        assert re.search(r"refusing to .*: quorum lost: [01] of 3 voting members", message)
        assert etcd3.endpoints[0] in message
        assert etcd3.endpoints[1] in message
        assert "kube-ballast etcd restore-plan" in message
    assert not exists(tmp_path / "backups")
