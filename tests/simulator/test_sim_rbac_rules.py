"""The RBAC authorizer's pure parts, table by table, against the upstream semantics.

Rule matching follows pkg/apis/rbac/v1/evaluation_helpers.go and rbac.go RuleAllows;
the cases are the ones its tests and its doc comments spell out (``*`` everywhere,
``resource/subresource`` and ``*/subresource``, empty resourceNames meaning any name,
non-resource URLs with a trailing ``*``). Then: which bindings apply to whom (subjects
of each kind, RoleBindings only in their namespace, a RoleBinding of a ClusterRole),
the 403 message, object validation, and the unused-permission report the product's
RBAC tests print.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import pytest

from kubeballast.simulator import rbac
from kubeballast.simulator.rbac import Attributes, PolicyRule
from kubeballast.simulator.resources import ResourceType

RBAC_GROUP = "rbac.authorization.k8s.io"


def rule(**fields: Any) -> PolicyRule:
    return PolicyRule(**{k: tuple(v) for k, v in fields.items()})


# -- the matching helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verbs", "verb", "expected"),
    [
        (["get"], "get", True),
        (["get", "list"], "list", True),
        (["get"], "list", False),
        (["*"], "deletecollection", True),
        ([], "get", False),
        (["Get"], "get", False),  # case matters
    ],
)
def test_verb_matches(verbs: list[str], verb: str, expected: bool) -> None:
    assert rbac.verb_matches(rule(verbs=verbs), verb) is expected


@pytest.mark.parametrize(
    ("groups", "group", "expected"),
    [
        ([""], "", True),
        ([""], "apps", False),
        (["apps"], "", False),
        (["apps", "batch"], "batch", True),
        (["*"], "coordination.k8s.io", True),
        (["*"], "", True),
    ],
)
def test_api_group_matches(groups: list[str], group: str, expected: bool) -> None:
    assert rbac.api_group_matches(rule(api_groups=groups), group) is expected


@pytest.mark.parametrize(
    ("resources", "combined", "subresource", "expected"),
    [
        (["pods"], "pods", "", True),
        (["pods"], "nodes", "", False),
        (["*"], "pods", "", True),
        (["*"], "pods/eviction", "eviction", True),
        # A rule for the resource does not cover its subresources, nor the reverse.
        (["pods"], "pods/eviction", "eviction", False),
        (["pods/eviction"], "pods", "", False),
        (["pods/eviction"], "pods/eviction", "eviction", True),
        (["pods/status"], "pods/eviction", "eviction", False),
        # */subresource: that subresource of any resource.
        (["*/status"], "nodes/status", "status", True),
        (["*/status"], "nodes", "", False),
        (["*/scale"], "deployments/status", "status", False),
        # Only "*/" + the exact subresource: a longer or shorter rule does not match.
        (["*/statuses"], "nodes/status", "status", False),
        (["x/status"], "nodes/status", "status", False),
    ],
)
def test_resource_matches(
    resources: list[str], combined: str, subresource: str, expected: bool
) -> None:
    assert rbac.resource_matches(rule(resources=resources), combined, subresource) is expected


@pytest.mark.parametrize(
    ("names", "name", "expected"),
    [
        ([], "anything", True),
        ([], "", True),  # list and create carry no name
        (["a", "b"], "b", True),
        (["a"], "c", False),
        (["a"], "", False),  # a named rule never allows an unnamed list or create
    ],
)
def test_resource_name_matches(names: list[str], name: str, expected: bool) -> None:
    assert rbac.resource_name_matches(rule(resource_names=names), name) is expected


@pytest.mark.parametrize(
    ("urls", "path", "expected"),
    [
        (["/metrics"], "/metrics", True),
        (["/metrics"], "/metrics/slis", False),
        (["/metrics"], "/metric", False),
        (["/healthz/*"], "/healthz/etcd", True),
        (["/healthz/*"], "/healthz/", True),
        (["/healthz/*"], "/healthz", False),
        (["/api*"], "/apis/apps/v1", True),  # a bare prefix, as upstream
        (["*"], "/anything", True),
        (["/livez", "/readyz"], "/readyz", True),
    ],
)
def test_non_resource_url_matches(urls: list[str], path: str, expected: bool) -> None:
    assert rbac.non_resource_url_matches(rule(non_resource_urls=urls), path) is expected


def _resource(verb: str, resource: str, **kw: Any) -> Attributes:
    return Attributes("u", (), verb, True, resource=resource, **kw)


@pytest.mark.parametrize(
    ("the_rule", "attrs", "expected"),
    [
        (
            rule(verbs=["list", "watch"], api_groups=[""], resources=["pods"]),
            _resource("watch", "pods", namespace="x"),
            True,
        ),
        (
            rule(verbs=["list"], api_groups=[""], resources=["pods"]),
            _resource("list", "pods", api_group="apps"),
            False,
        ),
        (
            rule(verbs=["create"], api_groups=[""], resources=["pods/eviction"]),
            _resource("create", "pods", subresource="eviction", name="p"),
            True,
        ),
        (
            rule(verbs=["get"], api_groups=[""], resources=["configmaps"], resource_names=["c"]),
            _resource("get", "configmaps", name="c"),
            True,
        ),
        (
            rule(verbs=["get"], api_groups=[""], resources=["configmaps"], resource_names=["c"]),
            _resource("list", "configmaps"),
            False,
        ),
        # A resource rule never allows a path, and a URL rule never a resource.
        (
            rule(verbs=["get"], api_groups=["*"], resources=["*"]),
            Attributes("u", (), "get", False, path="/metrics"),
            False,
        ),
        (
            rule(verbs=["get"], non_resource_urls=["*"]),
            _resource("get", "pods", name="p"),
            False,
        ),
        (
            rule(verbs=["get"], non_resource_urls=["/metrics"]),
            Attributes("u", (), "get", False, path="/metrics"),
            True,
        ),
        # Non-resource verbs are the lower-case HTTP method.
        (
            rule(verbs=["get"], non_resource_urls=["/metrics"]),
            Attributes("u", (), "post", False, path="/metrics"),
            False,
        ),
    ],
)
def test_rule_allows(the_rule: PolicyRule, attrs: Attributes, expected: bool) -> None:
    assert rbac.rule_allows(attrs, the_rule) is expected


@pytest.mark.parametrize(
    ("selector", "name"),
    [
        ("metadata.name=eviction-guard", "eviction-guard"),
        ("metadata.name==a,metadata.namespace=x", "a"),
        ("metadata.name!=a", ""),
        ("spec.nodeName=n1", ""),
        ("", ""),
        ("metadata.name=a,metadata.name=b", ""),
    ],
)
def test_a_field_selector_on_the_name_names_the_request(selector: str, name: str) -> None:
    assert rbac.name_from_field_selector(selector) == name


# -- the authorizer over stored objects --------------------------------------------------------


class Objects:
    """The authorizer's view of the store: lists of plain objects per kind."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = list(objects)

    def list_objects(self, rt: ResourceType) -> Iterable[Mapping[str, Any]]:
        return [o for o in self.objects if o["kind"] == rt.kind]

    def resource_versions(self, rt: ResourceType) -> Iterable[Hashable]:
        return [id(o) for o in self.objects if o["kind"] == rt.kind]


