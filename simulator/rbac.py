"""RBAC for the simulated apiserver: who may do what, decided from the stored roles.

kube-ballast ships ClusterRoles, Roles and bindings for its exporter, receiver and
janitor. Written by hand they are guesses: a missing verb shows up as a 403 in
production, a superfluous one as a wider blast radius nobody notices. With
``authorization: RBAC`` the simulator decides every request the way kube-apiserver's
``--authorization-mode=RBAC`` does, from the ClusterRoles, ClusterRoleBindings, Roles and
RoleBindings stored in it, so the product's own service-account tokens can be run
against the shipped manifests in tests: a missing permission fails the test with the
real 403 text, and :class:`AccessLog` records which rule allowed each request, so the
permissions nobody used can be reported (:func:`unused_permissions`).

The code follows kubernetes/kubernetes:

- rule matching: pkg/apis/rbac/v1/evaluation_helpers.go (:func:`verb_matches`,
  :func:`api_group_matches`, :func:`resource_matches` with ``resource/subresource`` and
  ``*/subresource``, :func:`resource_name_matches`, :func:`non_resource_url_matches`
  with a trailing ``*``) and plugin/pkg/auth/authorizer/rbac/rbac.go ``RuleAllows``;
- which rules apply: pkg/registry/rbac/validation/rule.go ``VisitRulesFor``: every
  ClusterRoleBinding, then the RoleBindings of the request's namespace, each subject
  matched as ``appliesToUser`` does (User by name, Group by membership, ServiceAccount
  as ``system:serviceaccount:<ns>:<name>``), a binding to a missing role being an error
  that ends up in the 403's reason;
- the privileged-group authorizer in front of RBAC: ``system:masters`` may do anything;
- the 403: staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go
  ``forbiddenMessage`` wrapped by ``apierrors.NewForbidden`` (:func:`forbidden_error`);
- object validation: pkg/apis/rbac/validation/validation.go (:func:`validate_object`,
  run by the registry on create and update);
- the bootstrap policy's discovery, public-info, monitoring, basic-user and
  cluster-admin roles (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go,
  :func:`bootstrap_objects`).

Not modelled: aggregated ClusterRoles (``aggregationRule`` is stored, its rules are not
filled in by a controller), the escalation check on writing roles and bindings (the
real apiserver refuses to let a user grant what it does not hold), impersonation and
SubjectAccessReviews.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from . import apf
from .errors import ApiError
from .resources import BY_KEY, RBAC, ResourceType

# -- constants -----------------------------------------------------------------------------

ALL: Final = "*"
"""VerbAll, APIGroupAll, ResourceAll, ResourceNameAll and NonResourceAll."""

ALWAYS_ALLOW: Final = "AlwaysAllow"
RBAC_MODE: Final = "RBAC"
AuthorizationMode = Literal["AlwaysAllow", "RBAC"]
AUTHORIZATION_MODES: Final = (ALWAYS_ALLOW, RBAC_MODE)

CLUSTER_ROLES: Final = BY_KEY[(RBAC, "clusterroles")]
CLUSTER_ROLE_BINDINGS: Final = BY_KEY[(RBAC, "clusterrolebindings")]
ROLES: Final = BY_KEY[(RBAC, "roles")]
ROLE_BINDINGS: Final = BY_KEY[(RBAC, "rolebindings")]

SERVICE_ACCOUNT_KIND: Final = "ServiceAccount"
USER_KIND: Final = "User"
GROUP_KIND: Final = "Group"

# -- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRule:
    """rbacv1.PolicyRule: verbs on resources (or on non-resource URLs)."""

    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> PolicyRule:
        """The rule of a stored object's ``rules[i]`` (absent lists are empty)."""

        def strings(key: str) -> tuple[str, ...]:
            value = raw.get(key) or ()
            return tuple(str(v) for v in value)

        return cls(
            verbs=strings("verbs"),
            api_groups=strings("apiGroups"),
            resources=strings("resources"),
            resource_names=strings("resourceNames"),
            non_resource_urls=strings("nonResourceURLs"),
        )

    def to_mapping(self) -> dict[str, list[str]]:
        out = {
            "verbs": list(self.verbs),
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "resourceNames": list(self.resource_names),
            "nonResourceURLs": list(self.non_resource_urls),
        }
        return {k: v for k, v in out.items() if v or k == "verbs"}

    def wildcards(self) -> list[str]:
        """The fields of this rule that hold a ``*`` (whole or as a suffix/prefix)."""
        found = []
        for name, values in (
            ("verbs", self.verbs),
            ("apiGroups", self.api_groups),
            ("resources", self.resources),
            ("resourceNames", self.resource_names),
            ("nonResourceURLs", self.non_resource_urls),
        ):
            if any("*" in v for v in values):
                found.append(name)
        return found


