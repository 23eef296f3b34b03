"""Typed values of the alert core: states, kinds, actors, alerts, timeline events, deliveries.

Columns of core/migrations/0006_alerts.sql map onto these one to one; the pure modules
(:mod:`alerts.lifecycle`, :mod:`alerts.routing`, :mod:`alerts.escalation`) take and return them.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.errors import AnxinError
from detectors.findings import FindingKind, Severity


class AlertError(AnxinError):
    """Base exception of the ``alerts`` package."""


class AlertState(enum.StrEnum):
    PENDING = "pending"
    """A fall's cancel window: nobody is told yet; the wearer may still cancel."""
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    """The 120 dispatch centre says an ambulance has left."""
    RESOLVED = "resolved"
    CANCELLED = "cancelled"
    FALSE_ALARM = "false_alarm"

    @property
    def live(self) -> bool:
        """Counts as the one live alert of its elder and kind (the partial unique index)."""
        return self in LIVE_STATES


_LIVE = (AlertState.PENDING, AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.DISPATCHED)
LIVE_STATES = frozenset(_LIVE)
#: The same as an SQL list for ``state IN ...``, in the order of the partial unique index
#: alerts_one_live (0006_alerts.sql), whose predicate it matches.
LIVE_STATES_SQL = "(" + ", ".join(f"'{s.value}'" for s in _LIVE) + ")"


class AlertKind(enum.StrEnum):
    """What an alert is about; several finding kinds feed one alert kind (all falls: ``fall``)."""

    SOS = "sos"
    FALL = "fall"
    NEWS2 = "news2"
    VITAL_SINGLE = "vital_single"
    INACTIVITY = "inactivity"
    OUT_OF_BED = "out_of_bed"
    BED_EMPTY = "bed_empty"
    DEVICE_OFFLINE = "device_offline"
    BATTERY_LOW = "battery_low"
    DELIVERY_FAILED = "delivery_failed"
    """Raised by the delivery worker when a delivery gives up (to the operator)."""


#: Finding kind -> alert kind. VITAL_TREND has none: trends go to the doctor's digest.
FINDING_ALERT_KIND: dict[FindingKind, AlertKind] = {
    FindingKind.SOS: AlertKind.SOS,
    FindingKind.FALL_SUSPECTED: AlertKind.FALL,
    FindingKind.FALL_CONFIRMED: AlertKind.FALL,
    FindingKind.FALL_CANCELLED: AlertKind.FALL,
    FindingKind.DEVICE_FALL: AlertKind.FALL,
    FindingKind.NEWS2: AlertKind.NEWS2,
    FindingKind.VITAL_SINGLE: AlertKind.VITAL_SINGLE,
    FindingKind.INACTIVITY: AlertKind.INACTIVITY,
    FindingKind.OUT_OF_BED: AlertKind.OUT_OF_BED,
    FindingKind.BED_EMPTY: AlertKind.BED_EMPTY,
    FindingKind.DEVICE_OFFLINE: AlertKind.DEVICE_OFFLINE,
    FindingKind.BATTERY_LOW: AlertKind.BATTERY_LOW,
}


def severity_name(severity: Severity) -> str:
    """The stored form of a severity: ``"emergency"``, ``"high"``, ..."""
    return severity.name.lower()


def parse_severity(name: str) -> Severity:
    try:
        return Severity[name.upper()]
    except KeyError:
        raise AlertError(
            f"Severity {name!r} is not one of {[s.name.lower() for s in Severity]}."
        ) from None


class RecipientKind(enum.StrEnum):
    DISPATCH120 = "dispatch120"
    CHILD = "child"
    RELATIVE = "relative"
    WORK_UNIT = "work_unit"
    NEIGHBOUR = "neighbour"
    COMMUNITY_WORKER = "community_worker"
    DOCTOR = "doctor"
    HOSPITAL = "hospital"
    OPERATOR = "operator"


