"""Alerts: list and filter, detail with timeline and deliveries, acknowledge, dispatched,
resolve, false alarm (scoped by role). The acknowledge link is api/routes/ack.py.

Scope: admins and operators see every alert; dispatchers the emergency ones; doctors those of
the residents signed with their teams; family members those of their relatives. An alert out
of scope is 404, like one that does not exist. A transition the state machine refuses is 409.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from alerts.commands import AlertCommandSender, MqttCommandSender
from alerts.lifecycle import TransitionRefused
from alerts.model import Actor, ActorKind, Alert, AlertKind, AlertState, severity_name
from alerts.service import AlertFilter, AlertNotFound, AlertScope, AlertService, PostgresDirectory
from api.auth import CurrentPrincipal, DbConn
from core.settings import Settings
from detectors.findings import Severity
from devices import access
from devices.access import Principal, Role

router = APIRouter(prefix="/api/v1", tags=["alerts"])


def _commands(request: Request) -> AlertCommandSender:
    """The app's command sender; made on first use (the lifespan may set one instead)."""
    sender: AlertCommandSender | None = getattr(request.app.state, "alert_commands", None)
    if sender is None:
        settings: Settings = request.app.state.settings
        sender = MqttCommandSender(settings.mqtt, client_id=f"{settings.mqtt.client_id}-alerts")
        request.app.state.alert_commands = sender
    return sender


def alert_service(request: Request) -> AlertService:
    """The alert service of the app (``app.state.alert_service``, else one from the settings)."""
    svc: AlertService | None = getattr(request.app.state, "alert_service", None)
    if svc is None:
        settings: Settings = request.app.state.settings
        svc = AlertService(
            settings.alerts, PostgresDirectory(settings.alerts.sms_url), commands=_commands(request)
        )
        request.app.state.alert_service = svc
    return svc


Service = Annotated[AlertService, Depends(alert_service)]


def scope_of(principal: Principal) -> AlertScope:
    if principal.role in (Role.ADMIN, Role.OPERATOR):
        return AlertScope(all=True)
    if principal.role is Role.DISPATCHER:
        return AlertScope(all=True, min_severity=Severity.EMERGENCY)
    return AlertScope(resident_ids=principal.resident_ids, team_ids=principal.team_ids)


def actor_of(principal: Principal) -> Actor:
    return Actor(ActorKind(principal.role.value), principal.name)


class AlertOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    resident_id: uuid.UUID | None
    device_id: str | None
    kind: AlertKind
    severity: str
    state: AlertState
    occurrences: int
    first_at: datetime
    last_at: datetime
    cancel_deadline: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    rule: str | None
    tier: int = Field(description="Escalation tier reached (0: the first recipients).")
    evidence: dict[str, Any] | None

    @classmethod
    def of(cls, a: Alert) -> AlertOut:
        return cls(
            id=a.id,
            resident_id=a.resident_id,
            device_id=a.device_id,
            kind=a.kind,
            severity=severity_name(a.severity),
            state=a.state,
            occurrences=a.occurrences,
            first_at=a.first_at,
            last_at=a.last_at,
            cancel_deadline=a.cancel_deadline,
            acknowledged_at=a.acknowledged_at,
            acknowledged_by=a.acknowledged_by,
            rule=a.rule,
            tier=a.tier,
            evidence=a.evidence,
        )


class EventOut(BaseModel):
    at: datetime
    event: str
    from_state: AlertState | None
    to_state: AlertState | None
    actor: str
    channel: str | None
    note: str | None


class DeliveryOut(BaseModel):
    id: int
    tier: int
    recipient_kind: str
    recipient_name: str | None
    channel: str
    template: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None


class AlertDetail(BaseModel):
    alert: AlertOut
    timeline: list[EventOut]
    deliveries: list[DeliveryOut]


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    note: str | None = Field(None, max_length=1000, description="Shown on the timeline.")


def _now() -> datetime:
    return datetime.now(UTC)


