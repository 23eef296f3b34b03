"""The HTTP API and console against the real PostgreSQL, one database for the module."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from api.app import TELEMETRY_TABLES, create_app
from core import db
from core.settings import Settings, load_settings
from demo.embedded import free_port
from devices import access
from devices.registry import ensure_devices

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Set when the module's database is seeded (not at import: the whole suite is collected first,
# minutes before these tests run, and "last minute" counts are relative to the seeding).
NOW = datetime.now(UTC)
BINARY = bytes(range(256)) * 2
LONG_TEXT = "é" * 5000  # 10 000 bytes of UTF-8, cut in the middle of a character below


def _seed(url: str) -> None:
    # The data's clock starts when it is written, not when the module is imported: the stats
    # count rows of the last minute, and a long suite may run this module minutes later.
    global NOW  # noqa: PLW0603 - the module's reference time, read by the assertions
    NOW = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        ensure_devices(conn, ["api-wb-1", "api-wb-2", "api-wb-3"])
        with conn.transaction():
            vitals = [
                # device, age in s, seq, hr, spo2, rr, temp
                ("api-wb-1", 3600, 1, 60.0, 95.0, 14.0, 36.5),
                ("api-wb-1", 5, 2, 71.5, 97.0, 15.0, 36.6),  # the newest of api-wb-1
                ("api-wb-2", 10, 1, 88.0, None, None, 37.9),
                ("api-wb-2", 120, 2, 40.0, 90.0, 9.0, 35.0),
            ]
            conn.cursor().executemany(
                "INSERT INTO vitals (ts, device_id, seq, received_at,"
                " heart_rate, spo2, resp_rate, temperature) "
                "VALUES (%s, %s, %s, now(), %s, %s, %s, %s)",
                [
                    (NOW - timedelta(seconds=age), d, s, hr, o2, rr, t)
                    for d, age, s, hr, o2, rr, t in vitals
                ],
            )
            conn.execute(
                "INSERT INTO accel_bursts (ts, device_id, seq, received_at,"
                " rate_hz, scale_g, n_samples, samples) "
                "VALUES (%s, 'api-wb-1', 2, now(), 50, 0.001, 1, %s)",
                (NOW, b"\x00\x00\x00\x00\x00\x00"),
            )
            letters = [
                (
                    NOW - timedelta(seconds=3),
                    "anxin/v1/dev/api-wb-1/telemetry",
                    "api-wb-1",
                    "malformed_json",
                    "not JSON at byte 0",
                    b"{not json",
                ),
                (
                    NOW - timedelta(seconds=2),
                    "anxin/v1/dev/api-wb-2/telemetry",
                    "api-wb-2",
                    "out_of_range",
                    "heart_rate 900 outside 20..300",
                    b'{"v":1,"hr":900}',
                ),
                (
                    NOW - timedelta(seconds=1),
                    "anxin/v1/dev/api-wb-3/telemetry",
                    "api-wb-3",
                    "malformed_json",
                    "binary",
                    BINARY,
                ),
                (
                    NOW - timedelta(minutes=10),
                    "other/topic",
                    None,
                    "unknown_topic",
                    "old",
                    LONG_TEXT.encode(),
                ),
            ]
            conn.cursor().executemany(
                "INSERT INTO dead_letters (received_at, topic, device_id, reason, detail, payload) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                letters,
            )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def seeded(database_url: str) -> str:
    global NOW  # noqa: PLW0603 - the seeding time the module's assertions are relative to
    NOW = datetime.now(UTC)
    _seed(database_url)
    return database_url


def _token(url: str, role: access.Role) -> str:
    with psycopg.connect(url) as conn:
        principal = access.create_principal(conn, f"test {role}", role)
        token = access.issue_token(conn, principal, days=1).token
        conn.commit()
    return token


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an in-process HTTP client."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://anxin.test"
        ) as http,
    ):
        yield http


@pytest.fixture
async def client(seeded: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client with an operator's token: the stream endpoints are for operators and admins."""
    async with serve(load_settings(db={"url": seeded})) as http:
        http.headers["Authorization"] = f"Bearer {_token(seeded, access.Role.OPERATOR)}"
        yield http


@pytest.mark.parametrize(
    "path", ["/api/v1/telemetry/latest", "/api/v1/dead-letters", "/api/v1/stats"]
)
async def test_stream_endpoints_need_an_operator_or_admin_token(seeded: str, path: str) -> None:
    async with serve(load_settings(db={"url": seeded})) as http:
        assert (await http.get(path)).status_code == 401
        doctor = {"Authorization": f"Bearer {_token(seeded, access.Role.DOCTOR)}"}
        assert (await http.get(path, headers=doctor)).status_code == 403
        admin = {"Authorization": f"Bearer {_token(seeded, access.Role.ADMIN)}"}
        assert (await http.get(path, headers=admin)).status_code == 200


