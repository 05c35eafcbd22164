"""The one place that turns ``KubernetesAccessConfig`` into a kubernetes-asyncio client.

Each client gets a fresh ``Configuration`` rather than the library's process-wide
default: loading a kubeconfig into the default would let one component's credentials
leak into another's (and, in tests, one simulator's into the next test's). Service
account tokens rotate, so the in-cluster loader is asked to re-read the token when the
library's refresh hook fires (``try_refresh_token``), and ``persist_config`` is off: a
token refreshed by an exec plugin must not be written back into someone's kubeconfig.

:class:`KubeClientProvider` shares one client among the exporter's object sources,
created on first use inside the event loop (aiohttp sessions belong to a loop) and
closed once when the exporter stops.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Mapping
from typing import Any

import aiohttp

from kubeballast.core.config import KubernetesAccessConfig
from kubeballast.core.errors import ConfigError, PermanentError, TemporaryError

__all__ = [
    "ConflictError",
    "ForbiddenError",
    "InvalidError",
    "KubeClientProvider",
    "NotFoundError",
    "StateUnavailableError",
    "kube_call",
    "kube_client",
]

# The type is kubernetes_asyncio.client.ApiClient; kubernetes-asyncio has no type
# information (mypy treats it as Any), and importing it takes about a second, which
# `config check` and `--list-metrics` should not pay, so it is imported when used.
ApiClient = Any


async def kube_client(
    access: KubernetesAccessConfig, key_prefix: str = "exporter.kubernetes"
) -> ApiClient:
    """A new ``ApiClient`` for ``access``; the caller closes it (``await client.close()``).

    ``kubeconfig_path`` loads that file; ``in_cluster`` uses the pod's service account;
    neither uses the usual lookup ($KUBECONFIG, then ~/.kube/config), at call time.
    Raises ``ConfigError`` naming the setting (under ``key_prefix``, where ``access``
    sits in the configuration) when the credentials cannot be loaded.
    """
    from kubernetes_asyncio import config
    from kubernetes_asyncio.client import ApiClient as _ApiClient
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config import ConfigException

    configuration = Configuration()
    try:
        if access.in_cluster:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(
                config_file=(
                    os.fspath(access.kubeconfig_path)
                    if access.kubeconfig_path is not None
                    else None
                ),
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError) as error:
        key = f"{key_prefix}.{'in_cluster' if access.in_cluster else 'kubeconfig_path'}"
        raise ConfigError(f"cannot load Kubernetes credentials: {error}", key_path=key) from error
    return _ApiClient(configuration)


class KubeClientProvider:
    """One shared ``ApiClient``, created on the first :meth:`get`, closed by :meth:`close`."""

    def __init__(self, access: KubernetesAccessConfig) -> None:
        self.access = access
        self._client: ApiClient | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def get(self) -> ApiClient:
        """The shared client (created now if this is the first call)."""
        async with self._lock:
            if self._closed:
                raise RuntimeError("the Kubernetes client provider is closed")
            if self._client is None:
                self._client = await kube_client(self.access)
            return self._client

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            await client.close()


class StateUnavailableError(TemporaryError):
    """The Kubernetes API could not be reached, or kept answering 409/429/5xx."""


# --------------------------------------------------------------------------------------
# Kubernetes calls
# --------------------------------------------------------------------------------------


class NotFoundError(Exception):
    """404 from the API: handled by the caller (create the object, or "not there")."""


class ConflictError(Exception):
    """409 from the API: someone else wrote first; the caller reads again."""


class ForbiddenError(PermanentError):
    """403 from the API: the service account lacks a permission."""


class InvalidError(PermanentError):
    """422 from the API: the request was refused as invalid (a JSON patch whose ``test``
    operation failed, too: someone changed the object in between)."""


async def kube_call(what: str, call: Awaitable[Any]) -> Any:
    """Await ``call`` (a kubernetes-asyncio request), mapping failures to our errors.

    404 and 409 become ``NotFoundError``/``ConflictError``, which callers handle (create
    the object, or read again); 429, 5xx and transport failures are
    ``StateUnavailableError`` (retrying may help, honouring Retry-After); 403 is a
    ``ForbiddenError`` (RBAC: say which permission is missing); any other answer is a
    ``PermanentError``.
    """
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        return await call
    except ApiException as error:
        status = int(error.status or 0)
        if status == 404:
            raise NotFoundError(what) from error
        if status == 409:
            raise ConflictError(what) from error
        if status == 403:
            raise ForbiddenError(f"{what}: HTTP 403 {error.reason}") from error
        if status == 422:
            raise InvalidError(f"{what}: HTTP 422 {error.reason}") from error
        if status == 429 or status >= 500 or status == 0:
            delay = _retry_after(error.headers)
            raise StateUnavailableError(
                f"{what}: HTTP {status} {error.reason}", delay=delay
            ) from error
        raise PermanentError(f"{what}: HTTP {status} {error.reason}") from error
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise StateUnavailableError(f"{what}: {type(error).__name__}: {error}") from error


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
