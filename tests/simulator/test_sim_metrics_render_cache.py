"""The simulator's /metrics writer remembers series text but never serves a stale page.

Why: rendering the apiserver's /metrics with prometheus_client's generate_latest was the
largest single CPU cost of the eviction-guard tests (label escaping on every sample of
every scrape). The simulator now writes the classic text format itself and reuses the
text of every series whose value did not change. That is only acceptable if the bytes
are exactly what generate_latest writes, after any sequence of changes, and if a counter
read right after a request shows that request (tests and the exporter rely on it).
"""

from __future__ import annotations

import aiohttp
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubeballast.simulator import apf
from kubeballast.simulator.metrics import ApiserverMetrics, ComponentMetrics
from kubeballast.simulator.server import ApiServer


def assert_same_as_prometheus_client(metrics: ApiserverMetrics | ComponentMetrics) -> None:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    # generate_latest collects too, which resets the inflight watermark: callers compare
    # when no request started since the previous render.
    assert body == generate_latest(metrics.registry)


def test_text_is_byte_identical_to_generate_latest_through_changes() -> None:
    m = ApiserverMetrics(start_time=1700000000.5)
    assert_same_as_prometheus_client(m)
    m.observe_request("get", "", "v1", "pods", "", "namespace", "apiserver", 200, 0.012)
    m.observe_request("list", "apps", "v1", "deployments", "", "cluster", "apiserver", 200, 1.7)
    m.observe_etcd("get", "pods", 0.003)
    m.set_storage_objects({"pods": 5, "leases.coordination.k8s.io": 7})
    assert_same_as_prometheus_client(m)
    # Some series change, others do not; a new series appears between two existing ones.
    m.observe_request("get", "", "v1", "pods", "", "namespace", "apiserver", 200, 0.02)
    m.observe_request("get", "", "v1", "nodes", "", "resource", "apiserver", 404, 0.0)
    m.observe_dropped("update", "coordination.k8s.io", "v1", "leases", "", "resource")
    m.observe_flowcontrol(
        "node-high", "system-node-high", rejected_reason="queue-full", wait_seconds=0.3
    )
    m.observe_flowcontrol("exempt", "exempt", rejected_reason=None, wait_seconds=0.0)
    m.set_storage_objects({"pods": 6})
    m.request_started("get", mutating=False)
    m.request_finished("get", mutating=False)
    # The inflight gauge is a watermark since the previous render, as before.
    peak = b'apiserver_current_inflight_requests{request_kind="readOnly"} '
    assert peak + b"1.0\n" in m.render()[0]
    assert peak + b"0.0\n" in m.render()[0]
    assert_same_as_prometheus_client(m)
    assert_same_as_prometheus_client(m)  # unchanged: all remembered text
    # A stored configuration changes the nominal seats of every level.
    config = apf.Configuration.from_objects(
        apf.default_flowschemas(),
        [
            *apf.default_priority_levels(),
            {
                "metadata": {"name": "extra"},
                "spec": {
                    "type": "Limited",
                    "limited": {
                        "nominalConcurrencyShares": 100,
                        "limitResponse": {"type": "Reject"},
                    },
                },
            },
        ],
    )
    m.set_apf_configuration(config)
    assert_same_as_prometheus_client(m)


def test_component_text_escapes_label_values_as_prometheus_client_does() -> None:
    m = ComponentMetrics("kube-scheduler", start_time=5.0)
    m.set_leader(True, 'odd "lease"\\name\nsecond line')
    m.set_pending_pods("active", 3)
    m.observe_scheduling("scheduled", 0.01)
    assert_same_as_prometheus_client(m)
    m.set_leader(False, 'odd "lease"\\name\nsecond line')
    m.observe_scheduling("unschedulable", 2.5)
    m.set_workqueue("node_lifecycle_controller", 2, 9, 0.5)
    assert_same_as_prometheus_client(m)
    assert b'name="odd \\"lease\\"\\\\name\\nsecond line"} 0.0' in m.render()[0]


def _value(text: str, family: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == family and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_a_scrape_right_after_a_request_shows_it(
    admin_session: aiohttp.ClientSession, apiserver: ApiServer
) -> None:
    pods = {"resource": "pods", "verb": "LIST", "code": "200"}
    async with admin_session.get("/metrics") as resp:
        first = await resp.text()
    for expected in (1, 2, 3):
        async with admin_session.get("/api/v1/pods", params={"limit": "1"}) as resp:
            assert resp.status == 200
        async with admin_session.get("/metrics") as resp:
            text = await resp.text()
        assert (
            _value(text, "apiserver_request_total", **pods)
            == _value(first, "apiserver_request_total", **pods) + expected
        )
    # Each scrape is itself dispatched by APF before the page is written.
    dispatched = {"flow_schema": "exempt", "priority_level": "exempt"}
    assert _value(text, "apiserver_flowcontrol_dispatched_requests_total", **dispatched) > _value(
        first, "apiserver_flowcontrol_dispatched_requests_total", **dispatched
    )


async def test_openmetrics_is_still_served(admin_session: aiohttp.ClientSession) -> None:
    async with admin_session.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    ) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        body = await resp.text()
    assert body.endswith("# EOF\n")
    assert "# TYPE apiserver_flowcontrol_nominal_limit_seats gauge" in body
