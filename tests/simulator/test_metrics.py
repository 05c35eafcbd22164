"""The simulated components' /metrics: real names, labels, buckets and values, and promtool.

Expected names and label sets are kube-apiserver's (staging/src/k8s.io/apiserver/pkg/
endpoints/metrics/metrics.go, pkg/util/flowcontrol/metrics/metrics.go, pkg/storage/etcd3/
metrics/metrics.go), kube-scheduler's and the controller-manager's.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from kubeballast.simulator.metrics import ApiserverMetrics, ComponentMetrics

PROMTOOL = "/usr/bin/promtool"
START = 1_700_000_000.0

Labels = dict[str, str]


def samples(body: bytes) -> dict[str, list[tuple[Labels, float]]]:
    """Exposed sample name -> [(labels, value)], from the classic text format."""
    out: dict[str, list[tuple[Labels, float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(body: bytes, metric: str, /, **labels: str) -> float:
    """The one sample of ``metric`` with exactly these labels."""
    matches = [v for lbls, v in samples(body).get(metric, []) if lbls == labels]
    assert len(matches) == 1, f"{metric}{labels}: {matches} in {sorted(samples(body))}"
    return matches[0]


def types(body: bytes) -> dict[str, str]:
    """The exact family names and types of the # TYPE lines."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", body.decode(), re.MULTILINE))


def promtool_check(body: bytes) -> str:
    # Fails rather than skips when promtool is missing: the check is part of the contract.
    assert shutil.which(PROMTOOL), f"{PROMTOOL} is required for this test (apt: prometheus)"
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, check=False
    )
    return (result.stdout + result.stderr).decode() + ("" if result.returncode == 0 else "FAIL")


REQUEST_LABELS = {
    "dry_run": "",
    "group": "",
    "version": "v1",
    "resource": "pods",
    "subresource": "",
    "scope": "namespace",
    "component": "apiserver",
}


@pytest.fixture
def apiserver() -> ApiserverMetrics:
    m = ApiserverMetrics(start_time=START)
    m.observe_request("list", "", "v1", "pods", "", "namespace", "apiserver", 200, 0.03)
    m.observe_request("LIST", "", "v1", "pods", "", "namespace", "apiserver", 200, 0.6)
    m.observe_request("list", "", "v1", "pods", "", "namespace", "apiserver", 500, 0.005)
    m.observe_request(
        "update", "coordination.k8s.io", "v1", "leases", "", "resource", "apiserver", 200, 0.002
    )
    m.observe_dropped("patch", "", "v1", "nodes", "status", "resource")
    m.observe_flowcontrol(
        "node-high", "system-node-high", rejected_reason="queue-full", wait_seconds=0.0
    )
    m.note_enqueued("workload-low", "service-accounts")
    m.note_enqueued("workload-low", "service-accounts")
    m.observe_flowcontrol(
        "workload-low",
        "service-accounts",
        rejected_reason=None,
        wait_seconds=0.3,
        inqueue_delta=-1,
    )
    m.observe_flowcontrol("exempt", "exempt", rejected_reason=None, wait_seconds=0.0)
    m.observe_etcd("get", "pods", 0.004)
    m.observe_etcd("update", "leases.coordination.k8s.io", 0.02)
    m.set_storage_objects({"pods": 150_000, "leases.coordination.k8s.io": 5003})
    m.longrunning_started("watch", "", "v1", "pods", "", "cluster")
    return m


def test_exposed_names_and_types_are_the_real_ones(apiserver: ApiserverMetrics) -> None:
    body, content_type = apiserver.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert types(body) == {
        "apiserver_request_total": "counter",
        "apiserver_request_duration_seconds": "histogram",
        "apiserver_request_terminations_total": "counter",
        "apiserver_current_inflight_requests": "gauge",
        "apiserver_longrunning_requests": "gauge",
        "apiserver_flowcontrol_rejected_requests_total": "counter",
        "apiserver_flowcontrol_dispatched_requests_total": "counter",
        "apiserver_flowcontrol_current_inqueue_requests": "gauge",
        "apiserver_flowcontrol_request_wait_duration_seconds": "histogram",
        "apiserver_flowcontrol_nominal_limit_seats": "gauge",
        "apiserver_storage_objects": "gauge",
        "etcd_request_duration_seconds": "histogram",
        "etcd_requests_total": "counter",
        "process_start_time_seconds": "gauge",
    }
    # prometheus_client's own counters would add *_created series; the real ones have none.
    assert "_created" not in body.decode()
    assert "# HELP apiserver_request_total [STABLE] Counter of apiserver requests" in body.decode()


