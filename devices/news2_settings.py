"""Per-elder NEWS2 settings in the registry (0013_news2_settings): storage only.

What the signed family doctor set for one elder: the SpO2 scale and the charts changed from
the RCP chart, each as band starts and scores. The values are checked against the charts'
rules by the API (api/routes/news2_settings.py, with :class:`detectors.news2_charts.Bands`) and
turned into scoring arrays by the ingester (ingest/news2_settings.py); this module keeps them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from devices.model import NotFoundError

Conn = psycopg.Connection[Any]

ChartBands = tuple[tuple[float, ...], tuple[int, ...]]
"""(starts, scores) of one chart."""


@dataclass(frozen=True, slots=True)
class StoredNews2:
    """One elder's stored settings (charts not in ``bands`` are the RCP chart's)."""

    resident_id: uuid.UUID
    spo2_scale: int = 1
    bands: Mapping[str, ChartBands] = field(default_factory=dict)
    note: str = ""
    updated_at: dt.datetime | None = None
    updated_by: str = ""


def _bands(raw: Any) -> dict[str, ChartBands]:
    out: dict[str, ChartBands] = {}
    if isinstance(raw, dict):
        for chart, b in raw.items():
            if isinstance(b, dict):
                out[str(chart)] = (
                    tuple(float(x) for x in b.get("starts", ())),
                    tuple(int(x) for x in b.get("scores", ())),
                )
    return out


def _stored(row: Sequence[Any]) -> StoredNews2:
    rid, scale, bands, note, at, by = row
    return StoredNews2(rid, int(scale), _bands(bands), note or "", at, by or "")


_COLUMNS = "resident_id, spo2_scale, bands, note, updated_at, updated_by"


def get(conn: Conn, resident_id: uuid.UUID) -> StoredNews2 | None:
    """The stored settings of one elder, or None (scored on the RCP chart)."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM news2_settings WHERE resident_id = %s", (resident_id,)
    ).fetchone()
    return None if row is None else _stored(row)


def put(
    conn: Conn,
    resident_id: uuid.UUID,
    *,
    spo2_scale: int,
    bands: Mapping[str, ChartBands],
    note: str,
    by: str,
) -> StoredNews2:
    """Store (replace) one elder's settings; charts left out return to the RCP chart.

    Raises:
        NotFoundError: no such resident.
    """
    if conn.execute("SELECT 1 FROM residents WHERE id = %s", (resident_id,)).fetchone() is None:
        raise NotFoundError(f"Resident {resident_id} does not exist.")
    doc = {c: {"starts": list(s), "scores": list(sc)} for c, (s, sc) in bands.items()}
    row = conn.execute(
        f"""INSERT INTO news2_settings (resident_id, spo2_scale, bands, note, updated_at,
                                        updated_by)
            VALUES (%s, %s, %s, %s, now(), %s)
            ON CONFLICT (resident_id) DO UPDATE SET
                spo2_scale = EXCLUDED.spo2_scale, bands = EXCLUDED.bands, note = EXCLUDED.note,
                updated_at = now(), updated_by = EXCLUDED.updated_by
            RETURNING {_COLUMNS}""",
        (resident_id, spo2_scale, Jsonb(doc), note[:500], by[:200]),
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    return _stored(row)


def stamp(conn: Conn) -> tuple[int, dt.datetime | None]:
    """(rows, newest change): cheap to read, and different after any change of the table."""
    row = conn.execute("SELECT count(*), max(updated_at) FROM news2_settings").fetchone()
    return (0, None) if row is None else (int(row[0]), row[1])


def all_active(conn: Conn) -> list[StoredNews2]:
    """The stored settings of every active elder."""
    rows = conn.execute(
        f"""SELECT {", ".join("n." + c.strip() for c in _COLUMNS.split(","))}
              FROM news2_settings n JOIN residents r ON r.id = n.resident_id
             WHERE r.status = 'active'"""
    ).fetchall()
    return [_stored(r) for r in rows]
