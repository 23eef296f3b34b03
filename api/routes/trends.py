"""What the family doctor reads over time: vitals from the per-minute and per-hour aggregates,
NEWS2 and the detectors' findings per elder, and the signed elders sorted by risk.

Health data: each elder route is scoped like the emergency profile (admins all, doctors their
signed elders, family their relative, a dispatcher during an emergency; operators not), and a
refusal is audited. ``GET /api/v1/risk/residents`` lists the elders in the caller's scope
(doctors: signed with one of their teams; family: their relatives; admins: all) with what makes
them urgent: open alerts, the latest NEWS2, when their devices last sent vitals.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from api.auth import CurrentPrincipal, DbConn, authorize_resident
from devices import access
from devices.access import Action, Role

router = APIRouter(prefix="/api/v1", tags=["trends"])

MAX_HOURS = 24 * 31
QUIET_HOURS = 6
_RISK_LIMIT = 500
_SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "emergency": 4}


class Resolution(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"


_VIEWS = {Resolution.MINUTE: "vitals_1m", Resolution.HOUR: "vitals_1h"}
Hours = Annotated[int, Query(ge=1, le=MAX_HOURS, description="How far back, in hours.")]


class VitalsBucket(BaseModel):
    bucket: dt.datetime = Field(description="Start of the minute or hour.")
    heart_rate: float | None
    heart_rate_min: float | None
    heart_rate_max: float | None
    spo2: float | None
    spo2_min: float | None
    resp_rate: float | None
    temperature: float | None
    systolic: float | None
    diastolic: float | None
    n: int = Field(description="Readings in the bucket (all the elder's devices).")


class News2Point(BaseModel):
    at: dt.datetime
    score: int
    severity: str
    device_id: str


class FindingOut(BaseModel):
    id: int
    ts: dt.datetime
    kind: str
    severity: str
    device_id: str
    evidence: dict[str, Any]


class RiskRow(BaseModel):
    resident_id: uuid.UUID
    name: str
    birth_date: dt.date
    open_alerts: int = Field(description="Live alerts (pending, open, acknowledged, dispatched).")
    worst_alert: str | None = Field(description="Severity of the worst live alert.")
    news2: int | None = Field(description="Score of the newest NEWS2 finding of the last day.")
    news2_at: dt.datetime | None
    last_vitals_at: dt.datetime | None = Field(
        description="Newest vitals reading of the elder's devices; old or null: gone quiet."
    )
    risk: int = Field(description="The sort key: higher is more urgent (docs/consoles.md).")


def _since(hours: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)


def _health(conn: Any, principal: Any, resident_id: uuid.UUID, what: str) -> None:
    authorize_resident(conn, principal, Action.PROFILE_READ, resident_id, purpose=f"GET {what}")


@router.get("/residents/{resident_id}/vitals")
def vitals_history(
    resident_id: uuid.UUID,
    conn: DbConn,
    principal: CurrentPrincipal,
    resolution: Resolution = Resolution.HOUR,
    hours: Hours = 24,
) -> list[VitalsBucket]:
    """The elder's vitals per minute or per hour (all their devices together), oldest first."""
    _health(conn, principal, resident_id, "vitals")
    if resolution is Resolution.MINUTE and hours > 48:
        raise HTTPException(
            status_code=422,
            detail=f"resolution=minute covers at most 48 hours; got hours={hours}. "
            "Use resolution=hour for longer.",
        )
    query = sql.SQL(
        """SELECT bucket, avg(heart_rate) AS heart_rate, min(heart_rate_min) AS heart_rate_min,
                  max(heart_rate_max) AS heart_rate_max, avg(spo2) AS spo2,
                  min(spo2_min) AS spo2_min, avg(resp_rate) AS resp_rate,
                  avg(temperature) AS temperature, avg(systolic) AS systolic,
                  avg(diastolic) AS diastolic, sum(n)::int AS n
             FROM {view}
            WHERE device_id IN (SELECT device_id FROM devices WHERE resident_id = %s)
              AND bucket >= %s
            GROUP BY bucket ORDER BY bucket"""
    ).format(view=sql.Identifier(_VIEWS[resolution]))
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, (resident_id, _since(hours))).fetchall()
    return [VitalsBucket.model_validate(r) for r in rows]


