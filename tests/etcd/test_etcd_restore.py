"""Restores and restore plans against real etcd: a backup restored into new data dirs
starts as a new cluster (one member, and three) that serves the keys back; a restore
never writes over existing data; the plan's commands carry the cluster's names, URLs,
token and data dirs, and the plan is still made when quorum is lost.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from harness import EtcdCluster, binary, reserve_ports

from kubeballast.core.config import EtcdMemberConfig, EtcdRestoreConfig
from kubeballast.core.etcdbackup import BackupError, restore_snapshot
from kubeballast.core.etcdops import BackupSettings, backup, restore_plan


def settings(directory: Path) -> BackupSettings:
    return BackupSettings(directory=directory, etcdctl=binary("etcdctl"))


KEYS = {f"/registry/configmaps/default/c{index}": f"value {index}" for index in range(20)}


async def seed(cluster: EtcdCluster) -> None:
    async with cluster.client() as client:
        for key, value in KEYS.items():
            await client.put(cluster.endpoints[0], key, value)


async def read_back(cluster: EtcdCluster) -> dict[str, str]:
    async with cluster.client() as client:
        found = {}
        for endpoint in cluster.endpoints:
            answer = await client.range(endpoint, "/registry/", "/registry0", serializable=True)
            found[endpoint] = {kv.key.decode(): kv.value.decode() for kv in answer.kvs}
    first = next(iter(found.values()))
    assert all(values == first for values in found.values()), found
    return first


def exists(path: Path) -> bool:
    return path.exists()


def prepare(directory: Path, size: int) -> EtcdCluster:
    """A harness cluster on fresh ports that is not started: its members are started
    later on data dirs made by the restore."""
    directory.mkdir(parents=True)
    cluster = EtcdCluster(directory, size)
    ports = reserve_ports(2 * size)
    for member in cluster.members:
        member.client_port = ports[2 * member.index]
        member.peer_port = ports[2 * member.index + 1]
    return cluster


async def test_a_backup_restored_into_a_new_dir_serves_the_keys(
    etcd1: EtcdCluster, tmp_path: Path
) -> None:
    await seed(etcd1)
    async with etcd1.client() as client:
        taken = await backup(client, "main", settings(tmp_path / "backups"))

    target = prepare(tmp_path / "restored", 1)
    member = target.members[0]
    try:
        result = await restore_snapshot(
            taken.path,
            data_dir=member.data_dir,
            name=member.name,
            initial_cluster=f"{member.name}={member.peer_url}",
            initial_cluster_token=target.token,
            initial_advertise_peer_urls=member.peer_url,
            etcdctl=binary("etcdctl"),
        )
        assert result.revision == taken.revision
        assert result.sha256 == taken.sha256
        assert exists(Path(result.data_dir, "member", "snap", "db"))
        target.restart(0)  # starts etcd on the restored data dir
        assert await read_back(target) == KEYS
        async with target.client() as client:
            status = await client.status(target.endpoints[0])
            original = await client.status(etcd1.endpoints[0])
        assert status.revision >= taken.revision
        assert status.cluster_id != original.cluster_id  # a new cluster, not a rejoin
    finally:
        target.close()


async def test_three_new_members_restored_from_one_backup_form_a_cluster(
    etcd1: EtcdCluster, tmp_path: Path
) -> None:
    await seed(etcd1)
    async with etcd1.client() as client:
        taken = await backup(client, "main", settings(tmp_path / "backups"))
    target = prepare(tmp_path / "rebuilt", 3)
    initial = ",".join(f"{m.name}={m.peer_url}" for m in target.members)
    try:
        for member in target.members:
            await restore_snapshot(
                taken.path,
                data_dir=member.data_dir,
                name=member.name,
                initial_cluster=initial,
                initial_cluster_token=target.token,
                initial_advertise_peer_urls=member.peer_url,
                etcdctl=binary("etcdctl"),
            )
        for index in range(3):
            target.restart(index, wait=False)
        target.wait_healthy()
        assert await read_back(target) == KEYS
        await target.leader()
    finally:
        target.close()


async def test_restore_refuses_an_existing_data_dir(etcd1: EtcdCluster, tmp_path: Path) -> None:
    async with etcd1.client() as client:
        taken = await backup(client, "main", settings(tmp_path / "backups"))
    occupied = tmp_path / "occupied"
    (occupied / "member").mkdir(parents=True)
    with pytest.raises(BackupError, match="exists and is not empty"):
        await restore_snapshot(
            taken.path,
            data_dir=occupied,
            name="m0",
            initial_cluster="m0=http://127.0.0.1:2380",
            initial_cluster_token="t",
            initial_advertise_peer_urls="http://127.0.0.1:2380",
            etcdctl=binary("etcdctl"),
        )
    assert [p.name for p in occupied.iterdir()] == ["member"]
    # An empty folder (a fresh mount point) is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    result = await restore_snapshot(
        taken.path,
        data_dir=empty,
        name="m0",
        initial_cluster="m0=http://127.0.0.1:2380",
        initial_cluster_token="t",
        initial_advertise_peer_urls="http://127.0.0.1:2380",
        etcdctl=binary("etcdctl"),
    )
    assert result.data_dir == str(empty)


def commands_of(plan_text: str) -> list[list[str]]:
    lines = [line for line in plan_text.splitlines() if line and not line.startswith("#")]
    return [shlex.split(line, comments=True) for line in lines]


async def test_plan_from_the_live_member_list_names_everything(
    etcd3: EtcdCluster, tmp_path: Path
) -> None:
    await seed(etcd3)
    async with etcd3.client() as client:
        taken = await backup(client, "main", settings(tmp_path))
    # A follower goes down: the cluster keeps its quorum and leader.
    victim = (await etcd3.leader() + 1) % 3
    etcd3.kill(victim)
    down = etcd3.members[victim]
    restore = EtcdRestoreConfig(data_dir="/var/lib/etcd", restore_data_dir="/var/lib/etcd-new")
    async with etcd3.client(timeout=3.0) as client:
        plan = await restore_plan(
            client, "main", restore, backup_directory=str(tmp_path), token="tok-1"
        )
    assert plan.quorum is True
    assert {m.name: m.state for m in plan.members} == {
        m.name: "down" if m is down else "up" for m in etcd3.members
    }
    initial = plan.initial_cluster
    assert sorted(initial.split(",")) == sorted(f"{m.name}={m.peer_url}" for m in etcd3.members)
    assert plan.backup_path == taken.path
    assert [s.number for s in plan.strategies] == [1, 2, 3]

    text = plan.to_text()
    commands = commands_of(text)
    # Strategy 1 restarts the down member with its data dir and offers the replacement.
    restarts = [c for c in commands if c[:2] == ["etcd", f"--name={down.name}"]]
    assert any("--data-dir=/var/lib/etcd" in c for c in restarts)
    member_id = f"{down.member_id:x}"
    assert any(c[-3:] == ["member", "remove", member_id] for c in commands)
    # Strategies 2 and 3: one restore per member with every flag the seed lists.
    restores = [
        c for c in commands if "restore" in c and c[:3] == ["ETCDCTL_API=3", "etcdctl", "snapshot"]
    ]
    assert len(restores) == 6
    for member in etcd3.members:
        wanted = {
            f"--name={member.name}",
            "--data-dir=/var/lib/etcd-new",
            f"--initial-cluster={initial}",
            "--initial-cluster-token=tok-1",
            f"--initial-advertise-peer-urls={member.peer_url}",
        }
        mine = [c for c in restores if f"--name={member.name}" in c]
        assert len(mine) == 2
        assert all(wanted <= set(c) for c in mine)
        assert taken.path in mine[1]  # strategy 3 uses the newest verified backup
        starts = [c for c in commands if c[:2] == ["etcd", f"--name={member.name}"]]
        assert any("--initial-cluster-state=new" in c for c in starts)
    assert f"revision {taken.revision}" in text
    assert plan.to_json()["strategies"][2]["steps"]


async def test_plan_without_quorum_uses_the_configured_members(
    etcd3: EtcdCluster, tmp_path: Path
) -> None:
    etcd3.kill(0)
    etcd3.kill(1)
    restore = EtcdRestoreConfig(
        initial_cluster_token="etcd-main",
        members=tuple(
            EtcdMemberConfig(name=m.name, peer_url=m.peer_url, client_url=m.client_url)
            for m in etcd3.members
        ),
    )
    async with etcd3.client(timeout=3.0) as client:
        plan = await restore_plan(client, "main", restore, backup_directory=str(tmp_path))
    assert plan.quorum is False
    assert any("quorum is lost" in note for note in plan.notes)
    assert [m.state for m in plan.members] == ["down", "down", "up"]
    assert plan.initial_cluster_token == "etcd-main"
    assert plan.backup_path is None
    text = plan.to_text()
    # Strategy 2 snapshots the survivor.
    assert f"--endpoints={etcd3.endpoints[2]} snapshot save" in text
    assert "quorum: LOST" in text
