"""One /metrics fetch and parse per apiserver per interval, shared by the areas reading it.

The apiserver area (congestion verdict) and the objects area (stored objects, Event
writes) both read each apiserver's /metrics page, which is tens of megabytes on a
5000-node apiserver. They share the target's scrape (exporter/http.py
``SharedMetricsScrape``): these tests count the page requests where they land, in the
simulated apiserver. It enforces RBAC here, and its access log (``/_sim/authz/usage``)
counts each user's requests by path, allowed and denied; every target scrapes with a
token of its own, so the count of a user is the count of a target.

The exporter is built as in production (``build_exporter`` over a catalog of the two
areas); most tests step the sources with ``refresh_once()`` so that "an interval" is a
round of refreshes, in every order, and one lets them run on their own schedule through
the exporter's HTTP server. The rules for readers on different intervals, a reader
giving up while a fetch is in flight, and a page that only one reader cannot parse are
shown on the shared scrape itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kubeballast.core import promtext
from kubeballast.core.config import ExporterConfig, KubernetesAccessConfig, TargetConfig
from kubeballast.exporter.apiserver import METRICS_KIND, build_apiserver
from kubeballast.exporter.app import Exporter, build_exporter
from kubeballast.exporter.catalog import Catalog
from kubeballast.exporter.congestion import WANTED_FAMILIES, summarize
from kubeballast.exporter.contract import SourceError
from kubeballast.exporter.http import SharedMetricsScrape, TargetClient
from kubeballast.exporter.objects import (
    APISERVER_FAMILIES,
    ApiserverObjectsSource,
    build_objects,
    parse_apiserver_objects,
)
from kubeballast.exporter.runner import SourceRunner
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.resources import CONFIGMAPS
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

OBJECTS_KIND = ApiserverObjectsSource.kind
KINDS = (METRICS_KIND, OBJECTS_KIND)
TOKENS = {"api-a": "token-a", "api-b": "token-b", "api-denied": "token-denied"}
USERS = {token: f"scraper-{name}" for name, token in TOKENS.items()}
ADMIN_GROUP = "rbac.authorization.k8s.io"


def cluster_role(name: str, rules: list[dict[str, Any]], users: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": f"{ADMIN_GROUP}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        },
        {
            "apiVersion": f"{ADMIN_GROUP}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": ADMIN_GROUP, "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": ADMIN_GROUP, "kind": "User", "name": u} for u in users],
        },
    ]


LIST_CONFIGMAPS = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}
RBAC_OBJECTS = [
    # The exporter's rules for these two areas (deploy/base/rbac/exporter.yaml) ...
    *cluster_role(
        "shared-scrape",
        [
            {"nonResourceURLs": ["/livez", "/readyz", "/metrics"], "verbs": ["get"]},
            LIST_CONFIGMAPS,
        ],
        [USERS["token-a"], USERS["token-b"]],
    ),
    # ... and an identity that may not read /metrics: a target failing with 403.
    *cluster_role(
        "shared-scrape-no-metrics",
        [{"nonResourceURLs": ["/livez", "/readyz"], "verbs": ["get"]}, LIST_CONFIGMAPS],
        [USERS["token-denied"]],
    ),
]


@dataclass
class Cluster:
    server: ApiServer
    admin: aiohttp.ClientSession
    tmp: Path

    async def metrics_requests(self, target: str, outcome: str = "allowed") -> int:
        """GET /metrics requests of ``target``'s identity the apiserver counted."""
        async with self.admin.get("/_sim/authz/usage") as response:
            assert response.status == 200
            usage = await response.json()
        entries = usage["users"].get(USERS[TOKENS[target]], {}).get(outcome, [])
        return sum(e["count"] for e in entries if e["path"] == "/metrics")

    async def page(self) -> str:
        """The apiserver's /metrics as the admin reads it (not counted: system:masters)."""
        async with self.admin.get("/metrics") as response:
            assert response.status == 200
            return await response.text()

    def target(self, name: str, *, interval: float = 30.0, url: str | None = None) -> TargetConfig:
        token_file = self.tmp / f"{name}.token"
        token_file.write_text(TOKENS.get(name, "token-a") + "\n")
        return TargetConfig(
            name=name,
            url=url or self.server.url,
            bearer_token_file=str(token_file),
            timeout_seconds=min(5.0, interval),
            interval_seconds=interval,
        )

    def exporter(self, *targets: TargetConfig) -> Exporter:
        kubeconfig = self.tmp / "kubeconfig"
        write_kubeconfig(kubeconfig, self.server.url, TOKENS["api-a"])
        config = ExporterConfig(
            kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)),
            apiservers=targets,
        )
        catalog = Catalog()
        catalog.register("apiserver", build_apiserver)
        catalog.register("objects", build_objects)
        return build_exporter(config, catalog=catalog)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    scenario = ScenarioSettings(
        nodes=6, zones=3, pods_per_node=3, control_plane_nodes=1, seed=7, users=USERS
    )
    settings = SimulatorSettings(
        host="127.0.0.1", port=0, kubelets=False, controllers=False, scenario=scenario
    )
    server = build_server(settings, authorization="RBAC")
    await server.start()
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    try:
        async with aiohttp.ClientSession(base_url=server.url, headers=headers) as admin:
            for doc in RBAC_OBJECTS:
                plural = "clusterroles" if doc["kind"] == "ClusterRole" else "clusterrolebindings"
                async with admin.post(f"/apis/{ADMIN_GROUP}/v1/{plural}", json=doc) as response:
                    assert response.status == 201, await response.text()
            yield Cluster(server, admin, tmp_path)
    finally:
        await server.stop()


