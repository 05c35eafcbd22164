"""The product's RBAC, proven: the shipped roles against the real exporter and receiver.

deploy/base/rbac/{exporter,receiver,janitor}.yaml are applied to a simulator that
enforces RBAC (``authorization="RBAC"``), tokens are minted for the service accounts
the manifests bind, and the real processes run with those tokens and nothing else:

- the exporter (``build_exporter`` over the default catalog, served on loopback as
  ``kube-ballast exporter`` serves it) with the apiserver, scheduler and
  controller-manager targets: every source must come up (``kubeballast_source_up`` 1
  for each, ``kubeballast_cluster_state_synced`` 1); then its informers once more in
  LIST mode, the path they take against an apiserver that refuses WatchList;
- the receiver (``run_receiver``, the command's own entry point) through one live
  remediation cycle of the ``notify`` action: leader Lease, ledger ConfigMaps, an Event;
- the eviction guard's calls (core/evictionguard.py) on the identity of each process
  that makes them: the exporter's reads, the eviction-pause action's detection and
  pause write, the janitor ending an overdue pause (its CronJob's one job).

A request the roles do not allow fails the test with the apiserver's 403 text (the
simulator records every decision per user at ``/_sim/authz/usage``). The permissions
the roles grant that no request used are printed at the end of each test (straight to
the terminal, past pytest's capture), so a role that grew beyond the code shows up in
every run. And no rule may hold a wildcard.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from kubernetes_asyncio import client as k8s

from kubeballast.core import evictionguard as guard
from kubeballast.core.config import (
    ActionConfig,
    Config,
    ExporterConfig,
    KubernetesAccessConfig,
    LeaderElectionConfig,
    ListenConfig,
    ReceiverAuthConfig,
    ReceiverConfig,
    RemediationsConfig,
    TargetConfig,
    validate,
)
from kubeballast.core.kube import KubeClientProvider
from kubeballast.core.promtext import parse
from kubeballast.exporter.app import build_exporter
from kubeballast.exporter.clusterstate import ClusterState
from kubeballast.exporter.informer import KubeHttp
from kubeballast.remediations.server import run_receiver
from kubeballast.simulator import rbac
from kubeballast.simulator.kubeconfig import api_client, write_kubeconfig
from kubeballast.simulator.resources import BY_KIND
from kubeballast.simulator.server import ApiServer, attach_control_plane, build_server
from kubeballast.simulator.settings import ScenarioSettings, SimulatorSettings

REPO = Path(__file__).resolve().parents[2]
RBAC_DIR = REPO / "deploy" / "base" / "rbac"
RBAC_FILES = ("exporter.yaml", "receiver.yaml", "janitor.yaml")
SERVICE_ACCOUNTS_FILE = REPO / "deploy" / "base" / "serviceaccounts.yaml"
NAMESPACE = "kube-ballast"
EXPORTER_SA = "kube-ballast-exporter"
RECEIVER_SA = "kube-ballast-receiver"
JANITOR_SA = "kube-ballast-janitor"
DEADLINE = 90.0
"""Real seconds for the processes to come up (generous: a loaded 2-core machine)."""
PROBE_ALERT = "KubeBallastRbacProbe"
WEBHOOK_TOKEN = "rbac-test-webhook-token"


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in RBAC_FILES:
        path = RBAC_DIR / name
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def roles(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("ClusterRole", "Role")]


# -- static checks ------------------------------------------------------------------------


def test_every_rbac_file_is_there_and_holds_roles() -> None:
    for name in RBAC_FILES:
        assert (RBAC_DIR / name).is_file(), f"{RBAC_DIR / name} is missing"
    assert roles(manifests())


def test_no_rule_has_a_wildcard() -> None:
    found = [
        f"{d['kind']}/{d['metadata'].get('namespace', '')}/{d['metadata']['name']} rules[{i}]: "
        f"{', '.join(wild)}"
        for d in roles(manifests())
        for i, raw in enumerate(d.get("rules") or ())
        if (wild := rbac.PolicyRule.from_mapping(raw).wildcards())
    ]
    assert found == []


def test_every_object_is_valid_rbac() -> None:
    for doc in manifests():
        rt = BY_KIND[("rbac.authorization.k8s.io", doc["kind"])]
        assert rbac.validate_object(rt, doc, None) == [], doc["metadata"]


# -- the simulated cluster with the manifests applied -------------------------------------


@dataclass
class Cluster:
    server: ApiServer
    admin: Any
    control: aiohttp.ClientSession
    tmp: Path

    def kubeconfig_for(self, service_account: str) -> Path:
        token = self.server.mint_service_account_token(NAMESPACE, service_account)
        path = self.tmp / f"{service_account}.kubeconfig"
        write_kubeconfig(path, self.server.url, token)
        (self.tmp / f"{service_account}.token").write_text(token + "\n")
        return path

    def token_file(self, service_account: str) -> Path:
        return self.tmp / f"{service_account}.token"

    async def usage_of(self, service_account: str) -> dict[str, list[dict[str, Any]]]:
        async with self.control.get("/_sim/authz/usage") as response:
            assert response.status == 200
            usage = await response.json()
        user = rbac.service_account_username(NAMESPACE, service_account)
        found: dict[str, list[dict[str, Any]]] = usage["users"].get(
            user, {"allowed": [], "denied": []}
        )
        return found

    async def denials(self, service_account: str) -> list[str]:
        """The 403 messages the service account got, as the apiserver worded them."""
        user = rbac.service_account_username(NAMESPACE, service_account)
        usage = await self.usage_of(service_account)
        return [
            f"{rbac.forbidden_error(rbac.attributes_of_usage(user, e), e['reason']).message}"
            f" (x{e['count']})"
            for e in usage["denied"]
        ]


def _path(doc: dict[str, Any]) -> str:
    group, _, version = doc["apiVersion"].rpartition("/")
    rt = BY_KIND[(group, doc["kind"])]
    root = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if rt.namespaced:
        return f"{root}/namespaces/{doc['metadata']['namespace']}/{rt.plural}"
    return f"{root}/{rt.plural}"


async def apply(control: aiohttp.ClientSession, docs: Iterable[dict[str, Any]]) -> None:
    for doc in docs:
        async with control.post(_path(doc), json=doc) as response:
            assert response.status == 201, await response.text()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    settings = SimulatorSettings(
        kubelets=False,
        controllers=False,
        scenario=ScenarioSettings(nodes=6, zones=3, pods_per_node=3, control_plane_nodes=1),
    )
    server = build_server(settings, authorization="RBAC")
    attach_control_plane(server)
    server.bookmark_interval = 0.5
    await server.start()
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    admin_kubeconfig = tmp_path / "admin.kubeconfig"
    write_kubeconfig(admin_kubeconfig, server.url, server.admin_token)
    try:
        async with aiohttp.ClientSession(base_url=server.url, headers=headers) as control:
            admin = await api_client(admin_kubeconfig)
            try:
                await k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": NAMESPACE}})
                accounts = [
                    d
                    for d in yaml.safe_load_all(SERVICE_ACCOUNTS_FILE.read_text())
                    if d and ("", "ServiceAccount") in BY_KIND
                ]
                await apply(control, [*accounts, *manifests()])
                yield Cluster(server, admin, control, tmp_path)
            finally:
                await admin.close()
    finally:
        await server.stop()


# -- the unused-permission report --------------------------------------------------------------


def bound_roles(docs: list[dict[str, Any]], service_account: str) -> list[tuple[str, str, Any]]:
    """(label, namespace scope or "" for everywhere, rules) of each role bound to the SA."""
    by_ref = {
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
        for d in roles(docs)
    }
    out: list[tuple[str, str, Any]] = []
    for doc in docs:
        if doc["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        binding_ns = doc["metadata"].get("namespace", "")
        if not any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == service_account
            and (s.get("namespace") or binding_ns) == NAMESPACE
            for s in doc.get("subjects") or ()
        ):
            continue
        ref = doc["roleRef"]
        role_ns = binding_ns if ref["kind"] == "Role" else ""
        role = by_ref.get((ref["kind"], role_ns, ref["name"]))
        assert role is not None, f"{doc['kind']} {doc['metadata']['name']} binds a missing role"
        label = f"{ref['kind']}/{role_ns + '/' if role_ns else ''}{ref['name']}"
        rules = [rbac.PolicyRule.from_mapping(r) for r in role.get("rules") or ()]
        out.append((label, binding_ns, rules))
    return out


def unused_report(
    service_account: str, allowed: list[dict[str, Any]], docs: list[dict[str, Any]]
) -> list[str]:
    user = rbac.service_account_username(NAMESPACE, service_account)
    requests = [rbac.attributes_of_usage(user, e) for e in allowed]
    unused: list[str] = []
    for label, scope, rules in bound_roles(docs, service_account):
        in_scope = [a for a in requests if not scope or a.namespace == scope]
        unused.extend(
            p.describe() for p in rbac.unused_permissions(rbac.expand(label, rules), in_scope)
        )
    return unused


def used_report(allowed: list[dict[str, Any]]) -> list[str]:
    lines = []
    for e in allowed:
        what = e["path"] or (
            f"{e['resource']}{'/' + e['subresource'] if e['subresource'] else ''}"
            f" ({e['apiGroup'] or 'core'})"
            f"{' in ' + e['namespace'] if e['namespace'] else ''}"
            f"{' named ' + e['name'] if e['name'] else ''}"
        )
        role = e["allowedBy"]["role"] if e["allowedBy"] else {"kind": "?", "name": "?"}
        lines.append(f"{e['verb']} {what} x{e['count']} <- {role['kind']}/{role['name']}")
    return lines


def print_report(
    capsys: pytest.CaptureFixture[str], service_account: str, used: list[str], unused: list[str]
) -> None:
    text = [f"\nRBAC of {NAMESPACE}/{service_account}: {len(used)} kinds of request made"]
    text.extend(f"  used   {line}" for line in used)
    text.append(f"  {len(unused)} granted permission(s) never used:")
    text.extend(f"  UNUSED {line}" for line in unused)
    with capsys.disabled():
        print("\n".join(text))


# -- polling ------------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[bool]], cluster: Cluster, service_account: str, what: str
) -> None:
    """Poll ``check``; fail at the first 403 the service account gets (a missing
    permission, with the apiserver's text), or at the deadline with what is missing."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        denials = await cluster.denials(service_account)
        if denials:
            pytest.fail(f"{what}: the roles miss permissions:\n" + "\n".join(denials))
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {DEADLINE} s (no 403 seen)")
        await asyncio.sleep(0.1)


# -- the exporter -------------------------------------------------------------------------------


async def test_the_exporter_runs_on_its_roles(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = cluster.kubeconfig_for(EXPORTER_SA)
    token_file = str(cluster.token_file(EXPORTER_SA))
    server = cluster.server
    config = ExporterConfig(
        listen=ListenConfig(host="127.0.0.1", port=0),
        kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)),
        apiservers=(TargetConfig(name="sim", url=server.url, bearer_token_file=token_file),),
        schedulers=(
            TargetConfig(
                name="kube-scheduler",
                url=server.components["kube-scheduler"].url,
                bearer_token_file=token_file,
            ),
        ),
        controller_managers=(
            TargetConfig(
                name="kube-controller-manager",
                url=server.components["kube-controller-manager"].url,
                bearer_token_file=token_file,
            ),
        ),
    )
    validate(Config(exporter=config))
    exporter = build_exporter(config)
    runner = web.AppRunner(exporter.create_app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as scraper:
            families: dict[str, Any] = {}

            async def all_sources_up() -> bool:
                nonlocal families
                async with scraper.get("/metrics") as response:
                    families = parse(await response.text())
                up = families.get("kubeballast_source_up", [])
                synced = families.get("kubeballast_cluster_state_synced", [])
                return (
                    bool(up)
                    and all(s.value == 1.0 for s in up)
                    and [s.value for s in synced] == [1.0]
                )

            await eventually(all_sources_up, cluster, EXPORTER_SA, "every exporter source up")
            async with scraper.get("/readyz") as response:
                assert response.status == 200, await response.text()
    finally:
        await runner.cleanup()

    # The informers' other path: against an apiserver that refuses WatchList (before
    # 1.27, or with the feature off) they LIST page by page. Same token, same roles.
    provider = KubeClientProvider(KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)))
    http = await KubeHttp.from_provider(provider)
    listing = ClusterState(http, mode="list")
    try:
        await listing.start()
        async with asyncio.timeout(DEADLINE):
            await listing.wait_synced()
        assert {i.mode for i in listing.informers.values()} == {"list"}
    finally:
        await listing.stop()
        await http.close()
        await provider.close()

    # The eviction guard's parameters on the exporter's identity (read_pause, for the
    # kubeballast_eviction_pause_* metrics). The rest of exporter/evictionguard.py is
    # covered by the run above once that area is in the default catalog.
    api = await api_client(kubeconfig)
    try:
        assert await guard.read_pause(api) is None
    finally:
        await api.close()

    kinds = {s.labels["kind"] for s in families["kubeballast_source_up"]}
    assert {"apiserver-health", "apiserver-metrics"} <= kinds or len(kinds) >= 5, kinds
    denials = await cluster.denials(EXPORTER_SA)
    assert denials == [], "the exporter's roles miss permissions:\n" + "\n".join(denials)
    allowed = (await cluster.usage_of(EXPORTER_SA))["allowed"]
    print_report(
        capsys,
        EXPORTER_SA,
        used_report(allowed),
        unused_report(EXPORTER_SA, allowed, manifests()),
    )


