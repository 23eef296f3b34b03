"""Per-elder behaviour settings in the registry (0011_behaviour_settings): values and storage.

Who lives alone (inactivity is watched only for them), the day and night windows in the elder's
local time, and the limits of the behaviour detectors. An elder without a row is watched with
:data:`DEFAULTS`, living alone when the registry's special-population flags say
``living_alone``. The ingester reads :func:`watched` every minute or so; the API writes
:func:`put_settings` (audited by the route).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from devices.model import NotFoundError, SpecialFlag

Conn = psycopg.Connection[Any]


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}; expected an IANA name") from exc
    return value


def _minutes(t: dt.time) -> int:
    return t.hour * 60 + t.minute


def _time(minutes: int) -> dt.time:
    return dt.time(minutes // 60, minutes % 60)


class BehaviourSettingsIn(BaseModel):
    """What the family, the doctor and the operator agree on for one elder.

    Windows are local wall-clock times in ``timezone`` and may span midnight (22:00-07:00).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lives_alone: bool | None = Field(
        None, description="Inactivity is watched only for someone living alone; null: the flag."
    )
    timezone: Annotated[str, AfterValidator(_zone)] = "Asia/Shanghai"
    day_start: dt.time = Field(dt.time(7, 0), description="Start of the day window (local).")
    day_end: dt.time = Field(dt.time(22, 0), description="End of the day window (local).")
    max_inactive_min: int = Field(
        180, ge=10, le=1440, description="Longest time without movement in the day window."
    )
    night_start: dt.time = Field(dt.time(22, 0), description="Start of the night window.")
    night_end: dt.time = Field(dt.time(7, 0), description="End of the night window.")
    out_of_bed_min: int = Field(
        30, ge=1, le=720, description="Out of bed at night longer than this: an alert."
    )
    bed_empty_min: int = Field(
        90, ge=1, le=720, description="Not in bed this long after the night began: an alert."
    )


class BehaviourSettingsOut(BehaviourSettingsIn):
    """The settings in force for one elder (``stored`` False: the defaults)."""

    resident_id: UUID
    lives_alone_effective: bool = Field(description="lives_alone, or the living_alone flag.")
    stored: bool
    updated_at: dt.datetime | None = None
    updated_by: str = ""


DEFAULTS = BehaviourSettingsIn()


@dataclass(frozen=True, slots=True)
class Watched:
    """One elder as the ingester's behaviour stage needs it (plain values, minutes, seconds)."""

    resident_id: str
    lives_alone: bool
    timezone: str
    day_start_min: int
    day_end_min: int
    max_inactive_s: int
    night_start_min: int
    night_end_min: int
    out_of_bed_s: int
    bed_empty_s: int


_COLUMNS = """b.lives_alone, b.timezone, b.day_start_min, b.day_end_min, b.max_inactive_s,
              b.night_start_min, b.night_end_min, b.out_of_bed_s, b.bed_empty_s"""


def _from_row(row: tuple[Any, ...]) -> BehaviourSettingsIn:
    lives, tz, ds, de, inact, ns, ne, out, empty = row
    return BehaviourSettingsIn(
        lives_alone=lives,
        timezone=tz,
        day_start=_time(ds),
        day_end=_time(de),
        max_inactive_min=inact // 60,
        night_start=_time(ns),
        night_end=_time(ne),
        out_of_bed_min=out // 60,
        bed_empty_min=empty // 60,
    )


def get_settings(conn: Conn, resident_id: UUID) -> BehaviourSettingsOut:
    """The settings in force (the defaults when none were stored).

    Raises:
        NotFoundError: no such resident.
    """
    row = conn.execute(
        f"""SELECT r.flags, b.resident_id IS NOT NULL, b.updated_at, b.updated_by, {_COLUMNS}
              FROM residents r LEFT JOIN behaviour_settings b ON b.resident_id = r.id
             WHERE r.id = %s""",
        (resident_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"Resident {resident_id} does not exist.")
    flags, stored, updated_at, updated_by = row[:4]
    values = _from_row(row[4:]) if stored else DEFAULTS
    flagged = SpecialFlag.LIVING_ALONE.value in (flags or [])
    return BehaviourSettingsOut(
        **values.model_dump(),
        resident_id=resident_id,
        lives_alone_effective=flagged if values.lives_alone is None else values.lives_alone,
        stored=bool(stored),
        updated_at=updated_at,
        updated_by=updated_by or "",
    )


def put_settings(
    conn: Conn, resident_id: UUID, data: BehaviourSettingsIn, *, by: str
) -> BehaviourSettingsOut:
    """Store (replace) one elder's settings.

    Raises:
        NotFoundError: no such resident.
    """
    if conn.execute("SELECT 1 FROM residents WHERE id = %s", (resident_id,)).fetchone() is None:
        raise NotFoundError(f"Resident {resident_id} does not exist.")
    conn.execute(
        """INSERT INTO behaviour_settings (resident_id, lives_alone, timezone, day_start_min,
               day_end_min, max_inactive_s, night_start_min, night_end_min, out_of_bed_s,
               bed_empty_s, updated_at, updated_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), %s)
           ON CONFLICT (resident_id) DO UPDATE SET
               lives_alone = EXCLUDED.lives_alone, timezone = EXCLUDED.timezone,
               day_start_min = EXCLUDED.day_start_min, day_end_min = EXCLUDED.day_end_min,
               max_inactive_s = EXCLUDED.max_inactive_s,
               night_start_min = EXCLUDED.night_start_min, night_end_min = EXCLUDED.night_end_min,
               out_of_bed_s = EXCLUDED.out_of_bed_s, bed_empty_s = EXCLUDED.bed_empty_s,
               updated_at = now(), updated_by = EXCLUDED.updated_by""",
        (
            resident_id,
            data.lives_alone,
            data.timezone,
            _minutes(data.day_start),
            _minutes(data.day_end),
            data.max_inactive_min * 60,
            _minutes(data.night_start),
            _minutes(data.night_end),
            data.out_of_bed_min * 60,
            data.bed_empty_min * 60,
            by[:200],
        ),
    )
    return get_settings(conn, resident_id)


def watched(conn: Conn) -> list[Watched]:
    """Every active elder with the settings in force (stored or the defaults)."""
    d = DEFAULTS
    rows = conn.execute(
        f"""SELECT r.id::text, 'living_alone' = ANY (r.flags), b.resident_id IS NOT NULL,
                   {_COLUMNS}
              FROM residents r LEFT JOIN behaviour_settings b ON b.resident_id = r.id
             WHERE r.status = 'active'"""
    ).fetchall()
    out: list[Watched] = []
    for rid, flagged, stored, *cols in rows:
        if stored:
            lives, tz, ds, de, inact, ns, ne, out_s, empty_s = cols
        else:
            lives, tz = None, d.timezone
            ds, de, ns, ne = (
                _minutes(t) for t in (d.day_start, d.day_end, d.night_start, d.night_end)
            )
            inact, out_s, empty_s = (
                d.max_inactive_min * 60,
                d.out_of_bed_min * 60,
                d.bed_empty_min * 60,
            )
        out.append(
            Watched(rid, bool(flagged) if lives is None else bool(lives), tz, ds, de, inact, ns, ne, out_s, empty_s)
        )  # fmt: skip
    return out
