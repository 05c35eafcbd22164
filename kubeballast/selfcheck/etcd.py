"""etcd: the members and quorum, the disk, the quota, fragmentation, Events split,
backups and a restore plan.

The seed's etcd story is an outage in which nothing could be written, and three
rehearsed recovery plans. Each check here is one thing that story needs true before
it happens. The reading is the etcd operations' own
(:func:`~kubeballast.core.etcdops.observe_cluster`: member list, every member's status
and health, the alarms) plus one /metrics page per member, summarised by the
exporter's :func:`~kubeballast.exporter.etcdhealth.summarize`; every cluster of
``exporter.etcd.clusters`` is read once and shared by the checks. The thresholds:

- members: quorum lost, or a NOSPACE/CORRUPT alarm, FAIL; a member unreachable or
  unhealthy, WARN;
- disk: WAL fsync p99 over the member's life (the cumulative histogram; a self-check
  has no time to wait for a window) above 10 ms (not SSD-class, the exporter's
  ``disk_verdict``) WARN, above 500 ms (EtcdHighFsyncDurations) FAIL;
- quota: database over ``--quota-backend-bytes`` above 80 % WARN, above 95 %
  (EtcdDatabaseQuotaLowSpace) FAIL; the quota left at etcd's 2 GiB default WARN;
- fragmentation: less than half the file in use with over 100 MiB to reclaim
  (``DefragThresholds``, the defrag action's own rule) WARN;
- Events: the apiservers' ``--etcd-servers-overrides`` sending ``/events`` elsewhere;
  not split is a WARN up to 500 workers and a FAIL above (the seed's large cluster,
  where Events churn dominates the database);
- backups: none, none finished, the newest older than 24 h, or failing verification
  FAIL; older than 3 h (EtcdBackupStale) or unverified WARN;
- restore plan: :func:`~kubeballast.core.etcdops.restore_plan` must produce the seed's
  three strategies; without a verified backup strategy 3 is missing, WARN.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubeballast.core import promtext
from kubeballast.core.config import EtcdClusterConfig
from kubeballast.core.errors import ConfigError, KubeBallastError
from kubeballast.core.etcd import EtcdClient
from kubeballast.core.etcdops import (
    ClusterView,
    DefragThresholds,
    etcdctl_tls_flags,
    observe_cluster,
    restore_plan,
)
from kubeballast.exporter.etcd import read_backups
from kubeballast.exporter.etcdhealth import (
    WANTED_FAMILIES,
    DiskVerdict,
    Histogram,
    MemberMetrics,
    Thresholds,
    disk_verdict,
    quota_usage_ratio,
    summarize,
)
from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import Status, runbook
from kubeballast.selfcheck.runner import CheckSpec, Finding

__all__ = ["CHECKS", "ClusterReading", "judge_disk", "judge_fragmentation", "judge_quota"]

MIB: Final = 1024 * 1024
DEFAULT_QUOTA_BYTES: Final = 2 * 1024 * MIB
"""etcd's quota when ``--quota-backend-bytes`` is not set."""
QUOTA_WARN_RATIO: Final = 0.8
QUOTA_FAIL_RATIO: Final = 0.95
FSYNC_FAIL_SECONDS: Final = 0.5
BACKUP_WARN_AGE_SECONDS: Final = 3 * 3600.0
BACKUP_FAIL_AGE_SECONDS: Final = 24 * 3600.0
LARGE_CLUSTER_WORKERS: Final = 500
CALL_TIMEOUT_SECONDS: Final = 5.0

_NO_CLUSTERS: Final = "no etcd cluster configured (exporter.etcd.clusters)"


@dataclass(frozen=True)
class ClusterReading:
    """One etcd cluster as the checks see it."""

    name: str
    view: ClusterView
    metrics: dict[str, MemberMetrics | str]
    """By member label: the summarised /metrics page, or why it could not be read."""


def _client(cluster: EtcdClusterConfig) -> EtcdClient:
    return EtcdClient.from_config(
        cluster,
        config_path=f"exporter.etcd.clusters[{cluster.name}]",
        timeout=CALL_TIMEOUT_SECONDS,
    )


