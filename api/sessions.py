"""Browser sessions of the screens: a sign-in with an API token, kept in an HttpOnly cookie.

The screens run in a browser, and a browser's ``EventSource`` (the live alert queue) cannot
send an ``Authorization`` header; keeping the token itself in page storage would hand it to any
script that ever runs on the page. So the sign-in page posts the token once
(``POST /api/v1/session``); the API answers with a random session value in an HttpOnly,
SameSite=Strict cookie, valid for :data:`SESSION_HOURS` at most and never past the token's own
expiry. Only the value's SHA-256 is stored (``api_sessions``); every use joins the token, so
revoking the token or disabling the principal ends its sessions at once.

A request authenticated by the cookie that changes something must also carry the header
:data:`CSRF_HEADER`: a page of another site cannot set it without a CORS preflight, which this
API never grants (defence in depth beside SameSite=Strict).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

import psycopg

from devices import access
from devices.access import Principal, Role

COOKIE = "anxin_session"
CSRF_HEADER = "x-anxin-client"
SESSION_HOURS = 12
_SESSION_BYTES = 32

Conn = psycopg.Connection[Any]


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def open_session(conn: Conn, token: str) -> tuple[str, datetime] | None:
    """A new session for a live token: (the cookie value, its expiry), or None for a dead token."""
    token_id = access.token_id_of(conn, token)
    if token_id is None:
        return None
    value = "ses_" + secrets.token_urlsafe(_SESSION_BYTES)
    row = conn.execute(
        """INSERT INTO api_sessions (token_id, session_hash, expires_at)
           SELECT t.id, %s, least(now() + %s, t.expires_at) FROM api_tokens t WHERE t.id = %s
           RETURNING expires_at""",
        (_hash(value), timedelta(hours=SESSION_HOURS), token_id),
    ).fetchone()
    if row is None:  # the token went away between the two statements
        return None
    return value, row[0]


def authenticate(conn: Conn, value: str) -> Principal | None:
    """The principal of a live session (its token live, its principal enabled), or None."""
    if not value.startswith("ses_") or len(value) > 100:
        return None
    row = conn.execute(
        """SELECT p.id, p.name, p.role
             FROM api_sessions s
             JOIN api_tokens t ON t.id = s.token_id
             JOIN principals p ON p.id = t.principal_id
            WHERE s.session_hash = %s AND s.ended_at IS NULL AND s.expires_at > now()
              AND t.revoked_at IS NULL AND t.expires_at > now() AND p.disabled_at IS NULL""",
        (_hash(value),),
    ).fetchone()
    if row is None:
        return None
    return access.principal_of(conn, row[0], row[1], Role(row[2]))


def end_session(conn: Conn, value: str) -> bool:
    """Sign out: the session stops working now. Whether a live one was ended."""
    cur = conn.execute(
        "UPDATE api_sessions SET ended_at = now() WHERE session_hash = %s AND ended_at IS NULL",
        (_hash(value),),
    )
    return cur.rowcount == 1


def cookie_value(cookie_header: str) -> str | None:
    """The session cookie's value in a raw ``Cookie`` header (for the ASGI guard)."""
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None
