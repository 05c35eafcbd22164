"""The simulator classifies with the FlowSchemas and priority levels clients store.

Why: the eviction guard ships a FlowSchema and a priority level of its own
(deploy/eviction-guard/flowcontrol.yaml) so that the receiver's writes (the eviction-pause
ConfigMap) land while the apiserver sheds load. These tests make that measurable: the
manifest, loaded from deploy/ as `kubectl apply` would send it, is created in the
simulated apiserver; a congestion that sheds the level the receiver would otherwise land
in (workload-low, through the suggested ``service-accounts`` schema) rejects the
receiver's write without the FlowSchema and lets it through with it. Around that: the
digest rules of apf_controller.go (matchingPrecedence then name, dangling schemas left
out, broken levels ignored, mandatory objects supplied, NominalCL shared with the new
level) and what /metrics and /_sim/state report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families
from sim_apf_objects import flow_schema, limited_level

from kubeballast.simulator import apf
from kubeballast.simulator.kubeconfig import api_client, write_kubeconfig
from kubeballast.simulator.server import ApiServer

GUARD_FLOWCONTROL = (
    Path(__file__).resolve().parents[2] / "deploy" / "eviction-guard" / "flowcontrol.yaml"
)
EXPORTER_FLOWCONTROL = (
    Path(__file__).resolve().parents[2] / "deploy" / "flowcontrol" / "exporter.yaml"
)
NAMESPACE_OBJECT = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ""}}


def guard_objects() -> tuple[dict[str, Any], dict[str, Any]]:
    """(FlowSchema, PriorityLevelConfiguration) of the eviction guard, from deploy/."""
    docs = [d for d in yaml.safe_load_all(GUARD_FLOWCONTROL.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["FlowSchema", "PriorityLevelConfiguration"]
    return by_kind["FlowSchema"], by_kind["PriorityLevelConfiguration"]


def guard_service_accounts() -> list[tuple[str, str]]:
    """(namespace, name) of every ServiceAccount subject of the guard's FlowSchema."""
    flow, _ = guard_objects()
    return [
        (s["serviceAccount"]["namespace"], s["serviceAccount"]["name"])
        for rule in flow["spec"]["rules"]
        for s in rule["subjects"]
        if s["kind"] == "ServiceAccount"
    ]


def sa_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def sa_subject(namespace: str, name: str) -> dict[str, Any]:
    return {"kind": "ServiceAccount", "serviceAccount": {"namespace": namespace, "name": name}}


def configuration(
    extra_flow_schemas: Sequence[dict[str, Any]] = (),
    extra_levels: Sequence[dict[str, Any]] = (),
    *,
    drop: frozenset[str] = frozenset(),
) -> apf.Configuration:
    """The defaults (minus ``drop``, by name) plus the given objects, digested."""
    schemas = [o for o in apf.default_flowschemas() if o["metadata"]["name"] not in drop]
    levels = [o for o in apf.default_priority_levels() if o["metadata"]["name"] not in drop]
    return apf.Configuration.from_objects([*schemas, *extra_flow_schemas], [*levels, *extra_levels])


def configmap_write(config: apf.Configuration, user: str, namespace: str) -> tuple[str, str]:
    return config.classify(user, (), "create", "", "configmaps", namespace)


# --- the digest, without a server ------------------------------------------------------


