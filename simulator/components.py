"""Simulated kube-scheduler and kube-controller-manager, as their monitors see them.

The product checks these components the way it would check real ones: their own HTTP
endpoints (``/healthz``, ``/livez``, ``/readyz``, ``/metrics`` on a port of their own,
like 10259 and 10257) and their leader Leases in kube-system. So each simulated
component serves those endpoints on its own loopback port, renews its leader Lease
through the registry (so apiserver congestion and admission apply to it, as
``system:kube-scheduler`` / ``system:kube-controller-manager``) and publishes metrics
that follow the cluster's state: the scheduler's pending pods are the pods without a
node; the controller-manager's work queues come from the simulated controllers.

A component can be killed and revived at run time: killed, its port refuses
connections and its Lease stops being renewed, which is what a crashed process looks
like from outside.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from . import errors
from .admission import UserInfo
from .apf import Classifier, classify
from .clock import SimClock
from .faults import FaultState, RequestClass
from .metrics import ComponentMetrics, ComponentName
from .registry import Registry
from .resources import LEASES, PODS
from .store import decode

log = logging.getLogger(__name__)

LEASE_DURATION_SECONDS = 15
"""--leader-elect-lease-duration default."""
RENEW_DEADLINE_SECONDS = 10
"""--leader-elect-renew-deadline default: leadership is lost after failing this long."""
RETRY_PERIOD_SECONDS = 2
"""--leader-elect-retry-period default: how often the leader renews."""

WorkqueueSource = Callable[[], Mapping[str, tuple[int, int, float]]]
"""name -> (depth, cumulative adds, seconds the oldest item waited)."""

_DEFAULT_QUEUES = (
    "node_lifecycle_controller",
    "replicaset",
    "deployment",
    "daemonset",
    "statefulset",
    "endpoint",
    "garbage_collector_attempt_to_delete",
    "namespace",
)


def _micro_time(clock: SimClock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Component:
    """One simulated control-plane component: endpoints, leader Lease, metrics."""

    def __init__(
        self,
        name: ComponentName,
        registry: Registry,
        clock: SimClock,
        faults: FaultState,
        *,
        host: str = "127.0.0.1",
        workqueues: WorkqueueSource | None = None,
        classify: Classifier = classify,
    ) -> None:
        self.name = name
        self.classify = classify
        """Classifies the Lease renewals: the server's stored configuration
        (``ApiServer.apf.classify``) or the default objects."""
        self.registry = registry
        self.clock = clock
        self.faults = faults
        self.host = host
        self.port = 0
        self.metrics = ComponentMetrics(name)
        self.identity = f"{name}-sim_{uuid.uuid4()}"
        self.user = UserInfo(username=f"system:{name}", groups=("system:authenticated",))
        self.is_leader = False
        self.alive = True
        self.renewals_failed = 0
        self._workqueues = workqueues
        self._last_renew: float | None = None
        self._runner: web.AppRunner | None = None
        self._adds: dict[str, int] = {}

    # -- endpoints -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/livez", self._health)
        app.router.add_get("/readyz", self._health)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        if "verbose" in request.query:
            checks = ["ping", "leaderElection"]
            lines = [f"[+]{c} ok" for c in checks]
            return web.Response(text="\n".join([*lines, "healthz check passed", ""]))
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        self.refresh_metrics()
        openmetrics = "application/openmetrics-text" in request.headers.get("Accept", "")
        body, content_type = self.metrics.render(openmetrics)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def start(self) -> None:
        """Serve the endpoints; the first start picks a free port, revivals reuse it."""
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        self._runner = runner
        self.alive = True

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def kill(self) -> None:
        """Crash the component: endpoints gone, no more renewals."""
        self.alive = False
        self.is_leader = False
        await self.stop()

    async def revive(self) -> None:
        if not self.alive:
            await self.start()

    # -- leader election -------------------------------------------------------------

    def _lease_class(self) -> RequestClass:
        flow_schema, level = self.classify(
            self.user.username,
            self.user.groups,
            "update",
            "coordination.k8s.io",
            "leases",
            "kube-system",
        )
        return RequestClass(
            verb="update",
            api_group="coordination.k8s.io",
            resource="leases",
            subresource="",
            namespace="kube-system",
            username=self.user.username,
            groups=self.user.groups,
            priority_level=level,
            flow_schema=flow_schema,
            is_watch=False,
            is_long_running=False,
        )

    def renew(self) -> bool:
        """One renewal attempt of the leader Lease (create it if missing)."""
        decision = self.faults.decide(self._lease_class())
        now = self.clock.time()
        ok = decision.passed and decision.delay_seconds < RENEW_DEADLINE_SECONDS
        if ok:
            try:
                self._write_lease()
            except errors.ApiError as exc:
                log.debug("%s lease renewal failed: %s", self.name, exc.message)
                ok = False
        if ok:
            self._last_renew = now
            self.is_leader = True
        else:
            self.renewals_failed += 1
            if self._last_renew is None or now - self._last_renew > RENEW_DEADLINE_SECONDS:
                self.is_leader = False
        return ok

    def _write_lease(self) -> None:
        now = _micro_time(self.clock)
        entry = self.registry.store.get(LEASES, "kube-system", self.name)
        if entry is None:
            body: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-system"},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            self.registry.create(LEASES, "kube-system", body, self.user)
            return
        lease = decode(entry.raw)
        spec = lease.setdefault("spec", {})
        if spec.get("holderIdentity") != self.identity:
            spec["holderIdentity"] = self.identity
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["renewTime"] = now
        spec["leaseDurationSeconds"] = LEASE_DURATION_SECONDS
        self.registry.update(LEASES, "kube-system", self.name, lease, self.user)

    # -- metrics -----------------------------------------------------------------------

    def refresh_metrics(self) -> None:
        self.metrics.set_leader(self.is_leader, self.name)
        if self.name == "kube-scheduler":
            unscheduled = len(self.registry.store.by_index(PODS, "spec.nodeName", ""))
            self.metrics.set_pending_pods("active", unscheduled)
            for queue in ("backoff", "unschedulable", "gated"):
                self.metrics.set_pending_pods(queue, 0)
            return
        queues = dict.fromkeys(_DEFAULT_QUEUES, (0, 0, 0.0))
        if self._workqueues is not None:
            queues.update(self._workqueues())
        for queue, (depth, adds, waited) in queues.items():
            adds = max(adds, self._adds.get(queue, 0))
            self._adds[queue] = adds
            self.metrics.set_workqueue(queue, depth, adds, waited)

    async def run(self) -> None:
        """Renew the Lease every retry period while alive; runs until cancelled."""
        while True:
            if self.alive:
                self.renew()
            await self.clock.sleep(RETRY_PERIOD_SECONDS)
