"""The demo's scenarios: inject one fault into a running demo and narrate what follows.

Why: each scenario is one of the incidents kube-ballast exists for, told through the
parts that see it: what the exporter measured (its /metrics), which alerts Prometheus
fired and Alertmanager routed, what the receiver's guard decided and did (``GET
/records``), and the outcome counted by the simulator, which knows how many pods were
really deleted. Faults go in through the simulator's control API (``/_sim/faults``,
the same requests as ``kube-ballast simctl``) or straight into etcd.

=====================  ================================================================
scenario               fault, and what should follow
=====================  ================================================================
``congestion``         APF starves 30 % of each zone's kubelets (429s): their Leases go
                       stale in every zone, the congestion verdict and
                       KubeNodeHeartbeatStorm fire, and with the ``eviction-pause``
                       action the guard pauses evictions, so healthy pods stay
``zone-partition``     zone-b loses its connection to the apiserver: KubeZonePartitioned
                       fires, there is no congestion, so no pause: evicting a zone that
                       is really gone is right
``dead-nodes``         two kubelets stop: KubeNodeHeartbeatsMissing, the nodes are
                       tainted and their pods evicted, as they should be
``etcd-nospace``       etcd is filled up to its quota: NOSPACE, EtcdNoSpaceAlarm, the
                       receiver's ``etcd-recover-nospace`` runs and writes come back
``etcd-member-down``   one etcd member is frozen (SIGSTOP): EtcdMembersDown fires;
                       it is thawed afterwards
=====================  ================================================================

Every scenario returns its outcome as a JSON-able dict (``--run-scenario ... --exit``
prints it; the tests assert on it) and undoes its fault before returning.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kubeballast.demo import client, observe
from kubeballast.demo.observe import Reading

CONGESTION_STARVED_FRACTION = 0.3
"""The share of each zone's kubelets whose heartbeats APF rejects every time: shuffle
sharding keeps the same flows in the full queues for as long as the congestion lasts,
so those nodes go stale together (a wave). Starving every heartbeat would put every
zone in FullDisruption, where the node-lifecycle controller stops evicting by itself
(docs/simulator.md); the danger is a minority of each zone."""
CONGESTION_LEASE_REJECT_FRACTION = 0.5
"""The other kubelets' heartbeats: half rejected, and their retries get them through."""
DEFAULT_TOLERATION_SECONDS = 300.0
GRACE_PERIOD_SECONDS = 50.0
PARTITIONED_ZONE = "zone-b"
DEAD_NODES = 2
POLL_SECONDS = 1.0


class ScenarioError(RuntimeError):
    """A scenario's expected step did not happen within its deadline."""


