"""A gentle reader of Kubernetes objects, shared by the object-based sources.

The exporter reads objects (DaemonSets, their pods, nodes, ConfigMaps, leader Leases)
from the very apiserver whose congestion it is meant to report, so the reading must
never be what tips a struggling control plane over. Every object-based source reads
through one :class:`KubeReader`, which does that once, the same way for all:

- **Paginated lists.** ``limit`` (500 by default; smaller for kinds whose objects can
  be a MiB each) and ``continue``, the way client-go's pager lists. The first page is
  a consistent read (no ``resourceVersion``, which a 1.31+ apiserver serves from its
  watch cache); the following pages are pinned to that page's snapshot by the continue
  token, so a write in between never makes an object appear twice or go missing. A
  continue token that expired mid-list (410 Gone) restarts the list once, as the pager
  does. ``resourceVersion=0`` would be cheaper for etcd, but older apiservers ignore
  ``limit`` with it and answer 5000 nodes or 150 000 pods in one response.
- **One LIST in flight per kind.** Sources refresh independently; a per-resource lock
  makes a second LIST of the same resource wait for the first instead of doubling the
  load at the worst moment (a slow, congested apiserver is exactly when refreshes
  overlap).
- **429 honoured.** A 429 (API Priority and Fairness shedding load) becomes
  ``SourceError("throttled", delay=Retry-After)``: the refresh stops at once, the
  runner keeps the last snapshot and waits at least that long. No retry here: retrying
  inside the refresh is what a congested apiserver does not need.
- **Slim projections.** Pages are decoded with msgspec straight into small
  ``msgspec.Struct`` types that name only the fields a source needs; everything else in
  the JSON is skipped while decoding, never built as dicts, and no whole object is kept
  after the page is processed. Only one page's bytes are held at a time.

It talks through a kubernetes-asyncio ``ApiClient`` (whose configuration carries the
kubeconfig or in-cluster credentials and refreshes exec/OIDC tokens) with
``_preload_content=False``, so the client's model deserialisation, which would build
every field of every object, is bypassed.

A watch-based cache (an informer) would be gentler still for large kinds refreshed
often: it moves only changes. That is the next step for nodes and pods; periodic
paginated lists at a slow interval are the simple, bounded start.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload
from urllib.parse import quote

import aiohttp
import msgspec

from kubeballast.core.errors import ConfigError
from kubeballast.exporter.catalog import ExporterContext
from kubeballast.exporter.contract import SourceError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "JSON",
    "ClientGetter",
    "KubeReader",
    "ListResult",
    "ObjectMeta",
    "Owner",
    "label_selector",
    "object_path",
    "shared_reader",
]

ClientGetter = Callable[[], Awaitable[Any]]
"""Returns the kubernetes-asyncio ``ApiClient`` (``KubeClientProvider.get``)."""

S = TypeVar("S")
R = TypeVar("R")

DEFAULT_PAGE_SIZE = 500
"""Objects per LIST page, client-go's pager default."""

JSON = "application/json"

_MESSAGE_CHARS = 200
"""Characters of an error body kept in a SourceError message."""


class _ListMeta(msgspec.Struct, rename="camel"):
    resource_version: str = ""
    continue_: str = msgspec.field(default="", name="continue")


class _Page(msgspec.Struct, Generic[S]):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[S] | None = None


class _ContinueExpiredError(Exception):
    """A continue token answered 410 Gone: restart the list."""


class _Status(msgspec.Struct):
    message: str = ""
    reason: str = ""


class Owner(msgspec.Struct, frozen=True):
    """An ownerReference, reduced to what joins an object to its owner."""

    kind: str = ""
    name: str = ""
    uid: str = ""


