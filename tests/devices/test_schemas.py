"""The shipped JSON Schema files are exactly what the payload types produce now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devices.protocol import json_schemas
from devices.schemas import generate

SCHEMA_DIR = Path(generate.__file__).parent


@pytest.mark.parametrize("name", ["telemetry", "event", "status", "command"])
def test_shipped_schema_equals_the_payload_types(name: str) -> None:
    shipped = (SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8")
    expected = json.dumps(json_schemas()[name], indent=2, sort_keys=True) + "\n"
    assert shipped == expected, f"run python -m devices.schemas.generate: {name} differs"


def test_every_payload_kind_has_a_file_and_no_stray_files() -> None:
    shipped = sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json"))
    assert shipped == sorted(f"{name}.schema.json" for name in json_schemas())


def test_check_mode_reports_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.stale_files(tmp_path) == list(generate.expected_files())
    generate.write(tmp_path)
    assert generate.stale_files(tmp_path) == []
    (tmp_path / "event.schema.json").write_text("{}\n", encoding="utf-8")
    assert generate.stale_files(tmp_path) == ["event.schema.json"]
    assert generate.main(["--check"]) == 0
    assert capsys.readouterr().err == ""


def test_schemas_describe_the_wire_names_and_ranges() -> None:
    schemas = json_schemas()
    vitals = schemas["telemetry"]["$defs"]["Vitals"]
    assert vitals["additionalProperties"] is False
    hr = vitals["properties"]["hr"]["anyOf"][0]
    assert (hr["minimum"], hr["maximum"]) == (20, 300)
    assert schemas["status"]["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schemas["event"]["$defs"]["EventWire"]["required"] == ["v", "ts", "seq", "type"]
