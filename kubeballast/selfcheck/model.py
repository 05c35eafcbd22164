"""What a self-check run produces: checks with a status, the evidence and the fix.

The seed is a checklist; an operator reads each item's verdict and, when it is not a
pass, wants to know what was read (so the verdict can be trusted or argued with) and
what to do. So every check carries three things besides its status: ``summary`` (one
sentence), ``evidence`` (the values read, JSON-serialisable, named so that the cause
is visible without reading code) and ``fix`` (a command or a runbook under
``docs/runbooks/``). The JSON form of a :class:`Report` is a stable, versioned schema
(:data:`SCHEMA_VERSION`): platform CI parses it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_WARN",
    "SCHEMA_VERSION",
    "Check",
    "Report",
    "Status",
    "runbook",
]

SCHEMA_VERSION: Final = 1
"""Bumped when a field of the JSON report changes meaning or goes away (adding one does
not bump it)."""

EXIT_OK: Final = 0
EXIT_WARN: Final = 1
"""Only with ``--strict``: a WARN fails the gate."""
EXIT_FAIL: Final = 2

RUNBOOK_PREFIX: Final = "docs/runbooks/"


def runbook(alert: str) -> str:
    """The repository path of an alert's runbook, as the rule files link it."""
    return f"{RUNBOOK_PREFIX}{alert}.md"


class Status(enum.StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"
    """The check could not run (an input was not given, the data is not there); the
    summary says why."""


_SEVERITY: Final[Mapping[Status, int]] = {
    Status.PASS: 0,
    Status.SKIP: 0,
    Status.WARN: 1,
    Status.FAIL: 2,
}


@dataclass(frozen=True)
class Check:
    """One item of the checklist, judged."""

    id: str
    """Stable, dotted: ``<area>.<item>`` (``etcd.quota``)."""
    title: str
    area: str
    status: Status
    summary: str
    """One sentence: the verdict and its cause."""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    """The values read, JSON-serialisable."""
    fix: str = ""
    """A command to run or a runbook path (``docs/runbooks/<Alert>.md``); empty on PASS."""
    duration_seconds: float = 0.0
    timed_out: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "area": self.area,
            "status": self.status.value,
            "summary": self.summary,
            "evidence": dict(self.evidence),
            "fix": self.fix,
            "duration_seconds": round(self.duration_seconds, 3),
            "timed_out": self.timed_out,
        }


@dataclass(frozen=True)
class Report:
    """Every check of one run, in the checklist's order."""

    checks: tuple[Check, ...]
    started_unix: float
    duration_seconds: float
    deadline_seconds: float
    cluster: str = ""
    """The API server's URL, for the reader of a shared report."""
    version: str = ""

    @property
    def timed_out(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.checks if c.timed_out)

    def counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in Status}
        for check in self.checks:
            counts[check.status.value] += 1
        return counts

    @property
    def worst(self) -> Status:
        worst = Status.PASS
        for check in self.checks:
            if _SEVERITY[check.status] > _SEVERITY[worst]:
                worst = check.status
        return worst

    def exit_code(self, *, strict: bool = False) -> int:
        """2 with any FAIL; 1 with a WARN under ``strict``; else 0."""
        worst = self.worst
        if worst is Status.FAIL:
            return EXIT_FAIL
        if worst is Status.WARN and strict:
            return EXIT_WARN
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kube_ballast_version": self.version,
            "cluster": self.cluster,
            "started_unix": round(self.started_unix, 3),
            "duration_seconds": round(self.duration_seconds, 3),
            "deadline_seconds": self.deadline_seconds,
            "counts": self.counts(),
            "worst": self.worst.value,
            "timed_out": list(self.timed_out),
            "checks": [check.to_json() for check in self.checks],
        }
