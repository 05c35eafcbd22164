"""Helpers of the deployment tests: render the kustomize overlays, read what they hold,
and answer RBAC questions about the rendered roles the way the apiserver would.

Not a conftest: the test modules import these by name (deploy_manifests is unique
across tests/), and the fixtures in conftest.py use them.

The RBAC evaluator follows the Kubernetes authorizer (pkg/registry/rbac/validation):
a RoleBinding grants its Role or ClusterRole's rules in its own namespace only, a
ClusterRoleBinding grants a ClusterRole's rules everywhere and for cluster-scoped
objects and non-resource URLs; a rule matches a request when its verb, API group,
resource (``pods/eviction`` for a subresource) and, if the rule names any, the
object's name match. A request without a name (list, watch, create) never matches a
rule with resourceNames.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
OVERLAYS = ("managed", "self-managed")
NAMESPACE = "kube-ballast"
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

EXPORTER = (NAMESPACE, "kube-ballast-exporter")
RECEIVER = (NAMESPACE, "kube-ballast-receiver")
JANITOR = (NAMESPACE, "kube-ballast-janitor")

Doc = dict[str, Any]


MIN_KUSTOMIZE = (4, 1)
"""`labels:` (kustomize 4.1, kubectl 1.22) and components (3.7): what the overlays use.
Debian's kubernetes-client 1.20 embeds kustomize 2.0.3, which cannot render them."""


@functools.cache
def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, "kubectl is needed to render the overlays (scripts/test installs it)"
    result = subprocess.run(
        [found, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    version = json.loads(result.stdout).get("kustomizeVersion", "v0")
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    assert numbers >= MIN_KUSTOMIZE, (
        f"{found} embeds kustomize {version}; the overlays need >= "
        f"{'.'.join(map(str, MIN_KUSTOMIZE))} (kubectl >= 1.22)"
    )
    return found


@functools.cache
def _render(path: str) -> tuple[Doc, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.load_all(result.stdout, Loader=_Loader) if doc)


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def render(path: Path) -> list[Doc]:
    """The objects ``kubectl kustomize path`` renders (a fresh copy each call, so a test
    may change what it got)."""
    return copy.deepcopy(list(_render(str(path))))


def render_overlay(name: str) -> list[Doc]:
    return render(DEPLOY / "overlays" / name)


def find(docs: Sequence[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: Sequence[Doc], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


# --- workloads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    pod: Doc
    """The pod template's spec."""
    labels: Mapping[str, str]

    @property
    def long_running(self) -> bool:
        return self.kind in ("Deployment", "StatefulSet", "DaemonSet")


def workloads(docs: Sequence[Doc]) -> Iterator[Workload]:
    for doc in docs:
        kind = doc["kind"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            template = doc["spec"]["template"]
        elif kind == "CronJob":
            template = doc["spec"]["jobTemplate"]["spec"]["template"]
        elif kind == "Pod":
            template = doc
        else:
            continue
        labels = template.get("metadata", {}).get("labels", {})
        yield Workload(kind, doc["metadata"]["name"], template["spec"], labels)


def containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def mounts_of(pod: Doc, container: Doc) -> dict[str, Doc]:
    """mountPath -> the volume mounted there, for one container."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def config_of(docs: Sequence[Doc]) -> Doc:
    """The kube-ballast config file held by the generated ConfigMap."""
    maps = [
        d
        for d in find(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("kube-ballast-config")
    ]
    assert len(maps) == 1, [m["metadata"]["name"] for m in maps]
    loaded: Doc = yaml.safe_load(maps[0]["data"]["config.yaml"])
    return loaded


# --- RBAC ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    rule: Mapping[str, Any]
    namespace: str | None
    """None: cluster-wide (a ClusterRoleBinding)."""


class Rbac:
    """The permissions the rendered roles and bindings give each service account."""

    def __init__(self, docs: Sequence[Doc]) -> None:
        self.docs = docs
        roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in find(docs, "Role")}
        cluster_roles = {d["metadata"]["name"]: d for d in find(docs, "ClusterRole")}
        self.grants: dict[tuple[str, str], list[Grant]] = {}
        for binding in [*find(docs, "RoleBinding"), *find(docs, "ClusterRoleBinding")]:
            ref = binding["roleRef"]
            namespace = binding["metadata"].get("namespace")
            if binding["kind"] == "ClusterRoleBinding":
                assert ref["kind"] == "ClusterRole", binding
                role = cluster_roles.get(ref["name"])
            elif ref["kind"] == "ClusterRole":
                role = cluster_roles.get(ref["name"])
            else:
                role = roles.get((namespace, ref["name"]))
            assert role is not None, f"{binding['kind']} {binding['metadata']['name']}: no {ref}"
            for subject in binding["subjects"]:
                assert subject["kind"] == "ServiceAccount", subject
                key = (subject["namespace"], subject["name"])
                for rule in role.get("rules", []):
                    self.grants.setdefault(key, []).append(Grant(rule, namespace))

    def rules(self, account: tuple[str, str]) -> list[Grant]:
        return self.grants.get(account, [])

    def allowed(
        self,
        account: tuple[str, str],
        verb: str,
        group: str,
        resource: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
    ) -> bool:
        """May ``account`` do ``verb`` on ``resource`` (``pods/eviction`` for a
        subresource) in ``namespace`` (None: cluster-scoped or across all namespaces)?"""
        for grant in self.rules(account):
            rule = grant.rule
            if "nonResourceURLs" in rule:
                continue
            if grant.namespace is not None and grant.namespace != namespace:
                continue
            if verb not in rule.get("verbs", []):
                continue
            if group not in rule.get("apiGroups", []):
                continue
            if resource not in rule.get("resources", []):
                continue
            names = rule.get("resourceNames") or []
            if names and name not in names:
                continue
            return True
        return False

    def allowed_url(self, account: tuple[str, str], verb: str, path: str) -> bool:
        for grant in self.rules(account):
            rule = grant.rule
            if grant.namespace is not None or "nonResourceURLs" not in rule:
                continue
            if verb in rule["verbs"] and path in rule["nonResourceURLs"]:
                return True
        return False


def load_yaml_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