class ObjectMeta(msgspec.Struct, frozen=True, rename="camel"):
    """The metadata fields the sources use; the rest of ``metadata`` is skipped."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    labels: dict[str, str] | None = None
    owner_references: list[Owner] | None = None


@dataclass(frozen=True)
class ListResult(Generic[S]):
    """The projected items of a complete LIST and the resourceVersion it was read at."""

    items: tuple[S, ...]
    resource_version: str
    pages: int


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _retry_after(headers: Mapping[str, str]) -> float | None:
    # The apiserver sends whole seconds (APF and max-in-flight send "1"); an HTTP date
    # is allowed by RFC 9110 but no apiserver sends one. Unparsable: the backoff decides.
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


def label_selector(
    match_labels: Mapping[str, str] | None,
    match_expressions: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """A ``labelSelector`` query string for a ``metav1.LabelSelector``.

    ``matchExpressions`` use the set-based syntax (``k in (a,b)``, ``k notin (a)``,
    ``k``, ``!k``). An empty selector (which matches everything) gives "".
    """
    parts = [f"{key}={value}" for key, value in sorted((match_labels or {}).items())]
    for expression in match_expressions or ():
        key = str(expression.get("key", ""))
        operator = expression.get("operator")
        values = ",".join(str(v) for v in expression.get("values") or ())
        if operator == "In":
            parts.append(f"{key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            raise ValueError(f"unknown label selector operator {operator!r}")
    return ",".join(parts)


class KubeReader:
    """Paginated, throttle-aware, projected reads through one kubernetes-asyncio client.

    ``client`` returns the ``kubernetes_asyncio.client.ApiClient`` to use (the
    exporter's shared one, created lazily: ``context.kube.get``); the reader does not
    own it. ``paths`` are API paths such as ``/api/v1/namespaces/kube-system/pods``.
    """

    def __init__(self, client: ClientGetter, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self._client = client
        self._page_size = page_size
        self._locks: dict[str, asyncio.Lock] = {}
        self._decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
        self.requests = 0
        """Requests sent so far (tests and benchmarks count the reader's load)."""

    @staticmethod
    def _resource_of(path: str) -> str:
        # ".../namespaces/x/pods" and "/api/v1/pods" are the same kind: one lock.
        return path.rstrip("/").rsplit("/", 1)[-1]

    def _lock(self, path: str) -> asyncio.Lock:
        return self._locks.setdefault(self._resource_of(path), asyncio.Lock())

    def _decoder(self, page_type: type[Any]) -> msgspec.json.Decoder[Any]:
        decoder = self._decoders.get(page_type)
        if decoder is None:
            decoder = msgspec.json.Decoder(page_type)
            self._decoders[page_type] = decoder
        return decoder

    async def _get(
        self, path: str, query: list[tuple[str, str]], accept: str
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """One GET: (status, body, headers); transport failures as SourceError."""
        where = f"GET {path}"
        try:
            api = await self._client()
        except ConfigError as error:
            # Credentials that cannot be loaded: nothing works until they are fixed,
            # but it is a refresh failure (reported, retried), not a crashed source.
            raise SourceError("auth", f"{where}: {error}") from error
        self.requests += 1
        try:
            response = await api.call_api(
                path,
                "GET",
                query_params=query,
                header_params={"Accept": accept},
                auth_settings=["BearerToken"],
                _preload_content=False,
            )
            async with response:
                body = await response.read()
                # A copy that stays case-insensitive (Retry-After, retry-after ...).
                return response.status, body, response.headers.copy()
        except TimeoutError as error:
            raise SourceError("timeout", f"{where}: no answer in time") from error
        except aiohttp.ClientSSLError as error:
            raise SourceError("tls", f"{where}: {error}") from error
        except aiohttp.ClientError as error:
            raise SourceError("connect", f"{where}: {error}") from error
        except ssl.SSLError as error:
            raise SourceError("tls", f"{where}: {error}") from error

    @staticmethod
    def _raise_for(path: str, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            message = msgspec.json.decode(body, type=_Status).message
        except msgspec.DecodeError:
            message = body[:_MESSAGE_CHARS].decode("utf-8", errors="replace")
        where = f"GET {path}: HTTP {status}: {_truncate(message)}"
        if status in (401, 403):
            raise SourceError("auth", where)
        if status == 429:
            raise SourceError("throttled", where, delay=_retry_after(headers))
        if status == 404:
            raise SourceError("not_found", where)
        if status >= 500:
            raise SourceError("http_5xx", where, delay=_retry_after(headers))
        raise SourceError("http_4xx", where)

    @overload
    async def list(
        self,
        path: str,
        item_type: type[S],
        *,
        label_selector: str = "",
        field_selector: str = "",
        page_size: int | None = None,
        accept: str = JSON,
    ) -> ListResult[S]: ...

    @overload
    async def list(
        self,
        path: str,
        item_type: type[S],
        *,
        project: Callable[[S], R],
        label_selector: str = "",
        field_selector: str = "",
        page_size: int | None = None,
        accept: str = JSON,
    ) -> ListResult[R]: ...

    async def list(
        self,
        path: str,
        item_type: type[S],
        *,
        project: Callable[[S], Any] | None = None,
        label_selector: str = "",
        field_selector: str = "",
        page_size: int | None = None,
        accept: str = JSON,
    ) -> ListResult[Any]:
        """LIST ``path`` page by page, decoding each item as ``item_type``.

        ``project`` reduces each decoded item further as soon as its page is decoded,
        so only the reduced values outlive the page: ConfigMaps, whose decoded ``data``
        can be a MiB each, are kept as a name and a size.
        """
        limit = str(page_size or self._page_size)
        decoder = self._decoder(_Page[item_type])  # type: ignore[valid-type]
        async with self._lock(path):
            try:
                return await self._list_pages(
                    path, decoder, project, limit, label_selector, field_selector, accept
                )
            except _ContinueExpiredError:
                # The snapshot the continue token pinned was compacted away while we
                # paged (410 Gone): start over once, from a new snapshot, as client-go's
                # pager does. A second expiry is an error like any other.
                return await self._list_pages(
                    path,
                    decoder,
                    project,
                    limit,
                    label_selector,
                    field_selector,
                    accept,
                    restart=True,
                )

    async def _list_pages(
        self,
        path: str,
        decoder: msgspec.json.Decoder[Any],
        project: Callable[[Any], Any] | None,
        limit: str,
        label_selector: str,
        field_selector: str,
        accept: str,
        *,
        restart: bool = False,
    ) -> ListResult[Any]:
        items: list[Any] = []
        continue_token = ""
        pages = 0
        while True:
            query = [("limit", limit)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if continue_token:
                query.append(("continue", continue_token))
            status, body, headers = await self._get(path, query, accept)
            if status == 410 and continue_token and not restart:
                raise _ContinueExpiredError
            if not 200 <= status < 300:
                self._raise_for(path, status, body, headers)
            try:
                page = decoder.decode(body)
            except msgspec.DecodeError as error:
                raise SourceError("parse", f"GET {path}: {error}") from error
            pages += 1
            page_items = page.items or ()
            items.extend(page_items if project is None else map(project, page_items))
            continue_token = page.metadata.continue_
            if not continue_token:
                return ListResult(tuple(items), page.metadata.resource_version, pages)

    async def get(self, path: str, item_type: type[S], *, accept: str = JSON) -> S | None:
        """GET one object, projected as ``item_type``; None when it does not exist."""
        status, body, headers = await self._get(path, [], accept)
        if status == 404:
            return None
        if not 200 <= status < 300:
            self._raise_for(path, status, body, headers)
        try:
            return msgspec.json.decode(body, type=item_type)
        except msgspec.DecodeError as error:
            raise SourceError("parse", f"GET {path}: {error}") from error


def object_path(group_version: str, plural: str, namespace: str = "", name: str = "") -> str:
    """The API path of a collection or an object (``v1`` is the core group)."""
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = root
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    return path


_READERS: weakref.WeakKeyDictionary[ExporterContext, KubeReader] = weakref.WeakKeyDictionary()


def shared_reader(context: ExporterContext) -> KubeReader:
    """The exporter's one reader (per context): its per-kind locks only keep LISTs of
    the same kind apart if every object-based area reads through the same reader."""
    reader = _READERS.get(context)
    if reader is None:
        reader = _READERS[context] = KubeReader(context.kube.get)
    return reader
