"""The one typed configuration of kube-ballast, and the loader that validates it.

Every setting of every component lives here, in frozen dataclasses grouped the way the
YAML file is (``logging``, ``simulator``, ``exporter``, ``receiver``). Every field has a
default and an attribute docstring; the docstrings are the documentation:
``render_reference()`` reads them from this source file with ``ast`` to generate
docs/config-reference.md, and ``render_example()`` generates the annotated
docs/config.example.yaml, so neither can drift from the code (tests compare them).

The loader is generic: it walks the dataclasses by their type hints (nested
dataclasses, lists and tuples, ``dict[str, X]``, ``X | None``, ``Literal``, and the
scalars ``bool``/``int``/``float``/``str``) and coerces nothing except an integer where
a number is expected. It refuses unknown keys. Value rules are declared next to the
field with ``Annotated[...]`` (``Range``, ``NonEmpty``, ``HttpUrl``, ``Loopback``) and
rules that involve several fields live in a ``_cross_checks`` method of the group.
Validation runs over the finished object, defaults included, so a ``Config`` built in
code (the command line's flag overrides) passes the same gate via ``validate()``.

Every failure is a ``ConfigError`` whose text is one line naming the key path:
``exporter.etcd.clusters[1].endpoints: must not be empty``.

Secrets never sit in this file's values: tokens, passwords and keys are referenced by
file path and read by the component that needs them, when it starts. Nothing here
reads the environment.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import ipaddress
import json
import textwrap
import types
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import yaml

from kubeballast.core.errors import ConfigError

__all__ = [
    "ActionConfig",
    "ClusterStateConfig",
    "Config",
    "ConfigError",
    "EtcdBackupConfig",
    "EtcdClusterConfig",
    "EtcdConfig",
    "EtcdMemberConfig",
    "EtcdRestoreConfig",
    "EvictionGuardConfig",
    "ExporterConfig",
    "HttpUrl",
    "KubeletProbeConfig",
    "KubernetesAccessConfig",
    "LeaderElectionConfig",
    "ListenConfig",
    "LoggingConfig",
    "Loopback",
    "MaintenanceWindowConfig",
    "NodeLifecycleConfig",
    "NonEmpty",
    "NotificationsConfig",
    "Range",
    "ReceiverAuthConfig",
    "ReceiverConfig",
    "ReceiverTLSConfig",
    "RemediationsConfig",
    "ScaleLimitsConfig",
    "ScenarioConfig",
    "SimulatorConfig",
    "TargetConfig",
    "attribute_docs",
    "config_from_mapping",
    "example_config",
    "key_paths",
    "load_config",
    "load_users_file",
    "render_example",
    "render_reference",
    "validate",
]


# --------------------------------------------------------------------------------------
# Value rules, declared on fields with Annotated[...]
# --------------------------------------------------------------------------------------


class Rule(Protocol):
    """A rule on one value: ``check`` returns why it fails, or None."""

    def check(self, value: Any) -> str | None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Range:
    """A numeric interval; ``None`` leaves a side open."""

    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    note: str = ""

    def describe(self) -> str:
        low = "" if self.low is None else f"{'>' if self.low_exclusive else '>='} {self.low:g}"
        high = "" if self.high is None else f"<= {self.high:g}"
        if low and high and not self.low_exclusive:
            text = f"{self.low:g} to {self.high:g}"
        else:
            text = " and ".join(part for part in (low, high) if part)
        return f"{text} ({self.note})" if self.note else text

    def check(self, value: Any) -> str | None:
        too_low = self.low is not None and (
            value <= self.low if self.low_exclusive else value < self.low
        )
        too_high = self.high is not None and value > self.high
        if not (too_low or too_high):
            return None
        if self.low is not None and self.high is not None and not self.low_exclusive:
            wanted = f"between {self.low:g} and {self.high:g}"
        elif self.low is not None and self.high is not None:
            wanted = f"greater than {self.low:g} and at most {self.high:g}"
        elif self.low is not None:
            wanted = f"{'greater than' if self.low_exclusive else 'at least'} {self.low:g}"
        else:
            wanted = f"at most {self.high:g}"
        note = f" ({self.note})" if self.note else ""
        return f"must be {wanted}{note}, got {_show(value)}"


@dataclass(frozen=True)
class NonEmpty:
    """A required string or a list that needs at least one item."""

    def describe(self) -> str:
        return "required"

    def check(self, value: Any) -> str | None:
        if isinstance(value, str):
            return "must be set" if not value.strip() else None
        return "must not be empty" if len(value) == 0 else None


@dataclass(frozen=True)
class HttpUrl:
    """An absolute http:// or https:// URL with a host."""

    def describe(self) -> str:
        return "http or https URL"

    def check(self, value: Any) -> str | None:
        if not value:
            return "must be set"
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError when the port is not a number
        except ValueError:
            return f"must be an http or https URL, got {_show(value)}"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"must be an http or https URL, got {_show(value)}"
        return None


@dataclass(frozen=True)
class Loopback:
    """A host name or address that stays on this machine."""

    def describe(self) -> str:
        return "loopback address"

    def check(self, value: Any) -> str | None:
        if value == "localhost":
            return None
        try:
            if ipaddress.ip_address(value).is_loopback:
                return None
        except ValueError:
            pass
        return f"must be a loopback address such as 127.0.0.1 or ::1, got {_show(value)}"


# --------------------------------------------------------------------------------------
# The configuration
# --------------------------------------------------------------------------------------

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Port = Annotated[int, Range(0, 65535)]

RECEIVER_DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
"""About twice the body Alertmanager 0.25 sends for a group of 5000 realistic alerts
(5 220 014 bytes: nine labels, a summary, a description, a runbook URL and a Prometheus
generator URL each; tests/receiver/capture_payloads.py measures it)."""
RESERVED_RECEIVER_PATHS = ("/healthz", "/metrics", "/records", "/approvals")
"""The receiver's own endpoints, which the webhook path must not shadow."""


@dataclass(frozen=True)
class LoggingConfig:
    """How every component logs (to stderr)."""

    level: LogLevel = "INFO"
    """Lowest level written; ``--log-level`` overrides it."""
    format: Literal["text", "json"] = "text"
    """``text`` for people, ``json`` for log pipelines (one object per line: ts, level,
    logger, message and the record's context fields); ``--log-format`` overrides it."""


@dataclass(frozen=True)
class ScenarioConfig:
    """The shape of the simulated cluster (mirrors the simulator's ScenarioSettings)."""

    nodes: Annotated[int, Range(1, 5000)] = 500
    """Worker nodes (control-plane nodes come on top)."""
    zones: Annotated[int, Range(1, 100)] = 3
    """Zones the nodes spread over (topology.kubernetes.io/zone zone-a, zone-b ...)."""
    pods_per_node: Annotated[int, Range(0, 110, note="the seed's limit is 100")] = 30
    """Pods scheduled on each worker node; 110 is the kubelet's default maximum."""
    containers_per_pod: Annotated[int, Range(1, 50)] = 2
    """Containers in each workload pod (the seed's limit: 300 000 containers in all)."""
    control_plane_nodes: Annotated[int, Range(0, 7)] = 3
    """Control-plane nodes, labelled node-role.kubernetes.io/control-plane."""
    seed: Annotated[int, Range(0)] = 1
    """Random seed: the same settings give the same cluster."""
    users_file: str | None = None
    """Path of a YAML file mapping bearer token -> username, for users on top of the
    built-in admin. The tokens are secrets, so they live in that file, never here."""


