"""Home visits over HTTP (devices/visits.py): record and list an elder's visits, the plan's
due and overdue elders, the rules of how often.

Recording a visit: the community's operators (and admins) for any elder, a family doctor for
the elders signed with the team; refusals audited. Lists across elders and the rules are the
operators' (``monitor.read`` / ``registry.write``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query

from api.auth import CurrentPrincipal, DbConn, authorize_resident, require
from api.routes.registry import Writer, by_name
from devices import visits as v
from devices.access import Action, Principal, Role

router = APIRouter(prefix="/api/v1", tags=["visits"])

Monitor = Annotated[Principal, Depends(require(Action.MONITOR_READ))]


@router.post("/residents/{resident_id}/visits", status_code=201)
def record_visit(
    resident_id: uuid.UUID, body: v.VisitIn, conn: DbConn, principal: CurrentPrincipal
) -> v.Visit:
    """Record a visit (who, when, kind, notes, an optional follow-up)."""
    # A doctor records for the signed elders (the profile's write scope), others as registry
    # writers.
    action = Action.PROFILE_WRITE if principal.role is Role.DOCTOR else Action.REGISTRY_WRITE
    authorize_resident(conn, principal, action, resident_id, purpose="POST visit")
    return v.record_visit(conn, resident_id, body, by=by_name(principal))


@router.get("/residents/{resident_id}/visits")
def list_visits(resident_id: uuid.UUID, conn: DbConn, principal: CurrentPrincipal) -> list[v.Visit]:
    authorize_resident(conn, principal, Action.RESIDENT_READ, resident_id, purpose="GET visits")
    return v.list_visits(conn, resident_id)


@router.get("/visits/due")
def due_visits(
    conn: DbConn,
    _p: Monitor,
    community_id: uuid.UUID | None = None,
    overdue_only: bool = True,
    tz: Annotated[str, Query(max_length=64)] = "Asia/Shanghai",
) -> list[dict[str, object]]:
    """The planned elders (of a community, or all) whose visit is overdue (or every planned
    elder with ``overdue_only=false``), most overdue first."""
    try:
        today = dt.datetime.now(ZoneInfo(tz)).date()
    except (ValueError, KeyError) as exc:
        raise HTTPException(status_code=422, detail=f"Unknown time zone {tz!r}.") from exc
    return [
        {
            "resident_id": d.resident_id, "name": d.name, "community_id": d.community_id,
            "every_months": d.every_months, "last_visit": d.last_visit, "due_on": d.due_on,
            "overdue_days": d.overdue_days,
        }
        for d in v.due_list(
            conn, community_id=community_id, today=today, tz=tz, overdue_only=overdue_only
        )
    ]  # fmt: skip


@router.get("/visit-rules")
def get_rules(conn: DbConn, _p: Monitor) -> list[v.VisitRuleIn]:
    return v.list_rules(conn)


@router.put("/visit-rules")
def put_rule(body: v.VisitRuleIn, conn: DbConn, principal: Writer) -> list[v.VisitRuleIn]:
    """Set how many months between visits for a flag (in one community, or everywhere)."""
    v.put_rule(conn, body, by=by_name(principal))
    return v.list_rules(conn)
