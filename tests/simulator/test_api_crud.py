"""Create, read, list, replace, patch (three ways), status and delete, for every kind the
simulator serves, through kubernetes-asyncio as a product client would use it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from kubeballast.simulator.resources import RESOURCES, ResourceType
from kubeballast.simulator.server import ApiServer

NAMESPACE = "team-c"


def _template(name: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}]},
    }


def _workload(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": _template(name),
            **extra,
        }
    }


_RBAC_RULE = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}


def _rbac_binding(name: str, cluster: bool) -> dict[str, Any]:
    return {
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole" if cluster else "Role",
            "name": "some-role",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "tester", "namespace": "team-a"}],
    }


@dataclass(frozen=True)
class Kind:
    """How kubernetes-asyncio reaches one kind, and a valid object and status for it."""

    plural: str
    group: str
    api: str
    suffix: str
    body: Callable[[str], dict[str, Any]]
    status: dict[str, Any] | None = None

    @property
    def rt(self) -> ResourceType:
        return next(r for r in RESOURCES if (r.group, r.plural) == (self.group, self.plural))

    def _method(self, api_client: Any, op: str, status: bool = False, info: bool = False) -> Any:
        scope = "namespaced_" if self.rt.namespaced else ""
        name = f"{op}_{scope}{self.suffix}{'_status' if status else ''}"
        return getattr(
            getattr(k8s, self.api)(api_client), name + ("_with_http_info" if info else "")
        )

    def _ns(self) -> tuple[str, ...]:
        return (NAMESPACE,) if self.rt.namespaced else ()

    async def create(self, c: Any, body: dict[str, Any], **kw: Any) -> Any:
        return await self._method(c, "create")(*self._ns(), body, **kw)

    async def create_with_info(self, c: Any, body: dict[str, Any]) -> Any:
        """(object, HTTP status, headers)."""
        return await self._method(c, "create", info=True)(*self._ns(), body)

    async def read(self, c: Any, name: str, **kw: Any) -> Any:
        return await self._method(c, "read")(name, *self._ns(), **kw)

    async def list(self, c: Any, **kw: Any) -> Any:
        return await self._method(c, "list")(*self._ns(), **kw)

    async def replace(self, c: Any, name: str, body: Any, **kw: Any) -> Any:
        return await self._method(c, "replace")(name, *self._ns(), body, **kw)

    async def patch(self, c: Any, name: str, body: Any, **kw: Any) -> Any:
        return await self._method(c, "patch")(name, *self._ns(), body, **kw)

    async def delete(self, c: Any, name: str, **kw: Any) -> Any:
        return await self._method(c, "delete")(name, *self._ns(), **kw)

    async def read_status(self, c: Any, name: str) -> Any:
        return await self._method(c, "read", status=True)(name, *self._ns())

    async def replace_status(self, c: Any, name: str, body: Any) -> Any:
        return await self._method(c, "replace", status=True)(name, *self._ns(), body)

    async def patch_status(self, c: Any, name: str, body: Any, **kw: Any) -> Any:
        return await self._method(c, "patch", status=True)(name, *self._ns(), body, **kw)


KINDS: tuple[Kind, ...] = (
    Kind("namespaces", "", "CoreV1Api", "namespace", lambda n: {}, {"phase": "Active"}),
    Kind(
        "nodes",
        "",
        "CoreV1Api",
        "node",
        lambda n: {"spec": {"podCIDR": "10.200.0.0/24"}},
        {"conditions": [{"type": "Ready", "status": "True"}]},
    ),
    Kind(
        "pods",
        "",
        "CoreV1Api",
        "pod",
        lambda n: {"spec": _template(n)["spec"]},
        {"phase": "Running", "podIP": "10.64.9.9"},
    ),
    Kind("configmaps", "", "CoreV1Api", "config_map", lambda n: {"data": {"key": "value"}}),
    Kind("serviceaccounts", "", "CoreV1Api", "service_account", lambda n: {}),
    Kind(
        "events",
        "",
        "CoreV1Api",
        "event",
        lambda n: {
            "involvedObject": {"kind": "Pod", "name": "somepod", "namespace": NAMESPACE},
            "reason": "Testing",
            "message": "a test event",
            "type": "Normal",
        },
    ),
    Kind(
        "services",
        "",
        "CoreV1Api",
        "service",
        lambda n: {"spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"a": "b"}}},
        {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
    ),
    Kind(
        "endpoints",
        "",
        "CoreV1Api",
        "endpoints",
        lambda n: {"subsets": [{"addresses": [{"ip": "10.64.0.9"}], "ports": [{"port": 80}]}]},
    ),
    Kind(
        "leases",
        "coordination.k8s.io",
        "CoordinationV1Api",
        "lease",
        lambda n: {"spec": {"holderIdentity": "tester", "leaseDurationSeconds": 40}},
    ),
    Kind(
        "deployments",
        "apps",
        "AppsV1Api",
        "deployment",
        lambda n: _workload(n, replicas=1),
        {"observedGeneration": 1, "replicas": 1},
    ),
    Kind(
        "replicasets",
        "apps",
        "AppsV1Api",
        "replica_set",
        lambda n: _workload(n, replicas=1),
        {"replicas": 1, "readyReplicas": 1},
    ),
    Kind(
        "statefulsets",
        "apps",
        "AppsV1Api",
        "stateful_set",
        lambda n: _workload(n, replicas=1, serviceName=n),
        {"replicas": 1, "readyReplicas": 1},
    ),
    Kind(
        "daemonsets",
        "apps",
        "AppsV1Api",
        "daemon_set",
        lambda n: _workload(n),
        {
            "currentNumberScheduled": 6,
            "desiredNumberScheduled": 6,
            "numberMisscheduled": 0,
            "numberReady": 6,
        },
    ),
    Kind(
        "validatingadmissionpolicies",
        "admissionregistration.k8s.io",
        "AdmissionregistrationV1Api",
        "validating_admission_policy",
        lambda n: {
            "spec": {
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [{"expression": "true"}],
            }
        },
        {"observedGeneration": 1},
    ),
    Kind(
        "validatingadmissionpolicybindings",
        "admissionregistration.k8s.io",
        "AdmissionregistrationV1Api",
        "validating_admission_policy_binding",
        lambda n: {"spec": {"policyName": "no-such-policy", "validationActions": ["Deny"]}},
    ),
    Kind(
        "flowschemas",
        "flowcontrol.apiserver.k8s.io",
        "FlowcontrolApiserverV1Api",
        "flow_schema",
        lambda n: {
            "spec": {
                "priorityLevelConfiguration": {"name": "global-default"},
                "matchingPrecedence": 5000,
                "rules": [
                    {
                        "subjects": [{"kind": "Group", "group": {"name": "testers"}}],
                        "resourceRules": [
                            {
                                "verbs": ["get"],
                                "apiGroups": [""],
                                "resources": ["pods"],
                                "namespaces": ["*"],
                            }
                        ],
                    }
                ],
            }
        },
        {"conditions": [{"type": "Dangling", "status": "False", "reason": "Found"}]},
    ),
    Kind(
        "prioritylevelconfigurations",
        "flowcontrol.apiserver.k8s.io",
        "FlowcontrolApiserverV1Api",
        "priority_level_configuration",
        lambda n: {
            "spec": {
                "type": "Limited",
                "limited": {"nominalConcurrencyShares": 5, "limitResponse": {"type": "Reject"}},
            }
        },
        {"conditions": [{"type": "ConcurrencyShared", "status": "True"}]},
    ),
    *(
        Kind(
            plural,
            "rbac.authorization.k8s.io",
            "RbacAuthorizationV1Api",
            suffix,
            body,
        )
        for plural, suffix, body in (
            ("clusterroles", "cluster_role", lambda n: {"rules": [_RBAC_RULE]}),
            ("roles", "role", lambda n: {"rules": [_RBAC_RULE]}),
            ("clusterrolebindings", "cluster_role_binding", lambda n: _rbac_binding(n, True)),
            ("rolebindings", "role_binding", lambda n: _rbac_binding(n, False)),
        )
    ),
)


def test_the_kind_table_covers_every_served_resource() -> None:
    assert {(k.group, k.plural) for k in KINDS} == {(r.group, r.plural) for r in RESOURCES}
    assert all((k.status is not None) == k.rt.status_subresource for k in KINDS)


def new_object(kind: Kind, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    body = kind.body(name)
    body["apiVersion"] = kind.rt.api_version
    body["kind"] = kind.rt.kind
    body["metadata"] = {"name": name, "labels": labels or {"test": "crud"}}
    return body


def rv(obj: Any) -> int:
    return int(obj.metadata.resource_version)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.plural)
async def test_crud_lifecycle(api: Any, kind: Kind) -> None:
    name = f"crud-{kind.rt.singular}"

    created, code, _ = await kind.create_with_info(api, new_object(kind, name))
    assert code == 201
    assert created.metadata.name == name
    assert created.metadata.uid
    assert created.metadata.creation_timestamp is not None
    if kind.rt.namespaced:
        assert created.metadata.namespace == NAMESPACE

    read = await kind.read(api, name)
    assert read.metadata.uid == created.metadata.uid
    assert rv(read) == rv(created)

    listed = await kind.list(api)
    assert name in {item.metadata.name for item in listed.items}
    assert int(listed.metadata.resource_version) >= rv(created)

    # Replace: the full object back with a changed label; the revision moves forward.
    body = api.sanitize_for_serialization(read)
    body["metadata"]["labels"]["replaced"] = "yes"
    replaced = await kind.replace(api, name, body)
    assert replaced.metadata.labels["replaced"] == "yes"
    assert rv(replaced) > rv(read)
    assert replaced.metadata.uid == created.metadata.uid

    # Merge patch, strategic merge patch and JSON patch each apply on the latest version.
    merged = await kind.patch(
        api,
        name,
        {"metadata": {"labels": {"merge": "1"}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.labels["merge"] == "1"
    assert merged.metadata.labels["replaced"] == "yes"
    strategic = await kind.patch(api, name, {"metadata": {"annotations": {"strategic": "1"}}})
    assert strategic.metadata.annotations["strategic"] == "1"
    assert strategic.metadata.labels["merge"] == "1"
    json_patched = await kind.patch(
        api, name, [{"op": "add", "path": "/metadata/labels/jsonpatch", "value": "1"}]
    )
    assert json_patched.metadata.labels["jsonpatch"] == "1"
    assert rv(merged) < rv(strategic) < rv(json_patched)

    # Optimistic concurrency: the replaced object's revision is stale now.
    stale = api.sanitize_for_serialization(replaced)
    stale["metadata"]["labels"]["stale"] = "yes"
    with pytest.raises(ApiException) as conflict:
        await kind.replace(api, name, stale)
    assert conflict.value.status == 409

    deleted = await kind.delete(api, name)
    assert deleted is not None
    with pytest.raises(ApiException) as gone:
        await kind.read(api, name)
    assert gone.value.status == 404


@pytest.mark.parametrize("kind", [k for k in KINDS if k.status is not None], ids=lambda k: k.plural)
async def test_status_subresource(api: Any, kind: Kind) -> None:
    name = f"status-{kind.rt.singular}"
    await kind.create(api, new_object(kind, name))
    current = api.sanitize_for_serialization(await kind.read_status(api, name))

    # PUT /status changes status only: a label sent along is ignored.
    current["status"] = kind.status
    current["metadata"]["labels"]["ignored"] = "yes"
    updated = api.sanitize_for_serialization(await kind.replace_status(api, name, current))
    for key, value in (kind.status or {}).items():
        assert updated["status"][key] == value
    assert "ignored" not in updated["metadata"]["labels"]

    # The main resource ignores status: a replace carrying another status keeps it.
    main = api.sanitize_for_serialization(await kind.read(api, name))
    main["status"] = {}
    main["metadata"]["labels"]["main"] = "yes"
    after = api.sanitize_for_serialization(await kind.replace(api, name, main))
    assert after["metadata"]["labels"]["main"] == "yes"
    for key, value in (kind.status or {}).items():
        assert after["status"][key] == value

    # PATCH /status with a merge patch.
    patched = await kind.patch_status(
        api,
        name,
        {"metadata": {"labels": {"from-status": "x"}}, "status": kind.status},
        _content_type="application/merge-patch+json",
    )
    assert "from-status" not in (patched.metadata.labels or {})


@pytest.mark.parametrize(
    "kind",
    [k for k in KINDS if k.plural in ("pods", "configmaps", "nodes", "flowschemas")],
    ids=lambda k: k.plural,
)
async def test_dry_run_changes_nothing(api: Any, apiserver: ApiServer, kind: Kind) -> None:
    name = f"dry-{kind.rt.singular}"
    before = apiserver.store.resource_version

    answer = await kind.create(api, new_object(kind, name), dry_run="All")
    assert answer.metadata.name == name
    with pytest.raises(ApiException) as missing:
        await kind.read(api, name)
    assert missing.value.status == 404
    assert apiserver.store.resource_version == before

    created = await kind.create(api, new_object(kind, name))
    revision = apiserver.store.resource_version
    patched = await kind.patch(api, name, {"metadata": {"labels": {"dry": "run"}}}, dry_run="All")
    assert patched.metadata.labels["dry"] == "run"
    body = api.sanitize_for_serialization(await kind.read(api, name))
    body["metadata"]["labels"]["dry"] = "replace"
    await kind.replace(api, name, body, dry_run="All")
    await kind.delete(api, name, dry_run="All")

    still = await kind.read(api, name)
    assert "dry" not in still.metadata.labels
    assert rv(still) == rv(created)
    assert apiserver.store.resource_version == revision


async def test_resource_versions_increase_monotonically(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    seen: list[int] = []
    for i in range(5):
        cm = await core.create_namespaced_config_map(
            NAMESPACE, {"metadata": {"name": f"mono-{i}"}, "data": {"i": str(i)}}
        )
        seen.append(rv(cm))
        patched = await core.patch_namespaced_config_map(
            f"mono-{i}", NAMESPACE, {"data": {"i": f"{i}-patched"}}
        )
        seen.append(rv(patched))
    lease = await k8s.CoordinationV1Api(api).create_namespaced_lease(
        NAMESPACE, {"metadata": {"name": "mono"}, "spec": {"holderIdentity": "x"}}
    )
    seen.append(rv(lease))
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    listed = await core.list_namespaced_config_map(NAMESPACE)
    assert int(listed.metadata.resource_version) >= seen[-1]


async def test_delete_with_preconditions_and_grace(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    cm = await core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "precond"}})
    with pytest.raises(ApiException) as wrong_uid:
        await core.delete_namespaced_config_map(
            "precond", NAMESPACE, body={"preconditions": {"uid": "not-the-uid"}}
        )
    assert wrong_uid.value.status == 409
    status = await core.delete_namespaced_config_map(
        "precond", NAMESPACE, body={"preconditions": {"uid": cm.metadata.uid}}
    )
    assert status.status == "Success"

    # A scheduled pod deleted with gracePeriodSeconds=0 goes at once (query parameter).
    pod = new_object(KINDS[2], "graceless")
    pod["spec"]["nodeName"] = "node-0000"
    await core.create_namespaced_pod(NAMESPACE, pod)
    await core.delete_namespaced_pod("graceless", NAMESPACE, grace_period_seconds=0)
    with pytest.raises(ApiException) as gone:
        await core.read_namespaced_pod("graceless", NAMESPACE)
    assert gone.value.status == 404


async def test_delete_collection_with_a_label_selector(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    for i in range(4):
        labels = {"batch": "doomed" if i % 2 else "kept"}
        await core.create_namespaced_config_map(
            NAMESPACE, {"metadata": {"name": f"coll-{i}", "labels": labels}}
        )
    await core.delete_collection_namespaced_config_map(NAMESPACE, label_selector="batch=doomed")
    left = await core.list_namespaced_config_map(NAMESPACE, label_selector="batch")
    assert sorted(cm.metadata.name for cm in left.items) == ["coll-0", "coll-2"]


async def test_create_accepts_yaml_and_generate_name(admin_session: aiohttp.ClientSession) -> None:
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\ndata:\n  a: b\n"
    async with admin_session.post(
        f"/api/v1/namespaces/{NAMESPACE}/configmaps",
        data=body,
        headers={"Content-Type": "application/yaml"},
    ) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert created["metadata"]["name"].startswith("gen-")
    assert created["data"] == {"a": "b"}


async def test_existing_cluster_objects_deserialize_in_the_client(api: Any) -> None:
    """Every generated object is something the typed client models accept."""
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    pods = await core.list_pod_for_all_namespaces()
    nodes = await core.list_node()
    assert len(nodes.items) == 7
    assert {p.spec.node_name for p in pods.items if p.spec.node_name} <= {
        n.metadata.name for n in nodes.items
    }
    assert (await apps.list_deployment_for_all_namespaces()).items
    assert (await apps.list_daemon_set_for_all_namespaces()).items
    assert (await k8s.CoordinationV1Api(api).list_lease_for_all_namespaces()).items
    assert (await core.list_event_for_all_namespaces()).items
    flow = k8s.FlowcontrolApiserverV1Api(api)
    schemas = {fs.metadata.name for fs in (await flow.list_flow_schema()).items}
    assert {"exempt", "catch-all", "system-node-high"} <= schemas
    levels = {pl.metadata.name for pl in (await flow.list_priority_level_configuration()).items}
    assert {"exempt", "node-high", "workload-low"} <= levels


async def test_discovery(api: Any, admin_session: aiohttp.ClientSession) -> None:
    versions = await k8s.CoreApi(api).get_api_versions()
    assert versions.versions == ["v1"]
    groups = await k8s.ApisApi(api).get_api_versions()
    names = {g.name for g in groups.groups}
    assert names == {r.group for r in RESOURCES if r.group}
    core = await k8s.CoreV1Api(api).get_api_resources()
    by_name = {r.name: r for r in core.resources}
    assert by_name["pods"].namespaced is True
    assert by_name["pods"].kind == "Pod"
    assert by_name["pods"].short_names == ["po"]
    assert "watch" in by_name["pods"].verbs
    assert by_name["pods/status"].verbs == ["get", "patch", "update"]
    assert by_name["nodes"].namespaced is False
    apps = await k8s.AppsV1Api(api).get_api_resources()
    assert {r.name for r in apps.resources} >= {"deployments", "deployments/status"}
    async with admin_session.get("/apis/apps") as resp:
        group = await resp.json()
    assert group["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