@dataclass
class Narrator:
    """Tells the story: steps as lines, the live status as one rewritten line on a
    terminal, or as plain lines (when it changes) with ``headless``."""

    headless: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)
    started: float | None = None
    """While a scenario runs: when it began; notes then say how long ago (``t+12s``),
    the timeline being the point of most scenarios."""
    _last: str = ""
    _live: bool = False

    def step(self, text: str) -> None:
        self._end_live()
        self.out.write(f"==> {text}\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self._end_live()
        if self.started is not None:
            text = f"t+{time.time() - self.started:<4.0f} {text}"
        self.out.write(f"    {text}\n")
        self.out.flush()

    def progress(self, text: str) -> None:
        if text == self._last:
            return
        self._last = text
        if self.headless:
            self.out.write(f"    {text}\n")
        else:
            self.out.write("\r\x1b[2K" + text)
            self._live = True
        self.out.flush()

    def _end_live(self) -> None:
        if self._live:
            self.out.write("\n")
            self._live = False
            self._last = ""


@dataclass(frozen=True)
class Milestone:
    """Something a scenario expects to see happen, and how to tell it."""

    key: str
    reached: Callable[[Reading], bool]
    say: Callable[[Reading], str]


@dataclass
class Context:
    """A running demo as a scenario sees it."""

    state: dict[str, Any]
    narrator: Narrator
    deadline_seconds: float = 300.0
    await_resume: bool = True
    """congestion: wait for the guard to end its pause (minutes) before returning."""
    maximum_imminent: float = 0.0
    firing_seen: set[str] = field(default_factory=set)
    guard_states: set[str] = field(default_factory=set)

    @property
    def clock_factor(self) -> float:
        return float(self.state["options"]["clock_factor"])

    @property
    def sim_url(self) -> str:
        return str(self.state["simulator"]["url"])

    def sim_faults(self, body: dict[str, Any]) -> Any:
        status, answer = client.send_json(
            f"{self.sim_url}/_sim/faults", body, token=observe.admin_token(self.state)
        )
        if status != 200:
            raise ScenarioError(f"the simulator refused the fault {body}: {answer}")
        return answer

    def sim_get(self, path: str) -> Any:
        return client.get_json(f"{self.sim_url}{path}", token=observe.admin_token(self.state))

    def read(self) -> Reading:
        reading = observe.read_all(self.state, records=True)
        if reading.imminent_evictions is not None:
            self.maximum_imminent = max(self.maximum_imminent, reading.imminent_evictions)
        self.firing_seen.update(reading.firing)
        self.guard_states.add(reading.guard)
        return reading

    def wait(
        self, what: str, done: Callable[[Reading], bool], *, within: float | None = None
    ) -> Reading:
        """Poll every part until ``done``; the live status meanwhile."""
        limit = self.deadline_seconds if within is None else within
        deadline = time.monotonic() + limit
        while True:
            reading = self.read()
            self.narrator.progress(reading.status_line())
            if done(reading):
                return reading
            if time.monotonic() > deadline:
                raise ScenarioError(f"{what}: not within {limit:g} s ({reading.status_line()})")
            time.sleep(POLL_SECONDS)  # the display's pace, bounded by the deadline

    def watch(self, seconds: float) -> Reading:
        """Keep reading (and showing) for ``seconds``."""
        end = time.monotonic() + seconds
        reading = self.read()
        while time.monotonic() < end:
            self.narrator.progress(reading.status_line())
            time.sleep(POLL_SECONDS)  # the display's pace, for a fixed observation time
            reading = self.read()
        return reading

    def follow(self, milestones: list[Milestone], *, within: float) -> dict[str, Reading]:
        """Poll every part until every milestone was seen (or ``within`` seconds),
        narrating each one the moment it is first seen, in the order they happen: the
        first reading that shows each, stamped with ``at``."""
        deadline = time.monotonic() + within
        seen: dict[str, Reading] = {}
        while True:
            reading = self.read()
            reading.at = time.time()
            self.narrator.progress(reading.status_line())
            for milestone in milestones:
                if milestone.key not in seen and milestone.reached(reading):
                    seen[milestone.key] = reading
                    self.narrator.note(milestone.say(reading))
            if len(seen) == len(milestones) or time.monotonic() > deadline:
                return seen
            time.sleep(POLL_SECONDS)  # the display's pace, bounded by the deadline

    def alert_routed(self, *alertnames: str) -> bool:
        """Whether Alertmanager holds any of ``alertnames`` active (one request)."""
        return any(
            a["labels"].get("alertname") in alertnames and a["status"]["state"] == "active"
            for a in observe.alertmanager_alerts(self.state)
        )

    def actions(self) -> list[str]:
        return list(self.state["receiver"].get("actions", []))


def _records_summary(records: list[dict[str, Any]], since: float) -> list[dict[str, str]]:
    return [
        {
            "action": r["action"],
            "alertname": r["alertname"],
            "state": r["state"],
            "reason": r.get("reason", ""),
            "detail": r.get("detail", "")[:200],
        }
        for r in records
        if float(r.get("created_at", 0)) >= since
    ]


def _narrate_records(ctx: Context, records: list[dict[str, str]]) -> None:
    """The receiver's decisions, each distinct one once (Alertmanager re-sends a firing
    group, and every alert of it gets a record per action)."""
    if not records:
        ctx.narrator.note("the receiver recorded no decision (no alert routed to it)")
    seen: dict[tuple[str, ...], int] = {}
    for r in records:
        key = (r["action"], r["alertname"], r["state"], r["reason"], r["detail"])
        seen[key] = seen.get(key, 0) + 1
    for (action, alertname, state, reason, detail), count in seen.items():
        why = f" ({reason})" if reason else ""
        times = f" x{count}" if count > 1 else ""
        ctx.narrator.note(f"receiver: {action} for {alertname}: {state}{why}{times}")
        if detail:
            ctx.narrator.note(f"          {detail}")


def _recover_nodes(ctx: Context, within: float) -> bool:
    """Wait (bounded) until no Lease is stale; False when it did not happen in time."""
    try:
        ctx.wait("nodes healthy again", lambda r: r.stale_nodes == 0, within=within)
    except ScenarioError:
        return False
    return True


# ------------------------------------------------------------------------------ congestion


def _renew_lease_over_http(ctx: Context, stop: threading.Event) -> None:
    """One node's Lease renewed over HTTP as that node (APF level node-high): the
    simulated kubelets' renewals never cross HTTP, so these are what the apiserver's
    /metrics counts as rejected heartbeats, as a real apiserver would."""
    sim = ctx.state["simulator"]
    token = Path(sim["node_token_file"]).read_text().strip()
    path = (
        f"{ctx.sim_url}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{sim['node']}"
    )
    while not stop.is_set():
        try:
            status, raw = client.request(path, token=token, timeout=5.0)
            if status == 200:
                client.request(path, method="PUT", body=json.loads(raw), token=token, timeout=5.0)
        except client.UnreachableError:
            pass
        stop.wait(0.1)  # a kubelet's pace of retries, not synchronisation


def _deleted(before: Reading, after: Reading) -> int:
    """Pods the node-lifecycle controller deleted between two readings."""
    return (after.pods_deleted or 0) - (before.pods_deleted or 0)


def _short_toleration_nodes(ctx: Context) -> list[str]:
    """The nodes of the pods that tolerate an unreachable node for less than the default
    300 s (team-e/fast-failover's 60 s): the first pods the node-lifecycle controller
    deletes. Listed page by page, as a gentle client does."""
    nodes: set[str] = set()
    token = ""
    while True:
        query = "limit=2000" + (f"&continue={urllib.parse.quote(token)}" if token else "")
        page = ctx.sim_get(f"/api/v1/pods?{query}")
        for pod in page["items"]:
            spec = pod.get("spec") or {}
            for toleration in spec.get("tolerations") or []:
                seconds = toleration.get("tolerationSeconds")
                if (
                    toleration.get("key") == "node.kubernetes.io/unreachable"
                    and seconds is not None
                    and seconds < DEFAULT_TOLERATION_SECONDS
                    and spec.get("nodeName")
                ):
                    nodes.add(spec["nodeName"])
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return sorted(nodes)


def congestion(ctx: Context) -> dict[str, Any]:
    started = time.time()
    before = ctx.read()
    pause_available = "eviction-pause" in ctx.actions()
    # The starved share always includes the nodes of the pods with the shortest
    # tolerations, so that every run shows the worst case: those pods are the first
    # the node-lifecycle controller would delete.
    first_to_go = _short_toleration_nodes(ctx)
    ctx.narrator.step(
        f"congestion: API Priority and Fairness sheds node-high: {CONGESTION_STARVED_FRACTION:.0%}"
        " of each zone's kubelets lose every heartbeat (429), the others "
        f"{CONGESTION_LEASE_REJECT_FRACTION:.0%} of theirs"
    )
    if first_to_go:
        ctx.narrator.note(
            f"among them the {len(first_to_go)} nodes running pods that tolerate an "
            "unreachable node for less than 300 s: the first pods to be deleted"
        )
    if not pause_available:
        ctx.narrator.note(
            "this receiver has no eviction-pause action: the guard cannot pause evictions, "
            "so watch what the node-lifecycle controller does without it"
        )
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_lease_over_http, args=(ctx, stop), daemon=True)
    renewer.start()
    ctx.sim_faults(
        {
            "congestion": {
                "lease_reject_fraction": CONGESTION_LEASE_REJECT_FRACTION,
                "starved_node_fraction": CONGESTION_STARVED_FRACTION,
                # The node whose Lease is also renewed over HTTP, so that its 429s show
                # on /metrics in every scrape interval, and the first to go.
                "starved_nodes": sorted({ctx.state["simulator"]["node"], *first_to_go}),
            }
        }
    )
    began = time.time()
    outcome: dict[str, Any] = {
        "scenario": "congestion",
        "pause_available": pause_available,
        "short_toleration_nodes": len(first_to_go),
    }
    try:
        # Watch for as long as the pods' tolerations (300 s of simulated time) would
        # take to run out, plus the grace period: what was going to be evicted is.
        window = (DEFAULT_TOLERATION_SECONDS + GRACE_PERIOD_SECONDS) / ctx.clock_factor + 5
        milestones = [
            Milestone(
                "stale",
                lambda r: bool(r.stale_nodes),
                lambda r: (
                    f"exporter: {r.stale_nodes} nodes' Leases stale ("
                    + ", ".join(f"{z} {v:g}" for z, v in sorted(r.stale_by_zone.items()))
                    + f"); pods predicted to be evicted: {r.imminent_evictions or 0:g}"
                ),
            ),
            Milestone(
                "congested",
                lambda r: "KubeApiserverCongested" in r.firing,
                lambda r: "Prometheus: KubeApiserverCongested fires (the exporter's verdict)",
            ),
            Milestone(
                "storm",
                lambda r: "KubeNodeHeartbeatStorm" in r.firing,
                lambda r: (
                    "Prometheus: KubeNodeHeartbeatStorm fires: stale Leases in several "
                    "zones at once while the apiserver is congested"
                ),
            ),
            Milestone(
                "routed",
                lambda r: ctx.alert_routed("KubeApiserverCongested", "KubeNodeHeartbeatStorm"),
                lambda r: "Alertmanager: routed to the kube-ballast receiver",
            ),
        ]
        if pause_available:
            milestones.append(
                Milestone(
                    "paused",
                    lambda r: r.guard == "paused",
                    lambda r: (
                        "guard: evictions paused (ConfigMap kube-ballast/eviction-guard); "
                        f"pods deleted before that: {_deleted(before, r)}"
                    ),
                )
            )
        within = max(window, 60.0)
        seen = ctx.follow(milestones, within=within)
        missing = [m.key for m in milestones if m.key not in seen and m.key != "paused"]
        if missing:
            raise ScenarioError(f"not seen within {within:.0f} s: {', '.join(missing)}")
        pause_landed = "paused" in seen
        deleted_before_pause: int | None = None
        if pause_landed:
            # Read as soon as the pause was seen (every second): every deletion counted
            # here came before it, so any counted later got through a pause in force.
            deleted_before_pause = _deleted(before, seen["paused"])
            outcome["seconds_to_pause"] = round(seen["paused"].at - began, 1)
        elif pause_available:
            ctx.narrator.note(f"guard: no pause within {within:.0f} s")
        # Until the default tolerations of the first stale nodes' pods have run out.
        remaining = max(5.0, began + window - time.time())
        ctx.narrator.step(
            f"watching {remaining:.0f} s more: the pods' 300 s tolerations run out by then"
        )
        after = ctx.watch(remaining)
        deleted = _deleted(before, after)
        denied = (after.deletions_denied or 0) - (before.deletions_denied or 0)
        records = _records_summary(after.records, started)
        outcome.update(
            {
                "alerts_fired": sorted(ctx.firing_seen),
                "storm_fired": "KubeNodeHeartbeatStorm" in ctx.firing_seen,
                "congested_fired": "KubeApiserverCongested" in ctx.firing_seen,
                "pause_landed": pause_landed,
                "guard_states": sorted(ctx.guard_states),
                "would_have_been_evicted": ctx.maximum_imminent,
                "pods_evicted": deleted,
                "pods_evicted_before_pause": deleted_before_pause,
                "pods_evicted_during_pause": None
                if deleted_before_pause is None
                else deleted - deleted_before_pause,
                "evictions_denied": denied,
                "records": records,
            }
        )
        ctx.narrator.step("outcome")
        _narrate_records(ctx, records)
        if pause_landed:
            ctx.narrator.note(
                f"the pause landed {outcome['seconds_to_pause']:g} s after the congestion "
                f"began; pods tolerating an unreachable node for 60 s would have been "
                f"deleted about {(GRACE_PERIOD_SECONDS + 60) / ctx.clock_factor + 2:.0f} s "
                "after it began"
            )
        ctx.narrator.note(
            f"pods the exporter predicted to be evicted (kubeballast_zone_imminent_pod_evictions,"
            f" at most): {ctx.maximum_imminent:g}"
        )
        split = (
            ""
            if deleted_before_pause is None
            else f"; before the pause: {deleted_before_pause}, while paused: "
            f"{deleted - deleted_before_pause}"
        )
        ctx.narrator.note(
            f"pods the node-lifecycle controller deleted: {deleted}{split} (deletions denied "
            f"by the guard's admission policy: {denied})"
        )
    finally:
        stop.set()
        renewer.join(timeout=10)
        ctx.sim_faults({"clear": True})
    ctx.narrator.step("congestion cleared; waiting for the heartbeats to come back")
    outcome["recovered"] = _recover_nodes(ctx, within=60.0)
    if outcome.get("pause_landed") and ctx.await_resume:
        # The guard never leaves evictions stopped: it resumes once the heartbeats are
        # back and the apiserver is fine for a few grace periods (measured by the
        # receiver in real time, so this takes a couple of minutes).
        ctx.narrator.step("waiting for the guard to resume evictions")
        try:
            ended = ctx.wait("the pause to end", lambda r: r.guard == "not paused", within=180.0)
            outcome["pause_ended"] = True
            outcome["pause_end_reason"] = ended.guard_end_reason
            ctx.narrator.note(f"guard: evictions resumed ({ended.guard_end_reason or '?'})")
        except ScenarioError:
            outcome["pause_ended"] = False
            ctx.narrator.note("guard: still paused (it ends at its expiry at the latest)")
    return outcome


