"""The ``kube-ballast`` command: one entry point for every component.

The command line is the top layer. It is the only place that reads the configuration
file, applies flag overrides, sets up logging and starts a component, and the only
product code allowed to talk to the simulator: it converts the validated
``simulator`` section into the simulator's own ``SimulatorSettings`` (the simulator
imports no product code, so it cannot read our ``Config`` itself).

Failures a user can fix are one line on stderr and a distinct exit status::

    0  done (a server stopped by SIGTERM or SIGINT also exits 0)
    1  the component failed while running (the log has the details)
    2  bad usage or bad configuration, e.g.
       kube-ballast: config: exporter.etcd.clusters[1].endpoints: must not be empty

Heavy imports (aiohttp, the components) happen inside the command that needs them, so
``config check`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

from kubeballast import __version__, demo, etcdcli, evictionguardcli, remediationscli, simctl
from kubeballast.core.config import (
    Config,
    ConfigError,
    SimulatorConfig,
    load_config,
    load_users_file,
    render_example,
    render_reference,
    validate,
)
from kubeballast.core.errors import KubeBallastError
from kubeballast.core.logging import setup_logging
from kubeballast.core.runtime import run_until_signalled
from kubeballast.selfcheck import command as selfcheck_command
from kubeballast.simulator.settings import (
    NodeLifecycleSettings,
    ScenarioSettings,
    SimulatorSettings,
)

__all__ = ["build_parser", "main", "simulator_settings"]

PROG = "kube-ballast"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
_SIGINT_EXIT = 130

log = logging.getLogger(__name__)


class _UsageError(Exception):
    """A flag value the configuration rules refuse; reported like an argparse error."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{PROG}: usage: {message} (see '{self.prog} --help')\n")


def _add_global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    # The same options are accepted before and after the subcommand. In a subcommand
    # their default is SUPPRESS, so an option given only before it is not reset to None.
    default = argparse.SUPPRESS if in_subcommand else None
    parser.add_argument("--config", metavar="PATH", default=default, help="YAML configuration file")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        default=default,
        help="overrides logging.level",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default=default, help="overrides logging.format"
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global options and the subcommands."""
    parser = _Parser(
        prog=PROG,
        description="Stability toolkit for large Kubernetes clusters.",
        epilog="Configuration reference: kube-ballast config reference",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_global_options(parser, in_subcommand=False)
    _add_commands(parser, _COMMANDS, dest="command", metavar="COMMAND")
    return parser


def _add_commands(
    parser: argparse.ArgumentParser, commands: Sequence[_Command], *, dest: str, metavar: str
) -> None:
    """``commands`` as the subcommands of ``parser`` (recursively: ``config check``)."""
    subparsers = parser.add_subparsers(dest=dest, metavar=metavar, required=True)
    for command in commands:
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.description
        )
        if command.global_options:
            _add_global_options(sub, in_subcommand=True)
        if command.add_arguments is not None:
            command.add_arguments(sub)
        if command.subcommands:
            _add_commands(sub, command.subcommands, dest="action", metavar="ACTION")
        if command.handler is not None:
            sub.set_defaults(handler=command.handler)


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace, Config], int]

# Flag of `simulate` -> (key path, field path inside SimulatorConfig).
_SIMULATE_FLAGS: dict[str, tuple[str, ...]] = {
    "nodes": ("scenario", "nodes"),
    "zones": ("scenario", "zones"),
    "pods_per_node": ("scenario", "pods_per_node"),
    "clock_factor": ("clock_factor",),
    "host": ("host",),
    "port": ("port",),
    "kubeconfig": ("kubeconfig_path",),
}


def _replace_path(obj: object, path: Sequence[str], value: object) -> object:
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})  # type: ignore[type-var]
    inner = _replace_path(getattr(obj, path[0]), path[1:], value)
    return dataclasses.replace(obj, **{path[0]: inner})  # type: ignore[type-var]


def _apply_simulate_flags(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with the simulate flags applied, validated; bad values name the flag."""
    simulator: object = config.simulator
    flag_of_key: dict[str, str] = {}
    for dest, field_path in _SIMULATE_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            simulator = _replace_path(simulator, field_path, value)
            flag_of_key["simulator." + ".".join(field_path)] = "--" + dest.replace("_", "-")
    if args.no_kubelets:
        simulator = _replace_path(simulator, ("kubelets",), False)
    if args.no_controllers:
        simulator = _replace_path(simulator, ("controllers",), False)
    assert isinstance(simulator, SimulatorConfig)
    try:
        return validate(dataclasses.replace(config, simulator=simulator))
    except ConfigError as error:
        if error.key_path in flag_of_key:
            raise _UsageError(f"argument {flag_of_key[error.key_path]}: {error.reason}") from None
        raise


