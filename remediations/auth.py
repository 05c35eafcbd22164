"""Who may talk to the receiver: Alertmanager's credentials, and optional TLS.

Whoever can post to the webhook can make the receiver act on the cluster, so
authentication is on by default. The receiver accepts exactly what Alertmanager's
``http_config`` can send:

- a bearer token (``authorization: {credentials_file: ...}``), checked against
  ``receiver.auth.bearer_token_file``;
- HTTP basic auth (``basic_auth: {username, password_file}``), checked against
  ``receiver.auth.basic_auth_username`` and ``basic_auth_password_file``;
- with ``receiver.tls``, a client certificate signed by ``client_ca_file``
  (``tls_config.cert_file``), verified by the TLS handshake itself.

When both a token and basic auth are configured, either one admits a request. With
neither, the receiver refuses to start (:class:`ConfigError` naming ``receiver.auth``)
unless ``allow_unauthenticated: true`` says explicitly that this is a test or a demo.

Secrets are compared with :func:`hmac.compare_digest` on bytes, so the time a
comparison takes does not reveal how much of a guess was right; for basic auth both
the user name and the password are always compared, so a wrong user name is not
faster than a wrong password.

**Rotation.** The secret files are read at start (a missing or empty file is a
configuration error) and then re-read when they change: at most once a second a
request ``stat()``s the file and reloads it when its inode, size or modification time
differs. A Kubernetes Secret volume updates by swapping a symlink, and Alertmanager
re-reads its ``credentials_file`` on every request, so a rotated token is honoured on
both sides within seconds and without a restart. If a changed file cannot be read
or is empty, the last good secret stays in force (a warning is logged once per
change): failing open is not an option, and refusing everyone would stop
remediations over a half-written file.

Nothing here logs a header or a secret; log lines name the file, never its content.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from kubeballast.core.config import ReceiverAuthConfig, ReceiverTLSConfig
from kubeballast.core.errors import ConfigError

__all__ = [
    "AUTHENTICATOR_KEY",
    "REALM",
    "Authenticator",
    "FileSecret",
    "authenticated",
    "server_ssl_context",
]

log = logging.getLogger(__name__)

REALM = "kube-ballast"
RECHECK_SECONDS = 1.0
"""How often at most a secret file is stat()ed for changes: rotation takes effect
within a second, and a burst of webhooks costs one stat() a second, not one each."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class _Stamp:
    inode: int
    size: int
    mtime_ns: int


