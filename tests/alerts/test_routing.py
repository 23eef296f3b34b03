"""The default routing policy, per-elder overrides and quiet hours (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from alerts.model import AlertKind, RecipientKind
from alerts.routing import (
    QuietHours,
    Recipient,
    RoutingError,
    default_policy,
    first_attempt_at,
    match,
    parse_policy,
    rules_from_data,
)
from detectors.findings import Severity

R = RecipientKind


@pytest.mark.parametrize(
    ("kind", "severity", "rule", "tier0"),
    [
        (AlertKind.SOS, Severity.EMERGENCY, "emergency", {R.DISPATCH120, R.CHILD, R.WORK_UNIT, R.DOCTOR, R.HOSPITAL}),
        (AlertKind.FALL, Severity.EMERGENCY, "emergency", {R.DISPATCH120, R.CHILD, R.WORK_UNIT, R.DOCTOR, R.HOSPITAL}),
        (AlertKind.NEWS2, Severity.EMERGENCY, "emergency", {R.DISPATCH120, R.CHILD, R.WORK_UNIT, R.DOCTOR, R.HOSPITAL}),
        (AlertKind.NEWS2, Severity.HIGH, "medium_risk", {R.DOCTOR, R.CHILD}),
        (AlertKind.VITAL_SINGLE, Severity.MEDIUM, "medium_risk", {R.DOCTOR, R.CHILD}),
        (AlertKind.DEVICE_OFFLINE, Severity.MEDIUM, "device", {R.OPERATOR, R.CHILD}),
        (AlertKind.BATTERY_LOW, Severity.LOW, "device", {R.OPERATOR, R.CHILD}),
        (AlertKind.INACTIVITY, Severity.HIGH, "inactivity", {R.CHILD, R.COMMUNITY_WORKER}),
        (AlertKind.OUT_OF_BED, Severity.MEDIUM, "night_bed", {R.CHILD, R.RELATIVE, R.COMMUNITY_WORKER}),
        (AlertKind.BED_EMPTY, Severity.MEDIUM, "night_bed", {R.CHILD, R.RELATIVE, R.COMMUNITY_WORKER}),
    ],
)  # fmt: skip
def test_default_routing(kind: AlertKind, severity: Severity, rule: str, tier0: set[R]) -> None:
    chosen = match(default_policy(), kind, severity)
    assert chosen is not None
    assert (chosen.name, chosen.action, set(chosen.tiers[0].recipients)) == (rule, "alert", tier0)


def test_emergency_green_channel_and_ladder() -> None:
    rule = match(default_policy(), AlertKind.SOS, Severity.EMERGENCY)
    assert rule is not None
    assert rule.template_for(R.HOSPITAL) == "green_channel"
    assert rule.template_for(R.CHILD) == "emergency"
    assert [t.after_s for t in rule.tiers] == [0, 300, 900]


def test_low_news2_goes_to_the_digest() -> None:
    rule = match(default_policy(), AlertKind.NEWS2, Severity.LOW)
    assert rule is not None and rule.action == "digest"


def test_inactivity_ladder_children_community_120() -> None:
    rule = match(default_policy(), AlertKind.INACTIVITY, Severity.HIGH)
    assert rule is not None
    assert [t.recipients for t in rule.tiers] == [
        (R.CHILD, R.COMMUNITY_WORKER),
        (R.NEIGHBOUR, R.RELATIVE),
        (R.DISPATCH120,),
    ]


def test_override_wins() -> None:
    overrides = rules_from_data(
        [{"name": "only_doctor", "kinds": ["news2"], "tiers": [{"recipients": ["doctor"]}]}],
        "test",
    )
    rule = match(default_policy(), AlertKind.NEWS2, Severity.HIGH, overrides)
    assert rule is not None and rule.name == "only_doctor"
    rule = match(default_policy(), AlertKind.SOS, Severity.EMERGENCY, overrides)
    assert rule is not None and rule.name == "emergency"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "not valid YAML"),
        ("rules: [{name: x, tiers: [{recipients: [pigeon]}]}]", "rules.0.tiers.0.recipients.0"),
        ("rules: [{name: x, tiers: [{after: 5m, recipients: [child]}]}]", "told at once"),
        ("rules: [{name: x, min_severity: dire, tiers: [{recipients: [child]}]}]", "dire"),
        ("rules: [{name: x}]", "has no tiers"),
        (
            "rules: [{name: x, tiers: [{recipients: [child]}, {after: soon, recipients: [child]}]}]",
            "soon",
        ),
    ],
)
def test_bad_policy_is_refused_with_the_place(text: str, message: str) -> None:
    with pytest.raises(RoutingError, match=message):
        parse_policy(text, "test.yaml")


# 23:30 in Shanghai (UTC+8) is 15:30 UTC.
NIGHT = datetime(2025, 11, 24, 15, 30, tzinfo=UTC)
DAY = datetime(2025, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def test_quiet_hours_defer_non_emergencies_only() -> None:
    quiet = QuietHours(time(22, 0), time(7, 0), "Asia/Shanghai")
    child = Recipient(R.CHILD, "json://localhost/child", quiet=quiet)
    end = datetime(2025, 11, 24, 23, 0, tzinfo=UTC)  # 07:00 next morning in Shanghai
    assert first_attempt_at(child, Severity.MEDIUM, NIGHT) == end
    assert first_attempt_at(child, Severity.HIGH, NIGHT) == end
    assert first_attempt_at(child, Severity.EMERGENCY, NIGHT) == NIGHT
    assert first_attempt_at(child, Severity.MEDIUM, DAY) == DAY
    # After midnight, still quiet: the end is the same morning.
    early = datetime(2025, 11, 24, 20, 0, tzinfo=UTC)  # 04:00 in Shanghai
    assert first_attempt_at(child, Severity.LOW, early) == end
    operator = Recipient(R.OPERATOR, "json://localhost/op")
    assert first_attempt_at(operator, Severity.LOW, NIGHT) == NIGHT
