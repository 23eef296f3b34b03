"""The live alert queue of the screens, and an alert's emergency record for the dispatcher.

``GET /api/v1/alerts/live`` is the queue: the live alerts (open, acknowledged, dispatched; a
fall still in its cancel window too) in the caller's scope, each with the elder's name and
address, oldest first. ``GET /api/v1/alerts/live/stream`` sends the same queue as server-sent
events (``event: queue``) each time an alert or its timeline changes, so a screen updates without reload.
``GET /api/v1/alerts/{alert_id}/record`` is what the 120 hand-off pushes (alerts/dispatch120.py),
read on a screen: the profile read is audited as the reader's.

The stream watches the newest id of ``alert_events`` and ``alerts`` (two index probes) every
:data:`POLL_S`: every transition of an alert writes an event, so a change shows within that,
and the work per open screen is one tiny query per tick; the queue itself is read only when
something changed. The stream re-checks the session every :data:`RECHECK_S` and ends when it
was revoked; a browser's ``EventSource`` reconnects by itself after :data:`STREAM_MAX_S`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel, Field

from alerts import dispatch120
from alerts.model import LIVE_STATES
from alerts.service import AlertFilter, AlertService
from api import sessions
from api.auth import CurrentPrincipal, DbConn, authorize_resident, unauthorized
from api.routes.alerts import AlertOut, Service, _visible, alert_service, scope_of
from api.routes.registry import Keys
from devices import access
from devices.access import Action, Principal

router = APIRouter(prefix="/api/v1", tags=["alerts"])
log = logging.getLogger(__name__)

POLL_S = 0.5
HEARTBEAT_S = 15.0
RECHECK_S = 60.0
STREAM_MAX_S = 600.0
#: The registry keeps no time zone per elder; every elder is in this one (China's).
ELDER_TIME_ZONE = "Asia/Shanghai"
_QUEUE_LIMIT = 200


class LiveAlert(BaseModel):
    alert: AlertOut
    resident_name: str | None = Field(description="The elder's name; null for a lone device.")
    address: str | None = Field(description="The elder's home address on one line.")
    time_zone: str = Field(description="IANA time zone to show the elder's times in.")


def _address_line(row: dict[str, Any]) -> str | None:
    parts = [
        row.get(k)
        for k in ("province", "city", "district", "street", "community_name", "address_text")
    ]
    line = " ".join(p for p in parts if p)
    return line or None


def read_queue(conn: Any, svc: AlertService, principal: Principal) -> list[LiveAlert]:
    """The live alerts in the principal's scope, oldest first, with names and addresses."""
    scope = scope_of(principal)
    found = []
    for state in LIVE_STATES:
        found += svc.list(conn, AlertFilter(state=state, limit=_QUEUE_LIMIT), scope)
    found.sort(key=lambda a: (a.first_at, a.id))
    ids = list({a.resident_id for a in found if a.resident_id is not None})
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT id, name, province, city, district, street, community_name, address_text
                 FROM residents WHERE id = ANY(%s)""",
            (ids,),
        ).fetchall()
    people = {r["id"]: r for r in rows}
    out = []
    for a in found:
        person = people.get(a.resident_id)
        out.append(
            LiveAlert(
                alert=AlertOut.of(a),
                resident_name=None if person is None else person["name"],
                address=None if person is None else _address_line(person),
                time_zone=ELDER_TIME_ZONE,
            )
        )
    return out


@router.get("/alerts/live")
def live_alerts(conn: DbConn, principal: CurrentPrincipal, svc: Service) -> list[LiveAlert]:
    """The live alerts in the caller's scope, oldest first (the queue of the screens)."""
    return read_queue(conn, svc, principal)


def _authenticate(pool: ConnectionPool[Any], request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    with pool.connection() as conn:
        if scheme.lower() == "bearer" and token:
            return access.authenticate(conn, token.strip())
        value = request.cookies.get(sessions.COOKIE)
        return None if value is None else sessions.authenticate(conn, value)


def _watermark(pool: ConnectionPool[Any]) -> tuple[int, int]:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM alert_events),"
            " (SELECT coalesce(max(id), 0) FROM alerts)"
        ).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def _queue_json(pool: ConnectionPool[Any], svc: AlertService, principal: Principal) -> str:
    with pool.connection() as conn:
        queue = read_queue(conn, svc, principal)
    return json.dumps([q.model_dump(mode="json") for q in queue], ensure_ascii=False)


