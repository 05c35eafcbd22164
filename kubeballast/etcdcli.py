"""`kube-ballast etcd ...`: the etcd operations from the shell.

The seed wants etcd's recovery plans rehearsed; a rehearsal is only worth something
if the commands used in it are the ones used in the outage. These subcommands are thin
wrappers over ``kubeballast.core.etcdops`` (the functions the remediations call), so
running them by hand is the rehearsal::

    kube-ballast etcd backup            verified snapshot, retention, hook; --every 1h
    kube-ballast etcd restore-plan      the three recovery strategies as commands
    kube-ballast etcd restore           a snapshot into a NEW data dir (etcdctl)
    kube-ballast etcd defrag            followers one by one, the leader last
    kube-ballast etcd recover-nospace   compact, defragment, disarm, test write

The cluster comes from ``exporter.etcd.clusters`` (``--cluster NAME``, or the only one),
or from ``--endpoints`` with the TLS flags for a cluster the configuration does not
name. ``defrag`` and ``recover-nospace`` change the cluster, so like every automated
action in kube-ballast they are dry runs unless ``--execute`` is given: the dry run
checks every precondition and prints the plan.

Every run prints one JSON object per line on stdout (the result, or
``{"operation": ..., "ok": false, "error": ...}``); ``restore-plan`` prints ready-to-run
commands unless ``--format json``. Exit status 0 when the operation did what it says,
1 when it refused, failed, or the backup hook failed; 2 for usage and configuration
errors (raised as ``ConfigError`` for ``kubeballast.cli`` to report).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import shlex
import sys
import time
from typing import TYPE_CHECKING, Any

from kubeballast.core.config import Config, EtcdClusterConfig
from kubeballast.core.errors import ConfigError, KubeBallastError
from kubeballast.core.runtime import run_until_signalled

if TYPE_CHECKING:
    from kubeballast.core.etcd import EtcdClient
    from kubeballast.core.etcdops import BackupSettings

# The operations (aiohttp, msgspec) are imported inside the actions: the parser is
# built for every `kube-ballast` command, and `config check` should stay fast.

__all__ = ["add_arguments", "parse_duration", "run"]

log = logging.getLogger(__name__)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``1h30m``, ``7d``."""
    position, total = 0, 0.0
    cleaned = text.strip()
    while position < len(cleaned):
        match = _DURATION.match(cleaned, position)
        if match is None:
            raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h30m)")
        total += float(match[1]) * _UNIT_SECONDS[match[2]]
        position = match.end()
    if not cleaned:
        raise argparse.ArgumentTypeError("empty duration")
    return total


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The etcd actions, as subcommands of ``parser``."""
    parser.add_argument(
        "--cluster", metavar="NAME", help="exporter.etcd.clusters[NAME] (default: the only one)"
    )
    parser.add_argument(
        "--endpoints",
        type=_csv,
        metavar="URL,URL",
        help="client URLs, instead of (or overriding) the configured cluster's",
    )
    parser.add_argument("--cacert", metavar="PATH", help="CA bundle (with --endpoints)")
    parser.add_argument("--cert", metavar="PATH", help="client certificate (with --endpoints)")
    parser.add_argument("--key", metavar="PATH", help="client key (with --endpoints)")
    parser.add_argument(
        "--timeout",
        type=parse_duration,
        default=5.0,
        metavar="DURATION",
        help="per-request timeout (default 5s)",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    take = actions.add_parser("backup", help="take a verified snapshot (retention, hook)")
    take.add_argument("--dir", metavar="PATH", help="backup folder (default: backup.directory)")
    take.add_argument("--keep-count", type=int, metavar="N", help="backup.keep_count")
    take.add_argument(
        "--keep-max-age", type=parse_duration, metavar="DURATION", help="backup.keep_max_age"
    )
    take.add_argument(
        "--hook", metavar="COMMAND", help="backup.hook_command (split like a shell would)"
    )
    take.add_argument("--hook-timeout", type=parse_duration, metavar="DURATION")
    take.add_argument("--etcdctl", metavar="PATH", help="backup.etcdctl")
    take.add_argument(
        "--every", type=parse_duration, metavar="DURATION", help="repeat until SIGTERM/SIGINT"
    )
    take.add_argument(
        "--allow-no-quorum",
        action="store_true",
        help="snapshot a surviving member even without quorum (recovery strategy 2)",
    )

    plan = actions.add_parser("restore-plan", help="print the three recovery strategies")
    plan.add_argument("--format", choices=("text", "json"), default="text")
    plan.add_argument("--dir", metavar="PATH", help="backup folder (default: backup.directory)")
    plan.add_argument("--token", metavar="TOKEN", help="--initial-cluster-token to use")

    restore = actions.add_parser("restore", help="restore a snapshot into a NEW data dir")
    restore.add_argument(
        "--snapshot", metavar="PATH", help="default: the newest verified one in --dir"
    )
    restore.add_argument("--dir", metavar="PATH", help="backup folder (default: backup.directory)")
    restore.add_argument("--member", metavar="NAME", required=True, help="this member's --name")
    restore.add_argument("--data-dir", metavar="PATH", help="default: restore.restore_data_dir")
    restore.add_argument(
        "--initial-cluster", metavar="N=URL,...", help="default: from restore.members"
    )
    restore.add_argument("--peer-url", metavar="URL", help="default: from restore.members")
    restore.add_argument("--token", metavar="TOKEN", help="default: restore.initial_cluster_token")
    restore.add_argument("--etcdctl", metavar="PATH", help="backup.etcdctl")

    defrag = actions.add_parser("defrag", help="defragment: followers first, the leader last")
    defrag.add_argument("--execute", action="store_true", help="act (default: dry run)")
    defrag.add_argument("--max-in-use-ratio", type=float, default=0.5, metavar="R")
    defrag.add_argument("--min-reclaimable", type=int, default=100 * 1024 * 1024, metavar="BYTES")
    defrag.add_argument(
        "--observe",
        type=parse_duration,
        default=10.0,
        metavar="DURATION",
        help="watch the raft term this long first; refuse if the leader changes (10s)",
    )
    defrag.add_argument("--no-backup", action="store_true", help="skip the snapshot first")
    defrag.add_argument("--dir", metavar="PATH", help="backup folder (default: backup.directory)")
    defrag.add_argument("--health-timeout", type=parse_duration, default=120.0, metavar="DURATION")

    nospace = actions.add_parser("recover-nospace", help="bring writes back after NOSPACE")
    nospace.add_argument("--execute", action="store_true", help="act (default: dry run)")
    nospace.add_argument("--no-backup", action="store_true", help="skip the snapshot first")
    nospace.add_argument("--dir", metavar="PATH", help="backup folder (default: backup.directory)")
    nospace.add_argument("--deadline", type=parse_duration, default=300.0, metavar="DURATION")
    nospace.add_argument("--health-timeout", type=parse_duration, default=120.0, metavar="DURATION")


# ------------------------------------------------------------------------ helpers


def _cluster(args: argparse.Namespace, config: Config) -> tuple[EtcdClusterConfig, str]:
    """The cluster to act on and its key path in the configuration."""
    clusters = config.exporter.etcd.clusters
    key_path = "exporter.etcd.clusters"
    chosen: EtcdClusterConfig | None = None
    if args.cluster is not None:
        chosen = next((c for c in clusters if c.name == args.cluster), None)
        if chosen is None and not args.endpoints:
            names = ", ".join(c.name for c in clusters) or "none configured"
            raise ConfigError(f"--cluster: no etcd cluster named {args.cluster!r} ({names})")
    elif not args.endpoints:
        if len(clusters) != 1:
            raise ConfigError(
                "name the cluster with --cluster, or pass --endpoints"
                f" ({len(clusters)} clusters configured)",
                key_path=key_path,
            )
        chosen = clusters[0]
    if args.endpoints:
        base = chosen or EtcdClusterConfig(name=args.cluster or "etcd")
        chosen = EtcdClusterConfig(
            name=base.name,
            endpoints=tuple(args.endpoints),
            ca_file=args.cacert or base.ca_file,
            cert_file=args.cert or base.cert_file,
            key_file=args.key or base.key_file,
            backup=base.backup,
            restore=base.restore,
        )
    assert chosen is not None
    return chosen, f"{key_path}[{chosen.name}]"


def _client(cluster: EtcdClusterConfig, key_path: str, timeout: float) -> EtcdClient:
    from kubeballast.core.etcd import EtcdClient

    return EtcdClient.from_config(cluster, config_path=key_path, timeout=timeout)


def _backup_settings(
    args: argparse.Namespace, cluster: EtcdClusterConfig, key_path: str
) -> BackupSettings:
    from kubeballast.core.etcdops import BackupSettings

    settings = BackupSettings.from_config(
        cluster.backup, directory=args.dir, key_path=f"{key_path}.backup"
    )
    changes: dict[str, Any] = {}
    if getattr(args, "keep_count", None) is not None:
        changes["keep_count"] = args.keep_count
    if getattr(args, "keep_max_age", None) is not None:
        changes["keep_max_age_seconds"] = args.keep_max_age
    if getattr(args, "hook", None):
        changes["hook_command"] = tuple(shlex.split(args.hook))
    if getattr(args, "hook_timeout", None) is not None:
        changes["hook_timeout_seconds"] = args.hook_timeout
    if getattr(args, "etcdctl", None):
        changes["etcdctl"] = args.etcdctl
    return BackupSettings(**{**settings.__dict__, **changes})


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, sort_keys=True) + "\n")
    sys.stdout.flush()


def _failure(operation: str, cluster: str, error: KubeBallastError) -> dict[str, Any]:
    document: dict[str, Any] = {
        "operation": operation,
        "cluster": cluster,
        "ok": False,
        "error": str(error),
        "error_type": type(error).__name__,
    }
    partial = getattr(error, "result", None)
    if partial is not None and hasattr(partial, "to_json"):
        document["partial"] = partial.to_json()
    return document


# ----------------------------------------------------------------------- actions


async def _backup_once(
    client: EtcdClient, cluster: EtcdClusterConfig, settings: BackupSettings, args: Any
) -> int:
    from kubeballast.core.etcdops import backup

    try:
        result = await backup(client, cluster.name, settings, allow_no_quorum=args.allow_no_quorum)
    except KubeBallastError as error:
        log.error("etcd backup of %s failed: %s", cluster.name, error)
        _emit(_failure("backup", cluster.name, error))
        return 1
    _emit({**result.to_json(), "ok": result.ok})
    return 0 if result.ok else 1


async def _backup_loop(
    cluster: EtcdClusterConfig, key_path: str, settings: BackupSettings, args: Any
) -> None:
    async with _client(cluster, key_path, args.timeout) as client:
        while True:
            started = time.monotonic()
            await _backup_once(client, cluster, settings, args)
            # The period runs from start to start, so backups do not drift later.
            await asyncio.sleep(max(0.0, args.every - (time.monotonic() - started)))


async def _run_backup(cluster: EtcdClusterConfig, key_path: str, args: Any) -> int:
    settings = _backup_settings(args, cluster, key_path)
    async with _client(cluster, key_path, args.timeout) as client:
        return await _backup_once(client, cluster, settings, args)


async def _run_plan(cluster: EtcdClusterConfig, key_path: str, args: Any) -> int:
    from kubeballast.core.etcdops import etcdctl_tls_flags, restore_plan

    directory = args.dir or cluster.backup.directory
    tls = etcdctl_tls_flags((cluster.ca_file, cluster.cert_file, cluster.key_file))
    async with _client(cluster, key_path, args.timeout) as client:
        plan = await restore_plan(
            client,
            cluster.name,
            cluster.restore,
            backup_directory=directory,
            etcdctl_tls=tls,
            token=args.token,
            key_path=f"{key_path}.restore",
        )
    if args.format == "json":
        _emit(plan.to_json())
    else:
        sys.stdout.write(plan.to_text())
    return 0


async def _run_restore(cluster: EtcdClusterConfig, key_path: str, args: Any) -> int:
    from kubeballast.core.etcdbackup import newest_verified_backup, restore_snapshot
    from kubeballast.core.etcdops import observe_cluster

    restore = cluster.restore
    snapshot = args.snapshot
    if snapshot is None:
        directory = args.dir or cluster.backup.directory
        if not directory:
            raise ConfigError("--snapshot: give a snapshot, or a backup folder with --dir")
        newest = newest_verified_backup(directory, cluster.name)
        if newest is None:
            raise ConfigError(f"--snapshot: no verified backup of {cluster.name!r} in {directory}")
        snapshot = str(newest.path)
    members = {m.name: m for m in restore.members}
    peer_url = args.peer_url or (members[args.member].peer_url if args.member in members else None)
    initial = args.initial_cluster or (
        ",".join(f"{m.name}={m.peer_url}" for m in restore.members) if restore.members else None
    )
    if peer_url is None or initial is None:
        # Not configured: the live member list knows the names and peer URLs.
        async with _client(cluster, key_path, args.timeout) as client:
            view = await observe_cluster(client, cluster.name)
        live = {m.name: m for m in view.members if m.name and m.peer_urls}
        if peer_url is None and args.member in live:
            peer_url = live[args.member].peer_urls[0]
        if initial is None and live:
            initial = ",".join(f"{name}={m.peer_urls[0]}" for name, m in live.items())
    if peer_url is None or initial is None:
        raise ConfigError(
            f"--peer-url/--initial-cluster: not given, not in {key_path}.restore.members,"
            " and no member answers to list them"
        )
    token = args.token or restore.initial_cluster_token
    if not token:
        raise ConfigError("--token: give the new cluster's --initial-cluster-token")
    try:
        result = await restore_snapshot(
            snapshot,
            data_dir=args.data_dir or restore.restore_data_dir,
            name=args.member,
            initial_cluster=initial,
            initial_cluster_token=token,
            initial_advertise_peer_urls=peer_url,
            etcdctl=args.etcdctl or cluster.backup.etcdctl,
        )
    except KubeBallastError as error:
        if isinstance(error, ConfigError):
            raise
        log.error("etcd restore failed: %s", error)
        _emit(_failure("restore", cluster.name, error))
        return 1
    _emit({**result.to_json(), "ok": True})
    return 0


async def _run_defrag(cluster: EtcdClusterConfig, key_path: str, args: Any) -> int:
    from kubeballast.core.etcdops import DefragThresholds, defragment

    # The snapshot first is part of executing; a dry run needs no backup folder.
    wanted = args.execute and not args.no_backup
    settings = _backup_settings(args, cluster, key_path) if wanted else None
    thresholds = DefragThresholds(
        max_in_use_ratio=args.max_in_use_ratio, min_reclaimable_bytes=args.min_reclaimable
    )
    async with _client(cluster, key_path, args.timeout) as client:
        try:
            result = await defragment(
                client,
                cluster.name,
                thresholds=thresholds,
                observe_seconds=args.observe,
                backup_settings=settings,
                dry_run=not args.execute,
                health_timeout=args.health_timeout,
            )
        except KubeBallastError as error:
            log.error("etcd defrag of %s: %s", cluster.name, error)
            _emit(_failure("defrag", cluster.name, error))
            return 1
    _emit({**result.to_json(), "ok": True})
    return 0


async def _run_nospace(cluster: EtcdClusterConfig, key_path: str, args: Any) -> int:
    from kubeballast.core.etcdops import recover_nospace

    # The snapshot first is part of executing; a dry run needs no backup folder.
    wanted = args.execute and not args.no_backup
    settings = _backup_settings(args, cluster, key_path) if wanted else None
    async with _client(cluster, key_path, args.timeout) as client:
        try:
            result = await recover_nospace(
                client,
                cluster.name,
                dry_run=not args.execute,
                backup_settings=settings,
                deadline_seconds=args.deadline,
                health_timeout=args.health_timeout,
            )
        except KubeBallastError as error:
            log.error("etcd recover-nospace of %s: %s", cluster.name, error)
            _emit(_failure("recover-nospace", cluster.name, error))
            return 1
    _emit({**result.to_json(), "ok": True})
    return 0


def run(args: argparse.Namespace, config: Config) -> int:
    """Run the parsed action against the chosen cluster; the exit status."""
    cluster, key_path = _cluster(args, config)
    if args.action == "backup" and args.every is not None:
        if args.every <= 0:
            raise ConfigError("--every: must be more than 0 seconds")
        settings = _backup_settings(args, cluster, key_path)
        return run_until_signalled(_backup_loop(cluster, key_path, settings, args))
    runners = {
        "backup": _run_backup,
        "restore-plan": _run_plan,
        "restore": _run_restore,
        "defrag": _run_defrag,
        "recover-nospace": _run_nospace,
    }
    return asyncio.run(runners[args.action](cluster, key_path, args))
