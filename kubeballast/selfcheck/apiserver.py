"""The apiserver: ready, not congested now, and APF protecting heartbeats and leader election.

The seed's first self-check item is an apiserver congestion that stops kubelet
heartbeats and gets healthy nodes evicted. Three checks:

- **health**: ``/readyz?verbose``; any failing check is a FAIL naming it.
- **congestion**: two scrapes of ``/metrics`` a few seconds apart, summarised and
  judged by the exporter's own verdict (:func:`~kubeballast.exporter.congestion.
  evaluate`: APF rejections on node-high or leader-election, 429 ratio, mutating p99
  over the SLO). A congested window is a FAIL; rejections on other levels, or any 429
  below the ratio, a WARN.
- **APF**: the FlowSchemas stored in the cluster, evaluated as the apiserver does
  (lowest matchingPrecedence first, then name) for a kubelet renewing its Lease and
  posting node status, and for the controller-manager and scheduler renewing their
  leader Leases. Heartbeats or leader election in a level that carries general
  traffic (global-default, workload-*, catch-all), or in a level that does not exist,
  is a FAIL: under load they queue behind everything else (the seed's outage).
  Heartbeats and leader election sharing one level is a WARN.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubeballast.core import promtext
from kubeballast.exporter.congestion import WANTED_FAMILIES, Evaluation, evaluate, summarize
from kubeballast.exporter.kubeobjects import object_path
from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import Status, runbook
from kubeballast.selfcheck.runner import CheckSpec, Finding

__all__ = ["CHECKS", "Request", "classify", "judge_congestion"]

FLOWCONTROL: Final = "flowcontrol.apiserver.k8s.io/v1"
GENERAL_LEVELS: Final = frozenset({"global-default", "workload-low", "workload-high", "catch-all"})
"""Priority levels that carry general traffic in the suggested configuration."""


async def check_health(context: Context) -> Finding:
    status, text = await context.api_text("/readyz?verbose")
    failed = [
        line.strip()[3:].split(" ", 1)[0]
        for line in text.splitlines()
        if line.strip().startswith("[-]")
    ]
    evidence: dict[str, Any] = {"http_status": status, "failed_checks": failed}
    if status != 200 or failed:
        return Finding(
            Status.FAIL,
            f"/readyz answered {status}" + (f", failing: {', '.join(failed)}" if failed else ""),
            evidence,
            runbook("KubeApiserverReadyzCheckFailing"),
        )
    return Finding(Status.PASS, "/readyz: every check passes", evidence)


async def _summary(context: Context) -> Any:
    status, text = await context.api_text("/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    families = await asyncio.to_thread(promtext.parse, text, WANTED_FAMILIES)
    return summarize(families)


def judge_congestion(verdict: Evaluation, window: float) -> Finding:
    """The verdict over one window: congested FAIL, shedding some load WARN."""
    evidence: dict[str, Any] = {
        "window_seconds": window,
        "reasons": sorted(verdict.reasons),
        "apf_rejections_by_level": dict(verdict.apf_rejections),
        "ratio_429": verdict.ratio_429,
        "mutating_p99_seconds": verdict.mutating_p99_seconds,
        "apf_wait_p99_seconds": dict(verdict.apf_wait_p99_seconds),
        "restarted": verdict.restarted,
    }
    if verdict.congested:
        return Finding(
            Status.FAIL,
            f"congested now: {', '.join(sorted(verdict.reasons))}",
            evidence,
            runbook("KubeApiserverCongested"),
        )
    rejected = {level: n for level, n in verdict.apf_rejections.items() if n > 0}
    if rejected or (verdict.ratio_429 or 0) > 0:
        what = ", ".join(f"{n:g} on {level}" for level, n in rejected.items())
        return Finding(
            Status.WARN,
            "shedding load below the congestion thresholds: APF rejections "
            + (what or "none")
            + (f", 429 ratio {verdict.ratio_429:.2%}" if verdict.ratio_429 else ""),
            evidence,
            runbook("KubeApiserverTooManyRequests"),
        )
    return Finding(Status.PASS, f"no congestion signal over {window:g} s", evidence)


async def check_congestion(context: Context) -> Finding:
    window = context.settings.congestion_window_seconds
    first = await _summary(context)
    await asyncio.sleep(window)  # the window the verdict judges, not a synchronisation
    second = await _summary(context)
    return judge_congestion(evaluate(first, second), window)


# --- API Priority and Fairness --------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A request as APF classifies it."""

    user: str
    groups: frozenset[str]
    verb: str
    api_group: str
    resource: str
    namespace: str


def _contains(values: Iterable[str], value: str) -> bool:
    return any(v in ("*", value) for v in values)


def _subject_matches(subject: Mapping[str, Any], request: Request) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return _contains([(subject.get("user") or {}).get("name", "")], request.user)
    if kind == "Group":
        return (subject.get("group") or {}).get("name", "") in (request.groups | {"*"})
    if kind == "ServiceAccount":
        account = subject.get("serviceAccount") or {}
        prefix = "system:serviceaccount:"
        if not request.user.startswith(prefix):
            return False
        namespace, _, name = request.user[len(prefix) :].partition(":")
        return account.get("namespace") == namespace and _contains([account.get("name", "")], name)
    return False


