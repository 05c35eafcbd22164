"""What a remediation action is, as the guard kernel sees it, and the first action.

An action is four steps, each with its own guarantee:

``plan(alert)``
    Pure: what the action would do and what it would touch (target, nodes, pods, etcd
    members, the cluster's size when the action knows it). The guard kernel holds the
    plan against the blast-radius limits and the per-target cooldown. A plan that
    cannot be made (a label the action needs is missing) raises :class:`PlanError`,
    and the guard refuses: it never guesses a target.
``check(ctx, alert)``
    The *live* re-check of the preconditions, from the sources themselves (etcd's own
    status, the API server), not from the alert, which is minutes old by the time it
    arrives. Returns a :class:`Precondition`; raising anything is treated as "cannot
    tell" and the guard refuses: preconditions fail closed.
``execute(ctx, alert, plan)``
    Does it. ``idempotent`` actions may be executed again after a leader died mid-way,
    but only after ``check`` is re-run and still holds; other actions are then marked
    ``interrupted`` and left to a person.
``revert(ctx, alert, plan)``
    For ``reversible`` actions (anything that pauses a safety mechanism): undoes it. The
    leader calls it when the alert resolves or at the action's TTL, whichever is first,
    and must be safe to call when ``execute`` never got to run.

Actions are registered in an :class:`ActionRegistry`, which refuses duplicate names.
``notify`` needs nothing but chat; ``etcd-backup``, ``etcd-defrag`` and
``etcd-recover-nospace`` run the operations of ``kubeballast.core.etcdops`` (the same
functions ``kube-ballast etcd ...`` runs by hand), with the operation's own dry run as
the live precondition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from kubeballast.core import etcdops
from kubeballast.core.config import EtcdClusterConfig, EvictionGuardConfig
from kubeballast.core.errors import PermanentError
from kubeballast.core.etcd import EtcdClient
from kubeballast.remediations.contract import Alert
from kubeballast.remediations.ledger import Clock

__all__ = [
    "Action",
    "ActionContext",
    "ActionRegistry",
    "EtcdBackupAction",
    "EtcdDefragAction",
    "EtcdRecoverNoSpaceAction",
    "NotifyAction",
    "ObjectReference",
    "Outcome",
    "Plan",
    "PlanError",
    "Precondition",
    "default_actions",
]

log = logging.getLogger(__name__)


class PlanError(PermanentError):
    """The action cannot say what it would do for this alert (a label is missing)."""


@dataclass(frozen=True)
class ObjectReference:
    """The Kubernetes object an action acts on: its Events are recorded there."""

    kind: str
    name: str
    namespace: str = ""
    api_version: str = "v1"
    uid: str = ""


@dataclass(frozen=True)
class Plan:
    """What one execution would do and touch, declared before anything happens."""

    summary: str
    """One line for people: "defragment etcd member https://10.0.0.11:2379"."""
    target: str
    """What the cooldown is keyed on: a member, a node, an alert."""
    nodes: int = 0
    pods: int = 0
    members: int = 0
    cluster_nodes: int | None = None
    """The cluster's node count, when the action knows it (for the fraction limit)."""
    changes_cluster: bool = True
    """Counts against the global budget (``notify`` does not)."""
    node_affecting: bool = False
    """Counts against the node-affecting budget."""
    involved_object: ObjectReference | None = None


@dataclass(frozen=True)
class Precondition:
    """The live re-check's verdict, with what it saw."""

    ok: bool
    reason: str
    evidence: Mapping[str, str] = field(default_factory=dict)
    retry: bool = False
    """False now, but the evidence may still be forming while the alert fires (the
    heartbeat wave a moment behind the congestion alert): the engine re-checks it every
    ``precondition_recheck_seconds`` for up to ``precondition_wait_seconds`` instead of
    refusing at once. False for conditions that will not change by waiting (a missing
    policy, a disabled flag)."""


@dataclass(frozen=True)
class Outcome:
    """What an execution or a revert did."""

    summary: str
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionContext:
    """What actions get to work with. ``kube`` is a kubernetes-asyncio ApiClient."""

    kube: Any
    clock: Clock
    identity: str
    dry_run: bool
    """Always False inside ``execute``/``revert`` (a dry run never gets there); ``check``
    sees the mode the decision is made in."""
    log: logging.LoggerAdapter[logging.Logger]


