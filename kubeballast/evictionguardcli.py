"""`kube-ballast eviction-guard`: the eviction pause from the shell, and its janitor.

``status`` shows the pause ConfigMap, whether the policy, binding and FlowSchema are
installed and whether kube-controller-manager's ``--use-service-account-credentials``
holds. ``pause`` and ``resume`` let a person do by hand what the receiver does (a pause
by hand still expires: ``--minutes`` at most 30, and the receiver's leader ends it at
its cap). ``allow NODE...`` puts nodes confirmed dead on the allow-list of the pause in
force, so their pods may be evicted. ``janitor`` ends a pause past its ``expiresAt`` or
``maxUntil``; the CronJob in deploy/eviction-guard/ runs it every minute, so a pause
ends even when no receiver is left. Credentials: ``--in-cluster``, ``--kubeconfig``, or
``receiver.remediations.kubernetes`` in the configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import time
from typing import Any

from kubeballast.core import evictionguard as eg
from kubeballast.core.config import KubernetesAccessConfig, ReceiverConfig
from kubeballast.core.errors import ConfigError, PermanentError
from kubeballast.core.kube import ConflictError, kube_client

__all__ = ["add_arguments", "run"]

MAX_MANUAL_MINUTES = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The eviction-guard commands, as subcommands of ``parser``."""
    parser.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    parser.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig to use")
    commands = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    commands.add_parser("status", help="the pause, the installation, the controller identity")
    pause = commands.add_parser("pause", help="pause taint-based eviction by hand")
    pause.add_argument("--reason", required=True, help="why (shown in every denial)")
    pause.add_argument(
        "--minutes",
        type=float,
        default=15.0,
        help=f"until it expires (at most {MAX_MANUAL_MINUTES})",
    )
    commands.add_parser("resume", help="end the pause in force now")
    allow = commands.add_parser("allow", help="let the pods of nodes confirmed dead be evicted")
    allow.add_argument("nodes", nargs="+", metavar="NODE")
    commands.add_parser("janitor", help="end the pause if it is past its expiry or cap")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _access(args: argparse.Namespace, config: ReceiverConfig) -> tuple[KubernetesAccessConfig, str]:
    if args.in_cluster:
        return KubernetesAccessConfig(in_cluster=True), "--in-cluster"
    if args.kubeconfig:
        return KubernetesAccessConfig(kubeconfig_path=args.kubeconfig), "--kubeconfig"
    return config.remediations.kubernetes, "receiver.remediations.kubernetes"


def _show(state: eg.PauseState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"paused": state.paused} | {
        k: v for k, v in state.to_data().items() if k != "paused" and v != ""
    }


async def _run(args: argparse.Namespace, config: ReceiverConfig) -> dict[str, Any]:
    access, key = _access(args, config)
    api = await kube_client(access, key)
    now = time.time()
    try:
        if args.action == "janitor":
            ended = await eg.janitor(api, now)
            return {"ended": ended is not None, "pause": _show(ended)}
        if args.action == "resume":
            ended = await eg.end_pause(api, now, "manual")
            return {"ended": ended is not None, "pause": _show(ended)}
        if args.action == "pause":
            if not 0 < args.minutes <= MAX_MANUAL_MINUTES:
                raise ConfigError(
                    f"must be more than 0 and at most {MAX_MANUAL_MINUTES}", key_path="--minutes"
                )
            stored = await eg.read_pause(api)
            if stored is not None and stored.state.paused:
                return {"paused": True, "already": True, "pause": _show(stored.state)}
            state = eg.PauseState(
                paused=True,
                reason=f"{args.reason} (by {_who()})",
                started_at=now,
                expires_at=now + args.minutes * 60,
                max_until=now + MAX_MANUAL_MINUTES * 60,
                owner=_who(),
            )
            written = await eg.write_pause(
                api, state, stored.resource_version if stored is not None else None
            )
            return {"paused": True, "pause": _show(written.state)}
        if args.action == "allow":
            for _ in range(5):
                stored = await eg.read_pause(api)
                if stored is None or not stored.state.paused:
                    raise PermanentError("no pause is in force: nothing to allow")
                allow = tuple(sorted({*stored.state.allow_nodes, *args.nodes}))
                try:
                    written = await eg.write_pause(
                        api,
                        dataclasses.replace(stored.state, allow_nodes=allow),
                        stored.resource_version,
                    )
                except ConflictError:
                    continue
                return {"pause": _show(written.state)}
            raise PermanentError("the eviction-guard ConfigMap kept changing; try again")
        stored = await eg.read_pause(api)
        installation = await eg.guard_installation(api)
        credentials = await eg.detect_service_account_credentials(api)
        return {
            "pause": _show(stored.state if stored else None),
            "installation": dataclasses.asdict(installation),
            "use_service_account_credentials": {
                "holds": credentials.holds,
                "evidence": credentials.evidence,
            },
        }
    finally:
        await api.close()


def run(args: argparse.Namespace, config: ReceiverConfig) -> dict[str, Any]:
    """Run the chosen command; return its result as JSON-ready data. Failures are
    ``KubeBallastError`` s, reported by the command line in one line."""
    return asyncio.run(_run(args, config))
