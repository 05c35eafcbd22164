"""Parsing component /metrics and the PromQL arithmetic over two scrapes.

The parser is checked against prometheus-client's own parser on a real scrape of the
simulated apiserver, and by a property: whatever prometheus-client renders, we read back.
"""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from kubeballast.core.promtext import (
    ParseError,
    Sample,
    bucket_deltas,
    counter_delta,
    histogram_buckets,
    histogram_quantile,
    parse,
    rate,
    sum_by,
)
from kubeballast.simulator.server import build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

INF = math.inf

TEXT = """\
# HELP apiserver_request_total Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",verb="LIST",resource="pods"} 12
apiserver_request_total{code="429",verb="LIST",resource="pods"} 3 1700000000123
# HELP apiserver_request_duration_seconds Response latency.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{verb="LIST",le="0.1"} 5
apiserver_request_duration_seconds_bucket{verb="LIST",le="1"} 9
apiserver_request_duration_seconds_bucket{verb="LIST",le="+Inf"} 10
apiserver_request_duration_seconds_sum{verb="LIST"} 4.5
apiserver_request_duration_seconds_count{verb="LIST"} 10
# TYPE etcd_object_counts gauge
etcd_object_counts{resource="a\\"b\\\\c\\nd, e}"} NaN
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.7e+09
# TYPE weird gauge
weird{ a = "1" , b="2",} -Inf
"""


def test_wanted_families_come_with_their_suffixed_samples() -> None:
    families = parse(TEXT, {"apiserver_request_duration_seconds", "apiserver_request_total"})
    assert set(families) == {"apiserver_request_duration_seconds", "apiserver_request_total"}
    histogram = families["apiserver_request_duration_seconds"]
    assert [s.name for s in histogram] == [
        *["apiserver_request_duration_seconds_bucket"] * 3,
        "apiserver_request_duration_seconds_sum",
        "apiserver_request_duration_seconds_count",
    ]
    assert histogram[2].labels == {"verb": "LIST", "le": "+Inf"}
    requests = families["apiserver_request_total"]
    assert requests[0] == Sample(
        "apiserver_request_total", {"code": "200", "verb": "LIST", "resource": "pods"}, 12.0
    )
    assert requests[1].timestamp == pytest.approx(1_700_000_000.123)


def test_without_wanted_every_family_is_named_by_its_type_line() -> None:
    families = parse(TEXT)
    assert set(families) == {
        "apiserver_request_total",
        "apiserver_request_duration_seconds",
        "etcd_object_counts",
        "process_start_time_seconds",
        "weird",
    }
    assert families["process_start_time_seconds"] == [
        Sample("process_start_time_seconds", {}, 1.7e9)
    ]


def test_label_escapes_special_values_and_loose_spacing() -> None:
    families = parse(TEXT, ["etcd_object_counts", "weird"])
    (objects,) = families["etcd_object_counts"]
    assert objects.labels == {"resource": 'a"b\\c\nd, e}'}
    assert math.isnan(objects.value)
    (weird,) = families["weird"]
    assert weird.labels == {"a": "1", "b": "2"}
    assert weird.value == -INF


def test_wanted_families_that_are_absent_are_absent() -> None:
    assert parse(TEXT, ["not_there"]) == {}
    assert parse("", None) == {}
    assert parse("\n\n# just a comment\n", ["x"]) == {}


def test_a_counter_wanted_by_its_base_name_brings_total_and_created() -> None:
    text = "# TYPE jobs counter\njobs_total 3\njobs_created 1.7e9\n"
    assert [s.name for s in parse(text, ["jobs"])["jobs"]] == ["jobs_total", "jobs_created"]


