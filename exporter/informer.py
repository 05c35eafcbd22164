"""List+watch caches of Kubernetes objects (informers), built for 150 000 pods on a budget.

The cluster-state metrics (heartbeat lag per node, pods and extended resources per
node, spread of every workload over zones) need every node, node Lease, pod,
ReplicaSet, Deployment and StatefulSet, all the time. Listing them on an interval would
move 470 MiB of pods per refresh through the very apiserver whose congestion the
exporter reports; a cache that lists once and then watches moves only changes, which
is what client-go's reflector does and what this module does, with the same rules:

- **Initial state, two ways.** ``mode="list"``: a paginated LIST (``limit=500``, the
  pager's default), whose first page is a consistent read that a 1.31+ apiserver serves
  from its watch cache and whose continue tokens pin every following page to the same
  snapshot. ``resourceVersion=0`` is *not* used: the apiserver ignores ``limit`` with
  it (before 1.31's cache pagination), so 150 000 pods come as one 470 MiB response that
  the apiserver must build and the exporter must hold whole (the simulator's numbers:
  5.7 s of server CPU against 1.3 s for the pages, and the exporter's RSS would double).
  ``mode="watchlist"``: a WatchList stream (``sendInitialEvents=true``,
  ``resourceVersionMatch=NotOlderThan``, ``allowWatchBookmarks=true``; KEP-3157), where
  the apiserver streams the state object by object from its watch cache and ends it
  with the ``k8s.io/initial-events-end`` bookmark: no big buffer on either side and no
  separate LIST. ``mode="auto"`` (the default) tries WatchList and falls back to the
  paginated LIST for good when the server refuses it (a 4xx: before 1.27 a watch with
  ``resourceVersionMatch`` is invalid).
- **Resumable watches.** After the initial state, a watch from the last resourceVersion
  seen, with bookmarks (so that RV keeps moving on quiet resources) and a
  ``timeoutSeconds`` jittered between 5 and 10 minutes, as the reflector's: at the end of
  each watch, or after a dropped connection, the next one resumes from the last RV, and
  nothing is listed again.
- **Relist only on 410 Gone** (an ``ERROR`` event with code 410, or HTTP 410): the RV
  was compacted, so events were missed and only a fresh state can fix the cache. The
  relist is applied as a diff: objects that changed are updates, objects that vanished
  are deletes, so the aggregates built on the callbacks stay right without a rebuild.
- **Gentle when the apiserver is not.** A 429 (API Priority and Fairness shedding load)
  waits at least its ``Retry-After``; every failure waits a jittered exponential
  backoff (0.5 s doubling to 30 s); one initial LIST/WatchList per resource at a time
  per client (:meth:`KubeHttp.sync_lock`), so informers of the same resource never
  stack their syncs on a struggling server.
- **Raw bytes, slim decoding.** Requests go through aiohttp directly with the kube
  client's credentials (:class:`KubeHttp`: server URL, bearer token re-read through
  kubernetes-asyncio's refresh hook on every request, client certificates, CA), and
  bodies are decoded with msgspec into the raw shapes of
  :mod:`~kubeballast.exporter.projections`, then projected: a watch stream is split
  into lines by hand (no line-length limit) and each line decoded once. Compression
  is not requested: gzip costs the apiserver CPU on every large response, for a
  network (pod to apiserver) that is rarely the bottleneck; ``compression=True`` asks
  for it where it is.

An :class:`Informer` keeps a store keyed ``namespace/name`` of projections and calls
its handlers (``on_add(new)``, ``on_update(old, new)``, ``on_delete(old)``) as the
store changes; an update whose projection is unchanged (a pod's status timestamps
moved, which no projection keeps) is not reported at all, which is most pod updates.

**Supervised.** An exception other than the expected ones (a ``SourceError``, a 410)
out of a sync or a watch is a bug: in a projection, a handler or this module. A cache
that stopped there would be served as if current for as long as the process lives, so
:meth:`Informer.run` never lets it end the task: it logs the traceback (the first of a
streak; later ones in one line), counts it under the reason ``internal`` (as the
source runner does), waits a jittered backoff, and restarts the cache with a full
resync applied as a diff (the store and the handlers' aggregates end equal to the
server's state, as after a 410). Until that resync succeeds :func:`check_health`
reports the informer down, so ``kubeballast_source_up{kind="informer"}`` is 0 and
KubeBallastSourceDown fires if it never recovers (a poison object that every resync
trips on); ``kubeballast_informer_restarts_total`` counts the restarts.

Health reaches ``/metrics`` two ways: :class:`InformerCollector` exposes
``kubeballast_informer_*`` (synced, objects, events, relists by reason, watch errors
by reason, restarts, last event and last sync times), and :func:`check_health` turns an
informer's status into a source refresh's outcome, so the exporter's source runner can
report each informer as a source of kind ``informer``
(``kubeballast_source_up{kind="informer",target="pods"}``): up while synced and
watching, down while its watch keeps failing (the cluster state's health sources).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, NoReturn, Protocol, TypeVar

import aiohttp
import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kubeballast.core.kube import KubeClientProvider
from kubeballast.exporter.contract import MetricSpec, SourceError
from kubeballast.exporter.projections import RawMeta

__all__ = [
    "BACKOFF_CAP_SECONDS",
    "PAGE_SIZE",
    "Handler",
    "Informer",
    "InformerCollector",
    "InformerStatus",
    "KubeHttp",
    "RawObject",
    "ResourceSpec",
    "SyncMode",
    "check_health",
]

log = logging.getLogger(__name__)

PAGE_SIZE = 500
"""Objects per LIST page: client-go's pager default. Pages of pods are ~1.6 MiB, so
only that much of the list is ever held in the exporter at once."""

WATCH_TIMEOUT_SECONDS = (300, 600)
"""A watch's ``timeoutSeconds`` is drawn from this range, as the reflector's
(minWatchTimeout 5 min, times 1 to 2): watches of many clients end spread out."""

COALESCE_SECONDS = 0.1
"""Pause between reads of a watch stream, so events arrive in batches (see _stream): a
change reaches the cache up to this much later, which no metric scraped every 15 s or
more can tell, and the steady-state CPU halves."""

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
"""Backoff after failures: 0.5 s doubling to 30 s, each wait drawn between half and all
of it. Short next to the source runner's: a watch that is down is stale data."""