class FileSecret:
    """A secret kept in a file (a token, a password), reloaded when the file changes.

    ``clock`` is a monotonic clock in seconds (a parameter so tests can step it).
    """

    def __init__(
        self,
        path: str,
        *,
        key_path: str,
        clock: Callable[[], float] = time.monotonic,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self.path = path
        self._clock = clock
        self._recheck = recheck_seconds
        try:
            self._stamp, self._value = self._load()
        except OSError as error:
            reason = (error.strerror or str(error)).lower()
            raise ConfigError(f"cannot read {path}: {reason}", key_path=key_path) from None
        except ValueError:
            raise ConfigError(f"{path} is empty", key_path=key_path) from None
        self._checked_at = clock()
        self._warned = False
        self._failed_stamp: _Stamp | None = None

    def _load(self) -> tuple[_Stamp, bytes]:
        with open(self.path, "rb") as file:
            info = os.fstat(file.fileno())
            # Alertmanager (Prometheus' common config) trims the file the same way.
            value = file.read().strip()
        if not value:
            raise ValueError("empty")
        return _Stamp(info.st_ino, info.st_size, info.st_mtime_ns), value

    def value(self) -> bytes:
        """The current secret: the file's content without surrounding whitespace."""
        now = self._clock()
        if now - self._checked_at >= self._recheck:
            self._checked_at = now
            self._refresh()
        return self._value

    def _refresh(self) -> None:
        try:
            info = os.stat(self.path)
        except OSError as error:
            self._keep_last(None, error.strerror or str(error))
            return
        stamp = _Stamp(info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            self._stamp, self._value = self._load()
        except (OSError, ValueError) as error:
            self._keep_last(stamp, "empty" if isinstance(error, ValueError) else str(error))
            return
        self._warned = False
        log.info("reloaded the secret in %s", self.path)

    def _keep_last(self, stamp: _Stamp | None, reason: str) -> None:
        if self._warned and self._failed_stamp == stamp:
            return  # already said so for this state of the file
        log.warning(
            "cannot reload the secret in %s (%s); the previous one stays in force",
            self.path,
            reason.lower(),
        )
        self._warned, self._failed_stamp = True, stamp


class Authenticator:
    """Checks a request's ``Authorization`` header against the configured credentials."""

    def __init__(
        self,
        *,
        bearer: FileSecret | None = None,
        basic: tuple[str, FileSecret] | None = None,
        allow_unauthenticated: bool = False,
    ) -> None:
        if bearer is None and basic is None and not allow_unauthenticated:
            raise ConfigError(
                "no authentication configured: set bearer_token_file, or"
                " basic_auth_username and basic_auth_password_file"
                " (allow_unauthenticated: true is for tests and demos only)",
                key_path="receiver.auth",
            )
        self._bearer = bearer
        self._basic = None if basic is None else (basic[0].encode(), basic[1])
        self.open = bearer is None and basic is None

    @classmethod
    def from_config(cls, config: ReceiverAuthConfig) -> Authenticator:
        """Read the configured secret files; :class:`ConfigError` if they are unusable."""
        bearer = None
        if config.bearer_token_file is not None:
            bearer = FileSecret(
                config.bearer_token_file, key_path="receiver.auth.bearer_token_file"
            )
        basic = None
        if config.basic_auth_username is not None and config.basic_auth_password_file is not None:
            password = FileSecret(
                config.basic_auth_password_file, key_path="receiver.auth.basic_auth_password_file"
            )
            basic = (config.basic_auth_username, password)
        authenticator = cls(
            bearer=bearer, basic=basic, allow_unauthenticated=config.allow_unauthenticated
        )
        if authenticator.open:
            log.warning(
                "receiver.auth.allow_unauthenticated is true: anyone who can reach the"
                " receiver can send it alerts (for tests and demos only)"
            )
        return authenticator

    def check(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries valid credentials."""
        if self.open:
            return True
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer" and self._bearer is not None:
            return hmac.compare_digest(credentials.encode(), self._bearer.value())
        if scheme == "basic" and self._basic is not None:
            return self._check_basic(credentials)
        return False

    def _check_basic(self, credentials: str) -> bool:
        assert self._basic is not None
        try:
            decoded = base64.b64decode(credentials.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            return False
        user, separator, password = decoded.partition(b":")
        if not separator:
            return False
        expected_user, expected_password = self._basic
        # Both comparisons always run (& rather than `and`): a wrong user name must not
        # answer faster than a wrong password.
        user_ok = hmac.compare_digest(user, expected_user)
        password_ok = hmac.compare_digest(password, expected_password.value())
        return user_ok & password_ok

    def challenges(self) -> list[str]:
        """``WWW-Authenticate`` values for a 401: one per accepted scheme (RFC 9110)."""
        values = []
        if self._bearer is not None:
            values.append(f'Bearer realm="{REALM}"')
        if self._basic is not None:
            values.append(f'Basic realm="{REALM}", charset="UTF-8"')
        return values

    def require(self, request: web.Request) -> None:
        """Raise 401 with the challenges unless ``request`` is authenticated."""
        if self.check(request.headers.get("Authorization")):
            return
        log.warning(
            "refused %s %s from %s: missing or wrong credentials",
            request.method,
            request.path,
            request.remote,
        )
        response = web.HTTPUnauthorized(
            text='{"status":"rejected","error":"missing or wrong credentials"}',
            content_type="application/json",
        )
        for value in self.challenges():
            response.headers.add("WWW-Authenticate", value)
        raise response


AUTHENTICATOR_KEY = web.AppKey("authenticator", Authenticator)
"""The receiver application's :class:`Authenticator`, for every authenticated route."""


def authenticated(handler: Handler) -> Handler:
    """Wrap a route handler so that it runs only for authenticated requests.

    For the engine's endpoints (``GET /records``, ``POST /approvals/{id}``): they use
    the same credentials as the webhook, from the application's
    :data:`AUTHENTICATOR_KEY`.
    """

    async def wrapper(request: web.Request) -> web.StreamResponse:
        request.app[AUTHENTICATOR_KEY].require(request)
        return await handler(request)

    wrapper.__name__ = getattr(handler, "__name__", "handler")
    wrapper.__doc__ = handler.__doc__
    return wrapper


def server_ssl_context(config: ReceiverTLSConfig) -> ssl.SSLContext | None:
    """The listening socket's TLS context, or None for plain HTTP.

    With ``client_ca_file`` the handshake requires a client certificate signed by one
    of its CAs: a client without one never reaches a handler.
    """
    if config.cert_file is None or config.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.cert_file, config.key_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"cannot load {config.cert_file} with {config.key_file}: {_reason(error)}",
            key_path="receiver.tls.cert_file",
        ) from None
    if config.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=config.client_ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"cannot load {config.client_ca_file}: {_reason(error)}",
                key_path="receiver.tls.client_ca_file",
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _reason(error: OSError | ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason.lower().replace("_", " ") if error.reason else "invalid PEM"
    return (error.strerror or str(error)).lower()
