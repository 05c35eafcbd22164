"""Control-plane size: the seed's sizing table for the number of workers.

The verdict is the exporter's (:func:`~kubeballast.exporter.capacity.
derive_control_plane`: node *capacity* against the table's row, memory with 10 % of
slack), over the node list the scale check also reads, so this check and the
KubeControlPlaneUndersized alert agree. Any undersized control-plane node is a FAIL:
the apiservers, etcd and the controllers of a 5000-node cluster on a machine sized for
100 is the seed's first outage. A managed control plane shows no control-plane nodes:
SKIP, with the row the provider should meet.
"""

from __future__ import annotations

from typing import Any, Final

from kubeballast.exporter.capacity import GIB, derive_control_plane
from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import Status, runbook
from kubeballast.selfcheck.runner import CheckSpec, Finding

__all__ = ["CHECKS"]


async def check_sizing(context: Context) -> Finding:
    nodes = await context.nodes()
    sizing = derive_control_plane(nodes, context.settings.state.control_plane_label)
    wanted = sizing.recommended
    evidence: dict[str, Any] = {
        "workers": sizing.workers,
        "recommended": {
            "cpu_cores": wanted.cpu_cores,
            "memory_gib": round(wanted.memory_bytes / GIB, 1),
        },
        "control_plane_nodes": {
            node.name: {
                "cpu_cores": node.cpu_capacity,
                "memory_gib": None
                if node.memory_capacity is None
                else round(node.memory_capacity / GIB, 1),
                "undersized": node.undersized,
            }
            for node in sizing.nodes
        },
    }
    fix = runbook("KubeControlPlaneUndersized")
    if not sizing.nodes:
        return Finding(
            Status.SKIP,
            "no control-plane nodes are visible (a managed control plane?): the provider"
            f" sizes it; the seed's row for {sizing.workers} workers is"
            f" {wanted.cpu_cores:g} CPU / {wanted.memory_bytes / GIB:g} GiB",
            evidence,
        )
    small = [n for n in sizing.nodes if n.undersized]
    if small:
        names = ", ".join(
            f"{n.name} ({n.cpu_capacity or 0:g} CPU, {(n.memory_capacity or 0) / GIB:.1f} GiB)"
            for n in small
        )
        return Finding(
            Status.FAIL,
            f"control plane undersized for {sizing.workers} workers (needs"
            f" {wanted.cpu_cores:g} CPU / {wanted.memory_bytes / GIB:g} GiB): {names}",
            evidence,
            fix,
        )
    unknown = [n.name for n in sizing.nodes if n.undersized is None]
    if unknown:
        return Finding(
            Status.WARN,
            f"control-plane nodes without reported capacity: {', '.join(unknown)}",
            evidence,
            fix,
        )
    return Finding(
        Status.PASS,
        f"{len(sizing.nodes)} control-plane nodes meet {wanted.cpu_cores:g} CPU /"
        f" {wanted.memory_bytes / GIB:g} GiB for {sizing.workers} workers",
        evidence,
    )


CHECKS: Final = (
    CheckSpec(
        "controlplane.sizing",
        "Control-plane nodes sized for the number of workers",
        "control plane",
        check_sizing,
    ),
)
