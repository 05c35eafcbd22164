"""The ledger and the Lease on their own, over the simulator: optimistic concurrency
loses no write, records stay bounded, exactly one elector leads, and the HTTP routes
for records and approvals."""

# The fixtures come from test_engine_support (tests/receiver/conftest.py belongs to the
# webhook's tests); importing them by name is what pytest needs, and F811 is ruff
# mistaking each use as a parameter for a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from test_engine_support import (  # noqa: F401  (fixtures are imported by name)
    NAMESPACE,
    EngineFactory,
    FakeAction,
    FakeClock,
    api,
    clock,
    engines,
    eventually,
    kubeconfig,
    make_alert,
    make_config,
    make_group,
    sim,
    wait_state,
)

from kubeballast.core.config import ActionConfig, LeaderElectionConfig
from kubeballast.remediations.actions import ActionRegistry
from kubeballast.remediations.leader import LeaderElector
from kubeballast.remediations.ledger import ExecutionRecord, Ledger


async def test_concurrent_writers_lose_no_record(api: Any, clock: FakeClock) -> None:
    config = make_config()
    ledgers = [Ledger(api, config.remediations, clock) for _ in range(4)]
    records = [
        ExecutionRecord.new("fake", make_alert(f"fp-{i}"), "group", clock.time()) for i in range(20)
    ]
    await asyncio.gather(
        *(ledgers[i % 4].record_intake([record], []) for i, record in enumerate(records))
    )
    stored = await ledgers[0].records()
    assert sorted(stored) == sorted(r.key for r in records)


async def test_finished_records_are_pruned_by_count_and_age(api: Any, clock: FakeClock) -> None:
    config = make_config(max_records=10, record_retention_seconds=3600.0)
    ledger = Ledger(api, config.remediations, clock)
    first = [
        ExecutionRecord.new("fake", make_alert(f"old-{i}"), "g", clock.time()) for i in range(8)
    ]
    await ledger.record_intake(first, [])
    for record in first[:6]:
        await ledger.transition(record.key, {"pending"}, state="succeeded")
    clock.advance(10)
    newer = [
        ExecutionRecord.new("fake", make_alert(f"new-{i}"), "g", clock.time()) for i in range(6)
    ]
    await ledger.record_intake(newer, [])
    stored = await ledger.records()
    # 14 records, 10 allowed: the 4 oldest finished ones went; open ones never do.
    assert len(stored) == 10
    assert {r.key for r in first[6:]} <= set(stored)
    clock.advance(3600)
    await ledger.record_intake(
        [ExecutionRecord.new("fake", make_alert("latest"), "g", clock.time())], []
    )
    assert all(r.open for r in (await ledger.records()).values())


async def test_exactly_one_elector_leads_and_release_hands_over(api: Any, clock: FakeClock) -> None:
    config = LeaderElectionConfig(
        lease_name="test-lease",
        lease_duration_seconds=1.0,
        renew_deadline_seconds=0.8,
        retry_period_seconds=0.1,
    )
    electors = [LeaderElector(api, NAMESPACE, config, clock=clock) for _ in range(3)]
    tasks = [asyncio.create_task(e.run()) for e in electors]
    try:
        await eventually(lambda: sum(e.is_leader() for e in electors) == 1, what="one leader")
        [leader] = [e for e in electors if e.is_leader()]
        for _ in range(5):  # and it stays one for a while
            assert sum(e.is_leader() for e in electors) <= 1
            await asyncio.sleep(0.1)
        index = electors.index(leader)
        tasks[index].cancel()
        await asyncio.gather(tasks[index], return_exceptions=True)
        await leader.release()
        await eventually(
            lambda: sum(e.is_leader() for e in electors if e is not leader) == 1,
            what="a follower takes over",
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_records_and_approval_routes(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    config = make_config(
        actions=[
            ActionConfig(
                name="fake",
                alerts=("FakeAlert",),
                dry_run=False,
                cooldown_seconds=0.0,
                require_approval=True,
            )
        ]
    )
    engine = await engines(config, [FakeAction()])
    app = web.Application()
    engine.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        await engine.accept(make_group(make_alert("fp-1")))
        [waiting] = await wait_state(api, config, clock, "awaiting-approval")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/records?limit=5") as response:
                assert response.status == 200
                listing = await response.json()
            assert [r["key"] for r in listing["records"]] == [waiting.key]
            assert listing["records"][0]["state"] == "awaiting-approval"
            async with session.post(f"{base}/approvals/nope") as response:
                assert response.status == 404
            async with session.post(
                f"{base}/approvals/{waiting.approval_id}", data=json.dumps({"by": "carol"})
            ) as response:
                assert response.status == 200
                assert (await response.json())["by"] == "http:carol"
            async with session.post(f"{base}/approvals/{waiting.approval_id}") as response:
                assert response.status == 409  # already decided
        [done] = await wait_state(api, config, clock, "succeeded")
        assert done.approved_by == "http:carol"
    finally:
        await runner.cleanup()


def test_registry_refuses_duplicate_names() -> None:
    registry = ActionRegistry([FakeAction()])
    with pytest.raises(ValueError, match="twice"):
        registry.register(FakeAction())


def test_record_keys_are_stable_across_replicas() -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    moment = datetime.datetime(2025, 1, 1, 12, tzinfo=plus_two)
    a = ExecutionRecord.new("fake", make_alert("fp", starts_at=moment), "g", 0.0)
    b = ExecutionRecord.new(
        "fake", make_alert("fp", starts_at=moment.astimezone(datetime.UTC)), "other", 5.0
    )
    assert a.key == b.key
    assert a.key != ExecutionRecord.new("notify", make_alert("fp", starts_at=moment), "g", 0.0).key
