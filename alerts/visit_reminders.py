"""Reminders of due home visits, through the same outbox and channels as alerts.

Every tick (``anxin alerts worker``, ``ANXIN_ALERTS__VISIT_REMINDER_EVERY_S``) the plan's
elders whose visit is due or overdue (:func:`devices.visits.due_list`) are looked at; for each
one not reminded of that due day yet, a ``visit_reminders`` row (unique per elder and due day)
and one delivery per community worker and family doctor of the elder (the alert router's own
directory: the care circle's community workers, or the community's phone; the doctors of the
teams the elder is signed with) are written in one transaction. The delivery worker sends them
like any alert's message (retries, back-off, quiet hours, give-up). So a due visit is reminded
once, not on every tick; a recorded visit moves the due day, and the next due day is reminded
when it comes. An elder with nobody to remind is looked at again on the next tick.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

import psycopg

from alerts.model import RecipientKind
from alerts.outbox import Delivery
from alerts.routing import Recipient, RecipientDirectory, first_attempt_at
from alerts.templates import Language, RenderedMessage, TemplateError
from core.clock import Clock
from core.db import run_ticks
from detectors.findings import Severity
from devices.visits import due_list

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

TEMPLATE: Final = "visit_due"
#: Who is reminded of a due visit.
REMINDED: Final = frozenset({RecipientKind.COMMUNITY_WORKER, RecipientKind.DOCTOR})


@dataclass(frozen=True, slots=True)
class Reminded:
    """One due visit reminded in a tick."""

    reminder_id: int
    resident_id: uuid.UUID
    due_on: dt.date
    deliveries: int


@dataclass(frozen=True, slots=True)
class VisitContext:
    """What a reminder says (values read at send time)."""

    resident_name: str
    address: str | None
    due_on: dt.date
    last_visit: dt.datetime | None
    recipient_name: str | None
    timezone: str = "Asia/Shanghai"


def render(language: str, ctx: VisitContext, today: dt.date) -> RenderedMessage:
    """Title and body of a reminder. Pure.

    Raises:
        TemplateError: an unknown language.
    """
    try:
        lang = Language(language)
    except ValueError as exc:
        raise TemplateError(f"Language {language!r} is unknown. Expected 'zh' or 'en'.") from exc
    late = (today - ctx.due_on).days
    last = (
        ctx.last_visit.astimezone(ZoneInfo(ctx.timezone)).strftime("%Y-%m-%d")
        if ctx.last_visit
        else None
    )
    if lang is Language.ZH:
        greeting = f"{ctx.recipient_name}您好:" if ctx.recipient_name else "您好:"
        when = f"已逾期 {late} 天" if late > 0 else "今天到期"
        return RenderedMessage(
            f"【安心随访提醒】{ctx.resident_name} 的上门随访{when}",
            f"{greeting}\n{ctx.resident_name} 的随访应于 {ctx.due_on.isoformat()} 完成({when})。"
            f"\n上次随访:{last or '尚无记录'}\n地址:{ctx.address or '地址未登记'}"
            "\n随访后请在安心照护台登记,提醒即停止。",
        )
    greeting = f"Dear {ctx.recipient_name}," if ctx.recipient_name else "Hello,"
    when = f"{late} days overdue" if late > 0 else "due today"
    return RenderedMessage(
        f"[Anxin visit reminder] the home visit to {ctx.resident_name} is {when}",
        f"{greeting}\nThe visit to {ctx.resident_name} was due on {ctx.due_on.isoformat()} "
        f"({when}).\nLast visit: {last or 'none on record'}\n"
        f"Address: {ctx.address or 'no address on record'}\n"
        "Record the visit on the Anxin care screen and the reminders stop.",
    )


def render_delivery(conn: Conn, delivery: Delivery, *, timezone: str) -> RenderedMessage:
    """The message of a reminder's delivery, read from the registry now.

    Raises:
        LookupError: the reminder is gone.
    """
    row = conn.execute(
        """SELECT r.name, concat_ws('', r.district, r.street, r.community_name, ' ' || r.address_text),
                  v.due_on, (SELECT max(visited_at) FROM visits WHERE resident_id = r.id)
             FROM visit_reminders v JOIN residents r ON r.id = v.resident_id
            WHERE v.id = %s""",
        (delivery.visit_reminder_id,),
    ).fetchone()
    if row is None:
        raise LookupError(
            f"Visit reminder {delivery.visit_reminder_id} of delivery {delivery.id} does not exist."
        )
    name, address, due_on, last = row
    ctx = VisitContext(name, address or None, due_on, last, delivery.recipient_name, timezone)
    today = dt.datetime.now(ZoneInfo(timezone)).date()
    return render(delivery.language, ctx, today)


def remind_due(
    conn: Conn,
    directory: RecipientDirectory,
    *,
    now: dt.datetime,
    timezone: str = "Asia/Shanghai",
) -> list[Reminded]:
    """Write the reminders of the visits due by today (local day in ``timezone``) that were not
    reminded yet, with their deliveries; one transaction per elder. Returns what was written."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    due = [
        d
        for d in due_list(conn, community_id=None, today=today, tz=timezone, overdue_only=False)
        if d.due_on <= today
    ]
    out: list[Reminded] = []
    for d in due:
        with conn.transaction():
            if conn.execute(
                "SELECT 1 FROM visit_reminders WHERE resident_id = %s AND due_on = %s",
                (d.resident_id, d.due_on),
            ).fetchone():
                continue
            recipients = [
                r for r in directory.recipients(conn, d.resident_id) if r.kind in REMINDED
            ]
            if not recipients:
                log.info("visit of %s due %s: nobody to remind", d.resident_id, d.due_on)
                continue
            row = conn.execute(
                """INSERT INTO visit_reminders (resident_id, due_on) VALUES (%s, %s)
                   ON CONFLICT (resident_id, due_on) DO NOTHING RETURNING id""",
                (d.resident_id, d.due_on),
            ).fetchone()
            if row is None:  # another worker wrote it meanwhile
                continue
            reminder_id = int(row[0])
            _deliveries(conn, reminder_id, recipients, now)
            out.append(Reminded(reminder_id, d.resident_id, d.due_on, len(recipients)))
    return out


