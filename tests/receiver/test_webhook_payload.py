"""Decoding the webhook body: what Alertmanager really sends decodes into the contract's
objects; every missing or mistyped field is refused with a message naming it."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

import pytest
from webhook_support import fixture_payload

from kubeballast.remediations.contract import AlertGroup
from kubeballast.remediations.payload import (
    InvalidPayloadError,
    MalformedJSONError,
    PayloadError,
    TooManyAlertsError,
    UnsupportedVersionError,
    decode_group,
)

UTC = datetime.UTC


def decode(payload: Any, *, max_alerts: int = 10000) -> AlertGroup:
    return decode_group(json.dumps(payload).encode(), max_alerts=max_alerts)


def refusal(payload: Any) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        decode(payload)
    return caught.value


def parse_go_time(text: str) -> datetime.datetime:
    """Go's RFC 3339 with nanoseconds, as Python reads it (microseconds, rounded)."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- payloads captured from the real Alertmanager --------------------------------------


@pytest.mark.parametrize("name", ["firing", "resolved", "mixed"])
def test_captured_alertmanager_payloads_decode_field_by_field(name: str) -> None:
    raw = fixture_payload(name)
    group = decode(raw)
    assert group.version == "4"
    assert group.group_key == raw["groupKey"]
    assert group.status == raw["status"]
    assert group.receiver == raw["receiver"] == "kube-ballast"
    assert group.group_labels == raw["groupLabels"]
    assert group.common_labels == raw["commonLabels"]
    assert group.common_annotations == raw["commonAnnotations"]
    assert group.external_url == raw["externalURL"]
    assert group.truncated_alerts == raw["truncatedAlerts"] == 0
    assert len(group.alerts) == len(raw["alerts"]) == 3
    for alert, wire in zip(group.alerts, raw["alerts"], strict=True):
        assert alert.status == wire["status"]
        assert alert.labels == wire["labels"]
        assert alert.annotations == wire["annotations"]
        assert alert.generator_url == wire["generatorURL"]
        assert alert.fingerprint == wire["fingerprint"]
        assert alert.name == wire["labels"]["alertname"]
        assert alert.starts_at.tzinfo is UTC
        assert abs(alert.starts_at - parse_go_time(wire["startsAt"])) < datetime.timedelta(
            microseconds=1
        )
        if wire["status"] == "firing":
            assert wire["endsAt"] == "0001-01-01T00:00:00Z"
            assert alert.ends_at is None
        else:
            assert alert.ends_at is not None
            assert alert.ends_at.tzinfo is UTC
            assert alert.ends_at > alert.starts_at


def test_the_mixed_group_keeps_each_alert_status() -> None:
    group = decode(fixture_payload("mixed"))
    assert group.status == "firing"
    assert sorted(alert.status for alert in group.alerts) == ["firing", "firing", "resolved"]


# --- what is accepted beyond the strict shape, and why ---------------------------------


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = fixture_payload("firing")
    raw["newField"] = {"anything": [1, 2]}
    raw["alerts"][0]["silencedBy"] = ["x"]
    assert decode(raw) == decode(fixture_payload("firing"))


def test_truncated_alerts_defaults_to_zero_for_alertmanager_before_0_22() -> None:
    raw = fixture_payload("firing")
    del raw["truncatedAlerts"]
    assert decode(raw).truncated_alerts == 0


@pytest.mark.parametrize("key", ["groupLabels", "commonLabels", "commonAnnotations"])
def test_go_nil_maps_in_the_group_become_empty_mappings(key: str) -> None:
    raw = fixture_payload("firing")
    raw[key] = None
    group = decode(raw)
    assert {
        "groupLabels": group.group_labels,
        "commonLabels": group.common_labels,
        "commonAnnotations": group.common_annotations,
    }[key] == {}


def test_a_nil_annotations_map_on_an_alert_becomes_empty() -> None:
    raw = fixture_payload("firing")
    raw["alerts"][1]["annotations"] = None
    assert decode(raw).alerts[1].annotations == {}


def test_times_with_offsets_and_nanoseconds_become_utc() -> None:
    raw = fixture_payload("firing")
    raw["alerts"][0]["startsAt"] = "2026-05-01T12:00:00.123456789+02:00"
    raw["alerts"][0]["endsAt"] = "2026-05-01T13:30:00-01:30"
    alert = decode(raw).alerts[0]
    assert alert.starts_at == datetime.datetime(2026, 5, 1, 10, 0, 0, 123457, tzinfo=UTC)
    assert alert.starts_at.tzinfo is UTC
    assert alert.ends_at == datetime.datetime(2026, 5, 1, 15, 0, tzinfo=UTC)