class DeliveryChannel(enum.StrEnum):
    APPRISE = "apprise"
    DISPATCH120 = "dispatch120"


class ActorKind(enum.StrEnum):
    """Who moves an alert; :mod:`alerts.lifecycle` says which kind may do what."""

    DEVICE = "device"
    """The wearer, through the device (cancel button) or the device's own detection."""
    SYSTEM = "system"
    """Detectors and the clock (cancel window over, escalation)."""
    CONTACT = "contact"
    """A recipient through an acknowledge link, without logging in."""
    DISPATCH120 = "dispatch120"
    """The 120 dispatch centre calling back (received, ambulance dispatched)."""
    ADMIN = "admin"
    OPERATOR = "operator"
    DISPATCHER = "dispatcher"
    DOCTOR = "doctor"
    FAMILY = "family"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something: a kind and a name for the timeline (``"operator:desk 2"``)."""

    kind: ActorKind
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}" if self.name else self.kind.value


SYSTEM = Actor(ActorKind.SYSTEM)


@dataclass(frozen=True, slots=True)
class Alert:
    """One row of ``alerts``."""

    id: int
    resident_id: uuid.UUID | None
    device_id: str | None
    kind: AlertKind
    severity: Severity
    state: AlertState
    occurrences: int
    first_at: datetime
    last_at: datetime
    evidence: dict[str, Any] | None
    finding_ids: tuple[int, ...]
    cancel_deadline: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    created_at: datetime
    updated_at: datetime
    rule: str | None = None
    opened_at: datetime | None = None
    tier: int = 0
    next_escalation_at: datetime | None = None
    reminders: int = 0
    next_reminder_at: datetime | None = None
    closed_at: datetime | None = None
    plan: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def subject(self) -> str:
        """The dedup key: the elder, or the device when no elder is assigned."""
        return str(self.resident_id) if self.resident_id is not None else str(self.device_id)


ALERT_COLUMNS = (
    "id, resident_id, device_id, kind, severity, state, occurrences, first_at, last_at, "
    "evidence, finding_ids, cancel_deadline, acknowledged_at, acknowledged_by, created_at, "
    "updated_at, rule, opened_at, tier, next_escalation_at, reminders, next_reminder_at, "
    "closed_at, plan"
)


def alert_from_row(row: tuple[Any, ...]) -> Alert:
    """An :class:`Alert` from a row selected with :data:`ALERT_COLUMNS`."""
    (
        aid, resident, device, kind, severity, state, occ, first, last, evidence, fids,
        deadline, ack_at, ack_by, created, updated, rule, opened, tier, next_esc, reminders,
        next_rem, closed, plan,
    ) = row  # fmt: skip
    return Alert(
        id=int(aid),
        resident_id=resident,
        device_id=device,
        kind=AlertKind(kind),
        severity=parse_severity(severity),
        state=AlertState(state),
        occurrences=int(occ),
        first_at=first,
        last_at=last,
        evidence=evidence,
        finding_ids=tuple(int(f) for f in fids or ()),
        cancel_deadline=deadline,
        acknowledged_at=ack_at,
        acknowledged_by=ack_by,
        created_at=created,
        updated_at=updated,
        rule=rule,
        opened_at=opened,
        tier=int(tier),
        next_escalation_at=next_esc,
        reminders=int(reminders),
        next_reminder_at=next_rem,
        closed_at=closed,
        plan=plan,
    )


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One row of ``alert_events`` (the timeline)."""

    id: int
    alert_id: int
    at: datetime
    event: str
    from_state: AlertState | None
    to_state: AlertState | None
    actor: str
    channel: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row of ``deliveries`` (the outbox), as the alert side sees it."""

    id: int
    alert_id: int
    tier: int
    recipient_kind: RecipientKind
    recipient_ref: str | None
    recipient_name: str | None
    channel: DeliveryChannel
    address: str
    language: str
    template: str
    idempotency_key: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
