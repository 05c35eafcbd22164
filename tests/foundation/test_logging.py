"""Logging: JSON lines that parse, context fields that travel, credentials that never
appear in a line, whatever route they take (message, arguments, extras, tracebacks)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from kubeballast.core.logging import REDACTED, get_logger, redact, setup_logging

TOKEN = "s3cr3t-T0ken.value_42"
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl"


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def json_stream(restore_root_logger: None) -> io.StringIO:
    stream = io.StringIO()
    setup_logging("DEBUG", "json", stream=stream)
    return stream


@pytest.fixture
def text_stream(restore_root_logger: None) -> io.StringIO:
    stream = io.StringIO()
    setup_logging("DEBUG", "text", stream=stream)
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_standard_fields_and_the_context(json_stream: io.StringIO) -> None:
    log = get_logger("kubeballast.exporter.probe", target="apiserver-1")
    log.info("probe took %.1f s", 0.25, extra={"attempt": 2})
    [line] = json_lines(json_stream)
    assert line["level"] == "INFO"
    assert line["logger"] == "kubeballast.exporter.probe"
    assert line["message"] == "probe took 0.2 s"
    assert line["target"] == "apiserver-1"
    assert line["attempt"] == 2
    assert isinstance(line["ts"], str)
    assert line["ts"].endswith("Z")


def test_a_bound_adapter_adds_context_and_a_call_can_override_it(
    json_stream: io.StringIO,
) -> None:
    log = get_logger("kubeballast.remediations", alert="EtcdNoLeader").bind(attempt=1)
    log.warning("paused", extra={"attempt": 3})
    [line] = json_lines(json_stream)
    assert (line["alert"], line["attempt"]) == ("EtcdNoLeader", 3)


def test_context_fields_do_not_replace_the_standard_fields(json_stream: io.StringIO) -> None:
    get_logger("x", level="mine").info("hello")
    [line] = json_lines(json_stream)
    assert (line["level"], line["extra_level"]) == ("INFO", "mine")


def test_exceptions_are_one_json_line(json_stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    [line] = json_lines(json_stream)
    assert "ValueError: boom" in str(line["exc_info"])


def test_text_lines_show_level_logger_message_and_context(text_stream: io.StringIO) -> None:
    get_logger("kubeballast.cli", command="exporter", note="two words").info("started")
    line = text_stream.getvalue().rstrip("\n")
    assert ' INFO    kubeballast.cli: started command=exporter note="two words"' in line


def test_the_level_filters(restore_root_logger: None) -> None:
    stream = io.StringIO()
    setup_logging("WARNING", "text", stream=stream)
    logging.getLogger("x").info("quiet")
    logging.getLogger("x").warning("loud")
    assert "quiet" not in stream.getvalue()
    assert "loud" in stream.getvalue()


def test_setting_up_again_replaces_the_handler(restore_root_logger: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", "text", stream=first)
    setup_logging("INFO", "json", stream=second)
    logging.getLogger("x").info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


# --- redaction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Authorization: Bearer {TOKEN}", f"Authorization: {REDACTED}"),
        (f"{{'Authorization': 'Bearer {TOKEN}'}}", f"{{'Authorization': '{REDACTED}'}}"),
        (f'{{"authorization": "Basic {TOKEN}"}}', f'{{"authorization": "{REDACTED}"}}'),
        (f"sent bearer {TOKEN} to the apiserver", f"sent bearer {REDACTED} to the apiserver"),
        (f"GET /watch?token={TOKEN}&x=1", f"GET /watch?token={REDACTED}&x=1"),
        (f"password={TOKEN}", f"password={REDACTED}"),
        (f"kubeconfig user token: {TOKEN}", f"kubeconfig user token: {REDACTED}"),
        (f"service account {JWT} expired", f"service account {REDACTED} expired"),
        ("bearer_token_file: /var/run/token", "bearer_token_file: /var/run/token"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_token_never_reaches_a_json_line(json_stream: io.StringIO) -> None:
    log = get_logger("kubeballast.exporter.http", header=f"Bearer {TOKEN}")
    log.info("request headers %s", {"Authorization": f"Bearer {TOKEN}"})
    log.info("nested", extra={"request": {"headers": {"Authorization": f"Bearer {TOKEN}"}}})
    log.info("jwt %s", JWT)
    try:
        raise PermissionError(f"401 for Authorization: Bearer {TOKEN}")
    except PermissionError:
        log.exception("probe failed")
    output = json_stream.getvalue()
    assert TOKEN not in output
    assert JWT not in output
    assert REDACTED in output
    assert len(json_lines(json_stream)) == 4  # still valid JSON after redaction


def test_a_token_never_reaches_a_text_line(text_stream: io.StringIO) -> None:
    log = logging.getLogger("kubeballast.remediations.receiver")
    log.warning("rejected webhook with Authorization: Bearer %s", TOKEN)
    log.warning("headers", extra={"authorization": f"Bearer {TOKEN}"})
    log.warning("stack", stack_info=True, extra={"token_seen": f"token={TOKEN}"})
    assert TOKEN not in text_stream.getvalue()
