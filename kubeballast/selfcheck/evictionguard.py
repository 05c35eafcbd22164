"""The eviction guard: installed, failing open, and not pausing evictions right now.

The guard (deploy/eviction-guard/) is what keeps a congested apiserver from turning into
a zone-wide eviction: an admission policy that denies the node controller's pod
deletions while its parameter ConfigMap says ``paused``. It only helps if it is in
place before the storm, so:

- **installed**: the policy, the binding and the receiver's FlowSchema, read by
  :func:`kubeballast.core.evictionguard.guard_installation` (which also checks that
  the policy and binding fail open). No ValidatingAdmissionPolicy API, no policy or no
  binding is a FAIL; anything else it reports (the FlowSchema missing, a binding that
  does not fail open) a WARN.
- **pause**: :func:`kubeballast.core.evictionguard.read_pause`. A pause in force means
  evictions are off now: WARN, with who paused, why and until when. A pause past its
  expiry or its cap (the janitor should have ended it; KubeEvictionPauseOverdue), or a
  ConfigMap that cannot be parsed, is a FAIL.
"""

from __future__ import annotations

from typing import Any, Final

from kubeballast.core.evictionguard import (
    BINDING_NAME,
    FLOWSCHEMA_NAME,
    PARAM_NAME,
    PARAM_NAMESPACE,
    POLICY_NAME,
    format_time,
    guard_installation,
    read_pause,
)
from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import Status, runbook
from kubeballast.selfcheck.runner import CheckSpec, Finding

__all__ = ["CHECKS"]

INSTALL_FIX: Final = "kubectl apply -k deploy/eviction-guard/ (docs/selfcheck.md)"


async def check_installed(context: Context) -> Finding:
    installation = await guard_installation(context.api)
    evidence: dict[str, Any] = {
        "policy_api_served": installation.policy_api,
        "policy": {"name": POLICY_NAME, "installed": installation.policy},
        "binding": {"name": BINDING_NAME, "installed": installation.binding},
        "flowschema": {"name": FLOWSCHEMA_NAME, "installed": installation.flowschema},
        "problems": list(installation.problems),
    }
    if not (installation.policy_api and installation.policy and installation.binding):
        return Finding(
            Status.FAIL,
            "eviction guard not installed: " + "; ".join(installation.problems),
            evidence,
            INSTALL_FIX,
        )
    if installation.problems:
        return Finding(Status.WARN, "; ".join(installation.problems), evidence, INSTALL_FIX)
    return Finding(Status.PASS, "policy, binding and FlowSchema installed, failing open", evidence)


async def check_pause(context: Context) -> Finding:
    where = f"ConfigMap {PARAM_NAMESPACE}/{PARAM_NAME}"
    fix = "kube-ballast eviction-guard status; kube-ballast eviction-guard resume"
    try:
        stored = await read_pause(context.api)
    except ValueError as error:
        return Finding(
            Status.FAIL, f"{where} cannot be parsed: {error}", {"error": str(error)}, fix
        )
    if stored is None:
        return Finding(Status.PASS, f"no pause ever recorded ({where} absent)", {})
    state = stored.state

    def at(value: float | None) -> str | None:
        return None if value is None else format_time(value)

    evidence: dict[str, Any] = {
        "paused": state.paused,
        "reason": state.reason,
        "mode": state.mode,
        "owner": state.owner,
        "started_at": at(state.started_at),
        "expires_at": at(state.expires_at),
        "max_until": at(state.max_until),
        "renewals": state.renewals,
        "allow_nodes": list(state.allow_nodes),
        "ended_at": at(state.ended_at),
        "end_reason": state.end_reason,
    }
    if not state.paused:
        last = f" (last pause ended: {state.end_reason})" if state.end_reason else ""
        return Finding(Status.PASS, "evictions are not paused" + last, evidence)
    overdue = context.now()
    why = state.overdue(overdue)
    if why is not None:
        return Finding(
            Status.FAIL,
            f"evictions paused past the pause's {'cap' if why == 'cap' else 'expiry'}"
            f" (reason: {state.reason or 'none given'})",
            evidence,
            fix + "; " + runbook("KubeEvictionPauseOverdue"),
        )
    return Finding(
        Status.WARN,
        f"evictions are paused now by {state.owner or 'unknown'} until"
        f" {at(state.expires_at)}: {state.reason or 'no reason given'}",
        evidence,
        fix,
    )


CHECKS: Final = (
    CheckSpec(
        "evictionguard.installed",
        "Eviction guard installed (policy, binding, FlowSchema)",
        "eviction guard",
        check_installed,
    ),
    CheckSpec("evictionguard.pause", "Evictions not paused now", "eviction guard", check_pause),
)
