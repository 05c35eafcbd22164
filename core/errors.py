"""The error types of kube-ballast, drawn once so every layer raises the same few.

Callers decide what to do from the *class* of an error, never from its message: the
command line turns a ``ConfigError`` into one line on stderr and exit status 2; a
source's refresh loop retries a ``TemporaryError`` after its ``delay`` and keeps the
last good snapshot; a remediation that meets a ``PermanentError`` is recorded as failed
and not retried. Client libraries' own exceptions (aiohttp, kubernetes-asyncio) are
wrapped at our boundary with ``raise ... from error`` so the original stays attached.

The hierarchy::

    KubeBallastError                   anything kube-ballast raises on purpose
     ├── ConfigError                   the configuration is wrong: key path + one sentence
     ├── TemporaryError(delay=)        may succeed later: retry after ``delay`` seconds
     │                                 (429/5xx from an apiserver, etcd leader election,
     │                                 a refused connection)
     └── PermanentError                retrying cannot help (403, 404, a malformed
                                       response, a precondition that no longer holds)
"""

from __future__ import annotations

__all__ = ["ConfigError", "KubeBallastError", "PermanentError", "TemporaryError"]


class KubeBallastError(Exception):
    """Base class of every error kube-ballast raises on purpose."""


class ConfigError(KubeBallastError):
    """The configuration is invalid.

    ``key_path`` names the offending setting the way a user writes it
    (``exporter.etcd.clusters[1].endpoints``); it is empty for problems with the
    document as a whole (an unreadable file, a YAML syntax error). ``str()`` of the
    error is always one line: ``"<key_path>: <reason>"`` or just ``"<reason>"``.
    """

    def __init__(self, reason: str, *, key_path: str = "") -> None:
        # One line, whatever the caller passed: the CLI prints it verbatim to stderr.
        self.reason = " ".join(reason.split())
        self.key_path = key_path
        super().__init__(f"{key_path}: {self.reason}" if key_path else self.reason)


class TemporaryError(KubeBallastError):
    """A failure that may go away: the caller retries after ``delay`` seconds.

    ``delay`` is the server's ``Retry-After`` when it sent one, otherwise the caller's
    backoff decides and ``delay`` is ``None``.
    """

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(KubeBallastError):
    """A failure that retrying cannot fix; the caller records it and gives up."""
