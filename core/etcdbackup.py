"""etcd snapshots as files: writing, verifying, describing, pruning and restoring them.

The seed's worst-case recovery plan is "restore from a periodic backup": it only works
if the backups exist, are complete and can be found in a hurry. This module owns the
file side of that: one snapshot taken from one named member is written atomically
(``EtcdClient.save_snapshot``: a ``.part`` file, fsync, rename; the folder is fsynced
here so the rename survives a crash), verified twice (the SHA-256 etcd appends is
checked while streaming by the client and again here on the bytes that reached the
disk; ``etcdctl snapshot status`` then opens the bbolt file and reports its revision
and key count), and described by a JSON sidecar written last. A snapshot without a
sidecar is therefore not a finished backup, whatever its size.

Choosing the member and checking the cluster first is ``kubeballast.core.etcdops``;
this module takes an endpoint and does not look at the cluster.

etcdctl is run for exactly two things, ``snapshot status`` and ``snapshot restore``:
both read a file that the etcd API, by construction, cannot see. Re-implementing the
bbolt reader or the restore (which writes a WAL and a new membership) here would be
the kind of copy that drifts from etcd.

The sidecar (``<snapshot>.json``, format 1) is the contract with the exporter, which
reports the newest backup's age, size, revision and verification from it without
re-reading multi-GiB files::

    {"format": 1, "cluster": "main", "snapshot": "etcd-main-20250101T020000Z.db",
     "created_unix": 1735696800.12, "created": "2025-01-01T02:00:00Z",
     "size_bytes": 52428832, "db_size_bytes": 52428800, "sha256": "<64 hex>",
     "revision": 123456, "keys": 4096, "etcdctl_hash": 123, "raft_term": 7,
     "member": "etcd-1", "member_id": "8e9e05c52164694d",
     "endpoint": "https://10.0.0.11:2379", "duration_seconds": 3.2, "verified": true,
     "hook": {"command": [...], "exit_status": 0, "duration_seconds": 1.0,
              "timed_out": false, "output_tail": "..."} | null}

Readers must ignore keys they do not know and treat a missing or unreadable sidecar as
"no finished backup here".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubeballast.core.errors import ConfigError, PermanentError
from kubeballast.core.etcd import EtcdClient, hex_id

__all__ = [
    "SIDECAR_FORMAT",
    "SIDECAR_SUFFIX",
    "BackupError",
    "BackupFile",
    "HookResult",
    "RestoreResult",
    "SnapshotStatus",
    "SnapshotWritten",
    "list_backups",
    "newest_verified_backup",
    "prune_backups",
    "read_sidecar",
    "restore_snapshot",
    "run_hook",
    "sidecar_document",
    "sidecar_path",
    "snapshot_name",
    "snapshot_status",
    "verify_snapshot_file",
    "write_sidecar",
    "write_snapshot",
]

log = logging.getLogger(__name__)

SIDECAR_FORMAT = 1
SIDECAR_SUFFIX = ".json"
_DIGEST_BYTES = 32
_READ_CHUNK = 4 * 1024 * 1024
_HOOK_OUTPUT_TAIL = 2000
_ETCDCTL_TIMEOUT = 600.0
"""Seconds for ``snapshot status`` / ``restore`` (both read the whole file; a few GiB
take a minute on a slow disk)."""

_NAME = re.compile(r"^etcd-(?P<cluster>.+)-(?P<stamp>\d{8}T\d{6}(?:\.\d{3})?Z)\.db$")


class BackupError(PermanentError):
    """A snapshot could not be written, verified, described or restored."""


@dataclass(frozen=True)
class SnapshotStatus:
    """What ``etcdctl snapshot status -w json`` says about a snapshot file."""

    hash: int
    """bbolt's own CRC of the database (not the SHA-256)."""
    revision: int
    keys: int
    """Keys in every bbolt bucket: each stored revision of each key, plus etcd's
    membership, lease and meta records (not the number of live Kubernetes objects)."""
    total_size: int


@dataclass(frozen=True)
class SnapshotWritten:
    """A snapshot written to disk and verified."""

    path: str
    size: int
    """Bytes on disk: the database plus the 32-byte SHA-256 etcd appends."""
    sha256: str
    status: SnapshotStatus
    duration_seconds: float
    """Streaming and writing only (verification not included)."""
    verify_seconds: float


