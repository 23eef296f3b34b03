"""The alert state machine: which transitions exist and who may make them. Pure: no I/O.

::

    pending --(deadline / confirmed)--> open --> acknowledged --> dispatched --> resolved
       |                                  |           |               |
       +--> cancelled (wearer, detector)  +-----------+---------------+--> resolved
                                          +--> false_alarm, cancelled (staff)

An SOS is never cancelled by the device or the detectors (the press was deliberate); staff
may still call it a false alarm. :func:`check` raises :class:`TransitionRefused` with the
reason; :func:`allowed` tells without raising.

**Who may end an emergency.** Ending an alert (resolved, false alarm, cancelled) stops its
escalation, and an emergency's 120 hand-off may be under way. Family members acknowledge ("I'm
on it"); they never end an alert. Family doctors end the alerts they manage (medium risk,
behaviour, devices) but not an emergency: that is for the desks that answer for the 120
hand-off (dispatcher, operator, admin) and the 120 centre itself. An emergency is an alert of
severity emergency; where the severity is not given, an alert of a kind that can be one (SOS,
fall, NEWS2) counts as one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from alerts.model import Actor, ActorKind, AlertError, AlertKind, AlertState
from detectors.findings import Severity

S = AlertState
K = ActorKind

_STAFF = frozenset({K.ADMIN, K.OPERATOR, K.DISPATCHER, K.DOCTOR, K.FAMILY})
_RESPONDERS = _STAFF | {K.CONTACT, K.DISPATCH120}
#: Who may end an alert that is not an emergency (families acknowledge, they do not end).
_CLOSERS = frozenset({K.ADMIN, K.OPERATOR, K.DISPATCHER, K.DOCTOR, K.DISPATCH120})
#: Who may end an emergency: the desks that answer for the 120 hand-off, and the 120 centre.
EMERGENCY_CLOSERS = frozenset({K.ADMIN, K.OPERATOR, K.DISPATCHER, K.DISPATCH120})
#: Kinds that may be emergencies: without a severity, these count as one.
EMERGENCY_KINDS = frozenset({AlertKind.SOS, AlertKind.FALL, AlertKind.NEWS2})
CLOSED_STATES = frozenset({S.RESOLVED, S.FALSE_ALARM, S.CANCELLED})

#: (from, to) -> who may make the transition.
TRANSITIONS: Mapping[tuple[AlertState, AlertState], frozenset[ActorKind]] = {
    (S.PENDING, S.OPEN): frozenset({K.SYSTEM, K.DEVICE, K.ADMIN, K.OPERATOR, K.DISPATCHER}),
    (S.PENDING, S.CANCELLED): frozenset({K.DEVICE, K.SYSTEM, K.ADMIN, K.OPERATOR}),
    (S.PENDING, S.ACKNOWLEDGED): _STAFF | {K.DISPATCH120},
    (S.PENDING, S.FALSE_ALARM): frozenset({K.ADMIN, K.OPERATOR, K.DISPATCHER}),
    (S.OPEN, S.ACKNOWLEDGED): _RESPONDERS,
    (S.OPEN, S.DISPATCHED): frozenset({K.DISPATCH120, K.DISPATCHER, K.ADMIN}),
    (S.OPEN, S.RESOLVED): _CLOSERS,
    (S.OPEN, S.FALSE_ALARM): _CLOSERS - {K.DISPATCH120},
    (S.OPEN, S.CANCELLED): frozenset({K.ADMIN, K.OPERATOR}),
    (S.ACKNOWLEDGED, S.DISPATCHED): frozenset({K.DISPATCH120, K.DISPATCHER, K.ADMIN}),
    (S.ACKNOWLEDGED, S.RESOLVED): _CLOSERS,
    (S.ACKNOWLEDGED, S.FALSE_ALARM): _CLOSERS - {K.DISPATCH120},
    (S.DISPATCHED, S.RESOLVED): _CLOSERS,
    (S.DISPATCHED, S.FALSE_ALARM): frozenset({K.ADMIN, K.DISPATCHER, K.DISPATCH120}),
}

#: Kinds that the device and the detectors may never cancel.
NEVER_CANCELLED_BY_DEVICE = frozenset({AlertKind.SOS})


class TransitionRefused(AlertError):
    """A transition that does not exist or that this actor may not make."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A transition that passed :func:`check`, ready to be stored on the timeline."""

    alert_id: int
    from_state: AlertState
    to_state: AlertState
    actor: Actor
    at: datetime
    channel: str | None = None
    note: str | None = None


def is_emergency(kind: AlertKind, severity: Severity | None) -> bool:
    """Whether an alert counts as an emergency for ending it (see the module's docstring)."""
    if severity is None:
        return kind in EMERGENCY_KINDS
    return severity >= Severity.EMERGENCY


def refusal(
    kind: AlertKind,
    current: AlertState,
    target: AlertState,
    actor: Actor,
    *,
    severity: Severity | None = None,
) -> str | None:
    """Why ``actor`` may not move an alert of ``kind`` from ``current`` to ``target``; None if it may."""
    if current == target:
        return f"the alert is already {current.value}"
    who = TRANSITIONS.get((current, target))
    if who is None:
        return f"no transition from {current.value} to {target.value}"
    if actor.kind not in who:
        return f"{actor.kind.value} may not move an alert from {current.value} to {target.value}"
    if (
        target is S.CANCELLED
        and kind in NEVER_CANCELLED_BY_DEVICE
        and actor.kind in {K.DEVICE, K.SYSTEM}
    ):
        return f"a {kind.value} alert is never cancelled by the device"
    if (
        target in CLOSED_STATES
        and current is not S.PENDING
        and actor.kind not in EMERGENCY_CLOSERS
        and is_emergency(kind, severity)
    ):
        return (
            f"{actor.kind.value} may not end an emergency ({kind.value}): acknowledge it; "
            "the dispatcher or the operator ends it"
        )
    return None


def allowed(
    kind: AlertKind,
    current: AlertState,
    target: AlertState,
    actor: Actor,
    *,
    severity: Severity | None = None,
) -> bool:
    return refusal(kind, current, target, actor, severity=severity) is None


def check(  # noqa: PLR0917 - the alert's id, kind and state, then who, where to and when
    alert_id: int,
    kind: AlertKind,
    current: AlertState,
    target: AlertState,
    actor: Actor,
    at: datetime,
    *,
    channel: str | None = None,
    note: str | None = None,
    severity: Severity | None = None,
) -> Transition:
    """The transition, or :class:`TransitionRefused` naming the alert, the states and why."""
    reason = refusal(kind, current, target, actor, severity=severity)
    if reason is not None:
        raise TransitionRefused(f"Alert {alert_id} ({kind.value}): {reason}.")
    return Transition(alert_id, current, target, actor, at, channel, note)
