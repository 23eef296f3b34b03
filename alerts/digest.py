"""The family doctor's daily digest: findings that inform rather than alarm."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from alerts.model import parse_severity, severity_name
from detectors.findings import FindingKind, Severity
from devices.access import CONTRACT_IN_FORCE

Conn = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class DigestItem:
    resident_id: uuid.UUID
    resident_name: str
    kind: str
    severity: Severity
    at: datetime
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Digest:
    team_id: uuid.UUID
    day: date
    items: tuple[DigestItem, ...]


def render_digest(digest: Digest) -> str:
    """Pure: the digest as plain text, one block per resident."""
    lines = [f"Anxin daily digest {digest.day.isoformat()}: {len(digest.items)} item(s)"]
    current = None
    for it in digest.items:
        if it.resident_id != current:
            current = it.resident_id
            lines.append(f"\n{it.resident_name}")
        ev = it.evidence
        if it.kind == FindingKind.VITAL_TREND.value:
            what = (
                f"{ev.get('parameter')}: {ev.get('baseline')} -> {ev.get('recent')} "
                f"({ev.get('slope_per_day')}/day over {ev.get('days')} days)"
            )
        elif it.kind == FindingKind.NEWS2.value:
            what = f"NEWS2 {ev.get('score')} (coverage {ev.get('coverage')})"
        else:
            what = it.kind
        lines.append(f"  {it.at.astimezone(UTC):%H:%M} UTC  {severity_name(it.severity):9} {what}")
    if not digest.items:
        lines.append("Nothing to report.")
    return "\n".join(lines)


def team_digest(conn: Conn, team_id: uuid.UUID, day: date, tz: str = "Asia/Shanghai") -> Digest:
    """The digest items of one local day of the residents signed with the team today
    (contracts in force: devices.access.CONTRACT_IN_FORCE, as every doctor scope)."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(0), zone)
    end = start + timedelta(days=1)
    rows = conn.execute(
        f"""SELECT d.resident_id, r.name, d.kind, d.severity, d.at, d.evidence
             FROM digest_items d
             JOIN doctor_contracts c ON c.resident_id = d.resident_id AND {CONTRACT_IN_FORCE}
             LEFT JOIN residents r ON r.id = d.resident_id
            WHERE c.team_id = %s AND d.at >= %s AND d.at < %s
            ORDER BY r.name, d.at""",
        (team_id, start, end),
    ).fetchall()
    items = tuple(
        DigestItem(r[0], r[1] or str(r[0]), r[2], parse_severity(r[3]), r[4], r[5]) for r in rows
    )
    return Digest(team_id, day, items)
