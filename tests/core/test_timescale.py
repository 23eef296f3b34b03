"""TimescaleDB mode: run where ANXIN_TEST_TIMESCALE_URL names a server with the extension.

The URL is an admin URL (a database the test may create databases from). Skipped otherwise:
TimescaleDB cannot be installed on every development machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from core import db
from tests.services import fresh_database

URL = os.environ.get("ANXIN_TEST_TIMESCALE_URL")
pytestmark = [
    pytest.mark.timescale,
    pytest.mark.integration,
    pytest.mark.skipif(not URL, reason="ANXIN_TEST_TIMESCALE_URL is not set"),
]


@pytest.fixture
def ts_url() -> Iterator[str]:
    assert URL is not None
    with fresh_database(URL, migrate=False) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        db.upgrade(url)
        yield url


def test_hypertables_compression_retention_and_aggregates_exist(ts_url: str) -> None:
    info = db.info(ts_url)
    assert info.mode == db.StorageMode.TIMESCALE
    assert {
        "vitals",
        "accel_bursts",
        "bed_readings",
        "battery_readings",
        "positions",
        "device_events",
        "device_status",
    } <= set(info.hypertables)
    kinds = {(p.table, p.kind) for p in info.policies}
    assert ("vitals", "policy_compression") in kinds
    assert ("accel_bursts", "policy_retention") in kinds
    assert {"vitals_1m", "vitals_1h"} <= set(info.aggregates)
    with psycopg.connect(ts_url) as conn:
        seg = conn.execute(
            "SELECT attname FROM timescaledb_information.compression_settings "
            "WHERE hypertable_name = 'vitals' AND segmentby_column_index IS NOT NULL"
        ).fetchall()
    assert [r[0] for r in seg] == ["device_id"]


def test_continuous_aggregate_is_used(ts_url: str) -> None:
    with psycopg.connect(ts_url, autocommit=True) as conn:
        conn.execute(
            # Both readings inside one minute bucket, whenever the test runs.
            "INSERT INTO vitals (ts, device_id, seq, received_at, heart_rate) VALUES "
            "(date_trunc('minute', now()) - interval '10 minutes', 'wb-1', 1, now(), 60), "
            "(date_trunc('minute', now()) - interval '10 minutes' + interval '1 second', "
            "'wb-1', 2, now(), 80)"
        )
        conn.execute("CALL refresh_continuous_aggregate('vitals_1m', NULL, NULL)")
        row = conn.execute(
            "SELECT heart_rate, n FROM vitals_1m WHERE device_id = 'wb-1'"
        ).fetchone()
    assert row is not None and row[1] == 2 and abs(row[0] - 70.0) < 1e-6


def test_ingest_writes_into_hypertables_with_deduplication(ts_url: str) -> None:
    from ingest.pipeline import Batch, pg_time
    from ingest.store import PostgresStore

    ts = pg_time(1_764_000_000_000)
    batch = Batch(vitals=[(ts, "wb-1", 1, ts, 70.0, 97.0, None, None, None, None, None, None)])
    store = PostgresStore(ts_url)
    try:
        first = store.write(batch)
        again = store.write(batch)
    finally:
        store.close()
    assert first.stored == 1 and again.stored == 0 and again.duplicates == 1
