"""Chat notifications: one message per alert group, the plan before the outcome, the
runbook link; failures retried and counted, never holding up an action. Chat is a local
HTTP server that apprise's json:// target posts to."""

# The fixtures come from test_engine_support (tests/receiver/conftest.py belongs to the
# webhook's tests); importing them by name is what pytest needs, and F811 is ruff
# mistaking each use as a parameter for a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
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

from kubeballast.core.config import ActionConfig, NotificationsConfig
from kubeballast.remediations.actions import NotifyAction
from kubeballast.remediations.notify import Message, Notifier


async def test_notify_action_sends_one_message_per_group(
    engines: EngineFactory, api: Any, clock: FakeClock, chat: ChatSink, urls_file: Path
) -> None:
    notify = ActionConfig(name="notify", alerts=("*",), dry_run=False, cooldown_seconds=0.0)
    config = make_config(urls_file=urls_file, actions=[notify])
    engine = await engines(config, [NotifyAction()])
    group = make_group(
        make_alert("fp-1", name="EtcdNoSpace", runbook="https://runbooks.example/etcd-nospace"),
        make_alert(
            "fp-2",
            name="EtcdNoSpace",
            target="member-2",
            runbook="https://runbooks.example/etcd-nospace",
        ),
        key='{}:{alertname="EtcdNoSpace"}',
    )
    await engine.accept(group)
    await wait_state(api, config, clock, "succeeded", count=2)
    await eventually(lambda: len(chat.messages) >= 1, what="the group's message")

    # Chat only: nothing to plan ahead, so one message with both alerts' outcomes.
    await engine.accept(group)  # a duplicate delivery adds nothing
    [message] = chat.messages
    assert message["title"] == "[kube-ballast] EtcdNoSpace: outcome"
    body = message["message"]
    assert body.count("`notify` on") == 2
    assert "alert/fp-1" in body
    assert "alert/fp-2" in body
    assert "Runbook (EtcdNoSpace): https://runbooks.example/etcd-nospace" in body
    assert message["type"] == "success"
    assert counter_value(engine, "notify", "executed", "ok") == 2
    # Counted once apprise has its answer, a moment after the server has the message.
    sent = {"outcome": "sent"}
    await eventually(
        lambda: engine.registry.get_sample_value("kubeballast_notifications_total", sent) == 1,
        what="the message counted as sent",
    )


async def test_plan_goes_out_before_a_cluster_changing_action_runs(
    engines: EngineFactory, api: Any, clock: FakeClock, chat: ChatSink, urls_file: Path
) -> None:
    config = make_config(urls_file=urls_file)
    gate = asyncio.Event()
    fake = FakeAction(gate=gate)
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))
    await fake.executing.wait()
    # The action is running: the plan is already out, the outcome not yet.
    await eventually(lambda: len(chat.messages) == 1, what="the plan")
    assert chat.messages[0]["title"].endswith(": plan")
    assert "**planned**: will run: fake fix of member-1" in chat.messages[0]["message"]
    gate.set()
    await eventually(lambda: len(chat.messages) == 2, what="the outcome")
    assert chat.messages[1]["title"].endswith(": outcome")
    assert "**executed**: fixed member-1" in chat.messages[1]["message"]
    assert engine.is_leader()


async def test_failed_deliveries_are_retried_and_counted(chat: ChatSink) -> None:
    registry = CollectorRegistry()

    def count(outcome: str) -> float:
        value = registry.get_sample_value("kubeballast_notifications_total", {"outcome": outcome})
        return value or 0.0

    config = NotificationsConfig(attempts=3, backoff_seconds=0.01, timeout_seconds=5.0)
    notifier = Notifier([chat.url], config, registry=registry)
    task = asyncio.create_task(notifier.run())
    try:
        chat.failures_left[0] = 2
        notifier.post(Message("first", "body one"))
        await eventually(lambda: len(chat.messages) == 1, what="delivered on the third try")
        chat.failures_left[0] = 3
        notifier.post(Message("second", "body two"))
        notifier.post(Message("third", "body three"))
        await eventually(lambda: len(chat.messages) == 2, what="the third message")
        # Counted once apprise has its answer, a moment after the server has the message.
        await eventually(lambda: count("sent") == 2, what="the third counted")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert [m["title"] for m in chat.messages] == ["first", "third"]
    assert count("sent") == 2
    assert count("retried") == 4  # two for the first, two for the second
    assert count("failed") == 1


async def test_a_dead_chat_never_blocks_an_action(
    engines: EngineFactory, api: Any, clock: FakeClock, tmp_path: Path
) -> None:
    urls = tmp_path / "urls"
    urls.write_text("json://127.0.0.1:1/nobody-listens\n")
    config = make_config(urls_file=urls)
    fake = FakeAction()
    engine = await engines(config, [fake])
    await engine.accept(make_group(make_alert("fp-1")))
    await wait_state(api, config, clock, "succeeded")
    assert fake.count("execute") == 1
