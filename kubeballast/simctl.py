"""`kube-ballast simctl`: drive a running simulator's control API from the shell.

The simulator's faults (congestion, 5xx bursts, watch disconnects, stopped kubelets,
zone partitions), its clock, compaction, components and authorization (RBAC on or off,
service-account tokens, the record of who used which permission) are changed at run time
through ``/_sim/`` on the simulated apiserver. This is the command-line side of that
API, for demos and for trying the product by hand: it reads the server URL and the
admin token from the kubeconfig the simulator wrote, sends one request and prints the
answer as JSON. It talks HTTP only, so it needs nothing from the simulator package.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from kubeballast.core.errors import ConfigError, PermanentError

TIMEOUT_SECONDS = 30.0


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simctl actions, as subcommands of ``parser``."""
    parser.add_argument(
        "--kubeconfig",
        metavar="PATH",
        required=True,
        help="the kubeconfig `kube-ballast simulate --kubeconfig` wrote",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("state", help="print the simulator's state (counts, faults, zones)")
    congest = actions.add_parser("congest", help="inject apiserver congestion")
    congest.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    congest.add_argument("--reject-fraction", type=float, default=0.0, metavar="F")
    congest.add_argument(
        "--lease-reject-fraction",
        type=float,
        default=None,
        metavar="F",
        help="for node heartbeats (default: they starve first)",
    )
    congest.add_argument("--retry-after", type=int, default=1, metavar="SECONDS")
    burst = actions.add_parser("error-burst", help="answer a fraction of requests with 5xx")
    burst.add_argument("--code", type=int, default=500, choices=(500, 503, 504))
    burst.add_argument("--fraction", type=float, default=1.0, metavar="F")
    burst.add_argument("--duration", type=float, default=10.0, metavar="SECONDS")
    actions.add_parser("disconnect-watches", help="end every open watch now")
    stop = actions.add_parser("stop-kubelets", help="stop kubelets (a real node failure)")
    stop.add_argument("--zones", type=_csv, default=None, metavar="Z1,Z2")
    stop.add_argument("--fraction", type=float, default=1.0, metavar="F")
    stop.add_argument("--nodes", type=_csv, default=None, metavar="N1,N2")
    partition = actions.add_parser("partition", help="cut zones off from the apiserver")
    partition.add_argument("--zones", type=_csv, required=True, metavar="Z1,Z2")
    actions.add_parser("clear", help="remove every fault")
    actions.add_parser("compact", help="compact history now (old watches and tokens get 410)")
    advance = actions.add_parser("advance", help="move simulated time forward")
    advance.add_argument("seconds", type=float)
    component = actions.add_parser("component", help="kill or revive a control-plane component")
    component.add_argument("name", choices=("kube-scheduler", "kube-controller-manager"))
    state = component.add_mutually_exclusive_group(required=True)
    state.add_argument("--kill", action="store_true")
    state.add_argument("--revive", action="store_true")
    token = actions.add_parser(
        "token", help="mint a bearer token for a service account (prints token and user)"
    )
    token.add_argument("service_account", type=_service_account, metavar="NAMESPACE/NAME")
    authz = actions.add_parser(
        "authz", help="switch authorization (AlwaysAllow or RBAC) or reset the usage record"
    )
    authz.add_argument("--mode", choices=("AlwaysAllow", "RBAC"), default=None)
    authz.add_argument("--reset-usage", action="store_true")
    actions.add_parser(
        "authz-usage", help="print what each user was allowed (by which rule) and denied"
    )


def _service_account(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


def request_for(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path, JSON body) for the parsed action."""
    action = args.action
    if action == "state":
        return "GET", "/_sim/state", None
    if action == "congest":
        congestion: dict[str, Any] = {
            "latency_seconds": args.latency,
            "reject_fraction": args.reject_fraction,
            "retry_after_seconds": args.retry_after,
        }
        if args.lease_reject_fraction is not None:
            congestion["lease_reject_fraction"] = args.lease_reject_fraction
        return "POST", "/_sim/faults", {"congestion": congestion}
    if action == "error-burst":
        burst = {"code": args.code, "fraction": args.fraction, "duration_seconds": args.duration}
        return "POST", "/_sim/faults", {"error_burst": burst}
    if action == "disconnect-watches":
        return "POST", "/_sim/faults", {"watch_disconnect": True}
    if action == "stop-kubelets":
        if args.nodes:
            return "POST", "/_sim/faults", {"kubelets_stopped": {"nodes": args.nodes}}
        spec: dict[str, Any] = {"fraction": args.fraction}
        if args.zones:
            spec["zones"] = args.zones
        return "POST", "/_sim/faults", {"kubelets_stopped": spec}
    if action == "partition":
        return "POST", "/_sim/faults", {"partition": {"zones": args.zones}}
    if action == "clear":
        return "POST", "/_sim/faults", {"clear": True}
    if action == "compact":
        return "POST", "/_sim/compact", {}
    if action == "advance":
        return "POST", "/_sim/clock/advance", {"seconds": args.seconds}
    if action == "component":
        return "POST", "/_sim/components", {"name": args.name, "alive": bool(args.revive)}
    if action == "token":
        namespace, name = args.service_account
        return "POST", "/_sim/tokens", {"namespace": namespace, "serviceAccount": name}
    if action == "authz":
        authz: dict[str, Any] = {}
        if args.mode is not None:
            authz["mode"] = args.mode
        if args.reset_usage:
            authz["resetUsage"] = True
        return "POST", "/_sim/authz", authz
    if action == "authz-usage":
        return "GET", "/_sim/authz/usage", None
    raise ConfigError(f"simctl: unknown action {action!r}")


def _endpoint(kubeconfig: str) -> tuple[str, str]:
    """(server URL, bearer token) of the current context."""
    try:
        doc = yaml.safe_load(Path(kubeconfig).read_text())
        contexts = {c["name"]: c["context"] for c in doc["contexts"]}
        context = contexts[doc["current-context"]]
        clusters = {c["name"]: c["cluster"] for c in doc["clusters"]}
        users = {u["name"]: u["user"] for u in doc["users"]}
        return str(clusters[context["cluster"]]["server"]), str(users[context["user"]]["token"])
    except OSError as error:
        raise ConfigError(f"--kubeconfig: cannot read {kubeconfig}: {error.strerror}") from None
    except (yaml.YAMLError, KeyError, TypeError) as error:
        raise ConfigError(
            f"--kubeconfig: {kubeconfig} is not a kubeconfig with a server and a token "
            f"({type(error).__name__})"
        ) from None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Send the action's request; return the simulator's JSON answer."""
    server, token = _endpoint(args.kubeconfig)
    method, path, body = request_for(args)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("message", detail)
        raise PermanentError(f"simulator answered {error.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PermanentError(f"cannot reach the simulator at {server}: {reason}") from None
