"""The execution ledger: every remediation's state, kept in Kubernetes ConfigMaps.

The receiver keeps no database. What must survive a restart, a failover to another
replica or a duplicate delivery lives in a few ConfigMaps in one namespace, one per
concern, each bounded in size (a ConfigMap holds at most 1 MiB):

``<prefix>-records``
    One *execution record* per (action, alert fingerprint, alert startsAt), the key
    hashed so any fingerprint makes a valid ConfigMap key. Alertmanager's HA pair,
    its retries and its ``repeat_interval`` re-sends all carry the same fingerprint and
    startsAt, so they land on the same record and an action is never scheduled twice.
    The record is the intake (``accept`` writes it before the webhook answers) and the
    state machine the leader drives::

        pending ─▶ awaiting-approval ─▶ pending (approved) | refused (expired)
           │
           ├─▶ refused | dry-run                      (the guard kernel's verdict)
           └─▶ started ─▶ succeeded | failed
                  │   └─▶ active ─▶ reverted          (reversible actions)
                  └─▶ interrupted                     (a leader died mid-action and the
                                                       action could not be re-verified)

    Finished records are pruned by age and count, oldest first; open ones never.
``<prefix>-limits``
    Budgets (wall-clock timestamps of executions in the last hour, per action, global,
    node-affecting) and per-target cooldowns. Both are checked and taken in *one*
    write, so a crash cannot consume one without the other.
``<prefix>-active``
    Reversible actions in force and when they expire. An entry is written *before* the
    action runs, so whatever pauses a safety mechanism is always reverted at its TTL,
    even if the leader dies halfway.
the kill-switch ConfigMap
    ``paused: "true"`` stops everything (``kube-ballast remediations pause``).

Every write is optimistic: read the object with its resourceVersion, change a copy,
replace it with that resourceVersion, and on 409 Conflict read again and retry with
jittered backoff. Mutations are pure functions of the current data, so running one
again after a conflict is safe; that is what makes two concurrent deliveries of the
same group, or two replicas that both believe they lead, harmless.

**Why wall-clock time.** Budgets, cooldowns and expiries are persisted, and must mean
the same after a restart and on another node. A monotonic clock starts at an arbitrary
point per boot and per host, so a monotonic timestamp written by one process means
nothing to the next one. Wall-clock time does, up to the skew between the replicas'
clocks (NTP keeps it well under a second on a healthy cluster). The skew is bounded on
the safe side: a timestamp from the future (written by a replica whose clock runs
ahead) is read as "now", so it still counts against the budget and still holds the
cooldown, and a skew beyond ``CLOCK_SKEW_WARNING_SECONDS`` is logged. Leader election
does not depend on wall-clock agreement at all (see ``leader.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from kubeballast.core.config import ActionConfig, RemediationsConfig
from kubeballast.core.errors import PermanentError
from kubeballast.core.kube import (
    ConflictError,
    NotFoundError,
    StateUnavailableError,
    kube_call,
)
from kubeballast.remediations.contract import Alert

__all__ = [
    "BUDGET_WINDOW_SECONDS",
    "CLOSED_STATES",
    "OPEN_STATES",
    "ActiveEntry",
    "ApprovalError",
    "Clock",
    "ConfigMapState",
    "ConflictError",
    "ExecutionRecord",
    "Ledger",
    "NotFoundError",
    "Reservation",
    "StateUnavailableError",
    "SystemClock",
    "kube_call",
    "record_key",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

BUDGET_WINDOW_SECONDS = 3600.0
"""Budgets are "at most N in any sliding hour"."""
CLOCK_SKEW_WARNING_SECONDS = 5.0
"""A persisted timestamp this far in the future means the replicas' clocks disagree."""
MAX_STATE_BYTES = 900 * 1024
"""Stay well below the 1 MiB an object may have in etcd (the apiserver refuses more)."""
MAX_LABELS = 64
MAX_LABEL_CHARS = 256
MAX_ANNOTATION_CHARS = 512
KEPT_ANNOTATIONS = ("summary", "description", "runbook_url", "message")
"""Annotations a record keeps: what a person needs in the notification. The rest can be
long (templated tables) and would eat the ConfigMap's space."""

