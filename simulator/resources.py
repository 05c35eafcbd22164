"""The resource types the simulator serves, and what the apiserver knows about each.

One table drives routing, discovery, list kinds, status subresources and the field
selectors each resource supports, so adding a kind is one line here. Field selectors
are the ones the real registry strategies expose (``GetAttrs`` in
pkg/registry/*/strategy.go) for the fields our code uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FieldGetter = Callable[[Mapping[str, Any]], str]


def _path(*keys: str) -> FieldGetter:
    def get(obj: Mapping[str, Any]) -> str:
        cur: Any = obj
        for key in keys:
            if not isinstance(cur, Mapping):
                return ""
            cur = cur.get(key)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


_COMMON_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}


@dataclass(frozen=True)
class ResourceType:
    """One served resource: its group/version/plural and how the apiserver treats it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    short_names: tuple[str, ...] = ()
    extra_fields: tuple[tuple[str, FieldGetter], ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def key(self) -> tuple[str, str]:
        """(group, plural): what identifies the resource regardless of version."""
        return (self.group, self.plural)

    @property
    def field_getters(self) -> Mapping[str, FieldGetter]:
        return {**_COMMON_FIELDS, **dict(self.extra_fields)}

    def fields_of(self, obj: Mapping[str, Any]) -> dict[str, str]:
        """The values of every supported field selector for ``obj``."""
        return {name: get(obj) for name, get in self.field_getters.items()}


CORE = ""
APPS = "apps"
COORDINATION = "coordination.k8s.io"
ADMISSION = "admissionregistration.k8s.io"
FLOWCONTROL = "flowcontrol.apiserver.k8s.io"
RBAC = "rbac.authorization.k8s.io"

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        CORE,
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        status_subresource=True,
        short_names=("ns",),
        extra_fields=(("status.phase", _path("status", "phase")),),
    ),
    ResourceType(
        CORE,
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        status_subresource=True,
        short_names=("no",),
        extra_fields=(("spec.unschedulable", _path("spec", "unschedulable")),),
    ),
    ResourceType(
        CORE,
        "v1",
        "pods",
        "Pod",
        namespaced=True,
        status_subresource=True,
        short_names=("po",),
        extra_fields=(
            ("spec.nodeName", _path("spec", "nodeName")),
            ("spec.schedulerName", _path("spec", "schedulerName")),
            ("spec.serviceAccountName", _path("spec", "serviceAccountName")),
            ("status.phase", _path("status", "phase")),
            ("status.podIP", _path("status", "podIP")),
        ),
    ),
    ResourceType(CORE, "v1", "configmaps", "ConfigMap", namespaced=True, short_names=("cm",)),
    ResourceType(
        CORE,
        "v1",
        "events",
        "Event",
        namespaced=True,
        short_names=("ev",),
        extra_fields=(
            ("involvedObject.kind", _path("involvedObject", "kind")),
            ("involvedObject.namespace", _path("involvedObject", "namespace")),
            ("involvedObject.name", _path("involvedObject", "name")),
            ("involvedObject.uid", _path("involvedObject", "uid")),
            ("reason", _path("reason")),
            ("source", _path("source", "component")),
            ("type", _path("type")),
        ),
    ),
    ResourceType(
        CORE,
        "v1",
        "services",
        "Service",
        namespaced=True,
        status_subresource=True,
        short_names=("svc",),
    ),
    ResourceType(CORE, "v1", "endpoints", "Endpoints", namespaced=True, short_names=("ep",)),
    ResourceType(COORDINATION, "v1", "leases", "Lease", namespaced=True),
    ResourceType(
        APPS,
        "v1",
        "deployments",
        "Deployment",
        namespaced=True,
        status_subresource=True,
        short_names=("deploy",),
    ),
    ResourceType(
        APPS,
        "v1",
        "replicasets",
        "ReplicaSet",
        namespaced=True,
        status_subresource=True,
        short_names=("rs",),
    ),
    ResourceType(
        APPS,
        "v1",
        "statefulsets",
        "StatefulSet",
        namespaced=True,
        status_subresource=True,
        short_names=("sts",),
    ),
    ResourceType(
        APPS,
        "v1",
        "daemonsets",
        "DaemonSet",
        namespaced=True,
        status_subresource=True,
        short_names=("ds",),
    ),
    ResourceType(
        ADMISSION,
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        namespaced=False,
        status_subresource=True,
    ),
    ResourceType(
        ADMISSION,
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        namespaced=False,
    ),
    ResourceType(
        FLOWCONTROL, "v1", "flowschemas", "FlowSchema", namespaced=False, status_subresource=True
    ),
    ResourceType(
        FLOWCONTROL,
        "v1",
        "prioritylevelconfigurations",
        "PriorityLevelConfiguration",
        namespaced=False,
        status_subresource=True,
    ),
    ResourceType(
        CORE, "v1", "serviceaccounts", "ServiceAccount", namespaced=True, short_names=("sa",)
    ),
    ResourceType(RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False),
    ResourceType(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    ResourceType(RBAC, "v1", "roles", "Role", namespaced=True),
    ResourceType(RBAC, "v1", "rolebindings", "RoleBinding", namespaced=True),
)

BY_KEY: dict[tuple[str, str], ResourceType] = {rt.key: rt for rt in RESOURCES}
"""(group, plural) -> resource type."""

BY_KIND: dict[tuple[str, str], ResourceType] = {(rt.group, rt.kind): rt for rt in RESOURCES}
"""(group, kind) -> resource type."""


def lookup(group: str, plural: str) -> ResourceType | None:
    return BY_KEY.get((group, plural))


PODS = BY_KEY[(CORE, "pods")]
NODES = BY_KEY[(CORE, "nodes")]
NAMESPACES = BY_KEY[(CORE, "namespaces")]
CONFIGMAPS = BY_KEY[(CORE, "configmaps")]
EVENTS = BY_KEY[(CORE, "events")]
LEASES = BY_KEY[(COORDINATION, "leases")]
VAPS = BY_KEY[(ADMISSION, "validatingadmissionpolicies")]
VAP_BINDINGS = BY_KEY[(ADMISSION, "validatingadmissionpolicybindings")]
SERVICE_ACCOUNTS = BY_KEY[(CORE, "serviceaccounts")]
