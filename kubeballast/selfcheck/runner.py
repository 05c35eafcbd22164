"""Run every check concurrently, each with its own timeout, all within one deadline.

A self-check is most wanted when the cluster is in trouble, which is when some reads
hang. So no check may hold up the report: each runs as its own task with a per-check
timeout, the whole run has a deadline (60 s by default, the issue's budget at 5000
nodes), and a check that did not finish is reported as such (``timed_out``, status
WARN so that ``--strict`` gates on it) instead of being waited for. A check that
raises is a FAIL naming the error: the checklist item could not be confirmed, and a
crash must never read as a pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubeballast import __version__
from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import Check, Report, Status

__all__ = ["CheckSpec", "Finding", "run_checks"]

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_SECONDS = 60.0
DEFAULT_CHECK_TIMEOUT_SECONDS = 45.0


@dataclass(frozen=True)
class Finding:
    """What a check function returns; the runner adds the id, title and timing."""

    status: Status
    summary: str
    evidence: dict[str, Any]
    fix: str = ""


CheckFunction = Callable[[Context], Awaitable[Finding]]


@dataclass(frozen=True)
class CheckSpec:
    id: str
    title: str
    area: str
    run: CheckFunction


def _error_text(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 300 else text[:300] + "..."


async def _one(spec: CheckSpec, context: Context, seconds: float) -> Check:
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            finding = await spec.run(context)
    except TimeoutError:
        return Check(
            spec.id,
            spec.title,
            spec.area,
            Status.WARN,
            f"timed out after {seconds:g} s: the values could not be read in time",
            {"timeout_seconds": seconds},
            "re-run with a larger --check-timeout, or look at the apiserver's load",
            time.monotonic() - started,
            timed_out=True,
        )
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a crashed check is a failed check, never a pass
        log.debug("self-check %s failed", spec.id, exc_info=True)
        return Check(
            spec.id,
            spec.title,
            spec.area,
            Status.FAIL,
            f"could not be checked: {_error_text(error)}",
            {"error": _error_text(error), "error_type": type(error).__name__},
            "see the error; the check needs read access to what it names",
            time.monotonic() - started,
        )
    return Check(
        spec.id,
        spec.title,
        spec.area,
        finding.status,
        finding.summary,
        finding.evidence,
        "" if finding.status is Status.PASS else finding.fix,
        time.monotonic() - started,
    )


async def run_checks(
    context: Context,
    specs: Sequence[CheckSpec],
    *,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    check_timeout_seconds: float = DEFAULT_CHECK_TIMEOUT_SECONDS,
    clock: Callable[[], float] = time.time,
) -> Report:
    """Every check of ``specs`` against ``context``; the report keeps their order."""
    started_unix = clock()
    started = time.monotonic()
    per_check = min(check_timeout_seconds, deadline_seconds)
    tasks = {spec.id: asyncio.ensure_future(_one(spec, context, per_check)) for spec in specs}
    done, pending = await asyncio.wait(tasks.values(), timeout=deadline_seconds)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    checks: list[Check] = []
    for spec in specs:
        task = tasks[spec.id]
        if task in done:
            checks.append(task.result())
        else:
            checks.append(
                Check(
                    spec.id,
                    spec.title,
                    spec.area,
                    Status.WARN,
                    f"not finished within the run's deadline of {deadline_seconds:g} s",
                    {"deadline_seconds": deadline_seconds},
                    "re-run with a larger --deadline, or look at the apiserver's load",
                    time.monotonic() - started,
                    timed_out=True,
                )
            )
    return Report(
        checks=tuple(checks),
        started_unix=started_unix,
        duration_seconds=time.monotonic() - started,
        deadline_seconds=deadline_seconds,
        cluster=context.server,
        version=__version__,
    )