# -------------------------------------------------------------------------- zone-partition


def zone_partition(ctx: Context) -> dict[str, Any]:
    started = time.time()
    before = ctx.read()
    ctx.narrator.step(f"zone-partition: {PARTITIONED_ZONE}'s kubelets cannot reach the apiserver")
    ctx.sim_faults({"partition": {"zones": [PARTITIONED_ZONE]}})
    outcome: dict[str, Any] = {"scenario": "zone-partition", "zone": PARTITIONED_ZONE}
    try:
        reading = ctx.wait(
            "the exporter seeing the zone's Leases stale",
            lambda r: r.stale_by_zone.get(PARTITIONED_ZONE, 0) > 0,
        )
        ctx.narrator.note(
            f"exporter: stale Leases by zone: "
            f"{', '.join(f'{z} {v:g}' for z, v in sorted(reading.stale_by_zone.items()))}"
        )
        ctx.wait("KubeZonePartitioned firing", lambda r: "KubeZonePartitioned" in r.firing)
        ctx.narrator.note(
            "Prometheus: KubeZonePartitioned fires: one zone lost, the others fine, the "
            "apiserver not congested"
        )
        # Give the pipeline time to do something wrong: a few evaluations and a
        # notification round.
        interval = float(ctx.state["options"]["interval_seconds"])
        after = ctx.watch(3 * interval + 12)
        records = _records_summary(after.records, started)
        outcome.update(
            {
                "alerts_fired": sorted(ctx.firing_seen),
                "partition_fired": "KubeZonePartitioned" in ctx.firing_seen,
                "storm_fired": "KubeNodeHeartbeatStorm" in ctx.firing_seen,
                "pause_landed": "paused" in ctx.guard_states,
                "guard_states": sorted(ctx.guard_states),
                "would_have_been_evicted": ctx.maximum_imminent,
                "pods_evicted": (after.pods_deleted or 0) - (before.pods_deleted or 0),
                "records": records,
            }
        )
        ctx.narrator.step("outcome")
        _narrate_records(ctx, records)
        ctx.narrator.note(
            "no eviction pause: a partitioned zone is lost for real, and the node-lifecycle"
            " controller evicting its pods (so they run elsewhere) is what should happen"
            if not outcome["pause_landed"]
            else "the eviction pause landed: that is wrong for a partition"
        )
    finally:
        ctx.sim_faults({"clear": True})
    ctx.narrator.step("partition healed; waiting for the heartbeats to come back")
    outcome["recovered"] = _recover_nodes(ctx, within=60.0)
    return outcome


