"""The exporter's APF manifest (deploy/flowcontrol/exporter.yaml) keeps it out of the way.

What is checked here is the manifest itself, against the suggested objects
(kubeballast.simulator.apf mirrors Kubernetes' bootstrap defaults): the exporter's
requests land in a Limited level of its own that queues, its FlowSchema matches after
every system schema and before the ``service-accounts`` one that would otherwise take it,
and the simulated apiserver accepts (validates) both objects as a real one would be asked
to (kubernetes-asyncio, v1). The simulator classifies with the objects stored, so once
created they apply to the exporter's requests (see
tests/simulator/test_sim_apf_stored_flowschemas.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s

from kubeballast.simulator import apf
from kubeballast.simulator.kubeconfig import api_client, write_kubeconfig
from kubeballast.simulator.server import ApiServer, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "flowcontrol" / "exporter.yaml"
EXPORTER_SA = ("kube-ballast", "kube-ballast-exporter")


def manifest() -> dict[str, dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert sorted(by_kind) == ["FlowSchema", "PriorityLevelConfiguration"]
    assert {doc["apiVersion"] for doc in docs} == {apf.API_VERSION}
    return by_kind


def schema(name: str) -> apf.FlowSchemaSpec:
    return next(s for s in apf.FLOW_SCHEMAS if s.name == name)


def test_state_flowschema_own_limited_level_that_queues() -> None:
    level = manifest()["PriorityLevelConfiguration"]
    flow = manifest()["FlowSchema"]
    name = level["metadata"]["name"]
    assert flow["spec"]["priorityLevelConfiguration"]["name"] == name
    assert name not in {p.name for p in apf.PRIORITY_LEVELS}
    spec = level["spec"]
    assert spec["type"] == "Limited"
    limited = spec["limited"]
    # Small next to the level heartbeats use, and it never borrows their seats.
    node_high = next(p for p in apf.PRIORITY_LEVELS if p.name == apf.NODE_HIGH)
    assert 0 < limited["nominalConcurrencyShares"] < node_high.nominal_concurrency_shares
    assert limited["borrowingLimitPercent"] == 0
    assert limited["limitResponse"]["type"] == "Queue"
    assert limited["limitResponse"]["queuing"]["queueLengthLimit"] > 0


def test_state_flowschema_matches_the_exporter_after_the_system_schemas() -> None:
    spec = manifest()["FlowSchema"]["spec"]
    precedence = spec["matchingPrecedence"]
    assert precedence > schema("system-node-high").matching_precedence
    assert precedence > schema("system-leader-election").matching_precedence
    assert precedence > schema("kube-system-service-accounts").matching_precedence
    # First match wins: it must come before the schema every service account matches.
    assert precedence < schema("service-accounts").matching_precedence
    subjects = [s for rule in spec["rules"] for s in rule["subjects"]]
    assert subjects == [
        {
            "kind": "ServiceAccount",
            "serviceAccount": {"namespace": EXPORTER_SA[0], "name": EXPORTER_SA[1]},
        }
    ]
    verbs = {v for rule in spec["rules"] for r in rule["resourceRules"] for v in r["verbs"]}
    assert verbs == {"get", "list", "watch"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Any]:
    scenario = ScenarioSettings(nodes=2, zones=1, pods_per_node=0, seed=3)
    server: ApiServer = build_server(
        SimulatorSettings(host="127.0.0.1", port=0, kubelets=False, scenario=scenario)
    )
    await server.start()
    try:
        path = tmp_path / "kubeconfig"
        write_kubeconfig(path, server.url, server.admin_token)
        client = await api_client(path)
        try:
            yield client
        finally:
            await client.close()
    finally:
        await server.stop()


async def test_state_flowschema_accepted_by_the_apiserver(api: Any) -> None:
    objects = manifest()
    flowcontrol = k8s.FlowcontrolApiserverV1Api(api)
    level = await flowcontrol.create_priority_level_configuration(
        body=objects["PriorityLevelConfiguration"]
    )
    flow = await flowcontrol.create_flow_schema(body=objects["FlowSchema"])
    # Read back from the store: what was accepted is what the manifest says.
    level = await flowcontrol.read_priority_level_configuration(level.metadata.name)
    flow = await flowcontrol.read_flow_schema(flow.metadata.name)
    assert level.spec.type == "Limited"
    assert (
        level.spec.limited.nominal_concurrency_shares
        == (objects["PriorityLevelConfiguration"]["spec"]["limited"]["nominalConcurrencyShares"])
    )
    assert flow.spec.priority_level_configuration.name == level.metadata.name
    assert flow.spec.matching_precedence == objects["FlowSchema"]["spec"]["matchingPrecedence"]
    sa = flow.spec.rules[0].subjects[0].service_account
    assert (sa.namespace, sa.name) == EXPORTER_SA
    names = {f.metadata.name for f in (await flowcontrol.list_flow_schema()).items}
    assert {"kube-ballast-exporter", "service-accounts", "system-node-high"} <= names
