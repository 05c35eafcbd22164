"""The RBAC in deploy/base/rbac/ grants what the code asks for, and nothing broad.

Least privilege is only worth something if it is exact: a missing permission is an
outage found in production, a wildcard is a hole. These tests read the rendered roles
of every overlay with an evaluator that follows the Kubernetes authorizer
(deploy_manifests.Rbac) and ask it the requests the code makes, taking names from the
code itself (the informers' resources, the lease namespaces, the receiver's state
names) so that a change there fails here. The RBAC integration tests run the real
exporter and receiver against a simulator that enforces these same files.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from deploy_manifests import (
    DEPLOY,
    EXPORTER,
    JANITOR,
    NAMESPACE,
    OVERLAYS,
    RECEIVER,
    Rbac,
    find,
    load_yaml_docs,
    render_overlay,
)

from kubeballast.core.config import KubernetesAccessConfig, RemediationsConfig
from kubeballast.core.kube import KubeClientProvider
from kubeballast.exporter import apiserver, clusterstate, components

RBAC_FILES = ("exporter.yaml", "receiver.yaml", "janitor.yaml")
KNOWN_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
EVICTION_GUARD = "eviction-guard"
POLICY = "kube-ballast-eviction-guard"
RECEIVER_FLOWSCHEMA = "kube-ballast-receiver"


@pytest.fixture(scope="module", params=OVERLAYS)
def rbac(request: pytest.FixtureRequest) -> Rbac:
    return Rbac(render_overlay(request.param))


def rbac_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Role", "ClusterRole")]


# --- shape ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RBAC_FILES)
def test_deploy_rbac_files_hold_roles_and_their_bindings(name: str) -> None:
    docs = load_yaml_docs(DEPLOY / "base" / "rbac" / name)
    kinds = {d["kind"] for d in docs}
    assert kinds <= {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}, kinds
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs}
    for binding in docs:
        if not binding["kind"].endswith("Binding"):
            continue
        ref = binding["roleRef"]
        namespace = None if ref["kind"] == "ClusterRole" else binding["metadata"]["namespace"]
        assert (ref["kind"], namespace, ref["name"]) in roles, f"{name}: {ref} not in this file"
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert subject["namespace"] == NAMESPACE


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_rbac_no_wildcards_and_only_known_verbs(overlay: str) -> None:
    docs = render_overlay(overlay)
    roles = rbac_objects(docs)
    assert roles
    for role in roles:
        where = f"{role['kind']} {role['metadata']['name']}"
        assert "aggregationRule" not in role, where
        for rule in role["rules"]:
            for key in ("verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"):
                for value in rule.get(key, []):
                    assert "*" not in value, f"{where}: wildcard in {key}: {rule}"
            assert set(rule["verbs"]) <= KNOWN_VERBS, f"{where}: {rule['verbs']}"
            assert ("nonResourceURLs" in rule) != ("resources" in rule), f"{where}: {rule}"
            if "nonResourceURLs" in rule:
                assert role["kind"] == "ClusterRole", where
                assert rule["verbs"] == ["get"], f"{where}: non-resource URLs are read only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_rbac_every_binding_names_a_service_account_that_exists(overlay: str) -> None:
    docs = render_overlay(overlay)
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in find(docs, "ServiceAccount")
    }
    assert {EXPORTER, RECEIVER, JANITOR} <= accounts
    for binding in [*find(docs, "RoleBinding"), *find(docs, "ClusterRoleBinding")]:
        for subject in binding["subjects"]:
            assert (subject["namespace"], subject["name"]) in accounts, subject
    for workload in find(docs, "Deployment"):
        account = workload["spec"]["template"]["spec"]["serviceAccountName"]
        assert (NAMESPACE, account) in accounts


# --- the exporter -------------------------------------------------------------------------


def test_deploy_rbac_exporter_can_run_every_informer(rbac: Rbac) -> None:
    """ClusterState's informers: list (or WatchList) then watch, in their namespace."""
    state = clusterstate.ClusterState(KubeClientProvider(KubernetesAccessConfig()))
    specs = state._specs
    assert {spec.plural for spec in specs} >= {"nodes", "pods", "leases"}
    for spec in specs:
        group = "" if spec.group_version == "v1" else spec.group_version.split("/")[0]
        namespace = spec.namespace or None
        for verb in ("list", "watch"):
            assert rbac.allowed(EXPORTER, verb, group, spec.plural, namespace=namespace), (
                f"{verb} {spec.path}"
            )
    assert clusterstate.NODE_LEASE_NAMESPACE == "kube-node-lease"
    # Leases are read in kube-node-lease only, not across the cluster.
    assert not rbac.allowed(EXPORTER, "list", "coordination.k8s.io", "leases")


