"""Slim projections of cluster objects: what the cluster-state caches keep, and nothing else.

The exporter caches every node, node Lease, pod, ReplicaSet, Deployment and StatefulSet
of clusters up to 5000 nodes and 150 000 pods, within a few hundred MB and a few
seconds of CPU. kubernetes-asyncio's models cost ~1 ms and ~36 KB per pod to build;
decoding the API's JSON with msgspec into Structs that name only the needed JSON paths
costs a few microseconds, and everything else in the JSON is skipped by the decoder
without ever being built. So each kind comes in two shapes:

- a **raw** Struct (``RawPod`` ...) that mirrors only the JSON paths we read, nested as
  the API nests them. It is what the list and watch decoders produce and lives only as
  long as one page or one watch event; its ``metadata.resource_version`` is what the
  informer resumes watches from.
- a **projection** (``PodP`` ...): flat, frozen, ``gc=False`` (no cycles are possible,
  so the garbage collector need not track 150 000 of them), holding ready-made values
  (epoch seconds, not timestamps; the Ready condition, not the condition list). The
  ``decode_<kind>(raw)`` functions turn the first into the second; the derivations and
  collectors only ever see projections.

Memory is what decides the details. Per pod, most values repeat across the cluster:
namespaces, node names, phases, owner names, label sets of one ReplicaSet's pods, and
the two default tolerations every pod gets. Those are shared instead of copied:
strings are interned, and a pod's labels and tolerations are decoded from their raw
JSON bytes once per distinct value (a bounded cache keyed by those bytes), so 150 000
pods of a few hundred workloads hold a few hundred label dicts. Shared values are
never mutated: treat every dict in a projection as read-only.

Parsing helpers for the two value formats the derivations need, Kubernetes quantities
(:func:`parse_quantity`) and RFC 3339 times (:func:`parse_time`), live here too.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Callable
from typing import Literal, TypeVar

import msgspec

__all__ = [
    "CONTROL_PLANE_LABELS",
    "ZONE_LABELS",
    "LeaseP",
    "NodeP",
    "PodP",
    "RawDeployment",
    "RawLease",
    "RawMeta",
    "RawNode",
    "RawPod",
    "RawReplicaSet",
    "RawStatefulSet",
    "ReplicaSetP",
    "SpreadP",
    "TaintP",
    "TolerationP",
    "WorkloadP",
    "decode_deployment",
    "decode_lease",
    "decode_node",
    "decode_pod",
    "decode_replicaset",
    "decode_statefulset",
    "parse_quantity",
    "parse_time",
]

ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
"""Node labels naming the zone, the current one first (the beta one is deprecated)."""

CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
"""Node labels that mark a control-plane node (``master`` before Kubernetes 1.20)."""

_intern = sys.intern

# ---------------------------------------------------------------------------------------
# Value parsing
# ---------------------------------------------------------------------------------------

_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$"
)
_SUFFIX = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def parse_quantity(text: str) -> float:
    """A Kubernetes ``resource.Quantity`` as a float in base units.

    ``"100m"`` is 0.1, ``"128Mi"`` 134217728, ``"1.5G"`` 1.5e9, ``"2e3"`` 2000. A bare
    ``E`` is the exa suffix; ``E`` followed by digits is a decimal exponent, as the
    apimachinery grammar says. Raises ``ValueError`` for anything else.
    """
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number, exponent, suffix = match.groups()
    value = float(number)
    if exponent is not None:
        return value * 10.0 ** int(exponent[1:])
    if suffix is not None:
        return value * _SUFFIX[suffix]
    return value


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of a ``metav1.Time`` or ``MicroTime`` (RFC 3339); None if absent
    or malformed.

    A malformed timestamp reads as absent rather than failing the object: a cache that
    dropped a node over its heartbeat time would report the node missing, which is
    worse than reporting its heartbeat unknown.
    """
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # The API always writes UTC with "Z"; a zone-less time is read as UTC, not as
        # the exporter's local time.
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


# ---------------------------------------------------------------------------------------
# Projections: what the caches hold and the derivations read
# ---------------------------------------------------------------------------------------


