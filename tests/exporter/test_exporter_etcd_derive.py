"""The etcd derivations, table-tested without etcd: a member's /metrics page reduced to
what is re-exported, the cluster verdict (quorum, leader agreement, raft index spread,
alarms), the disk verdict over two scrapes, database ratios and growth, backups; and
the collector's output for snapshots built from them.

The ``etcd_*.txt`` fixtures are real /metrics pages of etcd 3.4.23 (``--metrics=extensive``)
in a three-member cluster on loopback: the leader twice (``leader_1``, then
``leader_2`` after 600 writes, a compaction and a failed compaction), a follower, the
leader after one follower was killed (``leader_peer_down``) and after both were
(``no_leader``). They were reduced to the families the exporter reads plus a few it
skips (Go runtime, process, MVCC counters); gRPC series of methods never called, all
zeros, were left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kubeballast.core import promtext
from kubeballast.core.config import EtcdBackupConfig, EtcdClusterConfig, EtcdConfig, ExporterConfig
from kubeballast.core.etcd import AlarmType, Member, MemberHealth, MemberStatus
from kubeballast.core.etcdbackup import snapshot_name
from kubeballast.core.promtext import bucket_deltas, histogram_quantile
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.contract import Snapshot, SourceError
from kubeballast.exporter.etcd import (
    SPECS,
    EtcdBackupSource,
    EtcdClusterSnapshot,
    EtcdCollector,
    MemberSnapshot,
    build_etcd,
    member_label,
    read_backups,
)
from kubeballast.exporter.etcdhealth import (
    GRPC_CODES,
    WANTED_FAMILIES,
    BackupRecord,
    BackupSummary,
    DiskVerdict,
    Histogram,
    MemberMetrics,
    Thresholds,
    cluster_verdict,
    disk_verdict,
    growth_rate,
    in_use_ratio,
    parse_alarms,
    parse_sidecar,
    quota_usage_ratio,
    summarize,
    summarize_backups,
)
from kubeballast.exporter.runner import SourceSet

FIXTURES = Path(__file__).parent / "fixtures"


def page(name: str) -> MemberMetrics:
    text = (FIXTURES / f"etcd_{name}.txt").read_text()
    return summarize(promtext.parse(text, WANTED_FAMILIES))


# --- a member's page ------------------------------------------------------------------


def test_a_healthy_leader_page_is_reduced_to_the_curated_set() -> None:
    metrics = page("leader_1")
    assert metrics.has_leader == 1
    assert metrics.leader_changes_seen == 1
    assert metrics.quota_backend_bytes == 2 * 1024**3
    assert metrics.proposals_failed == 0
    assert metrics.proposals_pending == 0
    assert metrics.proposals_committed is not None
    assert metrics.proposals_committed > 300
    assert metrics.proposals_applied == metrics.proposals_committed
    assert metrics.process_start_time_seconds is not None
    for histogram in (metrics.wal_fsync, metrics.backend_commit):
        assert histogram is not None
        assert histogram.buckets[-1] == (math.inf, histogram.count)
        assert histogram.buckets[0][0] == 0.001
        assert [bound for bound, _ in histogram.buckets] == sorted(
            bound for bound, _ in histogram.buckets
        )
    assert metrics.wal_fsync is not None
    assert metrics.wal_fsync.count == 312
    # Two peers in a three-member cluster, by their hex member ids.
    assert sorted(metrics.peer_rtt) == ["140671b1442f8622", "aeaa04673eae9eee"]
    assert all(h.count == 2 for h in metrics.peer_rtt.values())
    assert metrics.peer_sent_failures == {}
    assert metrics.peer_received_failures == {}
    assert set(metrics.grpc_handled) == set(GRPC_CODES)
    assert metrics.grpc_handled["OK"] > 300
    assert sum(v for code, v in metrics.grpc_handled.items() if code != "OK") == 0
    assert metrics.grpc_unary_handling is not None
    assert metrics.grpc_unary_handling.count == metrics.grpc_handled["OK"]


def test_failed_grpc_calls_are_counted_by_code() -> None:
    metrics = page("leader_2")
    # The second compaction asked for an already compacted revision.
    assert metrics.grpc_handled["OutOfRange"] == 1
    assert metrics.grpc_handled["OK"] > page("leader_1").grpc_handled["OK"]


def test_a_dead_peer_shows_as_send_failures_towards_it() -> None:
    down = page("leader_peer_down")
    assert down.has_leader == 1
    assert down.peer_sent_failures == {"aeaa04673eae9eee": 81}
    lost = page("no_leader")
    assert lost.has_leader == 0
    assert lost.peer_sent_failures == {"140671b1442f8622": 12, "aeaa04673eae9eee": 96}


def test_an_empty_page_gives_nothing() -> None:
    metrics = summarize(promtext.parse("", WANTED_FAMILIES))
    assert metrics == MemberMetrics()


def _sample_line(name: str, labels: dict[str, str], value: float) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{body}}} {value}"


def test_unary_latency_leaves_out_streams_and_defragment() -> None:
    lines = []
    for method, kind, count in (
        ("Range", "unary", 10),
        ("Defragment", "unary", 1000),
        ("Watch", "bidi_stream", 500),
    ):
        labels = {"grpc_method": method, "grpc_service": "s", "grpc_type": kind}
        for le, value in (("0.1", count), ("+Inf", count)):
            lines.append(
                _sample_line("grpc_server_handling_seconds_bucket", {**labels, "le": le}, value)
            )
        lines.append(_sample_line("grpc_server_handling_seconds_sum", labels, count / 100))
        lines.append(_sample_line("grpc_server_handling_seconds_count", labels, count))
    lines.append(_sample_line("grpc_server_handled_total", {"grpc_code": "Bogus"}, 7))
    lines.append(_sample_line("grpc_server_handled_total", {"grpc_code": "Unavailable"}, 3))
    metrics = summarize(promtext.parse("\n".join(lines), WANTED_FAMILIES))
    assert metrics.grpc_unary_handling == Histogram(((0.1, 10), (math.inf, 10)), 0.1, 10)
    # A code outside gRPC's set is not a label value the exporter can emit.
    assert metrics.grpc_handled == {"Unavailable": 3}


# --- alarms and the cluster verdict -----------------------------------------------------


def test_alarms_are_read_from_status_errors() -> None:
    errors = (
        "etcdserver: no leader",
        "memberID:13938422801465187966 alarm:NOSPACE ",
        "memberID:5 alarm:CORRUPT ",
        "memberID:6 alarm:SOMETHING_NEW ",
    )
    assert parse_alarms(errors) == {
        (13938422801465187966, AlarmType.NOSPACE),
        (5, AlarmType.CORRUPT),
    }
    assert parse_alarms(()) == frozenset()


def status(
    member_id: int,
    leader: int,
    raft_index: int = 100,
    *,
    errors: tuple[str, ...] = (),
    learner: bool = False,
) -> MemberStatus:
    return MemberStatus(
        endpoint=f"http://127.0.0.1:{2000 + member_id}",
        member_id=member_id,
        cluster_id=99,
        version="3.4.23",
        db_size=1000,
        db_size_in_use=800,
        leader=leader,
        revision=10,
        raft_index=raft_index,
        raft_term=2,
        raft_applied_index=raft_index,
        errors=errors,
        is_learner=learner,
    )


def members(*ids: int, learners: tuple[int, ...] = ()) -> list[Member]:
    return [Member(i, f"m{i}", (), (), i in learners) for i in ids]


@dataclass(frozen=True)
class VerdictCase:
    name: str
    statuses: list[MemberStatus | None]
    member_list: list[Member] | None
    quorum_members: int
    quorum_healthy: bool
    leader: int | None
    spread: int | None
    voting: int = 3
    learners: int = 0
    total: int = 3


VERDICTS = [
    VerdictCase(
        "three healthy", [status(1, 1, 100), status(2, 1, 98), status(3, 1, 100)],
        members(1, 2, 3), 3, True, 1, 2,
    ),
    VerdictCase(
        "one down", [status(1, 1), None, status(3, 1)], members(1, 2, 3), 2, True, 1, 0,
    ),
    VerdictCase(
        "two down, the survivor without a leader", [status(1, 0), None, None],
        members(1, 2, 3), 0, False, None, 0,
    ),
    VerdictCase(
        "two down, the survivor not yet stepped down", [status(1, 1), None, None],
        members(1, 2, 3), 1, False, 1, 0,
    ),
    VerdictCase("all down, no member list", [None, None, None], None, 0, False, None, None),
    VerdictCase(
        "an election: members name different leaders",
        [status(1, 1), status(2, 3), status(3, 3)], members(1, 2, 3), 3, True, None, 0,
    ),
    VerdictCase(
        "a learner does not count towards quorum",
        [status(1, 1), status(2, 1), status(4, 1, learner=True), None],
        members(1, 2, 3, 4, learners=(4,)), 2, True, 1, 0, voting=3, learners=1, total=4,
    ),
    VerdictCase(
        "without a member list the configured endpoints are the membership",
        [status(1, 1), None, None, None, None], None, 1, False, 1, 0, voting=5, total=5,
    ),
    VerdictCase(
        "two of four is not a majority",
        [status(1, 1), status(2, 1), None, None], members(1, 2, 3, 4), 2, False, 1, 0,
        voting=4, total=4,
    ),
    VerdictCase(
        "a member the list does not know is not counted",
        [status(1, 1), status(2, 1), status(9, 1)], members(1, 2, 3), 2, True, 1, 0,
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", VERDICTS, ids=[case.name for case in VERDICTS])
def test_cluster_verdict(case: VerdictCase) -> None:
    verdict = cluster_verdict(case.statuses, case.member_list, configured=len(case.statuses))
    assert verdict.quorum_members == case.quorum_members
    assert verdict.quorum_healthy == case.quorum_healthy
    assert verdict.leader_id == case.leader
    assert verdict.leader_agreed == (case.leader is not None)
    assert verdict.raft_index_spread == case.spread
    assert verdict.voting_members == case.voting
    assert verdict.learners == case.learners
    assert verdict.members == case.total


def test_alarms_are_the_union_over_members_and_know_who_raised_them() -> None:
    nospace = "memberID:2 alarm:NOSPACE "
    verdict = cluster_verdict(
        [status(1, 1, errors=(nospace,)), status(2, 1, errors=(nospace,)), None],
        members(1, 2, 3),
        configured=3,
    )
    assert verdict.alarms == {(2, AlarmType.NOSPACE)}
    assert verdict.alarm_raised(AlarmType.NOSPACE)
    assert verdict.alarm_raised(AlarmType.NOSPACE, 2)
    assert not verdict.alarm_raised(AlarmType.NOSPACE, 1)
    assert not verdict.alarm_raised(AlarmType.CORRUPT)


# --- the disk verdict -----------------------------------------------------------------

BOUNDS = [0.001 * 2**i for i in range(14)]


def fsyncs(*per_bucket: float) -> Histogram:
    """A cumulative WAL fsync histogram on etcd's bounds from per-bucket counts."""
    counts = list(per_bucket) + [0.0] * (len(BOUNDS) + 1 - len(per_bucket))
    cumulative, total = [], 0.0
    for bound, count in zip([*BOUNDS, math.inf], counts, strict=True):
        total += count
        cumulative.append((bound, total))
    return Histogram(tuple(cumulative), 0.0, total)


