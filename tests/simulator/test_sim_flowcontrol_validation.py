"""The simulator refuses invalid FlowSchemas and PriorityLevelConfigurations with 422.

Why: the classifier digests whatever is stored, and the real apiserver never stores an
invalid APF object (pkg/apis/flowcontrol/validation/validation.go, run by the registry
strategies on create and on update). A client (kube-ballast's manifests, a test) that
writes a broken FlowSchema must see the same 422 Invalid Status a real cluster answers,
naming each field, and nothing may be stored; valid objects, with the v1 defaults for
what they omit, must be accepted as before.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from kubeballast.simulator import apf
from kubeballast.simulator.server import ApiServer

BASE = "/apis/flowcontrol.apiserver.k8s.io/v1"
FLOW_SCHEMAS = f"{BASE}/flowschemas"
LEVELS = f"{BASE}/prioritylevelconfigurations"
REPO = Path(__file__).resolve().parents[2]
MANIFESTS = (
    REPO / "deploy" / "eviction-guard" / "flowcontrol.yaml",
    REPO / "deploy" / "flowcontrol" / "exporter.yaml",
)


def good_schema(name: str = "team-a") -> dict[str, Any]:
    return {
        "apiVersion": apf.API_VERSION,
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "priorityLevelConfiguration": {"name": "workload-high"},
            "matchingPrecedence": 500,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [
                        {
                            "kind": "ServiceAccount",
                            "serviceAccount": {"namespace": "a", "name": "*"},
                        }
                    ],
                    "resourceRules": [
                        {
                            "verbs": ["get", "list"],
                            "apiGroups": [""],
                            "resources": ["pods"],
                            "namespaces": ["a"],
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/metrics"]}],
                }
            ],
        },
    }


def good_level(name: str = "team-a") -> dict[str, Any]:
    return {
        "apiVersion": apf.API_VERSION,
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": 10,
                "lendablePercent": 50,
                "limitResponse": {
                    "type": "Queue",
                    "queuing": {"queues": 16, "handSize": 4, "queueLengthLimit": 20},
                },
            },
        },
    }


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """Set (or, with value ..., delete) the dotted ``path``; ``rules.0`` indexes a list."""

    def apply(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is ...:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return apply


RULE = "spec.rules.0"
SCHEMA_CASES: list[tuple[str, Mutation, str, str, str]] = [
    # (id, mutation, reason, field, message fragment)
    (
        "precedence-negative",
        _set("spec.matchingPrecedence", -1),
        "FieldValueInvalid",
        "spec.matchingPrecedence",
        "Invalid value: -1: must be a positive value",
    ),
    (
        "precedence-too-big",
        _set("spec.matchingPrecedence", 10001),
        "FieldValueInvalid",
        "spec.matchingPrecedence",
        "must not be greater than 10000",
    ),
    (
        "precedence-one-not-exempt",
        _set("spec.matchingPrecedence", 1),
        "FieldValueInvalid",
        "spec.matchingPrecedence",
        "only the schema named 'exempt' may have matchingPrecedence 1",
    ),
    (
        "distinguisher",
        _set("spec.distinguisherMethod.type", "ByHost"),
        "FieldValueNotSupported",
        "spec.distinguisherMethod.type",
        'Unsupported value: "ByHost": supported values: "ByNamespace", "ByUser"',
    ),
    (
        "level-missing",
        _set("spec.priorityLevelConfiguration.name", ""),
        "FieldValueRequired",
        "spec.priorityLevelConfiguration.name",
        "Required value: must reference a priority level",
    ),
    (
        "level-not-dns",
        _set("spec.priorityLevelConfiguration.name", "Not_A_Name"),
        "FieldValueInvalid",
        "spec.priorityLevelConfiguration.name",
        "a lowercase RFC 1123 subdomain",
    ),
    (
        "no-subjects",
        _set(f"{RULE}.subjects", []),
        "FieldValueRequired",
        "spec.rules[0].subjects",
        "subjects must contain at least one value",
    ),
    (
        "subject-kind",
        _set(f"{RULE}.subjects.0", {"kind": "Robot"}),
        "FieldValueNotSupported",
        "spec.rules[0].subjects[0].kind",
        'supported values: "Group", "ServiceAccount", "User"',
    ),
    (
        "user-without-user",
        _set(f"{RULE}.subjects.0", {"kind": "User"}),
        "FieldValueRequired",
        "spec.rules[0].subjects[0].user",
        "user is required when subject kind is 'User'",
    ),
    (
        "group-without-name",
        _set(f"{RULE}.subjects.0", {"kind": "Group", "group": {"name": ""}}),
        "FieldValueRequired",
        "spec.rules[0].subjects[0].group.name",
        "Required value",
    ),
    (
        "sa-without-namespace",
        _set(f"{RULE}.subjects.0.serviceAccount.namespace", ""),
        "FieldValueRequired",
        "spec.rules[0].subjects[0].serviceAccount.namespace",
        "must specify namespace for service account",
    ),
    (
        "sa-with-user",
        _set(f"{RULE}.subjects.0.user", {"name": "bob"}),
        "FieldValueForbidden",
        "spec.rules[0].subjects[0].user",
        "user is forbidden when subject kind is not 'User'",
    ),
    (
        "no-rules-at-all",
        lambda o: o["spec"]["rules"][0].update(resourceRules=[], nonResourceRules=[]),
        "FieldValueRequired",
        "spec.rules[0]",
        "at least one of resourceRules and nonResourceRules has to be non-empty",
    ),
    (
        "no-verbs",
        _set(f"{RULE}.resourceRules.0.verbs", []),
        "FieldValueRequired",
        "spec.rules[0].resourceRules[0].verbs",
        "verbs must contain at least one value",
    ),
    (
        "verb-unsupported",
        _set(f"{RULE}.resourceRules.0.verbs", ["get", "frob"]),
        "FieldValueNotSupported",
        "spec.rules[0].resourceRules[0].verbs",
        'Unsupported value: ["get","frob"]',
    ),
    (
        "verbs-star-and-more",
        _set(f"{RULE}.resourceRules.0.verbs", ["*", "get"]),
        "FieldValueInvalid",
        "spec.rules[0].resourceRules[0].verbs",
        "if '*' is present, must not specify other verbs",
    ),
    (
        "no-api-groups",
        _set(f"{RULE}.resourceRules.0.apiGroups", []),
        "FieldValueRequired",
        "spec.rules[0].resourceRules[0].apiGroups",
        "resource rules must supply at least one api group",
    ),
    (
        "no-resources",
        _set(f"{RULE}.resourceRules.0.resources", ...),
        "FieldValueRequired",
        "spec.rules[0].resourceRules[0].resources",
        "resource rules must supply at least one resource",
    ),
    (
        "no-namespaces-not-cluster-scoped",
        _set(f"{RULE}.resourceRules.0.namespaces", []),
        "FieldValueRequired",
        "spec.rules[0].resourceRules[0].namespaces",
        "resource rules that are not cluster scoped must supply at least one namespace",
    ),
    (
        "namespace-not-a-label",
        _set(f"{RULE}.resourceRules.0.namespaces", ["a", "B.c"]),
        "FieldValueInvalid",
        "spec.rules[0].resourceRules[0].namespaces[1]",
        "each member of this list must be '*' or a DNS-1123 label",
    ),
    (
        "url-without-slash",
        _set(f"{RULE}.nonResourceRules.0.nonResourceURLs", ["metrics"]),
        "FieldValueInvalid",
        "spec.rules[0].nonResourceRules[0].nonResourceURLs[0]",
        'Invalid value: "metrics": must start with slash',
    ),
    (
        "url-inner-wildcard",
        _set(f"{RULE}.nonResourceRules.0.nonResourceURLs", ["/api/*/x"]),
        "FieldValueInvalid",
        "spec.rules[0].nonResourceRules[0].nonResourceURLs[0]",
        "wildcard can only do suffix matching",
    ),
    (
        "no-urls",
        _set(f"{RULE}.nonResourceRules.0.nonResourceURLs", []),
        "FieldValueRequired",
        "spec.rules[0].nonResourceRules[0].nonResourceURLs",
        "nonResourceURLs must contain at least one value",
    ),
    (
        "wrong-type",
        _set("spec.matchingPrecedence", "high"),
        "FieldValueInvalid",
        "spec.matchingPrecedence",
        "must be an integer",
    ),
]

LEVEL_CASES: list[tuple[str, Mutation, str, str, str]] = [
    (
        "type-unknown",
        _set("spec.type", "Unlimited"),
        "FieldValueNotSupported",
        "spec.type",
        'Unsupported value: "Unlimited": supported values: "Exempt", "Limited"',
    ),
    (
        "exempt-type-wrong-name",
        lambda o: o.update(spec={"type": "Exempt", "exempt": {}}),
        "FieldValueInvalid",
        "spec.type",
        "type must be 'Exempt' if and only if name is 'exempt'",
    ),
    (
        "limited-missing",
        _set("spec.limited", ...),
        "FieldValueRequired",
        "spec.limited",
        "must not be empty when type is Limited",
    ),
    (
        "limited-with-exempt",
        _set("spec.exempt", {}),
        "FieldValueForbidden",
        "spec.exempt",
        "must be nil if the type is Limited",
    ),
    (
        "shares-negative",
        _set("spec.limited.nominalConcurrencyShares", -1),
        "FieldValueInvalid",
        "spec.limited.nominalConcurrencyShares",
        "Invalid value: -1: must be a non-negative integer",
    ),
    (
        "lendable-over-100",
        _set("spec.limited.lendablePercent", 101),
        "FieldValueInvalid",
        "spec.limited.lendablePercent",
        "must be between 0 and 100, inclusive",
    ),
    (
        "borrowing-negative",
        _set("spec.limited.borrowingLimitPercent", -5),
        "FieldValueInvalid",
        "spec.limited.borrowingLimitPercent",
        "if specified, must be a non-negative integer",
    ),
    (
        "response-type",
        _set("spec.limited.limitResponse", {"type": "Drop"}),
        "FieldValueNotSupported",
        "spec.limited.limitResponse.type",
        'supported values: "Queue", "Reject"',
    ),
    (
        "queue-without-queuing",
        _set("spec.limited.limitResponse.queuing", ...),
        "FieldValueRequired",
        "spec.limited.limitResponse.queuing",
        "must not be empty if limited.limitResponse.type is Limited",
    ),
    (
        "reject-with-queuing",
        _set("spec.limited.limitResponse.type", "Reject"),
        "FieldValueForbidden",
        "spec.limited.limitResponse.queuing",
        "must be nil if limited.limitResponse.type is not Limited",
    ),
    (
        "hand-bigger-than-queues",
        _set("spec.limited.limitResponse.queuing", {"queues": 7, "handSize": 8}),
        "FieldValueInvalid",
        "spec.limited.limitResponse.queuing.handSize",
        "should not be greater than queues (7)",
    ),
    (
        "entropy",
        _set("spec.limited.limitResponse.queuing", {"queues": 512, "handSize": 8}),
        "FieldValueInvalid",
        "spec.limited.limitResponse.queuing.handSize",
        "required entropy bits of deckSize 512 and handSize 8 should not be greater than 60",
    ),
    (
        "too-many-queues",
        _set("spec.limited.limitResponse.queuing", {"queues": 10_000_001, "handSize": 2}),
        "FieldValueInvalid",
        "spec.limited.limitResponse.queuing.queues",
        "must not be greater than 10000000",
    ),
    (
        "queue-length-negative",
        _set("spec.limited.limitResponse.queuing.queueLengthLimit", -1),
        "FieldValueInvalid",
        "spec.limited.limitResponse.queuing.queueLengthLimit",
        "must be positive",
    ),
]


async def refused(
    response: aiohttp.ClientResponse, kind: str, name: str, reason: str, field: str, fragment: str
) -> dict[str, Any]:
    """Assert the 422 Status of a refused write; returns the matching cause."""
    body = await response.json()
    assert response.status == 422, body
    assert body["kind"] == "Status"
    assert body["reason"] == "Invalid"
    assert body["code"] == 422
    assert body["details"]["kind"] == kind
    assert body["details"]["group"] == "flowcontrol.apiserver.k8s.io"
    assert body["details"]["name"] == name
    assert body["message"].startswith(f'{kind}.flowcontrol.apiserver.k8s.io "{name}" is invalid: ')
    matching = [c for c in body["details"]["causes"] if c["field"] == field]
    assert matching, body["details"]["causes"]
    assert matching[0]["reason"] == reason
    assert fragment in matching[0]["message"]
    assert f"{field}: " in body["message"]
    return dict(matching[0])


# (kind, collection URL, a valid object) for each flowcontrol kind.
KINDS: dict[str, tuple[str, str, Callable[[str], dict[str, Any]]]] = {
    "flowschema": ("FlowSchema", FLOW_SCHEMAS, good_schema),
    "level": ("PriorityLevelConfiguration", LEVELS, good_level),
}


@pytest.mark.parametrize(
    ("kind", "mutation", "reason", "field", "fragment"),
    [("flowschema", *c[1:]) for c in SCHEMA_CASES] + [("level", *c[1:]) for c in LEVEL_CASES],
    ids=[c[0] for c in SCHEMA_CASES] + [c[0] for c in LEVEL_CASES],
)
async def test_invalid_flowcontrol_object_is_422_and_not_stored(
    admin_session: aiohttp.ClientSession,
    kind: str,
    mutation: Mutation,
    reason: str,
    field: str,
    fragment: str,
) -> None:
    kind_name, collection, good = KINDS[kind]
    obj = good("broken")
    mutation(obj)
    async with admin_session.post(collection, json=obj) as resp:
        await refused(resp, kind_name, "broken", reason, field, fragment)
    async with admin_session.get(f"{collection}/broken") as resp:
        assert resp.status == 404


async def test_every_cause_is_reported_at_once(admin_session: aiohttp.ClientSession) -> None:
    obj = good_schema("many")
    obj["spec"]["matchingPrecedence"] = 0  # v1 default: 1000, valid
    obj["spec"]["distinguisherMethod"] = {"type": "ByHost"}
    obj["spec"]["rules"][0]["resourceRules"][0]["verbs"] = []
    async with admin_session.post(FLOW_SCHEMAS, json=obj) as resp:
        body = await resp.json()
    assert resp.status == 422
    assert [c["field"] for c in body["details"]["causes"]] == [
        "spec.distinguisherMethod.type",
        "spec.rules[0].resourceRules[0].verbs",
    ]
    # Several causes are one bracketed aggregate, as errors.NewInvalid renders them.
    assert body["message"].startswith(
        'FlowSchema.flowcontrol.apiserver.k8s.io "many" is invalid: [spec.distinguisherMethod'
    )


async def test_valid_objects_are_accepted_with_v1_defaults(
    admin_session: aiohttp.ClientSession, apiserver: ApiServer
) -> None:
    level = good_level()
    del level["spec"]["limited"]["lendablePercent"]
    level["spec"]["limited"]["limitResponse"]["queuing"] = {}  # 64 queues, hand 8, length 50
    async with admin_session.post(LEVELS, json=level) as resp:
        assert resp.status == 201, await resp.text()
    schema = good_schema()
    del schema["spec"]["matchingPrecedence"]  # 1000
    schema["spec"]["priorityLevelConfiguration"]["name"] = "team-a"
    async with admin_session.post(FLOW_SCHEMAS, json=schema) as resp:
        assert resp.status == 201, await resp.text()
    # Stored and in force: nothing was ignored by the classifier.
    config = apiserver.apf.current
    assert config.level_of["team-a"] == "team-a"
    assert not config.ignored
    assert config.classify("system:serviceaccount:a:builder", (), "list", "", "pods", "a") == (
        "team-a",
        "team-a",
    )


def manifest_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize(
    "docs", [manifest_docs(p) for p in MANIFESTS], ids=[p.parent.name for p in MANIFESTS]
)
async def test_shipped_manifests_are_valid(
    admin_session: aiohttp.ClientSession, docs: list[dict[str, Any]]
) -> None:
    for doc in docs:
        url = FLOW_SCHEMAS if doc["kind"] == "FlowSchema" else LEVELS
        async with admin_session.post(url, json=doc) as resp:
            assert resp.status == 201, await resp.text()


def test_the_default_objects_are_valid() -> None:
    for schema in apf.default_flowschemas():
        assert apf.validate_flow_schema(schema) == [], schema["metadata"]["name"]
    for level in apf.default_priority_levels():
        assert apf.validate_priority_level(level) == [], level["metadata"]["name"]


async def test_update_and_patch_are_validated(
    admin_session: aiohttp.ClientSession, apiserver: ApiServer
) -> None:
    async with admin_session.post(FLOW_SCHEMAS, json=good_schema()) as resp:
        assert resp.status == 201
        stored = await resp.json()
    broken = copy.deepcopy(stored)
    broken["spec"]["rules"][0]["subjects"][0] = {"kind": "Group", "group": {"name": ""}}
    async with admin_session.put(f"{FLOW_SCHEMAS}/team-a", json=broken) as resp:
        await refused(
            resp,
            "FlowSchema",
            "team-a",
            "FieldValueRequired",
            "spec.rules[0].subjects[0].group.name",
            "Required value",
        )
    async with admin_session.patch(
        f"{FLOW_SCHEMAS}/team-a",
        data=b'{"spec": {"matchingPrecedence": 20000}}',
        headers={"Content-Type": "application/merge-patch+json"},
    ) as resp:
        await refused(
            resp,
            "FlowSchema",
            "team-a",
            "FieldValueInvalid",
            "spec.matchingPrecedence",
            "must not be greater than 10000",
        )
    async with admin_session.get(f"{FLOW_SCHEMAS}/team-a") as resp:
        current = await resp.json()
    assert current["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert current["spec"] == stored["spec"]
    # A valid update still goes through.
    current["spec"]["matchingPrecedence"] = 600
    async with admin_session.put(f"{FLOW_SCHEMAS}/team-a", json=current) as resp:
        assert resp.status == 200, await resp.text()
    assert (
        apiserver.apf.current.flow_schemas[
            [fs.name for fs in apiserver.apf.current.flow_schemas].index("team-a")
        ].matching_precedence
        == 600
    )


async def test_mandatory_objects_keep_their_fixed_spec(
    admin_session: aiohttp.ClientSession,
) -> None:
    async with admin_session.get(f"{FLOW_SCHEMAS}/catch-all") as resp:
        catch_all = await resp.json()
    changed = copy.deepcopy(catch_all)
    changed["spec"]["matchingPrecedence"] = 9999
    async with admin_session.put(f"{FLOW_SCHEMAS}/catch-all", json=changed) as resp:
        await refused(
            resp,
            "FlowSchema",
            "catch-all",
            "FieldValueInvalid",
            "spec",
            "spec of 'catch-all' must equal the fixed value",
        )
    async with admin_session.get(f"{LEVELS}/catch-all") as resp:
        level = await resp.json()
    level["spec"]["limited"]["nominalConcurrencyShares"] = 50
    async with admin_session.put(f"{LEVELS}/catch-all", json=level) as resp:
        await refused(
            resp,
            "PriorityLevelConfiguration",
            "catch-all",
            "FieldValueInvalid",
            "spec",
            "spec of 'catch-all' must equal the fixed value",
        )
    # The exempt level's spec.exempt is the one part an administrator may change.
    async with admin_session.get(f"{LEVELS}/exempt") as resp:
        exempt = await resp.json()
    exempt["spec"]["exempt"] = {"nominalConcurrencyShares": 10, "lendablePercent": 20}
    async with admin_session.put(f"{LEVELS}/exempt", json=exempt) as resp:
        assert resp.status == 200, await resp.text()
        exempt = await resp.json()
    exempt["spec"]["type"] = "Limited"
    async with admin_session.put(f"{LEVELS}/exempt", json=exempt) as resp:
        await refused(
            resp,
            "PriorityLevelConfiguration",
            "exempt",
            "FieldValueInvalid",
            "spec",
            "spec of 'exempt' except the 'spec.exempt' field must equal the fixed value",
        )