def test_apf_stored_guard_flowschema_takes_the_receiver_and_janitor_only() -> None:
    flow, level = guard_objects()
    with_guard = configuration([flow], [level])
    own = (flow["metadata"]["name"], level["metadata"]["name"])
    accounts = guard_service_accounts()
    assert {name for _, name in accounts} == {"kube-ballast-receiver", "kube-ballast-janitor"}
    for namespace, name in accounts:
        user = sa_user(namespace, name)
        assert configmap_write(apf.DEFAULT, user, namespace) == ("service-accounts", "workload-low")
        assert configmap_write(with_guard, user, namespace) == own
        # Leases and evictions too; cluster-scoped nodes as well (clusterScope: true).
        assert (
            with_guard.classify(user, (), "update", "coordination.k8s.io", "leases", namespace)
            == own
        )
        assert (
            with_guard.classify(user, (), "create", "", "pods", "team-a", subresource="eviction")
            == own
        )
        assert with_guard.classify(user, (), "get", "", "nodes", "") == own
        # What the rules do not list stays where it was.
        assert with_guard.classify(user, (), "list", "apps", "deployments", namespace) == (
            "service-accounts",
            "workload-low",
        )
    # Another service account of the same namespace is not captured.
    other = sa_user("kube-ballast", "kube-ballast-exporter")
    assert configmap_write(with_guard, other, "kube-ballast") == (
        "service-accounts",
        "workload-low",
    )
    # The defaults are untouched by the stored copy.
    assert configmap_write(with_guard, "system:node:n1", "kube-node-lease")[1] == "system"
    assert with_guard.classify(
        "system:node:n1", (), "update", "coordination.k8s.io", "leases", "kube-node-lease"
    ) == (
        "system-node-high",
        "node-high",
    )