def add(a: Histogram, b: Histogram) -> Histogram:
    return Histogram(
        tuple((bound, x + y) for (bound, x), (_, y) in zip(a.buckets, b.buckets, strict=True)),
        a.sum + b.sum,
        a.count + b.count,
    )


BASE = fsyncs(500, 20, 5)


@pytest.mark.parametrize(
    ("name", "prev", "cur", "evaluated", "slow"),
    [
        ("first scrape: no window", None, BASE, False, False),
        ("no fsyncs in the window", BASE, BASE, False, False),
        ("too few fsyncs to say", BASE, add(BASE, fsyncs(0, 0, 0, 0, 0, 9)), False, False),
        ("an SSD: all under 2 ms", BASE, add(BASE, fsyncs(95, 5)), True, False),
        ("p99 in the 8-16 ms bucket", BASE, add(BASE, fsyncs(90, 0, 0, 5, 5)), True, True),
        ("a spinning disk: 16-32 ms", BASE, add(BASE, fsyncs(0, 0, 0, 0, 0, 100)), True, True),
        ("1 % slow is the p99 boundary", BASE, add(BASE, fsyncs(99, 0, 0, 0, 0, 1)), True, False),
        ("2 % slow is over it", BASE, add(BASE, fsyncs(98, 0, 0, 0, 0, 2)), True, True),
        ("restart: the new counts are the window", BASE, fsyncs(0, 0, 0, 0, 0, 50), True, True),
    ],
)
def test_disk_verdict(
    name: str, prev: Histogram | None, cur: Histogram, evaluated: bool, slow: bool
) -> None:
    verdict = disk_verdict(prev, cur)
    assert verdict.evaluated == evaluated
    assert verdict.slow == slow
    assert (verdict.p99_seconds is not None) == evaluated
    if verdict.p99_seconds is not None:
        assert verdict.slow == (verdict.p99_seconds > 0.010)