def role(kind: str, name: str, rules: list[dict[str, Any]], namespace: str = "") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "rules": rules}


def binding(
    kind: str, name: str, ref_kind: str, ref_name: str, subjects: list[dict[str, str]], ns: str = ""
) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": ref_kind, "name": ref_name},
        "subjects": subjects,
    }


SA = "system:serviceaccount:kube-ballast:exporter"
SA_GROUPS = (
    "system:serviceaccounts",
    "system:serviceaccounts:kube-ballast",
    "system:authenticated",
)
READ_PODS = {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}


def authorizer(*objects: dict[str, Any]) -> rbac.RbacAuthorizer:
    return rbac.RbacAuthorizer(Objects(*objects))


def ask(
    auth: rbac.RbacAuthorizer,
    verb: str,
    resource: str,
    namespace: str = "",
    user: str = SA,
    groups: tuple[str, ...] = SA_GROUPS,
) -> rbac.Decision:
    return auth.authorize(
        Attributes(user, groups, verb, True, resource=resource, namespace=namespace)
    )


@pytest.mark.parametrize(
    ("subject", "allowed"),
    [
        ({"kind": "ServiceAccount", "name": "exporter", "namespace": "kube-ballast"}, True),
        ({"kind": "ServiceAccount", "name": "exporter", "namespace": "other"}, False),
        ({"kind": "ServiceAccount", "name": "receiver", "namespace": "kube-ballast"}, False),
        ({"kind": "User", "apiGroup": RBAC_GROUP, "name": SA}, True),
        ({"kind": "User", "apiGroup": RBAC_GROUP, "name": "exporter"}, False),
        ({"kind": "Group", "apiGroup": RBAC_GROUP, "name": "system:serviceaccounts"}, True),
        ({"kind": "Group", "apiGroup": RBAC_GROUP, "name": "system:serviceaccounts:kb"}, False),
        ({"kind": "Group", "apiGroup": RBAC_GROUP, "name": "system:authenticated"}, True),
    ],
)
def test_subjects_of_each_kind(subject: dict[str, str], allowed: bool) -> None:
    auth = authorizer(
        role("ClusterRole", "read-pods", [READ_PODS]),
        binding("ClusterRoleBinding", "b", "ClusterRole", "read-pods", [subject]),
    )
    assert ask(auth, "list", "pods", "team-a").allowed is allowed