RecordState = Literal[
    "pending",
    "awaiting-approval",
    "started",
    "active",
    "succeeded",
    "failed",
    "refused",
    "dry-run",
    "interrupted",
    "reverted",
]
OPEN_STATES: frozenset[str] = frozenset({"pending", "awaiting-approval", "started", "active"})
"""States the leader still has work for; never pruned."""
CLOSED_STATES: frozenset[str] = frozenset(
    {"succeeded", "failed", "refused", "dry-run", "interrupted", "reverted"}
)


class Clock(Protocol):
    """Wall-clock time, injectable: tests move it forward to reach budgets' and TTLs' ends."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()


class ApprovalError(PermanentError):
    """An approval that cannot be granted: unknown id, already decided, or expired."""


@dataclass(frozen=True)
class _Snapshot:
    data: dict[str, str]
    resource_version: str | None
    """None: the ConfigMap does not exist yet."""


class ConfigMapState:
    """One ConfigMap used as a small key-value store with optimistic concurrency."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        name: str,
        *,
        timeout: float,
        attempts: int = 12,
        base_delay: float = 0.02,
        max_delay: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        from kubernetes_asyncio.client import CoreV1Api

        self._core: Any = CoreV1Api(api)  # bodies are plain dicts, which it serialises as is
        self.namespace = namespace
        self.name = name
        self._timeout = timeout
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._rng = rng or random.Random()

    async def read(self) -> _Snapshot:
        try:
            cm = await kube_call(
                f"get configmap {self.namespace}/{self.name}",
                self._core.read_namespaced_config_map(
                    self.name, self.namespace, _request_timeout=self._timeout
                ),
            )
        except NotFoundError:
            return _Snapshot({}, None)
        return _Snapshot(dict(cm.data or {}), cm.metadata.resource_version)

    async def update(self, mutate: Callable[[dict[str, str]], T]) -> T:
        """Apply ``mutate`` (pure: it may run once per conflict) to the data and write it.

        No write happens when the data did not change. Raises ``StateUnavailableError`` when
        the API is unreachable or the conflicts do not stop.
        """
        for attempt in range(self._attempts):
            snapshot = await self.read()
            data = dict(snapshot.data)
            result = mutate(data)
            if data == snapshot.data and snapshot.resource_version is not None:
                return result
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "kube-ballast"},
                },
                "data": data,
            }
            try:
                if snapshot.resource_version is None:
                    await kube_call(
                        f"create configmap {self.namespace}/{self.name}",
                        self._core.create_namespaced_config_map(
                            self.namespace, body, _request_timeout=self._timeout
                        ),
                    )
                else:
                    body["metadata"]["resourceVersion"] = snapshot.resource_version  # type: ignore[index]
                    await kube_call(
                        f"update configmap {self.namespace}/{self.name}",
                        self._core.replace_namespaced_config_map(
                            self.name, self.namespace, body, _request_timeout=self._timeout
                        ),
                    )
                return result
            except (ConflictError, NotFoundError):
                # Someone wrote in between (or deleted it): read again. Full jitter keeps
                # replicas that collided from colliding again in lockstep.
                cap = min(self._max_delay, self._base_delay * 2**attempt)
                await asyncio.sleep(self._rng.uniform(0, cap))
        raise StateUnavailableError(
            f"configmap {self.namespace}/{self.name}: still conflicting after "
            f"{self._attempts} attempts"
        )


# --------------------------------------------------------------------------------------
# Execution records
# --------------------------------------------------------------------------------------


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat()