def test_requests_are_counted_by_verb_code_and_scope(apiserver: ApiserverMetrics) -> None:
    body, _ = apiserver.render()
    # "list" and "LIST" are the same series: request-info verbs become metric verbs.
    assert value(body, "apiserver_request_total", verb="LIST", code="200", **REQUEST_LABELS) == 2
    assert value(body, "apiserver_request_total", verb="LIST", code="500", **REQUEST_LABELS) == 1
    lease_labels = {
        **REQUEST_LABELS,
        "group": "coordination.k8s.io",
        "resource": "leases",
        "scope": "resource",
    }
    # An update is reported as PUT, as the installer's route does.
    assert value(body, "apiserver_request_total", verb="PUT", code="200", **lease_labels) == 1
    # APF's 429: counted and terminated, never timed by the handler.
    status_labels = {**REQUEST_LABELS, "resource": "nodes", "subresource": "status"}
    status_labels["scope"] = "resource"
    assert value(body, "apiserver_request_total", verb="PATCH", code="429", **status_labels) == 1
    terminated = {k: v for k, v in status_labels.items() if k != "dry_run"}
    assert (
        value(body, "apiserver_request_terminations_total", verb="PATCH", code="429", **terminated)
        == 1
    )
    timed = {
        lbls["resource"] for lbls, _ in samples(body)["apiserver_request_duration_seconds_count"]
    }
    assert timed == {"pods", "leases"}


def test_request_durations_use_the_real_buckets(apiserver: ApiserverMetrics) -> None:
    body, _ = apiserver.render()
    buckets = {
        lbls["le"]: v
        for lbls, v in samples(body)["apiserver_request_duration_seconds_bucket"]
        if lbls["resource"] == "pods"
    }
    assert list(buckets) == [
        "0.005", "0.025", "0.05", "0.1", "0.2", "0.4", "0.6", "0.8", "1", "1.25", "1.5", "2",
        "3", "4", "5", "6", "8", "10", "15", "20", "30", "45", "60", "+Inf",
    ]  # fmt: skip
    # Observations 0.005 (on a bound: counted in it), 0.03 and 0.6.
    assert buckets["0.005"] == 1
    assert buckets["0.025"] == 1
    assert buckets["0.05"] == 2
    assert buckets["0.6"] == 3
    assert buckets["+Inf"] == 3
    pods = {"verb": "LIST", **REQUEST_LABELS}
    assert value(body, "apiserver_request_duration_seconds_count", **pods) == 3
    assert value(body, "apiserver_request_duration_seconds_sum", **pods) == pytest.approx(0.635)


def test_flowcontrol_series(apiserver: ApiserverMetrics) -> None:
    body, _ = apiserver.render()
    assert (
        value(
            body,
            "apiserver_flowcontrol_rejected_requests_total",
            flow_schema="system-node-high",
            priority_level="node-high",
            reason="queue-full",
        )
        == 1
    )
    assert (
        value(
            body,
            "apiserver_flowcontrol_current_inqueue_requests",
            flow_schema="service-accounts",
            priority_level="workload-low",
        )
        == 1
    )
    wait = "apiserver_flowcontrol_request_wait_duration_seconds_count"
    assert value(body, wait, flow_schema="service-accounts", priority_level="workload-low",
                 execute="true") == 1  # fmt: skip
    assert value(body, wait, flow_schema="system-node-high", priority_level="node-high",
                 execute="false") == 1  # fmt: skip
    # Exempt requests never queue, so they have no wait observation, but are dispatched.
    assert not [lbls for lbls, _ in samples(body)[wait] if lbls["priority_level"] == "exempt"]
    assert (
        value(
            body,
            "apiserver_flowcontrol_dispatched_requests_total",
            flow_schema="exempt",
            priority_level="exempt",
        )
        == 1
    )
    seats = {
        lbls["priority_level"]: v
        for lbls, v in samples(body)["apiserver_flowcontrol_nominal_limit_seats"]
    }
    assert seats == {
        "catch-all": 13,
        "exempt": 0,
        "global-default": 49,
        "leader-election": 25,
        "node-high": 98,
        "system": 74,
        "workload-high": 98,
        "workload-low": 245,
    }