def test_deploy_rbac_exporter_network_objects_and_components(rbac: Rbac) -> None:
    # exporter/network.py: DaemonSets and nodes across the cluster, pods per namespace.
    assert rbac.allowed(EXPORTER, "list", "apps", "daemonsets")
    assert rbac.allowed(EXPORTER, "list", "", "nodes")
    assert rbac.allowed(EXPORTER, "list", "", "pods", namespace="calico-system")
    # exporter/objects.py: every ConfigMap's size.
    assert rbac.allowed(EXPORTER, "list", "", "configmaps")
    # exporter/components.py: the leader Leases, by name.
    for component in typing.get_args(components.ComponentName):
        assert rbac.allowed(
            EXPORTER,
            "get",
            "coordination.k8s.io",
            "leases",
            namespace=components.LEASE_NAMESPACE,
            name=component,
        ), component
    assert not rbac.allowed(
        EXPORTER, "get", "coordination.k8s.io", "leases", namespace="kube-system", name="other"
    )
    # The apiservers' (and components') health and metrics endpoints.
    for endpoint in apiserver.ENDPOINTS:
        assert rbac.allowed_url(EXPORTER, "get", f"/{endpoint}")
    assert rbac.allowed_url(EXPORTER, "get", "/metrics")


def test_deploy_rbac_exporter_reads_the_eviction_guard(rbac: Rbac) -> None:
    assert rbac.allowed(EXPORTER, "get", "", "configmaps", namespace=NAMESPACE, name=EVICTION_GUARD)
    for resource in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        assert rbac.allowed(EXPORTER, "get", "admissionregistration.k8s.io", resource, name=POLICY)


def test_deploy_rbac_exporter_only_reads(rbac: Rbac) -> None:
    for grant in rbac.rules(EXPORTER):
        assert set(grant.rule["verbs"]) <= {"get", "list", "watch"}, grant
    for namespace in (None, NAMESPACE, "kube-system", "default"):
        assert not rbac.allowed(EXPORTER, "get", "", "secrets", namespace=namespace, name="x")
        assert not rbac.allowed(EXPORTER, "list", "", "secrets", namespace=namespace)
    assert not rbac.allowed(EXPORTER, "get", "", "configmaps", namespace=NAMESPACE, name="x")


# --- the receiver -------------------------------------------------------------------------


def test_deploy_rbac_receiver_keeps_its_state(rbac: Rbac) -> None:
    """The ledger (remediations/ledger.py), the kill switch and the leader Lease
    (remediations/leader.py), under the configuration's default names."""
    defaults = RemediationsConfig()
    assert defaults.namespace == NAMESPACE
    ns = defaults.namespace
    for suffix in ("records", "limits", "active"):
        name = f"{defaults.state_prefix}-{suffix}"
        for verb in ("get", "update"):
            assert rbac.allowed(RECEIVER, verb, "", "configmaps", namespace=ns, name=name), name
    assert rbac.allowed(RECEIVER, "create", "", "configmaps", namespace=ns)
    switch = defaults.kill_switch_configmap
    assert rbac.allowed(RECEIVER, "get", "", "configmaps", namespace=ns, name=switch)
    # Only `kube-ballast remediations pause` (an operator) writes the switch.
    assert not rbac.allowed(RECEIVER, "update", "", "configmaps", namespace=ns, name=switch)
    lease = defaults.leader_election.lease_name
    for verb in ("get", "update"):
        leases = ("coordination.k8s.io", "leases")
        assert rbac.allowed(RECEIVER, verb, *leases, namespace=ns, name=lease)
    assert rbac.allowed(RECEIVER, "create", "coordination.k8s.io", "leases", namespace=ns)
    assert rbac.allowed(RECEIVER, "create", "", "events", namespace=ns)
    # Nothing of anyone else's.
    assert not rbac.allowed(RECEIVER, "update", "", "configmaps", namespace=ns, name="other")
    assert not rbac.allowed(
        RECEIVER, "update", "", "configmaps", namespace="kube-system", name="coredns"
    )
    assert not rbac.allowed(RECEIVER, "create", "", "configmaps", namespace="kube-system")