def test_a_rolebinding_grants_only_in_its_namespace() -> None:
    subject = {"kind": "ServiceAccount", "name": "exporter"}  # namespace: the binding's
    auth = authorizer(
        role("Role", "read-pods", [READ_PODS], namespace="team-a"),
        binding("RoleBinding", "b", "Role", "read-pods", [subject], ns="team-a"),
    )
    assert not ask(auth, "list", "pods", "team-a").allowed  # the SA lives in kube-ballast
    auth = authorizer(
        role("Role", "read-pods", [READ_PODS], namespace="team-a"),
        binding(
            "RoleBinding",
            "b",
            "Role",
            "read-pods",
            [{"kind": "ServiceAccount", "name": "exporter", "namespace": "kube-ballast"}],
            ns="team-a",
        ),
    )
    decision = ask(auth, "list", "pods", "team-a")
    assert decision.allowed
    assert decision.reason == (
        'RBAC: allowed by RoleBinding "b/team-a" of Role "read-pods" to '
        'ServiceAccount "exporter/kube-ballast"'
    )
    assert not ask(auth, "list", "pods", "team-b").allowed
    assert not ask(auth, "list", "pods").allowed  # cluster-wide list


def test_a_rolebinding_of_a_clusterrole_grants_its_rules_in_the_namespace_only() -> None:
    subject = {"kind": "ServiceAccount", "name": "exporter", "namespace": "kube-ballast"}
    auth = authorizer(
        role("ClusterRole", "read-pods", [READ_PODS]),
        binding("RoleBinding", "b", "ClusterRole", "read-pods", [subject], ns="team-a"),
    )
    assert ask(auth, "get", "pods", "team-a").allowed
    assert not ask(auth, "get", "pods", "team-b").allowed


def test_the_first_allowing_rule_is_reported_clusterrolebindings_first() -> None:
    subject = {"kind": "ServiceAccount", "name": "exporter", "namespace": "kube-ballast"}
    auth = authorizer(
        role("Role", "r", [READ_PODS], namespace="team-a"),
        binding("RoleBinding", "rb", "Role", "r", [subject], ns="team-a"),
        role(
            "ClusterRole",
            "c",
            [{"verbs": ["list"], "apiGroups": ["apps"], "resources": ["deployments"]}, READ_PODS],
        ),
        binding("ClusterRoleBinding", "crb", "ClusterRole", "c", [subject]),
    )
    decision = ask(auth, "list", "pods", "team-a")
    assert decision.grant is not None
    assert (decision.grant.binding_kind, decision.grant.role.name, decision.grant.rule_index) == (
        "ClusterRoleBinding",
        "c",
        1,
    )


def test_a_binding_to_a_missing_role_denies_with_the_reason() -> None:
    subject = {"kind": "ServiceAccount", "name": "exporter", "namespace": "kube-ballast"}
    auth = authorizer(binding("ClusterRoleBinding", "b", "ClusterRole", "gone", [subject]))
    decision = ask(auth, "list", "pods", "team-a")
    assert not decision.allowed
    assert decision.reason == 'RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found'
    # A binding for somebody else is not looked at.
    other = ask(auth, "list", "pods", "team-a", user="alice", groups=("system:authenticated",))
    assert other.reason == ""


def test_system_masters_may_do_anything_with_no_binding_at_all() -> None:
    decision = ask(authorizer(), "delete", "nodes", groups=("system:masters",))
    assert decision.allowed