class TaintP(msgspec.Struct, frozen=True, gc=False):
    """A node taint; ``time_added`` (epoch seconds) is set for NoExecute taints."""

    key: str
    value: str
    effect: str
    time_added: float | None


class NodeP(msgspec.Struct, frozen=True, gc=False):
    """A node. ``ready`` is the Ready condition's status ("True", "False", "Unknown",
    or "" when the node has none yet); ``ready_since`` its lastTransitionTime."""

    name: str
    labels: dict[str, str]
    zone: str
    unschedulable: bool
    taints: tuple[TaintP, ...]
    ready: str
    ready_since: float | None
    capacity: dict[str, str]
    allocatable: dict[str, str]
    control_plane: bool


class LeaseP(msgspec.Struct, frozen=True, gc=False):
    """A Lease (node heartbeats in kube-node-lease, leader election elsewhere)."""

    name: str
    namespace: str
    holder: str
    renew_time: float | None
    duration_seconds: int | None


class TolerationP(msgspec.Struct, frozen=True, gc=False):
    """A pod toleration; ``seconds`` is tolerationSeconds (None: tolerate forever)."""

    key: str
    operator: str
    value: str
    effect: str
    seconds: int | None


class PodP(msgspec.Struct, frozen=True, gc=False):
    """A pod.

    ``owner_kind``/``owner_name`` are the controller owner reference (for a Deployment's
    pod: the ReplicaSet; the cluster state resolves it to the Deployment).
    ``tolerations`` keeps only those that can hold off eviction (effect NoExecute or
    empty, which matches every effect). ``extended_requests`` sums, over the regular
    containers, the requests of resources whose name has a "/" (``example.com/dongle``);
    ``cpu_request`` and ``memory_request`` the CPU and memory requests (for free capacity
    per pool); other built-in resources are not kept.
    """

    namespace: str
    name: str
    uid: str
    node_name: str
    phase: str
    ready: bool
    containers: int
    owner_kind: str
    owner_name: str
    tolerations: tuple[TolerationP, ...]
    extended_requests: dict[str, float]
    terminating: bool
    labels: dict[str, str]
    cpu_request: float = 0.0
    """CPU cores requested, summed over the regular containers (init containers, which
    the scheduler counts only when one asks for more than all of these, are not kept)."""
    memory_request: float = 0.0
    """Memory bytes requested, summed likewise."""


class ReplicaSetP(msgspec.Struct, frozen=True, gc=False):
    """A ReplicaSet, kept to resolve its pods to the Deployment that owns it."""

    namespace: str
    name: str
    uid: str
    owner_kind: str
    owner_name: str


class SpreadP(msgspec.Struct, frozen=True, gc=False):
    """One topologySpreadConstraint of a workload's pod template."""

    max_skew: int
    topology_key: str
    when_unsatisfiable: str


class WorkloadP(msgspec.Struct, frozen=True, gc=False):
    """A Deployment or StatefulSet and how its pod template asks to be spread.

    ``zone_anti_affinity`` is true when a podAntiAffinity term of the template, required
    or preferred, has a zone label as its topologyKey; ``anti_affinity_keys`` lists the
    topologyKeys of the *required* terms (``kubernetes.io/hostname``: one pod per node).
    ``selector_labels`` is ``spec.selector.matchLabels`` (matchExpressions are not kept).
    """

    kind: Literal["Deployment", "StatefulSet"]
    namespace: str
    name: str
    uid: str
    replicas: int
    spread: tuple[SpreadP, ...]
    zone_anti_affinity: bool
    selector_labels: dict[str, str]
    anti_affinity_keys: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# Raw shapes: the JSON paths read, as the API nests them
# ---------------------------------------------------------------------------------------


class _Owner(msgspec.Struct):
    kind: str = ""
    name: str = ""
    controller: bool = False