@dataclass(frozen=True)
class HookResult:
    """One run of the configured hook command."""

    command: tuple[str, ...]
    exit_status: int | None
    """``None`` when it could not start or was killed at the timeout."""
    duration_seconds: float
    timed_out: bool
    output_tail: str
    """The last bytes of its stdout and stderr together."""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "command": list(self.command)}


@dataclass(frozen=True)
class BackupFile:
    """A snapshot found in a backup folder, with its sidecar when it has one."""

    path: Path
    created_unix: float
    sidecar: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def verified(self) -> bool:
        return bool(self.sidecar and self.sidecar.get("verified") is True)


@dataclass(frozen=True)
class RestoreResult:
    """A new data dir made from a snapshot by ``etcdctl snapshot restore``."""

    snapshot: str
    data_dir: str
    name: str
    initial_cluster: str
    initial_cluster_token: str
    initial_advertise_peer_urls: str
    revision: int
    sha256: str
    duration_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"operation": "restore", **asdict(self)}


# ------------------------------------------------------------------------ naming


def snapshot_name(cluster: str, when: float) -> str:
    """``etcd-<cluster>-<UTC time with milliseconds>.db``: sorts by time, and two
    backups in the same second (a loop with a short period, a test) do not clash."""
    moment = datetime.fromtimestamp(when, UTC)
    return f"etcd-{cluster}-{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z.db"


def _created_from_name(name: str) -> float | None:
    match = _NAME.match(name)
    if match is None:
        return None
    stamp = match["stamp"]
    fmt = "%Y%m%dT%H%M%S.%fZ" if "." in stamp else "%Y%m%dT%H%M%SZ"
    return datetime.strptime(stamp, fmt).replace(tzinfo=UTC).timestamp()


def sidecar_path(snapshot: Path) -> Path:
    return snapshot.with_name(snapshot.name + SIDECAR_SUFFIX)


# ------------------------------------------------------------------- writing


def _fsync_dir(directory: Path) -> None:
    # A rename is durable only once the folder's entry is on disk.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path: Path) -> tuple[int, str, bytes]:
    """(size, SHA-256 of all but the last 32 bytes, those last 32 bytes)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    if size <= _DIGEST_BYTES:
        raise BackupError(f"snapshot {path} has {size} bytes: too short to be a snapshot")
    remaining = size - _DIGEST_BYTES
    with open(path, "rb") as handle:
        while remaining:
            chunk = handle.read(min(_READ_CHUNK, remaining))
            if not chunk:
                raise BackupError(f"snapshot {path} shrank while it was read")
            digest.update(chunk)
            remaining -= len(chunk)
        trailer = handle.read(_DIGEST_BYTES)
    return size, digest.hexdigest(), trailer


async def verify_snapshot_file(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Check the SHA-256 etcd appended against the bytes on disk; (size, hex digest).

    Raises ``BackupError`` on a mismatch: the file is not what etcd sent.
    """
    target = Path(path)
    try:
        size, digest, trailer = await asyncio.to_thread(_hash_file, target)
    except OSError as error:
        raise BackupError(f"cannot read snapshot {target}: {error.strerror or error}") from error
    if bytes.fromhex(digest) != trailer:
        raise BackupError(
            f"snapshot {target}: the SHA-256 of its {size - _DIGEST_BYTES} database bytes"
            " does not match the digest at its end (truncated or corrupted)"
        )
    return size, digest


