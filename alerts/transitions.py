"""Moving an alert from state to state in SQL, and writing its timeline.

:func:`move` checks the transition with the pure :func:`alerts.lifecycle.check`, updates the row
(acknowledgement and closing times, escalations stopped) and writes the timeline entry; on
acknowledge the reminders and escalations not yet sent are cancelled, on closing the outbox is
closed (the 120 centre is always told). The caller holds the row's lock and the transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from alerts import lifecycle
from alerts.dispatch120 import close_outbox
from alerts.model import ALERT_COLUMNS, Actor, Alert, AlertState, alert_from_row

Conn = psycopg.Connection[Any]

#: The states an alert ends in.
CLOSED = (AlertState.RESOLVED, AlertState.CANCELLED, AlertState.FALSE_ALARM)


def move(
    conn: Conn, alert: Alert, target: AlertState, actor: Actor, now: datetime,
    *, channel: str | None, note: str | None = None,
) -> Alert:  # fmt: skip
    """Move ``alert`` to ``target`` (:class:`lifecycle.TransitionRefused` when not allowed)."""
    t = lifecycle.check(
        alert.id, alert.kind, alert.state, target, actor, now, channel=channel, note=note,
        severity=alert.severity,
    )  # fmt: skip
    sets = ["state = %s", "updated_at = %s"]
    args: list[Any] = [target.value, now]
    if target is AlertState.ACKNOWLEDGED:
        sets += ["acknowledged_at = %s", "acknowledged_by = %s", "next_escalation_at = NULL",
                 "next_reminder_at = NULL"]  # fmt: skip
        args += [now, str(actor)]
    if target in CLOSED:
        sets += ["closed_at = %s", "next_escalation_at = NULL", "next_reminder_at = NULL"]
        args.append(now)
    row = conn.execute(
        f"UPDATE alerts SET {', '.join(sets)} WHERE id = %s RETURNING {ALERT_COLUMNS}",
        (*args, alert.id),
    ).fetchone()
    assert row is not None  # noqa: S101 - the row is locked
    add_event(conn, alert.id, now, str(actor), from_state=t.from_state, to_state=target,
              channel=channel, note=note)  # fmt: skip
    if target is AlertState.ACKNOWLEDGED:
        # Reminders and escalations not sent yet are moot once someone is on it.
        conn.execute(
            """UPDATE deliveries SET status = 'cancelled', last_error = 'acknowledged'
                WHERE alert_id = %s AND status = 'pending' AND template IN ('reminder', 'escalation')""",
            (alert.id,),
        )
    elif target in CLOSED:
        # People not told yet need not be; the 120 centre is always told (dispatch120).
        close_outbox(conn, alert.id, target.value, now)
    return alert_from_row(row)


def add_event(
    conn: Conn, alert_id: int, at: datetime, actor: str, *, event: str = "transition",
    from_state: AlertState | None = None, to_state: AlertState | None = None,
    channel: str | None = None, note: str | None = None,
) -> None:  # fmt: skip
    """One entry of the alert's timeline (actor cut to 200 characters, the note to 1,000)."""
    conn.execute(
        """INSERT INTO alert_events (alert_id, at, event, from_state, to_state, actor, channel, note)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (alert_id, at, event, from_state.value if from_state else None,
         to_state.value if to_state else None, actor[:200], channel, note[:1000] if note else None),
    )  # fmt: skip