def test_deploy_rbac_receiver_eviction_guard(rbac: Rbac) -> None:
    for verb in ("get", "update"):
        assert rbac.allowed(
            RECEIVER, verb, "", "configmaps", namespace=NAMESPACE, name=EVICTION_GUARD
        )
    for verb in ("get", "patch"):
        assert rbac.allowed(RECEIVER, verb, "", "nodes", name="node-1")
    for resource in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        assert rbac.allowed(RECEIVER, "get", "admissionregistration.k8s.io", resource, name=POLICY)
    assert rbac.allowed(
        RECEIVER, "get", "flowcontrol.apiserver.k8s.io", "flowschemas", name=RECEIVER_FLOWSCHEMA
    )
    assert rbac.allowed(RECEIVER, "list", "", "pods", namespace="kube-system")
    assert rbac.allowed(
        RECEIVER, "get", "", "serviceaccounts", namespace="kube-system", name="node-controller"
    )


def test_deploy_rbac_receiver_cannot_do_what_it_never_does(rbac: Rbac) -> None:
    for verb in ("delete", "deletecollection"):
        assert not rbac.allowed(RECEIVER, verb, "", "pods", namespace="default", name="p")
        assert not rbac.allowed(RECEIVER, verb, "", "nodes", name="node-1")
    assert not rbac.allowed(RECEIVER, "patch", "", "pods", namespace="default", name="p")
    assert not rbac.allowed(RECEIVER, "update", "", "nodes", name="node-1")
    assert not rbac.allowed(RECEIVER, "list", "", "nodes")
    assert not rbac.allowed(RECEIVER, "list", "", "pods")
    assert not rbac.allowed(RECEIVER, "create", "", "pods/eviction", namespace="default")
    assert not rbac.allowed(RECEIVER, "get", "", "pods", namespace="default", name="p")
    assert not rbac.allowed(RECEIVER, "get", "", "secrets", namespace=NAMESPACE, name="x")
    assert not rbac.allowed(
        RECEIVER, "get", "", "serviceaccounts", namespace="kube-system", name="default"
    )
    for resource in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        for verb in ("create", "update", "delete"):
            assert not rbac.allowed(
                RECEIVER, verb, "admissionregistration.k8s.io", resource, name=POLICY
            )
    assert not rbac.allowed_url(RECEIVER, "get", "/metrics")


# --- the janitor --------------------------------------------------------------------------


def test_deploy_rbac_janitor_touches_only_the_eviction_guard(rbac: Rbac) -> None:
    for verb in ("get", "update"):
        assert rbac.allowed(
            JANITOR, verb, "", "configmaps", namespace=NAMESPACE, name=EVICTION_GUARD
        )
    assert not rbac.allowed(JANITOR, "create", "", "configmaps", namespace=NAMESPACE)
    assert not rbac.allowed(JANITOR, "get", "", "configmaps", namespace=NAMESPACE, name="other")
    rules = rbac.rules(JANITOR)
    assert len(rules) == 1
    assert rules[0].rule["resourceNames"] == [EVICTION_GUARD]


def test_deploy_rbac_names_match_the_eviction_guard_module() -> None:
    """The names above are the eviction guard's (core/evictionguard.py), once it exists."""
    guard = pytest.importorskip("kubeballast.core.evictionguard")
    assert (guard.PARAM_NAMESPACE, guard.PARAM_NAME) == (NAMESPACE, EVICTION_GUARD)
    assert guard.POLICY_NAME == POLICY
    assert guard.BINDING_NAME == POLICY
    assert guard.FLOWSCHEMA_NAME == RECEIVER_FLOWSCHEMA


def test_deploy_rbac_files_are_what_the_base_renders() -> None:
    """The RBAC integration tests load the files under deploy/base/rbac/ directly: they
    must be exactly the roles the overlays deploy."""
    from_files = [
        d
        for name in RBAC_FILES
        for d in load_yaml_docs(DEPLOY / "base" / "rbac" / name)
        if d["kind"] in ("Role", "ClusterRole")
    ]
    for overlay in OVERLAYS:
        rendered = rbac_objects(render_overlay(overlay))
        key = _role_key
        assert sorted(map(key, rendered)) == sorted(map(key, from_files))
        by_key = {key(d): d["rules"] for d in from_files}
        for role in rendered:
            assert role["rules"] == by_key[key(role)]


def _role_key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])


def test_deploy_rbac_every_rule_says_why() -> None:
    """Each rule, or the role holding it, is preceded by a comment naming the code."""
    for name in RBAC_FILES:
        lines = Path(DEPLOY / "base" / "rbac" / name).read_text().splitlines()
        for number, line in enumerate(lines):
            stripped = line.strip()
            if stripped.startswith(("- apiGroups:", "- nonResourceURLs:")):
                above = [x.strip() for x in lines[max(0, number - 12) : number]]
                assert any(x.startswith("#") for x in above), f"{name}:{number + 1}: no reason"
