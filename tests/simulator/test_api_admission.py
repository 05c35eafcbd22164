"""ValidatingAdmissionPolicy through the API, as the eviction guard will use it.

The policy has the guard's shape: deny pod DELETE by the node controller's identity
while a parameter ConfigMap says paused, fail open when the parameter is missing or an
expression cannot be evaluated. Everything goes through kubernetes-asyncio clients of
two users, the node controller and somebody else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from kubeballast.simulator.kubeconfig import api_client, write_kubeconfig
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

NODE_CONTROLLER = "system:serviceaccount:kube-system:node-controller"
TOKENS = {"token-node-controller": NODE_CONTROLLER, "token-alice": "alice"}
GUARD = "kube-ballast-eviction-guard"
PAUSED_EXPRESSION = (
    "!(request.userInfo.username == '" + NODE_CONTROLLER + "' && params.data.paused == 'true')"
)


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    scenario = ScenarioSettings(
        nodes=3, zones=3, pods_per_node=4, control_plane_nodes=1, users=TOKENS
    )
    sim = build_server(SimulatorSettings(kubelets=False, controllers=False, scenario=scenario))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def client_for(server: ApiServer, token: str, path: Path) -> Any:
    write_kubeconfig(path, server.url, token)
    return await api_client(path)


@pytest.fixture
async def clients(server: ApiServer, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    made = {
        "admin": await client_for(server, server.admin_token, tmp_path / "admin"),
        "node-controller": await client_for(server, "token-node-controller", tmp_path / "nc"),
        "alice": await client_for(server, "token-alice", tmp_path / "alice"),
    }
    try:
        yield made
    finally:
        for c in made.values():
            await c.close()


async def install_guard(admin: Any, expression: str = PAUSED_EXPRESSION) -> None:
    api = k8s.AdmissionregistrationV1Api(admin)
    await api.create_validating_admission_policy(
        {
            "metadata": {"name": GUARD},
            "spec": {
                "failurePolicy": "Ignore",
                "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["DELETE"],
                            "resources": ["pods"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": expression,
                        "message": "node eviction is paused by kube-ballast",
                        "reason": "Forbidden",
                    }
                ],
            },
        }
    )
    await api.create_validating_admission_policy_binding(
        {
            "metadata": {"name": GUARD},
            "spec": {
                "policyName": GUARD,
                "validationActions": ["Deny"],
                "paramRef": {
                    "name": GUARD,
                    "namespace": "kube-system",
                    "parameterNotFoundAction": "Allow",
                },
            },
        }
    )


async def pause(admin: Any, paused: bool) -> None:
    await k8s.CoreV1Api(admin).create_namespaced_config_map(
        "kube-system",
        {"metadata": {"name": GUARD}, "data": {"paused": "true" if paused else "false"}},
    )


async def team_pods(admin: Any) -> list[str]:
    pods = await k8s.CoreV1Api(admin).list_namespaced_pod("team-a")
    return [p.metadata.name for p in pods.items]


async def delete_pod(api: Any, name: str) -> Any:
    return await k8s.CoreV1Api(api).delete_namespaced_pod(name, "team-a")


async def test_paused_guard_denies_the_node_controller_only(clients: dict[str, Any]) -> None:
    await install_guard(clients["admin"])
    await pause(clients["admin"], True)
    first, second, *_ = await team_pods(clients["admin"])

    with pytest.raises(ApiException) as denied:
        await delete_pod(clients["node-controller"], first)
    assert denied.value.status == 403
    assert f"ValidatingAdmissionPolicy '{GUARD}' with binding '{GUARD}' denied request" in (
        denied.value.body
    )
    pod = await k8s.CoreV1Api(clients["admin"]).read_namespaced_pod(first, "team-a")
    assert pod.metadata.deletion_timestamp is None

    deleted = await delete_pod(clients["alice"], second)
    assert deleted.metadata.deletion_timestamp is not None


async def test_guard_not_paused_allows_the_node_controller(clients: dict[str, Any]) -> None:
    await install_guard(clients["admin"])
    await pause(clients["admin"], False)
    first, *_ = await team_pods(clients["admin"])
    deleted = await delete_pod(clients["node-controller"], first)
    assert deleted.metadata.deletion_timestamp is not None


async def test_missing_parameter_fails_open(clients: dict[str, Any]) -> None:
    await install_guard(clients["admin"])  # no ConfigMap: parameterNotFoundAction Allow
    first, *_ = await team_pods(clients["admin"])
    deleted = await delete_pod(clients["node-controller"], first)
    assert deleted.metadata.deletion_timestamp is not None


async def test_failing_expression_is_ignored_under_failure_policy_ignore(
    clients: dict[str, Any],
) -> None:
    # params.data.nosuchkey does not exist: evaluation fails, failurePolicy Ignore.
    await install_guard(clients["admin"], "params.data.nosuchkey == 'true'")
    await pause(clients["admin"], True)
    first, *_ = await team_pods(clients["admin"])
    deleted = await delete_pod(clients["node-controller"], first)
    assert deleted.metadata.deletion_timestamp is not None


async def test_failing_expression_denies_under_failure_policy_fail(
    clients: dict[str, Any],
) -> None:
    await install_guard(clients["admin"], "params.data.nosuchkey == 'true'")
    await pause(clients["admin"], True)
    api = k8s.AdmissionregistrationV1Api(clients["admin"])
    await api.patch_validating_admission_policy(GUARD, {"spec": {"failurePolicy": "Fail"}})
    first, *_ = await team_pods(clients["admin"])
    with pytest.raises(ApiException) as denied:
        await delete_pod(clients["node-controller"], first)
    # No reason on an evaluation error: the dispatcher answers Invalid (422).
    assert denied.value.status == 422
    assert "resulted in error" in denied.value.body
    pod = await k8s.CoreV1Api(clients["admin"]).read_namespaced_pod(first, "team-a")
    assert pod.metadata.deletion_timestamp is None
