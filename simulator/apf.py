"""API Priority and Fairness classification, as kube-apiserver does it, from the stored objects.

Why this exists: kube-ballast watches what happens to a large cluster when the apiserver
is congested, and on a real apiserver congestion is never uniform. APF sorts every request
into a FlowSchema and a priority level, and each level has its own seats and queues, so
kubelet heartbeats (``node-high``), leader election (``leader-election``) and workloads
(``workload-low``) starve at different times. kube-ballast also ships FlowSchemas and
priority levels of its own (deploy/eviction-guard/flowcontrol.yaml for the receiver and
janitor, deploy/flowcontrol/exporter.yaml for the exporter) precisely so that its writes
land while the apiserver is congested; that is only measurable if the simulator classifies
with the objects a client stored, not with a fixed table. The fault injector
(``faults.py``) decides per priority level, the metrics (``metrics.py``) are labelled by
flow schema and priority level, and the scenario loads the default objects into the store
so that clients listing ``flowschemas`` see what a real cluster shows.

What it follows (kubernetes/kubernetes, flowcontrol v1, Kubernetes 1.29 and later):

* the default objects: staging/src/k8s.io/apiserver/pkg/apis/flowcontrol/bootstrap/
  default.go (the mandatory ``exempt`` and ``catch-all`` plus the suggested ones);
* the matching: staging/src/k8s.io/apiserver/pkg/util/flowcontrol/rule.go
  (``matchesFlowSchema`` and the helpers below it);
* digesting the stored objects: apf_controller.go ``lockAndDigestConfigObjects``:
  ``digestNewPLsLocked`` ignores a broken PriorityLevelConfiguration (its type and union
  disagree, or a level other than ``exempt`` claims type Exempt: "non-alignment between
  name and type" in ``queueSetCompleterForPL``); ``digestFlowSchemasLocked`` ignores a
  FlowSchema whose level does not exist ("dangling": its requests fall through to the
  next matching schema, in the end ``catch-all``), sorts the rest by matchingPrecedence,
  then name, and supplies the mandatory ``exempt`` (first) and ``catch-all`` (last)
  schemas when they are missing; missing mandatory levels are imagined (``imaginePL``);
* the order at request time: ``startRequest`` takes the first matching schema, falling
  back to ``catch-all``;
* the nominal seats: ``finishQueueSetReconfigsLocked``: NominalCL(l) = ceil(ServerCL *
  NCS(l) / sum_k NCS(k)), the sum over every level in force, exempt ones included
  (``plSpecCommons``), where ServerCL is --max-requests-inflight +
  --max-mutating-requests-inflight; a level a client creates takes its share from all;
* defaulting of v1 objects: pkg/apis/flowcontrol/v1/defaults.go (matchingPrecedence
  1000, Limited nominalConcurrencyShares 30, queues 64, handSize 8, queueLengthLimit 50);
* validating written objects: pkg/apis/flowcontrol/validation/validation.go
  (:func:`validate_flow_schema`, :func:`validate_priority_level`; the registry answers
  422 with their causes, so only objects loaded straight into the store can be broken).

Every client is classified with the same configuration: the HTTP filter and the
in-process kubelets and components (they take ``StoredConfiguration.classify``).

Cost: :class:`Configuration` is immutable and caches its classifications;
:class:`StoredConfiguration` rebuilds one only when a FlowSchema or
PriorityLevelConfiguration was written (it compares a write counter per request, nothing
else), so a request costs a dictionary lookup as with the fixed table.

Not modelled: the Dangling status condition the controller writes on FlowSchemas, the
bootstrap ensurer re-creating suggested objects a client deleted or keeping their spec
current (a store with no APF object at all is classified with the defaults, as the
ensurer would have created them), lingering levels that drain after deletion, borrowing
between levels, and the work estimate (every request takes one seat).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

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

# pkg/apis/flowcontrol/v1/defaults.go
DEFAULT_MATCHING_PRECEDENCE: Final = 1000
DEFAULT_NOMINAL_CONCURRENCY_SHARES: Final = 30
DEFAULT_QUEUES: Final = 64
DEFAULT_HAND_SIZE: Final = 8
DEFAULT_QUEUE_LENGTH_LIMIT: Final = 50

_DISTINGUISHERS: Final = frozenset({"ByUser", "ByNamespace"})


# --- The objects -----------------------------------------------------------------------
# One description drives both the objects served to clients and the matcher, so the two
# cannot drift apart; stored objects are parsed into the same description.


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
        # ServiceAccount: "system:serviceaccount:<namespace>:<name>", name "*" = any in ns
        # (serviceAccountMatchesNamespace / serviceaccount.MatchesUsername).
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

    def matches(self, verb: str, api_group: str, resource: str, namespace: str) -> bool:
        # rule.go matchesResourcePolicyRule: a cluster-scoped request (no namespace) only
        # matches a rule with clusterScope; a namespaced one needs its namespace listed
        # (or the lone "*"). ``resource`` already carries the subresource (rsJoin).
        if not (_contains(self.verbs, verb) and _contains(self.resources, resource)):
            return False
        if not _contains(self.api_groups, api_group):
            return False
        if not namespace:
            return self.cluster_scope
        return _contains(self.namespaces, namespace)

    @property
    def names_a_namespace(self) -> bool:
        """True when the rule lists namespaces other than the lone wildcard."""
        return bool(self.namespaces) and self.namespaces != (_ALL,)

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
    """One FlowSchema: a default one, or one parsed from the store (:meth:`from_object`)."""

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

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> FlowSchemaSpec:
        """Parse a flowcontrol v1 FlowSchema, with the v1 defaults; ValueError names the
        field that cannot be read (the real apiserver's validation would refuse it)."""
        name = _name(obj)
        spec = _mapping(obj.get("spec"), "spec")
        plc = _mapping(spec.get("priorityLevelConfiguration"), "spec.priorityLevelConfiguration")
        level = _string(plc.get("name"), "spec.priorityLevelConfiguration.name")
        precedence = spec.get("matchingPrecedence") or DEFAULT_MATCHING_PRECEDENCE
        if type(precedence) is not int or not 1 <= precedence <= 10000:
            raise ValueError(
                f"spec.matchingPrecedence: must be an integer in [1, 10000], got {precedence!r}"
            )
        distinguisher: str | None = None
        if spec.get("distinguisherMethod") is not None:
            method = _mapping(spec["distinguisherMethod"], "spec.distinguisherMethod")
            distinguisher = method.get("type")
            if distinguisher not in _DISTINGUISHERS:
                raise ValueError(
                    f"spec.distinguisherMethod.type: must be one of {sorted(_DISTINGUISHERS)}, "
                    f"got {distinguisher!r}"
                )
        rules = tuple(
            _policy_rules(r, f"spec.rules[{i}]")
            for i, r in enumerate(_list(spec.get("rules"), "spec.rules"))
        )
        return cls(name, level, precedence, distinguisher, rules)


@dataclass(frozen=True)
class PriorityLevelSpec:
    """One PriorityLevelConfiguration: a default one, or one parsed from the store."""

    name: str
    nominal_concurrency_shares: int
    lendable_percent: int
    exempt: bool = False
    queues: int = 0  # 0: LimitResponse "Reject" (no queuing), as catch-all
    hand_size: int = 0
    queue_length_limit: int = 0
    borrowing_limit_percent: int | None = None  # None: may borrow without limit

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
            limited: dict[str, Any] = {
                "nominalConcurrencyShares": self.nominal_concurrency_shares,
                "lendablePercent": self.lendable_percent,
            }
            if self.borrowing_limit_percent is not None:
                limited["borrowingLimitPercent"] = self.borrowing_limit_percent
            limited["limitResponse"] = limit_response
            spec = {"type": "Limited", "limited": limited}
        return _object("PriorityLevelConfiguration", self.name, spec)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> PriorityLevelSpec:
        """Parse a flowcontrol v1 PriorityLevelConfiguration, with the v1 defaults.

        ValueError when the object is broken in a way apf_controller.go's
        ``queueSetCompleterForPL`` refuses (the union and the type disagree, or a level
        other than ``exempt`` is of type Exempt) or a field cannot be read.
        """
        name = _name(obj)
        spec = _mapping(obj.get("spec"), "spec")
        kind = spec.get("type")
        if kind not in ("Exempt", "Limited"):
            raise ValueError(f"spec.type: must be Exempt or Limited, got {kind!r}")
        if (kind == "Limited") != (spec.get("limited") is not None) or (kind == "Exempt") != (
            spec.get("exempt") is not None
        ):
            raise ValueError("spec: broken union structure at the top (type vs limited/exempt)")
        if (kind == "Exempt") != (name == EXEMPT):
            raise ValueError("spec.type: non-alignment between name and type")
        if kind == "Exempt":
            exempt = _mapping(spec["exempt"], "spec.exempt")
            return cls(
                name,
                _int(
                    exempt.get("nominalConcurrencyShares"),
                    "spec.exempt.nominalConcurrencyShares",
                    0,
                ),
                _percent(exempt.get("lendablePercent"), "spec.exempt.lendablePercent", 0),
                exempt=True,
            )
        limited = _mapping(spec["limited"], "spec.limited")
        path = "spec.limited"
        shares = _int(
            limited.get("nominalConcurrencyShares"),
            f"{path}.nominalConcurrencyShares",
            DEFAULT_NOMINAL_CONCURRENCY_SHARES,
        )
        lendable = _percent(limited.get("lendablePercent"), f"{path}.lendablePercent", 0)
        borrowing = limited.get("borrowingLimitPercent")
        if borrowing is not None:
            borrowing = _int(borrowing, f"{path}.borrowingLimitPercent", 0)
        response = _mapping(limited.get("limitResponse"), f"{path}.limitResponse")
        rtype = response.get("type")
        if rtype not in ("Queue", "Reject"):
            raise ValueError(f"{path}.limitResponse.type: must be Queue or Reject, got {rtype!r}")
        if (rtype == "Queue") != (response.get("queuing") is not None):
            raise ValueError(f"{path}.limitResponse: broken union structure for limit response")
        if rtype == "Reject":
            return cls(name, shares, lendable, borrowing_limit_percent=borrowing)
        queuing = _mapping(response["queuing"], f"{path}.limitResponse.queuing")
        qpath = f"{path}.limitResponse.queuing"
        queues = _int(queuing.get("queues"), f"{qpath}.queues", 0) or DEFAULT_QUEUES
        hand = _int(queuing.get("handSize"), f"{qpath}.handSize", 0) or DEFAULT_HAND_SIZE
        qlen = (
            _int(queuing.get("queueLengthLimit"), f"{qpath}.queueLengthLimit", 0)
            or DEFAULT_QUEUE_LENGTH_LIMIT
        )
        if hand > queues:
            raise ValueError(f"{qpath}.handSize: must not be greater than queues ({queues})")
        return cls(name, shares, lendable, False, queues, hand, qlen, borrowing)


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


# --- Reading stored objects -----------------------------------------------------------


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return _string(name, "metadata.name")


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{path}: required, an object")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{path}: must be a list")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path}: required, a non-empty string")
    return value


