"""Settings of one simulated cluster: its shape, its clock and its control-plane flags.

The simulator imports no product code, so it has its own plain settings type; the
command line (``kube-ballast simulate``) builds one from the validated product config.
Defaults are the real components' defaults wherever a real flag exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeLifecycleSettings:
    """The node-lifecycle controller's flags (kube-controller-manager defaults)."""

    node_monitor_period_seconds: float = 5.0
    """--node-monitor-period: how often the controller checks node health."""
    node_monitor_grace_period_seconds: float = 50.0
    """--node-monitor-grace-period: lease age after which a node is marked Unknown."""
    node_eviction_rate: float = 0.1
    """--node-eviction-rate: nodes per second tainted NoExecute in a healthy zone."""
    secondary_node_eviction_rate: float = 0.01
    """--secondary-node-eviction-rate: the rate in a partially disrupted large zone."""
    unhealthy_zone_threshold: float = 0.55
    """--unhealthy-zone-threshold: NotReady fraction that makes a zone PartialDisruption."""
    large_cluster_size_threshold: int = 50
    """--large-cluster-size-threshold: zones larger than this keep evicting when disrupted."""
    default_toleration_seconds: int = 300
    """DefaultTolerationSeconds admission: tolerationSeconds added to every pod."""
    use_service_account_credentials: bool = True
    """--use-service-account-credentials (kubeadm's default): the controllers act as
    ``system:serviceaccount:kube-system:<name>-controller`` and the controller-manager
    creates those ServiceAccounts; false: everything acts as
    ``system:kube-controller-manager``."""


@dataclass(frozen=True)
class ScenarioSettings:
    """The shape of the generated cluster."""

    nodes: int = 500
    """Worker nodes (control-plane nodes come on top)."""
    zones: int = 3
    """Zones the nodes spread over (topology.kubernetes.io/zone zone-a, zone-b ...)."""
    pods_per_node: int = 30
    """Pods scheduled on each worker node (the seed's limit is 100)."""
    containers_per_pod: int = 2
    """Containers in each workload pod (the seed's limit: 300 000 containers in all)."""
    control_plane_nodes: int = 3
    """Control-plane nodes, labelled node-role.kubernetes.io/control-plane."""
    seed: int = 1
    """Random seed: the same settings give the same cluster."""
    users: dict[str, str] = field(default_factory=dict)
    """Bearer token -> username, on top of the built-in admin token."""


@dataclass(frozen=True)
class SimulatorSettings:
    """Everything one simulator process needs."""

    host: str = "127.0.0.1"
    """Address to listen on; loopback only."""
    port: int = 0
    """API server port; 0 picks a free one."""
    clock_factor: float = 1.0
    """Simulated seconds per real second (10 makes a 5-minute toleration last 30 s)."""
    kubelets: bool = True
    """Run simulated kubelets that renew node Leases and node status."""
    controllers: bool = True
    """Run the simulated node-lifecycle and taint-eviction controllers."""
    kubeconfig_path: str | None = None
    """Where to write a kubeconfig for clients; None writes none."""
    admission_policy_api: bool = True
    """Serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy and its bindings
    (GA in Kubernetes 1.30); false plays an older cluster without them."""
    history_seconds: float = 300.0
    """Simulated seconds of write history kept for watches and continue tokens
    (etcd's apiserver compacts every 5 minutes)."""
    scenario: ScenarioSettings = field(default_factory=ScenarioSettings)
    node_lifecycle: NodeLifecycleSettings = field(default_factory=NodeLifecycleSettings)
