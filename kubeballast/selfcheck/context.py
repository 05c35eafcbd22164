"""What the checks read, read once and shared, gently.

Several checks need the same objects (the node list feeds the scale, sizing, network
and spread checks; the control-plane static pods feed the etcd, apiserver and
controller-manager checks), and a 5000-node / 150 000-pod cluster must not be listed
five times. :class:`Context` reads each kind once, on first demand, and hands the same
result to every check that asks (a shielded task, so a check that times out does not
cancel a read another check waits for).

Reads go through the exporter's :class:`~kubeballast.exporter.kubeobjects.KubeReader`:
paginated LISTs (``limit`` 500, continue tokens pinned to the first page's snapshot),
decoded with msgspec straight into the exporter's slim projections, 429 honoured by
failing the read rather than retrying into a congested apiserver. The brief asked for
``resourceVersion=0`` lists; an apiserver without watch-cache pagination (and the
simulator, which behaves like one) ignores ``limit`` with ``resourceVersion=0`` and
answers 150 000 pods in one 470 MiB response, which is the load this tool must never
add (docs/performance.md measured it at 4x the server CPU of paging), so the reader's
consistent paginated list is used, as the exporter does.

Nothing here writes: every request is a GET (the read-only test counts the
simulator's revision and mutating requests around a whole run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec

from kubeballast.core.config import (
    ClusterStateConfig,
    EtcdClusterConfig,
    KubernetesAccessConfig,
    TargetConfig,
)
from kubeballast.exporter.kubeobjects import KubeReader, object_path
from kubeballast.exporter.network import DEFAULT_CNI_DAEMONSETS
from kubeballast.exporter.projections import (
    NodeP,
    PodP,
    RawDeployment,
    RawNode,
    RawPod,
    RawReplicaSet,
    RawStatefulSet,
    ReplicaSetP,
    WorkloadP,
    decode_deployment,
    decode_node,
    decode_pod,
    decode_replicaset,
    decode_statefulset,
)

__all__ = ["Context", "Settings", "StaticPod"]

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """The inputs of one run (the command line builds them from flags and the config)."""

    kubernetes: KubernetesAccessConfig = field(default_factory=KubernetesAccessConfig)
    state: ClusterStateConfig = field(default_factory=ClusterStateConfig)
    """Scale limits, zone and control-plane labels: the exporter's own settings."""
    etcd: tuple[EtcdClusterConfig, ...] = ()
    controller_managers: tuple[TargetConfig, ...] = ()
    network_daemonsets: tuple[str, ...] = DEFAULT_CNI_DAEMONSETS
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    receiver_url: str | None = None
    alerts_dir: Path | None = None
    """The rule files (``alerts/*.yaml``); None: not available, the alert checks SKIP."""
    runbooks_dir: Path | None = None
    """``docs/runbooks``; None: runbooks are not checked on disk."""
    congestion_window_seconds: float = 3.0
    """Seconds between the two scrapes of each apiserver's /metrics the congestion
    verdict compares."""
    http_timeout_seconds: float = 10.0
    page_size: int = 500


@dataclass(frozen=True)
class StaticPod:
    """A control-plane pod of kube-system and the flags it runs with."""

    name: str
    component: str
    node: str
    flags: Mapping[str, str]
    """``--name=value`` (``--flag`` alone reads as "true"); the last one wins."""


class _Container(msgspec.Struct):
    command: list[str] = msgspec.field(default_factory=list)
    args: list[str] = msgspec.field(default_factory=list)


class _Spec(msgspec.Struct, rename="camel"):
    node_name: str = ""
    containers: list[_Container] = msgspec.field(default_factory=list)


class _Meta(msgspec.Struct):
    name: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class _StaticPodRaw(msgspec.Struct):
    metadata: _Meta = msgspec.field(default_factory=_Meta)
    spec: _Spec = msgspec.field(default_factory=_Spec)


def parse_flags(words: list[str]) -> dict[str, str]:
    """``--a=b --c`` -> {"a": "b", "c": "true"}; a flag's separate value word is taken
    when it does not start with ``-``."""
    flags: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("--"):
            continue
        name, sep, value = word[2:].partition("=")
        if not sep:
            if index < len(words) and not words[index].startswith("-"):
                value = words[index]
                index += 1
            else:
                value = "true"
        flags[name] = value
    return flags


def _static_pod(raw: _StaticPodRaw) -> StaticPod:
    words: list[str] = []
    for container in raw.spec.containers[:1]:
        words = [*container.command, *container.args]
    return StaticPod(
        name=raw.metadata.name,
        component=raw.metadata.labels.get("component", ""),
        node=raw.spec.node_name,
        flags=parse_flags(words),
    )


