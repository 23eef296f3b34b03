"""Database access shared by every package: connections, schema migrations, mode detection.

The same schema runs on TimescaleDB (hypertables, compression, retention, continuous
aggregates) and on plain PostgreSQL (native tables with time indexes and views). Each
migration version ``NNNN`` is a common file ``NNNN_name.sql`` plus an optional
``NNNN_name.timescale.sql`` or ``NNNN_name.native.sql`` for the detected mode. A file whose
first line is ``-- anxin: no-transaction`` runs statement by statement outside a transaction
(TimescaleDB refuses continuous aggregates inside one).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.errors import DatabaseError

log = logging.getLogger(__name__)

_MIGRATION_RE = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<mode>timescale|native))?\.sql$"
)
_NO_TX_MARK = "-- anxin: no-transaction"
# Any fixed 64-bit number: serialises concurrent migrators (demo, tests, services starting together).
_MIGRATION_LOCK = 0x616E78696E


class StorageMode(StrEnum):
    TIMESCALE = "timescale"
    NATIVE = "native"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    common: str
    timescale: str | None
    native: str | None

    def for_mode(self, mode: StorageMode) -> str | None:
        return self.timescale if mode is StorageMode.TIMESCALE else self.native


def load_migrations() -> list[Migration]:
    """The migrations shipped in ``core/migrations``, in version order."""
    parts: dict[int, dict[str, Any]] = {}
    for entry in resources.files("core.migrations").iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match is None:
            continue
        version = int(match["version"])
        slot = parts.setdefault(
            version, {"name": match["name"], "common": "", "timescale": None, "native": None}
        )
        slot[match["mode"] or "common"] = entry.read_text(encoding="utf-8")
    return [
        Migration(
            version=v,
            name=p["name"],
            common=p["common"],
            timescale=p["timescale"],
            native=p["native"],
        )
        for v, p in sorted(parts.items())
    ]


def connect(
    url: str, *, autocommit: bool = False, connect_timeout_s: float = 5.0
) -> psycopg.Connection[Any]:
    """Open one connection, turning libpq's failure into a :class:`DatabaseError` with the host."""
    try:
        return psycopg.connect(
            url, autocommit=autocommit, connect_timeout=max(1, int(connect_timeout_s))
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            f"Cannot connect to the database at {redact_url(url)}: {exc}".strip()
        ) from exc


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


PRELOAD_HINT = (
    "TimescaleDB is installed on the server but not preloaded. Add it to postgresql.conf, "
    "shared_preload_libraries = 'timescaledb' (keeping any libraries already listed there), "
    "and restart PostgreSQL"
)


def choose_mode(*, installed: bool, available: bool, preloaded: bool, require: bool) -> StorageMode:
    """Pure: the storage mode for what the server offers; refuses when TimescaleDB is
    required and cannot be had, saying what to change.

    Args:
        installed: The extension exists in this database already.
        available: The server has the extension's files (``pg_available_extensions``).
        preloaded: ``shared_preload_libraries`` names timescaledb (without it ``CREATE
            EXTENSION`` ends the connection with FATAL).
        require: The operator asked for TimescaleDB (``ANXIN_DB__REQUIRE_TIMESCALE``).
    """
    if installed:
        return StorageMode.TIMESCALE
    if available and preloaded:
        return StorageMode.TIMESCALE
    if require:
        if available:
            raise DatabaseError(f"{PRELOAD_HINT}, or unset ANXIN_DB__REQUIRE_TIMESCALE.")
        raise DatabaseError(
            "TimescaleDB is required (ANXIN_DB__REQUIRE_TIMESCALE=true) but the server does not "
            "have the extension: install the timescaledb package for this PostgreSQL version."
        )
    return StorageMode.NATIVE


def detect_mode(conn: psycopg.Connection[Any], *, require: bool = False) -> StorageMode:
    """TimescaleDB when the extension is installed in this database or can be created;
    native tables otherwise (with a warning that says what to change when TimescaleDB is
    there but not preloaded), or :class:`DatabaseError` when ``require`` is set."""
    installed = (
        conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        is not None
    )
    available = (
        conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        is not None
    )
    row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    libraries = {lib.strip().strip('"') for lib in str(row[0] if row else "").split(",")}
    preloaded = "timescaledb" in libraries
    mode = choose_mode(
        installed=installed, available=available, preloaded=preloaded, require=require
    )
    if available and not installed and not preloaded:
        log.warning("%s; using native PostgreSQL tables meanwhile.", PRELOAD_HINT)
    if mode is StorageMode.TIMESCALE and not installed:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as exc:
            if require or conn.closed or conn.broken:
                raise DatabaseError(f"CREATE EXTENSION timescaledb failed: {exc}") from exc
            log.warning("timescaledb cannot be created (%s); using native tables", exc)
            return StorageMode.NATIVE
    return mode


