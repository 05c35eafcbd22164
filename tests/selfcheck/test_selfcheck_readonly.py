"""A self-check run writes nothing: not to the cluster, not to etcd.

The simulator runs nothing beside the apiserver here (no kubelets, controllers or
leader-electing components), so its store revision moves only on a write, and its
``apiserver_request_total`` counts every mutating request that reached it; both must
be the same after a full run (every check, the failing ones included: a check that
fails must not "fix" anything either). etcd's revision (from a member's status) must
not move either: the etcd checks read status, health, alarms, the member list and
/metrics only.
"""

from __future__ import annotations

from typing import Any

import pytest
from selfcheck_support import Cluster, run, write_counts

from kubeballast.selfcheck.model import Status

pytestmark = pytest.mark.timeout(180)


async def etcd_revision(etcd: Any) -> int:
    async with etcd.cluster.client() as client:
        status = await client.status(etcd.cluster.endpoints[0])
    revision: int = status.revision
    return revision


async def test_selfcheck_run_changes_nothing(quiet: Cluster, etcd_factory: Any) -> None:
    etcd = await etcd_factory(1)
    settings = quiet.settings(etcd=(etcd.config,))
    before = await write_counts(quiet.server, quiet.session)
    etcd_before = await etcd_revision(etcd)

    report = await run(settings)

    # Every check ran (the generated cluster fails some: Events share etcd, no guard).
    assert len(report.checks) == 21
    assert {c.status for c in report.checks} >= {Status.PASS, Status.FAIL}
    assert await write_counts(quiet.server, quiet.session) == before
    assert await etcd_revision(etcd) == etcd_before
