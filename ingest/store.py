"""The telemetry store: writes a processed batch in one transaction with binary COPY.

Deduplication rests on the unique index ``(device_id, ts, seq)`` of every telemetry table.
The common case (no duplicate) is a plain COPY into the table; when the database reports a
unique violation (a message redelivered after a crash, a device retransmitting), the batch
is rolled back to a savepoint and written again through a temporary staging table with
``INSERT ... ON CONFLICT DO NOTHING``, so each reading is stored exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingest.pipeline import PG_EPOCH_MS, Batch, DeadLetter, DeviceInfo, DeviceState, pg_time

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    # Binary COPY types. Timestamps travel as int8 microseconds since 2000-01-01, which is
    # exactly the binary form of timestamptz, so no datetime object is built per row.
    types: tuple[str, ...]


VITALS = Table(
    "vitals",
    (
        "ts",
        "device_id",
        "seq",
        "received_at",
        "heart_rate",
        "spo2",
        "resp_rate",
        "temperature",
        "systolic",
        "diastolic",
        "on_oxygen",
        "consciousness",
    ),
    (
        "int8",
        "text",
        "int8",
        "int8",
        "float4",
        "float4",
        "float4",
        "float4",
        "float4",
        "float4",
        "bool",
        "text",
    ),
)
ACCEL = Table(
    "accel_bursts",
    ("ts", "device_id", "seq", "received_at", "rate_hz", "scale_g", "n_samples", "samples"),
    ("int8", "text", "int8", "int8", "float4", "float4", "int4", "bytea"),
)
BED = Table(
    "bed_readings",
    ("ts", "device_id", "seq", "received_at", "presence", "heart_rate", "resp_rate", "movement"),
    ("int8", "text", "int8", "int8", "bool", "float4", "float4", "float4"),
)
BATTERY = Table(
    "battery_readings",
    ("ts", "device_id", "seq", "received_at", "level_pct", "charging"),
    ("int8", "text", "int8", "int8", "float4", "bool"),
)
POSITIONS = Table(
    "positions",
    ("ts", "device_id", "seq", "received_at", "lat", "lon", "accuracy_m", "indoor"),
    ("int8", "text", "int8", "int8", "float8", "float8", "float4", "text"),
)
EVENTS = Table(
    "device_events",
    ("ts", "device_id", "seq", "received_at", "kind", "detail"),
    ("int8", "text", "int8", "int8", "text", "jsonb"),
)
STATUSES = Table(
    "device_status",
    ("ts", "device_id", "received_at", "online", "reason", "firmware", "battery_pct"),
    ("int8", "text", "int8", "bool", "text", "text", "float4"),
)
DEAD_LETTERS = Table(
    "dead_letters",
    ("received_at", "topic", "device_id", "reason", "detail", "payload"),
    ("int8", "text", "text", "text", "text", "bytea"),
)

TELEMETRY_TABLES = (VITALS, ACCEL, BED, BATTERY, POSITIONS, EVENTS, STATUSES)


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: int
    duplicates: int
    dead_letters: int
    used_dedup_path: bool


class TelemetryStore(Protocol):
    """What the ingest service needs from storage."""

    def load_devices(self) -> dict[str, DeviceInfo]: ...

    def write(self, batch: Batch) -> WriteResult: ...

    def close(self) -> None: ...


def _rows(batch: Batch, table: Table) -> list[tuple[object, ...]]:
    rows = {
        "vitals": batch.vitals,
        "accel_bursts": batch.accel,
        "bed_readings": batch.bed,
        "battery_readings": batch.battery,
        "positions": batch.positions,
        "device_events": batch.events,
        "device_status": batch.statuses,
    }[table.name]
    if table is EVENTS:
        return [(*row[:5], Jsonb(row[5]) if row[5] is not None else None) for row in rows]
    return rows


class PostgresStore:
    """A :class:`TelemetryStore` on one psycopg connection (the writer thread owns it)."""

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        self._url = url
        self._timeout = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = psycopg.connect(self._url, connect_timeout=max(1, int(self._timeout)))
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def load_devices(self) -> dict[str, DeviceInfo]:
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    """SELECT device_id, kind, status,
                              (extract(epoch FROM registered_at) * 1000)::bigint,
                              gateway_id, resident_id::text, revoked_at IS NOT NULL, placement
                       FROM devices"""
                )
                rows = cur.fetchall()
            conn.commit()
        except BaseException:
            if conn.broken or conn.closed:
                self.close()
            raise
        return {
            r[0]: DeviceInfo(r[0], r[1], DeviceState(r[2]), int(r[3]), r[4], r[5], bool(r[6]), r[7])
            for r in rows
        }

    @staticmethod
    def _copy(
        cur: psycopg.Cursor[Any],
        target: sql.Composable,
        table: Table,
        rows: Sequence[tuple[object, ...]],
    ) -> None:
        stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            target, sql.SQL(", ").join(map(sql.Identifier, table.columns))
        )
        with cur.copy(stmt) as copy:
            copy.set_types(list(table.types))
            for row in rows:
                copy.write_row(row)

    def _ensure_stage(self, cur: psycopg.Cursor[Any], table: Table) -> sql.Identifier:
        stage = sql.Identifier(f"_stage_{table.name}")
        cur.execute(
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(
                stage, sql.Identifier(table.name)
            )
        )
        return stage

    def write(self, batch: Batch) -> WriteResult:
        """Write the batch (rows and dead letters) in one transaction; returns counts.

        Raises:
            psycopg.OperationalError: the database went away; nothing of the batch is
                committed and the caller retries it.
        """
        conn = self._connection()
        total = batch.row_count()
        try:
            try:
                # Fast path: COPY straight into the tables. No savepoint: a conflict is rare
                # (redelivery), so it is cheaper to roll the whole transaction back then.
                with conn.transaction(), conn.cursor() as cur:
                    for table in TELEMETRY_TABLES:
                        rows = _rows(batch, table)
                        if rows:
                            self._copy(cur, sql.Identifier(table.name), table, rows)
                    self._copy_dead_letters(cur, batch)
                return WriteResult(total, 0, len(batch.dead_letters), False)
            except psycopg.errors.UniqueViolation:
                log.info(
                    "batch of %d rows holds readings already stored; writing it deduplicated", total
                )
            with conn.transaction(), conn.cursor() as cur:
                stored = self._write_deduplicated(cur, batch)
                self._copy_dead_letters(cur, batch)
            return WriteResult(stored, total - stored, len(batch.dead_letters), True)
        except BaseException:
            if conn.broken or conn.closed:
                self.close()
            raise

    def _copy_dead_letters(self, cur: psycopg.Cursor[Any], batch: Batch) -> None:
        if batch.dead_letters:
            self._copy(
                cur, sql.Identifier("dead_letters"), DEAD_LETTERS, _dead_rows(batch.dead_letters)
            )

    def _write_deduplicated(self, cur: psycopg.Cursor[Any], batch: Batch) -> int:
        stored = 0
        for table in TELEMETRY_TABLES:
            rows = _rows(batch, table)
            if not rows:
                continue
            stage = self._ensure_stage(cur, table)
            cur.execute(sql.SQL("TRUNCATE {}").format(stage))
            self._copy(cur, stage, table, rows)
            cols = sql.SQL(", ").join(map(sql.Identifier, table.columns))
            cur.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                    sql.Identifier(table.name), cols, cols, stage
                )
            )
            stored += max(cur.rowcount, 0)
        return stored


def _dead_rows(letters: Sequence[DeadLetter]) -> list[tuple[object, ...]]:
    return [
        (pg_time(d.received_ms), d.topic, d.device_id, d.reason.value, d.detail, d.payload)
        for d in letters
    ]


__all__ = [
    "PG_EPOCH_MS",
    "PostgresStore",
    "TelemetryStore",
    "WriteResult",
]