async def _run(argv: Sequence[str], *, seconds: float, what: str) -> tuple[int | None, bytes, bool]:
    """Run a command in its own session; (exit status, output, timed out).

    The process group is killed at the timeout, so a hook that forked an uploader
    does not outlive it. Exit status ``None``: killed.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as error:
        raise BackupError(f"{what}: cannot run {argv[0]}: {error.strerror or error}") from error
    try:
        async with asyncio.timeout(seconds):
            output, _ = await process.communicate()
        return process.returncode, output, False
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = await process.communicate()
        return None, output, True
    except BaseException:
        # Cancelled (SIGTERM to a backup loop): never leave the child behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await process.wait()
        raise


async def snapshot_status(path: str | os.PathLike[str], *, etcdctl: str) -> SnapshotStatus:
    """``etcdctl snapshot status -w json`` of a snapshot file."""
    status, output, timed_out = await _run(
        [etcdctl, "snapshot", "status", os.fspath(path), "-w", "json"],
        seconds=_ETCDCTL_TIMEOUT,
        what="snapshot status",
    )
    text = output.decode("utf-8", errors="replace").strip()
    if timed_out or status != 0:
        reason = "timed out" if timed_out else f"exit status {status}"
        raise BackupError(
            f"etcdctl snapshot status {os.fspath(path)}: {reason}: {_last_line(text)}"
        )
    try:
        # etcdctl 3.4 may log to stderr (merged here) before the JSON line.
        document = json.loads(text.splitlines()[-1])
        return SnapshotStatus(
            hash=int(document["hash"]),
            revision=int(document["revision"]),
            keys=int(document["totalKey"]),
            total_size=int(document["totalSize"]),
        )
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise BackupError(
            f"etcdctl snapshot status {os.fspath(path)}: unexpected output: {_last_line(text)}"
        ) from error


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[-1].split()) if lines else "(no output)"


async def write_snapshot(
    client: EtcdClient,
    endpoint: str,
    path: Path,
    *,
    etcdctl: str,
    read_timeout: float = 60.0,
) -> SnapshotWritten:
    """Stream ``endpoint``'s snapshot to ``path`` atomically and verify it.

    On a failed verification the file is removed: a snapshot that does not verify must
    never be mistaken for a backup.
    """
    started = time.monotonic()
    info = await client.save_snapshot(endpoint, path, read_timeout=read_timeout)
    await asyncio.to_thread(_fsync_dir, path.parent)
    written = time.monotonic()
    try:
        size, digest = await verify_snapshot_file(path)
        if (size, digest) != (info.size, info.sha256):
            raise BackupError(
                f"snapshot {path}: {size} bytes with SHA-256 {digest} on disk, but"
                f" {info.size} bytes with {info.sha256} were received"
            )
        status = await snapshot_status(path, etcdctl=etcdctl)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return SnapshotWritten(
        path=str(path),
        size=size,
        sha256=digest,
        status=status,
        duration_seconds=written - started,
        verify_seconds=time.monotonic() - written,
    )


def _write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".part")
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    _fsync_dir(path.parent)


async def write_sidecar(snapshot: Path, document: dict[str, Any]) -> Path:
    """Write (or replace) the snapshot's sidecar atomically; returns its path."""
    target = sidecar_path(snapshot)
    body = {"format": SIDECAR_FORMAT, "snapshot": snapshot.name, **document}
    await asyncio.to_thread(_write_json_atomically, target, body)
    return target


