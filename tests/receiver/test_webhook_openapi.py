"""docs/receiver-openapi.yaml stays true to the code: every route the receiver serves is
described, the webhook's schema requires what the decoder requires, and the metric
outcomes listed are the ones counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from prometheus_client import CollectorRegistry
from webhook_support import RefusingIntake

from kubeballast.core.config import ReceiverConfig
from kubeballast.remediations import payload
from kubeballast.remediations.webhook import OUTCOMES, create_app


@pytest.fixture(scope="module")
def document(repo_root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((repo_root / "docs/receiver-openapi.yaml").read_text())
    return loaded


def test_every_served_route_is_described(
    document: dict[str, Any], receiver_config: ReceiverConfig
) -> None:
    app = create_app(receiver_config, RefusingIntake(), CollectorRegistry())
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served <= described
    # The engine's endpoints, mounted by run_receiver behind the same authentication.
    assert {("/records", "get"), ("/approvals/{id}", "post")} <= described


def _required(struct: type[msgspec.Struct]) -> set[str]:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    return {field.encode_name for field in info.fields if field.required}


def test_the_schemas_require_what_the_decoder_requires(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["WebhookMessage"]["required"]) == _required(payload._WireGroup)
    assert set(schemas["Alert"]["required"]) == _required(payload._WireAlert)


def test_the_documented_outcomes_are_the_counted_ones(document: dict[str, Any]) -> None:
    text = document["paths"]["/metrics"]["get"]["description"]
    listed = text.split("(outcome:")[1].split(")")[0]
    assert [word.strip() for word in listed.replace("\n", " ").split(",")] == list(OUTCOMES)
