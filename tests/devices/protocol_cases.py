"""Shared ground of the device protocol tests: the server clock, the limits, the document.

The ``test_protocol_*`` modules next to this one import from here; a helper that only one of
them uses stays in that module.
"""

from __future__ import annotations

from pathlib import Path

from devices import protocol as proto
from devices.protocol import Limits

#: Server clock of the tests: five minutes after the documented examples' 2025-01-01 00:00 UTC.
NOW = 1_735_689_900_000
T0 = 1_735_689_600_000
LIMITS = Limits(now_ms=NOW)
PREFIX = "anxin/v1"
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def tel(payload: bytes | str, limits: Limits = LIMITS) -> proto.Decoded:
    data = payload.encode() if isinstance(payload, str) else payload
    return proto.decode_telemetry("wb-0001", data, limits)