@dataclass(frozen=True)
class NodeLifecycleConfig:
    """The simulated node-lifecycle controller's flags (kube-controller-manager defaults)."""

    node_monitor_period_seconds: Annotated[float, Range(0, 3600, low_exclusive=True)] = 5.0
    """--node-monitor-period: how often the controller checks node health."""
    node_monitor_grace_period_seconds: Annotated[float, Range(0, 3600, low_exclusive=True)] = 50.0
    """--node-monitor-grace-period: lease age after which a node is marked Unknown."""
    node_eviction_rate: Annotated[float, Range(0)] = 0.1
    """--node-eviction-rate: nodes per second tainted NoExecute in a healthy zone."""
    secondary_node_eviction_rate: Annotated[float, Range(0)] = 0.01
    """--secondary-node-eviction-rate: the rate in a partially disrupted large zone."""
    unhealthy_zone_threshold: Annotated[float, Range(0, 1)] = 0.55
    """--unhealthy-zone-threshold: NotReady fraction that makes a zone PartialDisruption."""
    large_cluster_size_threshold: Annotated[int, Range(0)] = 50
    """--large-cluster-size-threshold: zones larger than this keep evicting when disrupted."""
    default_toleration_seconds: Annotated[int, Range(0)] = 300
    """DefaultTolerationSeconds admission: tolerationSeconds added to every pod."""
    use_service_account_credentials: bool = True
    """--use-service-account-credentials (kubeadm's default): the controllers act as their
    own service accounts (taint-based eviction as kube-system:node-controller); false:
    everything acts as system:kube-controller-manager."""


@dataclass(frozen=True)
class SimulatorConfig:
    """The embedded Kubernetes API simulator (``kube-ballast simulate``)."""

    host: Annotated[str, Loopback()] = "127.0.0.1"
    """Address to listen on. Loopback only: the simulator has no real authentication."""
    port: Port = 0
    """API server port; 0 picks a free one (``--kubeconfig`` then tells clients where)."""
    clock_factor: Annotated[float, Range(0, 1000, low_exclusive=True)] = 1.0
    """Simulated seconds per real second (10 makes a 5-minute toleration last 30 s)."""
    kubelets: bool = True
    """Run simulated kubelets that renew node Leases and node status."""
    controllers: bool = True
    """Run the simulated node-lifecycle and taint-eviction controllers."""
    kubeconfig_path: str | None = None
    """Where to write a kubeconfig for clients; null writes none."""
    admission_policy_api: bool = True
    """Serve ValidatingAdmissionPolicy and its bindings (Kubernetes >= 1.30); false plays
    an older cluster without them (the eviction guard's taint-removal fallback)."""
    history_seconds: Annotated[float, Range(0, 86400, low_exclusive=True)] = 300.0
    """Simulated seconds of write history kept for watches and continue tokens (the
    apiserver's etcd compaction runs every 5 minutes)."""
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    """The shape of the simulated cluster."""
    node_lifecycle: NodeLifecycleConfig = field(default_factory=NodeLifecycleConfig)
    """The simulated node-lifecycle controller."""


@dataclass(frozen=True)
class ListenConfig:
    """An address an HTTP server listens on."""

    host: Annotated[str, NonEmpty()] = "127.0.0.1"
    """Address to bind. Loopback by default; deployments in a cluster set ``0.0.0.0`` so
    that Prometheus (or Alertmanager) can reach the pod."""
    port: Port = 0
    """TCP port; 0 picks a free one (the chosen port is logged)."""


