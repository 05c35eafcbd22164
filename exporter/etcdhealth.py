"""etcd verdicts: pure functions over what the members said, and over two scrapes.

:mod:`kubeballast.exporter.etcd` does the I/O (health, status, member list and
/metrics of every member of every configured cluster) and calls into this module for
everything that is a decision rather than a fetch, so that every rule here is
table-tested on captured etcd pages without starting etcd:

- :func:`summarize` reduces one member's /metrics page to :class:`MemberMetrics`: the
  curated, bounded set the exporter re-exports (WAL fsync and backend commit
  histograms, peer round-trip time per peer, proposals, leader changes, has-leader,
  gRPC results by code summed over methods, unary gRPC latency summed over methods,
  the backend quota). Peers are bounded by the members, gRPC codes by gRPC's 17.
- :func:`cluster_verdict` says, per cluster, whether quorum holds, whether the
  members agree on one leader, how far their raft indexes are apart, and which alarms
  are raised.
- :func:`disk_verdict` is the seed's "etcd needs SSDs" made measurable: the WAL fsync
  p99 over the last window (the bucket increase between two scrapes, as
  ``histogram_quantile(0.99, rate(...))`` would give over that window) above 10 ms
  means the disk is not SSD-class. etcd's own mixin only warns at 500 ms, which is a
  disk already failing the cluster; 10 ms is where etcd's hardware guidance puts a
  disk that keeps up with a busy cluster.
- :func:`growth_rate`, :func:`quota_usage_ratio`, :func:`in_use_ratio`: the database
  numbers behind etcdDatabaseQuotaLowSpace, etcdExcessiveDatabaseGrowth and
  etcdDatabaseHighFragmentationRatio, for a dashboard that shows them without PromQL.
- :func:`parse_sidecar` and :func:`summarize_backups`: the periodic backups the seed
  names as the last-resort recovery, read from the JSON sidecar (format 1 of
  :mod:`kubeballast.core.etcdbackup`) that ``kube-ballast etcd backup`` writes beside
  each snapshot once it is verified.

Quorum is counted from *status*, not from ``/health``: etcd's ``/health`` also fails
while an alarm is raised (a NOSPACE cluster still has its quorum and leader and
serves reads and deletes), so "healthy members > members / 2" would call a full
database a lost quorum. A voting member counts towards quorum when it answers
``Maintenance.Status`` and names a leader; ``/health`` is exported as it is, per
member.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec

from kubeballast.core.etcd import AlarmType, Member, MemberStatus
from kubeballast.core.promtext import (
    Buckets,
    Sample,
    bucket_deltas,
    histogram_buckets,
    histogram_quantile,
    sum_by,
)

__all__ = [
    "ALARM_TYPES",
    "DEFAULT_THRESHOLDS",
    "GRPC_CODES",
    "WANTED_FAMILIES",
    "BackupRecord",
    "BackupSummary",
    "ClusterVerdict",
    "DiskVerdict",
    "Histogram",
    "MemberMetrics",
    "Thresholds",
    "cluster_verdict",
    "disk_verdict",
    "growth_rate",
    "in_use_ratio",
    "parse_alarms",
    "parse_sidecar",
    "quota_usage_ratio",
    "summarize",
    "summarize_backups",
]

# --- the families read from a member's /metrics ---------------------------------------

WAL_FSYNC: Final = "etcd_disk_wal_fsync_duration_seconds"
BACKEND_COMMIT: Final = "etcd_disk_backend_commit_duration_seconds"
PEER_RTT: Final = "etcd_network_peer_round_trip_time_seconds"
PEER_SENT_FAILURES: Final = "etcd_network_peer_sent_failures_total"
PEER_RECEIVED_FAILURES: Final = "etcd_network_peer_received_failures_total"
PROPOSALS_COMMITTED: Final = "etcd_server_proposals_committed_total"
PROPOSALS_APPLIED: Final = "etcd_server_proposals_applied_total"
PROPOSALS_PENDING: Final = "etcd_server_proposals_pending"
PROPOSALS_FAILED: Final = "etcd_server_proposals_failed_total"
LEADER_CHANGES: Final = "etcd_server_leader_changes_seen_total"
HAS_LEADER: Final = "etcd_server_has_leader"
QUOTA: Final = "etcd_server_quota_backend_bytes"
GRPC_HANDLED: Final = "grpc_server_handled_total"
GRPC_HANDLING: Final = "grpc_server_handling_seconds"
PROCESS_START: Final = "process_start_time_seconds"

WANTED_FAMILIES: Final = frozenset(
    {
        WAL_FSYNC,
        BACKEND_COMMIT,
        PEER_RTT,
        PEER_SENT_FAILURES,
        PEER_RECEIVED_FAILURES,
        PROPOSALS_COMMITTED,
        PROPOSALS_APPLIED,
        PROPOSALS_PENDING,
        PROPOSALS_FAILED,
        LEADER_CHANGES,
        HAS_LEADER,
        QUOTA,
        GRPC_HANDLED,
        GRPC_HANDLING,
        PROCESS_START,
    }
)
"""Everything :func:`summarize` reads; ``promtext.parse`` skips the rest of the page
(about 90 % of it: Go runtime, debugging families, per-method gRPC message counts)."""

GRPC_CODES: Final[tuple[str, ...]] = (
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
)
"""gRPC status codes as go-grpc-prometheus writes them (``codes.Code.String()``). The
``grpc_code`` label only takes these values; anything else on a page is dropped, so a
misbehaving target cannot add series."""

_GRPC_CODE_SET: Final = frozenset(GRPC_CODES)

ALARM_TYPES: Final[tuple[AlarmType, ...]] = (AlarmType.NOSPACE, AlarmType.CORRUPT)
"""Every alarm is exported as 0 or 1, so that an alarm that clears shows a 0 rather
than a series that vanishes (which an alert cannot tell from a scrape gap)."""

_UNARY_EXCLUDED_METHODS: Final = frozenset({"Defragment"})
"""Left out of the unary latency histogram, as the mixin's etcdGRPCRequestsSlow does:
a defragmentation takes seconds per GiB by design."""


@dataclass(frozen=True)
class Histogram:
    """A cumulative histogram summed over the labels not kept."""

    buckets: tuple[tuple[float, float], ...]
    """``(upper bound, cumulative count)``, sorted, ``+Inf`` last."""
    sum: float
    count: float


@dataclass(frozen=True)
class MemberMetrics:
    """What the exporter keeps of one member's /metrics page. ``None`` / empty: the
    family was not on the page (an older etcd, or the metric not observed yet: etcd
    only creates a peer's round-trip or failure series once it has a value)."""

    process_start_time_seconds: float | None = None
    has_leader: float | None = None
    leader_changes_seen: float | None = None
    proposals_committed: float | None = None
    """The committed raft index (a gauge in etcd despite its ``_total`` name)."""
    proposals_applied: float | None = None
    proposals_pending: float | None = None
    proposals_failed: float | None = None
    quota_backend_bytes: float | None = None
    wal_fsync: Histogram | None = None
    backend_commit: Histogram | None = None
    peer_rtt: Mapping[str, Histogram] = field(default_factory=dict)
    """By peer member id (hex, etcd's ``To`` label)."""
    peer_sent_failures: Mapping[str, float] = field(default_factory=dict)
    """By peer member id (``To``)."""
    peer_received_failures: Mapping[str, float] = field(default_factory=dict)
    """By peer member id (``From``)."""
    grpc_handled: Mapping[str, float] = field(default_factory=dict)
    """RPCs completed, by gRPC code, summed over services, methods and types."""
    grpc_unary_handling: Histogram | None = None
    """Unary RPC latency summed over methods (Defragment excluded). Only served by
    etcd started with ``--metrics=extensive``."""


def _single(samples: Sequence[Sample]) -> float | None:
    """The value of an unlabelled gauge or counter (the first sample if labelled)."""
    for sample in samples:
        if not sample.labels:
            return sample.value
    return samples[0].value if samples else None


def _histograms(samples: Sequence[Sample], family: str, by: Sequence[str]) -> dict[str, Histogram]:
    """Histograms grouped by one label (``by`` empty: one histogram under ``""``)."""
    buckets = histogram_buckets(samples, by)
    sums = sum_by(samples, by, name=family + "_sum")
    counts = sum_by(samples, by, name=family + "_count")
    out: dict[str, Histogram] = {}
    for key, group in buckets.items():
        name = key[0] if key else ""
        out[name] = Histogram(tuple(group), sums.get(key, 0.0), counts.get(key, 0.0))
    return out


def _histogram(samples: Sequence[Sample], family: str) -> Histogram | None:
    return _histograms(samples, family, ()).get("")


def _by_label(samples: Sequence[Sample], label: str) -> dict[str, float]:
    return {key[0]: value for key, value in sum_by(samples, (label,)).items() if key[0]}


def summarize(families: Mapping[str, Sequence[Sample]]) -> MemberMetrics:
    """One member's page, from ``promtext.parse(text, WANTED_FAMILIES)``."""
    handled: dict[str, float] = {}
    for (code,), value in sum_by(families.get(GRPC_HANDLED, ()), ("grpc_code",)).items():
        if code in _GRPC_CODE_SET:
            handled[code] = value
    unary = [
        sample
        for sample in families.get(GRPC_HANDLING, ())
        if sample.labels.get("grpc_type") == "unary"
        and sample.labels.get("grpc_method") not in _UNARY_EXCLUDED_METHODS
    ]
    return MemberMetrics(
        process_start_time_seconds=_single(families.get(PROCESS_START, ())),
        has_leader=_single(families.get(HAS_LEADER, ())),
        leader_changes_seen=_single(families.get(LEADER_CHANGES, ())),
        proposals_committed=_single(families.get(PROPOSALS_COMMITTED, ())),
        proposals_applied=_single(families.get(PROPOSALS_APPLIED, ())),
        proposals_pending=_single(families.get(PROPOSALS_PENDING, ())),
        proposals_failed=_single(families.get(PROPOSALS_FAILED, ())),
        quota_backend_bytes=_single(families.get(QUOTA, ())),
        wal_fsync=_histogram(families.get(WAL_FSYNC, ()), WAL_FSYNC),
        backend_commit=_histogram(families.get(BACKEND_COMMIT, ()), BACKEND_COMMIT),
        peer_rtt=_histograms(families.get(PEER_RTT, ()), PEER_RTT, ("To",)),
        peer_sent_failures=_by_label(families.get(PEER_SENT_FAILURES, ()), "To"),
        peer_received_failures=_by_label(families.get(PEER_RECEIVED_FAILURES, ()), "From"),
        grpc_handled=handled,
        grpc_unary_handling=_histogram(unary, GRPC_HANDLING) if unary else None,
    )


# --- alarms ---------------------------------------------------------------------------

# Maintenance.Status lists the member's alarms in ``errors`` as protobuf text
# (``memberID:13938422801465187966 alarm:NOSPACE ``), read from the member's local
# alarm store: unlike Maintenance.Alarm (a raft request), this answers without quorum,
# which is exactly when one wants to know about alarms.
_ALARM_TEXT: Final = re.compile(r"memberID:(\d+)\s+alarm:([A-Z]+)")


def parse_alarms(errors: Iterable[str]) -> frozenset[tuple[int, AlarmType]]:
    """``(member id, alarm)`` for every alarm named in a status' ``errors``."""
    found: set[tuple[int, AlarmType]] = set()
    for text in errors:
        for member_id, name in _ALARM_TEXT.findall(text):
            if name in AlarmType.__members__:
                found.add((int(member_id), AlarmType(name)))
    return frozenset(found)


# --- the cluster ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterVerdict:
    """One cluster's state from the statuses of its members."""

    members: int
    """Members in the member list (learners included); the configured endpoints when
    no member answered the member list."""
    voting_members: int
    learners: int
    quorum_members: int
    """Voting members that answered status and named a leader."""
    leader_id: int | None
    """The leader every answering member names; None when they disagree or none knows."""
    raft_index_spread: int | None
    """Largest minus smallest raft index over the answering members."""
    alarms: frozenset[tuple[int, AlarmType]]
    """Alarms any answering member reported, with the member that raised each."""

    @property
    def quorum_healthy(self) -> bool:
        """A majority of the voting members is up and in a raft with a leader."""
        return self.voting_members > 0 and self.quorum_members > self.voting_members / 2

    @property
    def leader_agreed(self) -> bool:
        return self.leader_id is not None

    def alarm_raised(self, alarm: AlarmType, member_id: int | None = None) -> bool:
        """Whether ``alarm`` is raised (by ``member_id``, if given)."""
        return any(
            kind == alarm and (member_id is None or raiser == member_id)
            for raiser, kind in self.alarms
        )


def cluster_verdict(
    statuses: Sequence[MemberStatus | None],
    members: Sequence[Member] | None,
    configured: int,
) -> ClusterVerdict:
    """The verdict over the members' statuses (None: the member did not answer).

    ``members`` is the member list (None when no member answered it); ``configured``
    the number of configured endpoints, the membership assumed without a list.
    """
    answered = [status for status in statuses if status is not None]
    if members is not None:
        learner_ids = {member.id for member in members if member.is_learner}
        voting_ids: set[int] | None = {member.id for member in members if not member.is_learner}
        total, learners = len(members), len(learner_ids)
    else:
        learner_ids = {status.member_id for status in answered if status.is_learner}
        voting_ids = None
        total, learners = configured, len(learner_ids)
    voting = len(voting_ids) if voting_ids is not None else max(0, total - learners)
    in_quorum = {
        status.member_id
        for status in answered
        if status.leader != 0
        and not status.is_learner
        and (voting_ids is None or status.member_id in voting_ids)
    }
    leaders = {status.leader for status in answered}
    leader_id = None
    if len(leaders) == 1 and 0 not in leaders:
        leader_id = next(iter(leaders))
    spread = None
    if answered:
        indexes = [status.raft_index for status in answered]
        spread = max(indexes) - min(indexes)
    alarms: frozenset[tuple[int, AlarmType]] = frozenset().union(
        *(parse_alarms(status.errors) for status in answered)
    )
    return ClusterVerdict(
        members=total,
        voting_members=voting,
        learners=learners,
        quorum_members=len(in_quorum),
        leader_id=leader_id,
        raft_index_spread=spread,
        alarms=alarms,
    )


# --- the disk and the database ---------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """The disk verdict's thresholds."""

    slow_fsync_p99_seconds: float = 0.010
    """WAL fsync p99 above which the disk is not SSD-class. etcd's hardware guide asks
    for a p99 WAL fsync under 10 ms; spinning disks and throttled network volumes sit
    well above it."""
    min_fsyncs: float = 10
    """Fewer fsyncs than this in a window say nothing about a p99 (one slow fsync out
    of three would be "the p99"): the verdict then stays unevaluated."""


DEFAULT_THRESHOLDS: Final = Thresholds()


@dataclass(frozen=True)
class DiskVerdict:
    """The WAL fsync p99 over one window and what it says about the disk."""

    evaluated: bool = False
    """False without a window (first scrape) or with too few fsyncs in it."""
    p99_seconds: float | None = None
    fsyncs: float = 0.0
    """WAL fsyncs observed in the window."""
    slow: bool = False


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def disk_verdict(
    prev: Histogram | None,
    cur: Histogram | None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> DiskVerdict:
    """The verdict over the window from ``prev`` to ``cur`` (cumulative WAL fsync
    histograms of two scrapes of the same member). A restart in between (counts went
    down, or the layout changed) makes ``cur`` itself the window, as ``rate()`` does."""
    if prev is None or cur is None:
        return DiskVerdict()
    window: Buckets = bucket_deltas(prev.buckets, cur.buckets)
    fsyncs = window[-1][1] if window else 0.0
    if not fsyncs >= thresholds.min_fsyncs:  # NaN-safe: NaN fails the comparison
        return DiskVerdict(fsyncs=fsyncs if _finite(fsyncs) else 0.0)
    p99 = histogram_quantile(0.99, window)
    if not _finite(p99):
        return DiskVerdict(fsyncs=fsyncs)
    return DiskVerdict(
        evaluated=True,
        p99_seconds=p99,
        fsyncs=fsyncs,
        slow=p99 > thresholds.slow_fsync_p99_seconds,
    )


def growth_rate(
    prev_bytes: int | None, prev_at: float | None, cur_bytes: int | None, cur_at: float
) -> float | None:
    """Database growth in bytes per second between two readings (negative after a
    defragmentation gave space back); None without two readings or elapsed time."""
    if prev_bytes is None or prev_at is None or cur_bytes is None:
        return None
    elapsed = cur_at - prev_at
    if not elapsed > 0:
        return None
    return (cur_bytes - prev_bytes) / elapsed


def quota_usage_ratio(db_size: int | None, quota: float | None) -> float | None:
    """The database file over ``--quota-backend-bytes``: at 1 etcd raises NOSPACE and
    refuses writes. None without a quota (etcd before 3.4 does not export it)."""
    if db_size is None or quota is None or not quota > 0 or not _finite(quota):
        return None
    return db_size / quota


def in_use_ratio(in_use: int | None, total: int | None) -> float | None:
    """Bytes in use over the database file; the rest is free pages that only a
    defragmentation returns (the mixin's fragmentation alert fires below 0.5)."""
    if in_use is None or total is None or total <= 0:
        return None
    return in_use / total


# --- backups --------------------------------------------------------------------------


class _RawSidecar(msgspec.Struct):
    # The fields of sidecar format 1 (kubeballast.core.etcdbackup) the exporter reads;
    # readers ignore the others, as that format asks.
    created_unix: float | None = None
    size_bytes: int | None = None
    revision: int | None = None
    keys: int | None = None
    verified: bool | None = None


@dataclass(frozen=True)
class BackupRecord:
    """One finished snapshot as its sidecar ``<snapshot>.json`` describes it."""

    snapshot: str
    """The snapshot's file name."""
    taken_at: float
    """Unix seconds: the sidecar's ``created_unix``, else the time in the file name."""
    size: int | None
    revision: int | None
    """The etcd revision the snapshot holds: writes after it are lost on a restore."""
    keys: int | None
    verified: bool | None
    """True: the bytes on disk matched etcd's digest and etcdctl read the file; False:
    a check failed; None: the sidecar does not say."""


def parse_sidecar(
    document: Mapping[str, object], *, snapshot: str, created_unix: float
) -> BackupRecord:
    """The record of one sidecar document; ``ValueError`` when a field has the wrong
    type. ``created_unix`` (from the file name) stands in for a missing timestamp."""
    try:
        raw = msgspec.convert(document, _RawSidecar)
    except msgspec.ValidationError as error:
        raise ValueError(f"sidecar of {snapshot}: {error}") from error
    taken_at = raw.created_unix if raw.created_unix is not None else created_unix
    if not _finite(taken_at):
        raise ValueError(f"sidecar of {snapshot}: created_unix is not a finite number")
    return BackupRecord(
        snapshot=snapshot,
        taken_at=taken_at,
        size=raw.size_bytes,
        revision=raw.revision,
        keys=raw.keys,
        verified=raw.verified,
    )


@dataclass(frozen=True)
class BackupSummary:
    """A backup location: how many snapshots it keeps and the newest finished one."""

    snapshots: int
    """Snapshot files of the cluster in the location, finished or not."""
    newest: BackupRecord | None
    """The finished (described) snapshot taken last; None when there is none."""
    unfinished: int = 0
    """Snapshots without a readable sidecar: being written, or abandoned half-way
    (the sidecar is written last, so these are not backups one can restore from)."""


def summarize_backups(snapshots: int, records: Iterable[BackupRecord]) -> BackupSummary:
    """The summary of a location with ``snapshots`` files and these described ones."""
    listed = list(records)
    newest = max(listed, key=lambda record: (record.taken_at, record.snapshot), default=None)
    return BackupSummary(
        snapshots=snapshots, newest=newest, unfinished=max(0, snapshots - len(listed))
    )
