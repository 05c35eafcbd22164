"""The ``eviction-pause`` action: stop taint-based eviction while the control plane, not
the nodes, is failing, and never leave it stopped.

When the apiserver is congested, kubelets cannot renew their Leases; the node-lifecycle
controller marks healthy nodes Unknown, taints them NoExecute, and 300 s later the
taint-eviction controller deletes pods that were running fine, adding the load of their
replacements to the congested control plane (kubernetes #24200, #13412, #125824).
Kubernetes has no pause switch; :mod:`kubeballast.core.evictionguard` describes the
one kube-ballast builds (an admission policy reading a ConfigMap). This module decides
*when* to use it and keeps it honest:

When to pause (all must hold, re-checked live at the decision, from the exporter's
eviction-guard view, ``/eviction-guard``: the values below as compact JSON read from
the same families its /metrics serves; an exporter that predates the view
answers 404 and its /metrics page is parsed instead. The exporter sees the apiserver's
own signals and every node Lease through its watch caches): an apiserver is congested
(``kubeballast_apiserver_congested``, evaluated); the stale Leases form a correlated
wave (at least ``min_wave_ratio`` of all nodes went stale within the wave window of each
other) spanning at least ``min_wave_zones`` zones; optionally, a sample of the stale
nodes' kubelets still answers (the data plane is alive; those that do not answer go on
the pause's allow-list, so their pods may still be evicted). A few dead nodes in one
zone with a healthy apiserver never pause anything: real failures must still be evicted.
In ``policy`` mode the policy must be installed and kube-controller-manager must run
with ``--use-service-account-credentials`` (else the policy matches nothing: refuse, and
say why).

Never left on: the pause carries ``expiresAt`` (``pause_seconds`` ahead, at most 30 min)
and ``maxUntil`` (the hard cap). The leader re-checks every ``check_interval_seconds``:
renews only while the conditions still hold (and at most ``max_renewals`` times, never
past the cap); resumes once the wave is over and the apiserver is not congested for
``recovery_grace_factor`` grace periods (hysteresis); ends it at the cap whatever the
conditions. Every replica ends an overdue pause at start-up, and the janitor CronJob
does so with no receiver left at all.

After resuming (``policy`` mode), evictions denied during the pause were dropped by the
taint-eviction controller, which only reconsiders a pod when its node's taints change.
Nodes still NotReady with a NoExecute taint get the taint *bounced* (removed; the
node-lifecycle controller re-adds it at its own rate), which restarts the countdown
under the pods' own tolerations: truly dead nodes' pods are still evicted, later.

Fallback (``taint-removal`` mode) for clusters without the policy API: while paused,
the leader removes the unreachable/not-ready NoExecute taints of stale nodes (not on the
allow-list) at a bounded rate; the controller re-adds them, and the sweep removes them
again well within the 300 s toleration. If the receiver dies, nothing removes them and
the controller's evictions resume on their own: a dead man's switch.

This action is not ``reversible`` in the guard kernel's sense (reverted when its alert
resolves): an alert resolving is not recovery, and a pause must outlive the alert that
started it until the hysteresis says so. Its lifetime is the ConfigMap's, maintained
here by :meth:`EvictionGuard.maintain`, which the engine calls on every leader pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urljoin

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry, Counter

from kubeballast.core import evictionguard as eg
from kubeballast.core import promtext
from kubeballast.core.config import EvictionGuardConfig
from kubeballast.core.errors import PermanentError
from kubeballast.core.kube import ConflictError, InvalidError, NotFoundError, kube_call
from kubeballast.remediations.actions import (
    ActionContext,
    ObjectReference,
    Outcome,
    Plan,
    Precondition,
)
from kubeballast.remediations.contract import Alert

__all__ = [
    "Evaluation",
    "EvictionGuard",
    "Signals",
    "evaluate",
    "parse_view",
    "read_signals",
    "recovered",
    "view_url",
]

log = logging.getLogger(__name__)

NO_EXECUTE_KEYS: Final = frozenset(
    {"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"}
)

_WANTED: Final = (
    "kubeballast_cluster_state_synced",
    "kubeballast_apiserver_congested",
    "kubeballast_apiserver_congestion_reason",
    "kubeballast_apiserver_congestion_evaluated",
    "kubeballast_lease_stale_wave_nodes",
    "kubeballast_lease_stale_wave_ratio",
    "kubeballast_lease_stale_wave_zones",
    "kubeballast_lease_stale_wave_start_timestamp_seconds",
    "kubeballast_lease_stale_nodes",
    "kubeballast_node_lease_age_seconds",
    "kubeballast_node_lease_grace_period_seconds",
    "kubeballast_scale_current",
)


class SignalsUnavailableError(PermanentError):
    """The exporter could not be read, or does not say enough to decide."""


@dataclass(frozen=True)
class Signals:
    """What the exporter says now, reduced to what the decision needs."""

    synced: bool
    congestion_evaluated: bool
    congested: bool
    congestion_reasons: tuple[str, ...]
    nodes: int
    wave_nodes: int
    wave_ratio: float
    wave_zones: int
    grace_seconds: float
    stale_nodes: tuple[str, ...]
    """Nodes whose Lease is older than the grace period, stalest first."""
    wave_nodes_named: tuple[str, ...] = ()
    """The stale nodes whose Lease went stale at or after the wave's start: the wave's
    members (nodes dead since before the wave are not), by name."""
    source: str = "metrics"
    """Where they were read: ``view`` (/eviction-guard) or ``metrics`` (/metrics)."""
    generated_at: float | None = None
    """When the exporter assembled the view (None from /metrics)."""


def parse_signals(text: str, now: float | None = None) -> Signals:
    """Signals from the exporter's /metrics text; SignalsUnavailableError when a family the
    decision needs is missing (the exporter has not synced, or is another program)."""
    try:
        families = promtext.parse(text, _WANTED)
    except promtext.ParseError as error:
        raise SignalsUnavailableError(
            f"the exporter's /metrics is not Prometheus text: {error}"
        ) from error

    def one(name: str) -> float:
        samples = families.get(name) or []
        if not samples:
            raise SignalsUnavailableError(f"the exporter does not serve {name}")
        return samples[0].value

    synced = bool(one("kubeballast_cluster_state_synced"))
    if not synced:
        raise SignalsUnavailableError("the exporter's cluster state is not synced yet")
    congested = [s for s in families.get("kubeballast_apiserver_congested", []) if s.value == 1]
    evaluated = any(
        s.value == 1 for s in families.get("kubeballast_apiserver_congestion_evaluated", [])
    )
    reasons = sorted(
        {
            f"{s.labels.get('target', '?')}:{s.labels.get('reason', '?')}"
            for s in families.get("kubeballast_apiserver_congestion_reason", [])
            if s.value == 1
        }
    )
    grace = one("kubeballast_node_lease_grace_period_seconds")
    ages = sorted(
        (
            (s.value, s.labels.get("node", ""))
            for s in families.get("kubeballast_node_lease_age_seconds", [])
            if s.value > grace
        ),
        reverse=True,
    )
    starts = families.get("kubeballast_lease_stale_wave_start_timestamp_seconds") or []
    members: tuple[str, ...] = ()
    if starts and now is not None:
        # A node went stale at now - age + grace; the wave's members did so at or after
        # its start (a second of slack for the exporter's render time).
        start = starts[0].value
        members = tuple(sorted(node for age, node in ages if now - age + grace >= start - 1.0))
    nodes = next(
        (
            int(s.value)
            for s in families.get("kubeballast_scale_current", [])
            if s.labels.get("dimension") == "nodes"
        ),
        0,
    )
    return Signals(
        synced=synced,
        congestion_evaluated=evaluated,
        congested=bool(congested),
        congestion_reasons=tuple(reasons),
        nodes=nodes,
        wave_nodes=int(one("kubeballast_lease_stale_wave_nodes")),
        wave_ratio=one("kubeballast_lease_stale_wave_ratio"),
        wave_zones=int(one("kubeballast_lease_stale_wave_zones")),
        grace_seconds=grace,
        stale_nodes=tuple(node for _age, node in ages),
        wave_nodes_named=members,
    )


# The eviction-guard view, as exporter/guardview.py serves it. The receiver cannot import
# the exporter: this is its own reading of the wire format (strict where it decides,
# indifferent to fields it does not use).

VIEW_KIND: Final = "kube-ballast/eviction-guard-view"
VIEW_VERSION: Final = 1
VIEW_SEGMENT: Final = "eviction-guard"


class _ViewHeader(msgspec.Struct):
    kind: str
    version: int


class _ViewCongestion(msgspec.Struct):
    target: str
    evaluated: bool
    congested: bool
    reasons: list[str]


class _ViewWave(msgspec.Struct):
    nodes: int
    ratio: float
    zones: int
    start: float | None
    stale_from: int | None


class _View(msgspec.Struct):
    kind: str
    version: int
    generated_at: float
    synced: bool
    congestion: list[_ViewCongestion]
    nodes: int | None = None
    grace_seconds: float | None = None
    wave: _ViewWave | None = None
    stale: list[str] = msgspec.field(default_factory=list)


def view_url(metrics_url: str) -> str:
    """The view's URL from ``exporter_url`` (the exporter's /metrics URL): its last path
    segment replaced by ``eviction-guard`` (``http://exporter:9808/metrics`` ->
    ``http://exporter:9808/eviction-guard``), the query string dropped."""
    return urljoin(metrics_url, VIEW_SEGMENT)


def parse_view(body: bytes, url: str) -> Signals | None:
    """Signals from the view's JSON; None for a view version this receiver does not know
    (read /metrics instead); SignalsUnavailableError when it is malformed or the exporter
    has not synced."""
    try:
        header = msgspec.json.decode(body, type=_ViewHeader)
        if header.kind != VIEW_KIND:
            raise SignalsUnavailableError(
                f"the exporter's answer at {url} is not an eviction-guard view "
                f"(kind {header.kind[:80]!r})"
            )
        if header.version != VIEW_VERSION:
            return None
        view = msgspec.json.decode(body, type=_View)
    except msgspec.MsgspecError as error:
        raise SignalsUnavailableError(
            f"the exporter's eviction-guard view at {url} is malformed: {error}"
        ) from error
    if not view.synced:
        raise SignalsUnavailableError("the exporter's cluster state is not synced yet")
    if view.grace_seconds is None or view.wave is None or view.nodes is None:
        missing = [
            name
            for name, value in (
                ("grace_seconds", view.grace_seconds),
                ("wave", view.wave),
                ("nodes", view.nodes),
            )
            if value is None
        ]
        raise SignalsUnavailableError(
            f"the exporter's eviction-guard view at {url} is malformed: synced without "
            + ", ".join(missing)
        )
    stale_from = view.wave.stale_from
    if stale_from is not None and not 0 <= stale_from < len(view.stale):
        raise SignalsUnavailableError(
            f"the exporter's eviction-guard view at {url} is malformed: wave.stale_from "
            f"{stale_from} is not an index of stale ({len(view.stale)} nodes)"
        )
    return Signals(
        synced=True,
        congestion_evaluated=any(c.evaluated for c in view.congestion),
        congested=any(c.congested for c in view.congestion),
        congestion_reasons=tuple(
            sorted({f"{c.target}:{reason}" for c in view.congestion for reason in c.reasons})
        ),
        nodes=view.nodes,
        wave_nodes=view.wave.nodes,
        wave_ratio=view.wave.ratio,
        wave_zones=view.wave.zones,
        grace_seconds=view.grace_seconds,
        stale_nodes=tuple(view.stale),
        # As from /metrics: the stale nodes that went stale at or after the wave's start.
        wave_nodes_named=(tuple(sorted(view.stale[stale_from:])) if stale_from is not None else ()),
        source="view",
        generated_at=view.generated_at,
    )


_FELL_BACK: set[str] = set()
"""View URLs whose 404 was logged (once per URL and process, not every check)."""


async def read_signals(url: str, timeout_seconds: float, now: float | None = None) -> Signals:
    """The exporter's signals from its eviction-guard view (derived from ``url``, its
    /metrics URL, by :func:`view_url`); from /metrics itself when the exporter answers
    404 there (it predates the view) or serves a view version this receiver does not
    know (``now`` then names the wave's members)."""
    guard_url = view_url(url)
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_seconds)
        ) as session:
            async with session.get(guard_url) as response:
                status = response.status
                body = await response.read() if status == 200 else b""
            if status == 200:
                signals = parse_view(body, guard_url)
                if signals is not None:
                    return signals
            elif status != 404:
                raise SignalsUnavailableError(
                    f"the exporter's eviction-guard view at {guard_url} answered HTTP {status}"
                )
            if guard_url not in _FELL_BACK:
                _FELL_BACK.add(guard_url)
                log.warning(
                    "eviction guard: the exporter serves no eviction-guard view this "
                    "receiver reads (%s); parsing its /metrics instead (upgrade the exporter)",
                    f"HTTP {status}" if status != 200 else "unknown view version",
                )
            async with session.get(url) as response:
                if response.status != 200:
                    raise SignalsUnavailableError(
                        f"the exporter at {url} answered HTTP {response.status}"
                    )
                text = await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise SignalsUnavailableError(
            f"the exporter at {url} cannot be read: {type(error).__name__}: {error}"
        ) from error
    return parse_signals(text, now)


