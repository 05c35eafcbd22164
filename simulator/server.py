"""The simulator's HTTP face: a kube-apiserver on aiohttp that clients cannot tell apart.

Everything a client of a real cluster touches goes through here: kubectl-style discovery
(``/api``, ``/apis``), the resource paths of every kind in :mod:`.resources` (get, list,
watch, create, update, patch, delete, deletecollection, the ``/status`` subresource),
``/version``, the health endpoints and ``/metrics``. The semantics behind the paths live
elsewhere, each in one module: the registry (what a write does), the store (revisions,
pagination, watches, compaction), selectors, admission, faults, APF classification and
metrics. This module parses requests the way the apiserver's filters do and renders
answers the way its handlers do, so the wire format is the real one:

- request info, authentication, the priority-and-fairness gate and authorization run in
  one middleware, in the order of the real filter chain (staging/src/k8s.io/apiserver/
  pkg/server/config.go DefaultBuildHandlerChain): WithRequestInfo, WithAuthentication,
  WithPriorityAndFairness, WithAuthorization, then the handler. The per-request state is one
  :class:`RequestContext`; faults, APF and metrics plug in at :meth:`ApiServer._gate`
  and :meth:`ApiServer._record`, and nowhere else;
- every failure is an :class:`~.errors.ApiError` rendered as a ``metav1.Status`` body with
  the matching code (429 adds ``Retry-After``), as responsewriters/status.go does;
- LIST bodies are assembled by joining the stored JSON bytes (the store keeps objects
  encoded), so a 500-pod page costs a join, not 500 decode/encode round trips;
- WATCH is a chunked stream of one JSON event per line, as handlers/watch.go serves it,
  with bookmarks, ``sendInitialEvents`` and the 410 ``ERROR`` event of the watch cache.

What it deliberately does not do: TLS (loopback only, the kubeconfig says ``http://``)
and protobuf (JSON is always answered; every client accepts it). Bearer tokens map to
users (the built-in admin, ``ScenarioSettings.users``, and service-account tokens minted
through ``/_sim/tokens``), with the groups the real authenticators would attach.
Authorization is ``AlwaysAllow`` by default (every authenticated user may do
everything: the product mostly needs a cluster under load); ``authorization="RBAC"``
decides from the stored roles and bindings (:mod:`.rbac`) and records who used which
rule, so the product's shipped RBAC can be proven in tests.

Outside the Kubernetes API, ``/_sim/`` is the control API tests and the CLI use to
compact history, inject faults, move the simulated clock, fail health checks, mint
service-account tokens and switch or read authorization; it
needs the admin token and bypasses faults and metrics, so a 100 % error burst can still
be cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import math
import random
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import yaml
from aiohttp import web
from multidict import MultiMapping

from . import apf, errors, rbac, scenario
from .admission import Admission, AdmissionDeniedError, UserInfo
from .clock import SimClock
from .components import Component
from .errors import ApiError
from .faults import Congestion, Decision, FaultState, RequestClass, pick_nodes
from .kubeconfig import write_kubeconfig
from .kubelet import Kubelets
from .metrics import ApiserverMetrics, ComponentName
from .nodelifecycle import CONTROLLER_MANAGER, NODE_CONTROLLER, NodeLifecycleController
from .registry import Registry, format_time
from .resources import (
    BY_KEY,
    FLOWCONTROL,
    NAMESPACES,
    NODES,
    RESOURCES,
    VAP_BINDINGS,
    VAPS,
    ResourceType,
    lookup,
)
from .selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
)
from .settings import SimulatorSettings
from .store import Store, Watch, encode

log = logging.getLogger(__name__)

# -- constants ---------------------------------------------------------------------------

ADMIN_USER: Final = "system:admin"
ANONYMOUS: Final = UserInfo(apf.ANONYMOUS, groups=(apf.ALL_UNAUTHENTICATED,))
PUBLIC_PATHS: Final = ("/livez", "/readyz", "/healthz", "/version")
"""Non-resource paths the default RBAC (system:public-info-viewer) opens to anonymous
requests; everything else needs a valid token."""

VERSION_INFO: Final[dict[str, str]] = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-kube-ballast-sim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T07:28:49Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

MAX_REQUEST_BODY_BYTES: Final = 3 * 1024 * 1024
"""The apiserver's default --max-request-body-bytes (3 MiB; etcd's own limit is 1.5 MiB)."""

MIN_REQUEST_TIMEOUT_SECONDS: Final = 1800.0
"""--min-request-timeout: a watch without timeoutSeconds lasts a random 1x-2x of this
(handlers/get.go ListResource), so clients re-list at staggered times."""

WATCH_POLL_SECONDS: Final = 5.0
"""How often an idle watch checks for a ``FaultState.disconnect_watches`` it was not woken
for. Disconnects through :meth:`ApiServer.disconnect_watches` are immediate; this only
bounds how long a direct caller of the fault state waits."""

WATCH_WRITE_CHUNK_BYTES: Final = 256 * 1024
"""Events are written in chunks of about this size: large enough that initial events for
thousands of objects do not cost a write each, small enough to keep memory flat."""

COMPACTION_INTERVAL_SECONDS: Final = 10.0
"""Real seconds between compaction passes."""

INITIAL_EVENTS_END_ANNOTATION: Final = "k8s.io/initial-events-end"
"""metav1.InitialEventsAnnotationKey, on the bookmark that ends a watch list's initial
events."""

_DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MUTATING_VERBS: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_JSON: Final = "application/json"
_PATCH_TYPES: Final = frozenset(
    {
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    }
)

# Health checks, named and ordered as kube-apiserver lists them (a representative subset
# of its post-start hooks). "shutdown" fails once the server begins to stop, as the real
# readyz does during graceful termination.
_POST_START_HOOKS: Final = (
    "poststarthook/start-apiserver-admission-initializer",
    "poststarthook/generic-apiserver-start-informers",
    "poststarthook/priority-and-fairness-config-consumer",
    "poststarthook/priority-and-fairness-filter",
    "poststarthook/storage-object-count-tracker-hook",
    "poststarthook/bootstrap-controller",
    "poststarthook/apiservice-registration-controller",
)
HEALTH_CHECKS: Final[Mapping[str, tuple[str, ...]]] = {
    "livez": ("ping", "log", "etcd", *_POST_START_HOOKS),
    "healthz": ("ping", "log", "etcd", *_POST_START_HOOKS),
    "readyz": (
        "ping",
        "log",
        "etcd",
        "etcd-readiness",
        "informer-sync",
        *_POST_START_HOOKS,
        "shutdown",
    ),
}
ALL_HEALTH_CHECKS: Final = frozenset(c for checks in HEALTH_CHECKS.values() for c in checks)


# -- request info ------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestInfo:
    """What the apiserver's request-info filter derives from a URL (request.RequestInfo in
    staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go)."""

    path: str
    verb: str
    """get, list, watch, create, update, patch, delete, deletecollection; for
    non-resource requests the lower-case HTTP method."""
    is_resource_request: bool
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    """As the real RequestInfo: for ``/api/v1/namespaces/<name>`` this is ``<name>``."""
    name: str = ""
    extra_parts: bool = False
    """More path segments than resource/name/subresource: no such route here."""

    @property
    def is_watch(self) -> bool:
        return self.verb == "watch"

    @property
    def mutating(self) -> bool:
        return self.verb in _MUTATING_VERBS

    @property
    def scope(self) -> str:
        """The metrics scope label (endpoints/metrics/metrics.go CleanScope)."""
        if not self.is_resource_request:
            return ""
        if self.name or self.verb == "create":
            return "resource"
        if self.namespace:
            return "namespace"
        return "cluster"


_METHOD_VERBS: Final = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_NAMESPACE_SUBRESOURCES: Final = frozenset({"status", "finalize"})


def parse_bool(name: str, value: str) -> bool:
    """strconv.ParseBool, as the parameter codec applies it; 400 on anything else."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise errors.bad_request(f'strconv.ParseBool: parsing "{value}": invalid syntax ({name})')


def parse_int(name: str, value: str) -> int:
    """strconv.ParseInt for an int64 query parameter; 400 on anything else."""
    try:
        return int(value, 10)
    except ValueError:
        raise errors.bad_request(
            f'strconv.ParseInt: parsing "{value}": invalid syntax ({name})'
        ) from None