def test_openmetrics_exemplars_and_eof_are_tolerated() -> None:
    text = 'a_bucket{le="1"} 2 # {trace_id="x"} 0.5 1.6e9\n# EOF\n'
    (sample,) = parse(text, ["a"])["a"]
    assert (sample.value, sample.timestamp) == (2.0, None)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("wanted", "a sample needs a value"),
        ('wanted{a="1"}', "has no value"),
        ("wanted{a=1} 3", "bad labels"),
        ('wanted{a="1" 3', "bad labels"),
        ('wanted{a="1"} three', "bad sample value"),
        ('wanted{a="1"} 3 soon', "bad timestamp"),
    ],
)
def test_malformed_wanted_lines_are_errors_with_their_line(line: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as raised:
        parse(f"# TYPE wanted gauge\n{line}\n", ["wanted"])
    assert raised.value.line == 2


def test_malformed_unwanted_lines_are_not_even_looked_at() -> None:
    assert parse("other{a=1} three\nwanted 1\n", ["wanted"]) == {
        "wanted": [Sample("wanted", {}, 1.0)]
    }


# --------------------------------------------------------------------------------------
# Grouping
# --------------------------------------------------------------------------------------


def test_sum_by_and_histogram_buckets_aggregate_like_promql() -> None:
    families = parse(TEXT, ["apiserver_request_total", "apiserver_request_duration_seconds"])
    assert sum_by(families["apiserver_request_total"], ["code"]) == {("200",): 12, ("429",): 3}
    assert sum_by(families["apiserver_request_total"]) == {(): 15}
    histogram = families["apiserver_request_duration_seconds"]
    assert sum_by(histogram, name="apiserver_request_duration_seconds_count") == {(): 10}
    assert histogram_buckets(histogram, ["verb"]) == {("LIST",): [(0.1, 5), (1.0, 9), (INF, 10)]}
    assert histogram_buckets(histogram) == {(): [(0.1, 5), (1.0, 9), (INF, 10)]}


# --------------------------------------------------------------------------------------
# histogram_quantile: promql/quantile.go semantics
# --------------------------------------------------------------------------------------

BUCKETS = [(0.1, 5.0), (1.0, 9.0), (INF, 10.0)]


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, BUCKETS, 0.1),  # rank 5 reached exactly at the first bound
        (0.25, BUCKETS, 0.05),  # interpolated from 0 in the first bucket
        (0.7, BUCKETS, 0.1 + 0.9 * (7 - 5) / 4),
        (0.9, BUCKETS, 1.0),
        (0.99, BUCKETS, 1.0),  # in the +Inf bucket: the highest finite bound
        (1.0, BUCKETS, 1.0),
        (0.0, BUCKETS, 0.0),
        (-0.1, BUCKETS, -INF),
        (1.1, BUCKETS, INF),
        (0.5, [(INF, 10.0), (1.0, 9.0), (0.1, 5.0)], 0.1),  # order does not matter
        (0.5, [(0.1, 2.0), (0.1, 3.0), (1.0, 9.0), (INF, 10.0)], 0.1),  # same bound: summed
        (0.5, [(-1.0, 6.0), (1.0, 8.0), (INF, 10.0)], -1.0),  # first bound <= 0
        # A count lower than the bucket below (a scrape racing observations) is raised.
        (0.5, [(1.0, 4.0), (2.0, 3.0), (3.0, 8.0), (INF, 10.0)], 2.0 + 1.0 * (5 - 4) / (8 - 4)),
    ],
)
def test_histogram_quantile(q: float, buckets: list[tuple[float, float]], expected: float) -> None:
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize(
    "buckets",
    [
        [],
        [(INF, 10.0)],  # a single bucket
        [(0.1, 5.0), (1.0, 9.0)],  # no +Inf bucket
        [(0.1, 0.0), (1.0, 0.0), (INF, 0.0)],  # no observations
        [(0.1, math.nan), (1.0, 9.0), (INF, 10.0)],  # a NaN count
    ],
)
def test_histogram_quantile_is_nan_when_undefined(buckets: list[tuple[float, float]]) -> None:
    assert math.isnan(histogram_quantile(0.5, buckets))


def test_histogram_quantile_of_nan_q_is_nan() -> None:
    assert math.isnan(histogram_quantile(math.nan, BUCKETS))


@given(
    counts=st.lists(st.integers(0, 1000), min_size=1, max_size=12),
    q=st.floats(0, 1),
)
def test_histogram_quantile_stays_within_the_finite_bounds(counts: list[int], q: float) -> None:
    bounds = [0.005 * 2**i for i in range(len(counts))]
    cumulative: list[tuple[float, float]] = []
    total = 0
    for bound, count in zip(bounds, counts, strict=True):
        total += count
        cumulative.append((bound, float(total)))
    cumulative.append((INF, float(total + 3)))
    result = histogram_quantile(q, cumulative)
    assert 0 <= result <= bounds[-1]
    assert histogram_quantile(min(1.0, q + 0.1), cumulative) >= result  # monotonic in q


# --------------------------------------------------------------------------------------
# Counters over two scrapes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prev", "cur", "delta"),
    [
        (10.0, 15.0, 5.0),
        (10.0, 10.0, 0.0),
        (10.0, 4.0, 4.0),  # reset: counted 4 since the restart
        (0.0, 0.0, 0.0),
    ],
)
def test_counter_delta(prev: float, cur: float, delta: float) -> None:
    assert counter_delta(prev, cur) == delta


