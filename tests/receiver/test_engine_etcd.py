"""The etcd actions through the engine, against a real etcd member (tests/etcd's
harness) and the simulator: their preconditions are read live from etcd, a refusal
says what etcd showed, and a backup really lands on disk."""

# The fixtures come from test_engine_support (tests/receiver/conftest.py belongs to the
# webhook's tests); importing them by name is what pytest needs, and F811 is ruff
# mistaking each use as a parameter for a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_engine_support import (  # noqa: F401  (fixtures are imported by name)
    EngineFactory,
    FakeClock,
    api,
    clock,
    engines,
    kubeconfig,
    make_alert,
    make_config,
    make_group,
    records_of,
    sim,
    wait_state,
)

from kubeballast.core.config import ActionConfig, EtcdBackupConfig, EtcdClusterConfig, EtcdConfig
from kubeballast.remediations.contract import Alert

pytestmark = pytest.mark.timeout(120)


def _harness() -> Any:
    """tests/etcd/harness.py, the one way the tests run real etcd members (it is not
    on this folder's import path)."""
    if "harness" in sys.modules:
        return sys.modules["harness"]
    path = Path(__file__).resolve().parent.parent / "etcd" / "harness.py"
    spec = importlib.util.spec_from_file_location("harness", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = module
    spec.loader.exec_module(module)
    return module


def etcd_alert(fingerprint: str, name: str, cluster: str) -> Alert:
    made = make_alert(fingerprint, name=name, target=None)
    return dataclasses.replace(made, labels={**made.labels, "etcd_cluster": cluster})


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[Any]:
    cluster = _harness().EtcdCluster(tmp_path / "etcd", 1)
    cluster.directory.mkdir(parents=True)
    await asyncio.to_thread(cluster.start)  # blocks until healthy: off the event loop
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.close)


async def test_etcd_actions_recheck_live_and_act(
    engines: EngineFactory, api: Any, clock: FakeClock, etcd: Any, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    main = EtcdClusterConfig(
        name="main",
        endpoints=tuple(etcd.endpoints),
        backup=EtcdBackupConfig(directory=str(backups)),
    )
    live = {"dry_run": False, "cooldown_seconds": 0.0}
    config = make_config(
        actions=[
            ActionConfig(name="etcd-backup", alerts=("EtcdNoRecentBackup",), **live),
            ActionConfig(name="etcd-defrag", alerts=("EtcdDatabaseFragmented",), **live),
        ],
        etcd=EtcdConfig(clusters=(main,)),
    )
    engine = await engines(config, None)  # the built-in actions
    await engine.accept(
        make_group(
            etcd_alert("fp-defrag", "EtcdDatabaseFragmented", "main"),
            etcd_alert("fp-backup", "EtcdNoRecentBackup", "main"),
            etcd_alert("fp-unknown", "EtcdDatabaseFragmented", "elsewhere"),
        )
    )
    await wait_state(api, config, clock, "succeeded")
    await wait_state(api, config, clock, "refused", count=2)
    records = {r.fingerprint: r for r in (await records_of(api, config, clock)).values()}

    # A fresh member is not fragmented: the live re-check says so, nothing is done.
    assert records["fp-defrag"].reason == "precondition-false"
    assert "no member is fragmented enough" in records["fp-defrag"].detail
    # An alert about a cluster the receiver does not know has no plan.
    assert records["fp-unknown"].reason == "plan-invalid"
    assert "elsewhere" in records["fp-unknown"].detail
    # The backup ran for real: a verified snapshot and its sidecar.
    assert records["fp-backup"].state == "succeeded"
    snapshots = sorted(p.name for p in backups.iterdir())
    assert any(name.endswith(".db") for name in snapshots)
    assert any(name.endswith(".db.json") for name in snapshots)


async def test_unreachable_etcd_fails_closed(
    engines: EngineFactory, api: Any, clock: FakeClock
) -> None:
    gone = EtcdClusterConfig(name="main", endpoints=("http://127.0.0.1:1",))
    config = make_config(
        actions=[
            ActionConfig(
                name="etcd-defrag",
                alerts=("EtcdDatabaseFragmented",),
                dry_run=False,
                cooldown_seconds=0.0,
            )
        ],
        etcd=EtcdConfig(clusters=(gone,)),
    )
    engine = await engines(config, None)
    await engine.accept(make_group(etcd_alert("fp-1", "EtcdDatabaseFragmented", "main")))
    [refused] = await wait_state(api, config, clock, "refused")
    assert refused.reason in ("precondition-false", "precondition-error")
    assert "quorum lost" in refused.detail or "127.0.0.1:1" in refused.detail
