"""JSON Schema of each payload, generated from the msgspec types (``devices/schemas``)."""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from devices.protocol.payloads import (
    PROTOCOL_VERSION,
    CommandWire,
    EventWire,
    StatusWire,
    TelemetryWire,
)


def _clean_descriptions(node: Any) -> Any:
    """Descriptions as our docstrings say them (``inspect.cleandoc``), whatever indentation
    the schema generator of the msgspec version at hand keeps."""
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v)
            if k == "description" and isinstance(v, str)
            else _clean_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (2020-12) of each payload, as shipped in ``devices/schemas``."""
    out: dict[str, dict[str, Any]] = {}
    for name, typ in (
        ("telemetry", TelemetryWire),
        ("event", EventWire),
        ("status", StatusWire),
        ("command", CommandWire),
    ):
        schema = _clean_descriptions(msgspec.json.schema(typ))
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"Anxin protocol v{PROTOCOL_VERSION} {name} payload"
        out[name] = schema
    return out
