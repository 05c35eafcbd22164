"""Fixtures that start real etcd clusters (see harness.py for how and why).

Clusters are function-scoped: most tests here kill members or fill the database, and
a fresh cluster costs well under a second for one member and one to two seconds for
three, which buys tests that cannot disturb each other. Every cluster is killed at
teardown, whether the test passed or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import EtcdCluster, TlsMaterial, make_tls_material


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[Callable[..., EtcdCluster]]:
    """A factory: ``etcd_cluster(size, quota_backend_bytes=..., tls=...)`` returns a
    started, healthy cluster; all of them are killed at teardown."""
    clusters: list[EtcdCluster] = []

    def start(size: int = 1, **options: object) -> EtcdCluster:
        cluster = EtcdCluster(tmp_path / f"cluster{len(clusters)}", size, **options)  # type: ignore[arg-type]
        clusters.append(cluster)
        cluster.directory.mkdir(parents=True)
        cluster.start()
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.close()


@pytest.fixture
def etcd1(etcd_cluster: Callable[..., EtcdCluster]) -> EtcdCluster:
    """One healthy etcd member."""
    return etcd_cluster(1)


@pytest.fixture
def etcd3(etcd_cluster: Callable[..., EtcdCluster]) -> EtcdCluster:
    """Three healthy etcd members with an elected leader."""
    return etcd_cluster(3)


@pytest.fixture
def tls_material(tmp_path: Path) -> TlsMaterial:
    """A CA, server and client certificates for 127.0.0.1, and an unrelated CA."""
    return make_tls_material(tmp_path / "pki")
