"""Logging set-up shared by every component: text or JSON lines, context, redaction.

Modules log through ``logging.getLogger(__name__)`` with %-style arguments, as the
standard library intends; only the command line calls ``setup_logging``, once, after
the configuration is validated. Context that belongs to a unit of work (the target
being probed, the alert being handled) travels in a ``ContextAdapter`` rather than in
the message text, so JSON output keeps it as separate fields that log pipelines can
filter on.

Credentials must never reach a log line: the exporter sends bearer tokens and the
receiver checks them, and a debug message or an exception text that echoes a request
header would leak one. ``RedactingFilter`` rewrites every record that passes the
handler, and both formatters pass their final line through ``redact()`` again, so a
token hidden in a nested ``extra`` value or a traceback is caught too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = [
    "REDACTED",
    "ContextAdapter",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "get_logger",
    "redact",
    "setup_logging",
]

REDACTED = "<redacted>"

# Authorization-style headers and secret-named keys, in "key: value", "key=value" and
# JSON/dict-repr forms: keep the key, hide the value (with its scheme, if any).
_SECRET_KEY_VALUE = re.compile(
    r"(?i)(?<![\w-])"
    r"(authorization|proxy-authorization|x-auth-token|token|access_token|id_token"
    r"|refresh_token|password|passwd|secret|client_secret|api_key|apikey)"
    r"(?![\w-])"
    r"([\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:bearer|basic)\s+)?[^\s\"',;}&]+"
)
# A bare "Bearer <token>" / "Basic <credentials>" anywhere.
_SCHEME_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*")
# JSON Web Tokens (Kubernetes service account tokens are JWTs): header.payload.signature.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``<redacted>``."""
    text = _SECRET_KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _SCHEME_CREDENTIALS.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _JWT.sub(REDACTED, text)


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES}


class RedactingFilter(logging.Filter):
    """Rewrites a record so its message, string extras and exception text are redacted.

    Attached to the handler (filters on a logger do not see records propagated from
    child loggers). The message is rendered once here and the arguments dropped, so
    a formatter cannot reintroduce a secret through ``%`` formatting.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the context fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            payload[f"extra_{key}" if key in payload else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc_info"] = record.exc_text
        if record.stack_info:
            payload["stack_info"] = record.stack_info
        return redact(json.dumps(payload, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: message key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        context = " ".join(f"{k}={_text_value(v)}" for k, v in _extras(record).items())
        if context:
            line = f"{line} {context}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return redact(line)


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or any(c.isspace() for c in text) else text


_installed: logging.Handler | None = None


def setup_logging(
    level: str = "INFO",
    fmt: Literal["text", "json"] = "text",
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as text or JSON.

    Calling it again replaces the handler it installed before, so tests and a command
    that learns its log level late can call it more than once.
    """
    global _installed
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
        _installed.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    _installed = handler
    return handler


class ContextAdapter(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds fixed context fields to every record (``extra``).

    Fields given to a single call (``log.info("...", extra={...})``) win over the
    adapter's. ``bind()`` returns a new adapter with more fields.
    """

    def __init__(self, logger: logging.Logger, context: Mapping[str, object] | None = None):
        super().__init__(logger, dict(context or {}))

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs

    def bind(self, **context: object) -> ContextAdapter:
        """A new adapter with ``context`` added to this one's fields."""
        return ContextAdapter(self.logger, {**(self.extra or {}), **context})


def get_logger(name: str, **context: object) -> ContextAdapter:
    """``logging.getLogger(name)`` wrapped to carry ``context`` in every record."""
    return ContextAdapter(logging.getLogger(name), context)