MAX_RETRY_AFTER_SECONDS = 600.0
"""A Retry-After above this is read as this: a broken proxy's "one day" must not leave
the cache stale for a day."""

INITIAL_EVENTS_END = "k8s.io/initial-events-end"

RELIST_REASONS = ("initial", "gone")
"""Why the state was read in full: the first sync, or a 410 Gone (compacted RV). A
resync after an internal error is counted as a restart instead."""

INTERNAL_REASON = "internal"
"""Error reason for an unexpected exception (a bug), as the source runner's."""

ERROR_REASONS = (*sorted(SourceError.REASONS), INTERNAL_REASON)

SyncMode = Literal["auto", "watchlist", "list"]


class RawObject(Protocol):
    """What every raw shape of :mod:`projections` has: ``metadata``."""

    @property
    def metadata(self) -> RawMeta: ...


R = TypeVar("R", bound=RawObject)
P = TypeVar("P")
P_contra = TypeVar("P_contra", contravariant=True)


@dataclass(frozen=True)
class ResourceSpec(Generic[R, P]):
    """One resource to cache: where it is, how its JSON decodes, how it is projected."""

    name: str
    """A short bounded name (the ``resource`` label and the source target): ``pods``."""
    group_version: str
    """``v1`` for the core group, ``apps/v1`` ..."""
    plural: str
    raw_type: type[R]
    project: Callable[[R], P]
    namespace: str = ""
    """Only this namespace (``kube-node-lease`` for node heartbeats); "" for all."""

    @property
    def path(self) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        scope = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{root}{scope}/{self.plural}"


