"""``anxin report monthly``: the monthly figures of a community or a district, printed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alerts.monthly import community_scope, district_scope, monthly_report
from alerts.monthly_render import report_csv, report_html, report_json


def main_report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="anxin report", description="Reports of quality, response and coverage."
    )
    sub = parser.add_subparsers(dest="report", required=True)
    monthly = sub.add_parser(
        "monthly", help="a community's or a district's figures of one month (docs/care.md)"
    )
    where = monthly.add_mutually_exclusive_group(required=True)
    where.add_argument("--community", help="the community's id or exact name")
    where.add_argument("--district", help="the district as written in the residents' address")
    monthly.add_argument("--month", required=True, help="YYYY-MM, e.g. 2026-11")
    monthly.add_argument(
        "--format", choices=("html", "json", "csv"), default="html", help="default: html"
    )
    monthly.add_argument("--out", type=Path, help="write to this file (default: standard output)")
    monthly.add_argument("--tz", default="Asia/Shanghai", help="the month's time zone")
    monthly.add_argument(
        "--profile-months",
        type=int,
        default=12,
        help="an emergency profile counts as verified this many months (default 12)",
    )
    args = parser.parse_args(argv)

    from core import db  # noqa: PLC0415 - commands import what they use, so --help stays fast
    from core.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    with db.connect(settings.db.url) as conn:
        scope = (
            community_scope(conn, args.community)
            if args.community is not None
            else district_scope(args.district)
        )
        report = monthly_report(
            conn, scope, args.month, tz=args.tz, profile_months=args.profile_months
        )
    if args.format == "json":
        text = json.dumps(report_json(report), ensure_ascii=False, indent=2) + "\n"
    elif args.format == "csv":
        text = report_csv(report)
    else:
        text = report_html(report)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
