"""Every guard of the kernel refuses when it should; the refusal is recorded with its
reason, counted, and told to chat. The action behind them is a fake that fails the
test if it is executed."""

# The fixtures come from test_engine_support (tests/receiver/conftest.py belongs to the
# webhook's tests); importing them by name is what pytest needs, and F811 is ruff
# mistaking each use as a parameter for a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from test_engine_support import (  # noqa: F401  (fixtures are imported by name)
    ChatSink,
    EngineFactory,
    FakeAction,
    FakeClock,
    api,
    chat,
    clock,
    counter_value,
    engines,
    eventually,
    kubeconfig,
    make_alert,
    make_config,
    make_group,
    sim,
    urls_file,
    wait_state,
)

from kubeballast.core.config import ActionConfig, MaintenanceWindowConfig
from kubeballast.remediations.actions import Plan, Precondition
from kubeballast.remediations.guard import blast_radius_refusal, maintenance_window_at
from kubeballast.remediations.ledger import Ledger

LIVE = ActionConfig(name="fake", alerts=("FakeAlert",), dry_run=False, cooldown_seconds=0.0)


def _with(**changes: Any) -> ActionConfig:
    values = {**LIVE.__dict__, **changes}
    return ActionConfig(**values)


async def _refusal(
    engines: EngineFactory,
    api: Any,
    clock: FakeClock,
    chat: ChatSink,
    urls_file: Path,
    fake: FakeAction,
    *,
    state: str = "refused",
    **config_args: Any,
) -> tuple[Any, Any]:
    config = make_config(urls_file=urls_file, **config_args)
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))
    [record] = await wait_state(api, config, clock, state)
    await eventually(lambda: len(chat.messages) >= 1, what="a chat message")
    assert fake.unexpected == []
    assert fake.count("execute") == 0
    return engine, record


@pytest.mark.parametrize(
    ("config_args", "fake_args", "reason", "detail"),
    [
        ({"enabled": ()}, {}, "not-enabled", "not in enabled_actions"),
        (
            {},
            {"check_results": [Precondition(False, "member-1 is healthy")]},
            "precondition-false",
            "member-1 is healthy",
        ),
        (
            {},
            {"check_results": [ConnectionError("etcd did not answer")]},
            "precondition-error",
            "etcd did not answer",
        ),
        ({"actions": [_with(max_per_hour=0)]}, {}, "budget-action", "0 of 0"),
        (
            {"max_actions_per_hour": 0},
            {},
            "budget-global",
            "used in the last hour",
        ),
        (
            {
                "max_node_affecting_per_hour": 0,
                "actions": [_with(max_nodes=5, max_cluster_fraction=1.0)],
            },
            {"node_affecting": True, "nodes": 1, "cluster_nodes": 10},
            "budget-node-affecting",
            "node-affecting",
        ),
        ({}, {"nodes": 2, "cluster_nodes": 100}, "blast-radius", "touches 2 nodes"),
        (
            {"actions": [_with(max_nodes=10, max_cluster_fraction=0.05)]},
            {"nodes": 1, "cluster_nodes": 4},
            "blast-radius",
            "25.0% of the cluster",
        ),
        ({}, {"nodes": 1, "cluster_nodes": None}, "blast-radius", "size is unknown"),
        ({}, {"target_label": "no-such-label"}, "plan-invalid", "no-such-label"),
        (
            {
                "maintenance_windows": (
                    MaintenanceWindowConfig(
                        name="always", start="00:00", duration_minutes=7 * 24 * 60
                    ),
                )
            },
            {},
            "maintenance-window",
            "always",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and "-" in value else None,
)
async def test_guard_refuses(
    engines: EngineFactory,
    api: Any,
    clock: FakeClock,
    chat: ChatSink,
    urls_file: Path,
    config_args: dict[str, Any],
    fake_args: dict[str, Any],
    reason: str,
    detail: str,
) -> None:
    config_args.setdefault("actions", [LIVE])
    fake = FakeAction(forbid_execute=True, **fake_args)
    engine, record = await _refusal(engines, api, clock, chat, urls_file, fake, **config_args)
    assert record.reason == reason
    assert detail in record.detail
    assert counter_value(engine, "fake", "refused", reason) == 1
    [message] = chat.messages
    assert f"[{reason}]" in message["message"]
    assert "https://runbooks.example/fake" in message["message"]
    assert message["type"] == "warning"


async def test_cooldown_refuses_a_second_firing_on_the_same_target(
    engines: EngineFactory, api: Any, clock: FakeClock, chat: ChatSink, urls_file: Path
) -> None:
    config = make_config(urls_file=urls_file, actions=[_with(cooldown_seconds=600.0)])
    fake = FakeAction()
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))
    await wait_state(api, config, clock, "succeeded")
    again = datetime.datetime(2025, 1, 2, tzinfo=datetime.UTC)
    await engine.accept(make_group(make_alert("fp-1", starts_at=again)))
    [record] = await wait_state(api, config, clock, "refused")
    assert record.reason == "cooldown"
    assert fake.count("execute") == 1
    assert counter_value(engine, "fake", "refused", "cooldown") == 1
    await eventually(lambda: any("[cooldown]" in m["message"] for m in chat.messages))


