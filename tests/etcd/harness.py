"""Real etcd clusters for tests: started from the installed binary, on loopback, in the
test's temporary folder, and always stopped.

The etcd client and everything built on it (probes, the NOSPACE recovery) are tested
against the real server, not a fake: the interesting behaviour is etcd's (what the
gateway sends when there is no leader, how NOSPACE clears, what a snapshot stream looks
like), and a fake would only repeat our own assumptions back to us.

Ports are chosen at run time: all of a cluster's ports are reserved together by binding
port 0, then released just before etcd binds them. Another process can take one in
between; etcd then exits with "address already in use" and the cluster is started
again on new ports (up to three times). Each cluster has its own
``--initial-cluster-token``, so a member can never join another test's cluster through
a reused port.

The timing flags are chosen for a loaded two-core CI machine rather than for speed: a
100 ms heartbeat and a 1 s election timeout elect a new leader in one to two seconds,
while a test process hogging the CPU for a few hundred milliseconds does not make a
follower call a spurious election (which a 50/500 setting did in trials).

The readiness checks here use the standard library's HTTP client, not the code under
test: a bug in ``kubeballast.core.etcd`` must not be able to make the harness believe a
cluster is up. ``leader()`` does use the client, as the tests of the client want.

Every process is started in its own session (process group) and recorded; ``close()``
kills them all, an ``atexit`` hook does the same if a test run is interrupted, and
each member asks the kernel to kill it when the test process dies (PR_SET_PDEATHSIG),
for runs that end without running ``atexit``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeballast.core.etcd import EtcdClient, MemberStatus

HEARTBEAT_MS = 100
ELECTION_MS = 1000

START_TIMEOUT = 60.0
"""Seconds for a cluster to become healthy: generous, a loaded CI machine fsyncs slowly."""

_LIVE: dict[int, subprocess.Popen[bytes]] = {}
"""Every etcd process started and not yet reaped, by PID (for the atexit hook)."""


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # Each member is a session leader, so its process group id is its PID.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    _LIVE.pop(process.pid, None)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGKILL it when the thread that started
    it dies. That covers what ``atexit`` cannot: a test run killed by SIGKILL or
    SIGTERM. (The harness starts members from the main thread, which lives as long
    as the test process.)"""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_LIVE.values()):
        _kill_group(process)


def binary(name: str) -> str:
    """The path of an etcd binary; the test FAILS when it is missing (the Debian
    packages etcd-server and etcd-client install them; ``scripts/test`` does that)."""
    path = shutil.which(name) or (
        f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None
    )
    if path is None:
        pytest.fail(f"{name} is not installed (Debian: apt-get install etcd-server etcd-client)")
    return path


def reserve_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# ------------------------------------------------------------------------------ TLS


