"""Bring the whole demo up on loopback, and take it down again.

Why this module: the README's first command should show kube-ballast doing its job,
end to end, with the real parts: a simulated cluster, a real etcd cluster standing in
for the control plane's etcd, the exporter, real Prometheus evaluating the shipped
rules, real Alertmanager with the shipped routing, and the receiver acting (not in dry
run) on the simulator and on etcd. Everything lives in one temporary folder, listens on
free loopback ports and is started and stopped by this module (by PID, see
``processes.py``).

What differs from a production setup, and why (docs/demo.md says the same to users):

- The simulator runs faster than real time (``--clock-factor``, 2 by default): the
  50 s grace period takes 25 s and the 300 s toleration 150 s. The exporter reads the
  simulator's clock (``kubeballast.demo.exporter``).
- Scrape and rule evaluation every 5 s, every rule's ``for:`` capped (20 s by default;
  ``--shipped-for`` keeps the shipped ones, up to 10 minutes), and Alertmanager's
  ``group_wait``/``group_interval`` divided by the clock factor, so that a scenario
  takes minutes rather than a quarter of an hour. The alert path runs in real time
  while the cluster's clock runs faster, so the factor stays low: in production the
  pause lands about 85 s after the heartbeats stop, before even the pods tolerating an
  unreachable node for 60 s go (at 50 s + 60 s); at a factor of 2 they would go some
  57 s into the congestion and the pause lands at about 30 s. At a factor of 5 they go
  at 23 s, before the alert path can finish.
- The ``oncall`` receiver of the shipped Alertmanager configuration has no integration
  (nobody is paged by a demo); the ``kube-ballast`` receiver points at the local
  receiver with a generated bearer token. Routing, grouping and inhibition are as
  shipped; ``fast`` (the tests) sets ``group_wait``/``group_interval`` to 1 s / 5 s.
- The receiver runs with ``dry_run: false`` and the actions the demo needs enabled,
  with budgets sized for repeated scenarios rather than for production.

The state file (``--state-file``; by default in ``$XDG_RUNTIME_DIR`` or the temporary
folder's parent) names the ports, PIDs and token files, so that
``kube-ballast demo scenario NAME`` can find a running demo. It is mode 0600 and
removed when the demo stops.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubeballast.core.config import load_config
from kubeballast.demo import client
from kubeballast.demo.processes import ProcessError, Processes, log_tail

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = REPO_ROOT / "alerts"
ALERTMANAGER_EXAMPLE = REPO_ROOT / "alerts" / "alertmanager" / "alertmanager.yml"
GUARD_MANIFESTS = REPO_ROOT / "deploy" / "eviction-guard"

CLUSTER = "demo"
"""Prometheus' external label ``cluster`` (the Kubernetes cluster's name)."""
ETCD_CLUSTER = "main"
RECEIVER_NAMESPACE = "kube-ballast"
NODE_USER_NODE = "node-0000"
"""The node whose Lease the congestion scenario renews over HTTP (see scenarios.py)."""
START_TIMEOUT_SECONDS = 180.0
"""Each part's deadline to become ready: generous, a loaded two-core machine is slow
to generate a 500-node cluster and to start Prometheus."""

BINARIES = {
    "etcd": "etcd-server",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
}

# Actions the demo enables when the receiver has them, with the alerts that trigger
# them (the rules' `automation` label names the same action).
_DEMO_ACTIONS: dict[str, list[str]] = {
    "notify": ["*"],
    "etcd-recover-nospace": ["EtcdNoSpaceAlarm"],
    "eviction-pause": ["KubeApiserverCongested", "KubeNodeHeartbeatStorm"],
}


class DemoError(RuntimeError):
    """The demo could not start or a part of it failed: one message saying which."""


@dataclass(frozen=True)
class DemoOptions:
    """How big and how fast the demo is; ``kube-ballast demo`` flags."""

    nodes: int = 500
    zones: int = 3
    pods_per_node: int = 30
    clock_factor: float = 2.0
    """Simulated seconds per real second. The alert path (scrapes, ``for:``,
    Alertmanager, the receiver) runs in real time: at 2 the pause lands well before the
    first pods' tolerations run out, as in production (docs/demo.md)."""
    interval_seconds: float = 5.0
    """Prometheus' scrape and evaluation interval."""
    for_cap_seconds: float | None = 20.0
    """Every rule's ``for:`` capped to this; None keeps the shipped durations."""
    fast_notifications: bool = False
    """Alertmanager's group_wait 1 s and group_interval 5 s (the tests)."""
    etcd_members: int = 3
    etcd_quota_bytes: int = 8 * 1024 * 1024
    """etcd's --quota-backend-bytes: small, so that etcd-nospace fills it in seconds."""
    state_file: str = ""


