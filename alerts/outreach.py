"""Reaching people about an open alert: the routing plan, the outbox rows, escalation.

:class:`Outreach` chooses the rule of the routing policy for an alert (with the elder's
overrides), writes one delivery per recipient of a tier (idempotent by key; the 120 delivery
leased to the caller when it pushes itself), schedules escalation and reminders, and runs the
escalation steps that :func:`alerts.escalation.escalate_due` finds due. It works inside the
caller's transaction; :class:`alerts.service.AlertService` holds one.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from alerts import ack
from alerts.addresses import setting_ref
from alerts.decision import AlertChange, Step
from alerts.escalation import EscalationReport, EscalationStep, escalate_due, first_schedule
from alerts.model import (
    ALERT_COLUMNS,
    SYSTEM,
    Alert,
    AlertError,
    AlertKind,
    AlertState,
    DeliveryChannel,
    RecipientKind,
    alert_from_row,
)
from alerts.routing import (
    Policy,
    Recipient,
    RecipientDirectory,
    Rule,
    first_attempt_at,
    match,
    plan_from_json,
    plan_json,
    rules_from_data,
    select,
)
from alerts.transitions import add_event, move
from core.settings import AlertsSettings
from detectors.findings import Severity

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

#: Recipients that get no reminders and no acknowledge link (systems, not people).
SYSTEMS = frozenset({RecipientKind.DISPATCH120, RecipientKind.HOSPITAL})


class Outreach:
    """Who is told about an alert, when, and how it escalates (the
    :class:`alerts.escalation.Escalator` of the alert service).

    Args:
        settings: The ``alerts`` section of the settings.
        directory: Where recipients come from (the registry).
        policy: The routing policy.
        claim_120_s: With a value, a new alert's 120 deliveries are written leased to the caller
            for so many seconds (their ids come back in :attr:`AlertChange.claimed_120`): the
            ingester sends the first push itself, without waiting for the delivery worker.
    """

    def __init__(
        self,
        settings: AlertsSettings,
        directory: RecipientDirectory,
        policy: Policy,
        *,
        claim_120_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.policy = policy
        self.claim_120_s = claim_120_s

    @property
    def escalation_scale(self) -> float:
        return self.settings.escalation_scale

    @property
    def fall_grace_s(self) -> float:
        return self.settings.fall_grace_s

    def overrides(self, conn: Conn, resident: uuid.UUID | None) -> tuple[Rule, ...]:
        if resident is None:
            return ()
        row = conn.execute(
            "SELECT rules FROM alert_routing_overrides WHERE resident_id = %s", (resident,)
        ).fetchone()
        if row is None:
            return ()
        try:
            return rules_from_data(row[0], f"alert_routing_overrides[{resident}]")
        except AlertError:
            log.warning(
                "routing override of resident %s is not valid; default policy used", resident
            )
            return ()

    # -- routing and deliveries ----------------------------------------------------------
    def open_routing(
        self,
        conn: Conn,
        alert: Alert,
        now: datetime,
        *,
        again: bool = False,
        overrides: tuple[Rule, ...] | None = None,
        step: Step = Step.CREATE_OPEN,
    ) -> AlertChange:
        """Choose the plan, tell tier 0, schedule escalation and reminders.

        ``overrides``: the resident's routing overrides when the caller has just read them in
        this transaction (one round trip fewer on the way of an SOS).
        """
        if overrides is None:
            overrides = self.overrides(conn, alert.resident_id)
        rule = match(self.policy, alert.kind, alert.severity, overrides)
        if rule is None or rule.action != "alert":
            return AlertChange(step, alert)
        opened_at = now if again or alert.opened_at is None else alert.opened_at
        next_esc, next_rem = first_schedule(rule, opened_at, self.escalation_scale)
        row = conn.execute(
            f"""UPDATE alerts SET rule = %s, plan = %s, opened_at = %s, tier = 0, reminders = 0,
                       next_escalation_at = %s, next_reminder_at = %s, updated_at = %s
                 WHERE id = %s RETURNING {ALERT_COLUMNS}""",
            (rule.name, Jsonb(plan_json(rule)), opened_at, next_esc, next_rem, now, alert.id),
        ).fetchone()
        assert row is not None  # noqa: S101 - the row is locked
        alert = alert_from_row(row)
        purpose = f"s{int(alert.severity)}" if again else "first"
        claimed: list[int] = []
        n = self.tell(
            conn, alert, rule, kinds=rule.tiers[0].recipients, tier=0, purpose=purpose, now=now,
            claimed=claimed,
        )  # fmt: skip
        return AlertChange(step, alert, n, tuple(claimed))

    def system_recipients(self) -> list[Recipient]:
        out = [
            Recipient(
                RecipientKind.DISPATCH120, self.settings.dispatch120_url, "120", None,
                channel=DeliveryChannel.DISPATCH120,
            )
        ]  # fmt: skip
        if self.settings.operator_url:
            out.append(Recipient(RecipientKind.OPERATOR, setting_ref("operator_url"), "operator"))
        return out

    def tell(
        self, conn: Conn, alert: Alert, rule: Rule, *, kinds: Sequence[RecipientKind], tier: int,
        purpose: str, now: datetime, seq: int = 0, claimed: list[int] | None = None,
    ) -> int:  # fmt: skip
        """Write one delivery per recipient of ``kinds`` (idempotent by key); note who was missing.

        With ``claimed`` and :attr:`claim_120_s`, a 120 delivery is written already leased to
        the caller (``sending``, one attempt) and its id appended: the caller pushes it right
        after the commit, and the worker takes it over if the lease runs out first.
        """
        pool = list(self.system_recipients())
        if alert.resident_id is not None:
            pool += self.directory.recipients(conn, alert.resident_id)
        chosen = select(pool, kinds)
        missing = [k.value for k in dict.fromkeys(kinds) if not any(r.kind is k for r in chosen)]
        if not chosen:
            chosen = select(pool, [RecipientKind.OPERATOR])
        if missing and purpose != "reminder":
            add_event(
                conn,
                alert.id,
                now,
                "system",
                event="note",
                note=f"no recipient for: {', '.join(missing)}",
            )
        n = 0
        for r in chosen:
            if purpose == "reminder":
                template = "reminder"
            elif tier > 0 and r.kind not in SYSTEMS:
                template = "escalation"
            else:
                template = rule.template_for(r.kind)
            who = r.ref or hashlib.sha256(r.address.encode()).hexdigest()[:12]
            key = f"alert-{alert.id}-{purpose}{seq}-t{tier}-{r.kind.value}-{who}"
            lease = (
                claimed is not None
                and self.claim_120_s is not None
                and r.kind is RecipientKind.DISPATCH120
            )
            if lease:
                status, attempts = "sending", 1
                due = now + timedelta(seconds=self.claim_120_s or 0.0)
            else:
                status, attempts, due = "pending", 0, first_attempt_at(r, alert.severity, now)
            row = conn.execute(
                """INSERT INTO deliveries (alert_id, tier, recipient_kind, recipient_ref, recipient_name,
                                          channel, address, language, template, idempotency_key,
                                          status, attempts, next_attempt_at, created_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (idempotency_key) DO NOTHING RETURNING id""",
                (alert.id, tier, r.kind.value, r.ref, r.name, r.channel.value, r.address, r.language,
                 template, key, status, attempts, due, now),
            ).fetchone()  # fmt: skip
            if row is None:
                continue
            n += 1
            if lease and claimed is not None:
                claimed.append(int(row[0]))
            if r.kind is not RecipientKind.DISPATCH120:  # every message with a link has a token
                ack.issue(
                    conn, self.settings, alert_id=alert.id, delivery_id=int(row[0]), idempotency_key=key,
                    recipient=f"{r.kind.value}:{r.name or who}", now=now,
                )  # fmt: skip
        return n

    # -- escalation (the Escalator protocol of alerts.escalation) ------------------------
    def open_after_deadline(self, conn: Conn, alert: Alert, now: datetime) -> None:
        alert = move(
            conn, alert, AlertState.OPEN, SYSTEM, now, channel="clock",
            note="cancel window passed without a cancel",
        )  # fmt: skip
        if alert.kind is AlertKind.FALL and alert.severity < Severity.EMERGENCY:
            row = conn.execute(
                f"UPDATE alerts SET severity = 'emergency' WHERE id = %s RETURNING {ALERT_COLUMNS}",
                (alert.id,),
            ).fetchone()
            assert row is not None  # noqa: S101 - the row is locked
            alert = alert_from_row(row)
        self.open_routing(conn, alert, now)

    def escalate(self, conn: Conn, alert: Alert, step: EscalationStep, now: datetime) -> None:
        assert alert.plan is not None  # noqa: S101 - escalate_due checks
        rule = plan_from_json(alert.plan)
        tier = alert.tier
        for t in step.tiers:
            kinds = rule.tiers[t].recipients
            n = self.tell(conn, alert, rule, kinds=kinds, tier=t, purpose="tier", now=now)
            add_event(
                conn, alert.id, now, "system", event="escalation", channel="clock",
                note=f"tier {t}: {', '.join(k.value for k in kinds)} ({n} deliveries); "
                f"not acknowledged {_ago(alert.opened_at, now)} after opening",
            )  # fmt: skip
            tier = t
        reminders = alert.reminders
        if step.reminder:
            reminders += 1
            told = [
                k for t in range(tier + 1) for k in rule.tiers[t].recipients if k not in SYSTEMS
            ]
            n = self.tell(
                conn, alert, rule, kinds=told, tier=tier, purpose="reminder", now=now, seq=reminders
            )
            add_event(
                conn, alert.id, now, "system", event="reminder", channel="clock",
                note=f"reminder {reminders} to tiers 0-{tier} ({n} deliveries)",
            )  # fmt: skip
        conn.execute(
            """UPDATE alerts SET tier = %s, reminders = %s, next_escalation_at = %s,
                      next_reminder_at = %s, updated_at = %s WHERE id = %s""",
            (tier, reminders, step.next_escalation_at, step.next_reminder_at, now, alert.id),
        )

    def escalate_due(self, conn: Conn, now: datetime) -> EscalationReport:
        """:func:`alerts.escalation.escalate_due` with this service."""
        return escalate_due(conn, now, self)


def _ago(opened: datetime | None, now: datetime) -> str:
    if opened is None:
        return "?"
    s = int((now - opened).total_seconds())
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"
