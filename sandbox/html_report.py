"""``wscore sandbox run --html FILE``: one self-contained HTML page with the run's timeline.

The page needs no network (no CDN, no fonts, no images): the figures and the
verdict are HTML, the run's :class:`~sandbox.timeline.Timeline` is embedded as
JSON, and a small inline script draws the chart as SVG —

* every delivery as a dot: receipt time (x) against delivery latency (y, log scale);
* the sending phase and the drain shaded; each fault that fired marked — windows
  (blackholes, refusals) as bands, instants (resets, cut connections) as ticks;
* each resume (green), new session after a loss (orange) and session loss (red)
  as a marker under the plot;
* every missing delivery as a cross at its send time: red when it was lost
  silently (a breach), orange when a reported session loss explains it.

Pure: :func:`render_html` turns a :class:`~sandbox.report.Report` into text.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from wscore.sandbox.report import Report

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} .sub{color:#666;margin:0 0 16px}
.pass{color:#17803d} .fail{color:#c0262d} table{border-collapse:collapse;margin:8px 0 16px}
td{padding:2px 12px 2px 0} td.n{text-align:right;font-variant-numeric:tabular-nums}
#chart svg{border:1px solid #ddd;background:#fff} .legend span{margin-right:14px;white-space:nowrap}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
.axis text{font-size:11px;fill:#555} .axis line,.axis path{stroke:#999}
"""

#: The chart's script (``sandbox/timeline_chart.js``), inlined into every page.
_JS = resources.files("sandbox").joinpath("timeline_chart.js").read_text(encoding="utf-8")


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_html(report: Report) -> str:
    """The self-contained HTML page of ``report`` (its timeline drawn when it has one)."""
    r, g, f, v = report.run, report.ledger, report.faults, report.verdict
    timeline: dict[str, Any] = report.timeline.to_dict() if report.timeline is not None else {
        "send_start": 0, "send_end": 0, "drain_end": 0, "deliveries": [], "deliveries_total": 0,
        "faults": [], "events": [], "losses": []}
    # JSON inside <script>: "</" must not end the element early.
    data = json.dumps(timeline, separators=(",", ":")).replace("</", "<\\/")
    verdict = ('<p class="pass"><b>PASS</b> — no message lost silently, duplicated or reordered</p>'
               if v.passed else '<p class="fail"><b>FAIL</b></p><ul>'
               + "".join(f'<li class="fail">{_esc(b)}</li>' for b in v.breaches) + "</ul>")
    notes = "".join(f"<li>{_esc(n)}</li>" for n in v.notes)
    lat = g.delivery_latency_seconds
    rows = [
        ("published messages", g.chat_sent), ("deliveries expected", g.deliveries_expected),
        ("delivered", g.delivered), ("lost silently (guarantee)", g.lost_silently),
        ("lost with a reported session loss", g.lost_with_session_loss),
        ("duplicated", g.duplicated), ("out of order", g.out_of_order),
        ("corrupted / misrouted", g.corrupted),
        ("latency p50 / p99 / max", " / ".join("n/a" if x is None else f"{x * 1000:.0f} ms"
                                               for x in (lat.p50, lat.p99, lat.max))),
        ("RPCs sent / answered", f"{g.rpc_sent} / {g.rpc_answered}"),
        ("disconnects / resumes", f"{g.disconnects} / {g.resumes}"),
        ("sessions lost", g.sessions_lost),
        ("faults injected", f"{f.total} over {f.connections} connections"),
    ]
    table = "".join(f'<tr><td>{_esc(k)}</td><td class="n">{_esc(val)}</td></tr>' for k, val in rows)
    shown = len(timeline["deliveries"])
    thinned = (f" ({shown:,} of {timeline['deliveries_total']:,} deliveries drawn)"
               if shown < timeline["deliveries_total"] else "")
    legend = "".join(
        f'<span><i class="sw" style="background:{c}"></i>{_esc(text)}</span>' for c, text in (
            ("#2b6cb0", "delivery (latency)"), ("#f3f7ff", "sending, faults on"),
            ("#f4f4f4", "drain, network healed"), ("#f0ad4e", "fault window on one connection"),
            ("#d9534f", "fault window on every connection"), ("#8a5a00", "reset / cut (tick)"),
            ("#17803d", "resume"), ("#e07b00", "new session / loss explained by it"),
            ("#c0262d", "session lost / delivery lost silently")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>wscore sandbox run — {_esc(r.app)} — {_esc(r.profile)}</title>
<style>{_CSS}</style></head>
<body>
<h1>wscore sandbox run — {_esc(r.app)}, profile {_esc(r.profile)}, seed {_esc(r.seed)}</h1>
<p class="sub">workload {_esc(r.workload)} · {r.clients} clients in {r.rooms} rooms ·
{r.duration_seconds:g} s at {r.rate_per_client:g} msg/s/client · drain {r.drain_seconds:.1f} s ·
wall {r.wall_seconds:.1f} s</p>
{verdict}
<ul>{notes}</ul>
<h2>Timeline{_esc(thinned)}</h2>
<div class="legend">{legend}</div>
<div id="chart"></div>
<h2>Figures</h2>
<table>{table}</table>
<script type="application/json" id="timeline-data">{data}</script>
<script>{_JS}</script>
</body></html>
"""