def parse_request_info(method: str, path: str, query: MultiMapping[str]) -> RequestInfo:
    """Split a request into verb, group, version, resource, namespace, name, subresource.

    Follows requestinfo.go NewRequestInfo: ``/api/<version>/...`` is the core group,
    ``/apis/<group>/<version>/...`` the others; ``namespaces/<ns>/<resource>`` scopes the
    rest unless the segment after the namespace name is one of its own subresources
    (``/api/v1/namespaces/<name>/status``); a GET without a name is a list, or a watch
    with ``watch=true``; a DELETE without a name is a deletecollection.
    """
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return RequestInfo(path, method.lower(), False)
    prefix = parts[0]
    if prefix == "api":
        if len(parts) < 3:
            return RequestInfo(path, method.lower(), False, api_prefix=prefix)
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 4:
            return RequestInfo(path, method.lower(), False, api_prefix=prefix)
        group, version, rest = parts[1], parts[2], parts[3:]
    verb = _METHOD_VERBS.get(method.upper(), method.lower())
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name and verb == "get":
        watch = query.get("watch")
        verb = "watch" if watch is not None and _lenient_bool(watch) else "list"
    elif not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(
        path,
        verb,
        True,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        extra_parts=len(rest) > 3,
    )


def _lenient_bool(value: str) -> bool:
    # requestinfo.go falls back to "list" when the options do not parse; the handler then
    # answers the parse error itself.
    try:
        return parse_bool("watch", value)
    except ApiError:
        return False


# -- authentication -----------------------------------------------------------------------


def user_for(username: str) -> UserInfo:
    """The UserInfo a real authenticator would produce for ``username``: service accounts
    get system:serviceaccounts and system:serviceaccounts:<ns>, kubelets system:nodes,
    everyone system:authenticated (:func:`.apf.implied_groups`)."""
    base = (apf.SYSTEM_PRIVILEGED_GROUP,) if username == ADMIN_USER else ()
    return UserInfo(username, groups=tuple(sorted(apf.implied_groups(username, base))))


class TokenAuthenticator:
    """Static bearer tokens, as ``--token-auth-file`` gives them."""

    def __init__(self, admin_token: str, users: Mapping[str, str]) -> None:
        if admin_token in users:
            raise ValueError("a scenario user token collides with the admin token")
        self.admin_token = admin_token
        self._users = {token: user_for(name) for token, name in users.items()}
        self._users[admin_token] = user_for(ADMIN_USER)

    def add(self, token: str, username: str) -> None:
        """Accept one more token (a minted service-account token)."""
        if token in self._users:
            raise ValueError("token already in use")
        self._users[token] = user_for(username)

    def authenticate(self, authorization: str | None) -> UserInfo | None:
        """The user of an ``Authorization`` header value, or None if it names nobody."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self._users.get(token.strip())


# -- per-request state ----------------------------------------------------------------------


@dataclass
class RequestContext:
    """Everything the filters learn about one request, built once, read by hooks."""

    info: RequestInfo
    user: UserInfo
    rt: ResourceType | None
    started: float
    """Monotonic time the request arrived."""
    flow_schema: str = ""
    priority_level: str = ""
    dry_run: bool = False
    dropped: bool = False
    """Rejected by APF (429) or cut off by a partition: not an answered request."""
    inflight: bool = False
    """Counted as executing (inflight or long-running) until recorded."""
    code: int = 0
    """The HTTP status finally answered (0 while unknown)."""

    @property
    def verb(self) -> str:
        return self.info.verb

    @property
    def is_watch(self) -> bool:
        return self.info.is_watch

    @property
    def namespace(self) -> str:
        """The namespace the request is scoped to ("" for cluster-scoped kinds)."""
        if self.rt is not None and not self.rt.namespaced:
            return ""
        return self.info.namespace

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def subresource(self) -> str:
        return self.info.subresource


CONTEXT: Final = web.RequestKey("kube_ballast_request_context", RequestContext)


# -- list and watch options ----------------------------------------------------------------


@dataclass(frozen=True)
class ListOptions:
    """metav1.ListOptions as decoded from the query string."""

    label_selector: str = ""
    field_selector: str = ""
    resource_version: str = ""
    resource_version_match: str = ""
    limit: int = 0
    continue_token: str = ""
    timeout_seconds: int | None = None
    allow_watch_bookmarks: bool = False
    send_initial_events: bool | None = None
    watch: bool = False


def _first(query: MultiMapping[str], key: str) -> str | None:
    return query.get(key)


def parse_list_options(query: MultiMapping[str]) -> ListOptions:
    """Decode and validate ListOptions (handlers/get.go ListResource, then
    apimachinery/pkg/apis/meta/internalversion/validation ValidateListOptions with the
    WatchList feature enabled). Bad syntax is 400; invalid combinations are 422."""

    def text(key: str) -> str:
        return _first(query, key) or ""

    def flag(key: str) -> bool | None:
        value = _first(query, key)
        return None if value is None else parse_bool(key, value)

    def number(key: str) -> int | None:
        value = _first(query, key)
        return None if value is None or value == "" else parse_int(key, value)

    opts = ListOptions(
        label_selector=text("labelSelector"),
        field_selector=text("fieldSelector"),
        resource_version=text("resourceVersion"),
        resource_version_match=text("resourceVersionMatch"),
        limit=max(0, number("limit") or 0),
        continue_token=text("continue"),
        timeout_seconds=number("timeoutSeconds"),
        allow_watch_bookmarks=bool(flag("allowWatchBookmarks")),
        send_initial_events=flag("sendInitialEvents"),
        watch=bool(flag("watch")),
    )
    causes = _list_option_causes(opts)
    if causes:
        raise invalid_options("ListOptions", causes)
    return opts


_FORBIDDEN: Final = "FieldValueForbidden"
_NOT_SUPPORTED: Final = "FieldValueNotSupported"


def _list_option_causes(opts: ListOptions) -> list[tuple[str, str, str]]:
    causes: list[tuple[str, str, str]] = []
    match = opts.resource_version_match
    field = "resourceVersionMatch"
    if opts.watch:
        if opts.send_initial_events is not None and match != "NotOlderThan":
            causes.append(
                (
                    _FORBIDDEN,
                    field,
                    "Forbidden: sendInitialEvents requires setting resourceVersionMatch to "
                    "NotOlderThan",
                )
            )
        if match:
            if opts.send_initial_events is None:
                causes.append(
                    (
                        _FORBIDDEN,
                        field,
                        "Forbidden: resourceVersionMatch is forbidden for watch unless "
                        "sendInitialEvents is provided",
                    )
                )
            if match != "NotOlderThan":
                causes.append(
                    (
                        _NOT_SUPPORTED,
                        field,
                        f'Unsupported value: "{match}": supported values: "NotOlderThan"',
                    )
                )
            if opts.continue_token:
                causes.append(
                    (
                        _FORBIDDEN,
                        field,
                        "Forbidden: resourceVersionMatch is forbidden when continue is provided",
                    )
                )
        return causes
    if match:
        if not opts.resource_version:
            causes.append(
                (
                    _FORBIDDEN,
                    field,
                    "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is "
                    "provided",
                )
            )
        if opts.continue_token:
            causes.append(
                (
                    _FORBIDDEN,
                    field,
                    "Forbidden: resourceVersionMatch is forbidden when continue is provided",
                )
            )
        if match not in ("Exact", "NotOlderThan"):
            causes.append(
                (
                    _NOT_SUPPORTED,
                    field,
                    f'Unsupported value: "{match}": supported values: "Exact", "NotOlderThan", ""',
                )
            )
        if match == "Exact" and opts.resource_version == "0":
            causes.append(
                (
                    _FORBIDDEN,
                    field,
                    'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                )
            )
    if opts.send_initial_events is not None:
        causes.append(
            (_FORBIDDEN, "sendInitialEvents", "Forbidden: sendInitialEvents is forbidden for list")
        )
    return causes


def invalid_options(kind: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 for invalid request options, as errors.NewInvalid renders a field.ErrorList
    for GroupKind{meta.k8s.io, kind} with an empty name."""
    rendered = [f"{field}: {message}" for _, field, message in causes]
    aggregate = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{kind}.meta.k8s.io "" is invalid: {aggregate}',
        details={
            "group": "meta.k8s.io",
            "kind": kind,
            "causes": [
                {"reason": reason, "message": message, "field": field}
                for reason, field, message in causes
            ],
        },
    )


