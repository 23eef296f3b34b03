"""Authenticate before reading a body, and cap its size: an ASGI middleware.

FastAPI reads a request's body before it resolves the route's dependencies, the bearer token
among them, so anyone could make the API hold megabytes in memory and only then answer 401.
:class:`BodyGuard` runs first: a request that carries a body is refused with 413 when it says
it is larger than its route allows, with 401 when its token is missing or not live (checked in
the database before a byte of the body is read), and with 413 again when it turns out larger
than it said (a screen's session cookie counts as a token when the request carries the
screens' header, see api/sessions.py). The principal it found is left in ``request.state.principal`` so the route does
not look the token up a second time.

Limits (:func:`body_limit`): the CSV import takes 20 MiB, the acknowledge page's form 1 KiB,
every other JSON body 256 KiB (a whole emergency profile is a few KiB). Routes that need no
token (the acknowledge link) get only the size cap.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from psycopg import OperationalError
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import sessions
from devices import access
from devices.access import Principal

JSON_LIMIT = 256 * 1024
CSV_LIMIT = 20 * 1024 * 1024
FORM_LIMIT = 1024
_PUBLIC_PREFIXES = ("/api/v1/ack/",)


def body_limit(path: str) -> int:
    """The largest body a route takes, in bytes."""
    if path == "/api/v1/residents/import":
        return CSV_LIMIT
    if path.startswith(_PUBLIC_PREFIXES):
        return FORM_LIMIT
    return JSON_LIMIT


def needs_token(path: str) -> bool:
    """Whether a request with a body to ``path`` must carry a live token before it is read."""
    return not path.startswith(_PUBLIC_PREFIXES)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def _session(scope: Scope) -> str | None:
    """The session cookie of a screen's request that says it comes from the screens."""
    headers = dict(scope.get("headers", ()))
    cookie = headers.get(b"cookie")
    if cookie is None or sessions.CSRF_HEADER.encode() not in headers:
        return None
    return sessions.cookie_value(cookie.decode("latin-1"))


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers", ()))
    length = _declared_length(scope)
    return (length is not None and length > 0) or b"transfer-encoding" in headers


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    # Tell the client the connection ends: the unread body is not drained.
    raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class BodyGuard:
    """See the module docstring. Wraps the whole application (outermost)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limit = body_limit(path)
        if needs_token(path):
            principal = await self._authenticate(scope)
            if isinstance(principal, int):
                await self._refuse(send, principal)
                return
            scope.setdefault("state", {})["principal"] = principal
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _answer(send, 413, f"Request body over {limit} bytes for {path}.", {})
            return
        try:
            body = await _read(receive, limit)
        except _TooLarge:
            await _answer(send, 413, f"Request body over {limit} bytes for {path}.", {})
            return
        await self.app(scope, _replay(body, receive), send)

    async def _authenticate(self, scope: Scope) -> Principal | int:
        """The principal of the request's token, or the status to answer (401, 503)."""
        token = _bearer(scope)
        session = None if token is not None else _session(scope)
        if token is None and session is None:
            return 401
        app = scope.get("app")
        pool: ConnectionPool[Any] | None = getattr(
            getattr(app, "state", None), "registry_pool", None
        )
        if pool is None:
            return 503

        def look_up() -> Principal | None:
            with pool.connection() as conn:
                if token is not None:
                    return access.authenticate(conn, token)
                return sessions.authenticate(conn, session or "")

        try:
            principal = await asyncio.to_thread(look_up)
        except (PoolTimeout, OperationalError):
            return 503
        return 401 if principal is None else principal

    @staticmethod
    async def _refuse(send: Send, status: int) -> None:
        if status == 401:
            await _answer(
                send,
                401,
                "Missing or not a live bearer token: send 'Authorization: Bearer <token>'.",
                {"WWW-Authenticate": "Bearer"},
            )
        else:
            await _answer(
                send, 503, "The database is not available; try again.", {"Retry-After": "5"}
            )


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect as the app expects

    return replay
