"""Reading alerts: one alert, its timeline, its deliveries, a filtered and scoped list.

The read side of :class:`alerts.service.AlertService` (which keeps thin methods over these for
its callers); the SQL that changes an alert is in :mod:`alerts.transitions` and the service.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from alerts.model import (
    ALERT_COLUMNS,
    Alert,
    AlertError,
    AlertEvent,
    AlertKind,
    AlertState,
    Delivery,
    DeliveryChannel,
    RecipientKind,
    alert_from_row,
)
from detectors.findings import Severity
from devices.access import signed_with_sql

Conn = psycopg.Connection[Any]


class AlertNotFound(AlertError):
    """No alert with that id."""


@dataclass(frozen=True, slots=True)
class AlertFilter:
    state: AlertState | None = None
    kind: AlertKind | None = None
    resident_id: uuid.UUID | None = None
    since: datetime | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class AlertScope:
    """Which alerts a caller may see: all, or those of these residents or doctor teams."""

    all: bool = False
    resident_ids: frozenset[uuid.UUID] = frozenset()
    team_ids: frozenset[uuid.UUID] = frozenset()
    min_severity: Severity = Severity.INFO


def get_alert(conn: Conn, alert_id: int, *, for_update: bool = False) -> Alert:
    """The alert ``alert_id`` (row-locked with ``for_update``); :class:`AlertNotFound` if none."""
    lock = " FOR UPDATE" if for_update else ""
    row = conn.execute(
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = %s{lock}", (alert_id,)
    ).fetchone()
    if row is None:
        raise AlertNotFound(f"Alert {alert_id} does not exist.")
    return alert_from_row(row)


def alert_timeline(conn: Conn, alert_id: int) -> list[AlertEvent]:
    rows = conn.execute(
        """SELECT id, alert_id, at, event, from_state, to_state, actor, channel, note
             FROM alert_events WHERE alert_id = %s ORDER BY id""",
        (alert_id,),
    ).fetchall()
    return [
        AlertEvent(int(r[0]), int(r[1]), r[2], r[3], AlertState(r[4]) if r[4] else None,
                   AlertState(r[5]) if r[5] else None, r[6], r[7], r[8])
        for r in rows
    ]  # fmt: skip


def alert_deliveries(conn: Conn, alert_id: int) -> list[Delivery]:
    rows = conn.execute(
        """SELECT id, alert_id, tier, recipient_kind, recipient_ref, recipient_name, channel, address,
                  language, template, idempotency_key, status, attempts, next_attempt_at, last_error,
                  created_at, delivered_at
             FROM deliveries WHERE alert_id = %s ORDER BY id""",
        (alert_id,),
    ).fetchall()
    return [
        Delivery(int(r[0]), int(r[1]), int(r[2]), RecipientKind(r[3]), r[4], r[5], DeliveryChannel(r[6]),
                 r[7], r[8], r[9], r[10], r[11], int(r[12]), r[13], r[14], r[15], r[16])
        for r in rows
    ]  # fmt: skip


def list_alerts(conn: Conn, filt: AlertFilter, scope: AlertScope) -> list[Alert]:
    """Newest first, filtered by ``filt`` and limited to what ``scope`` may see."""
    where = ["true"]
    args: list[Any] = []
    if filt.state is not None:
        where.append("a.state = %s")
        args.append(filt.state.value)
    if filt.kind is not None:
        where.append("a.kind = %s")
        args.append(filt.kind.value)
    if filt.resident_id is not None:
        where.append("a.resident_id = %s")
        args.append(filt.resident_id)
    if filt.since is not None:
        where.append("a.last_at >= %s")
        args.append(filt.since)
    if scope.min_severity > Severity.INFO:
        where.append(
            "array_position(ARRAY['info','low','medium','high','emergency'], a.severity) > %s"
        )
        args.append(int(scope.min_severity))
    if not scope.all:
        # A doctor's scope: contracts in force only (one definition, devices.access).
        where.append(f"(a.resident_id = ANY(%s) OR {signed_with_sql('a.resident_id')})")
        args += [list(scope.resident_ids), list(scope.team_ids)]
    cols = ", ".join(f"a.{c.strip()}" for c in ALERT_COLUMNS.split(","))
    rows = conn.execute(
        f"""SELECT {cols} FROM alerts a WHERE {" AND ".join(where)}
             ORDER BY a.id DESC LIMIT %s OFFSET %s""",
        (*args, filt.limit, filt.offset),
    ).fetchall()
    return [alert_from_row(r) for r in rows]