def test_disk_verdict_between_two_real_scrapes() -> None:
    before, after = page("leader_1").wal_fsync, page("leader_2").wal_fsync
    assert before is not None
    assert after is not None
    verdict = disk_verdict(before, after)
    assert verdict.evaluated
    assert verdict.fsyncs == 914 - 312
    assert verdict.p99_seconds == pytest.approx(
        histogram_quantile(0.99, bucket_deltas(before.buckets, after.buckets))
    )
    # The capture ran on a fast disk: 596 of the 602 fsyncs took under a millisecond.
    assert verdict.p99_seconds is not None
    assert verdict.p99_seconds <= 0.001
    assert not verdict.slow


def test_disk_verdict_thresholds_are_arguments() -> None:
    window = add(BASE, fsyncs(0, 0, 5))  # five fsyncs of 2-4 ms
    strict = Thresholds(slow_fsync_p99_seconds=0.002, min_fsyncs=5)
    assert disk_verdict(BASE, window) == DiskVerdict(fsyncs=5)
    assert disk_verdict(BASE, window, strict).slow


def test_nan_counts_are_never_a_verdict() -> None:
    broken = Histogram(tuple((b, math.nan) for b, _ in BASE.buckets), 0.0, math.nan)
    assert not disk_verdict(BASE, broken).evaluated


