"""The detection sink's database side: findings stored once, events marked handled, saved
per-device state, and the reads that a restart replays (0003_findings, 0008_recovery).

Each calling thread gets a connection of its own (the ingester calls the sink from the
telemetry and the urgent thread); saving state runs on a connection of its own too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from detectors.findings import FallEvidence, Finding, StoredFinding, evidence_json
from devices import news2_settings
from devices.behaviour_settings import Watched, watched
from devices.protocol import AccelBurst, Event, EventKind, Reading
from ingest.trends import DailyValue

T = TypeVar("T")

#: Event kinds the detectors act on: stored unhandled, marked handled once seen.
DETECTED_EVENTS = (EventKind.SOS, EventKind.FALL, EventKind.CANCEL)

#: A replay also reads this much of what the saved state had seen: the detector skips it, and
#: a burst that straddles the mark is not lost.
_SEEN_OVERLAP_MS = 10_000

StateRow = tuple[str, str, bytes, datetime]
"""(device_id, detector, state, updated_at) of ``detector_state``."""

EventKey = tuple[str, int, int]
"""(device_id, ts_ms, seq): an event's identity in ``device_events``."""


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _opt(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def finding_row(f: Finding) -> tuple[object, ...]:
    """A finding as the columns of ``findings`` (the evidence window as float32 bytes)."""
    ev = f.evidence
    window: bytes | None = None
    rate: float | None = None
    start: datetime | None = None
    if isinstance(ev, FallEvidence):
        window = np.ascontiguousarray(ev.window, "<f4").tobytes()
        rate = float(ev.rate_hz)
        start = _dt(ev.window_t0_ms)
    return (
        _dt(f.ts_ms),
        _dt(f.detected_ms),
        f.device_id,
        f.resident_id,
        f.kind.value,
        f.severity.name.lower(),
        Jsonb(evidence_json(f)),
        window,
        rate,
        start,
    )


class DetectionStore:
    """Findings, handled events, per-device state and replay reads on PostgreSQL."""

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        self._url = url
        self._timeout = max(1, int(connect_timeout_s))
        self._local = threading.local()
        self._conns: list[psycopg.Connection[Any]] = []
        self._conns_lock = threading.Lock()

    # -- connections -------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        """This thread's connection (opened on first use)."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self._url, connect_timeout=self._timeout)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _drop_broken(self) -> None:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.broken or conn.closed):
            conn.close()
            self._local.conn = None
            with self._conns_lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    # -- registry reads ----------------------------------------------------------------
    def watched(self) -> list[Watched]:
        """Every active elder's behaviour settings (devices/behaviour_settings.py)."""
        conn = self._connection()
        try:
            with conn.transaction():
                return watched(conn)
        except psycopg.OperationalError:
            self._drop_broken()
            raise

    def news2_stamp(self) -> tuple[int, datetime | None]:
        """The stamp of the per-elder NEWS2 settings (devices/news2_settings.py)."""
        return self._read(news2_settings.stamp)

    def news2_settings(self) -> list[news2_settings.StoredNews2]:
        """Every active elder's stored NEWS2 settings."""
        return self._read(news2_settings.all_active)

    def _read(self, query: Callable[[psycopg.Connection[Any]], T]) -> T:
        conn = self._connection()
        try:
            with conn.transaction():
                return query(conn)
        except psycopg.OperationalError:
            self._drop_broken()
            raise

    def daily_vitals(self, first: date, last: date, tz: str) -> list[DailyValue]:
        """Per elder and local day from ``first`` to ``last``: the lowest hourly mean heart
        rate and the mean of the hourly respiration rates from 00:00 to 06:00 (wearables'
        vitals and bed sensors' readings of the devices bound to the elder now)."""
        zone = ZoneInfo(tz)
        start = datetime.combine(first, time(0), zone)
        end = datetime.combine(last + timedelta(days=1), time(0), zone)
        conn = self._connection()
        try:
            with conn.transaction():
                rows = conn.execute(
                    """WITH hourly AS (
                           SELECT device_id, date_trunc('hour', ts) AS h,
                                  avg(heart_rate) AS hr, avg(resp_rate) AS rr
                             FROM vitals WHERE ts >= %(start)s AND ts < %(end)s GROUP BY 1, 2
                           UNION ALL
                           SELECT device_id, date_trunc('hour', ts),
                                  avg(heart_rate), avg(resp_rate)
                             FROM bed_readings WHERE ts >= %(start)s AND ts < %(end)s
                            GROUP BY 1, 2)
                       SELECT d.resident_id::text, max(h.device_id),
                              (h.h AT TIME ZONE %(tz)s)::date AS day, min(h.hr),
                              avg(h.rr) FILTER (WHERE extract(hour FROM h.h AT TIME ZONE %(tz)s) < 6)
                         FROM hourly h JOIN devices d ON d.device_id = h.device_id
                        WHERE d.resident_id IS NOT NULL
                        GROUP BY 1, 3""",
                    {"start": start, "end": end, "tz": tz},
                ).fetchall()
        except psycopg.OperationalError:
            self._drop_broken()
            raise
        return [DailyValue(r[0], r[1], r[2], _opt(r[3]), _opt(r[4])) for r in rows]

    # -- findings ----------------------------------------------------------------------
    def store(
        self, findings: Sequence[Finding], handled: Sequence[EventKey]
    ) -> list[StoredFinding]:
        """Store findings and mark the events they came from handled, in one transaction.

        A finding already stored (same device, kind and time: a replay after a crash) is not
        stored again and not returned, so whoever acts on the returned findings acts on each
        once. Returns the findings inserted now, with their ids.
        """
        conn = self._connection()
        out: list[StoredFinding] = []
        try:
            with conn.transaction(), conn.cursor() as cur:
                if findings:
                    cur.executemany(
                        """INSERT INTO findings (ts, detected_at, device_id, resident_id, kind,
                               severity, evidence, window_samples, window_rate_hz, window_start)
                           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                           ON CONFLICT (device_id, kind, ts) DO NOTHING RETURNING id""",
                        [finding_row(f) for f in findings],
                        returning=True,
                    )
                    for f in findings:
                        row = cur.fetchone()
                        if row is not None:
                            out.append(StoredFinding(int(row[0]), f))
                        cur.nextset()
                if handled:
                    cur.execute(
                        """UPDATE device_events e SET handled_at = now()
                             FROM unnest(%s::text[], %s::timestamptz[], %s::bigint[]) AS k(d, t, s)
                            WHERE e.device_id = k.d AND e.ts = k.t AND e.seq = k.s
                              AND e.handled_at IS NULL""",
                        (
                            [k[0] for k in handled],
                            [_dt(k[1]) for k in handled],
                            [k[2] for k in handled],
                        ),
                    )
        except BaseException:
            self._drop_broken()
            raise
        return out

    def unalerted(self, *, older_than: datetime | None, limit: int = 1000) -> list[int]:
        """Ids of stored findings no alert has acted on, oldest first."""
        conn = self._connection()
        try:
            with conn.transaction():
                rows = conn.execute(
                    """SELECT id FROM findings WHERE alerted_at IS NULL
                          AND (%s::timestamptz IS NULL OR created_at < %s)
                        ORDER BY id LIMIT %s""",
                    (older_than, older_than, limit),
                ).fetchall()
        except BaseException:
            self._drop_broken()
            raise
        return [int(r[0]) for r in rows]

    # -- events ------------------------------------------------------------------------
    def unhandled_events(
        self,
        *,
        older_than: datetime | None,
        kinds: Collection[EventKind] = DETECTED_EVENTS,
        limit: int = 10_000,
    ) -> list[Event]:
        """Stored events of ``kinds`` the detectors have not seen (a crash came between),
        oldest first."""
        conn = self._connection()
        try:
            with conn.transaction():
                rows = conn.execute(
                    """SELECT device_id, ts, seq, kind, detail FROM device_events
                        WHERE handled_at IS NULL AND kind = ANY(%s)
                          AND (%s::timestamptz IS NULL OR received_at < %s)
                        ORDER BY ts, device_id, seq LIMIT %s""",
                    (
                        [k.value for k in kinds if k in DETECTED_EVENTS],
                        older_than,
                        older_than,
                        limit,
                    ),
                ).fetchall()
        except BaseException:
            self._drop_broken()
            raise
        return [
            Event(_ms(ts), int(seq), dev, EventKind(kind), dict(detail or {}))
            for dev, ts, seq, kind, detail in rows
        ]

    # -- replay of accelerometer bursts --------------------------------------------------
    def replay_floor(self, now: datetime, *, window_s: float, margin_s: float) -> datetime:
        """Where a restart replays bursts from: the last state save minus ``margin_s`` (about
        when the ingester died), and never more than ``window_s`` before ``now``."""
        conn = self._connection()
        try:
            with conn.transaction():
                row = conn.execute(
                    "SELECT max(updated_at) FROM detector_state WHERE detector = 'fall'"
                ).fetchone()
        except BaseException:
            self._drop_broken()
            raise
        oldest = now - timedelta(seconds=window_s)
        last: datetime | None = row[0] if row is not None else None
        if last is None:
            return oldest
        return max(oldest, last - timedelta(seconds=margin_s))

    def bursts_since(
        self,
        since: datetime,
        seen: Mapping[str, int] | None = None,
        *,
        chunk: int = 20_000,
    ) -> Iterator[list[Reading]]:
        """Stored accelerometer bursts from ``since`` on (device time), per device in time
        order, in chunks of ``chunk`` readings (a server-side cursor). ``seen``: device id ->
        epoch ms up to which the detector's saved state has seen that device's stream; its
        bursts ending before that (less ``overlap_ms``) are not read."""
        devices = list(seen or {})
        until = [_dt(max(0, seen[d] - _SEEN_OVERLAP_MS)) for d in devices] if seen else []
        with (
            psycopg.connect(self._url, connect_timeout=self._timeout) as conn,
            conn.transaction(),
            conn.cursor(name="anxin_replay") as cur,
        ):
            cur.execute(
                """SELECT b.device_id, b.ts, b.seq, b.rate_hz, b.scale_g, b.samples
                     FROM accel_bursts b
                     LEFT JOIN unnest(%s::text[], %s::timestamptz[]) AS w(device_id, seen_until)
                       ON w.device_id = b.device_id
                    WHERE b.ts >= %s AND (w.seen_until IS NULL OR b.ts >= w.seen_until)
                    ORDER BY b.device_id, b.ts, b.seq""",
                (devices, until, since),
            )
            while rows := cur.fetchmany(chunk):
                yield [
                    Reading(
                        _ms(ts),
                        int(seq),
                        dev,
                        accel=AccelBurst(float(rate), float(scale), bytes(s)),
                    )
                    for dev, ts, seq, rate, scale, s in rows
                ]

    # -- per-device detector state ----------------------------------------------------------
    def save_state(self, rows: Sequence[StateRow]) -> None:
        """Upsert per-device state rows in one COPY and one statement (own connection)."""
        with (
            psycopg.connect(self._url, connect_timeout=self._timeout) as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            cur.execute(
                "CREATE TEMP TABLE _state_stage (LIKE detector_state INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            with cur.copy(
                "COPY _state_stage (device_id, detector, state, updated_at) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                """INSERT INTO detector_state (device_id, detector, state, updated_at)
                   SELECT device_id, detector, state, updated_at FROM _state_stage
                   ON CONFLICT (device_id, detector)
                   DO UPDATE SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at"""
            )

    def load_state(self) -> list[tuple[str, str, bytes]]:
        """Every saved (device_id, detector, state)."""
        conn = self._connection()
        try:
            with conn.transaction():
                rows = conn.execute(
                    "SELECT device_id, detector, state FROM detector_state ORDER BY device_id"
                ).fetchall()
        except BaseException:
            self._drop_broken()
            raise
        return [(d, k, bytes(s)) for d, k, s in rows]
