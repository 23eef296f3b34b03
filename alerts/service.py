"""From findings to alerts and outbox rows, in one transaction; the transitions people make.

:class:`AlertService` is the thin shell around the pure cores (:mod:`alerts.decision`,
:mod:`alerts.lifecycle`, :mod:`alerts.routing`, :mod:`alerts.escalation`). Who is told and how
an alert escalates is :mod:`alerts.outreach`; a state change and its timeline entry in SQL,
:mod:`alerts.transitions`; the reads, :mod:`alerts.queries`. Every method takes the psycopg connection
to work on and ``now``; each write runs in ``conn.transaction()`` (a savepoint inside a
caller's transaction). An alert, its timeline rows, its deliveries and their acknowledge
tokens are written together or not at all.

One live alert per elder and kind: each finding takes a transaction-scoped advisory lock on
(elder or device, kind) before it looks for the live alert, and the partial unique index
``alerts_one_live`` backs that up, so two findings in the same millisecond from two workers
make one alert with two occurrences.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from alerts import ack, lifecycle
from alerts.commands import AlertCommandSender, are_you_ok, help_coming
from alerts.decision import AlertChange, AlertInput, Step, decide
from alerts.digest import Digest, DigestItem, render_digest, team_digest
from alerts.directory import ChannelOpener, PostgresDirectory
from alerts.escalation import EscalationReport, EscalationStep
from alerts.model import (
    ALERT_COLUMNS,
    FINDING_ALERT_KIND,
    LIVE_STATES_SQL,
    SYSTEM,
    Actor,
    ActorKind,
    Alert,
    AlertEvent,
    AlertKind,
    AlertState,
    Delivery,
    alert_from_row,
    parse_severity,
    severity_name,
)
from alerts.outreach import Outreach
from alerts.queries import (
    AlertFilter,
    AlertNotFound,
    AlertScope,
    alert_deliveries,
    alert_timeline,
    get_alert,
    list_alerts,
)
from alerts.routing import (
    Policy,
    RecipientDirectory,
    default_policy,
    match,
)
from alerts.transitions import add_event, move
from core.settings import AlertsSettings
from detectors.findings import Finding, FindingKind, Severity
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
        policy = policy or (
            load_policy(settings.routing_file) if settings.routing_file else default_policy()
        )
        self.outreach = Outreach(settings, directory, policy, claim_120_s=claim_120_s)
        """Routing, the outbox rows and escalation (``claim_120_s``: see :class:`Outreach`)."""
        self.commands = commands

    # -- Escalator protocol (alerts.escalation), by the outreach ---------------------
    @property
    def escalation_scale(self) -> float:
        return self.outreach.escalation_scale

    @property
    def fall_grace_s(self) -> float:
        return self.outreach.fall_grace_s

    def open_after_deadline(self, conn: Conn, alert: Alert, now: datetime) -> None:
        self.outreach.open_after_deadline(conn, alert, now)

    def escalate(self, conn: Conn, alert: Alert, step: EscalationStep, now: datetime) -> None:
        self.outreach.escalate(conn, alert, step, now)

    def escalate_due(self, conn: Conn, now: datetime) -> EscalationReport:
        """:func:`alerts.escalation.escalate_due` with this service."""
        return self.outreach.escalate_due(conn, now)

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
            overrides = self.outreach.overrides(conn, resident)
            rule = match(self.outreach.policy, kind, severity, overrides)
            step = decide(f.kind, rule, live.state if live else None)
            if step is Step.DIGEST:
                self._digest(conn, f, resident)
                return AlertChange(step, live)
            if step is Step.IGNORE:
                return AlertChange(step, live)
            if step is Step.NOTE and live is not None:
                add_event(
                    conn, live.id, now, str(f.actor), event="note",
                    channel="device", note=f"{f.kind.value} after the alert opened; left {live.state.value}",
                )  # fmt: skip
                return AlertChange(step, live)
            if step is Step.CANCEL and live is not None:
                alert = move(
                    conn, live, AlertState.CANCELLED, f.actor, now, channel="device",
                    note=f.outcome_note,
                )  # fmt: skip
                return AlertChange(step, alert)
            if step in (Step.CREATE_PENDING, Step.CREATE_OPEN):
                alert = self._insert(
                    conn, f, kind=kind, severity=severity, resident=resident, step=step, now=now,
                )  # fmt: skip
                add_event(
                    conn, alert.id, now, str(f.actor), from_state=None,
                    to_state=alert.state, channel="device", note=f"{f.kind.value} ({severity_name(severity)})",
                )  # fmt: skip
                if alert.state is AlertState.OPEN:
                    return self.outreach.open_routing(
                        conn, alert, now, overrides=overrides, step=step
                    )
                if kind is AlertKind.FALL:
                    self._send(alert, are_you_ok(alert.id, int(now.timestamp() * 1000)))
                return AlertChange(step, alert)
            assert live is not None  # REPEAT / REPEAT_AND_OPEN  # noqa: S101 - decide() says so
            alert = self._repeat(conn, live, f, severity=severity, now=now)
            if step is Step.REPEAT_AND_OPEN:
                alert = move(
                    conn, alert, AlertState.OPEN, SYSTEM, now, channel="device", note=f"{f.kind.value}"
                )  # fmt: skip
                return self.outreach.open_routing(conn, alert, now, step=step)
            if alert.severity > live.severity and alert.state is AlertState.OPEN:
                add_event(
                    conn, alert.id, now, "system", event="severity",
                    note=f"severity {severity_name(live.severity)} -> {severity_name(alert.severity)}",
                )  # fmt: skip
                return self.outreach.open_routing(conn, alert, now, again=True, step=step)
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

    # -- transitions -------------------------------------------------------------------------
    def transition(
        self, conn: Conn, alert_id: int, target: AlertState, actor: Actor, now: datetime,
        *, channel: str | None = None, note: str | None = None,
    ) -> Alert:  # fmt: skip
        """Move an alert (refused with :class:`lifecycle.TransitionRefused`); on acknowledge the
        device is told "help is coming" after the commit."""
        with conn.transaction():
            alert = get_alert(conn, alert_id, for_update=True)
            before = alert.state
            alert = move(conn, alert, target, actor, now, channel=channel, note=note)
            if before is AlertState.PENDING and target is AlertState.OPEN:
                alert = self.outreach.open_routing(conn, alert, now).alert or alert
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
            alert = get_alert(conn, use.alert_id, for_update=True)
            actor = Actor(ActorKind.CONTACT, use.recipient or "")
            if ack.is_receipt(use.recipient):  # the hospital: green channel ready, no ack
                add_event(conn, alert.id, now, str(actor), event="note", channel="link",
                            note="green channel ready")  # fmt: skip
                return AckResult(ack.AckOutcome.OK, alert, receipt=True)
            if not lifecycle.allowed(alert.kind, alert.state, AlertState.ACKNOWLEDGED, actor):
                add_event(conn, alert.id, now, str(actor), event="note", channel="link",
                            note=f"acknowledge link used while {alert.state.value}")  # fmt: skip
                return AckResult(
                    ack.AckOutcome.OK, alert, already_by=alert.acknowledged_by or alert.state.value
                )
            alert = move(conn, alert, AlertState.ACKNOWLEDGED, actor, now, channel="link")
        self._help_coming(alert, now)
        return AckResult(ack.AckOutcome.OK, alert)

    def note(
        self, conn: Conn, alert_id: int, actor: Actor, now: datetime, note: str, *, channel: str
    ) -> None:
        """A note on the alert's timeline that moves nothing ("can't come" from a link)."""
        add_event(conn, alert_id, now, str(actor), event="note", channel=channel, note=note)

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

    # -- reads (alerts.queries) ------------------------------------------------------------
    def get(self, conn: Conn, alert_id: int) -> Alert:
        return get_alert(conn, alert_id)

    def timeline(self, conn: Conn, alert_id: int) -> list[AlertEvent]:
        return alert_timeline(conn, alert_id)

    def deliveries(self, conn: Conn, alert_id: int) -> list[Delivery]:
        return alert_deliveries(conn, alert_id)

    def list(self, conn: Conn, filt: AlertFilter, scope: AlertScope) -> list[Alert]:
        return list_alerts(conn, filt, scope)

    # -- the doctor's daily digest ----------------------------------------------------------
    def digest(
        self, conn: Conn, team_id: uuid.UUID, day: date, tz: str = "Asia/Shanghai"
    ) -> Digest:
        """The digest items of one doctor team's signed residents for one local day."""
        return team_digest(conn, team_id, day, tz)
