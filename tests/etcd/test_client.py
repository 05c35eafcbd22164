"""The etcd client against real etcd: what each call returns on a healthy cluster, how
member failures, lost quorum and re-elections look through it, the NOSPACE cycle the
recovery builds on (fill, alarm, compact, defragment, disarm, write again), and
snapshots that etcdctl accepts.

Waits poll with deadlines sized for a loaded two-core machine; nothing sleeps to
synchronise. Processes are real etcd members started by the fixtures in conftest.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from harness import EtcdCluster, binary, reserve_ports

from kubeballast.core.errors import PermanentError, TemporaryError
from kubeballast.core.etcd import (
    Alarm,
    AlarmType,
    Compacted,
    EtcdClient,
    EtcdError,
    EtcdProtocolError,
    EtcdUnavailable,
    MemberStatus,
    NoSpace,
    hex_id,
    prefix_range_end,
)

DEADLINE = 60.0
"""Seconds to wait for an election or a state change: generous for a loaded machine."""


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, within: float = DEADLINE
) -> None:
    """Poll ``check`` until it returns true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within:g} s: {what}")
        await asyncio.sleep(0.05)  # polling interval, bounded by the deadline


async def etcdctl(*args: str, endpoint: str | None = None) -> str:
    command = [binary("etcdctl"), *([f"--endpoints={endpoint}"] if endpoint else []), *args]
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, "ETCDCTL_API": "3"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"{' '.join(command)}: {err.decode()}"
    return out.decode()


# ---------------------------------------------------------------- healthy cluster


async def test_one_member_reports_itself_healthy_and_leading(etcd1: EtcdCluster) -> None:
    (member,) = etcd1.members
    async with etcd1.client() as client:
        health = await client.health(member.client_url)
        status = await client.status(member.client_url)
        members = await client.member_list(member.client_url)
        alarms = await client.alarms(member.client_url)

    assert health.healthy
    assert status.version.startswith("3.")
    assert status.member_id == member.member_id != 0
    assert status.leader == status.member_id
    assert status.is_leader
    assert status.cluster_id != 0
    assert status.db_size > 0
    assert status.db_size_in_use is not None
    assert 0 < status.db_size_in_use <= status.db_size
    assert status.raft_applied_index is not None
    assert status.raft_applied_index <= status.raft_index
    assert status.raft_term >= 1
    assert status.errors == ()
    assert not status.is_learner
    assert alarms == []

    (listed,) = members
    assert listed.id == member.member_id
    assert listed.name == "m0"
    assert listed.peer_urls == (member.peer_url,)
    assert listed.client_urls == (member.client_url,)
    assert not listed.is_learner


async def test_three_members_agree_on_cluster_and_leader(etcd3: EtcdCluster) -> None:
    async with etcd3.client() as client:
        statuses = await client.member_statuses()
        members = await client.member_list(etcd3.endpoints[1])

    assert list(statuses) == etcd3.endpoints
    assert all(isinstance(status, MemberStatus) for status in statuses.values())
    typed = [status for status in statuses.values() if isinstance(status, MemberStatus)]
    assert len({status.cluster_id for status in typed}) == 1
    assert len({status.leader for status in typed}) == 1
    assert sum(status.is_leader for status in typed) == 1
    assert [status.member_id for status in typed] == [m.member_id for m in etcd3.members]

    assert sorted(m.name for m in members) == ["m0", "m1", "m2"]
    by_name = {m.name: m for m in members}
    for member in etcd3.members:
        assert by_name[member.name].id == member.member_id
        assert by_name[member.name].client_urls == (member.client_url,)
        assert by_name[member.name].peer_urls == (member.peer_url,)


async def test_member_ids_format_as_etcdctl_prints_them(etcd3: EtcdCluster) -> None:
    async with etcd3.client() as client:
        members = await client.member_list(etcd3.endpoints[0])
    # `etcdctl member list` prints "<hex id>, started, <name>, <peer>, <client>, <learner>"
    printed = await etcdctl("member", "list", endpoint=etcd3.endpoints[0])
    by_name = {line.split(", ")[2]: line.split(", ")[0] for line in printed.splitlines()}
    assert by_name == {m.name: hex_id(m.id) for m in members}