@dataclass(frozen=True)
class KubernetesAccessConfig:
    """How the exporter reaches the Kubernetes API to watch objects.

    Set at most one of ``kubeconfig_path`` and ``in_cluster``; with neither, the usual
    kubeconfig lookup applies ($KUBECONFIG, then ~/.kube/config), read at start-up.
    """

    kubeconfig_path: str | None = None
    """Path of a kubeconfig file to use."""
    in_cluster: bool = False
    """Use the pod's service account (token, CA and KUBERNETES_SERVICE_* address)."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        if self.in_cluster and self.kubeconfig_path is not None:
            yield "in_cluster", "cannot be true together with kubeconfig_path"


@dataclass(frozen=True)
class TargetConfig:
    """One control-plane component endpoint the exporter probes (/metrics, /livez ...).

    ``client_cert_file`` and ``client_key_file`` go together. All ``*_file`` paths are
    read when the exporter starts, so credentials can be rotated by a restart.
    """

    name: Annotated[str, NonEmpty()] = ""
    """Label value identifying this target in metrics; unique within its list."""
    url: Annotated[str, HttpUrl()] = ""
    """Base URL of the component, for example ``https://10.0.0.11:6443`` for an apiserver."""
    bearer_token_file: str | None = None
    """File holding a bearer token to send (a service account token, for instance)."""
    client_cert_file: str | None = None
    """PEM client certificate for mutual TLS."""
    client_key_file: str | None = None
    """PEM private key of ``client_cert_file``."""
    ca_file: str | None = None
    """PEM bundle that verifies the server; null uses the system trust store."""
    insecure_skip_verify: bool = False
    """Skip TLS verification. Only for a lab: it lets anyone impersonate the target."""
    timeout_seconds: Annotated[float, Range(0, 300, low_exclusive=True)] = 5.0
    """Give up on one probe after this long; at most ``interval_seconds``."""
    interval_seconds: Annotated[float, Range(1, 3600)] = 15.0
    """Probe this often. Prometheus' scrape only reads the last result."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        yield from _pair(self, "client_cert_file", "client_key_file")
        if self.timeout_seconds > self.interval_seconds:
            yield (
                "timeout_seconds",
                f"must not exceed interval_seconds ({self.interval_seconds:g}), "
                f"got {self.timeout_seconds:g}",
            )


@dataclass(frozen=True)
class EtcdBackupConfig:
    """Periodic snapshots of one etcd cluster (``kube-ballast etcd backup``).

    Each snapshot is ``etcd-<cluster>-<UTC time>.db`` in ``directory`` with a JSON
    sidecar ``.db.json`` beside it, written once the snapshot is verified; the exporter
    reads the newest sidecar. A snapshot is removed when it is not among the newest
    ``keep_count`` or is older than ``keep_max_age_seconds``, but the newest verified
    one is always kept.
    """

    directory: str | None = None
    """Folder for snapshots (on another disk than etcd's data, ideally); null: the
    backup command needs ``--dir``."""
    keep_count: Annotated[int, Range(1, 100000)] = 24
    """Keep at most this many snapshots."""
    keep_max_age_seconds: Annotated[float, Range(0, None, low_exclusive=True)] = 7 * 86400.0
    """Remove snapshots older than this."""
    hook_command: tuple[str, ...] = ()
    """Command run after each verified snapshot with the snapshot's path appended as
    the last argument (an off-site upload, for instance); empty: none. Its exit status
    is recorded in the result and the sidecar."""
    hook_timeout_seconds: Annotated[float, Range(0, 86400, low_exclusive=True)] = 600.0
    """Kill the hook after this long (recorded as a failure)."""
    etcdctl: Annotated[str, NonEmpty()] = "etcdctl"
    """The etcdctl binary (path or name on PATH), used only for ``snapshot status`` and
    ``snapshot restore``, which read a file the etcd API cannot see."""


@dataclass(frozen=True)
class EtcdMemberConfig:
    """One member as its unit file starts it, for restore plans."""

    name: Annotated[str, NonEmpty()] = ""
    """``--name``."""
    peer_url: Annotated[str, HttpUrl()] = ""
    """``--initial-advertise-peer-urls`` (and ``--listen-peer-urls``)."""
    client_url: Annotated[str, HttpUrl()] = ""
    """``--advertise-client-urls`` (and ``--listen-client-urls``)."""


@dataclass(frozen=True)
class EtcdRestoreConfig:
    """What ``kube-ballast etcd restore-plan`` and ``restore`` need to rebuild the
    cluster: the values in the members' unit files. Empty ``members`` takes names and
    URLs from the live member list."""

    data_dir: Annotated[str, NonEmpty()] = "/var/lib/etcd"
    """The members' ``--data-dir`` today."""
    restore_data_dir: Annotated[str, NonEmpty()] = "/var/lib/etcd-restored"
    """Where a restore writes the new data dir (must not exist yet)."""
    initial_cluster_token: str | None = None
    """``--initial-cluster-token`` for a rebuilt cluster; null: a new one is made up
    (a rebuilt cluster is a new cluster, and a fresh token keeps old members out)."""
    members: tuple[EtcdMemberConfig, ...] = ()
    """The members, as their unit files name them; names must be unique."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        yield from _unique_names(self.members, "members")


@dataclass(frozen=True)
class EtcdClusterConfig:
    """One etcd cluster (the main one, or a separate one for events).

    ``cert_file`` and ``key_file`` go together.
    """

    name: Annotated[str, NonEmpty()] = ""
    """Label value identifying this cluster in metrics (the ``etcd_cluster`` label); unique."""
    endpoints: Annotated[tuple[Annotated[str, HttpUrl()], ...], NonEmpty()] = ()
    """Client URLs of the members, for example ``https://10.0.0.11:2379``."""
    ca_file: str | None = None
    """PEM bundle that verifies the members; null uses the system trust store."""
    cert_file: str | None = None
    """PEM client certificate (etcd usually requires mutual TLS)."""
    key_file: str | None = None
    """PEM private key of ``cert_file``."""
    backup: EtcdBackupConfig = field(default_factory=EtcdBackupConfig)
    """Snapshots (``kube-ballast etcd backup``)."""
    restore: EtcdRestoreConfig = field(default_factory=EtcdRestoreConfig)
    """Recovery plans (``kube-ballast etcd restore-plan``)."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        yield from _pair(self, "cert_file", "key_file")


@dataclass(frozen=True)
class EtcdConfig:
    """The etcd clusters behind the apiservers."""

    clusters: tuple[EtcdClusterConfig, ...] = ()
    """The clusters to watch; names must be unique."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        yield from _unique_names(self.clusters, "clusters")


@dataclass(frozen=True)
class NetworkPluginConfig:
    """The network plugin's agents, watched per zone (the seed asks whether container
    networks survive the plugin's metadata store failing)."""

    daemonsets: Annotated[tuple[Annotated[str, NonEmpty()], ...], NonEmpty()] = (
        "calico-node",
        "cilium",
        "kube-flannel-ds",
        "weave-net",
        "antrea-agent",
        "kube-router",
        "aws-node",
    )
    """DaemonSet names of the network plugin's agents, matched in any namespace."""
    interval_seconds: Annotated[float, Range(5, 3600)] = 60.0
    """How often the agents, their pods and the nodes are listed (paginated)."""


@dataclass(frozen=True)
class ObjectPressureConfig:
    """What weighs on etcd: the seed names Events and large ConfigMaps."""

    top_configmaps: Annotated[int, Range(1, 100)] = 10
    """How many of the largest ConfigMaps are exported by name."""
    configmaps_interval_seconds: Annotated[float, Range(30, 86400)] = 300.0
    """How often ConfigMap sizes are read (a paginated LIST of every ConfigMap)."""


@dataclass(frozen=True)
class ScaleLimitsConfig:
    """The cluster sizes kube-ballast is built for (the seed's scale limits); usage is
    exported against them as counts and ratios."""

    nodes: Annotated[int, Range(1, None)] = 5000
    """Nodes in the cluster, control plane included."""
    pods: Annotated[int, Range(1, None)] = 150_000
    """Pods in the cluster that hold a node or wait for one (finished pods excluded)."""
    containers: Annotated[int, Range(1, None)] = 300_000
    """Regular containers of those pods."""
    pods_per_node: Annotated[int, Range(1, None)] = 100
    """Pods on one node (the kubelet's own default maximum is 110)."""


@dataclass(frozen=True)
class ClusterStateConfig:
    """What the exporter derives from watching nodes, Leases, pods and workloads:
    heartbeats, zone disruption, scale against limits, control-plane sizing, node
    pools, extended resources and zone spread.

    The node-lifecycle settings must repeat kube-controller-manager's flags: the
    exporter predicts what that controller will do, and predicts it wrong if they differ.
    """

    node_monitor_grace_period_seconds: Annotated[float, Range(0, 3600, low_exclusive=True)] = 50.0
    """--node-monitor-grace-period: a node Lease older than this is stale, and the
    node-lifecycle controller marks the node Unknown."""
    unhealthy_zone_threshold: Annotated[float, Range(0, 1)] = 0.55
    """--unhealthy-zone-threshold: share of NotReady nodes (more than two) that makes a
    zone PartialDisruption."""
    large_cluster_size_threshold: Annotated[int, Range(0, None)] = 50
    """--large-cluster-size-threshold: a PartialDisruption zone with more nodes than
    this keeps evicting at the secondary rate; a smaller one stops."""
    node_eviction_rate: Annotated[float, Range(0, None)] = 0.1
    """--node-eviction-rate: nodes per second tainted NoExecute in a Normal or fully
    disrupted zone."""
    secondary_node_eviction_rate: Annotated[float, Range(0, None)] = 0.01
    """--secondary-node-eviction-rate: nodes per second in a large PartialDisruption zone."""
    eviction_horizon_seconds: Annotated[float, Range(0, 86400, low_exclusive=True)] = 300.0
    """Pods whose eviction is predicted within this many seconds are counted per zone."""
    wave_window_seconds: Annotated[float, Range(0, 3600, low_exclusive=True)] = 120.0
    """Stale Leases whose onsets (renewTime + grace period) fall within this many
    seconds of each other form one correlated wave: the signature of a control-plane
    problem rather than of nodes dying one by one."""
    min_render_interval_seconds: Annotated[float, Range(1, 300)] = 10.0
    """The least time between two renders of these families in the background (one per
    scrape, just before it is due, when scrapes are further apart). A render costs
    150-300 ms of CPU at 5000 nodes; with scrapes closer than this (a short scrape
    interval, an HA pair, the receiver's guard reading the page) the families served
    are up to this old. A small cluster, or a demo, can afford 1 s."""
    zone_label: Annotated[str, NonEmpty()] = "topology.kubernetes.io/zone"
    """Node label naming the zone (with the default, the deprecated
    failure-domain.beta.kubernetes.io/zone is read too when it is missing). The
    node-lifecycle controller always uses the standard label, so with another one the
    zone-disruption metrics no longer mirror its view."""
    control_plane_label: Annotated[str, NonEmpty()] = "node-role.kubernetes.io/control-plane"
    """Node label (any value) marking control-plane nodes: sized against the seed's
    table, and left out of the worker count that chooses the row."""
    pool_labels: tuple[Annotated[str, NonEmpty()], ...] = (
        "example.com/node-pool",
        "cloud.google.com/gke-nodepool",
        "eks.amazonaws.com/nodegroup",
        "kubernetes.azure.com/agentpool",
        "karpenter.sh/nodepool",
    )
    """Node labels naming a node's pool or tenant, the first present wins: the simulator's
    label and the GKE, EKS, AKS and Karpenter ones. Nodes with none are in pool "";
    empty: no pool metrics."""
    max_workload_series: Annotated[int, Range(0, 10000)] = 200
    """Workloads at zone risk exported by name, the riskiest first (the rest are only
    counted)."""
    limits: ScaleLimitsConfig = field(default_factory=ScaleLimitsConfig)
    """The scale limits."""


@dataclass(frozen=True)
class ExporterConfig:
    """The exporter (``kube-ballast exporter``): probes and watches, serves /metrics."""

    listen: ListenConfig = field(default_factory=lambda: ListenConfig(port=9808))
    """Where /metrics and /healthz are served."""
    kubernetes: KubernetesAccessConfig = field(default_factory=KubernetesAccessConfig)
    """Access to the Kubernetes API."""
    apiservers: tuple[TargetConfig, ...] = ()
    """kube-apiserver instances, each probed on its own (not through a load balancer)."""
    schedulers: tuple[TargetConfig, ...] = ()
    """kube-scheduler instances (secure port, normally 10259)."""
    controller_managers: tuple[TargetConfig, ...] = ()
    """kube-controller-manager instances (secure port, normally 10257)."""
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    """etcd clusters."""
    network: NetworkPluginConfig = field(default_factory=NetworkPluginConfig)
    """The network plugin's agents."""
    objects: ObjectPressureConfig = field(default_factory=ObjectPressureConfig)
    """Object pressure on etcd."""
    state: ClusterStateConfig = field(default_factory=ClusterStateConfig)
    """Cluster state: heartbeats, zones, capacity, spread."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        yield from _unique_names(self.apiservers, "apiservers")
        yield from _unique_names(self.schedulers, "schedulers")
        yield from _unique_names(self.controller_managers, "controller_managers")


@dataclass(frozen=True)
class ReceiverAuthConfig:
    """How Alertmanager authenticates to the receiver's webhook (and clients to its
    other endpoints, except /healthz and /metrics).

    Set a bearer token, basic auth, or both (either one is then accepted): with neither,
    the receiver refuses to start. ``basic_auth_username`` and
    ``basic_auth_password_file`` go together.
    """

    bearer_token_file: str | None = None
    """File holding the bearer token Alertmanager sends (http_config.authorization). Read
    at start (missing or empty: the receiver does not start) and again within a second
    of the file changing, so a rotated Secret needs no restart."""
    basic_auth_username: str | None = None
    """User name for HTTP basic authentication (http_config.basic_auth)."""
    basic_auth_password_file: str | None = None
    """File holding the basic-auth password; reloaded like ``bearer_token_file``."""
    allow_unauthenticated: bool = False
    """Accept webhooks without credentials. For tests and demos on loopback only: anyone
    who can reach the port can then feed alerts to the remediations. Without it, the
    receiver refuses to start unless a bearer token or basic auth is configured."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        yield from _pair(self, "basic_auth_username", "basic_auth_password_file")
        if self.allow_unauthenticated and (
            self.bearer_token_file is not None or self.basic_auth_username is not None
        ):
            yield (
                "allow_unauthenticated",
                "cannot be true when credentials are configured (bearer_token_file or"
                " basic_auth_username)",
            )


