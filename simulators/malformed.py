"""Payloads of bad firmware: each variant and the dead-letter reason the server gives it.

Pure: a variant, a timestamp and a sequence number in, bytes out. The reasons are those of
docs/protocol.md, section 10.
"""

from __future__ import annotations

from devices.protocol import Channel, Reason

#: variant -> (channel, payload template, the reason the server must give)
VARIANTS: dict[str, tuple[Channel, str, Reason]] = {
    "truncated": (
        Channel.TELEMETRY,
        '{{"v": 1, "ts": {ts}, "seq": {seq}, "vitals": {{"hr": 72, "sp',
        Reason.MALFORMED_JSON,
    ),
    "unknown_field": (
        Channel.TELEMETRY,
        '{{"v": 1, "ts": {ts}, "seq": {seq}, "vitals": {{"heart_rate": 72}}}}',
        Reason.SCHEMA,
    ),
    "nan": (
        Channel.TELEMETRY,
        '{{"v": 1, "ts": {ts}, "seq": {seq}, "vitals": {{"hr": NaN}}}}',
        Reason.NON_FINITE,
    ),
    "out_of_range": (
        Channel.TELEMETRY,
        '{{"v": 1, "ts": {ts}, "seq": {seq}, "vitals": {{"hr": 400}}}}',
        Reason.OUT_OF_RANGE,
    ),
    "wrong_version": (
        Channel.TELEMETRY,
        '{{"v": 2, "ts": {ts}, "seq": {seq}, "vitals": {{"hr": 72}}}}',
        Reason.UNSUPPORTED_VERSION,
    ),
    "bad_base64": (
        Channel.TELEMETRY,
        '{{"v": 1, "ts": {ts}, "seq": {seq}, "accel": {{"hz": 25, "scale": 0.001, "data": "@@@"}}}}',
        Reason.SCHEMA,
    ),
    "clock_far_ahead": (
        Channel.TELEMETRY,
        '{{"v": 1, "ts": {future}, "seq": {seq}, "vitals": {{"hr": 72}}}}',
        Reason.FUTURE_TIMESTAMP,
    ),
    "no_clock": (
        Channel.TELEMETRY,
        '{{"v": 1, "ts": 1000, "seq": {seq}, "vitals": {{"hr": 72}}}}',
        Reason.TOO_OLD,
    ),
    "unknown_event": (
        Channel.EVENT,
        '{{"v": 1, "ts": {ts}, "seq": {seq}, "type": "explode"}}',
        Reason.SCHEMA,
    ),
    "duplicate_key": (
        Channel.TELEMETRY,
        '{{"v": 1, "ts": {ts}, "seq": {seq}, "vitals": {{"hr": 72, "hr": 75}}}}',
        Reason.DUPLICATE_KEY,
    ),
}


def malformed(variant: str, ts_ms: int, seq: int) -> tuple[Channel, bytes, Reason]:
    """The channel, bytes and expected dead-letter reason of ``variant``.

    Raises:
        KeyError: an unknown variant (the scenario validator names the known ones first).
    """
    channel, template, reason = VARIANTS[variant]
    text = template.format(ts=ts_ms, seq=seq, future=ts_ms + 3_600_000)
    return channel, text.encode(), reason
