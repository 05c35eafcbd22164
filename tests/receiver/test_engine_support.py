"""Shared pieces of the engine tests (this module holds no tests itself).

The Kubernetes API is the simulator, for real: the ledger's ConfigMaps, the Lease and
the Events go over HTTP to it, with its optimistic concurrency. The only fake is at our
own boundary, the :class:`FakeAction`, which records every call and fails the test
loudly (``unexpected``) when something it was told not to expect reaches it. Chat is a
local aiohttp server that apprise's ``json://`` target posts to. Time is a
:class:`FakeClock` the tests move forward; nothing waits on a guessed sleep: tests poll
with :func:`eventually` under a deadline.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from kubeballast.core.config import (
    ActionConfig,
    Config,
    LeaderElectionConfig,
    NotificationsConfig,
    ReceiverConfig,
    RemediationsConfig,
    validate,
)
from kubeballast.remediations.actions import (
    ActionContext,
    ObjectReference,
    Outcome,
    Plan,
    Precondition,
)
from kubeballast.remediations.contract import Alert, AlertGroup
from kubeballast.remediations.engine import Engine, build_intake
from kubeballast.remediations.ledger import ExecutionRecord, Ledger
from kubeballast.simulator.kubeconfig import api_client, write_kubeconfig
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

NAMESPACE = "kube-ballast"
DEADLINE = 20.0
"""Real seconds a condition may take (generous: a loaded 2-core machine)."""


class FakeClock:
    """Wall-clock time that moves only when told (starts at the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], within: float = DEADLINE, what: str = ""
) -> None:
    """Poll ``check`` until true; fail after ``within`` real seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s: {what}")
        await asyncio.sleep(0.02)


@dataclass
class FakeAction:
    """An action at our boundary: records calls; blocks or fails on request.

    ``check_results`` are returned by successive checks (the last one repeats); an
    Exception in it is raised instead. ``forbid_execute`` turns any execute into a
    loud failure recorded in ``unexpected``.
    """

    name: str = "fake"
    idempotent: bool = True
    reversible: bool = False
    nodes: int = 0
    cluster_nodes: int | None = None
    changes_cluster: bool = True
    node_affecting: bool = False
    target_label: str = "target"
    check_results: list[Precondition | Exception] = field(
        default_factory=lambda: [Precondition(True, "the fake condition holds")]
    )
    forbid_execute: bool = False
    gate: asyncio.Event | None = None
    """When set, execute waits for it (a long action)."""
    calls: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    executing: asyncio.Event = field(default_factory=asyncio.Event)

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)

    def plan(self, alert: Alert) -> Plan:
        target = alert.labels.get(self.target_label)
        if target is None:
            raise ValueError(f"label {self.target_label!r} missing")
        return Plan(
            summary=f"fake fix of {target}",
            target=target,
            nodes=self.nodes,
            cluster_nodes=self.cluster_nodes,
            changes_cluster=self.changes_cluster,
            node_affecting=self.node_affecting,
            involved_object=ObjectReference(
                kind="ConfigMap", name="target-object", namespace=NAMESPACE
            ),
        )

    async def check(self, ctx: ActionContext, alert: Alert) -> Precondition:
        self.calls.append(("check", alert.fingerprint))
        result = (
            self.check_results[0] if len(self.check_results) == 1 else self.check_results.pop(0)
        )
        if isinstance(result, Exception):
            raise result
        return result

    async def execute(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome:
        self.calls.append(("execute", alert.fingerprint))
        if self.forbid_execute:
            self.unexpected.append(f"execute {alert.fingerprint}")
            raise AssertionError("execute must not be called in this test")
        self.executing.set()
        if self.gate is not None:
            await self.gate.wait()
        return Outcome(summary=f"fixed {plan.target}", details={"target": plan.target})

    async def revert(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome:
        self.calls.append(("revert", alert.fingerprint))
        return Outcome(summary=f"restored {plan.target}")


def make_config(
    *,
    dry_run: bool = False,
    actions: Iterable[ActionConfig] = (),
    enabled: Iterable[str] | None = None,
    urls_file: Path | None = None,
    **overrides: Any,
) -> ReceiverConfig:
    actions = tuple(actions) or (
        ActionConfig(
            name="fake", alerts=("FakeAlert",), dry_run=False, max_per_hour=10, cooldown_seconds=0.0
        ),
    )
    remediations = RemediationsConfig(
        namespace=NAMESPACE,
        actions=actions,
        enabled_actions=tuple(enabled) if enabled is not None else tuple(a.name for a in actions),
        # Short, so takeovers happen within a test; still renew < lease, retry < renew.
        leader_election=LeaderElectionConfig(
            lease_duration_seconds=1.0, renew_deadline_seconds=0.8, retry_period_seconds=0.1
        ),
        scan_interval_seconds=0.05,
        notifications=NotificationsConfig(
            urls_file=str(urls_file) if urls_file else None,
            backoff_seconds=0.01,
            timeout_seconds=5.0,
        ),
        **overrides,
    )
    config = ReceiverConfig(dry_run=dry_run, remediations=remediations)
    validate(Config(receiver=config))
    return config


def make_alert(
    fingerprint: str,
    *,
    name: str = "FakeAlert",
    target: str | None = "member-1",
    status: str = "firing",
    starts_at: datetime.datetime | None = None,
    runbook: str = "https://runbooks.example/fake",
) -> Alert:
    labels = {"alertname": name, "severity": "critical"}
    if target is not None:
        labels["target"] = target
    return Alert(
        status=status,  # type: ignore[arg-type]
        labels=labels,
        annotations={"summary": f"{name} fired", "runbook_url": runbook},
        starts_at=starts_at or datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC),
        ends_at=None,
        generator_url="http://prometheus.example/graph",
        fingerprint=fingerprint,
    )


def make_group(*alerts: Alert, key: str = '{}:{alertname="FakeAlert"}') -> AlertGroup:
    return AlertGroup(
        version="4",
        group_key=key,
        status=alerts[0].status,
        receiver="kube-ballast",
        group_labels={"alertname": alerts[0].name},
        common_labels={},
        common_annotations={},
        external_url="http://alertmanager.example",
        truncated_alerts=0,
        alerts=tuple(alerts),
    )


@dataclass
class ChatSink:
    """A local HTTP endpoint that apprise's json:// target posts messages to."""

    url: str
    messages: list[dict[str, Any]]
    failures_left: list[int]
    """Answer this many requests with 500 first (retry tests)."""


