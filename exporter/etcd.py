"""etcd: is each cluster in quorum, with one leader, on fast disks, with room to grow?

etcd is the only persistent store of a Kubernetes cluster, and the seed's example of a
component that failed so that nothing could be written. Large clusters run more than
one (``--etcd-servers-overrides=/events#...`` puts Events in their own), so every
cluster in ``exporter.etcd.clusters`` is watched, each under its name (``etcd_cluster``
label), each member under its configured endpoint's ``host:port`` (``member`` label):
a label that stays the same whether the member answers or not, which its name (known
only from a member that answers) would not. ``cluster`` is left to the Kubernetes
cluster, which Prometheus setups conventionally attach (external label, relabelling);
Prometheus does not overwrite a label a series or alert already has, so an etcd
``cluster`` label would hide it from Alertmanager's grouping and inhibit rules.

:class:`EtcdClusterSource` (kind ``etcd``, one per cluster) asks every member
``Maintenance.Status``, ``/health``, ``/metrics`` and the member list through
:class:`~kubeballast.core.etcd.EtcdClient`: the members concurrently, each member's
calls one after the other on one connection (one TLS handshake per member and
refresh), skipping the rest when the status call cannot reach it. A member that does
not answer is *data* (member down, quorum at risk), not a failed refresh: were it a
failure, the runner would keep serving the last snapshot, in which the member was
fine. The refresh only fails when the client cannot be built (unreadable TLS files:
``reason="tls"``). The client lives for one refresh: sources have no close hook, a
fresh session never holds a keep-alive connection to a member that was killed
meanwhile, and rotated client certificates are picked up on the next refresh (with a
``ca_file``, building the client costs about 1.5 ms; without one, loading the system
trust store costs about 20 ms per cluster and refresh). The source keeps the previous
scrape of every member for the window verdicts (WAL fsync p99, database growth), which
:mod:`~kubeballast.exporter.etcdhealth` computes, with the cluster verdict (quorum,
leader agreement, raft index spread, alarms).

:class:`EtcdBackupSource` (kind ``etcd_backup``) reads the cluster's backup
location (``exporter.etcd.clusters[].backup.directory``), where ``kube-ballast etcd
backup`` keeps snapshots each with a JSON sidecar (:mod:`kubeballast.core.etcdbackup`
reads them), and reports how many are kept and the newest finished one: the seed's
worst-case recovery is a restore from the last backup, which is only a plan if
that backup is recent and restorable.

Coverage of etcd's own alerts (etcd-io/etcd ``contrib/mixin``): every rule can be
written over these series alone, for deployments where Prometheus does not scrape
etcd itself (or cannot reach its members). Series below drop the ``kubeballast_etcd_``
prefix; counters are exposed with ``_total``, histograms with ``_bucket``.

================================== ====================================================
mixin alert                        series (and the rule's shape)
================================== ====================================================
etcdMembersDown                    ``member_up == 0``, or
                                   ``rate(network_peer_sent_failures_total) > 0.01``
etcdInsufficientMembers            ``cluster_quorum_healthy == 0``
                                   (``cluster_quorum_members`` of
                                   ``cluster_voting_members``)
etcdNoLeader                       ``server_has_leader == 0``, also
                                   ``cluster_leader_agreed == 0``
etcdHighNumberOfLeaderChanges      ``increase(max by (etcd_cluster)
                                   (server_leader_changes_seen_total)[15m:1m]) >= 4``
etcdHighNumberOfFailedGRPCRequests ``grpc_server_handled_total`` by ``grpc_code``: the
                                   mixin's failure codes over all codes (summed over
                                   methods: a ratio per member, not per method)
etcdGRPCRequestsSlow               ``histogram_quantile(0.99,
                                   rate(grpc_server_unary_handling_seconds_bucket))``
                                   ``> 0.15`` (unary methods but Defragment, as in the
                                   mixin; etcd must run with ``--metrics=extensive``)
etcdMemberCommunicationSlow        ``network_peer_round_trip_time_seconds`` per
                                   ``peer``, p99 ``> 0.15``
etcdHighNumberOfFailedProposals    ``rate(server_proposals_failed_total[15m]) > 5``
etcdHighFsyncDurations             ``disk_wal_fsync_duration_seconds`` p99 ``> 0.5``
                                   and ``> 1`` (and the SSD verdict ``disk_slow``)
etcdHighCommitDurations            ``disk_backend_commit_duration_seconds`` p99
                                   ``> 0.25``
etcdDatabaseQuotaLowSpace          ``db_quota_usage_ratio > 0.95`` (``db_total_size_bytes``
                                   over ``server_quota_backend_bytes``)
etcdExcessiveDatabaseGrowth        ``predict_linear(db_total_size_bytes[4h], 4 * 3600)
                                   > server_quota_backend_bytes`` (and
                                   ``db_growth_bytes_per_second``)
etcdDatabaseHighFragmentationRatio ``db_in_use_ratio < 0.5 and
                                   db_total_size_in_use_bytes > 104857600``
================================== ====================================================

Where the mixin reads Prometheus' ``up`` of a member, these rules read ``member_up``:
whether the member answered the exporter's status call.

Cardinality per member is fixed: 17 gRPC codes, 2 alarm types, 3 histograms of about
16 buckets, and one round-trip histogram and two failure counters per *peer* (bounded
by the cluster's members). Nothing is labelled by key, method, client or request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import urlsplit

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from kubeballast.core import promtext
from kubeballast.core.config import EtcdClusterConfig
from kubeballast.core.errors import ConfigError, KubeBallastError
from kubeballast.core.etcd import (
    EtcdClient,
    EtcdUnavailable,
    Member,
    MemberHealth,
    MemberStatus,
    hex_id,
)
from kubeballast.core.etcdbackup import BackupError, list_backups
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.contract import MetricsCollector, MetricSpec, SnapshotView, SourceError
from kubeballast.exporter.etcdhealth import (
    ALARM_TYPES,
    DEFAULT_THRESHOLDS,
    GRPC_CODES,
    WANTED_FAMILIES,
    BackupRecord,
    BackupSummary,
    ClusterVerdict,
    DiskVerdict,
    Histogram,
    MemberMetrics,
    Thresholds,
    cluster_verdict,
    disk_verdict,
    growth_rate,
    in_use_ratio,
    parse_sidecar,
    quota_usage_ratio,
    summarize,
    summarize_backups,
)

__all__ = [
    "BACKUP_KIND",
    "CLUSTER_KIND",
    "SPECS",
    "EtcdBackupSource",
    "EtcdClusterSnapshot",
    "EtcdClusterSource",
    "EtcdCollector",
    "MemberSnapshot",
    "build_etcd",
    "member_label",
    "read_backups",
]

log = logging.getLogger(__name__)

CLUSTER_KIND: Final = "etcd"
BACKUP_KIND: Final = "etcd_backup"

INTERVAL_SECONDS: Final = 15.0
"""How often each cluster is probed. Fixed until ``exporter.etcd`` gains a setting: four
calls per member (status, health and member list are served from memory; the
/metrics page is about 200 KB), which even a struggling etcd answers in milliseconds."""

CALL_TIMEOUT_SECONDS: Final = 5.0
"""Bound of each call to a member. Members are asked concurrently and each member's
calls share two of these (see ``EtcdClusterSource._ask``), so a refresh takes at most
about twice this long however many members are down or hang."""

BACKUP_INTERVAL_SECONDS: Final = 60.0
"""How often a backup location is read: backups are taken hourly or daily."""

_T = TypeVar("_T")


def member_label(endpoint: str) -> str:
    """The ``member`` label of a configured endpoint: its ``host:port``."""
    netloc = urlsplit(endpoint).netloc
    return netloc or endpoint


# --- the cluster source ----------------------------------------------------------------


@dataclass(frozen=True)
class MemberSnapshot:
    """What one member said in one refresh, and the window verdicts."""

    member: str
    """The ``member`` label (``host:port`` of the configured endpoint)."""
    endpoint: str
    status: MemberStatus | None
    """None: the member did not answer ``Maintenance.Status`` (it is down to us)."""
    health: MemberHealth | None
    """None: ``/health`` got no answer."""
    metrics: MemberMetrics | None
    """None: /metrics could not be read or parsed."""
    disk: DiskVerdict
    growth_bytes_per_second: float | None
    error: str | None = None
    """Why the status call failed, for the log (never a label)."""


@dataclass(frozen=True)
class EtcdClusterSnapshot:
    """One refresh of one cluster."""

    cluster: str
    members: tuple[MemberSnapshot, ...]
    member_list: tuple[Member, ...] | None
    """The member list from the leader if it answered, else from any member; None when
    none did."""
    verdict: ClusterVerdict
    member_ids: Mapping[str, int]
    """Member label -> etcd member id, as learnt so far (kept across refreshes, so an
    alarm raised by a member that is down now is still attributed to it)."""


@dataclass
class _Previous:
    """The last good readings of one member, the base of the next window."""

    metrics: MemberMetrics | None = None
    db_size: int | None = None
    db_at: float | None = None


async def _attempt(call: Awaitable[_T]) -> _T | KubeBallastError:
    """The call's result, or the client's typed error (the member's answer, for us)."""
    try:
        return await call
    except KubeBallastError as error:
        return error


async def _within(
    deadline: float, call: Coroutine[object, object, _T], endpoint: str
) -> _T | KubeBallastError:
    """:func:`_attempt` bounded by a loop-time ``deadline``."""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        call.close()  # never started: close it, or Python warns it was never awaited
        return EtcdUnavailable(endpoint, "the member's probe budget is spent")
    try:
        async with asyncio.timeout(remaining):
            return await _attempt(call)
    except TimeoutError:
        return EtcdUnavailable(endpoint, "no answer within the member's probe budget")


def _parse_metrics(text: str) -> MemberMetrics:
    return summarize(promtext.parse(text, WANTED_FAMILIES))


class EtcdClusterSource:
    """Health, status, member list and /metrics of every member of one cluster."""

    def __init__(
        self,
        cluster: EtcdClusterConfig,
        *,
        config_path: str = "",
        interval_seconds: float = INTERVAL_SECONDS,
        call_timeout_seconds: float = CALL_TIMEOUT_SECONDS,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cluster = cluster
        self._config_path = config_path or f"exporter.etcd.clusters[{cluster.name}]"
        self._interval = interval_seconds
        self._call_timeout = call_timeout_seconds
        self._thresholds = thresholds
        self._monotonic = monotonic
        self._endpoints = tuple(endpoint.rstrip("/") for endpoint in cluster.endpoints)
        labels = [member_label(endpoint) for endpoint in self._endpoints]
        # Two endpoints on one host:port (http and https?) would share a label; the
        # whole URL keeps them apart.
        if len(set(labels)) != len(labels):
            labels = list(self._endpoints)
        self._labels = dict(zip(self._endpoints, labels, strict=True))
        self._previous: dict[str, _Previous] = {label: _Previous() for label in labels}
        self._member_ids: dict[str, int] = {}
        self._down: set[str] = set()

    @property
    def kind(self) -> str:
        return CLUSTER_KIND

    @property
    def instance(self) -> str:
        return self._cluster.name

    @property
    def interval_seconds(self) -> float:
        return self._interval

    @property
    def timeout_seconds(self) -> float:
        # Members are asked concurrently, each within two call timeouts (see _ask);
        # parsing the pages takes a little more, which must not count against them.
        return 2 * self._call_timeout + 5.0

    def _client(self) -> EtcdClient:
        try:
            return EtcdClient.from_config(
                self._cluster, config_path=self._config_path, timeout=self._call_timeout
            )
        except ConfigError as error:
            # An unreadable or invalid CA/cert/key file: every member is unreachable
            # until it is fixed. A failed refresh (reported, retried), not a crash.
            raise SourceError(
                "tls", f"etcd cluster {self._cluster.name}: TLS files unusable: {error}"
            ) from error

    async def refresh(self) -> EtcdClusterSnapshot:
        async with self._client() as client:
            answers = await asyncio.gather(
                *(self._ask(client, endpoint) for endpoint in self._endpoints)
            )
        now = self._monotonic()
        members: list[MemberSnapshot] = []
        lists: list[tuple[bool, tuple[Member, ...]]] = []
        for endpoint, (status, health, metrics, listed) in zip(
            self._endpoints, answers, strict=True
        ):
            label = self._labels[endpoint]
            members.append(self._member(label, endpoint, status, health, metrics, now))
            if isinstance(status, MemberStatus):
                self._member_ids[label] = status.member_id
            if not isinstance(listed, KubeBallastError):
                is_leader = isinstance(status, MemberStatus) and status.is_leader
                lists.append((is_leader, tuple(listed)))
        member_list = None
        if lists:
            # The leader's list is the committed membership; another member's may lag.
            member_list = next((m for leader, m in lists if leader), lists[0][1])
            self._learn_ids(member_list)
        verdict = cluster_verdict(
            [m.status for m in members], member_list, configured=len(self._endpoints)
        )
        return EtcdClusterSnapshot(
            cluster=self._cluster.name,
            members=tuple(members),
            member_list=member_list,
            verdict=verdict,
            member_ids=dict(self._member_ids),
        )

    async def _ask(
        self, client: EtcdClient, endpoint: str
    ) -> tuple[
        MemberStatus | KubeBallastError,
        MemberHealth | KubeBallastError,
        MemberMetrics | None,
        list[Member] | KubeBallastError,
    ]:
        # One call after the other on one connection: one TLS handshake per member and
        # refresh instead of four, and one request at a time for a member in trouble.
        status = await _attempt(client.status(endpoint))
        if isinstance(status, EtcdUnavailable) and status.code is None:
            # Unreachable (refused, reset, timed out, TLS): the other calls would only
            # wait out the same timeout again.
            return status, status, None, status
        # The rest shares one call's budget, so that a member that answers its status
        # and then hangs costs at most two timeouts, not four.
        deadline = asyncio.get_running_loop().time() + self._call_timeout
        health = await _within(deadline, client.health(endpoint), endpoint)
        text = await _within(deadline, client.metrics(endpoint), endpoint)
        # Parsed here, as each page arrives: about 6 ms of CPU per page, which spread
        # over the members' answers never holds the event loop for long in one piece.
        metrics = None
        if isinstance(text, str):
            try:
                metrics = _parse_metrics(text)
            except promtext.ParseError as error:
                log.warning("etcd cluster %s %s /metrics: %s", self._cluster.name, endpoint, error)
        listed = await _within(deadline, client.member_list(endpoint), endpoint)
        return status, health, metrics, listed

    def _learn_ids(self, member_list: Sequence[Member]) -> None:
        """Attribute member ids to configured endpoints through the list's client URLs
        (for members that never answered us themselves)."""
        by_netloc = {
            member_label(url.rstrip("/")): member.id
            for member in member_list
            for url in member.client_urls
        }
        for label in self._labels.values():
            if label not in self._member_ids and label in by_netloc:
                self._member_ids[label] = by_netloc[label]

    def _member(
        self,
        label: str,
        endpoint: str,
        status: MemberStatus | KubeBallastError,
        health: MemberHealth | KubeBallastError,
        metrics: MemberMetrics | None,
        now: float,
    ) -> MemberSnapshot:
        previous = self._previous[label]
        disk = DiskVerdict()
        if metrics is not None:
            base = previous.metrics
            disk = disk_verdict(
                base.wal_fsync if base is not None else None, metrics.wal_fsync, self._thresholds
            )
            previous.metrics = metrics
        growth = None
        error = None
        if isinstance(status, MemberStatus):
            growth = growth_rate(previous.db_size, previous.db_at, status.db_size, now)
            previous.db_size, previous.db_at = status.db_size, now
            if label in self._down:
                self._down.discard(label)
                log.info("etcd cluster %s member %s answers again", self._cluster.name, label)
        else:
            error = str(status)
            if label not in self._down:
                self._down.add(label)
                log.warning(
                    "etcd cluster %s member %s is down: %s", self._cluster.name, label, error
                )
        return MemberSnapshot(
            member=label,
            endpoint=endpoint,
            status=status if isinstance(status, MemberStatus) else None,
            health=health if isinstance(health, MemberHealth) else None,
            metrics=metrics,
            disk=disk,
            growth_bytes_per_second=growth,
            error=error,
        )


# --- the backup source -----------------------------------------------------------------


def read_backups(directory: str | os.PathLike[str], cluster: str) -> BackupSummary:
    """Read a backup location as ``kube-ballast etcd backup`` fills it.

    :func:`~kubeballast.core.etcdbackup.list_backups` finds the cluster's snapshots by
    their names (``etcd-<cluster>-<UTC time>.db``; other files are not ours) with their
    sidecars. ``FileNotFoundError`` when the directory is missing (``list_backups``
    would call that "no backups", which must not read as "nothing to report"),
    ``BackupError`` when it cannot be listed.
    """
    os.stat(directory)
    records: list[BackupRecord] = []
    files = list_backups(directory, cluster)
    for item in files:
        if item.sidecar is None:
            continue
        try:
            records.append(
                parse_sidecar(item.sidecar, snapshot=item.path.name, created_unix=item.created_unix)
            )
        except ValueError as error:
            log.debug("etcd backup %s: %s", item.path, error)
    return summarize_backups(len(files), records)


class EtcdBackupSource:
    """The snapshots kept in one backup location (``exporter.etcd.clusters[].backup.
    directory``), as ``kube-ballast etcd backup`` writes them."""

    def __init__(
        self,
        name: str,
        directory: str | os.PathLike[str],
        *,
        interval_seconds: float = BACKUP_INTERVAL_SECONDS,
    ) -> None:
        self._name = name
        self._directory = os.fspath(directory)
        self._interval = interval_seconds

    @property
    def kind(self) -> str:
        return BACKUP_KIND

    @property
    def instance(self) -> str:
        return self._name

    @property
    def interval_seconds(self) -> float:
        return self._interval

    @property
    def timeout_seconds(self) -> float:
        return min(30.0, self._interval)

    async def refresh(self) -> BackupSummary:
        try:
            # A network file system can block: the directory is read in a thread.
            return await asyncio.to_thread(read_backups, self._directory, self._name)
        except FileNotFoundError as error:
            raise SourceError(
                "not_found", f"etcd backup {self._name}: {self._directory} does not exist"
            ) from error
        except (OSError, BackupError) as error:
            # Permissions, a stale network mount: the location is there but unreadable.
            raise SourceError("auth", f"etcd backup {self._name}: {error}") from error


# --- the collector ---------------------------------------------------------------------

_C: Final = ("etcd_cluster",)
_M: Final = ("etcd_cluster", "member")
_P: Final = ("etcd_cluster", "member", "peer")


def _g(name: str, help_: str, labels: tuple[str, ...] = _M) -> MetricSpec:
    return MetricSpec(name, "gauge", help_, labels)


SPECS: Final[tuple[MetricSpec, ...]] = (
    # --- cluster verdicts
    _g(
        "kubeballast_etcd_cluster_members",
        "Members in the cluster's member list, learners included (the configured "
        "endpoints while no member answers the member list).",
        _C,
    ),
    _g(
        "kubeballast_etcd_cluster_learners", "Learners (non-voting members) in the member list.", _C
    ),
    _g("kubeballast_etcd_cluster_voting_members", "Voting members in the member list.", _C),
    _g(
        "kubeballast_etcd_cluster_quorum_members",
        "Voting members that answered the last status call and named a leader.",
        _C,
    ),
    _g(
        "kubeballast_etcd_cluster_quorum_healthy",
        "1 if more than half of the voting members answered and named a leader (the "
        "cluster can commit writes), else 0.",
        _C,
    ),
    _g(
        "kubeballast_etcd_cluster_leader_agreed",
        "1 if every member that answered names the same leader, else 0 (no leader, or "
        "an election in progress).",
        _C,
    ),
    _g(
        "kubeballast_etcd_cluster_raft_index_spread",
        "Largest minus smallest raft index over the members that answered: how far the "
        "slowest member is behind.",
        _C,
    ),
    _g(
        "kubeballast_etcd_cluster_alarm",
        "1 if the alarm (NOSPACE, CORRUPT) is raised on any member, else 0. NOSPACE "
        "means the cluster refuses writes.",
        ("etcd_cluster", "alarm"),
    ),
    _g(
        "kubeballast_etcd_cluster_db_quota_usage_ratio",
        "The largest database over --quota-backend-bytes among the members (at 1 etcd "
        "raises NOSPACE).",
        _C,
    ),
    # --- per member, from health and status
    _g(
        "kubeballast_etcd_member_up",
        "1 if the member answered the last Maintenance.Status call, else 0.",
    ),
    _g(
        "kubeballast_etcd_member_healthy",
        "1 if the member's /health said true (it has a leader, no alarm, and served a "
        "read), else 0.",
    ),
    _g(
        "kubeballast_etcd_member_info",
        "The member's etcd name, id (hex, as etcdctl and the peer label write it) and "
        "version (value always 1).",
        ("etcd_cluster", "member", "name", "member_id", "version"),
    ),
    _g("kubeballast_etcd_member_is_leader", "1 if the member says it is the leader, else 0."),
    _g("kubeballast_etcd_member_is_learner", "1 if the member is a learner, else 0."),
    _g(
        "kubeballast_etcd_member_status_errors",
        "Errors the member's status lists (alarms, no leader).",
    ),
    _g(
        "kubeballast_etcd_member_alarm",
        "1 if the member raised the alarm (NOSPACE, CORRUPT), else 0.",
        ("etcd_cluster", "member", "alarm"),
    ),
    _g("kubeballast_etcd_raft_index", "The member's committed raft index."),
    _g("kubeballast_etcd_raft_applied_index", "The member's applied raft index."),
    _g("kubeballast_etcd_raft_term", "The member's raft term (an increase is an election)."),
    _g(
        "kubeballast_etcd_db_total_size_bytes",
        "The member's database file size (what the quota is compared with).",
    ),
    _g(
        "kubeballast_etcd_db_total_size_in_use_bytes",
        "Bytes of the member's database in use; the rest is freed pages that a "
        "defragmentation returns.",
    ),
    _g(
        "kubeballast_etcd_db_in_use_ratio",
        "Database bytes in use over the file size (fragmentation: below 0.5 a "
        "defragmentation would give back more than half).",
    ),
    _g(
        "kubeballast_etcd_db_quota_usage_ratio",
        "The member's database file over --quota-backend-bytes.",
    ),
    _g(
        "kubeballast_etcd_db_growth_bytes_per_second",
        "Database file growth between the last two probes (negative after a defragmentation).",
    ),
    # --- per member, from /metrics
    _g(
        "kubeballast_etcd_server_has_leader",
        "1 if the member has a leader (etcd_server_has_leader), else 0.",
    ),
    MetricSpec(
        "kubeballast_etcd_server_leader_changes_seen",
        "counter",
        "Leader changes the member has seen (etcd_server_leader_changes_seen_total).",
        _M,
    ),
    _g(
        "kubeballast_etcd_server_proposals_committed",
        "Consensus proposals committed: the committed raft index "
        "(etcd_server_proposals_committed_total, a gauge in etcd).",
    ),
    _g(
        "kubeballast_etcd_server_proposals_applied",
        "Consensus proposals applied (etcd_server_proposals_applied_total, a gauge in etcd).",
    ),
    _g(
        "kubeballast_etcd_server_proposals_pending",
        "Consensus proposals waiting to commit (etcd_server_proposals_pending).",
    ),
    MetricSpec(
        "kubeballast_etcd_server_proposals_failed",
        "counter",
        "Failed consensus proposals (etcd_server_proposals_failed_total): elections, lost quorum.",
        _M,
    ),
    _g(
        "kubeballast_etcd_server_quota_backend_bytes",
        "The member's --quota-backend-bytes (etcd_server_quota_backend_bytes).",
    ),
    MetricSpec(
        "kubeballast_etcd_disk_wal_fsync_duration_seconds",
        "histogram",
        "WAL fsync latency (etcd_disk_wal_fsync_duration_seconds, etcd's buckets).",
        _M,
    ),
    MetricSpec(
        "kubeballast_etcd_disk_backend_commit_duration_seconds",
        "histogram",
        "Backend commit latency (etcd_disk_backend_commit_duration_seconds, etcd's buckets).",
        _M,
    ),
    MetricSpec(
        "kubeballast_etcd_network_peer_round_trip_time_seconds",
        "histogram",
        "Round-trip time to each peer, by the peer's member id (hex) "
        "(etcd_network_peer_round_trip_time_seconds).",
        _P,
    ),
    MetricSpec(
        "kubeballast_etcd_network_peer_sent_failures",
        "counter",
        "Failed sends to each peer, by the peer's member id (hex) "
        "(etcd_network_peer_sent_failures_total).",
        _P,
    ),
    MetricSpec(
        "kubeballast_etcd_network_peer_received_failures",
        "counter",
        "Failed receives from each peer, by the peer's member id (hex) "
        "(etcd_network_peer_received_failures_total).",
        _P,
    ),
    MetricSpec(
        "kubeballast_etcd_grpc_server_handled",
        "counter",
        "gRPC calls the member completed, by gRPC code, summed over methods "
        "(grpc_server_handled_total); every code from zero.",
        ("etcd_cluster", "member", "grpc_code"),
    ),
    MetricSpec(
        "kubeballast_etcd_grpc_server_unary_handling_seconds",
        "histogram",
        "Unary gRPC call latency summed over methods, Defragment excluded "
        "(grpc_server_handling_seconds; etcd serves it with --metrics=extensive only).",
        _M,
    ),
    # --- the disk verdict
    _g(
        "kubeballast_etcd_disk_wal_fsync_p99_seconds",
        "WAL fsync p99 over the last probe interval. Absent with too few fsyncs in it.",
    ),
    _g(
        "kubeballast_etcd_disk_slow",
        "1 if the WAL fsync p99 over the last probe interval is above 10 ms (not an "
        "SSD-class disk, which etcd needs), else 0 (also 0 while not evaluated).",
    ),
    _g(
        "kubeballast_etcd_disk_evaluated",
        "1 if the disk verdict was computed (two scrapes, enough fsyncs between them), else 0.",
    ),
    # --- backups
    _g(
        "kubeballast_etcd_backup_snapshots",
        "Snapshot files of the cluster kept in its backup location, finished or not.",
        _C,
    ),
    _g(
        "kubeballast_etcd_backup_unfinished_snapshots",
        "Snapshots in the backup location without a readable sidecar: being written, or "
        "abandoned (not backups one can restore from).",
        _C,
    ),
    _g(
        "kubeballast_etcd_backup_newest_timestamp_seconds",
        "When the newest finished snapshot was taken (Unix time).",
        _C,
    ),
    _g(
        "kubeballast_etcd_backup_newest_age_seconds",
        "Seconds since the newest finished snapshot was taken.",
        _C,
    ),
    _g("kubeballast_etcd_backup_newest_size_bytes", "Size of the newest snapshot.", _C),
    _g(
        "kubeballast_etcd_backup_newest_revision",
        "The etcd revision the newest snapshot holds (writes after it are lost on restore).",
        _C,
    ),
    _g(
        "kubeballast_etcd_backup_newest_verification",
        "1 for the newest finished snapshot's verification result (verified: its bytes "
        "matched etcd's digest and etcdctl read it; failed; unchecked), 0 for the others.",
        ("etcd_cluster", "result"),
    ),
)

VERIFICATION_RESULTS: Final = ("verified", "failed", "unchecked")


def _go_float(value: float) -> str:
    """A bucket bound as the ``le`` label, as client_golang writes it ("0.001", "1")."""
    if math.isinf(value):
        return "+Inf"
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


class _Families:
    """The families of one collect(), one per spec, each typed as its spec says."""

    def __init__(self) -> None:
        self.by_name: dict[str, Metric] = {}
        for spec in SPECS:
            labels = list(spec.labels)
            family: Metric
            if spec.type == "counter":
                family = CounterMetricFamily(spec.name, spec.help, labels=labels)
            elif spec.type == "histogram":
                family = HistogramMetricFamily(spec.name, spec.help, labels=labels)
            else:
                family = GaugeMetricFamily(spec.name, spec.help, labels=labels)
            self.by_name[spec.name] = family

    def add(self, name: str, labels: Sequence[str], value: float | None) -> None:
        """A gauge or counter sample, unless the value is not a finite number."""
        if value is None or math.isnan(value) or math.isinf(value):
            return
        family = self.by_name[name]
        assert isinstance(family, GaugeMetricFamily | CounterMetricFamily)
        family.add_metric(list(labels), value)

    def histogram(self, name: str, labels: Sequence[str], histogram: Histogram | None) -> None:
        if histogram is None or not histogram.buckets or not math.isinf(histogram.buckets[-1][0]):
            return  # no +Inf bucket: not a histogram that can be re-exported
        family = self.by_name[name]
        assert isinstance(family, HistogramMetricFamily)
        family.add_metric(
            list(labels),
            [(_go_float(bound), count) for bound, count in histogram.buckets],
            histogram.sum,
        )


class EtcdCollector:
    """Every ``kubeballast_etcd_*`` family, from the cluster and backup snapshots."""

    def __init__(
        self,
        clusters: Mapping[str, SnapshotView[EtcdClusterSnapshot]],
        backups: Mapping[str, SnapshotView[BackupSummary]] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clusters = clusters
        self._backups = backups or {}
        self._clock = clock

    def metric_specs(self) -> Sequence[MetricSpec]:
        return SPECS

    def collect(self) -> Iterable[Metric]:
        families = _Families()
        for _, view in sorted(self._clusters.items()):
            # Only a TLS-file problem or a bug fails a refresh; the last snapshot would
            # then be stale, and kubeballast_source_up already says what is wrong.
            snapshot = view.snapshot if view.up else None
            if snapshot is not None:
                _collect_cluster(families, snapshot.value)
        for name, backup_view in sorted(self._backups.items()):
            backup = backup_view.snapshot if backup_view.up else None
            if backup is not None:
                _collect_backup(families, name, backup.value, self._clock())
        return list(families.by_name.values())


def _collect_cluster(families: _Families, snapshot: EtcdClusterSnapshot) -> None:
    cluster = snapshot.cluster
    verdict = snapshot.verdict
    add = families.add
    add("kubeballast_etcd_cluster_members", [cluster], verdict.members)
    add("kubeballast_etcd_cluster_learners", [cluster], verdict.learners)
    add("kubeballast_etcd_cluster_voting_members", [cluster], verdict.voting_members)
    add("kubeballast_etcd_cluster_quorum_members", [cluster], verdict.quorum_members)
    add("kubeballast_etcd_cluster_quorum_healthy", [cluster], float(verdict.quorum_healthy))
    add("kubeballast_etcd_cluster_leader_agreed", [cluster], float(verdict.leader_agreed))
    if verdict.raft_index_spread is not None:
        add("kubeballast_etcd_cluster_raft_index_spread", [cluster], verdict.raft_index_spread)
    for alarm in ALARM_TYPES:
        add(
            "kubeballast_etcd_cluster_alarm",
            [cluster, alarm.value],
            float(verdict.alarm_raised(alarm)),
        )
    names = {member.id: member.name for member in snapshot.member_list or ()}
    ratios: list[float] = []
    for member in snapshot.members:
        ratio = _collect_member(families, cluster, member, snapshot.member_ids, names, verdict)
        if ratio is not None:
            ratios.append(ratio)
    if ratios:
        add("kubeballast_etcd_cluster_db_quota_usage_ratio", [cluster], max(ratios))


def _collect_member(
    families: _Families,
    cluster: str,
    member: MemberSnapshot,
    member_ids: Mapping[str, int],
    names: Mapping[int, str],
    verdict: ClusterVerdict,
) -> float | None:
    """One member's series; returns its quota usage ratio for the cluster's maximum."""
    add = families.add
    labels = [cluster, member.member]
    status = member.status
    metrics = member.metrics
    add("kubeballast_etcd_member_up", labels, float(status is not None))
    add(
        "kubeballast_etcd_member_healthy",
        labels,
        float(member.health is not None and member.health.healthy),
    )
    member_id = member_ids.get(member.member)
    if member_id is not None:
        for alarm in ALARM_TYPES:
            add(
                "kubeballast_etcd_member_alarm",
                [*labels, alarm.value],
                float(verdict.alarm_raised(alarm, member_id)),
            )
    quota = metrics.quota_backend_bytes if metrics is not None else None
    usage = None
    if status is not None:
        add(
            "kubeballast_etcd_member_info",
            [*labels, names.get(status.member_id, ""), hex_id(status.member_id), status.version],
            1.0,
        )
        add("kubeballast_etcd_member_is_leader", labels, float(status.is_leader))
        add("kubeballast_etcd_member_is_learner", labels, float(status.is_learner))
        add("kubeballast_etcd_member_status_errors", labels, len(status.errors))
        add("kubeballast_etcd_raft_index", labels, status.raft_index)
        if status.raft_applied_index is not None:
            add("kubeballast_etcd_raft_applied_index", labels, status.raft_applied_index)
        add("kubeballast_etcd_raft_term", labels, status.raft_term)
        add("kubeballast_etcd_db_total_size_bytes", labels, status.db_size)
        if status.db_size_in_use is not None:
            add("kubeballast_etcd_db_total_size_in_use_bytes", labels, status.db_size_in_use)
        add(
            "kubeballast_etcd_db_in_use_ratio",
            labels,
            in_use_ratio(status.db_size_in_use, status.db_size),
        )
        usage = quota_usage_ratio(status.db_size, quota)
        add("kubeballast_etcd_db_quota_usage_ratio", labels, usage)
        add("kubeballast_etcd_db_growth_bytes_per_second", labels, member.growth_bytes_per_second)
    if metrics is not None:
        _collect_member_metrics(families, labels, metrics)
        disk = member.disk
        add("kubeballast_etcd_disk_evaluated", labels, float(disk.evaluated))
        add("kubeballast_etcd_disk_slow", labels, float(disk.slow))
        add("kubeballast_etcd_disk_wal_fsync_p99_seconds", labels, disk.p99_seconds)
    return usage


def _collect_member_metrics(families: _Families, labels: list[str], metrics: MemberMetrics) -> None:
    add = families.add
    add("kubeballast_etcd_server_has_leader", labels, metrics.has_leader)
    add("kubeballast_etcd_server_leader_changes_seen", labels, metrics.leader_changes_seen)
    add("kubeballast_etcd_server_proposals_committed", labels, metrics.proposals_committed)
    add("kubeballast_etcd_server_proposals_applied", labels, metrics.proposals_applied)
    add("kubeballast_etcd_server_proposals_pending", labels, metrics.proposals_pending)
    add("kubeballast_etcd_server_proposals_failed", labels, metrics.proposals_failed)
    add("kubeballast_etcd_server_quota_backend_bytes", labels, metrics.quota_backend_bytes)
    families.histogram(
        "kubeballast_etcd_disk_wal_fsync_duration_seconds", labels, metrics.wal_fsync
    )
    families.histogram(
        "kubeballast_etcd_disk_backend_commit_duration_seconds", labels, metrics.backend_commit
    )
    for peer, histogram in sorted(metrics.peer_rtt.items()):
        families.histogram(
            "kubeballast_etcd_network_peer_round_trip_time_seconds", [*labels, peer], histogram
        )
    for peer, value in sorted(metrics.peer_sent_failures.items()):
        add("kubeballast_etcd_network_peer_sent_failures", [*labels, peer], value)
    for peer, value in sorted(metrics.peer_received_failures.items()):
        add("kubeballast_etcd_network_peer_received_failures", [*labels, peer], value)
    if metrics.grpc_handled:
        # Every code from zero, so that rate() sees the first failure of a kind.
        for code in GRPC_CODES:
            add(
                "kubeballast_etcd_grpc_server_handled",
                [*labels, code],
                metrics.grpc_handled.get(code, 0.0),
            )
    families.histogram(
        "kubeballast_etcd_grpc_server_unary_handling_seconds", labels, metrics.grpc_unary_handling
    )


def _collect_backup(families: _Families, cluster: str, summary: BackupSummary, now: float) -> None:
    add = families.add
    add("kubeballast_etcd_backup_snapshots", [cluster], summary.snapshots)
    add("kubeballast_etcd_backup_unfinished_snapshots", [cluster], summary.unfinished)
    newest = summary.newest
    if newest is None:
        return
    add("kubeballast_etcd_backup_newest_timestamp_seconds", [cluster], newest.taken_at)
    add("kubeballast_etcd_backup_newest_age_seconds", [cluster], max(0.0, now - newest.taken_at))
    add("kubeballast_etcd_backup_newest_size_bytes", [cluster], newest.size)
    add("kubeballast_etcd_backup_newest_revision", [cluster], newest.revision)
    result = {True: "verified", False: "failed", None: "unchecked"}[newest.verified]
    for value in VERIFICATION_RESULTS:
        add("kubeballast_etcd_backup_newest_verification", [cluster, value], float(value == result))


# --- the factory -----------------------------------------------------------------------


def build_etcd(context: ExporterContext) -> Sequence[MetricsCollector]:
    """A source per configured etcd cluster (and backup location), one collector."""
    clusters: dict[str, SnapshotView[EtcdClusterSnapshot]] = {}
    for cluster in context.config.etcd.clusters:
        clusters[cluster.name] = context.add_source(
            EtcdClusterSource(cluster, config_path=f"exporter.etcd.clusters[{cluster.name}]")
        )
    backups: dict[str, SnapshotView[BackupSummary]] = {}
    for cluster in context.config.etcd.clusters:
        # The location ``kube-ballast etcd backup`` writes to; reading it here works
        # when the exporter runs where the snapshots are (a shared volume).
        if cluster.backup.directory is not None:
            backups[cluster.name] = context.add_source(
                EtcdBackupSource(
                    cluster.name,
                    cluster.backup.directory,
                    interval_seconds=BACKUP_INTERVAL_SECONDS,
                )
            )
    if not clusters:
        return []
    return [EtcdCollector(clusters, backups)]
