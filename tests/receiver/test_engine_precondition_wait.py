"""A precondition that is false *for now* keeps its record waiting, re-checked at a
bounded pace, until it holds, the wait is over, or the alert resolves.

Why it matters: KubeApiserverCongested can reach the receiver a moment before the
heartbeat wave the eviction pause needs as evidence; a refusal then would be final for
that firing. The action is a fake at our boundary; time is the engine's FakeClock.
"""

# ruff: noqa: F811

from __future__ import annotations

from typing import Any

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
    records_of,
    sim,
    urls_file,
    wait_state,
)

from kubeballast.core.config import ActionConfig
from kubeballast.remediations.actions import Precondition

WAIT = 240.0
RECHECK = 10.0
LIVE = ActionConfig(
    name="fake",
    alerts=("FakeAlert", "OtherAlert"),
    dry_run=False,
    cooldown_seconds=0.0,
    max_per_hour=10,
    precondition_wait_seconds=WAIT,
    precondition_recheck_seconds=RECHECK,
)
NOT_YET = Precondition(False, "the wave spans 1 zone", retry=True)
HOLDS = Precondition(True, "congested and a wave over 3 zones")


async def _waiting(
    engines: EngineFactory, api: Any, clock: FakeClock, fake: FakeAction, **config_args: Any
) -> tuple[Any, Any]:
    config = make_config(actions=[LIVE], **config_args)
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))

    async def waiting() -> bool:
        records = await records_of(api, config, clock)
        return any(r.reason == "precondition-wait" for r in records.values())

    await eventually(waiting, what="the record waiting for its precondition")
    return engine, config


async def _another_pass(engine: Any, api: Any, config: Any, clock: FakeClock, n: int) -> None:
    """Make the leader run at least one more pass: an unrelated alert it must refuse."""
    other = make_alert(f"fp-other-{n}", name="OtherAlert", target=None)
    await engine.accept(make_group(other, key=f'{{}}:{{alertname="OtherAlert{n}"}}'))
    await wait_state(api, config, clock, "refused", count=n)


async def test_waits_then_runs_when_the_precondition_holds(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    fake = FakeAction(check_results=[NOT_YET, NOT_YET, HOLDS])
    engine, config = await _waiting(engines, api, clock, fake)
    [record] = [r for r in (await records_of(api, config, clock)).values()]
    assert record.state == "pending"
    assert "waiting for the precondition until" in record.detail
    assert "the wave spans 1 zone" in record.detail

    # Passes before the recheck is due do not check again (each check may read the
    # exporter's page or etcd): the unrelated alert proves passes happened.
    await _another_pass(engine, api, config, clock, 1)
    await _another_pass(engine, api, config, clock, 2)
    assert fake.count("check") == 1

    clock.advance(RECHECK)
    await eventually(lambda: fake.count("check") >= 2, what="the second check")
    clock.advance(RECHECK)
    [done] = await wait_state(api, config, clock, "succeeded")
    assert done.key == record.key
    assert fake.count("check") == 3
    assert fake.count("execute") == 1
    assert counter_value(engine, "fake", "refused", "precondition-false") == 0


async def test_refused_when_the_wait_is_over(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    fake = FakeAction(check_results=[NOT_YET], forbid_execute=True)
    engine, config = await _waiting(engines, api, clock, fake)
    clock.advance(WAIT)
    [record] = await wait_state(api, config, clock, "refused")
    assert record.reason == "precondition-false"
    assert record.detail == "the wave spans 1 zone"
    assert counter_value(engine, "fake", "refused", "precondition-false") == 1
    assert fake.unexpected == []


async def test_refused_when_the_alert_resolves_while_waiting(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    fake = FakeAction(check_results=[NOT_YET], forbid_execute=True)
    engine, config = await _waiting(engines, api, clock, fake)
    await engine.accept(make_group(make_alert("fp-1", status="resolved")))
    clock.advance(RECHECK)
    [record] = await wait_state(api, config, clock, "refused")
    assert record.reason == "alert-resolved"
    assert fake.unexpected == []


async def test_a_final_false_precondition_does_not_wait(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    fake = FakeAction(
        check_results=[Precondition(False, "the policy is not installed")], forbid_execute=True
    )
    config = make_config(actions=[LIVE])
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))
    [record] = await wait_state(api, config, clock, "refused")
    assert record.reason == "precondition-false"
    assert record.detail == "the policy is not installed"


async def test_no_wait_configured_refuses_at_once(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    fake = FakeAction(check_results=[NOT_YET], forbid_execute=True)
    no_wait = ActionConfig(**{**LIVE.__dict__, "precondition_wait_seconds": 0.0})
    config = make_config(actions=[no_wait])
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))
    [record] = await wait_state(api, config, clock, "refused")
    assert record.reason == "precondition-false"
    assert fake.count("check") == 1


async def test_dry_run_waits_too_and_then_says_it_would_have_run(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    fake = FakeAction(check_results=[NOT_YET, HOLDS], forbid_execute=True)
    _engine, config = await _waiting(engines, api, clock, fake, dry_run=True)
    clock.advance(RECHECK)
    [record] = await wait_state(api, config, clock, "dry-run")
    assert record.reason == "dry-run-global"
    assert fake.unexpected == []
