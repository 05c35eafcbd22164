"""The correlated wave of stale Leases: the signature that separates a control plane that
cannot take heartbeats (hundreds of nodes going stale within seconds, in every zone)
from nodes dying on their own (one at a time, or one rack, or one node dead for hours).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kubeballast.exporter.heartbeat import (
    NodeHeartbeat,
    correlated_wave,
    derive_heartbeats,
    zones_spanned,
)
from kubeballast.exporter.projections import LeaseP, NodeP

NOW = 1_700_000_000.0
GRACE = 50.0


def beat(name: str, zone: str, since: float | None) -> NodeHeartbeat:
    return NodeHeartbeat(
        name, zone, None if since is None else NOW - since, since is not None, since
    )


def test_wave_empty_without_stale_nodes() -> None:
    wave = correlated_wave([beat("a", "z1", None)], 120)
    assert wave.size == 0
    assert wave.start is None
    assert wave.zones == ()


def test_wave_is_the_largest_group_within_the_window() -> None:
    beats = [
        beat("old", "z1", NOW - 7200),  # dead for two hours
        *(beat(f"w{i}", f"z{i % 3}", NOW - 60 + i) for i in range(6)),
        beat("late", "z1", NOW - 60 + 126),  # outside the window of every wave node
    ]
    wave = correlated_wave(beats, 120)
    assert wave.nodes == tuple(sorted(f"w{i}" for i in range(6)))
    assert wave.start == NOW - 60
    assert wave.end == NOW - 55
    assert [(z, n) for z, n, _ in wave.zones] == [("z0", 2), ("z1", 2), ("z2", 2)]


def test_wave_window_edge_is_inclusive() -> None:
    wave = correlated_wave([beat("a", "z", NOW - 120), beat("b", "z", NOW)], 120)
    assert wave.size == 2
    wave = correlated_wave([beat("a", "z", NOW - 120.5), beat("b", "z", NOW)], 120)
    assert wave.size == 1


def test_wave_prefers_the_newest_group_on_ties() -> None:
    wave = correlated_wave([beat("a", "z", NOW - 1000), beat("b", "z", NOW)], 120)
    assert wave.nodes == ("b",)


def test_zones_spanned_ignores_a_zone_with_a_stray_node() -> None:
    beats = [beat(f"a{i}", "z-a", NOW - 10) for i in range(10)] + [beat("b0", "z-b", NOW - 5)]
    wave = correlated_wave(beats, 120)
    assert wave.size == 11
    # One node out of 20 in z-b is 5 %: below the 10 % that counts as spanning the zone.
    assert zones_spanned(wave, {"z-a": 10, "z-b": 20}) == 1
    assert zones_spanned(wave, {"z-a": 10, "z-b": 10}) == 2


def test_one_long_dead_node_does_not_move_the_wave_start() -> None:
    nodes = [
        NodeP(f"n{i}", {}, f"z{i % 2}", False, (), "Unknown", None, {}, {}, False)
        for i in range(10)
    ]
    leases = {f"n{i}": LeaseP(f"n{i}", "kube-node-lease", f"n{i}", NOW - 80, 40) for i in range(9)}
    leases["n9"] = LeaseP("n9", "kube-node-lease", "n9", NOW - 86400, 40)
    beats = derive_heartbeats(nodes, leases, NOW, grace_seconds=GRACE)
    assert beats.wave_onset == NOW - 86400 + GRACE  # the earliest stale lease, as before
    assert beats.wave.start == NOW - 80 + GRACE
    assert beats.wave.size == 9
    assert beats.wave_ratio == 0.9
    assert beats.wave_zones == 2


@given(
    # Whole seconds (Lease renewTimes are RFC 3339 with microseconds at most), so that the
    # oracle below does not disagree with the derivation over float rounding at 1.7e9.
    st.lists(st.integers(min_value=0, max_value=3600), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=600),
)
def test_wave_members_fit_the_window_and_no_larger_group_exists(
    offsets: list[int], window: int
) -> None:
    beats = [beat(f"n{i}", "z", NOW - o) for i, o in enumerate(offsets)]
    wave = correlated_wave(beats, window)
    assert wave.start is not None
    assert wave.end is not None
    assert wave.end - wave.start <= window
    times = sorted(NOW - o for o in offsets)
    best = max(sum(1 for t in times if start <= t <= start + window) for start in times)
    assert wave.size == best
