"""etcd operations: backup, defragmentation, NOSPACE recovery and restore plans.

The seed's etcd story is an outage in which "nothing could be written" and three
rehearsed recovery plans. These are the operations a platform team runs by hand in
that situation, and that the guarded remediations will run for them; the command line
(``kube-ballast etcd ...``) and the remediation actions call the same functions, so
what was rehearsed by hand is what automation does.

Every operation starts by looking at the whole cluster (:func:`observe_cluster`): the
member list, each member's status and health, the leader, the raft term, the alarms.
Operations that act on the cluster refuse, with a sentence a person can act on, when
that picture is not safe:

- quorum lost (fewer than a majority of voting members answer and agree on a leader):
  nothing here can help, and touching the survivors can only hurt; the answer is
  ``restore-plan``. :class:`QuorumLost`.
- a member down or unhealthy, a leader change just seen (the raft term moved between
  two reads or since an observation the caller passes), an alarm other than the one
  being recovered: :class:`OperationRefused`.

Defragmentation blocks the member it runs on (seconds per GiB), so members go one at a
time, followers first and the leader last (a leader busy defragmenting is a leader the
followers may stop hearing from), each followed by a wait until every member is
healthy again; the first failure stops the run (:class:`OperationFailed`, carrying the
steps done so far). A backup comes first, since compaction and defragmentation cannot
be undone.

Only ``etcdctl snapshot status`` and ``snapshot restore`` run a binary (see
``kubeballast.core.etcdbackup``); everything else is the etcd API through
``EtcdClient``. Results are frozen dataclasses with ``to_json()``; errors are the
``kubeballast.core.errors`` hierarchy::

    PermanentError
     ├── OperationRefused(reasons)   a precondition does not hold; nothing was changed
     │    └── QuorumLost             a majority of the voting members is not there
     ├── OperationFailed(result)     stopped part-way; ``result`` says what was done
     └── BackupError                 (etcdbackup) a snapshot could not be written or read
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from kubeballast.core.config import EtcdBackupConfig, EtcdRestoreConfig
from kubeballast.core.errors import ConfigError, KubeBallastError, PermanentError
from kubeballast.core.etcd import (
    Alarm,
    AlarmType,
    Compacted,
    EtcdClient,
    EtcdUnavailable,
    Member,
    MemberHealth,
    MemberStatus,
    NoSpace,
    hex_id,
)
from kubeballast.core.etcdbackup import (
    BackupError,
    BackupFile,
    HookResult,
    newest_verified_backup,
    prune_backups,
    run_hook,
    sidecar_document,
    snapshot_name,
    write_sidecar,
    write_snapshot,
)

__all__ = [
    "BackupResult",
    "BackupSettings",
    "ClusterView",
    "DefragResult",
    "DefragStep",
    "DefragThresholds",
    "MemberView",
    "NoSpaceResult",
    "OperationFailed",
    "OperationRefused",
    "PlanMember",
    "QuorumLost",
    "RestorePlan",
    "Strategy",
    "TermObservation",
    "backup",
    "build_restore_plan",
    "defragment",
    "observe_cluster",
    "recover_nospace",
    "restore_plan",
]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
PROBE_KEY = b"/kube-ballast/nospace-probe"
"""The key recover-nospace writes to prove writes work again, and deletes after."""
_POLL_SECONDS = 0.25
"""How often a wait re-reads the members (bounded by its deadline)."""


# -------------------------------------------------------------------------- errors


# Named for the state a caller branches on, like the errors of kubeballast.core.etcd.
class OperationRefused(PermanentError):  # noqa: N818
    """A precondition does not hold, so nothing was done; ``reasons`` lists them."""

    def __init__(self, cluster: str, operation: str, reasons: Sequence[str]) -> None:
        self.cluster = cluster
        self.operation = operation
        self.reasons = tuple(reasons)
        super().__init__(
            f"etcd cluster {cluster!r}: refusing to {operation}: {'; '.join(self.reasons)}"
        )


class QuorumLost(OperationRefused):
    """Fewer than a majority of the voting members answer with an agreed leader."""


class OperationFailed(PermanentError):  # noqa: N818
    """An operation stopped part-way; ``result`` holds what was done before."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


# ---------------------------------------------------------------- cluster picture


@dataclass(frozen=True)
class MemberView:
    """One member as the operations see it."""

    name: str
    member_id: int
    endpoint: str
    """Its first client URL ("" for a member added but never started)."""
    peer_urls: tuple[str, ...]
    is_learner: bool
    status: MemberStatus | None
    health: MemberHealth | None
    error: str | None
    """Why it did not answer, when it did not."""

    @property
    def reachable(self) -> bool:
        return self.status is not None

    @property
    def healthy(self) -> bool:
        return self.health is not None and self.health.healthy

    @property
    def label(self) -> str:
        return f"{self.name or hex_id(self.member_id)} ({self.endpoint or 'no client URL'})"

    def to_json(self) -> dict[str, Any]:
        status = self.status
        return {
            "name": self.name,
            "member_id": hex_id(self.member_id),
            "endpoint": self.endpoint,
            "reachable": self.reachable,
            "healthy": self.healthy,
            "is_learner": self.is_learner,
            "error": self.error,
            "raft_term": status.raft_term if status else None,
            "revision": status.revision if status else None,
            "db_size": status.db_size if status else None,
            "db_size_in_use": status.db_size_in_use if status else None,
        }


