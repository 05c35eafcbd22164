"""Reading the Prometheus text exposition of control-plane components, and the PromQL
arithmetic the exporter needs over two scrapes of it.

The exporter scrapes kube-apiserver, kube-scheduler and kube-controller-manager
/metrics itself (to derive congestion and health verdicts that Prometheus alone cannot
express as simply), and an apiserver's /metrics in a 5000-node cluster is tens of
megabytes, nearly all of it families the exporter does not want. :func:`parse` is
therefore built to *skip* cheaply: each sample line's metric name is cut out with two
``str.find`` calls and looked up in a set before anything else is done with the line;
only wanted lines get their labels parsed (by one compiled regular expression, with
unescaping only when a value contains a backslash). prometheus-client's own parser is
exact but builds objects for every line, which is several times slower on such a page.

The helpers implement Prometheus' semantics so that numbers computed here agree with
what the same PromQL over Prometheus' data would give:

- :func:`histogram_quantile` follows ``promql/quantile.go`` (``bucketQuantile``):
  linear interpolation inside the bucket, the +Inf bucket required, the highest finite
  bound returned when the rank falls in the +Inf bucket, NaN without observations;
- :func:`counter_delta` and :func:`rate` treat a decrease as a counter reset (the
  process restarted and counted again from zero), as ``increase()`` does;
- :func:`bucket_deltas` turns two cumulative histograms into the histogram of what
  was observed between the scrapes, for quantiles over that interval.

Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence
from typing import NamedTuple

__all__ = [
    "Buckets",
    "ParseError",
    "Sample",
    "bucket_deltas",
    "counter_delta",
    "histogram_buckets",
    "histogram_quantile",
    "parse",
    "rate",
    "sum_by",
]

Buckets = Sequence[tuple[float, float]]
"""A cumulative histogram: ``(upper_bound, count)`` pairs, one with ``+Inf``."""

_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created", "_info")
"""Sample-name suffixes that belong to the family named without them."""


class ParseError(ValueError):
    """The text is not Prometheus exposition; ``line`` is 1-based."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class Sample(NamedTuple):
    """One sample line. ``timestamp`` is in seconds, None when the line had none."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp: float | None = None


_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*(,?)')
_LABELS_END = re.compile(r"[ \t]*\}")
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"\\": "\\", "n": "\n", '"': '"'}


def _unescape(value: str) -> str:
    # Unknown escapes keep their backslash, as the Prometheus text parser does.
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), value)


def _parse_value(token: str, line_number: int) -> float:
    try:
        return float(token)
    except ValueError:
        raise ParseError(line_number, f"bad sample value {token[:40]!r}") from None


def _family_index(wanted: Collection[str]) -> dict[str, str]:
    """Sample name -> the wanted family it belongs to (exact names win over suffixes)."""
    index: dict[str, str] = {}
    for family in wanted:
        for suffix in _SUFFIXES:
            index.setdefault(family + suffix, family)
    for family in wanted:
        index[family] = family
    return index


def parse(text: str, wanted: Collection[str] | None = None) -> dict[str, list[Sample]]:
    """The samples of ``text`` grouped by family, only the ``wanted`` families if given.

    A family is wanted by its name as exposed; its ``_bucket``/``_sum``/``_count``/
    ``_total``/``_created``/``_info`` samples come with it, under the wanted name
    (``apiserver_request_duration_seconds`` brings its buckets; Go clients already
    name counter families with ``_total``, so ``apiserver_request_total`` works as
    is). Without ``wanted``, families are named by their ``# TYPE`` lines, or by the
    sample name when there is none. Wanted families absent from ``text`` are absent
    from the result. Raises :class:`ParseError` on a malformed wanted line; unwanted
    lines are not looked at beyond their name.
    """
    index = _family_index(wanted) if wanted is not None else None
    types: dict[str, str] = {}
    result: dict[str, list[Sample]] = {}
    for line_number, line in enumerate(text.split("\n"), 1):
        if not line or line[0] == "#":
            if index is None and line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) >= 3:
                    types[parts[2]] = parts[3] if len(parts) > 3 else "untyped"
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name = line[:brace]
        elif space != -1:
            name = line[:space]
        else:
            if line.isspace():
                continue
            raise ParseError(line_number, "a sample needs a value")
        name = name.strip()  # tolerated leading blanks (the format allows them)
        if index is not None:
            found = index.get(name)
            if found is None:
                continue
            family = found
        else:
            family = name
            if name not in types:
                for suffix in _SUFFIXES:
                    if name.endswith(suffix) and name[: -len(suffix)] in types:
                        family = name[: -len(suffix)]
                        break
        labels: dict[str, str] = {}
        if brace != -1 and (space == -1 or brace < space):
            position = brace + 1
            while True:
                end = _LABELS_END.match(line, position)
                if end is not None:
                    position = end.end()
                    break
                match = _LABEL.match(line, position)
                if match is None:
                    raise ParseError(line_number, f"bad labels in {name}")
                value = match.group(2)
                labels[match.group(1)] = _unescape(value) if "\\" in value else value
                position = match.end()
                if not match.group(3):
                    end = _LABELS_END.match(line, position)
                    if end is None:
                        raise ParseError(line_number, f"bad labels in {name}")
                    position = end.end()
                    break
            rest = line[position:].split()
        else:
            rest = line[space:].split()
        if not rest:
            raise ParseError(line_number, f"{name} has no value")
        value_number = _parse_value(rest[0], line_number)
        timestamp: float | None = None
        # OpenMetrics exemplars follow a " # "; a timestamp, if any, comes before it.
        if len(rest) > 1 and rest[1] != "#":
            try:
                timestamp = float(rest[1]) / 1000.0
            except ValueError:
                raise ParseError(line_number, f"bad timestamp {rest[1][:40]!r}") from None
        result.setdefault(family, []).append(Sample(name, labels, value_number, timestamp))
    return result


# --------------------------------------------------------------------------------------
# Grouping
# --------------------------------------------------------------------------------------


def sum_by(
    samples: Iterable[Sample], by: Sequence[str] = (), *, name: str | None = None
) -> dict[tuple[str, ...], float]:
    """``sum by (by...)`` over ``samples`` (those named ``name``, if given).

    A missing label groups as the empty string, as in PromQL.
    """
    sums: dict[tuple[str, ...], float] = {}
    for sample in samples:
        if name is not None and sample.name != name:
            continue
        key = tuple(sample.labels.get(label, "") for label in by)
        sums[key] = sums.get(key, 0.0) + sample.value
    return sums


def histogram_buckets(
    samples: Iterable[Sample], by: Sequence[str] = ()
) -> dict[tuple[str, ...], list[tuple[float, float]]]:
    """The ``*_bucket`` samples summed by ``le`` and ``by``: one cumulative histogram per
    group, sorted by upper bound (``sum by (le, by...) (x_bucket)``)."""
    groups: dict[tuple[str, ...], dict[float, float]] = {}
    for sample in samples:
        if not sample.name.endswith("_bucket"):
            continue
        le = sample.labels.get("le")
        if le is None:
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        key = tuple(sample.labels.get(label, "") for label in by)
        group = groups.setdefault(key, {})
        group[bound] = group.get(bound, 0.0) + sample.value
    return {key: sorted(group.items()) for key, group in groups.items()}


# --------------------------------------------------------------------------------------
# PromQL arithmetic
# --------------------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Buckets) -> float:
    """The ``q``-quantile of a cumulative histogram, as PromQL's histogram_quantile.

    NaN when there are fewer than two buckets, no ``+Inf`` bucket, no observations, or
    a NaN count; -Inf for ``q < 0`` and +Inf for ``q > 1``. Buckets with the same bound
    are added up and counts that decrease with the bound (a scrape racing observations)
    are raised to be monotonic, as Prometheus does.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if not buckets or any(math.isnan(count) for _, count in buckets):
        return math.nan
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered = sorted(merged.items())
    if not math.isinf(ordered[-1][0]) or ordered[-1][0] < 0:
        return math.nan
    if len(ordered) < 2:
        return math.nan
    bounds = [bound for bound, _ in ordered]
    counts: list[float] = []
    highest = -math.inf
    for _, count in ordered:
        highest = max(highest, count)
        counts.append(highest)
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    # The first bucket (the +Inf one excluded) whose count reaches the rank.
    b = next((i for i in range(len(counts) - 1) if counts[i] >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0
    end = bounds[b]
    count = counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    if count == 0:
        return start
    return start + (end - start) * (rank / count)


def counter_delta(prev: float, cur: float) -> float:
    """How much a counter grew from ``prev`` to ``cur``; a decrease is a reset, after
    which the counter counted ``cur`` from zero."""
    if cur < prev:
        return cur
    return cur - prev


def rate(prev_value: float, prev_t: float, cur_value: float, cur_t: float) -> float | None:
    """Per-second growth of a counter between two readings; None if time did not advance."""
    elapsed = cur_t - prev_t
    if elapsed <= 0:
        return None
    return counter_delta(prev_value, cur_value) / elapsed


def bucket_deltas(prev: Buckets, cur: Buckets) -> list[tuple[float, float]]:
    """The histogram of observations between two scrapes of a cumulative histogram.

    A reset (any bucket lower than before) or a change of bucket layout means the
    process restarted: everything in ``cur`` was observed since, so ``cur`` is the
    answer, as ``increase()`` would take it.
    """
    previous = dict(prev)
    current = sorted(cur)
    if {bound for bound, _ in current} != set(previous):
        return list(current)
    if any(count < previous[bound] for bound, count in current):
        return list(current)
    return [(bound, count - previous[bound]) for bound, count in current]
