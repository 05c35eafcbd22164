"""Zone spread: which Deployments and StatefulSets one zone's loss would take down.

The exporter's :func:`~kubeballast.exporter.spread.derive_spread` decides, from where
the ready replicas actually run (not from what the templates declare): a workload of
two or more replicas all in one zone, while other zones could take them, is a FAIL
(KubeWorkloadSingleZone's case); one whose declared zone maxSkew is exceeded is a WARN.
The evidence lists the workloads, the riskiest first, with their ready replicas per
zone, so the report is the to-do list.
"""

from __future__ import annotations

from typing import Any, Final

from kubeballast.exporter.spread import derive_spread
from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import Status, runbook
from kubeballast.selfcheck.runner import CheckSpec, Finding

__all__ = ["CHECKS"]

MAX_LISTED: Final = 50
"""Workloads named in the evidence; the counts cover all."""


async def check_spread(context: Context) -> Finding:
    nodes, pods = await context.nodes(), await context.pods()
    replicasets, workloads = await context.replicasets(), await context.workloads()
    report = derive_spread(
        workloads,
        replicasets,
        pods,
        {n.name: n for n in nodes},
        zone_label=context.settings.state.zone_label,
        max_series=MAX_LISTED,
    )
    single = [w for w in report.at_risk if w.risk == "single_zone"]
    skewed = [w for w in report.at_risk if w.risk == "skew_exceeded"]
    totals: dict[str, int] = {}
    for (risk, _declared), count in report.counts.items():
        totals[risk] = totals.get(risk, 0) + count
    evidence: dict[str, Any] = {
        "schedulable_zones": list(report.schedulable_zones),
        "workloads_by_risk": totals,
        "at_risk": [
            {
                "workload": f"{w.kind}/{w.namespace}/{w.name}",
                "risk": w.risk,
                "replicas": w.replicas,
                "ready_by_zone": dict(w.ready_by_zone),
                "skew": w.skew,
                "max_skew": w.max_skew,
                "declares_zone_spread": w.declared,
            }
            for w in report.at_risk
        ],
        "not_listed": report.dropped,
    }
    fix = runbook("KubeWorkloadSingleZone")
    if len(report.schedulable_zones) < 2:
        return Finding(
            Status.SKIP,
            f"{len(report.schedulable_zones)} zone(s) with schedulable nodes: nothing to spread"
            " over",
            evidence,
        )
    if single:
        names = ", ".join(f"{w.namespace}/{w.name}" for w in single[:5])
        more = totals.get("single_zone", 0) - min(5, len(single))
        return Finding(
            Status.FAIL,
            f"{totals.get('single_zone', 0)} workload(s) entirely in one zone: {names}"
            + (f" and {more} more" if more > 0 else ""),
            evidence,
            fix,
        )
    if skewed:
        names = ", ".join(f"{w.namespace}/{w.name}" for w in skewed[:5])
        return Finding(
            Status.WARN,
            f"{totals.get('skew_exceeded', 0)} workload(s) beyond their zone maxSkew: {names}",
            evidence,
            fix,
        )
    return Finding(
        Status.PASS,
        f"every replicated workload runs in more than one of {len(report.schedulable_zones)} zones",
        evidence,
    )


CHECKS: Final = (
    CheckSpec("zones.spread", "Workloads spread across zones", "zone spread", check_spread),
)