@dataclass(frozen=True)
class ReceiverTLSConfig:
    """TLS on the receiver's port, optionally requiring client certificates.

    ``cert_file`` and ``key_file`` go together; ``client_ca_file`` needs them. The files
    are read when the receiver starts: rotate them with a restart.
    """

    cert_file: str | None = None
    """PEM server certificate (chain); null serves plain HTTP."""
    key_file: str | None = None
    """PEM private key of ``cert_file``."""
    client_ca_file: str | None = None
    """PEM bundle of CAs whose client certificates are required (Alertmanager's
    ``http_config.tls_config.cert_file``); null asks for no client certificate."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        yield from _pair(self, "cert_file", "key_file")
        if self.client_ca_file is not None and self.cert_file is None:
            yield "client_ca_file", "needs cert_file and key_file (client certificates need TLS)"


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass(frozen=True)
class LeaderElectionConfig:
    """Leader election among receiver replicas, on a coordination.k8s.io Lease.

    Every replica receives and records webhooks; only the Lease holder acts. The
    defaults are client-go's (15 s / 10 s / 2 s). ``renew_deadline_seconds`` must be
    below ``lease_duration_seconds`` and ``retry_period_seconds`` below that, so that a
    leader that cannot renew stops acting before anyone else may take over.
    """

    lease_name: Annotated[str, NonEmpty()] = "kube-ballast-receiver"
    """Name of the Lease, in ``receiver.remediations.namespace``."""
    lease_duration_seconds: Annotated[float, Range(0, 3600, low_exclusive=True)] = 15.0
    """How long a Lease that was not renewed keeps others away (leaseDurationSeconds)."""
    renew_deadline_seconds: Annotated[float, Range(0, 3600, low_exclusive=True)] = 10.0
    """A leader that has not renewed for this long stops acting."""
    retry_period_seconds: Annotated[float, Range(0, 600, low_exclusive=True)] = 2.0
    """How often the leader renews and the others try to acquire."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        if self.renew_deadline_seconds >= self.lease_duration_seconds:
            yield (
                "renew_deadline_seconds",
                f"must be less than lease_duration_seconds ({self.lease_duration_seconds:g}), "
                f"got {self.renew_deadline_seconds:g}",
            )
        if self.retry_period_seconds >= self.renew_deadline_seconds:
            yield (
                "retry_period_seconds",
                f"must be less than renew_deadline_seconds ({self.renew_deadline_seconds:g}), "
                f"got {self.retry_period_seconds:g}",
            )


@dataclass(frozen=True)
class MaintenanceWindowConfig:
    """A recurring time (UTC) in which no remediation runs: people are at work on the
    cluster, and an automated action would get in their way."""

    name: Annotated[str, NonEmpty()] = ""
    """Shown in the refusal's reason; unique."""
    days: tuple[Weekday, ...] = ()
    """Days the window starts on (``mon`` ... ``sun``); empty means every day."""
    start: Annotated[str, NonEmpty()] = "00:00"
    """Start time of day, ``HH:MM`` in UTC."""
    duration_minutes: Annotated[int, Range(1, 7 * 24 * 60)] = 60
    """Length of the window; it may run past midnight."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        hours, _, minutes = self.start.partition(":")
        if not (
            len(hours) == 2
            and len(minutes) == 2
            and hours.isdigit()
            and minutes.isdigit()
            and int(hours) < 24
            and int(minutes) < 60
        ):
            yield "start", f"must be a time of day HH:MM (UTC), got {_show(self.start)}"


@dataclass(frozen=True)
class ActionConfig:
    """One remediation action: which alerts trigger it and the limits it runs under.

    An action listed here still runs only when it is also in ``enabled_actions``, and
    only for real when both ``receiver.dry_run`` and its own ``dry_run`` are false.
    """

    name: Annotated[str, NonEmpty()] = ""
    """The action (``notify``, ``etcd-backup``, ``etcd-defrag``, ``etcd-recover-nospace``,
    ``eviction-pause``)."""
    alerts: tuple[str, ...] = ()
    """Alert names (the ``alertname`` label) that trigger it; ``*`` matches any alert."""
    dry_run: bool = True
    """Decide and record, but do not act (on top of the global ``receiver.dry_run``)."""
    require_approval: bool = False
    """Post the plan to chat with an id and wait for ``kube-ballast remediations approve
    ID`` (or ``POST /approvals/ID``) before acting."""
    max_per_hour: Annotated[int, Range(0, 1000)] = 2
    """Executions of this action in any sliding hour; 0 forbids it outright."""
    cooldown_seconds: Annotated[float, Range(0, 7 * 86400)] = 3600.0
    """Minimum time between two executions on the same target (a member, a node)."""
    max_nodes: Annotated[int, Range(0)] = 1
    """Most nodes one execution may touch."""
    max_pods: Annotated[int, Range(0)] = 0
    """Most pods one execution may touch."""
    max_members: Annotated[int, Range(0)] = 1
    """Most etcd members one execution may touch."""
    max_cluster_fraction: Annotated[float, Range(0, 1)] = 0.05
    """Most of the cluster's nodes, as a fraction, one execution may touch."""
    ttl_seconds: Annotated[float, Range(0, 7 * 86400, low_exclusive=True)] = 1800.0
    """For reversible actions (those that pause a safety mechanism): reverted after this
    long even if the alert never resolves."""
    precondition_wait_seconds: Annotated[float, Range(0, 3600)] = 240.0
    """How long a firing alert's record keeps waiting when the action's live check says
    "not yet" (evidence still forming, e.g. the heartbeat wave behind the congestion
    alert): re-checked every ``precondition_recheck_seconds``, run as soon as the check
    holds, refused when this long has passed since the alert arrived or when it
    resolves. Checks that waiting cannot change (a missing policy) refuse at once. 0:
    refuse at the first false check."""
    precondition_recheck_seconds: Annotated[float, Range(0, 300, low_exclusive=True)] = 10.0
    """Time between two live checks of a waiting record (each check may read the
    exporter or etcd)."""


