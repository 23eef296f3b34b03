"""Sign-in of the screens: an API token becomes a short-lived session cookie (api/sessions.py).

``POST /api/v1/session`` with ``Authorization: Bearer <token>`` sets the cookie and says who
signed in and which screens are theirs; ``GET`` says the same for the current session;
``DELETE`` signs out. The screens then send only the cookie (and the header of
:data:`api.sessions.CSRF_HEADER` with every change).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from api import sessions
from api.auth import BearerCredentials, CurrentPrincipal, DbConn
from devices.access import Principal, Role

router = APIRouter(prefix="/api/v1", tags=["access"])

#: The screens of each role (paths of the web application, api/web/; ``/`` is the live
#: operations console).
SCREENS: dict[Role, tuple[str, ...]] = {
    Role.ADMIN: ("/app/dispatch", "/app/doctor", "/app/operator", "/app/family", "/"),
    Role.OPERATOR: ("/app/operator", "/"),
    Role.DISPATCHER: ("/app/dispatch",),
    Role.DOCTOR: ("/app/doctor",),
    Role.FAMILY: ("/app/family",),
}


class SessionOut(BaseModel):
    name: str
    role: Role
    screens: list[str] = Field(description="The screens of this role; the first is the home.")
    team_ids: list[uuid.UUID]
    resident_ids: list[uuid.UUID]
    expires_at: datetime | None = Field(None, description="When a new session ends.")


def _out(principal: Principal, expires_at: datetime | None = None) -> SessionOut:
    return SessionOut(
        name=principal.name,
        role=principal.role,
        screens=list(SCREENS[principal.role]),
        team_ids=sorted(principal.team_ids),
        resident_ids=sorted(principal.resident_ids),
        expires_at=expires_at,
    )


@router.post("/session", status_code=201, responses={401: {}})
def sign_in(
    request: Request,
    response: Response,
    conn: DbConn,
    principal: CurrentPrincipal,
    credentials: BearerCredentials,
) -> SessionOut:
    """Sign in with an API token (``Authorization: Bearer``): sets the session cookie."""
    if credentials is None:
        raise HTTPException(status_code=422, detail="Sign in with a token, not a session.")
    opened = sessions.open_session(conn, credentials.credentials)
    if opened is None:
        raise HTTPException(status_code=401, detail="The token is not valid.")
    value, expires_at = opened
    response.set_cookie(
        sessions.COOKIE,
        value,
        max_age=max(1, int((expires_at - datetime.now(UTC)).total_seconds())),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return _out(principal, expires_at)


@router.get("/session")
def current_session(principal: CurrentPrincipal) -> SessionOut:
    """Who is signed in (by the cookie or a token) and which screens are theirs."""
    return _out(principal)


@router.delete("/session", status_code=204)
def sign_out(request: Request, conn: DbConn, _p: CurrentPrincipal) -> Response:
    """End the session of the cookie and clear it."""
    value = request.cookies.get(sessions.COOKIE)
    if value is not None:
        sessions.end_session(conn, value)
    response = Response(status_code=204)
    response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="strict")
    return response
