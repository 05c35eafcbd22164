"""Decoding Alertmanager's webhook body into the typed :class:`~.contract.AlertGroup`.

The webhook is the receiver's only door from the outside, and what comes through it
drives remediations, so the body is validated completely before anything else sees
it: a group is either decoded whole into the contract's frozen objects or refused
with one message that names the offending field the way the JSON spells it::

    alerts[3].startsAt: expected an RFC 3339 time, got "yesterday"

Decoding is msgspec's typed JSON decoder into the ``_Wire*`` structs below, which
mirror payload version 4 (Alertmanager's ``notify/webhook.Message``). It validates
while it parses, in one pass over the bytes (a 5000-alert group in a few
milliseconds), and its errors carry a path (``$.alerts[3].startsAt``). msgspec's
messages do not quote the value that failed, so on the error path only the body is
decoded a second time, untyped, to find and show that value. Errors are rare and the
sender's fault; the successful path pays for neither.

What is accepted, and why:

- Unknown fields are ignored: newer Alertmanagers add fields, and an additive change
  must not stop remediations.
- ``truncatedAlerts`` defaults to 0 when absent (Alertmanager before 0.22 did not send
  it); every other field is required, with the types Alertmanager sends.
- ``annotations``, ``groupLabels``, ``commonLabels`` and ``commonAnnotations`` may be
  ``null``: Go encodes a nil map that way. They become empty mappings.
- ``version`` must be ``"4"``. It is checked before anything else, so a payload of an
  unknown version is reported as such rather than as whichever field changed.
- Times must be RFC 3339 with an offset; they are converted to UTC here, so a time the
  engine cannot do arithmetic on (year 1 at +02:00 is year 0 in UTC) is refused now
  rather than failing later. ``endsAt`` at Go's zero time (``0001-01-01T00:00:00Z``)
  means "still firing" and becomes ``None``.
- ``fingerprint`` must not be empty: the engine keys idempotency on it.
- JSON that is malformed, not UTF-8, or nested deeper than the decoder's recursion
  limit is :class:`MalformedJSONError` (HTTP 400); everything else is a 422.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any

import msgspec

from kubeballast.core.errors import PermanentError
from kubeballast.remediations.contract import Alert, AlertGroup, AlertStatus

__all__ = [
    "SUPPORTED_VERSION",
    "InvalidPayloadError",
    "MalformedJSONError",
    "PayloadError",
    "TooManyAlertsError",
    "UnsupportedVersionError",
    "decode_group",
]

SUPPORTED_VERSION = "4"
"""The webhook payload version this receiver reads (Alertmanager 0.x sends "4")."""

_INT64_MAX = 2**63 - 1
_GO_ZERO_TIME = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)
_SHOWN_VALUE_CHARS = 60
"""Longest rendering of an offending value in a message: enough to recognise it, and a
message must not echo megabytes of the sender's body back into logs."""


# --------------------------------------------------------------------------------------
# Errors: the sender's fault, so retrying the same body cannot help
# --------------------------------------------------------------------------------------


class PayloadError(PermanentError):
    """The body is not an acceptable webhook payload.

    ``http_status`` is what the webhook answers and ``reason`` the bounded label value
    its metrics count the refusal under; ``str()`` is one line for the sender.
    """

    http_status = 422
    reason = "invalid_payload"


class MalformedJSONError(PayloadError):
    """Not JSON at all (syntax, encoding, nesting): HTTP 400."""

    http_status = 400
    reason = "invalid_json"


class InvalidPayloadError(PayloadError):
    """JSON, but a field is missing or has the wrong type or value: HTTP 422."""


class UnsupportedVersionError(PayloadError):
    """A payload version other than :data:`SUPPORTED_VERSION`: HTTP 422."""

    reason = "unknown_version"


class TooManyAlertsError(PayloadError):
    """More alerts than ``receiver.max_alerts``: HTTP 422."""

    reason = "too_many_alerts"


# --------------------------------------------------------------------------------------
# The wire format (Alertmanager's notify/webhook.Message and template.Data)
# --------------------------------------------------------------------------------------

_Time = Annotated[datetime.datetime, msgspec.Meta(tz=True)]
_KV = dict[str, str]


class _WireAlert(
    msgspec.Struct,
    rename={"starts_at": "startsAt", "ends_at": "endsAt", "generator_url": "generatorURL"},
):
    status: AlertStatus
    labels: _KV
    annotations: _KV | None
    starts_at: _Time
    ends_at: _Time
    generator_url: str
    fingerprint: Annotated[str, msgspec.Meta(min_length=1)]