@dataclass(frozen=True)
class NotificationsConfig:
    """Chat notifications through apprise: one message per alert group and decision."""

    urls_file: str | None = None
    """File with one apprise URL per line (``slack://...``, ``mmost://...``, ``json://...``;
    ``#`` starts a comment). The URLs carry credentials, hence a file. Null: decisions are
    only logged and recorded."""
    attempts: Annotated[int, Range(1, 20)] = 5
    """Attempts per message before it is counted as failed."""
    backoff_seconds: Annotated[float, Range(0, 300, low_exclusive=True)] = 2.0
    """Wait before the second attempt; doubled for each further one (with jitter)."""
    timeout_seconds: Annotated[float, Range(0, 300, low_exclusive=True)] = 15.0
    """Give up on one attempt after this long."""
    max_queue: Annotated[int, Range(1, 100000)] = 1000
    """Messages waiting to be sent; beyond that new ones are dropped (and counted)."""


@dataclass(frozen=True)
class KubeletProbeConfig:
    """Optional evidence that stale nodes are alive: a TCP connection to their kubelets."""

    enabled: bool = False
    """Probe a sample of the stale nodes' kubelets before pausing (off: the wave and the
    congested apiserver are the evidence)."""
    port: Annotated[int, Range(1, 65535)] = 10250
    """The kubelet port connected to, at each node's InternalIP."""
    sample: Annotated[int, Range(1, 1000)] = 10
    """Stale nodes probed per check."""
    timeout_seconds: Annotated[float, Range(0, 60, low_exclusive=True)] = 2.0
    """Connection timeout of one probe."""
    min_reachable_ratio: Annotated[float, Range(0, 1)] = 0.5
    """Share of the probed kubelets that must answer for the data plane to count as alive.
    Nodes whose kubelet does not answer are added to the pause's allow-list: their pods
    may still be evicted."""


