"""FastAPI dependencies of the registry API: a database connection, the principal, the rules.

The registry routes are plain ``def`` handlers on a sync psycopg pool: the registry and access
storage (devices/) is sync psycopg, and FastAPI runs such handlers on its bounded thread pool,
so a slow query never blocks the event loop. ``create_app`` opens that pool in its lifespan.

Refusals: no or a bad token is 401 with ``WWW-Authenticate: Bearer``; a role or scope that does
not reach is 403. A browser of the screens signs in once and then sends the session cookie of
api/sessions.py instead of the token; a change made with the cookie must carry the header
``X-Anxin-Client`` (else 403). A scoped principal (doctor, family, dispatcher) asking for a resident that does
not exist gets 403 like one out of scope, so ids cannot be probed; admins and operators get 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from api import sessions
from devices import access
from devices.access import Action, Decision, Principal, ResidentScope, Role

_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="anx_ token",
    description="An API token from `anxin tokens create` (shown once when created).",
)


def _connection(request: Request) -> Iterator[psycopg.Connection[Any]]:
    pool: ConnectionPool[psycopg.Connection[Any]] = request.app.state.registry_pool
    with pool.connection() as conn:
        yield conn


DbConn = Annotated[psycopg.Connection[Any], Depends(_connection)]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def current_principal(
    request: Request,
    conn: DbConn,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The principal of the bearer token, or 401 (already found by api.guard for a request
    with a body, which it checks before the body is read)."""
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    if credentials is None:
        session = request.cookies.get(sessions.COOKIE)
        if session is None:
            raise unauthorized("Missing bearer token: send 'Authorization: Bearer <token>'.")
        by_session = sessions.authenticate(conn, session)
        if by_session is None:
            raise unauthorized("The session has ended or expired: sign in again.")
        if request.method not in _SAFE_METHODS and sessions.CSRF_HEADER not in request.headers:
            raise HTTPException(
                status_code=403,
                detail=f"A change made with the session cookie needs the header "
                f"'{sessions.CSRF_HEADER}'.",
            )
        return by_session
    principal = access.authenticate(conn, credentials.credentials)
    if principal is None:
        raise unauthorized("The bearer token is not valid, has expired or was revoked.")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require(action: Action) -> Callable[[Principal], Principal]:
    """A dependency that lets through principals whose role may do ``action`` at all (else 403).

    Resident-scoped checks come on top, in the route, through :func:`authorize_resident`.
    """

    def dependency(principal: CurrentPrincipal) -> Principal:
        decision = access.decide(principal, action)
        if not decision.granted:
            raise HTTPException(status_code=403, detail=f"Forbidden: {decision.reason}.")
        return principal

    return dependency


def resident_scope(
    conn: psycopg.Connection[Any], principal: Principal, resident_id: uuid.UUID
) -> ResidentScope:
    """What the rules need to know about one resident, for this principal."""
    grant = None
    alert = None
    if principal.role is Role.DISPATCHER:
        grant = access.live_lookup_grant(conn, principal, resident_id)
        alert = access.open_emergency_alert(conn, resident_id)
    return ResidentScope(
        resident_id=resident_id,
        team_ids=access.signed_teams(conn, resident_id),
        lookup_grant=grant,
        open_alert_id=alert,
    )


def resident_exists(conn: psycopg.Connection[Any], resident_id: uuid.UUID) -> bool:
    return (
        conn.execute("SELECT 1 FROM residents WHERE id = %s", (resident_id,)).fetchone() is not None
    )


def authorize_resident(
    conn: psycopg.Connection[Any],
    principal: Principal,
    action: Action,
    resident_id: uuid.UUID,
    *,
    purpose: str,
    audit_granted: bool = False,
) -> Decision:
    """Decide ``action`` on one resident; refusals are audited and raised as 403.

    A resident that does not exist is 404 for principals who see every resident and 403 (and
    audited) for the others. Profile reads (``audit_granted``) leave the audit row to the
    caller, who knows the version read; pass ``audit_granted=False`` then.
    """
    decision = access.decide(principal, action, resident_scope(conn, principal, resident_id))
    if decision.granted and not resident_exists(conn, resident_id):
        if access.scope_of(principal.role, action) is access.Scope.ALL:
            raise HTTPException(status_code=404, detail=f"Resident {resident_id} does not exist.")
        decision = Decision(False, "resident not in scope")
    if not decision.granted:
        access.audit(conn, principal, action, decision, purpose=purpose, resident_id=resident_id)
        raise HTTPException(status_code=403, detail=f"Forbidden: {decision.reason}.")
    if audit_granted:
        access.audit(conn, principal, action, decision, purpose=purpose, resident_id=resident_id)
    return decision