@dataclass(frozen=True)
class ClusterView:
    """Every member's status and health, read together."""

    cluster: str
    members: tuple[MemberView, ...]
    alarms: tuple[Alarm, ...]
    observed_unix: float

    @property
    def voting(self) -> tuple[MemberView, ...]:
        return tuple(m for m in self.members if not m.is_learner)

    @property
    def quorum_size(self) -> int:
        return len(self.voting) // 2 + 1

    @property
    def leader_id(self) -> int:
        """The leader every reachable member names, 0 when they disagree or know none."""
        named = {m.status.leader for m in self.members if m.status is not None}
        return named.pop() if len(named) == 1 else 0

    @property
    def leader(self) -> MemberView | None:
        return next((m for m in self.members if m.member_id == self.leader_id), None)

    @property
    def raft_term(self) -> int:
        return max((m.status.raft_term for m in self.members if m.status), default=0)

    @property
    def with_leader(self) -> tuple[MemberView, ...]:
        """Voting members that answer and follow the agreed leader (itself included)."""
        leader = self.leader
        if leader is None or not leader.reachable:
            return ()
        return tuple(
            m for m in self.voting if m.status is not None and m.status.leader == leader.member_id
        )

    @property
    def has_quorum(self) -> bool:
        return len(self.with_leader) >= self.quorum_size

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "quorum": self.has_quorum,
            "leader": hex_id(self.leader_id) if self.leader_id else None,
            "raft_term": self.raft_term,
            "alarms": [
                {"member_id": hex_id(a.member_id), "alarm": a.alarm.value} for a in self.alarms
            ],
            "members": [m.to_json() for m in self.members],
        }


async def _status_health(
    client: EtcdClient, endpoint: str
) -> tuple[MemberStatus | None, MemberHealth | None, str | None]:
    if not endpoint:
        return None, None, "not started (no client URL)"
    try:
        status, health = await asyncio.gather(client.status(endpoint), client.health(endpoint))
    except KubeBallastError as error:
        return None, None, str(error)
    return status, health, None


async def observe_cluster(client: EtcdClient, cluster: str) -> ClusterView:
    """Read the member list (from the first configured endpoint that answers), then
    every member's status and health concurrently, then the alarms.

    Members are taken from the member list, not from the configured endpoints: a
    member the configuration forgot still counts towards the quorum. When no
    configured endpoint answers, the configured endpoints stand in for the members.
    """
    members: list[Member] | None = None
    errors = []
    for endpoint in client.endpoints:
        try:
            members = await client.member_list(endpoint)
            break
        except KubeBallastError as error:
            errors.append(str(error))
    if members is None:
        members = [Member(0, "", (), (endpoint,), False) for endpoint in client.endpoints]
    answers = await asyncio.gather(
        *(_status_health(client, m.client_urls[0] if m.client_urls else "") for m in members)
    )
    views = []
    for member, (status, health, why) in zip(members, answers, strict=True):
        views.append(
            MemberView(
                name=member.name,
                member_id=member.id or (status.member_id if status else 0),
                endpoint=member.client_urls[0].rstrip("/") if member.client_urls else "",
                peer_urls=member.peer_urls,
                is_learner=member.is_learner,
                status=status,
                health=health,
                error=why,
            )
        )
    alarms: list[Alarm] = []
    # Alarm lists go through raft: ask the leader, and only with a quorum behind it
    # (a leader that lost its followers and does not know it yet would hang the call).
    view = ClusterView(cluster, tuple(views), (), time.time())
    leader = view.leader
    if leader is not None and view.has_quorum:
        try:
            alarms = await client.alarms(leader.endpoint)
        except KubeBallastError as error:
            log.warning("etcd cluster %s: cannot list alarms: %s", cluster, error)
    return ClusterView(cluster, tuple(views), tuple(alarms), view.observed_unix)


def require_quorum(view: ClusterView, operation: str) -> None:
    """Raise :class:`QuorumLost` unless a majority follows one reachable leader."""
    if view.has_quorum:
        return
    following = {m.member_id for m in view.with_leader}
    missing = []
    for member in view.voting:
        if member.member_id in following:
            continue
        if member.error:
            missing.append(f"{member.label}: {member.error}")
        elif member.status is not None and member.status.leader == 0:
            missing.append(f"{member.label}: knows no leader")
        else:
            missing.append(f"{member.label}: follows another leader")
    raise QuorumLost(
        view.cluster,
        operation,
        [
            f"quorum lost: {len(view.with_leader)} of {len(view.voting)} voting members"
            f" answer with an agreed leader, {view.quorum_size} needed",
            *missing,
            "nothing can be done through the etcd API; see `kube-ballast etcd restore-plan`",
        ],
    )


def require_all_healthy(
    view: ClusterView, operation: str, *, tolerate: frozenset[AlarmType] = frozenset()
) -> None:
    """Raise :class:`OperationRefused` unless every member answers and is healthy.

    With ``tolerate``, alarms of those kinds are allowed, and a member whose /health
    is false only because of them counts as healthy (NOSPACE recovery).
    """
    require_quorum(view, operation)
    reasons = []
    for member in view.members:
        if not member.reachable:
            reasons.append(f"member {member.label} does not answer: {member.error}")
        elif member.is_learner:
            reasons.append(f"member {member.label} is a learner (a membership change is on)")
        elif not member.healthy and not tolerate:
            reason = member.health.reason if member.health and member.health.reason else ""
            reasons.append(f"member {member.label} is unhealthy{': ' + reason if reason else ''}")
    other = [a for a in view.alarms if a.alarm not in tolerate]
    reasons += [f"alarm {a.alarm.value} raised on member {hex_id(a.member_id)}" for a in other]
    if reasons:
        raise OperationRefused(view.cluster, operation, reasons)


# --------------------------------------------------------------------------- backup


