"""``kube-ballast selfcheck``: flags, settings from the configuration, output, exit status.

Exit status (for platform CI): 0 when nothing failed, 1 when something warned and
``--strict`` was given, 2 when a check failed. A bad flag or configuration is also 2,
with one line on stderr (``kubeballast.cli`` reports it); the report is then not
written.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kubeballast.core.config import Config, ConfigError, KubernetesAccessConfig

if TYPE_CHECKING:
    from kubeballast.selfcheck.context import Settings

__all__ = ["add_arguments", "run", "settings_from"]

_REPO = Path(__file__).resolve().parent.parent.parent


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="overrides exporter.kubernetes.kubeconfig_path"
    )
    parser.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    parser.add_argument("--prometheus-url", metavar="URL", help="check the alerts are loaded")
    parser.add_argument("--alertmanager-url", metavar="URL", help="check Alertmanager is ready")
    parser.add_argument(
        "--receiver-url",
        metavar="URL",
        help="the receiver's webhook URL: must refuse an unauthenticated POST with 401",
    )
    parser.add_argument(
        "--format", choices=("table", "json", "html"), default="table", help="default: table"
    )
    parser.add_argument("--output", "-o", metavar="PATH", help="write the report here")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a WARN")
    parser.add_argument(
        "--deadline",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="the whole run (default 60)",
    )
    parser.add_argument(
        "--check-timeout",
        type=_positive,
        default=45.0,
        metavar="SECONDS",
        help="each check (default 45)",
    )
    parser.add_argument(
        "--congestion-window",
        type=_positive,
        default=3.0,
        metavar="SECONDS",
        help="between the two /metrics scrapes of the congestion check (default 3)",
    )
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="ID",
        help="run only this check or area (etcd, etcd.quota); repeatable",
    )
    parser.add_argument(
        "--alerts-dir",
        metavar="PATH",
        default=None,
        help="the rule files (default: alerts/ of this installation, when present)",
    )
    parser.add_argument(
        "--runbooks-dir",
        metavar="PATH",
        default=None,
        help="the runbooks (default: docs/runbooks/ of this installation, when present)",
    )


def settings_from(args: argparse.Namespace, config: Config) -> Settings:
    """The run's inputs: the flags over the configuration's exporter section."""
    # Imported here: the checks pull in the exporter (aiohttp, msgspec, prometheus).
    from kubeballast.selfcheck.context import Settings

    access = config.exporter.kubernetes
    if args.in_cluster:
        access = KubernetesAccessConfig(in_cluster=True)
    elif args.kubeconfig:
        access = KubernetesAccessConfig(kubeconfig_path=args.kubeconfig)
    alerts_dir = Path(args.alerts_dir) if args.alerts_dir else _REPO / "alerts"
    runbooks_dir = Path(args.runbooks_dir) if args.runbooks_dir else _REPO / "docs" / "runbooks"
    if args.alerts_dir and not alerts_dir.is_dir():
        raise ConfigError(f"--alerts-dir: not a directory: {alerts_dir}")
    if args.runbooks_dir and not runbooks_dir.is_dir():
        raise ConfigError(f"--runbooks-dir: not a directory: {runbooks_dir}")
    etcd = config.exporter.etcd.clusters or config.receiver.remediations.etcd.clusters
    return Settings(
        kubernetes=access,
        state=config.exporter.state,
        etcd=etcd,
        controller_managers=config.exporter.controller_managers,
        network_daemonsets=config.exporter.network.daemonsets,
        prometheus_url=args.prometheus_url,
        alertmanager_url=args.alertmanager_url,
        receiver_url=args.receiver_url,
        alerts_dir=alerts_dir if alerts_dir.is_dir() else None,
        runbooks_dir=runbooks_dir if runbooks_dir.is_dir() else None,
        congestion_window_seconds=args.congestion_window,
    )


def run(args: argparse.Namespace, config: Config) -> int:
    from kubeballast.selfcheck.render import render
    from kubeballast.selfcheck.suite import run_selfcheck, select_checks

    try:
        checks = select_checks(args.check)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    settings = settings_from(args, config)
    report = asyncio.run(
        run_selfcheck(
            settings,
            checks=checks,
            deadline_seconds=args.deadline,
            check_timeout_seconds=args.check_timeout,
        )
    )
    text = render(report, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    code: int = report.exit_code(strict=args.strict)
    return code
