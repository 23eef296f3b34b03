"""Schema migrations on the real PostgreSQL: versioned, idempotent, mode detected."""

from __future__ import annotations

import subprocess
import sys
import threading

import psycopg
import pytest

from core import db
from core.errors import DatabaseError
from tests.services import ROOT, fresh_database

pytestmark = pytest.mark.integration


def test_upgrade_applies_every_migration_once_and_is_idempotent(postgres_admin_url: str) -> None:
    with fresh_database(postgres_admin_url, migrate=False) as url:
        first = db.upgrade(url)
        latest = max(m.version for m in db.load_migrations())
        assert first.applied == [m.version for m in db.load_migrations()]
        assert first.current == latest
        second = db.upgrade(url)
        assert second.applied == [] and second.current == latest and second.mode == first.mode
        with psycopg.connect(url) as conn:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            }
        assert {
            "devices",
            "vitals",
            "accel_bursts",
            "dead_letters",
            "findings",
            "schema_migrations",
        } <= tables


def test_concurrent_upgrades_do_not_collide(postgres_admin_url: str) -> None:
    with fresh_database(postgres_admin_url, migrate=False) as url:
        results: list[db.UpgradeResult] = []
        threads = [
            threading.Thread(target=lambda: results.append(db.upgrade(url))) for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        applied = sorted(v for r in results for v in r.applied)
        assert applied == [m.version for m in db.load_migrations()]


def test_native_mode_without_timescaledb(db_url: str) -> None:
    info = db.info(db_url)
    if info.timescale_version is not None:
        pytest.skip("this server has TimescaleDB; the native mode is not what runs here")
    assert info.mode == db.StorageMode.NATIVE
    assert info.version == info.latest
    assert info.hypertables == [] and set(info.aggregates) == {"vitals_1m", "vitals_1h"}
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO vitals (ts, device_id, seq, received_at, heart_rate) VALUES "
            "('2026-01-01 10:00:05+00', 'wb-1', 1, now(), 60), ('2026-01-01 10:00:35+00', 'wb-1', 2, now(), 80)"
        )
        row = conn.execute(
            "SELECT heart_rate, n FROM vitals_1m WHERE device_id = 'wb-1'"
        ).fetchone()
    assert row == (70.0, 2)


def test_db_info_command_reports_mode_and_version(db_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "db", "info"],
        env={"ANXIN_DB__URL": db_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "mode:" in out.stdout and "schema:     version" in out.stdout
    assert "native" in out.stdout or "timescale" in out.stdout


# --------------------------------------------------------------------------- TimescaleDB present


@pytest.mark.parametrize(
    ("installed", "available", "preloaded", "require", "expected"),
    [
        (True, True, True, False, db.StorageMode.TIMESCALE),
        (True, True, True, True, db.StorageMode.TIMESCALE),
        (False, True, True, False, db.StorageMode.TIMESCALE),
        (False, False, False, False, db.StorageMode.NATIVE),
        # Installed on the server, not preloaded: CREATE EXTENSION would end the connection.
        (False, True, False, False, db.StorageMode.NATIVE),
    ],
)
def test_storage_mode_follows_what_the_server_offers(
    installed: bool, available: bool, preloaded: bool, require: bool, expected: db.StorageMode
) -> None:
    got = db.choose_mode(
        installed=installed, available=available, preloaded=preloaded, require=require
    )
    assert got is expected


def test_timescale_present_but_not_preloaded_is_refused_when_required_with_what_to_add() -> None:
    with pytest.raises(DatabaseError, match="shared_preload_libraries = 'timescaledb'"):
        db.choose_mode(installed=False, available=True, preloaded=False, require=True)
    with pytest.raises(DatabaseError, match="install the timescaledb package"):
        db.choose_mode(installed=False, available=False, preloaded=False, require=True)


@pytest.mark.integration
def test_required_timescale_on_a_server_without_it_stops_the_migration(
    postgres_admin_url: str,
) -> None:
    """On this server (plain PostgreSQL) a migration that requires TimescaleDB refuses to
    create native tables, and leaves the database untouched and usable."""
    with fresh_database(postgres_admin_url, migrate=False) as url:
        with psycopg.connect(url) as conn:
            has_ts = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
        if has_ts is not None:
            pytest.skip("this server has TimescaleDB: the refusal cannot be shown here")
        with pytest.raises(DatabaseError, match="TimescaleDB is required"):
            db.upgrade(url, require_timescale=True)
        with psycopg.connect(url) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'vitals'")
            assert tables.fetchone() == (0,)
        assert db.upgrade(url).mode is db.StorageMode.NATIVE
