"""A small etcd v3 client over etcd's JSON gateway, for probing and repairing etcd.

The exporter asks every etcd member how it is (health, status, alarms, members,
/metrics) and the remediations act on it (compact, defragment, disarm an alarm, take a
snapshot before touching anything). Both need to talk to *one named member* at a time:
a defragmentation or a status is about that member, not about "the cluster". The
official gRPC clients balance over the endpoints and hide which member answered, and
they would add grpcio to a project that otherwise speaks HTTP through aiohttp. etcd
serves the same API as JSON over HTTP on its client port (the grpc-gateway, ``/v3/...``,
since 3.4 also under ``/v3beta/``; 3.3 only ``/v3beta/``), so this module is a thin
aiohttp client for exactly the calls kube-ballast uses, with one session per client and
the endpoint an argument of every call.

The gateway's JSON follows the protobuf JSON mapping: 64-bit integers arrive as strings,
``bytes`` as base64, fields left at their zero value are omitted, and field names are the
``.proto`` names (``dbSize`` beside ``cluster_id``). The raw shapes are msgspec Structs
decoded non-strictly, which turns those strings into ``int`` and the base64 into
``bytes``; callers only see the frozen dataclasses below. Member ids are uint64 and stay
``int``; :func:`hex_id` formats them as etcdctl does.

Errors, drawn once (see ``kubeballast.core.errors``)::

    TemporaryError
     └── EtcdUnavailable(endpoint, why)   the member could not answer: refused, reset,
          │                               timed out, a 5xx without a gRPC status, or a
          │                               gRPC UNAVAILABLE / DEADLINE_EXCEEDED (no leader,
          │                               leader changed, request timed out)
          └── EtcdTLSError                the TLS handshake failed (certificate not trusted,
                                          client certificate refused): retrying does not
                                          fix it, but to a prober the member is down all
                                          the same, with a reason worth showing
    PermanentError
     ├── EtcdError(code, message)         the member answered with a gRPC status
     │    ├── NoSpace                     RESOURCE_EXHAUSTED: database space exceeded
     │    └── Compacted                   OUT_OF_RANGE: revision already compacted
     └── EtcdProtocolError                the answer is not what the gateway sends
                                          (a 404 from a proxy, a body that is not JSON)

A wrong CA, certificate or key *file* is a ``ConfigError`` raised when the client is
built, naming the configuration key (``exporter.etcd.clusters[main].key_file``), so a
typo stops ``kube-ballast config check`` instead of turning into a member "down".
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec

from kubeballast.core.config import EtcdClusterConfig
from kubeballast.core.errors import (
    ConfigError,
    KubeBallastError,
    PermanentError,
    TemporaryError,
)

__all__ = [
    "GRPC_CODE_NAMES",
    "Alarm",
    "AlarmType",
    "Compacted",
    "EtcdClient",
    "EtcdError",
    "EtcdProtocolError",
    "EtcdTLSError",
    "EtcdUnavailable",
    "KeyValue",
    "Member",
    "MemberHealth",
    "MemberStatus",
    "NoSpace",
    "RangeResult",
    "SnapshotInfo",
    "hex_id",
    "prefix_range_end",
]

logger = logging.getLogger(__name__)

API_PREFIX = "/v3"
"""The gateway's path prefix: etcd 3.4 serves /v3 and /v3beta, 3.5 and later only /v3."""

GRPC_CODE_NAMES: Mapping[int, str] = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
"""gRPC status codes by number, as the gateway sends them in ``{"code": N}``."""

# etcd answers these while it cannot serve *right now* (no leader, leader changed,
# request timed out, too many requests in flight): the same call is expected to work
# after an election, so they are temporary like a refused connection.
_RETRYABLE_CODES = frozenset({4, 14})

_SNAPSHOT_DIGEST_BYTES = 32
"""etcd ends a snapshot stream with the SHA-256 of the database (that is what
``etcdctl snapshot restore`` checks); those 32 bytes follow the database itself."""

_MAX_STREAM_LINE = 16 * 1024 * 1024
"""Refuse a snapshot stream line longer than this: etcd sends 32 KiB chunks (about
44 KB of base64), so anything near this bound is not the gateway talking."""