def simulator_settings(config: SimulatorConfig) -> SimulatorSettings:
    """The simulator's own settings from the validated ``simulator`` section.

    Reads ``scenario.users_file`` (token -> username) here, at start-up.
    """
    scenario = config.scenario
    users = (
        load_users_file(scenario.users_file, key_path="simulator.scenario.users_file")
        if scenario.users_file is not None
        else {}
    )
    lifecycle = config.node_lifecycle
    return SimulatorSettings(
        host=config.host,
        port=config.port,
        clock_factor=config.clock_factor,
        kubelets=config.kubelets,
        controllers=config.controllers,
        kubeconfig_path=config.kubeconfig_path,
        admission_policy_api=config.admission_policy_api,
        history_seconds=config.history_seconds,
        scenario=ScenarioSettings(
            nodes=scenario.nodes,
            zones=scenario.zones,
            pods_per_node=scenario.pods_per_node,
            containers_per_pod=scenario.containers_per_pod,
            control_plane_nodes=scenario.control_plane_nodes,
            seed=scenario.seed,
            users=users,
        ),
        node_lifecycle=NodeLifecycleSettings(
            node_monitor_period_seconds=lifecycle.node_monitor_period_seconds,
            node_monitor_grace_period_seconds=lifecycle.node_monitor_grace_period_seconds,
            node_eviction_rate=lifecycle.node_eviction_rate,
            secondary_node_eviction_rate=lifecycle.secondary_node_eviction_rate,
            unhealthy_zone_threshold=lifecycle.unhealthy_zone_threshold,
            large_cluster_size_threshold=lifecycle.large_cluster_size_threshold,
            default_toleration_seconds=lifecycle.default_toleration_seconds,
            use_service_account_credentials=lifecycle.use_service_account_credentials,
        ),
    )


def _add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, metavar="N", help="simulator.scenario.nodes")
    parser.add_argument("--zones", type=int, metavar="N", help="simulator.scenario.zones")
    parser.add_argument(
        "--pods-per-node", type=int, metavar="N", help="simulator.scenario.pods_per_node"
    )
    parser.add_argument("--clock-factor", type=float, metavar="X", help="simulator.clock_factor")
    parser.add_argument("--host", metavar="ADDRESS", help="simulator.host (loopback only)")
    parser.add_argument("--port", type=int, metavar="PORT", help="simulator.port (0: any)")
    parser.add_argument("--kubeconfig", metavar="PATH", help="simulator.kubeconfig_path")
    parser.add_argument("--no-kubelets", action="store_true", help="simulator.kubelets: false")
    parser.add_argument(
        "--no-controllers", action="store_true", help="simulator.controllers: false"
    )


def _cmd_simulate(args: argparse.Namespace, config: Config) -> int:
    config = _apply_simulate_flags(config, args)
    settings = simulator_settings(config.simulator)
    # Imported here: the simulator is big, and only this command needs it.
    from kubeballast.simulator.server import run_simulator

    scenario = settings.scenario
    log.info(
        "starting the simulator: %d nodes in %d zones, %d pods per node, clock x%g",
        scenario.nodes,
        scenario.zones,
        scenario.pods_per_node,
        settings.clock_factor,
    )
    return run_until_signalled(run_simulator(settings))


def _cmd_simctl(args: argparse.Namespace, config: Config) -> int:
    _print(sys.stdout, json.dumps(simctl.run(args), indent=2, sort_keys=True))
    return EXIT_OK


def _add_exporter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--list-metrics",
        nargs="?",
        const="table",
        choices=("table", "markdown"),
        metavar="FORMAT",
        help="print every metric the exporter can emit and exit; FORMAT is table (the"
        " default) or markdown (docs/metrics.md)",
    )


def _cmd_exporter(args: argparse.Namespace, config: Config) -> int:
    if args.list_metrics is not None:
        from kubeballast.exporter.app import render_metrics_doc, render_metrics_table

        render = render_metrics_doc if args.list_metrics == "markdown" else render_metrics_table
        sys.stdout.write(render())
        return EXIT_OK
    from kubeballast.exporter.server import run_exporter

    return run_until_signalled(run_exporter(config.exporter))


def _cmd_receiver(args: argparse.Namespace, config: Config) -> int:
    from kubeballast.remediations.server import run_receiver

    return run_until_signalled(run_receiver(config.receiver))


def _cmd_remediations(args: argparse.Namespace, config: Config) -> int:
    _print(sys.stdout, json.dumps(remediationscli.run(args, config.receiver), indent=2))
    return EXIT_OK


def _cmd_eviction_guard(args: argparse.Namespace, config: Config) -> int:
    _print(sys.stdout, json.dumps(evictionguardcli.run(args, config.receiver), indent=2))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, config: Config) -> int:
    return demo.run(args)


def _cmd_config_check(args: argparse.Namespace, config: Config) -> int:
    _print(sys.stdout, "config: ok")
    return EXIT_OK


def _cmd_config_reference(args: argparse.Namespace, config: Config) -> int:
    sys.stdout.write(render_reference())
    return EXIT_OK


def _cmd_config_example(args: argparse.Namespace, config: Config) -> int:
    sys.stdout.write(render_example())
    return EXIT_OK


