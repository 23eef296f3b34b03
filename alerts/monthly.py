"""Monthly figures of one community or one district: quality, response and coverage.

What the plans ask to be measured and reported monthly, computed from the stored facts:
the elders of the scope (active residents of the community, or of the district named in their
address), their SOS and fall alerts and how they ended, how fast someone acknowledged and
the ambulance was dispatched, escalations, deliveries that gave up, device coverage and data
completeness, family doctor contracts in force, emergency profiles verified recently, the
home visits due and made (devices/visits.py).
docs/care.md defines every figure; :mod:`alerts.monthly_render` prints them as JSON, CSV and
a printable HTML page.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import psycopg

from alerts.model import AlertError
from devices.visits import visit_rate

Conn = psycopg.Connection[Any]

#: Alert states that count as a confirmed emergency (it opened and was not called off).
CONFIRMED_STATES = ("open", "acknowledged", "dispatched", "resolved")
#: Tables whose rows are signs of a device reporting (coverage and completeness).
TELEMETRY_TABLES = ("vitals", "accel_bursts", "bed_readings", "battery_readings", "positions")


class ReportError(AlertError):
    """A report that cannot be made: a bad month, an unknown community or time zone."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose figures: a community (by id) or a district (by the name in residents' address)."""

    kind: Literal["community", "district"]
    key: str
    name: str


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Alerts of one kind opened in the month and how they stand at the time of the report."""

    total: int
    confirmed: int
    cancelled: int
    false_alarm: int
    pending: int


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds from an alert's opening to a step, over the alerts that reached it."""

    n: int
    p50_s: float | None
    p90_s: float | None


@dataclass(frozen=True, slots=True)
class Share:
    """``part`` of ``whole`` and the rate (None when ``whole`` is 0)."""

    part: int
    whole: int
    rate: float | None


@dataclass(frozen=True, slots=True)
class MonthlyReport:
    scope: Scope
    month: str
    timezone: str
    start: dt.datetime
    end: dt.datetime
    elders: int
    sos: Outcomes
    falls: Outcomes
    time_to_acknowledge: Durations
    time_to_dispatch: Durations
    escalations: int
    deliveries: int
    deliveries_failed: int
    coverage_24h: Share
    data_completeness: Share
    doctor_contracts: Share
    profiles_verified: Share
    profile_months: int
    visits: Share


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def month_bounds(month: str, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """Local midnight of the month's first day and of the next month's, in ``tz``.

    Raises:
        ReportError: not ``YYYY-MM`` or an unknown time zone.
    """
    m = _MONTH.match(month)
    if m is None or not 1 <= int(m[2]) <= 12:
        raise ReportError(f"Report month {month!r} is not valid; expected YYYY-MM, e.g. 2026-11.")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ReportError(f"Report time zone {tz!r} is not known; expected an IANA name.") from exc
    year, mon = int(m[1]), int(m[2])
    start = dt.datetime(year, mon, 1, tzinfo=zone)
    end = dt.datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=zone)
    return start, end


