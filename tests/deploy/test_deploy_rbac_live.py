"""The eviction guard's requests, run with the shipped roles against an RBAC-enforcing
simulator.

tests/simulator/test_sim_rbac_product.py runs the exporter and one ``notify`` cycle of
the receiver under deploy/base/rbac/; the eviction guard's paths are not on that cycle.
Here the rendered overlay's service accounts, roles and bindings and the eviction
guard's policy, binding and FlowSchema go into a simulator with
``authorization="RBAC"``, and the guard's own functions run with the tokens the
manifests bind: the receiver detects the controller-manager's credentials, checks the
installation, writes, reads and ends a pause and takes a NoExecute taint off a node;
the janitor ends an overdue pause. A rule missing from the roles is a 403 that fails
the test; what the roles must keep refusing is asked too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from deploy_manifests import DEPLOY, JANITOR, NAMESPACE, RECEIVER, render, render_overlay
from kubernetes_asyncio import client as k8s

from kubeballast.core import evictionguard as eg
from kubeballast.core.kube import ForbiddenError, kube_call
from kubeballast.remediations import evictionguard as guard
from kubeballast.simulator.kubeconfig import api_client, write_kubeconfig
from kubeballast.simulator.resources import BY_KIND
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
GUARD_KINDS = {
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "FlowSchema",
    "PriorityLevelConfiguration",
}


def _path(doc: dict[str, Any]) -> str:
    group, _, version = doc["apiVersion"].rpartition("/")
    resource = BY_KIND[(group, doc["kind"])]
    root = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if resource.namespaced:
        return f"{root}/namespaces/{doc['metadata']['namespace']}/{resource.plural}"
    return f"{root}/{resource.plural}"


@dataclass
class Cluster:
    server: ApiServer
    admin: Any
    tmp: Path

    async def client_for(self, account: tuple[str, str]) -> Any:
        token = self.server.mint_service_account_token(*account)
        path = self.tmp / f"{account[1]}.kubeconfig"
        write_kubeconfig(path, self.server.url, token)
        return await api_client(path)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    settings = SimulatorSettings(
        kubelets=False,
        controllers=False,
        scenario=ScenarioSettings(nodes=3, zones=3, pods_per_node=1, control_plane_nodes=1),
    )
    server = build_server(settings, authorization="RBAC")
    attach_control_plane(server)
    await server.start()
    admin_kubeconfig = tmp_path / "admin.kubeconfig"
    write_kubeconfig(admin_kubeconfig, server.url, server.admin_token)
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    try:
        admin = await api_client(admin_kubeconfig)
        try:
            await k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": NAMESPACE}})
            docs = [
                d
                for d in render_overlay("self-managed")
                if d["kind"] in RBAC_KINDS
                or (d["kind"] in GUARD_KINDS and "kube-ballast" in d["metadata"]["name"])
            ]
            async with aiohttp.ClientSession(base_url=server.url, headers=headers) as control:
                for doc in docs:
                    async with control.post(_path(doc), json=doc) as response:
                        assert response.status == 201, await response.text()
            yield Cluster(server, admin, tmp_path)
        finally:
            await admin.close()
    finally:
        await server.stop()


async def test_deploy_rbac_live_receiver_eviction_guard(cluster: Cluster) -> None:
    api = await cluster.client_for(RECEIVER)
    try:
        credentials = await eg.detect_service_account_credentials(api)
        assert credentials.holds is not None, credentials.evidence
        installation = await eg.guard_installation(api)
        assert installation.policy_ready, installation.problems
        assert installation.flowschema
        now = time.time()
        assert await eg.read_pause(api) is None
        state = eg.PauseState(
            paused=True,
            reason="test",
            started_at=now,
            expires_at=now + 600,
            max_until=now + 3600,
            owner="test",
        )
        stored = await eg.write_pause(api, state, None)
        renewed = await eg.write_pause(api, state, stored.resource_version)
        assert renewed.state.paused
        ended = await eg.end_pause(api, now, "manual")
        assert ended is not None
        assert ended.end_reason == "manual"

        # The taint-removal path, on a node the node-lifecycle controller tainted.
        [node] = (await k8s.CoreV1Api(cluster.admin).list_node(limit=1)).items
        name = node.metadata.name
        taint = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}
        await k8s.CoreV1Api(cluster.admin).patch_node(name, {"spec": {"taints": [taint]}})
        assert await guard._remove_no_execute_taints(api, name)
        assert await guard._node_ip(api, name)

        # Still refused: what the receiver never does.
        core = k8s.CoreV1Api(api)
        with pytest.raises(ForbiddenError):
            await kube_call("list pods", core.list_pod_for_all_namespaces(limit=1))
        with pytest.raises(ForbiddenError):
            await kube_call("delete node", core.delete_node(name))
        with pytest.raises(ForbiddenError):
            await kube_call("list nodes", core.list_node(limit=1))
    finally:
        await api.close()


async def test_deploy_rbac_live_janitor_ends_an_overdue_pause(cluster: Cluster) -> None:
    receiver = await cluster.client_for(RECEIVER)
    janitor = await cluster.client_for(JANITOR)
    try:
        # Nothing to do, and no right to create the ConfigMap: the janitor only reads.
        assert await eg.janitor(janitor, time.time()) is None
        now = time.time()
        overdue = eg.PauseState(
            paused=True,
            reason="test",
            started_at=now - 3600,
            expires_at=now - 60,
            max_until=now + 3600,
            owner="test",
        )
        await eg.write_pause(receiver, overdue, None)
        ended = await eg.janitor(janitor, now)
        assert ended is not None
        assert not ended.paused
        stored = await eg.read_pause(receiver)
        assert stored is not None
        assert not stored.state.paused
        with pytest.raises(ForbiddenError):
            await kube_call(
                "read configmap",
                k8s.CoreV1Api(janitor).read_namespaced_config_map(
                    "kube-ballast-kill-switch", NAMESPACE
                ),
            )
    finally:
        await receiver.close()
        await janitor.close()


def test_deploy_rbac_live_uses_the_shipped_guard_objects() -> None:
    """The fixture applies the eviction guard's objects as the overlay renders them."""
    guard_docs = {(d["kind"], d["metadata"]["name"]) for d in render(DEPLOY / "eviction-guard")}
    rendered = {
        (d["kind"], d["metadata"]["name"])
        for d in render_overlay("self-managed")
        if d["kind"] in GUARD_KINDS
    }
    assert {k for k in guard_docs if k[0] in GUARD_KINDS} <= rendered
