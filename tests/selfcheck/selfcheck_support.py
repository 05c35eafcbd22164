"""Helpers of the self-check tests: a healthy simulated cluster, and ways to break it.

A module of its own (not conftest.py, which test files must not import from). Every
change here goes through the simulator's HTTP API as an admin client would make it, or
through the simulator's /_sim/ control API for what the API cannot do (a failing
readyz check): the self-check under test only ever reads.

"Healthy" means every item of the checklist holds: the apiservers keep Events in their
own etcd (the static pods recreated with ``--etcd-servers-overrides``), the eviction
guard is installed from deploy/eviction-guard/, and the scenario's two deliberately
crowded Deployments (``team-c/legacy-billing``, ``legacy-reports``) are gone.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import importlib.util
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from kubeballast.core import promtext
from kubeballast.core.config import ClusterStateConfig, EtcdClusterConfig, TargetConfig
from kubeballast.selfcheck.context import Settings
from kubeballast.selfcheck.model import Check, Report, Status
from kubeballast.selfcheck.suite import run_selfcheck, select_checks
from kubeballast.simulator.kubeconfig import write_kubeconfig
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

REPO = Path(__file__).resolve().parents[2]
GUARD = REPO / "deploy" / "eviction-guard"
CROWDED = (("team-c", "legacy-billing"), ("team-c", "legacy-reports"))
EVENTS_OVERRIDE = "--etcd-servers-overrides=/events#https://127.0.0.1:2382"
MUTATING_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION"})

_ADMISSION = "/apis/admissionregistration.k8s.io/v1"
_FLOWCONTROL = "/apis/flowcontrol.apiserver.k8s.io/v1"
_PATHS = {
    "ValidatingAdmissionPolicy": f"{_ADMISSION}/validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": f"{_ADMISSION}/validatingadmissionpolicybindings",
    "FlowSchema": f"{_FLOWCONTROL}/flowschemas",
    "PriorityLevelConfiguration": f"{_FLOWCONTROL}/prioritylevelconfigurations",
}


def etcd_harness() -> Any:
    """tests/etcd/harness.py, the one way the tests run real etcd (not on this folder's
    import path)."""
    if "harness" in sys.modules:
        return sys.modules["harness"]
    path = REPO / "tests" / "etcd" / "harness.py"
    spec = importlib.util.spec_from_file_location("harness", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = module
    spec.loader.exec_module(module)
    return module


class Admin:
    """An admin client of the simulator (its own token), for setting scenes up."""

    def __init__(self, server: ApiServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (200, 201),
    ) -> Any:
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self.session.request(method, path, json=body, headers=headers) as response:
            text = await response.text()
            assert response.status in ok, f"{method} {path}: {response.status} {text[:300]}"
            return await response.json() if text else None

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("POST", path, body)

    async def delete(self, path: str, *, missing_ok: bool = False) -> None:
        ok = (200, 202, 404) if missing_ok else (200, 202)
        await self.request("DELETE", path + "?gracePeriodSeconds=0", ok=ok)

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def apply_manifest(self, path: Path) -> None:
        text = await asyncio.to_thread(path.read_text)
        for document in yaml.safe_load_all(text):
            if document and document["kind"] in _PATHS:
                await self.create(_PATHS[document["kind"]], document)

    async def sim(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("POST", f"/_sim/{path}", body)

    async def recreate_static_pod(self, name: str, change: Any) -> None:
        """Delete kube-system/``name`` and create it again with ``change(command)``
        applied (a pod's command is immutable, as a static pod's manifest edit is)."""
        path = f"/api/v1/namespaces/kube-system/pods/{name}"
        pod = await self.get(path)
        fresh = copy.deepcopy(pod)
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation"):
            fresh["metadata"].pop(key, None)
        container = fresh["spec"]["containers"][0]
        container["command"] = change(list(container["command"]))
        await self.delete(path)
        await self.create("/api/v1/namespaces/kube-system/pods", fresh)

    async def static_pods(self, component: str) -> list[str]:
        listed = await self.get(
            f"/api/v1/namespaces/kube-system/pods?labelSelector=component%3D{component}"
        )
        return [item["metadata"]["name"] for item in listed["items"]]


async def make_healthy(admin: Admin) -> None:
    """Every checklist item the cluster can satisfy, satisfied."""
    for name in await admin.static_pods("kube-apiserver"):
        await admin.recreate_static_pod(name, lambda cmd: [*cmd, EVENTS_OVERRIDE])
    for manifest in ("policy.yaml", "binding.yaml", "flowcontrol.yaml"):
        await admin.apply_manifest(GUARD / manifest)
    for namespace, name in CROWDED:
        # Generated only when the cluster has room for them.
        await admin.delete(
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}", missing_ok=True
        )


async def write_counts(server: ApiServer, session: aiohttp.ClientSession) -> tuple[int, float]:
    """(store revision, mutating requests served): both unchanged by a read-only run."""
    async with session.get("/metrics") as response:
        text = await response.text()
    families = promtext.parse(text, frozenset({"apiserver_request_total"}))
    mutating = sum(
        sample.value
        for sample in families.get("apiserver_request_total", ())
        if sample.labels.get("verb") in MUTATING_VERBS
    )
    return server.store.resource_version, mutating


def settings_for(
    kubeconfig: Path,
    *,
    etcd: tuple[EtcdClusterConfig, ...] = (),
    controller_managers: tuple[TargetConfig, ...] = (),
    **changes: Any,
) -> Settings:
    return Settings(
        **{
            "kubernetes": dataclasses.replace(
                Settings().kubernetes, kubeconfig_path=str(kubeconfig)
            ),
            "state": ClusterStateConfig(),
            "etcd": etcd,
            "controller_managers": controller_managers,
            "alerts_dir": REPO / "alerts",
            "runbooks_dir": REPO / "docs" / "runbooks",
            "congestion_window_seconds": 1.0,
            **changes,
        }
    )


async def run(settings: Settings, *checks: str, **options: Any) -> Report:
    return await run_selfcheck(settings, checks=select_checks(list(checks)), **options)


def check(report: Report, check_id: str) -> Check:
    return next(c for c in report.checks if c.id == check_id)


def not_passing(report: Report) -> dict[str, str]:
    return {
        c.id: f"{c.status.value}: {c.summary}"
        for c in report.checks
        if c.status not in (Status.PASS, Status.SKIP)
    }


@dataclass
class Cluster:
    server: ApiServer
    kubeconfig: Path
    admin: Admin
    session: aiohttp.ClientSession

    def settings(self, **changes: Any) -> Settings:
        kcm = self.server.components.get("kube-controller-manager")
        if kcm is not None:
            changes.setdefault("controller_managers", (TargetConfig(name="kcm-0", url=kcm.url),))
        return settings_for(self.kubeconfig, **changes)


def small(
    nodes: int = 9,
    pods_per_node: int = 5,
    users: Mapping[str, str] | None = None,
    **changes: Any,
) -> SimulatorSettings:
    """A small cluster (1 control-plane node, 3 zones); no kubelets or controllers
    unless ``changes`` say so."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "kubelets": False,
        "controllers": False,
        "scenario": ScenarioSettings(
            nodes=nodes,
            zones=3,
            pods_per_node=pods_per_node,
            control_plane_nodes=1,
            seed=3,
            users=dict(users or {}),
        ),
    }
    return SimulatorSettings(**{**values, **changes})