async def test_health_reports_the_schema_version(client: httpx.AsyncClient) -> None:
    latest = max(m.version for m in db.load_migrations())
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": True,
        "schema_version": latest,
        "schema_latest": latest,
        "detail": None,
    }


async def test_latest_vitals_are_the_newest_reading_of_each_device(
    client: httpx.AsyncClient,
) -> None:
    rows = (await client.get("/api/v1/telemetry/latest")).json()
    assert [r["device_id"] for r in rows] == ["api-wb-1", "api-wb-2"]  # api-wb-3 sent no vitals
    first, second = rows
    assert first["heart_rate"] == 71.5
    assert first["spo2"] == 97.0
    assert first["resp_rate"] == 15.0
    assert first["temperature"] == pytest.approx(36.6)
    assert datetime.fromisoformat(first["ts"]) == pytest.approx(
        NOW - timedelta(seconds=5), abs=timedelta(milliseconds=1)
    )
    assert second["heart_rate"] == 88.0
    assert second["spo2"] is None
    assert (await client.get("/api/v1/telemetry/latest", params={"limit": 1})).json()[0][
        "device_id"
    ] == "api-wb-1"
    assert (await client.get("/api/v1/telemetry/latest", params={"limit": 0})).status_code == 422


async def test_dead_letters_newest_first_with_text_or_base64_payloads(
    client: httpx.AsyncClient,
) -> None:
    rows = (await client.get("/api/v1/dead-letters")).json()
    assert [r["reason"] for r in rows] == [
        "malformed_json",
        "out_of_range",
        "malformed_json",
        "unknown_topic",
    ]
    binary, hr900, bad_json, old = rows
    assert bad_json["payload"] == "{not json"
    assert bad_json["payload_encoding"] == "utf-8"
    assert bad_json["topic"] == "anxin/v1/dev/api-wb-1/telemetry"
    assert bad_json["device_id"] == "api-wb-1"
    assert bad_json["detail"] == "not JSON at byte 0"
    assert hr900["payload"] == '{"v":1,"hr":900}'
    assert binary["payload_encoding"] == "base64"
    assert base64.b64decode(binary["payload"]) == BINARY
    assert binary["truncated"] is False
    assert binary["payload_bytes"] == len(BINARY)
    # Cut at 4096 bytes, mid-character: still shown as the text before the cut.
    assert old["device_id"] is None
    assert old["payload_encoding"] == "utf-8"
    assert old["truncated"] is True
    assert old["payload"] == "é" * 2048
    assert old["payload_bytes"] == 10_000


async def test_dead_letters_filter_by_reason_and_limit(client: httpx.AsyncClient) -> None:
    rows = (await client.get("/api/v1/dead-letters", params={"reason": "malformed_json"})).json()
    assert [r["detail"] for r in rows] == ["binary", "not JSON at byte 0"]
    assert len((await client.get("/api/v1/dead-letters", params={"limit": 2})).json()) == 2
    assert (
        await client.get("/api/v1/dead-letters", params={"reason": "nothing_like_it"})
    ).json() == []
    cut = (
        await client.get(
            "/api/v1/dead-letters", params={"reason": "out_of_range", "payload_limit": 16}
        )
    ).json()
    assert cut[0]["payload"] == '{"v":1,"hr":900}'
    assert cut[0]["truncated"] is False


async def test_stats_count_rows_per_table_and_dead_letters_by_reason(
    client: httpx.AsyncClient,
) -> None:
    stats = (await client.get("/api/v1/stats")).json()
    tables = {t["table"]: (t["last_minute"], t["total"]) for t in stats["tables"]}
    assert set(tables) == set(TELEMETRY_TABLES)
    assert tables["vitals"] == (2, 4)
    assert tables["accel_bursts"] == (1, 1)
    assert tables["positions"] == (0, 0)
    reasons = {r["reason"]: (r["last_minute"], r["total"]) for r in stats["dead_letters"]}
    assert reasons == {"malformed_json": (2, 2), "out_of_range": (1, 1), "unknown_topic": (0, 1)}
    assert stats["devices"] == 3


async def test_console_page_loads_without_external_assets(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "Anxin" in page
    for path in ("/api/v1/stats", "/api/v1/telemetry/latest", "/api/v1/dead-letters", "/health"):
        assert path in page
    # The machine may have no internet: no CDN scripts, styles or fonts.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page


async def test_health_says_degraded_when_the_database_is_away() -> None:
    settings = load_settings(
        db={"url": f"postgresql://postgres@127.0.0.1:{free_port()}/x", "connect_timeout_s": 1}
    )
    async with serve(settings) as http:
        response = await http.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["database"] is False
    assert body["detail"]
