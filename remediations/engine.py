"""The remediation engine: the webhook's Intake, and the leader's loop behind it.

The webhook hands each validated group to :meth:`Engine.accept`, which writes one
execution record per (action, alert) into the ledger and returns; nothing else
happens inside the request (STYLE 9). Every replica does that. The replica that holds
the leader Lease runs the loop that does the work, from the ledger alone, so it does
not matter which replica received a group, or whether the one that received it still
lives:

1. plans waiting for approval past their expiry are refused;
2. reversible actions whose alert resolved, or whose TTL passed, are reverted (a new
   leader re-arms this simply by reading ``<prefix>-active``);
3. records left ``started`` by a leader that died are resumed: an idempotent action is
   re-checked live and executed again only if its precondition still holds, anything
   else is marked ``interrupted`` for a person; never a blind second execution;
4. pending records are decided by the guard kernel, group by group, and the allowed
   ones executed: claimed with a compare-and-set (pending -> started) so that two
   leaders can never both run one, the budgets taken in one write, the reversible ones
   armed with their expiry *before* they run.

People hear about it once per group and pass: the plan before anything that changes
the cluster runs (with refusals, dry runs and approval ids), then the outcome; a group
whose only work is chat gets one message. Each decision is also a log line, a metric
(``kubeballast_remediation_decisions_total{action,outcome,reason}``) and a Kubernetes
Event on the object acted on (or on the records ConfigMap).

The loop's own failures are of two kinds: the API cannot be reached (logged, retried at
the next scan; the state is in the ledger, nothing is lost), or a bug, which kills the
task and, through :meth:`Engine.wait`, the process (STYLE 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from kubeballast.core.config import ReceiverConfig
from kubeballast.core.errors import ConfigError, KubeBallastError
from kubeballast.core.logging import get_logger
from kubeballast.remediations.actions import (
    Action,
    ActionContext,
    ActionRegistry,
    Outcome,
    Plan,
    default_actions,
)
from kubeballast.remediations.contract import AlertGroup, RecordError
from kubeballast.remediations.guard import GuardKernel, Verdict
from kubeballast.remediations.leader import LeaderElector, new_identity
from kubeballast.remediations.ledger import (
    ActiveEntry,
    ApprovalError,
    Clock,
    ExecutionRecord,
    Ledger,
    SystemClock,
    kube_call,
    record_key,
)
from kubeballast.remediations.notify import Message, Notifier, read_urls_file

__all__ = ["Engine", "build_intake"]

log = logging.getLogger(__name__)

EVENT_COMPONENT = "kube-ballast-receiver"
STOP_DRAIN_SECONDS = 2.0
"""How long a clean shutdown waits for queued notifications."""


def build_intake(
    config: ReceiverConfig,
    *,
    registry: CollectorRegistry | None = None,
    api: Any | None = None,
    clock: Clock | None = None,
    actions: Iterable[Action] | None = None,
    identity: str | None = None,
) -> Engine:
    """The engine for ``config``; start it with :meth:`Engine.start`.

    ``api`` is a kubernetes-asyncio ``ApiClient`` (the caller keeps owning it); without
    one, the engine creates one from ``receiver.remediations.kubernetes`` when it starts
    and closes it when it stops. ``actions`` replaces the built-in ones (tests pass a
    fake). Raises ``ConfigError`` for a configured action that does not exist or an
    unreadable notification URL file.
    """
    remediations = config.remediations
    registry = registry if registry is not None else CollectorRegistry()
    registered = (
        ActionRegistry(actions)
        if actions is not None
        else default_actions(
            remediations.etcd.clusters, remediations.eviction_guard, registry=registry
        )
    )
    for index, action_config in enumerate(remediations.actions):
        if action_config.name not in registered:
            raise ConfigError(
                f"unknown action {action_config.name!r} (known: {', '.join(sorted(registered))})",
                key_path=f"receiver.remediations.actions[{index}].name",
            )
    configured = {a.name for a in remediations.actions}
    for index, name in enumerate(remediations.enabled_actions):
        if name not in configured:
            raise ConfigError(
                f"{name!r} is enabled but has no entry in receiver.remediations.actions",
                key_path=f"receiver.remediations.enabled_actions[{index}]",
            )
    notifier = Notifier(
        read_urls_file(remediations.notifications.urls_file),
        remediations.notifications,
        registry=registry,
    )
    return Engine(
        config,
        registered,
        notifier=notifier,
        registry=registry,
        api=api,
        clock=clock or SystemClock(),
        identity=identity or new_identity(),
    )


@dataclasses.dataclass
class _Decision:
    """One record's fate in one pass, for the group's message."""

    record: ExecutionRecord
    verdict: Verdict | None
    outcome: str
    """executed, failed, refused, dry-run, awaiting-approval, interrupted, reverted"""
    text: str


class Engine:
    """Implements ``contract.Intake``; runs leader election and the leader's loop."""

    def __init__(
        self,
        config: ReceiverConfig,
        actions: ActionRegistry,
        *,
        notifier: Notifier,
        registry: CollectorRegistry,
        api: Any | None,
        clock: Clock,
        identity: str,
    ) -> None:
        self.config = config
        self.remediations = config.remediations
        self.actions = actions
        self.notifier = notifier
        self.clock = clock
        self.identity = identity
        self.registry = registry
        self._api = api
        self._owns_api = api is None
        self._ledger: Ledger | None = None
        self._guard: GuardKernel | None = None
        self._elector: LeaderElector | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._revert_failures: set[str] = set()
        self._recheck_at: dict[str, float] = {}
        """Records waiting for their precondition: when to check each one again. In
        memory only: a new leader checks them at once."""
        self._limits = {a.name: a for a in self.remediations.actions}

        self.decisions = Counter(
            "kubeballast_remediation_decisions",
            "Decisions of the guard kernel and their results, by action, outcome and reason.",
            ["action", "outcome", "reason"],
            registry=registry,
        )
        self.budget_remaining = Gauge(
            "kubeballast_remediation_budget_remaining",
            "Executions left in the current sliding hour, per budget (as the leader last "
            "read them).",
            ["budget"],
            registry=registry,
        )
        self.active_reversible = Gauge(
            "kubeballast_remediation_active_reversible_actions",
            "Reversible actions in force (each is reverted at its TTL at the latest).",
            registry=registry,
        )
        self.leader_gauge = Gauge(
            "kubeballast_remediation_leader",
            "1 while this replica holds the leader Lease and may act.",
            registry=registry,
        )
        self.leader_gauge.set_function(lambda: 1.0 if self.is_leader() else 0.0)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("the engine is not started")
        return self._ledger

    def is_leader(self) -> bool:
        return self._elector is not None and self._elector.is_leader()

    async def start(self) -> None:
        """Connect, and start leader election, the leader's loop and the notifier."""
        if self._api is None:
            from kubeballast.core.kube import kube_client

            self._api = await kube_client(
                self.remediations.kubernetes, "receiver.remediations.kubernetes"
            )
        self._ledger = Ledger(self._api, self.remediations, self.clock)
        self._guard = GuardKernel(self.config, self._ledger, dict(self.actions), self.clock)
        self._elector = LeaderElector(
            self._api,
            self.remediations.namespace,
            self.remediations.leader_election,
            identity=self.identity,
            timeout=self.remediations.api_timeout_seconds,
            clock=self.clock,
        )
        self._failure = asyncio.get_running_loop().create_future()
        await self._startup_checks()
        for name, coro in (
            ("leader-election", self._elector.run()),
            ("remediation-loop", self._loop()),
            ("notifications", self.notifier.run()),
        ):
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
        log.info(
            "remediations: engine %s started (%s)",
            self.identity,
            "dry run" if self.config.dry_run else "live",
        )

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._failure is None or self._failure.done():
            return
        error = task.exception()
        if error is None:
            error = RuntimeError(f"task {task.get_name()} ended on its own")
        log.error("remediations: task %s died", task.get_name(), exc_info=error)
        self._failure.set_exception(error)

    async def wait(self) -> None:
        """Until a background task dies; re-raises what killed it."""
        if self._failure is None:
            raise RuntimeError("the engine is not started")
        await asyncio.shield(self._failure)

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._failure is not None and not self._failure.done():
            self._failure.cancel()

    async def stop(self) -> None:
        """Clean shutdown: stop acting, release the Lease, drain notifications, close.

        An action cut off in the middle stays ``started`` in the ledger; the next leader
        re-verifies it (see the module docstring).
        """
        loop_task = next((t for t in self._tasks if t.get_name() == "remediation-loop"), None)
        if loop_task is not None:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        if self._elector is not None:
            await self._elector.release()
        await self.notifier.drain(STOP_DRAIN_SECONDS)
        await self._cancel_tasks()
        await self._close_api()

    async def abort(self) -> None:
        """Stop at once, as a crash would: no Lease release, no ledger writes, nothing
        drained. The other replicas take over from the ledger."""
        await self._cancel_tasks()
        await self._close_api()

    async def _close_api(self) -> None:
        if self._owns_api and self._api is not None:
            await self._api.close()
            self._api = None

    # -- intake ------------------------------------------------------------------------

    async def accept(self, group: AlertGroup) -> None:
        """Record one execution record per (configured action, alert); idempotent."""
        if self._ledger is None:
            raise RecordError("the remediation engine is not started")
        now = self.clock.time()
        new: list[ExecutionRecord] = []
        resolved: list[str] = []
        for alert in group.alerts:
            for action in self.remediations.actions:
                if "*" not in action.alerts and alert.name not in action.alerts:
                    continue
                if alert.status == "firing":
                    new.append(ExecutionRecord.new(action.name, alert, group.group_key, now))
                else:
                    resolved.append(record_key(action.name, alert.fingerprint, alert.starts_at))
        if not new and not resolved:
            log.info(
                "remediations: group %s matches no action (%d alerts)",
                group.group_key,
                len(group.alerts),
            )
            return
        try:
            added = await self._ledger.record_intake(new, resolved)
        except KubeBallastError as error:
            raise RecordError(f"cannot record the group in the ledger: {error}") from error
        log.info(
            "remediations: group %s recorded: %d new, %d already known, %d resolved",
            group.group_key,
            len(added),
            len(new) - len(added),
            len(resolved),
        )
        self._wake.set()

    # -- the leader's loop -------------------------------------------------------------

    async def _loop(self) -> None:
        assert self._elector is not None
        while True:
            self._wake.clear()
            self._elector.changed.clear()
            if self._elector.is_leader():
                try:
                    await self._pass()
                except KubeBallastError as error:
                    log.warning("remediations: pass interrupted, retrying at next scan: %s", error)
            waiters = [
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(self._elector.changed.wait()),
            ]
            try:
                await asyncio.wait(
                    waiters,
                    timeout=self.remediations.scan_interval_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _pass(self) -> None:
        ledger = self.ledger
        records = await ledger.records()
        now = self.clock.time()

        # 1. Approvals that nobody gave in time.
        expired = [
            r
            for r in records.values()
            if r.state == "awaiting-approval" and now >= r.approval_expires_at
        ]
        for group_records in _by_group(expired).values():
            decisions = []
            for record in group_records:
                done = await ledger.transition(
                    record.key,
                    {"awaiting-approval"},
                    state="refused",
                    reason="approval-expired",
                    detail=f"approval {record.approval_id} was not given in time",
                )
                if done is not None:
                    decisions.append(
                        self._decided(done, None, "refused", "approval-expired", done.detail)
                    )
            await self._announce(decisions, stage="outcome")

        # 2. Reversible actions whose alert resolved or whose time is up.
        active = await ledger.active()
        self.active_reversible.set(len(active))
        for entry in active.values():
            owner = records.get(entry.record)
            if now >= entry.expires_at or (owner is not None and owner.resolved):
                if not self.is_leader():
                    return
                await self._revert(
                    entry, owner, "TTL reached" if now >= entry.expires_at else "alert resolved"
                )

        # 2b. Actions that keep something in force (the eviction pause) maintain it.
        await self._maintain()

        # 3. Actions a dead leader left half done.
        for record in records.values():
            if record.state == "started" and record.key not in self._in_flight:
                if not self.is_leader():
                    return
                await self._resume(record)

        # 4. New work, group by group; records waiting for their precondition only
        # when their next check is due.
        pending = [
            r
            for r in records.values()
            if r.state == "pending" and now >= self._recheck_at.get(r.key, 0.0)
        ]
        self._recheck_at = {
            key: at
            for key, at in self._recheck_at.items()
            if key in records and records[key].state == "pending"
        }
        for group_records in _by_group(pending).values():
            if not self.is_leader():
                return
            await self._handle_group(group_records)

        remaining = await ledger.budgets_remaining()
        for budget, left in remaining.items():
            self.budget_remaining.labels(budget).set(left)

    async def _maintain(self) -> None:
        """Let actions that keep something in force (``maintain``) renew, end or sweep
        it. Ending is always allowed (it restores a safety mechanism); anything that
        extends or acts is allowed only for an enabled action, not in dry run, with the
        kill switch off (``dry_run`` in the context says which)."""
        for name, action in self.actions.items():
            maintain = getattr(action, "maintain", None)
            if maintain is None:
                continue
            try:
                paused, _why = await self.ledger.paused()
            except KubeBallastError:
                paused = True
            restricted = (
                paused or name not in self.remediations.enabled_actions or self._dry_run_for(name)
            )
            try:
                await maintain(self._action_context(name, dry_run=restricted))
            except KubeBallastError as error:
                log.warning("remediations: %s could not maintain its state: %s", name, error)

    async def _startup_checks(self) -> None:
        """Every replica, once at start: actions end whatever they left overdue."""
        for name, action in self.actions.items():
            startup = getattr(action, "startup", None)
            if startup is None:
                continue
            try:
                await startup(self._action_context(name, dry_run=True))
            except KubeBallastError as error:
                log.warning("remediations: %s start-up check failed: %s", name, error)

    def _action_context(self, action: str, dry_run: bool) -> ActionContext:
        return ActionContext(
            kube=self._api,
            clock=self.clock,
            identity=self.identity,
            dry_run=dry_run,
            log=get_logger(f"{__name__}.action", action=action),
        )

    def _context(self, record: ExecutionRecord, dry_run: bool) -> ActionContext:
        return ActionContext(
            kube=self._api,
            clock=self.clock,
            identity=self.identity,
            dry_run=dry_run,
            log=get_logger(
                f"{__name__}.action",
                action=record.action,
                alert=record.alertname,
                fingerprint=record.fingerprint,
            ),
        )

    def _dry_run_for(self, action: str) -> bool:
        limits = self._limits.get(action)
        return self.config.dry_run or limits is None or limits.dry_run

    async def _handle_group(self, records: list[ExecutionRecord]) -> None:
        assert self._guard is not None
        ledger = self.ledger
        decisions: list[_Decision] = []
        allowed: list[tuple[ExecutionRecord, Verdict]] = []
        for record in sorted(records, key=lambda r: (r.created_at, r.key)):
            verdict = await self._guard.evaluate(
                record, self._context(record, self._dry_run_for(record.action))
            )
            if verdict.kind == "allow":
                allowed.append((record, verdict))
                continue
            if await self._wait_for_precondition(record, verdict):
                continue
            target = verdict.plan.target if verdict.plan else ""
            if verdict.kind == "refuse":
                done = await ledger.transition(
                    record.key,
                    {"pending"},
                    state="refused",
                    reason=verdict.reason,
                    detail=verdict.detail,
                    target=target,
                )
                outcome = "refused"
            elif verdict.kind == "dry-run":
                done = await ledger.transition(
                    record.key,
                    {"pending"},
                    state="dry-run",
                    reason=verdict.reason,
                    detail=verdict.detail,
                    target=target,
                    dry_run=True,
                )
                outcome = "dry-run"
            else:
                done = await ledger.transition(
                    record.key,
                    {"pending"},
                    state="awaiting-approval",
                    reason=verdict.reason,
                    detail=verdict.detail,
                    target=target,
                    approval_id=secrets.token_hex(4),
                    approval_expires_at=self.clock.time() + self.remediations.approval_ttl_seconds,
                )
                outcome = "awaiting-approval"
            if done is not None:
                decisions.append(
                    self._decided(done, verdict, outcome, verdict.reason, verdict.detail)
                )

        changes_cluster = any(v.plan is not None and v.plan.changes_cluster for _, v in allowed)
        if changes_cluster:
            # The plan goes out before anything that changes the cluster runs.
            planned = decisions + [
                _Decision(r, v, "planned", f"will run: {v.plan.summary if v.plan else r.action}")
                for r, v in allowed
            ]
            await self._announce(planned, stage="plan")
            decisions = []
        for record, verdict in allowed:
            if not self.is_leader():
                break
            result = await self._execute(record, verdict)
            if result is not None:
                decisions.append(result)
        await self._announce(decisions, stage="outcome")

    async def _wait_for_precondition(self, record: ExecutionRecord, verdict: Verdict) -> bool:
        """Keep ``record`` pending when its precondition is false for now (``retry``)
        and its wait is not over; True when it waits.

        An alert can reach the receiver a moment before the evidence its action needs
        (KubeApiserverCongested before the heartbeat wave forms). Refusing then would be
        final for that firing, since Alertmanager's re-deliveries map onto the same
        record; waiting, re-checked live at a bounded pace, lets the first alert be
        enough. The ledger is written once, when the wait begins, not at every check.
        """
        precondition = verdict.precondition
        limits = self._limits.get(record.action)
        if (
            verdict.reason != "precondition-false"
            or precondition is None
            or not precondition.retry
            or limits is None
        ):
            self._recheck_at.pop(record.key, None)
            return False
        now = self.clock.time()
        until = record.created_at + limits.precondition_wait_seconds
        if now >= until:
            self._recheck_at.pop(record.key, None)
            return False
        self._recheck_at[record.key] = min(now + limits.precondition_recheck_seconds, until)
        get_logger(__name__, action=record.action, alert=record.alertname, record=record.key).info(
            "remediation waiting for its precondition (until %s): %s",
            _utc(until),
            precondition.reason,
        )
        if record.reason != "precondition-wait":
            await self.ledger.transition(
                record.key,
                {"pending"},
                reason="precondition-wait",
                detail=f"waiting for the precondition until {_utc(until)}: {precondition.reason}",
            )
        return True

    async def _execute(self, record: ExecutionRecord, verdict: Verdict) -> _Decision | None:
        """Claim, take the limits, arm, run, and record the result."""
        ledger = self.ledger
        plan, reservation = verdict.plan, verdict.reservation
        assert plan is not None
        assert reservation is not None
        # Compare-and-set: from pending, or (resuming) from the dead leader's claim.
        claimed = await ledger.transition(
            record.key,
            {record.state} if record.state == "started" else {"pending"},
            expect_holder=record.holder if record.state == "started" else None,
            state="started",
            holder=self.identity,
            target=plan.target,
        )
        if claimed is None:
            return None  # someone else moved it first: they own it now
        self._in_flight.add(record.key)
        try:
            try:
                over = await ledger.take_limits(reservation)
            except KubeBallastError as error:
                over = ("limits-unreadable", f"budgets unreadable: {error}")
            if over is not None:
                done = await ledger.transition(
                    record.key, {"started"}, state="refused", reason=over[0], detail=over[1]
                )
                return self._decided(done or claimed, verdict, "refused", over[0], over[1], plan)
            action = self.actions[record.action]
            limits = self._limits[record.action]
            if action.reversible:
                now = self.clock.time()
                await ledger.arm(
                    ActiveEntry(
                        record=record.key,
                        action=record.action,
                        target=plan.target,
                        armed_at=now,
                        expires_at=now + limits.ttl_seconds,
                    )
                )
            if not self.is_leader():
                return None  # the next leader re-verifies and finishes it
            ctx = self._context(record, dry_run=False)
            try:
                outcome = await action.execute(ctx, claimed.alert(), plan)
            except Exception as error:
                # The action's boundary: whatever it raised, it failed, and that is
                # recorded and told; the loop goes on with the next record.
                detail = f"{type(error).__name__}: {error}"
                done = await ledger.transition(
                    record.key, {"started"}, state="failed", reason="error", detail=detail
                )
                if action.reversible:
                    # Undo whatever part of it happened, now rather than at the TTL.
                    entry = (await ledger.active()).get(record.key)
                    if entry is not None:
                        await self._revert(entry, done or claimed, "the action failed")
                return self._decided(done or claimed, verdict, "failed", "error", detail, plan)
            if action.reversible:
                expires = self.clock.time() + limits.ttl_seconds
                done = await ledger.transition(
                    record.key,
                    {"started"},
                    state="active",
                    reason="ok",
                    detail=outcome.summary,
                    expires_at=expires,
                )
            else:
                done = await ledger.transition(
                    record.key, {"started"}, state="succeeded", reason="ok", detail=outcome.summary
                )
            return self._decided(
                done or claimed, verdict, "executed", "ok", _outcome_text(outcome), plan
            )
        finally:
            self._in_flight.discard(record.key)

    async def _resume(self, record: ExecutionRecord) -> None:
        """A record another leader (or an earlier pass) left ``started``."""
        assert self._guard is not None
        action = self.actions.get(record.action)
        previous = record.holder or "an earlier leader"
        if action is None or not action.idempotent:
            detail = (
                f"{previous} stopped during the action; it is not idempotent, so its outcome "
                "is left to a person to verify"
            )
            done = await self.ledger.transition(
                record.key, {"started"}, state="interrupted", reason="interrupted", detail=detail
            )
            if done is not None:
                await self._announce(
                    [self._decided(done, None, "interrupted", "interrupted", detail)], "outcome"
                )
            return
        verdict = await self._guard.evaluate(
            record, self._context(record, self._dry_run_for(record.action))
        )
        if verdict.kind == "allow":
            log.info("remediations: resuming %s after %s stopped; re-checked", record.key, previous)
            result = await self._execute(record, verdict)
            if result is not None:
                await self._announce([result], "outcome")
            return
        detail = f"{previous} stopped during the action; re-checked: {verdict.detail}"
        done = await self.ledger.transition(
            record.key, {"started"}, state="interrupted", reason=_reason(verdict), detail=detail
        )
        if done is not None:
            await self._announce(
                [self._decided(done, verdict, "interrupted", _reason(verdict), detail)], "outcome"
            )

    async def _revert(self, entry: ActiveEntry, record: ExecutionRecord | None, why: str) -> None:
        action = self.actions.get(entry.action)
        if record is None or action is None:
            log.error(
                "remediations: active %s (%s on %s) has no record or action; dropped",
                entry.record,
                entry.action,
                entry.target,
            )
            await self.ledger.disarm(entry.record)
            return
        # Reverting restores a safety mechanism, so neither the kill switch nor a
        # maintenance window holds it back.
        alert = record.alert()
        try:
            plan = action.plan(alert)
            outcome = await action.revert(self._context(record, dry_run=False), alert, plan)
        except Exception as error:
            if entry.record not in self._revert_failures:
                self._revert_failures.add(entry.record)
                detail = f"revert failed ({why}), retrying: {type(error).__name__}: {error}"
                await self._announce(
                    [self._decided(record, None, "revert-failed", "error", detail)], "outcome"
                )
            return
        self._revert_failures.discard(entry.record)
        await self.ledger.disarm(entry.record)
        done = await self.ledger.transition(
            record.key,
            {"active", "started", "failed"},
            state="reverted",
            reason="ttl" if why == "TTL reached" else "resolved",
            detail=f"reverted ({why}): {outcome.summary}",
        )
        await self._announce(
            [
                self._decided(
                    done or record, None, "reverted", "ok", f"reverted ({why}): {outcome.summary}"
                )
            ],
            "outcome",
        )

    # -- audit -------------------------------------------------------------------------

    def _decided(
        self,
        record: ExecutionRecord,
        verdict: Verdict | None,
        outcome: str,
        reason: str,
        text: str,
        plan: Plan | None = None,
    ) -> _Decision:
        """Count and log one decision (the Event and the message follow in _announce)."""
        self.decisions.labels(record.action, outcome, reason).inc()
        get_logger(
            __name__,
            action=record.action,
            alert=record.alertname,
            fingerprint=record.fingerprint,
            record=record.key,
            outcome=outcome,
            reason=reason,
            target=record.target,
        ).info("remediation decision: %s %s (%s): %s", record.action, outcome, reason, text)
        if verdict is None and plan is not None:
            verdict = Verdict("allow", reason, text, plan=plan)
        return _Decision(record, verdict, outcome, text)

    async def _announce(self, decisions: list[_Decision], stage: str) -> None:
        if not decisions:
            return
        for decision in decisions:
            if decision.outcome != "planned":
                await self._event(decision)
        self.notifier.post(_message(decisions, stage, self.config.dry_run))

    async def _event(self, decision: _Decision) -> None:
        """A Kubernetes Event on the object acted on, or on the records ConfigMap."""
        from kubernetes_asyncio.client import CoreV1Api

        core: Any = CoreV1Api(self._api)  # plain-dict bodies, serialised as they are
        record = decision.record
        plan = decision.verdict.plan if decision.verdict else None
        ref = plan.involved_object if plan else None
        namespace = self.remediations.namespace
        involved = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": self.ledger.records_map.name,
            "namespace": namespace,
        }
        if ref is not None:
            involved = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name}
            if ref.namespace:
                involved["namespace"] = namespace = ref.namespace
            if ref.uid:
                involved["uid"] = ref.uid
        moment = datetime.datetime.fromtimestamp(self.clock.time(), datetime.UTC)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        reason = "Remediation" + "".join(p.capitalize() for p in decision.outcome.split("-"))
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{involved['name']}.{secrets.token_hex(8)}",
                "namespace": namespace,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": f"{record.action} for {record.alertname} ({record.key}): {decision.text}"[
                :1024
            ],
            "type": "Normal"
            if decision.outcome in ("executed", "dry-run", "reverted")
            else "Warning",
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": self.identity[:128],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await kube_call(
                f"create event in {namespace}",
                core.create_namespaced_event(
                    namespace, body, _request_timeout=self.remediations.api_timeout_seconds
                ),
            )
        except KubeBallastError as error:
            # The audit trail's other two legs (the record and the log line) stand.
            log.warning("remediations: event for %s not recorded: %s", record.key, error)

    # -- HTTP: records and approvals ---------------------------------------------------

    async def records_handler(self, request: web.Request) -> web.Response:
        """GET /records[?limit=N]: the most recent execution records, newest first.

        Mount behind the receiver's authentication: records carry alert labels."""
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "100"))))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer") from None
        try:
            records = await self.ledger.records()
        except KubeBallastError as error:
            raise web.HTTPServiceUnavailable(text=f"ledger unavailable: {error}") from None
        newest = sorted(records.values(), key=lambda r: (r.updated_at, r.key), reverse=True)
        return web.json_response(
            {"records": [dataclasses.asdict(r) for r in newest[:limit]], "leader": self.is_leader()}
        )

    async def approval_handler(self, request: web.Request) -> web.Response:
        """POST /approvals/{id}: release a plan waiting for approval.

        Mount behind the receiver's authentication. The approver's name comes from an
        optional JSON body ``{"by": "..."}`` and is recorded as ``http:<name>``."""
        approval_id = request.match_info["id"]
        by = "http"
        if request.can_read_body:
            with contextlib.suppress(ValueError):
                body = await request.json()
                if isinstance(body, Mapping) and isinstance(body.get("by"), str):
                    by = f"http:{body['by']}"
        try:
            record = await self.approve(approval_id, by)
        except ApprovalError as error:
            status = 404 if str(error).startswith("no plan") else 409
            return web.json_response({"error": str(error)}, status=status)
        except KubeBallastError as error:
            raise web.HTTPServiceUnavailable(text=f"ledger unavailable: {error}") from None
        return web.json_response({"approved": approval_id, "record": record.key, "by": by})

    def add_routes(self, app: web.Application) -> None:
        """Add GET /records and POST /approvals/{id} to ``app`` (behind its auth)."""
        app.router.add_get("/records", self.records_handler)
        app.router.add_post("/approvals/{id}", self.approval_handler)

    async def approve(self, approval_id: str, by: str) -> ExecutionRecord:
        record = await self.ledger.approve(approval_id, by)
        log.info("remediations: %s approved %s (%s)", by, approval_id, record.key)
        self._wake.set()
        return record