async def start_cluster(
    settings: SimulatorSettings, directory: Path, *, components: bool = True
) -> tuple[ApiServer, Path]:
    """A started simulator and a kubeconfig for it. ``components``: the scheduler and
    controller-manager endpoints (they renew their leader Leases: writes)."""
    server = build_server(settings)
    if components:
        attach_control_plane(server)
    await server.start()
    path = directory / "kubeconfig"
    write_kubeconfig(path, server.url, server.admin_token)
    return server, path


# --- breaking one item at a time --------------------------------------------------------


async def strategic_patch(admin: Admin, path: str, body: Mapping[str, Any]) -> Any:
    return await admin.request(
        "PATCH", path, body, content_type="application/strategic-merge-patch+json"
    )


async def nodes_by_zone(admin: Admin, *, control_plane: bool = False) -> dict[str, list[str]]:
    """Worker nodes (and with ``control_plane``, control-plane nodes) by zone, by name."""
    listed = await admin.get("/api/v1/nodes")
    zones: dict[str, list[str]] = {}
    for node in listed["items"]:
        labels = node["metadata"]["labels"]
        if "node-role.kubernetes.io/control-plane" in labels and not control_plane:
            continue
        zones.setdefault(labels["topology.kubernetes.io/zone"], []).append(node["metadata"]["name"])
    return {zone: sorted(names) for zone, names in sorted(zones.items())}