# --------------------------------------------------------------------------------------
# The subcommands: one entry each
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Command:
    """``kube-ballast NAME``: its ``--help`` texts, its own arguments, its handler.

    ``global_options``: the subcommand accepts --config, --log-level and --log-format
    after its name too. ``subcommands`` make it a group (``config check``), whose
    choice is ``args.action``.
    """

    name: str
    help: str
    description: str
    handler: Handler | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    global_options: bool = True
    subcommands: tuple[_Command, ...] = ()


_COMMANDS: tuple[_Command, ...] = (
    _Command(
        "simulate",
        help="run the Kubernetes API simulator",
        description="Run the Kubernetes API simulator on loopback. Flags override the "
        "simulator section of the configuration.",
        add_arguments=_add_simulate_arguments,
        handler=_cmd_simulate,
    ),
    _Command(
        "simctl",
        help="change a running simulator: faults, clock, components",
        description="Drive a running simulator's control API (faults, clock, compaction, "
        "components) with the kubeconfig it wrote.",
        add_arguments=simctl.add_arguments,
        handler=_cmd_simctl,
    ),
    _Command(
        "etcd",
        help="etcd operations: backup, restore-plan, restore, defrag, recover-nospace",
        description="Operate an etcd cluster of exporter.etcd.clusters (or --endpoints)."
        " defrag and recover-nospace are dry runs unless --execute is given.",
        add_arguments=etcdcli.add_arguments,
        handler=etcdcli.run,
    ),
    _Command(
        "selfcheck",
        help="check the cluster against the stability checklist (read-only)",
        description="Run the seed's stability checklist against the cluster: PASS / WARN /"
        " FAIL / SKIP per check, with evidence and fixes. Exit 0, 1 (a WARN with --strict)"
        " or 2 (a FAIL).",
        add_arguments=selfcheck_command.add_arguments,
        handler=selfcheck_command.run,
    ),
    _Command(
        "exporter",
        help="run the Prometheus exporter",
        description="Serve /metrics, /healthz and /readyz on exporter.listen.",
        add_arguments=_add_exporter_arguments,
        handler=_cmd_exporter,
    ),
    _Command(
        "receiver",
        help="run the Alertmanager webhook receiver",
        description="Serve the remediation webhook, /metrics and /healthz on receiver.listen.",
        handler=_cmd_receiver,
    ),
    _Command(
        "remediations",
        help="pause, resume or approve remediations; list their records",
        description="Act on the receiver's guard kernel through its state in Kubernetes "
        "(receiver.remediations.kubernetes gives the credentials).",
        add_arguments=remediationscli.add_arguments,
        handler=_cmd_remediations,
    ),
    _Command(
        "eviction-guard",
        help="show, pause, resume the eviction pause; its janitor",
        description="The eviction guard's pause ConfigMap kube-ballast/eviction-guard, "
        "its policy and binding (docs/eviction-guard.md).",
        add_arguments=evictionguardcli.add_arguments,
        handler=_cmd_eviction_guard,
    ),
    _Command(
        "demo",
        help="run everything on loopback and show it handle incidents (make run)",
        description="Start a simulated cluster, etcd, the exporter, the receiver, Prometheus"
        " and Alertmanager on loopback; `demo scenario NAME` injects an incident.",
        add_arguments=demo.add_arguments,
        handler=_cmd_demo,
    ),
    _Command(
        "config",
        help="check or document the configuration",
        description="Configuration tools.",
        subcommands=(
            _Command(
                "check",
                help="validate --config and print 'config: ok'",
                description="Validate --config.",
                handler=_cmd_config_check,
            ),
            _Command(
                "reference",
                help="print the Markdown reference of every setting",
                description="Print docs/config-reference.md.",
                handler=_cmd_config_reference,
                global_options=False,
            ),
            _Command(
                "example",
                help="print an annotated example configuration",
                description="Print docs/config.example.yaml.",
                handler=_cmd_config_example,
                global_options=False,
            ),
        ),
    ),
)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def _print(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (the console script exits with it)."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        config = load_config(args.config) if args.config is not None else validate(Config())
        setup_logging(
            args.log_level or config.logging.level,
            args.log_format or config.logging.format,
        )
        return handler(args, config)
    except ConfigError as error:
        _print(sys.stderr, f"{PROG}: config: {error}")
        return EXIT_USAGE
    except _UsageError as error:
        _print(sys.stderr, f"{PROG}: usage: {error}")
        return EXIT_USAGE
    except KubeBallastError as error:
        log.error("%s %s failed: %s", PROG, args.command, error)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        # Ctrl-C before the event loop took over the signal: nothing to clean up.
        return _SIGINT_EXIT
    except Exception:
        # The one catch-all: the process ends here, and the traceback goes through
        # logging so that it is formatted (JSON) and redacted like every other line.
        log.exception("%s %s failed", PROG, args.command)
        return EXIT_FAILURE