@pytest.fixture
async def chat() -> AsyncIterator[ChatSink]:
    messages: list[dict[str, Any]] = []
    failures_left = [0]

    async def hook(request: web.Request) -> web.Response:
        if failures_left[0] > 0:
            failures_left[0] -= 1
            return web.Response(status=500, text="try again")
        messages.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield ChatSink(f"json://127.0.0.1:{port}/hook", messages, failures_left)
    finally:
        await runner.cleanup()


@pytest.fixture
def urls_file(chat: ChatSink, tmp_path: Path) -> Path:
    path = tmp_path / "apprise-urls"
    path.write_text(f"# the test's chat\n{chat.url}\n")
    return path


@pytest.fixture
async def sim() -> AsyncIterator[ApiServer]:
    settings = SimulatorSettings(
        host="127.0.0.1",
        port=0,
        kubelets=False,
        controllers=False,
        scenario=ScenarioSettings(nodes=3, zones=1, pods_per_node=1, control_plane_nodes=1),
    )
    server = build_server(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def kubeconfig(sim: ApiServer, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, sim.url, sim.admin_token)
    return path


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[Any]:
    client = await api_client(kubeconfig)
    from kubernetes_asyncio.client import CoreV1Api

    await CoreV1Api(client).create_namespace({"metadata": {"name": NAMESPACE}})
    try:
        yield client
    finally:
        await client.close()


EngineFactory = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def engines(kubeconfig: Path, api: Any, clock: FakeClock) -> AsyncIterator[EngineFactory]:
    """Start engines, each with its own API client (a separate replica); all are
    stopped at teardown (aborted ones are already down)."""
    started: list[tuple[Engine, Any]] = []

    async def start(config: ReceiverConfig, actions: list[Any], **kwargs: Any) -> Engine:
        client = await api_client(kubeconfig)
        engine = build_intake(
            config,
            registry=CollectorRegistry(),
            api=client,
            clock=kwargs.pop("clock", clock),
            actions=actions,
            **kwargs,
        )
        await engine.start()
        started.append((engine, client))
        return engine

    try:
        yield start
    finally:
        for engine, client in started:
            await engine.stop()
            await client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def records_of(
    api: Any, config: ReceiverConfig, clock: FakeClock
) -> dict[str, ExecutionRecord]:
    return await Ledger(api, config.remediations, clock).records()


async def wait_state(
    api: Any, config: ReceiverConfig, clock: FakeClock, state: str, count: int = 1
) -> list[ExecutionRecord]:
    """Wait until ``count`` records are in ``state``; return them."""
    found: list[ExecutionRecord] = []

    async def check() -> bool:
        nonlocal found
        found = [r for r in (await records_of(api, config, clock)).values() if r.state == state]
        return len(found) >= count

    await eventually(check, what=f"{count} record(s) in state {state}")
    return found


def counter_value(engine: Engine, action: str, outcome: str, reason: str) -> float:
    value = engine.registry.get_sample_value(
        "kubeballast_remediation_decisions_total",
        {"action": action, "outcome": outcome, "reason": reason},
    )
    return value or 0.0