def record_key(action: str, fingerprint: str, starts_at: datetime.datetime) -> str:
    """The record's ConfigMap key: a hash, so any fingerprint makes a valid key."""
    digest = hashlib.sha256(f"{action}\0{fingerprint}\0{_iso(starts_at)}".encode()).hexdigest()
    return f"r-{digest[:32]}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class ExecutionRecord:
    """One (action, alert) pair and what became of it. Stored as JSON."""

    key: str
    action: str
    fingerprint: str
    starts_at: str
    """ISO 8601, UTC."""
    alertname: str
    group_key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str
    state: RecordState
    created_at: float
    updated_at: float
    reason: str = ""
    """A bounded reason code (``cooldown``, ``precondition-false`` ...)."""
    detail: str = ""
    """Free text for people: the guard's explanation, the action's outcome."""
    holder: str = ""
    """The leader identity that started the action."""
    target: str = ""
    approval_id: str = ""
    approval_expires_at: float = 0.0
    approved_by: str = ""
    resolved: bool = False
    """A resolved notification for the alert arrived."""
    expires_at: float = 0.0
    """For an active reversible action: when it is reverted."""
    dry_run: bool = False

    @classmethod
    def new(cls, action: str, alert: Alert, group_key: str, now: float) -> ExecutionRecord:
        labels = {
            _clip(k, MAX_LABEL_CHARS): _clip(v, MAX_LABEL_CHARS)
            for k, v in sorted(alert.labels.items())[:MAX_LABELS]
        }
        annotations = {
            k: _clip(alert.annotations[k], MAX_ANNOTATION_CHARS)
            for k in KEPT_ANNOTATIONS
            if k in alert.annotations
        }
        return cls(
            key=record_key(action, alert.fingerprint, alert.starts_at),
            action=action,
            fingerprint=alert.fingerprint,
            starts_at=_iso(alert.starts_at),
            alertname=alert.name,
            group_key=_clip(group_key, MAX_ANNOTATION_CHARS),
            labels=labels,
            annotations=annotations,
            generator_url=_clip(alert.generator_url, MAX_ANNOTATION_CHARS),
            state="pending",
            created_at=now,
            updated_at=now,
        )

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    def alert(self) -> Alert:
        """The alert as the action sees it (from the bounded copy kept here)."""
        return Alert(
            status="resolved" if self.resolved else "firing",
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            starts_at=datetime.datetime.fromisoformat(self.starts_at),
            ends_at=None,
            generator_url=self.generator_url,
            fingerprint=self.fingerprint,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ExecutionRecord:
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        # Unknown keys are ignored, so an older receiver reads a newer one's records
        # during a rolling upgrade.
        return cls(**{k: v for k, v in raw.items() if k in known})


def _decode_records(data: Mapping[str, str]) -> dict[str, ExecutionRecord]:
    records: dict[str, ExecutionRecord] = {}
    for key, text in data.items():
        try:
            records[key] = ExecutionRecord.from_json(text)
        except (ValueError, TypeError) as error:
            # A damaged entry is dropped from view, not fatal: losing one record must
            # not stop every remediation. It is logged so someone looks.
            log.error("ledger: unreadable record %s dropped: %s", key, error)
    return records


def _prune_records(data: dict[str, str], now: float, retention: float, max_records: int) -> None:
    """Drop finished records: too old, then the oldest beyond the count and byte limits."""
    records = _decode_records(data)
    for key in set(data) - set(records):
        del data[key]
    closed = sorted(
        (r for r in records.values() if not r.open), key=lambda r: (r.updated_at, r.key)
    )
    for record in closed:
        if record.updated_at < now - retention:
            del data[record.key]
    closed = [r for r in closed if r.key in data]
    size = sum(len(k) + len(v) for k, v in data.items())
    while closed and (len(data) > max_records or size > MAX_STATE_BYTES):
        oldest = closed.pop(0)
        size -= len(oldest.key) + len(data.pop(oldest.key))


# --------------------------------------------------------------------------------------
# Budgets and cooldowns
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    """What one execution takes from the limits."""

    record: str
    action: str
    target: str
    changes_cluster: bool
    node_affecting: bool
    limits: ActionConfig
    max_actions_per_hour: int
    max_node_affecting_per_hour: int


def _budget_names(r: Reservation) -> list[tuple[str, int, str]]:
    """(ConfigMap key, limit, refusal reason) of every budget ``r`` counts against."""
    names = [(f"budget.action.{r.action}", r.limits.max_per_hour, "budget-action")]
    if r.changes_cluster:
        names.append(("budget.global", r.max_actions_per_hour, "budget-global"))
    if r.node_affecting:
        names.append(
            ("budget.node-affecting", r.max_node_affecting_per_hour, "budget-node-affecting")
        )
    return names


def _cooldown_key(action: str, target: str) -> str:
    return "cooldown." + hashlib.sha256(f"{action}\0{target}".encode()).hexdigest()[:32]


def _clamped(stamp: float, now: float) -> float:
    """A timestamp from the future reads as now: skew errs on the side of holding back."""
    if stamp > now + CLOCK_SKEW_WARNING_SECONDS:
        log.warning(
            "ledger: a timestamp %.1f s in the future: the replicas' clocks disagree",
            stamp - now,
        )
    return min(stamp, now)


def _budget_entries(data: Mapping[str, str], key: str, now: float) -> list[list[Any]] | None:
    """The [timestamp, record] pairs of budget ``key`` within the window; None if damaged
    (the callers treat a damaged budget as spent: fail closed)."""
    try:
        entries = json.loads(data.get(key, "[]"))
        return [e for e in entries if _clamped(float(e[0]), now) > now - BUDGET_WINDOW_SECONDS]
    except (ValueError, TypeError, IndexError):
        log.error("ledger: unreadable budget %s: counted as exhausted", key)
        return None


def check_limits(data: Mapping[str, str], r: Reservation, now: float) -> tuple[str, str] | None:
    """(reason, detail) when ``r`` would exceed a budget or a cooldown, else None.

    A reservation already taken by the same record passes: the leader that resumes an
    interrupted action must not be refused by its predecessor's reservation.
    """
    cooldown = data.get(_cooldown_key(r.action, r.target))
    if cooldown is not None:
        try:
            entry = json.loads(cooldown)
            since = _clamped(float(entry["at"]), now)
            if entry.get("record") != r.record and now < since + r.limits.cooldown_seconds:
                left = since + r.limits.cooldown_seconds - now
                return (
                    "cooldown",
                    f"{r.target} was acted on {now - since:.0f} s ago ({left:.0f} s left)",
                )
        except (ValueError, KeyError, TypeError):
            return "cooldown", f"cooldown entry of {r.target} unreadable: held closed"
    for key, limit, reason in _budget_names(r):
        entries = _budget_entries(data, key, now)
        if entries is None:
            return reason, f"budget {key[7:]} unreadable: held closed"
        if any(e[1] == r.record for e in entries):
            continue
        if len(entries) >= limit:
            return reason, f"{len(entries)} of {limit} used in the last hour ({key[7:]})"
    return None


def take_limits(data: dict[str, str], r: Reservation, now: float) -> tuple[str, str] | None:
    """Like :func:`check_limits`, and on success take the budgets and start the cooldown."""
    refusal = check_limits(data, r, now)
    if refusal is not None:
        return refusal
    for key, _, _ in _budget_names(r):
        entries = _budget_entries(data, key, now) or []
        if not any(e[1] == r.record for e in entries):
            entries.append([now, r.record])
        data[key] = json.dumps(entries, separators=(",", ":"))
    if r.limits.cooldown_seconds > 0:
        data[_cooldown_key(r.action, r.target)] = json.dumps(
            {
                "action": r.action,
                "target": r.target,
                "at": now,
                "until": now + r.limits.cooldown_seconds,
                "record": r.record,
            },
            separators=(",", ":"),
        )
    _prune_limits(data, now)
    return None


def _prune_limits(data: dict[str, str], now: float) -> None:
    for key in list(data):
        if key.startswith("cooldown."):
            try:
                if float(json.loads(data[key])["until"]) < now:
                    del data[key]
            except (ValueError, KeyError, TypeError):
                pass  # kept: it holds its target closed until someone looks
        elif key.startswith("budget."):
            entries = _budget_entries(data, key, now)
            if entries is None:
                continue  # kept: it holds its budget closed until someone looks
            if entries:
                data[key] = json.dumps(entries, separators=(",", ":"))
            else:
                del data[key]


def budgets_remaining(
    data: Mapping[str, str], config: RemediationsConfig, now: float
) -> dict[str, int]:
    """Remaining executions per budget (``action.<name>``, ``global``, ``node-affecting``)."""

    def left(key: str, limit: int) -> int:
        entries = _budget_entries(data, f"budget.{key}", now)
        return 0 if entries is None else max(0, limit - len(entries))

    remaining = {
        "global": left("global", config.max_actions_per_hour),
        "node-affecting": left("node-affecting", config.max_node_affecting_per_hour),
    }
    for action in config.actions:
        remaining[f"action.{action.name}"] = left(f"action.{action.name}", action.max_per_hour)
    return remaining


# --------------------------------------------------------------------------------------
# Active reversible actions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveEntry:
    """A reversible action in force (or about to be): revert it at ``expires_at``."""

    record: str
    action: str
    target: str
    armed_at: float
    expires_at: float

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ActiveEntry:
        raw = json.loads(text)
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})