def test_the_policy_follows_changes_of_the_stored_objects() -> None:
    subject = {"kind": "ServiceAccount", "name": "exporter", "namespace": "kube-ballast"}
    objects = Objects(binding("ClusterRoleBinding", "b", "ClusterRole", "r", [subject]))
    auth = rbac.RbacAuthorizer(objects)
    assert not ask(auth, "list", "pods").allowed
    objects.objects.append(role("ClusterRole", "r", [READ_PODS]))
    assert ask(auth, "list", "pods").allowed


# -- the 403 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "message", "details"),
    [
        (
            Attributes("u", (), "list", True, resource="pods", namespace="x"),
            'pods is forbidden: User "u" cannot list resource "pods" in API group "" in the '
            'namespace "x"',
            {"kind": "pods"},
        ),
        (
            Attributes("u", (), "get", True, api_group="apps", resource="deployments", name="d"),
            'deployments.apps "d" is forbidden: User "u" cannot get resource "deployments" in '
            'API group "apps" at the cluster scope',
            {"group": "apps", "kind": "deployments", "name": "d"},
        ),
        (
            Attributes(
                "u",
                (),
                "create",
                True,
                resource="pods",
                subresource="eviction",
                namespace="a",
                name="p",
            ),
            'pods "p" is forbidden: User "u" cannot create resource "pods/eviction" in API group '
            '"" in the namespace "a"',
            {"kind": "pods", "name": "p"},
        ),
        (
            Attributes("u", (), "get", False, path="/metrics"),
            'forbidden: User "u" cannot get path "/metrics"',
            {},
        ),
    ],
)
def test_the_forbidden_status_is_the_real_one(
    attrs: Attributes, message: str, details: dict[str, str]
) -> None:
    error = rbac.forbidden_error(attrs, "")
    status = error.status()
    assert (status["code"], status["reason"], status["message"]) == (403, "Forbidden", message)
    assert status["details"] == details
    with_reason = rbac.forbidden_error(attrs, 'RBAC: role.rbac.authorization.k8s.io "r" not found')
    assert with_reason.message == message + ': RBAC: role.rbac.authorization.k8s.io "r" not found'


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "obj", "causes"),
    [
        ("ClusterRole", {"rules": [READ_PODS]}, []),
        (
            "ClusterRole",
            {"rules": [{"apiGroups": [""], "resources": ["pods"]}]},
            [("rules[0].verbs", "Required value: verbs must contain at least one value")],
        ),
        (
            "Role",
            {"rules": [{"verbs": ["get"], "nonResourceURLs": ["/metrics"]}]},
            [
                (
                    "rules[0].nonResourceURLs",
                    "Invalid value: [/metrics]: namespaced rules cannot apply to non-resource URLs",
                )
            ],
        ),
        (
            "ClusterRole",
            {"rules": [{"verbs": ["get"], "resources": ["pods"], "nonResourceURLs": ["/x"]}]},
            [
                (
                    "rules[0].nonResourceURLs",
                    "Invalid value: [/x]: rules cannot apply to both regular resources and "
                    "non-resource URLs",
                )
            ],
        ),
        (
            "ClusterRole",
            {"rules": [{"verbs": ["get"], "resources": ["pods"]}]},
            [
                (
                    "rules[0].apiGroups",
                    "Required value: resource rules must supply at least one api group",
                )
            ],
        ),
        (
            "ClusterRoleBinding",
            binding(
                "ClusterRoleBinding", "b", "Role", "r", [{"kind": "ServiceAccount", "name": "s"}]
            ),
            [
                ("roleRef.kind", 'Unsupported value: "Role": supported values: "ClusterRole"'),
                ("subjects[0].namespace", "Required value"),
            ],
        ),
        (
            "RoleBinding",
            binding("RoleBinding", "b", "Role", "r", [{"kind": "User", "name": "alice"}], ns="a"),
            [
                (
                    "subjects[0].apiGroup",
                    'Unsupported value: "": supported values: "rbac.authorization.k8s.io"',
                )
            ],
        ),
        (
            "RoleBinding",
            binding("RoleBinding", "b", "Role", "r", [{"kind": "Robot", "name": "r2"}], ns="a"),
            [
                (
                    "subjects[0].kind",
                    'Unsupported value: "Robot": supported values: "ServiceAccount", "User", '
                    '"Group"',
                )
            ],
        ),
    ],
)
def test_validation_names_the_field(
    kind: str, obj: dict[str, Any], causes: list[tuple[str, str]]
) -> None:
    rt = next(
        t
        for t in (rbac.CLUSTER_ROLES, rbac.ROLES, rbac.CLUSTER_ROLE_BINDINGS, rbac.ROLE_BINDINGS)
        if t.kind == kind
    )
    assert rbac.validate_object(rt, obj, None) == causes