@dataclass(frozen=True)
class Evaluation:
    """Whether the pause conditions hold, and what was seen."""

    holds: bool
    why: str
    """What holds, or the first condition that does not."""
    evidence: Mapping[str, str]


def evaluate(signals: Signals, config: EvictionGuardConfig) -> Evaluation:
    """The pause conditions over ``signals`` (pure)."""
    evidence = {
        "congested": str(signals.congested).lower(),
        "congestion_reasons": ", ".join(signals.congestion_reasons) or "none",
        "wave_nodes": str(signals.wave_nodes),
        "wave_ratio": f"{signals.wave_ratio:.3f}",
        "wave_zones": str(signals.wave_zones),
        "nodes": str(signals.nodes),
    }
    failed: list[str] = []
    if not signals.congestion_evaluated:
        failed.append("the exporter has not evaluated apiserver congestion")
    elif not signals.congested:
        failed.append("no apiserver is congested")
    if signals.wave_ratio < config.min_wave_ratio:
        failed.append(
            f"the wave of stale Leases holds {signals.wave_ratio:.1%} of the nodes "
            f"(pausing needs {config.min_wave_ratio:.0%})"
        )
    if signals.wave_zones < config.min_wave_zones:
        failed.append(
            f"the wave spans {signals.wave_zones} zone(s) (pausing needs {config.min_wave_zones})"
        )
    if failed:
        return Evaluation(False, "; ".join(failed), evidence)
    return Evaluation(
        True,
        f"apiserver congested ({', '.join(signals.congestion_reasons) or 'congested'}); "
        f"{signals.wave_nodes}/{signals.nodes} nodes' Leases went stale together in "
        f"{signals.wave_zones} zones",
        evidence,
    )