# -- the receiver -------------------------------------------------------------------------------


def probe_payload(target: str) -> dict[str, Any]:
    """An Alertmanager (webhook v4) group of one firing alert the notify action takes."""
    labels = {"alertname": PROBE_ALERT, "severity": "warning", "cluster": "sim", "target": target}
    return {
        "version": "4",
        "groupKey": '{}:{alertname="' + PROBE_ALERT + '"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "kube-ballast",
        "groupLabels": {"alertname": PROBE_ALERT},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "an RBAC probe", "runbook_url": "https://example/rb"},
                "startsAt": "2026-11-26T05:13:11.519563Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph",
                "fingerprint": hashlib.sha256(target.encode()).hexdigest()[:16],
            }
        ],
    }


async def test_the_receiver_runs_a_remediation_cycle_on_its_roles(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], free_port: int
) -> None:
    kubeconfig = cluster.kubeconfig_for(RECEIVER_SA)
    webhook_token = cluster.tmp / "webhook-token"
    webhook_token.write_text(WEBHOOK_TOKEN + "\n")
    remediations = RemediationsConfig(
        namespace=NAMESPACE,
        kubernetes=KubernetesAccessConfig(kubeconfig_path=str(kubeconfig)),
        actions=(
            ActionConfig(
                name="notify",
                alerts=(PROBE_ALERT,),
                dry_run=False,
                max_per_hour=10,
                cooldown_seconds=0.0,
            ),
        ),
        enabled_actions=("notify",),
        leader_election=LeaderElectionConfig(
            lease_duration_seconds=2.0, renew_deadline_seconds=1.5, retry_period_seconds=0.2
        ),
        scan_interval_seconds=0.1,
    )
    config = ReceiverConfig(
        listen=ListenConfig(host="127.0.0.1", port=free_port),
        auth=ReceiverAuthConfig(bearer_token_file=str(webhook_token)),
        dry_run=False,
        remediations=remediations,
    )
    validate(Config(receiver=config))
    url = f"http://127.0.0.1:{free_port}"
    task = asyncio.create_task(run_receiver(config))
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    records: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession(base_url=url, headers=headers) as receiver:

            async def leading() -> bool:
                if task.done():
                    task.result()
                    pytest.fail("the receiver stopped")
                try:
                    async with receiver.get("/records") as response:
                        return response.status == 200 and bool((await response.json())["leader"])
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(leading, cluster, RECEIVER_SA, "a leading receiver")
            # Two alerts, one after the other: the first creates the ledger's
            # ConfigMaps, the second updates them.
            for done, target in enumerate(("first", "second"), start=1):
                async with receiver.post(config.path, json=probe_payload(target)) as response:
                    assert response.status < 300, await response.text()

                async def remediated(done: int = done) -> bool:
                    nonlocal records
                    async with receiver.get("/records") as response:
                        if response.status != 200:
                            return False
                        records = (await response.json())["records"]
                    return sum(r["state"] == "succeeded" for r in records) >= done

                await eventually(remediated, cluster, RECEIVER_SA, f"{done} succeeded record(s)")
            # The leader holds its Lease while it runs (and releases it on stop).
            lease = await k8s.CoordinationV1Api(cluster.admin).read_namespaced_lease(
                remediations.leader_election.lease_name, NAMESPACE
            )
            assert lease.spec.holder_identity
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # The eviction-pause action's calls on the receiver's identity: detection and
    # installation checks, then a pause written and ended (create, get, update).
    api = await api_client(kubeconfig)
    try:
        credentials = await guard.detect_service_account_credentials(api)
        assert credentials.holds is True, credentials.evidence
        assert "runs with --use-service-account-credentials" in credentials.evidence
        # Without a visible kube-controller-manager pod (a managed control plane), the
        # detection falls back to the node-controller ServiceAccount.
        for pod in (
            await k8s.CoreV1Api(cluster.admin).list_namespaced_pod(
                "kube-system", label_selector="component=kube-controller-manager"
            )
        ).items:
            await k8s.CoreV1Api(cluster.admin).delete_namespaced_pod(
                pod.metadata.name, "kube-system", grace_period_seconds=0
            )
        credentials = await guard.detect_service_account_credentials(api)
        assert credentials.holds is True, credentials.evidence
        assert "ServiceAccount kube-system/node-controller exists" in credentials.evidence
        installation = await guard.guard_installation(api)
        assert installation.policy_api
        assert not installation.policy
        now = time.time()
        pause = guard.PauseState(
            paused=True,
            reason="RBAC test",
            started_at=now,
            expires_at=now + 600,
            max_until=now + 3600,
            owner="rbac-test",
        )
        await guard.write_pause(api, pause, None)
        stored = await guard.read_pause(api)
        assert stored is not None
        assert stored.state.paused
        ended = await guard.end_pause(api, now + 1, "manual")
        assert ended is not None
        assert not ended.paused
    finally:
        await api.close()

    denials = await cluster.denials(RECEIVER_SA)
    assert denials == [], "the receiver's roles miss permissions:\n" + "\n".join(denials)
    # What the cycle left in the cluster, read as the admin.
    core = k8s.CoreV1Api(cluster.admin)
    configmaps = {c.metadata.name for c in (await core.list_namespaced_config_map(NAMESPACE)).items}
    assert f"{remediations.state_prefix}-records" in configmaps
    events = (await core.list_namespaced_event(NAMESPACE)).items
    assert events, "the receiver wrote no Event"
    assert [r["action"] for r in records if r["state"] == "succeeded"] == ["notify", "notify"]
    allowed = (await cluster.usage_of(RECEIVER_SA))["allowed"]
    print_report(
        capsys,
        RECEIVER_SA,
        used_report(allowed),
        unused_report(RECEIVER_SA, allowed, manifests()),
    )


# -- the eviction-guard janitor ---------------------------------------------------------------


async def test_the_janitor_ends_an_overdue_pause_on_its_role(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    overdue = guard.PauseState(
        paused=True,
        reason="left behind",
        started_at=now - 900,
        expires_at=now - 300,
        max_until=now + 2700,
        owner="a receiver that went away",
    )
    await guard.write_pause(cluster.admin, overdue, None)
    api = await api_client(cluster.kubeconfig_for(JANITOR_SA))
    try:
        ended = await guard.janitor(api, time.time())
    finally:
        await api.close()
    assert ended is not None
    assert not ended.paused
    stored = await guard.read_pause(cluster.admin)
    assert stored is not None
    assert not stored.state.paused

    denials = await cluster.denials(JANITOR_SA)
    assert denials == [], "the janitor's role misses permissions:\n" + "\n".join(denials)
    allowed = (await cluster.usage_of(JANITOR_SA))["allowed"]
    print_report(
        capsys, JANITOR_SA, used_report(allowed), unused_report(JANITOR_SA, allowed, manifests())
    )
