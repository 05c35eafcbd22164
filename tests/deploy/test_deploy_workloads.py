"""Every workload the overlays deploy runs locked down, probed, sized, on the one image.

The checks read the rendered overlays, so they hold for pods that come from other
parts of deploy/ (the eviction guard's janitor) as much as for the base's own: a
non-root numeric user, a read-only root filesystem, seccomp RuntimeDefault, no
privilege escalation, every capability dropped; requests for CPU and memory and a
memory limit; liveness and readiness probes on the endpoints the processes serve for
long-running ones; ``image: kube-ballast`` replaced by the overlay's one image. The
receiver runs two replicas with a PodDisruptionBudget and leader election; Services
and ServiceMonitors find the pods and ports they mean.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_manifests import (
    DEPLOY,
    OVERLAYS,
    REPO_ROOT,
    Workload,
    config_of,
    containers,
    find,
    one,
    render_overlay,
    workloads,
)

import kubeballast

SERVED_PATHS = {"/healthz", "/readyz", "/metrics"}
"""What kubeballast.core.web and the exporter's app serve without credentials."""


def overlay_image(overlay: str) -> str:
    path = DEPLOY / "overlays" / overlay / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    [image] = kustomization["images"]
    assert image["name"] == "kube-ballast"
    return f"{image.get('newName', 'kube-ballast')}:{image['newTag']}"


def all_workloads() -> list[tuple[str, Workload]]:
    return [(overlay, w) for overlay in OVERLAYS for w in workloads(render_overlay(overlay))]


def ids(item: tuple[str, Workload]) -> str:
    overlay, workload = item
    return f"{overlay}-{workload.kind}-{workload.name}"


@pytest.mark.parametrize("item", all_workloads(), ids=ids)
def test_deploy_workload_security_context(item: tuple[str, Workload]) -> None:
    overlay, workload = item
    pod = workload.pod
    pod_security = pod.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host), f"{overlay} {workload.name}: {host}"
    for container in containers(pod):
        where = f"{overlay} {workload.name}/{container['name']}"
        security = container.get("securityContext", {})

        def effective(key: str, security: dict[str, Any] = security) -> Any:
            return security.get(key, pod_security.get(key))

        assert effective("runAsNonRoot") is True, where
        user = effective("runAsUser")
        assert isinstance(user, int), where
        assert user > 0, where
        assert effective("seccompProfile") == {"type": "RuntimeDefault"}, where
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not security.get("capabilities", {}).get("add"), where
        assert not security.get("privileged"), where


@pytest.mark.parametrize("item", all_workloads(), ids=ids)
def test_deploy_workload_resources_and_image(item: tuple[str, Workload]) -> None:
    overlay, workload = item
    for container in containers(workload.pod):
        where = f"{overlay} {workload.name}/{container['name']}"
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
        assert "memory" in resources.get("limits", {}), where
        assert container["image"] == overlay_image(overlay), where


@pytest.mark.parametrize("item", [i for i in all_workloads() if i[1].long_running], ids=ids)
def test_deploy_long_running_workloads_are_probed(item: tuple[str, Workload]) -> None:
    overlay, workload = item
    for container in containers(workload.pod):
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe"):
            where = f"{overlay} {workload.name}/{container['name']} {probe}"
            get = container.get(probe, {}).get("httpGet")
            assert get, where
            assert get["path"] in SERVED_PATHS, where
            assert get["port"] in ports or get["port"] in ports.values(), where
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_deploy_image_tag_is_the_release() -> None:
    for overlay in OVERLAYS:
        assert overlay_image(overlay).endswith(f":{kubeballast.__version__}"), overlay


def test_deploy_manifests_run_as_the_image_user() -> None:
    """The Dockerfile's numeric USER is the user every pod asks for."""
    match = re.search(r"^USER (\d+):(\d+)$", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    assert match
    for _, workload in all_workloads():
        if workload.name.startswith("kube-ballast-"):
            assert workload.pod["securityContext"]["runAsUser"] == int(match[1]), workload.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_receiver_two_replicas_pdb_and_leader_election(overlay: str) -> None:
    docs = render_overlay(overlay)
    receiver = one(docs, "Deployment", "kube-ballast-receiver")
    assert receiver["spec"]["replicas"] == 2
    labels = receiver["spec"]["template"]["metadata"]["labels"]
    [pdb] = [
        p
        for p in find(docs, "PodDisruptionBudget")
        if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["metadata"]["namespace"] == receiver["metadata"]["namespace"]
    # A rollout never takes the second replica away first.
    assert receiver["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    election = config_of(docs)["receiver"]["remediations"]["leader_election"]
    assert election["lease_name"] == "kube-ballast-receiver"
    assert one(docs, "Deployment", "kube-ballast-exporter")["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_services_and_monitors_find_their_pods(overlay: str) -> None:
    docs = render_overlay(overlay)
    deployments = {d["metadata"]["name"]: d for d in find(docs, "Deployment")}
    services = {s["metadata"]["name"]: s for s in find(docs, "Service")}
    assert set(services) == {"kube-ballast-exporter", "kube-ballast-receiver"}
    for name, service in services.items():
        template = deployments[name]["spec"]["template"]
        assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
        port_names = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (name, port)
    for monitor in find(docs, "ServiceMonitor"):
        matched = [
            s
            for s in services.values()
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, monitor["metadata"]["name"]
        service_ports = {p["name"] for p in matched[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in service_ports
            assert endpoint["path"] == "/metrics"


def test_deploy_exporter_job_is_what_the_alerts_expect() -> None:
    """The Prometheus Operator names the job after the Service; KubeBallastExporterDown
    looks for that job."""
    rules = Path(REPO_ROOT / "alerts" / "kube-ballast.yaml").read_text()
    jobs = set(re.findall(r'job="([^"]+)"', rules))
    assert jobs == {"kube-ballast-exporter"}
    for overlay in OVERLAYS:
        service = one(render_overlay(overlay), "Service", "kube-ballast-exporter")
        assert service["metadata"]["name"] in jobs
        monitor = one(render_overlay(overlay), "ServiceMonitor", "kube-ballast-exporter")
        assert "jobLabel" not in monitor["spec"]


def test_deploy_alertmanager_example_posts_to_the_receiver_service() -> None:
    """alerts/alertmanager/alertmanager.yml's webhook URL is the receiver's Service,
    port and configured path, as the overlays deploy them."""
    example = yaml.safe_load(
        (REPO_ROOT / "alerts" / "alertmanager" / "alertmanager.yml").read_text()
    )
    urls = {
        hook["url"]
        for receiver in example["receivers"]
        for hook in receiver.get("webhook_configs", [])
    }
    for overlay in OVERLAYS:
        docs = render_overlay(overlay)
        service = one(docs, "Service", "kube-ballast-receiver")
        port = service["spec"]["ports"][0]["port"]
        path = config_of(docs)["receiver"].get("path", "/webhook/alertmanager")
        namespace = service["metadata"]["namespace"]
        assert f"http://kube-ballast-receiver.{namespace}.svc:{port}{path}" in urls, urls
