"""kube-controller-manager: per-controller credentials, and the hottest controllers.

- **service-account credentials**: the eviction guard's admission policy denies pod
  deletions by ``system:serviceaccount:kube-system:node-controller``; a controller
  manager without ``--use-service-account-credentials`` deletes as
  ``system:kube-controller-manager`` and the guard cannot tell its evictions from
  anything else. The flag is read from the kube-controller-manager static pods (through
  the eviction guard's own detection, :func:`kubeballast.core.evictionguard.
  detect_service_account_credentials`, which falls back to the
  ``kube-system/node-controller`` ServiceAccount). Off is a FAIL; cannot tell is a
  WARN: the guard may not work.
- **work queues**: the seed's "a churning controller takes the resources of all the
  others". Each configured controller-manager (``exporter.controller_managers``) is
  scraped once, parsed by the exporter's :func:`~kubeballast.exporter.components.
  parse_controller_manager_metrics`, and the deepest queues are listed. Deeper than
  500 (KubeControllerManagerWorkqueueDepthHigh) is a WARN, deeper than 5000 a FAIL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kubeballast.core.errors import KubeBallastError
from kubeballast.core.evictionguard import detect_service_account_credentials
from kubeballast.exporter.components import parse_controller_manager_metrics
from kubeballast.exporter.http import TargetClient
from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import Status, runbook
from kubeballast.selfcheck.runner import CheckSpec, Finding

__all__ = ["CHECKS", "judge_queues"]

DEPTH_WARN: Final = 500.0
DEPTH_FAIL: Final = 5000.0
TOP_QUEUES: Final = 5
FLAG: Final = "use-service-account-credentials"


async def check_service_account_credentials(context: Context) -> Finding:
    pods = await context.static_pods_of("kube-controller-manager")
    evidence: dict[str, Any] = {pod.name: {FLAG: pod.flags.get(FLAG)} for pod in pods}
    fix = (
        f"start kube-controller-manager with --{FLAG}=true (kubeadm: controllerManager"
        " extraArgs) so that the eviction guard can tell the node controller's deletions"
    )
    verdict = await detect_service_account_credentials(context.api)
    evidence["detected"] = {"holds": verdict.holds, "evidence": verdict.evidence}
    if verdict.holds is True:
        return Finding(Status.PASS, verdict.evidence, evidence)
    if verdict.holds is False:
        return Finding(Status.FAIL, verdict.evidence, evidence, fix)
    return Finding(
        Status.WARN, f"--{FLAG} could not be confirmed: {verdict.evidence}", evidence, fix
    )


def judge_queues(depths: Mapping[str, Mapping[str, float]]) -> tuple[Status, str]:
    """Verdict over work queue depths by target and queue."""
    deepest = sorted(
        (
            (depth, target, queue)
            for target, queues in depths.items()
            for queue, depth in queues.items()
        ),
        reverse=True,
    )
    if not deepest or deepest[0][0] <= DEPTH_WARN:
        top = f"{deepest[0][2]} {deepest[0][0]:g}" if deepest else "no queues"
        return Status.PASS, f"work queues shallow (deepest: {top})"
    depth, target, queue = deepest[0]
    status = Status.FAIL if depth > DEPTH_FAIL else Status.WARN
    return status, f"{target}: work queue {queue} holds {depth:g} items"


async def check_workqueues(context: Context) -> Finding:
    targets = context.settings.controller_managers
    if not targets:
        return Finding(
            Status.SKIP,
            "no controller-manager target configured (exporter.controller_managers)",
            {},
        )
    depths: dict[str, dict[str, float]] = {}
    evidence: dict[str, Any] = {}
    errors: list[str] = []
    for target in targets:
        client = TargetClient(target)
        try:
            result = await client.get("/metrics")
            metrics, _, _ = parse_controller_manager_metrics(result.text, None, None)
        except KubeBallastError as error:
            errors.append(f"{target.name}: {error}")
            evidence[target.name] = {"error": str(error)}
            continue
        finally:
            await client.close()
        queues = {name: q.depth for name, q in metrics.queues.items()}
        depths[target.name] = queues
        top = sorted(queues.items(), key=lambda item: (-item[1], item[0]))[:TOP_QUEUES]
        evidence[target.name] = {"leader": metrics.is_leader, "deepest_queues": dict(top)}
    fix = runbook("KubeControllerManagerWorkqueueDepthHigh")
    if errors and not depths:
        return Finding(Status.FAIL, "; ".join(errors), evidence, fix)
    status, summary = judge_queues(depths)
    if errors:
        status = Status.FAIL if status is Status.FAIL else Status.WARN
        summary += "; unreadable: " + "; ".join(errors)
    return Finding(status, summary, evidence, fix)


CHECKS: Final = (
    CheckSpec(
        "controllermanager.service_account_credentials",
        "controller-manager uses per-controller service accounts",
        "controller-manager",
        check_service_account_credentials,
    ),
    CheckSpec(
        "controllermanager.workqueues",
        "controller-manager work queues not backed up",
        "controller-manager",
        check_workqueues,
    ),
)
