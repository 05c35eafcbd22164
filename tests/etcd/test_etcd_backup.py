"""Backups against real etcd: a verified snapshot from a follower, its sidecar, the
retention rules, the hook, and the refusal without quorum.

Processes are real etcd members (conftest.py); etcdctl reads the files. Nothing sleeps
to synchronise.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from harness import EtcdCluster, binary

from kubeballast.core.etcd import hex_id
from kubeballast.core.etcdbackup import (
    BackupError,
    list_backups,
    newest_verified_backup,
    prune_backups,
    read_sidecar,
    snapshot_name,
    snapshot_status,
    verify_snapshot_file,
)
from kubeballast.core.etcdops import BackupSettings, QuorumLost, backup


def read(path: Path) -> bytes:
    # A plain function: the tests' event loop has nothing else to do meanwhile.
    return path.read_bytes()


def file_size(path: Path) -> int:
    return path.stat().st_size


def settings(directory: Path, **changes: object) -> BackupSettings:
    return BackupSettings(directory=directory, etcdctl=binary("etcdctl"), **changes)  # type: ignore[arg-type]


async def fill(cluster: EtcdCluster, count: int = 50) -> int:
    async with cluster.client() as client:
        revision = 0
        for index in range(count):
            revision = await client.put(
                cluster.endpoints[0], f"/registry/pods/p{index}", b"x" * 512
            )
    return revision


async def test_backup_from_a_follower_is_verified_and_described(
    etcd3: EtcdCluster, tmp_path: Path
) -> None:
    written_revision = await fill(etcd3)
    leader = await etcd3.leader()
    directory = tmp_path / "backups"
    async with etcd3.client() as client:
        result = await backup(client, "main", settings(directory))

    # A follower served it; the leader was left alone.
    assert result.member_id != hex_id(etcd3.members[leader].member_id)
    assert result.member in {m.name for m in etcd3.members}
    assert result.verified
    assert result.ok
    path = Path(result.path)
    assert path.parent == directory
    assert path.name.startswith("etcd-main-")
    assert path.suffix == ".db"
    assert not list(directory.glob("*.part"))

    # What is on disk is what the result says, and etcdctl agrees on the revision.
    size, digest = await verify_snapshot_file(path)
    assert (size, digest) == (result.size, result.sha256) == (file_size(path), digest)
    status = await snapshot_status(path, etcdctl=binary("etcdctl"))
    assert status.revision == result.revision >= written_revision
    assert status.keys == result.keys > 50

    sidecar = read_sidecar(path)
    assert sidecar is not None
    assert Path(result.sidecar) == path.with_name(path.name + ".json")
    assert sidecar["format"] == 1
    assert sidecar["snapshot"] == path.name
    assert sidecar["verified"] is True
    for key in ("size_bytes", "sha256", "revision", "keys", "member_id", "raft_term"):
        assert sidecar[key] == (result.size if key == "size_bytes" else getattr(result, key))
    assert sidecar["db_size_bytes"] == result.size - 32
    assert sidecar["hook"] is None

    line = json.loads(json.dumps(result.to_json()))
    assert line["operation"] == "backup"
    for key in ("path", "size", "sha256", "revision", "keys", "member", "duration_seconds"):
        assert key in line
    assert line["verified"] is True


async def test_a_single_member_is_backed_up_from_the_leader(
    etcd1: EtcdCluster, tmp_path: Path
) -> None:
    async with etcd1.client() as client:
        result = await backup(client, "solo", settings(tmp_path))
    assert result.member_id == hex_id(etcd1.members[0].member_id)
    newest = newest_verified_backup(tmp_path, "solo")
    assert newest is not None
    assert str(newest.path) == result.path


async def test_hook_gets_the_path_and_its_status_is_recorded(
    etcd1: EtcdCluster, tmp_path: Path
) -> None:
    copy = tmp_path / "offsite.db"
    hook = ("sh", "-c", f'cp "$1" {copy}', "upload")
    async with etcd1.client() as client:
        good = await backup(client, "main", settings(tmp_path / "b", hook_command=hook))
        failing = await backup(
            client,
            "main",
            settings(tmp_path / "b", hook_command=("sh", "-c", "echo no >&2; exit 3")),
        )
        slow = await backup(
            client,
            "main",
            settings(
                tmp_path / "b",
                hook_command=(sys.executable, "-c", "import time; time.sleep(600)"),
                hook_timeout_seconds=0.5,
            ),
        )
    assert good.hook is not None
    assert good.hook.exit_status == 0
    assert good.ok
    assert read(copy) == read(Path(good.path))
    assert good.hook.command[-1] == good.path
    sidecar = read_sidecar(Path(good.path))
    assert sidecar is not None
    assert sidecar["hook"]["exit_status"] == 0

    assert failing.hook is not None
    assert (failing.hook.exit_status, failing.hook.timed_out) == (3, False)
    assert "no" in failing.hook.output_tail
    assert failing.verified
    assert not failing.ok

    assert slow.hook is not None
    assert (slow.hook.exit_status, slow.hook.timed_out) == (None, True)
    assert slow.hook.duration_seconds < 60


async def test_backup_refuses_without_quorum_unless_asked(
    etcd3: EtcdCluster, tmp_path: Path
) -> None:
    await fill(etcd3, 5)
    etcd3.kill(0)
    etcd3.kill(1)
    async with etcd3.client(timeout=3.0) as client:
        with pytest.raises(QuorumLost) as caught:
            await backup(client, "main", settings(tmp_path))
        message = str(caught.value)
        assert "refusing to take a backup" in message
        # 0 or 1: the survivor may still name a killed leader for a moment.
        assert re.search(r"quorum lost: [01] of 3 voting members", message), message
        assert "restore-plan" in message
        assert list_backups(tmp_path, "main") == []

        # Recovery strategy 2 starts with a snapshot of the survivor: no leader needed.
        rescued = await backup(client, "main", settings(tmp_path), allow_no_quorum=True)
    assert rescued.endpoint == etcd3.endpoints[2]
    assert rescued.revision >= 5


def make_backup(directory: Path, when: float, *, verified: bool = True) -> Path:
    path = directory / snapshot_name("main", when)
    path.write_bytes(b"snapshot")
    if verified:
        path.with_name(path.name + ".json").write_text(json.dumps({"verified": True}))
    return path


def test_retention_by_count_and_age_keeps_the_newest_verified(tmp_path: Path) -> None:
    now = 1_750_000_000.0
    hour = 3600.0
    newest_unverified = make_backup(tmp_path, now - 1 * hour, verified=False)
    recent = make_backup(tmp_path, now - 2 * hour)
    older = make_backup(tmp_path, now - 3 * hour)
    oldest = make_backup(tmp_path, now - 30 * hour)
    other_cluster = tmp_path / snapshot_name("events", now - 99 * hour)
    other_cluster.write_bytes(b"x")
    stranger = tmp_path / "notes.db"
    stranger.write_bytes(b"x")

    removed = prune_backups(tmp_path, "main", keep_count=3, keep_max_age_seconds=24 * hour, now=now)
    assert removed == [str(oldest)]
    assert not oldest.with_name(oldest.name + ".json").exists()

    removed = prune_backups(tmp_path, "main", keep_count=1, keep_max_age_seconds=24 * hour, now=now)
    # The newest is unverified: the newest verified one stays whatever the count.
    assert removed == [str(older)]
    assert newest_unverified.exists()
    assert recent.exists()

    # Everything is too old, yet the newest verified backup survives.
    removed = prune_backups(tmp_path, "main", keep_count=5, keep_max_age_seconds=60, now=now)
    assert removed == [str(newest_unverified)]
    assert [b.path for b in list_backups(tmp_path, "main")] == [recent]
    assert other_cluster.exists()
    assert stranger.exists()


async def test_a_truncated_snapshot_does_not_verify(etcd1: EtcdCluster, tmp_path: Path) -> None:
    async with etcd1.client() as client:
        result = await backup(client, "main", settings(tmp_path))
    broken = tmp_path / "broken.db"
    data = read(Path(result.path))
    broken.write_bytes(data[: len(data) // 2] + data[-32:])
    with pytest.raises(BackupError, match="does not match the digest"):
        await verify_snapshot_file(broken)
    os.truncate(broken, 10)
    with pytest.raises(BackupError, match="too short"):
        await verify_snapshot_file(broken)


def test_backup_names_sort_by_time() -> None:
    names = [snapshot_name("main", t) for t in (1.0, 1.001, 60.0, 1_750_000_000.5)]
    assert names == sorted(names)
    assert names[-1] == "etcd-main-20250615T150640.500Z.db"