@pytest.fixture
async def exporters() -> AsyncIterator[list[Exporter]]:
    """Exporters to close (their sources and clients) at the end of the test."""
    built: list[Exporter] = []
    yield built
    for exporter in built:
        await exporter.context.aclose()


def runner(exporter: Exporter, kind: str, target: str) -> SourceRunner[Any]:
    return exporter.sources.views[(kind, target)]


def sample(exporter: Exporter, name: str, **labels: str) -> float | None:
    return exporter.registry.get_sample_value(name, labels)


async def write_events(cluster: Cluster, count: int) -> None:
    for i in range(count):
        event = {
            "metadata": {"name": f"shared-{i}", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "x"},
            "reason": "Test",
            "message": "written between two rounds",
            "type": "Normal",
        }
        async with cluster.admin.post("/api/v1/namespaces/default/events", json=event) as resp:
            assert resp.status == 201, await resp.text()


async def refresh_round(exporter: Exporter, targets: list[str], order: str) -> None:
    """One interval: both areas refresh every target, concurrently or one after the other."""
    if order == "together":
        await asyncio.gather(
            *(runner(exporter, kind, t).refresh_once() for t in targets for kind in KINDS)
        )
        return
    kinds = KINDS if order == "apiserver-first" else KINDS[::-1]
    for t in targets:
        for kind in kinds:
            await runner(exporter, kind, t).refresh_once()


async def test_one_fetch_per_target_per_interval_with_both_areas_correct(
    cluster: Cluster, exporters: list[Exporter]
) -> None:
    targets = ["api-a", "api-b"]
    exporter = cluster.exporter(*(cluster.target(t) for t in targets))
    exporters.append(exporter)
    orders = ["together", "apiserver-first", "objects-first", "together", "objects-first"]
    writes: dict[str, float] = {}
    for done, order in enumerate(orders, 1):
        await refresh_round(exporter, targets, order)
        for t in targets:
            for kind in KINDS:
                assert runner(exporter, kind, t).up, runner(exporter, kind, t).last_error
                assert runner(exporter, kind, t).refreshes == done
            # One request per target per round, not one per area.
            assert await cluster.metrics_requests(t) == done, (order, t)
        if done == 2:
            for t in targets:
                value = sample(exporter, "kubeballast_apiserver_event_writes_total", target=t)
                assert value is not None
                writes[t] = value
            await write_events(cluster, 3)

    # Both areas serve what each would have read from the page on its own: the page
    # as it is now (nothing has been served since the last round but scrapes).
    page = await cluster.page()
    objects = parse_apiserver_objects(page)
    summary = summarize(promtext.parse(page, WANTED_FAMILIES))
    for t in targets:
        assert runner(exporter, OBJECTS_KIND, t).snapshot.value == objects
        metrics = runner(exporter, METRICS_KIND, t).snapshot.value
        # APF's wait histogram counts the scrapes themselves (the last, after this
        # target's, is the page read just above): the rest is what was served.
        assert replace(metrics.summary, apf_wait={}) == replace(summary, apf_wait={})
        assert metrics.summary.apf_wait.keys() == summary.apf_wait.keys()
        assert metrics.evaluation.evaluated
        assert not metrics.evaluation.congested
        labels = {"target": t}
        assert sample(exporter, "kubeballast_apiserver_event_writes_total", **labels) == (
            writes[t] + 3
        )
        assert sample(
            exporter, "kubeballast_apiserver_storage_objects", resource="configmaps", **labels
        ) == cluster.server.store.count(CONFIGMAPS)
        assert sample(exporter, "kubeballast_apiserver_inflight_limit_seats", **labels) == 602.0
        assert sample(exporter, "kubeballast_apiserver_congestion_evaluated", **labels) == 1.0
        assert sample(exporter, "kubeballast_apiserver_requests_total", code_class="2xx", **labels)


