"""Every overlay renders with kubectl's kustomize and validates against Kubernetes' schemas.

What a user runs is ``kubectl apply -k deploy/overlays/<name>``; the same kustomize
(kubectl's, v5 in kubectl 1.32) renders it here, and every object it yields is checked,
offline, against the OpenAPI schemas of the Kubernetes versions kube-ballast supports
(kubernetes-validate ships them, strict: an unknown or misspelt field is an error).
The Prometheus Operator's kinds are custom resources Kubernetes has no schema for;
schemas/ holds small strict schemas of the fields their CRDs define that we use. Any
other kind without a schema fails: the skip list is exactly those CRD kinds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from deploy_manifests import DEPLOY, NAMESPACE, OVERLAYS, find, render, render_overlay

SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS / "prometheusrule.json",
}
OLDEST_SUPPORTED = "1.30.0"
"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) is GA from 1.30."""
KUBERNETES_VERSIONS = (OLDEST_SUPPORTED, kubernetes_validate.latest_version())
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "FlowSchema",
    "PriorityLevelConfiguration",
}


def validate(doc: dict[str, Any], version: str) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        schema = json.loads(CRD_SCHEMAS[key].read_text())
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
        return
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_deploy_overlay_validates_against_kubernetes_schemas(overlay: str, version: str) -> None:
    docs = render_overlay(overlay)
    assert len(docs) > 20
    for doc in docs:
        where = f"{overlay}: {doc['kind']} {doc['metadata']['name']} (Kubernetes {version})"
        try:
            validate(doc, version)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: no schema (only {sorted(CRD_SCHEMAS)} may be CRDs)")
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            pytest.fail(f"{where}: {error}")


def test_deploy_base_renders_on_its_own() -> None:
    docs = render(DEPLOY / "base")
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule", "ClusterRole"} <= kinds


def test_deploy_validation_is_strict() -> None:
    """A misspelt field fails (the check above is not a formality), for built-in kinds
    and for our CRD schemas alike."""
    [deployment] = find(render_overlay("managed"), "Deployment", "kube-ballast-exporter")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, OLDEST_SUPPORTED)
    [monitor] = find(render_overlay("managed"), "ServiceMonitor", "kube-ballast-exporter")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, OLDEST_SUPPORTED)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_everything_namespaced_is_in_its_namespace(overlay: str) -> None:
    """Namespaced objects all have a namespace (nothing lands in whatever namespace
    kubectl's context points at): kube-ballast, except the Roles that must live where
    the objects they grant are."""
    allowed_elsewhere = {("Role", "kube-system"), ("Role", "kube-node-lease")}
    allowed_elsewhere |= {("RoleBinding", ns) for _, ns in allowed_elsewhere}
    for doc in render_overlay(overlay):
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] in CLUSTER_SCOPED:
            assert namespace is None, doc["metadata"]
            continue
        assert namespace is not None, f"{doc['kind']} {doc['metadata']['name']}"
        if namespace != NAMESPACE:
            assert (doc["kind"], namespace) in allowed_elsewhere, doc["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_overlay_includes_every_shared_manifest_set(overlay: str) -> None:
    """deploy/<dir>/ with a kustomization.yaml (alert rules, dashboards, the eviction
    guard, APF) is part of every overlay: a set added there is not silently left out
    (add it to deploy/base/shared/kustomization.yaml)."""
    docs = render_overlay(overlay)
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for folder in sorted(DEPLOY.iterdir()):
        if folder.name in ("base", "overlays") or not (folder / "kustomization.yaml").exists():
            continue
        for doc in render(folder):
            assert (doc["kind"], doc["metadata"]["name"]) in rendered, f"{folder.name}: {doc}"


def test_deploy_overlays_carry_the_whole_product() -> None:
    for overlay in OVERLAYS:
        docs = render_overlay(overlay)
        kinds = {d["kind"] for d in docs}
        assert {
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "FlowSchema",
            "PrometheusRule",
            "ServiceMonitor",
            "PodDisruptionBudget",
        } <= kinds, overlay
        dashboards = [
            d
            for d in find(docs, "ConfigMap")
            if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        ]
        assert dashboards, overlay
        assert {d["metadata"]["name"] for d in find(docs, "CronJob")} >= {
            "kube-ballast-eviction-guard-janitor"
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_every_object_is_labelled_part_of_kube_ballast(overlay: str) -> None:
    """`kubectl apply --prune -l app.kubernetes.io/part-of=kube-ballast` (docs/deploy.md,
    upgrades) sees every object, those of the etcd component included."""
    for doc in render_overlay(overlay):
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "kube-ballast", (
            f"{doc['kind']} {doc['metadata']['name']}"
        )