class Action(Protocol):
    """A remediation action. See the module docstring for each step's contract."""

    name: str
    idempotent: bool
    reversible: bool

    def plan(self, alert: Alert) -> Plan: ...

    async def check(self, ctx: ActionContext, alert: Alert) -> Precondition: ...

    async def execute(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome: ...

    async def revert(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome: ...


class ActionRegistry(Mapping[str, Action]):
    """Actions by name; registering a name twice is an error, never a silent overwrite."""

    def __init__(self, actions: Iterable[Action] = ()) -> None:
        self._actions: dict[str, Action] = {}
        for action in actions:
            self.register(action)

    def register(self, action: Action) -> None:
        if action.name in self._actions:
            raise ValueError(f"action {action.name!r} is registered twice")
        self._actions[action.name] = action

    def __getitem__(self, name: str) -> Action:
        return self._actions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._actions)

    def __len__(self) -> int:
        return len(self._actions)


class NotifyAction:
    """Chat only: tell people about the alert and its runbook, change nothing.

    The message itself is the engine's per-group notification (plan and outcome), so
    ``execute`` has nothing to do but say so; having ``notify`` go through the guard
    kernel like every other action means it is budgeted, cooled down per alert,
    silenced by the kill switch and maintenance windows, and audited the same way.
    """

    name = "notify"
    idempotent = True
    reversible = False

    def plan(self, alert: Alert) -> Plan:
        runbook = alert.annotations.get("runbook_url", "")
        summary = f"notify about {alert.name or 'the alert'}"
        if runbook:
            summary += f" (runbook: {runbook})"
        # Cooled down per alert (name and labels), not per firing: a flapping alert
        # does not flood the channel.
        return Plan(summary=summary, target=f"alert/{alert.fingerprint}", changes_cluster=False)

    async def check(self, ctx: ActionContext, alert: Alert) -> Precondition:
        return Precondition(ok=True, reason="notifying needs no precondition")

    async def execute(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome:
        return Outcome(summary="notified")

    async def revert(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome:
        raise PermanentError("notify is not reversible")


# --------------------------------------------------------------------------------------
# etcd: the operations of kubeballast.core.etcdops, which people also run by hand
# --------------------------------------------------------------------------------------


class _EtcdAction:
    """An etcd operation as a remediation.

    The live re-check is the operation itself in dry-run mode: ``etcdops`` observes the
    whole cluster (quorum, every member's health and status, the alarms, the raft term)
    and refuses with reasons a person can act on. Its refusal is this action's
    precondition failing; an etcd that cannot be reached raises, which the guard turns
    into ``precondition-error``. The operation then runs again for real, repeating the
    same checks immediately before acting. The cluster comes from the alert's
    ``etcd_cluster`` label (the exporter's etcd metrics carry it; ``cluster`` is the
    Kubernetes cluster's) and must be one of ``receiver.remediations.etcd.clusters``:
    an unknown or missing one is no plan.
    """

    name: str
    idempotent = True
    reversible = False
    changes_cluster = True

    def __init__(self, clusters: Sequence[EtcdClusterConfig], *, timeout: float = 10.0) -> None:
        self._clusters = {cluster.name: cluster for cluster in clusters}
        self._timeout = timeout

    def _cluster(self, alert: Alert) -> EtcdClusterConfig:
        name = alert.labels.get("etcd_cluster", "")
        if not name:
            raise PlanError("the alert has no 'etcd_cluster' label naming the etcd cluster")
        if name not in self._clusters:
            raise PlanError(f"etcd cluster {name!r} is not in receiver.remediations.etcd.clusters")
        return self._clusters[name]

    def _client(self, cluster: EtcdClusterConfig) -> EtcdClient:
        return EtcdClient.from_config(
            cluster,
            config_path=f"receiver.remediations.etcd.clusters[{cluster.name}]",
            timeout=self._timeout,
        )

    def _backup_settings(self, cluster: EtcdClusterConfig) -> etcdops.BackupSettings | None:
        if cluster.backup.directory is None:
            return None
        return etcdops.BackupSettings.from_config(cluster.backup)

    def plan(self, alert: Alert) -> Plan:
        cluster = self._cluster(alert)
        return Plan(
            summary=f"{self.name} on etcd cluster {cluster.name}",
            target=f"etcd/{cluster.name}",
            members=len(cluster.endpoints),
            changes_cluster=self.changes_cluster,
        )

    async def revert(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome:
        raise PermanentError(f"{self.name} is not reversible")


def _refused(error: etcdops.OperationRefused) -> Precondition:
    return Precondition(ok=False, reason="; ".join(error.reasons))


class EtcdBackupAction(_EtcdAction):
    """A verified snapshot from a healthy member into the cluster's backup folder.

    Reads one member and writes a file: it does not change the cluster, so it counts
    against its own budget only, and it touches one member."""

    name = "etcd-backup"
    changes_cluster = False

    def plan(self, alert: Alert) -> Plan:
        cluster = self._cluster(alert)
        if cluster.backup.directory is None:
            raise PlanError(f"etcd cluster {cluster.name!r} has no backup.directory")
        return Plan(
            summary=f"snapshot etcd cluster {cluster.name} into {cluster.backup.directory}",
            target=f"etcd/{cluster.name}",
            members=1,
            changes_cluster=False,
        )

    async def check(self, ctx: ActionContext, alert: Alert) -> Precondition:
        cluster = self._cluster(alert)
        async with self._client(cluster) as client:
            view = await etcdops.observe_cluster(client, cluster.name)
        try:
            etcdops.require_quorum(view, "take a backup")
        except etcdops.OperationRefused as error:
            return _refused(error)
        leader = view.leader
        return Precondition(
            ok=True,
            reason=f"quorum with leader {leader.label if leader else '?'}",
            evidence={"raft_term": str(view.raft_term), "members": str(len(view.members))},
        )

    async def execute(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome:
        cluster = self._cluster(alert)
        settings = self._backup_settings(cluster)
        if settings is None:
            raise PlanError(f"etcd cluster {cluster.name!r} has no backup.directory")
        async with self._client(cluster) as client:
            result = await etcdops.backup(client, cluster.name, settings)
        return Outcome(
            summary=f"snapshot {result.path} ({result.size} bytes, revision {result.revision})",
            details={"path": result.path, "sha256": result.sha256, "member": result.member},
        )


class EtcdDefragAction(_EtcdAction):
    """Defragment the fragmented members, followers first, one at a time, after a
    backup when the cluster has a backup folder."""

    name = "etcd-defrag"

    async def check(self, ctx: ActionContext, alert: Alert) -> Precondition:
        cluster = self._cluster(alert)
        try:
            async with self._client(cluster) as client:
                result = await etcdops.defragment(client, cluster.name, dry_run=True)
        except etcdops.OperationRefused as error:
            return _refused(error)
        if not result.steps:
            skipped = "; ".join(f"{name}: {why}" for name, why in result.skipped)
            return Precondition(ok=False, reason=f"no member is fragmented enough ({skipped})")
        planned = ", ".join(f"{step.member} ({step.role})" for step in result.steps)
        return Precondition(
            ok=True,
            reason=f"fragmented: {planned}",
            evidence={"raft_term": str(result.raft_term), "members": planned},
        )

    async def execute(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome:
        cluster = self._cluster(alert)
        async with self._client(cluster) as client:
            result = await etcdops.defragment(
                client,
                cluster.name,
                dry_run=False,
                backup_settings=self._backup_settings(cluster),
            )
        return Outcome(
            summary=f"defragmented {len(result.steps)} member(s), "
            f"reclaimed {result.reclaimed_bytes} bytes",
            details={"members": ", ".join(step.member for step in result.steps)},
        )


class EtcdRecoverNoSpaceAction(_EtcdAction):
    """Bring writes back after NOSPACE: compact, defragment, disarm, prove a write."""

    name = "etcd-recover-nospace"

    async def check(self, ctx: ActionContext, alert: Alert) -> Precondition:
        cluster = self._cluster(alert)
        try:
            async with self._client(cluster) as client:
                result = await etcdops.recover_nospace(client, cluster.name, dry_run=True)
        except etcdops.OperationRefused as error:
            return _refused(error)
        if result.nothing_to_do:
            return Precondition(ok=False, reason="no NOSPACE alarm is raised")
        return Precondition(
            ok=True,
            reason=f"NOSPACE raised: {', '.join(result.alarms_before)}",
            evidence={"alarms": ", ".join(result.alarms_before)},
        )

    async def execute(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome:
        cluster = self._cluster(alert)
        async with self._client(cluster) as client:
            result = await etcdops.recover_nospace(
                client,
                cluster.name,
                dry_run=False,
                backup_settings=self._backup_settings(cluster),
            )
        return Outcome(
            summary=f"writes accepted again; reclaimed {result.reclaimed_bytes} bytes, "
            f"{result.disarmed} alarm(s) disarmed",
            details={"compacted_revision": str(result.compacted_revision)},
        )


def default_actions(
    etcd_clusters: Sequence[EtcdClusterConfig] = (),
    eviction_guard: EvictionGuardConfig | None = None,
    *,
    registry: CollectorRegistry | None = None,
) -> ActionRegistry:
    """Every action kube-ballast ships, by name; the etcd ones act on ``etcd_clusters``,
    ``eviction-pause`` under ``eviction_guard`` (its metrics in ``registry``)."""
    from kubeballast.remediations.evictionguard import EvictionGuard

    return ActionRegistry(
        [
            NotifyAction(),
            EtcdBackupAction(etcd_clusters),
            EtcdDefragAction(etcd_clusters),
            EtcdRecoverNoSpaceAction(etcd_clusters),
            EvictionGuard(eviction_guard or EvictionGuardConfig(), registry=registry),
        ]
    )