def test_storage_and_etcd_series(apiserver: ApiserverMetrics) -> None:
    body, _ = apiserver.render()
    assert value(body, "apiserver_storage_objects", resource="pods") == 150_000
    assert value(body, "apiserver_storage_objects", resource="leases.coordination.k8s.io") == 5003
    assert value(body, "etcd_requests_total", operation="get", type="pods") == 1
    assert value(body, "etcd_request_duration_seconds_count", operation="get", type="pods") == 1
    assert (
        value(
            body, "etcd_request_duration_seconds_bucket", operation="get", type="pods", le="0.005"
        )
        == 1
    )
    apiserver.set_storage_objects({"pods": 10})  # others keep their last value
    body, _ = apiserver.render()
    assert value(body, "apiserver_storage_objects", resource="pods") == 10
    assert value(body, "apiserver_storage_objects", resource="leases.coordination.k8s.io") == 5003


def test_inflight_gauges_show_the_peak_since_the_last_scrape() -> None:
    m = ApiserverMetrics(start_time=START)
    for _ in range(3):
        m.request_started("get", mutating=False)
    m.request_started("create", mutating=True)
    m.request_started("watch", mutating=False)  # long-running: holds no seat
    for _ in range(3):
        m.request_finished("get", mutating=False)
    body, _ = m.render()
    assert value(body, "apiserver_current_inflight_requests", request_kind="readOnly") == 3
    assert value(body, "apiserver_current_inflight_requests", request_kind="mutating") == 1
    body, _ = m.render()
    assert value(body, "apiserver_current_inflight_requests", request_kind="readOnly") == 0
    assert value(body, "apiserver_current_inflight_requests", request_kind="mutating") == 1


def test_longrunning_requests_go_up_and_down(apiserver: ApiserverMetrics) -> None:
    watch = {
        "verb": "WATCH",
        "group": "",
        "version": "v1",
        "resource": "pods",
        "subresource": "",
        "scope": "cluster",
        "component": "apiserver",
    }
    assert value(apiserver.render()[0], "apiserver_longrunning_requests", **watch) == 1
    apiserver.longrunning_finished("watch", "", "v1", "pods", "", "cluster")
    assert value(apiserver.render()[0], "apiserver_longrunning_requests", **watch) == 0


def test_process_start_time(apiserver: ApiserverMetrics) -> None:
    assert value(apiserver.render()[0], "process_start_time_seconds") == START


def test_labels_stay_bounded(apiserver: ApiserverMetrics) -> None:
    with pytest.raises(ValueError, match="unknown resource"):
        apiserver.observe_request("get", "", "v1", "pod", "", "resource", "apiserver", 200, 0.1)
    with pytest.raises(ValueError, match="version"):
        apiserver.observe_request("get", "", "v2", "pods", "", "resource", "apiserver", 200, 0.1)
    with pytest.raises(ValueError, match="scope"):
        apiserver.observe_request("get", "", "v1", "pods", "", "ns", "apiserver", 200, 0.1)
    with pytest.raises(ValueError, match="belongs to"):
        apiserver.observe_flowcontrol(
            "workload-low", "system-node-high", rejected_reason=None, wait_seconds=0
        )
    with pytest.raises(ValueError, match="rejected_reason"):
        apiserver.observe_flowcontrol(
            "node-high", "system-node-high", rejected_reason="busy", wait_seconds=0
        )
    with pytest.raises(ValueError, match="exempt"):
        apiserver.observe_flowcontrol(
            "exempt", "exempt", rejected_reason="queue-full", wait_seconds=0
        )
    with pytest.raises(ValueError, match="unknown storage"):
        apiserver.set_storage_objects({"secrets": 1})
    with pytest.raises(ValueError, match="unknown storage type"):
        apiserver.observe_etcd("get", "leases", 0.1)  # needs "leases.coordination.k8s.io"
    # Unknown verbs are folded into "other", as the real apiserver does.
    apiserver.observe_request("BREW", "", "v1", "pods", "", "resource", "apiserver", 405, 0)
    assert value(apiserver.render()[0], "apiserver_request_total", verb="other", code="405",
                 **{**REQUEST_LABELS, "scope": "resource"}) == 1  # fmt: skip


def test_the_global_registry_is_left_alone(apiserver: ApiserverMetrics) -> None:
    assert REGISTRY.get_sample_value("apiserver_request_total") is None
    second = ApiserverMetrics(start_time=START)  # a second cluster in the same process
    assert "apiserver_request_total" not in types(second.render()[0])


def test_openmetrics_rendering(apiserver: ApiserverMetrics) -> None:
    body, content_type = apiserver.render(openmetrics=True)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    families = {f.name: f for f in openmetrics_families(body.decode())}
    # OpenMetrics names a counter family without _total; its samples keep it.
    requests = families["apiserver_request"]
    assert requests.type == "counter"
    assert {s.name for s in requests.samples} == {"apiserver_request_total"}