class Handler(Protocol[P_contra]):
    """Told about every change of an informer's store, in order, on the event loop."""

    def on_add(self, new: P_contra) -> None: ...

    def on_update(self, old: P_contra, new: P_contra) -> None: ...

    def on_delete(self, old: P_contra) -> None: ...


@dataclass(frozen=True)
class InformerStatus:
    """An informer's health at one moment (plain data, for metrics and sources)."""

    resource: str
    synced: bool
    objects: int
    events: int
    relists: Mapping[str, int]
    errors: Mapping[str, int]
    consecutive_failures: int
    last_error: str | None
    last_event: float | None
    last_sync: float | None
    last_sync_duration_seconds: float | None
    mode: str
    restarts: int = 0
    """Restarts after an unexpected exception (a bug) in the sync or the watch."""
    restarting: bool = False
    """An unexpected exception stopped the cache and its resync has not succeeded yet."""


# --- HTTP -------------------------------------------------------------------------------


class KubeHttp:
    """Raw aiohttp access to the apiserver with the kube client's credentials.

    Its own session, separate from kubernetes-asyncio's: six watches held open for
    minutes would otherwise sit in the connection pool that the exporter's other object
    sources share. The bearer token is asked of the kube client's ``Configuration``
    on every request, which runs its refresh hook (exec plugins, OIDC, rotated
    service-account tokens).
    """

    def __init__(self, configuration: Any, *, compression: bool = False) -> None:
        self._configuration = configuration
        self.base_url = str(configuration.host).rstrip("/")
        self._compression = compression
        self._session: aiohttp.ClientSession | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self.requests = 0
        """Requests sent (tests and the benchmark count the load)."""

    @classmethod
    async def from_provider(
        cls, provider: KubeClientProvider, *, compression: bool = False
    ) -> KubeHttp:
        """Built from the exporter's shared kube client (``context.kube``)."""
        api = await provider.get()
        return cls(api.configuration, compression=compression)

    def _ssl_context(self) -> ssl.SSLContext | bool:
        # As kubernetes-asyncio's RESTClientObject builds it, so both clients trust and
        # present the same things.
        c = self._configuration
        if not self.base_url.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=c.ssl_ca_cert)
        if c.cert_file:
            context.load_cert_chain(c.cert_file, keyfile=c.key_file)
        if not c.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl_context(), limit=0)
            headers = {"Accept": "application/json"}
            if not self._compression:
                headers["Accept-Encoding"] = "identity"
            self._session = aiohttp.ClientSession(
                connector=connector, headers=headers, read_bufsize=2**20
            )
        return self._session

    def sync_lock(self, resource: str) -> asyncio.Lock:
        """Held for a resource's initial LIST or WatchList: one at a time per resource."""
        return self._locks.setdefault(resource, asyncio.Lock())

    @asynccontextmanager
    async def get(
        self, path: str, query: Sequence[tuple[str, str]], *, total_seconds: float
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET whose response is streamed by the caller; transport errors as
        ``SourceError``. Non-2xx statuses are the caller's to read (410 matters)."""
        headers: dict[str, str] = {}
        token = await self._configuration.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        session = self._open_session()
        self.requests += 1
        where = f"GET {path}"
        extra: dict[str, Any] = {}
        if getattr(self._configuration, "tls_server_name", None):
            extra["server_hostname"] = self._configuration.tls_server_name
        if getattr(self._configuration, "proxy", None):
            extra["proxy"] = self._configuration.proxy
        try:
            async with session.get(
                self.base_url + path,
                params=list(query),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=total_seconds, sock_connect=10),
                **extra,
            ) as response:
                yield response
        except TimeoutError as error:
            raise SourceError("timeout", f"{where}: no answer in time") from error
        except aiohttp.ClientSSLError as error:
            raise SourceError("tls", f"{where}: {error}") from error
        except aiohttp.ClientError as error:
            raise SourceError("connect", f"{where}: {error}") from error
        except ssl.SSLError as error:
            raise SourceError("tls", f"{where}: {error}") from error

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _Status(msgspec.Struct):
    message: str = ""
    reason: str = ""
    code: int = 0


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


class _GoneError(Exception):
    """410 Gone: the resourceVersion was compacted away; only a relist helps."""


