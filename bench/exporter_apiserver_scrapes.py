"""Benchmark: how often the exporter GETs each apiserver's /metrics, and its CPU doing so.

The apiserver area (congestion verdict) and the objects area (stored objects, Event
writes) both read each apiserver's /metrics page, tens of megabytes on a 5000-node
apiserver. Since they share one scrape per target (exporter/http.py
``SharedMetricsScrape``) the page is fetched and parsed once per interval, not once
per area. This counts it where it lands: in the simulated apiserver, switched to RBAC
(``POST /_sim/authz``), whose access log (``/_sim/authz/usage``) counts each user's
requests by path. The exporter scrapes with a service-account token of its own (minted
by the simulator, bound to a ClusterRole that allows the page), so its count is the
exporter's count.

Three kinds of process, so that the exporter's CPU time is its own: ``kube-ballast
simulate`` (API only), and per variant the exporter (this script, ``--role exporter``:
``run_exporter`` over a catalog of the two areas, one apiserver target at
``--interval``). After the exporter is ready and ``--settle`` seconds more, the
/metrics requests and the exporter's CPU seconds are counted over ``--window`` seconds.

Second, what the single parse saves at scale, without a 5000-node simulator: the
synthetic 5000-node-sized apiserver page of ``bench/exporter_metrics.py`` (8.8 MiB),
parsed as each interval used to parse it (once for the congestion verdict's families,
once for the object counts') and as the shared scrape does (once, for both), CPU time
(``time.process_time``) median over ``--parse-repeat`` runs.

``--before TREE`` runs a first variant with the ``kubeballast`` package found in TREE
(say, the link tree of the previous commit's files), in an interpreter without the
venv's editable install (``python -S`` with TREE and site-packages on PYTHONPATH); the
second variant is the working tree. Build such a tree with, for instance::

    mkdir -p /tmp/kb-before && cp -rL build/import-tree/kubeballast /tmp/kb-before/
    for f in apiserver objects http catalog; do
        git show COMMIT:exporter/$f.py > /tmp/kb-before/kubeballast/exporter/$f.py
    done
    .venv/bin/python bench/exporter_apiserver_scrapes.py --nodes 1000 --before /tmp/kb-before
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from support import API_ONLY, Simulator, cpu_seconds, free_port, simulator, stop, wait_ready

HERE = Path(__file__).resolve()
NAMESPACE = "kube-ballast"
SERVICE_ACCOUNT = "bench-exporter"
RBAC = "rbac.authorization.k8s.io"
TARGET = "apiserver-0"


# --- role: exporter ----------------------------------------------------------------------


async def run_exporter_role(
    url: str, token_file: str, kubeconfig: str, port: int, interval: float
) -> None:
    from kubeballast.core.config import (
        ExporterConfig,
        KubernetesAccessConfig,
        ListenConfig,
        TargetConfig,
    )
    from kubeballast.exporter.apiserver import build_apiserver
    from kubeballast.exporter.catalog import Catalog
    from kubeballast.exporter.objects import build_objects
    from kubeballast.exporter.server import run_exporter

    catalog = Catalog()
    catalog.register("apiserver", build_apiserver)
    catalog.register("objects", build_objects)
    config = ExporterConfig(
        listen=ListenConfig(host="127.0.0.1", port=port),
        # The objects area's ConfigMap list, as the admin: system:masters is not in the
        # access log, and it runs once at start (then every 5 minutes).
        kubernetes=KubernetesAccessConfig(kubeconfig_path=kubeconfig),
        apiservers=(
            TargetConfig(
                name=TARGET,
                url=url,
                bearer_token_file=token_file,
                interval_seconds=interval,
                timeout_seconds=min(interval, 10.0),
            ),
        ),
    )
    await run_exporter(config, catalog=catalog)


# --- orchestration ------------------------------------------------------------------------


async def prepare(url: str, admin_token: str, directory: Path) -> Path:
    """RBAC on, a service account allowed the apiserver's probes; its token file."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with aiohttp.ClientSession(base_url=url, headers=headers) as session:

        async def post(path: str, body: dict[str, Any], expect: int) -> Any:
            async with session.post(path, json=body) as response:
                assert response.status == expect, (path, response.status, await response.text())
                return await response.json()

        await post("/_sim/authz", {"mode": "RBAC"}, 200)
        minted = await post(
            "/_sim/tokens", {"namespace": NAMESPACE, "serviceAccount": SERVICE_ACCOUNT}, 200
        )
        role = {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": {"name": "bench"}}
        role["rules"] = [{"nonResourceURLs": ["/livez", "/readyz", "/metrics"], "verbs": ["get"]}]
        await post(f"/apis/{RBAC}/v1/clusterroles", role, 201)
        binding = {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "bench"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "bench"},
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ],
        }
        await post(f"/apis/{RBAC}/v1/clusterrolebindings", binding, 201)
    token_file = directory / "exporter.token"
    token_file.write_text(minted["token"] + "\n")
    return token_file


