"""The apiserver collectors, end to end against the simulated apiserver.

The exporter is built as in production (``build_exporter`` over a catalog holding the
apiserver area), so the sources, the runners, the guarded collectors and the
``kubeballast_source_*`` families are the real ones. The simulator runs its kubelets and
the scheduler and controller-manager (``attach_control_plane``) at a clock factor of 10;
their own renewals happen in process and do not show in the apiserver's /metrics, so
every request counted there is one the test's load made, over HTTP, with the token of a
kubelet (node-high), of the scheduler (leader-election) or of a service account
(workload-low). The load records the status of every answer, which is what the
exporter's numbers are checked against.

Most tests step the sources with ``refresh_once()``; the congestion test lets them run
on their one-second interval through the exporter's HTTP server and counts refreshes
rather than seconds, so that a slow machine makes it slower, not flaky.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from kubeballast.core import promtext
from kubeballast.core.config import ExporterConfig, TargetConfig
from kubeballast.exporter.apiserver import (
    HEALTH_KIND,
    METRICS_KIND,
    SPECS,
    ApiserverCollector,
    ApiserverHealth,
    ApiserverMetricsSnapshot,
    HealthCheck,
    build_apiserver,
    parse_health_checks,
)
from kubeballast.exporter.app import Exporter, build_exporter
from kubeballast.exporter.catalog import Catalog, ExporterContext
from kubeballast.exporter.congestion import (
    CONGESTION_REASONS,
    DEFAULT_PRIORITY_LEVELS,
    WANTED_FAMILIES,
    evaluate,
    summarize,
)
from kubeballast.exporter.contract import Snapshot
from kubeballast.exporter.runner import SourceRunner, SourceSet
from kubeballast.simulator.faults import Congestion
from kubeballast.simulator.server import (
    HEALTH_CHECKS,
    ApiServer,
    attach_control_plane,
    build_server,
)
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

FIXTURES = Path(__file__).parent / "fixtures"
INSTANCE = "apiserver-1"

NODE_TOKEN = "token-node-0"
SCHEDULER_TOKEN = "token-scheduler"
SA_TOKEN = "token-sa"
USERS = {
    NODE_TOKEN: "system:node:node-0000",  # node-high
    SCHEDULER_TOKEN: "system:kube-scheduler",  # leader-election for its Lease
    SA_TOKEN: "system:serviceaccount:team-a:tester",  # workload-low
}

NODE_LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-0000"
SCHEDULER_LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler"
PODS = "/api/v1/namespaces/team-a/pods?limit=5"


# -- pure parts ----------------------------------------------------------------------------


def test_health_checks_of_a_failing_readyz() -> None:
    checks = parse_health_checks((FIXTURES / "apiserver_readyz_failed.txt").read_text())
    assert [c.name for c in checks] == list(HEALTH_CHECKS["readyz"])
    failed = {c.name for c in checks if not c.ok}
    assert failed == {"etcd", "informer-sync"}
    assert HealthCheck("poststarthook/priority-and-fairness-filter", True) in checks


def test_health_checks_of_a_passing_livez() -> None:
    checks = parse_health_checks((FIXTURES / "apiserver_livez_ok.txt").read_text())
    assert [c.name for c in checks] == list(HEALTH_CHECKS["livez"])
    assert all(c.ok for c in checks)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("ok", (), id="not-verbose"),
        pytest.param("", (), id="empty"),
        pytest.param("404 page not found\n", (), id="no-such-endpoint"),
        pytest.param("[+]etcd excluded: ok\n", (HealthCheck("etcd", True),), id="excluded"),
        pytest.param(
            "[-]etcd failed: reason withheld\n[+]etcd ok\n",
            (HealthCheck("etcd", False),),
            id="repeated-keeps-first",
        ),
        pytest.param(
            '[+]ping ok\nwarn: some health checks cannot be excluded: no matches for "x"\n'
            "livez check passed\n",
            (HealthCheck("ping", True),),
            id="warning-and-summary-skipped",
        ),
        pytest.param("[+]\n[x]ping ok\n", (), id="malformed"),
    ],
)
def test_health_check_lines(body: str, expected: tuple[HealthCheck, ...]) -> None:
    assert parse_health_checks(body) == expected


def test_health_checks_are_capped() -> None:
    body = "".join(f"[+]check-{i} ok\n" for i in range(1000))
    assert len(parse_health_checks(body)) == 200


def test_specs_follow_the_naming_conventions() -> None:
    names = [spec.name for spec in SPECS]
    assert len(names) == len(set(names))
    for spec in SPECS:
        assert spec.name.startswith("kubeballast_apiserver_")
        assert spec.labels[0] == "target"
        assert not spec.name.endswith("_total")  # counters are named without it
        if spec.type == "counter":
            assert spec.name.endswith(("_requests", "_rejected_requests"))
        if "_seconds" in spec.name:
            assert spec.name.endswith("_seconds")
        if "_ratio" in spec.name:
            assert spec.name.endswith("_ratio")


@dataclass
class FakeView:
    """A SnapshotView as the runner presents it: the last good snapshot, and ``up``."""

    snapshot: Snapshot[Any] | None
    up: bool


def collected(collector: ApiserverCollector) -> dict[str, list[promtext.Sample]]:
    samples: dict[str, list[promtext.Sample]] = collections.defaultdict(list)
    for family in collector.collect():
        for sample in family.samples:
            samples[sample.name].append(
                promtext.Sample(sample.name, dict(sample.labels), sample.value)
            )
    return dict(samples)


def test_stale_snapshots_are_not_served_as_current() -> None:
    health = ApiserverHealth(())
    metrics_text = (FIXTURES / "apiserver_healthy_2.txt").read_text()
    # A real summary and an evaluated verdict, so that only ``up`` decides.
    summary = summarize(promtext.parse(metrics_text, WANTED_FAMILIES))
    snapshot = ApiserverMetricsSnapshot(summary, evaluate(summary, summary))
    collector = ApiserverCollector(
        health={"a": FakeView(Snapshot(health, 1.0), up=False)},
        metrics={"a": FakeView(Snapshot(snapshot, 1.0), up=False)},
    )
    samples = collected(collector)
    assert [s.value for s in samples["kubeballast_apiserver_up"]] == [0.0]
    assert [s.value for s in samples["kubeballast_apiserver_congestion_evaluated"]] == [0.0]
    assert [s.value for s in samples["kubeballast_apiserver_congested"]] == [0.0]
    assert len(samples["kubeballast_apiserver_congestion_reason"]) == len(CONGESTION_REASONS)
    assert "kubeballast_apiserver_requests_total" not in samples
    assert "kubeballast_apiserver_check_ok" not in samples


def test_no_snapshot_yet() -> None:
    collector = ApiserverCollector(
        health={"a": FakeView(None, up=False)}, metrics={"a": FakeView(None, up=False)}
    )
    samples = collected(collector)
    assert {name for name in samples} == {
        "kubeballast_apiserver_up",
        "kubeballast_apiserver_ready",
        "kubeballast_apiserver_congested",
        "kubeballast_apiserver_congestion_reason",
        "kubeballast_apiserver_congestion_evaluated",
    }


def test_factory_builds_nothing_without_apiservers() -> None:
    context = ExporterContext(ExporterConfig(), SourceSet())
    assert build_apiserver(context) == []
    assert len(context.sources) == 0


def test_factory_builds_two_sources_per_apiserver() -> None:
    config = ExporterConfig(
        apiservers=(
            TargetConfig(name="a", url="https://10.0.0.1:6443"),
            TargetConfig(name="b", url="https://10.0.0.2:6443"),
        )
    )
    context = ExporterContext(config, SourceSet())
    collectors = build_apiserver(context)
    assert len(collectors) == 1
    assert set(context.sources.views) == {
        (HEALTH_KIND, "a"),
        (METRICS_KIND, "a"),
        (HEALTH_KIND, "b"),
        (METRICS_KIND, "b"),
    }


# -- against the simulator -------------------------------------------------------------------


@dataclass
class Load:
    """Client load over HTTP as a kubelet, the scheduler and a service account; the
    status of every answer is recorded, by (method, what)."""

    session: aiohttp.ClientSession
    statuses: collections.Counter[tuple[str, str, int]] = field(default_factory=collections.Counter)

    async def call(self, token: str, method: str, path: str, what: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, path, json=body, headers=headers) as response:
            payload = await response.json()
            self.statuses[(method, what, response.status)] += 1
            return payload if response.status == 200 else None

    async def renew(self, token: str, path: str, what: str) -> None:
        """GET a Lease and PUT it back, as a lease holder renews."""
        lease = await self.call(token, "GET", path, what)
        if lease is not None:
            await self.call(token, "PUT", path, what, lease)

    async def round(self) -> None:
        await self.renew(NODE_TOKEN, NODE_LEASE, "lease")
        await self.renew(SCHEDULER_TOKEN, SCHEDULER_LEASE, "lease")
        await self.call(SA_TOKEN, "GET", PODS, "pods")

    def count(self, method: str | None = None, *, status: Callable[[int], bool] = bool) -> int:
        return sum(
            n
            for (m, _, code), n in self.statuses.items()
            if (method is None or m == method) and status(code)
        )


@dataclass
class Harness:
    server: ApiServer
    exporter: Exporter
    load: Load
    token_file: Path

    def runner(self, kind: str, instance: str = INSTANCE) -> SourceRunner[Any]:
        return self.exporter.sources.views[(kind, instance)]

    async def refresh(self, kind: str, instance: str = INSTANCE) -> SourceRunner[Any]:
        runner = self.runner(kind, instance)
        await runner.refresh_once()
        return runner

    def scrape(self) -> dict[str, list[promtext.Sample]]:
        """The exporter's registry rendered and parsed, as Prometheus would read it."""
        return promtext.parse(generate_latest(self.exporter.registry).decode())

    def value(self, name: str, **labels: str) -> float | None:
        return value_in(self.scrape(), name, INSTANCE, **labels)


