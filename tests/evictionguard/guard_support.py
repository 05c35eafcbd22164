"""A whole eviction-guard stack on loopback for the scenario tests.

The simulator (30 nodes in 3 zones, 5 pods each, its kubelets, node-lifecycle and taint-eviction
controllers, at a clock factor of 20: the 50 s grace period is 2.5 real seconds and the
300 s toleration 15), admission enforcing the policy from deploy/eviction-guard/ as
installed by a cluster admin, the exporter (the default catalog over HTTP, its
cluster-state area on the simulator's clock and rendering every half second), and the
receiver's engine (the real action, the simulator's clock). Alerts are handed to the
engine as Alertmanager would deliver them; the real Prometheus/Alertmanager path is
tests/evictionguard/test_guard_e2e.py's.

The congestion is the simulator's: APF rejects every heartbeat of a fixed 40 % of each
zone's nodes and of node-0000 (shuffle sharding keeps the same flows in the full
queues) and 30 % of the others' (client-go's retries get those through), and node-0000's
Lease is also renewed over HTTP so the rejections show on the apiserver's /metrics,
where the exporter's congestion verdict reads them. Those nodes' kubelets are alive: every pod the
taint-eviction controller deletes is a healthy pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from loopback import (
    catalog_on_simulated_clock,
    exporter_on_simulator,
    renew_lease_over_http,
    serve,
)
from prometheus_client import CollectorRegistry

from kubeballast.core import evictionguard as eg
from kubeballast.core.config import (
    ActionConfig,
    Config,
    EvictionGuardConfig,
    KubernetesAccessConfig,
    LeaderElectionConfig,
    ReceiverConfig,
    RemediationsConfig,
    validate,
)
from kubeballast.core.kube import kube_client
from kubeballast.exporter.app import build_exporter
from kubeballast.remediations.contract import Alert, AlertGroup
from kubeballast.remediations.engine import Engine, build_intake
from kubeballast.simulator.faults import Congestion
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import (
    NodeLifecycleSettings,
    ScenarioSettings,
    SimulatorSettings,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
GUARD_MANIFESTS = REPO_ROOT / "deploy" / "eviction-guard"
NODE_TOKEN = "node-0000-token"
CLOCK_FACTOR = 20.0
DEADLINE = 90.0
STARVED = 0.4
WAVE_ZONES = "kubeballast_lease_stale_wave_zones"
CONGESTED = "kubeballast_apiserver_congested"


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], what: str, within: float = DEADLINE
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
            pytest.fail(f"not within {within} s: {what}")
        await asyncio.sleep(0.1)


def manifests(*names: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in names:
        docs.extend(d for d in yaml.safe_load_all((GUARD_MANIFESTS / name).read_text()) if d)
    return docs


async def install_guard(api: Any) -> None:
    """What `kubectl apply -k deploy/eviction-guard` does for the admission objects."""
    from kubernetes_asyncio import client

    admission = client.AdmissionregistrationV1Api(api)
    flow = client.FlowcontrolApiserverV1Api(api)
    for doc in manifests("policy.yaml", "binding.yaml", "flowcontrol.yaml"):
        kind = doc["kind"]
        if kind == "ValidatingAdmissionPolicy":
            await admission.create_validating_admission_policy(doc)
        elif kind == "ValidatingAdmissionPolicyBinding":
            await admission.create_validating_admission_policy_binding(doc)
        elif kind == "FlowSchema":
            await flow.create_flow_schema(doc)
        elif kind == "PriorityLevelConfiguration":
            await flow.create_priority_level_configuration(doc)


@dataclass
class Stack:
    server: ApiServer
    api: Any
    exporter_url: str
    tmp: Path
    engines: list[Engine] = field(default_factory=list)
    _renewer: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def counters(self) -> Any:
        assert self.server.node_lifecycle is not None
        return self.server.node_lifecycle.counters

    def now(self) -> float:
        return self.server.clock.time()

    def congest(self) -> frozenset[str]:
        """Starve 40 % of each zone's heartbeats; returns the starved nodes."""
        self.server.faults.set_congestion(
            Congestion(
                reject_fraction=0.0,
                lease_reject_fraction=0.3,
                starved_node_fraction=STARVED,
                # node-0000's Lease is also renewed over HTTP, where every 429 shows on
                # /metrics: starved, its rejections never pause (a random draw could
                # leave a scrape interval without one and flip the congestion verdict).
                starved_nodes=frozenset({"node-0000"}),
            )
        )
        if self._renewer is None:
            self._stop.clear()
            self._renewer = asyncio.create_task(
                renew_lease_over_http(self.server.url, NODE_TOKEN, self._stop, pace=0.1)
            )
        return self.server.faults.starved_nodes

    def relieve(self) -> None:
        self.server.faults.set_congestion(None)
        self._stop.set()
        self._renewer = None

    def guard_config(self, **overrides: Any) -> EvictionGuardConfig:
        base: dict[str, Any] = {
            "exporter_url": f"{self.exporter_url}/metrics",
            "pause_seconds": 600.0,
            "max_pause_seconds": 3600.0,
            "renew_before_seconds": 300.0,
            "check_interval_seconds": 5.0,
            "taint_removal_nodes_per_second": 20.0,
        }
        base.update(overrides)
        return EvictionGuardConfig(**base)

    def receiver_config(
        self, guard: EvictionGuardConfig, *, enabled: bool = True
    ) -> ReceiverConfig:
        action = ActionConfig(
            name="eviction-pause",
            alerts=("KubeNodeHeartbeatStorm", "KubeApiserverCongested"),
            dry_run=False,
            max_per_hour=10,
            cooldown_seconds=0.0,
            max_nodes=0,
            max_cluster_fraction=0.0,
            # The scenarios that expect a refusal see it after this wait (the shipped
            # 240 s would add 12 real seconds to each at a clock factor of 20).
            precondition_wait_seconds=40.0,
            precondition_recheck_seconds=4.0,
        )
        remediations = RemediationsConfig(
            namespace="kube-ballast",
            actions=(action,),
            enabled_actions=("eviction-pause",) if enabled else (),
            # Simulated seconds (the engine runs on the simulator's clock).
            leader_election=LeaderElectionConfig(
                lease_duration_seconds=600.0,
                renew_deadline_seconds=400.0,
                retry_period_seconds=10.0,
            ),
            scan_interval_seconds=0.2,
            eviction_guard=guard,
        )
        config = ReceiverConfig(dry_run=False, remediations=remediations)
        validate(Config(receiver=config))
        return config

    async def start_engine(self, config: ReceiverConfig) -> Engine:
        kubeconfig = self.tmp / "receiver.kubeconfig"
        write_kubeconfig(kubeconfig, self.server.url, self.server.admin_token)
        api = await kube_client(KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)), "test")
        engine = build_intake(
            config,
            registry=CollectorRegistry(),
            api=api,
            clock=self.server.clock,
            identity="receiver-0",
        )
        await engine.start()
        self.engines.append(engine)
        engine._test_api = api  # type: ignore[attr-defined]
        return engine

    async def stop_engine(self, engine: Engine, *, abort: bool = False) -> None:
        if abort:
            await engine.abort()
        else:
            await engine.stop()
        await engine._test_api.close()  # type: ignore[attr-defined]
        self.engines.remove(engine)

    async def metrics(self) -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.exporter_url}/metrics") as r,
        ):
            return await r.text()

    async def values(self, *names: str) -> dict[str, float | None]:
        """The first sample of each of ``names`` (None: absent), all from one scrape."""
        found: dict[str, float | None] = dict.fromkeys(names)
        missing = set(names)
        for line in (await self.metrics()).splitlines():
            for name in list(missing):
                if line.startswith((name + " ", name + "{")):
                    found[name] = float(line.rsplit(" ", 1)[1])
                    missing.discard(name)
            if not missing:
                break
        return found

    async def metric(self, name: str) -> float | None:
        return (await self.values(name))[name]

    async def storming(self) -> bool:
        """What KubeNodeHeartbeatStorm waits for, in one scrape: the heartbeat wave
        spanning at least two zones and the apiserver congestion verdict."""
        seen = await self.values(WAVE_ZONES, CONGESTED)
        return (seen[WAVE_ZONES] or 0) >= 2 and seen[CONGESTED] == 1

    async def storm(self, within: float = DEADLINE) -> None:
        """Wait until the exporter shows the storm. The wave alone can come first (the
        congestion verdict needs two of the apiserver's scrapes), and the guard would
        rightly refuse an alert handed over before both hold."""
        await eventually(self.storming, "the exporter shows the wave and the congestion", within)

    async def pause(self) -> eg.PauseState | None:
        stored = await eg.read_pause(self.api)
        return stored.state if stored is not None else None

    async def paused(self) -> bool:
        state = await self.pause()
        return state is not None and state.paused


