"""Fixtures of the receiver's webhook tests; the helpers they use are in
webhook_support.py (see there why they are not here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from webhook_support import (
    PASSWORD,
    TOKEN,
    USER,
    Served,
    ServeFactory,
    TlsFiles,
    make_tls_files,
    serve_app,
)

from kubeballast.core.config import ReceiverAuthConfig, ReceiverConfig


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def receiver_config(token_file: Path, password_file: Path) -> ReceiverConfig:
    """Both schemes configured, default limits."""
    return ReceiverConfig(
        auth=ReceiverAuthConfig(
            bearer_token_file=str(token_file),
            basic_auth_username=USER,
            basic_auth_password_file=str(password_file),
        )
    )


@pytest.fixture
async def serve() -> AsyncIterator[ServeFactory]:
    """``await serve(config, intake)`` serves the receiver's application on loopback."""
    started: list[Served] = []

    async def start(config: ReceiverConfig, intake: Any, **options: Any) -> Served:
        served = await serve_app(config, intake, **options)
        started.append(served)
        return served

    yield start
    for served in started:
        await served.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")
