"""`kube-ballast demo`: the whole product, running, in one command.

Why: the README's first command (``make run``) should show kube-ballast doing its job
rather than a simulator waiting for clients. ``kube-ballast demo`` starts, on loopback
and in a temporary folder, a simulated cluster, a real etcd cluster, the exporter, the
receiver (acting, not in dry run), real Prometheus with the shipped rules and real
Alertmanager with the shipped routing (``stack.py``), prints where they are and keeps
a one-line status up to date until Ctrl-C (or SIGTERM, or the terminal closing) stops
everything it started.

``kube-ballast demo scenario NAME`` (another terminal) injects one incident into the
running demo and narrates it (``scenarios.py``); ``kube-ballast demo --run-scenario
NAME --exit`` does all of it in one go and prints the outcome as JSON (the tests).

This package is part of the command-line layer: it starts the other components as
processes and talks to them over HTTP, like a user would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from kubeballast.demo import observe
from kubeballast.demo.processes import ProcessError
from kubeballast.demo.scenarios import SCENARIOS, Narrator, ScenarioError, run_scenario
from kubeballast.demo.stack import Demo, DemoError, DemoOptions, load_state

__all__ = ["add_arguments", "run"]

EXIT_OK = 0
EXIT_FAILURE = 1
STATUS_SECONDS = 2.0


def _bounded(kind: type, low: float, high: float, flag: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    parse.__name__ = flag
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``kube-ballast demo`` flags and its ``scenario`` subcommand."""
    defaults = DemoOptions()
    parser.add_argument(
        "--nodes", type=_bounded(int, 1, 5000, "nodes"), default=defaults.nodes, metavar="N"
    )
    parser.add_argument(
        "--zones", type=_bounded(int, 1, 100, "zones"), default=defaults.zones, metavar="N"
    )
    parser.add_argument(
        "--pods-per-node",
        type=_bounded(int, 0, 100, "pods-per-node"),
        default=defaults.pods_per_node,
        metavar="N",
    )
    parser.add_argument(
        "--clock-factor",
        type=_bounded(float, 1, 100, "clock-factor"),
        default=defaults.clock_factor,
        metavar="X",
        help="simulated seconds per real second (default %(default)s)",
    )
    parser.add_argument(
        "--interval",
        type=_bounded(float, 1, 60, "interval"),
        default=defaults.interval_seconds,
        metavar="SECONDS",
        help="Prometheus' scrape and evaluation interval (default %(default)s)",
    )
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument(
        "--for-cap",
        type=_bounded(float, 1, 3600, "for-cap"),
        default=defaults.for_cap_seconds,
        metavar="SECONDS",
        help="cap every alert rule's `for:` at this (default %(default)s)",
    )
    timing.add_argument(
        "--shipped-for",
        action="store_true",
        help="keep the rules' shipped `for:` durations (up to 10 minutes)",
    )
    parser.add_argument(
        "--fast-notifications",
        action="store_true",
        help="Alertmanager group_wait 1 s and group_interval 5 s (the tests)",
    )
    parser.add_argument(
        "--state-file", metavar="PATH", default="", help="where the running demo is described"
    )
    parser.add_argument(
        "--headless",
        action="store_true",
        help="plain lines, no live status line (the default when stdout is not a terminal)",
    )
    parser.add_argument(
        "--run-scenario",
        action="append",
        choices=sorted(SCENARIOS),
        default=[],
        metavar="NAME",
        help=f"run this scenario once everything is up (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--exit",
        action="store_true",
        help="stop after the scenarios, printing their outcomes as one JSON line",
    )
    actions = parser.add_subparsers(dest="demo_action", metavar="ACTION")
    scenario = actions.add_parser(
        "scenario",
        help="inject an incident into the running demo and narrate it",
        description="Inject an incident into the demo started by `kube-ballast demo` "
        "(found through its state file) and narrate what kube-ballast does about it.",
    )
    scenario.add_argument("name", choices=sorted(SCENARIOS), metavar="NAME")
    scenario.add_argument("--state-file", metavar="PATH", default=argparse.SUPPRESS)
    scenario.add_argument("--headless", action="store_true", default=argparse.SUPPRESS)
    scenario.add_argument(
        "--json", action="store_true", help="print the outcome as one JSON line at the end"
    )


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _StoppedError(Exception):
    """SIGTERM or SIGHUP arrived: unwind and clean up, as Ctrl-C does."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _StoppedError


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    """Run ``kube-ballast demo`` (or its ``scenario`` action); the exit status."""
    headless = bool(args.headless) or not sys.stdout.isatty()
    narrator = Narrator(headless=headless)
    if args.demo_action == "scenario":
        try:
            state = load_state(args.state_file)
            outcome = run_scenario(state, args.name, narrator)
        except (DemoError, ScenarioError) as error:
            sys.stderr.write(f"kube-ballast: demo: {error}\n")
            return EXIT_FAILURE
        if args.json:
            _print(json.dumps(outcome, sort_keys=True))
        return EXIT_OK
    return _run_demo(args, narrator)


def _options(args: argparse.Namespace) -> DemoOptions:
    return DemoOptions(
        nodes=args.nodes,
        zones=args.zones,
        pods_per_node=args.pods_per_node,
        clock_factor=args.clock_factor,
        interval_seconds=args.interval,
        for_cap_seconds=None if args.shipped_for else args.for_cap,
        fast_notifications=args.fast_notifications,
        state_file=args.state_file,
    )


def _urls(demo: Demo) -> list[str]:
    s = demo.state
    return [
        f"exporter metrics:   {s['exporter']['url']}/metrics",
        f"Prometheus alerts:  {s['prometheus']['url']}/alerts",
        f"Alertmanager:       {s['alertmanager']['url']}/#/alerts",
        f"receiver records:   {s['receiver']['url']}/records"
        f"  (bearer token in {s['receiver']['token_file']})",
        f"simulator:          kubectl --kubeconfig {s['simulator']['kubeconfig']} get nodes",
        f"state file:         {demo.state_file}",
        f"logs:               {demo.directory / 'logs'}",
    ]


def _run_demo(args: argparse.Namespace, narrator: Narrator) -> int:
    # SIGTERM and SIGHUP (the terminal closed) unwind like Ctrl-C, through the cleanup.
    previous = {signum: signal.signal(signum, _on_sigterm) for signum in _STOP_SIGNALS}
    demo: Demo | None = None
    status = EXIT_OK
    try:
        demo = Demo.start(_options(args), narrator.step)
        narrator.step("kube-ballast demo is up")
        for line in _urls(demo):
            narrator.note(line)
        if args.run_scenario:
            outcomes = []
            for name in args.run_scenario:
                try:
                    outcomes.append(
                        run_scenario(demo.state, name, narrator, await_resume=not args.exit)
                    )
                except ScenarioError as error:
                    narrator.step(f"scenario {name} failed: {error}")
                    outcomes.append({"scenario": name, "error": str(error)})
                    status = EXIT_FAILURE
                demo.processes.check_all()
            _print(json.dumps({"outcomes": outcomes, "pids": demo.processes.pids(),
                               "directory": str(demo.directory)}, sort_keys=True))  # fmt: skip
            if args.exit:
                return status
        if args.exit:
            return status
        narrator.step(
            "try an incident from another terminal: kube-ballast demo scenario NAME "
            f"({', '.join(SCENARIOS)}); Ctrl-C stops everything"
        )
        while True:
            demo.processes.check_all()
            narrator.progress(observe.read_all(demo.state).status_line())
            time.sleep(STATUS_SECONDS)  # the status line's pace
    except (KeyboardInterrupt, _StoppedError):
        with contextlib.suppress(OSError):  # the terminal may be gone
            narrator.step("stopping")
        return EXIT_OK
    except (DemoError, ProcessError) as error:
        sys.stderr.write(f"kube-ballast: demo: {error}\n")
        return EXIT_FAILURE
    finally:
        if demo is not None:
            # A second Ctrl-C must not interrupt the cleanup.
            for signum in (signal.SIGINT, *_STOP_SIGNALS):
                signal.signal(signum, signal.SIG_IGN)
            demo.stop()
            with contextlib.suppress(OSError):
                narrator.step("stopped; nothing left running")
            signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