def parse_dry_run(values: Iterable[str], options_kind: str) -> bool:
    """``dryRun`` accepts only "All" (apimachinery validation ValidateDryRun)."""
    values = [v for v in values if v != ""]
    for value in values:
        if value != "All":
            raise invalid_options(
                options_kind,
                [
                    (
                        _NOT_SUPPORTED,
                        "dryRun",
                        f'Unsupported value: "{value}": supported values: "All"',
                    )
                ],
            )
    return bool(values)


# -- compaction ------------------------------------------------------------------------------


class CompactionSchedule:
    """Which revision to compact to so that ``history_seconds`` of simulated time stay.

    etcd's apiserver compacts every 5 minutes to the revision it saw 5 minutes before;
    here a pass every few real seconds records (simulated time, revision) and compacts to
    the newest mark at least ``history_seconds`` old. With a fast clock that keeps the
    same amount of *simulated* history, which is what scenarios are written in.
    """

    def __init__(self, history_seconds: float) -> None:
        self.history_seconds = history_seconds
        self._marks: deque[tuple[float, int]] = deque()

    def mark(self, sim_time: float, revision: int) -> int | None:
        """Record the revision at ``sim_time``; the revision to compact to, if any."""
        self._marks.append((sim_time, revision))
        cutoff = sim_time - self.history_seconds
        target: int | None = None
        while self._marks and self._marks[0][0] <= cutoff:
            target = self._marks.popleft()[1]
        return target


# -- response helpers ------------------------------------------------------------------------


def status_response(err: ApiError) -> web.Response:
    """The Status body of an error, with ``Retry-After`` when the error carries one and
    the ``Warning`` headers admission collected before denying the request."""
    response = web.Response(status=err.code, body=encode(err.status()), content_type=_JSON)
    if err.retry_after_seconds is not None:
        response.headers["Retry-After"] = str(err.retry_after_seconds)
    if isinstance(err, AdmissionDeniedError):
        _add_warnings(response, err.warnings)
    return response


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=encode(obj), content_type=_JSON)


def raw_response(raw: bytes, status: int = 200, warnings: Iterable[str] = ()) -> web.Response:
    response = web.Response(status=status, body=raw, content_type=_JSON)
    _add_warnings(response, warnings)
    return response


def _add_warnings(response: web.Response, warnings: Iterable[str]) -> None:
    for warning in warnings:
        # RFC 7234 warn-code 299 with "-" as agent, as the apiserver's warning recorder
        # writes them (quotes and backslashes escaped); clients print the quoted text.
        text = warning.replace("\\", "\\\\").replace('"', '\\"')
        response.headers.add("Warning", f'299 - "{text}"')


def _not_found_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", details={})


def _method_not_allowed() -> ApiError:
    return errors.method_not_allowed(
        "the server does not allow this method on the requested resource"
    )


_EVENT_PREFIX: Final = {
    kind: b'{"type":"' + kind.encode() + b'","object":'
    for kind in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")
}


def watch_event(kind: str, raw: bytes) -> bytes:
    """One line of a watch stream: ``{"type":...,"object":<raw>}`` and a newline."""
    return _EVENT_PREFIX[kind] + raw + b"}\n"