class Context:
    """The run's connections and the objects read so far.

    ``api`` is the kubernetes-asyncio ``ApiClient`` (the caller closes it); ``now``
    is the clock the freshness checks compare with (tests inject the simulator's).
    """

    def __init__(
        self, settings: Settings, api: Any, *, now: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.api = api
        self.now = now
        self.reader = KubeReader(self._client, page_size=settings.page_size)
        self._shared: dict[str, asyncio.Task[Any]] = {}
        self._http: aiohttp.ClientSession | None = None

    async def _client(self) -> Any:
        return self.api

    @property
    def server(self) -> str:
        return str(getattr(getattr(self.api, "configuration", None), "host", "") or "")

    async def shared(self, key: str, factory: Callable[[], Awaitable[T]]) -> T:
        """``factory()``'s result, computed once per run whoever asks first."""
        task = self._shared.get(key)
        if task is None:
            task = asyncio.ensure_future(factory())
            self._shared[key] = task
        result: T = await asyncio.shield(task)
        return result

    def http(self) -> aiohttp.ClientSession:
        """A session for Prometheus, Alertmanager and the receiver (not the apiserver)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.http_timeout_seconds)
            )
        return self._http

    async def close(self) -> None:
        tasks = list(self._shared.values())
        for task in tasks:
            task.cancel()
        # Waited for (cancelled or failed alike): nothing is left running or unretrieved.
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- the Kubernetes objects ----------------------------------------------------------

    async def nodes(self) -> tuple[NodeP, ...]:
        async def read() -> tuple[NodeP, ...]:
            listed = await self.reader.list(
                object_path("v1", "nodes"), RawNode, project=decode_node
            )
            return tuple(listed.items)

        return await self.shared("nodes", read)

    async def pods(self) -> tuple[PodP, ...]:
        async def read() -> tuple[PodP, ...]:
            listed = await self.reader.list(object_path("v1", "pods"), RawPod, project=decode_pod)
            return tuple(listed.items)

        return await self.shared("pods", read)

    async def replicasets(self) -> dict[str, ReplicaSetP]:
        async def read() -> dict[str, ReplicaSetP]:
            listed = await self.reader.list(
                object_path("apps/v1", "replicasets"), RawReplicaSet, project=decode_replicaset
            )
            return {f"{rs.namespace}/{rs.name}": rs for rs in listed.items}

        return await self.shared("replicasets", read)

    async def workloads(self) -> tuple[WorkloadP, ...]:
        async def read() -> tuple[WorkloadP, ...]:
            deployments, statefulsets = await asyncio.gather(
                self.reader.list(
                    object_path("apps/v1", "deployments"), RawDeployment, project=decode_deployment
                ),
                self.reader.list(
                    object_path("apps/v1", "statefulsets"),
                    RawStatefulSet,
                    project=decode_statefulset,
                ),
            )
            return (*deployments.items, *statefulsets.items)

        return await self.shared("workloads", read)

    async def static_pods(self) -> tuple[StaticPod, ...]:
        """The control-plane pods of kube-system (``tier=control-plane``)."""

        async def read() -> tuple[StaticPod, ...]:
            listed = await self.reader.list(
                object_path("v1", "pods", "kube-system"),
                _StaticPodRaw,
                project=_static_pod,
                label_selector="tier=control-plane",
            )
            return tuple(sorted(listed.items, key=lambda p: p.name))

        return await self.shared("static_pods", read)

    async def static_pods_of(self, component: str) -> tuple[StaticPod, ...]:
        return tuple(p for p in await self.static_pods() if p.component == component)

    async def list_raw(self, path: str) -> tuple[dict[str, Any], ...]:
        """A small collection as plain JSON objects (FlowSchemas, policies)."""

        async def read() -> tuple[dict[str, Any], ...]:
            listed = await self.reader.list(path, dict[str, Any])
            return tuple(listed.items)

        return await self.shared(f"raw:{path}", read)

    async def get_raw(self, path: str) -> dict[str, Any] | None:
        """One object as plain JSON; None when it does not exist."""
        return await self.reader.get(path, dict[str, Any])

    async def api_text(self, path: str) -> tuple[int, str]:
        """GET a non-resource path of the apiserver (``/metrics``, ``/readyz``)."""
        self.reader.requests += 1
        response = await self.api.call_api(
            path,
            "GET",
            header_params={"Accept": "text/plain"},
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
        async with response:
            body = await response.read()
            return int(response.status), body.decode("utf-8", errors="replace")