class _WireGroup(
    msgspec.Struct,
    rename={
        "group_key": "groupKey",
        "group_labels": "groupLabels",
        "common_labels": "commonLabels",
        "common_annotations": "commonAnnotations",
        "external_url": "externalURL",
        "truncated_alerts": "truncatedAlerts",
    },
):
    version: str
    group_key: str
    status: AlertStatus
    receiver: str
    group_labels: _KV | None
    common_labels: _KV | None
    common_annotations: _KV | None
    external_url: str
    alerts: list[_WireAlert]
    truncated_alerts: Annotated[int, msgspec.Meta(ge=0, le=_INT64_MAX)] = 0


_DECODER = msgspec.json.Decoder(_WireGroup)
_UNTYPED = msgspec.json.Decoder()


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


def decode_group(body: bytes, *, max_alerts: int) -> AlertGroup:
    """Decode and validate one webhook body; raise a :class:`PayloadError` subclass.

    Pure and synchronous: no I/O, nothing recorded, so a refused body changes nothing.
    """
    if not body or body.isspace():
        raise MalformedJSONError("invalid JSON: the body is empty")
    try:
        wire = _DECODER.decode(body)
    except msgspec.ValidationError as error:
        raise _explain(body, error) from None
    except msgspec.DecodeError as error:
        raise MalformedJSONError(f"invalid JSON: {_decode_reason(error)}") from None
    except RecursionError:
        raise MalformedJSONError("invalid JSON: nested too deeply") from None
    except UnicodeDecodeError:
        # msgspec raises this (not DecodeError) for invalid UTF-8 inside a string.
        raise MalformedJSONError("invalid JSON: not valid UTF-8") from None
    if wire.version != SUPPORTED_VERSION:
        raise _unsupported(wire.version)
    if len(wire.alerts) > max_alerts:
        raise TooManyAlertsError(
            f"alerts: {len(wire.alerts)} alerts in one group, more than the"
            f" {max_alerts} allowed (receiver.max_alerts; Alertmanager's"
            " webhook_configs[].max_alerts can truncate groups)"
        )
    return AlertGroup(
        version=wire.version,
        group_key=wire.group_key,
        status=wire.status,
        receiver=wire.receiver,
        group_labels=wire.group_labels or {},
        common_labels=wire.common_labels or {},
        common_annotations=wire.common_annotations or {},
        external_url=wire.external_url,
        truncated_alerts=wire.truncated_alerts,
        alerts=tuple(_alert(index, alert) for index, alert in enumerate(wire.alerts)),
    )


def _alert(index: int, wire: _WireAlert) -> Alert:
    ends_at = _utc(wire.ends_at, f"alerts[{index}].endsAt")
    return Alert(
        status=wire.status,
        labels=wire.labels,
        annotations=wire.annotations or {},
        starts_at=_utc(wire.starts_at, f"alerts[{index}].startsAt"),
        ends_at=None if ends_at == _GO_ZERO_TIME else ends_at,
        generator_url=wire.generator_url,
        fingerprint=wire.fingerprint,
    )


def _utc(value: datetime.datetime, path: str) -> datetime.datetime:
    if value.utcoffset() == datetime.timedelta(0):
        return value if value.tzinfo is datetime.UTC else value.replace(tzinfo=datetime.UTC)
    try:
        return value.astimezone(datetime.UTC)
    except OverflowError:
        raise InvalidPayloadError(
            f"{path}: time out of range in UTC, got {_show(value.isoformat())}"
        ) from None


def _unsupported(version: object) -> UnsupportedVersionError:
    return UnsupportedVersionError(
        f"version: unsupported payload version {_show(version)}"
        f' (this receiver reads version "{SUPPORTED_VERSION}")'
    )


def _decode_reason(error: msgspec.DecodeError) -> str:
    text = str(error).removeprefix("JSON is malformed: ")
    return text[:1].lower() + text[1:] if text else "malformed"


# --------------------------------------------------------------------------------------
# msgspec's validation errors, as messages that name the field and show the value
# --------------------------------------------------------------------------------------

_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_SEGMENT = re.compile(r"\.(?P<name>[^.\[]+)|\[(?P<index>\d+|\.\.\.)\]")
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "null": "null",
    "object": "an object",
    "array": "an array",
    "datetime": "an RFC 3339 time",
}
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_EXPECTED = re.compile(r"^Expected `(?P<types>[^`]+)`(?P<rest>.*?)(?:, got `[^`]+`)?$")
_ENUM = re.compile(r"^Invalid enum value ")


