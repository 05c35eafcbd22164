"""The contract between the receiver's HTTP side and its engine.

The webhook handler stays thin (STYLE.md 9): it authenticates, validates the
Alertmanager payload into the typed objects below, hands the group to an
:class:`Intake` that records it durably, and answers. Everything slow (re-checking
preconditions, guards, acting, notifying) happens after the answer, in supervised
tasks owned by the engine. The handler answers 5xx only when ``accept`` raises
:class:`RecordError`, so that Alertmanager retries; anything else it could not accept
is the sender's fault and gets a 4xx.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from kubeballast.core.errors import TemporaryError

AlertStatus = Literal["firing", "resolved"]


@dataclass(frozen=True)
class Alert:
    """One alert of a webhook payload (Alertmanager's template.Alert)."""

    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime.datetime
    """Timezone-aware."""
    ends_at: datetime.datetime | None
    """None for Alertmanager's zero time (0001-01-01T00:00:00Z): still firing."""
    generator_url: str
    fingerprint: str

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True)
class AlertGroup:
    """One webhook delivery (payload version 4)."""

    version: str
    group_key: str
    status: AlertStatus
    receiver: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    truncated_alerts: int
    alerts: tuple[Alert, ...] = field(default_factory=tuple)


class RecordError(TemporaryError):
    """The group could not be recorded durably: the webhook answers 5xx and
    Alertmanager delivers it again."""


class Intake(Protocol):
    """Where the webhook hands a validated group."""

    async def accept(self, group: AlertGroup) -> None:
        """Record the group durably and schedule its handling; return once recorded.

        Must be idempotent: Alertmanager retries, and an HA pair delivers the same group
        twice. Raises RecordError when the group could not be recorded.
        """
        ...
