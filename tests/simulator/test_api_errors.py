"""Failures as the real apiserver reports them: Status bodies, codes and headers that
clients use to decide whether to retry, re-read, re-list or give up."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from kubeballast.simulator.server import ApiServer

NS = "team-b"


def configmap(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {"a": "b"}}


async def status_of(resp: aiohttp.ClientResponse, code: int) -> dict[str, Any]:
    assert resp.status == code
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == code
    return body


async def test_not_found(api: Any, admin_session: aiohttp.ClientSession) -> None:
    with pytest.raises(ApiException) as err:
        await k8s.CoreV1Api(api).read_namespaced_config_map("missing", NS)
    assert err.value.status == 404
    async with admin_session.get(f"/api/v1/namespaces/{NS}/configmaps/missing") as resp:
        body = await status_of(resp, 404)
    assert body["reason"] == "NotFound"
    assert body["message"] == 'configmaps "missing" not found'
    assert body["details"] == {"name": "missing", "kind": "configmaps"}
    async with admin_session.get("/apis/apps/v1/namespaces/x/deployments/missing") as resp:
        body = await status_of(resp, 404)
    assert body["details"]["group"] == "apps"


async def test_unknown_paths_are_404_status(admin_session: aiohttp.ClientSession) -> None:
    for path in (
        "/api/v1/widgets",
        "/apis/apps/v2/deployments",
        "/apis/nope.example.com/v1/things",
        "/api/v1/pods/some-pod",  # a namespaced kind without its namespace
        "/api/v1/namespaces/default/nodes/node-0000",  # a cluster kind in a namespace
        "/api/v1/namespaces/default/pods/p/exec",  # no such subresource here
        "/api/v1/namespaces/default/configmaps/c/status",  # configmaps have no status
    ):
        async with admin_session.get(path) as resp:
            body = await status_of(resp, 404)
        assert body["reason"] == "NotFound", path
        assert body["message"] == "the server could not find the requested resource"


async def test_already_exists(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    await core.create_namespaced_config_map(NS, configmap("twice"))
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_config_map(NS, configmap("twice"))
    assert err.value.status == 409
    assert '"reason":"AlreadyExists"' in err.value.body
    assert 'configmaps \\"twice\\" already exists' in err.value.body


async def test_conflict_on_a_stale_resource_version(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    first = await core.create_namespaced_config_map(NS, configmap("contended"))
    await core.patch_namespaced_config_map("contended", NS, {"data": {"a": "changed"}})
    stale = api.sanitize_for_serialization(first)
    stale["data"] = {"a": "mine"}
    with pytest.raises(ApiException) as err:
        await core.replace_namespaced_config_map("contended", NS, stale)
    assert err.value.status == 409
    assert '"reason":"Conflict"' in err.value.body
    assert "the object has been modified" in err.value.body


async def test_invalid_name_is_422(admin_session: aiohttp.ClientSession) -> None:
    async with admin_session.post(
        f"/api/v1/namespaces/{NS}/configmaps", json=configmap("Not_A_Valid_Name")
    ) as resp:
        body = await status_of(resp, 422)
    assert body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"


async def test_bad_selectors_are_400(api: Any, admin_session: aiohttp.ClientSession) -> None:
    with pytest.raises(ApiException) as err:
        await k8s.CoreV1Api(api).list_pod_for_all_namespaces(label_selector="app in (web")
    assert err.value.status == 400
    async with admin_session.get("/api/v1/pods", params={"fieldSelector": "spec.foo=bar"}) as resp:
        body = await status_of(resp, 400)
    assert body["reason"] == "BadRequest"
    assert "spec.foo" in body["message"]
    async with admin_session.get("/api/v1/pods", params={"limit": "ten"}) as resp:
        await status_of(resp, 400)
    async with admin_session.get("/api/v1/pods", params={"watch": "maybe"}) as resp:
        await status_of(resp, 400)


async def test_invalid_list_options_are_422(admin_session: aiohttp.ClientSession) -> None:
    async with admin_session.get("/api/v1/pods", params={"resourceVersionMatch": "Exact"}) as resp:
        body = await status_of(resp, 422)
    assert body["details"]["kind"] == "ListOptions"
    assert body["details"]["group"] == "meta.k8s.io"
    assert body["details"]["causes"][0]["reason"] == "FieldValueForbidden"
    assert "resourceVersionMatch is forbidden unless resourceVersion is provided" in body["message"]
    async with admin_session.get(
        "/api/v1/pods", params={"watch": "true", "sendInitialEvents": "true"}
    ) as resp:
        body = await status_of(resp, 422)
    assert "sendInitialEvents requires setting resourceVersionMatch" in body["message"]
    async with admin_session.get("/api/v1/pods", params={"sendInitialEvents": "true"}) as resp:
        body = await status_of(resp, 422)
    assert "sendInitialEvents is forbidden for list" in body["message"]


async def test_stale_continue_token_is_410(api: Any, admin_session: aiohttp.ClientSession) -> None:
    core = k8s.CoreV1Api(api)
    first = await core.list_pod_for_all_namespaces(limit=3)
    token = first.metadata._continue
    assert token
    await core.create_namespaced_config_map(NS, configmap("moves-the-revision"))
    async with admin_session.post("/_sim/compact") as resp:
        assert resp.status == 200
    with pytest.raises(ApiException) as err:
        await core.list_pod_for_all_namespaces(limit=3, _continue=token)
    assert err.value.status == 410
    assert '"reason":"Expired"' in err.value.body
    async with admin_session.get("/api/v1/pods", params={"continue": "garbage!"}) as resp:
        await status_of(resp, 400)


async def test_too_large_resource_version(admin_session: aiohttp.ClientSession) -> None:
    async with admin_session.get("/api/v1/pods", params={"resourceVersion": "999999999"}) as resp:
        body = await status_of(resp, 504)
    assert body["reason"] == "Timeout"


async def test_unauthenticated(apiserver: ApiServer) -> None:
    async with aiohttp.ClientSession(base_url=apiserver.url) as anonymous:
        async with anonymous.get("/api/v1/pods") as resp:
            body = await status_of(resp, 401)
        assert body == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
        # Public endpoints need no token ...
        for path in ("/livez", "/readyz", "/healthz", "/version"):
            async with anonymous.get(path) as resp:
                assert resp.status == 200, path
        # ... but a wrong one is still rejected, and so is /metrics without one.
        async with anonymous.get("/livez", headers={"Authorization": "Bearer nope"}) as resp:
            await status_of(resp, 401)
        async with anonymous.get("/metrics") as resp:
            await status_of(resp, 401)
        async with anonymous.get("/api/v1/nodes", headers={"Authorization": "Basic eDp5"}) as resp:
            await status_of(resp, 401)


async def test_scenario_users_authenticate(user_session: aiohttp.ClientSession) -> None:
    async with user_session.get("/api/v1/namespaces/team-a/pods") as resp:
        assert resp.status == 200
    # No authorization: any authenticated user may write (AlwaysAllow).
    async with user_session.post(f"/api/v1/namespaces/{NS}/configmaps", json=configmap("sa")) as r:
        assert r.status == 201


async def test_control_api_is_admin_only(
    user_session: aiohttp.ClientSession, apiserver: ApiServer
) -> None:
    async with user_session.get("/_sim/state") as resp:
        body = await status_of(resp, 403)
    assert body["reason"] == "Forbidden"
    async with (
        aiohttp.ClientSession(base_url=apiserver.url) as anonymous,
        anonymous.post("/_sim/compact") as resp,
    ):
        await status_of(resp, 401)


async def test_unsupported_patch_type_is_415(admin_session: aiohttp.ClientSession) -> None:
    async with admin_session.patch(
        "/api/v1/namespaces/default",
        data=b'{"metadata":{"labels":{"a":"b"}}}',
        headers={"Content-Type": "application/json"},
    ) as resp:
        body = await status_of(resp, 415)
    assert body["reason"] == "UnsupportedMediaType"


async def test_wrong_method_is_405(admin_session: aiohttp.ClientSession) -> None:
    async with admin_session.put("/api/v1/namespaces/default/configmaps", json={}) as resp:
        await status_of(resp, 405)
    async with admin_session.post("/api/v1/nodes/node-0000", json={}) as resp:
        await status_of(resp, 405)
    async with admin_session.delete("/api/v1/namespaces") as resp:
        await status_of(resp, 405)


async def test_malformed_body_is_400(admin_session: aiohttp.ClientSession) -> None:
    async with admin_session.post(
        f"/api/v1/namespaces/{NS}/configmaps",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    ) as resp:
        await status_of(resp, 400)
    async with admin_session.post(f"/api/v1/namespaces/{NS}/configmaps", json=[1, 2]) as resp:
        await status_of(resp, 400)


async def test_invalid_dry_run_value_is_422(admin_session: aiohttp.ClientSession) -> None:
    async with admin_session.post(
        f"/api/v1/namespaces/{NS}/configmaps",
        params={"dryRun": "Some"},
        json=configmap("dry"),
    ) as resp:
        body = await status_of(resp, 422)
    assert body["details"]["kind"] == "CreateOptions"


# -- injected faults -----------------------------------------------------------------------


async def set_faults(session: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post("/_sim/faults", json=body) as resp:
        assert resp.status == 200, await resp.text()
        described: dict[str, Any] = await resp.json()
    return described


async def test_congestion_answers_429_with_retry_after(
    api: Any, admin_session: aiohttp.ClientSession, user_session: aiohttp.ClientSession
) -> None:
    described = await set_faults(
        admin_session, {"congestion": {"reject_fraction": 1.0, "retry_after_seconds": 2}}
    )
    assert described["congestion"]["reject_fraction"] == 1.0

    async with user_session.get("/api/v1/namespaces/team-a/pods") as resp:
        body = await status_of(resp, 429)
        assert resp.headers["Retry-After"] == "2"
    assert body["reason"] == "TooManyRequests"
    assert body["details"] == {"retryAfterSeconds": 2}

    # system:masters is exempt from APF: the admin client still gets through.
    pods = await k8s.CoreV1Api(api).list_namespaced_pod("team-a")
    assert pods.items

    async with admin_session.get("/metrics") as resp:
        text = await resp.text()
    assert "apiserver_flowcontrol_rejected_requests_total{" in text
    assert 'code="429"' in text

    await set_faults(admin_session, {"clear": True})
    async with user_session.get("/api/v1/namespaces/team-a/pods") as resp:
        assert resp.status == 200


async def test_error_burst_hits_everyone_and_the_control_api_still_works(
    api: Any, admin_session: aiohttp.ClientSession
) -> None:
    await set_faults(
        admin_session, {"error_burst": {"code": 503, "fraction": 1.0, "duration_seconds": 60}}
    )
    with pytest.raises(ApiException) as err:
        await k8s.CoreV1Api(api).list_node()
    assert err.value.status == 503
    async with admin_session.get("/_sim/state") as resp:
        state = await resp.json()
    assert state["faults"]["error_burst"]["code"] == 503
    await set_faults(admin_session, {"clear": True})
    assert (await k8s.CoreV1Api(api).list_node()).items


async def test_a_partitioned_kubelet_cannot_connect(
    apiserver: ApiServer, admin_session: aiohttp.ClientSession
) -> None:
    async with admin_session.get("/api/v1/nodes/node-0000") as resp:
        zone = (await resp.json())["metadata"]["labels"]["topology.kubernetes.io/zone"]
    await set_faults(admin_session, {"partition": {"zones": [zone]}})
    async with aiohttp.ClientSession(
        base_url=apiserver.url, headers={"Authorization": "Bearer token-node-0"}
    ) as kubelet:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with kubelet.get(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-0000"
            ):
                pass
        await set_faults(admin_session, {"clear": True})
        async with kubelet.get(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-0000"
        ) as resp:
            assert resp.status == 200


async def test_invalid_faults_are_400(admin_session: aiohttp.ClientSession) -> None:
    for body in (
        {"congestion": {"reject_fraction": 2}},
        {"error_burst": {"code": 418}},
        {"partition": {"zones": ["zone-nowhere"]}},
        {"volcano": {}},
        {"congestion": {"bogus": 1}},
    ):
        async with admin_session.post("/_sim/faults", json=body) as resp:
            assert resp.status == 400, body


async def test_a_too_large_body_is_413(admin_session: aiohttp.ClientSession) -> None:
    big = configmap("big")
    big["data"] = {"blob": "x" * (3 * 1024 * 1024 + 1)}
    async with admin_session.post(
        f"/api/v1/namespaces/{NS}/configmaps",
        data=io.BytesIO(json.dumps(big).encode()),
        headers={"Content-Type": "application/json"},
    ) as resp:
        body = await status_of(resp, 413)
    assert body["reason"] == "RequestEntityTooLarge"


# -- admission through the HTTP layer ----------------------------------------------------


async def install_policy(api: Any, actions: list[str]) -> None:
    admission = k8s.AdmissionregistrationV1Api(api)
    await admission.create_validating_admission_policy(
        {
            "metadata": {"name": "no-forbidden-names"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "object.metadata.name != 'forbidden'",
                        "message": "that name is forbidden",
                    }
                ],
            },
        }
    )
    await admission.create_validating_admission_policy_binding(
        {
            "metadata": {"name": "no-forbidden-names"},
            "spec": {"policyName": "no-forbidden-names", "validationActions": actions},
        }
    )


async def test_a_denying_policy_answers_with_its_status(
    api: Any, admin_session: aiohttp.ClientSession
) -> None:
    await install_policy(api, ["Deny"])
    async with admin_session.post(
        f"/api/v1/namespaces/{NS}/configmaps", json=configmap("forbidden")
    ) as resp:
        # A validation without a reason denies as Invalid (422), as the real plugin does.
        body = await status_of(resp, 422)
    assert "ValidatingAdmissionPolicy 'no-forbidden-names'" in body["message"]
    assert "that name is forbidden" in body["message"]
    async with admin_session.post(
        f"/api/v1/namespaces/{NS}/configmaps", json=configmap("allowed")
    ) as resp:
        assert resp.status == 201


async def test_a_warning_policy_adds_a_warning_header(
    api: Any, admin_session: aiohttp.ClientSession
) -> None:
    await install_policy(api, ["Warn"])
    async with admin_session.post(
        f"/api/v1/namespaces/{NS}/configmaps", json=configmap("forbidden")
    ) as resp:
        assert resp.status == 201
        warnings = resp.headers.getall("Warning", [])
    assert len(warnings) == 1
    assert warnings[0].startswith('299 - "')
    assert "that name is forbidden" in warnings[0]


async def test_congestion_latency_delays_requests(
    admin_session: aiohttp.ClientSession, user_session: aiohttp.ClientSession
) -> None:
    await set_faults(admin_session, {"congestion": {"latency_seconds": 0.3}})
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with user_session.get("/api/v1/namespaces/team-a/configmaps") as resp:
        assert resp.status == 200
    assert loop.time() - started >= 0.3
    async with admin_session.get("/metrics") as resp:
        text = await resp.text()
    # The wait shows as time in the service account's priority level queue.
    assert (
        'apiserver_flowcontrol_request_wait_duration_seconds_count{execute="true",'
        'flow_schema="service-accounts",priority_level="workload-low"} 1.0'
    ) in text
