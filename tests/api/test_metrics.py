"""``GET /metrics`` of the API: alerts and deliveries read from the real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from core.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@asynccontextmanager
async def _serve(url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(load_settings(db={"url": url}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _seed(url: str) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        alert = conn.execute(
            """INSERT INTO alerts (device_id, kind, severity, state, first_at, last_at, opened_at)
               VALUES ('m-wb-1', 'sos', 'emergency', 'open', now() - interval '5 minutes',
                       now(), now() - interval '5 minutes') RETURNING id"""
        ).fetchone()
        assert alert is not None
        conn.execute(
            """INSERT INTO alerts (device_id, kind, severity, state, first_at, last_at,
                                   acknowledged_at, acknowledged_by)
               VALUES ('m-wb-2', 'fall', 'emergency', 'acknowledged', now(), now(), now(), 'op')"""
        )
        conn.execute(
            """INSERT INTO alerts (device_id, kind, severity, state, first_at, last_at)
               VALUES ('m-wb-3', 'device_offline', 'low', 'resolved', now(), now())"""
        )
        delivery = conn.execute(
            """INSERT INTO deliveries (alert_id, recipient_kind, channel, address, template,
                                       idempotency_key, status, attempts, next_attempt_at)
               VALUES (%s, 'child', 'apprise', 'json://x', 'alert', 'k-1', 'pending', 2,
                       now() - interval '90 seconds') RETURNING id""",
            (alert[0],),
        ).fetchone()
        assert delivery is not None
        conn.cursor().executemany(
            "INSERT INTO delivery_attempts (delivery_id, ok, error) VALUES (%s, %s, %s)",
            [
                (delivery[0], False, "timeout"),
                (delivery[0], False, "503"),
                (delivery[0], True, None),
            ],
        )


async def test_metrics_show_an_unacknowledged_sos_and_failing_deliveries(db_url: str) -> None:
    _seed(db_url)
    async with _serve(db_url) as http:
        response = await http.get("/metrics")  # no token: counts only, like /health

    assert response.status_code == 200
    got = _samples(response.text)
    oldest_sos = got[("anxin_alerts_open_oldest_seconds", (("kind", "sos"),))]
    assert 295 <= oldest_sos <= 400
    assert ("anxin_alerts_open_oldest_seconds", (("kind", "fall"),)) not in got  # acknowledged
    assert got[("anxin_alerts_live", (("kind", "sos"), ("state", "open")))] == 1
    assert got[("anxin_alerts_live", (("kind", "fall"), ("state", "acknowledged")))] == 1
    # Resolved alerts are not live; kinds without alerts are reported as zero.
    assert got[("anxin_alerts_live", (("kind", "device_offline"), ("state", "open")))] == 0
    assert got[("anxin_deliveries", (("status", "pending"),))] == 1
    assert got[("anxin_deliveries", (("status", "gave_up"),))] == 0
    assert got[("anxin_delivery_attempts_total", (("outcome", "failed"),))] == 2
    assert got[("anxin_delivery_attempts_total", (("outcome", "ok"),))] == 1
    assert 85 <= got[("anxin_deliveries_oldest_due_seconds", ())] <= 200


async def test_metrics_of_an_empty_database_are_zero_not_missing(db_url: str) -> None:
    async with _serve(db_url) as http:
        response = await http.get("/metrics")

    got = _samples(response.text)
    assert got[("anxin_delivery_attempts_total", (("outcome", "failed"),))] == 0
    assert got[("anxin_deliveries_oldest_due_seconds", ())] == 0
    assert got[("anxin_alerts_live", (("kind", "sos"), ("state", "open")))] == 0
    assert not [k for k in got if k[0] == "anxin_alerts_open_oldest_seconds"]