def recovered(signals: Signals, config: EvictionGuardConfig) -> bool:
    """The storm is over: no apiserver congested and the wave below the pause threshold.
    (Nodes truly dead stay stale; they do not hold the pause.)"""
    return (
        signals.congestion_evaluated
        and not signals.congested
        and signals.wave_ratio < config.min_wave_ratio
    )


# --------------------------------------------------------------------------------------
# Node access: taints and kubelet probes
# --------------------------------------------------------------------------------------


def _no_execute(taints: Sequence[Any] | None) -> list[Any]:
    return [t for t in taints or () if t.effect == "NoExecute" and t.key in NO_EXECUTE_KEYS]


async def _remove_no_execute_taints(api: Any, name: str) -> bool:
    """Remove the node's unreachable/not-ready NoExecute taints with a compare-and-set
    (a JSON patch testing the resourceVersion); True when some were removed."""
    from kubernetes_asyncio import client

    core = client.CoreV1Api(api)
    for _ in range(3):
        try:
            node = await kube_call(f"read node {name}", core.read_node(name))
        except NotFoundError:
            return False
        taints = node.spec.taints or []
        if not _no_execute(taints):
            return False
        keep = [
            {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})}
            | ({"timeAdded": t.time_added.strftime("%Y-%m-%dT%H:%M:%SZ")} if t.time_added else {})
            for t in taints
            if not (t.effect == "NoExecute" and t.key in NO_EXECUTE_KEYS)
        ]
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": node.metadata.resource_version,
            },
            {"op": "replace", "path": "/spec/taints", "value": keep},
        ]
        try:
            await kube_call(f"patch node {name}", core.patch_node(name, patch))
        except (ConflictError, InvalidError):
            # The node changed since we read it (a failed JSON-patch test is 422): re-read.
            continue
        return True
    return False