async def test_a_failing_target_is_down_in_both_areas_on_one_request(
    cluster: Cluster, exporters: list[Exporter], free_port: int
) -> None:
    dead = cluster.target("api-dead", url=f"http://127.0.0.1:{free_port}")
    exporter = cluster.exporter(cluster.target("api-a"), cluster.target("api-denied"), dead)
    exporters.append(exporter)
    rounds = 3
    for order in ["together", "apiserver-first", "objects-first"][:rounds]:
        await refresh_round(exporter, ["api-a", "api-denied", "api-dead"], order)

    # The 403 was asked for once per round, and both areas counted it.
    assert await cluster.metrics_requests("api-denied", "denied") == rounds
    assert await cluster.metrics_requests("api-denied") == 0
    for target, reason in (("api-denied", "auth"), ("api-dead", "connect")):
        for kind in KINDS:
            labels = {"kind": kind, "target": target}
            assert sample(exporter, "kubeballast_source_up", **labels) == 0.0
            errors = sample(
                exporter, "kubeballast_source_refresh_errors_total", reason=reason, **labels
            )
            assert errors == rounds, (target, kind)
        assert sample(exporter, "kubeballast_apiserver_congestion_evaluated", target=target) == 0
        assert sample(exporter, "kubeballast_apiserver_event_writes_total", target=target) is None
        assert (
            sample(
                exporter,
                "kubeballast_apiserver_storage_objects",
                target=target,
                resource="configmaps",
            )
            is None
        )
    # The healthy target beside them: both areas up, one request per round.
    assert await cluster.metrics_requests("api-a") == rounds
    for kind in KINDS:
        assert sample(exporter, "kubeballast_source_up", kind=kind, target="api-a") == 1.0


async def test_on_their_own_schedule_the_areas_share_each_fetch(
    cluster: Cluster,
    exporters: list[Exporter],
    local_server: Callable[[web.Application], Any],
    eventually: Callable[..., Any],
) -> None:
    # The shortest interval allowed, with its +-10 % jitter: the two runners drift
    # against each other, and whichever comes first fetches for both.
    exporter = cluster.exporter(cluster.target("api-a", interval=1.0))
    exporters.append(exporter)
    runners = [runner(exporter, kind, "api-a") for kind in KINDS]
    async with local_server(exporter.create_app()):
        await eventually(lambda: min(r.refreshes for r in runners) >= 6, within=60.0)
    # Stopped: the counts no longer move.
    refreshes = [r.refreshes for r in runners]
    # (A 1 s timeout may expire on a loaded machine: a failed fetch is shared too.)
    assert all(r.last_success is not None for r in runners), [r.last_error for r in runners]
    requests = await cluster.metrics_requests("api-a")
    # Without sharing this would be sum(refreshes), about twice as many.
    assert requests <= max(refreshes) + 1, (requests, refreshes)


