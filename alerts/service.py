"""From findings to alerts and outbox rows, in one transaction; transitions; the timeline.

:class:`AlertService` is the thin shell around the pure cores (:mod:`alerts.lifecycle`,
:mod:`alerts.routing`, :mod:`alerts.escalation`). Every method takes the psycopg connection
to work on and ``now``; each write runs in ``conn.transaction()`` (a savepoint inside a
caller's transaction). An alert, its timeline rows, its deliveries and their acknowledge
tokens are written together or not at all.

One live alert per elder and kind: each finding takes a transaction-scoped advisory lock on
(elder or device, kind) before it looks for the live alert, and the partial unique index
``alerts_one_live`` backs that up, so two findings in the same millisecond from two workers
make one alert with two occurrences.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from alerts import ack, lifecycle
from alerts.addresses import setting_ref
from alerts.commands import AlertCommandSender, are_you_ok, help_coming
from alerts.decision import AlertChange, AlertInput, Step, decide
from alerts.digest import Digest, DigestItem, render_digest, team_digest
from alerts.directory import ChannelOpener, PostgresDirectory
from alerts.dispatch120 import close_outbox
from alerts.escalation import EscalationReport, EscalationStep, escalate_due, first_schedule
from alerts.model import (
    ALERT_COLUMNS,
    FINDING_ALERT_KIND,
    LIVE_STATES_SQL,
    SYSTEM,
    Actor,
    ActorKind,
    Alert,
    AlertError,
    AlertEvent,
    AlertKind,
    AlertState,
    Delivery,
    DeliveryChannel,
    RecipientKind,
    alert_from_row,
    parse_severity,
    severity_name,
)
from alerts.routing import (
    Policy,
    Recipient,
    RecipientDirectory,
    Rule,
    default_policy,
    first_attempt_at,
    match,
    plan_from_json,
    plan_json,
    rules_from_data,
    select,
)
from core.settings import AlertsSettings
from detectors.findings import Finding, FindingKind, Severity
from devices.access import signed_with_sql
from devices.protocol import Command

__all__ = [
    "AckResult",
    "AlertChange",
    "AlertFilter",
    "AlertNotFound",
    "AlertScope",
    "AlertService",
    "ChannelOpener",
    "Digest",
    "DigestItem",
    "PostgresDirectory",
    "Step",
    "render_digest",
]

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

#: Recipients that get no reminders and no acknowledge link (systems, not people).
_SYSTEMS = frozenset({RecipientKind.DISPATCH120, RecipientKind.HOSPITAL})
_CLOSED = (AlertState.RESOLVED, AlertState.CANCELLED, AlertState.FALSE_ALARM)


class AlertNotFound(AlertError):
    """No alert with that id."""


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class AckResult:
    """The answer to an acknowledge link."""

    outcome: ack.AckOutcome
    alert: Alert | None = None
    already_by: str | None = None
    """Someone else had acknowledged the alert already (the link still counts as used)."""
    receipt: bool = False
    """The link was a receipt (the hospital's): noted on the timeline, the alert unchanged."""


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


# --------------------------------------------------------------------------- the service
class AlertService:
    """Raises, moves and escalates alerts; writes the outbox the delivery worker drains.

    Args:
        settings: The ``alerts`` section of the settings.
        directory: Where recipients come from (the registry).
        policy: The routing policy (default: alerts/routing.yaml or ``settings.routing_file``).
        commands: Sends "help is coming" to the device on acknowledge (None: no command).
    """

    def __init__(
        self,
        settings: AlertsSettings,
        directory: RecipientDirectory,
        *,
        policy: Policy | None = None,
        commands: AlertCommandSender | None = None,
        claim_120_s: float | None = None,
    ) -> None:
        from alerts.routing import load_policy  # noqa: PLC0415 - only when no policy is given

        self.settings = settings
        self.directory = directory
        self.policy = policy or (
            load_policy(settings.routing_file) if settings.routing_file else default_policy()
        )
        self.commands = commands
        self.claim_120_s = claim_120_s
        """With a value, a new alert's 120 deliveries are written leased to the caller for so
        many seconds (:meth:`raise_finding` returns their ids): the ingester sends the first
        push itself, without waiting for the delivery worker."""

    # -- Escalator protocol ----------------------------------------------------------
    @property
    def escalation_scale(self) -> float:
        return self.settings.escalation_scale

    @property
    def fall_grace_s(self) -> float:
        return self.settings.fall_grace_s

    # -- findings --------------------------------------------------------------------
    def raise_findings(
        self,
        conn: Conn,
        findings: Iterable[Finding | AlertInput],
        now: datetime,
    ) -> list[AlertChange | None]:
        """Each finding in a transaction of its own: one that fails is logged and left for the
        sweep (None in its place); the others are raised all the same."""
        out: list[AlertChange | None] = []
        for f in findings:
            try:
                out.append(self.raise_finding(conn, f, now))
            except Exception:
                if conn.broken or conn.closed:
                    raise  # the rest would fail the same way; the sweep takes them up
                fid = f.finding_id if isinstance(f, AlertInput) else None
                log.exception(
                    "finding %s (%s) raised no alert; the sweep retries it", fid, f.kind.value
                )
                out.append(None)
        return out

    def raise_stored(
        self, conn: Conn, finding_ids: Sequence[int], now: datetime
    ) -> list[AlertChange | None]:
        """Raise stored findings that have no alert yet (the sweep after a crash); each once."""
        rows = conn.execute(
            """SELECT id, kind, severity, ts, device_id, resident_id, evidence FROM findings
                WHERE id = ANY(%s) AND alerted_at IS NULL ORDER BY id""",
            (list(finding_ids),),
        ).fetchall()
        inputs = [
            AlertInput(int(r[0]), FindingKind(r[1]), parse_severity(r[2]), int(r[3].timestamp() * 1000),
                       r[4], str(r[5]) if r[5] is not None else None, dict(r[6]))
            for r in rows
        ]  # fmt: skip
        return self.raise_findings(conn, inputs, now)

    def raise_finding(
        self,
        conn: Conn,
        finding: Finding | AlertInput,
        now: datetime,
        *,
        finding_id: int | None = None,
    ) -> AlertChange:
        """Open, update, cancel or digest, per :func:`decide`; one transaction.

        A stored finding (with its id) is acted on once: the transaction marks it alerted, and
        one already marked changes nothing (:attr:`Step.IGNORE`, no alert).
        """
        f = finding if isinstance(finding, AlertInput) else AlertInput.of(finding, finding_id)
        kind = FINDING_ALERT_KIND.get(f.kind)
        resident = uuid.UUID(f.resident_id) if f.resident_id else None
        with conn.transaction():
            if f.finding_id is not None and not self._claim_finding(conn, f.finding_id, now):
                return AlertChange(Step.IGNORE, None)
            if kind is None:
                self._digest(conn, f, resident)
                return AlertChange(Step.DIGEST, None)
            subject = str(resident) if resident is not None else f.device_id
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"alert:{subject}:{kind.value}",),
            )
            row = conn.execute(
                f"""SELECT {ALERT_COLUMNS} FROM alerts
                     WHERE coalesce(resident_id::text, device_id) = %s AND kind = %s
                       AND state IN {LIVE_STATES_SQL}
                     FOR UPDATE""",
                (subject, kind.value),
            ).fetchone()
            live = alert_from_row(row) if row is not None else None
            severity = f.severity
            if kind is AlertKind.FALL and f.kind is FindingKind.DEVICE_FALL:
                severity = max(severity, Severity.HIGH)
            overrides = self._overrides(conn, resident)
            rule = match(self.policy, kind, severity, overrides)
            step = decide(f.kind, rule, live.state if live else None)
            if step is Step.DIGEST:
                self._digest(conn, f, resident)
                return AlertChange(step, live)
            if step is Step.IGNORE:
                return AlertChange(step, live)
            if step is Step.NOTE and live is not None:
                self._event(
                    conn, live.id, now, str(f.actor), event="note",
                    channel="device", note=f"{f.kind.value} after the alert opened; left {live.state.value}",
                )  # fmt: skip
                return AlertChange(step, live)
            if step is Step.CANCEL and live is not None:
                alert = self._move(
                    conn, live, AlertState.CANCELLED, f.actor, now, channel="device",
                    note=f.outcome_note,
                )  # fmt: skip
                return AlertChange(step, alert)
            if step in (Step.CREATE_PENDING, Step.CREATE_OPEN):
                alert = self._insert(
                    conn, f, kind=kind, severity=severity, resident=resident, step=step, now=now,
                )  # fmt: skip
                self._event(
                    conn, alert.id, now, str(f.actor), from_state=None,
                    to_state=alert.state, channel="device", note=f"{f.kind.value} ({severity_name(severity)})",
                )  # fmt: skip
                if alert.state is AlertState.OPEN:
                    return self._open_routing(conn, alert, now, overrides=overrides, step=step)
                if kind is AlertKind.FALL:
                    self._send(alert, are_you_ok(alert.id, int(now.timestamp() * 1000)))
                return AlertChange(step, alert)
            assert live is not None  # REPEAT / REPEAT_AND_OPEN  # noqa: S101 - decide() says so
            alert = self._repeat(conn, live, f, severity=severity, now=now)
            if step is Step.REPEAT_AND_OPEN:
                alert = self._move(
                    conn, alert, AlertState.OPEN, SYSTEM, now, channel="device", note=f"{f.kind.value}"
                )  # fmt: skip
                return self._open_routing(conn, alert, now, step=step)
            if alert.severity > live.severity and alert.state is AlertState.OPEN:
                self._event(
                    conn, alert.id, now, "system", event="severity",
                    note=f"severity {severity_name(live.severity)} -> {severity_name(alert.severity)}",
                )  # fmt: skip
                return self._open_routing(conn, alert, now, again=True, step=step)
            return AlertChange(step, alert)

    def _claim_finding(self, conn: Conn, finding_id: int, now: datetime) -> bool:
        """Mark a stored finding alerted; False when it was already (by a sweep, say)."""
        return (
            conn.execute(
                "UPDATE findings SET alerted_at = %s WHERE id = %s AND alerted_at IS NULL",
                (now, finding_id),
            ).rowcount
            == 1
        )

    def _overrides(self, conn: Conn, resident: uuid.UUID | None) -> tuple[Rule, ...]:
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

    def _digest(self, conn: Conn, f: AlertInput, resident: uuid.UUID | None) -> None:
        conn.execute(
            """INSERT INTO digest_items (resident_id, device_id, kind, severity, at, evidence, finding_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            (resident, f.device_id, f.kind.value, severity_name(f.severity), _dt(f.ts_ms),
             Jsonb(f.evidence), f.finding_id),
        )  # fmt: skip

    def _insert(
        self, conn: Conn, f: AlertInput, *, kind: AlertKind, severity: Severity,
        resident: uuid.UUID | None, step: Step, now: datetime,
    ) -> Alert:  # fmt: skip
        state = AlertState.PENDING if step is Step.CREATE_PENDING else AlertState.OPEN
        deadline = None
        if state is AlertState.PENDING:
            window_s = f.window_s if f.window_s is not None else self.settings.fall_cancel_window_s
            deadline = _dt(f.ts_ms) + timedelta(seconds=window_s)
        row = conn.execute(
            f"""INSERT INTO alerts (resident_id, device_id, kind, severity, state, first_at, last_at,
                                    evidence, finding_ids, cancel_deadline, created_at, updated_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                RETURNING {ALERT_COLUMNS}""",
            (resident, f.device_id, kind.value, severity_name(severity), state.value, _dt(f.ts_ms),
             _dt(f.ts_ms), Jsonb(f.evidence), [f.finding_id] if f.finding_id else [], deadline, now, now),
        ).fetchone()  # fmt: skip
        assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
        return alert_from_row(row)

    def _repeat(
        self,
        conn: Conn,
        live: Alert,
        f: AlertInput,
        *,
        severity: Severity,
        now: datetime,
    ) -> Alert:
        new_sev = max(live.severity, severity)
        row = conn.execute(
            f"""UPDATE alerts SET occurrences = occurrences + 1, last_at = greatest(last_at, %s),
                       evidence = %s, severity = %s, updated_at = %s,
                       finding_ids = CASE WHEN %s::bigint IS NULL THEN finding_ids
                                          ELSE array_append(finding_ids, %s::bigint) END
                 WHERE id = %s RETURNING {ALERT_COLUMNS}""",
            (_dt(f.ts_ms), Jsonb(f.evidence), severity_name(new_sev), now, f.finding_id, f.finding_id, live.id),
        ).fetchone()  # fmt: skip
        assert row is not None  # noqa: S101 - the row is locked
        return alert_from_row(row)

    # -- routing and deliveries ----------------------------------------------------------
    def _open_routing(
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
            overrides = self._overrides(conn, alert.resident_id)
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
        n = self._tell(
            conn, alert, rule, kinds=rule.tiers[0].recipients, tier=0, purpose=purpose, now=now,
            claimed=claimed,
        )  # fmt: skip
        return AlertChange(step, alert, n, tuple(claimed))

    def _system_recipients(self) -> list[Recipient]:
        out = [
            Recipient(
                RecipientKind.DISPATCH120, self.settings.dispatch120_url, "120", None,
                channel=DeliveryChannel.DISPATCH120,
            )
        ]  # fmt: skip
        if self.settings.operator_url:
            out.append(Recipient(RecipientKind.OPERATOR, setting_ref("operator_url"), "operator"))
        return out

    def _tell(
        self, conn: Conn, alert: Alert, rule: Rule, *, kinds: Sequence[RecipientKind], tier: int,
        purpose: str, now: datetime, seq: int = 0, claimed: list[int] | None = None,
    ) -> int:  # fmt: skip
        """Write one delivery per recipient of ``kinds`` (idempotent by key); note who was missing.

        With ``claimed`` and :attr:`claim_120_s`, a 120 delivery is written already leased to
        the caller (``sending``, one attempt) and its id appended: the caller pushes it right
        after the commit, and the worker takes it over if the lease runs out first.
        """
        pool = list(self._system_recipients())
        if alert.resident_id is not None:
            pool += self.directory.recipients(conn, alert.resident_id)
        chosen = select(pool, kinds)
        missing = [k.value for k in dict.fromkeys(kinds) if not any(r.kind is k for r in chosen)]
        if not chosen:
            chosen = select(pool, [RecipientKind.OPERATOR])
        if missing and purpose != "reminder":
            self._event(
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
            elif tier > 0 and r.kind not in _SYSTEMS:
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
        alert = self._move(
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
        self._open_routing(conn, alert, now)

    def escalate(self, conn: Conn, alert: Alert, step: EscalationStep, now: datetime) -> None:
        assert alert.plan is not None  # noqa: S101 - escalate_due checks
        rule = plan_from_json(alert.plan)
        tier = alert.tier
        for t in step.tiers:
            kinds = rule.tiers[t].recipients
            n = self._tell(conn, alert, rule, kinds=kinds, tier=t, purpose="tier", now=now)
            self._event(
                conn, alert.id, now, "system", event="escalation", channel="clock",
                note=f"tier {t}: {', '.join(k.value for k in kinds)} ({n} deliveries); "
                f"not acknowledged {_ago(alert.opened_at, now)} after opening",
            )  # fmt: skip
            tier = t
        reminders = alert.reminders
        if step.reminder:
            reminders += 1
            told = [
                k for t in range(tier + 1) for k in rule.tiers[t].recipients if k not in _SYSTEMS
            ]
            n = self._tell(
                conn, alert, rule, kinds=told, tier=tier, purpose="reminder", now=now, seq=reminders
            )
            self._event(
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

    # -- transitions -------------------------------------------------------------------------
    def transition(
        self, conn: Conn, alert_id: int, target: AlertState, actor: Actor, now: datetime,
        *, channel: str | None = None, note: str | None = None,
    ) -> Alert:  # fmt: skip
        """Move an alert (refused with :class:`lifecycle.TransitionRefused`); on acknowledge the
        device is told "help is coming" after the commit."""
        with conn.transaction():
            alert = self._locked(conn, alert_id)
            before = alert.state
            alert = self._move(conn, alert, target, actor, now, channel=channel, note=note)
            if before is AlertState.PENDING and target is AlertState.OPEN:
                alert = self._open_routing(conn, alert, now).alert or alert
        if target is AlertState.ACKNOWLEDGED:
            self._help_coming(alert, now)
        return alert

    def acknowledge(
        self, conn: Conn, alert_id: int, actor: Actor, now: datetime, *, channel: str = "api",
        note: str | None = None,
    ) -> Alert:  # fmt: skip
        return self.transition(
            conn, alert_id, AlertState.ACKNOWLEDGED, actor, now, channel=channel, note=note
        )

    def acknowledge_by_token(self, conn: Conn, token: str, now: datetime) -> AckResult:
        """Use an acknowledge link: single use, expiring; acknowledges the alert if still open."""
        with conn.transaction():
            use = ack.consume(conn, token, now)
            if use.outcome is not ack.AckOutcome.OK or use.alert_id is None:
                alert = self.get(conn, use.alert_id) if use.alert_id is not None else None
                return AckResult(use.outcome, alert)
            alert = self._locked(conn, use.alert_id)
            actor = Actor(ActorKind.CONTACT, use.recipient or "")
            if ack.is_receipt(use.recipient):  # the hospital: green channel ready, no ack
                self._event(conn, alert.id, now, str(actor), event="note", channel="link",
                            note="green channel ready")  # fmt: skip
                return AckResult(ack.AckOutcome.OK, alert, receipt=True)
            if not lifecycle.allowed(alert.kind, alert.state, AlertState.ACKNOWLEDGED, actor):
                self._event(conn, alert.id, now, str(actor), event="note", channel="link",
                            note=f"acknowledge link used while {alert.state.value}")  # fmt: skip
                return AckResult(
                    ack.AckOutcome.OK, alert, already_by=alert.acknowledged_by or alert.state.value
                )
            alert = self._move(conn, alert, AlertState.ACKNOWLEDGED, actor, now, channel="link")
        self._help_coming(alert, now)
        return AckResult(ack.AckOutcome.OK, alert)

    def note(
        self, conn: Conn, alert_id: int, actor: Actor, now: datetime, note: str, *, channel: str
    ) -> None:
        """A note on the alert's timeline that moves nothing ("can't come" from a link)."""
        self._event(conn, alert_id, now, str(actor), event="note", channel=channel, note=note)

    def _send(self, alert: Alert, command: Command) -> None:
        """Send a command to the alert's device; a failure is logged, never raised (the alert
        matters more than the message to the device)."""
        if self.commands is None or alert.device_id is None:
            return
        try:
            self.commands.send(alert.device_id, command)
        except Exception:
            log.warning(
                "%s for alert %s not sent to %s", command.kind.value, alert.id, alert.device_id,
                exc_info=True,
            )  # fmt: skip

    def _help_coming(self, alert: Alert, now: datetime) -> None:
        if self.commands is None or alert.device_id is None:
            return
        try:
            self.commands.send(alert.device_id, help_coming(alert.id, int(now.timestamp() * 1000)))
        except Exception:  # the acknowledgement stands even if the device cannot be told
            log.warning(
                "help_coming for alert %s not sent to %s", alert.id, alert.device_id, exc_info=True
            )

    def _locked(self, conn: Conn, alert_id: int) -> Alert:
        row = conn.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = %s FOR UPDATE", (alert_id,)
        ).fetchone()
        if row is None:
            raise AlertNotFound(f"Alert {alert_id} does not exist.")
        return alert_from_row(row)

    def _move(
        self, conn: Conn, alert: Alert, target: AlertState, actor: Actor, now: datetime,
        *, channel: str | None, note: str | None = None,
    ) -> Alert:  # fmt: skip
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
        if target in _CLOSED:
            sets += ["closed_at = %s", "next_escalation_at = NULL", "next_reminder_at = NULL"]
            args.append(now)
        row = conn.execute(
            f"UPDATE alerts SET {', '.join(sets)} WHERE id = %s RETURNING {ALERT_COLUMNS}",
            (*args, alert.id),
        ).fetchone()
        assert row is not None  # noqa: S101 - the row is locked
        self._event(conn, alert.id, now, str(actor), from_state=t.from_state, to_state=target,
                    channel=channel, note=note)  # fmt: skip
        if target is AlertState.ACKNOWLEDGED:
            # Reminders and escalations not sent yet are moot once someone is on it.
            conn.execute(
                """UPDATE deliveries SET status = 'cancelled', last_error = 'acknowledged'
                    WHERE alert_id = %s AND status = 'pending' AND template IN ('reminder', 'escalation')""",
                (alert.id,),
            )
        elif target in _CLOSED:
            # People not told yet need not be; the 120 centre is always told (dispatch120).
            close_outbox(conn, alert.id, target.value, now)
        return alert_from_row(row)

    def _event(
        self, conn: Conn, alert_id: int, at: datetime, actor: str, *, event: str = "transition",
        from_state: AlertState | None = None, to_state: AlertState | None = None,
        channel: str | None = None, note: str | None = None,
    ) -> None:  # fmt: skip
        conn.execute(
            """INSERT INTO alert_events (alert_id, at, event, from_state, to_state, actor, channel, note)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            (alert_id, at, event, from_state.value if from_state else None,
             to_state.value if to_state else None, actor[:200], channel, note[:1000] if note else None),
        )  # fmt: skip

    # -- reads ------------------------------------------------------------------------------
    def get(self, conn: Conn, alert_id: int) -> Alert:
        row = conn.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = %s", (alert_id,)
        ).fetchone()
        if row is None:
            raise AlertNotFound(f"Alert {alert_id} does not exist.")
        return alert_from_row(row)

    def timeline(self, conn: Conn, alert_id: int) -> list[AlertEvent]:
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

    def deliveries(self, conn: Conn, alert_id: int) -> list[Delivery]:
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

    def list(self, conn: Conn, filt: AlertFilter, scope: AlertScope) -> list[Alert]:
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

    # -- the doctor's daily digest ----------------------------------------------------------
    def digest(
        self, conn: Conn, team_id: uuid.UUID, day: date, tz: str = "Asia/Shanghai"
    ) -> Digest:
        """The digest items of one doctor team's signed residents for one local day."""
        return team_digest(conn, team_id, day, tz)


def _ago(opened: datetime | None, now: datetime) -> str:
    if opened is None:
        return "?"
    s = int((now - opened).total_seconds())
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"