def _strings(value: Any, path: str) -> tuple[str, ...]:
    items = _list(value, path)
    if not all(isinstance(v, str) for v in items):
        raise ValueError(f"{path}: must be a list of strings")
    return tuple(items)


def _int(value: Any, path: str, default: int) -> int:
    if value is None:
        return default
    if type(value) is not int or value < 0:
        raise ValueError(f"{path}: must be a non-negative integer, got {value!r}")
    return value


def _percent(value: Any, path: str, default: int) -> int:
    out = _int(value, path, default)
    if out > 100:
        raise ValueError(f"{path}: must be between 0 and 100, got {out}")
    return out


def _subject(raw: Any, path: str) -> _Subject:
    subject = _mapping(raw, path)
    kind = subject.get("kind")
    if kind == "User":
        user = _mapping(subject.get("user"), f"{path}.user")
        return _Subject("User", _string(user.get("name"), f"{path}.user.name"))
    if kind == "Group":
        group = _mapping(subject.get("group"), f"{path}.group")
        return _Subject("Group", _string(group.get("name"), f"{path}.group.name"))
    if kind == "ServiceAccount":
        sa = _mapping(subject.get("serviceAccount"), f"{path}.serviceAccount")
        return _Subject(
            "ServiceAccount",
            _string(sa.get("name"), f"{path}.serviceAccount.name"),
            _string(sa.get("namespace"), f"{path}.serviceAccount.namespace"),
        )
    raise ValueError(f"{path}.kind: must be User, Group or ServiceAccount, got {kind!r}")


