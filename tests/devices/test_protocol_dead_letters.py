"""Device protocol v1: the dead-letter table of ``docs/protocol.md`` against the code.

The example message of each reason in the table is produced here, the way a firmware bug would
produce it, and compared with the document, so the document cannot drift from the code.
"""

# Payload literals are JSON: %-formatting keeps their braces readable where f-strings double them.
# ruff: noqa: UP031

from __future__ import annotations

import re

import pytest

from devices import protocol as proto
from devices.protocol import ProtocolError, Reason
from ingest.pipeline import DeviceInfo, DeviceState, RawMessage, process_batch
from tests.devices.protocol_cases import DOC, LIMITS, NOW, PREFIX, T0, tel

TABLE_ROW = re.compile(r"^\| `(\w+)` +\|[^|]*\| `` (.*) `` \|$", re.M)


def _pipeline_message(topic: str, payload: str) -> str:
    devices = {
        "wb-0001": DeviceInfo(
            "wb-0001", "wristband", DeviceState.ACTIVE, registered_ms=1_735_689_000_000
        ),
        "wb-0002": DeviceInfo("wb-0002", "wristband", DeviceState.ACTIVE, registered_ms=0),
        "wb-0003": DeviceInfo("wb-0003", "wristband", DeviceState.RETIRED, registered_ms=0),
        "hub-0007": DeviceInfo("hub-0007", "hub", DeviceState.ACTIVE, registered_ms=0),
    }
    batch = process_batch([RawMessage(topic, payload.encode(), NOW)], devices, LIMITS, PREFIX)
    [letter] = batch.dead_letters
    return f"{letter.reason.value}: {letter.detail}"


def _message_for(reason: Reason) -> str:
    """Produce the documented example of each reason, the way a firmware bug would."""
    hr = '{"v":1,"ts":%d,"seq":7,"vitals":{"hr":72}}'
    decoder_inputs = {
        Reason.OVERSIZED: b" " * 70000,
        Reason.MALFORMED_JSON: (hr % T0)[:-2].encode(),
        Reason.UNSUPPORTED_VERSION: (hr % T0).replace('"v":1', '"v":2').encode(),
        Reason.SCHEMA: (hr % T0).replace('"hr"', '"heart_rate"').encode(),
        Reason.NON_FINITE: (hr % T0).replace("72", "NaN").encode(),
        Reason.OUT_OF_RANGE: (hr % T0).replace("72", "900").encode(),
        Reason.TOO_MANY_READINGS: (
            '{"v":1,"readings":[%s]}'
            % ",".join(['{"ts":%d,"seq":1,"battery":{"pct":50}}' % T0] * 601)
        ).encode(),
        Reason.FUTURE_TIMESTAMP: (hr % 1_735_700_000_000).encode(),
        Reason.TOO_OLD: (hr % 1_700_000_000_000).encode(),
    }
    if reason in decoder_inputs:
        with pytest.raises(ProtocolError) as info:
            tel(decoder_inputs[reason])
        return str(info.value)
    if reason is Reason.BAD_TEXT:
        with pytest.raises(ProtocolError) as info:
            tel(b'{"v":1,"ts":%d,"seq":7,"pos":{"lat":1,"lon":2,"indoor":"\\u0000"}}' % T0)
        return str(info.value)
    if reason is Reason.DUPLICATE_KEY:
        with pytest.raises(ProtocolError) as info:
            proto.decode_event(
                "wb-0001", b'{"v":1,"ts":%d,"seq":7,"seq":8,"type":"sos"}' % T0, LIMITS
            )
        return str(info.value)
    if reason is Reason.UNKNOWN_TOPIC:
        return _pipeline_message("anxin/v1/dev/wb-0001/cmd", hr % T0)
    if reason is Reason.BEFORE_REGISTRATION:
        return _pipeline_message("anxin/v1/dev/wb-0001/telemetry", hr % 1_735_600_000_000)
    if reason is Reason.UNKNOWN_DEVICE:
        return _pipeline_message("anxin/v1/dev/wb-0009/telemetry", hr % T0)
    if reason is Reason.DEVICE_MISMATCH:
        return _pipeline_message(
            "anxin/v1/dev/hub-0007/telemetry", (hr % T0).replace('"seq"', '"dev":"wb-0002","seq"')
        )
    assert reason is Reason.RETIRED_DEVICE
    return _pipeline_message("anxin/v1/dev/wb-0003/telemetry", hr % T0)


def test_dead_letter_table_lists_every_reason() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("## 10. Dead-letter reasons") :]
    listed = re.findall(r"^\| `(\w+)` ", table, re.M)
    assert listed == [r.value for r in Reason]


@pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.STORAGE_REJECTED], ids=str)
def test_dead_letter_table_example_is_the_real_message(reason: Reason) -> None:
    rows = dict(TABLE_ROW.findall(DOC.read_text(encoding="utf-8")))
    assert _message_for(reason) == rows[reason.value]