@dataclass(frozen=True)
class BackupSettings:
    """Where and how to keep snapshots (the ``backup`` settings of a cluster)."""

    directory: Path
    keep_count: int = 24
    keep_max_age_seconds: float = 7 * 86400.0
    hook_command: tuple[str, ...] = ()
    hook_timeout_seconds: float = 600.0
    etcdctl: str = "etcdctl"
    read_timeout_seconds: float = 60.0

    @classmethod
    def from_config(
        cls, config: EtcdBackupConfig, *, directory: str | None = None, key_path: str = ""
    ) -> BackupSettings:
        chosen = directory or config.directory
        if not chosen:
            raise ConfigError(
                "no backup folder: set it or pass --dir",
                key_path=f"{key_path}.directory" if key_path else "backup.directory",
            )
        return cls(
            directory=Path(chosen),
            keep_count=config.keep_count,
            keep_max_age_seconds=config.keep_max_age_seconds,
            hook_command=config.hook_command,
            hook_timeout_seconds=config.hook_timeout_seconds,
            etcdctl=config.etcdctl,
        )


@dataclass(frozen=True)
class BackupResult:
    """A verified snapshot on disk (the JSON line ``kube-ballast etcd backup`` prints)."""

    cluster: str
    path: str
    sidecar: str
    size: int
    sha256: str
    revision: int
    keys: int
    member: str
    member_id: str
    endpoint: str
    raft_term: int
    created_unix: float
    duration_seconds: float
    """From choosing the member to the sidecar written (the hook not included)."""
    verify_seconds: float
    verified: bool
    removed: tuple[str, ...]
    """Snapshots retention removed."""
    hook: HookResult | None

    @property
    def ok(self) -> bool:
        return self.verified and (self.hook is None or self.hook.ok)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["removed"] = list(self.removed)
        document["hook"] = None if self.hook is None else self.hook.to_json()
        return {"operation": "backup", **document}


def _backup_candidates(view: ClusterView, *, allow_no_quorum: bool) -> list[MemberView]:
    """Followers first, the leader last: a snapshot reads the whole database and its
    cost should not land on the member that keeps the cluster going. Among followers,
    the most up-to-date first."""
    reachable = [m for m in view.members if m.status is not None and not m.is_learner]
    if not allow_no_quorum:
        # Following the agreed leader, rather than /health: under NOSPACE every member
        # reports unhealthy, and that is exactly when a snapshot is wanted first.
        following = {m.member_id for m in view.with_leader}
        reachable = [m for m in reachable if m.member_id in following]

    def key(member: MemberView) -> tuple[bool, int]:
        assert member.status is not None
        return (member.member_id == view.leader_id, -member.status.revision)

    return sorted(reachable, key=key)


async def backup(
    client: EtcdClient,
    cluster: str,
    settings: BackupSettings,
    *,
    allow_no_quorum: bool = False,
    view: ClusterView | None = None,
) -> BackupResult:
    """Take a verified snapshot from a healthy member, keep the folder pruned, run the
    hook. Refuses without quorum unless ``allow_no_quorum`` (a snapshot of a surviving
    member is step one of recovery strategy 2, and etcd serves it without a leader).
    """
    started = time.monotonic()
    if view is None:
        view = await observe_cluster(client, cluster)
    if not allow_no_quorum:
        require_quorum(view, "take a backup")
    candidates = _backup_candidates(view, allow_no_quorum=allow_no_quorum)
    if not candidates:
        raise OperationRefused(cluster, "take a backup", ["no member answers"])
    await asyncio.to_thread(settings.directory.mkdir, parents=True, exist_ok=True)
    failures = []
    for member in candidates:
        assert member.status is not None
        created = time.time()
        path = settings.directory / snapshot_name(cluster, created)
        try:
            written = await write_snapshot(
                client,
                member.endpoint,
                path,
                etcdctl=settings.etcdctl,
                read_timeout=settings.read_timeout_seconds,
            )
        except EtcdUnavailable as error:
            # That member went away mid-stream; another one can serve the snapshot.
            log.warning(
                "etcd cluster %s: snapshot from %s failed: %s", cluster, member.label, error
            )
            failures.append(str(error))
            continue
        document = sidecar_document(
            cluster=cluster,
            written=written,
            created_unix=created,
            member=member.name,
            member_id=member.member_id,
            endpoint=member.endpoint,
            raft_term=member.status.raft_term,
            hook=None,
        )
        sidecar = await write_sidecar(path, document)
        duration = time.monotonic() - started
        removed = await asyncio.to_thread(
            prune_backups,
            settings.directory,
            cluster,
            keep_count=settings.keep_count,
            keep_max_age_seconds=settings.keep_max_age_seconds,
            now=time.time(),
            protect=(path,),
        )
        hook = None
        if settings.hook_command:
            hook = await run_hook(
                settings.hook_command, path, timeout_seconds=settings.hook_timeout_seconds
            )
            # The sidecar says whether the off-site copy was made.
            await write_sidecar(path, {**document, "hook": hook.to_json()})
            if not hook.ok:
                log.error(
                    "etcd cluster %s: backup hook %s failed (exit status %s%s)",
                    cluster,
                    shlex.join(hook.command),
                    hook.exit_status,
                    ", timed out" if hook.timed_out else "",
                )
        return BackupResult(
            cluster=cluster,
            path=written.path,
            sidecar=str(sidecar),
            size=written.size,
            sha256=written.sha256,
            revision=written.status.revision,
            keys=written.status.keys,
            member=member.name,
            member_id=hex_id(member.member_id),
            endpoint=member.endpoint,
            raft_term=member.status.raft_term,
            created_unix=round(created, 3),
            duration_seconds=round(duration, 3),
            verify_seconds=round(written.verify_seconds, 3),
            verified=True,
            removed=tuple(removed),
            hook=hook,
        )
    raise BackupError(f"etcd cluster {cluster!r}: no member could send a snapshot: {failures}")