@dataclass(frozen=True)
class EvictionGuardConfig:
    """The ``eviction-pause`` action: stop taint-based pod eviction while the apiserver is
    congested and node heartbeats are starved, and never leave it stopped.

    The pause is the ConfigMap ``kube-ballast/eviction-guard`` that the
    ValidatingAdmissionPolicy in deploy/eviction-guard/ reads (mode ``policy``), or, where
    that API is missing, the receiver removing the NoExecute taints of the nodes judged
    healthy at a bounded rate (mode ``taint-removal``). See docs/eviction-guard.md.
    """

    mode: Literal["policy", "taint-removal"] = "policy"
    """How evictions are stopped: the admission policy (Kubernetes >= 1.30) or removing
    the unreachable/not-ready NoExecute taints (older clusters)."""
    exporter_url: str | None = None
    """The exporter's /metrics URL. Each live check reads the congestion verdict and the
    heartbeat wave from the eviction-guard view next to it (the last path segment
    replaced by ``eviction-guard``), or from this page when the exporter predates the
    view. Required for the action to act."""
    min_wave_ratio: Annotated[float, Range(0, 1, low_exclusive=True)] = 0.2
    """Share of all nodes in the correlated wave of stale Leases needed to pause."""
    min_wave_zones: Annotated[int, Range(1, 100)] = 2
    """Zones the wave must span to pause: one zone going dark is a partition, not the
    control plane."""
    pause_seconds: Annotated[float, Range(60, 1800)] = 900.0
    """How far ahead ``expiresAt`` is set; renewed while the conditions still hold."""
    max_pause_seconds: Annotated[float, Range(60, 86400)] = 7200.0
    """Hard cap on one pause, renewals included: at the cap the pause ends whatever the
    conditions (and KubeEvictionPauseCapReached fires)."""
    max_renewals: Annotated[int, Range(0, 1000)] = 16
    """Most renewals of one pause."""
    renew_before_seconds: Annotated[float, Range(10, 1800)] = 300.0
    """Renew when ``expiresAt`` is closer than this (and the conditions hold)."""
    recovery_grace_factor: Annotated[float, Range(1, 20)] = 2.0
    """Resume once the wave is over and the apiserver is not congested for this many
    node-monitor grace periods (hysteresis)."""
    check_interval_seconds: Annotated[float, Range(0, 300, low_exclusive=True)] = 10.0
    """How often the leader re-checks a pause in force (renew, resume, cap, expiry)."""
    assume_service_account_credentials: bool = False
    """Skip detecting kube-controller-manager's ``--use-service-account-credentials``
    (needed: the policy matches the node-controller service account). For managed
    control planes whose controller-manager is invisible; detection refuses otherwise."""
    taint_removal_nodes_per_second: Annotated[float, Range(0, 1000, low_exclusive=True)] = 10.0
    """Mode ``taint-removal`` and the post-resume reconcile: node updates per second."""
    reconcile: bool = True
    """After resuming, bounce the NoExecute taint of nodes still NotReady so the
    taint-eviction controller, which dropped the evictions denied during the pause,
    schedules them again (honouring tolerations)."""
    kubelet_probe: KubeletProbeConfig = field(default_factory=KubeletProbeConfig)
    """Optional kubelet reachability probe."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        if self.max_pause_seconds < self.pause_seconds:
            yield "max_pause_seconds", "must be at least pause_seconds"
        if self.renew_before_seconds >= self.pause_seconds:
            yield "renew_before_seconds", "must be less than pause_seconds"
        if self.exporter_url is not None and not self.exporter_url.startswith(
            ("http://", "https://")
        ):
            yield "exporter_url", f"must be an http(s) URL, got {_show(self.exporter_url)}"


@dataclass(frozen=True)
class RemediationsConfig:
    """The guard kernel, the ledger and the actions behind the webhook.

    All state lives in Kubernetes objects in ``namespace`` (no database): ConfigMaps
    ``<state_prefix>-records`` (execution records), ``-limits`` (budgets and cooldowns)
    and ``-active`` (reversible actions and their expiry), the kill-switch ConfigMap and
    the leader Lease. The receiver's service account needs get/create/update on
    configmaps and leases there, and create on events.
    """

    kubernetes: KubernetesAccessConfig = field(default_factory=KubernetesAccessConfig)
    """Access to the Kubernetes API (state, leader election, events, actions)."""
    namespace: Annotated[str, NonEmpty()] = "kube-ballast"
    """Namespace of the state ConfigMaps and the Lease (it must exist)."""
    state_prefix: Annotated[str, NonEmpty()] = "kube-ballast-remediations"
    """Name prefix of the state ConfigMaps."""
    kill_switch_configmap: Annotated[str, NonEmpty()] = "kube-ballast-kill-switch"
    """ConfigMap whose ``paused: "true"`` stops every action (``kube-ballast remediations
    pause``). Unreadable means paused: the switch fails closed."""
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    """Which replica acts."""
    enabled_actions: tuple[str, ...] = ()
    """Actions allowed to run at all; anything else is refused (and notified)."""
    actions: tuple[ActionConfig, ...] = ()
    """The actions, their triggering alerts and limits; names unique."""
    max_actions_per_hour: Annotated[int, Range(0, 10000)] = 6
    """Executions that change the cluster, all actions together, in any sliding hour."""
    max_node_affecting_per_hour: Annotated[int, Range(0, 10000)] = 2
    """Executions that affect nodes (drain, cordon, pause eviction), in any sliding hour."""
    maintenance_windows: tuple[MaintenanceWindowConfig, ...] = ()
    """Times in which nothing runs."""
    approval_ttl_seconds: Annotated[float, Range(0, 7 * 86400, low_exclusive=True)] = 3600.0
    """How long a plan waits for approval before it is refused as expired."""
    record_retention_seconds: Annotated[float, Range(60, 90 * 86400)] = 7 * 86400.0
    """Finished execution records older than this are pruned. Alertmanager re-sends a
    firing group every repeat_interval with the same startsAt; records must outlive it
    for a re-send to be recognised (cooldowns protect the target either way)."""
    max_records: Annotated[int, Range(10, 2000)] = 300
    """Most execution records kept; the oldest finished ones go first (a ConfigMap holds
    at most 1 MiB)."""
    scan_interval_seconds: Annotated[float, Range(0, 300, low_exclusive=True)] = 2.0
    """How often the leader looks for recorded work (a replica that received the group
    wakes its own leader at once; others' are found by this scan)."""
    api_timeout_seconds: Annotated[float, Range(0, 300, low_exclusive=True)] = 10.0
    """Timeout of one Kubernetes API request."""
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    """Chat notifications."""
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    """The etcd clusters the etcd actions act on (usually the same as
    ``exporter.etcd``); an alert names its cluster in the ``etcd_cluster`` label."""
    eviction_guard: EvictionGuardConfig = field(default_factory=EvictionGuardConfig)
    """The eviction pause (action ``eviction-pause``)."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        yield from _unique_names(self.actions, "actions")
        yield from _unique_names(self.maintenance_windows, "maintenance_windows")
        seen: set[str] = set()
        for index, name in enumerate(self.enabled_actions):
            if name in seen:
                yield f"enabled_actions[{index}]", f"duplicate action {name!r}"
            seen.add(name)


@dataclass(frozen=True)
class ReceiverConfig:
    """The remediation receiver (``kube-ballast receiver``): Alertmanager's webhook."""

    listen: ListenConfig = field(default_factory=lambda: ListenConfig(port=9809))
    """Where the webhook, /metrics and /healthz are served."""
    auth: ReceiverAuthConfig = field(default_factory=ReceiverAuthConfig)
    """Authentication of incoming webhooks."""
    tls: ReceiverTLSConfig = field(default_factory=ReceiverTLSConfig)
    """TLS and client-certificate verification; off by default (plain HTTP)."""
    path: Annotated[str, NonEmpty()] = "/webhook/alertmanager"
    """URL path of the webhook (Alertmanager's ``webhook_configs[].url`` ends with it)."""
    max_body_bytes: Annotated[int, Range(1024, 1024**3)] = RECEIVER_DEFAULT_MAX_BODY_BYTES
    """Largest webhook body accepted; larger ones get 413. The default is about twice a
    realistic 5000-alert group (see docs/performance.md)."""
    max_alerts: Annotated[int, Range(1, 1_000_000)] = 10000
    """Most alerts in one group; more get 422. Alertmanager's ``webhook_configs[].max_alerts``
    truncates a group before sending it, and is the better place to cap."""
    dry_run: bool = True
    """Decide and record, but change nothing. Turn off only after reading the runbooks."""
    remediations: RemediationsConfig = field(default_factory=RemediationsConfig)
    """The guard kernel, ledger, leader election, actions and notifications."""

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        if not self.path.startswith("/"):
            yield "path", f"must start with '/', got {_show(self.path)}"
        elif self.path.rstrip("/") in RESERVED_RECEIVER_PATHS or self.path.startswith(
            "/approvals/"
        ):
            yield "path", f"is one of the receiver's own endpoints, got {_show(self.path)}"


@dataclass(frozen=True)
class Config:
    """Everything kube-ballast can be configured with, in one YAML file."""

    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Logging of every component."""
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    """The embedded Kubernetes API simulator."""
    exporter: ExporterConfig = field(default_factory=ExporterConfig)
    """The Prometheus exporter."""
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    """The Alertmanager webhook receiver that runs guarded remediations."""


def _pair(obj: object, first: str, second: str) -> Iterator[tuple[str, str]]:
    """Two optional settings that only make sense together."""
    if (getattr(obj, first) is None) != (getattr(obj, second) is None):
        missing, present = (first, second) if getattr(obj, first) is None else (second, first)
        yield missing, f"must be set together with {present}"


def _unique_names(items: tuple[Any, ...], key: str) -> Iterator[tuple[str, str]]:
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.name in seen:
            yield (
                f"{key}[{index}].name",
                f"duplicate name {item.name!r} (first used by item {seen[item.name]})",
            )
        seen.setdefault(item.name, index)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a YAML configuration file."""
    return config_from_mapping(_read_yaml(Path(path)))


def config_from_mapping(mapping: Mapping[str, Any] | None) -> Config:
    """Validate a parsed document (``None``, an empty file, gives the defaults)."""
    if mapping is None:
        return validate(Config())
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"the configuration must be a mapping, got {_show(mapping)}")
    config: Config = _build(Config, mapping, "")
    return validate(config)


def validate(config: Config) -> Config:
    """Check every value rule and cross-field rule; return ``config`` unchanged."""
    _check(Config, config, "")
    return config


def load_users_file(path: str, *, key_path: str) -> dict[str, str]:
    """Read a token -> username YAML mapping, naming ``key_path`` on failure.

    Error messages name entries by position, never by key: the keys are secrets.
    """
    data = _read_yaml(Path(path), key_path=key_path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of token to username, got {_show(data)}",
            key_path=key_path,
        )
    users: dict[str, str] = {}
    for position, (token, user) in enumerate(data.items(), start=1):
        if not isinstance(token, str) or not token.strip():
            raise ConfigError(
                f"{path}: entry {position}: token must be a string", key_path=key_path
            )
        if not isinstance(user, str) or not user.strip():
            raise ConfigError(
                f"{path}: entry {position}: username must be a non-empty string",
                key_path=key_path,
            )
        users[token] = user
    return users


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a repeated key is an error, not last-one-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_show(key)}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, *, key_path: str = "") -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"cannot read {path}: no such file", key_path=key_path) from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: not UTF-8 text", key_path=key_path) from None
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ConfigError(f"cannot read {path}: {reason}", key_path=key_path) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no objects
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = error.problem or error.context or "syntax error"
        raise ConfigError(f"{where}: invalid YAML: {problem}", key_path=key_path) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}", key_path=key_path) from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _optional_inner(tp: Any) -> Any:
    """``X`` for ``X | None``; anything else is not a type the loader supports."""
    args = [arg for arg in get_args(tp) if arg is not type(None)]
    if len(args) != 1 or len(get_args(tp)) != 2:
        raise TypeError(f"config types support only 'X | None' unions, not {tp!r}")
    return args[0]


