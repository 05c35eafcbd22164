"""The network plugin: its agents ready in every zone, no node without a network.

The exporter's :class:`~kubeballast.exporter.network.NetworkPluginSource` does the
reading (the CNI DaemonSets named in ``exporter.network.daemonsets``, their pods by
selector, the nodes' zones and NetworkUnavailable condition) and is run once here. A
zone with agents but none ready is the outage pattern (KubeNetworkPluginZoneDown):
FAIL, as are nodes whose NetworkUnavailable is True; some agents not ready is a WARN.
No known DaemonSet at all is a WARN: either the plugin is not one of the configured
names, or the check is blind.
"""

from __future__ import annotations

from typing import Any, Final

from kubeballast.exporter.network import NetworkPluginSource
from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import Status, runbook
from kubeballast.selfcheck.runner import CheckSpec, Finding

__all__ = ["CHECKS"]


async def check_network(context: Context) -> Finding:
    source = NetworkPluginSource(context.reader, daemonsets=context.settings.network_daemonsets)
    snapshot = await source.refresh()
    evidence: dict[str, Any] = {
        "daemonsets": {
            f"{ds.namespace}/{ds.name}": {
                "desired": ds.desired,
                "ready": ds.ready,
                "unavailable": ds.unavailable,
                "ready_by_zone": {z: f"{c.ready}/{c.pods}" for z, c in ds.zones.items()},
            }
            for ds in snapshot.daemonsets
        },
        "nodes_by_zone": dict(snapshot.nodes_by_zone),
        "network_unavailable_by_zone": {
            z: n for z, n in snapshot.network_unavailable_by_zone.items() if n
        },
    }
    if not snapshot.daemonsets:
        return Finding(
            Status.WARN,
            "no network plugin DaemonSet found among "
            + ", ".join(context.settings.network_daemonsets),
            evidence,
            "name the plugin's DaemonSet in exporter.network.daemonsets",
        )
    down = [
        f"{ds.name} in {zone}"
        for ds in snapshot.daemonsets
        for zone, counts in ds.zones.items()
        if counts.pods and not counts.ready
    ]
    unavailable = {z: n for z, n in snapshot.network_unavailable_by_zone.items() if n}
    if down or unavailable:
        parts = []
        if down:
            parts.append("no ready agent: " + ", ".join(down))
        if unavailable:
            parts.append(
                "nodes with NetworkUnavailable: "
                + ", ".join(f"{n} in {z}" for z, n in sorted(unavailable.items()))
            )
        return Finding(
            Status.FAIL, "; ".join(parts), evidence, runbook("KubeNetworkPluginZoneDown")
        )
    lagging = [
        f"{ds.name} {zone} {c.ready}/{c.pods}"
        for ds in snapshot.daemonsets
        for zone, c in ds.zones.items()
        if c.ready < c.pods
    ]
    if lagging:
        return Finding(
            Status.WARN,
            "agents not ready: " + ", ".join(lagging),
            evidence,
            runbook("KubeNetworkPluginAgentsUnavailable"),
        )
    zones = sorted({z for ds in snapshot.daemonsets for z in ds.zones})
    return Finding(
        Status.PASS,
        f"{', '.join(ds.name for ds in snapshot.daemonsets)}: every agent ready in"
        f" {len(zones)} zone(s)",
        evidence,
    )


CHECKS: Final = (
    CheckSpec("network.plugin", "Network plugin healthy in every zone", "network", check_network),
)
