"""The configuration each overlay ships is one the real loader accepts, and fits its pods.

The config file travels in the generated ConfigMap kube-ballast-config; a mistake in it
is a CrashLoopBackOff in the user's cluster. So the rendered file goes through
``load_config`` (the strict loader ``kube-ballast`` uses) and ``kube-ballast config
check``; every file it names is mounted in the container that reads it; the addresses
and ports are those the Services route to; the managed overlay has no source that would
report an unreachable control-plane component down; the self-managed one has them all,
with its etcd backups where the CronJob writes them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_manifests import (
    DEPLOY,
    OVERLAYS,
    RECEIVER,
    SA_TOKEN_DIR,
    Doc,
    Rbac,
    config_of,
    find,
    mounts_of,
    one,
    render,
    render_overlay,
)

from kubeballast.core.config import Config, load_config

CONFIG_PATH = "/etc/kube-ballast/config/config.yaml"


def loaded(tmp_path: Path, docs: list[Doc]) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_of(docs)))
    return load_config(path)


def file_settings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(key path, value) of every ``*_file`` setting with a value."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else key
            if key.endswith("_file") and isinstance(value, str):
                yield here, value
            else:
                yield from file_settings(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from file_settings(item, f"{path}[{index}]")


def container(docs: list[Doc], kind: str, name: str) -> tuple[Doc, Doc]:
    doc = one(docs, kind, name)
    pod = (
        doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        if kind == "CronJob"
        else doc["spec"]["template"]["spec"]
    )
    [only] = pod["containers"]
    return pod, only


def assert_files_mounted(config: dict[str, Any], pod: Doc, container: Doc, where: str) -> None:
    mounts = mounts_of(pod, container)
    for key, value in file_settings(config):
        if value.startswith(SA_TOKEN_DIR + "/"):
            assert pod.get("automountServiceAccountToken", True), f"{where}: {key}"
            continue
        under = [m for m in mounts if value.startswith(m.rstrip("/") + "/")]
        assert under, f"{where}: {key} = {value} is in no volume mounted there"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_config_passes_the_real_loader(overlay: str, tmp_path: Path) -> None:
    docs = render_overlay(overlay)
    config = loaded(tmp_path, docs)
    assert config.exporter.kubernetes.in_cluster
    assert config.receiver.remediations.kubernetes.in_cluster
    # Reachable from Prometheus and Alertmanager, on the ports the pods declare.
    assert config.exporter.listen.host == "0.0.0.0"
    assert config.receiver.listen.host == "0.0.0.0"
    _, exporter = container(docs, "Deployment", "kube-ballast-exporter")
    _, receiver = container(docs, "Deployment", "kube-ballast-receiver")
    assert [p["containerPort"] for p in exporter["ports"]] == [config.exporter.listen.port]
    assert [p["containerPort"] for p in receiver["ports"]] == [config.receiver.listen.port]
    # Safe until someone reads the runbooks, and never without authentication.
    assert config.receiver.dry_run
    assert config.receiver.auth.bearer_token_file
    assert not config.receiver.auth.allow_unauthenticated
    for process in (exporter, receiver):
        assert process["command"][:3] == ["kube-ballast", "--config", CONFIG_PATH]
    # The eviction pause reads the exporter's verdicts through its Service.
    service = one(docs, "Service", "kube-ballast-exporter")
    url = config.receiver.remediations.eviction_guard.exporter_url
    port = service["spec"]["ports"][0]["port"]
    assert url == f"http://kube-ballast-exporter.kube-ballast.svc:{port}/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_config_check_command_accepts_it(overlay: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_of(render_overlay(overlay))))
    result = subprocess.run(
        [sys.executable, "-m", "kubeballast", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "config: ok"


def test_deploy_config_base_file_is_valid() -> None:
    load_config(DEPLOY / "base" / "config" / "config.yaml")
    assert config_of(render(DEPLOY / "base"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_config_files_are_mounted_where_they_are_read(overlay: str) -> None:
    docs = render_overlay(overlay)
    config = config_of(docs)
    pod, exporter = container(docs, "Deployment", "kube-ballast-exporter")
    assert_files_mounted(config["exporter"], pod, exporter, f"{overlay} exporter")
    pod, receiver = container(docs, "Deployment", "kube-ballast-receiver")
    assert_files_mounted(config["receiver"], pod, receiver, f"{overlay} receiver")
    for cronjob in find(docs, "CronJob"):
        pod, job = container(docs, "CronJob", cronjob["metadata"]["name"])
        if "--config" in job.get("command", []):
            assert_files_mounted(config["exporter"]["etcd"], pod, job, cronjob["metadata"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_config_state_names_are_the_ones_rbac_grants(overlay: str, tmp_path: Path) -> None:
    docs = render_overlay(overlay)
    remediations = loaded(tmp_path, docs).receiver.remediations
    rbac = Rbac(docs)
    ns = remediations.namespace
    for suffix in ("records", "limits", "active"):
        name = f"{remediations.state_prefix}-{suffix}"
        assert rbac.allowed(RECEIVER, "update", "", "configmaps", namespace=ns, name=name)
    switch = remediations.kill_switch_configmap
    assert rbac.allowed(RECEIVER, "get", "", "configmaps", namespace=ns, name=switch)
    lease = remediations.leader_election.lease_name
    leases = ("coordination.k8s.io", "leases")
    assert rbac.allowed(RECEIVER, "update", *leases, namespace=ns, name=lease)


def test_deploy_managed_has_no_control_plane_host_sources(tmp_path: Path) -> None:
    """No etcd, scheduler or controller-manager: nothing there could reach them, so each
    would be reported down (KubeControlPlaneComponentDown, EtcdMembersDown) for ever."""
    docs = render_overlay("managed")
    config = loaded(tmp_path, docs)
    assert config.exporter.schedulers == ()
    assert config.exporter.controller_managers == ()
    assert config.exporter.etcd.clusters == ()
    assert config.receiver.remediations.etcd.clusters == ()
    assert not [a for a in config.receiver.remediations.enabled_actions if a.startswith("etcd")]
    assert not find(docs, "PersistentVolumeClaim")
    names = {c["metadata"]["name"] for c in find(docs, "CronJob")}
    assert not [n for n in names if "etcd" in n]
    for deployment in find(docs, "Deployment"):
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert not [v for v in volumes if "etcd" in v.get("secret", {}).get("secretName", "")]


def test_deploy_self_managed_has_every_source_and_backs_etcd_up(tmp_path: Path) -> None:
    docs = render_overlay("self-managed")
    config = loaded(tmp_path, docs)
    exporter = config.exporter
    assert exporter.apiservers
    assert exporter.schedulers
    assert exporter.controller_managers
    [cluster] = exporter.etcd.clusters
    assert cluster.cert_file
    assert cluster.key_file
    assert cluster.ca_file
    assert [c.name for c in config.receiver.remediations.etcd.clusters] == [cluster.name]
    # The CronJob: `kube-ballast etcd backup` of that cluster into its backup directory,
    # which the exporter reads from the same volume.
    pod, job = container(docs, "CronJob", "kube-ballast-etcd-backup")
    assert job["command"] == ["kube-ballast", "--config", CONFIG_PATH, "etcd", "backup"]
    directory = cluster.backup.directory
    assert directory
    job_mounts = mounts_of(pod, job)
    claim = job_mounts[directory]["persistentVolumeClaim"]["claimName"]
    assert claim == "kube-ballast-etcd-backups"
    one(docs, "PersistentVolumeClaim", "kube-ballast-etcd-backups")
    exporter_pod, exporter_container = container(docs, "Deployment", "kube-ballast-exporter")
    exporter_mounts = mounts_of(exporter_pod, exporter_container)
    assert exporter_mounts[directory]["persistentVolumeClaim"]["readOnly"] is True
    # A ReadWriteOnce volume: the job runs beside the exporter, which is recreated.
    affinity = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    labels = exporter_pod_labels(docs)
    assert affinity[0]["labelSelector"]["matchLabels"].items() <= labels.items()
    strategy = one(docs, "Deployment", "kube-ballast-exporter")["spec"]["strategy"]
    assert strategy == {"type": "Recreate"}
    # The etcd client certificate comes from the Secret the docs tell you to create.
    for p, c in (
        (pod, job),
        (exporter_pod, exporter_container),
        container(docs, "Deployment", "kube-ballast-receiver"),
    ):
        mounts = mounts_of(p, c)
        secret = mounts["/etc/kube-ballast/etcd"]["secret"]
        assert secret["secretName"] == "kube-ballast-etcd-client"
    # The backup job never talks to the Kubernetes API.
    assert pod["automountServiceAccountToken"] is False


def exporter_pod_labels(docs: list[Doc]) -> dict[str, str]:
    labels: dict[str, str] = one(docs, "Deployment", "kube-ballast-exporter")["spec"]["template"][
        "metadata"
    ]["labels"]
    return labels


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_secrets_the_pods_need_are_documented(overlay: str) -> None:
    """The Secrets are not shipped (they hold keys and tokens): each one a pod mounts is
    created, by that name and with the keys the config reads, in docs/deploy.md."""
    guide = (DEPLOY.parent / "docs" / "deploy.md").read_text()
    docs = render_overlay(overlay)
    config = config_of(docs)
    files = {value for _, value in file_settings(config)}
    for workload in [*find(docs, "Deployment"), *find(docs, "CronJob")]:
        spec = workload["spec"]
        pod = (
            spec["jobTemplate"]["spec"]["template"]["spec"]
            if "jobTemplate" in spec
            else spec["template"]["spec"]
        )
        for c in pod["containers"]:
            for mount_path, volume in mounts_of(pod, c).items():
                if "secret" not in volume:
                    continue
                name = volume["secret"]["secretName"]
                assert f"create secret generic {name}" in guide, name
                for path in files:
                    if path.startswith(mount_path + "/"):
                        key = path[len(mount_path) + 1 :]
                        assert f"{key}=" in guide, f"{name}: key {key} not in docs/deploy.md"
