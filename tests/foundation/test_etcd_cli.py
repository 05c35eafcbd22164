"""`kube-ballast etcd ...` as a user runs it: one real etcd member, the command in a
subprocess, JSON lines on stdout, exit statuses 0 / 1 / 2.

The member comes from the etcd test harness (tests/etcd/harness.py), imported by path:
this folder is a package and does not see that folder's modules otherwise.
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "etcd"))
from harness import EtcdCluster, binary, reserve_ports, running_cluster

DEADLINE = 60.0


@pytest.fixture
def member(tmp_path: Path) -> Iterator[EtcdCluster]:
    (tmp_path / "etcd").mkdir()
    with running_cluster(tmp_path / "etcd", 1) as cluster:
        yield cluster


def kube_ballast(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubeballast", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_backup_then_dry_runs_and_plan(member: EtcdCluster, tmp_path: Path) -> None:
    endpoint = member.endpoints[0]
    backups = tmp_path / "backups"
    etcdctl = binary("etcdctl")

    done = kube_ballast(
        "etcd", "--endpoints", endpoint, "backup", "--dir", str(backups), "--etcdctl", etcdctl
    )
    assert done.returncode == 0, done.stderr
    (result,) = lines(done.stdout)
    assert result["operation"] == "backup"
    assert result["ok"] is True
    assert result["verified"] is True
    assert Path(result["path"]).parent == backups
    assert Path(result["path"]).stat().st_size == result["size"]

    defrag = kube_ballast("etcd", "--endpoints", endpoint, "defrag", "--observe", "0s")
    assert defrag.returncode == 0, defrag.stderr
    (plan,) = lines(defrag.stdout)
    assert (plan["operation"], plan["dry_run"]) == ("defrag", True)

    nospace = kube_ballast("etcd", "--endpoints", endpoint, "recover-nospace")
    assert nospace.returncode == 0, nospace.stderr
    assert lines(nospace.stdout)[0]["nothing_to_do"] is True

    text = kube_ballast(
        "etcd", "--endpoints", endpoint, "restore-plan", "--dir", str(backups), "--token", "t1"
    )
    assert text.returncode == 0, text.stderr
    assert "## Strategy 1: recover from the original members" in text.stdout
    assert "## Strategy 3: restore from the periodic backup" in text.stdout
    assert f"snapshot restore {result['path']}" in text.stdout
    assert "--initial-cluster-token=t1" in text.stdout

    restored = tmp_path / "restored"
    restore = kube_ballast(
        "etcd", "--endpoints", endpoint, "restore", "--dir", str(backups),
        "--member", "m0", "--data-dir", str(restored), "--token", "t1", "--etcdctl", etcdctl,
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    (restored_line,) = lines(restore.stdout)
    assert restored_line["revision"] == result["revision"]
    assert (restored / "member" / "snap" / "db").exists()
    again = kube_ballast(
        "etcd", "--endpoints", endpoint, "restore", "--dir", str(backups),
        "--member", "m0", "--data-dir", str(restored), "--token", "t1", "--etcdctl", etcdctl,
    )  # fmt: skip
    assert again.returncode == 1
    assert "exists and is not empty" in lines(again.stdout)[0]["error"]


def test_cluster_from_the_configuration(member: EtcdCluster, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "exporter": {
                    "etcd": {
                        "clusters": [
                            {
                                "name": "main",
                                "endpoints": member.endpoints,
                                "backup": {
                                    "directory": str(tmp_path / "b"),
                                    "etcdctl": binary("etcdctl"),
                                },
                            }
                        ]
                    }
                }
            }
        )
    )
    done = kube_ballast("--config", str(config), "etcd", "backup")
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout)[0]["cluster"] == "main"
    wrong = kube_ballast("--config", str(config), "etcd", "--cluster", "events", "backup")
    assert wrong.returncode == 2
    assert "no etcd cluster named 'events' (main)" in wrong.stderr


def test_usage_and_refusals() -> None:
    bad = kube_ballast("etcd", "--endpoints", "http://127.0.0.1:1", "backup", "--every", "soon")
    assert bad.returncode == 2
    assert "not a duration" in bad.stderr

    nothing = kube_ballast("etcd", "backup")
    assert nothing.returncode == 2
    assert "name the cluster with --cluster, or pass --endpoints" in nothing.stderr

    (port,) = reserve_ports(1)
    down = kube_ballast(
        "etcd", "--endpoints", f"http://127.0.0.1:{port}", "defrag", "--execute", "--no-backup"
    )
    assert down.returncode == 1
    (failure,) = lines(down.stdout)
    assert failure["ok"] is False
    assert failure["error_type"] == "QuorumLost"
    assert "restore-plan" in failure["error"]


def test_backup_every_runs_until_sigterm(member: EtcdCluster, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable, "-m", "kubeballast", "etcd", "--endpoints", member.endpoints[0],
            "backup", "--dir", str(tmp_path), "--every", "1s", "--etcdctl", binary("etcdctl"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        seen: list[dict[str, Any]] = []
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + DEADLINE
            while len(seen) < 2:
                if time.monotonic() > deadline:
                    pytest.fail(f"fewer than two backups within {DEADLINE:g} s: {seen}")
                if selector.select(timeout=1.0):
                    line = process.stdout.readline()
                    if not line:
                        break
                    seen.append(json.loads(line))
        assert [entry["ok"] for entry in seen] == [True, True]
        assert seen[0]["path"] != seen[1]["path"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