def _rule_matches(rule: Mapping[str, Any], request: Request) -> bool:
    if not _contains(rule.get("verbs") or (), request.verb):
        return False
    if not _contains(rule.get("apiGroups") or (), request.api_group):
        return False
    if not _contains(rule.get("resources") or (), request.resource):
        return False
    if not request.namespace:
        return bool(rule.get("clusterScope"))
    return _contains(rule.get("namespaces") or (), request.namespace)


def classify(flowschemas: Iterable[Mapping[str, Any]], request: Request) -> tuple[str, str]:
    """(FlowSchema, priority level) of ``request``: the first matching schema by
    (matchingPrecedence, name), as apf_controller.go orders them; ("", "") for none."""

    def order(fs: Mapping[str, Any]) -> tuple[int, str]:
        spec = fs.get("spec") or {}
        return int(spec.get("matchingPrecedence") or 1000), str(
            (fs.get("metadata") or {}).get("name", "")
        )

    for fs in sorted(flowschemas, key=order):
        spec = fs.get("spec") or {}
        for rules in spec.get("rules") or ():
            if not any(_subject_matches(s, request) for s in rules.get("subjects") or ()):
                continue
            if any(_rule_matches(r, request) for r in rules.get("resourceRules") or ()):
                level = (spec.get("priorityLevelConfiguration") or {}).get("name", "")
                return str((fs.get("metadata") or {}).get("name", "")), str(level)
    return "", ""


_AUTHENTICATED = frozenset({"system:authenticated"})
_NODE = "system:node:kube-ballast-selfcheck"
PROTECTED_CALLS: Final[Mapping[str, tuple[str, Request]]] = {
    "node_lease_renewal": (
        "heartbeats",
        Request(
            _NODE,
            _AUTHENTICATED | {"system:nodes"},
            "update",
            "coordination.k8s.io",
            "leases",
            "kube-node-lease",
        ),
    ),
    "node_status_update": (
        "heartbeats",
        Request(_NODE, _AUTHENTICATED | {"system:nodes"}, "patch", "", "nodes/status", ""),
    ),
    "controller_manager_leader_lease": (
        "leader_election",
        Request(
            "system:kube-controller-manager",
            _AUTHENTICATED,
            "update",
            "coordination.k8s.io",
            "leases",
            "kube-system",
        ),
    ),
    "scheduler_leader_lease": (
        "leader_election",
        Request(
            "system:kube-scheduler",
            _AUTHENTICATED,
            "update",
            "coordination.k8s.io",
            "leases",
            "kube-system",
        ),
    ),
}
"""The calls that must keep their own priority level, by name: (group, request)."""


async def check_apf(context: Context) -> Finding:
    flowschemas, levels = await asyncio.gather(
        context.list_raw(object_path(FLOWCONTROL, "flowschemas")),
        context.list_raw(object_path(FLOWCONTROL, "prioritylevelconfigurations")),
    )
    level_names = {str((pl.get("metadata") or {}).get("name", "")) for pl in levels}
    classified = {name: classify(flowschemas, req) for name, (_, req) in PROTECTED_CALLS.items()}
    evidence: dict[str, Any] = {
        name: {"flowschema": fs or None, "priority_level": level or None}
        for name, (fs, level) in classified.items()
    }
    evidence["flowschemas"] = len(flowschemas)
    evidence["priority_levels"] = sorted(level_names)
    fix = (
        "restore the suggested FlowSchemas system-node-high and system-leader-election"
        " (kubectl get flowschemas; the apiserver recreates missing suggested objects"
        " unless apf.kubernetes.io/autoupdate-spec is false); "
        + runbook("KubeApiserverRejectingNodeHeartbeats")
    )
    if not flowschemas:
        return Finding(
            Status.FAIL, "no FlowSchema in the cluster: APF protects nothing", evidence, fix
        )
    failures: list[str] = []
    for name, (fs, level) in classified.items():
        if not level:
            failures.append(f"{name} matches no FlowSchema")
        elif level not in level_names:
            failures.append(f"{name} goes to missing priority level {level!r} (via {fs})")
        elif level in GENERAL_LEVELS:
            failures.append(f"{name} shares general level {level!r} (via {fs})")
    if failures:
        return Finding(Status.FAIL, "; ".join(failures), evidence, fix)
    by_group: dict[str, set[str]] = {}
    for name, (group, _) in PROTECTED_CALLS.items():
        by_group.setdefault(group, set()).add(classified[name][1])
    shared = by_group["heartbeats"] & by_group["leader_election"]
    if shared:
        return Finding(
            Status.WARN,
            f"heartbeats and leader election share priority level {', '.join(sorted(shared))}",
            evidence,
            fix,
        )
    return Finding(
        Status.PASS,
        "heartbeats on "
        + ", ".join(sorted(by_group["heartbeats"]))
        + ", leader election on "
        + ", ".join(sorted(by_group["leader_election"]))
        + ": levels of their own",
        evidence,
    )


CHECKS: Final = (
    CheckSpec("apiserver.health", "apiserver ready", "apiserver", check_health),
    CheckSpec("apiserver.congestion", "apiserver not congested now", "apiserver", check_congestion),
    CheckSpec(
        "apiserver.apf",
        "APF gives heartbeats and leader election their own levels",
        "apiserver",
        check_apf,
    ),
)