# --- the database -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prev", "prev_at", "cur", "cur_at", "expected"),
    [
        (1000, 10.0, 3000, 20.0, 200.0),
        (3000, 10.0, 1000, 20.0, -200.0),  # a defragmentation gave space back
        (1000, 10.0, 1000, 20.0, 0.0),
        (None, None, 1000, 20.0, None),  # first reading
        (1000, 20.0, 2000, 20.0, None),  # no time passed
        (1000, 10.0, None, 20.0, None),
    ],
)
def test_growth_rate(
    prev: int | None, prev_at: float | None, cur: int | None, cur_at: float, expected: float | None
) -> None:
    assert growth_rate(prev, prev_at, cur, cur_at) == expected


@pytest.mark.parametrize(
    ("size", "quota", "expected"),
    [
        (1024, 2048.0, 0.5),
        (2048, 2048.0, 1.0),
        (1024, None, None),
        (1024, 0.0, None),
        (None, 2048.0, None),
        (1024, math.nan, None),
    ],
)
def test_quota_usage_ratio(size: int | None, quota: float | None, expected: float | None) -> None:
    assert quota_usage_ratio(size, quota) == expected


@pytest.mark.parametrize(
    ("in_use", "total", "expected"),
    [(300, 1200, 0.25), (1200, 1200, 1.0), (None, 1200, None), (300, 0, None), (300, None, None)],
)
def test_in_use_ratio(in_use: int | None, total: int | None, expected: float | None) -> None:
    assert in_use_ratio(in_use, total) == expected


