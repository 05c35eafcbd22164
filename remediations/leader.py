"""Leader election on a coordination.k8s.io Lease, the way client-go does it.

Several receiver replicas run behind one Service so that a webhook is always answered;
each of them records what it receives in the ledger. Only one may *act*: two replicas
defragmenting the same etcd member, or both spending the budget, is exactly what the
guards exist to prevent. The replica that holds the Lease is that one.

The algorithm is client-go's ``leaderelection`` (``tryAcquireOrRenew``):

- The Lease names a holder, a ``renewTime`` and a ``leaseDurationSeconds``. Every write
  is a replace with the resourceVersion just read, so of two replicas that try at once
  exactly one wins (the other gets 409 and stays a follower).
- A follower takes the Lease only once it has seen the *same* record unchanged for
  ``leaseDurationSeconds``, measured on its *own monotonic clock* from the moment it
  first observed that record. It never compares ``renewTime`` with its own wall clock,
  so clock skew between nodes cannot make a live leader look expired. The price: a new
  process waits one lease duration before taking over a Lease whose holder died.
- The leader renews every ``retry_period``; if it has not managed to renew for
  ``renew_deadline`` (less than the lease duration) it stops acting *before* any
  follower may take over, so two leaders never act at the same moment (as long as a
  process is not frozen for longer than the gap between the two, the caveat every
  lease-based election carries; the ledger's compare-and-set claims are the second
  line of defence).
- On a clean shutdown the leader releases the Lease (empty holder) so a follower takes
  over at its next retry instead of after a full lease duration.

The holder identity is unique per process (host name plus a random suffix): a restarted
replica is a new candidate, never mistaken for the old leader.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import random
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from kubeballast.core.config import LeaderElectionConfig
from kubeballast.core.errors import KubeBallastError
from kubeballast.remediations.ledger import (
    Clock,
    ConflictError,
    NotFoundError,
    SystemClock,
    kube_call,
)

__all__ = ["LeaderElector", "new_identity"]

log = logging.getLogger(__name__)


def new_identity() -> str:
    """A holder identity unique to this process: ``<hostname>_<uuid4>`` like client-go."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _micro_time(epoch: float) -> str:
    """A metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaigns for the Lease until cancelled; :meth:`is_leader` says whether to act."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        config: LeaderElectionConfig,
        *,
        identity: str | None = None,
        timeout: float = 10.0,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        from kubernetes_asyncio.client import CoordinationV1Api

        self._coordination: Any = CoordinationV1Api(api)  # plain-dict bodies, as above
        self.namespace = namespace
        self.name = config.lease_name
        self.config = config
        self.identity = identity or new_identity()
        self._timeout = min(timeout, config.renew_deadline_seconds)
        self._clock = clock or SystemClock()
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._leading = False
        self._renewed_at = -math.inf
        self._observed: tuple[str, ...] | None = None
        self._observed_at = -math.inf
        self.changed = asyncio.Event()
        """Set whenever leadership is gained or lost (the engine clears it)."""

    def is_leader(self) -> bool:
        """True while this process holds the Lease and renewed it within the deadline."""
        return (
            self._leading
            and self._monotonic() - self._renewed_at < self.config.renew_deadline_seconds
        )

    async def run(self) -> None:
        """Acquire, then keep renewing; runs until cancelled (which does not release)."""
        while True:
            try:
                renewed = await self._try_acquire_or_renew()
            except KubeBallastError as error:
                log.warning("leader election: lease %s/%s: %s", self.namespace, self.name, error)
                renewed = False
            now = self._monotonic()
            if renewed:
                self._renewed_at = now
                if not self._leading:
                    self._set_leading(True)
            elif self._leading and now - self._renewed_at >= self.config.renew_deadline_seconds:
                self._set_leading(False)
            period = self.config.retry_period_seconds
            # Followers jitter (client-go's JitterFactor 1.2) so they do not all try at
            # once after a leader dies; the leader renews on time.
            await asyncio.sleep(period if self._leading else period * self._rng.uniform(1, 1.2))

    def _set_leading(self, leading: bool) -> None:
        self._leading = leading
        if leading:
            log.info("leader election: %s is now the leader (lease %s)", self.identity, self.name)
        else:
            log.warning("leader election: %s stopped leading (lease %s)", self.identity, self.name)
        self.changed.set()

    async def _try_acquire_or_renew(self) -> bool:
        now = self._clock.time()
        duration = max(1, math.ceil(self.config.lease_duration_seconds))
        try:
            lease = await kube_call(
                f"get lease {self.namespace}/{self.name}",
                self._coordination.read_namespaced_lease(
                    self.name, self.namespace, _request_timeout=self._timeout
                ),
            )
        except NotFoundError:
            body = self._body(now, duration, acquire=now, transitions=0, rv=None)
            try:
                await kube_call(
                    f"create lease {self.namespace}/{self.name}",
                    self._coordination.create_namespaced_lease(
                        self.namespace, body, _request_timeout=self._timeout
                    ),
                )
            except ConflictError:
                return False
            self._observe_own_write()
            return True

        spec = lease.spec
        holder = spec.holder_identity or ""
        observed = (
            holder,
            str(spec.renew_time),
            str(spec.acquire_time),
            str(spec.lease_transitions),
            str(spec.lease_duration_seconds),
        )
        if observed != self._observed:
            self._observed = observed
            self._observed_at = self._monotonic()
        if holder and holder != self.identity:
            held_for = spec.lease_duration_seconds or duration
            if self._observed_at + held_for > self._monotonic():
                if self._leading:
                    self._set_leading(False)  # someone else holds it now: stop at once
                return False
            log.info("leader election: lease %s held by %s has expired", self.name, holder)

        if holder == self.identity and spec.acquire_time is not None:
            acquire = spec.acquire_time.timestamp()
            transitions = spec.lease_transitions or 0
        else:
            acquire = now
            transitions = (spec.lease_transitions or 0) + 1
        rv = lease.metadata.resource_version
        body = self._body(now, duration, acquire=acquire, transitions=transitions, rv=rv)
        try:
            await kube_call(
                f"update lease {self.namespace}/{self.name}",
                self._coordination.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self._timeout
                ),
            )
        except (ConflictError, NotFoundError):
            return False
        self._observe_own_write()
        return True

    def _observe_own_write(self) -> None:
        # Our own write is the record now; any change after it restarts the clock.
        self._observed = None
        self._observed_at = self._monotonic()

    def _body(
        self, now: float, duration: int, *, acquire: float, transitions: int, rv: str | None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if rv is not None:
            metadata["resourceVersion"] = rv
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": duration,
                "acquireTime": _micro_time(acquire),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }

    async def release(self) -> None:
        """Give the Lease up (clean shutdown): followers take over at their next retry."""
        was_leading = self._leading
        self._leading = False
        if was_leading:
            self.changed.set()
        try:
            lease = await kube_call(
                f"get lease {self.namespace}/{self.name}",
                self._coordination.read_namespaced_lease(
                    self.name, self.namespace, _request_timeout=self._timeout
                ),
            )
            if (lease.spec.holder_identity or "") != self.identity:
                return
            now = self._clock.time()
            body = self._body(
                now,
                1,
                acquire=now,
                transitions=lease.spec.lease_transitions or 0,
                rv=lease.metadata.resource_version,
            )
            body["spec"]["holderIdentity"] = ""
            await kube_call(
                f"release lease {self.namespace}/{self.name}",
                self._coordination.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self._timeout
                ),
            )
            log.info("leader election: %s released lease %s", self.identity, self.name)
        except (KubeBallastError, ConflictError, NotFoundError) as error:
            # Best effort: if it fails, the Lease simply expires.
            log.warning("leader election: could not release lease %s: %s", self.name, error)
