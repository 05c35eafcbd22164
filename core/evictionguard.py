"""The eviction pause's shared state: one ConfigMap that an admission policy reads.

Kubernetes has no switch that pauses taint-based eviction. kube-ballast builds one from
two pieces installed ahead of time (deploy/eviction-guard/): a ValidatingAdmissionPolicy
denying pod DELETE requests from ``system:serviceaccount:kube-system:node-controller``
(the identity the taint-eviction controller deletes with, under kube-controller-manager's
``--use-service-account-credentials``; since 1.29 the separate taint-eviction controller
still builds its client as "node-controller") while its parameter says ``paused``, and a
binding whose parameter is the ConfigMap ``kube-ballast/eviction-guard`` with
``parameterNotFoundAction: Allow`` and ``failurePolicy: Ignore``: any fault, a deleted
ConfigMap or a broken policy lets evictions through. Pausing at run time is then one
small write, which lands even through a congested apiserver when the receiver's
FlowSchema gives it its own priority level.

The receiver (leader), every receiver replica at start-up, ``kube-ballast eviction-guard
...`` and the janitor CronJob all read and write that ConfigMap through this module, and
the exporter and ``kube-ballast selfcheck`` read it: one format, one parser, errors that
name the key. A pause always carries ``expiresAt`` (at most 30 minutes ahead) and
``maxUntil`` (the hard cap); whoever finds it past either ends it. Ending keeps the
ConfigMap with ``paused: "false"`` and the reason, so the record of the last pause
survives for people and metrics.

Everything here is I/O-light and policy-free: *when* to pause is the receiver's
(:mod:`kubeballast.remediations.evictionguard`); this module only knows what a pause is.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from kubeballast.core.kube import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    kube_call,
)

__all__ = [
    "BINDING_NAME",
    "END_REASONS",
    "FLOWSCHEMA_NAME",
    "NODE_CONTROLLER_USER",
    "PARAM_NAME",
    "PARAM_NAMESPACE",
    "POLICY_NAME",
    "PRIORITY_LEVEL_NAME",
    "Installation",
    "PauseState",
    "ServiceAccountCredentials",
    "detect_service_account_credentials",
    "end_pause",
    "format_time",
    "guard_installation",
    "janitor",
    "parse_time",
    "read_pause",
    "write_pause",
]

PARAM_NAMESPACE: Final = "kube-ballast"
PARAM_NAME: Final = "eviction-guard"
POLICY_NAME: Final = "kube-ballast-eviction-guard"
BINDING_NAME: Final = "kube-ballast-eviction-guard"
FLOWSCHEMA_NAME: Final = "kube-ballast-receiver"
PRIORITY_LEVEL_NAME: Final = "kube-ballast-remediation"
NODE_CONTROLLER_USER: Final = "system:serviceaccount:kube-system:node-controller"

EndReason = Literal["recovered", "alert-resolved", "expired", "cap", "manual", "janitor"]
END_REASONS: Final[tuple[str, ...]] = (
    "recovered",
    "alert-resolved",
    "expired",
    "cap",
    "manual",
    "janitor",
)
Mode = Literal["policy", "taint-removal"]


def format_time(epoch: float) -> str:
    """RFC 3339 in UTC with seconds, as Kubernetes writes times."""
    return (
        datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
        .replace(microsecond=0)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def parse_time(text: str, key: str) -> float:
    """Seconds since the epoch from an RFC 3339 time; ValueError naming ``key``."""
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key}: not an RFC 3339 time: {text!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{key}: time without a zone: {text!r}")
    return parsed.timestamp()


@dataclass(frozen=True)
class PauseState:
    """The parameter ConfigMap's data, typed. Times are seconds since the epoch."""

    paused: bool
    reason: str = ""
    mode: Mode = "policy"
    started_at: float | None = None
    expires_at: float | None = None
    max_until: float | None = None
    renewals: int = 0
    allow_nodes: tuple[str, ...] = ()
    owner: str = ""
    ended_at: float | None = None
    end_reason: str = ""
    recovering_since: float | None = None
    """When the leader first saw the conditions clear (the resume hysteresis)."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Keys this version does not know (kept on writes)."""

    @classmethod
    def from_data(cls, data: Mapping[str, str] | None) -> PauseState:
        """Parse; ValueError naming the key for anything malformed. A pause without
        ``expiresAt`` is malformed: it could never end on its own."""
        data = dict(data or {})
        flag = data.pop("paused", "false")
        if flag not in ("true", "false"):
            raise ValueError(f"paused: must be 'true' or 'false', got {flag!r}")
        mode = data.pop("mode", "policy")
        if mode not in ("policy", "taint-removal"):
            raise ValueError(f"mode: must be 'policy' or 'taint-removal', got {mode!r}")

        def time_of(key: str) -> float | None:
            text = data.pop(key, "")
            return parse_time(text, key) if text else None

        started = time_of("startedAt")
        expires = time_of("expiresAt")
        max_until = time_of("maxUntil")
        ended = time_of("endedAt")
        recovering = time_of("recoveringSince")
        renewals_text = data.pop("renewals", "0") or "0"
        try:
            renewals = int(renewals_text)
        except ValueError:
            raise ValueError(f"renewals: not an integer: {renewals_text!r}") from None
        allow = tuple(n.strip() for n in data.pop("allowNodes", "").split(",") if n.strip())
        end_reason = data.pop("endReason", "")
        if flag == "true" and expires is None:
            raise ValueError("expiresAt: a pause must say when it expires")
        return cls(
            paused=flag == "true",
            reason=data.pop("reason", ""),
            mode=mode,  # type: ignore[arg-type]
            started_at=started,
            expires_at=expires,
            max_until=max_until,
            renewals=renewals,
            allow_nodes=allow,
            owner=data.pop("owner", ""),
            ended_at=ended,
            end_reason=end_reason,
            recovering_since=recovering,
            extra=data,
        )

    def to_data(self) -> dict[str, str]:
        data = dict(self.extra)
        data["paused"] = "true" if self.paused else "false"
        data["mode"] = self.mode
        data["reason"] = self.reason
        data["renewals"] = str(self.renewals)
        data["allowNodes"] = ",".join(self.allow_nodes)
        data["owner"] = self.owner
        for key, value in (
            ("startedAt", self.started_at),
            ("expiresAt", self.expires_at),
            ("maxUntil", self.max_until),
            ("endedAt", self.ended_at),
            ("recoveringSince", self.recovering_since),
        ):
            if value is not None:
                data[key] = format_time(value)
        if self.end_reason:
            data["endReason"] = self.end_reason
        return data

    def overdue(self, now: float) -> str | None:
        """Why a pause in force must end now ("expired", "cap"), or None."""
        if not self.paused:
            return None
        if self.max_until is not None and now >= self.max_until:
            return "cap"
        if self.expires_at is None or now >= self.expires_at:
            return "expired"
        return None

    def ended(self, now: float, reason: str) -> PauseState:
        return replace(self, paused=False, ended_at=now, end_reason=reason, recovering_since=None)


