"""The acknowledge link of a message: a page (GET), and the answer (POST).

A chat app or an SMS client fetches links to show a preview, and so does a mail scanner: a GET
must change nothing. ``GET /api/v1/ack/{token}`` shows the family's page (api/family_page.py):
what happened, when, where, the state and who is on it (by role, never by name), and two
buttons that POST to the same address: "I'm on my way" acknowledges (the link is then used;
the others are told and the elder's device hears that help is coming) and puts "on my way" on
the timeline; "I can't come" only puts "can't come" on the timeline, so escalation goes on and
the link still works. A POST without a choice acknowledges, as before. The hospital's link
records "green channel ready" instead (:func:`alerts.ack.is_receipt`). No login: the token is
the credential, expiring; it shows one alert, and nothing of any other.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from alerts import ack
from alerts.model import Actor, ActorKind, AlertState
from alerts.service import AlertService
from api import family_page
from api.auth import DbConn
from api.routes.alerts import Service

router = APIRouter(prefix="/api/v1", tags=["alerts"])

Token = Annotated[str, Path(max_length=64, description="The token of the link.")]

_STATUS = {
    ack.AckOutcome.OK: 200,
    ack.AckOutcome.USED: 410,
    ack.AckOutcome.EXPIRED: 410,
    ack.AckOutcome.UNKNOWN: 404,
}
_REFUSED = {
    ack.AckOutcome.USED: ("此链接已使用。", "This link has been used already."),
    ack.AckOutcome.EXPIRED: ("此链接已过期。", "This link has expired."),
    ack.AckOutcome.UNKNOWN: ("此链接无效。", "This link is not known."),
}
# The page is the whole answer: no scripts, no outside resources, not cached, not indexed,
# and the token in the address is not handed on as a referrer.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}
_POSITION_RECENT = timedelta(hours=1)


class AckOut(BaseModel):
    outcome: ack.AckOutcome
    alert_id: int | None
    state: AlertState | None
    message: str


def _now() -> datetime:
    return datetime.now(UTC)


def _page(status: int, zh: str, en: str, *, button: tuple[str, str] | None = None) -> HTMLResponse:
    form = ""
    if button is not None:
        form = (
            '<form method="post"><button type="submit">'
            f"{html.escape(button[0])}<br>{html.escape(button[1])}</button></form>"
        )
    body = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow"><title>安心 Anxin</title>'
        "<style>body{font:1.1rem sans-serif;margin:2rem auto;max-width:28rem;padding:0 1rem}"
        "button{font-size:1.2rem;padding:.8rem 1.2rem;width:100%}</style></head><body>"
        f"<h1>安心 Anxin</h1><p>{html.escape(zh)}</p><p>{html.escape(en)}</p>{form}"
        "</body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def _view(conn: Any, svc: AlertService, alert_id: int) -> family_page.LinkView:
    """What the family's page shows of one alert (its elder's address, not the profile)."""
    alert = svc.get(conn, alert_id)
    address = None
    if alert.resident_id is not None:
        row = conn.execute(
            """SELECT concat_ws(' ', province, city, district, street, community_name,
                                address_text)
                 FROM residents WHERE id = %s""",
            (alert.resident_id,),
        ).fetchone()
        address = (row[0] or None) if row else None
    position = None
    position_at = None
    if alert.device_id is not None:
        row = conn.execute(
            """SELECT lat, lon, ts FROM positions WHERE device_id = %s AND ts > %s
                ORDER BY ts DESC LIMIT 1""",
            (alert.device_id, _now() - _POSITION_RECENT),
        ).fetchone()
        if row is not None:
            position, position_at = (float(row[0]), float(row[1])), row[2]
    steps = family_page.steps_from(
        [(e.at, e.actor, e.to_state.value if e.to_state else None, e.note)
         for e in svc.timeline(conn, alert_id)]
    )  # fmt: skip
    return family_page.LinkView(
        kind=alert.kind.value,
        state=alert.state.value,
        first_at=alert.first_at,
        address=address,
        position=position,
        position_at=position_at,
        steps=steps,
    )


def _family_page(
    status: int, view: family_page.LinkView | None, message: tuple[str, str] | None, buttons: bool
) -> HTMLResponse:
    body = family_page.render(view, message, buttons=buttons)
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


@router.get("/ack/{token}", response_class=HTMLResponse, responses={404: {}, 410: {}})
def acknowledge_page(token: Token, conn: DbConn, svc: Service) -> HTMLResponse:
    """The page of the link in a message: the alert and two buttons (each a POST). Opening or
    previewing the link changes nothing."""
    use = ack.peek(conn, token, _now())
    if use.outcome in (ack.AckOutcome.UNKNOWN, ack.AckOutcome.EXPIRED) or use.alert_id is None:
        zh, en = _REFUSED[use.outcome]
        return _page(_STATUS[use.outcome], zh, en)
    if ack.is_receipt(use.recipient):
        if use.outcome is not ack.AckOutcome.OK:
            zh, en = _REFUSED[use.outcome]
            return _page(_STATUS[use.outcome], zh, en)
        return _page(
            200,
            "绿色通道:请确认已为该老人做好优先接诊准备。",
            "Green channel: confirm that priority reception is ready for this elder.",
            button=("绿色通道已就绪", "Green channel ready"),
        )
    view = _view(conn, svc, use.alert_id)
    if use.outcome is ack.AckOutcome.USED:
        return _family_page(410, view, _REFUSED[use.outcome], buttons=False)
    live = AlertState(view.state).live
    return _family_page(200, view, None, buttons=live)


async def _choice(request: Request) -> str | None:
    """The button pressed on the page (``action`` of the form), if the body says."""
    body = await request.body()  # at most 1 KiB (api/guard.py)
    values = parse_qs(body.decode("utf-8", "replace")).get("action")
    return values[0] if values else None


@router.post("/ack/{token}", response_model=AckOut, responses={404: {}, 410: {}})
def acknowledge_by_link(
    token: Token,
    conn: DbConn,
    svc: Service,
    choice: Annotated[str | None, Depends(_choice)],
    accept: Annotated[str, Header()] = "",
) -> Response:
    """Answer by the link, without login: "coming" (or no choice) acknowledges, once, until the
    link expires; "cannot" notes it on the timeline and leaves the link usable. JSON when the
    client asks for it (``Accept: application/json``), else the page."""
    now = _now()
    wants_json = "application/json" in accept and "text/html" not in accept
    if choice == "cannot":
        return _cannot_come(token, conn, svc, now, wants_json)
    result = svc.acknowledge_by_token(conn, token, now)
    alert = result.alert
    ok = result.outcome is ack.AckOutcome.OK
    if not ok:
        zh, en = _REFUSED[result.outcome]
    elif result.receipt:
        zh, en = "已记录:绿色通道已就绪。谢谢。", "Noted: the green channel is ready. Thank you."
    elif result.already_by:
        zh, en = "已有人在处理此告警。谢谢。", "Someone is already on it. Thank you."
    else:
        zh, en = (
            "谢谢,告警已确认,其他联系人会收到通知。",
            "Thank you: acknowledged; the others are told.",
        )
    if ok and alert is not None and alert.state.live and not result.receipt and choice == "coming":
        use = ack.peek(conn, token, now)
        who = Actor(ActorKind.CONTACT, use.recipient or "")
        svc.note(conn, alert.id, who, now, family_page.ON_MY_WAY, channel="link")
    status = _STATUS[result.outcome]
    if wants_json:
        body = AckOut(
            outcome=result.outcome,
            alert_id=alert.id if alert and ok else None,
            state=alert.state if alert and ok else None,
            message=en,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=_HEADERS)
    if ok and alert is not None and not result.receipt:
        return _family_page(status, _view(conn, svc, alert.id), (zh, en), buttons=False)
    return _page(status, zh, en)


def _cannot_come(
    token: str, conn: Any, svc: AlertService, now: datetime, wants_json: bool
) -> Response:
    use = ack.peek(conn, token, now)
    ok = use.outcome is ack.AckOutcome.OK and use.alert_id is not None
    if ok and use.alert_id is not None and not ack.is_receipt(use.recipient):
        who = Actor(ActorKind.CONTACT, use.recipient or "")
        svc.note(conn, use.alert_id, who, now, family_page.CANNOT_COME, channel="link")
        zh, en = (
            "已记录:您去不了。我们会继续联系其他人。",
            "Noted: you cannot come. We keep trying the others.",
        )
        status = 200
    else:
        outcome = use.outcome if use.outcome is not ack.AckOutcome.OK else ack.AckOutcome.UNKNOWN
        zh, en = _REFUSED[outcome]
        status = _STATUS[outcome]
    if wants_json:
        body = AckOut(
            outcome=use.outcome, alert_id=use.alert_id if ok else None, state=None, message=en
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=_HEADERS)
    if status == 200 and use.alert_id is not None:
        return _family_page(200, _view(conn, svc, use.alert_id), (zh, en), buttons=True)
    return _page(status, zh, en)
