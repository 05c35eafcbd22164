"""Kubeconfig files for clients of the simulator, and a test helper that loads one.

The simulator is a stand-in for a real cluster, so clients reach it the way they reach
any cluster: through a kubeconfig (kubectl, kubernetes-asyncio, client-go and the
product's own collectors all read the same file). ``run_simulator`` writes one when
``SimulatorSettings.kubeconfig_path`` is set; tests load it with :func:`api_client` so
they exercise the same configuration path a user's client does.

The server speaks plain HTTP on loopback (no certificates to generate or trust), and
authenticates with a bearer token written inline: the file is created mode 0600, like
the admin.conf kubeadm writes, because the token is the cluster-admin credential.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

CLUSTER_NAME = "kube-ballast-sim"
CONTEXT_NAME = "kube-ballast-sim"


def kubeconfig_dict(
    server_url: str, token: str, user: str = "kube-ballast-admin"
) -> dict[str, Any]:
    """The kubeconfig document (``apiVersion: v1, kind: Config``) for one server and user."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": server_url}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": CONTEXT_NAME,
                "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": "default"},
            }
        ],
        "current-context": CONTEXT_NAME,
    }


def write_kubeconfig(
    path: str | os.PathLike[str],
    server_url: str,
    token: str,
    user: str = "kube-ballast-admin",
) -> None:
    """Write a kubeconfig for ``server_url`` with a bearer ``token``, mode 0600.

    Written to a temporary file in the same directory and renamed into place, so a
    client polling for the file never reads half of it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(kubeconfig_dict(server_url, token, user), sort_keys=False)
    fd, tmp = tempfile.mkstemp(prefix=".kubeconfig-", dir=target.parent)
    try:
        # mkstemp creates the file 0600 already; the chmod states the intent.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def api_client(kubeconfig_path: str | os.PathLike[str]) -> ApiClient:
    """A kubernetes-asyncio ``ApiClient`` configured from ``kubeconfig_path`` (for tests).

    It gets a fresh ``Configuration`` rather than the library's process-wide default, so
    several simulators (one per test) never share credentials. The caller closes it.
    """
    # Imported here: kubernetes-asyncio takes about a second to import and only tests
    # and clients need it, not the simulator process itself.
    from kubernetes_asyncio import config
    from kubernetes_asyncio.client import ApiClient, Configuration

    configuration = Configuration()
    await config.load_kube_config(
        config_file=os.fspath(kubeconfig_path),
        client_configuration=configuration,
        persist_config=False,
    )
    return ApiClient(configuration)