class _WatchListRefusedError(Exception):
    """The server does not serve WatchList (a 4xx to sendInitialEvents)."""


def _error_for(path: str, status: int, body: bytes, headers: Mapping[str, str]) -> SourceError:
    try:
        message = msgspec.json.decode(body, type=_Status).message
    except msgspec.DecodeError:
        message = body[:200].decode("utf-8", errors="replace")
    where = f"GET {path}: HTTP {status}: {' '.join(message.split())[:200]}"
    if status in (401, 403):
        return SourceError("auth", where)
    if status == 429:
        return SourceError("throttled", where, delay=_retry_after(headers))
    if status == 404:
        return SourceError("not_found", where)
    if status >= 500:
        return SourceError("http_5xx", where, delay=_retry_after(headers))
    return SourceError("http_4xx", where)


# --- decoding ---------------------------------------------------------------------------


class _ListMeta(msgspec.Struct, rename="camel"):
    resource_version: str = ""
    continue_: str = msgspec.field(default="", name="continue")


class _List(msgspec.Struct, Generic[R]):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[R] | None = None


class _Event(msgspec.Struct, Generic[R]):
    type: str
    object: R


class _BookmarkMeta(msgspec.Struct, rename="camel"):
    resource_version: str = ""
    annotations: dict[str, str] | None = None


class _BookmarkObject(msgspec.Struct):
    metadata: _BookmarkMeta = msgspec.field(default_factory=_BookmarkMeta)


class _LooseEvent(msgspec.Struct):
    # For what the typed decoder refuses: ERROR events (a Status is not a pod) and
    # bookmarks, whose annotations the raw shapes do not keep.
    type: str = ""
    object: msgspec.Raw = msgspec.Raw()


_loose_decoder = msgspec.json.Decoder(_LooseEvent)
_status_decoder = msgspec.json.Decoder(_Status)
_bookmark_decoder = msgspec.json.Decoder(_BookmarkObject)


# --- the informer -----------------------------------------------------------------------


def _key(meta: RawMeta) -> str:
    return f"{meta.namespace}/{meta.name}" if meta.namespace else meta.name


@dataclass
class _Counters:
    events: int = 0
    relists: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RELIST_REASONS, 0))
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_REASONS, 0))
    restarts: int = 0


