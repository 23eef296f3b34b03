"""What the care operator looks after every day: devices that went quiet, went offline or run
low on battery (``GET /api/v1/operations/devices``). The other lists of the operator's screen
are the API's own: profiles not verified (``/profiles/unverified``) and open alerts past their
first escalation tier (``/alerts?state=open``)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.auth import DbConn, require
from devices.access import Action, Principal

router = APIRouter(prefix="/api/v1", tags=["operations"])

Operator = Annotated[Principal, Depends(require(Action.REGISTRY_WRITE))]


class DeviceAttention(BaseModel):
    device_id: str
    kind: str
    resident_id: uuid.UUID | None
    resident_name: str | None
    label: str | None
    last_seen: dt.datetime | None = Field(description="Newest vitals, battery or status time.")
    online: bool | None = Field(description="The device's last status message (retained).")
    battery_pct: float | None = Field(description="The newest battery level, percent.")
    reasons: list[str] = Field(description="quiet, offline, battery_low (one or more).")


@router.get("/operations/devices")
def devices_needing_attention(
    conn: DbConn,
    _p: Operator,
    battery_below: Annotated[float, Query(ge=0, le=100)] = 20,
    quiet_factor: Annotated[float, Query(ge=1, le=1000)] = 3,
) -> list[DeviceAttention]:
    """Active devices that sent nothing for ``quiet_factor`` times their expected interval,
    whose last status says offline, or whose battery is under ``battery_below`` percent;
    worst first (quiet and offline before battery), then by device id."""
    rows = conn.execute(
        """SELECT d.device_id, d.kind, d.resident_id, r.name, d.label, d.expected_interval_s,
                  s.ts, s.online, b.ts, coalesce(b.level_pct, s.battery_pct), v.ts
             FROM devices d
             LEFT JOIN residents r ON r.id = d.resident_id
             LEFT JOIN LATERAL (SELECT ts, online, battery_pct FROM device_status
                                 WHERE device_id = d.device_id ORDER BY ts DESC LIMIT 1) s ON true
             LEFT JOIN LATERAL (SELECT ts, level_pct FROM battery_readings
                                 WHERE device_id = d.device_id ORDER BY ts DESC LIMIT 1) b ON true
             LEFT JOIN LATERAL (SELECT ts FROM vitals
                                 WHERE device_id = d.device_id ORDER BY ts DESC LIMIT 1) v ON true
            WHERE d.status = 'active'"""
    ).fetchall()
    now = dt.datetime.now(dt.UTC)
    out = []
    for device_id, kind, rid, name, label, interval, s_ts, online, b_ts, battery, v_ts in rows:
        seen = [t for t in (s_ts, b_ts, v_ts) if t is not None]
        last = max(seen) if seen else None
        reasons = []
        if last is None or (now - last).total_seconds() > quiet_factor * interval:
            reasons.append("quiet")
        if online is False:
            reasons.append("offline")
        if battery is not None and battery < battery_below:
            reasons.append("battery_low")
        if reasons:
            out.append(
                DeviceAttention(
                    device_id=device_id, kind=kind, resident_id=rid, resident_name=name,
                    label=label, last_seen=last, online=online, battery_pct=battery,
                    reasons=reasons,
                )
            )  # fmt: skip
    out.sort(key=lambda d: (d.reasons == ["battery_low"], d.device_id))
    return out