async def _member_metrics(client: EtcdClient, endpoint: str) -> MemberMetrics | str:
    if not endpoint:
        return "no client URL"
    try:
        text = await client.metrics(endpoint)
    except KubeBallastError as error:
        return str(error)
    try:
        return summarize(promtext.parse(text, WANTED_FAMILIES))
    except promtext.ParseError as error:
        return f"/metrics: {error}"


async def _read(cluster: EtcdClusterConfig) -> ClusterReading:
    async with _client(cluster) as client:
        view = await observe_cluster(client, cluster.name)
        pages = await asyncio.gather(*(_member_metrics(client, m.endpoint) for m in view.members))
    return ClusterReading(
        cluster.name,
        view,
        {m.label: page for m, page in zip(view.members, pages, strict=True)},
    )


async def readings(context: Context) -> list[ClusterReading]:
    async def read_all() -> list[ClusterReading]:
        return list(await asyncio.gather(*(_read(c) for c in context.settings.etcd)))

    return await context.shared("etcd", read_all)


def _skip_without_clusters(context: Context) -> Finding | None:
    if not context.settings.etcd:
        return Finding(
            Status.SKIP, _NO_CLUSTERS, {}, "configure exporter.etcd.clusters (endpoints, TLS)"
        )
    return None


def _worst(findings: Sequence[tuple[Status, str]]) -> Status:
    order = {Status.PASS: 0, Status.SKIP: 0, Status.WARN: 1, Status.FAIL: 2}
    worst = Status.PASS
    for status, _ in findings:
        if order[status] > order[worst]:
            worst = status
    return worst


def _combine(
    problems: list[tuple[Status, str]], evidence: dict[str, Any], fix: str, ok: str
) -> Finding:
    bad = [(s, text) for s, text in problems if s in (Status.WARN, Status.FAIL)]
    if not bad:
        skipped = [text for s, text in problems if s is Status.SKIP]
        if skipped and len(skipped) == len(problems):
            return Finding(Status.SKIP, "; ".join(skipped), evidence)
        return Finding(Status.PASS, ok, evidence)
    worst = _worst(bad)
    ordered = [text for s, text in bad if s is worst] + [text for s, text in bad if s is not worst]
    return Finding(worst, "; ".join(ordered), evidence, fix)


# --- members and quorum ---------------------------------------------------------------


async def check_members(context: Context) -> Finding:
    if (skip := _skip_without_clusters(context)) is not None:
        return skip
    problems: list[tuple[Status, str]] = []
    evidence: dict[str, Any] = {}
    for reading in await readings(context):
        view = reading.view
        evidence[reading.name] = view.to_json()
        if not view.has_quorum:
            problems.append(
                (
                    Status.FAIL,
                    f"{reading.name}: quorum lost ({len(view.with_leader)} of"
                    f" {len(view.voting)} voting members follow a leader)",
                )
            )
        for member in view.members:
            if not member.reachable:
                problems.append((Status.WARN, f"{reading.name}: {member.label} unreachable"))
            elif not member.healthy:
                problems.append((Status.WARN, f"{reading.name}: {member.label} unhealthy"))
        for alarm in view.alarms:
            problems.append((Status.FAIL, f"{reading.name}: alarm {alarm.alarm.value} raised"))
    fix = runbook("EtcdInsufficientMembers")
    if any("alarm NOSPACE" in text for _, text in problems):
        fix = "kube-ballast etcd recover-nospace (dry run first); " + runbook("EtcdNoSpaceAlarm")
    return _combine(problems, evidence, fix, "every member healthy, quorum and one leader")


# --- disk -----------------------------------------------------------------------------


def _zero(histogram: Histogram) -> Histogram:
    return Histogram(tuple((bound, 0.0) for bound, _ in histogram.buckets), 0.0, 0.0)


