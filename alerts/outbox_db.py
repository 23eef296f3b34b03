"""The outbox in PostgreSQL: claim due deliveries under a lease, renew leases while sending,
record each attempt and move the row (0006_alerts, 0007_delivery)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from alerts import templates
from alerts.addresses import setting_ref
from alerts.channels import SendResult
from alerts.outbox import COLUMNS, Decision, Delivery, DeliveryConfig, Status, decide

log = logging.getLogger(__name__)
ACTOR: Final = "system:delivery-worker"

Conn = psycopg.Connection[Any]


def claim_due(conn: Conn, *, now: dt.datetime, lease_s: float, limit: int) -> list[Delivery]:
    """Claim up to ``limit`` due deliveries for this worker, in one transaction.

    Due: ``pending`` with ``next_attempt_at`` reached, or ``sending`` whose lease ran out (its
    worker died); the latter get an attempt row saying so.
    """
    if limit <= 0:
        return []
    lease_until = now + dt.timedelta(seconds=lease_s)
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""WITH due AS (
                    SELECT id, status AS was FROM deliveries
                    WHERE status IN ('pending', 'sending') AND next_attempt_at <= %(now)s
                    ORDER BY next_attempt_at, id
                    LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED)
                UPDATE deliveries d
                   SET status = 'sending', attempts = d.attempts + 1,
                       next_attempt_at = %(lease_until)s
                  FROM due WHERE d.id = due.id
                RETURNING {", ".join("d." + c.strip() for c in COLUMNS.split(","))},
                          due.was = 'sending' AS lease_expired""",
            {"now": now, "limit": limit, "lease_until": lease_until},
        ).fetchall()
        expired = [r["id"] for r in rows if r["lease_expired"]]
        if expired:
            cur.executemany(
                """INSERT INTO delivery_attempts (delivery_id, at, ok, error)
                   VALUES (%s, %s, false, 'lease expired: the worker was lost mid-delivery')""",
                [(i, now) for i in expired],
            )
    deliveries = [Delivery(**r) for r in rows]
    deliveries.sort(key=lambda d: d.id)
    return deliveries


def record_result(
    conn: Conn,
    delivery: Delivery,
    result: SendResult,
    *,
    now: dt.datetime,
    config: DeliveryConfig,
    rand: float,
) -> Decision:
    """Log the attempt and move the row; on give-up, tell the operator. One transaction."""
    decision = decide(delivery, result, now=now, config=config, rand=rand)
    with conn.transaction():
        conn.execute(
            """INSERT INTO delivery_attempts (delivery_id, at, ok, status_code, error, duration_ms)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            (delivery.id, now, result.ok, result.status_code, result.error, result.duration_ms),
        )
        if decision.status is Status.DELIVERED:
            # Also when the lease ran out meanwhile: the receiver has it; a second worker's
            # copy (same key) is dropped by the receiver and its result is not written over this.
            conn.execute(
                """UPDATE deliveries SET status = 'delivered', delivered_at = %s, last_error = NULL
                   WHERE id = %s AND status IN ('sending', 'pending', 'failed')""",
                (now, delivery.id),
            )
            return decision
        # A failure only moves the row while this worker still holds it (same claim).
        moved = conn.execute(
            """UPDATE deliveries SET status = %s, next_attempt_at = coalesce(%s, next_attempt_at),
                      last_error = %s
               WHERE id = %s AND status = 'sending' AND attempts = %s""",
            (
                decision.status.value,
                decision.next_attempt_at,
                (decision.reason or "")[:2000],
                delivery.id,
                delivery.attempts,
            ),
        ).rowcount
        if moved and decision.status is Status.GAVE_UP:
            _give_up(conn, delivery, decision.reason or "", now=now, config=config)
    return decision


def _give_up(
    conn: Conn, delivery: Delivery, reason: str, *, now: dt.datetime, config: DeliveryConfig
) -> None:
    who = delivery.recipient_name or delivery.recipient_kind
    note = f"delivery {delivery.id} to {who} ({delivery.channel}) gave up: {reason}"[:2000]
    if delivery.alert_id is None:
        # A visit reminder: no alert timeline to note it on; the due list still shows the visit.
        log.warning("visit reminder %s: %s", delivery.visit_reminder_id, note)
        return
    conn.execute(
        """INSERT INTO alert_events (alert_id, at, event, actor, channel, note)
           VALUES (%s, %s, 'delivery', %s, %s, %s)""",
        (delivery.alert_id, now, ACTOR, delivery.channel, note),
    )
    if delivery.template == templates.Template.GIVE_UP or delivery.recipient_kind == "operator":
        log.error("the operator could not be told either: %s", note)
        return
    if not config.operator_url:
        log.error("no operator channel configured (ANXIN_ALERTS__OPERATOR_URL): %s", note)
        return
    log.warning("%s; telling the operator", note)
    conn.execute(
        """INSERT INTO deliveries (alert_id, tier, recipient_kind, recipient_ref, recipient_name,
                                   channel, address, language, template, idempotency_key,
                                   next_attempt_at)
           VALUES (%s, %s, 'operator', %s, 'operator', 'apprise', %s, %s, 'give_up', %s, %s)
           ON CONFLICT (idempotency_key) DO NOTHING""",
        (
            delivery.alert_id,
            delivery.tier,
            str(delivery.id),
            setting_ref("operator_url"),  # a reference: the outbox keeps no tokens
            delivery.language,
            f"give_up:{delivery.id}",
            now,
        ),
    )


def leased(conn: Conn, ids: Sequence[int]) -> list[Delivery]:
    """Deliveries of ``ids`` still ``sending`` under the lease they were written with (an
    alert's first 120 push, leased to the ingester that raised it)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {COLUMNS} FROM deliveries WHERE id = ANY(%s) AND status = 'sending' ORDER BY id",
            (list(ids),),
        ).fetchall()
    return [Delivery(**r) for r in rows]


def renew_leases(conn: Conn, held: Sequence[Delivery], *, now: dt.datetime, lease_s: float) -> int:
    """Extend the lease of deliveries still being sent by this process (same claim: status
    ``sending`` and the attempt count it claimed with); how many were extended."""
    if not held:
        return 0
    with conn.transaction():
        return conn.execute(
            """UPDATE deliveries d SET next_attempt_at = %s
                 FROM unnest(%s::bigint[], %s::int[]) AS h(id, attempts)
                WHERE d.id = h.id AND d.attempts = h.attempts AND d.status = 'sending'""",
            (
                now + dt.timedelta(seconds=lease_s),
                [d.id for d in held],
                [d.attempts for d in held],
            ),
        ).rowcount
