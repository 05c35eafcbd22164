"""The report's three forms: a terminal table, JSON for machines, HTML to share.

The table is for the person who ran the command: one line per check (status, id,
summary), then for every check that is not a pass its fix and the evidence in one
compact line. The JSON is :meth:`Report.to_json` (a versioned schema CI parses). The
HTML is one self-contained file (inline CSS, no script, no external resource) that
can be attached to a ticket or a change request: the counts at the top, then each
check with its summary, fix and full evidence.
"""

from __future__ import annotations

import datetime
import html
import json
import shutil
import textwrap
from typing import Any, Final

from kubeballast.selfcheck.model import Check, Report, Status

__all__ = ["render", "render_html", "render_json", "render_table"]

FORMATS: Final = ("table", "json", "html")

_COLOURS: Final = {
    Status.PASS: "#1a7f37",
    Status.WARN: "#9a6700",
    Status.FAIL: "#cf222e",
    Status.SKIP: "#57606a",
}


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def render_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, default=str) + "\n"


def render_table(report: Report, width: int | None = None) -> str:
    width = width or max(80, min(160, shutil.get_terminal_size((120, 24)).columns))
    id_width = max((len(c.id) for c in report.checks), default=10)
    summary_width = max(30, width - id_width - 9)
    lines = [f"{'STATUS':<6}  {'CHECK':<{id_width}}  SUMMARY"]
    for check in report.checks:
        wrapped = textwrap.wrap(check.summary, summary_width) or [""]
        mark = check.status.value + ("*" if check.timed_out else "")
        lines.append(f"{mark:<6}  {check.id:<{id_width}}  {wrapped[0]}")
        lines += [f"{'':<6}  {'':<{id_width}}  {more}" for more in wrapped[1:]]
    details = [c for c in report.checks if c.status in (Status.WARN, Status.FAIL)]
    if details:
        lines += ["", "What to do:"]
        for check in details:
            lines.append(f"  {check.status.value} {check.id}: {check.fix or '-'}")
            evidence = _compact(check.evidence)
            if len(evidence) > 600:
                evidence = evidence[:600] + "... (--format json for all)"
            lines.append(f"      evidence: {evidence}")
    counts = report.counts()
    lines.append("")
    lines.append(
        ", ".join(f"{n} {status}" for status, n in counts.items())
        + f" in {report.duration_seconds:.1f} s"
        + (f"; timed out (*): {', '.join(report.timed_out)}" if report.timed_out else "")
    )
    return "\n".join(lines) + "\n"


_CSS: Final = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px;
       color: #1f2328; background: #ffffff; }
h1 { font-size: 24px; margin: 0 0 4px 0; }
.meta { color: #57606a; margin-bottom: 16px; }
.counts span { display: inline-block; padding: 6px 14px; margin-right: 8px; border-radius: 6px;
               color: #ffffff; font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin-top: 16px; }
th, td { text-align: left; vertical-align: top; padding: 8px; border-bottom: 1px solid #d0d7de; }
th { background: #f6f8fa; }
.badge { display: inline-block; min-width: 44px; text-align: center; padding: 2px 8px;
         border-radius: 4px; color: #ffffff; font-weight: 600; font-size: 13px; }
.id { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
.fix { margin-top: 6px; color: #0b3d91; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; margin: 6px 0 0 0;
      white-space: pre-wrap; word-break: break-word; }
details summary { cursor: pointer; color: #57606a; margin-top: 6px; }
"""


def _badge(status: Status) -> str:
    return f'<span class="badge" style="background:{_COLOURS[status]}">{status.value}</span>'


def _row(check: Check) -> str:
    evidence = html.escape(json.dumps(check.evidence, indent=2, sort_keys=True, default=str))
    opened = " open" if check.status in (Status.WARN, Status.FAIL) else ""
    fix = f'<div class="fix">Fix: {html.escape(check.fix)}</div>' if check.fix else ""
    timed = " (timed out)" if check.timed_out else ""
    return (
        "<tr>"
        f"<td>{_badge(check.status)}</td>"
        f'<td><div class="id">{html.escape(check.id)}</div>{html.escape(check.title)}</td>'
        f"<td>{html.escape(check.summary)}{timed}{fix}"
        f"<details{opened}><summary>evidence</summary><pre>{evidence}</pre></details></td>"
        "</tr>"
    )


def render_html(report: Report) -> str:
    started = datetime.datetime.fromtimestamp(report.started_unix, datetime.UTC)
    counts = "".join(
        f'<span style="background:{_COLOURS[Status(status)]}">{n} {status}</span>'
        for status, n in report.counts().items()
    )
    timed_out = (
        f"<p>Timed out: {html.escape(', '.join(report.timed_out))}</p>" if report.timed_out else ""
    )
    rows = "\n".join(_row(check) for check in report.checks)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>kube-ballast self-check: {html.escape(report.worst.value)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>kube-ballast self-check: {_badge(report.worst)}</h1>
<div class="meta">Cluster {html.escape(report.cluster or "unknown")} &middot;
{started:%Y-%m-%d %H:%M:%S} UTC &middot; {report.duration_seconds:.1f} s &middot;
kube-ballast {html.escape(report.version)}</div>
<div class="counts">{counts}</div>
{timed_out}
<table>
<thead><tr><th>Status</th><th>Check</th><th>Verdict, fix and evidence</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "html":
        return render_html(report)
    return render_table(report)