async def test_put_and_range(etcd1: EtcdCluster) -> None:
    endpoint = etcd1.endpoints[0]
    async with etcd1.client() as client:
        first = await client.put(endpoint, "/registry/pods/a", b"alpha")
        second = await client.put(endpoint, b"/registry/pods/b", "beta")
        third = await client.put(endpoint, b"/registry/pods/c\xff\n", b"\x00binary\xff")
        await client.put(endpoint, b"/registry/podsx", b"outside the prefix")
        assert first < second < third

        one = await client.range(endpoint, "/registry/pods/a")
        assert [(kv.key, kv.value) for kv in one.kvs] == [(b"/registry/pods/a", b"alpha")]
        assert one.count == 1
        assert not one.more
        assert one.kvs[0].create_revision == one.kvs[0].mod_revision == first
        assert one.kvs[0].version == 1
        assert one.revision >= third

        prefix = b"/registry/pods/"
        everything = await client.range(endpoint, prefix, prefix_range_end(prefix))
        assert [kv.key for kv in everything.kvs] == [
            b"/registry/pods/a",
            b"/registry/pods/b",
            b"/registry/pods/c\xff\n",
        ]
        assert everything.kvs[2].value == b"\x00binary\xff"

        page = await client.range(endpoint, prefix, prefix_range_end(prefix), limit=2)
        assert (len(page.kvs), page.count, page.more) == (2, 3, True)

        counted = await client.range(endpoint, prefix, prefix_range_end(prefix), count_only=True)
        assert (counted.count, counted.kvs) == (3, ())

        keys = await client.range(endpoint, prefix, prefix_range_end(prefix), keys_only=True)
        assert [kv.value for kv in keys.kvs] == [b"", b"", b""]

        missing = await client.range(endpoint, "/nothing/here")
        assert (missing.count, missing.kvs) == (0, ())

        await client.put(endpoint, "/registry/pods/a", b"alpha2")
        again = await client.range(endpoint, "/registry/pods/a", serializable=True)
        assert (again.kvs[0].value, again.kvs[0].version) == (b"alpha2", 2)


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"/registry/") == b"/registry0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"
    assert prefix_range_end(b"") == b"\0"


async def test_metrics_are_prometheus_text(etcd1: EtcdCluster) -> None:
    async with etcd1.client() as client:
        text = await client.metrics(etcd1.endpoints[0])
    assert "\netcd_server_has_leader 1\n" in text
    assert "# TYPE etcd_mvcc_db_total_size_in_bytes gauge" in text


# ------------------------------------------------------------------------- errors


async def test_a_closed_port_is_unavailable() -> None:
    (port,) = reserve_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    async with EtcdClient([endpoint], timeout=10) as client:
        with pytest.raises(EtcdUnavailable) as caught:
            await client.status(endpoint)
    assert isinstance(caught.value, TemporaryError)
    assert caught.value.endpoint == endpoint
    assert str(caught.value).startswith(f"etcd {endpoint}: unavailable: cannot connect")
    assert "\n" not in str(caught.value)


async def test_a_grpc_error_keeps_code_and_message(etcd1: EtcdCluster) -> None:
    endpoint = etcd1.endpoints[0]
    async with etcd1.client() as client:
        revision = await client.put(endpoint, "k", "v")
        with pytest.raises(EtcdError) as caught:
            await client.compact(endpoint, revision + 1000)
    error = caught.value
    assert type(error) is EtcdError
    assert isinstance(error, PermanentError)
    assert (error.code, error.code_name) == (11, "OUT_OF_RANGE")
    assert error.message == "etcdserver: mvcc: required revision is a future revision"
    assert str(error) == f"etcd {endpoint}: OUT_OF_RANGE: {error.message}"


async def test_a_port_that_is_not_the_gateway_is_a_protocol_error(etcd1: EtcdCluster) -> None:
    # The peer port speaks HTTP but serves raft, not the v3 gateway.
    peer = etcd1.members[0].peer_url
    async with etcd1.client() as client:
        with pytest.raises(EtcdProtocolError, match=r"HTTP 404"):
            await client.status(peer)


async def test_a_hung_member_times_out_without_delaying_the_others(etcd3: EtcdCluster) -> None:
    hung = etcd3.members[2]
    assert hung.process is not None
    hung.process.send_signal(signal.SIGSTOP)  # alive, accepting connections, silent
    try:
        async with etcd3.client(timeout=1.0) as client:
            statuses = await client.member_statuses()
    finally:
        hung.process.send_signal(signal.SIGCONT)
    error = statuses[hung.client_url]
    assert isinstance(error, EtcdUnavailable)
    assert error.why == "no answer within 1 s"
    others = [statuses[m.client_url] for m in etcd3.members[:2]]
    assert all(isinstance(status, MemberStatus) for status in others)