# --- backups --------------------------------------------------------------------------


def sidecar(**fields: object) -> dict[str, object]:
    """A sidecar document as kubeballast.core.etcdbackup writes it (format 1)."""
    document: dict[str, object] = {
        "format": 1,
        "cluster": "main",
        "snapshot": "etcd-main-20231114T221320.000Z.db",
        "created_unix": 1_700_000_000.25,
        "created": "2023-11-14T22:13:20Z",
        "size_bytes": 4128,
        "db_size_bytes": 4096,
        "sha256": "ab" * 32,
        "revision": 1200,
        "keys": 300,
        "etcdctl_hash": 123,
        "raft_term": 7,
        "member": "etcd-1",
        "member_id": "8e9e05c52164694d",
        "endpoint": "https://10.0.0.11:2379",
        "duration_seconds": 3.2,
        "verified": True,
        "hook": None,
    }
    document.update(fields)
    return document


def record(**fields: object) -> BackupRecord:
    return parse_sidecar(sidecar(**fields), snapshot="snap.db", created_unix=1.0)


def test_a_sidecar_is_read_and_unknown_keys_are_ignored() -> None:
    assert record(future_field={"x": 1}) == BackupRecord(
        snapshot="snap.db",
        taken_at=1_700_000_000.25,
        size=4128,
        revision=1200,
        keys=300,
        verified=True,
    )
    assert record(verified=False).verified is False
    without = sidecar()
    del without["verified"], without["created_unix"]
    described = parse_sidecar(without, snapshot="snap.db", created_unix=1_600_000_000.0)
    # No timestamp in the sidecar: the one in the file name stands in.
    assert described.taken_at == 1_600_000_000.0
    assert described.verified is None


@pytest.mark.parametrize(
    "fields",
    [
        {"created_unix": "yesterday"},
        {"revision": "many"},
        {"verified": "yes"},
        {"size_bytes": 1.5},
        {"created_unix": math.inf},
    ],
)
def test_a_sidecar_with_a_wrong_field_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"sidecar of snap\.db"):
        record(**fields)


def write_backup(folder: Path, when: float, document: dict[str, object] | None) -> Path:
    path = folder / snapshot_name("main", when)
    path.write_bytes(b"snapshot bytes")
    if document is not None:
        path.with_name(path.name + ".json").write_text(json.dumps(document))
    return path


def test_a_backup_location_reports_its_newest_finished_snapshot(tmp_path: Path) -> None:
    base = 1_700_000_000.0
    write_backup(tmp_path, base, sidecar(created_unix=base, revision=10))
    write_backup(tmp_path, base + 7200, sidecar(created_unix=base + 7200, revision=30))
    write_backup(tmp_path, base + 3600, sidecar(created_unix=base + 3600, revision=20))
    # Newer than all, but unfinished: the sidecar is written last.
    write_backup(tmp_path, base + 9000, None)
    broken = write_backup(tmp_path, base + 9500, None)
    broken.with_name(broken.name + ".json").write_text("{")
    # Not this cluster's, not a snapshot, not finished: none of them count.
    (tmp_path / snapshot_name("events", base)).write_bytes(b"other cluster")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / (snapshot_name("main", base + 9900) + ".part")).write_bytes(b"partial")
    summary = read_backups(tmp_path, "main")
    assert summary.snapshots == 5
    assert summary.unfinished == 2
    assert summary.newest is not None
    assert summary.newest.revision == 30
    assert summary.newest.taken_at == base + 7200


def test_an_empty_location_has_no_newest(tmp_path: Path) -> None:
    assert read_backups(tmp_path, "main") == BackupSummary(0, None, 0)


