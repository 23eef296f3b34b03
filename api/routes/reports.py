"""Reports over HTTP: the monthly figures of a community or a district (alerts/monthly.py).

Figures across many elders (no health fields, no names): for the roles that watch the whole
stream (``monitor.read``: admin, operator).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from alerts.monthly import ReportError, community_scope, district_scope, monthly_report
from alerts.monthly_render import report_csv, report_html, report_json
from api.auth import DbConn, require
from devices.access import Action, Principal

router = APIRouter(prefix="/api/v1", tags=["reports"])

Monitor = Annotated[Principal, Depends(require(Action.MONITOR_READ))]


@router.get("/reports/monthly", response_model=None)
def get_monthly(  # noqa: PLR0917 - FastAPI passes each query parameter as an argument
    conn: DbConn,
    _p: Monitor,
    month: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM")],
    community: Annotated[str | None, Query(max_length=200)] = None,
    district: Annotated[str | None, Query(max_length=200)] = None,
    tz: Annotated[str, Query(max_length=64)] = "Asia/Shanghai",
    format: Annotated[Literal["json", "csv", "html"], Query()] = "json",
) -> dict[str, Any] | Response:
    """One month's figures of a community (id or exact name) or a district; docs/care.md."""
    if (community is None) == (district is None):
        raise HTTPException(status_code=422, detail="Give exactly one of community or district.")
    try:
        scope = community_scope(conn, community) if community else district_scope(district or "")
        report = monthly_report(conn, scope, month, tz=tz)
    except ReportError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    if format == "csv":
        return PlainTextResponse(report_csv(report), media_type="text/csv; charset=utf-8")
    if format == "html":
        return HTMLResponse(report_html(report))
    return report_json(report)
