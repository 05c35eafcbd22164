"""Scale: nodes, pods, containers and pods per node against the seed's limits.

The verdict is the exporter's derivation (:func:`~kubeballast.exporter.capacity.
derive_scale`) over one paginated read of nodes and pods, so the self-check and the
KubeClusterNearScaleLimit alert can never disagree about what was measured; only the
thresholds are the checklist's: WARN above 80 % of a limit (the warning alert's
threshold), FAIL above the limit itself (a node over 100 pods, a cluster over 5000
nodes). A pod counts as the cluster state counts it: holding a node or waiting for
one, finished pods excluded.
"""

from __future__ import annotations

from typing import Any, Final

from kubeballast.exporter.capacity import derive_scale
from kubeballast.exporter.projections import PodP
from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import Status, runbook
from kubeballast.selfcheck.runner import CheckSpec, Finding

__all__ = ["CHECKS", "pods_by_node"]

WARN_RATIO: Final = 0.8
"""Share of a limit above which the check warns (KubeClusterNearScaleLimit's)."""

_FINISHED: Final = frozenset({"Succeeded", "Failed"})
_TOP_NODES: Final = 10


def pods_by_node(pods: tuple[PodP, ...]) -> dict[str, tuple[int, int]]:
    """(pods, containers) per node name, pending pods under "", finished pods left out."""
    counts: dict[str, list[int]] = {}
    for pod in pods:
        if pod.phase in _FINISHED:
            continue
        row = counts.setdefault(pod.node_name, [0, 0])
        row[0] += 1
        row[1] += pod.containers
    return {name: (row[0], row[1]) for name, row in counts.items()}


async def check_scale(context: Context) -> Finding:
    nodes, pods = await context.nodes(), await context.pods()
    limits = context.settings.state.limits
    by_node = pods_by_node(pods)
    usage = derive_scale((n.name for n in nodes), by_node, limits)
    evidence: dict[str, Any] = {
        d.name: {"current": d.current, "limit": d.limit, "ratio": round(d.ratio, 4)}
        for d in usage.dimensions
    }
    over = sorted(
        ((count[0], name) for name, count in by_node.items() if name),
        reverse=True,
    )
    evidence["nodes_over_pod_limit"] = usage.nodes_over_pod_limit
    evidence["fullest_nodes"] = {name: pods for pods, name in over[:_TOP_NODES]}
    above = [d for d in usage.dimensions if d.current > d.limit]
    near = [d for d in usage.dimensions if d.ratio > WARN_RATIO]
    fix = runbook("KubeClusterNearScaleLimit")
    if above:
        what = ", ".join(f"{d.name} {d.current:g} > {d.limit:g}" for d in above)
        if usage.nodes_over_pod_limit:
            what += f" ({usage.nodes_over_pod_limit} nodes over {limits.pods_per_node} pods)"
        return Finding(Status.FAIL, f"over the scale limits: {what}", evidence, fix)
    if near:
        what = ", ".join(f"{d.name} at {d.ratio:.0%} of {d.limit:g}" for d in near)
        return Finding(Status.WARN, f"near the scale limits: {what}", evidence, fix)
    return Finding(
        Status.PASS,
        f"{len(nodes)} nodes, {evidence['pods']['current']:g} pods, fullest node"
        f" {evidence['pods_per_node']['current']:g} pods: within the limits",
        evidence,
    )


CHECKS: Final = (
    CheckSpec(
        "scale.limits",
        "Nodes, pods, containers and pods per node within the limits",
        "scale",
        check_scale,
    ),
)