@router.get("/residents/{resident_id}/news2")
def news2_history(
    resident_id: uuid.UUID, conn: DbConn, principal: CurrentPrincipal, hours: Hours = 24 * 7
) -> list[News2Point]:
    """The NEWS2 scores the detectors reported for the elder (those that reached the reporting
    score, docs/detection.md), oldest first."""
    _health(conn, principal, resident_id, "news2")
    rows = conn.execute(
        """SELECT ts, (evidence->>'score')::int, severity, device_id FROM findings
            WHERE resident_id = %s AND kind = 'news2' AND ts >= %s ORDER BY ts""",
        (resident_id, _since(hours)),
    ).fetchall()
    return [News2Point(at=r[0], score=r[1], severity=r[2], device_id=r[3]) for r in rows]


@router.get("/residents/{resident_id}/findings")
def findings(  # noqa: PLR0917 - FastAPI passes each query parameter as an argument
    resident_id: uuid.UUID,
    conn: DbConn,
    principal: CurrentPrincipal,
    hours: Hours = 24 * 7,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[FindingOut]:
    """What the detectors found for the elder, newest first (evidence: numbers only)."""
    _health(conn, principal, resident_id, "findings")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT id, ts, kind, severity, device_id, evidence FROM findings
                WHERE resident_id = %s AND ts >= %s AND (%s::text IS NULL OR kind = %s)
                ORDER BY ts DESC, id DESC LIMIT %s""",
            (resident_id, _since(hours), kind, kind, limit),
        ).fetchall()
    return [FindingOut.model_validate(r) for r in rows]


def risk_of(worst_alert: str | None, open_alerts: int, news2: int | None, quiet_h: float) -> int:
    """The sort key of the risk list. Pure: first the worst live alert (an emergency above all),
    then more live alerts, then NEWS2 (7 and more is an urgent response, 5 and more a key
    threshold), then devices quiet for more than 6 hours."""
    score = 0
    if worst_alert is not None:
        score += 1000 * (1 + _SEVERITY_RANK.get(worst_alert, 0)) + 10 * min(open_alerts, 9)
    score += 10 * (news2 or 0)
    if quiet_h > QUIET_HOURS:
        score += 5
    return score


@router.get("/risk/residents")
def risk_list(conn: DbConn, principal: CurrentPrincipal) -> list[RiskRow]:
    """The elders in the caller's scope, most urgent first."""
    if principal.role not in (Role.ADMIN, Role.DOCTOR, Role.FAMILY):
        raise HTTPException(status_code=403, detail=f"Forbidden: role {principal.role}.")
    if principal.role is Role.ADMIN:
        scope, args = "true", []
    elif principal.role is Role.DOCTOR:
        scope, args = access.signed_with_sql("r.id"), [list(principal.team_ids)]
    else:
        scope, args = "r.id = ANY(%s)", [list(principal.resident_ids)]
    rows = conn.execute(
        f"""SELECT r.id, r.name, r.birth_date,
                   (SELECT count(*) FROM alerts a WHERE a.resident_id = r.id
                      AND a.state IN ('pending', 'open', 'acknowledged', 'dispatched')),
                   (SELECT a.severity FROM alerts a WHERE a.resident_id = r.id
                      AND a.state IN ('pending', 'open', 'acknowledged', 'dispatched')
                    ORDER BY array_position(ARRAY['info','low','medium','high','emergency'],
                                            a.severity) DESC LIMIT 1),
                   n.score, n.ts,
                   (SELECT max(v.ts) FROM devices d CROSS JOIN LATERAL
                      (SELECT ts FROM vitals WHERE vitals.device_id = d.device_id
                        ORDER BY ts DESC LIMIT 1) v WHERE d.resident_id = r.id)
              FROM residents r
              LEFT JOIN LATERAL (SELECT (f.evidence->>'score')::int AS score, f.ts FROM findings f
                                  WHERE f.resident_id = r.id AND f.kind = 'news2'
                                    AND f.ts > now() - interval '1 day'
                                  ORDER BY f.ts DESC LIMIT 1) n ON true
             WHERE r.status = 'active' AND {scope}
             LIMIT {_RISK_LIMIT}""",
        args,
    ).fetchall()
    now = dt.datetime.now(dt.UTC)
    out = []
    for rid, name, birth, n_open, worst, score, score_at, last in rows:
        quiet_h = (now - last).total_seconds() / 3600 if last else 1e9
        out.append(
            RiskRow(
                resident_id=rid,
                name=name,
                birth_date=birth,
                open_alerts=n_open,
                worst_alert=worst,
                news2=score,
                news2_at=score_at,
                last_vitals_at=last,
                risk=risk_of(worst, n_open, score, quiet_h),
            )
        )
    out.sort(key=lambda r: (-r.risk, r.name))
    return out
