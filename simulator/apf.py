"""API Priority and Fairness classification, as kube-apiserver does it with its defaults.

Why this exists: kube-ballast watches what happens to a large cluster when the apiserver
is congested, and on a real apiserver congestion is never uniform. APF sorts every request
into a FlowSchema and a priority level, and each level has its own seats and queues, so
kubelet heartbeats (``node-high``), leader election (``leader-election``) and workloads
(``workload-low``) starve at different times. The fault injector (``faults.py``) decides
per priority level, the metrics (``metrics.py``) are labelled by flow schema and priority
level, and the scenario loads the same default objects into the store so that clients
listing ``flowschemas`` see what a real cluster shows. All three read this one table.

What it follows (kubernetes/kubernetes, flowcontrol v1, Kubernetes 1.29 and later):

* the objects: staging/src/k8s.io/apiserver/pkg/apis/flowcontrol/bootstrap/default.go
  (the mandatory ``exempt`` and ``catch-all`` plus the suggested configuration);
* the matching: staging/src/k8s.io/apiserver/pkg/util/flowcontrol/rule.go
  (``matchesFlowSchema`` and the helpers below it);
* the order: apf_controller.go sorts FlowSchemas by matchingPrecedence, then by name,
  and the first match wins;
* the nominal seats: NominalCL(l) = ceil(ServerCL * NCS(l) / sum_k NCS(k)), where ServerCL
  is --max-requests-inflight + --max-mutating-requests-inflight (apf_controller.go).

Only the default objects are modelled: the simulator does not re-read FlowSchemas a client
edits in the store (no scenario needs it, and it keeps ``classify`` a pure function).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

API_VERSION: Final = "flowcontrol.apiserver.k8s.io/v1"
AUTO_UPDATE_ANNOTATION: Final = "apf.kubernetes.io/autoupdate-spec"
"""flowcontrol.AutoUpdateAnnotationKey: the bootstrap ensurer keeps such objects current."""

# Well-known identities (staging/src/k8s.io/apiserver/pkg/authentication/user/user.go and
# .../authentication/serviceaccount/util.go).
SYSTEM_PRIVILEGED_GROUP: Final = "system:masters"
NODES_GROUP: Final = "system:nodes"
ALL_AUTHENTICATED: Final = "system:authenticated"
ALL_UNAUTHENTICATED: Final = "system:unauthenticated"
ANONYMOUS: Final = "system:anonymous"
KUBE_CONTROLLER_MANAGER: Final = "system:kube-controller-manager"
KUBE_SCHEDULER: Final = "system:kube-scheduler"
ALL_SERVICE_ACCOUNTS_GROUP: Final = "system:serviceaccounts"
SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
NODE_USER_PREFIX: Final = "system:node:"

# Priority level names.
EXEMPT: Final = "exempt"
CATCH_ALL: Final = "catch-all"
SYSTEM: Final = "system"
NODE_HIGH: Final = "node-high"
LEADER_ELECTION: Final = "leader-election"
WORKLOAD_HIGH: Final = "workload-high"
WORKLOAD_LOW: Final = "workload-low"
GLOBAL_DEFAULT: Final = "global-default"

_ALL: Final = "*"  # VerbAll, APIGroupAll, ResourceAll, NamespaceEvery, NameAll, NonResourceAll


# --- The table -------------------------------------------------------------------------
# One description drives both the objects served to clients and the matcher, so the two
# cannot drift apart.


@dataclass(frozen=True)
class _Subject:
    kind: str  # "User" | "Group" | "ServiceAccount"
    name: str
    namespace: str = ""  # ServiceAccount only

    def matches(self, username: str, groups: frozenset[str]) -> bool:
        # rule.go matchesSubject.
        if self.kind == "User":
            return self.name in (_ALL, username)
        if self.kind == "Group":
            return self.name == _ALL or self.name in groups
        # ServiceAccount: "system:serviceaccount:<namespace>:<name>", name "*" = any in ns.
        prefix = f"{SERVICE_ACCOUNT_PREFIX}{self.namespace}:"
        if self.name == _ALL:
            return username.startswith(prefix)
        return username == prefix + self.name

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "User":
            return {"kind": "User", "user": {"name": self.name}}
        if self.kind == "Group":
            return {"kind": "Group", "group": {"name": self.name}}
        return {
            "kind": "ServiceAccount",
            "serviceAccount": {"name": self.name, "namespace": self.namespace},
        }


@dataclass(frozen=True)
class _ResourceRule:
    verbs: tuple[str, ...]
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    namespaces: tuple[str, ...]
    cluster_scope: bool

    def matches(self, verb: str, api_group: str, resource: str, namespaced: bool) -> bool:
        # rule.go matchesResourcePolicyRule: a cluster-scoped request (no namespace) only
        # matches a rule with clusterScope; a namespaced one needs its namespace listed.
        # No default rule lists a namespace other than "*", which is why the classifier
        # only needs to know whether the request has a namespace at all.
        if not (_contains(self.verbs, verb) and _contains(self.resources, resource)):
            return False
        if not _contains(self.api_groups, api_group):
            return False
        if not namespaced:
            return self.cluster_scope
        return _contains(self.namespaces, _ALL)

    def to_dict(self) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "verbs": list(self.verbs),
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "namespaces": list(self.namespaces),
        }
        if self.cluster_scope:  # Go: `json:"clusterScope,omitempty"`
            rule["clusterScope"] = True
        return rule


@dataclass(frozen=True)
class _NonResourceRule:
    verbs: tuple[str, ...]
    urls: tuple[str, ...]

    def matches(self, verb: str, path: str) -> bool:
        # rule.go matchPolicyRuleNonResourceURL: "*", an exact path, or a "/prefix/*".
        if not _contains(self.verbs, verb):
            return False
        for rule_path in self.urls:
            if rule_path in (_ALL, path):
                return True
            prefix = rule_path.removesuffix("*")
            if not prefix.endswith("/"):
                prefix += "/"
            if path.startswith(prefix):
                return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"verbs": list(self.verbs), "nonResourceURLs": list(self.urls)}


@dataclass(frozen=True)
class _PolicyRules:
    subjects: tuple[_Subject, ...]
    resource_rules: tuple[_ResourceRule, ...] = ()
    non_resource_rules: tuple[_NonResourceRule, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"subjects": [s.to_dict() for s in self.subjects]}
        if self.resource_rules:
            out["resourceRules"] = [r.to_dict() for r in self.resource_rules]
        if self.non_resource_rules:
            out["nonResourceRules"] = [r.to_dict() for r in self.non_resource_rules]
        return out


@dataclass(frozen=True)
class FlowSchemaSpec:
    """One default FlowSchema."""

    name: str
    priority_level: str
    matching_precedence: int
    distinguisher: str | None  # "ByUser" | "ByNamespace" | None
    rules: tuple[_PolicyRules, ...]

    def to_object(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "priorityLevelConfiguration": {"name": self.priority_level},
            "matchingPrecedence": self.matching_precedence,
            "rules": [r.to_dict() for r in self.rules],
        }
        if self.distinguisher is not None:
            spec["distinguisherMethod"] = {"type": self.distinguisher}
        return _object("FlowSchema", self.name, spec)


@dataclass(frozen=True)
class PriorityLevelSpec:
    """One default PriorityLevelConfiguration."""

    name: str
    nominal_concurrency_shares: int
    lendable_percent: int
    exempt: bool = False
    queues: int = 0  # 0: LimitResponse "Reject" (no queuing), as catch-all
    hand_size: int = 0
    queue_length_limit: int = 0

    def to_object(self) -> dict[str, Any]:
        if self.exempt:
            spec: dict[str, Any] = {
                "type": "Exempt",
                "exempt": {
                    "nominalConcurrencyShares": self.nominal_concurrency_shares,
                    "lendablePercent": self.lendable_percent,
                },
            }
        else:
            limit_response: dict[str, Any] = {"type": "Reject"}
            if self.queues:
                limit_response = {
                    "type": "Queue",
                    "queuing": {
                        "queues": self.queues,
                        "handSize": self.hand_size,
                        "queueLengthLimit": self.queue_length_limit,
                    },
                }
            spec = {
                "type": "Limited",
                "limited": {
                    "nominalConcurrencyShares": self.nominal_concurrency_shares,
                    "lendablePercent": self.lendable_percent,
                    "limitResponse": limit_response,
                },
            }
        return _object("PriorityLevelConfiguration", self.name, spec)


def _object(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "annotations": {AUTO_UPDATE_ANNOTATION: "true"}},
        "spec": spec,
    }


def _contains(values: tuple[str, ...], x: str) -> bool:
    # rule.go containsString: a lone wildcard matches everything, else exact membership.
    return values == (_ALL,) or x in values


def _groups(*names: str) -> tuple[_Subject, ...]:
    return tuple(_Subject("Group", n) for n in names)


def _users(*names: str) -> tuple[_Subject, ...]:
    return tuple(_Subject("User", n) for n in names)


def _kube_system_sa(*names: str) -> tuple[_Subject, ...]:
    return tuple(_Subject("ServiceAccount", n, "kube-system") for n in names)


def _rr(
    verbs: tuple[str, ...],
    groups: tuple[str, ...],
    resources: tuple[str, ...],
    cluster_scope: bool,
    namespaces: tuple[str, ...] = (_ALL,),
) -> _ResourceRule:
    return _ResourceRule(verbs, groups, resources, namespaces, cluster_scope)


_EVERYTHING_RESOURCE = (_rr((_ALL,), (_ALL,), (_ALL,), True),)
_EVERYTHING_NON_RESOURCE = (_NonResourceRule((_ALL,), (_ALL,)),)
_GET_CREATE_UPDATE = ("get", "create", "update")


def _all_of(subjects: tuple[_Subject, ...]) -> tuple[_PolicyRules, ...]:
    """Rules matching the subjects for any verb and target (the helper NewFSAll)."""
    return (_PolicyRules(subjects, _EVERYTHING_RESOURCE, _EVERYTHING_NON_RESOURCE),)


PRIORITY_LEVELS: Final[tuple[PriorityLevelSpec, ...]] = (
    # Mandatory.
    PriorityLevelSpec(EXEMPT, 0, 0, exempt=True),
    PriorityLevelSpec(CATCH_ALL, 5, 0),
    # Suggested.
    PriorityLevelSpec(SYSTEM, 30, 33, queues=64, hand_size=6, queue_length_limit=50),
    PriorityLevelSpec(NODE_HIGH, 40, 25, queues=64, hand_size=6, queue_length_limit=50),
    PriorityLevelSpec(LEADER_ELECTION, 10, 0, queues=16, hand_size=4, queue_length_limit=50),
    PriorityLevelSpec(WORKLOAD_HIGH, 40, 50, queues=128, hand_size=6, queue_length_limit=50),
    PriorityLevelSpec(WORKLOAD_LOW, 100, 90, queues=128, hand_size=6, queue_length_limit=50),
    PriorityLevelSpec(GLOBAL_DEFAULT, 20, 50, queues=128, hand_size=6, queue_length_limit=50),
)

_FLOW_SCHEMAS_UNSORTED: Final[tuple[FlowSchemaSpec, ...]] = (
    # Mandatory: sysadmins are never throttled, so they can always repair a cluster.
    FlowSchemaSpec("exempt", EXEMPT, 1, None, _all_of(_groups(SYSTEM_PRIVILEGED_GROUP))),
    FlowSchemaSpec(
        "catch-all",
        CATCH_ALL,
        10000,
        "ByUser",
        _all_of(_groups(ALL_UNAUTHENTICATED, ALL_AUTHENTICATED)),
    ),
    # Suggested, in the order of default.go (by matching precedence).
    FlowSchemaSpec(
        "probes",
        EXEMPT,
        2,
        None,
        (
            _PolicyRules(
                _groups(ALL_UNAUTHENTICATED, ALL_AUTHENTICATED),
                non_resource_rules=(_NonResourceRule(("get",), ("/healthz", "/readyz", "/livez")),),
            ),
        ),
    ),
    FlowSchemaSpec(
        "system-leader-election",
        LEADER_ELECTION,
        100,
        "ByUser",
        (
            _PolicyRules(
                _users(KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER) + _kube_system_sa(_ALL),
                (_rr(_GET_CREATE_UPDATE, ("coordination.k8s.io",), ("leases",), False),),
            ),
        ),
    ),
    FlowSchemaSpec(
        "endpoint-controller",
        WORKLOAD_HIGH,
        150,
        "ByUser",
        (
            _PolicyRules(
                _users(KUBE_CONTROLLER_MANAGER)
                + _kube_system_sa("endpoint-controller", "endpointslicemirroring-controller"),
                (_rr(_GET_CREATE_UPDATE, ("",), ("endpoints",), False),),
            ),
        ),
    ),
    FlowSchemaSpec(
        "workload-leader-election",
        LEADER_ELECTION,
        200,
        "ByUser",
        (
            _PolicyRules(
                _kube_system_sa(_ALL),
                (
                    _rr(_GET_CREATE_UPDATE, ("",), ("endpoints", "configmaps"), False),
                    _rr(_GET_CREATE_UPDATE, ("coordination.k8s.io",), ("leases",), False),
                ),
            ),
        ),
    ),
    # Node heartbeats get their own level: "In large clusters 50% - 90% of all API calls
    # use this priority-level" (default.go).
    FlowSchemaSpec(
        "system-node-high",
        NODE_HIGH,
        400,
        "ByUser",
        (
            _PolicyRules(
                _groups(NODES_GROUP),
                (
                    _rr((_ALL,), ("",), ("nodes", "nodes/status"), True),
                    _rr((_ALL,), ("coordination.k8s.io",), ("leases",), False),
                ),
            ),
        ),
    ),
    FlowSchemaSpec("system-nodes", SYSTEM, 500, "ByUser", _all_of(_groups(NODES_GROUP))),
    FlowSchemaSpec(
        "kube-controller-manager",
        WORKLOAD_HIGH,
        800,
        "ByNamespace",
        _all_of(_users(KUBE_CONTROLLER_MANAGER)),
    ),
    FlowSchemaSpec(
        "kube-scheduler", WORKLOAD_HIGH, 800, "ByNamespace", _all_of(_users(KUBE_SCHEDULER))
    ),
    FlowSchemaSpec(
        "kube-system-service-accounts",
        WORKLOAD_HIGH,
        900,
        "ByNamespace",
        _all_of(_kube_system_sa(_ALL)),
    ),
    FlowSchemaSpec(
        "service-accounts",
        WORKLOAD_LOW,
        9000,
        "ByUser",
        _all_of(_groups(ALL_SERVICE_ACCOUNTS_GROUP)),
    ),
    FlowSchemaSpec(
        "global-default",
        GLOBAL_DEFAULT,
        9900,
        "ByUser",
        _all_of(_groups(ALL_UNAUTHENTICATED, ALL_AUTHENTICATED)),
    ),
)

FLOW_SCHEMAS: Final[tuple[FlowSchemaSpec, ...]] = tuple(
    sorted(_FLOW_SCHEMAS_UNSORTED, key=lambda fs: (fs.matching_precedence, fs.name))
)
"""The defaults in evaluation order: matchingPrecedence, then name (apf_controller.go)."""

PRIORITY_LEVEL_NAMES: Final[frozenset[str]] = frozenset(pl.name for pl in PRIORITY_LEVELS)
FLOW_SCHEMA_NAMES: Final[frozenset[str]] = frozenset(fs.name for fs in FLOW_SCHEMAS)
PRIORITY_LEVEL_OF: Final[Mapping[str, str]] = {fs.name: fs.priority_level for fs in FLOW_SCHEMAS}
"""Flow schema name -> priority level name."""

# A FlowSchema naming a missing level is "dangling" on a real server; ours never are.
if not all(fs.priority_level in PRIORITY_LEVEL_NAMES for fs in FLOW_SCHEMAS):  # pragma: no cover
    raise AssertionError("a default FlowSchema names an undefined priority level")


# --- Public interface ------------------------------------------------------------------


def default_flowschemas() -> list[dict[str, Any]]:
    """The default FlowSchemas as flowcontrol.apiserver.k8s.io/v1 objects (fresh copies)."""
    return [fs.to_object() for fs in FLOW_SCHEMAS]


def default_priority_levels() -> list[dict[str, Any]]:
    """The default PriorityLevelConfigurations as v1 objects (fresh copies)."""
    return [pl.to_object() for pl in PRIORITY_LEVELS]


def is_exempt(priority_level: str) -> bool:
    """True for a level whose requests APF never queues or rejects."""
    return priority_level == EXEMPT


def nominal_limit_seats(server_concurrency_limit: int) -> dict[str, int]:
    """Priority level -> nominal seats, as apiserver_flowcontrol_nominal_limit_seats shows.

    ``server_concurrency_limit`` is --max-requests-inflight + --max-mutating-requests-inflight
    (600 by default, giving node-high 98 seats and workload-low 245).
    """
    if server_concurrency_limit <= 0:
        raise ValueError("server_concurrency_limit must be positive")
    share_sum = sum(pl.nominal_concurrency_shares for pl in PRIORITY_LEVELS)
    return {
        pl.name: math.ceil(server_concurrency_limit * pl.nominal_concurrency_shares / share_sum)
        for pl in PRIORITY_LEVELS
    }


def implied_groups(username: str, groups: Sequence[str]) -> frozenset[str]:
    """The groups the real authenticators attach, on top of ``groups``.

    The simulator authenticates bearer tokens to bare usernames, while the real apiserver's
    authenticators attach groups: every authenticated user gets ``system:authenticated``
    (the group adder in pkg/authentication/request/union), service-account tokens carry
    ``system:serviceaccounts`` and ``system:serviceaccounts:<ns>``
    (serviceaccount/util.go MakeGroupNames), and kubelet client certificates carry
    ``O=system:nodes``. Deriving them here makes a username-only token table classify as
    a real cluster would.
    """
    out = set(groups)
    if username.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace = username[len(SERVICE_ACCOUNT_PREFIX) :].split(":", 1)[0]
        out.update((ALL_SERVICE_ACCOUNTS_GROUP, f"{ALL_SERVICE_ACCOUNTS_GROUP}:{namespace}"))
    if username.startswith(NODE_USER_PREFIX):
        out.add(NODES_GROUP)
    if username == ANONYMOUS or ALL_UNAUTHENTICATED in out:
        out.add(ALL_UNAUTHENTICATED)
    else:
        out.add(ALL_AUTHENTICATED)
    return frozenset(out)


def classify(
    username: str,
    groups: Sequence[str],
    verb: str,
    api_group: str,
    resource: str,
    namespace: str,
    *,
    subresource: str = "",
    non_resource_path: str = "",
) -> tuple[str, str]:
    """(flow schema, priority level) for one request, first match in precedence order.

    ``verb`` is the request-info verb (get, list, watch, create, update, patch, delete,
    deletecollection). ``resource`` may already carry its subresource ("nodes/status") or
    pass it as ``subresource``. A non-empty ``non_resource_path`` (e.g. "/healthz") makes
    it a non-resource request, when api_group, resource and namespace are ignored.
    """
    if subresource:
        resource = f"{resource}/{subresource}"
    if non_resource_path:
        return _classify_non_resource(username, tuple(sorted(groups)), verb, non_resource_path)
    return _classify_resource(
        username, tuple(sorted(groups)), verb, api_group, resource, bool(namespace)
    )


# The cache key holds "has a namespace", not the namespace: no default rule names one (see
# _ResourceRule.matches), so 5000 kubelets in one namespace share nothing but their names.
# The size bounds memory whatever the number of distinct users.
@functools.lru_cache(maxsize=65536)
def _classify_resource(
    username: str,
    groups: tuple[str, ...],
    verb: str,
    api_group: str,
    resource: str,
    namespaced: bool,
) -> tuple[str, str]:
    all_groups = implied_groups(username, groups)
    for fs in FLOW_SCHEMAS:
        for rules in fs.rules:
            if not any(s.matches(username, all_groups) for s in rules.subjects):
                continue
            if any(r.matches(verb, api_group, resource, namespaced) for r in rules.resource_rules):
                return fs.name, fs.priority_level
    # Unreachable with the defaults (catch-all matches every authenticated or anonymous
    # user); apf_controller.go falls back to catch-all too.
    return CATCH_ALL, CATCH_ALL


@functools.lru_cache(maxsize=4096)
def _classify_non_resource(
    username: str, groups: tuple[str, ...], verb: str, path: str
) -> tuple[str, str]:
    all_groups = implied_groups(username, groups)
    for fs in FLOW_SCHEMAS:
        for rules in fs.rules:
            if not any(s.matches(username, all_groups) for s in rules.subjects):
                continue
            if any(r.matches(verb, path) for r in rules.non_resource_rules):
                return fs.name, fs.priority_level
    return CATCH_ALL, CATCH_ALL