# ------------------------------------------------------------------------------ dead-nodes


def _worker_nodes(ctx: Context) -> list[tuple[str, str]]:
    """(name, zone) of the worker nodes, by name."""
    selector = urllib.parse.quote("!node-role.kubernetes.io/control-plane")
    nodes = ctx.sim_get(f"/api/v1/nodes?labelSelector={selector}")["items"]
    return sorted(
        (n["metadata"]["name"], n["metadata"]["labels"].get("topology.kubernetes.io/zone", ""))
        for n in nodes
    )


def _evictable_pods(ctx: Context, node: str) -> dict[str, bool]:
    """Pod -> evicted yet (deletionTimestamp set or gone), DaemonSet pods left out: they
    tolerate unreachable nodes forever, as on a real cluster."""
    selector = urllib.parse.quote(f"spec.nodeName={node}")
    pods = ctx.sim_get(f"/api/v1/pods?fieldSelector={selector}")["items"]
    out = {}
    for pod in pods:
        owners = pod["metadata"].get("ownerReferences") or []
        if any(o.get("kind") == "DaemonSet" for o in owners):
            continue
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        out[key] = bool(pod["metadata"].get("deletionTimestamp"))
    return out


def dead_nodes(ctx: Context) -> dict[str, Any]:
    started = time.time()
    workers = _worker_nodes(ctx)
    chosen: list[str] = []
    zones_taken: set[str] = set()
    for name, zone in workers:
        if name == ctx.state["simulator"]["node"] or zone in zones_taken:
            continue
        chosen.append(name)
        zones_taken.add(zone)
        if len(chosen) == DEAD_NODES:
            break
    pods = {node: _evictable_pods(ctx, node) for node in chosen}
    total = sum(len(p) for p in pods.values())
    ctx.narrator.step(
        f"dead-nodes: the kubelets of {', '.join(chosen)} stop ({total} pods on them, "
        "DaemonSets aside)"
    )
    ctx.sim_faults({"kubelets_stopped": {"nodes": chosen}})
    outcome: dict[str, Any] = {"scenario": "dead-nodes", "nodes": chosen, "pods_on_nodes": total}
    try:
        reading = ctx.wait(
            "the exporter seeing the nodes' Leases stale",
            lambda r: (r.stale_nodes or 0) >= len(chosen),
        )
        ctx.narrator.note(f"exporter: {reading.stale_nodes} nodes' Leases stale")
        ctx.wait(
            "KubeNodeHeartbeatsMissing firing", lambda r: "KubeNodeHeartbeatsMissing" in r.firing
        )
        ctx.narrator.note(
            "Prometheus: KubeNodeHeartbeatsMissing fires: a few nodes down, an ordinary "
            "failure; their pods should move"
        )

        def evicted(_: Reading) -> bool:
            for node in chosen:
                pods[node] = _evictable_pods(ctx, node)
            return all(all(p.values()) for p in pods.values())

        window = (DEFAULT_TOLERATION_SECONDS + GRACE_PERIOD_SECONDS) / ctx.clock_factor
        ctx.narrator.step(
            f"waiting for the taint-eviction controller (about {window:.0f} s: grace period "
            "and the pods' 300 s toleration)"
        )
        after = ctx.wait("the dead nodes' pods evicted", evicted)
        records = _records_summary(after.records, started)
        evicted_count = sum(sum(p.values()) for p in pods.values())
        outcome.update(
            {
                "alerts_fired": sorted(ctx.firing_seen),
                "heartbeats_missing_fired": "KubeNodeHeartbeatsMissing" in ctx.firing_seen,
                "storm_fired": "KubeNodeHeartbeatStorm" in ctx.firing_seen,
                "pause_landed": "paused" in ctx.guard_states,
                "would_have_been_evicted": ctx.maximum_imminent,
                "pods_evicted": evicted_count,
                "records": records,
            }
        )
        ctx.narrator.step("outcome")
        _narrate_records(ctx, records)
        ctx.narrator.note(
            f"pods evicted from the dead nodes: {evicted_count} of {total}; the exporter "
            f"predicted up to {ctx.maximum_imminent:g}"
        )
    finally:
        ctx.sim_faults({"clear": True})
    ctx.narrator.step("kubelets back; waiting for the heartbeats")
    outcome["recovered"] = _recover_nodes(ctx, within=60.0)
    return outcome


