"""`kube-ballast remediations`: the people's side of the guard kernel, from the shell.

``pause`` and ``resume`` flip the kill switch (a ConfigMap the guard kernel reads before
every decision), ``approve ID`` releases a plan that waits for approval, and ``records``
lists the recent execution records. They write the same Kubernetes objects the
receiver's leader reads, through the ledger, so they work whether or not a receiver
runs, against whichever replica leads. Credentials come from
``receiver.remediations.kubernetes`` in the configuration (a kubeconfig for people).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
from typing import Any

from kubeballast.core.config import ReceiverConfig
from kubeballast.core.kube import kube_client
from kubeballast.remediations.ledger import Ledger

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The remediations commands, as subcommands of ``parser``."""
    commands = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    pause = commands.add_parser("pause", help="stop every remediation (the kill switch)")
    pause.add_argument("--reason", default="", help="why: shown in every refusal")
    commands.add_parser("resume", help="let remediations run again")
    approve = commands.add_parser("approve", help="release a plan that waits for approval")
    approve.add_argument("id", help="the approval id from the chat message")
    records = commands.add_parser("records", help="list recent execution records")
    records.add_argument("--limit", type=int, default=20, metavar="N")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


async def _run(args: argparse.Namespace, config: ReceiverConfig) -> dict[str, Any]:
    api = await kube_client(config.remediations.kubernetes, "receiver.remediations.kubernetes")
    try:
        ledger = Ledger(api, config.remediations)
        if args.action == "pause":
            await ledger.set_paused(True, by=_who(), reason=args.reason)
            return {"paused": True, "by": _who(), "reason": args.reason}
        if args.action == "resume":
            await ledger.set_paused(False, by=_who())
            return {"paused": False, "by": _who()}
        if args.action == "approve":
            record = await ledger.approve(args.id, _who())
            return {"approved": args.id, "record": record.key, "action": record.action}
        records = sorted(
            (await ledger.records()).values(), key=lambda r: (r.updated_at, r.key), reverse=True
        )
        paused, why = await ledger.paused()
        return {
            "paused": paused,
            "why": why,
            "records": [dataclasses.asdict(r) for r in records[: max(1, args.limit)]],
        }
    finally:
        await api.close()


def run(args: argparse.Namespace, config: ReceiverConfig) -> dict[str, Any]:
    """Run the chosen command; return its result as JSON-ready data.

    Failures are ``KubeBallastError`` s (the API cannot be reached: ``TemporaryError``;
    an approval that cannot be granted: ``PermanentError``), which the command line
    reports in one line with exit status 1.
    """
    return asyncio.run(_run(args, config))
