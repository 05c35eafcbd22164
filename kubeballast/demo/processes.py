"""The demo's child processes: started in sessions of their own, stopped by PID.

Why this module: ``kube-ballast demo`` starts a simulator, etcd members, an exporter,
a receiver, Prometheus and Alertmanager, and Ctrl-C must leave none of them behind.
Each child is the leader of a new session (so the terminal's Ctrl-C reaches only the
demo, which then stops the children in order), asks the kernel to SIGKILL it if the
demo dies without cleaning up (``PR_SET_PDEATHSIG``), and is stopped by SIGTERM to its
process group, then SIGKILL after a grace period. Nothing is ever looked up by name.

The tests' etcd harness (tests/etcd/harness.py) does the same for its clusters; product
code cannot import tests, so the process handling lives here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 10.0


class ProcessError(RuntimeError):
    """A child did not start or died; the message ends with its log's tail."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Child:
    """One started process and where its output goes."""

    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def check(self) -> None:
        """Raise ProcessError if the process has exited."""
        if not self.alive():
            raise ProcessError(
                f"{self.name} exited with status {self.process.returncode}; its log "
                f"({self.log_path}) ends with:\n{log_tail(self.log_path)}"
            )


@dataclass
class Processes:
    """The children, in start order; :meth:`stop_all` stops them in reverse."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(
        self, name: str, args: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env=None if env is None else dict(env),
            )
        child = Child(name, list(args), log_path, process)
        self.children.append(child)
        return child

    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    def check_all(self) -> None:
        for child in self.children:
            child.check()

    def stop(self, child: Child, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGCONT (a frozen etcd member), SIGTERM, then SIGKILL to the child's group."""
        if child.alive():
            for signum in (signal.SIGCONT, signal.SIGTERM):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signum)
            deadline = time.monotonic() + grace
            while child.alive() and time.monotonic() < deadline:
                time.sleep(0.05)  # polling the exit, bounded by the grace period
        # The group may hold a grandchild even when the leader is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=grace)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            self.stop(child)
