"""Properties of the webhook over the whole payload schema, and a fuzz run.

- Hypothesis generates valid version-4 payloads: every one is accepted and round-trips
  into the contract's objects (labels exactly, times as the same instants).
- Hypothesis mutates valid payloads (a field removed, or given a value of a type the
  field does not take): every one is refused with a 4xx, never a 5xx, and the intake
  is never called, both at the validation function and through HTTP.
- A seeded fuzz run of 100 000 bodies that are invalid by construction (random bytes,
  truncated JSON, type-swapped fields, deep nesting, huge numbers, stray unicode):
  every one goes through ``decode_group``, the function that makes the handler's only
  decision, which must raise a ``PayloadError`` (4xx) and nothing else; a sample of
  3000 of them, spread over every kind, also goes through the full HTTP path (auth,
  content type, size limit, decoding) of a served application whose intake fails the
  test if called. The split keeps the run at a few seconds on a loaded machine: an HTTP
  round trip costs ~100 times a direct call, and the HTTP layer adds nothing that
  depends on the body's content beyond its size, which the sample covers.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from webhook_support import JSON, WEBHOOK_PATH, RefusingIntake, bearer, fixture_payload

from kubeballast.core.config import ReceiverConfig
from kubeballast.remediations.payload import PayloadError, decode_group
from kubeballast.remediations.webhook import create_app

GO_ZERO = "0001-01-01T00:00:00Z"
HYPOTHESIS = settings(
    max_examples=300,
    deadline=None,  # a loaded two-core machine stalls at random; time is not the property
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# --- valid payloads ---------------------------------------------------------------------

texts = st.text(max_size=30)
label_maps = st.dictionaries(texts, texts, max_size=6)
offsets = st.integers(-14 * 60, 14 * 60).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes))
)
instants = st.datetimes(
    min_value=datetime.datetime(1970, 1, 1),
    max_value=datetime.datetime(2200, 1, 1),
    timezones=offsets,
)
times = instants.map(lambda moment: moment.isoformat())
statuses = st.sampled_from(["firing", "resolved"])

alerts = st.fixed_dictionaries(
    {
        "status": statuses,
        "labels": label_maps,
        "annotations": st.one_of(st.none(), label_maps),
        "startsAt": times,
        "endsAt": st.one_of(st.just(GO_ZERO), times),
        "generatorURL": texts,
        "fingerprint": st.text(min_size=1, max_size=16),
    }
)
payloads = st.fixed_dictionaries(
    {
        "version": st.just("4"),
        "groupKey": texts,
        "status": statuses,
        "receiver": texts,
        "groupLabels": st.one_of(st.none(), label_maps),
        "commonLabels": st.one_of(st.none(), label_maps),
        "commonAnnotations": st.one_of(st.none(), label_maps),
        "externalURL": texts,
        "alerts": st.lists(alerts, max_size=5),
    },
    optional={"truncatedAlerts": st.integers(0, 2**63 - 1), "extraField": texts},
)


def instant(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


@HYPOTHESIS
@given(payloads)
def test_valid_payloads_round_trip_into_the_contract(payload: dict[str, Any]) -> None:
    group = decode_group(json.dumps(payload).encode(), max_alerts=10)
    assert group.version == "4"
    assert group.group_key == payload["groupKey"]
    assert group.status == payload["status"]
    assert group.receiver == payload["receiver"]
    assert group.group_labels == (payload["groupLabels"] or {})
    assert group.common_labels == (payload["commonLabels"] or {})
    assert group.common_annotations == (payload["commonAnnotations"] or {})
    assert group.external_url == payload["externalURL"]
    assert group.truncated_alerts == payload.get("truncatedAlerts", 0)
    assert len(group.alerts) == len(payload["alerts"])
    for alert, wire in zip(group.alerts, payload["alerts"], strict=True):
        assert alert.status == wire["status"]
        assert alert.labels == wire["labels"]
        assert alert.annotations == (wire["annotations"] or {})
        assert alert.starts_at == instant(wire["startsAt"])
        assert alert.starts_at.tzinfo is datetime.UTC
        if wire["endsAt"] == GO_ZERO:
            assert alert.ends_at is None
        else:
            assert alert.ends_at == instant(wire["endsAt"])
        assert alert.generator_url == wire["generatorURL"]
        assert alert.fingerprint == wire["fingerprint"]


# --- mutated payloads -------------------------------------------------------------------

# Values of every JSON type; a mutation picks one the field does not accept.
ANY_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(texts, st.integers(), max_size=3),
)


def _is_label_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _is_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


VALID: dict[str, Callable[[Any], bool]] = {
    "version": lambda v: v == "4",
    "groupKey": lambda v: isinstance(v, str),
    "status": lambda v: v in ("firing", "resolved"),
    "receiver": lambda v: isinstance(v, str),
    "groupLabels": lambda v: v is None or _is_label_map(v),
    "commonLabels": lambda v: v is None or _is_label_map(v),
    "commonAnnotations": lambda v: v is None or _is_label_map(v),
    "externalURL": lambda v: isinstance(v, str),
    "alerts": lambda v: isinstance(v, list) and not v,  # non-empty lists are item-checked
    "truncatedAlerts": lambda v: type(v) is int and 0 <= v < 2**63,
    "alert.status": lambda v: v in ("firing", "resolved"),
    "alert.labels": _is_label_map,
    "alert.annotations": lambda v: v is None or _is_label_map(v),
    "alert.startsAt": _is_time,
    "alert.endsAt": _is_time,
    "alert.generatorURL": lambda v: isinstance(v, str),
    "alert.fingerprint": lambda v: isinstance(v, str) and v != "",
}
REQUIRED = [key for key in VALID if key != "truncatedAlerts"]


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid payload with one field removed or given a value it does not accept."""
    payload = copy.deepcopy(draw(payloads))
    if not payload["alerts"]:
        payload["alerts"].append(draw(alerts))
    key = draw(st.sampled_from(sorted(VALID)))
    target = payload
    name = key
    if key.startswith("alert."):
        target = payload["alerts"][draw(st.integers(0, len(payload["alerts"]) - 1))]
        name = key.removeprefix("alert.")
    if key in REQUIRED and draw(st.booleans()):
        del target[name]
    else:
        target[name] = draw(ANY_VALUES.filter(lambda value: not VALID[key](value)))
    return payload


