"""The congestion verdict and the summaries behind it, as pure functions of scrapes.

The fixtures are real scrapes of the simulator's /metrics (``apiserver_healthy_1``,
``apiserver_healthy_2`` and ``apiserver_congested``, taken in that order from one
simulated apiserver: light load, more light load, then congestion with 10 % rejections
and 1.1 s of queueing) and hand-written pages for what the simulator does not produce:
a restart, NaN values, a page with most families missing, newer and older label and
bucket layouts. Each hand-written page says in its header what it models.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeballast.core import promtext
from kubeballast.exporter.congestion import (
    CODE_CLASSES,
    CONGESTION_REASONS,
    WANTED_FAMILIES,
    ApiserverSummary,
    Evaluation,
    Thresholds,
    coarsen,
    code_class,
    evaluate,
    summarize,
)

FIXTURES = Path(__file__).parent / "fixtures"

ALL_REASONS = frozenset(CONGESTION_REASONS)


def summary(name: str) -> ApiserverSummary:
    text = (FIXTURES / f"apiserver_{name}.txt").read_text()
    return summarize(promtext.parse(text, WANTED_FAMILIES))


def buckets(*pairs: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    return tuple(pairs)


# -- summaries -------------------------------------------------------------------------


def test_summary_of_a_healthy_scrape() -> None:
    s = summary("healthy_2")
    # 40 rounds of: lease GET and PUT as a kubelet, lease GET and PUT as the scheduler,
    # one pod LIST as a service account; all answered 200.
    assert s.has_requests
    assert s.requests == {"2xx": 200.0, "3xx": 0.0, "4xx": 0.0, "429": 0.0, "5xx": 0.0}
    assert s.latency["lease_update"].count == 80.0
    assert s.latency["mutating"].count == 80.0
    assert s.latency["read_only"].count == 120.0  # 80 GET + 40 LIST
    assert s.latency["read_only"].buckets[-1] == (math.inf, 120.0)
    assert set(s.mutating_by_pair) == {("leases.coordination.k8s.io", "PUT")}
    assert set(s.etcd) == {"list", "update"}
    assert s.apf_rejected == {}
    assert s.inflight == {"mutating": 1.0, "readOnly": 1.0}
    # 400 + 200 seats divided among the eight default levels, rounded up per level.
    assert s.inflight_limit_seats == 602.0
    assert s.inflight_utilization_ratio == pytest.approx(2 / 602)
    assert s.process_start_time_seconds == pytest.approx(1.7956689476200476e09)


def test_summary_adds_flow_schemas_up_by_priority_level() -> None:
    s = summary("congested")
    assert s.apf_rejected == {
        ("leader-election", "time-out"): 8.0,
        ("node-high", "time-out"): 12.0,
        ("workload-low", "time-out"): 2.0,
    }
    assert s.apf_inqueue == {"leader-election": 0.0, "node-high": 0.0, "workload-low": 0.0}
    assert s.requests == {"2xx": 287.0, "3xx": 0.0, "4xx": 8.0, "429": 22.0, "5xx": 0.0}


def test_summary_of_newer_etcd_labels_and_older_request_buckets() -> None:
    s = summary("new_labels")
    # {operation, group, resource} (Kubernetes 1.33) sums by operation like {operation, type}.
    assert s.etcd == {"update": buckets((0.005, 190.0), (0.025, 199.0), (math.inf, 200.0))}
    # The older layout has no 0.4 bound: it is left out rather than estimated.
    assert coarsen(s.latency["read_only"].buckets) == [
        (0.05, 5.0),
        (0.1, 6.0),
        (0.2, 8.0),
        (1.0, 10.0),
        (math.inf, 12.0),
    ]
    assert not s.has_requests
    assert s.requests == {}
    assert s.inflight_limit_seats is None  # no APF family: no limit to compare with
    assert s.inflight_utilization_ratio is None


def test_coarse_buckets_of_the_current_layout_are_exact_counts() -> None:
    full = summary("healthy_2").latency["read_only"].buckets
    coarse = coarsen(full)
    assert [bound for bound, _ in coarse] == [
        0.05, 0.1, 0.2, 0.4, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, math.inf,
    ]  # fmt: skip
    assert all(dict(full)[bound] == count for bound, count in coarse)


@pytest.mark.parametrize(
    ("code", "klass"),
    [
        ("200", "2xx"),
        ("201", "2xx"),
        ("304", "3xx"),
        ("404", "4xx"),
        ("409", "4xx"),
        ("429", "429"),
        ("500", "5xx"),
        ("504", "5xx"),
        ("0", None),  # hijacked connection
        ("101", None),
        ("600", None),
        ("", None),
        ("abc", None),
    ],
)
def test_code_classes(code: str, klass: str | None) -> None:
    assert code_class(code) == klass


def test_code_classes_partition_the_requests() -> None:
    s = summary("minimal")
    # The WATCH with code "0" belongs to no class; 429 is not part of 4xx.
    assert s.requests == dict.fromkeys(CODE_CLASSES, 0.0) | {"2xx": 1000.0}


# -- the verdict, table-driven over fixture pairs ------------------------------------------


@pytest.mark.parametrize(
    ("previous", "current", "evaluated", "restarted", "reasons"),
    [
        pytest.param(None, "healthy_1", False, False, set(), id="first-scrape"),
        pytest.param("healthy_1", "healthy_2", True, False, set(), id="healthy"),
        pytest.param("healthy_2", "congested", True, False, ALL_REASONS, id="congested"),
        pytest.param("congested", "congested", True, False, set(), id="nothing-new"),
        pytest.param(
            "healthy_2",
            "restarted",
            True,
            True,
            {"apf_rejections_node_high", "mutating_latency_slo", "ratio_429"},
            id="restart",
        ),
        pytest.param("congested", "healthy_1", True, True, set(), id="restart-to-healthy"),
        pytest.param("healthy_2", "minimal", True, False, set(), id="families-missing"),
        pytest.param("minimal", "healthy_2", True, True, set(), id="requests-went-down"),
        pytest.param("nan", "nan", True, False, set(), id="nan"),
    ],
)
def test_verdict(
    previous: str | None, current: str, evaluated: bool, restarted: bool, reasons: set[str]
) -> None:
    result = evaluate(None if previous is None else summary(previous), summary(current))
    assert result.evaluated is evaluated
    assert result.restarted is restarted
    assert result.reasons == reasons
    assert result.congested is bool(reasons)


def test_first_scrape_has_no_numbers_either() -> None:
    assert evaluate(None, summary("congested")) == Evaluation()


def test_congested_window_numbers() -> None:
    result = evaluate(summary("healthy_2"), summary("congested"))
    # 117 requests in the window (317 - 200), 22 of them 429.
    assert result.ratio_429 == pytest.approx(22 / 117)
    # The first rejections of each level created their series within the window.
    assert result.apf_rejections == {
        "leader-election": 8.0,
        "node-high": 12.0,
        "workload-low": 2.0,
    }
    # 28 lease updates in the window, all queued 1.1 s: the (1, 1.25] bucket.
    assert result.mutating_p99_seconds is not None
    assert 1.0 < result.mutating_p99_seconds <= 1.25
    # Every non-exempt request waited 1.1 s: the (1, 2] bucket of APF's wait histogram.
    assert set(result.apf_wait_p99_seconds) == {"leader-election", "node-high", "workload-low"}
    assert all(1.0 < p99 <= 2.0 for p99 in result.apf_wait_p99_seconds.values())
    # etcd itself stayed fast.
    assert set(result.etcd_p99_seconds) == {"list", "update"}
    assert all(p99 <= 0.005 for p99 in result.etcd_p99_seconds.values())


def test_healthy_window_numbers() -> None:
    result = evaluate(summary("healthy_1"), summary("healthy_2"))
    assert result.ratio_429 == 0.0
    assert result.apf_rejections == {}
    assert result.mutating_p99_seconds is not None
    assert result.mutating_p99_seconds < 0.05
    # APF never queued anything: every wait was 0, in the first bucket (le="0").
    assert result.apf_wait_p99_seconds == {
        "leader-election": 0.0,
        "node-high": 0.0,
        "workload-low": 0.0,
    }


def test_a_window_without_requests_says_nothing_about_ratios_or_latency() -> None:
    result = evaluate(summary("congested"), summary("congested"))
    assert result.ratio_429 is None  # 0 requests < min_requests
    assert result.mutating_p99_seconds is None
    assert result.apf_wait_p99_seconds == {}  # no observations: NaN, left out
    assert result.apf_rejections == {
        "leader-election": 0.0,
        "node-high": 0.0,
        "workload-low": 0.0,
    }


# -- counter resets ----------------------------------------------------------------------


def test_restart_takes_everything_since_as_the_window() -> None:
    result = evaluate(summary("congested"), summary("restarted"))
    assert result.restarted
    assert result.apf_rejections == {"node-high": 2.0}
    assert result.ratio_429 == pytest.approx(2 / 30)
    assert result.mutating_p99_seconds is not None
    assert 2.0 < result.mutating_p99_seconds <= 3.0


def test_restart_is_seen_without_a_process_start_time() -> None:
    # A proxy that filters process_* families: the counters going down betray it.
    before = dataclasses.replace(summary("congested"), process_start_time_seconds=None)
    after = dataclasses.replace(summary("restarted"), process_start_time_seconds=None)
    result = evaluate(before, after)
    assert result.restarted
    assert result.apf_rejections == {"node-high": 2.0}
    assert "apf_rejections_node_high" in result.reasons


def test_restart_detected_from_the_start_time_alone() -> None:
    # A restarted apiserver that already counted past the old values: only the start
    # time tells; without it the window would be a (wrong) difference.
    before = summary("healthy_2")
    after = dataclasses.replace(before, process_start_time_seconds=2e9)
    result = evaluate(before, after)
    assert result.restarted
    assert result.ratio_429 == 0.0  # all 200 requests taken as new, none 429


# -- missing series and NaN ----------------------------------------------------------------


def rejections(**by_level: float) -> ApiserverSummary:
    return ApiserverSummary(
        process_start_time_seconds=1.0,
        apf_rejected={(level.replace("_", "-"), "queue-full"): n for level, n in by_level.items()},
    )


@pytest.mark.parametrize(
    ("before", "after", "reasons"),
    [
        pytest.param({}, {"node_high": 1}, {"apf_rejections_node_high"}, id="new-series-counts"),
        pytest.param({"node_high": 5}, {"node_high": 5}, set(), id="no-increase"),
        pytest.param({"node_high": 5}, {}, set(), id="series-gone"),
        pytest.param(
            {"leader_election": 1},
            {"leader_election": 2},
            {"apf_rejections_leader_election"},
            id="leader-election",
        ),
        pytest.param({}, {"workload_low": 500}, set(), id="other-levels-do-not-count"),
        pytest.param({"node_high": math.nan}, {"node_high": 3}, set(), id="nan-before"),
        pytest.param({"node_high": 3}, {"node_high": math.nan}, set(), id="nan-now"),
    ],
)
def test_rejection_reasons(
    before: dict[str, float], after: dict[str, float], reasons: set[str]
) -> None:
    assert evaluate(rejections(**before), rejections(**after)).reasons == reasons


def test_nan_values_never_become_numbers() -> None:
    nan = summary("nan")
    assert math.isnan(nan.requests["429"])
    # Compared with an empty scrape of the same process, everything is in the window.
    empty = ApiserverSummary(process_start_time_seconds=nan.process_start_time_seconds)
    result = evaluate(empty, nan)
    assert result.evaluated
    assert result.reasons == frozenset()
    assert result.ratio_429 is None  # the 429 counter is NaN
    assert result.mutating_p99_seconds is None  # a NaN bucket in the only pair
    # "get" is NaN throughout; "list" had 10 requests within 5 ms.
    assert result.etcd_p99_seconds == {"list": pytest.approx(0.99 * 0.005)}


def test_a_broken_bucket_in_one_pair_does_not_hide_another() -> None:
    nan = summary("nan")
    slow = buckets((0.05, 0.0), (1.0, 0.0), (2.0, 50.0), (math.inf, 50.0))
    pairs = dict(nan.mutating_by_pair) | {("pods", "POST"): slow}
    cur = dataclasses.replace(nan, mutating_by_pair=pairs)
    result = evaluate(ApiserverSummary(process_start_time_seconds=1.7e9), cur)
    assert result.reasons == {"mutating_latency_slo"}
    assert result.mutating_p99_seconds == pytest.approx(1.99)


# -- thresholds at their boundaries ------------------------------------------------------------


def requests(ok: float, throttled: float) -> ApiserverSummary:
    return ApiserverSummary(
        process_start_time_seconds=1.0,
        has_requests=True,
        requests=dict.fromkeys(CODE_CLASSES, 0.0) | {"2xx": ok, "429": throttled},
    )


@pytest.mark.parametrize(
    ("ok", "throttled", "ratio", "active"),
    [
        pytest.param(99, 1, 0.01, False, id="exactly-1-percent"),
        pytest.param(98, 2, 0.02, True, id="above"),
        pytest.param(18, 1, None, False, id="too-few-requests"),
        pytest.param(19, 1, 0.05, True, id="just-enough-requests"),
        pytest.param(0, 0, None, False, id="idle"),
    ],
)
def test_ratio_429_threshold(
    ok: float, throttled: float, ratio: float | None, active: bool
) -> None:
    result = evaluate(requests(0, 0), requests(ok, throttled))
    assert result.ratio_429 == (None if ratio is None else pytest.approx(ratio))
    assert ("ratio_429" in result.reasons) is active


def slow_calls(n: float, le: float) -> ApiserverSummary:
    bounds = (0.5, 1.0, 1.25, 2.0)
    pair = (*((b, n if b >= le else 0.0) for b in bounds), (math.inf, n))
    return ApiserverSummary(
        process_start_time_seconds=1.0, mutating_by_pair={("pods", "PATCH"): pair}
    )


@pytest.mark.parametrize(
    ("calls", "le", "active"),
    [
        pytest.param(9, 2.0, False, id="too-few-calls"),
        pytest.param(10, 2.0, True, id="enough-calls"),
        pytest.param(100, 1.0, False, id="within-1s"),
        pytest.param(100, 1.25, True, id="over-1s"),
    ],
)
def test_mutating_latency_threshold(calls: float, le: float, active: bool) -> None:
    result = evaluate(slow_calls(0, le), slow_calls(calls, le))
    assert ("mutating_latency_slo" in result.reasons) is active


def test_mutating_latency_uses_only_the_window() -> None:
    # 1000 slow calls long ago, 100 fast ones since: the window is fast.
    before = slow_calls(1000, 2.0)
    pair = dict(before.mutating_by_pair)[("pods", "PATCH")]
    fast = tuple((bound, count + 100) for bound, count in pair)
    after = dataclasses.replace(before, mutating_by_pair={("pods", "PATCH"): fast})
    result = evaluate(before, after)
    assert result.mutating_p99_seconds is not None
    assert result.mutating_p99_seconds <= 0.5
    assert result.reasons == frozenset()


def test_thresholds_are_parameters() -> None:
    strict = Thresholds(ratio_429=0.001, min_requests=1, mutating_p99_seconds=0.001)
    result = evaluate(summary("healthy_1"), summary("healthy_2"), strict)
    assert result.reasons == {"mutating_latency_slo"}


# -- properties ------------------------------------------------------------------------------

counts = st.floats(min_value=0, max_value=1e12) | st.just(math.nan)


@given(
    before=st.dictionaries(st.sampled_from(CODE_CLASSES), counts),
    after=st.dictionaries(st.sampled_from(CODE_CLASSES), counts),
    rejected=st.dictionaries(
        st.tuples(st.sampled_from(["node-high", "leader-election", "custom"]), st.just("time-out")),
        counts,
    ),
    restarted=st.booleans(),
)
def test_any_pair_of_scrapes_gives_a_sane_verdict(
    before: dict[str, float],
    after: dict[str, float],
    rejected: dict[tuple[str, str], float],
    restarted: bool,
) -> None:
    """Whatever the counters did (grew, reset, NaN), the verdict is well formed: a ratio
    is a share or absent, rejections are never negative, reasons are known ones."""
    prev = ApiserverSummary(process_start_time_seconds=1.0, has_requests=True, requests=before)
    cur = ApiserverSummary(
        process_start_time_seconds=2.0 if restarted else 1.0,
        has_requests=True,
        requests=dict.fromkeys(CODE_CLASSES, 0.0) | after,
        apf_rejected=rejected,
    )
    result = evaluate(prev, cur)
    assert result.evaluated
    assert result.reasons <= ALL_REASONS
    assert result.ratio_429 is None or 0.0 <= result.ratio_429 <= 1.0
    assert all(math.isnan(v) or v >= 0 for v in result.apf_rejections.values())
    if restarted:
        assert result.restarted