def judge_disk(member: str, metrics: MemberMetrics) -> tuple[Status, str, dict[str, Any]]:
    """The WAL fsync verdict over the member's cumulative histogram."""
    if metrics.wal_fsync is None:
        return Status.SKIP, f"{member}: no WAL fsync histogram on /metrics", {}
    verdict: DiskVerdict = disk_verdict(_zero(metrics.wal_fsync), metrics.wal_fsync)
    evidence = {"wal_fsync_p99_seconds": verdict.p99_seconds, "fsyncs": verdict.fsyncs}
    if not verdict.evaluated or verdict.p99_seconds is None:
        return Status.SKIP, f"{member}: too few fsyncs ({verdict.fsyncs:g}) to judge", evidence
    p99 = verdict.p99_seconds
    if p99 > FSYNC_FAIL_SECONDS:
        return Status.FAIL, f"{member}: WAL fsync p99 {p99 * 1000:.0f} ms", evidence
    if verdict.slow:
        limit = Thresholds().slow_fsync_p99_seconds * 1000
        return (
            Status.WARN,
            f"{member}: WAL fsync p99 {p99 * 1000:.1f} ms > {limit:g} ms (not SSD-class)",
            evidence,
        )
    return Status.PASS, f"{member}: WAL fsync p99 {p99 * 1000:.1f} ms", evidence


async def check_disk(context: Context) -> Finding:
    if (skip := _skip_without_clusters(context)) is not None:
        return skip
    problems: list[tuple[Status, str]] = []
    evidence: dict[str, Any] = {}
    for reading in await readings(context):
        for member, metrics in reading.metrics.items():
            key = f"{reading.name}/{member}"
            if isinstance(metrics, str):
                problems.append((Status.SKIP, f"{key}: /metrics not read: {metrics}"))
                evidence[key] = {"error": metrics}
                continue
            status, text, values = judge_disk(key, metrics)
            problems.append((status, text))
            evidence[key] = values
    return _combine(
        problems, evidence, runbook("EtcdHighFsyncDurations"), "WAL fsync p99 SSD-class everywhere"
    )


# --- quota ----------------------------------------------------------------------------


def judge_quota(
    member: str, db_size: int | None, quota: float | None, alarms: Sequence[str] = ()
) -> tuple[Status, str, dict[str, Any]]:
    """The quota verdict of one member: its database file over its quota."""
    ratio = quota_usage_ratio(db_size, quota)
    evidence: dict[str, Any] = {
        "db_size_bytes": db_size,
        "quota_backend_bytes": quota,
        "usage_ratio": None if ratio is None else round(ratio, 4),
    }
    if "NOSPACE" in alarms:
        return Status.FAIL, f"{member}: NOSPACE alarm raised, writes refused", evidence
    if ratio is None:
        return Status.SKIP, f"{member}: the quota is not on /metrics (etcd < 3.4?)", evidence
    if ratio > QUOTA_FAIL_RATIO:
        return Status.FAIL, f"{member}: database at {ratio:.0%} of its quota", evidence
    if ratio > QUOTA_WARN_RATIO:
        return Status.WARN, f"{member}: database at {ratio:.0%} of its quota", evidence
    if quota is not None and math.isclose(quota, DEFAULT_QUOTA_BYTES):
        return (
            Status.WARN,
            f"{member}: quota is etcd's 2 GiB default (--quota-backend-bytes not set)",
            evidence,
        )
    return Status.PASS, f"{member}: database at {ratio:.0%} of its quota", evidence


async def check_quota(context: Context) -> Finding:
    if (skip := _skip_without_clusters(context)) is not None:
        return skip
    problems: list[tuple[Status, str]] = []
    evidence: dict[str, Any] = {}
    for reading in await readings(context):
        raised: dict[int, list[str]] = {}
        for alarm in reading.view.alarms:
            raised.setdefault(alarm.member_id, []).append(alarm.alarm.value)
        for member in reading.view.members:
            key = f"{reading.name}/{member.label}"
            metrics = reading.metrics.get(member.label)
            quota = metrics.quota_backend_bytes if isinstance(metrics, MemberMetrics) else None
            size = member.status.db_size if member.status else None
            if member.status is None:
                problems.append((Status.SKIP, f"{key}: no status"))
                continue
            status, text, values = judge_quota(key, size, quota, raised.get(member.member_id, ()))
            problems.append((status, text))
            evidence[key] = values
    fix = runbook("EtcdDatabaseQuotaLowSpace")
    if any(s is Status.WARN and "default" in t for s, t in problems):
        fix += "; set --quota-backend-bytes (the seed: set it explicitly, 8 GiB at most)"
    return _combine(problems, evidence, fix, "every member's database well within its quota")


