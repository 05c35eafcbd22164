"""The simulator's object store: etcd and the apiserver's watch cache in one structure.

What clients rely on, and so what this reproduces:

- one global, monotonically increasing ``resourceVersion`` (etcd's revision), shared by
  every resource;
- lists in etcd key order (``<namespace>/<name>``), paginated with ``limit`` and an
  opaque ``continue`` token that pins the snapshot of the first page, so a paginated
  LIST under concurrent writes is consistent, as etcd's MVCC reads at a revision are;
- watches that resume from a resourceVersion, replaying the event history, and that
  fail with 410 Gone once that history is compacted; label/field-filtered watches turn
  an object leaving the selector into DELETED and one entering it into ADDED, as the
  watch cache does.

Objects are kept as their JSON encoding (msgspec), not as Python dicts: 150 000 pods as
dicts cost gigabytes, as bytes a few hundred megabytes, and a LIST page is then a byte
join. Only a small projection is kept decoded per object: labels and the values of the
field selectors the resource supports. Decoding happens on the write path and on
single-object reads, which are cheap.

Everything here is synchronous and runs on the event loop thread, so each operation is
atomic with respect to every other without locks. Semantics that belong to the
apiserver's registry (uids, timestamps, generation, status subresources, graceful
deletion, admission) live in :mod:`kubeballast.simulator.registry`, not here.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import collections
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from . import errors
from .resources import RESOURCES, ResourceType
from .selectors import FieldSelector, LabelSelector

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

INDEXED_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): ("spec.nodeName",),
}
"""Field selectors answered from an index on current state (kubelets and the taint
manager list pods by node all the time)."""

WATCH_QUEUE_LIMIT = 100_000
"""Events a watcher may have pending before it is closed as too slow; the client then
re-watches from its last resourceVersion, as with the real watch cache."""


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def decode(raw: bytes) -> Any:
    return _decoder.decode(raw)


def object_key(rt: ResourceType, namespace: str, name: str) -> str:
    """The etcd-like key that orders lists: ``ns/name``, or ``name`` when cluster-scoped."""
    return f"{namespace}/{name}" if rt.namespaced else name


class Entry:
    """One version of one object: its encoding plus the projection selectors need."""

    __slots__ = ("deleted", "fields", "key", "labels", "raw", "rv")

    def __init__(
        self,
        key: str,
        rv: int,
        raw: bytes,
        labels: dict[str, str],
        fields: dict[str, str],
        deleted: bool = False,
    ) -> None:
        self.key = key
        self.rv = rv
        self.raw = raw
        self.labels = labels
        self.fields = fields
        self.deleted = deleted

    def obj(self) -> dict[str, Any]:
        """A fresh decoded copy, safe to mutate."""
        result: dict[str, Any] = _decoder.decode(self.raw)
        return result

    @property
    def namespace(self) -> str:
        return self.fields.get("metadata.namespace", "")

    @property
    def name(self) -> str:
        return self.fields.get("metadata.name", "")


@dataclass(frozen=True)
class WatchEvent:
    """One change: ``new`` is the state after it (for DELETED, the last state at the
    deletion's resourceVersion); ``prev`` the state before, for selector transitions."""

    type: str
    rv: int
    new: Entry
    prev: Entry | None


@dataclass(frozen=True)
class ListPage:
    items: list[bytes]
    resource_version: int
    continue_token: str | None
    remaining: int | None


class Watch:
    """A registered watcher: a queue of events already filtered for it.

    ``initial`` holds the synthetic ADDED events (or the replayed history) computed at
    registration, atomically with subscribing, so nothing falls between the two.
    """

    def __init__(
        self,
        store: Store,
        table: _Table,
        namespace: str,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> None:
        self._store = store
        self._table = table
        self.namespace = namespace
        self.label_selector = labels
        self.field_selector = fields
        self.initial: list[tuple[str, bytes]] = []
        self.queue: collections.deque[tuple[str, bytes, int]] = collections.deque()
        self.closed = False
        self.overflowed = False
        self._wakeup = asyncio.Event()

    def matches(self, entry: Entry | None) -> bool:
        if entry is None or entry.deleted:
            return False
        if self.namespace and entry.namespace != self.namespace:
            return False
        if not self.label_selector.empty and not self.label_selector.matches(entry.labels):
            return False
        return self.field_selector.empty or self.field_selector.matches(entry.fields)

    def translate(self, event: WatchEvent) -> tuple[str, bytes] | None:
        """The event this watcher sees, given its filter, or None."""
        if event.type == "DELETED":
            return ("DELETED", event.new.raw) if self.matches_raw(event.new) else None
        now = self.matches(event.new)
        before = self.matches(event.prev)
        if now and before:
            return ("MODIFIED", event.new.raw)
        if now:
            return ("ADDED", event.new.raw)
        if before:
            # The object left the selector: the watch cache reports it as deleted.
            return ("DELETED", event.new.raw)
        return None

    def matches_raw(self, entry: Entry) -> bool:
        """Selector match ignoring the tombstone flag (DELETED events carry the last state)."""
        if self.namespace and entry.namespace != self.namespace:
            return False
        if not self.label_selector.empty and not self.label_selector.matches(entry.labels):
            return False
        return self.field_selector.empty or self.field_selector.matches(entry.fields)

    def _push(self, event: WatchEvent) -> None:
        if self.closed:
            return
        seen = self.translate(event)
        if seen is None:
            return
        if len(self.queue) >= WATCH_QUEUE_LIMIT:
            self.overflowed = True
            self.close()
            return
        self.queue.append((seen[0], seen[1], event.rv))
        self._wakeup.set()

    async def wait(self) -> None:
        """Return when there are events or the watch closed (callers bound it with
        ``asyncio.timeout`` for bookmarks and ``timeoutSeconds``)."""
        if self.queue or self.closed:
            return
        self._wakeup.clear()
        await self._wakeup.wait()

    def drain(self) -> list[tuple[str, bytes, int]]:
        items = list(self.queue)
        self.queue.clear()
        return items

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._table.watchers.discard(self)
            self._wakeup.set()


class _Table:
    """All versions of one resource's objects."""

    def __init__(self, rt: ResourceType) -> None:
        self.rt = rt
        self.current: dict[str, Entry] = {}
        # Superseded versions and tombstones, oldest first, kept until compaction, so
        # continue tokens can read the snapshot they were issued at.
        self.history: dict[str, list[Entry]] = {}
        self._sorted: list[str] | None = []
        self.events: collections.deque[WatchEvent] = collections.deque()
        self.watchers: set[Watch] = set()
        self.index_fields = INDEXED_FIELDS.get(rt.key, ())
        self.index: dict[str, dict[str, set[str]]] = {f: {} for f in self.index_fields}
        self.last_write = 0
        """Revision of the newest create, update or delete (bulk loads included): readers
        that derive state from a whole table (APF's FlowSchemas) compare it to rebuild."""

    def sorted_keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.current.keys() | self.history.keys())
        return self._sorted

    def key_added(self, key: str) -> None:
        if key in self.history:
            return  # already listed through its history
        if self._sorted is not None:
            if not self._sorted or key > self._sorted[-1]:
                self._sorted.append(key)  # bulk loads arrive mostly in order
            else:
                self._sorted = None

    def index_add(self, entry: Entry) -> None:
        for f in self.index_fields:
            self.index[f].setdefault(entry.fields.get(f, ""), set()).add(entry.key)

    def index_remove(self, entry: Entry) -> None:
        for f in self.index_fields:
            keys = self.index[f].get(entry.fields.get(f, ""))
            if keys is not None:
                keys.discard(entry.key)

    def at(self, key: str, rv: int) -> Entry | None:
        """The live version of ``key`` as of revision ``rv``, or None."""
        entry = self.current.get(key)
        if entry is not None and entry.rv <= rv:
            return entry
        older = self.history.get(key)
        if not older:
            return None
        for candidate in reversed(older):
            if candidate.rv <= rv:
                return None if candidate.deleted else candidate
        return None


class Store:
    """Every resource's objects, the global revision, history and watchers."""

    def __init__(self, resources: Iterable[ResourceType] = RESOURCES) -> None:
        self._tables: dict[tuple[str, str], _Table] = {rt.key: _Table(rt) for rt in resources}
        self._rv = 1
        self._compacted = 0

    # -- revisions ---------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The newest revision (what a LIST now reports)."""
        return self._rv

    @property
    def compacted_revision(self) -> int:
        """History at or below this revision is gone; reads from it get 410."""
        return self._compacted

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def table(self, rt: ResourceType) -> _Table:
        return self._tables[rt.key]

    # -- reads -------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Entry | None:
        return self.table(rt).current.get(object_key(rt, namespace, name))

    def count(self, rt: ResourceType) -> int:
        return len(self.table(rt).current)

    def iter_current(self, rt: ResourceType, namespace: str = "") -> Iterator[Entry]:
        """Current objects in key order (a snapshot of the key list, safe under writes)."""
        table = self.table(rt)
        for key in self._key_range(table, namespace):
            entry = table.current.get(key)
            if entry is not None:
                yield entry

    def by_index(self, rt: ResourceType, field: str, value: str) -> list[Entry]:
        """Current objects whose indexed ``field`` equals ``value``, in key order."""
        table = self.table(rt)
        keys = sorted(table.index[field].get(value, ()))
        return [table.current[k] for k in keys if k in table.current]

    def _key_range(self, table: _Table, namespace: str, after: str = "") -> list[str]:
        keys = table.sorted_keys()
        lo, hi = 0, len(keys)
        if namespace and table.rt.namespaced:
            prefix = namespace + "/"
            lo = bisect.bisect_left(keys, prefix)
            hi = bisect.bisect_left(keys, namespace + "0")  # "0" follows "/" in ASCII
        if after:
            lo = max(lo, bisect.bisect_right(keys, after))
        return keys[lo:hi]

    def list(
        self,
        rt: ResourceType,
        *,
        namespace: str = "",
        labels: LabelSelector,
        fields: FieldSelector,
        limit: int = 0,
        continue_token: str = "",
        resource_version: str = "",
        resource_version_match: str = "",
    ) -> ListPage:
        """One page of a LIST, following the apiserver's resourceVersion semantics.

        ``resourceVersion=0`` (and no continue token) is served from the watch cache:
        the whole current list, ``limit`` ignored, as the real apiserver did before
        paginated cache snapshots. A continue token reads at the revision of the first
        page; ``resourceVersionMatch=Exact`` reads at the given revision.
        """
        table = self.table(rt)
        start_after = ""
        read_rv = self._rv
        if continue_token:
            if resource_version not in ("", "0"):
                raise errors.bad_request(
                    "specifying resource version is not allowed when using continue"
                )
            read_rv, start_after = self._decode_continue(continue_token)
            # etcd refuses reads below the compacted revision; the compacted revision
            # itself is still readable (compaction keeps each key's version at it).
            if read_rv < self._compacted:
                raise errors.ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent "
                    "list result. You can start a new list without the continue parameter, "
                    "or use the continue token in this response to retrieve the remainder "
                    "of the results. Continuing with the provided token results in an "
                    "inconsistent list - objects that were created, modified, or deleted "
                    "between the time the first chunk was returned and now may show up in "
                    "the list.",
                )
        elif resource_version == "0" and resource_version_match in ("", "NotOlderThan"):
            limit = 0
        elif resource_version:
            try:
                wanted = int(resource_version)
            except ValueError:
                raise errors.bad_request(f'invalid resource version "{resource_version}"') from None
            if resource_version_match == "Exact":
                if wanted < self._compacted:
                    raise errors.gone(
                        f"The resourceVersion for the provided list is too old. "
                        f"(requested {wanted}, compacted {self._compacted})"
                    )
                if wanted > self._rv:
                    raise errors.ApiError(
                        504,
                        "Timeout",
                        f"Too large resource version: {wanted}, current: {self._rv}",
                    )
                read_rv = wanted
            elif wanted > self._rv:
                raise errors.ApiError(
                    504, "Timeout", f"Too large resource version: {wanted}, current: {self._rv}"
                )
        elif resource_version_match:
            raise errors.bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided"
            )

        items: list[bytes] = []
        last_key = ""
        more = False
        candidates = self._candidates(table, namespace, fields, start_after, read_rv)
        for key in candidates:
            entry = table.at(key, read_rv)
            if entry is None:
                continue
            if not labels.empty and not labels.matches(entry.labels):
                continue
            if not fields.empty and not fields.matches(entry.fields):
                continue
            if limit and len(items) >= limit:
                more = True
                break
            items.append(entry.raw)
            last_key = key
        token = self._encode_continue(read_rv, last_key) if more else None
        return ListPage(items, read_rv, token, None)

    def _candidates(
        self, table: _Table, namespace: str, fields: FieldSelector, after: str, read_rv: int
    ) -> Iterable[str]:
        if read_rv == self._rv and table.index_fields:
            for field, op, value in fields.requirements:
                if op == "=" and field in table.index:
                    keys = sorted(table.index[field].get(value, ()))
                    if after:
                        keys = keys[bisect.bisect_right(keys, after) :]
                    if namespace and table.rt.namespaced:
                        keys = [k for k in keys if k.startswith(namespace + "/")]
                    return keys
        return self._key_range(table, namespace, after)

    @staticmethod
    def _encode_continue(rv: int, key: str) -> str:
        # The real token is base64 JSON {"v":"meta.k8s.io/v1","rv":N,"start":"key\x00"}.
        body = encode({"v": "meta.k8s.io/v1", "rv": rv, "start": key + "\x00"})
        return base64.urlsafe_b64encode(body).decode().rstrip("=")

    @staticmethod
    def _decode_continue(token: str) -> tuple[int, str]:
        try:
            padded = token + "=" * (-len(token) % 4)
            body = decode(base64.urlsafe_b64decode(padded))
            if body.get("v") != "meta.k8s.io/v1":
                raise ValueError("version")
            rv = int(body["rv"])
            start = str(body["start"])
        except (ValueError, KeyError, TypeError, AttributeError, msgspec.DecodeError):
            raise errors.bad_request(
                "continue key is not valid: incorrect encoded start resourceVersion "
                "(version meta.k8s.io/v1)"
            ) from None
        return rv, start[:-1] if start.endswith("\x00") else start

    # -- writes ------------------------------------------------------------------

    def _entry(self, rt: ResourceType, obj: dict[str, Any], rv: int) -> Entry:
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(rv)
        labels = meta.get("labels") or {}
        key = object_key(rt, meta.get("namespace", ""), meta.get("name", ""))
        return Entry(key, rv, _encoder.encode(obj), dict(labels), rt.fields_of(obj))

    def create(self, rt: ResourceType, obj: dict[str, Any]) -> Entry:
        """Store a new object (its metadata.resourceVersion is set in ``obj``)."""
        table = self.table(rt)
        meta = obj.get("metadata", {})
        key = object_key(rt, meta.get("namespace", ""), meta.get("name", ""))
        if key in table.current:
            raise errors.already_exists(rt.plural, rt.group, meta.get("name", ""))
        entry = self._entry(rt, obj, self._next_rv())
        table.key_added(key)
        table.current[key] = entry
        table.index_add(entry)
        self._publish(table, WatchEvent("ADDED", entry.rv, entry, None))
        return entry

    def update(
        self, rt: ResourceType, obj: dict[str, Any], *, expected_rv: int | None = None
    ) -> Entry:
        """Replace an object; ``expected_rv`` is the optimistic-concurrency precondition."""
        table = self.table(rt)
        meta = obj.get("metadata", {})
        name = meta.get("name", "")
        key = object_key(rt, meta.get("namespace", ""), name)
        old = table.current.get(key)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        if expected_rv is not None and expected_rv != old.rv:
            raise errors.conflict(
                rt.plural,
                rt.group,
                name,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        entry = self._entry(rt, obj, self._next_rv())
        table.history.setdefault(key, []).append(old)
        table.index_remove(old)
        table.current[key] = entry
        table.index_add(entry)
        self._publish(table, WatchEvent("MODIFIED", entry.rv, entry, old))
        return entry

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        expected_rv: int | None = None,
        expected_uid: str | None = None,
    ) -> Entry:
        """Remove an object; returns its last state stamped with the deletion revision."""
        table = self.table(rt)
        key = object_key(rt, namespace, name)
        old = table.current.get(key)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        if expected_uid is not None or expected_rv is not None:
            obj = old.obj()
            meta = obj.get("metadata", {})
            if expected_uid is not None and meta.get("uid") != expected_uid:
                raise errors.conflict(
                    rt.plural,
                    rt.group,
                    name,
                    f"Precondition failed: UID in precondition: {expected_uid}, "
                    f"UID in object meta: {meta.get('uid')}",
                )
            if expected_rv is not None and expected_rv != old.rv:
                raise errors.conflict(
                    rt.plural,
                    rt.group,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {expected_rv}, "
                    f"ResourceVersion in object meta: {old.rv}",
                )
        last = self._entry(rt, old.obj(), self._next_rv())
        tombstone = Entry(key, last.rv, last.raw, last.labels, last.fields, deleted=True)
        history = table.history.setdefault(key, [])
        history.append(old)
        history.append(tombstone)
        del table.current[key]
        table.index_remove(old)
        self._publish(table, WatchEvent("DELETED", tombstone.rv, tombstone, old))
        return tombstone

    def bulk_load(self, items: Iterable[tuple[ResourceType, dict[str, Any]]]) -> int:
        """Create many objects at start-up: no watchers exist yet, so no events are kept."""
        count = 0
        for rt, obj in items:
            table = self.table(rt)
            entry = self._entry(rt, obj, self._next_rv())
            if entry.key in table.current:
                raise errors.already_exists(rt.plural, rt.group, entry.name)
            table.key_added(entry.key)
            table.current[entry.key] = entry
            table.index_add(entry)
            table.last_write = entry.rv
            count += 1
        # Nothing before this point can be replayed: watches from older revisions get 410.
        self._compacted = self._rv
        return count

    # -- watches -----------------------------------------------------------------

    def _publish(self, table: _Table, event: WatchEvent) -> None:
        table.last_write = event.rv
        table.events.append(event)
        for watcher in list(table.watchers):
            watcher._push(event)

    def watch(
        self,
        rt: ResourceType,
        *,
        namespace: str = "",
        labels: LabelSelector,
        fields: FieldSelector,
        resource_version: str = "",
        send_initial_events: bool | None = None,
    ) -> Watch:
        """Register a watcher; its ``initial`` events are what precedes the live stream.

        No resourceVersion or "0": synthetic ADDED events for every matching object (the
        state "as of now"), then changes. A positive revision: the recorded changes after
        it, then live ones; 410 Gone when that history is compacted, reported by the
        caller as an ERROR event (the real apiserver answers 200 and sends the error in
        the stream).
        """
        table = self.table(rt)
        watcher = Watch(self, table, namespace, labels, fields)
        initial_state = resource_version in ("", "0") or bool(send_initial_events)
        if resource_version not in ("", "0"):
            try:
                since = int(resource_version)
            except ValueError:
                raise errors.bad_request(f'invalid resource version "{resource_version}"') from None
            if since < self._compacted and not send_initial_events:
                raise errors.gone(f"too old resource version: {since} ({self._compacted + 1})")
            if not send_initial_events:
                for event in table.events:
                    if event.rv > since:
                        seen = watcher.translate(event)
                        if seen is not None:
                            watcher.initial.append(seen)
        if initial_state:
            for key in self._key_range(table, namespace):
                entry = table.current.get(key)
                if entry is not None and watcher.matches(entry):
                    watcher.initial.append(("ADDED", entry.raw))
        table.watchers.add(watcher)
        return watcher

    def close_watches(self) -> int:
        """End every open watch (fault injection and shutdown); returns how many."""
        closed = 0
        for table in self._tables.values():
            for watcher in list(table.watchers):
                watcher.close()
                closed += 1
        return closed

    # -- compaction --------------------------------------------------------------

    def compact(self, revision: int) -> None:
        """Forget history at or below ``revision``, as etcd compaction does."""
        revision = min(revision, self._rv)
        if revision <= self._compacted:
            return
        self._compacted = revision
        for table in self._tables.values():
            while table.events and table.events[0].rv <= revision:
                table.events.popleft()
            removed_keys = False
            for key in list(table.history):
                chain = table.history[key]
                # Keep the newest version at or below the revision (a reader at that
                # revision still needs it) unless a newer one is already current.
                keep_from = 0
                for i, entry in enumerate(chain):
                    if entry.rv <= revision:
                        keep_from = i
                cur = table.current.get(key)
                if cur is not None and cur.rv <= revision:
                    kept: list[Entry] = []
                else:
                    kept = chain[keep_from:]
                    if kept and kept[0].rv <= revision and kept[0].deleted:
                        kept = kept[1:]
                if kept:
                    table.history[key] = kept
                else:
                    del table.history[key]
                    if cur is None:
                        removed_keys = True
            if removed_keys:
                table._sorted = None

    def history_size(self) -> int:
        """Versions held for snapshot reads and watch replay (for metrics and tests)."""
        return sum(
            len(chain) for table in self._tables.values() for chain in table.history.values()
        ) + sum(len(table.events) for table in self._tables.values())

    def counts(self) -> Mapping[ResourceType, int]:
        return {table.rt: len(table.current) for table in self._tables.values()}