def verb_matches(rule: PolicyRule, requested_verb: str) -> bool:
    return any(v in (ALL, requested_verb) for v in rule.verbs)


def api_group_matches(rule: PolicyRule, requested_group: str) -> bool:
    return any(g in (ALL, requested_group) for g in rule.api_groups)


def resource_matches(rule: PolicyRule, combined_resource: str, requested_subresource: str) -> bool:
    """``combined_resource`` is ``resource`` or ``resource/subresource``; a rule's
    ``*/subresource`` matches that subresource of every resource."""
    for resource in rule.resources:
        if resource in (ALL, combined_resource):
            return True
        if not requested_subresource:
            continue
        if (
            len(resource) == len(requested_subresource) + 2
            and resource.startswith("*/")
            and resource.endswith(requested_subresource)
        ):
            return True
    return False


def resource_name_matches(rule: PolicyRule, requested_name: str) -> bool:
    """No resourceNames: any name (and no name, as for list or create)."""
    return not rule.resource_names or requested_name in rule.resource_names


def non_resource_url_matches(rule: PolicyRule, requested_url: str) -> bool:
    for url in rule.non_resource_urls:
        if url in (ALL, requested_url):
            return True
        if url.endswith("*") and requested_url.startswith(url.rstrip("*")):
            return True
    return False


# -- request attributes -------------------------------------------------------------------


@dataclass(frozen=True)
class Attributes:
    """authorizer.Attributes as the apiserver's request-info filter builds them."""

    username: str
    groups: tuple[str, ...]
    verb: str
    is_resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def rule_allows(attrs: Attributes, rule: PolicyRule) -> bool:
    """rbac.go RuleAllows."""
    if attrs.is_resource_request:
        return (
            verb_matches(rule, attrs.verb)
            and api_group_matches(rule, attrs.api_group)
            and resource_matches(rule, attrs.combined_resource, attrs.subresource)
            and resource_name_matches(rule, attrs.name)
        )
    return verb_matches(rule, attrs.verb) and non_resource_url_matches(rule, attrs.path)


def name_from_field_selector(field_selector: str) -> str:
    """The name a list or watch is narrowed to by ``metadata.name=<name>`` (requestinfo.go
    sets RequestInfo.Name from it, so a rule with resourceNames can allow such a watch)."""
    name = ""
    for term in field_selector.split(","):
        key, op, value = _split_term(term.strip())
        if key == "metadata.name" and op in ("=", "=="):
            if name and name != value:
                return ""
            name = value
    return name


def _split_term(term: str) -> tuple[str, str, str]:
    for op in ("!=", "==", "="):
        key, sep, value = term.partition(op)
        if sep:
            return key.strip(), op, value.strip()
    return term, "", ""


# -- the 403 -------------------------------------------------------------------------------------


def forbidden_message(attrs: Attributes) -> str:
    """responsewriters.forbiddenMessage."""
    user = attrs.username
    if not attrs.is_resource_request:
        return f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'User "{user}" cannot {attrs.verb} resource "{attrs.combined_resource}" '
        f'in API group "{attrs.api_group}" {where}'
    )


def forbidden_error(attrs: Attributes, reason: str) -> ApiError:
    """responsewriters.Forbidden: apierrors.NewForbidden(GroupResource, name, message)."""
    message = forbidden_message(attrs)
    if reason:
        message = f"{message}: {reason}"
    details: dict[str, Any] = {}
    if not attrs.is_resource_request:
        return ApiError(403, "Forbidden", f"forbidden: {message}", details=details)
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    if attrs.api_group:
        details["group"] = attrs.api_group
    details["kind"] = attrs.resource
    if attrs.name:
        details["name"] = attrs.name
        text = f'{qualified} "{attrs.name}" is forbidden: {message}'
    else:
        text = f"{qualified} is forbidden: {message}"
    return ApiError(403, "Forbidden", text, details=details)


