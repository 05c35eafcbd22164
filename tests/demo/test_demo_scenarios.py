"""`kube-ballast demo` end to end: every scenario, headless, with the real parts.

Each run is the command a user types (``kube-ballast demo --run-scenario NAME --exit``)
as a subprocess: it starts the simulator, three etcd members, the exporter, the
receiver, Prometheus and Alertmanager, runs its scenarios, prints the outcomes as one
JSON line and stops everything. The tests assert the narrated outcomes and that
nothing is left behind: no child process alive, the temporary folder and the state
file gone. Three more runs are stopped while idle: by SIGINT (Ctrl-C), SIGTERM and SIGHUP
(the terminal closing).

To stay within a few minutes on a loaded two-core machine the runs are small (60 nodes,
5 pods each, clock factor 10 (4 for congestion), scrape and evaluation every second,
every ``for:`` capped at 3 s, Alertmanager's first notification after 1 s), the
scenarios that touch the
Kubernetes side run in two runs (congestion alone, the longest) and the etcd ones in a
third, all started together by a module fixture and awaited by the tests; the signal
runs go meanwhile. Scenarios in one run are independent: each undoes its fault and
waits for recovery, and its outcome counts only what changed during it.

With ``--exit`` the congestion scenario does not wait for the guard to end its pause
(the receiver measures the recovery in real time: minutes); docs/demo.md shows it.

The real binaries are required: the runs fail (they do not skip) without etcd,
Prometheus or Alertmanager.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

RUN_DEADLINE_SECONDS = 540.0
SMALL = [
    "--nodes", "60", "--pods-per-node", "5", "--clock-factor", "10", "--interval", "1",
    "--for-cap", "3", "--fast-notifications", "--headless",
]  # fmt: skip
CONGESTION = ["--clock-factor", "4"]
"""At 4, the first pods to go (team-e/fast-failover, tolerating 60 s) would be deleted
some 28 s after the congestion begins, and the pause lands at about 15 s (the heartbeat
wave needs the 50 s grace period, 12.5 s here, and the alert path a few seconds more)."""
KUBERNETES_SCENARIOS = ["zone-partition", "dead-nodes"]
ETCD_SCENARIOS = ["etcd-nospace", "etcd-member-down"]


@dataclass
class Run:
    name: str
    process: subprocess.Popen[str]
    state_file: Path
    log: Path

    def finish(self) -> tuple[int, str]:
        try:
            self.process.wait(timeout=RUN_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"demo run {self.name} did not finish:\n{self.output()}")
        return self.process.returncode, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _start(name: str, tmp: Path, *args: str) -> Run:
    state_file = tmp / f"{name}-state.json"
    log = tmp / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kubeballast", "demo", *SMALL, "--state-file", str(state_file),
             *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # fmt: skip
    return Run(name, process, state_file, log)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    tmp = tmp_path_factory.mktemp("demo")
    started = {
        "kubernetes": _start(
            "kubernetes", tmp, *[f"--run-scenario={s}" for s in KUBERNETES_SCENARIOS], "--exit"
        ),
        "etcd": _start("etcd", tmp, *[f"--run-scenario={s}" for s in ETCD_SCENARIOS], "--exit"),
        # A slower cluster clock for the one whose outcome is a race against the pods'
        # tolerations (the alert path runs in real time): see CONGESTION.
        "congestion": _start("congestion", tmp, *CONGESTION, "--run-scenario=congestion", "--exit"),
    }
    try:
        yield started
    finally:
        for run in started.values():
            if run.process.poll() is None:
                os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()


def _result(run: Run) -> dict[str, Any]:
    status, output = run.finish()
    lines = [line for line in output.splitlines() if line.startswith('{"directory"')]
    assert lines, f"no outcome line (exit {status}):\n{output}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert status == 0, f"exit {status}:\n{output}"
    _assert_nothing_left(result["pids"], Path(result["directory"]), run.state_file, output)
    return result


def _assert_nothing_left(pids: list[int], directory: Path, state_file: Path, output: str) -> None:
    alive = [pid for pid in pids if psutil.pid_exists(pid) and _not_zombie(pid)]
    assert alive == [], f"children still alive: {alive}\n{output}"
    assert not directory.exists(), f"{directory} was left behind"
    assert not state_file.exists(), f"{state_file} was left behind"


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _outcome(result: dict[str, Any], scenario: str) -> dict[str, Any]:
    (outcome,) = [o for o in result["outcomes"] if o["scenario"] == scenario]
    assert "error" not in outcome, outcome
    return outcome


def _wait_for_state(run: Run) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_DEADLINE_SECONDS
    while not run.state_file.exists():
        assert run.process.poll() is None, f"the demo exited:\n{run.output()}"
        assert time.monotonic() < deadline, f"the demo did not come up:\n{run.output()}"
        time.sleep(0.2)  # polling for the state file, bounded by the deadline
    state: dict[str, Any] = json.loads(run.state_file.read_text())
    return state


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "signum",
    [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
    ids=["sigint", "sigterm", "sighup"],
)
def test_demo_signal_stops_everything(
    runs: dict[str, Run], tmp_path: Path, signum: signal.Signals
) -> None:
    # Runs while the scenario runs (started by the fixture) go on in the background.
    run = _start(signum.name.lower(), tmp_path)
    try:
        state = _wait_for_state(run)
    except BaseException:
        os.killpg(run.process.pid, signal.SIGKILL)
        raise
    pids = [child["pid"] for child in state["children"]]
    assert len(pids) == 8  # simulator, 3 etcd members, exporter, receiver, AM, Prometheus
    assert all(psutil.pid_exists(pid) for pid in pids)
    run.process.send_signal(signum)
    status, output = run.finish()
    assert status == 0, output
    _assert_nothing_left(pids, Path(state["directory"]), run.state_file, output)


@pytest.mark.timeout(600)
def test_demo_kubernetes_scenarios(runs: dict[str, Run]) -> None:
    result = _result(runs["kubernetes"])

    partition = _outcome(result, "zone-partition")
    assert partition["partition_fired"], partition
    assert not partition["storm_fired"], partition
    assert not partition["pause_landed"], partition
    assert partition["recovered"], partition

    dead = _outcome(result, "dead-nodes")
    assert len(dead["nodes"]) == 2
    assert dead["heartbeats_missing_fired"], dead
    assert dead["pods_on_nodes"] > 0
    assert dead["pods_evicted"] == dead["pods_on_nodes"], dead
    assert not dead["pause_landed"], dead


@pytest.mark.timeout(600)
def test_demo_congestion_scenario(runs: dict[str, Run]) -> None:
    result = _result(runs["congestion"])
    congestion = _outcome(result, "congestion")
    assert congestion["congested_fired"], congestion
    assert congestion["storm_fired"], congestion
    assert congestion["would_have_been_evicted"] > 0, congestion
    # The eviction guard: the pause lands before the first pods' tolerations run out
    # (the starved nodes include those of the pods tolerating 60 s only), and no
    # healthy pod is evicted, not before the pause and not while it is in force.
    assert congestion["pause_available"], congestion
    assert congestion["pause_landed"], congestion
    assert congestion["pods_evicted_before_pause"] == 0, congestion
    assert congestion["pods_evicted"] == 0, congestion
    assert congestion["short_toleration_nodes"] > 0, congestion
    # (Denials are not asserted: they happen only once a tainted node's pods outlive
    # their toleration while paused, which is within the watch but timing-dependent.)
    assert congestion["recovered"], congestion


@pytest.mark.timeout(600)
def test_demo_etcd_scenarios(runs: dict[str, Run]) -> None:
    result = _result(runs["etcd"])

    nospace = _outcome(result, "etcd-nospace")
    assert nospace["nospace_alert_fired"], nospace
    assert nospace["recover_available"], nospace
    assert nospace["recover_state"] == "succeeded", nospace
    assert nospace["writes_back"], nospace

    down = _outcome(result, "etcd-member-down")
    assert down["members_down_fired"], down
    assert down["members_up_before"] == 3
    assert down["members_up_during"] == 2
    assert down["routed_to_alertmanager"], down