Scenario = Callable[[Path], Awaitable[None]]


class Scenarios:
    """Scenarios run side by side, at most ``limit`` at a time, each on its own stack.

    A scenario spends most of its wall time waiting for simulated minutes to pass (the
    grace period, the 300 s toleration, the recovery's hysteresis) while a stack takes
    about a sixth of a core: run one after the other, the module took three minutes of
    mostly idle waiting. Each scenario still has its own simulator, exporter and engine
    (nothing is shared but the event loop), and its test awaits its outcome, so a
    failure is reported, with its traceback, by the test it belongs to. The limit keeps
    the event loop (one core at most) far from saturated on a loaded two-core machine:
    the simulated clock runs on regardless, so a lagging loop would shrink the margins
    the scenarios assert.
    """

    def __init__(self, tmp: Callable[[str], Path], limit: int) -> None:
        self._tmp = tmp
        self._slots = asyncio.Semaphore(limit)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, scenario: Scenario) -> asyncio.Task[None]:
        name = scenario.__name__.strip("_")
        if name not in self._tasks:
            self._tasks[name] = asyncio.create_task(self._run(scenario, name), name=name)
        return self._tasks[name]

    async def _run(self, scenario: Scenario, name: str) -> None:
        async with self._slots:
            # Every deadline inside the scenario counts from here, once it has a slot.
            await scenario(self._tmp(name))

    async def outcome(self, scenario: Scenario) -> None:
        """Wait for ``scenario`` (started now if it was not yet); its failure raises."""
        await asyncio.shield(self.start(scenario))

    async def aclose(self) -> None:
        """Cancel what did not finish (a run stopped early), each stack torn down."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


def storm_alert(name: str = "KubeNodeHeartbeatStorm") -> AlertGroup:
    alert = Alert(
        status="firing",
        labels={"alertname": name, "severity": "critical", "automation": "eviction-pause"},
        annotations={"summary": "storm", "runbook_url": f"docs/runbooks/{name}.md"},
        starts_at=datetime.datetime.now(tz=datetime.UTC),
        ends_at=None,
        generator_url="http://prometheus.invalid/graph",
        fingerprint=f"{name.lower()}-0001",
    )
    return AlertGroup(
        version="4",
        group_key=f'{{}}:{{alertname="{name}"}}',
        status="firing",
        receiver="kube-ballast",
        group_labels={"alertname": name},
        common_labels=dict(alert.labels),
        common_annotations={},
        external_url="http://alertmanager.invalid",
        truncated_alerts=0,
        alerts=(alert,),
    )


@contextlib.asynccontextmanager
async def guard_stack(
    tmp: Path,
    *,
    policy_api: bool = True,
    service_account_credentials: bool = True,
    install: bool = True,
    clock_factor: float = CLOCK_FACTOR,
) -> AsyncIterator[Stack]:
    settings = SimulatorSettings(
        host="127.0.0.1",
        port=0,
        kubelets=True,
        controllers=True,
        clock_factor=clock_factor,
        admission_policy_api=policy_api,
        scenario=ScenarioSettings(
            nodes=30,
            zones=3,
            # Two of each node's pods are DaemonSet pods (network agent, kube-proxy), which
            # tolerate NoExecute for ever; three are workload pods with the default 300 s.
            pods_per_node=5,
            control_plane_nodes=1,
            seed=9,
            users={NODE_TOKEN: "system:node:node-0000"},
        ),
        node_lifecycle=NodeLifecycleSettings(
            use_service_account_credentials=service_account_credentials
        ),
    )
    server = build_server(settings)
    attach_control_plane(server)
    await server.start()
    kubeconfig = tmp / "admin.kubeconfig"
    write_kubeconfig(kubeconfig, server.url, server.admin_token)
    token = tmp / "admin-token"
    token.write_text(server.admin_token + "\n")
    api = await kube_client(KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)), "test")
    try:
        from kubernetes_asyncio import client

        with contextlib.suppress(Exception):
            await client.CoreV1Api(api).create_namespace({"metadata": {"name": "kube-ballast"}})
        if install and policy_api:
            await install_guard(api)
        config = exporter_on_simulator(server.url, kubeconfig, token)
        app = build_exporter(
            config,
            catalog=catalog_on_simulated_clock(
                server.clock.time, cache_seconds=0.5, stale_limit_seconds=1.0
            ),
        ).create_app()
        async with serve(app) as url:
            stack = Stack(server, api, url, tmp)

            async def synced() -> bool:
                return await stack.metric("kubeballast_cluster_state_synced") == 1.0

            await eventually(synced, "the exporter synced")
            try:
                yield stack
            finally:
                stack.relieve()
                for engine in list(stack.engines):
                    await stack.stop_engine(engine)
    finally:
        await api.close()
        await server.stop()
