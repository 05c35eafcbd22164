"""Run every benchmark and print its numbers (``make bench``).

Benchmarks measure; they do not pass or fail. Record what they print, with the
command, in docs/performance.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = (
    "simulator_list.py",
    "exporter_metrics.py",
    "exporter_state.py",
    "exporter_state_render.py",
    "exporter_steady.py",
    "exporter_etcd.py",
    "etcd_backup.py",
    "receiver_ack.py",
    "eviction_guard_latency.py",
    "guard_view.py",
    "selfcheck.py",
)


def main() -> int:
    here = Path(__file__).parent
    status = 0
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        status |= subprocess.call([sys.executable, str(here / name), *sys.argv[1:]])
    return status


if __name__ == "__main__":
    raise SystemExit(main())