# --------------------------------------------------------------------------- defrag


@dataclass(frozen=True)
class DefragThresholds:
    """When a member is fragmented enough to be worth a defragmentation."""

    max_in_use_ratio: float = 0.5
    """Defragment when in-use / total is below this."""
    min_reclaimable_bytes: int = 100 * MIB
    """... and at least this much would be given back."""

    def reason_to_skip(self, status: MemberStatus) -> str | None:
        in_use = status.db_size_in_use
        if in_use is None:
            return "etcd older than 3.4 does not report the space in use"
        ratio = in_use / status.db_size if status.db_size else 1.0
        reclaimable = status.db_size - in_use
        if ratio >= self.max_in_use_ratio:
            return f"{ratio:.2f} of the file in use (threshold {self.max_in_use_ratio:g})"
        if reclaimable < self.min_reclaimable_bytes:
            return f"only {reclaimable} bytes reclaimable (threshold {self.min_reclaimable_bytes})"
        return None


@dataclass(frozen=True)
class TermObservation:
    """A raft term seen at some time (by the exporter, a previous run, a sidecar)."""

    raft_term: int
    observed_unix: float


@dataclass(frozen=True)
class DefragStep:
    """One member's defragmentation, planned or done."""

    member: str
    member_id: str
    """As the member itself reported it in its status answer."""
    endpoint: str
    role: str
    """``follower`` or ``leader``."""
    state: str
    """``planned`` (dry run), ``done`` or ``failed``."""
    db_size_before: int
    db_size_in_use_before: int | None
    db_size_after: int | None = None
    db_size_in_use_after: int | None = None
    started_unix: float | None = None
    duration_seconds: float | None = None
    """The defragment call alone."""
    healthy_after_seconds: float | None = None
    """From the end of the call until every member was healthy again."""
    error: str | None = None


@dataclass(frozen=True)
class DefragResult:
    cluster: str
    dry_run: bool
    steps: tuple[DefragStep, ...]
    skipped: tuple[tuple[str, str], ...]
    """Members left alone and why (below the thresholds)."""
    raft_term: int
    backup: BackupResult | None
    duration_seconds: float
    stopped: str | None = None
    """Why the run stopped early, when it did."""

    @property
    def reclaimed_bytes(self) -> int:
        return sum(
            step.db_size_before - step.db_size_after
            for step in self.steps
            if step.db_size_after is not None
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": "defrag",
            "cluster": self.cluster,
            "dry_run": self.dry_run,
            "raft_term": self.raft_term,
            "steps": [asdict(step) for step in self.steps],
            "skipped": [{"member": name, "reason": why} for name, why in self.skipped],
            "reclaimed_bytes": self.reclaimed_bytes,
            "backup": None if self.backup is None else self.backup.to_json(),
            "duration_seconds": round(self.duration_seconds, 3),
            "stopped": self.stopped,
        }


async def _observe_term(
    client: EtcdClient, view: ClusterView, seconds: float, operation: str
) -> ClusterView:
    """Re-read the cluster for ``seconds``; refuse if the leader or term moves."""
    deadline = time.monotonic() + seconds
    current = view
    while True:
        latest = await observe_cluster(client, view.cluster)
        require_quorum(latest, operation)
        if (latest.raft_term, latest.leader_id) != (view.raft_term, view.leader_id):
            raise OperationRefused(
                view.cluster,
                operation,
                [
                    f"the leader changed while observing (raft term {view.raft_term} ->"
                    f" {latest.raft_term}); wait for a quiet cluster"
                ],
            )
        current = latest
        if time.monotonic() >= deadline:
            return current
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