# -- the policy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    kind: str
    name: str
    namespace: str = ""

    def describe(self, binding_namespace: str) -> str:
        """rbac.go describeSubject (the service account reads ``name/namespace``)."""
        if self.kind == SERVICE_ACCOUNT_KIND:
            return f'{self.kind} "{self.name}/{self.namespace or binding_namespace}"'
        return f'{self.kind} "{self.name}"'

    def applies_to(self, username: str, groups: Sequence[str], binding_namespace: str) -> bool:
        """rule.go appliesToUser."""
        if self.kind == USER_KIND:
            return username == self.name
        if self.kind == GROUP_KIND:
            return self.name in groups
        if self.kind == SERVICE_ACCOUNT_KIND:
            namespace = self.namespace or binding_namespace
            if not namespace:
                return False
            return username == service_account_username(namespace, self.name)
        return False


def service_account_username(namespace: str, name: str) -> str:
    return f"{apf.SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


@dataclass(frozen=True)
class RoleRef:
    kind: str
    """ClusterRole or Role."""
    namespace: str
    """The role's namespace ("" for a ClusterRole)."""
    name: str

    def describe(self) -> str:
        if self.namespace:
            return f'{self.kind} "{self.namespace}/{self.name}"'
        return f'{self.kind} "{self.name}"'


@dataclass(frozen=True)
class Grant:
    """The rule that allowed a request, and how it reached the user."""

    binding_kind: str
    """ClusterRoleBinding or RoleBinding."""
    binding_namespace: str
    binding_name: str
    role: RoleRef
    rule_index: int
    rule: PolicyRule
    subject: Subject

    def reason(self) -> str:
        """The authorizer's reason, as rbac.go words it (``RBAC: allowed by ...``)."""
        if self.binding_kind == "ClusterRoleBinding":
            binding = f'ClusterRoleBinding "{self.binding_name}"'
        else:
            binding = f'RoleBinding "{self.binding_name}/{self.binding_namespace}"'
        subject = self.subject.describe(self.binding_namespace)
        return f'RBAC: allowed by {binding} of {self.role.kind} "{self.role.name}" to {subject}'

    def to_dict(self) -> dict[str, Any]:
        return {
            "binding": {
                "kind": self.binding_kind,
                "namespace": self.binding_namespace,
                "name": self.binding_name,
            },
            "role": {
                "kind": self.role.kind,
                "namespace": self.role.namespace,
                "name": self.role.name,
            },
            "ruleIndex": self.rule_index,
            "rule": self.rule.to_mapping(),
            "reason": self.reason(),
        }


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    grant: Grant | None = None


@dataclass(frozen=True)
class _Binding:
    kind: str
    namespace: str
    name: str
    role: RoleRef
    subjects: tuple[Subject, ...]


@dataclass
class _Policy:
    """The stored RBAC objects, decoded once per change."""

    roles: dict[tuple[str, str, str], tuple[PolicyRule, ...]] = field(default_factory=dict)
    """(kind, namespace, name) -> rules."""
    cluster_bindings: list[_Binding] = field(default_factory=list)
    role_bindings: dict[str, list[_Binding]] = field(default_factory=dict)
    """namespace -> its RoleBindings."""


class PolicySource(Protocol):
    """Read access to the stored RBAC objects (the server passes its store's)."""

    def list_objects(self, rt: ResourceType) -> Iterable[Mapping[str, Any]]: ...

    def resource_versions(self, rt: ResourceType) -> Iterable[Hashable]: ...


def _rules(obj: Mapping[str, Any]) -> tuple[PolicyRule, ...]:
    return tuple(
        PolicyRule.from_mapping(r) for r in obj.get("rules") or () if isinstance(r, Mapping)
    )


def _binding(kind: str, obj: Mapping[str, Any]) -> _Binding:
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    ref = obj.get("roleRef") or {}
    ref_kind = str(ref.get("kind") or "")
    role = RoleRef(ref_kind, namespace if ref_kind == "Role" else "", str(ref.get("name") or ""))
    subjects = tuple(
        Subject(str(s.get("kind") or ""), str(s.get("name") or ""), str(s.get("namespace") or ""))
        for s in obj.get("subjects") or ()
        if isinstance(s, Mapping)
    )
    return _Binding(kind, namespace, str(meta.get("name") or ""), role, subjects)


