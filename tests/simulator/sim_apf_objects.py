"""FlowSchema and PriorityLevelConfiguration objects as clients create them, for the
tests of the simulator's APF (this module holds no tests itself)."""

from __future__ import annotations

from typing import Any

from kubeballast.simulator import apf


def flow_schema(
    name: str, level: str, precedence: int, subjects: list[dict[str, Any]], **rule: Any
) -> dict[str, Any]:
    """A FlowSchema sending ``subjects`` to ``level``: one resource rule matching every
    request unless ``rule`` narrows it (``verbs=[...]``, ``resources=[...]`` ...)."""
    resource_rule: dict[str, Any] = {
        "verbs": ["*"],
        "apiGroups": ["*"],
        "resources": ["*"],
        "namespaces": ["*"],
        "clusterScope": True,
    }
    resource_rule.update(rule)
    return {
        "apiVersion": apf.API_VERSION,
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "priorityLevelConfiguration": {"name": level},
            "matchingPrecedence": precedence,
            "rules": [{"subjects": subjects, "resourceRules": [resource_rule]}],
        },
    }


def limited_level(name: str, shares: int = 10) -> dict[str, Any]:
    """A Limited priority level that rejects what does not fit its seats."""
    return {
        "apiVersion": apf.API_VERSION,
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name},
        "spec": {
            "type": "Limited",
            "limited": {"nominalConcurrencyShares": shares, "limitResponse": {"type": "Reject"}},
        },
    }
