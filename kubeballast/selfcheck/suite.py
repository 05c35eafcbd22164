"""Every check in the report's order, and one run of them against a cluster."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from kubeballast.core.kube import kube_client
from kubeballast.selfcheck import (
    alerts,
    apiserver,
    controllermanager,
    controlplane,
    etcd,
    evictionguard,
    network,
    scale,
    zones,
)
from kubeballast.selfcheck.context import Context, Settings
from kubeballast.selfcheck.model import Check, Report, Status
from kubeballast.selfcheck.runner import (
    DEFAULT_CHECK_TIMEOUT_SECONDS,
    DEFAULT_DEADLINE_SECONDS,
    CheckSpec,
    run_checks,
)

__all__ = [
    "ALL_CHECKS",
    "Check",
    "CheckSpec",
    "Report",
    "Settings",
    "Status",
    "run_selfcheck",
    "select_checks",
]

ALL_CHECKS: Final[tuple[CheckSpec, ...]] = (
    *scale.CHECKS,
    *controlplane.CHECKS,
    *etcd.CHECKS,
    *apiserver.CHECKS,
    *controllermanager.CHECKS,
    *evictionguard.CHECKS,
    *alerts.CHECKS,
    *network.CHECKS,
    *zones.CHECKS,
)
"""Every check, in the report's order (the seed's: size first, then the control plane,
etcd, the apiserver, the controllers, the guard, alerting, networking, placement)."""

if len({spec.id for spec in ALL_CHECKS}) != len(ALL_CHECKS):  # pragma: no cover
    raise RuntimeError("duplicate self-check ids")


def select_checks(patterns: Sequence[str]) -> tuple[CheckSpec, ...]:
    """The checks whose id equals a pattern or starts with ``pattern.`` (``etcd``);
    all with no pattern. ValueError naming an unknown pattern."""
    if not patterns:
        return ALL_CHECKS
    chosen = []
    for pattern in patterns:
        matched = [s for s in ALL_CHECKS if s.id == pattern or s.id.startswith(pattern + ".")]
        if not matched:
            known = ", ".join(s.id for s in ALL_CHECKS)
            raise ValueError(f"--check: no check {pattern!r} (known: {known})")
        chosen += [s for s in matched if s not in chosen]
    return tuple(s for s in ALL_CHECKS if s in chosen)


async def run_selfcheck(
    settings: Settings,
    *,
    checks: Sequence[CheckSpec] = ALL_CHECKS,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    check_timeout_seconds: float = DEFAULT_CHECK_TIMEOUT_SECONDS,
    now: Callable[[], float] = time.time,
    api: Any | None = None,
) -> Report:
    """Run ``checks`` against the cluster ``settings.kubernetes`` reaches (or ``api``,
    a kubernetes-asyncio ``ApiClient`` the caller owns)."""
    own = api is None
    client = await kube_client(settings.kubernetes, "selfcheck") if api is None else api
    context = Context(settings, client, now=now)
    try:
        return await run_checks(
            context,
            checks,
            deadline_seconds=deadline_seconds,
            check_timeout_seconds=check_timeout_seconds,
        )
    finally:
        await context.close()
        if own:
            await client.close()