def percentiles(values: list[float]) -> Durations:
    """p50 and p90 with linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return Durations(0, None, None)
    arr = np.asarray(values, np.float64)
    return Durations(len(values), float(np.percentile(arr, 50)), float(np.percentile(arr, 90)))


def _share(part: int, whole: int) -> Share:
    return Share(part, whole, part / whole if whole else None)


def community_scope(conn: Conn, community: str) -> Scope:
    """A community by id or by its exact name.

    Raises:
        ReportError: none or several match.
    """
    try:
        key: uuid.UUID | None = uuid.UUID(community)
    except ValueError:
        key = None
    rows = conn.execute(
        "SELECT id::text, name FROM communities WHERE id = %s OR name = %s",
        (key, community),
    ).fetchall()
    if len(rows) != 1:
        what = "no community" if not rows else f"{len(rows)} communities"
        raise ReportError(f"Community {community!r} names {what}; give its id or exact name.")
    return Scope("community", rows[0][0], rows[0][1])


def district_scope(district: str) -> Scope:
    if not district.strip():
        raise ReportError("District name is empty.")
    return Scope("district", district, district)


def _elders_sql(scope: Scope) -> str:
    column = "community_id::text" if scope.kind == "community" else "district"
    return f"SELECT id FROM residents WHERE status = 'active' AND {column} = %(key)s"


def monthly_report(
    conn: Conn,
    scope: Scope,
    month: str,
    *,
    tz: str = "Asia/Shanghai",
    now: dt.datetime | None = None,
    profile_months: int = 12,
) -> MonthlyReport:
    """The figures of ``scope`` for ``month`` (local to ``tz``), as stored at ``now``.

    Coverage counts elders with a bound device that reported in the 24 h before the end of the
    month (or before ``now`` for the month under way); completeness the hours with data over
    the hours each bound device was registered in the month (up to ``now``).
    """
    start, end = month_bounds(month, tz)
    now = now or dt.datetime.now(dt.UTC)
    until = min(end, now)
    last_day = (end - dt.timedelta(days=1)).date()
    elders_sql = _elders_sql(scope)
    p: dict[str, Any] = {
        "key": scope.key, "start": start, "end": end, "until": until, "last_day": last_day,
        "verified_since": _months_before(end, profile_months),
    }  # fmt: skip

    def one(query: str) -> Any:
        row = conn.execute(query, p).fetchone()
        return row[0] if row else None

    elders = int(one(f"SELECT count(*) FROM ({elders_sql}) e"))
    in_month = f"""a.resident_id IN ({elders_sql}) AND a.first_at >= %(start)s
                   AND a.first_at < %(end)s"""

    def outcomes(kind: str) -> Outcomes:
        row = conn.execute(
            f"""SELECT count(*),
                       count(*) FILTER (WHERE state = ANY(%(confirmed)s)),
                       count(*) FILTER (WHERE state = 'cancelled'),
                       count(*) FILTER (WHERE state = 'false_alarm'),
                       count(*) FILTER (WHERE state = 'pending')
                  FROM alerts a WHERE a.kind = %(kind)s AND {in_month}""",
            {**p, "kind": kind, "confirmed": list(CONFIRMED_STATES)},
        ).fetchone()
        assert row is not None  # noqa: S101 - an aggregate returns a row
        return Outcomes(*(int(x) for x in row))

    emergencies = f"a.kind IN ('sos', 'fall') AND {in_month}"
    opened = "coalesce(a.opened_at, a.first_at)"
    ack = [
        float(r[0])
        for r in conn.execute(
            f"""SELECT extract(epoch FROM a.acknowledged_at - {opened}) FROM alerts a
                 WHERE {emergencies} AND a.acknowledged_at IS NOT NULL""",
            p,
        ).fetchall()
    ]
    dispatched = [
        float(r[0])
        for r in conn.execute(
            f"""SELECT extract(epoch FROM min(e.at) - {opened})
                  FROM alerts a JOIN alert_events e ON e.alert_id = a.id
                 WHERE {emergencies} AND e.event = 'transition' AND e.to_state = 'dispatched'
                 GROUP BY a.id, a.opened_at, a.first_at""",
            p,
        ).fetchall()
    ]
    escalations = int(
        one(
            f"""SELECT count(*) FROM alert_events e JOIN alerts a ON a.id = e.alert_id
                 WHERE e.event = 'escalation' AND e.at >= %(start)s AND e.at < %(end)s
                   AND a.resident_id IN ({elders_sql})"""
        )
    )
    deliveries, failed = conn.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE d.status = 'gave_up')
              FROM deliveries d JOIN alerts a ON a.id = d.alert_id
             WHERE d.created_at >= %(start)s AND d.created_at < %(end)s
               AND a.resident_id IN ({elders_sql})""",
        p,
    ).fetchone() or (0, 0)
    bound = f"SELECT device_id, resident_id, registered_at FROM devices WHERE resident_id IN ({elders_sql})"
    recent = " UNION ".join(
        f"SELECT DISTINCT device_id FROM {t} WHERE ts >= %(until)s - interval '24 hours' AND ts < %(until)s"
        for t in TELEMETRY_TABLES
    )
    covered = int(
        one(
            f"SELECT count(DISTINCT b.resident_id) FROM ({bound}) b JOIN ({recent}) r USING (device_id)"
        )
    )
    hours = " UNION ".join(
        f"SELECT DISTINCT device_id, date_trunc('hour', ts) AS h FROM {t} WHERE ts >= %(start)s AND ts < %(until)s"
        for t in TELEMETRY_TABLES
    )
    seen_hours = int(one(f"SELECT count(*) FROM ({hours}) h JOIN ({bound}) b USING (device_id)"))
    expected_hours = int(
        one(
            f"""SELECT coalesce(sum(greatest(0, ceil(extract(epoch FROM
                         %(until)s - greatest(%(start)s, date_trunc('hour', b.registered_at))) / 3600))), 0)
                  FROM ({bound}) b"""
        )
    )
    contracts = int(
        one(
            f"""SELECT count(DISTINCT c.resident_id) FROM doctor_contracts c
                 WHERE c.resident_id IN ({elders_sql}) AND c.status = 'active'
                   AND %(last_day)s BETWEEN c.starts_on AND c.ends_on"""
        )
    )
    verified = int(
        one(
            f"""SELECT count(*) FROM (
                    SELECT DISTINCT ON (resident_id) resident_id, last_verified_at
                      FROM emergency_profiles
                     WHERE resident_id IN ({elders_sql}) AND changed_at < %(end)s
                     ORDER BY resident_id, version DESC) latest
                 WHERE last_verified_at >= %(verified_since)s AND last_verified_at < %(end)s"""
        )
    )
    visited, due = visit_rate(conn, elders_sql, p, start.date(), tz)
    return MonthlyReport(
        scope=scope,
        month=month,
        timezone=tz,
        start=start,
        end=end,
        elders=elders,
        sos=outcomes("sos"),
        falls=outcomes("fall"),
        time_to_acknowledge=percentiles(ack),
        time_to_dispatch=percentiles(dispatched),
        escalations=escalations,
        deliveries=int(deliveries),
        deliveries_failed=int(failed),
        coverage_24h=_share(covered, elders),
        data_completeness=_share(seen_hours, expected_hours),
        doctor_contracts=_share(contracts, elders),
        profiles_verified=_share(verified, elders),
        profile_months=profile_months,
        visits=_share(visited, due),
    )


def _months_before(at: dt.datetime, months: int) -> dt.datetime:
    """The same local day and time ``months`` months earlier (the 1st: the month's start)."""
    total = at.year * 12 + (at.month - 1) - months
    return at.replace(year=total // 12, month=total % 12 + 1, day=1)
