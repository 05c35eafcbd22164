"""What the demo shows: one reading of every part, and the one-line status.

Each reading goes to the part that knows: node heartbeats and predicted evictions to the
exporter's /metrics (what kube-ballast saw), alerts to Prometheus and Alertmanager, the
guard's decisions to the receiver's ``GET /records``, the eviction pause to its
ConfigMap in the cluster, and the pods actually deleted to the simulator's
node-lifecycle counters (the ground truth the other readings are judged against).
A part that does not answer is shown as unknown rather than stopping the display.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeballast.demo import client

GUARD_NAMESPACE = "kube-ballast"
GUARD_CONFIGMAP = "eviction-guard"
GUARD_POLICY = "kube-ballast-eviction-guard"

EXPORTER_FAMILIES = [
    "kubeballast_zone_nodes",
    "kubeballast_zone_lease_stale_nodes",
    "kubeballast_lease_stale_nodes",
    "kubeballast_zone_imminent_pod_evictions",
    "kubeballast_zone_no_execute_tainted_nodes",
    "kubeballast_apiserver_congested",
    "kubeballast_etcd_member_up",
    "kubeballast_etcd_cluster_alarm",
    "kubeballast_eviction_pause_active",
]


def _token(path: str) -> str:
    return Path(path).read_text().strip()


def admin_token(state: dict[str, Any]) -> str:
    return client.read_kubeconfig(state["simulator"]["kubeconfig"])[1]


@dataclass
class Reading:
    """One look at everything; fields are None when their part did not answer."""

    nodes: int | None = None
    stale_nodes: int | None = None
    stale_by_zone: dict[str, float] = field(default_factory=dict)
    imminent_evictions: float | None = None
    tainted_nodes: float | None = None
    congested: bool | None = None
    etcd_members_up: int | None = None
    etcd_alarms: list[str] = field(default_factory=list)
    firing: list[str] = field(default_factory=list)
    """Alert names firing in Prometheus (sorted, unique)."""
    pending: list[str] = field(default_factory=list)
    guard: str = "unknown"
    """``paused``; ``not paused`` (the admission policy is installed, no pause is on);
    ``not installed`` (no policy); ``unknown`` (the simulator did not answer)."""
    guard_end_reason: str = ""
    """Why the last pause ended (``recovered``, ``expired`` ...), from its ConfigMap."""
    pods_deleted: int | None = None
    deletions_denied: int | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    at: float = 0.0
    """When it was read (epoch seconds), for scenarios that time what they saw."""

    def status_line(self) -> str:
        def n(value: float | None) -> str:
            return "?" if value is None else f"{value:g}"

        ready = None
        if self.nodes is not None and self.stale_nodes is not None:
            ready = self.nodes - self.stale_nodes
        firing = ", ".join(self.firing) if self.firing else "none"
        return (
            f"nodes {n(ready)} ready / {n(self.stale_nodes)} stale"
            f" | alerts firing: {firing}"
            f" | guard: {self.guard}"
            f" | pods deleted: {n(self.pods_deleted)}"
        )


def read_exporter(state: dict[str, Any], reading: Reading) -> None:
    try:
        families = client.metrics(f"{state['exporter']['url']}/metrics", EXPORTER_FAMILIES)
    except client.UnreachableError:
        return
    if families["kubeballast_zone_nodes"]:
        reading.nodes = int(client.total(families["kubeballast_zone_nodes"]))
    if families["kubeballast_lease_stale_nodes"]:
        reading.stale_nodes = int(client.total(families["kubeballast_lease_stale_nodes"]))
    reading.stale_by_zone = client.by_label(families["kubeballast_zone_lease_stale_nodes"], "zone")
    if families["kubeballast_zone_imminent_pod_evictions"]:
        reading.imminent_evictions = client.total(
            families["kubeballast_zone_imminent_pod_evictions"]
        )
    if families["kubeballast_zone_no_execute_tainted_nodes"]:
        reading.tainted_nodes = client.total(families["kubeballast_zone_no_execute_tainted_nodes"])
    if families["kubeballast_apiserver_congested"]:
        reading.congested = client.total(families["kubeballast_apiserver_congested"]) > 0
    if families["kubeballast_etcd_member_up"]:
        reading.etcd_members_up = int(client.total(families["kubeballast_etcd_member_up"]))
    reading.etcd_alarms = sorted(
        {labels.get("alarm", "") for labels, v in families["kubeballast_etcd_cluster_alarm"] if v}
    )


def read_alerts(state: dict[str, Any], reading: Reading) -> None:
    try:
        answer = client.get_json(f"{state['prometheus']['url']}/api/v1/alerts")
    except (client.UnreachableError, ValueError):
        return
    alerts = answer.get("data", {}).get("alerts", [])
    reading.firing = sorted(
        {a["labels"]["alertname"] for a in alerts if a.get("state") == "firing"}
    )
    reading.pending = sorted(
        {a["labels"]["alertname"] for a in alerts if a.get("state") == "pending"}
    )


def alertmanager_alerts(state: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        alerts: list[dict[str, Any]] = client.get_json(
            f"{state['alertmanager']['url']}/api/v2/alerts"
        )
    except (client.UnreachableError, ValueError):
        return []
    return alerts


def read_guard(state: dict[str, Any], reading: Reading) -> None:
    url = (
        f"{state['simulator']['url']}/api/v1/namespaces/{GUARD_NAMESPACE}"
        f"/configmaps/{GUARD_CONFIGMAP}"
    )
    try:
        status, raw = client.request(url, token=admin_token(state))
    except client.UnreachableError:
        return
    if status == 200:
        data = json.loads(raw).get("data") or {}
        reading.guard_end_reason = str(data.get("endReason", ""))
        if data.get("paused") == "true":
            reading.guard = "paused"
            return
    elif status != 404:
        return
    policy = (
        f"{state['simulator']['url']}/apis/admissionregistration.k8s.io/v1"
        f"/validatingadmissionpolicies/{GUARD_POLICY}"
    )
    try:
        installed = client.request(policy, token=admin_token(state))[0] == 200
    except client.UnreachableError:
        return
    reading.guard = "not paused" if installed else "not installed"


def read_simulator(state: dict[str, Any], reading: Reading) -> None:
    try:
        sim = client.get_json(f"{state['simulator']['url']}/_sim/state", token=admin_token(state))
    except (client.UnreachableError, ValueError):
        return
    counters = (sim.get("nodeLifecycle") or {}).get("counters") or {}
    reading.pods_deleted = counters.get("evictions_done")
    reading.deletions_denied = counters.get("evictions_denied")


def read_records(state: dict[str, Any], reading: Reading) -> None:
    token = _token(state["receiver"]["token_file"])
    try:
        answer = client.get_json(f"{state['receiver']['url']}/records?limit=200", token=token)
    except (client.UnreachableError, ValueError):
        return
    reading.records = list(answer.get("records", []))


def read_all(state: dict[str, Any], *, records: bool = False) -> Reading:
    reading = Reading()
    read_exporter(state, reading)
    read_alerts(state, reading)
    read_guard(state, reading)
    read_simulator(state, reading)
    if records:
        read_records(state, reading)
    return reading


def query(state: dict[str, Any], expression: str) -> list[dict[str, Any]]:
    """An instant PromQL query; [] when Prometheus does not answer."""
    url = f"{state['prometheus']['url']}/api/v1/query?" + urllib.parse.urlencode(
        {"query": expression}
    )
    try:
        answer = client.get_json(url)
    except (client.UnreachableError, ValueError):
        return []
    result: list[dict[str, Any]] = answer.get("data", {}).get("result", [])
    return result
