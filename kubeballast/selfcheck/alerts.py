"""Alerts: every kube-ballast alert has a runbook, is loaded in Prometheus, and the chain
from Prometheus to the receiver is alive.

The seed's second self-check item is "every abnormal component raises an alert, and
every alert has a documented response". The alert list is the rule files themselves
(``alerts/*.yaml``, the one source docs/alerts.md and the PrometheusRule objects are
rendered from), not a copy that could drift:

- **runbooks**: every alert's ``runbook_url`` names a file under ``docs/runbooks/``
  that exists. A missing one is a FAIL.
- **loaded**: Prometheus' ``GET /api/v1/rules?type=alert`` lists every alert name;
  missing names are a FAIL (the rules are not deployed, or a rule file failed to
  load), listed. SKIP without ``--prometheus-url``.
- **chain**: Prometheus knows an active Alertmanager (``/api/v1/alertmanagers``), the
  Alertmanager answers ``/-/ready``, and the receiver's webhook refuses an
  unauthenticated POST with 401 (reachable, and authenticating: a receiver that
  accepts anyone runs remediations for anyone). Each part runs when its URL is given;
  none given is a SKIP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml

from kubeballast.selfcheck.context import Context
from kubeballast.selfcheck.model import RUNBOOK_PREFIX, Status
from kubeballast.selfcheck.runner import CheckSpec, Finding

__all__ = ["CHECKS", "load_alerts"]

_LISTED: Final = 20


def load_alerts(directory: Path) -> dict[str, set[str]]:
    """Alert name -> the runbook URLs its rules give, from ``directory/*.yaml``."""
    alerts: dict[str, set[str]] = {}
    for path in sorted(directory.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in document.get("groups") or ():
            for rule in group.get("rules") or ():
                name = rule.get("alert")
                if not name:
                    continue
                url = (rule.get("annotations") or {}).get("runbook_url", "")
                alerts.setdefault(str(name), set()).add(str(url))
    return alerts


async def _alerts(context: Context) -> dict[str, set[str]] | None:
    directory = context.settings.alerts_dir
    if directory is None or not directory.is_dir():
        return None
    return await context.shared("alerts", lambda: asyncio.to_thread(load_alerts, directory))


def _no_rules(context: Context) -> Finding:
    return Finding(
        Status.SKIP,
        f"rule files not found ({context.settings.alerts_dir or 'no --alerts-dir'})",
        {},
    )


async def check_runbooks(context: Context) -> Finding:
    alerts = await _alerts(context)
    if alerts is None:
        return _no_rules(context)
    runbooks = context.settings.runbooks_dir
    problems: dict[str, str] = {}
    for name, urls in sorted(alerts.items()):
        for url in sorted(urls):
            if not url:
                problems[name] = "no runbook_url"
            elif (
                url.startswith(RUNBOOK_PREFIX)
                and runbooks is not None
                and not (runbooks / url[len(RUNBOOK_PREFIX) :]).is_file()
            ):
                problems[name] = f"{url} does not exist"
    evidence: dict[str, Any] = {
        "alerts": len(alerts),
        "rules_dir": str(context.settings.alerts_dir),
        "runbooks_dir": None if runbooks is None else str(runbooks),
        "problems": problems,
    }
    if problems:
        return Finding(
            Status.FAIL,
            f"{len(problems)} alert(s) without a runbook: {', '.join(sorted(problems)[:_LISTED])}",
            evidence,
            "write docs/runbooks/<Alert>.md and link it as runbook_url",
        )
    return Finding(Status.PASS, f"all {len(alerts)} alerts have a runbook", evidence)


async def _get_json(context: Context, url: str) -> Any:
    async with context.http().get(url) as response:
        if response.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status}")
        return await response.json(content_type=None)


async def check_loaded(context: Context) -> Finding:
    base = context.settings.prometheus_url
    if not base:
        return Finding(Status.SKIP, "no --prometheus-url given", {})
    alerts = await _alerts(context)
    if alerts is None:
        return _no_rules(context)
    url = base.rstrip("/") + "/api/v1/rules?type=alert"
    try:
        body = await _get_json(context, url)
    except (aiohttp.ClientError, TimeoutError, RuntimeError) as error:
        return Finding(
            Status.FAIL,
            f"Prometheus not readable: {error or type(error).__name__}",
            {"url": url},
            "check --prometheus-url",
        )
    loaded: set[str] = set()
    unhealthy: set[str] = set()
    for group in (body.get("data") or {}).get("groups") or ():
        for rule in group.get("rules") or ():
            if rule.get("type", "alerting") == "alerting" and rule.get("name"):
                loaded.add(str(rule["name"]))
                if rule.get("health") not in (None, "ok", "unknown"):
                    unhealthy.add(str(rule["name"]))
    missing = sorted(set(alerts) - loaded)
    evidence: dict[str, Any] = {
        "prometheus": base,
        "expected": len(alerts),
        "loaded": len(set(alerts) & loaded),
        "missing": missing,
        "unhealthy": sorted(unhealthy & set(alerts)),
    }
    fix = (
        "load alerts/*.yaml into Prometheus (rule_files), or apply deploy/prometheusrule/"
        " with the Prometheus Operator; docs/alerts.md"
    )
    if missing:
        return Finding(
            Status.FAIL,
            f"{len(missing)} of {len(alerts)} kube-ballast alerts not loaded: "
            + ", ".join(missing[:_LISTED])
            + (" ..." if len(missing) > _LISTED else ""),
            evidence,
            fix,
        )
    if evidence["unhealthy"]:
        return Finding(
            Status.WARN,
            "alert rules failing to evaluate: " + ", ".join(evidence["unhealthy"][:_LISTED]),
            evidence,
            fix,
        )
    return Finding(Status.PASS, f"all {len(alerts)} kube-ballast alerts loaded", evidence)


async def check_chain(context: Context) -> Finding:
    settings = context.settings
    if not (settings.prometheus_url or settings.alertmanager_url or settings.receiver_url):
        return Finding(
            Status.SKIP,
            "none of --prometheus-url, --alertmanager-url, --receiver-url given",
            {},
        )
    evidence: dict[str, Any] = {}
    failures: list[str] = []
    skipped: list[str] = []
    if settings.prometheus_url:
        url = settings.prometheus_url.rstrip("/") + "/api/v1/alertmanagers"
        try:
            body = await _get_json(context, url)
            active = [
                str(am.get("url"))
                for am in (body.get("data") or {}).get("activeAlertmanagers") or ()
            ]
            evidence["prometheus_alertmanagers"] = active
            if not active:
                failures.append("Prometheus has no active Alertmanager")
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as error:
            evidence["prometheus_alertmanagers"] = {"error": str(error)}
            failures.append(f"Prometheus not readable: {error or type(error).__name__}")
    else:
        skipped.append("Prometheus")
    if settings.alertmanager_url:
        url = settings.alertmanager_url.rstrip("/") + "/-/ready"
        try:
            async with context.http().get(url) as response:
                evidence["alertmanager_ready_status"] = response.status
                if response.status != 200:
                    failures.append(f"Alertmanager /-/ready answered {response.status}")
        except (aiohttp.ClientError, TimeoutError) as error:
            evidence["alertmanager_ready_status"] = None
            failures.append(f"Alertmanager unreachable: {error or type(error).__name__}")
    else:
        skipped.append("Alertmanager")
    if settings.receiver_url:
        try:
            # An empty JSON body without credentials: the receiver must refuse it before
            # reading it, and records nothing.
            async with context.http().post(settings.receiver_url, json={}) as response:
                evidence["receiver_unauthenticated_post_status"] = response.status
                if response.status != 401:
                    failures.append(
                        f"receiver answered an unauthenticated POST with {response.status}, not 401"
                    )
        except (aiohttp.ClientError, TimeoutError) as error:
            evidence["receiver_unauthenticated_post_status"] = None
            failures.append(f"receiver unreachable: {error or type(error).__name__}")
    else:
        skipped.append("receiver")
    evidence["not_checked"] = skipped
    if failures:
        return Finding(
            Status.FAIL,
            "; ".join(failures),
            evidence,
            "docs/runbooks/KubeBallastReceiverWebhookErrors.md; alerts/alertmanager/ has the"
            " example configuration",
        )
    checked = [p for p in ("Prometheus", "Alertmanager", "receiver") if p not in skipped]
    if skipped:
        return Finding(
            Status.WARN,
            f"{', '.join(checked)} alive; not checked: {', '.join(skipped)}",
            evidence,
            "give " + ", ".join(f"--{p.lower()}-url" for p in skipped),
        )
    return Finding(
        Status.PASS,
        "Prometheus -> Alertmanager -> receiver alive, the receiver authenticating",
        evidence,
    )


CHECKS: Final = (
    CheckSpec(
        "alerts.runbooks", "Every kube-ballast alert has a runbook", "alerts", check_runbooks
    ),
    CheckSpec(
        "alerts.loaded", "Every kube-ballast alert loaded in Prometheus", "alerts", check_loaded
    ),
    CheckSpec(
        "alerts.chain",
        "Alert chain alive: Prometheus, Alertmanager, receiver (authenticating)",
        "alerts",
        check_chain,
    ),
)