def _policy_rules(raw: Any, path: str) -> _PolicyRules:
    rules = _mapping(raw, path)
    subjects = tuple(
        _subject(s, f"{path}.subjects[{i}]")
        for i, s in enumerate(_list(rules.get("subjects"), f"{path}.subjects"))
    )
    resource_rules = []
    for i, rr in enumerate(_list(rules.get("resourceRules"), f"{path}.resourceRules")):
        rpath = f"{path}.resourceRules[{i}]"
        r = _mapping(rr, rpath)
        resource_rules.append(
            _ResourceRule(
                _strings(r.get("verbs"), f"{rpath}.verbs"),
                _strings(r.get("apiGroups"), f"{rpath}.apiGroups"),
                _strings(r.get("resources"), f"{rpath}.resources"),
                _strings(r.get("namespaces"), f"{rpath}.namespaces"),
                bool(r.get("clusterScope", False)),
            )
        )
    non_resource_rules = []
    for i, nr in enumerate(_list(rules.get("nonResourceRules"), f"{path}.nonResourceRules")):
        npath = f"{path}.nonResourceRules[{i}]"
        n = _mapping(nr, npath)
        non_resource_rules.append(
            _NonResourceRule(
                _strings(n.get("verbs"), f"{npath}.verbs"),
                _strings(n.get("nonResourceURLs"), f"{npath}.nonResourceURLs"),
            )
        )
    return _PolicyRules(subjects, tuple(resource_rules), tuple(non_resource_rules))


# --- The default objects ---------------------------------------------------------------


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
"""The default priority levels' names."""
FLOW_SCHEMA_NAMES: Final[frozenset[str]] = frozenset(fs.name for fs in FLOW_SCHEMAS)
"""The default FlowSchemas' names."""
PRIORITY_LEVEL_OF: Final[Mapping[str, str]] = {fs.name: fs.priority_level for fs in FLOW_SCHEMAS}
"""Default flow schema name -> priority level name."""

MANDATORY_FLOW_SCHEMAS: Final = ("exempt", "catch-all")
"""flowcontrol.FlowSchemaNameExempt and FlowSchemaNameCatchAll: always in force."""
_MANDATORY_FS: Final = {fs.name: fs for fs in FLOW_SCHEMAS if fs.name in MANDATORY_FLOW_SCHEMAS}
_MANDATORY_PL: Final = {pl.name: pl for pl in PRIORITY_LEVELS if pl.name in (EXEMPT, CATCH_ALL)}


# --- The configuration in force --------------------------------------------------------


def _order(fs: FlowSchemaSpec) -> tuple[int, str]:
    # apihelpers.FlowSchemaSequence.Less: matchingPrecedence, then name.
    return fs.matching_precedence, fs.name


