"""The runner: checks run concurrently, a hung check times out and says so, the run
keeps its deadline, a crashing check is a FAIL, and the exit code follows the worst.

The checks here are functions of the test (the runner's own boundary: a check is any
coroutine function of the context); the context is real, pointed at the simulator.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from selfcheck_support import Cluster

from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import EXIT_FAIL, EXIT_OK, EXIT_WARN, Status
from kubeballast.selfcheck.runner import CheckSpec, Finding, run_checks
from kubeballast.selfcheck.suite import run_selfcheck

pytestmark = pytest.mark.timeout(60)


def finding(status: Status) -> CheckSpec:
    async def judge(context: Context) -> Finding:
        return Finding(status, f"it is {status.value}", {"value": 1}, "do something")

    return CheckSpec(f"test.{status.value.lower()}", status.value, "test", judge)


async def hang(context: Context) -> Finding:
    await asyncio.Event().wait()  # never set: this check never finishes on its own
    raise AssertionError("unreachable")


async def crash(context: Context) -> Finding:
    raise RuntimeError("cannot read nodes: HTTP 403")


async def test_selfcheck_hung_check_times_out_and_the_others_report(quiet: Cluster) -> None:
    specs = [
        finding(Status.PASS),
        CheckSpec("test.hang", "hangs", "test", hang),
        CheckSpec("test.crash", "crashes", "test", crash),
    ]
    started = time.monotonic()
    report = await run_selfcheck(
        quiet.settings(), checks=specs, deadline_seconds=30, check_timeout_seconds=0.5
    )
    assert time.monotonic() - started < 20

    by_id = {c.id: c for c in report.checks}
    assert [c.id for c in report.checks] == ["test.pass", "test.hang", "test.crash"]
    assert by_id["test.pass"].status is Status.PASS
    assert by_id["test.pass"].fix == ""  # a pass has nothing to fix
    assert by_id["test.hang"].status is Status.WARN
    assert by_id["test.hang"].timed_out
    assert "timed out after 0.5 s" in by_id["test.hang"].summary
    assert report.timed_out == ("test.hang",)
    assert by_id["test.crash"].status is Status.FAIL
    assert "HTTP 403" in by_id["test.crash"].summary
    assert by_id["test.crash"].evidence["error_type"] == "RuntimeError"


async def test_selfcheck_deadline_ends_the_run(quiet: Cluster) -> None:
    specs = [finding(Status.PASS), CheckSpec("test.hang", "hangs", "test", hang)]
    started = time.monotonic()
    report = await run_selfcheck(
        quiet.settings(), checks=specs, deadline_seconds=1.0, check_timeout_seconds=30
    )
    assert time.monotonic() - started < 15
    hung = report.checks[1]
    assert hung.timed_out
    assert "deadline of 1 s" in hung.summary
    assert report.to_json()["timed_out"] == ["test.hang"]


async def test_selfcheck_checks_run_concurrently(quiet: Cluster) -> None:
    async def slow(context: Context) -> Finding:
        await asyncio.sleep(1.0)  # the work a check waits on, not a synchronisation
        return Finding(Status.PASS, "slow", {})

    specs = [CheckSpec(f"test.slow{i}", "slow", "test", slow) for i in range(5)]
    context = Context(quiet.settings(), api=None)
    started = time.monotonic()
    report = await run_checks(context, specs, deadline_seconds=30)
    assert time.monotonic() - started < 4.0  # five 1 s checks together, not 5 s
    assert report.worst is Status.PASS
    await context.close()


@pytest.mark.parametrize(
    ("statuses", "strict", "code"),
    [
        ((Status.PASS, Status.SKIP), False, EXIT_OK),
        ((Status.PASS, Status.SKIP), True, EXIT_OK),
        ((Status.PASS, Status.WARN), False, EXIT_OK),
        ((Status.PASS, Status.WARN), True, EXIT_WARN),
        ((Status.WARN, Status.FAIL), False, EXIT_FAIL),
        ((Status.WARN, Status.FAIL), True, EXIT_FAIL),
    ],
)
async def test_selfcheck_exit_code_follows_the_worst(
    quiet: Cluster, statuses: tuple[Status, ...], strict: bool, code: int
) -> None:
    report = await run_selfcheck(quiet.settings(), checks=[finding(s) for s in statuses])
    assert report.exit_code(strict=strict) == code