async def test_a_missing_backup_location_fails_the_refresh(tmp_path: Path) -> None:
    source = EtcdBackupSource("main", tmp_path / "missing")
    with pytest.raises(SourceError) as raised:
        await source.refresh()
    assert raised.value.reason == "not_found"
    (tmp_path / "missing").mkdir()
    assert (await source.refresh()).snapshots == 0


# --- the collector --------------------------------------------------------------------


@dataclass
class View:
    """A source's view as the runner gives it (our own boundary)."""

    value: object
    up: bool = True

    @property
    def snapshot(self) -> Snapshot[object] | None:
        return None if self.value is None else Snapshot(self.value, 0.0)


def scrape(collector: EtcdCollector) -> list[promtext.Sample]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return [s for family in promtext.parse(text).values() for s in family]


def cluster_snapshot() -> EtcdClusterSnapshot:
    metrics = page("leader_peer_down")
    up = MemberSnapshot(
        member="127.0.0.1:2001",
        endpoint="http://127.0.0.1:2001",
        status=status(1, 1, errors=("memberID:1 alarm:NOSPACE ",)),
        health=MemberHealth(False, "alarm"),
        metrics=metrics,
        disk=DiskVerdict(True, 0.02, 100, True),
        growth_bytes_per_second=12.5,
    )
    down = MemberSnapshot(
        member="127.0.0.1:2002",
        endpoint="http://127.0.0.1:2002",
        status=None,
        health=None,
        metrics=None,
        disk=DiskVerdict(),
        growth_bytes_per_second=None,
        error="refused",
    )
    listed = tuple(members(1, 2))
    return EtcdClusterSnapshot(
        cluster="main",
        members=(up, down),
        member_list=listed,
        verdict=cluster_verdict([up.status, None], listed, configured=2),
        member_ids={"127.0.0.1:2001": 1, "127.0.0.1:2002": 2},
    )