def test_unicode_labels_are_kept_exactly() -> None:
    raw = fixture_payload("firing")
    raw["alerts"][0]["labels"]["équipe"] = "平台 🚒"
    assert decode(raw).alerts[0].labels["équipe"] == "平台 🚒"


def test_max_alerts_is_inclusive() -> None:
    raw = fixture_payload("firing")
    assert len(decode(raw, max_alerts=3).alerts) == 3
    with pytest.raises(TooManyAlertsError) as caught:
        decode(raw, max_alerts=2)
    assert caught.value.http_status == 422
    assert str(caught.value).startswith("alerts: 3 alerts in one group, more than the 2 allowed")


# --- every field missing or mistyped: the message names it -----------------------------

GROUP_FIELDS = {
    "groupKey": ("a string", 5, "5"),
    "status": ('"firing" or "resolved"', "pending", '"pending"'),
    "receiver": ("a string", ["kb"], '["kb"]'),
    "groupLabels": ("an object or null", "x", '"x"'),
    "commonLabels": ("an object or null", 1.5, "1.5"),
    "commonAnnotations": ("an object or null", [], "[]"),
    "externalURL": ("a string", None, "null"),
    "alerts": ("an array", {}, "{}"),
}
ALERT_FIELDS = {
    "status": ('"firing" or "resolved"', "FIRING", '"FIRING"'),
    "labels": ("an object", None, "null"),
    "annotations": ("an object or null", "summary", '"summary"'),
    "startsAt": ("an RFC 3339 time", "yesterday", '"yesterday"'),
    "endsAt": ("an RFC 3339 time", 1714557600, "1714557600"),
    "generatorURL": ("a string", False, "false"),
    "fingerprint": ("a string", 12345, "12345"),
}


@pytest.mark.parametrize("key", [*GROUP_FIELDS, "version"])
def test_a_missing_group_field_is_named(key: str) -> None:
    raw = fixture_payload("firing")
    del raw[key]
    error = refusal(raw)
    assert (type(error), error.http_status) == (InvalidPayloadError, 422)
    assert str(error) == f"{key}: required field is missing"


@pytest.mark.parametrize("key", ALERT_FIELDS)
def test_a_missing_alert_field_is_named_with_the_alert_index(key: str) -> None:
    raw = fixture_payload("firing")
    del raw["alerts"][2][key]
    error = refusal(raw)
    assert (type(error), error.http_status) == (InvalidPayloadError, 422)
    assert str(error) == f"alerts[2].{key}: required field is missing"


@pytest.mark.parametrize(("key", "case"), GROUP_FIELDS.items(), ids=list(GROUP_FIELDS))
def test_a_mistyped_group_field_is_named_with_the_value(
    key: str, case: tuple[str, Any, str]
) -> None:
    expected, value, shown = case
    raw = fixture_payload("firing")
    raw[key] = value
    error = refusal(raw)
    assert (type(error), error.http_status) == (InvalidPayloadError, 422)
    assert str(error) == f"{key}: expected {expected}, got {shown}"


@pytest.mark.parametrize(("key", "case"), ALERT_FIELDS.items(), ids=list(ALERT_FIELDS))
def test_a_mistyped_alert_field_is_named_with_the_value(
    key: str, case: tuple[str, Any, str]
) -> None:
    expected, value, shown = case
    raw = fixture_payload("firing")
    raw["alerts"][1][key] = value
    error = refusal(raw)
    assert (type(error), error.http_status) == (InvalidPayloadError, 422)
    assert str(error) == f"alerts[1].{key}: expected {expected}, got {shown}"


