"""Fixtures of the self-check tests: a small simulated cluster (made healthy, or as
generated), a real etcd member with a verified backup, and the self-check's settings
pointing at both.

The simulator runs in-process with no kubelets or controllers, so nothing writes to
it but the test's own setup: the read-only proof compares its revision and its count
of mutating requests around a run. etcd is the real binary (tests/etcd/harness.py).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from selfcheck_support import Admin, Cluster, etcd_harness, make_healthy, small, start_cluster

from kubeballast.core.config import EtcdBackupConfig, EtcdClusterConfig
from kubeballast.core.etcdops import BackupSettings, backup


@pytest.fixture
async def generated(tmp_path: Path) -> AsyncIterator[Cluster]:
    """The small cluster as the scenario generates it (Events not split, no guard),
    with the scheduler and controller-manager endpoints."""
    async for cluster in _cluster(tmp_path, components=True):
        yield cluster


@pytest.fixture
async def quiet(tmp_path: Path) -> AsyncIterator[Cluster]:
    """The small cluster with nothing running beside the apiserver: no request but the
    test's changes its revision."""
    async for cluster in _cluster(tmp_path, components=False):
        yield cluster


async def _cluster(tmp_path: Path, *, components: bool) -> AsyncIterator[Cluster]:
    server, path = await start_cluster(small(), tmp_path, components=components)
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    try:
        async with aiohttp.ClientSession(base_url=server.url, headers=headers) as session:
            yield Cluster(server, path, Admin(server, session), session)
    finally:
        await server.stop()


@pytest.fixture
async def healthy(generated: Cluster) -> Cluster:
    """The small cluster with every checklist item it can hold made to hold."""
    await make_healthy(generated.admin)
    return generated


@dataclass
class Etcd:
    cluster: Any
    """tests/etcd/harness.py EtcdCluster."""
    config: EtcdClusterConfig
    backups: Path


SHM = "/dev/shm"
QUOTA = 4 * 1024**3
"""An explicit quota (not etcd's 2 GiB default), as the seed asks."""


@pytest.fixture
def etcd_factory(tmp_path: Path) -> Iterator[Any]:
    """``await etcd_factory(size, quota=..., backup=True)``: a started real etcd
    cluster and its configuration; every one is killed at teardown."""
    harness = etcd_harness()
    started: list[Any] = []
    scratch: list[Path] = []

    async def start(
        size: int = 1, *, quota: int = QUOTA, with_backup: bool = True, in_memory: bool = False
    ) -> Etcd:
        directory = tmp_path / f"etcd{len(started)}"
        if in_memory:
            # tmpfs: an fsync that is as fast as an SSD's, whatever this machine's disk
            # is, for tests that need the disk check to pass.
            memory = Path(tempfile.mkdtemp(prefix="selfcheck-etcd-", dir=SHM))
            scratch.append(memory)
            directory = memory / "etcd"
        cluster = harness.EtcdCluster(directory, size, quota_backend_bytes=quota)
        started.append(cluster)
        directory.mkdir(parents=True)
        await asyncio.to_thread(cluster.start)  # blocks until healthy: off the loop
        backups = tmp_path / f"backups{len(started)}"
        backups.mkdir()
        config = EtcdClusterConfig(
            name="main",
            endpoints=tuple(cluster.endpoints),
            backup=EtcdBackupConfig(directory=str(backups), etcdctl=harness.binary("etcdctl")),
        )
        if with_backup:
            async with cluster.client() as client:
                result = await backup(
                    client,
                    "main",
                    BackupSettings(directory=backups, etcdctl=harness.binary("etcdctl")),
                )
            assert result.verified
        return Etcd(cluster, config, backups)

    try:
        yield start
    finally:
        for cluster in started:
            cluster.close()
        for directory in scratch:
            shutil.rmtree(directory, ignore_errors=True)