def sidecar_document(
    *,
    cluster: str,
    written: SnapshotWritten,
    created_unix: float,
    member: str,
    member_id: int,
    endpoint: str,
    raft_term: int,
    hook: HookResult | None,
) -> dict[str, Any]:
    """The sidecar's fields (see the module docstring for the format)."""
    return {
        "cluster": cluster,
        "created_unix": round(created_unix, 3),
        "created": datetime.fromtimestamp(created_unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "size_bytes": written.size,
        "db_size_bytes": written.size - _DIGEST_BYTES,
        "sha256": written.sha256,
        "revision": written.status.revision,
        "keys": written.status.keys,
        "etcdctl_hash": written.status.hash,
        "raft_term": raft_term,
        "member": member,
        "member_id": hex_id(member_id),
        "endpoint": endpoint,
        "duration_seconds": round(written.duration_seconds, 3),
        "verified": True,
        "hook": None if hook is None else hook.to_json(),
    }


# ---------------------------------------------------------------------- reading


def read_sidecar(snapshot: Path) -> dict[str, Any] | None:
    """The snapshot's sidecar, or ``None`` when it is missing or unreadable."""
    try:
        document = json.loads(sidecar_path(snapshot).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def list_backups(directory: str | os.PathLike[str], cluster: str) -> list[BackupFile]:
    """This cluster's snapshots in ``directory``, newest first. Files that do not follow
    the naming scheme are not ours and are never listed (so never pruned)."""
    folder = Path(directory)
    found = []
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    except OSError as error:
        raise BackupError(f"cannot list {folder}: {error.strerror or error}") from error
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or match["cluster"] != cluster or not entry.is_file():
            continue
        created = _created_from_name(entry.name)
        assert created is not None
        found.append(BackupFile(path=entry, created_unix=created, sidecar=read_sidecar(entry)))
    found.sort(key=lambda item: item.created_unix, reverse=True)
    return found


def newest_verified_backup(directory: str | os.PathLike[str], cluster: str) -> BackupFile | None:
    """The newest snapshot whose sidecar says it was verified."""
    return next((item for item in list_backups(directory, cluster) if item.verified), None)


def prune_backups(
    directory: str | os.PathLike[str],
    cluster: str,
    *,
    keep_count: int,
    keep_max_age_seconds: float,
    now: float,
    protect: Sequence[Path] = (),
) -> list[str]:
    """Remove snapshots beyond ``keep_count`` or older than the maximum age; returns
    the removed paths. The newest verified snapshot and ``protect`` are always kept,
    so retention can never leave a cluster without a usable backup. Unverified ones
    (no sidecar: a crash mid-way) count like the others and go first by age."""
    backups = list_backups(directory, cluster)
    protected = set(protect)
    newest_verified = next((item for item in backups if item.verified), None)
    if newest_verified is not None:
        protected.add(newest_verified.path)
    removed = []
    for index, item in enumerate(backups):
        too_many = index >= keep_count
        too_old = now - item.created_unix > keep_max_age_seconds
        if item.path in protected or not (too_many or too_old):
            continue
        # The sidecar first: a snapshot left without one is "unfinished", never a
        # sidecar pointing at a file that is gone.
        sidecar_path(item.path).unlink(missing_ok=True)
        item.path.unlink(missing_ok=True)
        removed.append(str(item.path))
    return removed


# ------------------------------------------------------------------------ hook


async def run_hook(command: Sequence[str], snapshot: Path, *, timeout_seconds: float) -> HookResult:
    """Run ``command`` with the snapshot's path as its last argument.

    Its failure is a result, not an exception: the snapshot is good either way, and
    the caller decides what a failed upload means (the CLI exits 1).
    """
    argv = (*command, str(snapshot))
    started = time.monotonic()
    try:
        status, output, timed_out = await _run(argv, seconds=timeout_seconds, what="backup hook")
    except BackupError as error:
        return HookResult(argv, None, time.monotonic() - started, False, str(error))
    tail = output[-_HOOK_OUTPUT_TAIL:].decode("utf-8", errors="replace")
    return HookResult(argv, status, round(time.monotonic() - started, 3), timed_out, tail)


# --------------------------------------------------------------------- restore


def _check_new_data_dir(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(
            f"refusing to restore into {target}: it exists and is not empty"
            " (restore into a new folder; never over a member's data)"
        )


def _remove_if_empty_dir(target: Path) -> None:
    if target.exists():
        target.rmdir()


async def restore_snapshot(
    snapshot: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str],
    name: str,
    initial_cluster: str,
    initial_cluster_token: str,
    initial_advertise_peer_urls: str,
    etcdctl: str,
) -> RestoreResult:
    """``etcdctl snapshot restore`` into a NEW data dir, after verifying the snapshot.

    Refuses a ``data_dir`` that exists and is not empty: restoring over a member's
    data is how a recovery destroys the last good copy. The snapshot's SHA-256 is
    checked first (etcdctl checks it too, but our message names the problem), and its
    revision is read so the result says which writes the restore contains.
    """
    source = Path(snapshot)
    target = Path(data_dir)
    await asyncio.to_thread(_check_new_data_dir, target)
    if f"{name}=" not in initial_cluster:
        raise ConfigError(
            f"--initial-cluster {initial_cluster!r} does not name this member {name!r}"
        )
    started = time.monotonic()
    _, digest = await verify_snapshot_file(source)
    status = await snapshot_status(source, etcdctl=etcdctl)
    # etcdctl refuses an existing folder even when empty; an empty one we were given
    # (a fresh mount point, say) is removed first, which changes nothing of value.
    await asyncio.to_thread(_remove_if_empty_dir, target)
    code, output, timed_out = await _run(
        [
            etcdctl,
            "snapshot",
            "restore",
            str(source),
            f"--name={name}",
            f"--data-dir={target}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-token={initial_cluster_token}",
            f"--initial-advertise-peer-urls={initial_advertise_peer_urls}",
        ],
        seconds=_ETCDCTL_TIMEOUT,
        what="snapshot restore",
    )
    if timed_out or code != 0:
        reason = "timed out" if timed_out else f"exit status {code}"
        raise BackupError(
            f"etcdctl snapshot restore {source}: {reason}:"
            f" {_last_line(output.decode('utf-8', errors='replace'))}"
        )
    return RestoreResult(
        snapshot=str(source),
        data_dir=str(target),
        name=name,
        initial_cluster=initial_cluster,
        initial_cluster_token=initial_cluster_token,
        initial_advertise_peer_urls=initial_advertise_peer_urls,
        revision=status.revision,
        sha256=digest,
        duration_seconds=round(time.monotonic() - started, 3),
    )
