"""The HTTP API and the live console.

``create_app(settings)`` builds the application; its lifespan opens two psycopg pools on
``settings.db.url`` (an ``AsyncConnectionPool`` for the async routes, a ``ConnectionPool`` for
the registry's sync routes) and closes them on shutdown. Nothing connects at import time. The
pools open without waiting, so the API starts while the database is away and ``/health`` says
so.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal, TypedDict

import psycopg
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg import sql
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
from pydantic import BaseModel, ConfigDict, Field

from api import errors
from api import metrics as db_metrics
from api.auth import require
from api.guard import BodyGuard
from api.logs import redact_access_log
from api.routes import ack as ack_routes
from api.routes import alerts as alert_routes
from api.routes import live as live_routes
from api.routes import operations as operations_routes
from api.routes import registry_routers
from api.routes import session as session_routes
from api.routes import trends as trends_routes
from api.routes import web as web_routes
from api.routes.registry import install_error_handlers
from core.db import load_migrations, redact_url
from core.settings import DatabaseSettings, Settings
from devices.access import Action
from devices.crypto import Keyring

log = logging.getLogger(__name__)

# Telemetry tables of core/migrations/0001_foundation.sql, each with a device timestamp ``ts``.
TELEMETRY_TABLES = (
    "vitals",
    "accel_bursts",
    "bed_readings",
    "battery_readings",
    "positions",
    "device_events",
    "device_status",
)
_POOL_TIMEOUT_S = 5.0


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Health(_Out):
    status: Literal["ok", "degraded"] = Field(description="ok when the database answers.")
    database: bool = Field(description="Whether the database answered.")
    schema_version: int | None = Field(description="Latest migration applied; null when unknown.")
    schema_latest: int = Field(description="Latest migration this code ships.")
    detail: str | None = Field(None, description="Why the database is not usable, when it is not.")


class LatestVitals(_Out):
    device_id: str
    ts: datetime = Field(description="Device timestamp of the newest vitals reading.")
    heart_rate: float | None = Field(description="Beats per minute.")
    spo2: float | None = Field(description="Oxygen saturation, percent.")
    resp_rate: float | None = Field(description="Breaths per minute.")
    temperature: float | None = Field(description="Degrees Celsius.")


class DeadLetterOut(_Out):
    id: int
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: str = Field(description="The payload as text when it is UTF-8, else base64.")
    payload_encoding: Literal["utf-8", "base64"]
    payload_bytes: int = Field(description="Size of the stored payload.")
    truncated: bool = Field(description="Whether ``payload`` shows only the first bytes.")


class TableCount(_Out):
    table: str
    last_minute: int = Field(description="Rows with a device timestamp in the last 60 s.")
    total: int


class ReasonCount(_Out):
    reason: str
    last_minute: int = Field(description="Dead letters received in the last 60 s.")
    total: int


class Stats(_Out):
    at: datetime = Field(description="Database time of the counts.")
    devices: int = Field(description="Registered devices.")
    tables: list[TableCount]
    dead_letters: list[ReasonCount]


class _DeadLetterRow(BaseModel):
    id: int
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes
    payload_bytes: int


def _show_payload(
    raw: bytes, size: int, limit: int
) -> tuple[str, Literal["utf-8", "base64"], bool]:
    truncated = size > len(raw) or len(raw) > limit
    head = raw[:limit]
    try:
        return head.decode("utf-8"), "utf-8", truncated
    except UnicodeDecodeError as exc:
        # A cut may split a multi-byte character: text up to the cut is still text.
        if truncated and exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return head[: exc.start].decode("utf-8"), "utf-8", True
        return base64.b64encode(head).decode("ascii"), "base64", truncated


async def _pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


Pool = Annotated[AsyncConnectionPool, Depends(_pool)]


class _PoolArgs(TypedDict):
    conninfo: str
    min_size: int
    max_size: int
    kwargs: dict[str, Any]
    timeout: float
    open: bool


def _pool_args(db: DatabaseSettings) -> _PoolArgs:
    """What the API's two pools (async, and sync for the registry routes) are built with."""
    return _PoolArgs(
        conninfo=db.url,
        min_size=1,
        max_size=max(2, min(db.pool_max, 8)),
        kwargs={"autocommit": True, "connect_timeout": max(1, round(db.connect_timeout_s))},
        # A request waits for a connection as long as one connection attempt may take.
        timeout=max(1.0, min(db.connect_timeout_s, _POOL_TIMEOUT_S)),
        open=False,
    )