class RbacAuthorizer:
    """The privileged-group authorizer and RBAC, in that order (a union)."""

    def __init__(self, source: PolicySource) -> None:
        self._source = source
        self._version: tuple[Hashable, ...] | None = None
        self._policy = _Policy()

    def _current(self) -> _Policy:
        version = tuple(
            tuple(self._source.resource_versions(rt))
            for rt in (CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS, ROLES, ROLE_BINDINGS)
        )
        if version == self._version:
            return self._policy
        policy = _Policy()
        for obj in self._source.list_objects(CLUSTER_ROLES):
            policy.roles[("ClusterRole", "", _name(obj))] = _rules(obj)
        for obj in self._source.list_objects(ROLES):
            policy.roles[("Role", _namespace(obj), _name(obj))] = _rules(obj)
        policy.cluster_bindings = [
            _binding("ClusterRoleBinding", obj)
            for obj in self._source.list_objects(CLUSTER_ROLE_BINDINGS)
        ]
        for obj in self._source.list_objects(ROLE_BINDINGS):
            binding = _binding("RoleBinding", obj)
            policy.role_bindings.setdefault(binding.namespace, []).append(binding)
        self._policy, self._version = policy, version
        return policy

    def authorize(self, attrs: Attributes) -> Decision:
        if apf.SYSTEM_PRIVILEGED_GROUP in attrs.groups:
            return Decision(True, f"allowed by the {apf.SYSTEM_PRIVILEGED_GROUP} group")
        policy = self._current()
        errors: list[str] = []
        bindings: Iterator[_Binding] = iter(policy.cluster_bindings)
        if attrs.namespace:
            bindings = _chain(bindings, policy.role_bindings.get(attrs.namespace, ()))
        for binding in bindings:
            subject = next(
                (
                    s
                    for s in binding.subjects
                    if s.applies_to(attrs.username, attrs.groups, binding.namespace)
                ),
                None,
            )
            if subject is None:
                continue
            if binding.kind == "ClusterRoleBinding" and binding.role.kind != "ClusterRole":
                continue
            rules = policy.roles.get((binding.role.kind, binding.role.namespace, binding.role.name))
            if rules is None:
                plural = "clusterrole" if binding.role.kind == "ClusterRole" else "role"
                errors.append(f'{plural}.rbac.authorization.k8s.io "{binding.role.name}" not found')
                continue
            for index, rule in enumerate(rules):
                if rule_allows(attrs, rule):
                    grant = Grant(
                        binding.kind,
                        binding.namespace,
                        binding.name,
                        binding.role,
                        index,
                        rule,
                        subject,
                    )
                    return Decision(True, grant.reason(), grant)
        reason = ""
        if errors:
            aggregate = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
            reason = f"RBAC: {aggregate}"
        return Decision(False, reason)