@dataclass(frozen=True)
class StoredPause:
    """A PauseState with the ConfigMap's resourceVersion, for a compare-and-set write."""

    state: PauseState
    resource_version: str


def _core(api: Any) -> Any:
    from kubernetes_asyncio import client

    return client.CoreV1Api(api)


async def read_pause(api: Any) -> StoredPause | None:
    """The ConfigMap, parsed; None when it does not exist. A malformed one raises
    ValueError (naming the key): callers decide (the janitor ends such a pause)."""
    try:
        cm = await kube_call(
            f"read configmap {PARAM_NAMESPACE}/{PARAM_NAME}",
            _core(api).read_namespaced_config_map(PARAM_NAME, PARAM_NAMESPACE),
        )
    except NotFoundError:
        return None
    return StoredPause(PauseState.from_data(cm.data), cm.metadata.resource_version or "")


async def write_pause(api: Any, state: PauseState, resource_version: str | None) -> StoredPause:
    """Create (``resource_version`` None) or replace at ``resource_version``: a
    concurrent writer makes this raise ConflictError instead of being overwritten."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": PARAM_NAME,
            "namespace": PARAM_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "kube-ballast"},
        },
        "data": state.to_data(),
    }
    core = _core(api)
    what = f"write configmap {PARAM_NAMESPACE}/{PARAM_NAME}"
    if resource_version is None:
        cm = await kube_call(what, core.create_namespaced_config_map(PARAM_NAMESPACE, body))
    else:
        body["metadata"]["resourceVersion"] = resource_version
        cm = await kube_call(
            what, core.replace_namespaced_config_map(PARAM_NAME, PARAM_NAMESPACE, body)
        )
    return StoredPause(PauseState.from_data(cm.data), cm.metadata.resource_version or "")


async def end_pause(
    api: Any, now: float, reason: str, *, only_if_overdue: bool = False, attempts: int = 5
) -> PauseState | None:
    """End the pause in force; returns the ended state, or None when nothing was paused
    (or, with ``only_if_overdue``, nothing was overdue). A malformed ConfigMap is
    replaced by an ended pause: unreadable must never mean paused forever."""
    for _ in range(attempts):
        try:
            stored = await read_pause(api)
        except ValueError as error:
            # Malformed: end it, keeping nothing but why.
            cm = await kube_call(
                f"read configmap {PARAM_NAMESPACE}/{PARAM_NAME}",
                _core(api).read_namespaced_config_map(PARAM_NAME, PARAM_NAMESPACE),
            )
            state = PauseState(paused=False, ended_at=now, end_reason=reason, reason=str(error))
            try:
                await write_pause(api, state, cm.metadata.resource_version)
            except ConflictError:
                continue
            return state
        if stored is None or not stored.state.paused:
            return None
        why = stored.state.overdue(now)
        if only_if_overdue and why is None:
            return None
        ended = stored.state.ended(now, why if only_if_overdue and why else reason)
        try:
            await write_pause(api, ended, stored.resource_version)
        except ConflictError:
            continue
        return ended
    raise ConflictError(f"configmap {PARAM_NAMESPACE}/{PARAM_NAME} kept changing")


async def janitor(api: Any, now: float) -> PauseState | None:
    """End the pause if it is past ``expiresAt`` or ``maxUntil``, whoever set it, even
    when no receiver is left to do it. Returns the ended state, or None."""
    return await end_pause(api, now, "janitor", only_if_overdue=True)


# --------------------------------------------------------------------------------------
# Detection: is the mechanism installed, and does it match the controller's identity?
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccountCredentials:
    """Whether kube-controller-manager runs with ``--use-service-account-credentials``."""

    holds: bool | None
    """None: could not tell."""
    evidence: str


def _flag_value(args: list[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == flag:
            following = args[index + 1] if index + 1 < len(args) else ""
            return following if following in ("true", "false") else "true"
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


async def detect_service_account_credentials(api: Any) -> ServiceAccountCredentials:
    """From the kube-controller-manager static pod's flags (kubeadm and most self-managed
    control planes run it as a pod in kube-system); without one, from the
    ``kube-system/node-controller`` ServiceAccount, which only the controller-manager's
    service-account client builder creates."""
    core = _core(api)
    try:
        pods = await kube_call(
            "list kube-controller-manager pods in kube-system",
            core.list_namespaced_pod(
                "kube-system", label_selector="component=kube-controller-manager"
            ),
        )
    except ForbiddenError as error:
        pods = None
        forbidden = str(error)
    else:
        forbidden = ""
    for pod in (pods.items if pods is not None else []) or []:
        for container in pod.spec.containers or []:
            args = [*(container.command or []), *(container.args or [])]
            if not any("kube-controller-manager" in a for a in args[:1]):
                continue
            value = _flag_value(args, "--use-service-account-credentials")
            name = pod.metadata.name
            if value == "true":
                return ServiceAccountCredentials(
                    True, f"pod kube-system/{name} runs with --use-service-account-credentials=true"
                )
            return ServiceAccountCredentials(
                False,
                f"pod kube-system/{name} runs without --use-service-account-credentials "
                f"(value {value or 'unset, default false'}): taint-based eviction deletes pods "
                "as system:kube-controller-manager, which the policy does not match",
            )
    try:
        await kube_call(
            "read serviceaccount kube-system/node-controller",
            core.read_namespaced_service_account("node-controller", "kube-system"),
        )
    except NotFoundError:
        return ServiceAccountCredentials(
            False,
            "no kube-controller-manager pod is visible and the ServiceAccount "
            "kube-system/node-controller does not exist: the controller-manager does not "
            "run its controllers with their own service accounts",
        )
    except ForbiddenError as error:
        return ServiceAccountCredentials(None, f"cannot tell: {forbidden or error}")
    return ServiceAccountCredentials(
        True,
        "ServiceAccount kube-system/node-controller exists (the controller-manager creates "
        "it under --use-service-account-credentials)",
    )


@dataclass(frozen=True)
class Installation:
    """What of deploy/eviction-guard/ is in the cluster."""

    policy_api: bool
    """admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy is served."""
    policy: bool
    binding: bool
    flowschema: bool
    problems: tuple[str, ...] = ()

    @property
    def policy_ready(self) -> bool:
        return self.policy_api and self.policy and self.binding and not self.problems


async def guard_installation(api: Any) -> Installation:
    """Read the policy, the binding and the FlowSchema; check that the binding points at
    the parameter ConfigMap and fails open."""
    from kubernetes_asyncio import client

    admission = client.AdmissionregistrationV1Api(api)
    problems: list[str] = []
    policy_api = True
    policy = binding = flowschema = False
    try:
        found = await kube_call(
            f"read validatingadmissionpolicy {POLICY_NAME}",
            admission.read_validating_admission_policy(POLICY_NAME),
        )
        policy = True
        spec = found.spec
        if spec.failure_policy != "Ignore":
            problems.append(f"policy {POLICY_NAME}: failurePolicy must be Ignore (fail open)")
    except NotFoundError as error:
        # Either the object or the whole resource is missing; ask the discovery.
        policy_api = await _policy_api_served(api)
        if policy_api:
            problems.append(f"policy {POLICY_NAME} is not installed")
        else:
            problems.append(f"the ValidatingAdmissionPolicy API is not served ({error})")
    if policy_api:
        try:
            found = await kube_call(
                f"read validatingadmissionpolicybinding {BINDING_NAME}",
                admission.read_validating_admission_policy_binding(BINDING_NAME),
            )
            binding = True
            ref = found.spec.param_ref
            if ref is None or ref.name != PARAM_NAME or ref.namespace != PARAM_NAMESPACE:
                problems.append(
                    f"binding {BINDING_NAME}: paramRef must name {PARAM_NAMESPACE}/{PARAM_NAME}"
                )
            elif ref.parameter_not_found_action != "Allow":
                problems.append(
                    f"binding {BINDING_NAME}: parameterNotFoundAction must be Allow (fail open)"
                )
        except NotFoundError:
            problems.append(f"binding {BINDING_NAME} is not installed")
    try:
        await kube_call(
            f"read flowschema {FLOWSCHEMA_NAME}",
            client.FlowcontrolApiserverV1Api(api).read_flow_schema(FLOWSCHEMA_NAME),
        )
        flowschema = True
    except NotFoundError:
        problems.append(
            f"FlowSchema {FLOWSCHEMA_NAME} is not installed: the pause write may be "
            "rejected during the very congestion it is for"
        )
    return Installation(policy_api, policy, binding, flowschema, tuple(problems))


async def _policy_api_served(api: Any) -> bool:
    from kubernetes_asyncio import client

    try:
        resources = await kube_call(
            "discover admissionregistration.k8s.io/v1",
            client.AdmissionregistrationV1Api(api).get_api_resources(),
        )
    except NotFoundError:
        return False
    return any(r.name == "validatingadmissionpolicies" for r in resources.resources or [])
