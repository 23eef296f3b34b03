"""The alert state machine: which transitions exist and who may make them. Pure: no I/O.

::

    pending --(deadline / confirmed)--> open --> acknowledged --> dispatched --> resolved
       |                                  |           |               |
       +--> cancelled (wearer, detector)  +-----------+---------------+--> resolved
                                          +--> false_alarm, cancelled (staff)

An SOS is never cancelled by the device or the detectors (the press was deliberate); staff
may still call it a false alarm. :func:`check` raises :class:`TransitionRefused` with the
reason; :func:`allowed` tells without raising.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from alerts.model import Actor, ActorKind, AlertError, AlertKind, AlertState

S = AlertState
K = ActorKind

_STAFF = frozenset({K.ADMIN, K.OPERATOR, K.DISPATCHER, K.DOCTOR, K.FAMILY})
_RESPONDERS = _STAFF | {K.CONTACT, K.DISPATCH120}

#: (from, to) -> who may make the transition.
TRANSITIONS: Mapping[tuple[AlertState, AlertState], frozenset[ActorKind]] = {
    (S.PENDING, S.OPEN): frozenset({K.SYSTEM, K.DEVICE, K.ADMIN, K.OPERATOR, K.DISPATCHER}),
    (S.PENDING, S.CANCELLED): frozenset({K.DEVICE, K.SYSTEM, K.ADMIN, K.OPERATOR}),
    (S.PENDING, S.ACKNOWLEDGED): _STAFF | {K.DISPATCH120},
    (S.PENDING, S.FALSE_ALARM): frozenset({K.ADMIN, K.OPERATOR, K.DISPATCHER}),
    (S.OPEN, S.ACKNOWLEDGED): _RESPONDERS,
    (S.OPEN, S.DISPATCHED): frozenset({K.DISPATCH120, K.DISPATCHER, K.ADMIN}),
    (S.OPEN, S.RESOLVED): _STAFF | {K.DISPATCH120},
    (S.OPEN, S.FALSE_ALARM): _STAFF,
    (S.OPEN, S.CANCELLED): frozenset({K.ADMIN, K.OPERATOR}),
    (S.ACKNOWLEDGED, S.DISPATCHED): frozenset({K.DISPATCH120, K.DISPATCHER, K.ADMIN}),
    (S.ACKNOWLEDGED, S.RESOLVED): _STAFF | {K.DISPATCH120},
    (S.ACKNOWLEDGED, S.FALSE_ALARM): _STAFF,
    (S.DISPATCHED, S.RESOLVED): _STAFF | {K.DISPATCH120},
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


def refusal(kind: AlertKind, current: AlertState, target: AlertState, actor: Actor) -> str | None:
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
    return None


def allowed(kind: AlertKind, current: AlertState, target: AlertState, actor: Actor) -> bool:
    return refusal(kind, current, target, actor) is None


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
) -> Transition:
    """The transition, or :class:`TransitionRefused` naming the alert, the states and why."""
    reason = refusal(kind, current, target, actor)
    if reason is not None:
        raise TransitionRefused(f"Alert {alert_id} ({kind.value}): {reason}.")
    return Transition(alert_id, current, target, actor, at, channel, note)
