"""LIST and WATCH as clients depend on them: consistent pagination, resourceVersion
semantics, selectors, watch resume, bookmarks, watch lists, 410 and timeouts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from kubeballast.simulator.server import INITIAL_EVENTS_END_ANNOTATION, ApiServer

Eventually = Callable[..., Awaitable[None]]
"""The ``eventually`` fixture: ``await eventually(async_check)``."""

NS = "paging"


def pod(name: str, labels: dict[str, str] | None = None, node: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "registry.k8s.io/pause"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


async def make_namespace(core: Any, name: str = NS) -> None:
    await core.create_namespace({"metadata": {"name": name}})


async def names(core: Any, namespace: str = NS, **kw: Any) -> list[str]:
    listed = await core.list_namespaced_pod(namespace, **kw)
    return [p.metadata.name for p in listed.items]


async def compact(session: aiohttp.ClientSession) -> int:
    async with session.post("/_sim/compact") as resp:
        assert resp.status == 200
        body = await resp.json()
    return int(body["compactedRevision"])


# -- pagination ------------------------------------------------------------------------------


async def test_pages_are_a_consistent_snapshot_under_concurrent_writes(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    await make_namespace(core)
    originals = [f"pod-{i:02d}" for i in range(25)]
    for name in originals:
        await core.create_namespaced_pod(NS, pod(name))

    first = await core.list_namespaced_pod(NS, limit=7)
    snapshot_rv = first.metadata.resource_version
    seen = [p.metadata.name for p in first.items]
    token = first.metadata._continue
    assert len(seen) == 7
    assert token

    writes = 0
    deleted: set[str] = set()
    while token:
        # Between pages: add pods before and after the cursor, delete one already listed
        # and one not yet listed, and modify one not yet listed.
        await core.create_namespaced_pod(NS, pod(f"aaa-new-{writes}"))
        await core.create_namespaced_pod(NS, pod(f"zzz-new-{writes}"))
        unlisted = [n for n in originals if n not in seen and n not in deleted]
        if len(unlisted) >= 2:
            await core.delete_namespaced_pod(unlisted[-1], NS)
            deleted.add(unlisted[-1])
            await core.patch_namespaced_pod(
                unlisted[0], NS, {"metadata": {"labels": {"touched": "yes"}}}
            )
        if writes == 0:
            await core.delete_namespaced_pod(seen[0], NS)
        writes += 1
        page = await core.list_namespaced_pod(NS, limit=7, _continue=token)
        assert page.metadata.resource_version == snapshot_rv
        for item in page.items:
            assert "touched" not in (item.metadata.labels or {}), "a page showed a later version"
            assert int(item.metadata.resource_version) <= int(snapshot_rv)
        seen += [p.metadata.name for p in page.items]
        token = page.metadata._continue

    assert len(seen) == len(set(seen)), "duplicates across pages"
    assert seen == originals, "pages must show exactly the first page's snapshot, in key order"
    now = await names(core)
    assert now != originals  # the writes did happen


async def test_limit_pages_cover_everything_in_key_order(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    everything = await core.list_pod_for_all_namespaces()
    keys = [(p.metadata.namespace, p.metadata.name) for p in everything.items]
    assert keys == sorted(keys)
    paged: list[tuple[str, str]] = []
    token = None
    while True:
        page = await core.list_pod_for_all_namespaces(limit=5, _continue=token)
        assert len(page.items) <= 5
        paged += [(p.metadata.namespace, p.metadata.name) for p in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert paged == keys


async def test_resource_version_zero_ignores_limit(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    full = await core.list_pod_for_all_namespaces()
    cached = await core.list_pod_for_all_namespaces(resource_version="0", limit=3)
    assert len(cached.items) == len(full.items) > 3
    assert cached.metadata._continue is None


async def test_exact_resource_version_reads_the_past(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    await make_namespace(core)
    await core.create_namespaced_pod(NS, pod("before"))
    then = (await core.list_namespaced_pod(NS)).metadata.resource_version
    await core.create_namespaced_pod(NS, pod("after"))
    past = await core.list_namespaced_pod(NS, resource_version=then, resource_version_match="Exact")
    assert [p.metadata.name for p in past.items] == ["before"]
    assert past.metadata.resource_version == then
    assert await names(core) == ["after", "before"]


async def test_list_body_is_the_real_list_shape(admin_session: aiohttp.ClientSession) -> None:
    async with admin_session.get("/api/v1/namespaces/kube-system/pods?limit=2") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body["kind"] == "PodList"
    assert body["apiVersion"] == "v1"
    assert set(body["metadata"]) == {"resourceVersion", "continue"}
    assert len(body["items"]) == 2
    async with admin_session.get("/api/v1/namespaces/no-such-ns/pods") as resp:
        empty = await resp.json()
    assert empty["items"] == []
    assert set(empty["metadata"]) == {"resourceVersion"}


# -- selectors -------------------------------------------------------------------------------


async def test_label_selectors(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    await make_namespace(core)
    await core.create_namespaced_pod(NS, pod("web-1", {"app": "web", "tier": "front"}))
    await core.create_namespaced_pod(NS, pod("web-2", {"app": "web"}))
    await core.create_namespaced_pod(NS, pod("db-1", {"app": "db", "tier": "back"}))
    assert await names(core, label_selector="app=web") == ["web-1", "web-2"]
    assert await names(core, label_selector="app in (db,web),tier") == ["db-1", "web-1"]
    assert await names(core, label_selector="app!=web") == ["db-1"]
    assert await names(core, label_selector="!tier") == ["web-2"]


async def test_field_selectors(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    everything = (await core.list_pod_for_all_namespaces()).items

    by_name = await core.list_pod_for_all_namespaces(
        field_selector=f"metadata.name={everything[0].metadata.name}"
    )
    assert [p.metadata.uid for p in by_name.items] == [everything[0].metadata.uid]

    in_ns = await core.list_pod_for_all_namespaces(field_selector="metadata.namespace=kube-system")
    assert {p.metadata.namespace for p in in_ns.items} == {"kube-system"}
    assert len(in_ns.items) == sum(p.metadata.namespace == "kube-system" for p in everything)

    on_node = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-0001")
    expected = sorted(p.metadata.name for p in everything if p.spec.node_name == "node-0001")
    assert sorted(p.metadata.name for p in on_node.items) == expected
    assert expected

    not_on = await core.list_pod_for_all_namespaces(
        field_selector="spec.nodeName!=node-0001,metadata.namespace=kube-system"
    )
    assert all(p.spec.node_name != "node-0001" for p in not_on.items)

    nodes = await core.list_node(field_selector="metadata.name=node-0002")
    assert [n.metadata.name for n in nodes.items] == ["node-0002"]


async def test_field_selected_pages(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    expected = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-0003")
    seen: list[str] = []
    token = None
    while True:
        page = await core.list_pod_for_all_namespaces(
            field_selector="spec.nodeName=node-0003", limit=2, _continue=token
        )
        seen += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == [p.metadata.name for p in expected.items]


# -- watch -----------------------------------------------------------------------------------


async def collect(
    func: Any, *args: Any, stop: Any = None, limit: int = 100, **kwargs: Any
) -> list[dict[str, Any]]:
    """Events of a kubernetes-asyncio watch until ``stop(event)`` or the stream ends."""
    events: list[dict[str, Any]] = []
    async with watch.Watch() as w:
        async for event in w.stream(func, *args, **kwargs):
            events.append(event)
            if (stop is not None and stop(event)) or len(events) >= limit:
                w.stop()
                break
    return events


def _name(event: dict[str, Any]) -> str:
    return str(event["raw_object"]["metadata"].get("name", ""))


async def test_watch_without_resource_version_starts_with_the_current_state(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    expected = await names(core, "kube-system")
    events = await collect(
        core.list_namespaced_pod,
        "kube-system",
        timeout_seconds=5,
        stop=lambda e: _name(e) == expected[-1],
    )
    assert [e["type"] for e in events] == ["ADDED"] * len(expected)
    assert [_name(e) for e in events] == expected
    assert events[0]["object"].metadata.namespace == "kube-system"  # typed V1Pod


async def test_watch_resumes_after_a_resource_version(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    await make_namespace(core)
    first = await core.create_namespaced_pod(NS, pod("one"))
    await core.create_namespaced_pod(NS, pod("two"))
    await core.patch_namespaced_pod("one", NS, {"metadata": {"labels": {"x": "y"}}})
    await core.delete_namespaced_pod("two", NS)

    events = await collect(
        core.list_namespaced_pod,
        NS,
        resource_version=first.metadata.resource_version,
        timeout_seconds=5,
        stop=lambda e: e["type"] == "DELETED",
    )
    assert [(e["type"], _name(e)) for e in events] == [
        ("ADDED", "two"),
        ("MODIFIED", "one"),
        ("DELETED", "two"),
    ]
    revisions = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in events]
    assert revisions == sorted(revisions)
    assert revisions[0] > int(first.metadata.resource_version)


async def test_watch_sees_live_changes_matching_its_selector(
    api: Any, apiserver: ApiServer, eventually: Eventually
) -> None:
    core = k8s.CoreV1Api(api)
    await make_namespace(core)
    start = (await core.list_namespaced_pod(NS)).metadata.resource_version

    async def writer() -> None:
        await eventually(lambda: _has_watchers(apiserver))
        await core.create_namespaced_pod(NS, pod("other", {"app": "db"}))
        await core.create_namespaced_pod(NS, pod("mine", {"app": "web"}))
        # Leaving the selector is a DELETED for this watcher.
        await core.patch_namespaced_pod("mine", NS, {"metadata": {"labels": {"app": "gone"}}})

    task = asyncio.create_task(writer())
    events = await collect(
        core.list_namespaced_pod,
        NS,
        label_selector="app=web",
        resource_version=start,
        timeout_seconds=5,
        stop=lambda e: e["type"] == "DELETED",
    )
    await task
    assert [(e["type"], _name(e)) for e in events] == [("ADDED", "mine"), ("DELETED", "mine")]


async def _has_watchers(server: ApiServer) -> bool:
    return int(server.state()["watchers"]) > 0


async def test_bookmarks_when_allowed(api: Any, apiserver: ApiServer) -> None:
    core = k8s.CoreV1Api(api)
    listed = await core.list_namespaced_pod("kube-system")
    events = await collect(
        core.list_namespaced_pod,
        "kube-system",
        resource_version=listed.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
        stop=lambda e: e["type"] == "BOOKMARK",
    )
    assert events[-1]["type"] == "BOOKMARK"
    bookmark = events[-1]["raw_object"]
    assert bookmark["kind"] == "Pod"
    assert bookmark["apiVersion"] == "v1"
    assert int(bookmark["metadata"]["resourceVersion"]) == apiserver.store.resource_version


async def test_no_bookmarks_unless_asked(admin_session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    lines = await raw_watch(
        admin_session,
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        "?watch=1&timeoutSeconds=1&resourceVersion=1",
    )
    assert lines[0]["type"] == "ERROR"  # resourceVersion 1 is long compacted
    lines = await raw_watch(
        admin_session, "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1"
    )
    assert all(line["type"] != "BOOKMARK" for line in lines)
    assert time.monotonic() - started >= 0.9


async def raw_watch(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        return [json.loads(line) async for line in resp.content if line.strip()]


async def test_watch_list_sends_initial_events_then_an_annotated_bookmark(
    admin_session: aiohttp.ClientSession, apiserver: ApiServer
) -> None:
    revision = apiserver.store.resource_version
    lines = await raw_watch(
        admin_session,
        "/api/v1/namespaces/kube-system/pods?watch=true&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
    )
    pods = [line for line in lines if line["type"] == "ADDED"]
    marks = [line for line in lines if line["type"] == "BOOKMARK"]
    assert pods
    assert lines.index(marks[0]) == len(pods)  # right after the initial events
    end = marks[0]["object"]["metadata"]
    assert end["annotations"] == {INITIAL_EVENTS_END_ANNOTATION: "true"}
    assert int(end["resourceVersion"]) == revision


async def test_send_initial_events_false_starts_at_the_most_recent(
    admin_session: aiohttp.ClientSession,
) -> None:
    lines = await raw_watch(
        admin_session,
        "/api/v1/namespaces/kube-system/pods?watch=true&sendInitialEvents=false"
        "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
    )
    assert lines == []


async def test_watch_from_a_compacted_revision_is_410(
    api: Any, admin_session: aiohttp.ClientSession
) -> None:
    core = k8s.CoreV1Api(api)
    await make_namespace(core)
    old = await core.create_namespaced_pod(NS, pod("old"))
    await core.create_namespaced_pod(NS, pod("newer"))
    await compact(admin_session)

    with pytest.raises(ApiException) as gone:
        await collect(
            core.list_namespaced_pod,
            NS,
            resource_version=old.metadata.resource_version,
            timeout_seconds=5,
        )
    assert gone.value.status == 410
    assert "Expired" in gone.value.reason

    # On the wire it is a 200 stream with one ERROR event carrying a Status.
    lines = await raw_watch(
        admin_session,
        f"/api/v1/namespaces/{NS}/pods?watch=true&resourceVersion={old.metadata.resource_version}",
    )
    assert len(lines) == 1
    status = lines[0]["object"]
    assert lines[0]["type"] == "ERROR"
    assert status["kind"] == "Status"
    assert status["code"] == 410
    assert status["reason"] == "Expired"
    assert status["message"].startswith("too old resource version")


async def test_watch_ends_at_timeout_seconds(api: Any) -> None:
    core = k8s.CoreV1Api(api)
    listed = await core.list_namespaced_config_map("default")
    started = time.monotonic()
    events = await collect(
        core.list_namespaced_config_map,
        "default",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=1,
    )
    elapsed = time.monotonic() - started
    assert events == []
    assert 0.9 <= elapsed < 4


async def test_a_name_selector_watch_follows_one_object(api: Any, apiserver: ApiServer) -> None:
    core = k8s.CoreV1Api(api)
    await make_namespace(core)
    await core.create_namespaced_pod(NS, pod("a"))
    await core.create_namespaced_pod(NS, pod("b"))
    async with aiohttp.ClientSession(
        base_url=apiserver.url, headers={"Authorization": f"Bearer {apiserver.admin_token}"}
    ) as session:
        lines = await raw_watch(
            session,
            f"/api/v1/namespaces/{NS}/pods?watch=true&timeoutSeconds=1&fieldSelector=metadata.name%3Db",
        )
    assert [(line["type"], line["object"]["metadata"]["name"]) for line in lines] == [
        ("ADDED", "b")
    ]


async def test_fault_disconnect_ends_open_watches(
    admin_session: aiohttp.ClientSession, apiserver: ApiServer, eventually: Eventually
) -> None:
    async with admin_session.get(
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=60"
        f"&resourceVersion={apiserver.store.resource_version}"
    ) as resp:
        await eventually(lambda: _has_watchers(apiserver))
        started = time.monotonic()
        async with admin_session.post("/_sim/faults", json={"watch_disconnect": {}}) as fault:
            assert fault.status == 200
        remainder = await resp.content.read()
        assert remainder == b""
        assert time.monotonic() - started < 5
    assert apiserver.state()["watchers"] == 0


async def test_client_disconnect_removes_the_watcher(
    apiserver: ApiServer, eventually: Eventually
) -> None:
    async with aiohttp.ClientSession(
        base_url=apiserver.url, headers={"Authorization": f"Bearer {apiserver.admin_token}"}
    ) as session:
        resp = await session.get("/api/v1/pods?watch=true&timeoutSeconds=600")
        assert resp.status == 200
        await eventually(lambda: _has_watchers(apiserver))
        resp.close()  # drop the connection mid-stream

    async def gone() -> bool:
        return int(apiserver.state()["watchers"]) == 0

    await eventually(gone)