# --------------------------------------------------------------- member failures


async def test_killed_member_is_unavailable_and_the_rest_keep_quorum(etcd3: EtcdCluster) -> None:
    leader = await etcd3.leader()
    victim = (leader + 1) % 3
    etcd3.kill(victim)
    dead = etcd3.endpoints[victim]
    alive = [e for i, e in enumerate(etcd3.endpoints) if i != victim]

    async with etcd3.client() as client:
        for call in (client.health, client.status, client.metrics, client.alarms):
            with pytest.raises(EtcdUnavailable) as caught:
                await call(dead)
            assert caught.value.endpoint == dead

        async def survivors_healthy() -> bool:
            return all([(await client.health(endpoint)).healthy for endpoint in alive])

        await eventually(survivors_healthy, "the two survivors report healthy")
        statuses = await client.member_statuses()
        assert isinstance(statuses[dead], EtcdUnavailable)
        assert {s.leader for e, s in statuses.items() if isinstance(s, MemberStatus)} == {
            etcd3.members[leader].member_id
        }
        # With quorum, writes still succeed through either survivor.
        assert await client.put(alive[0], "still", "writable") > 0

        members = await client.member_list(alive[1])
        assert len(members) == 3  # membership does not change because a member is down


async def test_two_killed_leave_the_last_member_unhealthy(etcd3: EtcdCluster) -> None:
    etcd3.kill(0)
    etcd3.kill(1)
    last = etcd3.endpoints[2]
    async with etcd3.client(timeout=3.0) as client:

        async def unhealthy() -> bool:
            return not (await client.health(last)).healthy

        await eventually(unhealthy, "the last member reports unhealthy without quorum")

        async def no_leader() -> bool:
            return (await client.status(last)).leader == 0

        await eventually(no_leader, "the last member knows of no leader")
        # A linearizable write needs a leader: the member cannot serve it now.
        with pytest.raises(EtcdUnavailable):
            await client.put(last, "no", "quorum")

    # The killed members come back with their data and the cluster heals.
    etcd3.restart(0)
    etcd3.restart(1)
    etcd3.wait_healthy()
    assert await etcd3.leader() in (0, 1, 2)


async def test_killing_the_leader_elects_another(etcd3: EtcdCluster) -> None:
    old = await etcd3.leader()
    async with etcd3.client() as client:
        before = await client.status(etcd3.endpoints[old])
    etcd3.kill(old)

    new = await etcd3.leader(not_index=old, within=DEADLINE)
    assert new != old
    survivors = [i for i in range(3) if i != old]
    async with etcd3.client() as client:
        for index in survivors:
            status = await client.status(etcd3.endpoints[index])
            assert status.leader == etcd3.members[new].member_id
            assert status.raft_term > before.raft_term


# ------------------------------------------------------------------------ NOSPACE

QUOTA = 2 * 1024 * 1024
"""etcd 3.4 accepts any quota; 2 MiB fills in a few dozen 100 KB writes."""


