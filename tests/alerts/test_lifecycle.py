"""The alert state machine (pure): allowed transitions, who may make them, refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alerts import lifecycle
from alerts.model import Actor, ActorKind, AlertKind, AlertState
from detectors.findings import Severity

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
        (AlertKind.INACTIVITY, S.OPEN, S.RESOLVED, Actor(ActorKind.DOCTOR, "family doctor")),
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


FAMILY = Actor(ActorKind.FAMILY, "sample daughter")
DOCTOR = Actor(ActorKind.DOCTOR, "family doctor")


@pytest.mark.parametrize("target", [S.RESOLVED, S.FALSE_ALARM, S.CANCELLED])
@pytest.mark.parametrize("src", [S.OPEN, S.ACKNOWLEDGED, S.DISPATCHED])
def test_a_relative_or_a_doctor_never_ends_an_emergency(src: S, target: S) -> None:
    for actor in (FAMILY, DOCTOR, CHILD):
        for kind, severity in [
            (AlertKind.SOS, Severity.EMERGENCY),
            (AlertKind.FALL, Severity.EMERGENCY),
            (AlertKind.NEWS2, Severity.EMERGENCY),
            (AlertKind.SOS, None),  # no severity given: an SOS counts as an emergency
        ]:
            assert not lifecycle.allowed(kind, src, target, actor, severity=severity)
    # They acknowledge instead.
    assert lifecycle.allowed(AlertKind.SOS, S.OPEN, S.ACKNOWLEDGED, FAMILY)
    assert lifecycle.allowed(AlertKind.SOS, S.OPEN, S.ACKNOWLEDGED, DOCTOR)


def test_who_ends_an_emergency_and_who_ends_the_rest() -> None:
    dispatcher = Actor(ActorKind.DISPATCHER, "desk")
    for actor in (dispatcher, OPERATOR, DISPATCH):
        assert lifecycle.allowed(
            AlertKind.SOS, S.DISPATCHED, S.RESOLVED, actor, severity=Severity.EMERGENCY
        )
    assert lifecycle.allowed(AlertKind.SOS, S.OPEN, S.FALSE_ALARM, dispatcher)
    with pytest.raises(lifecycle.TransitionRefused, match="doctor may not end an emergency"):
        lifecycle.check(7, AlertKind.SOS, S.OPEN, S.FALSE_ALARM, DOCTOR, NOW)
    # The family doctor ends a medium-risk NEWS2 alert; a family member ends nothing.
    assert lifecycle.allowed(AlertKind.NEWS2, S.OPEN, S.RESOLVED, DOCTOR, severity=Severity.MEDIUM)
    assert not lifecycle.allowed(
        AlertKind.NEWS2, S.OPEN, S.RESOLVED, FAMILY, severity=Severity.MEDIUM
    )
    assert not lifecycle.allowed(AlertKind.BATTERY_LOW, S.OPEN, S.RESOLVED, FAMILY)