class RawMeta(msgspec.Struct, rename="camel"):
    """``metadata`` fields every kind needs: identity, resourceVersion, owner."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    owner_references: list[_Owner] | None = None
    deletion_timestamp: str | None = None


class _LabelledMeta(RawMeta):
    labels: dict[str, str] | None = None


class _PodMeta(RawMeta):
    # Raw JSON bytes: decoded once per distinct label set (see _shared_labels).
    labels: msgspec.Raw = msgspec.Raw()


def _owner(meta: RawMeta) -> tuple[str, str]:
    """(kind, name) of the controller owner; the first owner if none is marked so."""
    owners = meta.owner_references
    if not owners:
        return "", ""
    chosen = next((o for o in owners if o.controller), owners[0])
    return _intern(chosen.kind), _intern(chosen.name)


# Nodes ---------------------------------------------------------------------------------


class _Taint(msgspec.Struct, rename="camel"):
    key: str = ""
    value: str = ""
    effect: str = ""
    time_added: str | None = None


class _NodeSpec(msgspec.Struct):
    unschedulable: bool = False
    taints: list[_Taint] | None = None


class _Condition(msgspec.Struct, rename="camel"):
    type: str = ""
    status: str = ""
    last_transition_time: str | None = None


class _NodeStatus(msgspec.Struct):
    capacity: dict[str, str] | None = None
    allocatable: dict[str, str] | None = None
    conditions: list[_Condition] | None = None


class RawNode(msgspec.Struct):
    metadata: _LabelledMeta = msgspec.field(default_factory=_LabelledMeta)
    spec: _NodeSpec = msgspec.field(default_factory=_NodeSpec)
    status: _NodeStatus = msgspec.field(default_factory=_NodeStatus)


def decode_node(raw: RawNode) -> NodeP:
    labels = raw.metadata.labels or {}
    zone = next((labels[k] for k in ZONE_LABELS if k in labels), "")
    ready, ready_since = "", None
    for condition in raw.status.conditions or ():
        if condition.type == "Ready":
            ready = _intern(condition.status)
            ready_since = parse_time(condition.last_transition_time)
            break
    return NodeP(
        name=raw.metadata.name,
        labels=labels,
        zone=_intern(zone),
        unschedulable=raw.spec.unschedulable,
        taints=tuple(
            TaintP(_intern(t.key), t.value, _intern(t.effect), parse_time(t.time_added))
            for t in raw.spec.taints or ()
        ),
        ready=ready,
        ready_since=ready_since,
        capacity=raw.status.capacity or {},
        allocatable=raw.status.allocatable or {},
        control_plane=any(k in labels for k in CONTROL_PLANE_LABELS),
    )


# Leases --------------------------------------------------------------------------------


class _LeaseSpec(msgspec.Struct, rename="camel"):
    holder_identity: str | None = None
    renew_time: str | None = None
    lease_duration_seconds: int | None = None


class RawLease(msgspec.Struct):
    metadata: RawMeta = msgspec.field(default_factory=RawMeta)
    spec: _LeaseSpec = msgspec.field(default_factory=_LeaseSpec)


def decode_lease(raw: RawLease) -> LeaseP:
    spec = raw.spec
    return LeaseP(
        name=raw.metadata.name,
        namespace=_intern(raw.metadata.namespace),
        holder=spec.holder_identity or "",
        renew_time=parse_time(spec.renew_time),
        duration_seconds=spec.lease_duration_seconds,
    )


# Pods ----------------------------------------------------------------------------------


class _Toleration(msgspec.Struct, rename="camel"):
    key: str = ""
    operator: str = ""
    value: str = ""
    effect: str = ""
    toleration_seconds: int | None = None


class _Resources(msgspec.Struct):
    requests: dict[str, str] | None = None


class _Container(msgspec.Struct):
    # Raw: decoded once per distinct value (pods of one template share it) for the cpu
    # and memory requests, and further only when it mentions an extended resource.
    resources: msgspec.Raw = msgspec.Raw()


class _PodSpec(msgspec.Struct, rename="camel"):
    node_name: str = ""
    containers: list[_Container] | None = None
    tolerations: msgspec.Raw = msgspec.Raw()


class _PodCondition(msgspec.Struct):
    type: str = ""
    status: str = ""


class _PodStatus(msgspec.Struct):
    phase: str = ""
    conditions: list[_PodCondition] | None = None


class RawPod(msgspec.Struct):
    metadata: _PodMeta = msgspec.field(default_factory=_PodMeta)
    spec: _PodSpec = msgspec.field(default_factory=_PodSpec)
    status: _PodStatus = msgspec.field(default_factory=_PodStatus)


_SHARED_LIMIT = 50_000
"""Distinct label sets / toleration lists remembered before the cache starts over.