@HYPOTHESIS
@given(mutated())
def test_mutated_payloads_are_refused_with_a_4xx(payload: dict[str, Any]) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_group(json.dumps(payload).encode(), max_alerts=10)
    assert caught.value.http_status in (400, 422)


class ServedApp:
    """The application on loopback, driven from synchronous hypothesis tests."""

    def __init__(self, config: ReceiverConfig, intake: Any) -> None:
        self.runner = asyncio.Runner()
        self.app = create_app(config, intake, CollectorRegistry())
        self.url = ""
        self.web: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None

    def __enter__(self) -> ServedApp:
        self.runner.__enter__()
        self.runner.run(self._start())
        return self

    async def _start(self) -> None:
        self.web = web.AppRunner(self.app, access_log=None)
        await self.web.setup()
        site = web.TCPSite(self.web, "127.0.0.1", 0)
        await site.start()
        host, port = self.web.addresses[0][:2]
        self.url = f"http://{host}:{port}{WEBHOOK_PATH}"
        self.session = aiohttp.ClientSession()

    async def _post(self, body: bytes) -> int:
        assert self.session is not None
        async with self.session.post(self.url, data=body, headers={**JSON, **bearer()}) as response:
            await response.read()
            return response.status

    def post(self, body: bytes) -> int:
        return self.runner.run(self._post(body))

    def post_many(self, bodies: list[bytes], concurrency: int = 32) -> list[int]:
        async def run() -> list[int]:
            semaphore = asyncio.Semaphore(concurrency)

            async def one(body: bytes) -> int:
                async with semaphore:
                    return await self._post(body)

            return await asyncio.gather(*(one(body) for body in bodies))

        return self.runner.run(run())

    async def _stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.web is not None:
            await self.web.cleanup()

    def __exit__(self, *exc_info: object) -> None:
        self.runner.run(self._stop())
        self.runner.__exit__(*exc_info)


@pytest.fixture
def refusing_app(receiver_config: ReceiverConfig) -> Iterator[tuple[ServedApp, RefusingIntake]]:
    intake = RefusingIntake()
    with ServedApp(receiver_config, intake) as served:
        yield served, intake


@settings(HYPOTHESIS, max_examples=150)
@given(payload=mutated())
def test_mutated_payloads_over_http_get_a_4xx_and_never_reach_the_intake(
    refusing_app: tuple[ServedApp, RefusingIntake], payload: dict[str, Any]
) -> None:
    served, intake = refusing_app
    assert served.post(json.dumps(payload).encode()) in (400, 422)
    assert intake.calls == []


# --- fuzz -------------------------------------------------------------------------------

FUZZ_BODIES = 100_000
HTTP_SAMPLE = 3_000
SEED = 20261126
BASE = fixture_payload("mixed")
BASE_BYTES = json.dumps(BASE).encode()