def bookmark_object(rt: ResourceType, revision: int, *, initial_events_end: bool) -> bytes:
    """The object of a BOOKMARK event: only kind, apiVersion and resourceVersion matter."""
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if initial_events_end:
        meta["annotations"] = {INITIAL_EVENTS_END_ANNOTATION: "true"}
    return encode({"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta})


# -- discovery ---------------------------------------------------------------------------------

_CATEGORY_ALL: Final = frozenset(
    {
        ("", "pods"),
        ("", "services"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
    }
)


def _verbs(rt: ResourceType) -> list[str]:
    verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    if rt is NAMESPACES:
        verbs.remove("deletecollection")  # the namespace registry has no collection delete
    return verbs


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """The APIResourceList of one group version (legacy discovery), or None."""
    resources: list[dict[str, Any]] = []
    for rt in RESOURCES:
        if rt.group != group or rt.version != version:
            continue
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": _verbs(rt),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.key in _CATEGORY_ALL:
            entry["categories"] = ["all"]
        resources.append(entry)
        if rt.status_subresource:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    if not resources:
        return None
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def api_group(group: str) -> dict[str, Any] | None:
    versions = sorted({rt.version for rt in RESOURCES if rt.group == group})
    if not group or not versions:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list() -> dict[str, Any]:
    groups = sorted({rt.group for rt in RESOURCES if rt.group})
    bodies = [api_group(g) for g in groups]
    for body in bodies:
        if body is not None:
            del body["kind"], body["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [b for b in bodies if b]}


# -- cluster bootstrap -------------------------------------------------------------------------

FLOW_SCHEMAS: Final = BY_KEY[(FLOWCONTROL, "flowschemas")]
PRIORITY_LEVELS: Final = BY_KEY[(FLOWCONTROL, "prioritylevelconfigurations")]


def bootstrap_apf_objects(
    now: datetime.datetime,
) -> Iterable[tuple[ResourceType, dict[str, Any]]]:
    """The default FlowSchemas and PriorityLevelConfigurations, as the apiserver's APF
    bootstrap ensurer creates them (apis/flowcontrol/bootstrap/default.go)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    for rt, objects in (
        (PRIORITY_LEVELS, apf.default_priority_levels()),
        (FLOW_SCHEMAS, apf.default_flowschemas()),
    ):
        for obj in objects:
            meta = obj["metadata"]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", stamp)
            meta.setdefault("generation", 1)
            yield rt, obj


def nodes_by_zone(store: Store) -> dict[str, list[str]]:
    """Node names by their topology.kubernetes.io/zone label (from the store's projection,
    so no object is decoded)."""
    zones: dict[str, list[str]] = {}
    for entry in store.iter_current(NODES):
        zone = entry.labels.get("topology.kubernetes.io/zone")
        if zone:
            zones.setdefault(zone, []).append(entry.name)
    return zones


class _StorePolicySource:
    """Admission's read access to the store (policies, bindings, params, namespaces)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def list_objects(self, rt: ResourceType) -> Iterable[Mapping[str, Any]]:
        return [entry.obj() for entry in self._store.iter_current(rt)]

    def get_object(self, rt: ResourceType, namespace: str, name: str) -> Mapping[str, Any] | None:
        entry = self._store.get(rt, namespace, name)
        return None if entry is None else entry.obj()

    def resource_versions(self, rt: ResourceType) -> Iterable[Hashable]:
        # Lets admission notice policy changes without decoding a single object.
        return [(entry.key, entry.rv) for entry in self._store.iter_current(rt)]


# -- the server -------------------------------------------------------------------------------


class _UnreachableError(Exception):
    """Raised by the gate when a fault says the request never reaches the apiserver."""


class BackgroundTaskError(RuntimeError):
    """A supervised background task ended while the server was running."""


BackgroundFactory = Callable[[], Awaitable[None]]


class ApiServer:
    """One simulated kube-apiserver: the store, the registry and the HTTP endpoint."""

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        store: Store | None = None,
        clock: SimClock | None = None,
        registry: Registry | None = None,
        faults: FaultState | None = None,
        metrics: ApiserverMetrics | None = None,
        admin_token: str | None = None,
        rng: random.Random | None = None,
        authorization: str = rbac.ALWAYS_ALLOW,
    ) -> None:
        self.settings = settings
        self.store = store if store is not None else Store()
        self.clock = clock if clock is not None else SimClock(settings.clock_factor)
        self.registry = (
            registry
            if registry is not None
            else Registry(
                self.store,
                self.clock,
                Admission(_StorePolicySource(self.store)),
                default_toleration_seconds=settings.node_lifecycle.default_toleration_seconds,
            )
        )
        # Seeded from the scenario, so a run's fault draws and node picks repeat with it.
        seed = settings.scenario.seed
        self.rng = rng if rng is not None else random.Random(seed)
        self.faults = (
            faults if faults is not None else FaultState(random.Random(seed), time.monotonic)
        )
        self.metrics = metrics if metrics is not None else ApiserverMetrics()
        fs_table, pl_table = self.store.table(FLOW_SCHEMAS), self.store.table(PRIORITY_LEVELS)
        self.apf = apf.StoredConfiguration(
            lambda: (fs_table.last_write, pl_table.last_write),
            lambda: (
                [e.obj() for e in self.store.iter_current(FLOW_SCHEMAS)],
                [e.obj() for e in self.store.iter_current(PRIORITY_LEVELS)],
            ),
        )
        """The FlowSchemas and priority levels in force: the stored ones, rebuilt only when
        one of them is written (apf.py); the metrics follow every rebuild."""
        self.apf.subscribe(self.metrics.set_apf_configuration)
        self.admin_token = admin_token or secrets.token_urlsafe(32)
        self.disabled: frozenset[tuple[str, str]] = (
            frozenset()
            if settings.admission_policy_api
            else frozenset({VAPS.key, VAP_BINDINGS.key})
        )
        """(group, plural) of the resources this cluster does not serve."""
        self.authenticator = TokenAuthenticator(self.admin_token, settings.scenario.users)
        self.authorizer = rbac.RbacAuthorizer(_StorePolicySource(self.store))
        self.access_log = rbac.AccessLog()
        """Per user, what was allowed by which rule and what was denied (RBAC mode)."""
        self.authorization_mode = rbac.ALWAYS_ALLOW
        self.set_authorization_mode(authorization)

        self.bookmark_interval = 60.0
        """Real seconds between BOOKMARK events on watches that allow them (the watch
        cache's bookmark frequency is one minute); tests set it short."""
        self.compaction_interval = COMPACTION_INTERVAL_SECONDS
        self.compaction = CompactionSchedule(settings.history_seconds)
        self.health_failures: set[str] = set()
        self.components: dict[str, Component] = {}
        """Simulated kube-scheduler and kube-controller-manager (attach_control_plane)."""
        self.kubelets: Kubelets | None = None
        self.node_lifecycle: NodeLifecycleController | None = None

        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port = 0
        self._stopping = False
        self._stopped = asyncio.Event()
        self._failure: BaseException | None = None
        self._backgrounds: list[tuple[str, BackgroundFactory]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_task: asyncio.Task[None] | None = None
        self._discovery = self._build_discovery()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._site is None:
            raise RuntimeError("the server is not started")
        return f"http://{self.settings.host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        """Bind the listener and start the supervised tasks (compaction and added ones)."""
        if self._runner is not None:
            raise RuntimeError("already started")
        app = web.Application(middlewares=[self._filters], client_max_size=MAX_REQUEST_BODY_BYTES)
        self._add_routes(app)
        # handler_cancellation: a client that goes away cancels its handler, which is
        # what ends a watch whose client disconnected (its finally clears the watcher).
        # It is safe for writes because registry calls are synchronous: a request is
        # cancelled either before it changes anything or after it has.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        await site.start()
        self._runner, self._site = runner, site
        server = site._server  # the bound socket tells which port 0 picked
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1] if sockets else self.settings.port
        for component in self.components.values():
            await component.start()
        self._launch("compaction", self._compaction_loop)
        for name, factory in self._backgrounds:
            self._launch(name, factory)
        log.info("kube-apiserver simulator listening on %s", self.url)

    def add_background(self, factory: BackgroundFactory, name: str | None = None) -> None:
        """Run ``factory()`` as a supervised task for the server's lifetime (kubelets,
        controllers). It must run until cancelled: if it ends or fails, the failure is
        logged and the server stops (:meth:`wait` then raises)."""
        label = name or str(getattr(factory, "__qualname__", None) or repr(factory))
        self._backgrounds.append((label, factory))
        if self._runner is not None and not self._stopping:
            self._launch(label, factory)

    def _launch(self, name: str, factory: BackgroundFactory) -> None:
        async def run() -> None:
            await factory()

        task = asyncio.create_task(run(), name=f"kube-ballast-sim:{name}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._on_task_done(name, t))

    def _on_task_done(self, name: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._stopping or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s failed; stopping the simulator", name, exc_info=exc)
            self._failure = BackgroundTaskError(f"background task {name} failed: {exc!r}")
            self._failure.__cause__ = exc
        else:
            log.error("background task %s ended unexpectedly; stopping the simulator", name)
            self._failure = BackgroundTaskError(f"background task {name} ended unexpectedly")
        self._stop_task = asyncio.create_task(self.stop())

    async def wait(self) -> None:
        """Until the server stops; raises BackgroundTaskError if a task brought it down."""
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Fail readiness, end every watch, cancel background tasks, close the listener."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self.health_failures.add("shutdown")
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        # Watches end cleanly (their streams close) instead of being cut by the shutdown.
        self.store.close_watches()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception:  # already logged by _on_task_done
                    log.debug("background task raised during stop", exc_info=True)
        for component in self.components.values():
            await component.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        self._stopped.set()
        log.info("kube-apiserver simulator stopped")

    def disconnect_watches(self) -> int:
        """End every open watch now, as an apiserver restart does; clients re-watch."""
        self.faults.disconnect_watches()
        return self.store.close_watches()

    async def _compaction_loop(self) -> None:
        self.compaction.mark(self.clock.time(), self.store.resource_version)
        while True:
            await asyncio.sleep(self.compaction_interval)
            target = self.compaction.mark(self.clock.time(), self.store.resource_version)
            if target is not None and target > self.store.compacted_revision:
                self.store.compact(target)
                log.debug("compacted to revision %d", target)

    # -- routing ------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api", self._api_versions)
        r.add_get("/apis", self._api_groups)
        r.add_get("/version", self._version)
        r.add_get("/version/", self._version)  # as kubernetes-asyncio's VersionApi asks
        for endpoint in HEALTH_CHECKS:
            r.add_get(f"/{endpoint}", self._health)
            r.add_get(f"/{endpoint}/{{check:.+}}", self._health_check)
        r.add_get("/metrics", self._metrics)
        r.add_get("/_sim/state", self._sim_state)
        r.add_post("/_sim/compact", self._sim_compact)
        r.add_post("/_sim/faults", self._sim_faults)
        r.add_post("/_sim/clock/advance", self._sim_clock_advance)
        r.add_post("/_sim/readyz", self._sim_readyz)
        r.add_post("/_sim/components", self._sim_components)
        r.add_post("/_sim/tokens", self._sim_tokens)
        r.add_get("/_sim/authz/usage", self._sim_authz_usage)
        r.add_post("/_sim/authz", self._sim_authz)
        r.add_route("*", "/api/{tail:.*}", self._resource)
        r.add_route("*", "/apis/{tail:.*}", self._resource)

    # -- the filter chain ------------------------------------------------------------------

    @web.middleware
    async def _filters(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_sim/"):
            return await self._control_filters(request, handler)
        info = parse_request_info(request.method, path, request.query)
        authorization = request.headers.get("Authorization")
        user = self.authenticator.authenticate(authorization)
        if user is None:
            if authorization or not path.startswith(PUBLIC_PATHS):
                return status_response(errors.unauthorized())
            user = ANONYMOUS
        rt = lookup(info.api_group, info.resource) if info.is_resource_request else None
        if rt is not None and (rt.version != info.api_version or rt.key in self.disabled):
            rt = None
        ctx = RequestContext(info, user, rt, time.monotonic())
        request[CONTEXT] = ctx
        response: web.StreamResponse | None = None
        try:
            try:
                await self._gate(ctx)
                self._authorize(ctx, request)
                response = await handler(request)
            except ApiError as err:
                response = status_response(err)
            except _UnreachableError:
                # The client is cut off (a partitioned or stopped kubelet): it must see a
                # broken connection, not an answer. Abort the transport; aiohttp then
                # fails to send the placeholder response and treats it as a disconnect.
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=503)
            except web.HTTPException as exc:
                ctx.code = exc.status
                raise
            ctx.code = response.status
            return response
        finally:
            self._record(ctx)

    async def _gate(self, ctx: RequestContext) -> None:
        """The priority-and-fairness filter: classify, ask the fault state, act on it.

        This and :meth:`_record` are the only places faults, APF and metrics meet a
        request. A 429 is counted as dropped (observe_dropped), as the APF filter does;
        a 5xx burst is a dispatched request whose handler failed; a disconnect (a
        partitioned or stopped kubelet) never reached the apiserver and leaves no trace.
        """
        info, user = ctx.info, ctx.user
        flow_schema, level = self.apf.classify(
            user.username,
            user.groups,
            info.verb,
            info.api_group,
            info.resource,
            info.namespace,
            subresource=info.subresource,
            non_resource_path="" if info.is_resource_request else info.path,
        )
        ctx.flow_schema, ctx.priority_level = flow_schema, level
        decision: Decision = self.faults.decide(
            RequestClass(
                verb=info.verb,
                api_group=info.api_group,
                resource=info.resource,
                subresource=info.subresource,
                namespace=info.namespace,
                username=user.username,
                groups=user.groups,
                priority_level=level,
                flow_schema=flow_schema,
                is_watch=info.is_watch,
                is_long_running=info.is_watch,
            )
        )
        if decision.disconnect:
            ctx.dropped = True
            raise _UnreachableError
        queued = decision.delay_seconds > 0 and not apf.is_exempt(level)
        if queued:
            self.metrics.note_enqueued(level, flow_schema)
        waited = time.monotonic()
        try:
            if decision.delay_seconds > 0:
                # Congestion latency: for non-exempt levels this is time in an APF queue.
                await asyncio.sleep(decision.delay_seconds)
        except asyncio.CancelledError:
            # The client gave up while queued: APF counts it as rejected, "cancelled".
            ctx.dropped = True
            if queued:
                self.metrics.observe_flowcontrol(
                    level,
                    flow_schema,
                    rejected_reason="cancelled",
                    wait_seconds=time.monotonic() - waited,
                    inqueue_delta=-1,
                )
            raise
        if decision.apf_rejected_reason is not None:
            ctx.dropped = True
        self.metrics.observe_flowcontrol(
            level,
            flow_schema,
            rejected_reason=decision.apf_rejected_reason,
            wait_seconds=decision.delay_seconds if queued else 0.0,
            inqueue_delta=-1 if queued else 0,
        )
        if decision.error is not None:
            raise decision.error
        if ctx.rt is not None:
            if ctx.is_watch:
                self.metrics.longrunning_started(*self._metric_labels(ctx))
            else:
                self.metrics.request_started(info.verb, info.mutating)
            ctx.inflight = True

    def _authorize(self, ctx: RequestContext, request: web.Request) -> None:
        """WithAuthorization, which runs after priority and fairness in the real chain:
        in RBAC mode a request no rule allows is answered 403 (and still counted in
        the request metrics, with its code)."""
        if self.authorization_mode != rbac.RBAC_MODE:
            return
        info, user = ctx.info, ctx.user
        name = info.name
        if not name and info.verb in ("list", "watch"):
            name = rbac.name_from_field_selector(request.query.get("fieldSelector", ""))
        attrs = rbac.Attributes(
            username=user.username,
            groups=user.groups,
            verb=info.verb,
            is_resource_request=info.is_resource_request,
            path=info.path,
            api_group=info.api_group,
            api_version=info.api_version,
            resource=info.resource,
            subresource=info.subresource,
            namespace=info.namespace,
            name=name,
        )
        decision = self.authorizer.authorize(attrs)
        if apf.SYSTEM_PRIVILEGED_GROUP not in user.groups:
            self.access_log.record(attrs, decision)
        if not decision.allowed:
            raise rbac.forbidden_error(attrs, decision.reason)

    def set_authorization_mode(self, mode: str) -> None:
        """Switch between AlwaysAllow and RBAC; RBAC adds the bootstrap roles and
        bindings that are missing (system:discovery, system:public-info-viewer ...)."""
        if mode not in rbac.AUTHORIZATION_MODES:
            raise ValueError(
                f"authorization mode must be one of {', '.join(rbac.AUTHORIZATION_MODES)}, "
                f"got {mode!r}"
            )
        if mode == rbac.RBAC_MODE:
            stamp = format_time(self.clock)
            for rt, obj in rbac.bootstrap_objects():
                if self.store.get(rt, "", obj["metadata"]["name"]) is None:
                    obj["metadata"]["uid"] = str(uuid.uuid4())
                    obj["metadata"]["creationTimestamp"] = stamp
                    self.store.create(rt, obj)
        self.authorization_mode = mode

    def mint_service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token for ``system:serviceaccount:<namespace>:<name>`` (with the
        service-account groups), as a TokenRequest would give one."""
        for field_name, value in (("namespace", namespace), ("name", name)):
            if not _DNS1123_LABEL.match(value) or len(value) > 63:
                raise ValueError(f"{field_name}: {value!r} is not a valid RFC 1123 label")
        token = secrets.token_urlsafe(32)
        self.authenticator.add(token, rbac.service_account_username(namespace, name))
        return token

    def _record(self, ctx: RequestContext) -> None:
        """Account for a finished request (MonitorRequest): counts, latency, inflight."""
        if ctx.rt is None:
            # Non-resource paths and unknown resources are not broken out by resource;
            # the metrics recorder only accepts the served resource table.
            return
        if ctx.dropped:
            if ctx.code == 429:
                self.metrics.observe_dropped(*self._metric_labels(ctx), dry_run=ctx.dry_run)
            return
        if ctx.flow_schema == "":
            return  # the gate never ran
        if ctx.inflight:
            ctx.inflight = False
            if ctx.is_watch:
                self.metrics.longrunning_finished(*self._metric_labels(ctx))
            else:
                self.metrics.request_finished(ctx.verb, ctx.info.mutating)
        if ctx.code == 0:
            # Cancelled (client gone): a watch ended normally, anything else did not.
            ctx.code = 200 if ctx.is_watch else 499
        self.metrics.observe_request(
            *self._metric_labels(ctx),
            ctx.code,
            max(0.0, time.monotonic() - ctx.started),
            dry_run=ctx.dry_run,
        )

    @staticmethod
    def _metric_labels(ctx: RequestContext) -> tuple[str, str, str, str, str, str, str]:
        info = ctx.info
        return (
            info.verb,
            info.api_group,
            info.api_version,
            info.resource,
            info.subresource,
            info.scope,
            "apiserver",
        )

    async def _control_filters(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        user = self.authenticator.authenticate(request.headers.get("Authorization"))
        if user is None:
            return status_response(errors.unauthorized())
        if user.username != ADMIN_USER:
            return status_response(
                errors.forbidden(f'User "{user.username}" cannot use the simulator control API')
            )
        try:
            return await handler(request)
        except ApiError as err:
            return status_response(err)

    # -- non-resource endpoints -------------------------------------------------------------

    def _build_discovery(self) -> dict[str, bytes]:
        bodies: dict[str, bytes] = {"/apis": encode(api_group_list())}
        for group, version in {(rt.group, rt.version) for rt in RESOURCES}:
            resource_list = api_resource_list(group, version)
            if resource_list is not None and self.disabled:
                resource_list["resources"] = [
                    r
                    for r in resource_list["resources"]
                    if (group, r["name"].split("/")[0]) not in self.disabled
                ]
            if group:
                bodies[f"/apis/{group}/{version}"] = encode(resource_list)
                bodies[f"/apis/{group}"] = encode(api_group(group))
            else:
                bodies[f"/api/{version}"] = encode(resource_list)
        return bodies

    async def _api_versions(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "kind": "APIVersions",
                "versions": sorted({rt.version for rt in RESOURCES if not rt.group}),
                "serverAddressByClientCIDRs": [
                    {
                        "clientCIDR": "0.0.0.0/0",
                        "serverAddress": f"{self.settings.host}:{self._port}",
                    }
                ],
            }
        )

    async def _api_groups(self, request: web.Request) -> web.Response:
        return raw_response(self._discovery["/apis"])

    async def _version(self, request: web.Request) -> web.Response:
        return json_response(VERSION_INFO)

    async def _health(self, request: web.Request) -> web.Response:
        """/livez, /readyz, /healthz as healthz.go handleRootHealth answers them."""
        endpoint = request.path.strip("/")
        excluded = set(request.query.getall("exclude", []))
        lines: list[str] = []
        failed = False
        for check in HEALTH_CHECKS[endpoint]:
            if check in excluded:
                excluded.discard(check)
                lines.append(f"[+]{check} excluded: ok")
            elif check in self.health_failures:
                failed = True
                lines.append(f"[-]{check} failed: reason withheld")
            else:
                lines.append(f"[+]{check} ok")
        if excluded:
            names = ",".join(f'"{name}"' for name in sorted(excluded))
            lines.append(f"warn: some health checks cannot be excluded: no matches for {names}")
        headers = {"X-Content-Type-Options": "nosniff"}
        if failed:
            # http.Error: always verbose on failure, plus a trailing newline.
            text = "\n".join(lines) + f"\n{endpoint} check failed\n"
            return web.Response(status=500, text=text, headers=headers)
        if "verbose" not in request.query:
            return web.Response(text="ok", headers=headers)
        return web.Response(text="\n".join(lines) + f"\n{endpoint} check passed\n", headers=headers)

    async def _health_check(self, request: web.Request) -> web.Response:
        endpoint = request.path.strip("/").split("/", 1)[0]
        check = request.match_info["check"]
        if check not in HEALTH_CHECKS[endpoint]:
            raise web.HTTPNotFound(text="404 page not found\n")
        if check in self.health_failures:
            return web.Response(
                status=500, text=f"internal server error: {check} check failed (simulated)\n"
            )
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        counts = {
            f"{rt.plural}.{rt.group}" if rt.group else rt.plural: n
            for rt, n in self.store.counts().items()
        }
        self.metrics.set_storage_objects(counts)
        openmetrics = "application/openmetrics-text" in request.headers.get("Accept", "")
        body, content_type = self.metrics.render(openmetrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

    # -- resource endpoints -------------------------------------------------------------------

    async def _resource(self, request: web.Request) -> web.StreamResponse:
        ctx = request[CONTEXT]
        info = ctx.info
        if not info.is_resource_request:
            if request.method != "GET":
                raise _method_not_allowed()
            path = info.path.rstrip("/")
            if path == "/api":  # "/api/" as kubernetes-asyncio asks for it
                return await self._api_versions(request)
            body = self._discovery.get(path)
            if body is None:
                raise _not_found_path()
            return raw_response(body)
        rt = ctx.rt
        if rt is None or info.extra_parts:
            raise _not_found_path()
        # Scope: namespaced kinds need /namespaces/<ns>/ for a named object; cluster-scoped
        # kinds never live under a namespace (namespaces themselves are the exception the
        # request-info parsing already folded in).
        if rt.namespaced and info.name and not info.namespace:
            raise _not_found_path()
        if not rt.namespaced and rt is not NAMESPACES and info.namespace:
            raise _not_found_path()
        if info.subresource and (info.subresource != "status" or not rt.status_subresource):
            raise _not_found_path()
        verb = info.verb
        if verb == "get":
            return raw_response(self.registry.get(rt, ctx.namespace, info.name))
        if verb == "list":
            return self._list(request, ctx, rt)
        if verb == "watch":
            return await self._watch(request, ctx, rt)
        if verb == "create":
            if info.name:
                raise _method_not_allowed()
            return await self._create(request, ctx, rt)
        if verb == "update":
            if not info.name:
                raise _method_not_allowed()
            return await self._update(request, ctx, rt)
        if verb == "patch":
            if not info.name:
                raise _method_not_allowed()
            return await self._patch(request, ctx, rt)
        if verb == "delete":
            if info.subresource:
                raise _method_not_allowed()
            return await self._delete(request, ctx, rt)
        if verb == "deletecollection":
            if rt is NAMESPACES:
                raise _method_not_allowed()
            return await self._delete_collection(request, ctx, rt)
        raise _method_not_allowed()

    @staticmethod
    def _selectors(rt: ResourceType, opts: ListOptions) -> tuple[LabelSelector, FieldSelector]:
        labels = parse_label_selector(opts.label_selector)
        fields = parse_field_selector(opts.field_selector, rt.field_getters.keys())
        return labels, fields

    def _list(self, request: web.Request, ctx: RequestContext, rt: ResourceType) -> web.Response:
        opts = parse_list_options(request.query)
        labels, fields = self._selectors(rt, opts)
        started = time.monotonic()
        page = self.store.list(
            rt,
            namespace=ctx.namespace,
            labels=labels,
            fields=fields,
            limit=opts.limit,
            continue_token=opts.continue_token,
            resource_version=opts.resource_version,
            resource_version_match=opts.resource_version_match,
        )
        if opts.resource_version != "0" or opts.continue_token:
            # resourceVersion=0 is served from the watch cache, not etcd.
            self.metrics.observe_etcd("list", _storage_type(rt), time.monotonic() - started)
        meta: dict[str, Any] = {"resourceVersion": str(page.resource_version)}
        if page.continue_token:
            meta["continue"] = page.continue_token
        if page.remaining is not None:
            meta["remainingItemCount"] = page.remaining
        head = encode({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        # The items are stored JSON: splice them in rather than decoding and re-encoding.
        body = b"".join((head[:-1], b',"items":[', b",".join(page.items), b"]}"))
        return raw_response(body)

    async def _watch(
        self, request: web.Request, ctx: RequestContext, rt: ResourceType
    ) -> web.StreamResponse:
        opts = parse_list_options(request.query)
        labels, fields = self._selectors(rt, opts)
        timeout = float(opts.timeout_seconds or 0)
        if timeout <= 0:
            timeout = MIN_REQUEST_TIMEOUT_SECONDS * (self.rng.random() + 1.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        resource_version = opts.resource_version
        send_initial = opts.send_initial_events
        if send_initial is False and resource_version in ("", "0"):
            # sendInitialEvents=false: "start at most recent", without the synthetic
            # ADDED events a legacy watch from "" or "0" gets.
            resource_version = str(self.store.resource_version)
        generation = self.faults.watch_generation
        watch: Watch | None = None
        error: ApiError | None = None
        try:
            watch = self.store.watch(
                rt,
                namespace=ctx.namespace,
                labels=labels,
                fields=fields,
                resource_version=resource_version,
                send_initial_events=send_initial,
            )
        except ApiError as err:
            if err.code != 410:
                raise
            # The watch cache answers a compacted resourceVersion with an ERROR event in
            # a 200 stream, not an HTTP error (cacher.go: newErrWatcher).
            error = err
        # Read with no await since the registration: every event above this revision is
        # queued for the watcher, everything at or below is in its initial events.
        initial_end = self.store.resource_version
        try:
            response = web.StreamResponse(
                status=200, headers={"Content-Type": _JSON, "Cache-Control": "no-cache, private"}
            )
            response.enable_chunked_encoding()
            await response.prepare(request)
            if watch is None:
                assert error is not None  # the only way to have no watcher
                await response.write(watch_event("ERROR", encode(error.status())))
                return response
            await self._stream(
                response,
                watch,
                rt,
                deadline=deadline,
                bookmarks=opts.allow_watch_bookmarks,
                initial_events_end=initial_end
                if send_initial and opts.allow_watch_bookmarks
                else None,
                generation=generation,
            )
            return response
        finally:
            if watch is not None:
                watch.close()

    async def _stream(
        self,
        response: web.StreamResponse,
        watch: Watch,
        rt: ResourceType,
        *,
        deadline: float,
        bookmarks: bool,
        initial_events_end: int | None,
        generation: int,
    ) -> None:
        """Serve a registered watch until its timeout, its closing, or the server's stop."""
        loop = asyncio.get_running_loop()
        initial, watch.initial = watch.initial, []
        await self._write_events(response, initial)
        del initial
        if initial_events_end is not None:
            await response.write(
                watch_event(
                    "BOOKMARK", bookmark_object(rt, initial_events_end, initial_events_end=True)
                )
            )
        next_bookmark = loop.time() + self.bookmark_interval if bookmarks else math.inf
        while not self._stopping:
            pending = watch.drain()
            if pending:
                await self._write_events(response, ((kind, raw) for kind, raw, _ in pending))
                continue
            if watch.closed or self.faults.watch_generation != generation:
                return
            now = loop.time()
            if now >= deadline:
                return
            if now >= next_bookmark:
                # The queue is empty and events are queued synchronously on write, so the
                # watcher has been sent everything up to the current revision.
                revision = self.store.resource_version
                await response.write(
                    watch_event("BOOKMARK", bookmark_object(rt, revision, initial_events_end=False))
                )
                next_bookmark = now + self.bookmark_interval
                continue
            wake = min(deadline, next_bookmark, now + WATCH_POLL_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake):
                    await watch.wait()

    @staticmethod
    async def _write_events(
        response: web.StreamResponse, events: Iterable[tuple[str, bytes]]
    ) -> None:
        chunk: list[bytes] = []
        size = 0
        for kind, raw in events:
            line = watch_event(kind, raw)
            chunk.append(line)
            size += len(line)
            if size >= WATCH_WRITE_CHUNK_BYTES:
                await response.write(b"".join(chunk))
                chunk.clear()
                size = 0
        if chunk:
            await response.write(b"".join(chunk))

    @staticmethod
    async def _read_body(request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(
                413,
                "RequestEntityTooLarge",
                f"Request entity too large: limit is {MAX_REQUEST_BODY_BYTES}",
            ) from None

    async def _read_object(self, request: web.Request) -> dict[str, Any]:
        raw = await self._read_body(request)
        content_type = request.content_type
        try:
            if content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
                obj = yaml.safe_load(raw)
            else:
                obj = msgspec.json.decode(raw) if raw else None
        except (msgspec.DecodeError, yaml.YAMLError) as exc:
            raise errors.bad_request(
                f"couldn't get version/kind; json parse error: {exc}"
            ) from None
        if not isinstance(obj, dict):
            raise errors.bad_request(
                "couldn't get version/kind; json parse error: the request body is not an object"
            )
        return obj

    async def _create(
        self, request: web.Request, ctx: RequestContext, rt: ResourceType
    ) -> web.Response:
        ctx.dry_run = parse_dry_run(request.query.getall("dryRun", []), "CreateOptions")
        body = await self._read_object(request)
        started = time.monotonic()
        code, raw = self.registry.create(rt, ctx.namespace, body, ctx.user, dry_run=ctx.dry_run)
        self._observe_storage("create", rt, started, ctx.dry_run)
        return raw_response(raw, code, self.registry.warnings)

    async def _update(
        self, request: web.Request, ctx: RequestContext, rt: ResourceType
    ) -> web.Response:
        ctx.dry_run = parse_dry_run(request.query.getall("dryRun", []), "UpdateOptions")
        body = await self._read_object(request)
        started = time.monotonic()
        code, raw = self.registry.update(
            rt,
            ctx.namespace,
            ctx.name,
            body,
            ctx.user,
            subresource=ctx.subresource,
            dry_run=ctx.dry_run,
        )
        self._observe_storage("update", rt, started, ctx.dry_run)
        return raw_response(raw, code, self.registry.warnings)

    async def _patch(
        self, request: web.Request, ctx: RequestContext, rt: ResourceType
    ) -> web.Response:
        ctx.dry_run = parse_dry_run(request.query.getall("dryRun", []), "PatchOptions")
        content_type = request.content_type
        if content_type not in _PATCH_TYPES:
            raise errors.unsupported_media_type(content_type)
        body = await self._read_body(request)
        started = time.monotonic()
        code, raw = self.registry.patch(
            rt,
            ctx.namespace,
            ctx.name,
            content_type,
            body,
            ctx.user,
            subresource=ctx.subresource,
            dry_run=ctx.dry_run,
        )
        self._observe_storage("update", rt, started, ctx.dry_run)
        return raw_response(raw, code, self.registry.warnings)

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        """DeleteOptions from the query and the body (the body wins where both say
        something; the real handler reads the body when there is one and the query
        otherwise, so with a body query options are only honoured here)."""
        query = request.query
        options: dict[str, Any] = {}
        grace = query.get("gracePeriodSeconds")
        if grace not in (None, ""):
            options["gracePeriodSeconds"] = parse_int("gracePeriodSeconds", grace)
        policy = query.get("propagationPolicy")
        if policy:
            options["propagationPolicy"] = policy
        orphan = query.get("orphanDependents")
        if orphan:
            options["orphanDependents"] = parse_bool("orphanDependents", orphan)
        dry_run = [v for v in query.getall("dryRun", []) if v]
        if dry_run:
            options["dryRun"] = dry_run
        if request.can_read_body:
            raw = await self._read_body(request)
            if raw.strip():
                body = await self._decode_delete_options(raw)
                options.update({k: v for k, v in body.items() if k not in ("kind", "apiVersion")})
        return options

    @staticmethod
    async def _decode_delete_options(raw: bytes) -> dict[str, Any]:
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise errors.bad_request(
                f"couldn't get version/kind; json parse error: {exc}"
            ) from None
        if not isinstance(body, dict):
            raise errors.bad_request("the body of a delete must be a DeleteOptions object")
        return body

    async def _delete(
        self, request: web.Request, ctx: RequestContext, rt: ResourceType
    ) -> web.Response:
        options = await self._delete_options(request)
        ctx.dry_run = parse_dry_run(options.get("dryRun") or [], "DeleteOptions")
        started = time.monotonic()
        code, raw = self.registry.delete(
            rt, ctx.namespace, ctx.name, ctx.user, options=options, dry_run=ctx.dry_run
        )
        self._observe_storage("delete", rt, started, ctx.dry_run)
        return raw_response(raw, code, self.registry.warnings)

    async def _delete_collection(
        self, request: web.Request, ctx: RequestContext, rt: ResourceType
    ) -> web.Response:
        opts = parse_list_options(request.query)
        labels, fields = self._selectors(rt, opts)
        options = await self._delete_options(request)
        ctx.dry_run = parse_dry_run(options.get("dryRun") or [], "DeleteOptions")
        started = time.monotonic()
        code, raw = self.registry.delete_collection(
            rt,
            ctx.namespace,
            ctx.user,
            labels=labels,
            fields=fields,
            options=options,
            dry_run=ctx.dry_run,
        )
        self._observe_storage("delete", rt, started, ctx.dry_run)
        return raw_response(raw, code, self.registry.warnings)

    def _observe_storage(self, operation: str, rt: ResourceType, started: float, dry: bool) -> None:
        if not dry:
            self.metrics.observe_etcd(operation, _storage_type(rt), time.monotonic() - started)

    # -- control API ----------------------------------------------------------------------------

    async def _sim_state(self, request: web.Request) -> web.Response:
        return json_response(self.state())

    def state(self) -> dict[str, Any]:
        """What /_sim/state reports: sizes, revisions, faults, clock and health."""
        watchers = sum(len(self.store.table(rt).watchers) for rt in RESOURCES)
        return {
            "url": self.url if self._site is not None else None,
            "revision": self.store.resource_version,
            "compactedRevision": self.store.compacted_revision,
            "historySize": self.store.history_size(),
            "watchers": watchers,
            "counts": {
                (f"{rt.plural}.{rt.group}" if rt.group else rt.plural): n
                for rt, n in self.store.counts().items()
            },
            "clock": {"now": self.clock.now().isoformat(), "factor": self.clock.factor},
            "faults": self.faults.describe(),
            "apf": self.apf.current.describe(),
            "authorization": self.authorization_mode,
            "failingHealthChecks": sorted(self.health_failures),
            "components": {
                name: {"url": c.url, "alive": c.alive, "leader": c.is_leader}
                for name, c in self.components.items()
            },
            "kubelets": None if self.kubelets is None else dataclasses.asdict(self.kubelets.stats),
            "nodeLifecycle": None
            if self.node_lifecycle is None
            else {
                "zoneStates": self.node_lifecycle.zone_states(),
                "counters": self.node_lifecycle.counters.to_dict(),
            },
        }

    async def _sim_components(self, request: web.Request) -> web.Response:
        """Kill or revive a simulated component: {"name": "kube-scheduler", "alive": false}."""
        body = await self._sim_body(request)
        name = body.get("name")
        alive = body.get("alive")
        if name not in self.components:
            raise errors.bad_request(
                f"name: unknown component {name!r}; known: {sorted(self.components)}"
            )
        if not isinstance(alive, bool):
            raise errors.bad_request("alive: must be true or false")
        component = self.components[str(name)]
        if alive:
            await component.revive()
        else:
            await component.kill()
        return json_response({"name": name, "alive": component.alive, "url": component.url})

    async def _sim_tokens(self, request: web.Request) -> web.Response:
        """Mint a service-account token: {"namespace": "ns", "serviceAccount": "name"}."""
        body = await self._sim_body(request)
        namespace, name = body.get("namespace"), body.get("serviceAccount")
        if not isinstance(namespace, str) or not isinstance(name, str):
            raise errors.bad_request("namespace and serviceAccount: both must be strings")
        try:
            token = self.mint_service_account_token(namespace, name)
        except ValueError as exc:
            raise errors.bad_request(str(exc)) from None
        return json_response(
            {"token": token, "username": rbac.service_account_username(namespace, name)}
        )

    async def _sim_authz_usage(self, request: web.Request) -> web.Response:
        """What each user was allowed (and by which rule) and denied, in RBAC mode."""
        return json_response({"mode": self.authorization_mode, **self.access_log.usage()})

    async def _sim_authz(self, request: web.Request) -> web.Response:
        """{"mode": "RBAC" | "AlwaysAllow", "resetUsage": true}: both keys optional."""
        body = await self._sim_body(request)
        unknown = set(body) - {"mode", "resetUsage"}
        if unknown:
            raise errors.bad_request(f"unknown keys {sorted(unknown)}; known: mode, resetUsage")
        if "mode" in body:
            try:
                self.set_authorization_mode(str(body["mode"]))
            except ValueError as exc:
                raise errors.bad_request(str(exc)) from None
        if body.get("resetUsage"):
            self.access_log.reset()
        return json_response({"mode": self.authorization_mode})

    async def _sim_compact(self, request: web.Request) -> web.Response:
        revision = self.store.resource_version
        self.store.compact(revision)
        return json_response({"compactedRevision": self.store.compacted_revision})

    async def _sim_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = msgspec.json.decode(raw) if raw.strip() else {}
        except msgspec.DecodeError as exc:
            raise errors.bad_request(f"invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise errors.bad_request("the body must be a JSON object")
        return body

    async def _sim_faults(self, request: web.Request) -> web.Response:
        """Apply faults, in the order given. Keys: clear, congestion, error_burst,
        watch_disconnect, kubelets_stopped {zones, fraction} or {nodes}, partition {zones}."""
        body = await self._sim_body(request)
        try:
            for key, value in body.items():
                self._apply_fault(key, value)
        except (ValueError, TypeError) as exc:
            raise errors.bad_request(f"invalid fault: {exc}") from None
        return json_response(self.faults.describe())

    def _apply_fault(self, key: str, value: Any) -> None:
        spec: Mapping[str, Any] = value if isinstance(value, Mapping) else {}
        if key == "clear":
            if value:
                self.faults.clear()
        elif key == "congestion":
            if value is None:
                self.faults.set_congestion(None)
                return
            fields = dict(spec)
            for key in ("priority_levels", "starved_nodes"):
                if key in fields:
                    fields[key] = frozenset(fields[key])
            allowed = {f.name for f in dataclasses.fields(Congestion)}
            unknown = set(fields) - allowed
            if unknown:
                raise ValueError(f"congestion: unknown keys {sorted(unknown)}")
            levels = frozenset(self.apf.current.priority_levels)
            self.faults.set_congestion(Congestion(**fields, known_priority_levels=levels))
        elif key == "error_burst":
            self.faults.set_error_burst(
                code=int(spec.get("code", 500)),
                fraction=float(spec.get("fraction", 1.0)),
                duration_seconds=float(spec.get("duration_seconds", 10.0)),
            )
        elif key == "watch_disconnect":
            self.disconnect_watches()
        elif key == "kubelets_stopped":
            if "nodes" in spec:
                nodes = frozenset(str(n) for n in spec["nodes"])
            else:
                topology = nodes_by_zone(self.store)
                zones = spec.get("zones") or sorted(topology)
                nodes = pick_nodes(topology, zones, float(spec.get("fraction", 1.0)), self.rng)
            self.faults.set_kubelets_stopped(nodes)
        elif key == "partition":
            self.faults.set_partition(frozenset(str(z) for z in spec.get("zones", ())))
        else:
            raise ValueError(f"unknown fault {key!r}")

    async def _sim_clock_advance(self, request: web.Request) -> web.Response:
        body = await self._sim_body(request)
        seconds = body.get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise errors.bad_request("seconds must be a number >= 0")
        self.clock.advance(float(seconds))
        return json_response({"now": self.clock.now().isoformat()})

    async def _sim_readyz(self, request: web.Request) -> web.Response:
        body = await self._sim_body(request)
        check = body.get("check")
        if check not in ALL_HEALTH_CHECKS:
            raise errors.bad_request(
                f"unknown health check {check!r}; known: {sorted(ALL_HEALTH_CHECKS)}"
            )
        if body.get("ok", True):
            self.health_failures.discard(str(check))
        else:
            self.health_failures.add(str(check))
        return json_response({"failingHealthChecks": sorted(self.health_failures)})


def _storage_type(rt: ResourceType) -> str:
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


# -- building and running a cluster ------------------------------------------------------------


def build_server(settings: SimulatorSettings, **kwargs: Any) -> ApiServer:
    """An ApiServer over a freshly generated cluster (scenario objects plus the default
    APF configuration), with the fault state told which node is in which zone."""
    clock = kwargs.pop("clock", None) or SimClock(settings.clock_factor)
    store = Store()
    now = clock.now()
    loaded = store.bulk_load(
        scenario.generate(settings.scenario, now, lifecycle=settings.node_lifecycle)
    )
    if not any(True for _ in store.iter_current(FLOW_SCHEMAS)):
        loaded += store.bulk_load(bootstrap_apf_objects(now))
    server = ApiServer(settings, store=store, clock=clock, **kwargs)
    server.faults.set_topology(nodes_by_zone(store))
    log.info("generated a cluster of %d objects at revision %d", loaded, store.resource_version)
    return server


def attach_control_plane(server: ApiServer) -> None:
    """Add what runs beside the apiserver: kubelets (settings.kubelets), the
    node-lifecycle and taint-eviction controllers (settings.controllers), and the
    scheduler and controller-manager endpoints with their leader Leases (always)."""
    settings = server.settings
    if settings.kubelets:
        # In-process clients are classified with the stored FlowSchemas too, as the real
        # apiserver classifies a kubelet's or a scheduler's requests.
        server.kubelets = Kubelets(
            server.store,
            server.registry,
            server.clock,
            server.faults,
            classify=server.apf.classify,
        )
        server.add_background(server.kubelets.run, "kubelets")
    lifecycle: NodeLifecycleController | None = None
    if settings.controllers:
        lifecycle = NodeLifecycleController(
            server.store,
            server.registry,
            server.clock,
            settings.node_lifecycle,
            user=(
                NODE_CONTROLLER
                if settings.node_lifecycle.use_service_account_credentials
                else CONTROLLER_MANAGER
            ),
        )
        server.node_lifecycle = lifecycle
        server.add_background(lifecycle.run, "node-lifecycle")

    def workqueues() -> dict[str, tuple[int, int, float]]:
        if lifecycle is None:
            return {}
        pending = sum(len(nodes) for nodes in lifecycle.taint_queue().values())
        adds = lifecycle.counters.no_execute_taints_added + pending
        return {"node_lifecycle_controller": (pending, adds, 0.0)}

    names: tuple[ComponentName, ...] = ("kube-scheduler", "kube-controller-manager")
    for name in names:
        component = Component(
            name,
            server.registry,
            server.clock,
            server.faults,
            host=settings.host,
            workqueues=workqueues if name == "kube-controller-manager" else None,
            classify=server.apf.classify,
        )
        server.components[name] = component
        server.add_background(component.run, name)


async def run_simulator(settings: SimulatorSettings) -> None:
    """What ``kube-ballast simulate`` runs: build the cluster, serve it, write the
    kubeconfig, and run until cancelled (or until a background task fails)."""
    server = build_server(settings)
    attach_control_plane(server)
    await server.start()
    try:
        if settings.kubeconfig_path:
            write_kubeconfig(settings.kubeconfig_path, server.url, server.admin_token)
            log.info("kubeconfig written to %s", settings.kubeconfig_path)
        log.info("simulated cluster ready at %s", server.url)
        await server.wait()
    finally:
        await server.stop()


__all__ = [
    "ADMIN_USER",
    "ApiServer",
    "BackgroundTaskError",
    "CompactionSchedule",
    "ListOptions",
    "RequestContext",
    "RequestInfo",
    "TokenAuthenticator",
    "attach_control_plane",
    "build_server",
    "parse_list_options",
    "parse_request_info",
    "run_simulator",
    "user_for",
]