def test_apiserver_metrics_pass_promtool(apiserver: ApiserverMetrics) -> None:
    assert promtool_check(apiserver.render()[0]) == ""


# --- kube-scheduler and kube-controller-manager -----------------------------------------


def test_scheduler_metrics() -> None:
    m = ComponentMetrics("kube-scheduler", start_time=START)
    m.set_leader(True, "kube-scheduler")
    for queue, n in (("active", 5), ("backoff", 2), ("unschedulable", 7), ("gated", 0)):
        m.set_pending_pods(queue, n)
    m.observe_scheduling("scheduled", 0.003)
    m.observe_scheduling("scheduled", 0.02)
    m.observe_scheduling("unschedulable", 0.5)
    body, _ = m.render()
    assert types(body) == {
        "leader_election_master_status": "gauge",
        "scheduler_pending_pods": "gauge",
        "scheduler_schedule_attempts_total": "counter",
        "scheduler_scheduling_attempt_duration_seconds": "histogram",
        "process_start_time_seconds": "gauge",
    }
    assert value(body, "leader_election_master_status", name="kube-scheduler") == 1
    assert value(body, "scheduler_pending_pods", queue="unschedulable") == 7
    assert value(body, "scheduler_pending_pods", queue="gated") == 0
    attempt = {"profile": "default-scheduler", "result": "scheduled"}
    assert value(body, "scheduler_schedule_attempts_total", **attempt) == 2
    buckets = [
        lbls["le"]
        for lbls, _ in samples(body)["scheduler_scheduling_attempt_duration_seconds_bucket"]
        if lbls["result"] == "scheduled"
    ]
    # ExponentialBuckets(0.001, 2, 15): 0.001 ... 16.384.
    assert buckets[:4] == ["0.001", "0.002", "0.004", "0.008"]
    assert buckets[-2:] == ["16.384", "+Inf"]
    assert len(buckets) == 16
    assert (
        value(body, "scheduler_scheduling_attempt_duration_seconds_bucket", le="0.004", **attempt)
        == 1
    )
    assert promtool_check(body) == ""


def test_controller_manager_metrics() -> None:
    m = ComponentMetrics("kube-controller-manager", start_time=START)
    m.set_leader(False, "kube-controller-manager")
    m.set_workqueue("node_lifecycle_controller", depth=4, adds=10, queue_seconds=0.5)
    m.set_workqueue("node_lifecycle_controller", depth=1, adds=12, queue_seconds=0.05)
    body, _ = m.render()
    assert value(body, "leader_election_master_status", name="kube-controller-manager") == 0
    assert value(body, "workqueue_depth", name="node_lifecycle_controller") == 1
    assert value(body, "workqueue_adds_total", name="node_lifecycle_controller") == 12
    queue = {"name": "node_lifecycle_controller"}
    assert value(body, "workqueue_queue_duration_seconds_count", **queue) == 2
    les = [lbls["le"] for lbls, _ in samples(body)["workqueue_queue_duration_seconds_bucket"]]
    # ExponentialBuckets(10e-9, 10, 12), float artefacts included, as Go prints them.
    assert les[:5] == ["1e-08", "1e-07", "1e-06", "9.999999999999999e-06", "9.999999999999999e-05"]
    assert les[-2:] == ["1000", "+Inf"]
    assert value(body, "workqueue_queue_duration_seconds_bucket", le="0.1", **queue) == 1
    assert value(body, "workqueue_queue_duration_seconds_bucket", le="1", **queue) == 2
    assert "scheduler_pending_pods" not in types(body)
    assert promtool_check(body) == ""


def test_component_metrics_refuse_what_the_component_does_not_have() -> None:
    kcm = ComponentMetrics("kube-controller-manager", start_time=START)
    with pytest.raises(ValueError, match="no scheduler metrics"):
        kcm.set_pending_pods("active", 1)
    kcm.set_workqueue("q", depth=0, adds=5, queue_seconds=0)
    with pytest.raises(ValueError, match="adds went down"):
        kcm.set_workqueue("q", depth=0, adds=4, queue_seconds=0)
    scheduler = ComponentMetrics("kube-scheduler", start_time=START)
    with pytest.raises(ValueError, match="queue"):
        scheduler.set_pending_pods("waiting", 1)
    with pytest.raises(ValueError, match="result"):
        scheduler.observe_scheduling("ok", 0.1)
