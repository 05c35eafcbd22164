"""HTTP access to one control-plane target, with failures as ``SourceError`` reasons.

Every HTTP source (apiserver /readyz and /metrics, scheduler and controller-manager
/healthz and /metrics) talks to its target through a :class:`TargetClient` built from
the target's ``TargetConfig``, so TLS, credentials, timeouts and the mapping of failures
onto the bounded ``reason`` label are done once, the same way for all of them:

- ``connect``: refused, reset, DNS failure; also a server that refuses our client
  certificate, since it simply drops the connection;
- ``tls``: server certificate not trusted, handshake failure, unusable CA/cert/key file;
- ``auth``: 401, 403, or the bearer token file unreadable;
- ``throttled``: 429, ``delay`` from its Retry-After (delta seconds or HTTP date);
- ``not_found``: 404; ``http_4xx``: any other 4xx;
- ``http_5xx``: 5xx, ``delay`` from Retry-After when the server sent one;
- ``timeout``: no complete answer within the target's ``timeout_seconds``;
- ``parse``: a body larger than the limit.

Two ways to ask: :meth:`TargetClient.get` wants a 2xx and raises for anything else (a
metrics scrape); :meth:`TargetClient.get_ok_or_status` hands back any answer that *is*
the target's verdict, such as the 500 of ``/readyz`` whose body lists the failed checks,
and raises only for answers that say nothing about health (401/403: our credentials;
429: the target is shedding load, which a collector should see as such).

The bearer token file is read on every request, not once: projected service account
tokens rotate every hour or so, and a cached token would start failing with 401 until a
restart. The token never appears in logs or error messages. ``insecure_skip_verify`` is
honoured but logged as a warning naming the target, once per client.

One aiohttp ``ClientSession`` per client, created on first use (inside the event loop),
closed by :meth:`TargetClient.close` or ``async with``.

:class:`SharedMetricsScrape` is the one ``/metrics`` scrape of a target that several
areas read (an apiserver's page feeds both the congestion verdict in
``exporter/apiserver.py`` and the object counts in ``exporter/objects.py``). The page is
tens of megabytes on a 5000-node apiserver, and each fetch costs the apiserver the
rendering of every series and each parse costs the exporter a CPU-second or more, so
it is fetched and parsed once per interval, for the union of the families its readers
want, and every reader gets the same result, errors included:

- each reader takes a given scrape at most once: a reader that already took the latest
  scrape starts the next one, and the others take that one when their turn comes, if
  it finished no longer ago than their own interval (so of two readers on different
  intervals the shorter one drives the fetches, and a reader that refreshes twice in a
  row never gets the same page twice);
- a reader that comes while a fetch is in flight waits for it rather than sending a
  second request; the fetch is shielded, so a reader that gives up (its refresh timed
  out) does not cancel it for the others, and may take it on its next refresh;
- a failed fetch is every reader's failure (each source still counts it under its own
  ``kind``), and a reader retrying after its backoff starts a new fetch;
- a page that does not parse as a whole is parsed once more per reader, for its own
  families only, so that a malformed line fails only the readers that want its family,
  as when each read the page on its own.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import aiohttp

from kubeballast import __version__
from kubeballast.core import promtext
from kubeballast.core.config import TargetConfig
from kubeballast.exporter.contract import SourceError

__all__ = [
    "IN_CLUSTER_APISERVER_URL",
    "MAX_BODY_BYTES",
    "METRICS_ACCEPT",
    "PARSE_ALLOWANCE_SECONDS",
    "SERVICE_ACCOUNT_DIR",
    "Families",
    "HttpResult",
    "MetricsPageReader",
    "SharedMetricsScrape",
    "TargetClient",
    "default_in_cluster_apiserver",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
IN_CLUSTER_APISERVER_URL = "https://kubernetes.default.svc"

MAX_BODY_BYTES = 256 * 1024 * 1024
"""Refuse bodies larger than this: an apiserver's /metrics in a 5000-node cluster is tens
of megabytes; anything near this limit is a misdirected request, not a metrics page."""

USER_AGENT = f"kube-ballast-exporter/{__version__}"

METRICS_ACCEPT = "text/plain;version=0.0.4"
"""The classic text format: what ``core/promtext`` reads, and what every Kubernetes
component serves when asked (client_golang would otherwise negotiate protobuf)."""

PARSE_ALLOWANCE_SECONDS = 10.0
"""Added to a target's timeout for a source that parses its /metrics page: parsing a
page of tens of megabytes takes a moment more, which must not count as the target's
fault."""

_BODY_IN_MESSAGE = 200
"""Characters of an error body kept in a SourceError message (logs, not metrics)."""


@dataclass(frozen=True)
class HttpResult:
    """One HTTP answer, body decoded as UTF-8 (invalid bytes replaced)."""

    status: int
    text: str
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def default_in_cluster_apiserver() -> TargetConfig:
    """The apiserver as seen from a pod: the ``kubernetes`` Service and the pod's token.

    Used when ``exporter.kubernetes.in_cluster`` is set and no ``exporter.apiservers``
    are configured. It goes through the Service, so it probes whichever apiserver the
    load balancing picks; list the apiservers to probe each one.
    """
    return TargetConfig(
        name="in-cluster",
        url=IN_CLUSTER_APISERVER_URL,
        bearer_token_file=f"{SERVICE_ACCOUNT_DIR}/token",
        ca_file=f"{SERVICE_ACCOUNT_DIR}/ca.crt",
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), or None.

    A date in the past gives 0; a value that is neither gives None (and the caller's
    backoff decides), rather than an error: a bad header must not fail a refresh.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds else None  # NaN != NaN
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is read as such
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _BODY_IN_MESSAGE else text[: _BODY_IN_MESSAGE - 3] + "..."


def _is_tls_failure(error: BaseException) -> bool:
    """Whether a connection error is really a TLS failure (handshake, verification)."""
    if isinstance(error, aiohttp.ClientSSLError | ssl.SSLError):
        return True
    cause = error.__cause__ or error.__context__
    os_error = getattr(error, "os_error", None)
    return isinstance(cause, ssl.SSLError) or isinstance(os_error, ssl.SSLError)


class TargetClient:
    """HTTP GETs against one target (``TargetConfig``), failures as ``SourceError``."""

    def __init__(self, target: TargetConfig, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.target = target
        self._base = target.url.rstrip("/")
        self._max_body_bytes = max_body_bytes
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return self.target.name

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings, built once: the CA and client key are read at start-up."""
        if urlsplit(self.target.url).scheme != "https":
            return None
        context = ssl.create_default_context(cafile=self.target.ca_file)
        if self.target.client_cert_file is not None:
            context.load_cert_chain(self.target.client_cert_file, self.target.client_key_file)
        if self.target.insecure_skip_verify:
            log.warning(
                "target %s (%s): insecure_skip_verify is set, so its TLS certificate is NOT"
                " verified and anyone on the network path can impersonate it",
                self.target.name,
                self.target.url,
            )
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError(f"the client of target {self.target.name} is closed")
        if self._session is None:
            try:
                context = self._ssl_context()
            except (OSError, ssl.SSLError) as error:
                # An unreadable or invalid CA/cert/key file: nothing works until it is
                # fixed, but it is a refresh failure (reported, retried), not a crash.
                raise SourceError(
                    "tls", f"target {self.target.name}: TLS files unusable: {error}"
                ) from error
            connector = aiohttp.TCPConnector(ssl=context if context is not None else True)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.target.timeout_seconds),
                headers={"User-Agent": USER_AGENT},
                # Targets are addressed directly; an HTTP(S)_PROXY meant for the
                # internet must not reroute control-plane probes.
                trust_env=False,
            )
        return self._session

    def _headers(self, accept: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if accept is not None:
            headers["Accept"] = accept
        token_file = self.target.bearer_token_file
        if token_file is not None:
            try:
                token = Path(token_file).read_text(encoding="utf-8").strip()
            except OSError as error:
                # The path is configuration, not a secret; the token itself never
                # appears in a message.
                raise SourceError(
                    "auth",
                    f"target {self.target.name}: cannot read bearer_token_file {token_file}:"
                    f" {error.strerror or error}",
                ) from error
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _request(self, path: str, accept: str | None) -> HttpResult:
        session = self._get_session()
        url = self._base + (path if path.startswith("/") else "/" + path)
        where = f"target {self.target.name} GET {path}"
        try:
            async with session.get(url, headers=self._headers(accept)) as response:
                length = response.content_length
                if length is not None and length > self._max_body_bytes:
                    raise SourceError("parse", f"{where}: body of {length} bytes exceeds the limit")
                # StreamReader.read(n) returns what is buffered, up to n bytes, not the
                # whole body: read chunks until the end (or the limit).
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(1 << 20):
                    size += len(chunk)
                    if size > self._max_body_bytes:
                        raise SourceError(
                            "parse",
                            f"{where}: body exceeds the limit of {self._max_body_bytes} bytes",
                        )
                    chunks.append(chunk)
                body = b"".join(chunks)
                return HttpResult(
                    status=response.status,
                    text=body.decode("utf-8", errors="replace"),
                    headers=response.headers,
                )
        except SourceError:
            raise
        except TimeoutError as error:
            # aiohttp's own timeouts are TimeoutError subclasses (and ClientErrors):
            # caught before the connection errors below.
            raise SourceError(
                "timeout", f"{where}: no answer within {self.target.timeout_seconds:g} s"
            ) from error
        except aiohttp.ClientError as error:
            reason = "tls" if _is_tls_failure(error) else "connect"
            raise SourceError(reason, f"{where}: {error}") from error
        except ssl.SSLError as error:
            raise SourceError("tls", f"{where}: {error}") from error

    def _raise_for(self, path: str, result: HttpResult) -> None:
        status = result.status
        where = f"target {self.target.name} GET {path}: HTTP {status}"
        body = _truncate(result.text)
        retry_after = parse_retry_after(result.headers.get("Retry-After"))
        if status in (401, 403):
            raise SourceError("auth", f"{where}: {body}")
        if status == 429:
            raise SourceError("throttled", f"{where}: {body}", delay=retry_after)
        if status == 404:
            raise SourceError("not_found", f"{where}: {body}")
        if 400 <= status < 500:
            raise SourceError("http_4xx", f"{where}: {body}")
        if status >= 500:
            raise SourceError("http_5xx", f"{where}: {body}", delay=retry_after)
        # 1xx/3xx: redirects are followed by aiohttp, so this is a target misbehaving.
        raise SourceError("http_4xx", f"{where}: unexpected status")

    async def get(self, path: str, *, accept: str | None = None) -> HttpResult:
        """GET ``path`` (relative to the target's URL); a 2xx result or SourceError."""
        result = await self._request(path, accept)
        if not result.ok:
            self._raise_for(path, result)
        return result

    async def get_ok_or_status(self, path: str, *, accept: str | None = None) -> HttpResult:
        """GET a health endpoint: any answer that is the target's verdict is returned.

        2xx, 4xx and 5xx come back as results (``/readyz`` answers 500 with the failed
        checks in its body; a 404 tells that the endpoint does not exist there). 401,
        403 and 429 raise, as in :meth:`get`: they are about our credentials and the
        target's load shedding, not its health; so do the transport failures.
        """
        result = await self._request(path, accept)
        if result.status in (401, 403, 429) or not (result.ok or result.status >= 400):
            self._raise_for(path, result)
        return result

    async def close(self) -> None:
        """Close the session; the client cannot be used afterwards."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# --------------------------------------------------------------------------------------
# One /metrics scrape per target, shared by every area that reads it
# --------------------------------------------------------------------------------------

Families = Mapping[str, Sequence[promtext.Sample]]
"""A parsed page, as ``promtext.parse`` gives it; shared between readers: read only."""

_Parsed = Mapping[frozenset[str], "Families | promtext.ParseError"]


def _parse_for(text: str, wanted: Collection[frozenset[str]]) -> _Parsed:
    """The page parsed once for the union of ``wanted``; per family set only when that
    fails, so that a malformed line fails only the readers that want its family."""
    try:
        families = promtext.parse(text, frozenset().union(*wanted))
    except promtext.ParseError:
        pass
    else:
        return dict.fromkeys(wanted, families)
    parsed: dict[frozenset[str], Families | promtext.ParseError] = {}
    for names in wanted:
        try:
            parsed[names] = promtext.parse(text, names)
        except promtext.ParseError as error:
            parsed[names] = error
    return parsed


class _Scrape:
    """One fetch and parse, and the readers that took it."""

    def __init__(self, readers: Mapping[str, frozenset[str]]) -> None:
        self.readers = frozenset(readers)
        """The readers registered when it started: the ones it is parsed for."""
        self.wanted = frozenset(readers.values())
        self.taken: set[str] = set()
        self.delivered: set[str] = set()
        self.finished_at: float | None = None
        """Monotonic time the fetch and parse ended (failed ones too); None in flight."""
        self.parsed: _Parsed | None = None
        """The parse, until every reader has it (a page's worth of samples is not kept
        for the whole interval)."""
        self.task: asyncio.Task[None] | None = None


class SharedMetricsScrape:
    """A target's ``/metrics``, fetched and parsed once for all its readers (see the
    module docstring for the rules). Built by ``ExporterContext.metrics_scrape``."""

    def __init__(
        self,
        client: TargetClient,
        *,
        path: str = "/metrics",
        accept: str = METRICS_ACCEPT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._path = path
        self._accept = accept
        self._monotonic = monotonic
        self._readers: dict[str, frozenset[str]] = {}
        self._latest: _Scrape | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.fetches = 0
        """Fetches started so far."""

    @property
    def name(self) -> str:
        return self.client.name

    def reader(
        self, name: str, families: Collection[str], *, max_age_seconds: float
    ) -> MetricsPageReader:
        """A reader of the ``families`` it needs, which accepts a scrape another reader
        started if it finished at most ``max_age_seconds`` ago (its interval)."""
        if name in self._readers:
            raise ValueError(f"target {self.name}: duplicate /metrics reader {name!r}")
        wanted = frozenset(families)
        self._readers[name] = wanted
        return MetricsPageReader(self, name, wanted, max_age_seconds)

    def _usable(self, scrape: _Scrape, name: str, age: float) -> bool:
        if name in scrape.taken or name not in scrape.readers:
            return False
        if scrape.task is None or scrape.task.cancelled():
            return False
        if scrape.finished_at is None:
            return True  # in flight: wait for it rather than send a second request
        return self._monotonic() - scrape.finished_at <= age

    async def read(self, name: str, families: frozenset[str], max_age_seconds: float) -> Families:
        scrape = self._latest
        if scrape is None or not self._usable(scrape, name, max_age_seconds):
            scrape = self._start()
        scrape.taken.add(name)
        assert scrape.task is not None
        try:
            # Shielded: a reader whose refresh times out must not cancel the others'
            # fetch; it did not get this page, so it may take it next time.
            await asyncio.shield(scrape.task)
        except asyncio.CancelledError:
            scrape.taken.discard(name)
            raise
        assert scrape.parsed is not None
        parsed = scrape.parsed[families]
        scrape.delivered.add(name)
        if scrape.delivered >= scrape.readers:
            scrape.parsed = None  # every reader has its part: let the samples go
        if isinstance(parsed, promtext.ParseError):
            raise parsed
        return parsed

    def _start(self) -> _Scrape:
        scrape = _Scrape(self._readers)
        task = asyncio.create_task(self._fetch(scrape), name=f"scrape:{self.name}{self._path}")
        scrape.task = task
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        self._latest = scrape
        self.fetches += 1
        return scrape

    async def _fetch(self, scrape: _Scrape) -> None:
        try:
            result = await self.client.get(self._path, accept=self._accept)
            # In a worker thread: splitting a page of tens of megabytes would stall the
            # event loop that serves /metrics and runs every other source.
            scrape.parsed = await asyncio.to_thread(_parse_for, result.text, scrape.wanted)
        finally:
            scrape.finished_at = self._monotonic()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its readers, if any are left, raise it

    async def aclose(self) -> None:
        """Cancel a fetch in flight (at shutdown, before the client closes)."""
        tasks, self._tasks, self._latest = list(self._tasks), set(), None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class MetricsPageReader:
    """One area's access to a target's :class:`SharedMetricsScrape`."""

    def __init__(
        self,
        scrape: SharedMetricsScrape,
        name: str,
        families: frozenset[str],
        max_age_seconds: float,
    ) -> None:
        self.scrape = scrape
        self.name = name
        self.families = families
        self.max_age_seconds = max_age_seconds

    async def read(self) -> Families:
        """The wanted families of a scrape this reader has not taken yet. Raises
        ``SourceError`` as :meth:`TargetClient.get` does, and ``promtext.ParseError``
        when a wanted family's lines are malformed."""
        return await self.scrape.read(self.name, self.families, self.max_age_seconds)