def _deliveries(
    conn: Conn, reminder_id: int, recipients: Sequence[Recipient], now: dt.datetime
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO deliveries (visit_reminder_id, recipient_kind, recipient_ref,
                                       recipient_name, channel, address, language, template,
                                       idempotency_key, next_attempt_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (idempotency_key) DO NOTHING""",
            [
                (
                    reminder_id,
                    r.kind.value,
                    r.ref,
                    r.name,
                    r.channel.value,
                    r.address,
                    r.language,
                    TEMPLATE,
                    f"visit-{reminder_id}-{r.kind.value}-{r.ref or k}",
                    first_attempt_at(r, Severity.LOW, now),
                )
                for k, r in enumerate(recipients)
            ],
        )


def run_visit_reminders(
    connect: Callable[[], Conn],
    directory: RecipientDirectory,
    clock: Clock,
    stop: threading.Event,
    every_s: float,
    *,
    timezone: str = "Asia/Shanghai",
) -> None:
    """Call :func:`remind_due` every ``every_s`` until ``stop`` is set (a thread's target)."""

    def tick(conn: Conn) -> None:
        now = dt.datetime.fromtimestamp(clock.now_ms() / 1000, dt.UTC)
        done = remind_due(conn, directory, now=now, timezone=timezone)
        if done:
            log.info("visit reminders: %d due visits, %d messages", len(done),
                     sum(r.deliveries for r in done))  # fmt: skip

    run_ticks(connect, tick, stop, every_s, "visit reminder")