async def metrics_requests(url: str, admin_token: str) -> int:
    """The exporter's GET /metrics requests the apiserver has counted."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    user = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{url}/_sim/authz/usage") as response,
    ):
        usage = await response.json()
    entries = usage["users"].get(user, {}).get("allowed", [])
    return sum(e["count"] for e in entries if e["path"] == "/metrics")


async def page_bytes(url: str, admin_token: str) -> int:
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{url}/metrics") as response,
    ):
        return len(await response.read())


def start_exporter(
    args: argparse.Namespace, sim: Simulator, token_file: Path, port: int, tree: str | None
) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(HERE), "--role", "exporter", "--url", sim.url]
    command += ["--token-file", str(token_file), "--kubeconfig", str(sim.kubeconfig)]
    command += ["--port", str(port)]
    command += ["--interval", str(args.interval)]
    env = dict(os.environ)
    if tree is not None:
        # Without site (so without the editable install, which would win): the tree's
        # package and the venv's dependencies.
        command.insert(1, "-S")
        env["PYTHONPATH"] = os.pathsep.join([tree, sysconfig.get_paths()["purelib"]])
    return subprocess.Popen(command, env=env)


def measure_variant(
    args: argparse.Namespace, sim: Simulator, token_file: Path, tree: str | None
) -> dict[str, Any]:
    url, admin_token = sim.url, sim.token
    port = free_port()
    exporter = start_exporter(args, sim, token_file, port, tree)
    try:
        asyncio.run(
            wait_ready(
                f"http://127.0.0.1:{port}/readyz", exporter, time.monotonic() + 120, "exporter"
            )
        )
        time.sleep(args.settle)  # pacing: the first refreshes done
        ps = psutil.Process(exporter.pid)
        requests_before = asyncio.run(metrics_requests(url, admin_token))
        cpu_before, wall_before = cpu_seconds(ps), time.monotonic()
        time.sleep(args.window)  # the measured window
        cpu = cpu_seconds(ps) - cpu_before
        wall = time.monotonic() - wall_before
        requests = asyncio.run(metrics_requests(url, admin_token)) - requests_before
    finally:
        stop(exporter)
    return {
        "variant": "before" if tree is not None else "working tree",
        "tree": tree,
        "window_seconds": round(wall, 1),
        "metrics_requests": requests,
        "metrics_requests_per_minute": round(requests * 60 / wall, 2),
        "exporter_cpu_seconds": round(cpu, 3),
        "exporter_cpu_percent_of_one_core": round(100 * cpu / wall, 2),
    }


def parse_cost(repeat: int) -> dict[str, Any]:
    from exporter_metrics import synthetic_apiserver_page

    from kubeballast.core.promtext import parse
    from kubeballast.exporter.congestion import WANTED_FAMILIES
    from kubeballast.exporter.objects import APISERVER_FAMILIES

    page = synthetic_apiserver_page()

    def cpu_ms(work: Any) -> float:
        runs = []
        for _ in range(repeat):
            started = time.process_time()
            work()
            runs.append(time.process_time() - started)
        return round(1000 * statistics.median(runs), 1)

    def per_area() -> None:
        parse(page, WANTED_FAMILIES)
        parse(page, APISERVER_FAMILIES)

    return {
        "page_bytes": len(page.encode()),
        "parse_per_area_cpu_ms": cpu_ms(per_area),
        "parse_shared_cpu_ms": cpu_ms(lambda: parse(page, WANTED_FAMILIES | APISERVER_FAMILIES)),
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    parsing = parse_cost(args.parse_repeat)
    print(json.dumps(parsing), file=sys.stderr, flush=True)
    with simulator(
        nodes=args.nodes,
        pods_per_node=args.pods_per_node,
        options=API_ONLY,
        prefix="kb-bench-scrapes-",
    ) as sim:
        token_file = asyncio.run(prepare(sim.url, sim.token, sim.directory))
        size = asyncio.run(page_bytes(sim.url, sim.token))
        results = []
        for tree in ([args.before] if args.before else []) + [None]:
            result = measure_variant(args, sim, token_file, tree)
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
    return {
        "nodes": args.nodes,
        "pods_per_node": args.pods_per_node,
        "interval_seconds": args.interval,
        "metrics_page_bytes": size,
        "results": results,
        "synthetic_5000_node_page": parsing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("main", "exporter"), default="main")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--before", default=None, metavar="TREE")
    parser.add_argument("--parse-repeat", type=int, default=5)
    # The exporter role's own arguments.
    parser.add_argument("--url", default="")
    parser.add_argument("--token-file", default="")
    parser.add_argument("--kubeconfig", default="")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.role == "exporter":
        logging.basicConfig(level=logging.ERROR)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                run_exporter_role(
                    args.url, args.token_file, args.kubeconfig, args.port, args.interval
                )
            )
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        print(json.dumps(orchestrate(args), indent=2))


if __name__ == "__main__":
    main()