async def _node_ip(api: Any, name: str) -> str | None:
    from kubernetes_asyncio import client

    try:
        node = await kube_call(f"read node {name}", client.CoreV1Api(api).read_node(name))
    except NotFoundError:
        return None
    for address in (node.status.addresses if node.status else None) or []:
        if address.type == "InternalIP":
            return str(address.address)
    return None


async def _tcp_reachable(host: str, port: int, timeout_seconds: float) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout_seconds
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# --------------------------------------------------------------------------------------
# The action and its keeper
# --------------------------------------------------------------------------------------


@dataclass
class _Reconcile:
    nodes: list[str]
    cursor: int = 0


class EvictionGuard:
    """The ``eviction-pause`` action (see the module docstring)."""

    name = "eviction-pause"
    idempotent = True
    reversible = False

    def __init__(
        self, config: EvictionGuardConfig, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.config = config
        self._last_check = float("-inf")
        self._sweep_cursor = 0
        self._reconcile: _Reconcile | None = None
        self._startup_done = False
        registry = registry if registry is not None else CollectorRegistry()
        self.ended = Counter(
            "kubeballast_eviction_guard_pauses_ended",
            "Eviction pauses ended, by reason (recovered, expired, cap, manual, janitor).",
            ["reason"],
            registry=registry,
        )
        self.renewed = Counter(
            "kubeballast_eviction_guard_renewals",
            "Times a pause in force was renewed because its conditions still held.",
            registry=registry,
        )
        self.taints_removed = Counter(
            "kubeballast_eviction_guard_taints_removed",
            "NoExecute taints removed: by the taint-removal fallback while paused "
            "(purpose=fallback) or bounced after a pause (purpose=reconcile).",
            ["purpose"],
            registry=registry,
        )

    # -- the Action protocol -----------------------------------------------------------

    def plan(self, alert: Alert) -> Plan:
        minutes = self.config.pause_seconds / 60
        return Plan(
            summary=(
                f"pause taint-based pod eviction ({self.config.mode}) for {minutes:g} min, "
                f"renewed while the storm lasts, at most "
                f"{self.config.max_pause_seconds / 60:g} min"
            ),
            target="cluster/eviction-pause",
            changes_cluster=True,
            node_affecting=True,
            involved_object=ObjectReference(
                kind="ConfigMap", name=eg.PARAM_NAME, namespace=eg.PARAM_NAMESPACE
            ),
        )

    async def check(self, ctx: ActionContext, alert: Alert) -> Precondition:
        config = self.config
        if config.exporter_url is None:
            return Precondition(
                False,
                "receiver.remediations.eviction_guard.exporter_url is not set: the "
                "conditions cannot be checked",
            )
        stored = await eg.read_pause(ctx.kube)
        if stored is not None and stored.state.paused:
            return Precondition(
                True,
                f"already paused until {eg.format_time(stored.state.expires_at or 0)}; the "
                "leader renews or ends it",
            )
        try:
            signals = await read_signals(config.exporter_url, timeout_seconds=10.0)
        except SignalsUnavailableError as error:
            return Precondition(False, str(error), retry=True)
        verdict = evaluate(signals, config)
        evidence = dict(verdict.evidence)
        if not verdict.holds:
            # The wave and the congestion verdict form over a minute or two, and one
            # alert can arrive before the other's evidence: worth waiting for.
            return Precondition(False, verdict.why, evidence, retry=True)
        if config.mode == "policy":
            installation = await eg.guard_installation(ctx.kube)
            if not installation.policy_ready:
                return Precondition(
                    False,
                    "the eviction guard's policy is not usable: "
                    + "; ".join(installation.problems)
                    + (
                        " (set eviction_guard.mode: taint-removal on clusters without it)"
                        if not installation.policy_api
                        else ""
                    ),
                    evidence,
                )
            if not config.assume_service_account_credentials:
                credentials = await eg.detect_service_account_credentials(ctx.kube)
                evidence["service_account_credentials"] = credentials.evidence
                if credentials.holds is not True:
                    return Precondition(
                        False,
                        "kube-controller-manager must run with "
                        "--use-service-account-credentials for the policy to match its "
                        f"evictions: {credentials.evidence}",
                        evidence,
                    )
        if config.kubelet_probe.enabled:
            reachable, unreachable = await self._probe(ctx, signals)
            evidence["kubelets_reachable"] = f"{len(reachable)}/{len(reachable) + len(unreachable)}"
            probed = len(reachable) + len(unreachable)
            if probed and len(reachable) / probed < config.kubelet_probe.min_reachable_ratio:
                return Precondition(
                    False,
                    f"only {len(reachable)} of {probed} probed kubelets answer: the nodes "
                    "may really be down",
                    evidence,
                )
        return Precondition(True, verdict.why, evidence)

    async def execute(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome:
        config = self.config
        now = ctx.clock.time()
        allow: tuple[str, ...] = ()
        reason = f"{alert.name}: apiserver congested and node heartbeats starved"
        if config.exporter_url is not None:
            try:
                signals = await read_signals(config.exporter_url, timeout_seconds=10.0, now=now)
            except SignalsUnavailableError:
                signals = None
            if signals is not None:
                verdict = evaluate(signals, config)
                reason = f"{alert.name}: {verdict.why}"
                if config.kubelet_probe.enabled:
                    _reachable, unreachable = await self._probe(ctx, signals)
                    allow = tuple(sorted(unreachable))
        for _ in range(5):
            stored = await eg.read_pause(ctx.kube)
            if stored is not None and stored.state.paused:
                return Outcome(
                    f"already paused until {eg.format_time(stored.state.expires_at or 0)}",
                    {"owner": stored.state.owner},
                )
            state = eg.PauseState(
                paused=True,
                reason=reason[:500],
                mode=config.mode,
                started_at=now,
                expires_at=min(now + config.pause_seconds, now + config.max_pause_seconds),
                max_until=now + config.max_pause_seconds,
                renewals=0,
                allow_nodes=allow,
                owner=ctx.identity,
            )
            try:
                await eg.write_pause(
                    ctx.kube, state, stored.resource_version if stored is not None else None
                )
            except ConflictError:
                continue
            self._last_check = now
            self._reconcile = None
            if config.mode == "taint-removal":
                await self._sweep(ctx, signals_nodes=None)
            return Outcome(
                f"taint-based eviction paused until {eg.format_time(state.expires_at or now)} "
                f"(cap {eg.format_time(state.max_until or now)})",
                {"mode": config.mode, "allowNodes": ",".join(allow)},
            )
        raise ConflictError("the eviction-guard ConfigMap kept changing")

    async def revert(self, ctx: ActionContext, alert: Alert, plan: Plan) -> Outcome:
        raise PermanentError("eviction-pause ends by its own hysteresis, expiry or cap")

    # -- the keeper --------------------------------------------------------------------

    async def startup(self, ctx: ActionContext) -> None:
        """Any replica, at start: end a pause that is already overdue."""
        ended = await eg.janitor(ctx.kube, ctx.clock.time())
        if ended is not None:
            self.ended.labels(ended.end_reason).inc()
            ctx.log.warning(
                "eviction guard: ended an overdue pause at start-up (%s)", ended.end_reason
            )

    async def maintain(self, ctx: ActionContext) -> None:
        """The leader, on every pass: renew, resume, cap, expire, sweep, reconcile.
        With ``ctx.dry_run`` (the action disabled, in dry run, or the kill switch on) it
        only ends pauses, never renews or sweeps."""
        now = ctx.clock.time()
        if now - self._last_check < self.config.check_interval_seconds:
            return
        self._last_check = now
        try:
            stored = await eg.read_pause(ctx.kube)
        except ValueError as error:
            ctx.log.error("eviction guard: the pause ConfigMap is malformed (%s); ending it", error)
            await eg.end_pause(ctx.kube, now, "expired")
            self.ended.labels("expired").inc()
            return
        if stored is None or not stored.state.paused:
            await self._continue_reconcile(ctx)
            return
        state = stored.state
        overdue = state.overdue(now)
        if overdue is not None:
            await self._end(ctx, stored, now, overdue)
            return
        signals: Signals | None
        try:
            signals = (
                await read_signals(self.config.exporter_url, timeout_seconds=10.0, now=now)
                if self.config.exporter_url
                else None
            )
        except SignalsUnavailableError as error:
            ctx.log.warning(
                "eviction guard: cannot re-check the pause (%s); it expires on its own", error
            )
            signals = None
        if signals is not None:
            if evaluate(signals, self.config).holds:
                if not ctx.dry_run:
                    await self._maybe_renew(ctx, stored, now)
            elif recovered(signals, self.config):
                hold = self.config.recovery_grace_factor * signals.grace_seconds
                if state.recovering_since is None:
                    await self._write(ctx, stored, dataclasses.replace(state, recovering_since=now))
                    ctx.log.info("eviction guard: the storm is over; resuming in %.0f s", hold)
                elif now - state.recovering_since >= hold:
                    await self._end(ctx, stored, now, "recovered", stale=signals.stale_nodes)
                    return
            elif state.recovering_since is not None:
                await self._write(ctx, stored, dataclasses.replace(state, recovering_since=None))
        if state.mode == "taint-removal" and not ctx.dry_run:
            await self._sweep(ctx, signals_nodes=signals.wave_nodes_named if signals else None)

    async def _maybe_renew(self, ctx: ActionContext, stored: eg.StoredPause, now: float) -> None:
        state = stored.state
        if state.recovering_since is not None:
            state = dataclasses.replace(state, recovering_since=None)
        expires = state.expires_at or now
        cap = state.max_until if state.max_until is not None else now
        if (
            expires - now < self.config.renew_before_seconds
            and state.renewals < self.config.max_renewals
            and expires < cap
        ):
            state = dataclasses.replace(
                state,
                expires_at=min(now + self.config.pause_seconds, cap),
                renewals=state.renewals + 1,
            )
            self.renewed.inc()
            ctx.log.info(
                "eviction guard: conditions still hold; pause renewed until %s (renewal %d)",
                eg.format_time(state.expires_at or now),
                state.renewals,
            )
        if state != stored.state:
            await self._write(ctx, stored, state)

    async def _write(
        self, ctx: ActionContext, stored: eg.StoredPause, state: eg.PauseState
    ) -> None:
        try:
            await eg.write_pause(ctx.kube, state, stored.resource_version)
        except ConflictError:
            ctx.log.info("eviction guard: the pause changed under us; re-reading next pass")
            self._last_check = float("-inf")

    async def _end(
        self,
        ctx: ActionContext,
        stored: eg.StoredPause,
        now: float,
        reason: str,
        *,
        stale: Sequence[str] | None = None,
    ) -> None:
        try:
            await eg.write_pause(ctx.kube, stored.state.ended(now, reason), stored.resource_version)
        except ConflictError:
            self._last_check = float("-inf")
            return
        self.ended.labels(reason).inc()
        log_method = ctx.log.warning if reason == "cap" else ctx.log.info
        log_method(
            "eviction guard: pause ended (%s) after %.0f s, %d renewal(s)",
            reason,
            now - (stored.state.started_at or now),
            stored.state.renewals,
        )
        if stored.state.mode == "policy" and self.config.reconcile:
            nodes = list(stale) if stale is not None else await self._stale_now(now)
            self._reconcile = _Reconcile([n for n in nodes if n])
            await self._continue_reconcile(ctx)

    async def _stale_now(self, now: float, *, wave_only: bool = False) -> list[str]:
        if not self.config.exporter_url:
            return []
        try:
            signals = await read_signals(self.config.exporter_url, timeout_seconds=10.0, now=now)
        except SignalsUnavailableError:
            return []
        return list(signals.wave_nodes_named if wave_only else signals.stale_nodes)

    def _batch(self) -> int:
        return max(
            1, int(self.config.taint_removal_nodes_per_second * self.config.check_interval_seconds)
        )

    async def _continue_reconcile(self, ctx: ActionContext) -> None:
        """Bounce the NoExecute taint of nodes still NotReady after a pause, a batch per
        pass, so the taint-eviction controller schedules their pods again."""
        job = self._reconcile
        if job is None:
            return
        batch = job.nodes[job.cursor : job.cursor + self._batch()]
        job.cursor += len(batch)
        for name in batch:
            if await _remove_no_execute_taints(ctx.kube, name):
                self.taints_removed.labels("reconcile").inc()
                ctx.log.info(
                    "eviction guard: bounced the NoExecute taint of %s (still NotReady after "
                    "the pause): its pods' tolerations count again from now",
                    name,
                )
        if job.cursor >= len(job.nodes):
            self._reconcile = None

    async def _sweep(self, ctx: ActionContext, *, signals_nodes: Sequence[str] | None) -> None:
        """Taint-removal mode: remove the NoExecute taints of stale nodes, not on the
        allow-list, a batch per pass (cycling through them)."""
        nodes = signals_nodes
        if nodes is None:
            nodes = await self._stale_now(ctx.clock.time(), wave_only=True)
        stored = await eg.read_pause(ctx.kube)
        allow = set(stored.state.allow_nodes) if stored is not None else set()
        candidates = sorted(n for n in nodes if n not in allow)
        if not candidates:
            return
        batch = self._batch()
        start = self._sweep_cursor % len(candidates)
        chosen = (candidates[start:] + candidates[:start])[:batch]
        self._sweep_cursor = start + len(chosen)
        for name in chosen:
            if await _remove_no_execute_taints(ctx.kube, name):
                self.taints_removed.labels("fallback").inc()

    async def _probe(self, ctx: ActionContext, signals: Signals) -> tuple[list[str], list[str]]:
        probe = self.config.kubelet_probe
        sample = list(signals.stale_nodes[: probe.sample])
        reachable: list[str] = []
        unreachable: list[str] = []

        async def one(name: str) -> None:
            ip = await _node_ip(ctx.kube, name)
            ok = ip is not None and await _tcp_reachable(ip, probe.port, probe.timeout_seconds)
            (reachable if ok else unreachable).append(name)

        await asyncio.gather(*(one(n) for n in sample))
        return reachable, unreachable