def _explain(body: bytes, error: msgspec.ValidationError) -> PayloadError:
    """Turn a typed-decode failure into the error the sender should read."""
    try:
        document: Any = _UNTYPED.decode(body)
    except msgspec.ValidationError:
        document = _UNAVAILABLE  # valid JSON with a number out of range: no value to show
    except msgspec.DecodeError as decode_error:
        # The typed decoder stopped at a type error before reaching a syntax error
        # further on: the body is not JSON after all, which is the more basic problem.
        return MalformedJSONError(f"invalid JSON: {_decode_reason(decode_error)}")
    except RecursionError:
        return MalformedJSONError("invalid JSON: nested too deeply")
    except UnicodeDecodeError:
        return MalformedJSONError("invalid JSON: not valid UTF-8")

    if isinstance(document, dict) and document.get("version") != SUPPORTED_VERSION:
        if "version" not in document:
            return InvalidPayloadError("version: required field is missing")
        return _unsupported(document["version"])

    match = _AT.match(str(error))
    assert match is not None  # the pattern matches any text
    message, raw_path = match["message"], match["path"] or ""
    path, value = _resolve(document, raw_path)

    if missing := _MISSING.match(message):
        return InvalidPayloadError(f"{_join(path, missing['field'])}: required field is missing")
    where = path or "payload"
    got = "" if value is _UNAVAILABLE else f", got {_show(value)}"
    if _ENUM.match(message):
        return InvalidPayloadError(f'{where}: expected "firing" or "resolved"{got}')
    if message.startswith("Invalid RFC3339 encoded datetime"):
        return InvalidPayloadError(f"{where}: expected an RFC 3339 time{got}")
    if message == "Expected `datetime` with a timezone component":
        return InvalidPayloadError(
            f"{where}: expected an RFC 3339 time with a time zone offset{got}"
        )
    if message == "Number out of range":
        return InvalidPayloadError(f"{where}: number out of range{got}")
    if expected := _EXPECTED.match(message):
        wanted = " or ".join(
            _TYPE_NAMES.get(name.strip(), name.strip()) for name in expected["types"].split("|")
        )
        rest = expected["rest"].strip()
        if rest.startswith("of length >= 1"):
            return InvalidPayloadError(f"{where}: must not be empty")
        if rest:
            wanted = f"{wanted} {rest}"
        return InvalidPayloadError(f"{where}: expected {wanted}{got}")
    # A message this mapping does not know (a newer msgspec): still name the field.
    return InvalidPayloadError(f"{where}: {message.replace('`', '')}{got}")


class _Unavailable:
    """The offending value could not be found (or the body could not be re-read)."""


_UNAVAILABLE: Any = _Unavailable()


def _resolve(document: Any, raw_path: str) -> tuple[str, Any]:
    """Follow msgspec's path (``.alerts[3].labels[...]``) through the untyped document.

    Returns the path as the sender reads it (``alerts[3].labels["team"]``) and the value
    found there. msgspec writes ``[...]`` for "some value of this mapping"; all our
    mappings map strings to strings, so the offending entry is the first non-string.
    """
    parts: list[str] = []
    node: Any = document
    for segment in _SEGMENT.finditer(raw_path):
        if segment["name"] is not None:
            name = segment["name"]
            parts.append(f".{name}" if parts else name)
            node = node.get(name, _UNAVAILABLE) if isinstance(node, dict) else _UNAVAILABLE
        elif segment["index"] == "...":
            key = _first_non_string(node)
            if key is None:
                parts.append("[...]")
                node = _UNAVAILABLE
            else:
                parts.append(f"[{msgspec.json.encode(key).decode()}]")
                node = node[key]
        else:
            index = int(segment["index"])
            parts.append(f"[{index}]")
            node = node[index] if isinstance(node, list) and index < len(node) else _UNAVAILABLE
    return "".join(parts), node


def _first_non_string(node: Any) -> str | None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(value, str):
                return str(key)
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(value: Any) -> str:
    """A JSON value as the sender wrote it, shortened for a one-line message."""
    if isinstance(value, datetime.datetime):
        value = value.isoformat()
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, ValueError, OverflowError):
        text = type(value).__name__
    if isinstance(value, dict):
        text = "an object" if len(text) > _SHOWN_VALUE_CHARS else text
    elif isinstance(value, list):
        text = "an array" if len(text) > _SHOWN_VALUE_CHARS else text
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[: _SHOWN_VALUE_CHARS - 4] + '..."'
    return text
