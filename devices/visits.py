"""Home visits (0012_visits): the plan per elder from the special-population flags, recorded
visits, who is overdue, and the visit rate of a month. docs/care.md, "Home visits".

An elder flagged as one of the special populations the plans name (empty-nest, living alone,
disabled or semi-disabled, dementia, very old, extremely poor) is visited every month unless a
rule says otherwise; a rule (``visit_rules``) sets the months between visits for a flag, for
every community or for one (the community's wins), and may add a flag that is not planned by
default. An elder with several flags is visited as often as the most demanding asks.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import psycopg
from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.model import NotFoundError, SpecialFlag

Conn = psycopg.Connection[Any]

#: Planned monthly without any rule: the special populations of the plans.
SPECIAL = frozenset(
    {
        SpecialFlag.EMPTY_NEST, SpecialFlag.LIVING_ALONE, SpecialFlag.DISABLED,
        SpecialFlag.SEMI_DISABLED, SpecialFlag.DEMENTIA, SpecialFlag.VERY_OLD,
        SpecialFlag.EXTREMELY_POOR,
    }
)  # fmt: skip

Rules = Mapping[tuple[uuid.UUID | None, str], int]
"""(community id or None for every community, flag) -> months between visits."""


class VisitorRole(StrEnum):
    COMMUNITY_WORKER = "community_worker"
    DOCTOR = "doctor"
    NURSE = "nurse"
    VOLUNTEER = "volunteer"
    OTHER = "other"


class VisitKind(StrEnum):
    HOME = "home"
    PHONE = "phone"
    VIDEO = "video"
    CLINIC = "clinic"


class VisitIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    visited_at: dt.datetime
    visitor: Annotated[str, Field(min_length=1, max_length=200)]
    visitor_role: VisitorRole
    kind: VisitKind = VisitKind.HOME
    notes: Annotated[str, Field(max_length=4000)] | None = None
    follow_up_on: dt.date | None = Field(None, description="When to follow up, if needed.")
    follow_up: Annotated[str, Field(max_length=1000)] | None = Field(
        None, description="What the follow-up is about."
    )

    @model_validator(mode="after")
    def _aware(self) -> VisitIn:
        if self.visited_at.tzinfo is None:
            raise ValueError("visited_at needs a time zone offset, e.g. 2026-11-20T10:00:00+08:00")
        if (self.follow_up_on is None) != (self.follow_up is None):
            raise ValueError("follow_up_on and follow_up go together: give both or neither")
        return self


class Visit(VisitIn):
    id: int
    resident_id: uuid.UUID
    recorded_by: str
    recorded_at: dt.datetime


class VisitRuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    flag: SpecialFlag
    every_months: int = Field(ge=1, le=12)
    community_id: uuid.UUID | None = Field(None, description="None: every community.")


@dataclass(frozen=True, slots=True)
class Due:
    """One elder's place in the plan on a given day."""

    resident_id: uuid.UUID
    name: str
    community_id: uuid.UUID | None
    every_months: int
    last_visit: dt.datetime | None
    due_on: dt.date
    overdue_days: int


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` later (the month's last day where it has fewer days)."""
    total = day.year * 12 + day.month - 1 + months
    year, month = divmod(total, 12)
    month += 1
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, min(d, day.day))
        except ValueError:
            continue
    raise AssertionError("unreachable: every month has 28 days")  # pragma: no cover


def interval_months(
    flags: Iterable[str], community_id: uuid.UUID | None, rules: Rules
) -> int | None:
    """Months between visits for an elder (None: no visit planned). Pure."""
    best: int | None = None
    for flag in flags:
        every = rules.get((community_id, flag), rules.get((None, flag)))
        if every is None and flag in SPECIAL:
            every = 1
        if every is not None and (best is None or every < best):
            best = every
    return best


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def required_in_month(every: int, month_first: dt.date, visits: Iterable[dt.date]) -> bool:
    """Whether an elder visited every ``every`` months is due a visit in the month starting
    ``month_first``: no visit in the ``every - 1`` months before it. Pure."""
    since = add_months(month_first, -(every - 1))
    return not any(since <= v < month_first for v in visits)


def load_rules(conn: Conn) -> dict[tuple[uuid.UUID | None, str], int]:
    return {
        (c, f): int(e)
        for c, f, e in conn.execute("SELECT community_id, flag, every_months FROM visit_rules")
    }


def put_rule(conn: Conn, rule: VisitRuleIn, *, by: str) -> None:
    """Raises: NotFoundError: the rule names a community that does not exist."""
    if (
        rule.community_id is not None
        and conn.execute("SELECT 1 FROM communities WHERE id = %s", (rule.community_id,)).fetchone()
        is None
    ):
        raise NotFoundError(f"Community {rule.community_id} does not exist.")
    conn.execute(
        """INSERT INTO visit_rules (community_id, flag, every_months, updated_by)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (community_id, flag) DO UPDATE
               SET every_months = EXCLUDED.every_months, updated_by = EXCLUDED.updated_by,
                   updated_at = now()""",
        (rule.community_id, rule.flag.value, rule.every_months, by[:200]),
    )


def list_rules(conn: Conn) -> list[VisitRuleIn]:
    rows = conn.execute(
        "SELECT flag, every_months, community_id FROM visit_rules ORDER BY community_id NULLS FIRST, flag"
    ).fetchall()
    return [VisitRuleIn(flag=SpecialFlag(f), every_months=e, community_id=c) for f, e, c in rows]


_VISIT_COLS = """id, resident_id, visited_at, visitor, visitor_role, kind, notes, follow_up_on,
                 follow_up, recorded_by, recorded_at"""


def _visit(row: tuple[Any, ...]) -> Visit:
    (vid, rid, at, visitor, role, kind, notes, fu_on, fu, by, rec) = row
    return Visit(
        id=vid, resident_id=rid, visited_at=at, visitor=visitor, visitor_role=VisitorRole(role),
        kind=VisitKind(kind), notes=notes, follow_up_on=fu_on, follow_up=fu, recorded_by=by,
        recorded_at=rec,
    )  # fmt: skip


def record_visit(conn: Conn, resident_id: uuid.UUID, visit: VisitIn, *, by: str) -> Visit:
    """Raises: NotFoundError: no such resident."""
    if conn.execute("SELECT 1 FROM residents WHERE id = %s", (resident_id,)).fetchone() is None:
        raise NotFoundError(f"Resident {resident_id} does not exist.")
    row = conn.execute(
        f"""INSERT INTO visits (resident_id, visited_at, visitor, visitor_role, kind, notes,
                                follow_up_on, follow_up, recorded_by)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_VISIT_COLS}""",
        (resident_id, visit.visited_at, visit.visitor, visit.visitor_role.value,
         visit.kind.value, visit.notes, visit.follow_up_on, visit.follow_up, by[:200]),
    ).fetchone()  # fmt: skip
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    return _visit(row)


def list_visits(conn: Conn, resident_id: uuid.UUID, *, limit: int = 100) -> list[Visit]:
    rows = conn.execute(
        f"""SELECT {_VISIT_COLS} FROM visits WHERE resident_id = %s
             ORDER BY visited_at DESC, id DESC LIMIT %s""",
        (resident_id, limit),
    ).fetchall()
    return [_visit(r) for r in rows]


def due_list(
    conn: Conn, *, community_id: uuid.UUID | None, today: dt.date, tz: str = "Asia/Shanghai",
    overdue_only: bool = True,
) -> list[Due]:  # fmt: skip
    """The planned elders (of one community, or all) with their next visit's day, most
    overdue first. An elder never visited is due from the first of the current month."""
    zone = ZoneInfo(tz)
    rules = load_rules(conn)
    rows = conn.execute(
        """SELECT r.id, r.name, r.community_id, r.flags, max(v.visited_at)
             FROM residents r LEFT JOIN visits v ON v.resident_id = r.id
            WHERE r.status = 'active' AND (%(c)s::uuid IS NULL OR r.community_id = %(c)s)
            GROUP BY r.id""",
        {"c": community_id},
    ).fetchall()
    out: list[Due] = []
    for rid, name, comm, flags, last in rows:
        every = interval_months(flags or [], comm, rules)
        if every is None:
            continue
        due_on = add_months(last.astimezone(zone).date(), every) if last else month_start(today)
        overdue = (today - due_on).days
        if overdue_only and overdue <= 0:
            continue
        out.append(Due(rid, name, comm, every, last, due_on, max(0, overdue)))
    out.sort(key=lambda d: (-d.overdue_days, d.name))
    return out


def visit_rate(
    conn: Conn, elders_sql: str, params: Mapping[str, Any], month_first: dt.date, tz: str
) -> tuple[int, int]:
    """(elders visited in the month, elders due a visit in it) among the elders that
    ``elders_sql`` selects (a query of resident ids using ``params``)."""
    zone = ZoneInfo(tz)
    rules = load_rules(conn)
    start = dt.datetime.combine(add_months(month_first, -12), dt.time(0), zone)
    end = dt.datetime.combine(add_months(month_first, 1), dt.time(0), zone)
    rows = conn.execute(
        f"""SELECT r.id, r.community_id, r.flags,
                   coalesce(array_agg(v.visited_at) FILTER (WHERE v.id IS NOT NULL), '{{}}')
              FROM residents r
              LEFT JOIN visits v ON v.resident_id = r.id
                   AND v.visited_at >= %(v_start)s AND v.visited_at < %(v_end)s
             WHERE r.id IN ({elders_sql})
             GROUP BY r.id""",
        {**params, "v_start": start, "v_end": end},
    ).fetchall()
    visited = due = 0
    next_month = add_months(month_first, 1)
    for _rid, comm, flags, times in rows:
        every = interval_months(flags or [], comm, rules)
        if every is None:
            continue
        days = [t.astimezone(zone).date() for t in times]
        if not required_in_month(every, month_first, days):
            continue
        due += 1
        visited += any(month_first <= d < next_month for d in days)
    return visited, due
