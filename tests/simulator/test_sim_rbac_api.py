"""RBAC through the API: the simulator decides as kube-apiserver's RBAC authorizer does.

Roles and bindings are created through the API by the admin (system:masters, which
RBAC never asks), service-account tokens are minted through ``/_sim/tokens``, and every
request is made with kubernetes-asyncio clients of those tokens, as the product makes
them. Covered: cluster and namespaced roles, a RoleBinding of a ClusterRole,
subresources, resourceNames (also on a watch narrowed by ``metadata.name``),
non-resource URLs, watch as its own verb, the exact 403 ``Status``, the usage record
at ``/_sim/authz/usage``, switching the mode at run time, and that the default
(AlwaysAllow) leaves everybody allowed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from kubeballast.core.promtext import parse
from kubeballast.simulator.kubeconfig import api_client, write_kubeconfig
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

RBAC_GROUP = "rbac.authorization.k8s.io"
SA_NAMESPACE = "team-a"
SA_USER = "system:serviceaccount:team-a:tester"


def settings() -> SimulatorSettings:
    return SimulatorSettings(
        kubelets=False,
        controllers=False,
        scenario=ScenarioSettings(
            nodes=3, zones=3, pods_per_node=2, control_plane_nodes=1, users={"token-alice": "alice"}
        ),
    )


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    sim = build_server(settings(), authorization="RBAC")
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


ClientFactory = Callable[[str], Awaitable[Any]]


@pytest.fixture
async def client_for(server: ApiServer, tmp_path: Path) -> AsyncIterator[ClientFactory]:
    """``await client_for(token)``: a kubernetes-asyncio client with that bearer token."""
    made: list[Any] = []

    async def make(token: str) -> Any:
        path = tmp_path / f"kubeconfig-{len(made)}"
        write_kubeconfig(path, server.url, token)
        made.append(await api_client(path))
        return made[-1]

    try:
        yield make
    finally:
        for c in made:
            await c.close()


@pytest.fixture
async def admin(client_for: ClientFactory, server: ApiServer) -> Any:
    return await client_for(server.admin_token)


@pytest.fixture
async def control(server: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with aiohttp.ClientSession(base_url=server.url, headers=headers) as session:
        yield session


async def mint(control: aiohttp.ClientSession, namespace: str, name: str) -> str:
    async with control.post(
        "/_sim/tokens", json={"namespace": namespace, "serviceAccount": name}
    ) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["username"] == f"system:serviceaccount:{namespace}:{name}"
    return str(body["token"])


@pytest.fixture
async def tester(control: aiohttp.ClientSession, client_for: ClientFactory) -> Any:
    """A client of the service account team-a/tester (no permissions until bound)."""
    return await client_for(await mint(control, SA_NAMESPACE, "tester"))


def sa_subject() -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": "tester", "namespace": SA_NAMESPACE}


async def grant_cluster(admin: Any, name: str, rules: list[dict[str, Any]]) -> None:
    api = k8s.RbacAuthorizationV1Api(admin)
    await api.create_cluster_role({"metadata": {"name": name}, "rules": rules})
    await api.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
            "subjects": [sa_subject()],
        }
    )


async def grant_namespaced(
    admin: Any, namespace: str, name: str, rules: list[dict[str, Any]]
) -> None:
    api = k8s.RbacAuthorizationV1Api(admin)
    await api.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    await api.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
            "subjects": [sa_subject()],
        },
    )


async def forbidden(call: Awaitable[Any]) -> dict[str, Any]:
    """The Status body of the 403 ``call`` must fail with."""
    with pytest.raises(ApiException) as raised:
        await call
    assert raised.value.status == 403, raised.value.body
    body: dict[str, Any] = json.loads(raised.value.body)
    return body


def forbidden_text(verb: str, resource: str, group: str, where: str) -> str:
    return f'User "{SA_USER}" cannot {verb} resource "{resource}" in API group "{group}" {where}'


# -- denial, exactly as the real apiserver words it ---------------------------------------


async def test_without_a_binding_every_resource_request_is_forbidden(tester: Any) -> None:
    body = await forbidden(k8s.CoreV1Api(tester).list_namespaced_pod("team-a"))
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "pods is forbidden: "
        + forbidden_text("list", "pods", "", 'in the namespace "team-a"'),
        "reason": "Forbidden",
        "details": {"kind": "pods"},
        "code": 403,
    }
    body = await forbidden(k8s.AppsV1Api(tester).read_namespaced_deployment("x", "team-a"))
    assert body["message"] == 'deployments.apps "x" is forbidden: ' + forbidden_text(
        "get", "deployments", "apps", 'in the namespace "team-a"'
    )
    assert body["details"] == {"group": "apps", "kind": "deployments", "name": "x"}
    body = await forbidden(k8s.CoreV1Api(tester).list_node())
    assert body["message"] == "nodes is forbidden: " + forbidden_text(
        "list", "nodes", "", "at the cluster scope"
    )


async def test_discovery_and_public_info_stay_open(
    server: ApiServer, tester: Any, client_for: ClientFactory
) -> None:
    # system:discovery and system:public-info-viewer are bound to every authenticated
    # user; anonymous requests get the public paths only.
    versions = await k8s.CoreApi(tester).get_api_versions()
    assert versions.versions == ["v1"]
    groups = await k8s.ApisApi(tester).get_api_versions()
    assert RBAC_GROUP in {g.name for g in groups.groups}
    async with aiohttp.ClientSession(base_url=server.url) as anonymous:
        for path in ("/livez", "/readyz", "/healthz", "/version"):
            async with anonymous.get(path) as response:
                assert response.status == 200, path


# -- grants ---------------------------------------------------------------------------------------


async def test_a_clusterrole_grants_its_verbs_everywhere_and_nothing_else(
    admin: Any, tester: Any
) -> None:
    await grant_cluster(
        admin, "pod-reader", [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]
    )
    core = k8s.CoreV1Api(tester)
    everywhere = await core.list_pod_for_all_namespaces()
    assert len(everywhere.items) > 0
    pod = everywhere.items[-1].metadata
    assert (await core.read_namespaced_pod(pod.name, pod.namespace)).metadata.uid == pod.uid
    body = await forbidden(core.delete_namespaced_pod(pod.name, pod.namespace))
    assert body["message"] == f'pods "{pod.name}" is forbidden: ' + forbidden_text(
        "delete", "pods", "", f'in the namespace "{pod.namespace}"'
    )
    await forbidden(core.list_namespaced_config_map(pod.namespace))


async def test_a_role_grants_only_in_its_namespace(admin: Any, tester: Any) -> None:
    await grant_namespaced(
        admin,
        "team-b",
        "cm-writer",
        [{"verbs": ["create", "get"], "apiGroups": [""], "resources": ["configmaps"]}],
    )
    core = k8s.CoreV1Api(tester)
    await core.create_namespaced_config_map("team-b", {"metadata": {"name": "mine"}})
    assert (await core.read_namespaced_config_map("mine", "team-b")).metadata.name == "mine"
    await forbidden(core.create_namespaced_config_map("team-c", {"metadata": {"name": "mine"}}))
    # A cluster-wide list is not a list in every namespace the role covers.
    await forbidden(core.list_config_map_for_all_namespaces())


async def test_a_rolebinding_of_a_clusterrole_grants_it_in_one_namespace(
    admin: Any, tester: Any
) -> None:
    rbac_api = k8s.RbacAuthorizationV1Api(admin)
    await rbac_api.create_cluster_role(
        {
            "metadata": {"name": "lease-reader"},
            "rules": [
                {"verbs": ["list"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"]}
            ],
        }
    )
    await rbac_api.create_namespaced_role_binding(
        "kube-node-lease",
        {
            "metadata": {"name": "lease-reader"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "lease-reader"},
            "subjects": [sa_subject()],
        },
    )
    coordination = k8s.CoordinationV1Api(tester)
    leases = await coordination.list_namespaced_lease("kube-node-lease")
    assert len(leases.items) == 4
    body = await forbidden(coordination.list_namespaced_lease("kube-system"))
    assert body["message"] == "leases.coordination.k8s.io is forbidden: " + forbidden_text(
        "list", "leases", "coordination.k8s.io", 'in the namespace "kube-system"'
    )


async def test_subresources_need_rules_of_their_own(admin: Any, tester: Any) -> None:
    await grant_cluster(
        admin,
        "node-status",
        [
            {"verbs": ["get", "patch"], "apiGroups": [""], "resources": ["nodes"]},
            {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/eviction"]},
        ],
    )
    core = k8s.CoreV1Api(tester)
    await core.patch_node("node-0000", {"metadata": {"labels": {"checked": "yes"}}})
    body = await forbidden(core.patch_node_status("node-0000", {"status": {"conditions": []}}))
    assert body["message"] == 'nodes "node-0000" is forbidden: ' + forbidden_text(
        "patch", "nodes/status", "", "at the cluster scope"
    )
    # pods/eviction is authorized before routing: allowed, the simulator then answers
    # that it does not serve it (404); a rule for pods alone would not have let it by.
    pod = "some-pod"
    eviction = {"metadata": {"name": pod, "namespace": "team-a"}}
    with pytest.raises(ApiException) as raised:
        await core.create_namespaced_pod_eviction(pod, "team-a", eviction)
    assert raised.value.status == 404
    await forbidden(core.create_namespaced_pod_binding(pod, "team-a", {"target": {"name": "x"}}))


async def test_star_slash_subresource_covers_that_subresource_of_every_resource(
    admin: Any, tester: Any
) -> None:
    await grant_cluster(
        admin,
        "statuses",
        [{"verbs": ["get"], "apiGroups": ["", "apps"], "resources": ["*/status"]}],
    )
    assert (await k8s.CoreV1Api(tester).read_node_status("node-0000")).metadata.name
    await forbidden(k8s.CoreV1Api(tester).read_node("node-0000"))


async def test_resource_names_allow_one_object_and_a_watch_narrowed_to_it(
    admin: Any, tester: Any
) -> None:
    await k8s.CoreV1Api(admin).create_namespaced_config_map(
        "team-a", {"metadata": {"name": "params"}, "data": {"paused": "false"}}
    )
    await grant_namespaced(
        admin,
        "team-a",
        "params",
        [
            {
                "verbs": ["get", "update", "list", "watch"],
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["params"],
            }
        ],
    )
    core = k8s.CoreV1Api(tester)
    params = await core.read_namespaced_config_map("params", "team-a")
    params.data["paused"] = "true"
    await core.replace_namespaced_config_map("params", "team-a", params)
    body = await forbidden(core.read_namespaced_config_map("other", "team-a"))
    assert body["details"] == {"kind": "configmaps", "name": "other"}
    # A list carries no name: a rule with resourceNames never allows it ...
    await forbidden(core.list_namespaced_config_map("team-a"))
    # ... unless a field selector names the object (requestinfo.go takes the name from it).
    narrowed = await core.list_namespaced_config_map(
        "team-a", field_selector="metadata.name=params"
    )
    assert [c.metadata.name for c in narrowed.items] == ["params"]
    stream = k8s_watch.Watch()
    seen = []
    async with stream:
        async for event in stream.stream(
            core.list_namespaced_config_map,
            "team-a",
            field_selector="metadata.name=params",
            timeout_seconds=1,
        ):
            seen.append((event["type"], event["object"].metadata.name))
            stream.stop()
    assert seen == [("ADDED", "params")]


async def test_watch_is_a_verb_of_its_own(admin: Any, tester: Any) -> None:
    await grant_cluster(
        admin, "lister", [{"verbs": ["list"], "apiGroups": [""], "resources": ["nodes"]}]
    )
    core = k8s.CoreV1Api(tester)
    assert len((await core.list_node()).items) == 4
    body = await forbidden(core.list_node(watch=True, timeout_seconds=1))
    assert body["message"] == "nodes is forbidden: " + forbidden_text(
        "watch", "nodes", "", "at the cluster scope"
    )


async def test_deleting_a_collection_is_its_own_verb(admin: Any, tester: Any) -> None:
    await grant_namespaced(
        admin,
        "team-c",
        "cm-deleter",
        [{"verbs": ["delete", "list"], "apiGroups": [""], "resources": ["configmaps"]}],
    )
    core = k8s.CoreV1Api(tester)
    names = [c.metadata.name for c in (await core.list_namespaced_config_map("team-c")).items]
    await core.delete_namespaced_config_map(names[0], "team-c")
    body = await forbidden(core.delete_collection_namespaced_config_map("team-c"))
    assert body["message"] == "configmaps is forbidden: " + forbidden_text(
        "deletecollection", "configmaps", "", 'in the namespace "team-c"'
    )


async def test_non_resource_urls(
    server: ApiServer, admin: Any, control: aiohttp.ClientSession
) -> None:
    token = await mint(control, "monitoring", "scraper")
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base_url=server.url, headers=headers) as scraper:
        async with scraper.get("/metrics") as response:
            assert response.status == 403
            assert await response.json() == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": 'forbidden: User "system:serviceaccount:monitoring:scraper" cannot '
                'get path "/metrics"',
                "reason": "Forbidden",
                "details": {},
                "code": 403,
            }
        rbac_api = k8s.RbacAuthorizationV1Api(admin)
        await rbac_api.create_cluster_role(
            {
                "metadata": {"name": "scrape"},
                "rules": [{"verbs": ["get"], "nonResourceURLs": ["/metrics", "/livez/*"]}],
            }
        )
        await rbac_api.create_cluster_role_binding(
            {
                "metadata": {"name": "scrape"},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "scrape"},
                "subjects": [
                    {"kind": "ServiceAccount", "name": "scraper", "namespace": "monitoring"}
                ],
            }
        )
        async with scraper.get("/metrics") as response:
            assert response.status == 200
            text = await response.text()
        async with scraper.get("/livez/etcd") as response:
            assert response.status == 200
        async with scraper.get("/readyz/etcd") as response:
            assert response.status == 403
    assert "apiserver_request_total" in text


async def test_a_forbidden_request_is_counted_with_its_code(
    tester: Any, control: aiohttp.ClientSession
) -> None:
    # Authorization runs after priority and fairness (DefaultBuildHandlerChain): the
    # request was dispatched, and answered 403.
    await forbidden(k8s.CoreV1Api(tester).list_namespaced_pod("team-a"))
    async with control.get("/metrics") as response:
        families = parse(await response.text(), {"apiserver_request_total"})
    codes = {
        s.labels["code"]
        for s in families["apiserver_request_total"]
        if s.labels["resource"] == "pods" and s.labels["verb"] == "LIST"
    }
    assert codes == {"403"}


async def test_a_binding_to_a_missing_role_says_so_in_the_403(admin: Any, tester: Any) -> None:
    await k8s.RbacAuthorizationV1Api(admin).create_cluster_role_binding(
        {
            "metadata": {"name": "dangling"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "not-there"},
            "subjects": [sa_subject()],
        }
    )
    body = await forbidden(k8s.CoreV1Api(tester).list_node())
    assert body["message"] == (
        "nodes is forbidden: "
        + forbidden_text("list", "nodes", "", "at the cluster scope")
        + ': RBAC: clusterrole.rbac.authorization.k8s.io "not-there" not found'
    )


async def test_rbac_objects_are_validated_on_create_and_update(admin: Any) -> None:
    api = k8s.RbacAuthorizationV1Api(admin)
    with pytest.raises(ApiException) as raised:
        await api.create_cluster_role(
            {"metadata": {"name": "bad"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}]}
        )
    assert raised.value.status == 422
    body = json.loads(raised.value.body)
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Required value: verbs must contain at least one value",
            "field": "rules[0].verbs",
        }
    ]
    await grant_cluster(
        admin, "fine", [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]
    )
    with pytest.raises(ApiException) as raised:
        await api.patch_cluster_role_binding("fine", {"roleRef": {"name": "other"}})
    assert raised.value.status == 422
    assert (
        "roleRef: Invalid value: cannot change roleRef" in json.loads(raised.value.body)["message"]
    )


# -- the control API ----------------------------------------------------------------------------


async def test_usage_records_each_users_requests_and_the_rule_that_allowed_them(
    admin: Any, tester: Any, control: aiohttp.ClientSession
) -> None:
    await grant_cluster(
        admin,
        "pod-reader",
        [
            {"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]},
            {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]},
        ],
    )
    core = k8s.CoreV1Api(tester)
    await core.list_namespaced_pod("team-a")
    await core.list_namespaced_pod("team-a")
    await forbidden(core.list_namespaced_config_map("team-a"))
    async with control.get("/_sim/authz/usage") as response:
        usage = await response.json()
    assert usage["mode"] == "RBAC"
    # The admin (system:masters) is never asked about, so never recorded.
    assert set(usage["users"]) == {SA_USER}
    mine = usage["users"][SA_USER]
    pods = next(e for e in mine["allowed"] if e["resource"] == "pods")
    assert {k: pods[k] for k in ("verb", "apiGroup", "namespace", "subresource", "count")} == {
        "verb": "list",
        "apiGroup": "",
        "namespace": "team-a",
        "subresource": "",
        "count": 2,
    }
    assert pods["allowedBy"]["role"] == {
        "kind": "ClusterRole",
        "namespace": "",
        "name": "pod-reader",
    }
    assert pods["allowedBy"]["ruleIndex"] == 1
    assert pods["allowedBy"]["rule"] == {
        "verbs": ["list"],
        "apiGroups": [""],
        "resources": ["pods"],
    }
    assert [(d["verb"], d["resource"], d["namespace"]) for d in mine["denied"]] == [
        ("list", "configmaps", "team-a")
    ]
    async with control.post("/_sim/authz", json={"resetUsage": True}) as response:
        assert response.status == 200
    async with control.get("/_sim/authz/usage") as response:
        assert (await response.json())["users"] == {}


async def test_the_mode_switches_at_run_time(
    tester: Any, control: aiohttp.ClientSession, server: ApiServer
) -> None:
    async with control.post("/_sim/authz", json={"mode": "AlwaysAllow"}) as response:
        assert await response.json() == {"mode": "AlwaysAllow"}
    assert len((await k8s.CoreV1Api(tester).list_node()).items) == 4
    async with control.post("/_sim/authz", json={"mode": "RBAC"}) as response:
        assert response.status == 200
    await forbidden(k8s.CoreV1Api(tester).list_node())
    async with control.get("/_sim/state") as response:
        assert (await response.json())["authorization"] == "RBAC"
    async with control.post("/_sim/authz", json={"mode": "Webhook"}) as response:
        assert response.status == 400
        assert "AlwaysAllow, RBAC" in (await response.json())["message"]
    assert server.authorization_mode == "RBAC"


async def test_the_control_api_stays_admin_only(server: ApiServer, tester: Any) -> None:
    async with aiohttp.ClientSession(
        base_url=server.url, headers={"Authorization": "Bearer token-alice"}
    ) as alice:
        for method, path in (
            ("GET", "/_sim/authz/usage"),
            ("POST", "/_sim/tokens"),
            ("POST", "/_sim/authz"),
        ):
            async with alice.request(method, path, json={"mode": "AlwaysAllow"}) as response:
                assert response.status == 403, path
    assert server.authorization_mode == "RBAC"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"namespace": "Team_A", "serviceAccount": "x"}, "namespace: 'Team_A' is not a valid"),
        ({"namespace": "a", "serviceAccount": ""}, "name: '' is not a valid"),
        ({"namespace": "a"}, "namespace and serviceAccount: both must be strings"),
    ],
)
async def test_minting_refuses_bad_names(
    control: aiohttp.ClientSession, body: dict[str, str], message: str
) -> None:
    async with control.post("/_sim/tokens", json=body) as response:
        assert response.status == 400
        assert message in (await response.json())["message"]


async def test_the_default_is_always_allow(tmp_path: Path) -> None:
    sim = build_server(settings())
    await sim.start()
    try:
        path = tmp_path / "kubeconfig"
        write_kubeconfig(path, sim.url, "token-alice")
        alice = await api_client(path)
        try:
            await k8s.CoreV1Api(alice).delete_namespaced_config_map(
                (await k8s.CoreV1Api(alice).list_namespaced_config_map("team-a"))
                .items[0]
                .metadata.name,
                "team-a",
            )
        finally:
            await alice.close()
        assert sim.authorization_mode == "AlwaysAllow"
        assert sim.access_log.usage() == {"users": {}}
        with pytest.raises(ValueError, match="authorization mode must be one of"):
            build_server(settings(), authorization="Node")
    finally:
        await sim.stop()
