"""Small blocking HTTP helpers for the demo: it reads JSON and metrics from the parts
it started, on loopback, with the standard library only (the demo's own loops are
simple polling loops, not servers, so they need no event loop).
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kubeballast.core.promtext import parse

TIMEOUT_SECONDS = 10.0


class UnreachableError(Exception):
    """A part of the demo did not answer (yet); the message says which and why."""


def request(
    url: str,
    *,
    method: str = "GET",
    body: object = None,
    token: str | None = None,
    content_type: str = "application/json",
    timeout: float = TIMEOUT_SECONDS,
) -> tuple[int, bytes]:
    """(status, body) of one request; any HTTP status is an answer, no answer raises."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with contextlib.closing(error):
            return error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UnreachableError(f"{url}: {reason}") from None


def get_json(url: str, *, token: str | None = None, timeout: float = TIMEOUT_SECONDS) -> Any:
    status, body = request(url, token=token, timeout=timeout)
    if status != 200:
        raise UnreachableError(f"{url}: HTTP {status}: {body[:200].decode(errors='replace')}")
    return json.loads(body)


def send_json(
    url: str, body: object, *, method: str = "POST", token: str | None = None
) -> tuple[int, Any]:
    status, raw = request(url, method=method, body=body, token=token)
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:
        return status, raw.decode(errors="replace")


def ok(url: str, *, token: str | None = None) -> bool:
    """True when ``url`` answers 200 now."""
    try:
        return request(url, token=token, timeout=3.0)[0] == 200
    except UnreachableError:
        return False


def metrics(url: str, wanted: list[str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The ``wanted`` families of a /metrics page as (labels, value) lists."""
    status, body = request(url)
    if status != 200:
        raise UnreachableError(f"{url}: HTTP {status}")
    families = parse(body.decode(errors="replace"), wanted)
    return {
        name: [(sample.labels, sample.value) for sample in families.get(name, [])]
        for name in wanted
    }


def total(samples: list[tuple[dict[str, str], float]]) -> float:
    return sum(value for _, value in samples if value == value)  # NaN left out


def by_label(samples: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    return {labels.get(label, ""): value for labels, value in samples}


def read_kubeconfig(path: str | Path) -> tuple[str, str]:
    """(server URL, bearer token) of the current context of a kubeconfig."""
    doc: Mapping[str, Any] = yaml.safe_load(Path(path).read_text())
    contexts = {c["name"]: c["context"] for c in doc["contexts"]}
    context = contexts[doc["current-context"]]
    clusters = {c["name"]: c["cluster"] for c in doc["clusters"]}
    users = {u["name"]: u["user"] for u in doc["users"]}
    return str(clusters[context["cluster"]]["server"]), str(users[context["user"]]["token"])