def _statements(script: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--") and not current:
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(current).strip()
            if stmt:
                out.append(stmt)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        out.append(tail)
    return out


def _run_script(conn: psycopg.Connection[Any], script: str) -> None:
    if script.lstrip().startswith(_NO_TX_MARK):
        for stmt in _statements(script):
            conn.execute(stmt.encode())
    else:
        with conn.transaction():
            conn.execute(script.encode())


@dataclass(frozen=True, slots=True)
class UpgradeResult:
    mode: StorageMode
    applied: list[int]
    current: int


def upgrade(url: str, *, require_timescale: bool = False) -> UpgradeResult:
    """Apply every migration not applied yet. Idempotent; safe to run from several processes.

    ``require_timescale`` (``ANXIN_DB__REQUIRE_TIMESCALE``): refuse native mode.
    """
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       mode text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r[0]: r[1] for r in conn.execute("SELECT version, mode FROM schema_migrations")}
            modes = set(done.values())
            if len(modes) > 1:
                raise DatabaseError(f"Schema was migrated in several modes: {sorted(modes)}")
            mode = (
                StorageMode(modes.pop()) if modes else detect_mode(conn, require=require_timescale)
            )
            applied: list[int] = []
            for migration in load_migrations():
                if migration.version in done:
                    continue
                log.info("applying migration %04d_%s (%s)", migration.version, migration.name, mode)
                try:
                    if migration.common:
                        _run_script(conn, migration.common)
                    extra = migration.for_mode(mode)
                    if extra:
                        _run_script(conn, extra)
                except psycopg.Error as exc:
                    raise DatabaseError(
                        f"Migration {migration.version:04d}_{migration.name} failed in {mode} mode: {exc}"
                    ) from exc
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, mode) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, mode.value),
                )
                applied.append(migration.version)
            current = max([*done, *applied], default=0)
            return UpgradeResult(mode=mode, applied=applied, current=current)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    table: str
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    mode: StorageMode | None
    version: int
    latest: int
    server_version: str
    timescale_version: str | None
    hypertables: list[str]
    policies: list[PolicyInfo]
    aggregates: list[str]


def info(url: str) -> SchemaInfo:
    """What runs: storage mode, schema version, hypertables, policies and aggregates."""
    latest = max((m.version for m in load_migrations()), default=0)
    with connect(url, autocommit=True) as conn:
        server = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        ts_row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return SchemaInfo(None, 0, latest, server, ts_row[0] if ts_row else None, [], [], [])
        rows = conn.execute("SELECT max(version), min(mode) FROM schema_migrations").fetchone()
        version = int(rows[0] or 0) if rows else 0
        mode = StorageMode(rows[1]) if rows and rows[1] else None
        hypertables: list[str] = []
        policies: list[PolicyInfo] = []
        aggregates: list[str] = []
        if mode is StorageMode.TIMESCALE:
            hypertables = [
                r[0]
                for r in conn.execute(
                    "SELECT hypertable_name FROM timescaledb_information.hypertables "
                    "WHERE hypertable_schema = current_schema() ORDER BY 1"
                )
            ]
            with conn.cursor(row_factory=dict_row) as cur:
                for r in cur.execute(
                    "SELECT hypertable_name, proc_name, config::text AS config "
                    "FROM timescaledb_information.jobs "
                    "WHERE hypertable_schema = current_schema() ORDER BY 1, 2"
                ):
                    policies.append(PolicyInfo(r["hypertable_name"], r["proc_name"], r["config"]))
            aggregates = [
                r[0]
                for r in conn.execute(
                    "SELECT view_name FROM timescaledb_information.continuous_aggregates "
                    "WHERE view_schema = current_schema() ORDER BY 1"
                )
            ]
        else:
            aggregates = [
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.views "
                    "WHERE table_schema = current_schema() AND table_name LIKE 'vitals_1%' ORDER BY 1"
                )
            ]
        return SchemaInfo(
            mode,
            version,
            latest,
            server,
            ts_row[0] if ts_row else None,
            hypertables,
            policies,
            aggregates,
        )


def create_database(admin_url: str, name: str) -> None:
    """Create database ``name`` through ``admin_url`` unless it exists."""
    with connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def run_ticks(
    connect: Callable[[], psycopg.Connection[Any]],
    tick: Callable[[psycopg.Connection[Any]], object],
    stop: threading.Event,
    every_s: float,
    what: str,
) -> None:
    """Call ``tick`` with a connection every ``every_s`` until ``stop`` is set (a thread's
    target). A failure is logged and retried at the next tick with a fresh connection."""
    conn: psycopg.Connection[Any] | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed or conn.broken:
                conn = connect()
            tick(conn)
        except (psycopg.Error, OSError):
            log.exception("%s tick failed; retrying in %.0f s", what, every_s)
            if conn is not None:
                conn.close()
                conn = None
        stop.wait(every_s)
    if conn is not None:
        conn.close()
