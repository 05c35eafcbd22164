"""The engine end to end over the simulator: duplicates, failover, restarts, expiry.

Each test runs one or more engines (replicas, each with its own API client) against
one simulated apiserver, so the ledger, the Lease and their optimistic concurrency are
the real HTTP ones.
"""

# The fixtures come from test_engine_support (tests/receiver/conftest.py belongs to the
# webhook's tests); importing them by name is what pytest needs, and F811 is ruff
# mistaking each use as a parameter for a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from test_engine_support import (  # noqa: F401  (fixtures are imported by name)
    NAMESPACE,
    EngineFactory,
    FakeAction,
    FakeClock,
    api,
    chat,
    clock,
    engines,
    eventually,
    kubeconfig,
    make_alert,
    make_config,
    make_group,
    records_of,
    sim,
    urls_file,
    wait_state,
)

from kubeballast.core.config import ActionConfig
from kubeballast.remediations.actions import Precondition
from kubeballast.remediations.contract import RecordError
from kubeballast.remediations.ledger import Ledger
from kubeballast.simulator.server import ApiServer


async def test_duplicate_deliveries_execute_once(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    """An HA Alertmanager pair delivers the group to two replicas at once, and retries
    it: one record, one execution."""
    config = make_config()
    fake = FakeAction()
    first = await engines(config, [fake])
    second = await engines(config, [fake])
    group = make_group(make_alert("fp-1"), make_alert("fp-2", target="member-2"))

    await asyncio.gather(first.accept(group), second.accept(group), first.accept(group))
    await second.accept(group)  # a retry after the first one's answer got lost

    done = await wait_state(api, config, clock, "succeeded", count=2)
    assert sorted(r.fingerprint for r in done) == ["fp-1", "fp-2"]
    assert len(await records_of(api, config, clock)) == 2
    # Still once each after more passes have run (a late duplicate changes nothing).
    await second.accept(group)
    await eventually(lambda: first.is_leader() or second.is_leader(), what="a leader")
    assert fake.count("execute") == 2
    assert sorted(fp for m, fp in fake.calls if m == "execute") == ["fp-1", "fp-2"]

    # Audited on the object the plan named, one Event per execution.
    from kubernetes_asyncio.client import CoreV1Api

    events = await CoreV1Api(api).list_namespaced_event(NAMESPACE)
    executed = [e for e in events.items if e.reason == "RemediationExecuted"]
    assert len(executed) == 2
    assert {e.involved_object.name for e in executed} == {"target-object"}
    assert all("fixed member-" in e.message for e in executed)


async def test_leader_killed_mid_action_is_taken_over_without_second_execution(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    config = make_config()
    # The first check passes; once the dead leader's action has had its effect, the
    # re-check finds nothing left to fix.
    fake = FakeAction(
        gate=asyncio.Event(),
        check_results=[
            Precondition(True, "member-1 is fragmented"),
            Precondition(False, "member-1 is no longer fragmented"),
        ],
    )
    leader = await engines(config, [fake])
    await eventually(leader.is_leader, what="the first engine leads")
    follower = await engines(config, [fake])
    await leader.accept(make_group(make_alert("fp-1")))
    await fake.executing.wait()
    assert not follower.is_leader()

    await leader.abort()  # as SIGKILL: the Lease is not released, the record stays started
    [record] = (await records_of(api, config, clock)).values()
    assert record.state == "started"
    assert record.holder == leader.identity

    await eventually(follower.is_leader, what="the follower takes over")
    [done] = await wait_state(api, config, clock, "interrupted")
    assert done.reason == "precondition-false"
    assert "no longer fragmented" in done.detail
    assert fake.count("execute") == 1
    assert fake.count("check") == 2  # re-verified before deciding


async def test_takeover_re_executes_an_idempotent_action_only_after_re_checking(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    config = make_config()
    gate = asyncio.Event()
    fake = FakeAction(gate=gate)
    leader = await engines(config, [fake])
    await eventually(leader.is_leader, what="the first engine leads")
    follower = await engines(config, [fake])
    await leader.accept(make_group(make_alert("fp-1")))
    await fake.executing.wait()
    await leader.abort()
    gate.set()  # the new leader's execution completes

    [done] = await wait_state(api, config, clock, "succeeded")
    assert done.holder == follower.identity
    assert fake.calls == [
        ("check", "fp-1"),
        ("execute", "fp-1"),
        ("check", "fp-1"),
        ("execute", "fp-1"),
    ]


async def test_non_idempotent_action_left_started_is_marked_interrupted(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    config = make_config()
    fake = FakeAction(gate=asyncio.Event(), idempotent=False)
    leader = await engines(config, [fake])
    await eventually(leader.is_leader, what="the first engine leads")
    follower = await engines(config, [fake])
    await leader.accept(make_group(make_alert("fp-1")))
    await fake.executing.wait()
    await leader.abort()

    [done] = await wait_state(api, config, clock, "interrupted")
    assert done.reason == "interrupted"
    assert "not idempotent" in done.detail
    assert fake.count("execute") == 1
    assert fake.count("check") == 1  # nothing re-run: the person decides
    assert follower.is_leader()


async def test_restart_keeps_budgets_and_cooldowns(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    limits = ActionConfig(
        name="fake", alerts=("FakeAlert",), dry_run=False, max_per_hour=2, cooldown_seconds=600.0
    )
    config = make_config(actions=[limits])
    fake = FakeAction()
    first = await engines(config, [fake])
    await first.accept(make_group(make_alert("fp-1", target="member-1")))
    await wait_state(api, config, clock, "succeeded")
    await first.stop()

    fake_after_restart = FakeAction(forbid_execute=True)
    second = await engines(config, [fake_after_restart])
    # Same target, a new firing: the cooldown survived the restart.
    later = datetime.datetime(2025, 1, 1, 13, 0, tzinfo=datetime.UTC)
    await second.accept(make_group(make_alert("fp-1", target="member-1", starts_at=later)))
    [refused] = await wait_state(api, config, clock, "refused")
    assert refused.reason == "cooldown"

    # Another target: allowed by the cooldown, and the budget has one left.
    fake_after_restart.forbid_execute = False
    await second.accept(make_group(make_alert("fp-2", target="member-2")))
    await wait_state(api, config, clock, "succeeded", count=2)
    # The third in the hour is over the budget of 2.
    await second.accept(make_group(make_alert("fp-3", target="member-3")))
    await wait_state(api, config, clock, "refused", count=2)
    reasons = sorted(r.reason for r in await _refused(api, config, clock))
    assert reasons == ["budget-action", "cooldown"]
    assert fake_after_restart.count("execute") == 1
    await eventually(
        lambda: (
            second.registry.get_sample_value(
                "kubeballast_remediation_budget_remaining", {"budget": "action.fake"}
            )
            == 0
        ),
        what="the budget gauge shows it spent",
    )

    # An hour later (wall clock, persisted) the budget is back.
    clock.advance(3601)
    await second.accept(make_group(make_alert("fp-4", target="member-4")))
    await wait_state(api, config, clock, "succeeded", count=3)


async def _refused(api: Any, config: Any, clock: FakeClock) -> list[Any]:
    return [r for r in (await records_of(api, config, clock)).values() if r.state == "refused"]


async def test_reversible_action_is_reverted_at_its_ttl_across_a_restart(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    limits = ActionConfig(
        name="fake", alerts=("FakeAlert",), dry_run=False, cooldown_seconds=0.0, ttl_seconds=900.0
    )
    config = make_config(actions=[limits])
    fake = FakeAction(reversible=True)
    first = await engines(config, [fake])
    await first.accept(make_group(make_alert("fp-1")))
    [active] = await wait_state(api, config, clock, "active")
    assert active.expires_at == pytest.approx(clock.time() + 900.0)
    entries = await Ledger(api, config.remediations, clock).active()
    assert list(entries) == [active.key]
    await first.stop()

    # No resolve ever arrives. Past the TTL a new engine (a new leader) reverts it.
    clock.advance(901)
    restarted = FakeAction(reversible=True, forbid_execute=True)
    await engines(config, [restarted])
    [reverted] = await wait_state(api, config, clock, "reverted")
    assert reverted.reason == "ttl"
    assert restarted.calls == [("revert", "fp-1")]
    assert await Ledger(api, config.remediations, clock).active() == {}


async def test_reversible_action_is_reverted_when_the_alert_resolves(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    limits = ActionConfig(name="fake", alerts=("FakeAlert",), dry_run=False, cooldown_seconds=0.0)
    config = make_config(actions=[limits])
    fake = FakeAction(reversible=True)
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))
    await wait_state(api, config, clock, "active")
    await engine.accept(make_group(make_alert("fp-1", status="resolved")))
    [reverted] = await wait_state(api, config, clock, "reverted")
    assert reverted.reason == "resolved"
    assert fake.count("revert") == 1


async def test_accept_raises_record_error_when_the_api_is_unreachable(
    engines: EngineFactory, sim: ApiServer
) -> None:
    config = make_config(api_timeout_seconds=2.0)
    engine = await engines(config, [FakeAction(forbid_execute=True)])
    await sim.stop()
    with pytest.raises(RecordError):
        await engine.accept(make_group(make_alert("fp-1")))