async def _wait_members(
    client: EtcdClient,
    cluster: str,
    *,
    timeout_seconds: float,
    tolerate: frozenset[AlarmType] = frozenset(),
) -> ClusterView:
    """Poll until every member answers and is healthy (alarms in ``tolerate``
    allowed); ``OperationFailed`` at the deadline with the last picture."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        view = await observe_cluster(client, cluster)
        try:
            require_all_healthy(view, "continue", tolerate=tolerate)
            return view
        except OperationRefused as refused:
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"etcd cluster {cluster!r}: not healthy within {timeout_seconds:g} s:"
                    f" {'; '.join(refused.reasons)}",
                    view,
                ) from refused
        await asyncio.sleep(_POLL_SECONDS)


def _order(members: Sequence[MemberView], leader_id: int) -> list[MemberView]:
    """Followers first (in member-list order), the leader last."""
    return sorted(members, key=lambda m: m.member_id == leader_id)


async def _defragment_members(
    client: EtcdClient,
    view: ClusterView,
    chosen: Sequence[MemberView],
    *,
    health_timeout: float,
    tolerate: frozenset[AlarmType],
    guard_term: bool,
) -> tuple[list[DefragStep], str | None]:
    """Defragment ``chosen`` in order, waiting for health after each; stop at the
    first failure. Returns the steps and why it stopped (``None``: all done)."""
    steps: list[DefragStep] = []
    term, leader_id = view.raft_term, view.leader_id
    for member in chosen:
        before = await client.status(member.endpoint)
        role = "leader" if before.member_id == leader_id else "follower"
        step = DefragStep(
            member=member.name,
            member_id=hex_id(before.member_id),
            endpoint=member.endpoint,
            role=role,
            state="failed",
            db_size_before=before.db_size,
            db_size_in_use_before=before.db_size_in_use,
            started_unix=round(time.time(), 3),
        )
        if guard_term and (before.raft_term, before.leader) != (term, leader_id):
            why = (
                f"the leader changed before defragmenting {member.label} (raft term"
                f" {term} -> {before.raft_term}); stopped"
            )
            steps.append(_replace(step, error=why))
            return steps, why
        log.info("etcd cluster %s: defragmenting %s %s", view.cluster, role, member.label)
        started = time.monotonic()
        try:
            await client.defragment(member.endpoint)
        except KubeBallastError as error:
            steps.append(_replace(step, error=str(error)))
            return steps, f"defragmenting {member.label} failed: {error}"
        called = time.monotonic()
        try:
            await _wait_members(
                client, view.cluster, timeout_seconds=health_timeout, tolerate=tolerate
            )
        except OperationFailed as error:
            steps.append(
                _replace(step, duration_seconds=round(called - started, 3), error=str(error))
            )
            return steps, str(error)
        after = await client.status(member.endpoint)
        steps.append(
            _replace(
                step,
                state="done",
                db_size_after=after.db_size,
                db_size_in_use_after=after.db_size_in_use,
                duration_seconds=round(called - started, 3),
                healthy_after_seconds=round(time.monotonic() - called, 3),
            )
        )
    return steps, None


def _replace(step: DefragStep, **changes: Any) -> DefragStep:
    return DefragStep(**{**asdict(step), **changes})


async def defragment(
    client: EtcdClient,
    cluster: str,
    *,
    thresholds: DefragThresholds | None = None,
    observe_seconds: float = 0.0,
    previous_term: TermObservation | None = None,
    backup_settings: BackupSettings | None = None,
    dry_run: bool = True,
    health_timeout: float = 120.0,
) -> DefragResult:
    """Defragment the fragmented members: followers one at a time, the leader last.

    Preconditions (else :class:`OperationRefused`, nothing done): quorum, every member
    answering and healthy, no alarm, no leader change (the term is compared with
    ``previous_term``, then watched for ``observe_seconds``, then checked again before
    each member). A backup is taken first when ``backup_settings`` is given. ``dry_run``
    (the default) checks everything and returns the plan without acting.
    """
    operation = "defragment"
    thresholds = thresholds or DefragThresholds()
    started = time.monotonic()
    view = await observe_cluster(client, cluster)
    require_all_healthy(view, operation)
    if previous_term is not None and previous_term.raft_term != view.raft_term:
        moment = datetime.fromtimestamp(previous_term.observed_unix, UTC)
        raise OperationRefused(
            cluster,
            operation,
            [
                f"the leader changed since {moment:%Y-%m-%dT%H:%M:%SZ} (raft term"
                f" {previous_term.raft_term} -> {view.raft_term}); wait for a quiet cluster"
            ],
        )
    if observe_seconds > 0:
        view = await _observe_term(client, view, observe_seconds, operation)
        require_all_healthy(view, operation)
    chosen, skipped = [], []
    for member in _order(view.members, view.leader_id):
        assert member.status is not None
        why = thresholds.reason_to_skip(member.status)
        if why is None:
            chosen.append(member)
        else:
            skipped.append((member.name, why))
    if dry_run or not chosen:
        steps = tuple(
            DefragStep(
                member=m.name,
                member_id=hex_id(m.member_id),
                endpoint=m.endpoint,
                role="leader" if m.member_id == view.leader_id else "follower",
                state="planned",
                db_size_before=m.status.db_size if m.status else 0,
                db_size_in_use_before=m.status.db_size_in_use if m.status else None,
            )
            for m in chosen
        )
        return DefragResult(
            cluster, dry_run, steps, tuple(skipped), view.raft_term, None,
            time.monotonic() - started,
        )  # fmt: skip
    taken = None
    if backup_settings is not None:
        taken = await backup(client, cluster, backup_settings, view=view)
    done, stopped = await _defragment_members(
        client,
        view,
        chosen,
        health_timeout=health_timeout,
        tolerate=frozenset(),
        guard_term=True,
    )
    result = DefragResult(
        cluster, False, tuple(done), tuple(skipped), view.raft_term, taken,
        time.monotonic() - started, stopped,
    )  # fmt: skip
    if stopped is not None:
        raise OperationFailed(
            f"etcd cluster {cluster!r}: defragmentation stopped: {stopped}", result
        )
    return result


# ------------------------------------------------------------------------- NOSPACE


@dataclass(frozen=True)
class NoSpaceResult:
    cluster: str
    dry_run: bool
    alarms_before: tuple[str, ...]
    """``<member id>:<alarm>`` as found."""
    compacted_revision: int | None
    steps: tuple[DefragStep, ...]
    disarmed: int
    """Alarm deactivations sent (a member can raise NOSPACE again while the others are
    being disarmed, so this can exceed the members)."""
    probe_revision: int | None
    """Revision of the test write that proved writes are accepted again."""
    db_size_before: dict[str, int]
    db_size_after: dict[str, int]
    backup: BackupResult | None
    duration_seconds: float
    nothing_to_do: bool = False

    @property
    def reclaimed_bytes(self) -> int:
        return sum(
            self.db_size_before[name] - self.db_size_after.get(name, self.db_size_before[name])
            for name in self.db_size_before
        )

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["steps"] = [asdict(step) for step in self.steps]
        document["alarms_before"] = list(self.alarms_before)
        document["backup"] = None if self.backup is None else self.backup.to_json()
        document["duration_seconds"] = round(self.duration_seconds, 3)
        return {"operation": "recover-nospace", **document, "reclaimed_bytes": self.reclaimed_bytes}


_DECODE_ANY: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


async def _delete_key(client: EtcdClient, endpoint: str, key: bytes) -> None:
    # EtcdClient has no delete call yet; this goes through its own request plumbing
    # (same session, timeouts and typed errors). TODO(lead): EtcdClient.delete().
    await client._post(endpoint, "/kv/deleterange", {"key": key}, _DECODE_ANY)


async def recover_nospace(
    client: EtcdClient,
    cluster: str,
    *,
    dry_run: bool = True,
    backup_settings: BackupSettings | None = None,
    deadline_seconds: float = 300.0,
    health_timeout: float = 120.0,
    probe_key: bytes = PROBE_KEY,
) -> NoSpaceResult:
    """Bring writes back after NOSPACE: compact to the current revision, defragment
    every member (followers first, whatever the fragmentation), disarm the alarms until
    none reappears and a test write is accepted, delete the test key.

    Needs quorum and every member answering; alarms other than NOSPACE refuse it.
    Without a NOSPACE alarm there is nothing to do (``nothing_to_do``). If the live
    data itself exceeds the quota, compaction frees nothing and the alarm comes back:
    :class:`OperationFailed` at ``deadline_seconds`` says so.
    """
    operation = "recover from NOSPACE"
    tolerate = frozenset({AlarmType.NOSPACE})
    started = time.monotonic()
    view = await observe_cluster(client, cluster)
    require_all_healthy(view, operation, tolerate=tolerate)
    before = {m.name: m.status.db_size for m in view.members if m.status}
    alarms_before = tuple(f"{hex_id(a.member_id)}:{a.alarm.value}" for a in view.alarms)
    if not view.alarms:
        return NoSpaceResult(
            cluster, dry_run, (), None, (), 0, None, before, before, None,
            time.monotonic() - started, nothing_to_do=True,
        )  # fmt: skip
    order = _order(view.members, view.leader_id)
    if dry_run:
        planned = tuple(
            DefragStep(
                member=m.name,
                member_id=hex_id(m.member_id),
                endpoint=m.endpoint,
                role="leader" if m.member_id == view.leader_id else "follower",
                state="planned",
                db_size_before=m.status.db_size if m.status else 0,
                db_size_in_use_before=m.status.db_size_in_use if m.status else None,
            )
            for m in order
        )
        return NoSpaceResult(
            cluster, True, alarms_before, None, planned, 0, None, before, {}, None,
            time.monotonic() - started,
        )  # fmt: skip
    taken = None
    if backup_settings is not None:
        # A snapshot is a read: it works under NOSPACE, and compaction cannot be undone.
        taken = await backup(client, cluster, backup_settings, view=view)
    leader = view.leader
    assert leader is not None
    revision = (await client.status(leader.endpoint)).revision
    # Compacted: already compacted at this revision (a previous, interrupted run).
    with contextlib.suppress(Compacted):
        await client.compact(leader.endpoint, revision, physical=True)
    steps, stopped = await _defragment_members(
        client,
        view,
        order,
        health_timeout=health_timeout,
        tolerate=tolerate,
        guard_term=False,
    )

    def partial(**extra: Any) -> NoSpaceResult:
        fields: dict[str, Any] = {
            "cluster": cluster,
            "dry_run": False,
            "alarms_before": alarms_before,
            "compacted_revision": revision,
            "steps": tuple(steps),
            "disarmed": 0,
            "probe_revision": None,
            "db_size_before": before,
            "db_size_after": {},
            "backup": taken,
            "duration_seconds": time.monotonic() - started,
        }
        return NoSpaceResult(**{**fields, **extra})

    if stopped is not None:
        raise OperationFailed(
            f"etcd cluster {cluster!r}: NOSPACE recovery stopped: {stopped}", partial()
        )
    # Each member raises its own NOSPACE alarm, through raft, when it applies a write
    # over the quota; one can be listed only after the others were disarmed. Disarm
    # what is listed, try the test write, until it is accepted and no alarm remains.
    disarmed = 0
    probe_revision = None
    deadline = time.monotonic() + deadline_seconds
    while True:
        alarms = await client.alarms(leader.endpoint)
        for alarm in alarms:
            await client.disarm(leader.endpoint, alarm)
            disarmed += 1
        try:
            probe_revision = await client.put(leader.endpoint, probe_key, b"ok")
        except NoSpace:
            probe_revision = None
        if probe_revision is not None and not await client.alarms(leader.endpoint):
            break
        if time.monotonic() > deadline:
            in_use = {
                m.name: m.status.db_size_in_use
                for m in (await observe_cluster(client, cluster)).members
                if m.status
            }
            raise OperationFailed(
                f"etcd cluster {cluster!r}: NOSPACE came back for {deadline_seconds:g} s after"
                f" compaction and defragmentation: the live data fills the quota (bytes in"
                f" use: {in_use}); raise --quota-backend-bytes or delete data",
                partial(disarmed=disarmed),
            )
        await asyncio.sleep(_POLL_SECONDS)
    await _delete_key(client, leader.endpoint, probe_key)
    final = await _wait_members(client, cluster, timeout_seconds=health_timeout)
    after = {m.name: m.status.db_size for m in final.members if m.status}
    return partial(disarmed=disarmed, probe_revision=probe_revision, db_size_after=after)


# --------------------------------------------------------------------- restore plan


@dataclass(frozen=True)
class PlanMember:
    name: str
    peer_url: str
    client_url: str
    member_id: str | None
    """From the live member list, when it could be read."""
    state: str
    """``up``, ``down`` or ``unknown`` (the cluster could not be asked)."""


@dataclass(frozen=True)
class PlanStep:
    text: str
    where: str
    """``any host`` (etcdctl against the cluster) or ``on <member>``."""
    commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class Strategy:
    number: int
    title: str
    when: str
    loses: str
    steps: tuple[PlanStep, ...]


@dataclass(frozen=True)
class RestorePlan:
    cluster: str
    members: tuple[PlanMember, ...]
    initial_cluster: str
    initial_cluster_token: str
    data_dir: str
    restore_data_dir: str
    quorum: bool | None
    """``None``: the cluster could not be asked."""
    backup: dict[str, Any] | None
    """The newest verified backup's sidecar (strategy 3), when there is one."""
    backup_path: str | None
    strategies: tuple[Strategy, ...]
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"operation": "restore-plan", **asdict(self)}

    def to_text(self) -> str:
        lines = [f"# Recovery plan for etcd cluster {self.cluster!r}", "#"]
        for member in self.members:
            ident = f" id {member.member_id}" if member.member_id else ""
            lines.append(
                f"#   {member.name}{ident}: {member.state}, peer {member.peer_url},"
                f" client {member.client_url}"
            )
        quorum = {True: "intact", False: "LOST", None: "unknown (no member answered)"}
        lines.append(f"#   quorum: {quorum[self.quorum]}")
        lines += [f"# note: {note}" for note in self.notes]
        for strategy in self.strategies:
            lines += ["", f"## Strategy {strategy.number}: {strategy.title}"]
            lines.append(f"# when: {strategy.when}")
            lines.append(f"# loses: {strategy.loses}")
            for index, step in enumerate(strategy.steps, start=1):
                lines.append(f"# {strategy.number}.{index} [{step.where}] {step.text}")
                lines += list(step.commands)
        return "\n".join(lines) + "\n"


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def build_restore_plan(
    *,
    cluster: str,
    members: Sequence[PlanMember],
    token: str,
    data_dir: str,
    restore_data_dir: str,
    quorum: bool | None,
    etcdctl_tls: Sequence[str] = (),
    backup: BackupFile | None = None,
    survivor: PlanMember | None = None,
    now: float | None = None,
) -> RestorePlan:
    """The seed's three recovery strategies as commands for this cluster (pure)."""
    now = time.time() if now is None else now
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    all_clients = ",".join(m.client_url for m in members)
    tls = list(etcdctl_tls)

    def etcdctl(endpoints: str, *args: str) -> str:
        return "ETCDCTL_API=3 " + shlex.join(["etcdctl", f"--endpoints={endpoints}", *tls, *args])

    def start(member: PlanMember, directory: str, state: str, cluster_token: str | None) -> str:
        # With an existing data dir etcd ignores the --initial-* flags, so a restart of
        # an original member carries no token (its cluster already has one).
        token_flag = [f"--initial-cluster-token={cluster_token}"] if cluster_token else []
        return (
            shlex.join(
                [
                    "etcd",
                    f"--name={member.name}",
                    f"--data-dir={directory}",
                    f"--listen-peer-urls={member.peer_url}",
                    f"--initial-advertise-peer-urls={member.peer_url}",
                    f"--listen-client-urls={member.client_url}",
                    f"--advertise-client-urls={member.client_url}",
                    f"--initial-cluster={initial}",
                    *token_flag,
                    f"--initial-cluster-state={state}",
                ]
            )
            + "  # plus the TLS and tuning flags of the member's unit file"
        )

    down = [m for m in members if m.state != "up"] or list(members)
    healthy = ",".join(m.client_url for m in members if m.state == "up") or all_clients
    check = PlanStep(
        "check the cluster: every member healthy, one leader, no alarm",
        "any host",
        (
            etcdctl(all_clients, "endpoint", "health"),
            etcdctl(all_clients, "endpoint", "status", "-w", "table"),
            etcdctl(all_clients, "alarm", "list"),
        ),
    )
    one_steps = [
        PlanStep(
            "see which members are down and whether a majority answers",
            "any host",
            (etcdctl(all_clients, "endpoint", "status", "-w", "table"),),
        )
    ]
    for member in down:
        one_steps.append(
            PlanStep(
                f"restart {member.name} with its existing data dir (its unit file"
                " unchanged; --initial-cluster flags are ignored when the data dir exists)",
                f"on {member.name} ({_host(member.peer_url)})",
                (start(member, data_dir, "existing", None),),
            )
        )
    for member in down:
        ident = member.member_id or "<ID of " + member.name + " from `member list`>"
        one_steps.append(
            PlanStep(
                f"only if {member.name}'s data dir is lost or corrupt AND the others keep"
                " quorum: replace it by an empty member",
                f"any host, then on {member.name}",
                (
                    etcdctl(healthy, "member", "remove", ident),
                    etcdctl(
                        healthy, "member", "add", member.name, f"--peer-urls={member.peer_url}"
                    ),
                    shlex.join(["mv", data_dir, f"{data_dir}.broken"]),
                    start(member, data_dir, "existing", None),
                ),
            )
        )
    one_steps.append(check)

    def rebuild(snapshot: str) -> list[PlanStep]:
        steps = [
            PlanStep(
                "stop every kube-apiserver (their writes would be lost), then every etcd member",
                "on every control-plane host",
                (
                    "mv /etc/kubernetes/manifests/kube-apiserver.yaml /etc/kubernetes/"
                    "  # or stop its unit",
                    "systemctl stop etcd  # or move etcd's static pod manifest aside",
                ),
            ),
            PlanStep(
                "verify the snapshot and copy it to every member",
                "any host",
                (
                    shlex.join(["etcdctl", "snapshot", "status", snapshot, "-w", "table"]),
                    *(
                        shlex.join(["scp", snapshot, f"{_host(m.peer_url)}:{snapshot}"])
                        for m in members
                    ),
                ),
            ),
        ]
        for member in members:
            steps.append(
                PlanStep(
                    f"restore {member.name}'s new data dir (a new folder: the old one stays"
                    " untouched until the cluster is back)",
                    f"on {member.name} ({_host(member.peer_url)})",
                    (
                        "ETCDCTL_API=3 "
                        + shlex.join(
                            [
                                "etcdctl",
                                "snapshot",
                                "restore",
                                snapshot,
                                f"--name={member.name}",
                                f"--data-dir={restore_data_dir}",
                                f"--initial-cluster={initial}",
                                f"--initial-cluster-token={token}",
                                f"--initial-advertise-peer-urls={member.peer_url}",
                            ]
                        ),
                    ),
                )
            )
        for member in members:
            steps.append(
                PlanStep(
                    f"start {member.name} on the restored data (point its unit file's"
                    f" --data-dir at {restore_data_dir}, --initial-cluster-state new)",
                    f"on {member.name} ({_host(member.peer_url)})",
                    (start(member, restore_data_dir, "new", token),),
                )
            )
        steps.append(check)
        steps.append(
            PlanStep(
                "start the kube-apiservers again",
                "on every control-plane host",
                ("mv /etc/kubernetes/kube-apiserver.yaml /etc/kubernetes/manifests/",),
            )
        )
        return steps

    migrate_file = f"/var/tmp/etcd-{cluster}-migrate.db"
    source = survivor or (next((m for m in members if m.state == "up"), None))
    source_url = source.client_url if source else "<client URL of the surviving member>"
    two = [
        PlanStep(
            "snapshot the surviving member with the newest data (works without quorum)",
            "any host",
            (etcdctl(source_url, "snapshot", "save", migrate_file),),
        ),
        *rebuild(migrate_file),
    ]
    if backup is not None and backup.sidecar is not None:
        taken = datetime.fromtimestamp(backup.created_unix, UTC)
        age_hours = (now - backup.created_unix) / 3600
        loses = (
            f"every write after revision {backup.sidecar.get('revision')} (snapshot of"
            f" {taken:%Y-%m-%dT%H:%M:%SZ}, {age_hours:.1f} h ago)"
        )
        three = rebuild(str(backup.path))
    else:
        loses = "every write since the backup used"
        three = [
            PlanStep(
                "no verified backup found: take the newest snapshot you have off-site",
                "any host",
                (),
            ),
            *rebuild("<snapshot file>"),
        ]
    strategies = (
        Strategy(
            1,
            "recover from the original members",
            "members crashed or lost their disks, but their data or a majority survives",
            "nothing",
            tuple(one_steps),
        ),
        Strategy(
            2,
            "migrate the data to new members and rebuild",
            "quorum is lost for good, but at least one member's data is readable",
            "nothing the surviving member had applied",
            tuple(two),
        ),
        Strategy(
            3, "restore from the periodic backup", "no member's data is usable", loses, tuple(three)
        ),
    )
    notes = []
    if quorum is False:
        notes.append("quorum is lost: strategy 1 works only if a majority can be restarted")
    return RestorePlan(
        cluster=cluster,
        members=tuple(members),
        initial_cluster=initial,
        initial_cluster_token=token,
        data_dir=data_dir,
        restore_data_dir=restore_data_dir,
        quorum=quorum,
        backup=None if backup is None else backup.sidecar,
        backup_path=None if backup is None else str(backup.path),
        strategies=strategies,
        notes=tuple(notes),
    )


