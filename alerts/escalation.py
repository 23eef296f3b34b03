"""Escalation: no acknowledgement in time moves an alert to its next tier, with reminders.

The pure part, :func:`due_step`, takes an alert's plan (the routing rule stored when it opened),
when it opened, the tier and reminders so far and ``now``, and says what is due. The shell,
:func:`escalate_due`, runs it for every due alert (``FOR UPDATE SKIP LOCKED``, so several
workers may drive it) and also opens pending falls whose cancel window (plus a grace for the
detector's own verdict) has passed. Drive it with a clock: :func:`run_escalation` in a
thread with :class:`core.clock.SystemClock`, tests with :class:`core.clock.ManualClock`.
Every escalation and reminder is written on the alert's timeline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg

from alerts.model import ALERT_COLUMNS, Alert, alert_from_row
from alerts.routing import Rule, plan_from_json
from core.clock import Clock
from core.db import run_ticks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """What is due for one alert at ``now``.

    Attributes:
        tiers: Tiers to tell now, in order (several when the clock jumped past more than one).
        reminder: Whether a reminder goes to everyone told so far.
        next_escalation_at: When the next tier is due; None when the last one was reached.
        next_reminder_at: When the next reminder is due; None when no more are.
    """

    tiers: tuple[int, ...]
    reminder: bool
    next_escalation_at: datetime | None
    next_reminder_at: datetime | None

    @property
    def anything(self) -> bool:
        return bool(self.tiers) or self.reminder


def tier_due_at(plan: Rule, opened_at: datetime, tier: int, scale: float) -> datetime | None:
    """When tier ``tier`` of ``plan`` is due for an alert opened at ``opened_at``."""
    if tier >= len(plan.tiers):
        return None
    return opened_at + timedelta(seconds=plan.tiers[tier].after_s * scale)


def first_schedule(
    plan: Rule, opened_at: datetime, scale: float
) -> tuple[datetime | None, datetime | None]:
    """(next escalation, next reminder) of an alert that has just told tier 0."""
    reminder = None
    if plan.reminders is not None and plan.reminders.max > 0:
        reminder = opened_at + timedelta(seconds=plan.reminders.every_s * scale)
    return tier_due_at(plan, opened_at, 1, scale), reminder


def due_step(
    plan: Rule,
    *,
    opened_at: datetime,
    tier: int,
    reminders: int,
    next_reminder_at: datetime | None,
    now: datetime,
    scale: float = 1.0,
) -> EscalationStep:
    """Pure: the tiers and the reminder due at ``now`` for an unacknowledged alert."""
    new: list[int] = []
    t = tier + 1
    while t < len(plan.tiers):
        due = tier_due_at(plan, opened_at, t, scale)
        if due is None or due > now:
            break
        new.append(t)
        t += 1
    next_escalation = tier_due_at(plan, opened_at, t, scale)
    reminder = False
    next_reminder = next_reminder_at
    rem = plan.reminders
    if rem is None or reminders >= rem.max:
        next_reminder = None
    else:
        every = timedelta(seconds=rem.every_s * scale)
        if new:
            # A new tier is itself the nudge: the next reminder counts from now.
            next_reminder = now + every
        elif next_reminder_at is not None and next_reminder_at <= now:
            reminder = True
            next_reminder = now + every if reminders + 1 < rem.max else None
    return EscalationStep(tuple(new), reminder, next_escalation, next_reminder)


class Escalator(Protocol):
    """What :func:`escalate_due` needs from the alert service."""

    @property
    def escalation_scale(self) -> float: ...

    @property
    def fall_grace_s(self) -> float: ...

    def open_after_deadline(
        self, conn: psycopg.Connection[Any], alert: Alert, now: datetime
    ) -> None:
        """Open a pending alert whose cancel window passed (inside the caller's transaction)."""
        ...

    def escalate(
        self, conn: psycopg.Connection[Any], alert: Alert, step: EscalationStep, now: datetime
    ) -> None:
        """Tell the step's tiers, send its reminder, store the schedule and the timeline."""
        ...


@dataclass(frozen=True, slots=True)
class EscalationReport:
    opened: tuple[int, ...]
    escalated: tuple[int, ...]
    reminded: tuple[int, ...]


def escalate_due(
    conn: psycopg.Connection[Any], now: datetime, escalator: Escalator, *, limit: int = 200
) -> EscalationReport:
    """Open pending alerts past their cancel window; escalate and remind unacknowledged ones.

    Each alert is handled in a transaction of its own; rows locked by another worker are
    skipped (that worker handles them).
    """
    opened: list[int] = []
    escalated: list[int] = []
    reminded: list[int] = []
    grace = timedelta(seconds=escalator.fall_grace_s)
    while True:
        with conn.transaction():
            row = conn.execute(
                f"""SELECT {ALERT_COLUMNS} FROM alerts
                     WHERE state = 'pending' AND cancel_deadline <= %s
                     ORDER BY cancel_deadline LIMIT 1 FOR UPDATE SKIP LOCKED""",
                (now - grace,),
            ).fetchone()
            if row is None:
                break
            alert = alert_from_row(row)
            escalator.open_after_deadline(conn, alert, now)
            opened.append(alert.id)
        if len(opened) >= limit:
            break
    ids = [
        int(r[0])
        for r in conn.execute(
            """SELECT id FROM alerts
                WHERE state = 'open' AND (next_escalation_at <= %s OR next_reminder_at <= %s)
                ORDER BY id LIMIT %s""",
            (now, now, limit),
        ).fetchall()
    ]
    for alert_id in ids:
        with conn.transaction():
            row = conn.execute(
                f"""SELECT {ALERT_COLUMNS} FROM alerts
                     WHERE id = %s AND state = 'open' FOR UPDATE SKIP LOCKED""",
                (alert_id,),
            ).fetchone()
            if row is None:
                continue
            alert = alert_from_row(row)
            if alert.plan is None or alert.opened_at is None:
                continue
            step = due_step(
                plan_from_json(alert.plan),
                opened_at=alert.opened_at,
                tier=alert.tier,
                reminders=alert.reminders,
                next_reminder_at=alert.next_reminder_at,
                now=now,
                scale=escalator.escalation_scale,
            )
            escalator.escalate(conn, alert, step, now)
            if step.tiers:
                escalated.append(alert.id)
            if step.reminder:
                reminded.append(alert.id)
    return EscalationReport(tuple(opened), tuple(escalated), tuple(reminded))


def run_escalation(
    connect: Callable[[], psycopg.Connection[Any]],
    escalator: Escalator,
    clock: Clock,
    stop: threading.Event,
    every_s: float,
) -> None:
    """Call :func:`escalate_due` every ``every_s`` until ``stop`` is set (a thread's target)."""

    def tick(conn: psycopg.Connection[Any]) -> None:
        now = datetime.fromtimestamp(clock.now_ms() / 1000, UTC)
        report = escalate_due(conn, now, escalator)
        if report.opened or report.escalated or report.reminded:
            log.info(
                "escalation: opened %s, escalated %s, reminded %s",
                list(report.opened),
                list(report.escalated),
                list(report.reminded),
            )

    run_ticks(connect, tick, stop, every_s, "escalation")