# ---------------------------------------------------------------------------- etcd-nospace


def _etcd_put(endpoint: str, key: str, value: bytes) -> tuple[int, str]:
    body = {
        "key": base64.b64encode(key.encode()).decode(),
        "value": base64.b64encode(value).decode(),
    }
    status, answer = client.send_json(f"{endpoint}/v3/kv/put", body)
    return status, str(answer)


def etcd_nospace(ctx: Context) -> dict[str, Any]:
    started = time.time()
    etcd = ctx.state["etcd"]
    endpoint = etcd["endpoints"][0]
    ctx.narrator.step(
        f"etcd-nospace: Events churn fills etcd up to its {etcd['quota_bytes'] // 2**20} MiB "
        "quota (--quota-backend-bytes)"
    )
    value = os.urandom(100 * 1024)
    writes = 0
    nospace = False
    for writes in range(1, 2000):
        status, answer = _etcd_put(endpoint, f"/registry/events/demo/e{writes % 8}", value)
        if "space exceeded" in answer or "NOSPACE" in answer:
            nospace = True
            break
        if status != 200:
            raise ScenarioError(f"etcd refused a write unexpectedly: HTTP {status}: {answer}")
    if not nospace:
        raise ScenarioError("etcd did not raise NOSPACE")
    ctx.narrator.note(f"etcd refuses writes after {writes} writes of 100 KiB: NOSPACE")
    outcome: dict[str, Any] = {"scenario": "etcd-nospace", "writes_to_fill": writes}
    ctx.wait("the exporter seeing NOSPACE", lambda r: "NOSPACE" in r.etcd_alarms)
    ctx.narrator.note('exporter: kubeballast_etcd_cluster_alarm{alarm="NOSPACE"} 1')
    ctx.wait("EtcdNoSpaceAlarm firing", lambda r: "EtcdNoSpaceAlarm" in r.firing)
    ctx.narrator.note("Prometheus: EtcdNoSpaceAlarm fires (automation: etcd-recover-nospace)")
    recover_available = "etcd-recover-nospace" in ctx.actions()

    def recovered(r: Reading) -> bool:
        return any(
            rec["action"] == "etcd-recover-nospace"
            and rec["state"] in ("succeeded", "failed", "refused")
            for rec in _records_summary(r.records, started)
        )

    if recover_available:
        ctx.wait("the receiver's etcd-recover-nospace", recovered)
    after = ctx.read()
    records = _records_summary(after.records, started)
    status, answer = _etcd_put(endpoint, "/registry/events/demo/after", b"accepted")
    writes_back = status == 200 and "space exceeded" not in answer
    outcome.update(
        {
            "alerts_fired": sorted(ctx.firing_seen),
            "nospace_alert_fired": "EtcdNoSpaceAlarm" in ctx.firing_seen,
            "recover_available": recover_available,
            "recover_state": next(
                (r["state"] for r in records if r["action"] == "etcd-recover-nospace"), None
            ),
            "writes_back": writes_back,
            "records": records,
        }
    )
    ctx.narrator.step("outcome")
    _narrate_records(ctx, records)
    ctx.narrator.note(
        "a write to etcd is accepted again" if writes_back else f"etcd still refuses: {answer}"
    )
    if not writes_back:
        # Leave the demo usable: the same recovery by hand.
        ctx.narrator.note(
            "recover by hand: kube-ballast --config "
            f"{ctx.state['directory']}/kube-ballast.yaml etcd recover-nospace --execute"
        )
    ctx.wait("EtcdNoSpaceAlarm resolved", lambda r: "NOSPACE" not in r.etcd_alarms, within=60.0)
    return outcome


