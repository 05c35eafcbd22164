"""The exporter's etcd area against real etcd: what /metrics shows for a healthy
three-member cluster, a member down (quorum kept), two members down (quorum lost), a
killed leader (a change counted, a new leader agreed), a full database (NOSPACE), and
mutual TLS.

Each test drives the real source through the real runner (``refresh_once``) and reads
the collector's output as Prometheus would, through a registry and the text format.
Waits poll refreshes with deadlines sized for a loaded two-core machine; nothing
sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import EtcdCluster, TlsMaterial
from prometheus_client import CollectorRegistry, generate_latest

from kubeballast.core import promtext
from kubeballast.core.config import EtcdClusterConfig
from kubeballast.core.etcd import NoSpace, hex_id
from kubeballast.core.promtext import Sample
from kubeballast.exporter.contract import SourceError
from kubeballast.exporter.etcd import EtcdClusterSource, EtcdCollector, member_label
from kubeballast.exporter.etcdhealth import GRPC_CODES
from kubeballast.exporter.runner import SourceRunner, SourceSet

DEADLINE = 60.0
"""Seconds for an election, a probe or a state change to show: generous on purpose."""


class Exporter:
    """One cluster's source under the runner, and the collector's text output."""

    def __init__(self, cluster: EtcdCluster, name: str = "main", **config: object) -> None:
        self.cluster = cluster
        self.name = name
        tls = cluster.tls
        settings = EtcdClusterConfig(
            name=name,
            endpoints=tuple(cluster.endpoints),
            ca_file=str(tls.ca_cert) if tls else None,
            cert_file=str(tls.client_cert) if tls else None,
            key_file=str(tls.client_key) if tls else None,
        )
        for key, value in config.items():
            object.__setattr__(settings, key, value)
        # A short call timeout: a killed member must not make every poll wait 5 s.
        self.source = EtcdClusterSource(settings, call_timeout_seconds=2.0)
        self.runner: SourceRunner[object] = SourceSet().add(self.source)
        self.collector = EtcdCollector({name: self.runner})
        self.samples: list[Sample] = []

    def member(self, index: int) -> str:
        return member_label(self.cluster.endpoints[index])

    async def refresh(self) -> list[Sample]:
        await self.runner.refresh_once()
        registry = CollectorRegistry()
        registry.register(self.collector)
        text = generate_latest(registry).decode()
        self.samples = [s for family in promtext.parse(text).values() for s in family]
        return self.samples

    def values(self, name: str, **labels: str) -> list[float]:
        return [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        found = self.values(name, etcd_cluster=self.name, **labels)
        assert len(found) == 1, f"{name} {labels}: {found}"
        return found[0]

    async def until(self, check: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
        """Refresh until ``check`` holds (polling, bounded by the deadline)."""
        deadline = time.monotonic() + within
        while True:
            await self.refresh()
            if check():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"not within {within:g} s: {what}")
            await asyncio.sleep(0.2)  # polling interval, bounded by the deadline


async def write(cluster: EtcdCluster, count: int, size: int = 100) -> None:
    async with cluster.client() as client:
        leader = cluster.endpoints[await cluster.leader()]
        for index in range(count):
            await client.put(leader, f"/registry/test/{index % 20}", "v" * size)


@pytest.fixture
def etcd3x(etcd_cluster: Callable[..., EtcdCluster]) -> EtcdCluster:
    """Three members with the gRPC latency histograms on (``--metrics=extensive``)."""
    return etcd_cluster(3, extra_args=["--metrics=extensive"])


async def test_a_healthy_cluster_shows_every_series(etcd3x: EtcdCluster) -> None:
    exporter = Exporter(etcd3x)
    await exporter.refresh()
    await write(etcd3x, 40)
    await exporter.refresh()

    assert exporter.value("kubeballast_etcd_cluster_members") == 3
    assert exporter.value("kubeballast_etcd_cluster_voting_members") == 3
    assert exporter.value("kubeballast_etcd_cluster_learners") == 0
    assert exporter.value("kubeballast_etcd_cluster_quorum_members") == 3
    assert exporter.value("kubeballast_etcd_cluster_quorum_healthy") == 1
    assert exporter.value("kubeballast_etcd_cluster_leader_agreed") == 1
    assert exporter.value("kubeballast_etcd_cluster_raft_index_spread") >= 0
    for alarm in ("NOSPACE", "CORRUPT"):
        assert exporter.value("kubeballast_etcd_cluster_alarm", alarm=alarm) == 0
    leaders = 0.0
    default_quota = 2 * 1024**3  # etcd's default --quota-backend-bytes
    for index in range(3):
        member = exporter.member(index)
        at = {"member": member}
        assert exporter.value("kubeballast_etcd_member_up", **at) == 1
        assert exporter.value("kubeballast_etcd_member_healthy", **at) == 1
        info = [s for s in exporter.samples if s.name == "kubeballast_etcd_member_info"]
        mine = [s.labels for s in info if s.labels["member"] == member]
        assert mine == [
            {
                "etcd_cluster": "main",
                "member": member,
                "name": f"m{index}",
                "member_id": hex_id(etcd3x.members[index].member_id),
                "version": mine[0]["version"],
            }
        ]
        assert mine[0]["version"].startswith("3.")
        leaders += exporter.value("kubeballast_etcd_member_is_leader", **at)
        assert exporter.value("kubeballast_etcd_member_is_learner", **at) == 0
        assert exporter.value("kubeballast_etcd_raft_index", **at) > 0
        assert exporter.value("kubeballast_etcd_raft_term", **at) >= 2
        size = exporter.value("kubeballast_etcd_db_total_size_bytes", **at)
        in_use = exporter.value("kubeballast_etcd_db_total_size_in_use_bytes", **at)
        assert 0 < in_use <= size
        assert exporter.value("kubeballast_etcd_db_in_use_ratio", **at) == pytest.approx(
            in_use / size
        )
        assert exporter.value("kubeballast_etcd_server_quota_backend_bytes", **at) == default_quota
        assert exporter.value("kubeballast_etcd_db_quota_usage_ratio", **at) == pytest.approx(
            size / default_quota
        )
        exporter.value("kubeballast_etcd_db_growth_bytes_per_second", **at)
        for alarm in ("NOSPACE", "CORRUPT"):
            assert exporter.value("kubeballast_etcd_member_alarm", alarm=alarm, **at) == 0
        assert exporter.value("kubeballast_etcd_server_has_leader", **at) == 1
        assert exporter.value("kubeballast_etcd_server_leader_changes_seen_total", **at) >= 1
        committed = exporter.value("kubeballast_etcd_server_proposals_committed", **at)
        assert committed >= exporter.value("kubeballast_etcd_server_proposals_applied", **at) - 5
        assert exporter.value("kubeballast_etcd_server_proposals_pending", **at) >= 0
        assert exporter.value("kubeballast_etcd_server_proposals_failed_total", **at) >= 0
        codes = {
            s.labels["grpc_code"]
            for s in exporter.samples
            if s.name == "kubeballast_etcd_grpc_server_handled_total"
            and s.labels["member"] == member
        }
        assert codes == set(GRPC_CODES)
        # The exporter's own status calls are unary gRPC calls that succeeded.
        assert (
            exporter.value("kubeballast_etcd_grpc_server_handled_total", grpc_code="OK", **at) > 0
        )
        for histogram in (
            "kubeballast_etcd_disk_wal_fsync_duration_seconds",
            "kubeballast_etcd_disk_backend_commit_duration_seconds",
            "kubeballast_etcd_grpc_server_unary_handling_seconds",
        ):
            assert exporter.value(f"{histogram}_bucket", le="+Inf", **at) == exporter.value(
                f"{histogram}_count", **at
            )
            assert exporter.value(f"{histogram}_count", **at) > 0
        # 40 writes between the two refreshes: every member fsynced its WAL for each.
        assert exporter.value("kubeballast_etcd_disk_evaluated", **at) == 1
        p99 = exporter.value("kubeballast_etcd_disk_wal_fsync_p99_seconds", **at)
        assert p99 > 0
        assert exporter.value("kubeballast_etcd_disk_slow", **at) == float(p99 > 0.010)
    assert leaders == 1
    assert exporter.value("kubeballast_etcd_cluster_db_quota_usage_ratio") > 0

    # etcd probes its peers' round-trip time every few seconds: each member shows a
    # histogram for each of its two peers, labelled with the peer's member id.
    ids = {hex_id(member.member_id) for member in etcd3x.members}

    def peers_measured() -> bool:
        for index in range(3):
            peers = {
                s.labels["peer"]
                for s in exporter.samples
                if s.name == "kubeballast_etcd_network_peer_round_trip_time_seconds_count"
                and s.labels["member"] == exporter.member(index)
            }
            if peers != ids - {hex_id(etcd3x.members[index].member_id)}:
                return False
        return True

    await exporter.until(peers_measured, "a round-trip histogram per peer")


async def test_one_member_down_shows_the_member_down_and_quorum_kept(etcd3: EtcdCluster) -> None:
    exporter = Exporter(etcd3)
    leader = await etcd3.leader()
    follower = (leader + 1) % 3
    await exporter.refresh()
    assert exporter.value("kubeballast_etcd_member_up", member=exporter.member(follower)) == 1

    etcd3.kill(follower)
    down = exporter.member(follower)
    await exporter.until(
        lambda: exporter.value("kubeballast_etcd_member_up", member=down) == 0, "member down"
    )
    assert exporter.value("kubeballast_etcd_member_healthy", member=down) == 0
    assert exporter.values("kubeballast_etcd_raft_index", member=down) == []
    assert exporter.value("kubeballast_etcd_cluster_members") == 3
    assert exporter.value("kubeballast_etcd_cluster_voting_members") == 3
    assert exporter.value("kubeballast_etcd_cluster_quorum_members") == 2
    assert exporter.value("kubeballast_etcd_cluster_quorum_healthy") == 1
    assert exporter.value("kubeballast_etcd_cluster_leader_agreed") == 1

    # The leader keeps trying to reach the dead member: the mixin's second signal of
    # etcdMembersDown, peer send failures, labelled with the dead member's id.
    dead_id = hex_id(etcd3.members[follower].member_id)
    await exporter.until(
        lambda: (
            sum(
                exporter.values(
                    "kubeballast_etcd_network_peer_sent_failures_total",
                    member=exporter.member(leader),
                    peer=dead_id,
                )
            )
            > 0
        ),
        "peer send failures towards the dead member",
    )


async def test_two_members_down_show_quorum_lost(etcd3: EtcdCluster) -> None:
    exporter = Exporter(etcd3)
    await exporter.refresh()
    assert exporter.value("kubeballast_etcd_cluster_quorum_healthy") == 1
    survivor = await etcd3.leader()
    for index in range(3):
        if index != survivor:
            etcd3.kill(index)
    left = exporter.member(survivor)

    # The survivor steps down once it notices it lost its followers (check quorum).
    # Status and /metrics are read one after the other, so both must have seen it.
    await exporter.until(
        lambda: (
            exporter.value("kubeballast_etcd_cluster_quorum_members") == 0
            and exporter.values(
                "kubeballast_etcd_server_has_leader", etcd_cluster="main", member=left
            )
            == [0]
        ),
        "the survivor without a leader",
    )
    assert exporter.value("kubeballast_etcd_cluster_quorum_healthy") == 0
    assert exporter.value("kubeballast_etcd_cluster_leader_agreed") == 0
    assert exporter.value("kubeballast_etcd_member_up", member=left) == 1
    assert exporter.value("kubeballast_etcd_member_healthy", member=left) == 0
    # The member list is served locally, so the membership is still known.
    assert exporter.value("kubeballast_etcd_cluster_members") == 3
    assert exporter.value("kubeballast_etcd_cluster_voting_members") == 3
    assert sum(exporter.values("kubeballast_etcd_member_up", etcd_cluster="main")) == 1


async def test_a_killed_leader_counts_a_change_and_a_new_leader_is_agreed(
    etcd3: EtcdCluster,
) -> None:
    exporter = Exporter(etcd3)
    old = await etcd3.leader()
    await exporter.refresh()
    assert exporter.value("kubeballast_etcd_member_is_leader", member=exporter.member(old)) == 1
    survivors = [exporter.member(index) for index in range(3) if index != old]
    changes_before = {
        member: exporter.value("kubeballast_etcd_server_leader_changes_seen_total", member=member)
        for member in survivors
    }
    term_before = exporter.value("kubeballast_etcd_raft_term", member=survivors[0])

    etcd3.kill(old)

    def new_leader_agreed() -> bool:
        if exporter.value("kubeballast_etcd_cluster_leader_agreed") != 1:
            return False
        leading = [
            m for m in survivors if exporter.value("kubeballast_etcd_member_is_leader", member=m)
        ]
        return len(leading) == 1

    await exporter.until(new_leader_agreed, "a new leader that both survivors name")
    assert exporter.value("kubeballast_etcd_member_up", member=exporter.member(old)) == 0
    assert exporter.value("kubeballast_etcd_cluster_quorum_healthy") == 1
    assert exporter.value("kubeballast_etcd_raft_term", member=survivors[0]) > term_before
    for member in survivors:
        after = exporter.value("kubeballast_etcd_server_leader_changes_seen_total", member=member)
        assert after > changes_before[member]
        assert exporter.value("kubeballast_etcd_server_has_leader", member=member) == 1


async def test_a_full_database_raises_nospace_but_keeps_quorum(
    etcd_cluster: Callable[..., EtcdCluster],
) -> None:
    quota = 2 * 1024 * 1024
    cluster = etcd_cluster(1, quota_backend_bytes=quota)
    exporter = Exporter(cluster)
    await exporter.refresh()
    member = exporter.member(0)
    assert exporter.value("kubeballast_etcd_member_alarm", member=member, alarm="NOSPACE") == 0
    assert exporter.value("kubeballast_etcd_server_quota_backend_bytes", member=member) == quota

    async def fill() -> None:
        async with cluster.client() as client:
            for index in range(10_000):
                await client.put(cluster.endpoints[0], f"/fill/{index}", "x" * 10_000)

    with pytest.raises(NoSpace):
        await fill()

    await exporter.until(
        lambda: exporter.value("kubeballast_etcd_cluster_alarm", alarm="NOSPACE") == 1,
        "the NOSPACE alarm",
    )
    assert exporter.value("kubeballast_etcd_member_alarm", member=member, alarm="NOSPACE") == 1
    assert exporter.value("kubeballast_etcd_member_alarm", member=member, alarm="CORRUPT") == 0
    assert exporter.value("kubeballast_etcd_cluster_alarm", alarm="CORRUPT") == 0
    assert exporter.value("kubeballast_etcd_member_status_errors", member=member) >= 1
    # /health fails under an alarm, yet the cluster has its leader and its quorum.
    assert exporter.value("kubeballast_etcd_member_healthy", member=member) == 0
    assert exporter.value("kubeballast_etcd_cluster_quorum_healthy") == 1
    assert exporter.value("kubeballast_etcd_db_quota_usage_ratio", member=member) > 0.9


async def test_mutual_tls_is_used_and_unusable_files_fail_the_refresh(
    etcd_cluster: Callable[..., EtcdCluster], tls_material: TlsMaterial, tmp_path: Path
) -> None:
    cluster = etcd_cluster(1, tls=tls_material)
    exporter = Exporter(cluster)
    await exporter.refresh()
    assert exporter.runner.up
    assert exporter.value("kubeballast_etcd_member_up", member=exporter.member(0)) == 1
    assert exporter.value("kubeballast_etcd_member_healthy", member=exporter.member(0)) == 1

    broken = Exporter(cluster, key_file=str(tmp_path / "missing.key"))
    with pytest.raises(SourceError) as raised:
        await broken.source.refresh()
    assert raised.value.reason == "tls"
    assert "exporter.etcd.clusters[main].key_file" in str(raised.value)
    await broken.refresh()
    assert not broken.runner.up
    assert broken.runner.errors["tls"] == 1
    assert broken.values("kubeballast_etcd_member_up") == []


async def test_a_client_without_the_certificate_sees_the_member_down(
    etcd_cluster: Callable[..., EtcdCluster], tls_material: TlsMaterial
) -> None:
    cluster = etcd_cluster(1, tls=tls_material)
    # The member demands a client certificate; without one, every call is refused.
    exporter = Exporter(cluster, cert_file=None, key_file=None)
    await exporter.refresh()
    assert exporter.runner.up
    assert exporter.value("kubeballast_etcd_member_up", member=exporter.member(0)) == 0
    assert exporter.value("kubeballast_etcd_cluster_quorum_healthy") == 0