@dataclass(frozen=True)
class TlsMaterial:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed,
    plus an unrelated CA for tests that need the wrong one."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [binary("openssl"), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def make_tls_material(directory: Path) -> TlsMaterial:
    """Generate the certificates with the openssl binary (P-256 keys: fast to make).

    Both leaf certificates carry the extended key usages etcd's Go TLS stack checks
    (serverAuth for the server, clientAuth for the client under
    ``--client-cert-auth``) and the server's carries IP:127.0.0.1, since Go and
    Python both ignore the common name when matching a host.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", *key_args, "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
            "-days", "2", "-subj", f"/CN=kube-ballast test {ca}", *ca_ext,
            cwd=directory,
        )  # fmt: skip
    leaves = {
        "server": ("subjectAltName=IP:127.0.0.1,DNS:localhost", "serverAuth,clientAuth"),
        "client": ("subjectAltName=DNS:kube-ballast", "clientAuth"),
    }
    for leaf, (san, usage) in leaves.items():
        (directory / f"{leaf}.ext").write_text(
            f"{san}\nextendedKeyUsage={usage}\nkeyUsage=critical,digitalSignature\n"
        )
        _openssl(
            "req", "-new", *key_args, "-keyout", f"{leaf}.key", "-out", f"{leaf}.csr",
            "-subj", f"/CN=kube-ballast test {leaf}",
            cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{leaf}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{leaf}.ext", "-out", f"{leaf}.crt",
            cwd=directory,
        )  # fmt: skip
    return TlsMaterial(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca_cert=directory / "other-ca.crt",
    )


# -------------------------------------------------------------------------- cluster


class EtcdStartError(RuntimeError):
    """A member did not come up; the message ends with its log."""


@dataclass
class EtcdMember:
    index: int
    name: str
    data_dir: Path
    log_path: Path
    client_port: int = 0
    peer_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    member_id: int = 0
    """etcd's id for this member, known once the cluster has started."""
    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class EtcdCluster:
    """``size`` etcd members on 127.0.0.1, data and logs under ``directory``.

    Call :meth:`start` (blocking until every member reports healthy), then use
    :attr:`endpoints`, :meth:`kill`, :meth:`stop`, :meth:`restart`, :meth:`leader`;
    :meth:`close` always. Members are addressed by index (0-based).
    """

    def __init__(
        self,
        directory: Path,
        size: int = 1,
        *,
        quota_backend_bytes: int | None = None,
        tls: TlsMaterial | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.directory = directory
        self.size = size
        self.quota_backend_bytes = quota_backend_bytes
        self.tls = tls
        self.extra_args = tuple(extra_args)
        self.token = f"kube-ballast-test-{uuid.uuid4().hex[:12]}"
        self.members = [
            EtcdMember(
                index=index,
                name=f"m{index}",
                data_dir=directory / f"m{index}.etcd",
                log_path=directory / f"m{index}.log",
                scheme="https" if tls else "http",
            )
            for index in range(size)
        ]
        self._etcd = binary("etcd")

    # ---------------------------------------------------------------- lifecycle

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of all members, running or not, in index order."""
        return [member.client_url for member in self.members]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every member on fresh ports and wait until all are healthy."""
        for attempt in range(3):
            ports = reserve_ports(2 * self.size)
            for member in self.members:
                member.client_port = ports[2 * member.index]
                member.peer_port = ports[2 * member.index + 1]
                shutil.rmtree(member.data_dir, ignore_errors=True)
            for member in self.members:
                self._launch(member)
            try:
                self.wait_healthy(timeout=timeout)
            except EtcdStartError as error:
                clash = any("address already in use" in m.log_tail(200) for m in self.members)
                self.close()
                if clash and attempt < 2:
                    continue  # another process took a port in between; new ports
                raise error
            break
        for member in self.members:
            member.member_id = self._status(member)["member_id"]

    def _args(self, member: EtcdMember) -> list[str]:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        args = [
            self._etcd,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-token={self.token}",
            "--initial-cluster-state=new",
            f"--heartbeat-interval={HEARTBEAT_MS}",
            f"--election-timeout={ELECTION_MS}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        if self.quota_backend_bytes is not None:
            args.append(f"--quota-backend-bytes={self.quota_backend_bytes}")
        if self.tls is not None:
            args += [
                "--client-cert-auth",
                f"--trusted-ca-file={self.tls.ca_cert}",
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
            ]
        return args + list(self.extra_args)

    def _launch(self, member: EtcdMember) -> None:
        if member.running:
            raise RuntimeError(f"member {member.name} is already running")
        with open(member.log_path, "ab") as log:
            # A new session per member: SIGKILL to its group takes anything it spawned.
            process = subprocess.Popen(
                self._args(member),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        _LIVE[process.pid] = process
        member.process = process

    def kill(self, index: int) -> None:
        """SIGKILL the member (a crash: no clean shutdown, no leadership transfer)."""
        member = self.members[index]
        if member.process is not None:
            member.process.send_signal(signal.SIGKILL)
            self._reap(member)

    def stop(self, index: int, timeout: float = 30.0) -> None:
        """SIGTERM the member and wait for it to exit (SIGKILL after ``timeout``)."""
        member = self.members[index]
        if member.process is None:
            return
        member.process.send_signal(signal.SIGTERM)
        try:
            member.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            member.process.send_signal(signal.SIGKILL)
        self._reap(member)

    def restart(self, index: int, *, wait: bool = True, timeout: float = START_TIMEOUT) -> None:
        """Start a stopped or killed member again with its data dir and ports."""
        member = self.members[index]
        self._launch(member)
        if wait:
            self.wait_healthy([index], timeout=timeout)

    def _reap(self, member: EtcdMember) -> None:
        assert member.process is not None
        _kill_group(member.process)
        member.process = None

    def close(self) -> None:
        """Kill every member (idempotent)."""
        for member in self.members:
            if member.process is not None:
                self._reap(member)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ observation

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return context

    def _request(self, member: EtcdMember, path: str, body: bytes | None) -> tuple[int, bytes]:
        request = urllib.request.Request(
            member.client_url + path, data=body, method="POST" if body is not None else "GET"
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=self._ssl_context()) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def member_health(self, index: int) -> bool | None:
        """What the member's /health says; ``None`` when it does not answer."""
        member = self.members[index]
        try:
            _, body = self._request(member, "/health", None)
        except (OSError, urllib.error.URLError):
            return None
        try:
            return bool(json.loads(body).get("health") == "true")
        except ValueError:
            return None

    def _status(self, member: EtcdMember) -> dict[str, int]:
        _, body = self._request(member, "/v3/maintenance/status", b"{}")
        header = json.loads(body)["header"]
        return {"member_id": int(header["member_id"])}

    def wait_healthy(
        self, indexes: Sequence[int] | None = None, timeout: float = START_TIMEOUT
    ) -> None:
        """Poll until the members' /health says true; ``EtcdStartError`` at the
        deadline or as soon as one of them exits."""
        chosen = [self.members[i] for i in (range(self.size) if indexes is None else indexes)]
        deadline = time.monotonic() + timeout
        pending = list(chosen)
        while pending:
            for member in list(pending):
                if not member.running:
                    raise EtcdStartError(
                        f"etcd member {member.name} exited while starting:\n{member.log_tail()}"
                    )
                if self.member_health(member.index):
                    pending.remove(member)
            if not pending:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {m.name}\n{m.log_tail()}" for m in pending)
                raise EtcdStartError(f"etcd not healthy within {timeout:g} s:\n{logs}")
            time.sleep(0.05)  # polling interval, bounded by the deadline above

    def client(self, *, timeout: float = 5.0) -> EtcdClient:
        """An ``EtcdClient`` for this cluster (with the client certificate under TLS);
        the caller closes it."""
        tls = self.tls
        return EtcdClient(
            self.endpoints,
            ca_file=tls.ca_cert if tls else None,
            cert_file=tls.client_cert if tls else None,
            key_file=tls.client_key if tls else None,
            timeout=timeout,
        )

    async def leader(self, *, within: float = 30.0, not_index: int | None = None) -> int:
        """The index of the leader once every running member answers and names the
        same leader, which is itself running and says so; with ``not_index``, a
        leader other than that member (to wait out a re-election)."""
        running = [m for m in self.members if m.running]
        deadline = time.monotonic() + within
        async with self.client(timeout=2.0) as client:
            while True:
                statuses = await asyncio.gather(
                    *(_status_or_error(client, m.client_url) for m in running)
                )
                seen = dict(zip((m.name for m in running), statuses, strict=True))
                named = {s.leader for s in statuses if isinstance(s, MemberStatus)}
                if len(named) == 1 and len(statuses) == sum(
                    isinstance(s, MemberStatus) for s in statuses
                ):
                    for member, status in zip(running, statuses, strict=True):
                        assert isinstance(status, MemberStatus)
                        if status.is_leader and member.index != not_index:
                            return member.index
                if time.monotonic() > deadline:
                    raise AssertionError(f"no agreed leader within {within:g} s: {seen}")
                await asyncio.sleep(0.05)  # polling interval, bounded by the deadline


async def _status_or_error(client: EtcdClient, endpoint: str) -> MemberStatus | Exception:
    try:
        return await client.status(endpoint)
    except Exception as error:  # reported in the assertion message if it persists
        return error


@contextlib.contextmanager
def running_cluster(directory: Path, size: int = 1, **options: object) -> Iterator[EtcdCluster]:
    """A started cluster, killed on exit whatever happens."""
    cluster = EtcdCluster(directory, size, **options)  # type: ignore[arg-type]
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