def hex_id(member_id: int) -> str:
    """A member or cluster id as etcdctl prints it (``%x``: lower-case hex, no padding)."""
    return f"{member_id:x}"


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix`` (etcd's
    ``GetPrefixRangeEnd``): the prefix with its last byte below 0xff incremented and
    what follows dropped; ``b"\\0"`` (all keys) for an empty or all-0xff prefix."""
    end = bytearray(prefix)
    for index in range(len(end) - 1, -1, -1):
        if end[index] < 0xFF:
            end[index] += 1
            return bytes(end[: index + 1])
    return b"\0"


# ---------------------------------------------------------------------------- errors


def _one_line(text: str) -> str:
    return " ".join(text.split())


# The exception names below read as the state a caller branches on (``except NoSpace``)
# and are the names the rest of the etcd work uses, hence no "Error" suffix.
class EtcdUnavailable(TemporaryError):  # noqa: N818
    """The member at ``endpoint`` could not answer; ``why`` says what happened.

    ``code`` is the gRPC status when the member itself said it cannot serve now
    (UNAVAILABLE, DEADLINE_EXCEEDED), ``None`` when it could not be reached at all.
    """

    def __init__(self, endpoint: str, why: str, *, code: int | None = None) -> None:
        self.endpoint = endpoint
        self.why = _one_line(why)
        self.code = code
        super().__init__(f"etcd {endpoint}: unavailable: {self.why}")


class EtcdTLSError(EtcdUnavailable):
    """The TLS handshake with the member failed (untrusted certificate, wrong name,
    client certificate refused). Fixing it takes new certificates, not a retry."""


class EtcdError(PermanentError):
    """The member answered with a gRPC error status (``code``, ``message``).

    ``code_name`` is the status name (``RESOURCE_EXHAUSTED``); :meth:`from_status`
    picks the subclass for statuses callers handle specially.
    """

    def __init__(self, code: int, message: str, *, endpoint: str = "") -> None:
        self.code = code
        self.code_name = GRPC_CODE_NAMES.get(code, f"CODE_{code}")
        self.message = _one_line(message)
        self.endpoint = endpoint
        where = f"etcd {endpoint}: " if endpoint else "etcd: "
        super().__init__(f"{where}{self.code_name}: {self.message}")

    @staticmethod
    def from_status(code: int, message: str, *, endpoint: str) -> KubeBallastError:
        """The error to raise for a gRPC status the gateway sent."""
        if code in _RETRYABLE_CODES:
            return EtcdUnavailable(endpoint, message, code=code)
        # etcd's messages are stable API (clientv3 compares them: rpctypes/error.go).
        if code == 8 and "database space exceeded" in message:
            return NoSpace(code, message, endpoint=endpoint)
        if code == 11 and "required revision has been compacted" in message:
            return Compacted(code, message, endpoint=endpoint)
        return EtcdError(code, message, endpoint=endpoint)


class NoSpace(EtcdError):  # noqa: N818
    """The NOSPACE alarm is raised: the cluster refuses writes until it is disarmed."""


class Compacted(EtcdError):  # noqa: N818
    """The requested revision is at or below the compacted revision."""


class EtcdProtocolError(PermanentError):
    """The answer is not what etcd's gateway sends (wrong status, not JSON)."""

    def __init__(self, endpoint: str, why: str) -> None:
        self.endpoint = endpoint
        self.why = _one_line(why)
        super().__init__(f"etcd {endpoint}: unexpected answer: {self.why}")


# ------------------------------------------------------------------- raw gateway JSON
# Only the fields kube-ballast reads; unknown fields are ignored, so newer etcd
# versions that add fields still decode. Defaults stand for the protobuf zero values
# the gateway omits.


class _RawHeader(msgspec.Struct):
    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0


class _RawGrpcError(msgspec.Struct):
    # The unary form: {"error": "...", "message": "...", "code": N}.
    code: int = 0
    message: str = ""
    error: str = ""


class _RawStreamError(msgspec.Struct):
    # The streaming form (grpc-gateway v1): {"error": {"grpc_code": N, "message": ...}}.
    grpc_code: int = 0
    message: str = ""


class _RawHealth(msgspec.Struct):
    health: str = ""
    reason: str = ""