def test_the_example_from_the_issue() -> None:
    raw = fixture_payload("firing")
    raw["alerts"][2]["startsAt"] = "yesterday"
    raw["alerts"].append(copy.deepcopy(raw["alerts"][2]))
    assert str(refusal(raw)) == 'alerts[2].startsAt: expected an RFC 3339 time, got "yesterday"'


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("labels", {"alertname": "X", "team": 5}, 'labels["team"]: expected a string, got 5'),
        ("annotations", {"summary": None}, 'annotations["summary"]: expected a string, got null'),
        (
            "labels",
            {"alertname": {"nested": "x"}},
            'labels["alertname"]: expected a string, got {"nested":"x"}',
        ),
    ],
)
def test_a_mistyped_label_value_names_the_label(where: str, value: Any, message: str) -> None:
    raw = fixture_payload("firing")
    raw["alerts"][0][where] = value
    assert str(refusal(raw)) == f"alerts[0].{message}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-05-01T12:00:00", "expected an RFC 3339 time with a time zone offset, got"
         ' "2026-05-01T12:00:00"'),
        ("2026-13-01T12:00:00Z", 'expected an RFC 3339 time, got "2026-13-01T12:00:00Z"'),
        ("0001-01-01T00:00:00+02:00", "time out of range in UTC, got"
         ' "0001-01-01T00:00:00+02:00"'),
        ("", 'expected an RFC 3339 time, got ""'),
    ],
)  # fmt: skip
def test_times_must_be_rfc3339_with_an_offset(value: str, message: str) -> None:
    raw = fixture_payload("firing")
    raw["alerts"][0]["startsAt"] = value
    assert str(refusal(raw)) == f"alerts[0].startsAt: {message}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "expected an integer >= 0, got -1"),
        (2**63, f"expected an integer <= {2**63 - 1}, got {2**63}"),
        (1.5, "expected an integer, got 1.5"),
        ("0", 'expected an integer, got "0"'),
    ],
)
def test_truncated_alerts_is_a_non_negative_int64(value: Any, message: str) -> None:
    raw = fixture_payload("firing")
    raw["truncatedAlerts"] = value
    assert str(refusal(raw)) == f"truncatedAlerts: {message}"


def test_an_empty_fingerprint_is_refused_since_idempotency_keys_on_it() -> None:
    raw = fixture_payload("firing")
    raw["alerts"][0]["fingerprint"] = ""
    assert str(refusal(raw)) == "alerts[0].fingerprint: must not be empty"


def test_a_long_offending_value_is_shortened_in_the_message() -> None:
    raw = fixture_payload("firing")
    raw["alerts"][0]["status"] = "x" * 10_000
    message = str(refusal(raw))
    assert message.startswith('alerts[0].status: expected "firing" or "resolved", got "xxx')
    assert message.endswith('..."')
    assert len(message) < 150


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([fixture_payload("firing")], "payload: expected an object, got an array"),
        ("v4", 'payload: expected an object, got "v4"'),
        (None, "payload: expected an object, got null"),
    ],
)
def test_the_body_must_be_an_object(body: Any, message: str) -> None:
    assert str(refusal(body)) == message


# --- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "shown"), [("5", '"5"'), ("3", '"3"'), (4, "4"), ("", '""')])
def test_an_unknown_version_is_refused_as_such(version: Any, shown: str) -> None:
    raw = fixture_payload("firing")
    raw["version"] = version
    error = refusal(raw)
    assert (type(error), error.http_status, error.reason) == (
        UnsupportedVersionError,
        422,
        "unknown_version",
    )
    assert (
        str(error)
        == f'version: unsupported payload version {shown} (this receiver reads version "4")'
    )


def test_the_version_is_reported_before_other_fields_of_a_different_schema() -> None:
    # A future version may rename fields: saying "alerts: required field is missing"
    # would send the operator looking in the wrong place.
    body = {"version": "5", "events": []}
    assert str(refusal(body)).startswith('version: unsupported payload version "5"')


# --- not JSON: 400 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "invalid JSON: the body is empty"),
        (b"  \n", "invalid JSON: the body is empty"),
        (b'{"version": "4", "alerts": [', "invalid JSON: input data was truncated"),
        (b"\xff\xfe{}", "invalid JSON: invalid character (byte 0)"),
        (b'{"version": "4"} trailing', "invalid JSON: trailing characters (byte 18)"),
        (b'{"receiver": "\\ud800"}', None),
        (b'{"version": "4", "receiver": "\xf3"}', "invalid JSON: not valid UTF-8"),
        (b'["\xf3"]', "invalid JSON: not valid UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "invalid JSON: nested too deeply"),
        (b'{"version": 5, "x": [1, 2', "invalid JSON: input data was truncated"),
    ],
)
def test_malformed_json_is_400(body: bytes, message: str | None) -> None:
    with pytest.raises(MalformedJSONError) as caught:
        decode_group(body, max_alerts=10)
    assert (caught.value.http_status, caught.value.reason) == (400, "invalid_json")
    if message is not None:
        assert str(caught.value) == message
    assert str(caught.value).startswith("invalid JSON: ")
