"""Scenario files: the library is valid, and a bad file is refused with key, value, expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.scenario import (
    ScenarioError,
    library,
    load_scenario,
    parse_duration,
    parse_scenario,
)

LIBRARY_NAMES = {
    "sos", "fall-confirmed", "fall-cancelled", "fall-recovered", "night-bed-exit",
    "inactivity-alone", "deteriorating-vitals", "device-offline-lwt", "battery-dying",
    "gateway-three-devices", "backlog-day-offline", "bad-firmware",
}  # fmt: skip


def _minimal(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "t",
        "duration": "30s",
        "elders": {"a": {"name": "老人"}},
        "devices": {"wb-a": {"kind": "wristband", "elder": "a"}},
        "timeline": [{"at": "5s", "device": "wb-a", "do": "sos"}],
        "expect": {"alerts": [{"elder": "a", "kind": "sos"}]},
    }
    base.update(over)
    return base


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "t.yaml")
    return err.value.problems


def test_the_library_holds_every_scenario_of_the_issue_and_each_is_valid() -> None:
    assert {p.stem for p in library()} == LIBRARY_NAMES
    for path in library():
        s = load_scenario(path)
        assert s.expect.alerts or s.expect.dead_letters or s.expect.stored, path.name


def test_a_library_scenario_is_found_by_its_name_alone() -> None:
    assert load_scenario("sos").name == "SOS from a wristband"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("2h", 7200), ("1h30m", 5400), (12, 12)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_minimal_scenario_is_accepted() -> None:
    s = parse_scenario(_minimal())
    assert s.speed == 1.0 and s.at_seconds(s.timeline[0]) == 5.0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"duration": "5x"}, "duration has value '5x': expected a duration such as 90s"),
        ({"speed": 0}, "speed has value 0: expected a factor over real time"),
        ({"start": "25:00"}, "start has value '25:00': expected a local time of day HH:MM"),
        ({"surprise": 1}, "surprise is not a known key"),
        ({"devices": {"wb-a": {"kind": "toaster", "elder": "a"}}}, "devices.wb-a.kind has value 'toaster': Input should be 'wristband'"),
        ({"devices": {"wb-a": {"kind": "wristband", "elder": "nobody"}}}, "devices.wb-a.elder has value 'nobody': expected one of the elders (a)"),
        ({"timeline": [{"at": "5s", "device": "wb-a", "do": "dance"}]}, "do has value 'dance': expected one of"),
        ({"timeline": [{"at": "5s", "elder": "a", "do": "sos"}]}, "'do: sos' happens on a device: give 'device', not 'elder'"),
        ({"timeline": [{"at": "50s", "device": "wb-a", "do": "sos"}]}, "timeline[0].at has value 50.0: expected at most the duration (30 s)"),
        ({"timeline": [{"at": "14:05", "device": "wb-a", "do": "sos"}]}, "timeline[0].at has value '14:05': a time of day needs 'start'"),
        ({"timeline": [{"at": "5s", "device": "wb-a", "do": "malformed", "variant": "bogus"}]}, "variant has value 'bogus': expected one of truncated"),
        ({"speed": 60, "timeline": [{"at": "5s", "elder": "a", "do": "fall"}]}, "timeline[0].do has value 'fall' with speed 60.0: expected speed 1"),
        ({"expect": {"alerts": [{"elder": "a", "kind": "earthquake"}]}}, "expect.alerts[0].kind has value 'earthquake': Input should be 'sos'"),
        ({"expect": {"never": [{"elder": "b", "kind": "sos"}]}}, "expect.never[0].elder has value 'b': expected one of a"),
    ],
)  # fmt: skip
def test_a_bad_scenario_names_the_key_the_value_and_what_was_expected(
    change: dict[str, Any], expected: str
) -> None:
    problems = _problems(_minimal(**change))
    assert any(expected in p for p in problems), problems


def test_hub_rules() -> None:
    devices = {
        "hub-1": {"kind": "hub", "elder": "a"},
        "bed-1": {"kind": "bed_sensor", "elder": "b", "hub": "hub-1"},
        "btn-1": {"kind": "sos_button", "elder": "a", "hub": "wb-a"},
        "wb-a": {"kind": "wristband", "elder": "a"},
    }
    problems = _problems(
        _minimal(
            elders={"a": {"name": "甲"}, "b": {"name": "乙"}},
            devices=devices,
            timeline=[{"at": "1s", "device": "bed-1", "do": "lose_connection"}],
        )
    )
    assert "devices.bed-1.elder has value 'b': expected the hub's elder 'a'" in problems
    assert "devices.btn-1.hub has value 'wb-a': expected a device of kind hub (hub-1)" in problems
    assert any("timeline[0].device has value 'bed-1': it sits behind hub" in p for p in problems)


def test_a_file_that_is_not_yaml_or_not_there(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read the file"):
        load_scenario(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ScenarioError, match="expected a mapping of keys"):
        load_scenario(listed)
