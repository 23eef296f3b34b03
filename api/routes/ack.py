"""The acknowledge link of a message: a page (GET), and the acknowledgement itself (POST).

A chat app or an SMS client fetches links to show a preview, and so does a mail scanner: a GET
must change nothing. ``GET /api/v1/ack/{token}`` shows a page with one button; the button
POSTs to the same address, which acknowledges (the hospital's link records "green channel
ready" instead, see :func:`alerts.ack.is_receipt`). No login: the token is the credential,
single use, expiring. Neither page says who acknowledged: whoever holds a used link learns only
that someone is on it.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from alerts import ack
from alerts.model import AlertState
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


@router.get("/ack/{token}", response_class=HTMLResponse, responses={404: {}, 410: {}})
def acknowledge_page(token: Token, conn: DbConn) -> HTMLResponse:
    """The page of the link in a message: one button that acknowledges (a POST). Opening or
    previewing the link changes nothing."""
    use = ack.peek(conn, token, _now())
    if use.outcome is not ack.AckOutcome.OK:
        zh, en = _REFUSED[use.outcome]
        return _page(_STATUS[use.outcome], zh, en)
    if ack.is_receipt(use.recipient):
        return _page(
            200,
            "绿色通道:请确认已为该老人做好优先接诊准备。",
            "Green channel: confirm that priority reception is ready for this elder.",
            button=("绿色通道已就绪", "Green channel ready"),
        )
    return _page(
        200,
        "有一条告警需要您:如果您正在处理,请点击下面的按钮,其他联系人会收到通知。",
        "An alert needs you: if you are on it, press the button; the others will be told.",
        button=("我在处理", "I'm on it"),
    )


@router.post("/ack/{token}", response_model=AckOut, responses={404: {}, 410: {}})
def acknowledge_by_link(
    token: Token,
    conn: DbConn,
    svc: Service,
    accept: Annotated[str, Header()] = "",
) -> Response:
    """Acknowledge by the link, without login; works once, until it expires. JSON when the
    client asks for it (``Accept: application/json``), else the page."""
    result = svc.acknowledge_by_token(conn, token, _now())
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
    status = _STATUS[result.outcome]
    if "application/json" in accept and "text/html" not in accept:
        body = AckOut(
            outcome=result.outcome,
            alert_id=alert.id if alert and ok else None,
            state=alert.state if alert and ok else None,
            message=en,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=_HEADERS)
    return _page(status, zh, en)