def default_state_file() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "kube-ballast-demo.json"
    return Path(tempfile.gettempdir()) / f"kube-ballast-demo-{os.getuid()}.json"


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else "")
    if not path:
        raise DemoError(
            f"{name} is not installed: the demo runs the real one (Debian package "
            f"{BINARIES.get(name, name)}; `make run` installs it when run as root)"
        )
    return path


_DURATION = re.compile(r"^(\d+)([smh])$")
_FOR_LINE = re.compile(r"^(\s+for: )(\S+)\s*$", re.MULTILINE)


def _seconds(text: str) -> int | None:
    """A Prometheus-style duration of one unit (``30s``, ``5m``, ``1h``) in seconds."""
    duration = _DURATION.match(text)
    if duration is None:
        return None
    return int(duration.group(1)) * {"s": 1, "m": 60, "h": 3600}[duration.group(2)]


def cap_for(text: str, cap_seconds: float | None) -> str:
    """Rule-file text with every ``for:`` longer than ``cap_seconds`` set to it."""
    if cap_seconds is None:
        return text

    def shorten(match: re.Match[str]) -> str:
        seconds = _seconds(match.group(2))
        if seconds is None:
            return match.group(0)
        if seconds <= cap_seconds:
            return match.group(0)
        return f"{match.group(1)}{max(1, round(cap_seconds))}s"

    return _FOR_LINE.sub(shorten, text)


def available_actions() -> list[str]:
    """The receiver's action names (the demo enables those it knows and they have)."""
    from kubeballast.remediations.actions import default_actions

    return sorted(default_actions())