def create_app(settings: Settings) -> FastAPI:
    """The API and console on ``settings.db.url``; the pool lives as long as the lifespan."""
    console = resources.files("api").joinpath("console.html").read_text(encoding="utf-8")
    latest_schema = max((m.version for m in load_migrations()), default=0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(**_pool_args(settings.db), name="anxin-api")
        # The registry routes (api/routes) are sync handlers on FastAPI's thread pool, over
        # the sync storage of devices/; they get a sync pool of their own.
        registry_pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            **_pool_args(settings.db), name="anxin-api-registry"
        )
        # Not waiting: the API comes up while the database is away, and /health tells.
        await pool.open(wait=False)
        registry_pool.open(wait=False)
        app.state.pool = pool
        app.state.registry_pool = registry_pool
        app.state.settings = settings
        log.info("API on database %s", redact_url(settings.db.url))
        try:
            yield
        finally:
            await asyncio.to_thread(registry_pool.close)  # joins its worker threads
            await pool.close()

    app = FastAPI(
        title="Anxin",
        summary="Smart home care backend: telemetry, dead letters and a live console.",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def database_away(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "The database is not available; try again."},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.state.keyring = Keyring.from_settings(settings.registry)
    install_error_handlers(app)
    errors.install(app)
    app.add_middleware(BodyGuard)
    redact_access_log()
    for router in registry_routers():
        app.include_router(router)
    # live first: /alerts/live must not be taken for /alerts/{alert_id}.
    app.include_router(live_routes.router)
    app.include_router(alert_routes.router)
    app.include_router(ack_routes.router)
    app.include_router(session_routes.router)
    app.include_router(trends_routes.router)
    app.include_router(operations_routes.router)
    app.include_router(web_routes.router)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def console_page() -> HTMLResponse:
        return HTMLResponse(console, headers={"Cache-Control": "no-store"})

    @app.get("/health")
    async def health(pool: Pool, response: Response) -> Health:
        """Whether the database answers, and the schema version it is at."""
        try:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN NULL "
                    "ELSE (SELECT max(version) FROM schema_migrations) END"
                )
                row = await cur.fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            response.status_code = 503
            return Health(
                status="degraded",
                database=False,
                schema_version=None,
                schema_latest=latest_schema,
                detail=str(exc).strip()[:300] or type(exc).__name__,
            )
        version = row[0] if row else None
        return Health(
            status="ok",
            database=True,
            schema_version=int(version) if version is not None else None,
            schema_latest=latest_schema,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(pool: Pool) -> Response:
        """Alerts and deliveries read from the database, for Prometheus (api/metrics.py).
        Counts only, no personal data: open like /health. 503 while the database is away."""
        async with pool.connection() as conn:
            counts = await db_metrics.read_counts(conn)
        return Response(db_metrics.render(counts), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/telemetry/latest", dependencies=[Depends(require(Action.MONITOR_READ))])
    async def latest_vitals(
        pool: Pool, limit: Annotated[int, Query(ge=1, le=10_000)] = 200
    ) -> list[LatestVitals]:
        """The newest vitals reading of each device that sent any, by device id."""
        async with (
            pool.connection() as conn,
            conn.cursor(row_factory=class_row(LatestVitals)) as cur,
        ):
            # One index probe per registered device (vitals_device_ts_seq), not a scan of vitals.
            await cur.execute(
                """SELECT d.device_id, v.ts, v.heart_rate, v.spo2, v.resp_rate, v.temperature
                     FROM devices d
                     CROSS JOIN LATERAL (
                         SELECT ts, heart_rate, spo2, resp_rate, temperature
                           FROM vitals
                          WHERE vitals.device_id = d.device_id
                          ORDER BY ts DESC
                          LIMIT 1) v
                    ORDER BY d.device_id
                    LIMIT %s""",
                (limit,),
            )
            return await cur.fetchall()

    @app.get("/api/v1/dead-letters", dependencies=[Depends(require(Action.MONITOR_READ))])
    async def dead_letters(
        pool: Pool,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        reason: Annotated[str | None, Query(max_length=64)] = None,
        payload_limit: Annotated[int, Query(ge=16, le=65_536)] = 4096,
    ) -> list[DeadLetterOut]:
        """The newest dead letters, optionally of one reason; payloads cut at ``payload_limit``."""
        async with (
            pool.connection() as conn,
            conn.cursor(row_factory=class_row(_DeadLetterRow)) as cur,
        ):
            await cur.execute(
                """SELECT id, received_at, topic, device_id, reason, detail,
                          substring(payload FROM 1 FOR %(cut)s) AS payload,
                          octet_length(payload) AS payload_bytes
                     FROM dead_letters
                    WHERE %(reason)s::text IS NULL OR reason = %(reason)s
                    ORDER BY received_at DESC, id DESC
                    LIMIT %(limit)s""",
                {"cut": payload_limit + 1, "reason": reason, "limit": limit},
            )
            rows = await cur.fetchall()
        out: list[DeadLetterOut] = []
        for r in rows:
            text, encoding, truncated = _show_payload(r.payload, r.payload_bytes, payload_limit)
            out.append(
                DeadLetterOut(
                    id=r.id,
                    received_at=r.received_at,
                    topic=r.topic,
                    device_id=r.device_id,
                    reason=r.reason,
                    detail=r.detail,
                    payload=text,
                    payload_encoding=encoding,
                    payload_bytes=r.payload_bytes,
                    truncated=truncated,
                )
            )
        return out

    @app.get("/api/v1/stats", dependencies=[Depends(require(Action.MONITOR_READ))])
    async def stats(pool: Pool) -> Stats:
        """Rows per telemetry table (last minute and in total) and dead letters by reason."""
        counts = sql.SQL(" UNION ALL ").join(
            sql.SQL(
                "SELECT {name} AS tbl, count(*) FILTER (WHERE ts >= now() - interval '1 minute'), "
                "count(*) FROM {table}"
            ).format(name=sql.Literal(t), table=sql.Identifier(t))
            for t in TELEMETRY_TABLES
        )
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT now(), (SELECT count(*) FROM devices)")
            head = await cur.fetchone()
            cur = await conn.execute(counts)
            tables = [
                TableCount(table=r[0], last_minute=r[1], total=r[2]) for r in await cur.fetchall()
            ]
            cur = await conn.execute(
                """SELECT reason,
                          count(*) FILTER (WHERE received_at >= now() - interval '1 minute'),
                          count(*)
                     FROM dead_letters GROUP BY reason ORDER BY reason"""
            )
            reasons = [
                ReasonCount(reason=r[0], last_minute=r[1], total=r[2]) for r in await cur.fetchall()
            ]
        assert head is not None  # noqa: S101 - SELECT without FROM returns one row
        return Stats(at=head[0], devices=head[1], tables=tables, dead_letters=reasons)

    return app


def create_app_from_env() -> FastAPI:
    """The app with settings from the ``ANXIN_*`` environment: ``uvicorn --factory`` entry."""
    from core.settings import load_settings  # noqa: PLC0415 - nothing is read at import time

    return create_app(load_settings())