# --- fragmentation --------------------------------------------------------------------


def judge_fragmentation(
    member: str, db_size: int, in_use: int | None, thresholds: DefragThresholds
) -> tuple[Status, str, dict[str, Any]]:
    evidence: dict[str, Any] = {"db_size_bytes": db_size, "db_size_in_use_bytes": in_use}
    if in_use is None:
        return Status.SKIP, f"{member}: space in use not reported (etcd < 3.4)", evidence
    ratio = in_use / db_size if db_size else 1.0
    evidence["in_use_ratio"] = round(ratio, 4)
    reclaimable = db_size - in_use
    if ratio < thresholds.max_in_use_ratio and reclaimable >= thresholds.min_reclaimable_bytes:
        return (
            Status.WARN,
            f"{member}: only {ratio:.0%} of the file in use, {reclaimable / MIB:.0f} MiB"
            " reclaimable",
            evidence,
        )
    return Status.PASS, f"{member}: {ratio:.0%} in use", evidence


async def check_fragmentation(context: Context) -> Finding:
    if (skip := _skip_without_clusters(context)) is not None:
        return skip
    thresholds = DefragThresholds()
    problems: list[tuple[Status, str]] = []
    evidence: dict[str, Any] = {}
    for reading in await readings(context):
        for member in reading.view.members:
            key = f"{reading.name}/{member.label}"
            if member.status is None:
                problems.append((Status.SKIP, f"{key}: no status"))
                continue
            status, text, values = judge_fragmentation(
                key, member.status.db_size, member.status.db_size_in_use, thresholds
            )
            problems.append((status, text))
            evidence[key] = values
    return _combine(
        problems,
        evidence,
        "kube-ballast etcd defrag (dry run, then --execute); "
        + runbook("EtcdDatabaseHighFragmentationRatio"),
        "no member worth defragmenting",
    )


# --- Events in their own etcd ---------------------------------------------------------


async def check_events_split(context: Context) -> Finding:
    pods = await context.static_pods_of("kube-apiserver")
    nodes = await context.nodes()
    workers = sum(1 for n in nodes if not n.control_plane)
    evidence: dict[str, Any] = {
        "workers": workers,
        "apiservers": {
            pod.name: {
                "etcd-servers": pod.flags.get("etcd-servers"),
                "etcd-servers-overrides": pod.flags.get("etcd-servers-overrides"),
            }
            for pod in pods
        },
        "configured_etcd_clusters": [c.name for c in context.settings.etcd],
    }
    fix = (
        "run a separate etcd cluster for Events and start every kube-apiserver with"
        " --etcd-servers-overrides=/events#https://<events-etcd>:2379 (docs/selfcheck.md)"
    )
    if not pods:
        if any("event" in c.name.lower() for c in context.settings.etcd):
            return Finding(
                Status.PASS,
                "no apiserver pod visible; the configuration names an Events etcd cluster",
                evidence,
            )
        return Finding(
            Status.SKIP,
            "no kube-apiserver pod in kube-system (managed control plane?): flags not visible",
            evidence,
        )
    missing = [
        pod.name
        for pod in pods
        if not any(
            part.split("#", 1)[0].endswith("/events")
            for part in (pod.flags.get("etcd-servers-overrides") or "").split(",")
        )
    ]
    if not missing:
        return Finding(
            Status.PASS, f"{len(pods)} apiserver(s) keep Events in their own etcd", evidence
        )
    status = Status.FAIL if workers > LARGE_CLUSTER_WORKERS else Status.WARN
    return Finding(
        status,
        f"Events share the main etcd ({len(missing)} of {len(pods)} apiservers without an"
        f" /events --etcd-servers-overrides; {workers} workers)",
        evidence,
        fix,
    )


# --- backups --------------------------------------------------------------------------