class Informer(Generic[R, P]):
    """A list+watch cache of one resource: a store of projections and its handlers.

    :meth:`run` runs forever (the owner supervises and cancels it); everything it
    changes is changed on the event loop, between awaits, so a reader on the loop never
    sees a handler half-applied.
    """

    def __init__(
        self,
        spec: ResourceSpec[R, P],
        http: KubeHttp,
        *,
        mode: SyncMode = "auto",
        page_size: int = PAGE_SIZE,
        watch_timeout_seconds: tuple[int, int] = WATCH_TIMEOUT_SECONDS,
        coalesce_seconds: float = COALESCE_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self._http = http
        self._mode: SyncMode = mode
        self._page_size = page_size
        self._watch_timeout = watch_timeout_seconds
        self._coalesce = coalesce_seconds
        self._used_mode: str = mode
        self._rng = rng if rng is not None else random.Random()
        self._store: dict[str, P] = {}
        self._handlers: list[Handler[P]] = []
        self._list_decoder = msgspec.json.Decoder(_List[spec.raw_type])  # type: ignore[name-defined]
        self._event_decoder = msgspec.json.Decoder(_Event[spec.raw_type])  # type: ignore[name-defined]
        self._counters = _Counters()
        self._failures = 0
        self._last_error: str | None = None
        self._restarting = False
        self._synced = asyncio.Event()
        self._last_event: float | None = None
        self._last_sync: float | None = None
        self._last_sync_duration: float | None = None
        self._resource_version = ""
        self._log = logging.LoggerAdapter(log, {"resource": spec.name})

    # --- reading ----------------------------------------------------------------------

    def add_handler(self, handler: Handler[P]) -> None:
        """Call ``handler`` on every change from now on (add handlers before :meth:`run`;
        one added later is not told about objects already in the store)."""
        self._handlers.append(handler)

    @property
    def synced(self) -> bool:
        """Whether the initial state has been read completely (stays true after)."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    @property
    def resource_version(self) -> str:
        """The last resourceVersion seen (the next watch resumes from it)."""
        return self._resource_version

    @property
    def mode(self) -> str:
        """How the last sync read the state (``list`` or ``watchlist``; ``auto`` before
        one). ``auto`` stays on the paginated LIST once the server refused WatchList."""
        return self._used_mode

    def items(self) -> Mapping[str, P]:
        """The live store (``namespace/name`` -> projection): read it on the loop,
        never keep it across an await; copy for a snapshot."""
        return self._store

    def __len__(self) -> int:
        return len(self._store)

    def status(self) -> InformerStatus:
        return InformerStatus(
            resource=self.spec.name,
            synced=self.synced,
            objects=len(self._store),
            events=self._counters.events,
            relists=dict(self._counters.relists),
            errors=dict(self._counters.errors),
            consecutive_failures=self._failures,
            last_error=self._last_error,
            last_event=self._last_event,
            last_sync=self._last_sync,
            last_sync_duration_seconds=self._last_sync_duration,
            mode=self._used_mode,
            restarts=self._counters.restarts,
            restarting=self._restarting,
        )

    # --- applying changes -------------------------------------------------------------

    def _upsert(self, raw: R) -> None:
        meta = raw.metadata
        key = _key(meta)
        new = self.spec.project(raw)
        old = self._store.get(key)
        if old is None:
            self._store[key] = new
            for handler in self._handlers:
                handler.on_add(new)
        elif old != new:
            self._store[key] = new
            for handler in self._handlers:
                handler.on_update(old, new)

    def _delete(self, key: str) -> None:
        old = self._store.pop(key, None)
        if old is not None:
            for handler in self._handlers:
                handler.on_delete(old)

    def _finish_sync(self, seen: set[str], resource_version: str, started: float) -> None:
        # Whatever the fresh state did not contain was deleted while we were not
        # watching (or before a relist): report it, so the aggregates forget it too.
        for key in [k for k in self._store if k not in seen]:
            self._delete(key)
        self._resource_version = resource_version
        self._last_sync = time.time()
        self._last_sync_duration = time.monotonic() - started
        self._synced.set()
        self._log.info(
            "%s synced: %d objects at resourceVersion %s in %.2f s",
            self.spec.name,
            len(self._store),
            resource_version,
            self._last_sync_duration,
        )

    # --- running ----------------------------------------------------------------------

    async def run(self) -> NoReturn:
        """Sync, then watch forever; relist only on 410; back off on errors; restart
        with a resync after an unexpected exception (never end but by cancellation)."""
        reason = "initial"
        need_sync = True
        while True:
            try:
                if need_sync:
                    await self._sync(reason)
                    need_sync = False
                    self._failures = 0
                    self._last_error = None
                    self._restarting = False
                progressed = await self._watch()
                if progressed:
                    self._failures = 0
                    self._last_error = None
                else:
                    # A watch that ended at once with nothing in it: not an error, but
                    # re-watching at once would spin against a server that does this.
                    await asyncio.sleep(self._backoff(None, count=False))
            except _GoneError:
                self._log.info(
                    "%s: resourceVersion %s is gone (410): relisting",
                    self.spec.name,
                    self._resource_version,
                )
                need_sync, reason = True, "gone"
            except SourceError as error:
                self._counters.errors[error.reason] += 1
                self._last_error = str(error)
                delay = self._backoff(error.delay)
                level = logging.WARNING if self._failures == 1 else logging.DEBUG
                self._log.log(
                    level,
                    "%s: %s (%s); retrying in %.1f s",
                    self.spec.name,
                    error,
                    error.reason,
                    delay,
                )
                await asyncio.sleep(delay)
            except Exception as error:  # supervision: a bug must not end the cache
                await self._restart_after(error)
                need_sync, reason = True, "restart"

    async def _restart_after(self, error: Exception) -> None:
        """Count, log and back off after an unexpected exception; the caller resyncs."""
        self._counters.errors[INTERNAL_REASON] += 1
        self._counters.restarts += 1
        self._restarting = True
        self._last_error = f"internal error: {error!r}"
        delay = self._backoff(None)
        if self._failures == 1:
            self._log.error(
                "%s: the cache failed with an unexpected error (a bug); restarting it "
                "with a resync in %.1f s",
                self.spec.name,
                delay,
                exc_info=error,
            )
        else:
            self._log.error(
                "%s: the cache failed again (%d in a row): %r; restarting it in %.1f s",
                self.spec.name,
                self._failures,
                error,
                delay,
            )
        await asyncio.sleep(delay)

    def _backoff(self, retry_after: float | None, *, count: bool = True) -> float:
        if count:
            self._failures += 1
        failures = max(self._failures, 1)
        base = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** min(failures - 1, 16))
        delay = base * self._rng.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        return delay

    async def _sync(self, reason: str) -> None:
        async with self._http.sync_lock(self.spec.name):
            started = time.monotonic()
            if self._mode != "list":
                try:
                    await self._watch_list(started)
                    self._count_relist(reason)
                    self._used_mode = "watchlist"
                    return
                except _WatchListRefusedError as refused:
                    if self._mode == "watchlist":
                        raise SourceError("http_4xx", str(refused)) from refused
                    self._log.info(
                        "%s: WatchList refused (%s); using paginated LIST", self.spec.name, refused
                    )
                    self._mode = "list"
            await self._list(started)
            self._count_relist(reason)
            self._used_mode = "list"

    def _count_relist(self, reason: str) -> None:
        # A resync after a restart is counted by the restart, not as a relist reason.
        if reason in self._counters.relists:
            self._counters.relists[reason] += 1

    async def _list(self, started: float) -> None:
        path = self.spec.path
        seen: set[str] = set()
        restarted = False
        continue_token = ""
        while True:
            query = [("limit", str(self._page_size))]
            if continue_token:
                query.append(("continue", continue_token))
            async with self._http.get(path, query, total_seconds=60.0) as response:
                body = await response.read()
                status, headers = response.status, response.headers
            if status == 410 and continue_token and not restarted:
                # The snapshot the token pinned was compacted mid-list: start over once
                # from a new one, as client-go's pager does.
                restarted, continue_token = True, ""
                continue
            if not 200 <= status < 300:
                raise _error_for(path, status, body, headers)
            try:
                page = self._list_decoder.decode(body)
            except msgspec.DecodeError as error:
                raise SourceError("parse", f"GET {path}: {error}") from error
            del body
            for raw in page.items or ():
                seen.add(_key(raw.metadata))
                self._upsert(raw)
            continue_token = page.metadata.continue_
            if not continue_token:
                self._finish_sync(seen, page.metadata.resource_version, started)
                return

    async def _watch_list(self, started: float) -> None:
        timeout = self._rng.randint(*self._watch_timeout)
        query = [
            ("watch", "1"),
            ("sendInitialEvents", "true"),
            ("resourceVersionMatch", "NotOlderThan"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
        ]
        seen: set[str] = set()
        done = False

        def on_raw(raw: R) -> None:
            seen.add(_key(raw.metadata))

        def on_bookmark(annotations: Mapping[str, str]) -> bool:
            nonlocal done
            if annotations.get(INITIAL_EVENTS_END) == "true":
                self._finish_sync(seen, self._resource_version, started)
                done = True
                return True  # stop: the watch goes on in _watch, with its own timeout
            return False

        await self._stream(query, timeout, on_raw=on_raw, on_bookmark=on_bookmark, watch_list=True)
        if not done:
            raise SourceError(
                "connect", f"GET {self.spec.path}: WatchList ended before its initial events did"
            )

    async def _watch(self) -> bool:
        """One watch from the last RV until its timeout; whether anything arrived."""
        timeout = self._rng.randint(*self._watch_timeout)
        query = [
            ("watch", "1"),
            ("resourceVersion", self._resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
        ]
        return await self._stream(query, timeout)

    async def _stream(
        self,
        query: list[tuple[str, str]],
        timeout_seconds: int,
        *,
        on_raw: Callable[[R], None] | None = None,
        on_bookmark: Callable[[Mapping[str, str]], bool] | None = None,
        watch_list: bool = False,
    ) -> bool:
        path = self.spec.path
        # The server ends the stream at timeoutSeconds; ours is a backstop against a
        # connection that went silent without closing.
        timeout = timeout_seconds + 30.0
        got_any = False
        async with self._http.get(path, query, total_seconds=timeout) as response:
            if response.status != 200:
                body = await response.read()
                if response.status == 410:
                    raise _GoneError
                # Refusals of the parameters themselves; 403 or 404 would refuse a
                # LIST just the same, so they are errors, not a reason to fall back.
                if watch_list and response.status in (400, 405, 422):
                    raise _WatchListRefusedError(f"HTTP {response.status}")
                raise _error_for(path, response.status, body, response.headers)
            pending: list[bytes] = []
            async for chunk in response.content.iter_any():
                if b"\n" not in chunk:
                    pending.append(chunk)
                    continue
                if pending:
                    pending.append(chunk)
                    chunk = b"".join(pending)
                    pending = []
                lines = chunk.split(b"\n")
                tail = lines.pop()
                if tail:
                    pending.append(tail)
                for line in lines:
                    if not line:
                        continue
                    got_any = True
                    if self._handle_line(path, line, on_raw, on_bookmark):
                        return True
                if watch_list:
                    # A chunk can carry thousands of events (a WatchList's initial
                    # state): let the scrape handler and the other informers in.
                    await asyncio.sleep(0)
                elif self._coalesce > 0:
                    # Steady state: events trickle in one or two per packet (500 Lease
                    # renewals a second at 5000 nodes), and each wake-up of the loop
                    # costs more than decoding the event. Pausing before the next read
                    # lets the kernel's buffer gather them, so one read brings dozens.
                    await asyncio.sleep(self._coalesce)
        return got_any

    def _handle_line(
        self,
        path: str,
        line: bytes,
        on_raw: Callable[[R], None] | None,
        on_bookmark: Callable[[Mapping[str, str]], bool] | None,
    ) -> bool:
        """Apply one watch event; True when the stream should stop here."""
        try:
            event = self._event_decoder.decode(line)
        except msgspec.ValidationError:
            return self._handle_other(path, line, on_bookmark)
        except msgspec.DecodeError as error:
            raise SourceError("parse", f"watch {path}: {error}") from error
        kind, raw = event.type, event.object
        if kind == "BOOKMARK":
            return self._handle_other(path, line, on_bookmark)
        if kind == "ERROR":
            return self._handle_other(path, line, on_bookmark)
        meta = raw.metadata
        if meta.resource_version:
            self._resource_version = meta.resource_version
        self._counters.events += 1
        self._last_event = time.time()
        if kind in ("ADDED", "MODIFIED"):
            if on_raw is not None:
                on_raw(raw)
            self._upsert(raw)
        elif kind == "DELETED":
            self._delete(_key(meta))
        return False

    def _handle_other(
        self, path: str, line: bytes, on_bookmark: Callable[[Mapping[str, str]], bool] | None
    ) -> bool:
        try:
            event = _loose_decoder.decode(line)
            if event.type == "BOOKMARK":
                bookmark = _bookmark_decoder.decode(event.object)
                if bookmark.metadata.resource_version:
                    self._resource_version = bookmark.metadata.resource_version
                return on_bookmark(bookmark.metadata.annotations or {}) if on_bookmark else False
            if event.type == "ERROR":
                status = _status_decoder.decode(event.object)
            else:
                raise SourceError("parse", f"watch {path}: unexpected event {event.type!r}")
        except msgspec.DecodeError as error:
            raise SourceError("parse", f"watch {path}: {error}") from error
        if status.code == 410:
            raise _GoneError
        reason = (
            "throttled" if status.code == 429 else "http_5xx" if status.code >= 500 else "http_4xx"
        )
        raise SourceError(reason, f"watch {path}: {status.code} {status.reason}: {status.message}")


# --- health on /metrics -----------------------------------------------------------------


def check_health(status: InformerStatus) -> InformerStatus:
    """``status`` if the cache is usable, else the ``SourceError`` that says why not."""
    if not status.synced:
        raise SourceError("connect", f"{status.resource}: not synced yet ({status.last_error})")
    if status.restarting:
        # A bug stopped the cache: whatever it holds is not being kept current.
        raise SourceError("connect", f"{status.resource}: restarting: {status.last_error}")
    # One failure is a dropped watch that the next one resumes; three in a row is an
    # outage that leaves the cache stale.
    if status.consecutive_failures >= 3:
        raise SourceError("connect", f"{status.resource}: watch failing: {status.last_error}")
    return status


class InformerCollector:
    """``kubeballast_informer_*``: every informer's cache health, labelled ``resource``."""

    def __init__(self, informers: Iterable[Informer[Any, Any]]) -> None:
        self._informers = informers

    def metric_specs(self) -> Sequence[MetricSpec]:
        r = ("resource",)
        return (
            MetricSpec(
                "kubeballast_informer_synced",
                "gauge",
                "1 once the cache has read the resource's state completely, else 0.",
                r,
            ),
            MetricSpec("kubeballast_informer_objects", "gauge", "Objects in the cache.", r),
            MetricSpec(
                "kubeballast_informer_events",
                "counter",
                "Watch events applied to the cache (bookmarks not counted).",
                r,
            ),
            MetricSpec(
                "kubeballast_informer_relists",
                "counter",
                "Full reads of the resource's state by reason (initial: the first sync;"
                " gone: the watch's resourceVersion was compacted, 410).",
                (*r, "reason"),
            ),
            MetricSpec(
                "kubeballast_informer_watch_errors",
                "counter",
                "Failed lists and watches by reason (as kubeballast_source_refresh_errors).",
                (*r, "reason"),
            ),
            MetricSpec(
                "kubeballast_informer_restarts",
                "counter",
                "Restarts of the cache after an unexpected error (a bug, logged with its "
                "traceback): each resyncs the resource's state in full.",
                r,
            ),
            MetricSpec(
                "kubeballast_informer_last_event_timestamp_seconds",
                "gauge",
                "Unix time of the last watch event applied (absent before one).",
                r,
            ),
            MetricSpec(
                "kubeballast_informer_last_sync_timestamp_seconds",
                "gauge",
                "Unix time the last full read of the state finished (absent before one).",
                r,
            ),
        )

    def collect(self) -> Iterable[Metric]:
        specs = {s.name: s for s in self.metric_specs()}

        def family(name: str) -> GaugeMetricFamily | CounterMetricFamily:
            spec = specs[name]
            cls = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
            return cls(name, spec.help, labels=list(spec.labels))

        synced = family("kubeballast_informer_synced")
        objects = family("kubeballast_informer_objects")
        events = family("kubeballast_informer_events")
        relists = family("kubeballast_informer_relists")
        errors = family("kubeballast_informer_watch_errors")
        restarts = family("kubeballast_informer_restarts")
        last_event = family("kubeballast_informer_last_event_timestamp_seconds")
        last_sync = family("kubeballast_informer_last_sync_timestamp_seconds")
        for informer in self._informers:
            s = informer.status()
            key = [s.resource]
            synced.add_metric(key, 1.0 if s.synced else 0.0)
            objects.add_metric(key, s.objects)
            events.add_metric(key, s.events)
            for reason, count in s.relists.items():
                relists.add_metric([*key, reason], count)
            for reason, count in s.errors.items():
                errors.add_metric([*key, reason], count)
            restarts.add_metric(key, s.restarts)
            if s.last_event is not None:
                last_event.add_metric(key, s.last_event)
            if s.last_sync is not None:
                last_sync.add_metric(key, s.last_sync)
        yield from (synced, objects, events, relists, errors, restarts, last_event, last_sync)