@router.get(
    "/alerts/live/stream",
    # Out of the OpenAPI schema: a stream never ends, which a schema-driven client (the
    # fuzz test) cannot call; docs/consoles.md documents it, tests/api/test_screens_api.py
    # checks who may read it.
    include_in_schema=False,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 401: {}},
)
async def live_stream(request: Request) -> StreamingResponse:
    """Server-sent events: ``event: queue`` with the whole queue (as ``/alerts/live``) at once
    and on every change; a comment line as a heartbeat. Signs in like every route (a token, or
    the session cookie, which a browser's EventSource sends)."""
    # No DbConn dependency: a pooled connection must not stay taken for the stream's life.
    pool: ConnectionPool[Any] = request.app.state.registry_pool
    principal = await asyncio.to_thread(_authenticate, pool, request)
    if principal is None:
        raise unauthorized("Sign in first: a bearer token or the session cookie.")
    svc = alert_service(request)

    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in _events():
                yield chunk
        except (psycopg.Error, PoolTimeout) as exc:
            # The database went away: end the stream; the browser reconnects by itself.
            log.warning("live alert stream ended: %s", exc)

    async def _events() -> AsyncIterator[str]:
        started = last_beat = last_check = time.monotonic()
        mark: tuple[int, int] | None = None
        yield f"retry: {int(POLL_S * 4 * 1000)}\n\n"
        while time.monotonic() - started < STREAM_MAX_S:
            if await request.is_disconnected():
                return
            now = time.monotonic()
            if now - last_check > RECHECK_S:
                last_check = now
                if await asyncio.to_thread(_authenticate, pool, request) is None:
                    yield "event: signed_out\ndata: {}\n\n"
                    return
            seen = await asyncio.to_thread(_watermark, pool)
            if seen != mark:
                # Sent even when the queue reads the same: a note or a message on an alert's
                # timeline moved the mark, and an open screen shows that timeline.
                mark = seen
                body = await asyncio.to_thread(_queue_json, pool, svc, principal)
                last_beat = now
                yield f"event: queue\ndata: {body}\n\n"
            if now - last_beat > HEARTBEAT_S:
                last_beat = now
                yield ": heartbeat\n\n"
            await asyncio.sleep(POLL_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/alerts/{alert_id}/record", responses={403: {}, 404: {}})
def emergency_record(
    alert_id: int, conn: DbConn, keys: Keys, principal: CurrentPrincipal, svc: Service
) -> JSONResponse:
    """The alert's emergency record, as the 120 hand-off pushes it (docs/alerts.md), with the
    latest NEWS2 and the time zone of the elder. Reading it reads the profile: audited, and
    only for those who may read the profile (a dispatcher while the emergency is live)."""
    alert = _visible(svc, conn, principal, alert_id)
    if alert.resident_id is not None:
        authorize_resident(
            conn, principal, Action.PROFILE_READ, alert.resident_id, purpose="GET alert record"
        )
    try:
        record = dispatch120.build_record(
            conn, alert_id, keyring=keys, now=dt.datetime.now(dt.UTC), reader=principal
        )
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    body = dispatch120.record_dict(record)
    body["news2"] = latest_news2(conn, alert.resident_id)
    body["time_zone"] = ELDER_TIME_ZONE
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def latest_news2(conn: Any, resident_id: uuid.UUID | None) -> dict[str, Any] | None:
    """The newest NEWS2 finding of the elder in the last day: score, severity, when."""
    if resident_id is None:
        return None
    row = conn.execute(
        """SELECT ts, severity, evidence->'score' FROM findings
            WHERE resident_id = %s AND kind = 'news2' AND ts > now() - interval '1 day'
            ORDER BY ts DESC LIMIT 1""",
        (resident_id,),
    ).fetchone()
    if row is None:
        return None
    return {"at": row[0].isoformat(), "severity": row[1], "score": row[2]}
