"""Requested and free CPU and memory per node pool, from the requests per node.

Free is allocatable less requested per node, never below zero (an overcommitted node
frees nothing for its neighbours), summed over the pool; without the requests the
amounts are unknown (None), never 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from kubeballast.exporter.capacity import GIB, OTHER_POOL, derive_pools
from kubeballast.exporter.projections import NodeP

POOL = "example.com/node-pool"
SIZE = {"cpu": "16", "memory": "64Gi", "pods": "110"}


def node(name: str, pool: str | None, allocatable: Mapping[str, str] = SIZE) -> NodeP:
    labels = {} if pool is None else {POOL: pool}
    return NodeP(
        name=name,
        labels=labels,
        zone="zone-a",
        unschedulable=False,
        taints=(),
        ready="True",
        ready_since=None,
        capacity=dict(allocatable),
        allocatable=dict(allocatable),
        control_plane=False,
    )


NODES = (
    node("g1", "general"),
    node("g2", "general"),
    node("t1", "tenant-b"),
    node("x1", None, {"cpu": "bad"}),  # unparseable allocatable: counts as 0
)


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        pytest.param(
            {"g1": {"cpu": 10.0, "memory": 16 * GIB}, "t1": {"cpu": 0.5}},
            {
                "general": (10.0, 16 * GIB, 22.0, 112 * GIB),
                "tenant-b": (0.5, 0.0, 15.5, 64 * GIB),
                "": (0.0, 0.0, 0.0, 0.0),
            },
            id="requests-on-some-nodes",
        ),
        pytest.param(
            # g1 is overcommitted on CPU: it frees nothing, and takes nothing from g2.
            {"g1": {"cpu": 20.0, "memory": 70 * GIB}, "g2": {"cpu": 4.0, "memory": 8 * GIB}},
            {
                "general": (24.0, 78 * GIB, 12.0, 56 * GIB),
                "tenant-b": (0.0, 0.0, 16.0, 64 * GIB),
                "": (0.0, 0.0, 0.0, 0.0),
            },
            id="overcommitted-node-frees-nothing",
        ),
        pytest.param(
            # Requests of a node that is gone from the node list: not in any pool.
            {"gone": {"cpu": 3.0}, "x1": {"cpu": 1.0, "memory": GIB}},
            {
                "general": (0.0, 0.0, 32.0, 128 * GIB),
                "tenant-b": (0.0, 0.0, 16.0, 64 * GIB),
                "": (1.0, GIB, 0.0, 0.0),
            },
            id="unknown-node-and-node-without-allocatable",
        ),
        pytest.param(
            {},
            {
                "general": (0.0, 0.0, 32.0, 128 * GIB),
                "tenant-b": (0.0, 0.0, 16.0, 64 * GIB),
                "": (0.0, 0.0, 0.0, 0.0),
            },
            id="nothing-requested",
        ),
    ],
)
def test_exporter_pool_requests_and_free(
    requests: Mapping[str, Mapping[str, float]],
    expected: Mapping[str, tuple[float, float, float, float]],
) -> None:
    pools = derive_pools(NODES, {}, (POOL,), requests_by_node=requests)
    got = {
        p.pool: (
            p.cpu_requested_cores,
            p.memory_requested_bytes,
            p.cpu_free_cores,
            p.memory_free_bytes,
        )
        for p in pools
    }
    assert got == expected


def test_exporter_pool_requests_unknown_without_them() -> None:
    for pool in derive_pools(NODES, {}, (POOL,)):
        assert pool.cpu_requested_cores is None
        assert pool.memory_requested_bytes is None
        assert pool.cpu_free_cores is None
        assert pool.memory_free_bytes is None
        assert pool.cpu_allocatable_cores in (32.0, 16.0, 0.0)


def test_exporter_pool_requests_fold_into_other() -> None:
    nodes = [node(f"n{i}", f"p{i % 4}") for i in range(8)]
    requests = {f"n{i}": {"cpu": 1.0, "memory": GIB} for i in range(8)}
    pools = {
        p.pool: p for p in derive_pools(nodes, {}, (POOL,), max_pools=2, requests_by_node=requests)
    }
    assert set(pools) == {"p0", OTHER_POOL}
    other = pools[OTHER_POOL]
    assert (other.nodes, other.cpu_requested_cores, other.memory_requested_bytes) == (
        6,
        6.0,
        6 * GIB,
    )
    assert (other.cpu_free_cores, other.memory_free_bytes) == (90.0, 378 * GIB)