class _RawStatus(msgspec.Struct):
    header: _RawHeader = msgspec.field(default_factory=_RawHeader)
    version: str = ""
    db_size: int = msgspec.field(default=0, name="dbSize")
    leader: int = 0
    raft_index: int = msgspec.field(default=0, name="raftIndex")
    raft_term: int = msgspec.field(default=0, name="raftTerm")
    raft_applied_index: int | None = msgspec.field(default=None, name="raftAppliedIndex")
    errors: list[str] = msgspec.field(default_factory=list)
    db_size_in_use: int | None = msgspec.field(default=None, name="dbSizeInUse")
    is_learner: bool = msgspec.field(default=False, name="isLearner")


class _RawAlarm(msgspec.Struct):
    member_id: int = msgspec.field(default=0, name="memberID")
    alarm: str = "NONE"


class _RawAlarms(msgspec.Struct):
    alarms: list[_RawAlarm] = msgspec.field(default_factory=list)


class _RawMember(msgspec.Struct):
    id: int = msgspec.field(default=0, name="ID")
    name: str = ""
    peer_urls: list[str] = msgspec.field(default_factory=list, name="peerURLs")
    client_urls: list[str] = msgspec.field(default_factory=list, name="clientURLs")
    is_learner: bool = msgspec.field(default=False, name="isLearner")


class _RawMembers(msgspec.Struct):
    header: _RawHeader = msgspec.field(default_factory=_RawHeader)
    members: list[_RawMember] = msgspec.field(default_factory=list)


class _RawKeyValue(msgspec.Struct):
    key: bytes = b""
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


class _RawRange(msgspec.Struct):
    header: _RawHeader = msgspec.field(default_factory=_RawHeader)
    kvs: list[_RawKeyValue] = msgspec.field(default_factory=list)
    more: bool = False
    count: int = 0


class _RawHeaderOnly(msgspec.Struct):
    header: _RawHeader = msgspec.field(default_factory=_RawHeader)


class _RawSnapshotChunk(msgspec.Struct):
    blob: bytes = b""
    remaining_bytes: int = 0


class _RawSnapshotLine(msgspec.Struct):
    result: _RawSnapshotChunk | None = None
    error: _RawStreamError | None = None


_T = TypeVar("_T")


def _decoder(kind: type[_T]) -> msgspec.json.Decoder[_T]:
    # strict=False: int64 fields come as JSON strings and must decode into int.
    return msgspec.json.Decoder(kind, strict=False)


_DECODE_ERROR = _decoder(_RawGrpcError)
_DECODE_HEALTH = _decoder(_RawHealth)
_DECODE_STATUS = _decoder(_RawStatus)
_DECODE_ALARMS = _decoder(_RawAlarms)
_DECODE_MEMBERS = _decoder(_RawMembers)
_DECODE_RANGE = _decoder(_RawRange)
_DECODE_HEADER = _decoder(_RawHeaderOnly)
_DECODE_SNAPSHOT_LINE = _decoder(_RawSnapshotLine)


# ------------------------------------------------------------------- public results


class AlarmType(enum.StrEnum):
    """etcd's alarm kinds (``etcdserverpb.AlarmType``)."""

    NOSPACE = "NOSPACE"
    """The backend reached ``--quota-backend-bytes``: writes are refused."""
    CORRUPT = "CORRUPT"
    """A corruption check found members whose data disagree."""


@dataclass(frozen=True)
class MemberHealth:
    """What ``GET /health`` says: ``healthy`` needs a leader, no alarm and a served
    read. ``reason`` is etcd's explanation when it gives one (3.5 and later)."""

    healthy: bool
    reason: str = ""


@dataclass(frozen=True)
class MemberStatus:
    """One member's view of itself and of the cluster (``Maintenance.Status``)."""

    endpoint: str
    member_id: int
    cluster_id: int
    version: str
    db_size: int
    """Bytes the backend file takes on disk (what the quota is compared with)."""
    db_size_in_use: int | None
    """Bytes actually in use; the rest is freed pages a defragmentation gives back.
    ``None`` before etcd 3.4."""
    leader: int
    """The leader's member id as this member sees it; 0 when it knows of none."""
    revision: int
    raft_index: int
    raft_term: int
    raft_applied_index: int | None
    """``None`` before etcd 3.4."""
    errors: tuple[str, ...]
    """Alarms and other trouble as etcd words them (``memberID:... alarm:NOSPACE``)."""
    is_learner: bool

    @property
    def is_leader(self) -> bool:
        """This member believes it is the leader."""
        return self.leader != 0 and self.leader == self.member_id