def _utc(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%H:%M:%SZ")


def _by_group(records: Iterable[ExecutionRecord]) -> dict[str, list[ExecutionRecord]]:
    groups: dict[str, list[ExecutionRecord]] = defaultdict(list)
    for record in records:
        groups[record.group_key].append(record)
    return groups


def _reason(verdict: Verdict) -> str:
    return verdict.reason if verdict.kind == "refuse" else verdict.kind


def _outcome_text(outcome: Outcome) -> str:
    if not outcome.details:
        return outcome.summary
    details = ", ".join(f"{k}={v}" for k, v in sorted(outcome.details.items()))
    return f"{outcome.summary} ({details})"


_KIND_OF_OUTCOME = {
    "executed": "success",
    "reverted": "success",
    "dry-run": "info",
    "planned": "info",
    "awaiting-approval": "warning",
    "refused": "warning",
    "interrupted": "warning",
    "failed": "failure",
    "revert-failed": "failure",
}
_SEVERITY = ("info", "success", "warning", "failure")


def _message(decisions: list[_Decision], stage: str, dry_run: bool) -> Message:
    """One chat message for one group's decisions in one pass."""
    first = decisions[0].record
    names = sorted({d.record.alertname or "alert" for d in decisions})
    title = f"[kube-ballast] {', '.join(names)}: {'plan' if stage == 'plan' else 'outcome'}"
    lines = [
        f"**{'Plan' if stage == 'plan' else 'Outcome'}** for alert group `{first.group_key}`"
        + (" (receiver in dry-run mode)" if dry_run else ""),
        "",
    ]
    runbooks: dict[str, str] = {}
    for d in decisions:
        r = d.record
        target = d.verdict.plan.target if d.verdict and d.verdict.plan else r.target
        line = f"- `{r.action}` on `{target or r.fingerprint}` ({r.alertname}): **{d.outcome}**"
        if d.outcome == "refused":
            line += f" [{d.verdict.reason if d.verdict else r.reason}]"
        line += f": {d.text}"
        if d.outcome == "awaiting-approval":
            expires = datetime.datetime.fromtimestamp(r.approval_expires_at, datetime.UTC)
            line += (
                f". Approve with `kube-ballast remediations approve {r.approval_id}` or "
                f"`POST /approvals/{r.approval_id}` before {expires:%Y-%m-%d %H:%M} UTC"
            )
        lines.append(line)
        if r.annotations.get("runbook_url"):
            runbooks[r.alertname] = r.annotations["runbook_url"]
    if runbooks:
        lines.append("")
        lines.extend(f"Runbook ({name}): {url}" for name, url in sorted(runbooks.items()))
    kind = max((_KIND_OF_OUTCOME.get(d.outcome, "info") for d in decisions), key=_SEVERITY.index)
    return Message(title=title, body="\n".join(lines), kind=kind)  # type: ignore[arg-type]