class Configuration:
    """The FlowSchemas and priority levels in force, and the classifier they make.

    Immutable once built; classifications are cached per instance, so a new configuration
    (after a FlowSchema or PriorityLevelConfiguration changed) starts with a cold cache
    and the old one is simply dropped.
    """

    def __init__(
        self,
        flow_schemas: Sequence[FlowSchemaSpec],
        priority_levels: Iterable[PriorityLevelSpec],
        *,
        dangling: Mapping[str, str] | None = None,
        ignored: Mapping[str, str] | None = None,
    ) -> None:
        """``flow_schemas`` in evaluation order; every one must name a level given."""
        self.priority_levels: Mapping[str, PriorityLevelSpec] = {
            pl.name: pl for pl in priority_levels
        }
        self.flow_schemas: tuple[FlowSchemaSpec, ...] = tuple(flow_schemas)
        undefined = sorted(
            f"{fs.name} -> {fs.priority_level}"
            for fs in self.flow_schemas
            if fs.priority_level not in self.priority_levels
        )
        if undefined:
            raise ValueError(f"FlowSchemas name undefined priority levels: {undefined}")
        self.level_of: Mapping[str, str] = {fs.name: fs.priority_level for fs in self.flow_schemas}
        """Flow schema name -> priority level name, for the schemas in force."""
        self.dangling: Mapping[str, str] = dict(dangling or {})
        """Stored FlowSchemas left out because their level does not exist -> that level."""
        self.ignored: Mapping[str, str] = dict(ignored or {})
        """Stored objects left out as broken, as Kind/name -> why."""
        # With no rule naming a namespace, only "has a namespace" matters: the cache then
        # keys on that, so 5000 kubelets in one namespace share nothing but their names.
        self._by_namespace = any(
            rr.names_a_namespace
            for fs in self.flow_schemas
            for rules in fs.rules
            for rr in rules.resource_rules
        )
        self._catch_all = CATCH_ALL if CATCH_ALL in self.level_of else None
        # The sizes bound memory whatever the number of distinct users.
        self._resource = functools.lru_cache(maxsize=65536)(self._match_resource)
        self._non_resource = functools.lru_cache(maxsize=4096)(self._match_non_resource)

    @classmethod
    def from_objects(
        cls,
        flow_schemas: Iterable[Mapping[str, Any]],
        priority_levels: Iterable[Mapping[str, Any]],
    ) -> Configuration:
        """Digest stored objects as apf_controller.go ``lockAndDigestConfigObjects`` does.

        Broken levels and unreadable schemas are left out (``ignored``), schemas naming a
        level that is not in force are left out (``dangling``), the rest are sorted by
        matchingPrecedence then name, and the mandatory schemas and levels are supplied
        when missing: ``exempt`` first, ``catch-all`` last.
        """
        ignored: dict[str, str] = {}
        levels: dict[str, PriorityLevelSpec] = {}
        for obj in priority_levels:
            try:
                pl = PriorityLevelSpec.from_object(obj)
            except ValueError as exc:
                ignored[f"PriorityLevelConfiguration/{_label(obj)}"] = str(exc)
                continue
            levels[pl.name] = pl
        schemas: list[FlowSchemaSpec] = []
        dangling: dict[str, str] = {}
        for obj in flow_schemas:
            try:
                fs = FlowSchemaSpec.from_object(obj)
            except ValueError as exc:
                ignored[f"FlowSchema/{_label(obj)}"] = str(exc)
                continue
            if fs.priority_level not in levels:
                # digestFlowSchemasLocked: "Ignoring FlowSchema %s because of bad priority
                # level reference"; its requests fall through to later schemas.
                dangling[fs.name] = fs.priority_level
                continue
            schemas.append(fs)
        schemas.sort(key=_order)
        names = {fs.name for fs in schemas}
        if "exempt" not in names:
            schemas.insert(0, _MANDATORY_FS["exempt"])
        if "catch-all" not in names:
            schemas.append(_MANDATORY_FS["catch-all"])
        for name, proto in _MANDATORY_PL.items():
            levels.setdefault(name, proto)  # imaginePL
        return cls(schemas, levels.values(), dangling=dangling, ignored=ignored)

    # --- queries ---------------------------------------------------------------------

    def classify(
        self,
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
        """(flow schema, priority level) for one request: see the module's :func:`classify`."""
        if subresource:
            resource = f"{resource}/{subresource}"
        if non_resource_path:
            return self._non_resource(username, tuple(sorted(groups)), verb, non_resource_path)
        if not self._by_namespace and namespace:
            namespace = _ALL  # matches exactly the rules that list the lone wildcard
        return self._resource(username, tuple(sorted(groups)), verb, api_group, resource, namespace)

    def is_exempt(self, priority_level: str) -> bool:
        """True for a level whose requests APF never queues or rejects."""
        pl = self.priority_levels.get(priority_level)
        return pl is not None and pl.exempt

    def nominal_limit_seats(self, server_concurrency_limit: int) -> dict[str, int]:
        """Priority level -> nominal seats, as apiserver_flowcontrol_nominal_limit_seats
        shows: ceil(ServerCL * NCS(l) / sum of every level's NCS)."""
        if server_concurrency_limit <= 0:
            raise ValueError("server_concurrency_limit must be positive")
        share_sum = sum(pl.nominal_concurrency_shares for pl in self.priority_levels.values())
        return {
            name: (
                math.ceil(server_concurrency_limit * pl.nominal_concurrency_shares / share_sum)
                if share_sum
                else 0
            )
            for name, pl in self.priority_levels.items()
        }

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable: the schemas in evaluation order, the levels, what was left out."""
        return {
            "flow_schemas": [
                {
                    "name": fs.name,
                    "priority_level": fs.priority_level,
                    "matching_precedence": fs.matching_precedence,
                }
                for fs in self.flow_schemas
            ],
            "priority_levels": sorted(self.priority_levels),
            "dangling": dict(sorted(self.dangling.items())),
            "ignored": dict(sorted(self.ignored.items())),
        }

    # --- matching ----------------------------------------------------------------------

    def _match_resource(
        self,
        username: str,
        groups: tuple[str, ...],
        verb: str,
        api_group: str,
        resource: str,
        namespace: str,
    ) -> tuple[str, str]:
        all_groups = implied_groups(username, groups)
        for fs in self.flow_schemas:
            for rules in fs.rules:
                if not any(s.matches(username, all_groups) for s in rules.subjects):
                    continue
                if any(
                    r.matches(verb, api_group, resource, namespace) for r in rules.resource_rules
                ):
                    return fs.name, fs.priority_level
        return self._fallback()

    def _match_non_resource(
        self, username: str, groups: tuple[str, ...], verb: str, path: str
    ) -> tuple[str, str]:
        all_groups = implied_groups(username, groups)
        for fs in self.flow_schemas:
            for rules in fs.rules:
                if not any(s.matches(username, all_groups) for s in rules.subjects):
                    continue
                if any(r.matches(verb, path) for r in rules.non_resource_rules):
                    return fs.name, fs.priority_level
        return self._fallback()

    def _fallback(self) -> tuple[str, str]:
        # startRequest: "This should never happen" (catch-all matches every authenticated
        # or anonymous user), "fallback to the catch-all flow schema anyway".
        if self._catch_all is None:  # pragma: no cover - from_objects always supplies it
            return CATCH_ALL, CATCH_ALL
        return CATCH_ALL, self.level_of[CATCH_ALL]


def _label(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) and name else "<unnamed>"


class Classifier(Protocol):
    """What classifies a request: the module's :func:`classify` (the default objects) or
    a :class:`StoredConfiguration`'s ``classify`` (a store's objects)."""

    def __call__(
        self,
        username: str,
        groups: Sequence[str],
        verb: str,
        api_group: str,
        resource: str,
        namespace: str,
        *,
        subresource: str = "",
        non_resource_path: str = "",
    ) -> tuple[str, str]: ...


class StoredConfiguration:
    """The configuration the FlowSchemas and PriorityLevelConfigurations in a store make.

    ``revision()`` must change whenever either kind of object is written (the server
    passes the store's per-resource write counters); it is the only thing looked at per
    request. ``objects()`` returns (flow schemas, priority levels) and is called only
    after a change, when the configuration is rebuilt, as the real controller re-reads
    every object on any change (apf_controller.go ``syncOne``). A store holding no APF
    object at all is classified with the defaults: a real apiserver's bootstrap ensurer
    would have created them.
    """

    def __init__(
        self,
        revision: Callable[[], Hashable],
        objects: Callable[[], tuple[Iterable[Mapping[str, Any]], Iterable[Mapping[str, Any]]]],
    ) -> None:
        self._revision = revision
        self._objects = objects
        self._seen: Hashable = None
        self._current = DEFAULT
        self._listeners: list[Callable[[Configuration], None]] = []
        self.rebuilds = 0
        """How many times the configuration was built: once at start, then once per
        change seen (several writes between two requests make one rebuild)."""
        self._refresh()

    def subscribe(self, listener: Callable[[Configuration], None]) -> None:
        """Call ``listener`` with the configuration now and after every rebuild."""
        self._listeners.append(listener)
        listener(self.current)

    @property
    def current(self) -> Configuration:
        if self._revision() != self._seen:
            self._refresh()
        return self._current

    def _refresh(self) -> None:
        seen = self._revision()
        flow_schemas, priority_levels = (list(x) for x in self._objects())
        if flow_schemas or priority_levels:
            self._current = Configuration.from_objects(flow_schemas, priority_levels)
        else:
            self._current = DEFAULT
        self._seen = seen
        self.rebuilds += 1
        for listener in self._listeners:
            listener(self._current)

    def classify(
        self,
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
        """(flow schema, priority level) with the stored objects as they are now."""
        if self._revision() != self._seen:
            self._refresh()
        return self._current.classify(
            username,
            groups,
            verb,
            api_group,
            resource,
            namespace,
            subresource=subresource,
            non_resource_path=non_resource_path,
        )


# --- Validation of written objects ----------------------------------------------------
# pkg/apis/flowcontrol/validation/validation.go (ValidateFlowSchema,
# ValidatePriorityLevelConfiguration), run by the registry on create and update of the
# v1 objects after v1 defaulting (pkg/apis/flowcontrol/v1/defaults.go): an invalid object
# is answered 422 and never stored, so the classifier above only meets valid ones.

FieldError = tuple[str, str, str]
"""(reason, field path, message) of one cause, as field.Error renders it in a Status."""

_SUPPORTED_VERBS: Final = (
    "create", "delete", "deletecollection", "get", "list", "patch", "proxy", "update", "watch",
)  # fmt: skip
_SUBJECT_KINDS: Final = ("Group", "ServiceAccount", "User")
_MAX_QUEUES: Final = 10 * 1000 * 1000  # priorityLevelConfigurationQueuingMaxQueues
_MAX_HASH_BITS: Final = 60  # shufflesharding.MaxHashBits
MAX_MATCHING_PRECEDENCE: Final = 10000  # flowcontrol.FlowSchemaMaxMatchingPrecedence
_DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_NS_INTRO: Final = "each member of this list must be '*' or a DNS-1123 label; "


def _go_value(value: Any) -> str:
    # field.Error.ErrorBody: %q for strings, %v for numbers and booleans, JSON otherwise.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _required(path: str, detail: str = "") -> FieldError:
    return ("FieldValueRequired", path, f"Required value: {detail}" if detail else "Required value")


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return ("FieldValueInvalid", path, f"Invalid value: {_go_value(value)}: {detail}")


def _forbidden(path: str, detail: str) -> FieldError:
    return ("FieldValueForbidden", path, f"Forbidden: {detail}")


def _not_supported(path: str, value: Any, supported: Sequence[str]) -> FieldError:
    choices = ", ".join(f'"{v}"' for v in supported)
    return (
        "FieldValueNotSupported",
        path,
        f"Unsupported value: {_go_value(value)}: supported values: {choices}",
    )


def _dns_label_errors(value: str) -> list[str]:
    # apimachinery IsDNS1123Label (ValidateNamespaceName).
    out = []
    if len(value) > 63:
        out.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(value):
        out.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
            "or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
            "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    return out


def _dns_subdomain_errors(value: str) -> list[str]:
    # apimachinery IsDNS1123Subdomain (NameIsDNSSubdomain, ValidateServiceAccountName).
    out = []
    if len(value) > 253:
        out.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        out.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character "
            "(e.g. 'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    return out


class _Typed:
    """Reads JSON fields with the types the Go structs have; a wrong type is one cause
    (the real apiserver's decoder answers 400 for it; see docs/simulator.md)."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def mapping(self, value: Any, path: str) -> Mapping[str, Any] | None:
        if value is None or isinstance(value, Mapping):
            return value
        self.errors.append(_invalid(path, value, "must be an object"))
        return None

    def strings(self, value: Any, path: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        self.errors.append(_invalid(path, value, "must be a list of strings"))
        return []

    def items(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.errors.append(_invalid(path, value, "must be a list"))
        return []

    def string(self, value: Any, path: str) -> str:
        if value is None or isinstance(value, str):
            return value or ""
        self.errors.append(_invalid(path, value, "must be a string"))
        return ""

    def integer(self, value: Any, path: str) -> int | None:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        self.errors.append(_invalid(path, value, "must be an integer"))
        return None


def _verbs(t: _Typed, raw: Any, path: str) -> list[FieldError]:
    verbs = t.strings(raw, path)
    if not verbs:
        return (
            []
            if raw not in (None, [])
            else [_required(path, "verbs must contain at least one value")]
        )
    if _ALL in verbs:
        if len(verbs) > 1:
            return [_invalid(path, verbs, "if '*' is present, must not specify other verbs")]
        return []
    if not set(verbs) <= set(_SUPPORTED_VERBS):
        return [_not_supported(path, verbs, _SUPPORTED_VERBS)]
    return []


def _non_resource_url_error(url: str, path: str) -> FieldError | None:
    # ValidateNonResourceURLPath.
    if not url:
        return _invalid(path, url, "must not be empty")
    if url == "/":
        return None
    if not url.startswith("/"):
        return _invalid(path, url, "must start with slash")
    if " " in url:
        return _invalid(path, url, "must not contain white-space")
    if "//" in url:
        return _invalid(path, url, "must not contain double slash")
    stars = url.count("*")
    if stars > 1 or (stars == 1 and not url.endswith("/*")):
        return _invalid(path, url, "wildcard can only do suffix matching")
    return None


def _validate_subject(t: _Typed, raw: Any, path: str) -> list[FieldError]:
    subject = t.mapping(raw, path)
    if subject is None:
        return []
    errs: list[FieldError] = []
    kind = subject.get("kind")
    members = {"user": "User", "group": "Group", "serviceAccount": "ServiceAccount"}
    if kind not in _SUBJECT_KINDS:
        return [_not_supported(f"{path}.kind", kind or "", _SUBJECT_KINDS)]
    for member, member_kind in members.items():
        if member_kind != kind and subject.get(member) is not None:
            errs.append(
                _forbidden(
                    f"{path}.{member}",
                    f"{member} is forbidden when subject kind is not '{member_kind}'",
                )
            )
    member = {v: k for k, v in members.items()}[kind]
    body = t.mapping(subject.get(member), f"{path}.{member}")
    if body is None:
        errs.append(
            _required(f"{path}.{member}", f"{member} is required when subject kind is '{kind}'")
        )
        return errs
    name = t.string(body.get("name"), f"{path}.{member}.name")
    if not name:
        errs.append(_required(f"{path}.{member}.name"))
    elif kind == "ServiceAccount" and name != _ALL:
        errs.extend(_invalid(f"{path}.{member}.name", name, m) for m in _dns_subdomain_errors(name))
    if kind == "ServiceAccount":
        namespace = t.string(body.get("namespace"), f"{path}.{member}.namespace")
        if not namespace:
            errs.append(
                _required(
                    f"{path}.{member}.namespace", "must specify namespace for service account"
                )
            )
        else:
            errs.extend(
                _invalid(f"{path}.{member}.namespace", namespace, m)
                for m in _dns_label_errors(namespace)
            )
    return errs


def _validate_resource_rule(t: _Typed, raw: Any, path: str) -> list[FieldError]:
    rule = t.mapping(raw, path)
    if rule is None:
        return []
    errs = _verbs(t, rule.get("verbs"), f"{path}.verbs")
    for key, what in (("apiGroups", "api group"), ("resources", "resource")):
        values = t.strings(rule.get(key), f"{path}.{key}")
        if not values:
            errs.append(
                _required(f"{path}.{key}", f"resource rules must supply at least one {what}")
            )
        elif len(values) > 1 and _ALL in values:
            errs.append(
                _invalid(
                    f"{path}.{key}", values, f"if '*' is present, must not specify other {what}s"
                )
            )
    namespaces = t.strings(rule.get("namespaces"), f"{path}.namespaces")
    cluster_scope = rule.get("clusterScope")
    if cluster_scope is not None and not isinstance(cluster_scope, bool):
        errs.append(_invalid(f"{path}.clusterScope", cluster_scope, "must be a boolean"))
    if not namespaces and not cluster_scope:
        errs.append(
            _required(
                f"{path}.namespaces",
                "resource rules that are not cluster scoped must supply at least one namespace",
            )
        )
    elif _ALL in namespaces:
        if len(namespaces) > 1:
            errs.append(
                _invalid(
                    f"{path}.namespaces",
                    namespaces,
                    "if '*' is present, must not specify other namespaces",
                )
            )
    else:
        for i, ns in enumerate(namespaces):
            errs.extend(
                _invalid(f"{path}.namespaces[{i}]", ns, _NS_INTRO + m)
                for m in _dns_label_errors(ns)
            )
    return errs


def _validate_non_resource_rule(t: _Typed, raw: Any, path: str) -> list[FieldError]:
    rule = t.mapping(raw, path)
    if rule is None:
        return []
    errs = _verbs(t, rule.get("verbs"), f"{path}.verbs")
    upath = f"{path}.nonResourceURLs"
    urls = t.strings(rule.get("nonResourceURLs"), upath)
    if not urls:
        errs.append(_required(upath, "nonResourceURLs must contain at least one value"))
    elif _ALL in urls:
        if len(urls) > 1:
            errs.append(
                _invalid(upath, urls, "if '*' is present, must not specify other non-resource URLs")
            )
    else:
        for i, url in enumerate(urls):
            err = _non_resource_url_error(url, f"{upath}[{i}]")
            if err is not None:
                errs.append(err)
    return errs


def _validate_conditions(t: _Typed, obj: Mapping[str, Any]) -> list[FieldError]:
    # ValidateFlowSchemaStatus / ValidatePriorityLevelConfigurationStatus.
    status = t.mapping(obj.get("status"), "status") or {}
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, raw in enumerate(t.items(status.get("conditions"), "status.conditions")):
        condition = t.mapping(raw, f"status.conditions[{i}]") or {}
        kind = t.string(condition.get("type"), f"status.conditions[{i}].type")
        if kind in seen:
            errs.append(
                (
                    "FieldValueDuplicate",
                    f"status.conditions[{i}].type",
                    f'Duplicate value: "{kind}"',
                )
            )
        seen.add(kind)
        if not kind:
            errs.append(_required(f"status.conditions[{i}].type", "must not be empty"))
    return errs


def validate_flow_schema(obj: Mapping[str, Any]) -> list[FieldError]:
    """Every cause ValidateFlowSchema finds in a v1 FlowSchema (empty: valid)."""
    t = _Typed()
    meta = t.mapping(obj.get("metadata"), "metadata") or {}
    name = t.string(meta.get("name"), "metadata.name")
    spec = t.mapping(obj.get("spec"), "spec") or {}
    errs: list[FieldError] = []
    path = "spec.matchingPrecedence"
    precedence = t.integer(spec.get(path.split(".")[1]), path) or DEFAULT_MATCHING_PRECEDENCE
    if precedence <= 0:
        errs.append(_invalid(path, precedence, "must be a positive value"))
    if precedence > MAX_MATCHING_PRECEDENCE:
        errs.append(
            _invalid(path, precedence, f"must not be greater than {MAX_MATCHING_PRECEDENCE}")
        )
    if precedence == 1 and name != "exempt":
        errs.append(
            _invalid(
                path, precedence, "only the schema named 'exempt' may have matchingPrecedence 1"
            )
        )
    method = t.mapping(spec.get("distinguisherMethod"), "spec.distinguisherMethod")
    if method is not None:
        kind = method.get("type")
        if kind not in _DISTINGUISHERS:
            errs.append(
                _not_supported("spec.distinguisherMethod.type", kind or "", sorted(_DISTINGUISHERS))
            )
    plc = t.mapping(spec.get("priorityLevelConfiguration"), "spec.priorityLevelConfiguration") or {}
    level = t.string(plc.get("name"), "spec.priorityLevelConfiguration.name")
    if level:
        errs.extend(
            _invalid("spec.priorityLevelConfiguration.name", level, m)
            for m in _dns_subdomain_errors(level)
        )
    else:
        errs.append(
            _required("spec.priorityLevelConfiguration.name", "must reference a priority level")
        )
    for i, raw in enumerate(t.items(spec.get("rules"), "spec.rules")):
        rpath = f"spec.rules[{i}]"
        rules = t.mapping(raw, rpath)
        if rules is None:
            continue
        subjects = t.items(rules.get("subjects"), f"{rpath}.subjects")
        if not subjects:
            errs.append(_required(f"{rpath}.subjects", "subjects must contain at least one value"))
        for j, subject in enumerate(subjects):
            errs.extend(_validate_subject(t, subject, f"{rpath}.subjects[{j}]"))
        resource_rules = t.items(rules.get("resourceRules"), f"{rpath}.resourceRules")
        non_resource_rules = t.items(rules.get("nonResourceRules"), f"{rpath}.nonResourceRules")
        if not resource_rules and not non_resource_rules:
            errs.append(
                _required(
                    rpath, "at least one of resourceRules and nonResourceRules has to be non-empty"
                )
            )
        for j, rr in enumerate(resource_rules):
            errs.extend(_validate_resource_rule(t, rr, f"{rpath}.resourceRules[{j}]"))
        for j, nr in enumerate(non_resource_rules):
            errs.extend(_validate_non_resource_rule(t, nr, f"{rpath}.nonResourceRules[{j}]"))
    if name in _MANDATORY_FS:
        # "Check for almost exact equality": the mandatory schemas' spec is fixed.
        try:
            same = FlowSchemaSpec.from_object(obj) == _MANDATORY_FS[name]
        except ValueError:
            same = False
        if not same:
            errs.append(_invalid("spec", spec, f"spec of '{name}' must equal the fixed value"))
    errs.extend(_validate_conditions(t, obj))
    return t.errors + errs


def _validate_queuing(t: _Typed, raw: Any, path: str) -> list[FieldError]:
    queuing = t.mapping(raw, path) or {}
    # v1 SetDefaults_QueuingConfiguration: zero means the default.
    qlen = t.integer(queuing.get("queueLengthLimit"), f"{path}.queueLengthLimit") or (
        DEFAULT_QUEUE_LENGTH_LIMIT
    )
    queues = t.integer(queuing.get("queues"), f"{path}.queues") or DEFAULT_QUEUES
    hand = t.integer(queuing.get("handSize"), f"{path}.handSize") or DEFAULT_HAND_SIZE
    errs: list[FieldError] = []
    if qlen <= 0:
        errs.append(_invalid(f"{path}.queueLengthLimit", qlen, "must be positive"))
    if queues <= 0:
        errs.append(_invalid(f"{path}.queues", queues, "must be positive"))
    elif queues > _MAX_QUEUES:
        errs.append(_invalid(f"{path}.queues", queues, f"must not be greater than {_MAX_QUEUES}"))
    if hand <= 0:
        errs.append(_invalid(f"{path}.handSize", hand, "must be positive"))
    elif hand > queues:
        errs.append(
            _invalid(f"{path}.handSize", hand, f"should not be greater than queues ({queues})")
        )
    elif math.ceil(math.log2(queues) * hand) > _MAX_HASH_BITS:  # RequiredEntropyBits
        errs.append(
            _invalid(
                f"{path}.handSize",
                hand,
                f"required entropy bits of deckSize {queues} and handSize {hand} should not be "
                f"greater than {_MAX_HASH_BITS}",
            )
        )
    return errs


def _validate_shares(t: _Typed, body: Mapping[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    shares = t.integer(body.get("nominalConcurrencyShares"), f"{path}.nominalConcurrencyShares")
    if shares is not None and shares < 0:
        # v1 requests may set 0 (AllowZeroLimitedNominalConcurrencyShares).
        errs.append(
            _invalid(f"{path}.nominalConcurrencyShares", shares, "must be a non-negative integer")
        )
    lendable = t.integer(body.get("lendablePercent"), f"{path}.lendablePercent")
    if lendable is not None and not 0 <= lendable <= 100:
        errs.append(
            _invalid(f"{path}.lendablePercent", lendable, "must be between 0 and 100, inclusive")
        )
    return errs


def validate_priority_level(obj: Mapping[str, Any]) -> list[FieldError]:
    """Every cause ValidatePriorityLevelConfiguration finds in a v1 object (empty: valid)."""
    t = _Typed()
    meta = t.mapping(obj.get("metadata"), "metadata") or {}
    name = t.string(meta.get("name"), "metadata.name")
    spec = t.mapping(obj.get("spec"), "spec") or {}
    errs: list[FieldError] = []
    kind = spec.get("type")
    if (name == EXEMPT) != (kind == "Exempt"):
        errs.append(
            _invalid(
                "spec.type", kind or "", "type must be 'Exempt' if and only if name is 'exempt'"
            )
        )
    limited = t.mapping(spec.get("limited"), "spec.limited")
    exempt = t.mapping(spec.get("exempt"), "spec.exempt")
    if kind == "Exempt":
        if limited is not None:
            errs.append(_forbidden("spec.limited", "must be nil if the type is not Limited"))
        if exempt is not None:
            errs.extend(_validate_shares(t, exempt, "spec.exempt"))
    elif kind == "Limited":
        if exempt is not None:
            errs.append(_forbidden("spec.exempt", "must be nil if the type is Limited"))
        if limited is None:
            errs.append(_required("spec.limited", "must not be empty when type is Limited"))
        else:
            errs.extend(_validate_shares(t, limited, "spec.limited"))
            borrowing = t.integer(
                limited.get("borrowingLimitPercent"), "spec.limited.borrowingLimitPercent"
            )
            if borrowing is not None and borrowing < 0:
                errs.append(
                    _invalid(
                        "spec.limited.borrowingLimitPercent",
                        borrowing,
                        "if specified, must be a non-negative integer",
                    )
                )
            rpath = "spec.limited.limitResponse"
            response = t.mapping(limited.get("limitResponse"), rpath) or {}
            rtype = response.get("type")
            if rtype == "Reject":
                if response.get("queuing") is not None:
                    errs.append(
                        _forbidden(
                            f"{rpath}.queuing",
                            "must be nil if limited.limitResponse.type is not Limited",
                        )
                    )
            elif rtype == "Queue":
                if response.get("queuing") is None:
                    errs.append(
                        _required(
                            f"{rpath}.queuing",
                            "must not be empty if limited.limitResponse.type is Limited",
                        )
                    )
                else:
                    errs.extend(_validate_queuing(t, response["queuing"], f"{rpath}.queuing"))
            else:
                errs.append(_not_supported(f"{rpath}.type", rtype or "", ("Queue", "Reject")))
    else:
        errs.append(_not_supported("spec.type", kind or "", ("Exempt", "Limited")))
    if name == EXEMPT:
        # Only spec.exempt of the mandatory exempt level may be changed.
        if kind != "Exempt" or spec.get("limited") is not None:
            errs.append(
                _invalid(
                    "spec",
                    spec,
                    "spec of 'exempt' except the 'spec.exempt' field must equal the fixed value",
                )
            )
    elif name in _MANDATORY_PL:
        try:
            same = PriorityLevelSpec.from_object(obj) == _MANDATORY_PL[name]
        except ValueError:
            same = False
        if not same:
            errs.append(_invalid("spec", spec, f"spec of '{name}' must equal the fixed value"))
    errs.extend(_validate_conditions(t, obj))
    return t.errors + errs


# --- Public interface ------------------------------------------------------------------


def default_flowschemas() -> list[dict[str, Any]]:
    """The default FlowSchemas as flowcontrol.apiserver.k8s.io/v1 objects (fresh copies)."""
    return [fs.to_object() for fs in FLOW_SCHEMAS]


def default_priority_levels() -> list[dict[str, Any]]:
    """The default PriorityLevelConfigurations as v1 objects (fresh copies)."""
    return [pl.to_object() for pl in PRIORITY_LEVELS]


def is_exempt(priority_level: str) -> bool:
    """True for a level whose requests APF never queues or rejects: only ``exempt`` may be
    of type Exempt (any other is broken and ignored, see PriorityLevelSpec.from_object)."""
    return priority_level == EXEMPT


def nominal_limit_seats(server_concurrency_limit: int) -> dict[str, int]:
    """Priority level -> nominal seats with the default levels.

    ``server_concurrency_limit`` is --max-requests-inflight + --max-mutating-requests-inflight
    (600 by default, giving node-high 98 seats and workload-low 245).
    """
    return DEFAULT.nominal_limit_seats(server_concurrency_limit)


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


DEFAULT: Final = Configuration(FLOW_SCHEMAS, PRIORITY_LEVELS)
"""The default objects, as a cluster without custom APF objects has them."""


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
    """(flow schema, priority level) for one request with the default objects, first match
    in precedence order. :class:`StoredConfiguration` does the same with a store's.

    ``verb`` is the request-info verb (get, list, watch, create, update, patch, delete,
    deletecollection). ``resource`` may already carry its subresource ("nodes/status") or
    pass it as ``subresource``. A non-empty ``non_resource_path`` (e.g. "/healthz") makes
    it a non-resource request, when api_group, resource and namespace are ignored.
    """
    return DEFAULT.classify(
        username,
        groups,
        verb,
        api_group,
        resource,
        namespace,
        subresource=subresource,
        non_resource_path=non_resource_path,
    )