# ------------------------------------------------------------------------ etcd-member-down


def etcd_member_down(ctx: Context) -> dict[str, Any]:
    members = ctx.state["etcd"]["members"]
    member = members[-1]
    before = ctx.read()
    ctx.narrator.step(
        f"etcd-member-down: member {member['name']} freezes (SIGSTOP to PID {member['pid']}):"
        " it stops answering, as a hung or cut-off member does"
    )
    os.kill(int(member["pid"]), signal.SIGSTOP)
    outcome: dict[str, Any] = {"scenario": "etcd-member-down", "member": member["name"]}
    try:
        reading = ctx.wait(
            "the exporter seeing the member down",
            lambda r: r.etcd_members_up is not None and r.etcd_members_up < len(members),
        )
        ctx.narrator.note(
            f"exporter: {reading.etcd_members_up} of {len(members)} members up "
            "(kubeballast_etcd_member_up)"
        )
        ctx.wait("EtcdMembersDown firing", lambda r: "EtcdMembersDown" in r.firing)
        ctx.narrator.note(
            "Prometheus: EtcdMembersDown fires; the cluster keeps its quorum, so no "
            "automation: a person replaces the member (docs/runbooks/EtcdMembersDown.md)"
        )
        routed = False
        try:
            ctx.wait(
                "EtcdMembersDown in Alertmanager",
                lambda r: ctx.alert_routed("EtcdMembersDown"),
                within=60.0,
            )
            routed = True
        except ScenarioError:
            pass
        outcome.update(
            {
                "alerts_fired": sorted(ctx.firing_seen),
                "members_up_before": before.etcd_members_up,
                "members_up_during": reading.etcd_members_up,
                "members_down_fired": "EtcdMembersDown" in ctx.firing_seen,
                "routed_to_alertmanager": routed,
            }
        )
    finally:
        os.kill(int(member["pid"]), signal.SIGCONT)
    ctx.narrator.step(f"member {member['name']} thawed (SIGCONT)")
    ctx.wait(
        "every member up again",
        lambda r: r.etcd_members_up == len(members),
        within=60.0,
    )
    return outcome


SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "congestion": congestion,
    "zone-partition": zone_partition,
    "dead-nodes": dead_nodes,
    "etcd-nospace": etcd_nospace,
    "etcd-member-down": etcd_member_down,
}


def run_scenario(
    state: dict[str, Any], name: str, narrator: Narrator, *, await_resume: bool = True
) -> dict[str, Any]:
    """Run scenario ``name`` against the running demo described by ``state``;
    ``await_resume=False`` returns without waiting for an eviction pause to end."""
    ctx = Context(state, narrator, await_resume=await_resume)
    narrator.started = time.time()
    try:
        return SCENARIOS[name](ctx)
    finally:
        narrator.started = None