def test_the_role_of_a_binding_cannot_change() -> None:
    old = binding("ClusterRoleBinding", "b", "ClusterRole", "r", [])
    new = binding("ClusterRoleBinding", "b", "ClusterRole", "r2", [])
    assert rbac.validate_object(rbac.CLUSTER_ROLE_BINDINGS, new, old) == [
        ("roleRef", "Invalid value: cannot change roleRef")
    ]


# -- usage and the unused-permission report ----------------------------------------------------


def test_the_access_log_counts_requests_and_names_the_rule() -> None:
    subject = {"kind": "ServiceAccount", "name": "exporter", "namespace": "kube-ballast"}
    auth = authorizer(
        role(
            "ClusterRole",
            "c",
            [
                READ_PODS,
                {
                    "verbs": ["get"],
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["cfg"],
                },
            ],
        ),
        binding("ClusterRoleBinding", "crb", "ClusterRole", "c", [subject]),
    )
    log = rbac.AccessLog()
    requests = [
        Attributes(SA, SA_GROUPS, "get", True, resource="pods", namespace="a", name="p1"),
        Attributes(SA, SA_GROUPS, "get", True, resource="pods", namespace="a", name="p2"),
        Attributes(SA, SA_GROUPS, "get", True, resource="configmaps", namespace="a", name="cfg"),
        Attributes(SA, SA_GROUPS, "delete", True, resource="pods", namespace="a", name="p1"),
    ]
    for attrs in requests:
        log.record(attrs, auth.authorize(attrs))
    usage = log.usage()["users"][SA]
    pods, configmap = usage["allowed"][1], usage["allowed"][0]
    # Names are kept only where a rule names resources (or the request was denied).
    assert (pods["resource"], pods["name"], pods["count"]) == ("pods", "", 2)
    assert pods["allowedBy"]["ruleIndex"] == 0
    assert pods["allowedBy"]["reason"] == (
        'RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "c" to '
        'ServiceAccount "exporter/kube-ballast"'
    )
    assert (configmap["name"], configmap["allowedBy"]["ruleIndex"]) == ("cfg", 1)
    assert [(d["verb"], d["name"]) for d in usage["denied"]] == [("delete", "p1")]
    log.reset()
    assert log.usage() == {"users": {}}


def test_unused_permissions_are_the_expanded_rules_no_request_matched() -> None:
    rules = [
        rule(verbs=["get", "list"], api_groups=[""], resources=["pods", "nodes"]),
        rule(verbs=["get"], api_groups=[""], resources=["configmaps"], resource_names=["a", "b"]),
        rule(verbs=["get"], non_resource_urls=["/metrics", "/livez"]),
    ]
    permissions = rbac.expand("ClusterRole/c", rules)
    assert len(permissions) == 4 + 2 + 2
    requests = [
        Attributes(SA, (), "list", True, resource="pods", namespace="x"),
        Attributes(SA, (), "get", True, resource="configmaps", namespace="x", name="a"),
        Attributes(SA, (), "get", False, path="/metrics"),
    ]
    unused = [p.describe() for p in rbac.unused_permissions(permissions, requests)]
    assert unused == [
        "ClusterRole/c rule 0: get pods (core)",
        "ClusterRole/c rule 0: get nodes (core)",
        "ClusterRole/c rule 0: list nodes (core)",
        "ClusterRole/c rule 1: get configmaps (core) named b",
        "ClusterRole/c rule 2: get /livez",
    ]


def test_wildcards_are_found_in_every_field() -> None:
    assert rule(verbs=["get"], api_groups=[""], resources=["pods"]).wildcards() == []
    assert rule(verbs=["*"], api_groups=["*"], resources=["*/status"]).wildcards() == [
        "verbs",
        "apiGroups",
        "resources",
    ]
    assert rule(verbs=["get"], non_resource_urls=["/healthz/*"]).wildcards() == ["nonResourceURLs"]


def test_bootstrap_objects_are_valid() -> None:
    objects = list(rbac.bootstrap_objects())
    assert {o["metadata"]["name"] for _, o in objects} >= {
        "cluster-admin",
        "system:discovery",
        "system:public-info-viewer",
    }
    for rt, obj in objects:
        assert rbac.validate_object(rt, obj, None) == []