# -- the shared scrape's rules -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_readers_on_different_intervals_reuse_a_fresh_enough_fetch(
    cluster: Cluster,
) -> None:
    clock = Clock()
    async with TargetClient(cluster.target("api-a")) as client:
        scrape = SharedMetricsScrape(client, monotonic=clock)
        fast = scrape.reader("fast", WANTED_FAMILIES, max_age_seconds=1.0)
        slow = scrape.reader("slow", APISERVER_FAMILIES, max_age_seconds=5.0)
        # (reader, time, fetches after its read)
        steps = [
            (fast, 0.0, 1),
            (slow, 0.5, 1),  # fast's page, 0.5 s old
            (fast, 1.0, 2),  # fast never gets the same page twice
            (fast, 2.0, 3),
            (slow, 2.5, 3),  # the newest of fast's pages
            (slow, 9.0, 4),  # slow already took that one
            (fast, 9.5, 4),  # slow's page, 0.5 s old
            (fast, 12.0, 5),  # fast took it: a new one
            (slow, 17.5, 6),  # fast's page is 5.5 s old: too old for slow
            (fast, 18.0, 6),  # slow's page, 0.5 s old
            (slow, 40.0, 7),
            (fast, 41.5, 8),  # slow's page is 1.5 s old: too old for fast
        ]
        for step, (reader, at, fetches) in enumerate(steps):
            clock.now = 100.0 + at
            families = await reader.read()
            assert set(families) >= {"apiserver_storage_objects"} | (
                {"apiserver_flowcontrol_nominal_limit_seats"} if reader is fast else set()
            )
            assert scrape.fetches == fetches, step
            assert await cluster.metrics_requests("api-a") == fetches, step
        with pytest.raises(ValueError, match="duplicate /metrics reader 'fast'"):
            scrape.reader("fast", WANTED_FAMILIES, max_age_seconds=1.0)
        await scrape.aclose()


@dataclass
class FakeTarget:
    """A target whose /metrics answers only when released, counting requests."""

    body: str
    status: int = 200
    requests: int = 0

    def __post_init__(self) -> None:
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        await self.release.wait()
        return web.Response(text=self.body, status=self.status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        return app


PAGE = """\
# TYPE apiserver_storage_objects gauge
apiserver_storage_objects{resource="pods"} 12
# TYPE apiserver_flowcontrol_nominal_limit_seats gauge
apiserver_flowcontrol_nominal_limit_seats{priority_level="global-default"} 49
"""


async def test_a_reader_giving_up_does_not_cancel_the_fetch_for_the_other(
    local_server: Callable[[web.Application], Any], eventually: Callable[..., Any]
) -> None:
    fake = FakeTarget(PAGE)
    async with (
        local_server(fake.app()) as url,
        TargetClient(TargetConfig(name="fake", url=url)) as client,
    ):
        scrape = SharedMetricsScrape(client)
        first = scrape.reader("first", WANTED_FAMILIES, max_age_seconds=15.0)
        second = scrape.reader("second", APISERVER_FAMILIES, max_age_seconds=15.0)
        waiting = asyncio.create_task(first.read())
        await eventually(lambda: fake.requests == 1)
        joined = asyncio.create_task(second.read())
        waiting.cancel()  # as its source's timeout would
        fake.release.set()
        families = await joined
        assert families["apiserver_storage_objects"][0].value == 12.0
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert fake.requests == 1
        # The one that gave up takes the page it missed, still fresh.
        assert (await first.read())["apiserver_flowcontrol_nominal_limit_seats"]
        assert fake.requests == 1
        await scrape.aclose()


async def test_errors_are_shared_and_a_bad_line_fails_only_its_readers(
    local_server: Callable[[web.Application], Any],
) -> None:
    fake = FakeTarget(PAGE + 'apiserver_storage_objects{resource="leases} 3\n', status=503)
    fake.release.set()
    async with (
        local_server(fake.app()) as url,
        TargetClient(TargetConfig(name="fake", url=url)) as client,
    ):
        scrape = SharedMetricsScrape(client)
        congestion = scrape.reader("apiserver_metrics", WANTED_FAMILIES, max_age_seconds=15.0)
        objects = scrape.reader("apiserver_objects", APISERVER_FAMILIES, max_age_seconds=15)
        outcomes = await asyncio.gather(congestion.read(), objects.read(), return_exceptions=True)
        assert [type(o) for o in outcomes] == [SourceError, SourceError]
        assert {o.reason for o in outcomes if isinstance(o, SourceError)} == {"http_5xx"}
        assert fake.requests == 1

        fake.status = 200
        families = await congestion.read()  # a new fetch: it took the failed one
        assert families["apiserver_flowcontrol_nominal_limit_seats"][0].value == 49.0
        with pytest.raises(promtext.ParseError):
            await objects.read()  # the malformed line is in its family only
        assert fake.requests == 2
        await scrape.aclose()
