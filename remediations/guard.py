"""The guard kernel: every action passes it, and a refusal is a normal outcome.

The kernel turns (record, action, configuration, live state) into a :class:`Verdict`:
*allow*, *refuse* with a bounded reason code, *dry-run*, or *await approval*. It
re-reads whatever it depends on each time (the kill switch, the budgets, the action's
preconditions from their sources), so a verdict reflects the cluster now, not when the
alert fired. Every check that cannot be evaluated refuses: the kill switch that cannot
be read, a budget entry that cannot be parsed, a plan that cannot be made, a
precondition check that raises. A guard that fails open is worse than none, because
people trust it.

The checks run cheapest first, so that an obviously refused action costs no I/O
against a struggling control plane::

    kill switch (live) → enabled list → alert resolved → maintenance window → plan →
    blast radius → budgets and cooldown (peek) → precondition (live) → dry-run →
    approval → allow

"Peek" because the kernel only reads the limits: the engine takes them in one atomic
ledger write right before executing (``Ledger.take_limits``), and a race lost there
becomes a refusal too. Dry-run comes after every other check so that a dry run says
truthfully whether the action *would* have run, and before approval so that nobody is
asked to approve something that will not happen.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from kubeballast.core.config import (
    ActionConfig,
    MaintenanceWindowConfig,
    ReceiverConfig,
)
from kubeballast.core.errors import KubeBallastError
from kubeballast.remediations.actions import (
    Action,
    ActionContext,
    Plan,
    Precondition,
)
from kubeballast.remediations.ledger import Clock, ExecutionRecord, Ledger, Reservation

__all__ = [
    "REFUSAL_REASONS",
    "GuardKernel",
    "Verdict",
    "blast_radius_refusal",
    "maintenance_window_at",
]

log = logging.getLogger(__name__)

VerdictKind = Literal["allow", "refuse", "dry-run", "await-approval"]

REFUSAL_REASONS = (
    "paused",
    "kill-switch-unreadable",
    "unknown-action",
    "not-enabled",
    "alert-resolved",
    "maintenance-window",
    "plan-invalid",
    "blast-radius",
    "limits-unreadable",
    "cooldown",
    "budget-action",
    "budget-global",
    "budget-node-affecting",
    "precondition-false",
    "precondition-error",
    "approval-expired",
    "interrupted",
)
"""Every reason a guard gives: a bounded set, so it can be a metric label."""

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reason: str
    """A code from ``REFUSAL_REASONS``; for dry-run ``dry-run-global``/``dry-run-action``;
    ``ok`` for allow, ``approval-required`` for await-approval."""
    detail: str
    plan: Plan | None = None
    precondition: Precondition | None = None
    reservation: Reservation | None = None


def maintenance_window_at(
    windows: Sequence[MaintenanceWindowConfig], now: float
) -> MaintenanceWindowConfig | None:
    """The window ``now`` (epoch seconds) falls in, if any. Windows are UTC and recur on
    their days; one that starts late in the day runs on past midnight."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    for window in windows:
        hours, minutes = (int(part) for part in window.start.split(":"))
        length = datetime.timedelta(minutes=window.duration_minutes)
        # A window lasts at most a week, so its start is within the last 8 days.
        for days_back in range(8):
            day = moment.date() - datetime.timedelta(days=days_back)
            if window.days and _WEEKDAYS[day.weekday()] not in window.days:
                continue
            start = datetime.datetime(
                day.year, day.month, day.day, hours, minutes, tzinfo=datetime.UTC
            )
            if start <= moment < start + length:
                return window
    return None


def blast_radius_refusal(plan: Plan, limits: ActionConfig) -> str | None:
    """Why ``plan`` touches more than ``limits`` allow, or None."""
    for count, limit, what in (
        (plan.nodes, limits.max_nodes, "nodes"),
        (plan.pods, limits.max_pods, "pods"),
        (plan.members, limits.max_members, "etcd members"),
    ):
        if count > limit:
            return f"touches {count} {what}, the limit is {limit}"
    if plan.nodes > 0:
        if not plan.cluster_nodes or plan.cluster_nodes <= 0:
            # Fail closed: a fraction of an unknown whole cannot be bounded.
            return "touches nodes but the cluster's size is unknown"
        fraction = plan.nodes / plan.cluster_nodes
        if fraction > limits.max_cluster_fraction:
            return (
                f"touches {fraction:.1%} of the cluster's nodes, the limit is "
                f"{limits.max_cluster_fraction:.1%}"
            )
    return None


