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

import dataclasses
import enum
import hashlib
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from alerts import ack, lifecycle
from alerts.commands import AlertCommandSender, help_coming
from alerts.escalation import EscalationReport, EscalationStep, escalate_due, first_schedule
from alerts.model import (
    ALERT_COLUMNS,
    FINDING_ALERT_KIND,
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
    QuietHours,
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
from detectors.findings import (
    DeviceEventEvidence,
    FallEvidence,
    FallOutcome,
    FallOutcomeEvidence,
    Finding,
    FindingKind,
    Severity,
)

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

#: Recipients that get no reminders and no acknowledge link (systems, not people).
_SYSTEMS = frozenset({RecipientKind.DISPATCH120, RecipientKind.HOSPITAL})
_CLOSED = (AlertState.RESOLVED, AlertState.CANCELLED, AlertState.FALSE_ALARM)


class AlertNotFound(AlertError):
    """No alert with that id."""


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, tuple | list):
        if value and all(
            isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value
        ):
            return {k: _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # a numpy scalar
        return _plain(value.item())
    return str(value)


def evidence_json(finding: Finding) -> dict[str, Any]:
    """The finding's evidence as JSON (never the raw signal window), with the finding kind."""
    ev = finding.evidence
    out = {
        f.name: _plain(getattr(ev, f.name)) for f in dataclasses.fields(ev) if f.name != "window"
    }
    out["finding"] = finding.kind.value
    return out


# --------------------------------------------------------------------------- pure decision
class Step(enum.StrEnum):
    """What one finding does to the live alert of its elder and kind."""

    CREATE_PENDING = "create_pending"
    CREATE_OPEN = "create_open"
    REPEAT = "repeat"
    REPEAT_AND_OPEN = "repeat_and_open"
    CANCEL = "cancel"
    NOTE = "note"
    DIGEST = "digest"
    IGNORE = "ignore"


_PENDING_KINDS = frozenset({FindingKind.FALL_SUSPECTED, FindingKind.DEVICE_FALL})


def decide(finding_kind: FindingKind, rule: Rule | None, live: AlertState | None) -> Step:
    """Pure: the step for a finding, given the matching rule and the live alert's state."""
    if finding_kind is FindingKind.VITAL_TREND:
        return Step.DIGEST
    if finding_kind is FindingKind.FALL_CANCELLED:
        if live is AlertState.PENDING:
            return Step.CANCEL
        return Step.NOTE if live is not None else Step.IGNORE
    if rule is None or rule.action == "ignore":
        return Step.IGNORE
    if rule.action == "digest":
        return Step.DIGEST
    if live is None:
        return Step.CREATE_PENDING if finding_kind in _PENDING_KINDS else Step.CREATE_OPEN
    if live is AlertState.PENDING and finding_kind not in _PENDING_KINDS:
        return Step.REPEAT_AND_OPEN
    return Step.REPEAT


@dataclass(frozen=True, slots=True)
class AlertChange:
    """What a finding did: the step and the alert (None for digest and ignore)."""

    step: Step
    alert: Alert | None
    deliveries: int = 0


@dataclass(frozen=True, slots=True)
class AckResult:
    """The answer to an acknowledge link."""

    outcome: ack.AckOutcome
    alert: Alert | None = None
    already_by: str | None = None
    """Someone else had acknowledged the alert already (the link still counts as used)."""


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


# --------------------------------------------------------------------------- recipients
ChannelOpener = Callable[[str, uuid.UUID, bytes], str | None]
"""(table, row id, channel_url_enc) -> the apprise URL; the registry's keyring decrypts it."""

_CONTACT_KIND = {
    "child": RecipientKind.CHILD,
    "spouse": RecipientKind.RELATIVE,
    "relative": RecipientKind.RELATIVE,
    "guardian": RecipientKind.RELATIVE,
    "other": RecipientKind.RELATIVE,
    "work_unit": RecipientKind.WORK_UNIT,
    "neighbour": RecipientKind.NEIGHBOUR,
    "volunteer": RecipientKind.NEIGHBOUR,
    "community_worker": RecipientKind.COMMUNITY_WORKER,
}


class PostgresDirectory:
    """:class:`alerts.routing.RecipientDirectory` over the registry tables of 0004_registry.

    A recipient's address is, in order: its apprise channel (``channel_kind = 'apprise'``, or an
    encrypted ``channel_url_enc`` opened by ``opener``, or a ``channel_address`` that is a URL),
    else the SMS gateway URL of the settings with its first phone number. Family doctors are the
    members (role doctor) of the teams of the resident's contracts in force; the hospital is the
    resident's partner hospital (green-channel phone); the community's phone stands in for a
    community worker when the care circle has none.
    """

    def __init__(self, sms_url: str | None = None, opener: ChannelOpener | None = None) -> None:
        self._sms = sms_url
        self._opener = opener

    def _address(
        self, table: str, row_id: uuid.UUID, *, kind: str | None, addr: str | None,
        enc: bytes | None, phones: Sequence[str],
    ) -> str | None:  # fmt: skip
        if kind == "apprise" and addr:
            return addr
        if enc is not None and self._opener is not None:
            url = self._opener(table, row_id, enc)
            if url:
                return url
        if addr and "://" in addr:
            return addr
        phone = next((p for p in phones if p), None)
        if phone and self._sms:
            return self._sms.replace("{phone}", phone)
        return None

    def recipients(self, conn: Any, resident_id: uuid.UUID) -> list[Recipient]:
        out: list[Recipient] = []
        for cid, name, role, phones, ckind, caddr, cenc, qs, qe, qtz in conn.execute(
            """SELECT id, name, role, phones, channel_kind, channel_address, channel_url_enc,
                      quiet_start, quiet_end, quiet_tz
                 FROM contacts WHERE resident_id = %s AND status = 'active'
                ORDER BY priority, name""",
            (resident_id,),
        ).fetchall():
            address = self._address(
                "contacts", cid, kind=ckind, addr=caddr, enc=cenc, phones=phones or []
            )
            if address is None:
                continue
            quiet = QuietHours(qs, qe, qtz) if qs is not None and qe is not None and qtz else None
            out.append(
                Recipient(
                    _CONTACT_KIND.get(role, RecipientKind.RELATIVE),
                    address,
                    name,
                    str(cid),
                    quiet=quiet,
                )
            )
        for mid, name, phone, ckind, caddr, cenc in conn.execute(
            """SELECT m.id, m.name, m.phone, m.channel_kind, m.channel_address, m.channel_url_enc
                 FROM doctor_contracts c JOIN doctor_team_members m ON m.team_id = c.team_id
                WHERE c.resident_id = %s AND c.status = 'active' AND m.status = 'active'
                  AND current_date BETWEEN c.starts_on AND c.ends_on AND m.role = 'doctor'
                ORDER BY m.name""",
            (resident_id,),
        ).fetchall():
            address = self._address(
                "doctor_team_members", mid, kind=ckind, addr=caddr, enc=cenc, phones=[phone or ""]
            )
            if address is not None:
                out.append(Recipient(RecipientKind.DOCTOR, address, name, str(mid)))
        row = conn.execute(
            """SELECT h.id, h.name, h.green_channel_phone, c.id, c.name, c.phone
                 FROM residents r LEFT JOIN hospitals h ON h.id = r.hospital_id AND h.status = 'active'
                 LEFT JOIN communities c ON c.id = r.community_id AND c.status = 'active'
                WHERE r.id = %s""",
            (resident_id,),
        ).fetchone()
        if row is not None:
            hid, hname, hphone, comm_id, comm_name, comm_phone = row
            if hid is not None and hphone and self._sms:
                out.append(
                    Recipient(
                        RecipientKind.HOSPITAL,
                        self._sms.replace("{phone}", hphone),
                        hname,
                        str(hid),
                    )
                )
            has_worker = any(r.kind is RecipientKind.COMMUNITY_WORKER for r in out)
            if comm_id is not None and comm_phone and self._sms and not has_worker:
                out.append(
                    Recipient(
                        RecipientKind.COMMUNITY_WORKER,
                        self._sms.replace("{phone}", comm_phone),
                        comm_name,
                        str(comm_id),
                    )
                )
        return out


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
    ) -> None:
        from alerts.routing import load_policy  # noqa: PLC0415 - only when no policy is given

        self.settings = settings
        self.directory = directory
        self.policy = policy or (
            load_policy(settings.routing_file) if settings.routing_file else default_policy()
        )
        self.commands = commands

    # -- Escalator protocol ----------------------------------------------------------
    @property
    def escalation_scale(self) -> float:
        return self.settings.escalation_scale

    @property
    def fall_grace_s(self) -> float:
        return self.settings.fall_grace_s

    # -- findings --------------------------------------------------------------------
    def raise_findings(
        self, conn: Conn, findings: Iterable[Finding], now: datetime, *, find_ids: bool = False
    ) -> list[AlertChange]:
        """Each finding in a transaction of its own (one bad finding cannot drop the others)."""
        out: list[AlertChange] = []
        for f in findings:
            fid = self._finding_id(conn, f) if find_ids else None
            out.append(self.raise_finding(conn, f, now, finding_id=fid))
        return out

    def raise_finding(
        self, conn: Conn, finding: Finding, now: datetime, *, finding_id: int | None = None
    ) -> AlertChange:
        """Open, update, cancel or digest, per :func:`decide`; one transaction."""
        kind = FINDING_ALERT_KIND.get(finding.kind)
        resident = uuid.UUID(finding.resident_id) if finding.resident_id else None
        with conn.transaction():
            if kind is None:
                self._digest(conn, finding, resident, finding_id)
                return AlertChange(Step.DIGEST, None)
            subject = str(resident) if resident is not None else finding.device_id
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"alert:{subject}:{kind.value}",),
            )
            row = conn.execute(
                f"""SELECT {ALERT_COLUMNS} FROM alerts
                     WHERE coalesce(resident_id::text, device_id) = %s AND kind = %s
                       AND state IN ('pending', 'open', 'acknowledged', 'dispatched')
                     FOR UPDATE""",
                (subject, kind.value),
            ).fetchone()
            live = alert_from_row(row) if row is not None else None
            severity = finding.severity
            if kind is AlertKind.FALL and finding.kind is FindingKind.DEVICE_FALL:
                severity = max(severity, Severity.HIGH)
            overrides = self._overrides(conn, resident)
            rule = match(self.policy, kind, severity, overrides)
            step = decide(finding.kind, rule, live.state if live else None)
            if step is Step.DIGEST:
                self._digest(conn, finding, resident, finding_id)
                return AlertChange(step, live)
            if step is Step.IGNORE:
                return AlertChange(step, live)
            if step is Step.NOTE and live is not None:
                self._event(
                    conn, live.id, now, str(_finding_actor(finding)), event="note",
                    channel="device", note=f"{finding.kind.value} after the alert opened; left {live.state.value}",
                )  # fmt: skip
                return AlertChange(step, live)
            if step is Step.CANCEL and live is not None:
                actor = _finding_actor(finding)
                alert = self._move(
                    conn, live, AlertState.CANCELLED, actor, now, channel="device",
                    note=_outcome_note(finding),
                )  # fmt: skip
                return AlertChange(step, alert)
            if step in (Step.CREATE_PENDING, Step.CREATE_OPEN):
                alert = self._insert(
                    conn, finding, kind=kind, severity=severity, resident=resident,
                    finding_id=finding_id, step=step, now=now,
                )  # fmt: skip
                self._event(
                    conn, alert.id, now, str(_finding_actor(finding)), from_state=None,
                    to_state=alert.state, channel="device", note=f"{finding.kind.value} ({severity_name(severity)})",
                )  # fmt: skip
                n = 0
                if alert.state is AlertState.OPEN:
                    alert, n = self._open_routing(conn, alert, now, overrides=overrides)
                return AlertChange(step, alert, n)
            assert live is not None  # REPEAT / REPEAT_AND_OPEN  # noqa: S101 - decide() says so
            alert = self._repeat(
                conn, live, finding, severity=severity, finding_id=finding_id, now=now
            )
            n = 0
            if step is Step.REPEAT_AND_OPEN:
                alert = self._move(
                    conn,
                    alert,
                    AlertState.OPEN,
                    SYSTEM,
                    now,
                    channel="device",
                    note=f"{finding.kind.value}",
                )
                alert, n = self._open_routing(conn, alert, now)
            elif alert.severity > live.severity and alert.state is AlertState.OPEN:
                self._event(
                    conn, alert.id, now, "system", event="severity",
                    note=f"severity {severity_name(live.severity)} -> {severity_name(alert.severity)}",
                )  # fmt: skip
                alert, n = self._open_routing(conn, alert, now, again=True)
            return AlertChange(step, alert, n)

    def _finding_id(self, conn: Conn, f: Finding) -> int | None:
        row = conn.execute(
            """SELECT id FROM findings WHERE device_id = %s AND ts = %s AND kind = %s
                ORDER BY id DESC LIMIT 1""",
            (f.device_id, _dt(f.ts_ms), f.kind.value),
        ).fetchone()
        return None if row is None else int(row[0])

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

    def _digest(
        self, conn: Conn, f: Finding, resident: uuid.UUID | None, finding_id: int | None
    ) -> None:
        conn.execute(
            """INSERT INTO digest_items (resident_id, device_id, kind, severity, at, evidence, finding_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            (resident, f.device_id, f.kind.value, severity_name(f.severity), _dt(f.ts_ms),
             Jsonb(evidence_json(f)), finding_id),
        )  # fmt: skip

    def _insert(
        self, conn: Conn, f: Finding, *, kind: AlertKind, severity: Severity,
        resident: uuid.UUID | None, finding_id: int | None, step: Step, now: datetime,
    ) -> Alert:  # fmt: skip
        state = AlertState.PENDING if step is Step.CREATE_PENDING else AlertState.OPEN
        deadline = None
        if state is AlertState.PENDING:
            deadline = _dt(f.ts_ms) + timedelta(seconds=self._window_s(f))
        row = conn.execute(
            f"""INSERT INTO alerts (resident_id, device_id, kind, severity, state, first_at, last_at,
                                    evidence, finding_ids, cancel_deadline, created_at, updated_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                RETURNING {ALERT_COLUMNS}""",
            (resident, f.device_id, kind.value, severity_name(severity), state.value, _dt(f.ts_ms),
             _dt(f.ts_ms), Jsonb(evidence_json(f)), [finding_id] if finding_id else [], deadline, now, now),
        ).fetchone()  # fmt: skip
        assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
        return alert_from_row(row)

    def _window_s(self, f: Finding) -> float:
        if isinstance(f.evidence, FallOutcomeEvidence):
            return f.evidence.window_s
        return self.settings.fall_cancel_window_s

    def _repeat(
        self,
        conn: Conn,
        live: Alert,
        f: Finding,
        *,
        severity: Severity,
        finding_id: int | None,
        now: datetime,
    ) -> Alert:
        new_sev = max(live.severity, severity)
        row = conn.execute(
            f"""UPDATE alerts SET occurrences = occurrences + 1, last_at = greatest(last_at, %s),
                       evidence = %s, severity = %s, updated_at = %s,
                       finding_ids = CASE WHEN %s::bigint IS NULL THEN finding_ids
                                          ELSE array_append(finding_ids, %s::bigint) END
                 WHERE id = %s RETURNING {ALERT_COLUMNS}""",
            (_dt(f.ts_ms), Jsonb(evidence_json(f)), severity_name(new_sev), now, finding_id, finding_id, live.id),
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
    ) -> tuple[Alert, int]:
        """Choose the plan, tell tier 0, schedule escalation and reminders.

        ``overrides``: the resident's routing overrides when the caller has just read them in
        this transaction (one round trip fewer on the way of an SOS).
        """
        if overrides is None:
            overrides = self._overrides(conn, alert.resident_id)
        rule = match(self.policy, alert.kind, alert.severity, overrides)
        if rule is None or rule.action != "alert":
            return alert, 0
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
        n = self._tell(
            conn, alert, rule, kinds=rule.tiers[0].recipients, tier=0, purpose=purpose, now=now
        )
        return alert, n

    def _system_recipients(self) -> list[Recipient]:
        out = [
            Recipient(
                RecipientKind.DISPATCH120, self.settings.dispatch120_url, "120", None,
                channel=DeliveryChannel.DISPATCH120,
            )
        ]  # fmt: skip
        if self.settings.operator_url:
            out.append(Recipient(RecipientKind.OPERATOR, self.settings.operator_url, "operator"))
        return out

    def _tell(
        self, conn: Conn, alert: Alert, rule: Rule, *, kinds: Sequence[RecipientKind], tier: int,
        purpose: str, now: datetime, seq: int = 0,
    ) -> int:  # fmt: skip
        """Write one delivery per recipient of ``kinds`` (idempotent by key); note who was missing."""
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
            row = conn.execute(
                """INSERT INTO deliveries (alert_id, tier, recipient_kind, recipient_ref, recipient_name,
                                          channel, address, language, template, idempotency_key,
                                          next_attempt_at, created_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (idempotency_key) DO NOTHING RETURNING id""",
                (alert.id, tier, r.kind.value, r.ref, r.name, r.channel.value, r.address, r.language,
                 template, key, first_attempt_at(r, alert.severity, now), now),
            ).fetchone()  # fmt: skip
            if row is None:
                continue
            n += 1
            if r.kind not in _SYSTEMS:
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
                alert, _ = self._open_routing(conn, alert, now)
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
            if not lifecycle.allowed(alert.kind, alert.state, AlertState.ACKNOWLEDGED, actor):
                self._event(conn, alert.id, now, str(actor), event="note", channel="link",
                            note=f"acknowledge link used while {alert.state.value}")  # fmt: skip
                return AckResult(
                    ack.AckOutcome.OK, alert, already_by=alert.acknowledged_by or alert.state.value
                )
            alert = self._move(conn, alert, AlertState.ACKNOWLEDGED, actor, now, channel="link")
        self._help_coming(alert, now)
        return AckResult(ack.AckOutcome.OK, alert)

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
            alert.id, alert.kind, alert.state, target, actor, now, channel=channel, note=note
        )
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
            conn.execute(
                """UPDATE deliveries SET status = 'cancelled', last_error = %s
                    WHERE alert_id = %s AND status = 'pending'""",
                (target.value, alert.id),
            )
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
            where.append(
                """(a.resident_id = ANY(%s) OR EXISTS (
                       SELECT 1 FROM doctor_contracts c WHERE c.resident_id = a.resident_id
                          AND c.status = 'active' AND c.team_id = ANY(%s)))"""
            )
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
        zone = ZoneInfo(tz)
        start = datetime.combine(day, time(0), zone)
        end = start + timedelta(days=1)
        rows = conn.execute(
            """SELECT d.resident_id, r.name, d.kind, d.severity, d.at, d.evidence
                 FROM digest_items d
                 JOIN doctor_contracts c ON c.resident_id = d.resident_id AND c.status = 'active'
                 LEFT JOIN residents r ON r.id = d.resident_id
                WHERE c.team_id = %s AND d.at >= %s AND d.at < %s
                ORDER BY r.name, d.at""",
            (team_id, start, end),
        ).fetchall()
        items = tuple(
            DigestItem(r[0], r[1] or str(r[0]), r[2], parse_severity(r[3]), r[4], r[5])
            for r in rows
        )
        return Digest(team_id, day, items)


@dataclass(frozen=True, slots=True)
class DigestItem:
    resident_id: uuid.UUID
    resident_name: str
    kind: str
    severity: Severity
    at: datetime
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Digest:
    team_id: uuid.UUID
    day: date
    items: tuple[DigestItem, ...]


def render_digest(digest: Digest) -> str:
    """Pure: the digest as plain text, one block per resident."""
    lines = [f"Anxin daily digest {digest.day.isoformat()}: {len(digest.items)} item(s)"]
    current = None
    for it in digest.items:
        if it.resident_id != current:
            current = it.resident_id
            lines.append(f"\n{it.resident_name}")
        ev = it.evidence
        if it.kind == FindingKind.VITAL_TREND.value:
            what = (
                f"{ev.get('parameter')}: {ev.get('baseline')} -> {ev.get('recent')} "
                f"({ev.get('slope_per_day')}/day over {ev.get('days')} days)"
            )
        elif it.kind == FindingKind.NEWS2.value:
            what = f"NEWS2 {ev.get('score')} (coverage {ev.get('coverage')})"
        else:
            what = it.kind
        lines.append(f"  {it.at.astimezone(UTC):%H:%M} UTC  {severity_name(it.severity):9} {what}")
    if not digest.items:
        lines.append("Nothing to report.")
    return "\n".join(lines)


def _finding_actor(f: Finding) -> Actor:
    if isinstance(f.evidence, FallOutcomeEvidence) and f.evidence.outcome is FallOutcome.RECOVERED:
        return Actor(ActorKind.SYSTEM, "fall detector")
    if isinstance(f.evidence, FallOutcomeEvidence | DeviceEventEvidence):
        return Actor(ActorKind.DEVICE, f.device_id)
    if isinstance(f.evidence, FallEvidence):
        return Actor(ActorKind.SYSTEM, "fall detector")
    return Actor(ActorKind.SYSTEM, "detector")


def _outcome_note(f: Finding) -> str:
    if isinstance(f.evidence, FallOutcomeEvidence):
        return f"fall {f.evidence.outcome.value}"
    return f.kind.value


def _ago(opened: datetime | None, now: datetime) -> str:
    if opened is None:
        return "?"
    s = int((now - opened).total_seconds())
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


# --------------------------------------------------------------------------- the listener
class AlertListener:
    """The :data:`ingest.detection.FindingListener` that raises alerts from DetectionSink findings.

    The ingester calls it from two threads (telemetry, and the urgent lane of events and
    statuses); each thread gets a connection of its own (opened on first use, reopened when
    broken), so an SOS is raised while a telemetry batch's findings are. A failure raises, so
    the sink counts and logs it.
    """

    def __init__(
        self,
        connect: Callable[[], Conn],
        service: AlertService,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._connect = connect
        self._service = service
        self._now = now or (lambda: datetime.now(UTC))
        self._local = threading.local()
        self._conns: list[Conn] = []
        self._conns_lock = threading.Lock()

    def __call__(self, findings: list[Finding]) -> None:
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._connect()
            # The service opens its own transactions; on a connection outside autocommit they
            # would be savepoints of a transaction nobody commits.
            conn.autocommit = True
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        try:
            self._service.raise_findings(conn, findings, self._now(), find_ids=True)
        except BaseException:
            if conn.broken or conn.closed:
                conn.close()
                self._local.conn = None
                with self._conns_lock:
                    if conn in self._conns:
                        self._conns.remove(conn)
            raise

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