def named(families: dict[str, list[promtext.Sample]], name: str) -> list[promtext.Sample]:
    """Every sample called ``name``, whichever family the exposition put it in."""
    return [s for samples in families.values() for s in samples if s.name == name]


def value_in(
    families: dict[str, list[promtext.Sample]],
    name: str,
    target: str | None = INSTANCE,
    **labels: str,
) -> float | None:
    """The value of the one sample ``name`` with exactly ``labels`` and ``target``
    (None: a series without that label)."""
    if target is not None:
        labels["target"] = target
    found = [
        s.value
        for samples in families.values()
        for s in samples
        if s.name == name and s.labels == labels
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def sim_settings() -> SimulatorSettings:
    scenario = ScenarioSettings(
        nodes=6, zones=3, pods_per_node=5, control_plane_nodes=1, seed=7, users=USERS
    )
    return SimulatorSettings(
        host="127.0.0.1",
        port=0,
        clock_factor=10.0,
        kubelets=True,
        controllers=False,
        scenario=scenario,
    )


def target(url: str, token_file: Path, name: str = INSTANCE) -> TargetConfig:
    # Generous timeouts: the machine may be loaded; the interval is the shortest allowed.
    return TargetConfig(
        name=name,
        url=url,
        bearer_token_file=str(token_file),
        timeout_seconds=1.0 if name != INSTANCE else 5.0,
        interval_seconds=1.0,
    )


def apiserver_catalog() -> Catalog:
    catalog = Catalog()
    catalog.register("apiserver", build_apiserver)
    return catalog


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    server = build_server(sim_settings())
    attach_control_plane(server)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def token_file(server: ApiServer, tmp_path: Path) -> Path:
    # The exporter scrapes as a cluster admin (system:masters: APF's exempt level), as a
    # deployment should arrange for its own identity, so congestion never sheds it.
    path = tmp_path / "token"
    path.write_text(server.admin_token + "\n")
    return path


@pytest.fixture
async def load(server: ApiServer) -> AsyncIterator[Load]:
    async with aiohttp.ClientSession(base_url=server.url) as session:
        yield Load(session)


def make_harness(server: ApiServer, load: Load, token_file: Path, *extra: TargetConfig) -> Harness:
    config = ExporterConfig(apiservers=(target(server.url, token_file), *extra))
    exporter = build_exporter(config, catalog=apiserver_catalog())
    return Harness(server, exporter, load, token_file)


@pytest.fixture
async def harness(server: ApiServer, load: Load, token_file: Path) -> AsyncIterator[Harness]:
    h = make_harness(server, load, token_file)
    try:
        yield h
    finally:
        await h.exporter.context.aclose()


async def test_a_healthy_apiserver_every_check_passes(harness: Harness) -> None:
    await harness.refresh(HEALTH_KIND)
    families = harness.scrape()
    assert value_in(families, "kubeballast_apiserver_up") == 1.0
    assert value_in(families, "kubeballast_apiserver_ready") == 1.0
    for endpoint in ("livez", "readyz"):
        for check in HEALTH_CHECKS[endpoint]:
            ok = value_in(
                families, "kubeballast_apiserver_check_ok", endpoint=endpoint, check=check
            )
            assert ok == 1.0, (endpoint, check)
        duration = value_in(
            families, "kubeballast_apiserver_probe_duration_seconds", endpoint=endpoint
        )
        assert duration is not None
        assert 0.0 < duration < 5.0
    checks = named(families, "kubeballast_apiserver_check_ok")
    assert len(checks) == len(HEALTH_CHECKS["livez"]) + len(HEALTH_CHECKS["readyz"])
    assert value_in(families, "kubeballast_source_up", kind=HEALTH_KIND) == 1.0


async def test_a_healthy_apiserver_every_series_has_the_right_value(harness: Harness) -> None:
    load = harness.load
    await harness.refresh(METRICS_KIND)
    first = harness.scrape()
    # One scrape: no window yet, so no verdict, and said so.
    assert value_in(first, "kubeballast_apiserver_congestion_evaluated") == 0.0
    assert value_in(first, "kubeballast_apiserver_congested") == 0.0

    for _ in range(15):
        await load.round()
    await harness.refresh(METRICS_KIND)
    families = harness.scrape()

    def value(name: str, **labels: str) -> float | None:
        return value_in(families, name, **labels)

    # The verdict.
    assert value("kubeballast_apiserver_congestion_evaluated") == 1.0
    assert value("kubeballast_apiserver_congested") == 0.0
    for reason in CONGESTION_REASONS:
        assert value("kubeballast_apiserver_congestion_reason", reason=reason) == 0.0
    assert value("kubeballast_apiserver_throttled_requests_ratio") == 0.0
    mutating_p99 = value("kubeballast_apiserver_mutating_request_p99_seconds")
    assert mutating_p99 is not None
    assert 0.0 < mutating_p99 < 1.0

    # Requests by code class: exactly what the load was answered (a lease PUT may meet a
    # kubelet's or the scheduler's own renewal and get 409: that is a 4xx).
    assert load.count() == 75
    for klass, matches in {
        "2xx": lambda c: 200 <= c < 300,
        "3xx": lambda c: 300 <= c < 400,
        "4xx": lambda c: 400 <= c < 500 and c != 429,
        "429": lambda c: c == 429,
        "5xx": lambda c: c >= 500,
    }.items():
        expected = load.count(status=matches)
        assert value("kubeballast_apiserver_requests_total", code_class=klass) == expected

    # The coarse latency histogram, by call.
    puts, gets = load.count("PUT"), load.count("GET")
    for call, count in {"mutating": puts, "lease_update": puts, "read_only": gets}.items():
        assert value("kubeballast_apiserver_request_duration_seconds_count", call=call) == count
        assert (
            value("kubeballast_apiserver_request_duration_seconds_bucket", call=call, le="+Inf")
            == count
        )
        within_1s = value(
            "kubeballast_apiserver_request_duration_seconds_bucket", call=call, le="1"
        )
        assert within_1s == count  # nothing slow on a healthy apiserver
        total = value("kubeballast_apiserver_request_duration_seconds_sum", call=call)
        assert total is not None
        assert 0.0 < total < count
    bounds = {
        s.labels["le"]
        for s in named(families, "kubeballast_apiserver_request_duration_seconds_bucket")
        if s.labels["call"] == "mutating"
    }
    assert bounds == {
        "0.05",
        "0.1",
        "0.2",
        "0.4",
        "1",
        "2",
        "5",
        "10",
        "30",
        "60",
        "+Inf",
    }

    # APF: nothing rejected, nothing queued, every default level reported from zero.
    rejected = [
        s
        for s in named(families, "kubeballast_apiserver_flowcontrol_rejected_requests_total")
        if s.labels["target"] == INSTANCE
    ]
    assert len(rejected) == 7 * 4  # non-exempt default levels x reasons
    assert all(s.value == 0.0 for s in rejected)
    for level in DEFAULT_PRIORITY_LEVELS:
        assert (
            value("kubeballast_apiserver_flowcontrol_inqueue_requests", priority_level=level) == 0.0
        )
    for level in ("node-high", "leader-election", "workload-low"):
        wait = value(
            "kubeballast_apiserver_flowcontrol_request_wait_p99_seconds", priority_level=level
        )
        assert wait == 0.0  # nothing waited in a queue

    # Concurrency against the seats: the simulator's 400 + 200, rounded up per level.
    assert value("kubeballast_apiserver_inflight_limit_seats") == 602.0
    inflight = {
        kind: value("kubeballast_apiserver_inflight_requests", request_kind=kind)
        for kind in ("readOnly", "mutating")
    }
    assert all(v is not None and 0.0 <= v <= 2.0 for v in inflight.values())
    utilization = value("kubeballast_apiserver_inflight_utilization_ratio")
    assert utilization == pytest.approx(sum(v for v in inflight.values() if v) / 602.0)

    # etcd as the apiserver sees it: updates (the lease PUTs) and lists (the pods).
    for operation in ("update", "list"):
        p99 = value("kubeballast_apiserver_etcd_request_p99_seconds", operation=operation)
        assert p99 is not None
        assert 0.0 < p99 < 1.0
    start = value("kubeballast_apiserver_process_start_time_seconds")
    assert start is not None
    assert start > 1.6e9
    assert value("kubeballast_source_up", kind=METRICS_KIND) == 1.0


async def test_injected_latency_breaks_the_mutating_latency_slo(harness: Harness) -> None:
    await harness.refresh(METRICS_KIND)
    harness.server.faults.set_congestion(Congestion(latency_seconds=1.1))
    try:
        # Twelve creations in parallel, each queued 1.1 s: one (configmaps, POST) pair
        # with enough calls, all over the 1 s SLO.
        await asyncio.gather(
            *(
                harness.load.call(
                    SA_TOKEN,
                    "POST",
                    "/api/v1/namespaces/team-a/configmaps",
                    "configmaps",
                    {"metadata": {"name": f"slow-{i}"}, "data": {"k": "v"}},
                )
                for i in range(12)
            )
        )
    finally:
        harness.server.faults.set_congestion(None)
    assert harness.load.count(status=lambda c: c == 201) == 12
    await harness.refresh(METRICS_KIND)
    families = harness.scrape()
    assert value_in(families, "kubeballast_apiserver_congested") == 1.0
    active = {
        reason
        for reason in CONGESTION_REASONS
        if value_in(families, "kubeballast_apiserver_congestion_reason", reason=reason) == 1.0
    }
    assert active == {"mutating_latency_slo"}
    p99 = value_in(families, "kubeballast_apiserver_mutating_request_p99_seconds")
    assert p99 is not None
    assert 1.0 < p99 <= 1.25
    slow = value_in(
        families, "kubeballast_apiserver_request_duration_seconds_bucket", call="mutating", le="1"
    )
    assert slow == 0.0


async def test_failing_readyz_checks_show_per_check(harness: Harness) -> None:
    async with aiohttp.ClientSession(
        base_url=harness.server.url,
        headers={"Authorization": f"Bearer {harness.server.admin_token}"},
    ) as admin:
        # A readyz-only check, through the control API as an operator would.
        async with admin.post("/_sim/readyz", json={"check": "informer-sync", "ok": False}) as r:
            assert r.status == 200
        await harness.refresh(HEALTH_KIND)
        families = harness.scrape()
        assert value_in(families, "kubeballast_apiserver_up") == 1.0
        assert value_in(families, "kubeballast_apiserver_ready") == 0.0
        failing = {
            (s.labels["endpoint"], s.labels["check"])
            for s in named(families, "kubeballast_apiserver_check_ok")
            if s.value == 0.0
        }
        assert failing == {("readyz", "informer-sync")}
        # The runner's view: a 500 from /readyz is an answer, not a failed refresh.
        assert value_in(families, "kubeballast_source_up", kind=HEALTH_KIND) == 1.0

        # etcd is checked by both endpoints: not live, not ready.
        harness.server.health_failures.add("etcd")
        await harness.refresh(HEALTH_KIND)
        families = harness.scrape()
        assert value_in(families, "kubeballast_apiserver_up") == 0.0
        failing = {
            (s.labels["endpoint"], s.labels["check"])
            for s in named(families, "kubeballast_apiserver_check_ok")
            if s.value == 0.0
        }
        assert failing == {("livez", "etcd"), ("readyz", "etcd"), ("readyz", "informer-sync")}

        async with admin.post("/_sim/readyz", json={"check": "informer-sync", "ok": True}) as r:
            assert r.status == 200
        harness.server.health_failures.discard("etcd")
        await harness.refresh(HEALTH_KIND)
        families = harness.scrape()
        assert value_in(families, "kubeballast_apiserver_up") == 1.0
        assert value_in(families, "kubeballast_apiserver_ready") == 1.0
        assert all(s.value == 1.0 for s in named(families, "kubeballast_apiserver_check_ok"))


Serve = Callable[[web.Application], AbstractAsyncContextManager[str]]


async def get_metrics(url: str) -> dict[str, list[promtext.Sample]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return promtext.parse(await response.text())


async def test_a_broken_apiserver_does_not_break_metrics(
    server: ApiServer,
    load: Load,
    token_file: Path,
    free_port: int,
    local_server: Serve,
    eventually: Callable[..., Any],
) -> None:
    dead = target(f"http://127.0.0.1:{free_port}", token_file, name="apiserver-dead")
    harness = make_harness(server, load, token_file, dead)
    async with (
        local_server(harness.exporter.create_app()) as url,
        aiohttp.ClientSession() as session,
    ):

        async def all_attempted() -> bool:
            async with session.get(f"{url}/readyz") as response:
                return response.status == 200

        await eventually(all_attempted)
        families = await get_metrics(url)

    def value(name: str, **labels: str) -> float | None:
        return value_in(families, name, **labels)

    for kind in (HEALTH_KIND, METRICS_KIND):
        assert value("kubeballast_source_up", kind=kind, target="apiserver-dead") == 0.0
        errors = value(
            "kubeballast_source_refresh_errors_total",
            kind=kind,
            target="apiserver-dead",
            reason="connect",
        )
        assert errors is not None
        assert errors >= 1.0
    assert value("kubeballast_apiserver_up", target="apiserver-dead") == 0.0
    assert value("kubeballast_apiserver_ready", target="apiserver-dead") == 0.0
    assert value("kubeballast_apiserver_congestion_evaluated", target="apiserver-dead") == 0.0
    assert value("kubeballast_apiserver_congested", target="apiserver-dead") == 0.0
    dead_checks = [
        s
        for s in named(families, "kubeballast_apiserver_check_ok")
        if s.labels["target"] == "apiserver-dead"
    ]
    assert dead_checks == []
    # The live apiserver beside it is served in full.
    assert value("kubeballast_apiserver_up") == 1.0
    assert value("kubeballast_apiserver_check_ok", endpoint="readyz", check="etcd") == 1.0
    assert value("kubeballast_source_up", kind=METRICS_KIND) == 1.0
    assert value("kubeballast_apiserver_inflight_limit_seats") == 602.0
    # And the collector never failed doing it.
    errors_total = value_in(
        families, "kubeballast_collector_errors_total", target=None, collector="apiserver"
    )
    assert errors_total == 0.0


async def run_load(load: Load, stop: asyncio.Event) -> None:
    """Client load until told to stop; 429s are part of what it measures."""
    while not stop.is_set():
        await load.round()
        # Pacing, not synchronisation: keeps a two-core machine responsive.
        await asyncio.sleep(0.01)


async def test_congestion_flips_the_verdict_and_recovery_clears_it(
    harness: Harness,
    local_server: Serve,
    eventually: Callable[..., Any],
) -> None:
    runner = harness.runner(METRICS_KIND)
    stop = asyncio.Event()
    async with local_server(harness.exporter.create_app()) as url:
        load_task = asyncio.create_task(run_load(harness.load, stop))
        try:
            # Healthy, with load, for a full window.
            await eventually(lambda: runner.refreshes >= 2)
            baseline = harness.scrape()
            assert value_in(baseline, "kubeballast_apiserver_congestion_evaluated") == 1.0
            assert value_in(baseline, "kubeballast_apiserver_congested") == 0.0

            # Congestion: 20 % of requests rejected, heartbeats 60 %. The refresh in
            # flight may have scraped before it began; the two after it must see it.
            before = runner.refreshes
            harness.server.faults.set_congestion(Congestion(reject_fraction=0.2))
            await eventually(lambda: harness.value("kubeballast_apiserver_congested") == 1.0)
            assert runner.refreshes <= before + 3
            families = await get_metrics(url)  # through the exporter's HTTP server
            assert value_in(families, "kubeballast_apiserver_congested") == 1.0
            for reason in ("apf_rejections_node_high", "apf_rejections_leader_election"):
                assert (
                    value_in(families, "kubeballast_apiserver_congestion_reason", reason=reason)
                    == 1.0
                )
            node_high = value_in(
                families,
                "kubeballast_apiserver_flowcontrol_rejected_requests_total",
                priority_level="node-high",
                reason="queue-full",
            )
            assert node_high is not None
            assert node_high > 0
            throttled = value_in(families, "kubeballast_apiserver_requests_total", code_class="429")
            assert throttled is not None
            assert throttled > 0

            # Recovery.
            before = runner.refreshes
            harness.server.faults.set_congestion(None)
            await eventually(lambda: harness.value("kubeballast_apiserver_congested") == 0.0)
            assert runner.refreshes <= before + 3
            families = await get_metrics(url)
            assert value_in(families, "kubeballast_apiserver_congestion_evaluated") == 1.0
            assert value_in(families, "kubeballast_apiserver_congested") == 0.0
            # The window may still hold a 429 answered as the congestion ended.
            ratio = value_in(families, "kubeballast_apiserver_throttled_requests_ratio")
            assert ratio is not None
            assert ratio <= 0.01
        finally:
            stop.set()
            await load_task


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("apiserver_*.txt")), ids=lambda p: p.name)
def test_fixtures_parse(path: Path) -> None:
    """Every fixture is what it claims: a health body with checks, or exposition text
    with at least one wanted family."""
    text = path.read_text()
    if "livez" in path.name or "readyz" in path.name:
        assert parse_health_checks(text)
    else:
        assert promtext.parse(text, WANTED_FAMILIES)