@dataclass
class Demo:
    """A running demo: its folder, children and endpoints (also the state file)."""

    options: DemoOptions
    directory: Path
    processes: Processes
    state_file: Path
    state: dict[str, Any] = field(default_factory=dict)

    # -------------------------------------------------------------------- bring-up

    @classmethod
    def start(cls, options: DemoOptions, say: Callable[[str], None]) -> Demo:
        """Start everything; on failure, stop what was started and raise DemoError."""
        for name in ("etcd", "prometheus", "prometheus-alertmanager"):
            binary(name)
        directory = Path(tempfile.mkdtemp(prefix="kube-ballast-demo-"))
        state_file = Path(options.state_file) if options.state_file else default_state_file()
        (directory / "logs").mkdir()
        demo = cls(options, directory, Processes(directory / "logs"), state_file)
        try:
            demo._start(say)
        except BaseException:
            demo.stop()
            raise
        return demo

    def _wait(self, what: str, check: Callable[[], bool], child_names: list[str]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            for child in self.processes.children:
                if child.name in child_names:
                    try:
                        child.check()
                    except ProcessError as error:
                        raise DemoError(f"{what} did not start: {error}") from None
            if check():
                return
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {c.name}\n{log_tail(c.log_path)}"
                    for c in self.processes.children
                    if c.name in child_names
                )
                raise DemoError(f"{what} not ready within {START_TIMEOUT_SECONDS:g} s\n{logs}")
            time.sleep(0.2)  # polling readiness, bounded by the deadline

    def _secret(self, name: str, value: str) -> Path:
        path = self.directory / name
        path.write_text(value + "\n")
        path.chmod(0o600)
        return path

    def _start(self, say: Callable[[str], None]) -> None:
        o = self.options
        d = self.directory
        py = sys.executable
        receiver_token = self._secret("receiver-token", secrets.token_urlsafe(24))
        node_token = secrets.token_urlsafe(24)
        users = self._secret(
            "simulator-users.yaml", yaml.safe_dump({node_token: f"system:node:{NODE_USER_NODE}"})
        )

        # etcd: the control plane's etcd, a real cluster with a small quota.
        say(f"starting etcd ({o.etcd_members} members)")
        etcd = self._start_etcd()

        # The simulator.
        say(
            f"starting the simulator: {o.nodes} nodes in {o.zones} zones, "
            f"{o.pods_per_node} pods per node, clock x{o.clock_factor:g}"
        )
        sim_config = d / "simulator.yaml"
        sim_config.write_text(
            yaml.safe_dump({"simulator": {"scenario": {"users_file": str(users)}}})
        )
        kubeconfig = d / "simulator.kubeconfig"
        self.processes.start(
            "simulator",
            [
                py, "-m", "kubeballast", "--config", str(sim_config), "--log-level", "WARNING",
                "simulate", "--nodes", str(o.nodes), "--zones", str(o.zones),
                "--pods-per-node", str(o.pods_per_node), "--clock-factor", str(o.clock_factor),
                "--kubeconfig", str(kubeconfig),
            ],
        )  # fmt: skip
        self._wait("the simulator", kubeconfig.exists, ["simulator"])
        sim_url, admin_token = client.read_kubeconfig(kubeconfig)
        self._wait("the simulator", lambda: client.ok(f"{sim_url}/readyz"), ["simulator"])
        admin_token_file = self._secret("simulator-admin-token", admin_token)
        sim_state = client.get_json(f"{sim_url}/_sim/state", token=admin_token)
        self._prepare_cluster(sim_url, admin_token)

        # The exporter and the receiver share one configuration file.
        exporter_port, receiver_port, am_port, prom_port = free_ports(4)
        actions = [a for a in _DEMO_ACTIONS if a in available_actions()]
        config = self._config(
            sim_url, kubeconfig, admin_token_file, sim_state, etcd, receiver_token,
            exporter_port, receiver_port, actions,
        )  # fmt: skip
        config_path = d / "kube-ballast.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        load_config(str(config_path))  # a mistake here is ours: fail before starting
        say("starting the exporter and the receiver")
        self.processes.start(
            "exporter",
            [
                py, "-m", "kubeballast.demo.exporter", "--config", str(config_path),
                "--simulator-kubeconfig", str(kubeconfig),
            ],
        )  # fmt: skip
        self.processes.start(
            "receiver", [py, "-m", "kubeballast", "--config", str(config_path), "receiver"]
        )
        exporter_url = f"http://127.0.0.1:{exporter_port}"
        receiver_url = f"http://127.0.0.1:{receiver_port}"
        # A first verified snapshot, as a cluster with backups has: without one the
        # exporter reports its backup source down (and EtcdBackupStale would fire).
        backup = self.processes.start(
            "etcd-backup",
            [py, "-m", "kubeballast", "--config", str(config_path), "etcd", "backup"],
        )
        self._wait("the first etcd backup", lambda: backup.process.poll() is not None, [])
        if backup.process.returncode != 0:
            raise DemoError(f"the first etcd backup failed:\n{log_tail(backup.log_path)}")
        self.processes.children.remove(backup)  # done: not a part to supervise
        self._wait("the exporter", lambda: client.ok(f"{exporter_url}/readyz"), ["exporter"])
        self._wait("the receiver", lambda: client.ok(f"{receiver_url}/healthz"), ["receiver"])

        say("starting Alertmanager and Prometheus")
        am_url = f"http://127.0.0.1:{am_port}"
        am_config = d / "alertmanager.yml"
        am_config.write_text(
            yaml.safe_dump(self._alertmanager_config(receiver_url, receiver_token), sort_keys=False)
        )
        self.processes.start(
            "alertmanager",
            [
                binary("prometheus-alertmanager"),
                f"--config.file={am_config}",
                f"--storage.path={d / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
        )
        prom_url = f"http://127.0.0.1:{prom_port}"
        prom_config = d / "prometheus.yml"
        prom_config.write_text(
            yaml.safe_dump(self._prometheus_config(exporter_port, receiver_port, am_port))
        )
        interval = f"{max(1, round(o.interval_seconds))}s"
        self.processes.start(
            "prometheus",
            [
                binary("prometheus"),
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={d / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                f"--rules.alert.resend-delay={interval}",
                "--log.level=warn",
            ],
        )
        self._wait("Alertmanager", lambda: client.ok(f"{am_url}/-/ready"), ["alertmanager"])
        self._wait("Prometheus", lambda: client.ok(f"{prom_url}/-/ready"), ["prometheus"])

        self.state = {
            "pid": os.getpid(),
            "directory": str(d),
            "cluster": CLUSTER,
            "options": asdict(o),
            "simulator": {
                "url": sim_url,
                "kubeconfig": str(kubeconfig),
                "node": NODE_USER_NODE,
                "node_token_file": str(self._secret("simulator-node-token", node_token)),
            },
            "etcd": etcd,
            "exporter": {"url": exporter_url},
            "receiver": {
                "url": receiver_url,
                "token_file": str(receiver_token_path(d)),
                "actions": actions,
            },
            "prometheus": {"url": prom_url},
            "alertmanager": {"url": am_url},
            "children": [{"name": c.name, "pid": c.pid} for c in self.processes.children],
        }
        self._write_state()

    def _start_etcd(self) -> dict[str, Any]:
        o = self.options
        etcd = binary("etcd")
        token = f"kube-ballast-demo-{uuid.uuid4().hex[:12]}"
        ports = free_ports(2 * o.etcd_members)
        members: list[dict[str, Any]] = [
            {
                "name": f"etcd-{i}",
                "client_url": f"http://127.0.0.1:{ports[2 * i]}",
                "peer_url": f"http://127.0.0.1:{ports[2 * i + 1]}",
            }
            for i in range(o.etcd_members)
        ]
        initial = ",".join(f"{m['name']}={m['peer_url']}" for m in members)
        for member in members:
            child = self.processes.start(
                member["name"],
                [
                    etcd,
                    f"--name={member['name']}",
                    f"--data-dir={self.directory / (member['name'] + '.etcd')}",
                    f"--listen-client-urls={member['client_url']}",
                    f"--advertise-client-urls={member['client_url']}",
                    f"--listen-peer-urls={member['peer_url']}",
                    f"--initial-advertise-peer-urls={member['peer_url']}",
                    f"--initial-cluster={initial}",
                    f"--initial-cluster-token={token}",
                    "--initial-cluster-state=new",
                    # A 1 s election timeout: a loaded machine does not cause elections.
                    "--heartbeat-interval=100",
                    "--election-timeout=1000",
                    f"--quota-backend-bytes={o.etcd_quota_bytes}",
                    "--logger=zap",
                    "--log-outputs=stderr",
                ],
            )
            member["pid"] = child.pid
        names = [m["name"] for m in members]

        def healthy() -> bool:
            for member in members:
                try:
                    answer = client.get_json(f"{member['client_url']}/health", timeout=3.0)
                except (client.UnreachableError, ValueError):
                    return False
                if answer.get("health") != "true":
                    return False
            return True

        self._wait("etcd", healthy, names)
        return {
            "cluster": ETCD_CLUSTER,
            "endpoints": [m["client_url"] for m in members],
            "members": members,
            "quota_bytes": o.etcd_quota_bytes,
        }

    def _prepare_cluster(self, sim_url: str, token: str) -> None:
        """The receiver's namespace, and the eviction guard's admission policy, binding
        and FlowSchema when the repository has their manifests (deploy/eviction-guard/)."""
        client.send_json(
            f"{sim_url}/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RECEIVER_NAMESPACE}},
            token=token,
        )
        plurals = {
            "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
            "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
            "FlowSchema": "flowschemas",
            "PriorityLevelConfiguration": "prioritylevelconfigurations",
        }
        # The receiver's FlowSchema too: the guard refuses to pause without it (its
        # pause write must not be shed by the congestion it is for).
        for name in ("policy.yaml", "binding.yaml", "flowcontrol.yaml"):
            path = GUARD_MANIFESTS / name
            if not path.exists():
                continue
            for doc in yaml.safe_load_all(path.read_text()):
                if not isinstance(doc, dict) or doc.get("kind") not in plurals:
                    continue
                api = doc["apiVersion"]
                status, answer = client.send_json(
                    f"{sim_url}/apis/{api}/{plurals[doc['kind']]}", doc, token=token
                )
                if status not in (200, 201, 409):
                    raise DemoError(f"the simulator refused {path}: HTTP {status}: {answer}")

    def _config(
        self,
        sim_url: str,
        kubeconfig: Path,
        admin_token_file: Path,
        sim_state: dict[str, Any],
        etcd: dict[str, Any],
        receiver_token: Path,
        exporter_port: int,
        receiver_port: int,
        actions: list[str],
    ) -> dict[str, Any]:
        def target(name: str, url: str) -> dict[str, Any]:
            return {
                "name": name,
                "url": url,
                "bearer_token_file": str(admin_token_file),
                "interval_seconds": 2.0,
                "timeout_seconds": 2.0,
            }

        components = sim_state.get("components", {})
        etcd_cluster = {
            "name": ETCD_CLUSTER,
            "endpoints": etcd["endpoints"],
            "backup": {"directory": str(self.directory / "etcd-backups")},
        }
        guard: dict[str, Any] = {}
        if "eviction-pause" in actions:
            # The action re-checks the congestion verdict and the heartbeat wave on the
            # exporter's /metrics before pausing, and while a pause is in force.
            guard["eviction_guard"] = {
                "exporter_url": f"http://127.0.0.1:{exporter_port}/metrics",
                "check_interval_seconds": 2.0,
            }
        return {
            "logging": {"level": "INFO"},
            "exporter": {
                "listen": {"host": "127.0.0.1", "port": exporter_port},
                "kubernetes": {"kubeconfig_path": str(kubeconfig)},
                "apiservers": [target("apiserver-1", sim_url)],
                # Fresh cluster-state families at every scrape: a demo's cluster is small
                # and its time compressed (a 5000-node one renders every 5 s at most).
                "state": {"min_render_interval_seconds": max(1.0, self.options.nodes / 1000)},
                "schedulers": [
                    target("kube-scheduler", c["url"])
                    for n, c in components.items()
                    if n == "kube-scheduler"
                ],
                "controller_managers": [
                    target("kube-controller-manager", c["url"])
                    for n, c in components.items()
                    if n == "kube-controller-manager"
                ],
                "etcd": {"clusters": [etcd_cluster]},
            },
            "receiver": {
                "listen": {"host": "127.0.0.1", "port": receiver_port},
                "auth": {"bearer_token_file": str(receiver_token)},
                "dry_run": False,
                "remediations": {
                    "kubernetes": {"kubeconfig_path": str(kubeconfig)},
                    "namespace": RECEIVER_NAMESPACE,
                    "enabled_actions": actions,
                    "actions": [
                        {
                            "name": name,
                            "alerts": _DEMO_ACTIONS[name],
                            "dry_run": False,
                            # Budgets for a demo run repeatedly, not for production.
                            "max_per_hour": 100,
                            "cooldown_seconds": 0,
                            "max_nodes": 5000,
                            "max_members": 100,
                            "max_cluster_fraction": 1.0,
                            # An alert that arrives before its evidence (the wave)
                            # waits for it, re-checked at the guard's pace.
                            "precondition_recheck_seconds": 2.0,
                        }
                        for name in actions
                    ],
                    "max_actions_per_hour": 100,
                    "max_node_affecting_per_hour": 100,
                    "scan_interval_seconds": 1.0,
                    "etcd": {"clusters": [etcd_cluster]},
                    **guard,
                },
            },
        }

    def _alertmanager_config(self, receiver_url: str, token_file: Path) -> dict[str, Any]:
        config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
        for route in [config["route"], *config["route"].get("routes", [])]:
            for key, fast in (("group_wait", 1), ("group_interval", 5)):
                if key not in route and route is not config["route"]:
                    continue
                if self.options.fast_notifications:
                    route[key] = f"{fast}s"
                else:
                    # Alertmanager's waits run as much faster as the cluster's clock.
                    shipped = _seconds(str(route[key]))
                    if shipped is not None:
                        route[key] = f"{max(1, round(shipped / self.options.clock_factor))}s"
        for receiver in config["receivers"]:
            hooks = receiver.get("webhook_configs", [])
            if receiver["name"] == "kube-ballast":
                for hook in hooks:
                    hook["url"] = f"{receiver_url}/webhook/alertmanager"
                    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
            else:
                # Nobody is paged by a demo: the other receivers get no integration.
                for key in [key for key in receiver if key.endswith("_configs")]:
                    del receiver[key]
        return config

    def _prometheus_config(self, exporter_port: int, receiver_port: int, am_port: int) -> Any:
        rules = self.directory / "rules"
        rules.mkdir()
        copies = []
        for rule_file in sorted(RULES_DIR.glob("*.yaml")):
            copy = rules / rule_file.name
            copy.write_text(cap_for(rule_file.read_text(), self.options.for_cap_seconds))
            copies.append(str(copy))
        interval = f"{max(1, round(self.options.interval_seconds))}s"
        return {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
                "external_labels": {"cluster": CLUSTER},
            },
            "rule_files": copies,
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "kube-ballast-exporter",
                    "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                },
                {
                    "job_name": "kube-ballast-receiver",
                    "static_configs": [{"targets": [f"127.0.0.1:{receiver_port}"]}],
                },
            ],
        }

    def _write_state(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_name(self.state_file.name + ".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.state, out, indent=2)
        partial.replace(self.state_file)

    # -------------------------------------------------------------------- teardown

    def stop(self) -> None:
        """Stop every child (reverse order), remove the folder and the state file."""
        self.processes.stop_all()
        if self.state and self.state_file.exists():
            try:
                mine = json.loads(self.state_file.read_text()).get("directory") == str(
                    self.directory
                )
            except (OSError, ValueError):
                mine = False
            if mine:
                self.state_file.unlink(missing_ok=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def receiver_token_path(directory: Path) -> Path:
    return directory / "receiver-token"


def load_state(path: str | Path | None) -> dict[str, Any]:
    """The state of a running demo; DemoError when there is none."""
    state_file = Path(path) if path else default_state_file()
    try:
        state: dict[str, Any] = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise DemoError(
            f"no running demo: {state_file} does not exist (start one with `kube-ballast demo`)"
        ) from None
    except (OSError, ValueError) as error:
        raise DemoError(f"cannot read the demo's state file {state_file}: {error}") from None
    try:
        os.kill(int(state["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        raise DemoError(f"the demo that wrote {state_file} is no longer running") from None
    except PermissionError:
        pass
    return state