def _visible(svc: AlertService, conn: Any, principal: Principal, alert_id: int) -> Alert:
    try:
        alert = svc.get(conn, alert_id)
    except AlertNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    scope = scope_of(principal)
    in_scope = alert.severity >= scope.min_severity and (
        scope.all
        or (alert.resident_id is not None and alert.resident_id in scope.resident_ids)
        or (
            alert.resident_id is not None
            and access.signed_with(conn, alert.resident_id, scope.team_ids)
        )
    )
    if not in_scope:
        raise HTTPException(status_code=404, detail=f"Alert {alert_id} does not exist.")
    return alert


@router.get("/alerts")
def list_alerts(
    *,
    conn: DbConn,
    principal: CurrentPrincipal,
    svc: Service,
    state: AlertState | None = None,
    kind: AlertKind | None = None,
    resident_id: uuid.UUID | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[AlertOut]:
    """Alerts in the caller's scope, newest first."""
    filt = AlertFilter(state, kind, resident_id, since, limit, offset)
    return [AlertOut.of(a) for a in svc.list(conn, filt, scope_of(principal))]


@router.get("/alerts/{alert_id}")
def alert_detail(
    alert_id: int, conn: DbConn, principal: CurrentPrincipal, svc: Service
) -> AlertDetail:
    """One alert with its timeline and its deliveries (addresses left out)."""
    alert = _visible(svc, conn, principal, alert_id)
    return AlertDetail(
        alert=AlertOut.of(alert),
        timeline=[
            EventOut(
                at=e.at, event=e.event, from_state=e.from_state, to_state=e.to_state,
                actor=e.actor, channel=e.channel, note=e.note,
            )
            for e in svc.timeline(conn, alert_id)
        ],
        deliveries=[
            DeliveryOut(
                id=d.id, tier=d.tier, recipient_kind=d.recipient_kind.value,
                recipient_name=d.recipient_name, channel=d.channel.value, template=d.template,
                status=d.status, attempts=d.attempts, next_attempt_at=d.next_attempt_at,
                last_error=d.last_error, delivered_at=d.delivered_at,
            )
            for d in svc.deliveries(conn, alert_id)
        ],
    )  # fmt: skip


def _move(
    target: AlertState,
    alert_id: int,
    body: NoteIn | None,
    *,
    conn: Any,
    principal: Principal,
    svc: AlertService,
) -> AlertOut:
    _visible(svc, conn, principal, alert_id)
    try:
        alert = svc.transition(
            conn, alert_id, target, actor_of(principal), _now(), channel="api",
            note=body.note if body else None,
        )  # fmt: skip
    except TransitionRefused as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return AlertOut.of(alert)


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge(
    alert_id: int,
    conn: DbConn,
    principal: CurrentPrincipal,
    svc: Service,
    body: NoteIn | None = None,
) -> AlertOut:
    """I'm on it: stops escalation and reminders; the device is told help is coming."""
    return _move(AlertState.ACKNOWLEDGED, alert_id, body, conn=conn, principal=principal, svc=svc)


@router.post("/alerts/{alert_id}/dispatched")
def dispatched(
    alert_id: int,
    conn: DbConn,
    principal: CurrentPrincipal,
    svc: Service,
    body: NoteIn | None = None,
) -> AlertOut:
    """The 120 dispatch centre says an ambulance has left (dispatchers and admins)."""
    return _move(AlertState.DISPATCHED, alert_id, body, conn=conn, principal=principal, svc=svc)


@router.post("/alerts/{alert_id}/resolve")
def resolve(
    alert_id: int,
    conn: DbConn,
    principal: CurrentPrincipal,
    svc: Service,
    body: NoteIn | None = None,
) -> AlertOut:
    """The alert is over (admins, operators, dispatchers, the 120 centre; doctors not for an
    emergency): messages not sent yet are cancelled, the 120 hand-off is not."""
    return _move(AlertState.RESOLVED, alert_id, body, conn=conn, principal=principal, svc=svc)


@router.post("/alerts/{alert_id}/false-alarm")
def false_alarm(
    alert_id: int,
    conn: DbConn,
    principal: CurrentPrincipal,
    svc: Service,
    body: NoteIn | None = None,
) -> AlertOut:
    """Nothing happened: closes an open or acknowledged alert as a false alarm (admins, operators,
    dispatchers; doctors not for an emergency); messages not sent yet are cancelled."""
    return _move(AlertState.FALSE_ALARM, alert_id, body, conn=conn, principal=principal, svc=svc)