@dataclass(frozen=True)
class Alarm:
    """An active alarm on one member."""

    member_id: int
    alarm: AlarmType


@dataclass(frozen=True)
class Member:
    """A cluster member as ``MemberList`` reports it. A member added but not yet
    started has no name and no client URLs."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    """Empty when the range asked for keys only."""
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    """At most ``limit`` pairs; none for ``count_only``."""
    count: int
    """Keys in the whole range, whatever the limit."""
    revision: int
    """The store revision the range was served at."""
    more: bool
    """The limit cut the answer short."""


@dataclass(frozen=True)
class SnapshotInfo:
    size: int
    """Bytes handed to the sink: the database followed by its 32-byte SHA-256, the
    layout ``etcdctl snapshot save`` writes and ``snapshot restore`` checks."""
    sha256: str
    """Hex SHA-256 of the database, checked against the digest etcd sent."""

    @property
    def db_size(self) -> int:
        """Bytes of the database alone."""
        return self.size - _SNAPSHOT_DIGEST_BYTES


SnapshotSink = Callable[[bytes], Awaitable[None]]
"""Receives the snapshot chunk by chunk, in order; an exception aborts the transfer."""


# --------------------------------------------------------------------------- TLS


def _ssl_context(
    ca_file: str | os.PathLike[str] | None,
    cert_file: str | os.PathLike[str] | None,
    key_file: str | os.PathLike[str] | None,
    config_path: str,
) -> ssl.SSLContext:
    """The client's TLS settings, every file loaded now so a mistake names its key."""

    def key(name: str) -> str:
        return f"{config_path}.{name}" if config_path else name

    def check_readable(name: str, path: str | os.PathLike[str]) -> None:
        # OpenSSL's own message for a missing file is "[Errno 2] No such file or
        # directory" without the name; reading it first gives a message with both.
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise ConfigError(
                f"cannot read {os.fspath(path)}: {error.strerror or error}", key_path=key(name)
            ) from error

    if ca_file is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        check_readable("ca_file", ca_file)
        # An explicit CA replaces the system store, as etcdctl's --cacert does: public
        # CAs have no say over who may serve an etcd client port.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks host names
        try:
            context.load_verify_locations(cafile=os.fspath(ca_file))
        except ssl.SSLError as error:
            raise ConfigError(
                f"cannot load CA certificates from {os.fspath(ca_file)}: {error}",
                key_path=key("ca_file"),
            ) from error
    if (cert_file is None) != (key_file is None):
        missing = "key_file" if key_file is None else "cert_file"
        raise ConfigError("cert_file and key_file must be set together", key_path=key(missing))
    if cert_file is not None and key_file is not None:
        check_readable("cert_file", cert_file)
        check_readable("key_file", key_file)
        # load_cert_chain reports every failure as "[SSL] PEM lib" without saying
        # which file; loading the certificate alone first tells the two apart.
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
                cafile=os.fspath(cert_file)
            )
        except ssl.SSLError as error:
            raise ConfigError(
                f"cannot load certificate {os.fspath(cert_file)}: {error}",
                key_path=key("cert_file"),
            ) from error
        try:
            context.load_cert_chain(os.fspath(cert_file), os.fspath(key_file))
        except ssl.SSLError as error:
            raise ConfigError(
                f"cannot load private key {os.fspath(key_file)} (not a PEM key, encrypted,"
                f" or not the key of cert_file): {error}",
                key_path=key("key_file"),
            ) from error
    return context


# ------------------------------------------------------------------------- client