def _chain(first: Iterable[_Binding], second: Iterable[_Binding]) -> Iterator[_Binding]:
    yield from first
    yield from second


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _namespace(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


# -- access recording ------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessKey:
    """One kind of request a user made (counted, not listed one by one)."""

    username: str
    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    """Only when the allowing rule names resources (or the request was denied): names
    are unbounded otherwise."""
    path: str
    """Non-resource requests only."""


class AccessLog:
    """Which requests each user made, and which rule allowed (or nothing allowed) each.

    Served at ``GET /_sim/authz/usage``. Only requests over HTTP are recorded: the
    simulated kubelets and controllers act in process and are not authorized.
    """

    def __init__(self) -> None:
        self._allowed: dict[AccessKey, tuple[int, Grant | None]] = {}
        self._denied: dict[AccessKey, tuple[int, str]] = {}

    def record(self, attrs: Attributes, decision: Decision) -> None:
        grant = decision.grant
        keep_name = not decision.allowed or (grant is not None and bool(grant.rule.resource_names))
        key = AccessKey(
            attrs.username,
            attrs.verb,
            attrs.api_group,
            attrs.resource,
            attrs.subresource,
            attrs.namespace,
            attrs.name if keep_name else "",
            "" if attrs.is_resource_request else attrs.path,
        )
        if decision.allowed:
            count, _ = self._allowed.get(key, (0, None))
            self._allowed[key] = (count + 1, grant)
        else:
            count, _ = self._denied.get(key, (0, ""))
            self._denied[key] = (count + 1, decision.reason)

    def reset(self) -> None:
        self._allowed.clear()
        self._denied.clear()

    def usage(self) -> dict[str, Any]:
        """``{"users": {name: {"allowed": [...], "denied": [...]}}}``, sorted."""
        users: dict[str, dict[str, list[dict[str, Any]]]] = {}
        allowed = sorted(self._allowed.items(), key=lambda kv: _sort_key(kv[0]))
        denied = sorted(self._denied.items(), key=lambda kv: _sort_key(kv[0]))
        for key, (count, grant) in allowed:
            entry = _key_dict(key)
            entry["count"] = count
            entry["allowedBy"] = None if grant is None else grant.to_dict()
            users.setdefault(key.username, {"allowed": [], "denied": []})["allowed"].append(entry)
        for key, (count, reason) in denied:
            entry = _key_dict(key)
            entry["count"] = count
            entry["reason"] = reason
            users.setdefault(key.username, {"allowed": [], "denied": []})["denied"].append(entry)
        return {"users": users}


def _sort_key(key: AccessKey) -> tuple[str, ...]:
    return (
        key.username,
        key.path,
        key.api_group,
        key.resource,
        key.subresource,
        key.namespace,
        key.verb,
        key.name,
    )


def _key_dict(key: AccessKey) -> dict[str, Any]:
    return {
        "verb": key.verb,
        "apiGroup": key.api_group,
        "resource": key.resource,
        "subresource": key.subresource,
        "namespace": key.namespace,
        "name": key.name,
        "path": key.path,
    }


@dataclass(frozen=True)
class Permission:
    """One verb on one resource (or URL) a rule grants: a rule expanded."""

    role: str
    """Where the rule is, for people: ``ClusterRole/x`` or ``Role/ns/x``."""
    rule_index: int
    verb: str
    api_group: str = ""
    resource: str = ""
    """``resource`` or ``resource/subresource`` as the rule says it."""
    resource_name: str = ""
    non_resource_url: str = ""

    def describe(self) -> str:
        if self.non_resource_url:
            what = f"{self.verb} {self.non_resource_url}"
        else:
            group = self.api_group or "core"
            what = f"{self.verb} {self.resource} ({group})"
            if self.resource_name:
                what += f" named {self.resource_name}"
        return f"{self.role} rule {self.rule_index}: {what}"

    def as_rule(self) -> PolicyRule:
        if self.non_resource_url:
            return PolicyRule(verbs=(self.verb,), non_resource_urls=(self.non_resource_url,))
        return PolicyRule(
            verbs=(self.verb,),
            api_groups=(self.api_group,),
            resources=(self.resource,),
            resource_names=(self.resource_name,) if self.resource_name else (),
        )


def expand(role: str, rules: Sequence[PolicyRule]) -> list[Permission]:
    """Every single permission the rules grant, one per verb x group x resource x name."""
    out: list[Permission] = []
    for index, rule in enumerate(rules):
        for verb in rule.verbs:
            for url in rule.non_resource_urls:
                out.append(Permission(role, index, verb, non_resource_url=url))
            for group in rule.api_groups:
                for resource in rule.resources:
                    for name in rule.resource_names or ("",):
                        out.append(Permission(role, index, verb, group, resource, name))
    return out


def attributes_of_usage(username: str, entry: Mapping[str, Any]) -> Attributes:
    """The request attributes behind one ``/_sim/authz/usage`` entry."""
    path = str(entry.get("path") or "")
    return Attributes(
        username=username,
        groups=(),
        verb=str(entry["verb"]),
        is_resource_request=not path,
        path=path,
        api_group=str(entry.get("apiGroup") or ""),
        resource=str(entry.get("resource") or ""),
        subresource=str(entry.get("subresource") or ""),
        namespace=str(entry.get("namespace") or ""),
        name=str(entry.get("name") or ""),
    )


def unused_permissions(
    permissions: Iterable[Permission], requests: Iterable[Attributes]
) -> list[Permission]:
    """The permissions no request exercised: a permission is used when a request would be
    allowed by it alone (so ``list pods`` in a rule is used by a list of pods, whichever
    rule actually allowed it)."""
    requests = list(requests)
    return [p for p in permissions if not any(rule_allows(a, p.as_rule()) for a in requests)]


# -- validation ----------------------------------------------------------------------------------


def validate_object(
    rt: ResourceType, obj: Mapping[str, Any], old: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    """(field, message) for every problem pkg/apis/rbac/validation finds (empty: valid)."""
    causes: list[tuple[str, str]] = []
    if rt.key in (CLUSTER_ROLES.key, ROLES.key):
        namespaced = rt.key == ROLES.key
        rules = obj.get("rules")
        if rules is not None and not isinstance(rules, list):
            return [("rules", "Invalid value: must be a list")]
        for index, raw in enumerate(rules or ()):
            causes.extend(_validate_rule(raw, f"rules[{index}]", namespaced))
        return causes
    if rt.key in (CLUSTER_ROLE_BINDINGS.key, ROLE_BINDINGS.key):
        namespaced = rt.key == ROLE_BINDINGS.key
        ref = obj.get("roleRef")
        if not isinstance(ref, Mapping):
            return [("roleRef", "Required value")]
        if ref.get("apiGroup") != RBAC:
            causes.append(
                (
                    "roleRef.apiGroup",
                    f'Unsupported value: "{ref.get("apiGroup") or ""}": supported values: "{RBAC}"',
                )
            )
        kinds = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
        if ref.get("kind") not in kinds:
            supported = ", ".join(f'"{k}"' for k in kinds)
            causes.append(
                (
                    "roleRef.kind",
                    f'Unsupported value: "{ref.get("kind") or ""}": supported values: {supported}',
                )
            )
        if not ref.get("name"):
            causes.append(("roleRef.name", "Required value"))
        if old is not None and old.get("roleRef") != ref:
            causes.append(("roleRef", "Invalid value: cannot change roleRef"))
        subjects = obj.get("subjects") or []
        if not isinstance(subjects, list):
            return [*causes, ("subjects", "Invalid value: must be a list")]
        for index, subject in enumerate(subjects):
            causes.extend(_validate_subject(subject, f"subjects[{index}]", namespaced))
    return causes


def _validate_rule(raw: Any, path: str, namespaced: bool) -> list[tuple[str, str]]:
    if not isinstance(raw, Mapping):
        return [(path, "Invalid value: must be an object")]
    for key in ("verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"):
        value = raw.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            return [(f"{path}.{key}", "Invalid value: must be a list of strings")]
    rule = PolicyRule.from_mapping(raw)
    causes: list[tuple[str, str]] = []
    if not rule.verbs:
        causes.append((f"{path}.verbs", "Required value: verbs must contain at least one value"))
    if rule.non_resource_urls:
        urls = "[" + " ".join(rule.non_resource_urls) + "]"
        if namespaced:
            causes.append(
                (
                    f"{path}.nonResourceURLs",
                    f"Invalid value: {urls}: namespaced rules cannot apply to non-resource URLs",
                )
            )
        if rule.api_groups or rule.resources or rule.resource_names:
            causes.append(
                (
                    f"{path}.nonResourceURLs",
                    f"Invalid value: {urls}: rules cannot apply to both regular resources and "
                    "non-resource URLs",
                )
            )
        return causes
    if not rule.api_groups:
        causes.append(
            (
                f"{path}.apiGroups",
                "Required value: resource rules must supply at least one api group",
            )
        )
    if not rule.resources:
        causes.append(
            (
                f"{path}.resources",
                "Required value: resource rules must supply at least one resource",
            )
        )
    return causes


def _validate_subject(raw: Any, path: str, namespaced: bool) -> list[tuple[str, str]]:
    if not isinstance(raw, Mapping):
        return [(path, "Invalid value: must be an object")]
    causes: list[tuple[str, str]] = []
    kind = raw.get("kind")
    if not raw.get("name"):
        causes.append((f"{path}.name", "Required value"))
    if kind == SERVICE_ACCOUNT_KIND:
        if raw.get("apiGroup"):
            causes.append(
                (
                    f"{path}.apiGroup",
                    f'Unsupported value: "{raw.get("apiGroup")}": supported values: ""',
                )
            )
        if not raw.get("namespace") and not namespaced:
            causes.append((f"{path}.namespace", "Required value"))
    elif kind in (USER_KIND, GROUP_KIND):
        if raw.get("apiGroup") != RBAC:
            causes.append(
                (
                    f"{path}.apiGroup",
                    f'Unsupported value: "{raw.get("apiGroup") or ""}": supported values: "{RBAC}"',
                )
            )
    else:
        causes.append(
            (
                f"{path}.kind",
                f'Unsupported value: "{kind or ""}": supported values: "ServiceAccount", '
                '"User", "Group"',
            )
        )
    return causes


# -- bootstrap policy ------------------------------------------------------------------------------

_BOOTSTRAP_LABELS: Final = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AUTOUPDATE: Final = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def _get_urls(*urls: str) -> list[dict[str, list[str]]]:
    return [{"verbs": ["get"], "nonResourceURLs": list(urls)}]


BOOTSTRAP_CLUSTER_ROLES: Final[Mapping[str, list[dict[str, list[str]]]]] = {
    "cluster-admin": [
        {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
        {"verbs": ["*"], "nonResourceURLs": ["*"]},
    ],
    "system:discovery": _get_urls(
        "/livez",
        "/readyz",
        "/healthz",
        "/version",
        "/version/",
        "/openapi",
        "/openapi/*",
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
    ),
    "system:monitoring": _get_urls(
        "/metrics",
        "/metrics/slis",
        "/livez",
        "/readyz",
        "/healthz",
        "/livez/*",
        "/readyz/*",
        "/healthz/*",
    ),
    "system:basic-user": [
        {
            "verbs": ["create"],
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        },
        {
            "verbs": ["create"],
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["selfsubjectreviews"],
        },
    ],
    "system:public-info-viewer": _get_urls(
        "/livez", "/readyz", "/healthz", "/version", "/version/"
    ),
}
"""The bootstrap ClusterRoles the simulator's users meet (bootstrappolicy/policy.go)."""

BOOTSTRAP_BINDINGS: Final[Mapping[str, tuple[str, ...]]] = {
    "cluster-admin": (apf.SYSTEM_PRIVILEGED_GROUP,),
    "system:discovery": (apf.ALL_AUTHENTICATED,),
    "system:monitoring": ("system:monitoring",),
    "system:basic-user": (apf.ALL_AUTHENTICATED,),
    "system:public-info-viewer": (apf.ALL_AUTHENTICATED, apf.ALL_UNAUTHENTICATED),
}
"""ClusterRoleBinding (named as its role) -> the groups it binds."""


def bootstrap_objects() -> Iterator[tuple[ResourceType, dict[str, Any]]]:
    """The bootstrap ClusterRoles and ClusterRoleBindings, without uid or timestamps."""
    for name, rules in BOOTSTRAP_CLUSTER_ROLES.items():
        yield (
            CLUSTER_ROLES,
            {
                "apiVersion": CLUSTER_ROLES.api_version,
                "kind": CLUSTER_ROLES.kind,
                "metadata": {
                    "name": name,
                    "labels": dict(_BOOTSTRAP_LABELS),
                    "annotations": dict(_AUTOUPDATE),
                },
                "rules": [dict(r) for r in rules],
            },
        )
    for name, groups in BOOTSTRAP_BINDINGS.items():
        yield (
            CLUSTER_ROLE_BINDINGS,
            {
                "apiVersion": CLUSTER_ROLE_BINDINGS.api_version,
                "kind": CLUSTER_ROLE_BINDINGS.kind,
                "metadata": {
                    "name": name,
                    "labels": dict(_BOOTSTRAP_LABELS),
                    "annotations": dict(_AUTOUPDATE),
                },
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
                "subjects": [{"apiGroup": RBAC, "kind": GROUP_KIND, "name": g} for g in groups],
            },
        )


__all__ = [
    "ALWAYS_ALLOW",
    "AUTHORIZATION_MODES",
    "RBAC_MODE",
    "AccessLog",
    "Attributes",
    "AuthorizationMode",
    "Decision",
    "Grant",
    "Permission",
    "PolicyRule",
    "RbacAuthorizer",
    "api_group_matches",
    "attributes_of_usage",
    "bootstrap_objects",
    "expand",
    "forbidden_error",
    "forbidden_message",
    "name_from_field_selector",
    "non_resource_url_matches",
    "resource_matches",
    "resource_name_matches",
    "rule_allows",
    "service_account_username",
    "unused_permissions",
    "validate_object",
    "verb_matches",
]