async def test_nospace_alarm_then_recovery(
    etcd_cluster: Callable[..., EtcdCluster],
) -> None:
    cluster = etcd_cluster(3, quota_backend_bytes=QUOTA)
    endpoint = cluster.endpoints[0]
    value = os.urandom(100 * 1024)
    async with cluster.client(timeout=10.0) as client:
        # Rewrite a few keys, as Events churn does: the space is history, which
        # compaction can free, not live data.
        refused: NoSpace | None = None
        for attempt in range(500):
            try:
                await client.put(endpoint, f"/registry/events/e{attempt % 4}", value)
            except NoSpace as error:
                refused = error
                break
        if refused is None:
            pytest.fail(f"no NOSPACE after 500 writes of 100 KiB with a {QUOTA} byte quota")
        assert (refused.code, refused.code_name) == (8, "RESOURCE_EXHAUSTED")
        assert refused.message == "etcdserver: mvcc: database space exceeded"

        alarms = await client.alarms(endpoint)
        ids = {m.member_id for m in cluster.members}
        assert alarms
        assert {a.alarm for a in alarms} == {AlarmType.NOSPACE}
        assert {a.member_id for a in alarms} <= ids
        with pytest.raises(NoSpace):
            await client.put(cluster.endpoints[1], "/any", "write")
        status = await client.status(endpoint)
        assert any("NOSPACE" in error for error in status.errors)
        assert not (await client.health(endpoint)).healthy

        # What recover-nospace does: compact the history, give the space back on
        # every member, then disarm.
        await client.compact(endpoint, status.revision)
        with pytest.raises(Compacted):
            await client.compact(endpoint, status.revision)
        for member_endpoint in cluster.endpoints:
            await client.defragment(member_endpoint)

        # Each member raises its own NOSPACE alarm, through raft, when *it* applies a
        # write over the quota, so an alarm can be listed only after the first ones
        # were disarmed: disarm whatever is listed until a write goes through and
        # nothing is listed any more (recover-nospace has to loop the same way).
        async def recovered() -> bool:
            for alarm in await client.alarms(endpoint):
                await client.disarm(endpoint, alarm)
            try:
                await client.put(endpoint, "/after", "recovery")
            except NoSpace:
                return False
            return await client.alarms(endpoint) == []

        await eventually(recovered, "writes accepted and no alarm listed after the recovery")

        async def all_healthy() -> bool:
            await recovered()
            statuses = [await client.status(e) for e in cluster.endpoints]
            healthy = [(await client.health(e)).healthy for e in cluster.endpoints]
            return all(healthy) and all(status.errors == () for status in statuses)

        await eventually(all_healthy, "every member healthy, without alarms, after the recovery")
        for member_endpoint in cluster.endpoints:
            after = await client.status(member_endpoint)
            assert after.db_size < QUOTA // 2, after


async def test_disarming_an_alarm_that_is_not_raised_is_harmless(etcd1: EtcdCluster) -> None:
    endpoint = etcd1.endpoints[0]
    async with etcd1.client() as client:
        await client.disarm(endpoint, Alarm(etcd1.members[0].member_id, AlarmType.NOSPACE))
        assert await client.alarms(endpoint) == []


# ---------------------------------------------------------------------- snapshots


async def test_snapshot_streams_a_file_etcdctl_accepts(etcd1: EtcdCluster, tmp_path: Path) -> None:
    endpoint = etcd1.endpoints[0]
    async with etcd1.client() as client:
        for index in range(40):
            last = await client.put(
                endpoint, f"/registry/configmaps/c{index}", os.urandom(8 * 1024)
            )

        chunks: list[int] = []

        async def count(chunk: bytes) -> None:
            chunks.append(len(chunk))

        streamed = await client.snapshot(endpoint, count)
        path = tmp_path / "backup.db"
        info = await client.save_snapshot(endpoint, path)
        after = await client.status(endpoint)

    # Streamed in pieces, never as one blob: the gateway's chunks are at most 32 KiB.
    assert len(chunks) > 2
    assert max(chunks) <= 32 * 1024
    assert streamed.size == sum(chunks)

    assert not path.with_name("backup.db.part").exists()
    data = path.read_bytes()
    assert len(data) == info.size == info.db_size + 32
    # The database as the member's status counts it, and the digest etcd appended. (A
    # status taken before the snapshot may be smaller: etcd commits writes to the
    # backend in batches, and a snapshot forces the pending batch out first.)
    assert info.db_size == after.db_size
    assert hashlib.sha256(data[:-32]).hexdigest() == info.sha256 == data[-32:].hex()

    report = json.loads(await etcdctl("snapshot", "status", str(path), "-w", "json"))
    assert report["revision"] == last
    assert report["totalKey"] >= 40
    assert report["totalSize"] == info.db_size

    # restore checks the appended SHA-256: the file is a usable backup.
    await etcdctl(
        "snapshot", "restore", str(path), f"--data-dir={tmp_path / 'restored'}", "--name=m0",
        f"--initial-cluster=m0={etcd1.members[0].peer_url}",
        f"--initial-advertise-peer-urls={etcd1.members[0].peer_url}",
    )  # fmt: skip
    assert (tmp_path / "restored" / "member" / "snap" / "db").is_file()


async def test_a_failing_sink_aborts_the_snapshot(etcd1: EtcdCluster, tmp_path: Path) -> None:
    class DiskFullError(Exception):
        pass

    async def refuse(chunk: bytes) -> None:
        raise DiskFullError

    async with etcd1.client() as client:
        with pytest.raises(DiskFullError):
            await client.snapshot(etcd1.endpoints[0], refuse)
        # The client stays usable after an aborted stream.
        assert (await client.health(etcd1.endpoints[0])).healthy
