"""The object store's contract: revisions, snapshot pagination, watch replay, compaction.

These run against the store directly (no HTTP) so that each property is checked in
isolation; the API tests check the same through kubernetes-asyncio.
"""

from __future__ import annotations

from typing import Any

import pytest

from kubeballast.simulator import errors
from kubeballast.simulator.resources import CONFIGMAPS, NODES, PODS
from kubeballast.simulator.selectors import parse_field_selector, parse_label_selector
from kubeballast.simulator.store import Store, decode

EVERYTHING = parse_label_selector("")
NO_FIELDS = parse_field_selector("", PODS.field_getters.keys())


def pod(ns: str, name: str, node: str = "node-1", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
        "spec": {"nodeName": node},
    }


def names(items: list[bytes]) -> list[str]:
    return [decode(raw)["metadata"]["name"] for raw in items]


def list_all(store: Store, **kwargs: Any) -> list[str]:
    kwargs.setdefault("labels", EVERYTHING)
    kwargs.setdefault("fields", NO_FIELDS)
    return names(store.list(PODS, **kwargs).items)


def test_revisions_increase_across_resources() -> None:
    store = Store()
    a = store.create(PODS, pod("ns", "a"))
    b = store.create(CONFIGMAPS, {"metadata": {"name": "c", "namespace": "ns"}})
    c = store.update(PODS, pod("ns", "a", tier="x"))
    assert a.rv < b.rv < c.rv == store.resource_version
    assert decode(c.raw)["metadata"]["resourceVersion"] == str(c.rv)


def test_list_is_in_etcd_key_order() -> None:
    # "a-b/x" sorts before "a/x" in etcd (byte order of the whole key), unlike tuples.
    store = Store()
    store.create(PODS, pod("a", "x"))
    store.create(PODS, pod("a-b", "y"))
    store.create(PODS, pod("a", "w"))
    assert list_all(store) == ["y", "w", "x"]
    assert list_all(store, namespace="a") == ["w", "x"]


def test_optimistic_concurrency() -> None:
    store = Store()
    first = store.create(PODS, pod("ns", "a"))
    store.update(PODS, pod("ns", "a", v="1"), expected_rv=first.rv)
    with pytest.raises(errors.ApiError) as stale:
        store.update(PODS, pod("ns", "a", v="2"), expected_rv=first.rv)
    assert stale.value.code == 409
    assert stale.value.reason == "Conflict"
    with pytest.raises(errors.ApiError) as dup:
        store.create(PODS, pod("ns", "a"))
    assert dup.value.code == 409
    assert dup.value.reason == "AlreadyExists"


def test_pagination_reads_the_snapshot_of_the_first_page() -> None:
    store = Store()
    for i in range(10):
        store.create(PODS, pod("ns", f"p{i}"))
    page = store.list(PODS, labels=EVERYTHING, fields=NO_FIELDS, limit=4)
    assert names(page.items) == ["p0", "p1", "p2", "p3"]
    assert page.continue_token
    # Writes between pages: a deletion ahead, a creation ahead, an update ahead.
    store.delete(PODS, "ns", "p5")
    store.create(PODS, pod("ns", "p55"))
    store.update(PODS, pod("ns", "p6", changed="yes"))
    rest: list[str] = []
    token = page.continue_token
    while token:
        page = store.list(PODS, labels=EVERYTHING, fields=NO_FIELDS, limit=4, continue_token=token)
        rest.extend(names(page.items))
        for raw in page.items:
            if decode(raw)["metadata"]["name"] == "p6":
                assert "changed" not in decode(raw)["metadata"]["labels"]
        token = page.continue_token
    assert rest == ["p4", "p5", "p6", "p7", "p8", "p9"]
    # A fresh list sees the new state.
    assert "p55" in list_all(store)
    assert "p5" not in list_all(store)


def test_continue_token_of_compacted_snapshot_is_gone() -> None:
    store = Store()
    for i in range(3):
        store.create(PODS, pod("ns", f"p{i}"))
    page = store.list(PODS, labels=EVERYTHING, fields=NO_FIELDS, limit=1)
    store.create(PODS, pod("ns", "late"))
    store.compact(store.resource_version)
    with pytest.raises(errors.ApiError) as gone:
        store.list(
            PODS,
            labels=EVERYTHING,
            fields=NO_FIELDS,
            limit=1,
            continue_token=page.continue_token or "",
        )
    assert gone.value.code == 410


def test_bad_continue_token_is_a_bad_request() -> None:
    with pytest.raises(errors.ApiError) as bad:
        Store().list(PODS, labels=EVERYTHING, fields=NO_FIELDS, continue_token="!!notbase64")
    assert bad.value.code == 400


def test_resource_version_zero_ignores_limit() -> None:
    store = Store()
    for i in range(5):
        store.create(PODS, pod("ns", f"p{i}"))
    page = store.list(PODS, labels=EVERYTHING, fields=NO_FIELDS, limit=2, resource_version="0")
    assert len(page.items) == 5
    assert page.continue_token is None


def test_exact_resource_version_reads_the_past() -> None:
    store = Store()
    store.create(PODS, pod("ns", "a"))
    then = store.resource_version
    store.create(PODS, pod("ns", "b"))
    store.delete(PODS, "ns", "a")
    past = store.list(
        PODS,
        labels=EVERYTHING,
        fields=NO_FIELDS,
        resource_version=str(then),
        resource_version_match="Exact",
    )
    assert names(past.items) == ["a"]
    assert past.resource_version == then