class EtcdClient:
    """Calls to named etcd members over the v3 JSON gateway.

    One aiohttp session (created on first use, inside the running loop) serves every
    endpoint; :meth:`close` or ``async with`` releases it. ``endpoints`` are the
    configured client URLs that the cluster helpers (:meth:`member_statuses`) visit;
    the per-member calls accept any endpoint, such as a client URL from
    :meth:`member_list`.

    ``timeout`` bounds each call (connect, send, answer); calls that can take long on a
    big database (:meth:`defragment`, :meth:`snapshot`) have their own bounds. A caller
    that needs a tighter bound for one call wraps it in ``asyncio.timeout``.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        config_path: str = "",
        timeout: float = 5.0,
        defragment_timeout: float = 600.0,
    ) -> None:
        self.endpoints = tuple(_normalise(endpoint) for endpoint in endpoints)
        self.config_path = config_path
        self.timeout = timeout
        self.defragment_timeout = defragment_timeout
        self._ssl = _ssl_context(ca_file, cert_file, key_file, config_path)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @classmethod
    def from_config(
        cls, cluster: EtcdClusterConfig, *, config_path: str, timeout: float = 5.0
    ) -> EtcdClient:
        """A client for ``cluster``; ``config_path`` is where the cluster sits in the
        configuration (``exporter.etcd.clusters[main]``), for error messages."""
        return cls(
            cluster.endpoints,
            ca_file=cluster.ca_file,
            cert_file=cluster.cert_file,
            key_file=cluster.key_file,
            config_path=config_path,
            timeout=timeout,
        )

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("EtcdClient is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # A few connections per member: the probes are sequential per member,
                # and etcd under stress should not see a burst from its own monitor.
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit_per_host=4),
                # Never follow redirects or read proxy settings from the environment:
                # these requests go to exactly the member named.
                trust_env=False,
            )
        return self._session

    # ----------------------------------------------------------------- plumbing

    async def _post(
        self,
        endpoint: str,
        path: str,
        body: Mapping[str, Any],
        decoder: msgspec.json.Decoder[_T],
        *,
        seconds: float | None = None,
    ) -> _T:
        """POST a gateway call and decode its answer, or raise the typed error."""
        base = _normalise(endpoint)
        limit = self.timeout if seconds is None else seconds
        try:
            async with self._get_session().post(
                f"{base}{API_PREFIX}{path}",
                data=msgspec.json.encode(body),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _unavailable(base, error, limit) from error
        if status != 200:
            raise _status_error(base, status, payload)
        try:
            return decoder.decode(payload)
        except msgspec.DecodeError as error:
            raise EtcdProtocolError(base, f"{path}: {error}") from error

    async def _get(self, endpoint: str, path: str) -> tuple[int, bytes]:
        base = _normalise(endpoint)
        limit = self.timeout
        try:
            async with self._get_session().get(
                f"{base}{path}",
                timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _unavailable(base, error, limit) from error

    # ------------------------------------------------------------ member calls

    async def health(self, endpoint: str) -> MemberHealth:
        """``GET /health``. An unhealthy member answers 503 with a body, which is a
        result here, not an error; an unreachable one raises ``EtcdUnavailable``."""
        status, payload = await self._get(endpoint, "/health")
        if status not in (200, 503):
            raise _status_error(_normalise(endpoint), status, payload)
        try:
            raw = _DECODE_HEALTH.decode(payload)
        except msgspec.DecodeError as error:
            raise EtcdProtocolError(_normalise(endpoint), f"/health: {error}") from error
        if raw.health not in ("true", "false"):
            raise EtcdProtocolError(_normalise(endpoint), f"/health: health={raw.health!r}")
        return MemberHealth(healthy=raw.health == "true", reason=raw.reason)

    async def status(self, endpoint: str) -> MemberStatus:
        """``Maintenance.Status`` of the member at ``endpoint``."""
        raw = await self._post(endpoint, "/maintenance/status", {}, _DECODE_STATUS)
        return MemberStatus(
            endpoint=_normalise(endpoint),
            member_id=raw.header.member_id,
            cluster_id=raw.header.cluster_id,
            version=raw.version,
            db_size=raw.db_size,
            db_size_in_use=raw.db_size_in_use,
            leader=raw.leader,
            revision=raw.header.revision,
            raft_index=raw.raft_index,
            raft_term=raw.raft_term,
            raft_applied_index=raw.raft_applied_index,
            errors=tuple(raw.errors),
            is_learner=raw.is_learner,
        )

    async def alarms(self, endpoint: str) -> list[Alarm]:
        """The cluster's active alarms, as the member at ``endpoint`` knows them (alarms
        are replicated through raft, so any member with a leader gives the full list)."""
        raw = await self._post(endpoint, "/maintenance/alarm", {"action": "GET"}, _DECODE_ALARMS)
        alarms = []
        for item in raw.alarms:
            if item.alarm == "NONE":
                continue
            try:
                kind = AlarmType(item.alarm)
            except ValueError as error:
                raise EtcdProtocolError(
                    _normalise(endpoint), f"unknown alarm {item.alarm!r}"
                ) from error
            alarms.append(Alarm(member_id=item.member_id, alarm=kind))
        return alarms

    async def disarm(self, endpoint: str, alarm: Alarm) -> None:
        """Deactivate one alarm (``etcdctl alarm disarm`` does this for each alarm).

        Disarming NOSPACE while the database is still over its quota only lets the
        next write raise it again: compact and defragment first. Each member raises its
        own NOSPACE alarm when it applies a write over the quota, so one can appear
        after the others were disarmed: list again until the list stays empty.
        """
        await self._post(
            endpoint,
            "/maintenance/alarm",
            {
                "action": "DEACTIVATE",
                "memberID": str(alarm.member_id),
                "alarm": alarm.alarm.value,
            },
            _DECODE_ALARMS,
        )

    async def member_list(self, endpoint: str) -> list[Member]:
        """The members as the member at ``endpoint`` knows them."""
        raw = await self._post(endpoint, "/cluster/member/list", {}, _DECODE_MEMBERS)
        return [
            Member(
                id=item.id,
                name=item.name,
                peer_urls=tuple(item.peer_urls),
                client_urls=tuple(item.client_urls),
                is_learner=item.is_learner,
            )
            for item in raw.members
        ]

    async def metrics(self, endpoint: str) -> str:
        """The member's ``/metrics`` page (Prometheus text)."""
        status, payload = await self._get(endpoint, "/metrics")
        if status != 200:
            raise _status_error(_normalise(endpoint), status, payload)
        return payload.decode("utf-8", errors="replace")

    async def defragment(self, endpoint: str) -> None:
        """Defragment the member's backend, giving freed pages back to the file system.

        The member stops serving while it runs (seconds per GiB), so callers go one
        member at a time and leave the leader for last.
        """
        await self._post(
            endpoint,
            "/maintenance/defragment",
            {},
            _DECODE_HEADER,
            seconds=self.defragment_timeout,
        )

    async def compact(
        self,
        endpoint: str,
        revision: int,
        *,
        physical: bool = True,
    ) -> None:
        """Discard the key history before ``revision`` (cluster-wide, through raft).

        ``physical`` waits until the compaction has been applied to the backend, so
        a defragmentation right after it frees the space. Raises ``Compacted`` when
        ``revision`` is already compacted.
        """
        await self._post(
            endpoint,
            "/kv/compaction",
            {"revision": str(revision), "physical": physical},
            _DECODE_HEADER,
        )

    async def put(self, endpoint: str, key: bytes | str, value: bytes | str) -> int:
        """Write one key; returns the store revision of the write."""
        raw = await self._post(
            endpoint,
            "/kv/put",
            {"key": _as_bytes(key), "value": _as_bytes(value)},
            _DECODE_HEADER,
        )
        return raw.header.revision

    async def range(
        self,
        endpoint: str,
        key: bytes | str,
        range_end: bytes | str | None = None,
        *,
        count_only: bool = False,
        keys_only: bool = False,
        limit: int = 1000,
        serializable: bool = False,
    ) -> RangeResult:
        """Read ``key``, or ``[key, range_end)`` (see :func:`prefix_range_end`).

        ``limit`` defaults to 1000 pairs so that a careless call cannot pull a large
        keyspace through a struggling member; 0 means no limit. ``serializable``
        reads the member's local copy without going through the leader (works
        without quorum, may be stale).
        """
        body: dict[str, Any] = {"key": _as_bytes(key)}
        if range_end is not None:
            body["range_end"] = _as_bytes(range_end)
        if count_only:
            body["count_only"] = True
        if keys_only:
            body["keys_only"] = True
        if limit:
            body["limit"] = str(limit)
        if serializable:
            body["serializable"] = True
        raw = await self._post(endpoint, "/kv/range", body, _DECODE_RANGE)
        return RangeResult(
            kvs=tuple(
                KeyValue(
                    key=item.key,
                    value=item.value,
                    create_revision=item.create_revision,
                    mod_revision=item.mod_revision,
                    version=item.version,
                    lease=item.lease,
                )
                for item in raw.kvs
            ),
            count=raw.count,
            revision=raw.header.revision,
            more=raw.more,
        )

    async def snapshot(
        self,
        endpoint: str,
        sink: SnapshotSink,
        *,
        read_timeout: float = 60.0,
    ) -> SnapshotInfo:
        """Stream the member's database into ``sink``, chunk by chunk.

        The gateway sends one JSON object per line, each with a base64 chunk of at most
        32 KiB; only one line is held at a time, so a multi-GiB database never sits in
        memory. The last 32 bytes are the SHA-256 of the rest; the digest is checked
        here (``EtcdProtocolError`` on a mismatch), and the sink still receives them so
        that a file written from the chunks is exactly what ``etcdctl snapshot save``
        writes. There is no overall deadline (a large database takes minutes);
        ``read_timeout`` bounds each wait for more data.
        """
        base = _normalise(endpoint)
        digest = hashlib.sha256()
        tail = b""  # the last bytes seen, which may be the trailing digest
        size = 0
        finished = False
        try:
            async with self._get_session().post(
                f"{base}{API_PREFIX}/maintenance/snapshot",
                data=b"{}",
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout, sock_read=read_timeout
                ),
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise _status_error(base, response.status, await response.read())
                async for line in _lines(response.content.iter_any(), base):
                    try:
                        message = _DECODE_SNAPSHOT_LINE.decode(line)
                    except msgspec.DecodeError as error:
                        raise EtcdProtocolError(base, f"snapshot stream: {error}") from error
                    if message.error is not None:
                        raise EtcdError.from_status(
                            message.error.grpc_code, message.error.message, endpoint=base
                        )
                    if message.result is None or not message.result.blob:
                        continue
                    blob = message.result.blob
                    # Hash everything except what may turn out to be the trailer.
                    window = tail + blob
                    digest.update(window[:-_SNAPSHOT_DIGEST_BYTES])
                    tail = window[-_SNAPSHOT_DIGEST_BYTES:]
                    size += len(blob)
                    await sink(blob)
                finished = True
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _unavailable(base, error, read_timeout) from error
        if not finished or len(tail) < _SNAPSHOT_DIGEST_BYTES:
            raise EtcdProtocolError(base, f"snapshot stream ended after {size} bytes")
        if digest.digest() != tail:
            raise EtcdProtocolError(
                base, f"snapshot of {size} bytes does not match the SHA-256 etcd sent"
            )
        return SnapshotInfo(size=size, sha256=digest.hexdigest())

    async def save_snapshot(
        self, endpoint: str, path: str | os.PathLike[str], *, read_timeout: float = 60.0
    ) -> SnapshotInfo:
        """Write the member's snapshot to ``path`` (through ``path.part``, renamed
        when complete and synced, so ``path`` never holds half a snapshot)."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        handle = await asyncio.to_thread(open, partial, "wb")
        try:

            async def write(chunk: bytes) -> None:
                # File writes block; a thread keeps the loop serving meanwhile.
                await asyncio.to_thread(handle.write, chunk)

            info = await self.snapshot(endpoint, write, read_timeout=read_timeout)
            await asyncio.to_thread(handle.flush)
            await asyncio.to_thread(os.fsync, handle.fileno())
        except BaseException:
            handle.close()
            partial.unlink(missing_ok=True)
            raise
        handle.close()
        await asyncio.to_thread(os.replace, partial, target)
        return info

    # ---------------------------------------------------------- cluster helpers

    async def member_statuses(self) -> dict[str, MemberStatus | KubeBallastError]:
        """The status of every configured endpoint, asked concurrently.

        Each call is bounded by the client's ``timeout``, so one hung member costs the
        others nothing; a member that fails is represented by its error
        (``EtcdUnavailable``, ``EtcdError`` ...) instead of the status. Keys are the
        endpoints in their configured order.
        """

        async def one(endpoint: str) -> MemberStatus | KubeBallastError:
            try:
                return await self.status(endpoint)
            except KubeBallastError as error:
                return error

        results = await asyncio.gather(*(one(endpoint) for endpoint in self.endpoints))
        return dict(zip(self.endpoints, results, strict=True))


# --------------------------------------------------------------------------- helpers


def _normalise(endpoint: str) -> str:
    return endpoint.rstrip("/")


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _status_error(endpoint: str, status: int, payload: bytes) -> KubeBallastError:
    """The error for a non-200 answer: the gRPC status in the body when there is one."""
    try:
        raw = _DECODE_ERROR.decode(payload)
    except msgspec.DecodeError:
        raw = None
    if raw is not None and (raw.code or raw.message or raw.error):
        return EtcdError.from_status(raw.code, raw.message or raw.error, endpoint=endpoint)
    excerpt = payload[:200].decode("utf-8", errors="replace")
    if status >= 500:
        return EtcdUnavailable(endpoint, f"HTTP {status}: {excerpt}")
    return EtcdProtocolError(endpoint, f"HTTP {status}: {excerpt}")


def _unavailable(endpoint: str, error: BaseException, timeout: float) -> EtcdUnavailable:
    """Word a transport failure for a human reading an alert or a log line."""
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        cert_error = error.certificate_error
        detail = getattr(cert_error, "verify_message", None) or str(cert_error)
        return EtcdTLSError(endpoint, f"TLS: certificate verify failed: {detail}")
    tls_error = _ssl_error_in(error)
    if tls_error is not None:
        return EtcdTLSError(endpoint, f"TLS: {_tls_reason(tls_error)}")
    if isinstance(error, TimeoutError):
        return EtcdUnavailable(endpoint, f"no answer within {timeout:g} s")
    if isinstance(error, aiohttp.ClientConnectorError):
        return EtcdUnavailable(endpoint, f"cannot connect: {_os_reason(error.os_error)}")
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return EtcdUnavailable(endpoint, "the member closed the connection")
    return EtcdUnavailable(endpoint, f"{type(error).__name__}: {error}")


_CLIENT_CERTIFICATE_ALERTS = frozenset(
    {
        "bad certificate",
        "certificate required",
        "unknown ca",
        "certificate unknown",
        "certificate expired",
        "certificate revoked",
        "unsupported certificate",
    }
)


def _ssl_error_in(error: BaseException) -> ssl.SSLError | None:
    """The OpenSSL error behind an aiohttp error, wherever aiohttp put it: ``os_error``
    for failures while connecting, the cause for failures on the first read (under
    TLS 1.3 a server rejects the client certificate only after the client has sent
    its request)."""
    candidates = (error, getattr(error, "os_error", None), error.__cause__, error.__context__)
    for candidate in candidates:
        if isinstance(candidate, ssl.SSLError):
            return candidate
    return None


def _tls_reason(error: ssl.SSLError) -> str:
    reason = error.reason or str(error)
    if "ALERT_" in reason:
        # OpenSSL names a received alert "SSLV3_ALERT_BAD_CERTIFICATE" or
        # "TLSV13_ALERT_CERTIFICATE_REQUIRED"; the alert is what the member said.
        alert = reason.split("ALERT_", 1)[1].replace("_", " ").lower()
        if alert in _CLIENT_CERTIFICATE_ALERTS:
            return (
                f"the member refused our client certificate (alert: {alert}); is it signed"
                " by a CA in the member's --trusted-ca-file?"
            )
        return f"the member ended the handshake (alert: {alert})"
    return f"handshake failed: {reason}"


def _os_reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


async def _lines(chunks: AsyncIterator[bytes], endpoint: str) -> AsyncIterator[bytes]:
    """Split a byte stream at newlines, holding at most one line (plus one chunk)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            line = bytes(buffer[start:end]).strip()
            if line:
                yield line
            start = end + 1
        del buffer[:start]
        if len(buffer) > _MAX_STREAM_LINE:
            raise EtcdProtocolError(endpoint, f"snapshot stream line over {_MAX_STREAM_LINE} bytes")
    if buffer.strip():
        yield bytes(buffer).strip()
