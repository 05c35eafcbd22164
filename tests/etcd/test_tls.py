"""The etcd client over mutual TLS, as production etcd runs: certificates made with the
openssl binary at test time, a real member started with ``--client-cert-auth``.

Two kinds of mistakes, two kinds of errors. A file that cannot be read or parsed is a
configuration mistake, found when the client is built, and the ``ConfigError`` names
the key (``exporter.etcd.clusters[main].key_file``). Material that loads but does not
fit the server (the wrong CA, no client certificate) only shows at the handshake: the
member is unreachable to us, an ``EtcdTLSError`` (an ``EtcdUnavailable``) whose one
line says why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from harness import EtcdCluster, TlsMaterial

from kubeballast.core.config import EtcdClusterConfig
from kubeballast.core.errors import ConfigError
from kubeballast.core.etcd import EtcdClient, EtcdTLSError, EtcdUnavailable

PREFIX = "exporter.etcd.clusters[main]"


@pytest.fixture
def tls_etcd(etcd_cluster: Callable[..., EtcdCluster], tls_material: TlsMaterial) -> EtcdCluster:
    return etcd_cluster(1, tls=tls_material)


def client_for(
    endpoint: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
) -> EtcdClient:
    config = EtcdClusterConfig(
        name="main",
        endpoints=(endpoint,),
        ca_file=None if ca is None else str(ca),
        cert_file=None if cert is None else str(cert),
        key_file=None if key is None else str(key),
    )
    return EtcdClient.from_config(config, config_path=PREFIX, timeout=10.0)


async def test_the_right_material_works(tls_etcd: EtcdCluster, tls_material: TlsMaterial) -> None:
    endpoint = tls_etcd.endpoints[0]
    assert endpoint.startswith("https://127.0.0.1:")
    pki = tls_material
    async with client_for(endpoint, pki.ca_cert, pki.client_cert, pki.client_key) as client:
        assert (await client.health(endpoint)).healthy
        status = await client.status(endpoint)
        assert status.member_id == tls_etcd.members[0].member_id
        revision = await client.put(endpoint, "/over/tls", b"yes")
        assert (await client.range(endpoint, "/over/tls")).kvs[0].mod_revision == revision
        assert "etcd_server_has_leader 1" in await client.metrics(endpoint)


async def test_a_wrong_ca_fails_verification(
    tls_etcd: EtcdCluster, tls_material: TlsMaterial
) -> None:
    endpoint = tls_etcd.endpoints[0]
    pki = tls_material
    async with client_for(endpoint, pki.other_ca_cert, pki.client_cert, pki.client_key) as client:
        with pytest.raises(EtcdTLSError) as caught:
            await client.status(endpoint)
    error = caught.value
    assert isinstance(error, EtcdUnavailable)
    message = str(error)
    assert message.startswith(f"etcd {endpoint}: unavailable: TLS: certificate verify failed: ")
    assert "unable to get local issuer certificate" in message
    assert "\n" not in message


async def test_no_client_certificate_is_refused_by_the_server(
    tls_etcd: EtcdCluster, tls_material: TlsMaterial
) -> None:
    endpoint = tls_etcd.endpoints[0]
    async with client_for(endpoint, tls_material.ca_cert, None, None) as client:
        with pytest.raises(EtcdTLSError) as caught:
            await client.health(endpoint)
    message = str(caught.value)
    assert message.startswith(f"etcd {endpoint}: unavailable: TLS: ")
    assert "refused our client certificate (alert: " in message
    assert "\n" not in message


# ---------------------------------------------------- unusable files: ConfigError


def config_error(build: Callable[[], EtcdClient]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build()
    assert "\n" not in str(caught.value)
    return caught.value


def test_a_missing_key_file_names_its_key(tls_material: TlsMaterial, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "client.key"
    pki = tls_material
    error = config_error(
        lambda: client_for("https://127.0.0.1:1", pki.ca_cert, pki.client_cert, missing)
    )
    assert error.key_path == f"{PREFIX}.key_file"
    assert str(error) == f"{PREFIX}.key_file: cannot read {missing}: No such file or directory"


def test_a_garbage_key_file_names_its_key(tls_material: TlsMaterial, tmp_path: Path) -> None:
    garbage = tmp_path / "client.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    pki = tls_material
    error = config_error(
        lambda: client_for("https://127.0.0.1:1", pki.ca_cert, pki.client_cert, garbage)
    )
    assert error.key_path == f"{PREFIX}.key_file"
    assert str(error).startswith(f"{PREFIX}.key_file: cannot load private key {garbage}")


def test_the_key_of_another_certificate_names_the_key(tls_material: TlsMaterial) -> None:
    pki = tls_material
    error = config_error(
        lambda: client_for("https://127.0.0.1:1", pki.ca_cert, pki.client_cert, pki.server_key)
    )
    assert error.key_path == f"{PREFIX}.key_file"
    assert "not the key of cert_file" in str(error)


def test_a_garbage_certificate_names_its_key(tls_material: TlsMaterial, tmp_path: Path) -> None:
    garbage = tmp_path / "client.crt"
    garbage.write_text("not a certificate\n")
    pki = tls_material
    error = config_error(
        lambda: client_for("https://127.0.0.1:1", pki.ca_cert, garbage, pki.client_key)
    )
    assert error.key_path == f"{PREFIX}.cert_file"
    assert str(error).startswith(f"{PREFIX}.cert_file: cannot load certificate {garbage}: ")


def test_a_key_given_as_the_certificate_names_the_certificate(tls_material: TlsMaterial) -> None:
    pki = tls_material
    error = config_error(
        lambda: client_for("https://127.0.0.1:1", pki.ca_cert, pki.client_key, pki.client_key)
    )
    assert error.key_path == f"{PREFIX}.cert_file"


def test_a_missing_or_garbage_ca_names_its_key(tls_material: TlsMaterial, tmp_path: Path) -> None:
    pki = tls_material
    missing = tmp_path / "ca.crt"
    error = config_error(
        lambda: client_for("https://127.0.0.1:1", missing, pki.client_cert, pki.client_key)
    )
    assert str(error) == f"{PREFIX}.ca_file: cannot read {missing}: No such file or directory"

    missing.write_text("garbage\n")
    error = config_error(
        lambda: client_for("https://127.0.0.1:1", missing, pki.client_cert, pki.client_key)
    )
    assert error.key_path == f"{PREFIX}.ca_file"
    assert str(error).startswith(f"{PREFIX}.ca_file: cannot load CA certificates from {missing}: ")


def test_a_certificate_without_its_key_is_refused(tls_material: TlsMaterial) -> None:
    error = config_error(
        lambda: EtcdClient(
            ["https://127.0.0.1:1"], cert_file=tls_material.client_cert, config_path=PREFIX
        )
    )
    assert error.key_path == f"{PREFIX}.key_file"
