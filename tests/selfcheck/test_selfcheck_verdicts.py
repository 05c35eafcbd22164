"""The verdicts that real components cannot be driven to on a test machine, table-tested.

A WAL fsync p99 of 600 ms, a database that is 70 % free pages over 100 MiB, a
controller-manager work queue 6000 deep: no test here can make real etcd or the
simulated controller-manager produce them reliably, so the check's decision is a pure
function of the values read (``judge_*``), and these tables drive each to PASS, WARN,
FAIL (and SKIP where the value is missing), with the cause in the text.
"""

from __future__ import annotations

import pytest

from kubeballast.core.etcdops import DefragThresholds
from kubeballast.exporter.congestion import Evaluation
from kubeballast.exporter.etcdhealth import Histogram, MemberMetrics
from kubeballast.selfcheck.apiserver import PROTECTED_CALLS, classify, judge_congestion
from kubeballast.selfcheck.context import parse_flags
from kubeballast.selfcheck.controllermanager import judge_queues
from kubeballast.selfcheck.etcd import judge_disk, judge_fragmentation, judge_quota
from kubeballast.selfcheck.model import Status

MIB = 1024 * 1024
BOUNDS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024)


def fsyncs_at(seconds: float, count: int = 1000) -> MemberMetrics:
    """Every fsync took ``seconds``: a cumulative histogram with etcd's buckets."""
    buckets = tuple((b, float(count) if seconds <= b else 0.0) for b in BOUNDS)
    histogram = Histogram((*buckets, (float("inf"), float(count))), seconds * count, count)
    return MemberMetrics(wal_fsync=histogram)


@pytest.mark.parametrize(
    ("seconds", "count", "status", "cause"),
    [
        (0.0015, 1000, Status.PASS, "WAL fsync p99"),
        (0.030, 1000, Status.WARN, "not SSD-class"),
        (0.700, 1000, Status.FAIL, "WAL fsync p99"),
        (0.700, 3, Status.SKIP, "too few fsyncs"),
    ],
)
def test_selfcheck_disk_verdict(seconds: float, count: int, status: Status, cause: str) -> None:
    verdict, summary, evidence = judge_disk("main/m0", fsyncs_at(seconds, count))
    assert verdict is status
    assert cause in summary
    assert evidence["fsyncs"] == count


def test_selfcheck_disk_without_histogram_skips() -> None:
    verdict, summary, _ = judge_disk("main/m0", MemberMetrics())
    assert verdict is Status.SKIP
    assert "no WAL fsync histogram" in summary


@pytest.mark.parametrize(
    ("size", "in_use", "status"),
    [
        (400 * MIB, 120 * MIB, Status.WARN),  # 30 % in use, 280 MiB to reclaim
        (400 * MIB, 300 * MIB, Status.PASS),  # 75 % in use
        (120 * MIB, 30 * MIB, Status.PASS),  # 25 % in use, but only 90 MiB to reclaim
        (100 * MIB, None, Status.SKIP),
    ],
)
def test_selfcheck_fragmentation_verdict(size: int, in_use: int | None, status: Status) -> None:
    verdict, summary, evidence = judge_fragmentation("main/m0", size, in_use, DefragThresholds())
    assert verdict is status
    if status is Status.WARN:
        assert in_use is not None
        assert "reclaimable" in summary
        assert evidence["in_use_ratio"] == pytest.approx(in_use / size, abs=1e-4)


@pytest.mark.parametrize(
    ("size", "quota", "alarms", "status", "cause"),
    [
        (100 * MIB, 4 * 1024 * MIB, (), Status.PASS, "2% of its quota"),
        (100 * MIB, 2 * 1024 * MIB, (), Status.WARN, "2 GiB default"),
        (850 * MIB, 1024 * MIB, (), Status.WARN, "83% of its quota"),
        (1000 * MIB, 1024 * MIB, (), Status.FAIL, "98% of its quota"),
        (100 * MIB, 1024 * MIB, ("NOSPACE",), Status.FAIL, "NOSPACE"),
        (100 * MIB, None, (), Status.SKIP, "not on /metrics"),
    ],
)
def test_selfcheck_quota_verdict(
    size: int, quota: float | None, alarms: tuple[str, ...], status: Status, cause: str
) -> None:
    verdict, summary, _ = judge_quota("main/m0", size, quota, alarms)
    assert verdict is status
    assert cause in summary


@pytest.mark.parametrize(
    ("depth", "status"), [(3.0, Status.PASS), (800.0, Status.WARN), (6000.0, Status.FAIL)]
)
def test_selfcheck_workqueue_verdict(depth: float, status: Status) -> None:
    verdict, summary = judge_queues({"kcm-0": {"replicaset": depth, "node_lifecycle": 1.0}})
    assert verdict is status
    if status is not Status.PASS:
        assert summary == f"kcm-0: work queue replicaset holds {depth:g} items"


def flowschema(name: str, precedence: int, level: str, subjects: list[dict[str, object]]) -> dict:  # type: ignore[type-arg]
    return {
        "metadata": {"name": name},
        "spec": {
            "matchingPrecedence": precedence,
            "priorityLevelConfiguration": {"name": level},
            "rules": [
                {
                    "subjects": subjects,
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "namespaces": ["*"],
                            "clusterScope": True,
                        }
                    ],
                }
            ],
        },
    }


def test_selfcheck_apf_classification_follows_precedence_then_name() -> None:
    everyone = [{"kind": "Group", "group": {"name": "system:authenticated"}}]
    nodes = [{"kind": "Group", "group": {"name": "system:nodes"}}]
    _, heartbeat = PROTECTED_CALLS["node_lease_renewal"]
    schemas = [
        flowschema("global-default", 9900, "global-default", everyone),
        flowschema("b-nodes", 400, "node-high", nodes),
        flowschema("a-nodes", 400, "nodes-first", nodes),
    ]
    assert classify(schemas, heartbeat) == ("a-nodes", "nodes-first")
    assert classify(schemas[:1], heartbeat) == ("global-default", "global-default")
    assert classify([], heartbeat) == ("", "")


def test_selfcheck_flags_parse_as_the_components_read_them() -> None:
    assert parse_flags(
        ["kube-apiserver", "--a=1", "--b", "--c", "x", "--d=", "--a=2", "--e", "--f=g=h"]
    ) == {"a": "2", "b": "true", "c": "x", "d": "", "e": "true", "f": "g=h"}


@pytest.mark.parametrize(
    ("evaluation", "status", "cause"),
    [
        (Evaluation(evaluated=True), Status.PASS, "no congestion signal"),
        (
            Evaluation(evaluated=True, apf_rejections={"workload-low": 3.0}, ratio_429=0.004),
            Status.WARN,
            "3 on workload-low, 429 ratio 0.40%",
        ),
        (
            Evaluation(
                evaluated=True,
                reasons=frozenset({"apf_rejections_node_high"}),
                apf_rejections={"node-high": 12.0},
            ),
            Status.FAIL,
            "congested now: apf_rejections_node_high",
        ),
    ],
)
def test_selfcheck_congestion_verdict(evaluation: Evaluation, status: Status, cause: str) -> None:
    finding = judge_congestion(evaluation, 3.0)
    assert finding.status is status
    assert cause in finding.summary
    assert finding.evidence["apf_rejections_by_level"] == dict(evaluation.apf_rejections)