class GuardKernel:
    """Decides, for one record, whether its action may run now."""

    def __init__(
        self,
        config: ReceiverConfig,
        ledger: Ledger,
        actions: dict[str, Action],
        clock: Clock,
    ) -> None:
        self.config = config
        self.remediations = config.remediations
        self.ledger = ledger
        self.actions = actions
        self.clock = clock
        self._limits = {a.name: a for a in self.remediations.actions}

    def limits_for(self, action: str) -> ActionConfig | None:
        return self._limits.get(action)

    async def evaluate(self, record: ExecutionRecord, ctx: ActionContext) -> Verdict:
        """The verdict for ``record`` now. Never raises for a guard that cannot be
        evaluated: that is a refusal."""
        try:
            paused, why = await self.ledger.paused()
        except KubeBallastError as error:
            return Verdict("refuse", "kill-switch-unreadable", f"kill switch unreadable: {error}")
        if paused:
            return Verdict("refuse", "paused", why)

        action = self.actions.get(record.action)
        limits = self._limits.get(record.action)
        if action is None or limits is None:
            return Verdict("refuse", "unknown-action", f"no action {record.action!r} is configured")
        if record.action not in self.remediations.enabled_actions:
            return Verdict("refuse", "not-enabled", f"{record.action} is not in enabled_actions")
        if record.resolved:
            return Verdict("refuse", "alert-resolved", "the alert resolved before acting")
        window = maintenance_window_at(self.remediations.maintenance_windows, self.clock.time())
        if window is not None:
            return Verdict(
                "refuse", "maintenance-window", f"inside maintenance window {window.name!r}"
            )

        alert = record.alert()
        try:
            plan = action.plan(alert)
        except Exception as error:
            # Deliberately broad: whatever stops the plan, there is no plan to guard.
            return Verdict("refuse", "plan-invalid", f"no plan: {error}")
        too_wide = blast_radius_refusal(plan, limits)
        if too_wide is not None:
            return Verdict("refuse", "blast-radius", too_wide, plan=plan)

        reservation = Reservation(
            record=record.key,
            action=record.action,
            target=plan.target,
            changes_cluster=plan.changes_cluster,
            node_affecting=plan.node_affecting,
            limits=limits,
            max_actions_per_hour=self.remediations.max_actions_per_hour,
            max_node_affecting_per_hour=self.remediations.max_node_affecting_per_hour,
        )
        try:
            over = await self.ledger.check_limits(reservation)
        except KubeBallastError as error:
            return Verdict("refuse", "limits-unreadable", f"budgets unreadable: {error}", plan=plan)
        if over is not None:
            return Verdict("refuse", over[0], over[1], plan=plan)

        try:
            precondition = await action.check(ctx, alert)
        except Exception as error:
            # Deliberately broad, and the one place it is right: a check that cannot
            # tell is a check that did not pass. Fail closed.
            return Verdict(
                "refuse",
                "precondition-error",
                f"precondition could not be checked: {type(error).__name__}: {error}",
                plan=plan,
            )
        if not precondition.ok:
            return Verdict(
                "refuse",
                "precondition-false",
                precondition.reason,
                plan=plan,
                precondition=precondition,
            )

        if self.config.dry_run or limits.dry_run:
            scope = "global" if self.config.dry_run else "action"
            detail = f"dry run ({'receiver.dry_run' if scope == 'global' else 'the action'})"
            if limits.require_approval:
                detail += "; approval would be required"
            return Verdict(
                "dry-run",
                f"dry-run-{scope}",
                detail,
                plan=plan,
                precondition=precondition,
                reservation=reservation,
            )
        if limits.require_approval and not record.approved_by:
            return Verdict(
                "await-approval",
                "approval-required",
                "waiting for approval",
                plan=plan,
                precondition=precondition,
                reservation=reservation,
            )
        return Verdict(
            "allow",
            "ok",
            precondition.reason,
            plan=plan,
            precondition=precondition,
            reservation=reservation,
        )