def values(samples: list[promtext.Sample], name: str, **labels: str) -> list[float]:
    return [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def test_the_collector_shows_a_member_down_beside_one_up() -> None:
    samples = scrape(EtcdCollector({"main": View(cluster_snapshot())}))
    up, down = {"member": "127.0.0.1:2001"}, {"member": "127.0.0.1:2002"}
    assert values(samples, "kubeballast_etcd_member_up", **up) == [1]
    assert values(samples, "kubeballast_etcd_member_up", **down) == [0]
    assert values(samples, "kubeballast_etcd_member_healthy", **down) == [0]
    # Nothing stale or invented for the member that did not answer.
    assert values(samples, "kubeballast_etcd_raft_index", **down) == []
    assert values(samples, "kubeballast_etcd_disk_slow", **down) == []
    # Two voting members, one in quorum: not a majority.
    assert values(samples, "kubeballast_etcd_cluster_quorum_healthy") == [0]
    # The alarm is attributed to the member that raised it, the other shows 0.
    assert values(samples, "kubeballast_etcd_member_alarm", alarm="NOSPACE", **up) == [1]
    assert values(samples, "kubeballast_etcd_member_alarm", alarm="NOSPACE", **down) == [0]
    assert values(samples, "kubeballast_etcd_cluster_alarm", alarm="NOSPACE") == [1]
    assert values(samples, "kubeballast_etcd_cluster_alarm", alarm="CORRUPT") == [0]
    assert values(samples, "kubeballast_etcd_disk_slow", **up) == [1]
    assert values(samples, "kubeballast_etcd_disk_wal_fsync_p99_seconds", **up) == [0.02]
    assert values(samples, "kubeballast_etcd_db_growth_bytes_per_second", **up) == [12.5]
    assert values(samples, "kubeballast_etcd_db_in_use_ratio", **up) == [0.8]
    info = [s.labels for s in samples if s.name == "kubeballast_etcd_member_info"]
    assert info == [
        {"etcd_cluster": "main", "member": "127.0.0.1:2001", "name": "m1", "member_id": "1",
         "version": "3.4.23"}
    ]  # fmt: skip
    # Histogram buckets keep etcd's bounds, written as etcd writes them.
    bounds = [
        s.labels["le"]
        for s in samples
        if s.name == "kubeballast_etcd_disk_wal_fsync_duration_seconds_bucket"
    ]
    assert bounds[:3] == ["0.001", "0.002", "0.004"]
    assert bounds[-1] == "+Inf"
    assert values(
        samples, "kubeballast_etcd_network_peer_sent_failures_total", peer="aeaa04673eae9eee"
    ) == [81]
    codes = [s.labels["grpc_code"] for s in samples if s.name.endswith("grpc_server_handled_total")]
    assert codes == list(GRPC_CODES)
    # `cluster` is left to the Kubernetes cluster (Prometheus' external label or
    # relabelling): every series names its etcd cluster as `etcd_cluster`.
    assert {s.labels.get("etcd_cluster") for s in samples} == {"main"}
    assert [s for s in samples if "cluster" in s.labels] == []


def test_every_family_the_collector_yields_is_declared() -> None:
    declared = {spec.name for spec in SPECS}
    collector = EtcdCollector(
        {"main": View(cluster_snapshot())},
        {"main": View(summarize_backups(1, [record()]))},
    )
    assert {family.name for family in collector.collect()} == declared


def test_a_failed_refresh_shows_nothing_rather_than_stale_numbers() -> None:
    collector = EtcdCollector({"main": View(cluster_snapshot(), up=False)})
    assert [s for s in scrape(collector) if s.name.startswith("kubeballast_etcd_")] == []


def test_backup_series_and_the_age_on_the_collectors_clock() -> None:
    newest = record(verified=False, created_unix=1_000.0)
    collector = EtcdCollector(
        {},
        {"events": View(summarize_backups(3, [newest, replace(newest, taken_at=500.0)]))},
        clock=lambda: 1_600.0,
    )
    samples = scrape(collector)
    assert values(samples, "kubeballast_etcd_backup_snapshots", etcd_cluster="events") == [3]
    assert values(samples, "kubeballast_etcd_backup_unfinished_snapshots") == [1]
    assert values(samples, "kubeballast_etcd_backup_newest_age_seconds") == [600]
    assert values(samples, "kubeballast_etcd_backup_newest_timestamp_seconds") == [1_000]
    assert values(samples, "kubeballast_etcd_backup_newest_size_bytes") == [4128]
    assert values(samples, "kubeballast_etcd_backup_newest_revision") == [1200]
    results = {
        s.labels["result"]: s.value
        for s in samples
        if s.name == "kubeballast_etcd_backup_newest_verification"
    }
    assert results == {"verified": 0, "failed": 1, "unchecked": 0}


@pytest.mark.parametrize(
    ("endpoint", "label"),
    [
        ("https://10.0.0.11:2379", "10.0.0.11:2379"),
        ("http://etcd-0.etcd:2379", "etcd-0.etcd:2379"),
        ("https://[::1]:2379", "[::1]:2379"),
    ],
)
def test_the_member_label_is_the_endpoints_host_and_port(endpoint: str, label: str) -> None:
    assert member_label(endpoint) == label


# --- the factory ----------------------------------------------------------------------


def test_the_factory_builds_a_source_per_cluster_and_backup_location() -> None:
    main = EtcdClusterConfig(
        name="main",
        endpoints=("https://10.0.0.11:2379", "https://10.0.0.12:2379"),
        backup=EtcdBackupConfig(directory="/var/backups/etcd/main"),
    )
    events = EtcdClusterConfig(name="events", endpoints=("https://10.0.0.11:2381",))
    context = ExporterContext(ExporterConfig(etcd=EtcdConfig(clusters=(main, events))), SourceSet())
    collectors = build_etcd(context)
    assert [type(c) for c in collectors] == [EtcdCollector]
    assert set(context.sources.views) == {
        ("etcd", "main"),
        ("etcd", "events"),
        ("etcd_backup", "main"),
    }


def test_without_clusters_the_area_is_left_out() -> None:
    context = ExporterContext(ExporterConfig(), SourceSet())
    assert build_etcd(context) == []
    assert len(context.sources) == 0