def test_rate_is_per_second_and_undefined_without_elapsed_time() -> None:
    assert rate(100.0, 10.0, 160.0, 40.0) == 2.0
    assert rate(100.0, 10.0, 30.0, 40.0) == 1.0  # reset
    assert rate(1.0, 10.0, 2.0, 10.0) is None
    assert rate(1.0, 10.0, 2.0, 9.0) is None


def test_bucket_deltas_give_the_histogram_of_the_interval() -> None:
    prev = [(0.1, 5.0), (1.0, 9.0), (INF, 10.0)]
    cur = [(0.1, 6.0), (1.0, 19.0), (INF, 30.0)]
    deltas = bucket_deltas(prev, cur)
    assert deltas == [(0.1, 1.0), (1.0, 10.0), (INF, 20.0)]
    assert histogram_quantile(0.5, deltas) == pytest.approx(0.1 + 0.9 * (10 - 1) / 9)


@pytest.mark.parametrize(
    "cur",
    [
        [(0.1, 1.0), (1.0, 2.0), (INF, 3.0)],  # reset: lower than before
        [(0.5, 7.0), (1.0, 9.0), (INF, 12.0)],  # another bucket layout
        [(1.0, 9.0), (INF, 12.0)],  # a bucket missing
    ],
)
def test_bucket_deltas_after_a_reset_are_the_current_histogram(
    cur: list[tuple[float, float]],
) -> None:
    prev = [(0.1, 5.0), (1.0, 9.0), (INF, 10.0)]
    assert bucket_deltas(prev, cur) == sorted(cur)


def test_bucket_deltas_without_previous_are_the_current_histogram() -> None:
    cur = [(1.0, 9.0), (INF, 12.0)]
    assert bucket_deltas([], cur) == cur


# --------------------------------------------------------------------------------------
# Agreement with prometheus-client
# --------------------------------------------------------------------------------------

label_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
metric_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=True, width=64), st.just(math.nan)
)


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


@settings(max_examples=150, deadline=None)
@given(
    series=st.dictionaries(
        st.tuples(label_values, label_values), metric_values, min_size=1, max_size=6
    )
)
def test_reads_back_whatever_prometheus_client_renders(
    series: dict[tuple[str, str], float],
) -> None:
    family = GaugeMetricFamily("kb_test_gauge", "help \\ text\n", labels=["a", "b"])
    for (a, b), value in series.items():
        family.add_metric([a, b], value)
    registry = CollectorRegistry()
    registry.register(_Fixed([family]))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()

    samples = parse(text, ["kb_test_gauge"])["kb_test_gauge"]

    assert len(samples) == len(series)
    for sample in samples:
        expected = series[(sample.labels["a"], sample.labels["b"])]
        assert sample.value == expected or (math.isnan(expected) and math.isnan(sample.value))


def _as_comparable(value: float) -> Any:
    return "NaN" if math.isnan(value) else value


async def test_agrees_with_prometheus_client_on_a_real_apiserver_scrape() -> None:
    scenario = ScenarioSettings(nodes=6, zones=3, pods_per_node=5, control_plane_nodes=1, seed=3)
    server = build_server(
        SimulatorSettings(
            host="127.0.0.1", port=0, kubelets=False, controllers=False, scenario=scenario
        )
    )
    await server.start()
    try:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        async with aiohttp.ClientSession(base_url=server.url, headers=headers) as session:
            for _ in range(3):  # some traffic, so the request families have samples
                async with session.get("/api/v1/nodes?limit=2") as response:
                    assert response.status == 200
            async with session.get("/metrics") as response:
                assert response.status == 200
                text = await response.text()
    finally:
        await server.stop()

    ours = {
        (sample.name, tuple(sorted(sample.labels.items())), _as_comparable(sample.value))
        for samples in parse(text).values()
        for sample in samples
    }
    theirs = {
        (sample.name, tuple(sorted(sample.labels.items())), _as_comparable(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert ours == theirs
    assert len(ours) > 50
    wanted = parse(text, ["apiserver_request_total", "apiserver_request_duration_seconds"])
    assert sum_by(wanted["apiserver_request_total"], ["verb"]).get(("LIST",), 0) >= 3
    assert histogram_buckets(wanted["apiserver_request_duration_seconds"], ["verb"])
