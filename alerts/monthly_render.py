"""The monthly figures as JSON, CSV (one figure a row) and a printable HTML page. Pure."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import html
import io
from typing import Any

from alerts.monthly import Durations, MonthlyReport, Outcomes, Share


def report_json(report: MonthlyReport) -> dict[str, Any]:
    """The report as JSON-ready data (times in ISO 8601)."""

    def plain(value: object) -> object:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dt.datetime):
            return value.isoformat()
        return value

    out = plain(report)
    assert isinstance(out, dict)  # noqa: S101 - a dataclass becomes a dict
    return out


def figures(report: MonthlyReport) -> list[tuple[str, object]]:
    """Every figure as (name, value), in the order of docs/care.md."""
    rows: list[tuple[str, object]] = [("elders", report.elders)]
    for name, o in (("sos", report.sos), ("falls", report.falls)):
        rows += [(f"{name}_{f.name}", getattr(o, f.name)) for f in dataclasses.fields(Outcomes)]
    for name, d in (("acknowledge", report.time_to_acknowledge),
                    ("dispatch", report.time_to_dispatch)):  # fmt: skip
        rows += [(f"{name}_{f.name}", getattr(d, f.name)) for f in dataclasses.fields(Durations)]
    rows += [
        ("escalations", report.escalations),
        ("deliveries", report.deliveries),
        ("deliveries_failed", report.deliveries_failed),
    ]
    shares: list[tuple[str, Share]] = [
        ("coverage_24h", report.coverage_24h),
        ("data_completeness", report.data_completeness),
        ("doctor_contracts", report.doctor_contracts),
        ("profiles_verified", report.profiles_verified),
        ("visits", report.visits),
    ]
    for name, s in shares:
        rows += [(f"{name}_part", s.part), (f"{name}_whole", s.whole), (f"{name}_rate", s.rate)]
    return rows


def report_csv(report: MonthlyReport) -> str:
    """``scope,month,figure,value`` rows (empty value: not available)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scope", "scope_name", "month", "figure", "value"])
    for name, value in figures(report):
        shown = "" if value is None else value
        w.writerow([report.scope.kind, _safe_cell(report.scope.name), report.month, name, shown])
    return buf.getvalue()


def _safe_cell(text: str) -> str:
    """A cell that a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _pct(s: Share | None) -> str:
    if s is None or s.rate is None:
        return "n/a"
    return f"{100 * s.rate:.1f} % ({s.part} / {s.whole})"


def _secs(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 60:.1f} min" if value >= 120 else f"{value:.0f} s"


def _bars(title: str, items: list[tuple[str, float, str]], scale: float) -> str:
    """A horizontal bar chart as inline SVG (prints without scripts or images)."""
    h = 22 * len(items) + 28
    rows = [f'<text x="0" y="16" class="t">{html.escape(title)}</text>']
    for i, (label, value, shown) in enumerate(items):
        y = 28 + 22 * i
        width = 0.0 if scale <= 0 else 300 * value / scale
        rows.append(
            f'<text x="0" y="{y + 14}">{html.escape(label)}</text>'
            f'<rect x="150" y="{y + 2}" width="{width:.1f}" height="16" />'
            f'<text x="{156 + width:.1f}" y="{y + 14}">{html.escape(shown)}</text>'
        )
    return f'<svg viewBox="0 0 560 {h}" width="560" height="{h}" role="img">{"".join(rows)}</svg>'


def report_html(report: MonthlyReport) -> str:
    """A page that prints on A4: the figures' table and two charts."""
    r = report
    title = f"Anxin monthly report {r.month}: {r.scope.name} ({r.scope.kind})"
    rows = [
        ("Elders (active)", str(r.elders)),
        ("SOS: total / confirmed / cancelled / false alarm / pending",
         f"{r.sos.total} / {r.sos.confirmed} / {r.sos.cancelled} / {r.sos.false_alarm} / {r.sos.pending}"),
        ("Falls: total / confirmed / cancelled / false alarm / pending",
         f"{r.falls.total} / {r.falls.confirmed} / {r.falls.cancelled} / {r.falls.false_alarm} / {r.falls.pending}"),
        ("Time to first acknowledgement p50 / p90 (SOS and falls)",
         f"{_secs(r.time_to_acknowledge.p50_s)} / {_secs(r.time_to_acknowledge.p90_s)} (n={r.time_to_acknowledge.n})"),
        ("Time to ambulance dispatched p50 / p90",
         f"{_secs(r.time_to_dispatch.p50_s)} / {_secs(r.time_to_dispatch.p90_s)} (n={r.time_to_dispatch.n})"),
        ("Escalations", str(r.escalations)),
        ("Deliveries / gave up", f"{r.deliveries} / {r.deliveries_failed}"),
        ("Coverage: a device reported in the last 24 h", _pct(r.coverage_24h)),
        ("Data completeness (hours with data)", _pct(r.data_completeness)),
        ("Family doctor contract in force", _pct(r.doctor_contracts)),
        (f"Emergency profile verified within {r.profile_months} months", _pct(r.profiles_verified)),
        ("Monthly visit rate", _pct(r.visits)),
    ]  # fmt: skip
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    events = _bars(
        "SOS and falls",
        [
            ("SOS confirmed", r.sos.confirmed, str(r.sos.confirmed)),
            ("SOS false alarm", r.sos.false_alarm, str(r.sos.false_alarm)),
            ("Falls confirmed", r.falls.confirmed, str(r.falls.confirmed)),
            ("Falls cancelled", r.falls.cancelled, str(r.falls.cancelled)),
            ("Falls false alarm", r.falls.false_alarm, str(r.falls.false_alarm)),
        ],
        max(1, r.sos.total, r.falls.total),
    )
    shares = [("Coverage 24 h", r.coverage_24h), ("Completeness", r.data_completeness),
              ("Doctor contract", r.doctor_contracts), ("Profile verified", r.profiles_verified),
              ("Visits", r.visits)]  # fmt: skip
    rates = _bars(
        "Rates",
        [(k, (s.rate or 0.0) if s else 0.0, _pct(s).split(" (")[0]) for k, s in shares],
        1.0,
    )
    period = f"{r.start:%Y-%m-%d %H:%M %Z} to {r.end:%Y-%m-%d %H:%M %Z} ({r.timezone})"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 11pt/1.4 system-ui, sans-serif; margin: 2em; color: #111; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #999; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ font-weight: normal; background: #f2f2f2; }}
svg text {{ font: 10pt system-ui, sans-serif; }} svg text.t {{ font-weight: bold; }}
svg rect {{ fill: #3a6ea5; }}
@page {{ size: A4; margin: 15mm; }}
@media print {{ body {{ margin: 0; }} .charts {{ break-inside: avoid; }}
  svg rect {{ print-color-adjust: exact; -webkit-print-color-adjust: exact; }} }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(period)}</p>
<table>{table}</table>
<div class="charts">{events}{rates}</div>
<p>Definitions: docs/care.md, "Monthly figures".</p>
</body></html>
"""