@pytest.mark.parametrize(
    ("global_dry_run", "action_dry_run", "reason"),
    [(True, False, "dry-run-global"), (False, True, "dry-run-action")],
)
async def test_dry_run_decides_and_records_but_does_not_act(
    engines: EngineFactory,
    api: Any,
    clock: FakeClock,
    chat: ChatSink,
    urls_file: Path,
    global_dry_run: bool,
    action_dry_run: bool,
    reason: str,
) -> None:
    fake = FakeAction(forbid_execute=True)
    engine, record = await _refusal(
        engines,
        api,
        clock,
        chat,
        urls_file,
        fake,
        state="dry-run",
        dry_run=global_dry_run,
        actions=[_with(dry_run=action_dry_run)],
    )
    assert record.reason == reason
    assert record.dry_run
    assert fake.count("check") == 1  # the precondition is still checked live
    assert counter_value(engine, "fake", "dry-run", reason) == 1
    assert "dry-run" in chat.messages[0]["message"]


async def test_kill_switch_refuses_and_resume_lets_actions_run(
    engines: EngineFactory, api: Any, clock: FakeClock, chat: ChatSink, urls_file: Path
) -> None:
    config = make_config(urls_file=urls_file, actions=[LIVE])
    ledger = Ledger(api, config.remediations, clock)
    await ledger.set_paused(True, by="alice", reason="incident 42")
    fake = FakeAction(forbid_execute=True)
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))
    [record] = await wait_state(api, config, clock, "refused")
    assert record.reason == "paused"
    assert "alice" in record.detail
    assert "incident 42" in record.detail
    assert fake.count("check") == 0  # nothing is even looked at while paused
    assert counter_value(engine, "fake", "refused", "paused") == 1
    await eventually(lambda: any("[paused]" in m["message"] for m in chat.messages))

    await ledger.set_paused(False, by="alice")
    fake.forbid_execute = False
    await engine.accept(make_group(make_alert("fp-2")))
    await wait_state(api, config, clock, "succeeded")


async def test_approval_missing_then_expired_is_refused(
    engines: EngineFactory, api: Any, clock: FakeClock, chat: ChatSink, urls_file: Path
) -> None:
    config = make_config(
        urls_file=urls_file, actions=[_with(require_approval=True)], approval_ttl_seconds=600.0
    )
    fake = FakeAction(forbid_execute=True)
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))
    [waiting] = await wait_state(api, config, clock, "awaiting-approval")
    assert waiting.approval_id
    await eventually(lambda: len(chat.messages) == 1)
    assert f"remediations approve {waiting.approval_id}" in chat.messages[0]["message"]
    assert f"/approvals/{waiting.approval_id}" in chat.messages[0]["message"]

    clock.advance(601)
    [refused] = await wait_state(api, config, clock, "refused")
    assert refused.reason == "approval-expired"
    assert counter_value(engine, "fake", "refused", "approval-expired") == 1
    await eventually(lambda: any("[approval-expired]" in m["message"] for m in chat.messages))
    # Too late now.
    from kubeballast.remediations.ledger import ApprovalError

    with pytest.raises(ApprovalError, match="already decided"):
        await engine.approve(waiting.approval_id, "bob")


async def test_approval_given_in_time_releases_the_action(
    engines: EngineFactory, api: Any, clock: FakeClock, chat: ChatSink, urls_file: Path
) -> None:
    config = make_config(urls_file=urls_file, actions=[_with(require_approval=True)])
    fake = FakeAction()
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))
    [waiting] = await wait_state(api, config, clock, "awaiting-approval")
    assert fake.count("execute") == 0
    # Approved from elsewhere (the CLI writes the ledger directly).
    await Ledger(api, config.remediations, clock).approve(waiting.approval_id, "cli:bob")
    [done] = await wait_state(api, config, clock, "succeeded")
    assert done.approved_by == "cli:bob"
    assert fake.count("execute") == 1
    assert fake.count("check") == 2  # re-checked live after the approval


def test_maintenance_windows_recur_and_cross_midnight() -> None:
    window = MaintenanceWindowConfig(
        name="night", days=("tue",), start="23:00", duration_minutes=120
    )
    at = lambda text: datetime.datetime.fromisoformat(text).timestamp()  # noqa: E731
    assert maintenance_window_at([window], at("2025-01-07T23:30:00+00:00")) is window  # Tue
    assert maintenance_window_at([window], at("2025-01-08T00:59:00+00:00")) is window  # Wed
    assert maintenance_window_at([window], at("2025-01-08T01:00:00+00:00")) is None
    assert maintenance_window_at([window], at("2025-01-08T23:30:00+00:00")) is None  # Wed


def test_blast_radius_limits() -> None:
    limits = ActionConfig(
        name="x", max_nodes=2, max_pods=10, max_members=1, max_cluster_fraction=0.5
    )
    assert blast_radius_refusal(Plan("s", "t"), limits) is None
    assert blast_radius_refusal(Plan("s", "t", nodes=2, cluster_nodes=4), limits) is None
    assert "11 pods" in (blast_radius_refusal(Plan("s", "t", pods=11), limits) or "")
    assert "2 etcd members" in (blast_radius_refusal(Plan("s", "t", members=2), limits) or "")
    assert "unknown" in (blast_radius_refusal(Plan("s", "t", nodes=1), limits) or "")