# --------------------------------------------------------------------------------------
# The ledger
# --------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """The receiver's durable state, over the ConfigMaps described above."""

    api: Any
    config: RemediationsConfig
    clock: Clock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        timeout = self.config.api_timeout_seconds
        ns, prefix = self.config.namespace, self.config.state_prefix
        self.records_map = ConfigMapState(self.api, ns, f"{prefix}-records", timeout=timeout)
        self.limits_map = ConfigMapState(self.api, ns, f"{prefix}-limits", timeout=timeout)
        self.active_map = ConfigMapState(self.api, ns, f"{prefix}-active", timeout=timeout)
        self.kill_switch_map = ConfigMapState(
            self.api, ns, self.config.kill_switch_configmap, timeout=timeout
        )

    def _prune(self, data: dict[str, str]) -> None:
        _prune_records(
            data,
            self.clock.time(),
            self.config.record_retention_seconds,
            self.config.max_records,
        )

    # -- records -----------------------------------------------------------------------

    async def record_intake(
        self, new: Iterable[ExecutionRecord], resolved: Iterable[str]
    ) -> list[str]:
        """Add the records not there yet; flag ``resolved`` keys. Returns the added keys."""
        new = list(new)
        resolved = list(resolved)

        def mutate(data: dict[str, str]) -> list[str]:
            added = []
            for record in new:
                if record.key not in data:
                    data[record.key] = record.to_json()
                    added.append(record.key)
            for key in resolved:
                if key in data:
                    current = ExecutionRecord.from_json(data[key])
                    if not current.resolved:
                        data[key] = dataclasses.replace(
                            current, resolved=True, updated_at=self.clock.time()
                        ).to_json()
            self._prune(data)
            return added

        if not new and not resolved:
            return []
        return await self.records_map.update(mutate)

    async def records(self) -> dict[str, ExecutionRecord]:
        return _decode_records((await self.records_map.read()).data)

    async def transition(
        self, key: str, expect: Iterable[str], *, expect_holder: str | None = None, **changes: Any
    ) -> ExecutionRecord | None:
        """Move record ``key`` to new values if it is in one of the ``expect`` states.

        Returns the new record, or None when it is missing or in another state: someone
        else (another leader, an approval) moved it first, and the caller stands down.
        This compare-and-set is what makes a claim (pending -> started) exclusive.
        """
        expected = frozenset(expect)

        def mutate(data: dict[str, str]) -> ExecutionRecord | None:
            if key not in data:
                return None
            current = ExecutionRecord.from_json(data[key])
            if current.state not in expected:
                return None
            if expect_holder is not None and current.holder != expect_holder:
                return None
            updated = dataclasses.replace(current, updated_at=self.clock.time(), **changes)
            data[key] = updated.to_json()
            return updated

        return await self.records_map.update(mutate)

    async def approve(self, approval_id: str, by: str) -> ExecutionRecord:
        """Release a plan waiting for approval; raises ``ApprovalError`` if it cannot."""
        now = self.clock.time()

        def mutate(data: dict[str, str]) -> ExecutionRecord | str:
            for key, text in data.items():
                record = ExecutionRecord.from_json(text)
                if record.approval_id != approval_id:
                    continue
                if record.state != "awaiting-approval" or record.approved_by:
                    return f"approval {approval_id} was already decided ({record.state})"
                if now >= record.approval_expires_at:
                    return f"approval {approval_id} expired"
                updated = dataclasses.replace(
                    record, approved_by=_clip(by, 128), state="pending", updated_at=now
                )
                data[key] = updated.to_json()
                return updated
            return f"no plan waits for approval {approval_id}"

        result = await self.records_map.update(mutate)
        if isinstance(result, str):
            raise ApprovalError(result)
        return result

    # -- limits ------------------------------------------------------------------------

    async def check_limits(self, reservation: Reservation) -> tuple[str, str] | None:
        """Would ``reservation`` pass the budgets and cooldowns now? (No write.)"""
        data = (await self.limits_map.read()).data
        return check_limits(data, reservation, self.clock.time())

    async def take_limits(self, reservation: Reservation) -> tuple[str, str] | None:
        """Take the budgets and start the cooldown, or say why not (one atomic write)."""
        return await self.limits_map.update(
            lambda data: take_limits(data, reservation, self.clock.time())
        )

    async def budgets_remaining(self) -> dict[str, int]:
        data = (await self.limits_map.read()).data
        return budgets_remaining(data, self.config, self.clock.time())

    # -- active reversible actions -----------------------------------------------------

    async def arm(self, entry: ActiveEntry) -> None:
        def mutate(data: dict[str, str]) -> None:
            data.setdefault(entry.record, entry.to_json())

        await self.active_map.update(mutate)

    async def disarm(self, record: str) -> None:
        def mutate(data: dict[str, str]) -> None:
            data.pop(record, None)

        await self.active_map.update(mutate)

    async def active(self) -> dict[str, ActiveEntry]:
        data = (await self.active_map.read()).data
        entries = {}
        for key, text in data.items():
            try:
                entries[key] = ActiveEntry.from_json(text)
            except (ValueError, KeyError, TypeError):
                log.error("ledger: unreadable active entry %s", key)
        return entries

    # -- kill switch -------------------------------------------------------------------

    async def paused(self) -> tuple[bool, str]:
        """(paused, why). A missing ConfigMap is "not paused": pausing is an explicit act.
        Raises ``StateUnavailableError`` when it cannot be read; the guard then refuses."""
        data = (await self.kill_switch_map.read()).data
        paused = data.get("paused", "false").strip().lower() not in ("false", "")
        why = data.get("reason", "")
        by = data.get("by", "")
        return paused, f"paused by {by or 'someone'}: {why}" if paused else ""

    async def set_paused(self, paused: bool, by: str, reason: str = "") -> None:
        now = datetime.datetime.fromtimestamp(self.clock.time(), datetime.UTC)

        def mutate(data: dict[str, str]) -> None:
            data.clear()
            data.update(
                {
                    "paused": "true" if paused else "false",
                    "by": _clip(by, 128),
                    "reason": _clip(reason, MAX_ANNOTATION_CHARS),
                    "at": now.isoformat(),
                }
            )

        await self.kill_switch_map.update(mutate)
