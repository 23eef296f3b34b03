"""The alert state machine (pure): allowed transitions, who may make them, refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alerts import lifecycle
from alerts.model import Actor, ActorKind, AlertKind, AlertState

NOW = datetime(2025, 11, 24, 8, 0, tzinfo=UTC)
S = AlertState
DEVICE = Actor(ActorKind.DEVICE, "wb-0001")
CHILD = Actor(ActorKind.CONTACT, "child:sample daughter")
OPERATOR = Actor(ActorKind.OPERATOR, "desk 1")
DISPATCH = Actor(ActorKind.DISPATCH120)


@pytest.mark.parametrize(
    ("kind", "src", "dst", "actor"),
    [
        (AlertKind.FALL, S.PENDING, S.CANCELLED, DEVICE),
        (AlertKind.FALL, S.PENDING, S.OPEN, Actor(ActorKind.SYSTEM)),
        (AlertKind.SOS, S.OPEN, S.ACKNOWLEDGED, CHILD),
        (AlertKind.SOS, S.ACKNOWLEDGED, S.DISPATCHED, DISPATCH),
        (AlertKind.SOS, S.DISPATCHED, S.RESOLVED, OPERATOR),
        (AlertKind.SOS, S.OPEN, S.FALSE_ALARM, OPERATOR),
        (AlertKind.NEWS2, S.OPEN, S.RESOLVED, Actor(ActorKind.DOCTOR, "family doctor")),
    ],
)
def test_allowed_transitions(kind: AlertKind, src: S, dst: S, actor: Actor) -> None:
    t = lifecycle.check(7, kind, src, dst, actor, NOW, channel="api", note="n")
    assert (t.from_state, t.to_state, str(t.actor), t.at) == (src, dst, str(actor), NOW)


@pytest.mark.parametrize(
    ("kind", "src", "dst", "actor", "reason"),
    [
        (AlertKind.SOS, S.OPEN, S.CANCELLED, DEVICE, "may not move"),
        (AlertKind.SOS, S.PENDING, S.CANCELLED, DEVICE, "never cancelled by the device"),
        (AlertKind.SOS, S.PENDING, S.CANCELLED, Actor(ActorKind.SYSTEM), "never cancelled"),
        (AlertKind.FALL, S.OPEN, S.CANCELLED, DEVICE, "may not move"),
        (AlertKind.FALL, S.RESOLVED, S.OPEN, OPERATOR, "no transition from resolved"),
        (AlertKind.FALL, S.OPEN, S.OPEN, OPERATOR, "already open"),
        (AlertKind.FALL, S.OPEN, S.DISPATCHED, CHILD, "contact may not move"),
        (AlertKind.FALL, S.OPEN, S.RESOLVED, CHILD, "contact may not move"),
        (AlertKind.FALL, S.CANCELLED, S.ACKNOWLEDGED, CHILD, "no transition from cancelled"),
    ],
)
def test_refused_transitions(kind: AlertKind, src: S, dst: S, actor: Actor, reason: str) -> None:
    assert not lifecycle.allowed(kind, src, dst, actor)
    with pytest.raises(lifecycle.TransitionRefused, match=reason):
        lifecycle.check(7, kind, src, dst, actor, NOW)


def test_closed_states_are_final() -> None:
    for closed in (S.RESOLVED, S.CANCELLED, S.FALSE_ALARM):
        assert not any(src is closed for src, _ in lifecycle.TRANSITIONS)
        assert not closed.live