def test_field_selector_uses_node_index_and_agrees_with_scan() -> None:
    store = Store()
    for i in range(20):
        store.create(PODS, pod("ns", f"p{i:02}", node=f"node-{i % 3}"))
    store.update(PODS, pod("ns", "p00", node="node-2"))
    selector = parse_field_selector("spec.nodeName=node-2", PODS.field_getters.keys())
    indexed = list_all(store, fields=selector)
    scanned = [e.name for e in store.iter_current(PODS) if e.fields["spec.nodeName"] == "node-2"]
    assert indexed == scanned
    assert "p00" in indexed
    assert [e.name for e in store.by_index(PODS, "spec.nodeName", "node-2")] == scanned


def test_label_selector_filters_pages() -> None:
    store = Store()
    for i in range(10):
        store.create(PODS, pod("ns", f"p{i}", app="a" if i % 2 else "b"))
    selector = parse_label_selector("app=a")
    first = store.list(PODS, labels=selector, fields=NO_FIELDS, limit=3)
    assert names(first.items) == ["p1", "p3", "p5"]
    second = store.list(
        PODS,
        labels=selector,
        fields=NO_FIELDS,
        limit=3,
        continue_token=first.continue_token or "",
    )
    assert names(second.items) == ["p7", "p9"]
    assert second.continue_token is None


def test_watch_replays_history_after_a_revision() -> None:
    store = Store()
    store.create(PODS, pod("ns", "a"))
    since = store.resource_version
    store.create(PODS, pod("ns", "b"))
    store.delete(PODS, "ns", "a")
    watch = store.watch(PODS, labels=EVERYTHING, fields=NO_FIELDS, resource_version=str(since))
    assert [(t, decode(raw)["metadata"]["name"]) for t, raw in watch.initial] == [
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]
    store.update(PODS, pod("ns", "b", x="1"))
    live = watch.drain()
    assert [(t, decode(raw)["metadata"]["name"]) for t, raw, _ in live] == [("MODIFIED", "b")]
    assert live[0][2] == store.resource_version
    watch.close()
    store.create(PODS, pod("ns", "c"))
    assert watch.drain() == []


def test_watch_from_zero_starts_with_current_state() -> None:
    store = Store()
    store.create(PODS, pod("ns", "a"))
    store.create(PODS, pod("other", "b"))
    watch = store.watch(PODS, namespace="ns", labels=EVERYTHING, fields=NO_FIELDS)
    assert [t for t, _ in watch.initial] == ["ADDED"]
    assert decode(watch.initial[0][1])["metadata"]["name"] == "a"


def test_watch_selector_transitions_become_added_and_deleted() -> None:
    store = Store()
    store.create(PODS, pod("ns", "a", app="x"))
    watch = store.watch(
        PODS, labels=parse_label_selector("app=x"), fields=NO_FIELDS, resource_version="0"
    )
    store.update(PODS, pod("ns", "a", app="y"))  # leaves the selector
    store.update(PODS, pod("ns", "a", app="x"))  # comes back
    store.update(PODS, pod("ns", "a", app="z"))
    store.update(PODS, pod("ns", "a", app="w"))  # invisible: outside before and after
    assert [t for t, _, _ in watch.drain()] == ["DELETED", "ADDED", "DELETED"]


def test_watch_from_compacted_revision_is_gone() -> None:
    store = Store()
    store.create(NODES, {"metadata": {"name": "n1"}})
    old = store.resource_version
    store.create(NODES, {"metadata": {"name": "n2"}})
    store.create(NODES, {"metadata": {"name": "n3"}})
    store.compact(store.resource_version - 1)
    node_fields = parse_field_selector("", NODES.field_getters.keys())
    with pytest.raises(errors.ApiError) as gone:
        store.watch(NODES, labels=EVERYTHING, fields=node_fields, resource_version=str(old))
    assert gone.value.code == 410
    assert "too old resource version" in gone.value.message


def test_compaction_drops_history_but_keeps_current_state() -> None:
    store = Store()
    for i in range(5):
        store.create(PODS, pod("ns", f"p{i}"))
    for _ in range(3):
        for i in range(5):
            store.update(PODS, pod("ns", f"p{i}", v=str(store.resource_version)))
    store.delete(PODS, "ns", "p0")
    assert store.history_size() > 0
    store.compact(store.resource_version)
    assert store.history_size() == 0
    assert list_all(store) == ["p1", "p2", "p3", "p4"]


def test_bulk_load_then_watch_from_its_revision() -> None:
    store = Store()
    store.bulk_load((PODS, pod("ns", f"p{i}")) for i in range(100))
    rv = store.resource_version
    watch = store.watch(PODS, labels=EVERYTHING, fields=NO_FIELDS, resource_version=str(rv))
    assert watch.initial == []
    with pytest.raises(errors.ApiError):
        store.watch(PODS, labels=EVERYTHING, fields=NO_FIELDS, resource_version=str(rv - 50))


def test_delete_preconditions() -> None:
    store = Store()
    created = store.create(PODS, pod("ns", "a"))
    with pytest.raises(errors.ApiError) as wrong_rv:
        store.delete(PODS, "ns", "a", expected_rv=created.rv + 100)
    assert wrong_rv.value.code == 409
    gone = store.delete(PODS, "ns", "a", expected_rv=created.rv)
    assert gone.deleted
    with pytest.raises(errors.ApiError) as missing:
        store.delete(PODS, "ns", "a")
    assert missing.value.code == 404