def _build(cls: type, value: object, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping, got {_show(value)}", key_path=path)
    known = {f.name for f in _fields(cls)}
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"keys must be strings, got {_show(key)}", key_path=path)
        if key not in known:
            names = ", ".join(f.name for f in _fields(cls))
            raise ConfigError(f"unknown key (known: {names})", key_path=_join(path, key))
    hints = _hints(cls)
    kwargs = {
        f.name: _convert(hints[f.name], value[f.name], _join(path, f.name))
        for f in _fields(cls)
        if f.name in value
    }
    return cls(**kwargs)


def _convert(tp: Any, value: object, path: str, *, nullable: bool = False) -> Any:
    """Check ``value`` against ``tp`` and build the typed value; no coercion but int->float."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _convert(get_args(tp)[0], value, path, nullable=nullable)
    if _is_union(tp):
        if value is None:
            return None
        return _convert(_optional_inner(tp), value, path, nullable=True)

    def mismatch(expected: str) -> ConfigError:
        wanted = f"{expected} or null" if nullable else expected
        return ConfigError(f"expected {wanted}, got {_show(value)}", key_path=path)

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise mismatch("a mapping")
        return _build(tp, value, path)  # type: ignore[arg-type]
    if origin is Literal:
        choices = get_args(tp)
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            raise mismatch("one of " + ", ".join(_show(choice) for choice in choices))
        return value
    if origin in (tuple, list):
        args = get_args(tp)
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            raise TypeError(f"config types support only 'tuple[X, ...]', not {tp!r}")
        if not isinstance(value, list | tuple):
            raise mismatch("a list")
        items = [_convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        key_type, value_type = get_args(tp)
        if key_type is not str:
            raise TypeError(f"config mappings must have string keys, not {tp!r}")
        if not isinstance(value, Mapping):
            raise mismatch("a mapping")
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"keys must be strings, got {_show(key)}", key_path=path)
            result[key] = _convert(value_type, item, _join(path, key))
        return result
    if tp is bool:
        if not isinstance(value, bool):
            raise mismatch("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise mismatch("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise mismatch("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise mismatch("a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _check(tp: Any, value: Any, path: str) -> None:
    """Apply the Annotated rules and the groups' cross-field rules, depth first."""
    if get_origin(tp) is Annotated:
        base, *rules = get_args(tp)
        for rule in rules:
            reason = rule.check(value)
            if reason is not None:
                raise ConfigError(reason, key_path=path)
        _check(base, value, path)
        return
    if _is_union(tp):
        if value is not None:
            _check(_optional_inner(tp), value, path)
        return
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)  # type: ignore[arg-type]
        for f in _fields(tp):  # type: ignore[arg-type]
            _check(hints[f.name], getattr(value, f.name), _join(path, f.name))
        cross_checks = getattr(value, "_cross_checks", None)
        if cross_checks is not None:
            for key, reason in cross_checks():
                raise ConfigError(reason, key_path=_join(path, key))
        return
    origin = get_origin(tp)
    if origin in (tuple, list):
        for index, item in enumerate(value):
            _check(get_args(tp)[0], item, f"{path}[{index}]")
    elif origin is dict:
        for key, item in value.items():
            _check(get_args(tp)[1], item, _join(path, key))


def _show(value: object) -> str:
    """A value as a user wrote it in YAML, short enough for a one-line message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, int | float):
        return repr(value)
    return type(value).__name__


# --------------------------------------------------------------------------------------
# Documentation generated from the dataclasses
# --------------------------------------------------------------------------------------


@functools.cache
def attribute_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass, read from its source with ``ast``.

    An attribute docstring is the string literal right after an annotated field, the
    convention PEP 257 calls "attribute docstrings" (Sphinx and IDEs read them too).
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    classdef = tree.body[0]
    assert isinstance(classdef, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, following in zip(classdef.body, classdef.body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _field_doc(cls: type, name: str) -> str:
    doc = attribute_docs(cls).get(name)
    if not doc:
        raise RuntimeError(f"{cls.__name__}.{name} has no attribute docstring")
    return doc


def _list_item_type(tp: Any) -> Any | None:
    """The item type of a list-of-groups field, or None."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (tuple, list):
        item = get_args(tp)[0]
        if dataclasses.is_dataclass(item):
            return item
    return None


def key_paths(cls: type = Config, prefix: str = "") -> list[str]:
    """Every key path of the configuration (list items as ``name[]``), in order."""
    paths: list[str] = []
    for f in _fields(cls):
        path = _join(prefix, f.name)
        tp = _hints(cls)[f.name]
        paths.append(path)
        if dataclasses.is_dataclass(tp):
            paths.extend(key_paths(tp, path))  # type: ignore[arg-type]
        elif (item := _list_item_type(tp)) is not None:
            paths.extend(key_paths(item, f"{path}[]"))
    return paths


