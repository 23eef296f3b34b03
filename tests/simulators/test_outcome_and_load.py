"""The judging of a run (pure), the load profile's pure helpers, and the command line's refusal
of a bad scenario file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from api.cli import main
from devices import protocol as proto
from devices.model import DeviceKind
from simulators.load import LoadError, Payloads, assign, parse_mix
from simulators.outcome import AlertSeen, DeliverySeen, Observed, compare, render
from simulators.scenario import parse_scenario


def _expect(**expect: object) -> object:
    return parse_scenario(
        {
            "name": "t",
            "duration": "10s",
            "elders": {"a": {"name": "甲"}, "b": {"name": "乙"}},
            "devices": {"wb-a": {"kind": "wristband", "elder": "a"}},
            "expect": expect,
        }
    ).expect


def _alert(kind: str = "sos", elder: str = "a", state: str = "open", aid: int = 1) -> AlertSeen:
    deliveries = (
        DeliverySeen("dispatch120", 0, "delivered", "dispatch120", 1),
        DeliverySeen("child", 0, "failed", "json", None),
        DeliverySeen("relative", 1, "pending", "sms", None),
    )
    return AlertSeen(aid, kind, elder, "wb-a", state, "emergency", 0, 1, deliveries)


def test_what_matches_passes_with_a_line_per_check() -> None:
    expect = _expect(
        alerts=[{"elder": "a", "kind": "sos", "state": "open", "told": ["dispatch120", "child"],
                 "delivered": ["dispatch120"], "channels": {"child": "json"}}],
        never=[{"kind": "fall"}],
    )  # fmt: skip
    v = compare(expect, Observed(alerts=[_alert()]), final=True)  # type: ignore[arg-type]
    assert v.passed, v.differs
    assert v.ok == [
        "sos for a (open, emergency); told child (json, failed), dispatch120 (dispatch120, delivered)",
        "no fall alert",
    ]


def test_each_difference_is_named() -> None:
    expect = _expect(
        alerts=[
            {"elder": "a", "kind": "sos", "state": "acknowledged", "told": ["dispatch120"],
             "delivered": ["child"], "channels": {"child": "sms"}},
            {"elder": "b", "kind": "fall"},
        ],
        never=[{"kind": "inactivity", "elder": "a"}],
        dead_letters=[{"device": "wb-a", "reason": "schema", "count": 2}],
        stored=[{"device": "wb-a", "what": "vitals", "at_least": 5}],
        commands=[{"device": "wb-a", "type": "help_coming"}],
    )  # fmt: skip
    seen = Observed(
        alerts=[_alert(), _alert("inactivity", aid=2), _alert("battery_low", aid=3)],
        dead_letters=Counter({("wb-a", "schema"): 1}),
        stored={("wb-a", "vitals"): 3},
        commands={("wb-a", "cancel_ack")},
    )
    v = compare(expect, seen, final=True)  # type: ignore[arg-type]
    assert v.differs == [
        "a sos alert for a (acknowledged): state is open, expected acknowledged; told "
        "['child', 'dispatch120'], expected ['dispatch120']; not delivered to ['child'] "
        "(delivered: ['dispatch120']); child told through json, expected sms",
        "expected a fall alert for b: none opened",
        "dead letters of wb-a with reason schema: 1, expected 2",
        "vitals stored of wb-a: 3, expected at least 5",
        "wb-a did not receive help_coming (received: ['cancel_ack'])",
        "must not happen: inactivity for a (open, emergency)",
        "not expected: battery_low for a (open, emergency)",
    ]
    report = render("t", ["run x"], v, [])
    assert report.endswith("result: FAIL (7 of 7 checks differ)")
    # Before the settle time only the positive expectations count.
    assert len(compare(expect, seen, final=False).differs) == 5  # type: ignore[arg-type]


def test_other_alerts_may_be_allowed() -> None:
    expect = _expect(others="allow")
    assert compare(expect, Observed(alerts=[_alert()]), final=True).passed  # type: ignore[arg-type]


def test_the_mix_is_parsed_and_honoured() -> None:
    mix = parse_mix("wristband=60,bed_sensor=30,pendant=10")
    fleet = assign(1001, mix, "t")
    counts = Counter(k for _d, k in fleet)
    assert counts == {
        DeviceKind.WRISTBAND: 601,
        DeviceKind.BED_SENSOR: 300,
        DeviceKind.PENDANT: 100,
    }
    assert len({d for d, _k in fleet}) == 1001


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("toaster=5", "--mix names kind 'toaster': expected one of wristband"),
        ("hub=5", "--mix names kind 'hub', which publishes through a hub only"),
        ("wristband=x", "--mix gives wristband the share 'x': expected a positive number"),
    ],
)
def test_a_bad_mix_is_refused(text: str, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        parse_mix(text)


@pytest.mark.parametrize("kind", list(DeviceKind.__members__.values()))
def test_every_load_payload_is_what_the_server_decodes(kind: DeviceKind) -> None:
    if kind is DeviceKind.HUB:
        return
    payload = Payloads().payload(kind, 3, 7, 1_764_576_000_000)
    decoded = proto.decode(
        proto.Channel.TELEMETRY, "dev-1", payload, proto.Limits(now_ms=1_764_576_000_000)
    )
    assert len(decoded.readings) == 1 and not decoded.rejected


def test_the_command_line_refuses_a_bad_file_with_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nduration: soon\ndevices: {wb-1: {kind: wristband, hub: nowhere}}\n")
    assert main(["scenario", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"anxin: scenario {bad} is not valid:" in err
    assert "duration has value 'soon': expected a duration such as 90s" in err
    # References between the parts are checked once every field is valid.
    bad.write_text("name: x\nduration: 10s\ndevices: {wb-1: {kind: wristband, hub: nowhere}}\n")
    assert main(["scenario", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "devices.wb-1.hub has value 'nowhere': expected a device of kind hub (none)" in err
    assert main(["scenario", "check", "sos"]) == 0