async def check_backups(context: Context) -> Finding:
    if (skip := _skip_without_clusters(context)) is not None:
        return skip
    now = context.now()
    problems: list[tuple[Status, str]] = []
    evidence: dict[str, Any] = {}
    for cluster in context.settings.etcd:
        directory = cluster.backup.directory
        if directory is None:
            problems.append(
                (Status.WARN, f"{cluster.name}: no backup location configured, none checked")
            )
            evidence[cluster.name] = {"directory": None}
            continue
        try:
            summary = await asyncio.to_thread(read_backups, directory, cluster.name)
        except (OSError, KubeBallastError) as error:
            problems.append((Status.FAIL, f"{cluster.name}: {directory}: {error}"))
            evidence[cluster.name] = {"directory": directory, "error": str(error)}
            continue
        newest = summary.newest
        age = None if newest is None else now - newest.taken_at
        evidence[cluster.name] = {
            "directory": directory,
            "snapshots": summary.snapshots,
            "unfinished": summary.unfinished,
            "newest": None if newest is None else newest.snapshot,
            "newest_age_seconds": None if age is None else round(age, 1),
            "newest_verified": None if newest is None else newest.verified,
            "newest_revision": None if newest is None else newest.revision,
        }
        if newest is None or age is None:
            problems.append((Status.FAIL, f"{cluster.name}: no finished backup in {directory}"))
            continue
        hours = age / 3600
        if newest.verified is False:
            problems.append((Status.FAIL, f"{cluster.name}: newest backup failed verification"))
        elif newest.verified is None:
            problems.append((Status.WARN, f"{cluster.name}: newest backup is not verified"))
        if age > BACKUP_FAIL_AGE_SECONDS:
            problems.append((Status.FAIL, f"{cluster.name}: newest backup is {hours:.1f} h old"))
        elif age > BACKUP_WARN_AGE_SECONDS:
            problems.append((Status.WARN, f"{cluster.name}: newest backup is {hours:.1f} h old"))
        else:
            problems.append((Status.PASS, ""))
    return _combine(
        problems,
        evidence,
        "kube-ballast etcd backup --every 1h; " + runbook("EtcdBackupStale"),
        "fresh, verified backups for every cluster",
    )


# --- restore plan ---------------------------------------------------------------------


async def check_restore_plan(context: Context) -> Finding:
    if (skip := _skip_without_clusters(context)) is not None:
        return skip
    problems: list[tuple[Status, str]] = []
    evidence: dict[str, Any] = {}
    for cluster in context.settings.etcd:
        tls = etcdctl_tls_flags((cluster.ca_file, cluster.cert_file, cluster.key_file))
        try:
            async with _client(cluster) as client:
                plan = await restore_plan(
                    client,
                    cluster.name,
                    cluster.restore,
                    backup_directory=cluster.backup.directory,
                    etcdctl_tls=tls,
                    key_path=f"exporter.etcd.clusters[{cluster.name}].restore",
                )
        except ConfigError as error:
            problems.append((Status.FAIL, f"{cluster.name}: no plan: {error}"))
            evidence[cluster.name] = {"error": str(error)}
            continue
        evidence[cluster.name] = {
            "members": [f"{m.name} ({m.state})" for m in plan.members],
            "quorum": plan.quorum,
            "strategies": [f"{s.number}. {s.title}" for s in plan.strategies],
            "backup": plan.backup_path,
        }
        if plan.backup_path is None:
            problems.append(
                (
                    Status.WARN,
                    f"{cluster.name}: no verified backup, so no restore-from-backup strategy",
                )
            )
        else:
            problems.append((Status.PASS, ""))
    return _combine(
        problems,
        evidence,
        "kube-ballast etcd restore-plan --cluster NAME; kube-ballast etcd backup",
        "a restore plan with all three strategies for every cluster",
    )


CHECKS: Final = (
    CheckSpec("etcd.members", "etcd members healthy, quorum, no alarm", "etcd", check_members),
    CheckSpec("etcd.disk", "etcd WAL fsync latency SSD-class", "etcd", check_disk),
    CheckSpec("etcd.quota", "etcd quota set and not nearly full", "etcd", check_quota),
    CheckSpec("etcd.fragmentation", "etcd database not fragmented", "etcd", check_fragmentation),
    CheckSpec("etcd.events_split", "Events in their own etcd cluster", "etcd", check_events_split),
    CheckSpec("etcd.backups", "etcd backups present, fresh and verified", "etcd", check_backups),
    CheckSpec("etcd.restore_plan", "etcd restore plan producible", "etcd", check_restore_plan),
)