def _type_text(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *rules = get_args(tp)
        return f"{_type_text(base)} ({'; '.join(rule.describe() for rule in rules)})"
    if _is_union(tp):
        return f"{_type_text(_optional_inner(tp))} or null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if origin is Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in get_args(tp))
    if origin in (tuple, list):
        item = get_args(tp)[0]
        return (
            "list of mappings" if dataclasses.is_dataclass(item) else f"list of {_type_text(item)}"
        )
    if origin is dict:
        return f"mapping of string to {_type_text(get_args(tp)[1])}"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return names[tp]


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid double-quoted YAML scalar.
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot render {value!r}")


def _plain(text: str) -> str:
    """A docstring as one line of Markdown (RST's double backticks become single)."""
    return " ".join(text.split()).replace("``", "`")


def _cell(text: str) -> str:
    return _plain(text).replace("|", "\\|")


def _reference_sections(cls: type, instance: Any, path: str) -> Iterator[str]:
    doc = "\n\n".join(_plain(p) for p in inspect.cleandoc(cls.__doc__ or "").split("\n\n"))
    rows: list[str] = []
    nested: list[tuple[type, Any, str]] = []
    for f in _fields(cls):
        tp = _hints(cls)[f.name]
        key = _join(path, f.name)
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(tp):
            nested.append((tp, value, key))  # type: ignore[arg-type]
            default = "see below"
        else:
            default = f"`{_yaml_value(value)}`"
            if (item := _list_item_type(tp)) is not None:
                nested.append((item, item(), f"{key}[]"))
                default += ", items below"
            elif not value and "required" in _type_text(tp):
                default = "none: required"
        rows.append(
            f"| `{key}` | {_cell(_type_text(tp))} | {default} | {_cell(_field_doc(cls, f.name))} |"
        )
    yield f"## `{path}`\n\n{doc}\n\n| Key | Type | Default | Description |\n|---|---|---|---|\n"
    yield "\n".join(rows) + "\n"
    for nested_cls, nested_instance, nested_path in nested:
        yield "\n"
        yield from _reference_sections(nested_cls, nested_instance, nested_path)


def render_reference() -> str:
    """The Markdown reference of every setting (docs/config-reference.md)."""
    parts = [
        "# Configuration reference\n\n",
        "<!-- Generated from kubeballast/core/config.py by `kube-ballast config reference`"
        " (`make docs`). Edit the docstrings there, not this file. -->\n\n",
        "kube-ballast reads one YAML file, given with `--config PATH`. Every key is optional"
        " and has the default shown here. The file is validated once, at start: unknown"
        " keys, wrong types and values out of range are refused with one line naming the"
        " key path, for example `exporter.etcd.clusters[1].endpoints: must not be empty`."
        " No value is coerced, except that an integer is accepted where a number is"
        " expected. `kube-ballast config check --config PATH` validates a file;"
        " `kube-ballast config example` prints an annotated example"
        " ([config.example.yaml](config.example.yaml)).\n\n",
        "Secrets (tokens, passwords, private keys) are never values in this file: settings"
        " ending in `_file` name a file that the component reads when it starts.\n\n",
        "In the key paths, `name[]` stands for every item of the list `name`.\n\n",
    ]
    root = Config()
    for f in _fields(Config):
        section_type = _hints(Config)[f.name]
        parts.extend(_reference_sections(section_type, getattr(root, f.name), f.name))
        parts.append("\n")
    return "".join(parts).rstrip("\n") + "\n"


def example_config() -> Config:
    """The configuration docs/config.example.yaml shows: defaults plus sample targets."""
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"

    def target(name: str, url: str) -> TargetConfig:
        return TargetConfig(
            name=name, url=url, bearer_token_file=f"{sa}/token", ca_file=f"{sa}/ca.crt"
        )

    mtls = TargetConfig(
        name="apiserver-2",
        url="https://10.0.0.12:6443",
        client_cert_file="/etc/kube-ballast/pki/client.crt",
        client_key_file="/etc/kube-ballast/pki/client.key",
        ca_file="/etc/kube-ballast/pki/ca.crt",
        timeout_seconds=10.0,
        interval_seconds=30.0,
    )
    masters = ("10.0.0.11", "10.0.0.12", "10.0.0.13")
    etcd_pki = "/etc/kube-ballast/etcd"
    config = Config(
        logging=LoggingConfig(level="INFO", format="json"),
        simulator=SimulatorConfig(kubeconfig_path="simulator.kubeconfig"),
        exporter=ExporterConfig(
            listen=ListenConfig(host="127.0.0.1", port=9808),
            kubernetes=KubernetesAccessConfig(in_cluster=True),
            apiservers=(target("apiserver-1", "https://10.0.0.11:6443"), mtls),
            schedulers=(target("scheduler-1", "https://10.0.0.11:10259"),),
            controller_managers=(target("controller-manager-1", "https://10.0.0.11:10257"),),
            etcd=EtcdConfig(
                clusters=(
                    EtcdClusterConfig(
                        name="main",
                        endpoints=tuple(f"https://{address}:2379" for address in masters),
                        ca_file=f"{etcd_pki}/ca.crt",
                        cert_file=f"{etcd_pki}/client.crt",
                        key_file=f"{etcd_pki}/client.key",
                        backup=EtcdBackupConfig(
                            directory="/var/backups/etcd/main",
                            hook_command=("/usr/local/bin/upload-etcd-snapshot",),
                        ),
                        restore=EtcdRestoreConfig(
                            initial_cluster_token="etcd-main",
                            members=tuple(
                                EtcdMemberConfig(
                                    name=f"etcd-{index}",
                                    peer_url=f"https://{address}:2380",
                                    client_url=f"https://{address}:2379",
                                )
                                for index, address in enumerate(masters, start=1)
                            ),
                        ),
                    ),
                    EtcdClusterConfig(
                        name="events",
                        endpoints=tuple(f"https://{address}:2381" for address in masters),
                        ca_file=f"{etcd_pki}/ca.crt",
                        cert_file=f"{etcd_pki}/client.crt",
                        key_file=f"{etcd_pki}/client.key",
                    ),
                )
            ),
        ),
        receiver=ReceiverConfig(
            listen=ListenConfig(host="127.0.0.1", port=9809),
            auth=ReceiverAuthConfig(
                bearer_token_file="/etc/kube-ballast/receiver/token",
                basic_auth_username=None,
                basic_auth_password_file=None,
            ),
            dry_run=True,
            remediations=RemediationsConfig(
                kubernetes=KubernetesAccessConfig(in_cluster=True),
                enabled_actions=("notify",),
                actions=(
                    ActionConfig(
                        name="notify",
                        alerts=("*",),
                        dry_run=False,
                        max_per_hour=60,
                        cooldown_seconds=0.0,
                    ),
                    ActionConfig(
                        name="etcd-defrag",
                        alerts=("EtcdDatabaseFragmented",),
                        require_approval=True,
                        max_per_hour=3,
                        cooldown_seconds=6 * 3600.0,
                        max_members=3,
                    ),
                ),
                maintenance_windows=(
                    MaintenanceWindowConfig(
                        name="upgrades", days=("tue",), start="22:00", duration_minutes=120
                    ),
                ),
                notifications=NotificationsConfig(
                    urls_file="/etc/kube-ballast/receiver/apprise-urls"
                ),
            ),
        ),
    )
    # The receiver's etcd actions act on the clusters the exporter watches.
    remediations = dataclasses.replace(config.receiver.remediations, etcd=config.exporter.etcd)
    return dataclasses.replace(
        config, receiver=dataclasses.replace(config.receiver, remediations=remediations)
    )


def _example_lines(cls: type, instance: Any, indent: int, comments: bool) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for f in _fields(cls):
        tp = _hints(cls)[f.name]
        value = getattr(instance, f.name)
        if comments:
            for paragraph in _field_doc(cls, f.name).split("\n\n"):
                lines.extend(
                    textwrap.wrap(
                        _plain(paragraph),
                        width=88,
                        initial_indent=f"{pad}# ",
                        subsequent_indent=f"{pad}# ",
                    )
                )
        if dataclasses.is_dataclass(tp):
            lines.append(f"{pad}{f.name}:")
            lines.extend(_example_lines(type(value), value, indent + 2, comments))
        elif _list_item_type(tp) is not None and value:
            lines.append(f"{pad}{f.name}:")
            for position, item in enumerate(value):
                # Comment each key once, on the list's first item.
                item_lines = _example_lines(type(item), item, indent + 4, comments and not position)
                first = next(
                    i for i, line in enumerate(item_lines) if not line.lstrip().startswith("#")
                )
                for i in range(first):
                    item_lines[i] = item_lines[i][2:]
                item_lines[first] = f"{pad}  - {item_lines[first].lstrip()}"
                lines.extend(item_lines)
        else:
            lines.append(f"{pad}{f.name}: {_yaml_value(value)}")
    return lines


def render_example() -> str:
    """The annotated example configuration (docs/config.example.yaml)."""
    header = [
        "# kube-ballast configuration: an annotated example covering every setting.",
        "# Generated from kubeballast/core/config.py by `kube-ballast config example`",
        "# (`make docs`); the reference with types and defaults is docs/config-reference.md.",
        "# Every key is optional. Validate a file with:",
        "#   kube-ballast --config FILE config check",
    ]
    root = example_config()
    body: list[str] = []
    for f in _fields(Config):
        section = getattr(root, f.name)
        body.append("")
        body.extend(
            textwrap.wrap(
                _plain(_field_doc(Config, f.name)),
                width=88,
                initial_indent="# ",
                subsequent_indent="# ",
            )
        )
        body.append(f"{f.name}:")
        body.extend(_example_lines(type(section), section, 2, comments=True))
    return "\n".join(header + body) + "\n"