Workload pods share label sets; StatefulSet pods (a pod-name label) and bare pods do
not, so the cache is bounded: when full it is emptied, which costs a re-decode of
common values and a few duplicate dicts, never a wrong value."""

_EMPTY_LABELS: dict[str, str] = {}
_EMPTY_REQUESTS: dict[str, float] = {}
_labels_cache: dict[bytes, dict[str, str]] = {}
_tolerations_cache: dict[bytes, tuple[TolerationP, ...]] = {}
_requests_cache: dict[bytes, tuple[float, float]] = {}
_labels_decoder = msgspec.json.Decoder(dict[str, str] | None)
_tolerations_decoder = msgspec.json.Decoder(list[_Toleration] | None)
_resources_decoder = msgspec.json.Decoder(_Resources | None)

K = TypeVar("K")


def _shared(raw: msgspec.Raw, cache: dict[bytes, K], build: Callable[[bytes], K], empty: K) -> K:
    if not raw:
        return empty
    key = bytes(raw)
    value = cache.get(key)
    if value is None:
        if len(cache) >= _SHARED_LIMIT:
            cache.clear()
        value = cache[key] = build(key)
    return value


def _build_labels(data: bytes) -> dict[str, str]:
    labels = _labels_decoder.decode(data) or {}
    return {_intern(k): _intern(v) for k, v in labels.items()}


def _build_tolerations(data: bytes) -> tuple[TolerationP, ...]:
    return tuple(
        TolerationP(
            _intern(t.key), _intern(t.operator), t.value, _intern(t.effect), t.toleration_seconds
        )
        for t in _tolerations_decoder.decode(data) or ()
        if t.effect in ("NoExecute", "")
    )


def _extended_requests(containers: list[_Container]) -> dict[str, float]:
    totals: dict[str, float] | None = None
    for container in containers:
        raw = container.resources
        if not raw or b"/" not in bytes(raw):
            continue
        resources = _resources_decoder.decode(raw)
        for name, quantity in ((resources and resources.requests) or {}).items():
            if "/" not in name:
                continue
            try:
                amount = parse_quantity(quantity)
            except ValueError:
                continue  # the apiserver validates quantities; skip rather than fail the pod
            totals = totals if totals is not None else {}
            key = _intern(name)
            totals[key] = totals.get(key, 0.0) + amount
    return totals if totals is not None else _EMPTY_REQUESTS


_ZERO_REQUESTS: tuple[float, float] = (0.0, 0.0)


def _cpu_memory_requests(containers: list[_Container]) -> tuple[float, float]:
    cpu = memory = 0.0
    for container in containers:
        # Pods of one template share their resources: decode each distinct one once.
        one = _shared(container.resources, _requests_cache, _build_cpu_memory, _ZERO_REQUESTS)
        cpu += one[0]
        memory += one[1]
    return cpu, memory


def _build_cpu_memory(data: bytes) -> tuple[float, float]:
    resources = _resources_decoder.decode(data)
    requests = (resources and resources.requests) or {}
    amounts = [0.0, 0.0]
    for index, name in enumerate(("cpu", "memory")):
        quantity = requests.get(name)
        if quantity is None:
            continue
        try:
            amounts[index] = parse_quantity(quantity)
        except ValueError:
            continue  # the apiserver validates quantities; skip rather than fail the pod
    return amounts[0], amounts[1]


def decode_pod(raw: RawPod) -> PodP:
    meta, spec = raw.metadata, raw.spec
    owner_kind, owner_name = _owner(meta)
    containers = spec.containers or []
    ready = False
    for condition in raw.status.conditions or ():
        if condition.type == "Ready":
            ready = condition.status == "True"
            break
    cpu_request, memory_request = _cpu_memory_requests(containers)
    return PodP(
        namespace=_intern(meta.namespace),
        name=meta.name,
        uid=meta.uid,
        node_name=_intern(spec.node_name),
        phase=_intern(raw.status.phase),
        ready=ready,
        containers=len(containers),
        owner_kind=owner_kind,
        owner_name=owner_name,
        tolerations=_shared(spec.tolerations, _tolerations_cache, _build_tolerations, ()),
        extended_requests=_extended_requests(containers),
        terminating=meta.deletion_timestamp is not None,
        labels=_shared(meta.labels, _labels_cache, _build_labels, _EMPTY_LABELS),
        cpu_request=cpu_request,
        memory_request=memory_request,
    )


# ReplicaSets ---------------------------------------------------------------------------


class RawReplicaSet(msgspec.Struct):
    metadata: RawMeta = msgspec.field(default_factory=RawMeta)


def decode_replicaset(raw: RawReplicaSet) -> ReplicaSetP:
    meta = raw.metadata
    owner_kind, owner_name = _owner(meta)
    return ReplicaSetP(
        namespace=_intern(meta.namespace),
        name=_intern(meta.name),
        uid=meta.uid,
        owner_kind=owner_kind,
        owner_name=owner_name,
    )


# Deployments and StatefulSets ----------------------------------------------------------


class _Spread(msgspec.Struct, rename="camel"):
    max_skew: int = 1
    topology_key: str = ""
    when_unsatisfiable: str = "DoNotSchedule"


class _AffinityTerm(msgspec.Struct, rename="camel"):
    topology_key: str = ""


class _WeightedTerm(msgspec.Struct, rename="camel"):
    pod_affinity_term: _AffinityTerm = msgspec.field(default_factory=_AffinityTerm)


class _AntiAffinity(msgspec.Struct):
    required: list[_AffinityTerm] | None = msgspec.field(
        default=None, name="requiredDuringSchedulingIgnoredDuringExecution"
    )
    preferred: list[_WeightedTerm] | None = msgspec.field(
        default=None, name="preferredDuringSchedulingIgnoredDuringExecution"
    )


class _Affinity(msgspec.Struct, rename="camel"):
    pod_anti_affinity: _AntiAffinity | None = None


class _TemplateSpec(msgspec.Struct, rename="camel"):
    topology_spread_constraints: list[_Spread] | None = None
    affinity: _Affinity | None = None


class _Template(msgspec.Struct):
    spec: _TemplateSpec = msgspec.field(default_factory=_TemplateSpec)


class _Selector(msgspec.Struct, rename="camel"):
    match_labels: dict[str, str] | None = None


class _WorkloadSpec(msgspec.Struct):
    # A Deployment or StatefulSet without spec.replicas has one (the API default).
    replicas: int | None = None
    selector: _Selector = msgspec.field(default_factory=_Selector)
    template: _Template = msgspec.field(default_factory=_Template)


class RawDeployment(msgspec.Struct):
    metadata: RawMeta = msgspec.field(default_factory=RawMeta)
    spec: _WorkloadSpec = msgspec.field(default_factory=_WorkloadSpec)


class RawStatefulSet(RawDeployment):
    pass


def _decode_workload(kind: Literal["Deployment", "StatefulSet"], raw: RawDeployment) -> WorkloadP:
    meta, spec = raw.metadata, raw.spec
    template = spec.template.spec
    anti = template.affinity.pod_anti_affinity if template.affinity else None
    required = tuple(t.topology_key for t in (anti.required or ())) if anti else ()
    preferred = (
        tuple(t.pod_affinity_term.topology_key for t in (anti.preferred or ())) if anti else ()
    )
    return WorkloadP(
        kind=kind,
        namespace=_intern(meta.namespace),
        name=_intern(meta.name),
        uid=meta.uid,
        replicas=1 if spec.replicas is None else spec.replicas,
        spread=tuple(
            SpreadP(s.max_skew, _intern(s.topology_key), _intern(s.when_unsatisfiable))
            for s in template.topology_spread_constraints or ()
        ),
        zone_anti_affinity=any(key in ZONE_LABELS for key in required + preferred),
        selector_labels=spec.selector.match_labels or {},
        anti_affinity_keys=required,
    )


def decode_deployment(raw: RawDeployment) -> WorkloadP:
    return _decode_workload("Deployment", raw)


def decode_statefulset(raw: RawStatefulSet) -> WorkloadP:
    return _decode_workload("StatefulSet", raw)