def etcdctl_tls_flags(client_tls: tuple[str | None, str | None, str | None]) -> list[str]:
    """etcdctl's TLS flags for (CA, certificate, key) files."""
    ca, cert, key = client_tls
    flags = []
    if ca:
        flags.append(f"--cacert={ca}")
    if cert:
        flags.append(f"--cert={cert}")
    if key:
        flags.append(f"--key={key}")
    return flags


async def restore_plan(
    client: EtcdClient | None,
    cluster: str,
    restore: EtcdRestoreConfig,
    *,
    backup_directory: str | None,
    etcdctl_tls: Sequence[str] = (),
    token: str | None = None,
    key_path: str = "",
) -> RestorePlan:
    """The recovery plan for ``cluster``: members from the configuration, else from the
    live member list; which are up from the live picture. Works without quorum: that
    is when it is needed."""
    view = await observe_cluster(client, cluster) if client is not None else None
    live = {m.name: m for m in view.members} if view is not None else {}
    answered = view is not None and any(m.reachable for m in view.members)
    members: list[PlanMember] = []
    if restore.members:
        for configured in restore.members:
            seen = live.get(configured.name)
            state = "unknown" if not answered else ("up" if seen and seen.reachable else "down")
            members.append(
                PlanMember(
                    configured.name,
                    configured.peer_url,
                    configured.client_url,
                    hex_id(seen.member_id) if seen and seen.member_id else None,
                    state,
                )
            )
    elif answered and view is not None:
        for member in view.members:
            if not member.peer_urls or not member.endpoint or not member.name:
                continue
            members.append(
                PlanMember(
                    member.name,
                    member.peer_urls[0],
                    member.endpoint,
                    hex_id(member.member_id),
                    "up" if member.reachable else "down",
                )
            )
    if not members:
        raise ConfigError(
            "no members configured and no member answers to list them",
            key_path=f"{key_path}.members" if key_path else "restore.members",
        )
    newest = newest_verified_backup(backup_directory, cluster) if backup_directory else None
    survivor = None
    if view is not None:
        up = [m for m in view.members if m.status is not None]
        if up:
            best = max(up, key=lambda m: m.status.revision if m.status else 0)
            survivor = next((p for p in members if p.name == best.name), None)
    chosen_token = (
        token
        or restore.initial_cluster_token
        or f"etcd-{cluster}-restored-{datetime.now(UTC):%Y%m%d%H%M}"
    )
    return build_restore_plan(
        cluster=cluster,
        members=members,
        token=chosen_token,
        data_dir=restore.data_dir,
        restore_data_dir=restore.restore_data_dir,
        quorum=None if not answered or view is None else view.has_quorum,
        etcdctl_tls=etcdctl_tls,
        backup=newest,
        survivor=survivor,
    )