WRONG_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**64, -(2**70), "", "yesterday", "FIRING", "4 ",
    [], [1, "a"], {}, {"a": 1}, {"a": None}, "\u202e\u0000\U0001f4a5", "日本語",
]  # fmt: skip
HUGE_NUMBERS = [
    b"1" + b"0" * 400, b"-" + b"9" * 100, b"1e400", b"-1e400", b"1.7976931348623157e309",
    b"123456789012345678901234567890", b"1e-400", b"18446744073709551616",
]  # fmt: skip


def _paths(payload: dict[str, Any]) -> list[tuple[Any, ...]]:
    group = [(key,) for key in VALID if not key.startswith("alert.")]
    per_alert = [
        ("alerts", index, key.removeprefix("alert."))
        for index in range(len(payload["alerts"]))
        for key in VALID
        if key.startswith("alert.")
    ]
    return group + per_alert


def _rule(path: tuple[Any, ...]) -> Callable[[Any], bool]:
    return VALID[path[0]] if len(path) == 1 else VALID[f"alert.{path[2]}"]


def _set(payload: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = payload
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


PLACEHOLDER = "\u0000PLACEHOLDER\u0000"


def _templates() -> dict[tuple[Any, ...], tuple[bytes, bytes]]:
    """For every field, the base payload's encoding split around that field's value, so
    a fuzzed body is two joins rather than a deep copy and a fresh encoding."""
    templates = {}
    marker = json.dumps(PLACEHOLDER).encode()
    for path in _paths(BASE):
        payload = copy.deepcopy(BASE)
        _set(payload, path, PLACEHOLDER)
        prefix, suffix = json.dumps(payload).encode().split(marker)
        templates[path] = (prefix, suffix)
    return templates


def _fuzz_bodies(count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    templates = _templates()
    paths = list(templates)
    text_paths = [p for p in paths if p[-1] in ("status", "version", "startsAt", "endsAt")]
    swaps = {
        path: [json.dumps(value).encode() for value in WRONG_VALUES if not _rule(path)(value)]
        for path in paths
    }
    stripped = BASE_BYTES.rstrip()
    kinds = ["random", "truncated", "swapped", "nested", "huge", "unicode"]

    def at(path: tuple[Any, ...], raw: bytes) -> bytes:
        prefix, suffix = templates[path]
        return prefix + raw + suffix

    for index in range(count):
        kind = kinds[index % len(kinds)]
        if kind == "random":
            body = rng.randbytes(rng.randrange(0, 300))
            if body[:1] == b"{":  # keep every body invalid by construction
                body = b"\x00" + body
        elif kind == "truncated":
            body = stripped[: rng.randrange(0, len(stripped) - 1)]
        elif kind == "swapped":
            path = rng.choice(paths)
            body = at(path, rng.choice(swaps[path]))
        elif kind == "nested":
            depth = rng.choice([50, 500, 999, 1001, 5000, 20000])
            opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
            body = at(rng.choice(paths), opener * depth + b"1" + closer * depth)
        elif kind == "huge":
            body = at(rng.choice(paths), rng.choice(HUGE_NUMBERS))
        else:
            alphabet = [chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(rng.randrange(1, 12))]
            text = "".join(ch for ch in alphabet if not 0xD800 <= ord(ch) <= 0xDFFF) or "\u00e9"
            raw = json.dumps(text, ensure_ascii=rng.random() < 0.5).encode()
            body = at(rng.choice(text_paths), raw)
        yield kind, body


def test_fuzz_bodies_are_refused_with_a_4xx_and_never_reach_the_intake(
    refusing_app: tuple[ServedApp, RefusingIntake],
) -> None:
    served, intake = refusing_app
    counts: dict[str, int] = {}
    sample: list[bytes] = []
    every = FUZZ_BODIES // HTTP_SAMPLE
    for index, (kind, body) in enumerate(_fuzz_bodies(FUZZ_BODIES, SEED)):
        with pytest.raises(PayloadError) as caught:
            decode_group(body, max_alerts=10_000)
        assert caught.value.http_status in (400, 422), (kind, body[:200])
        counts[kind] = counts.get(kind, 0) + 1
        if index % every == 0 and len(sample) < HTTP_SAMPLE:
            sample.append(body)
    assert sum(counts.values()) == FUZZ_BODIES
    assert min(counts.values()) >= FUZZ_BODIES // 6

    statuses = served.post_many(sample)
    assert len(statuses) == HTTP_SAMPLE
    assert set(statuses) <= {400, 422}, sorted(set(statuses))
    assert intake.calls == []