def test_apf_stored_exporter_flowschema_takes_its_reads_only() -> None:
    docs = [d for d in yaml.safe_load_all(EXPORTER_FLOWCONTROL.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    config = configuration([by_kind["FlowSchema"]], [by_kind["PriorityLevelConfiguration"]])
    own = (
        by_kind["FlowSchema"]["metadata"]["name"],
        by_kind["PriorityLevelConfiguration"]["metadata"]["name"],
    )
    user = sa_user("kube-ballast", "kube-ballast-exporter")
    assert config.classify(user, (), "list", "", "pods", "") == own
    assert (
        config.classify(user, (), "watch", "coordination.k8s.io", "leases", "kube-node-lease")
        == own
    )
    assert config.classify(user, (), "get", "", "", "", non_resource_path="/metrics") == own
    assert configmap_write(config, user, "kube-ballast") == ("service-accounts", "workload-low")


def test_apf_stored_matching_precedence_then_name_decides() -> None:
    receiver = sa_subject("kube-ballast", "kube-ballast-receiver")
    user = sa_user("kube-ballast", "kube-ballast-receiver")
    levels = [limited_level("first", 5), limited_level("second", 5)]
    # Lower matchingPrecedence wins whatever the names.
    config = configuration(
        [
            flow_schema("zz-early", "first", 500, [receiver]),
            flow_schema("aa-late", "second", 600, [receiver]),
        ],
        levels,
    )
    assert configmap_write(config, user, "kube-ballast") == ("zz-early", "first")
    # Equal precedence: the name decides (apihelpers.FlowSchemaSequence).
    config = configuration(
        [
            flow_schema("b-schema", "first", 700, [receiver]),
            flow_schema("a-schema", "second", 700, [receiver]),
        ],
        levels,
    )
    assert configmap_write(config, user, "kube-ballast") == ("a-schema", "second")
    # Behind service-accounts (9000) a schema never sees the receiver's requests ...
    config = configuration([flow_schema("too-late", "first", 9500, [receiver])], levels)
    assert configmap_write(config, user, "kube-ballast") == ("service-accounts", "workload-low")
    # ... and ahead of system-node-high (400) one can capture the kubelets': first match wins.
    nodes = {"kind": "Group", "group": {"name": "system:nodes"}}
    config = configuration([flow_schema("grab-nodes", "first", 300, [nodes])], levels)
    assert config.classify(
        "system:node:n1", (), "update", "coordination.k8s.io", "leases", "kube-node-lease"
    ) == (
        "grab-nodes",
        "first",
    )
    order = [fs.name for fs in config.flow_schemas]
    assert order.index("grab-nodes") == order.index("system-node-high") - 1


def test_apf_stored_dangling_flowschema_is_left_out() -> None:
    flow, _ = guard_objects()  # its level is not created: the schema dangles
    config = configuration([flow])
    namespace, name = guard_service_accounts()[0]
    user = sa_user(namespace, name)
    # digestFlowSchemasLocked ignores it: the request falls through to the next match.
    assert configmap_write(config, user, namespace) == ("service-accounts", "workload-low")
    assert config.dangling == {"kube-ballast-receiver": "kube-ballast-remediation"}
    assert "kube-ballast-receiver" not in config.level_of
    # Where nothing else matches, a dangling schema's requests end in catch-all (the
    # schemas every service account and user would match are dropped here).
    everyone = {"kind": "Group", "group": {"name": "system:authenticated"}}
    config = configuration(
        [flow_schema("everyone", "missing", 50, [everyone])],
        drop=frozenset({"service-accounts", "global-default"}),
    )
    assert configmap_write(config, user, namespace) == ("catch-all", "catch-all")
    assert config.describe()["dangling"] == {"everyone": "missing"}


def test_apf_stored_broken_levels_are_ignored_and_mandatory_objects_supplied() -> None:
    receiver = sa_subject("kube-ballast", "kube-ballast-receiver")
    user = sa_user("kube-ballast", "kube-ballast-receiver")
    # Only the level named "exempt" may be of type Exempt ("non-alignment between name
    # and type"): this one is ignored and its schema dangles.
    sneaky = {
        "apiVersion": apf.API_VERSION,
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": "also-exempt"},
        "spec": {"type": "Exempt", "exempt": {}},
    }
    config = configuration([flow_schema("to-exempt", "also-exempt", 10, [receiver])], [sneaky])
    assert "also-exempt" not in config.priority_levels
    assert "non-alignment" in config.ignored["PriorityLevelConfiguration/also-exempt"]
    assert config.dangling == {"to-exempt": "also-exempt"}
    assert configmap_write(config, user, "kube-ballast") == ("service-accounts", "workload-low")
    # An unreadable schema is ignored with the field that could not be read.
    broken = flow_schema("broken", "workload-high", 10, [{"kind": "Robot"}])
    config = configuration([broken])
    assert "spec.rules[0].subjects[0].kind" in config.ignored["FlowSchema/broken"]
    # With the mandatory objects deleted, the controller supplies them: system:masters
    # stays exempt and nobody is left unclassified.
    config = apf.Configuration.from_objects(
        [flow_schema("only-one", "mine", 100, [receiver])], [limited_level("mine", 10)]
    )
    assert [fs.name for fs in config.flow_schemas] == ["exempt", "only-one", "catch-all"]
    assert config.classify("admin", ("system:masters",), "delete", "", "pods", "x") == (
        "exempt",
        "exempt",
    )
    assert configmap_write(config, "alice", "default") == ("catch-all", "catch-all")
    assert config.is_exempt("exempt")
    assert not config.is_exempt("mine")


def test_apf_stored_level_takes_its_share_of_the_seats() -> None:
    flow, level = guard_objects()
    shares = level["spec"]["limited"]["nominalConcurrencyShares"]
    seats = configuration([flow], [level]).nominal_limit_seats(600)
    total = sum(pl.nominal_concurrency_shares for pl in apf.PRIORITY_LEVELS) + shares
    # NominalCL = ceil(ServerCL * NCS / sum NCS), the new level counted with the others.
    assert seats[level["metadata"]["name"]] == -(-600 * shares // total)
    assert seats["node-high"] == -(-600 * 40 // total) < apf.nominal_limit_seats(600)["node-high"]
    assert seats["exempt"] == 0


def test_apf_stored_namespace_lists_are_honoured() -> None:
    receiver = sa_subject("kube-ballast", "kube-ballast-receiver")
    user = sa_user("kube-ballast", "kube-ballast-receiver")
    config = configuration(
        [
            flow_schema(
                "home-only",
                "mine",
                100,
                [receiver],
                namespaces=["kube-ballast"],
                clusterScope=False,
            )
        ],
        [limited_level("mine", 10)],
    )
    assert configmap_write(config, user, "kube-ballast") == ("home-only", "mine")
    assert configmap_write(config, user, "team-a") == ("service-accounts", "workload-low")
    assert config.classify(user, (), "get", "", "nodes", "") == ("service-accounts", "workload-low")


def test_apf_stored_defaults_parse_back_to_the_default_table() -> None:
    config = apf.Configuration.from_objects(
        apf.default_flowschemas(), apf.default_priority_levels()
    )
    assert config.flow_schemas == apf.FLOW_SCHEMAS
    assert dict(config.priority_levels) == {pl.name: pl for pl in apf.PRIORITY_LEVELS}
    assert not config.dangling
    assert not config.ignored


# --- through the simulated apiserver ----------------------------------------------------

ClientFor = Callable[[str], Awaitable[Any]]
Series = dict[str, list[tuple[dict[str, str], float]]]
"""Exposed sample name -> [(labels, value)]."""


@pytest.fixture
async def client_for(apiserver: ApiServer, tmp_path: Path) -> AsyncIterator[ClientFor]:
    """``await client_for(token)``: a kubernetes-asyncio ApiClient authenticating with it."""
    clients: list[Any] = []

    async def make(token: str) -> Any:
        path = tmp_path / f"kubeconfig-{len(clients)}"
        write_kubeconfig(path, apiserver.url, token)
        c = await api_client(path)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def set_faults(
    session: aiohttp.ClientSession, body: dict[str, Any]
) -> aiohttp.ClientResponse:
    async with session.post("/_sim/faults", json=body) as resp:
        await resp.read()
        return resp


async def metrics(session: aiohttp.ClientSession) -> Series:
    async with session.get("/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def sample(series: Series, name: str, **labels: str) -> float:
    return sum(v for lbls, v in series.get(name, []) if lbls == labels)


def rejected_429(series: Series, level: str, schema: str) -> float:
    return sample(
        series,
        "apiserver_flowcontrol_rejected_requests_total",
        priority_level=level,
        flow_schema=schema,
        reason="queue-full",
    )


async def test_apf_stored_receiver_write_lands_under_congestion_only_with_its_flowschema(
    apiserver: ApiServer, api: Any, admin_session: aiohttp.ClientSession, client_for: ClientFor
) -> None:
    flow, level = guard_objects()
    fs_name, pl_name = flow["metadata"]["name"], level["metadata"]["name"]
    namespace, name = next(
        sa for sa in guard_service_accounts() if sa[1] == "kube-ballast-receiver"
    )
    await k8s.CoreV1Api(api).create_namespace({**NAMESPACE_OBJECT, "metadata": {"name": namespace}})
    receiver = k8s.CoreV1Api(
        await client_for(apiserver.mint_service_account_token(namespace, name))
    )

    # The level the receiver's writes land in without the guard's objects.
    _, shed = apf.classify(sa_user(namespace, name), (), "create", "", "configmaps", namespace)
    assert shed == "workload-low"
    resp = await set_faults(
        admin_session, {"congestion": {"reject_fraction": 1.0, "priority_levels": [shed]}}
    )
    assert resp.status == 200

    def pause(n: int) -> dict[str, Any]:
        return {"metadata": {"name": f"eviction-pause-{n}"}, "data": {"reason": "test"}}

    with pytest.raises(ApiException) as rejected:
        await receiver.create_namespaced_config_map(namespace, pause(1))
    assert rejected.value.status == 429
    assert rejected.value.headers["Retry-After"] == "1"

    # kubectl apply -f deploy/eviction-guard/flowcontrol.yaml, by the (exempt) admin.
    flowcontrol = k8s.FlowcontrolApiserverV1Api(api)
    await flowcontrol.create_priority_level_configuration(level)
    await flowcontrol.create_flow_schema(flow)

    created = await receiver.create_namespaced_config_map(namespace, pause(2))
    created.data["reason"] = "still congested"
    await receiver.replace_namespaced_config_map(created.metadata.name, namespace, created)
    assert (await receiver.read_namespaced_config_map("eviction-pause-2", namespace)).data == {
        "reason": "still congested"
    }

    series = await metrics(admin_session)
    assert rejected_429(series, shed, "service-accounts") == 1
    dispatched = "apiserver_flowcontrol_dispatched_requests_total"
    assert sample(series, dispatched, priority_level=pl_name, flow_schema=fs_name) == 3
    seats = {
        lbls["priority_level"]: v for lbls, v in series["apiserver_flowcontrol_nominal_limit_seats"]
    }
    assert seats[pl_name] == apiserver.apf.current.nominal_limit_seats(600)[pl_name] == 24
    assert seats["node-high"] == 95  # ceil(600 * 40 / 255): the new level's 10 shares count

    # A congestion naming the product's level (or every level) sheds it after all.
    await set_faults(
        admin_session, {"congestion": {"reject_fraction": 1.0, "priority_levels": [pl_name]}}
    )
    with pytest.raises(ApiException) as named:
        await receiver.create_namespaced_config_map(namespace, pause(3))
    assert named.value.status == 429
    await set_faults(admin_session, {"congestion": {"reject_fraction": 1.0}})
    with pytest.raises(ApiException) as everywhere:
        await receiver.create_namespaced_config_map(namespace, pause(4))
    assert everywhere.value.status == 429

    # Without its level the FlowSchema dangles: back to workload-low, shed again.
    await set_faults(
        admin_session, {"congestion": {"reject_fraction": 1.0, "priority_levels": [shed]}}
    )
    await flowcontrol.delete_priority_level_configuration(pl_name)
    with pytest.raises(ApiException) as dangling:
        await receiver.create_namespaced_config_map(namespace, pause(5))
    assert dangling.value.status == 429
    async with admin_session.get("/_sim/state") as resp:
        state = await resp.json()
    assert state["apf"]["dangling"] == {fs_name: pl_name}
    assert fs_name not in [fs["name"] for fs in state["apf"]["flow_schemas"]]
    series = await metrics(admin_session)
    assert rejected_429(series, shed, "service-accounts") == 2
    seats = {
        lbls["priority_level"]: v for lbls, v in series["apiserver_flowcontrol_nominal_limit_seats"]
    }
    assert pl_name not in seats
    assert seats["node-high"] == 98


async def test_apf_stored_congestion_may_name_only_levels_in_force(
    api: Any, admin_session: aiohttp.ClientSession
) -> None:
    _, level = guard_objects()
    pl_name = level["metadata"]["name"]
    resp = await set_faults(admin_session, {"congestion": {"priority_levels": [pl_name]}})
    assert resp.status == 400
    async with admin_session.get("/_sim/state") as state:
        assert (await state.json())["faults"]["congestion"] is None, "nothing changed"
    await k8s.FlowcontrolApiserverV1Api(api).create_priority_level_configuration(level)
    resp = await set_faults(admin_session, {"congestion": {"priority_levels": [pl_name]}})
    assert resp.status == 200


async def test_apf_stored_configuration_is_rebuilt_only_when_flowcontrol_objects_change(
    apiserver: ApiServer, api: Any, user_session: aiohttp.ClientSession
) -> None:
    before = apiserver.apf.rebuilds
    for _ in range(20):
        async with user_session.get("/api/v1/namespaces/team-a/configmaps") as resp:
            assert resp.status == 200
    await k8s.CoreV1Api(api).create_namespaced_config_map(
        "team-a", {"metadata": {"name": "unrelated"}, "data": {}}
    )
    async with user_session.get("/api/v1/namespaces/team-a/configmaps") as resp:
        assert resp.status == 200
    assert apiserver.apf.rebuilds == before, "requests and other writes do not rebuild"
    tester = sa_subject("team-a", "tester")
    await k8s.FlowcontrolApiserverV1Api(api).create_priority_level_configuration(
        limited_level("mine", 10)
    )
    await k8s.FlowcontrolApiserverV1Api(api).create_flow_schema(
        flow_schema("testers", "mine", 100, [tester])
    )
    async with user_session.get("/api/v1/namespaces/team-a/configmaps") as resp:
        assert resp.status == 200
    # Each write is seen by the request after it (the FlowSchema's own create, then the
    # list), not before: two rebuilds.
    assert apiserver.apf.rebuilds == before + 2
    assert apiserver.apf.current.level_of["testers"] == "mine"
