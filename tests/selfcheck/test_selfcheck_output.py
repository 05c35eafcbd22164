"""What ``kube-ballast selfcheck`` prints: a stable JSON schema, a readable table, an HTML
report that renders in a real browser, and the exit codes CI gates on.

The command runs as a subprocess (``python -m kubeballast``), the way CI runs it,
against the in-process simulator. The HTML report is opened in headless Chromium (the
Debian package) and its screenshot decoded (selfcheck_png.py): it must not be blank, and
the FAIL badge's red must be on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from loopback import run_command
from selfcheck_png import read_png
from selfcheck_support import Cluster, run

from kubeballast.selfcheck.model import SCHEMA_VERSION, Status
from kubeballast.selfcheck.render import render_html, render_table
from kubeballast.selfcheck.suite import ALL_CHECKS

pytestmark = pytest.mark.timeout(240)

CHROMIUM = Path("/usr/bin/chromium")
REPORT_KEYS = {
    "schema_version",
    "kube_ballast_version",
    "cluster",
    "started_unix",
    "duration_seconds",
    "deadline_seconds",
    "counts",
    "worst",
    "timed_out",
    "checks",
}
CHECK_KEYS = {
    "id",
    "title",
    "area",
    "status",
    "summary",
    "evidence",
    "fix",
    "duration_seconds",
    "timed_out",
}


async def selfcheck(cluster: Cluster, *args: str) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "kubeballast", "selfcheck"]
    options = ["--kubeconfig", str(cluster.kubeconfig), "--congestion-window", "1"]
    code, stdout, stderr = await run_command([*command, *options, *args], within=120)
    return code, stdout.decode(), stderr.decode()


async def test_selfcheck_json_schema_is_stable(generated: Cluster) -> None:
    code, out, err = await selfcheck(generated, "--format", "json")
    report = json.loads(out)

    assert set(report) == REPORT_KEYS, err
    assert report["schema_version"] == SCHEMA_VERSION == 1
    assert [c["id"] for c in report["checks"]] == [spec.id for spec in ALL_CHECKS]
    for item in report["checks"]:
        assert set(item) == CHECK_KEYS
        assert item["status"] in {s.value for s in Status}
        assert isinstance(item["evidence"], dict)
        assert item["summary"]
        if item["status"] == "PASS":
            assert item["fix"] == ""
        if item["status"] in ("WARN", "FAIL"):
            assert item["fix"]
    assert set(report["counts"]) == {"PASS", "WARN", "FAIL", "SKIP"}
    assert sum(report["counts"].values()) == len(ALL_CHECKS)
    assert report["cluster"] == generated.server.url
    # The generated cluster has no eviction guard: a FAIL, and exit status 2.
    assert report["worst"] == "FAIL"
    assert code == 2


@pytest.mark.parametrize(
    ("check_id", "strict", "code"),
    [
        ("scale.limits", False, 0),  # PASS
        ("etcd.events_split", False, 0),  # WARN: not split, 9 workers
        ("etcd.events_split", True, 1),
        ("evictionguard.installed", False, 2),  # FAIL: not installed
        ("alerts.chain", True, 0),  # SKIP: no URL given
    ],
)
async def test_selfcheck_exit_codes(
    generated: Cluster, check_id: str, strict: bool, code: int
) -> None:
    args = ["--check", check_id, *(["--strict"] if strict else [])]
    got, out, err = await selfcheck(generated, *args)
    assert got == code, out + err
    assert check_id in out


async def test_selfcheck_bad_flags_are_usage_errors(generated: Cluster) -> None:
    code, out, err = await selfcheck(generated, "--check", "etcd.nonsense")
    assert code == 2
    assert out == ""
    assert err.startswith("kube-ballast: config: --check: no check 'etcd.nonsense'")
    code, _, err = await selfcheck(generated, "--deadline", "0")
    assert code == 2
    assert "argument --deadline: must be above 0" in err


async def test_selfcheck_table_names_cause_and_fix(generated: Cluster) -> None:
    report = await run(generated.settings())
    table = render_table(report, width=120)
    lines = table.splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "SUMMARY"]
    guard = next(line for line in lines if " evictionguard.installed " in line)
    assert guard.startswith("FAIL")
    assert "FAIL evictionguard.installed: kubectl apply -k deploy/eviction-guard/" in table
    assert "evidence: " in table
    assert lines[-1].startswith(f"{report.counts()['PASS']} PASS")


def count_pixels(path: Path) -> tuple[int, int, int]:
    """(pixels, pixels not white, pixels of the FAIL badge's red #cf222e)."""
    width, height, bpp, rows = read_png(path)
    inked = red = 0
    for row in rows:
        for x in range(0, width * bpp, bpp):
            r, g, b = row[x], row[x + 1], row[x + 2]
            if r < 245 or g < 245 or b < 245:
                inked += 1
            if abs(r - 0xCF) < 12 and abs(g - 0x22) < 12 and abs(b - 0x2E) < 12:
                red += 1
    return width * height, inked, red


async def test_selfcheck_html_report_renders_in_chromium(
    generated: Cluster, tmp_path: Path
) -> None:
    if not await asyncio.to_thread(CHROMIUM.exists):
        pytest.fail("chromium is not installed (make test installs the Debian package)")
    report = await run(generated.settings())
    page = tmp_path / "report.html"
    html = render_html(report)
    await asyncio.to_thread(page.write_text, html, "utf-8")
    # Self-contained: nothing to fetch.
    assert "http://" not in html.replace(generated.server.url, "")
    assert "<script" not in html
    assert "evictionguard.installed" in html
    assert "kubectl apply -k deploy/eviction-guard/" in html

    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    env: dict[str, Any] = {**os.environ, "HOME": str(tmp_path)}
    args = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        page.as_uri(),
    ]
    try:
        _, _, stderr = await run_command(args, within=120, env=env)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert shot.exists(), stderr.decode()[-2000:]

    pixels, inked, red = await asyncio.to_thread(count_pixels, shot)
    assert pixels == 1200 * 2000
    assert inked > pixels * 0.02, f"only {inked} of {pixels} pixels are not white"
    assert red > 200, "no FAIL badge visible"