async def control_plane_node(admin: Admin) -> str:
    listed = await admin.get("/api/v1/nodes?labelSelector=node-role.kubernetes.io%2Fcontrol-plane")
    name: str = listed["items"][0]["metadata"]["name"]
    return name


async def create_pod(
    admin: Admin, namespace: str, name: str, node: str, *, owner: Mapping[str, Any] | None = None
) -> None:
    """A running, ready pod on ``node`` (status written through the status subresource,
    as the kubelet would)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {"app": name}}
    if owner is not None:
        meta["ownerReferences"] = [owner]
        meta["labels"] = {"app": owner["name"]}
    await admin.create(
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
        },
    )
    await strategic_patch(
        admin,
        f"/api/v1/namespaces/{namespace}/pods/{name}/status",
        {
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
    )


async def create_deployment(
    admin: Admin, namespace: str, name: str, nodes: list[str], *, max_skew: int | None = None
) -> None:
    """A Deployment with its ReplicaSet and one ready pod on each of ``nodes``;
    ``max_skew``: a zone topologySpreadConstraint."""
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    if max_skew is not None:
        template["spec"]["topologySpreadConstraints"] = [
            {
                "maxSkew": max_skew,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": name}},
            }
        ]
    spec = {
        "replicas": len(nodes),
        "selector": {"matchLabels": {"app": name}},
        "template": template,
    }
    deployment = await admin.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec},
    )
    rs_name = f"{name}-5d8f7c"
    replicaset = await admin.create(
        f"/apis/apps/v1/namespaces/{namespace}/replicasets",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "uid": deployment["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": spec,
        },
    )
    owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": rs_name,
        "uid": replicaset["metadata"]["uid"],
        "controller": True,
    }
    for index, node in enumerate(nodes):
        await create_pod(admin, namespace, f"{rs_name}-{index}", node, owner=owner)


async def set_pods_ready(admin: Admin, namespace: str, selector: str, nodes: set[str]) -> int:
    """Mark the pods of ``selector`` on ``nodes`` not ready; how many."""
    listed = await admin.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
    changed = 0
    for pod in listed["items"]:
        if pod["spec"].get("nodeName") in nodes:
            await strategic_patch(
                admin,
                f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/status",
                {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            )
            changed += 1
    return changed


async def write_pause(admin: Admin, *, expires_in: float, reason: str = "storm") -> None:
    """The eviction guard's parameter ConfigMap with a pause in force."""
    from kubeballast.core.evictionguard import PauseState

    now = time.time()
    state = PauseState(
        paused=True,
        reason=reason,
        started_at=now - 60,
        expires_at=now + expires_in,
        max_until=now + 3600,
        owner="kube-ballast-receiver-0",
    )
    await admin.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-ballast"}},
        ok=(201, 409),
    )
    await admin.create(
        "/api/v1/namespaces/kube-ballast/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "eviction-guard"},
            "data": state.to_data(),
        },
    )
