"""Protocol v1 topics: ``{prefix}/dev/{device_id}/{channel}``."""

from __future__ import annotations

from collections.abc import Sequence

from devices.protocol.payloads import (
    DEVICE_ID_MAX,
    Channel,
    ProtocolError,
    Reason,
)


def topic(prefix: str, device_id: str, channel: Channel) -> str:
    return f"{prefix}/dev/{device_id}/{channel.value}"


def subscriptions(
    prefix: str, channels: Sequence[Channel] = (Channel.TELEMETRY, Channel.EVENT, Channel.STATUS)
) -> list[str]:
    """The topic filters the ingester subscribes to (all channels unless given)."""
    return [f"{prefix}/dev/+/{c.value}" for c in channels]


def parse_topic(prefix: str, name: str) -> tuple[str, Channel]:
    """Split a device topic into (device id, channel).

    Raises:
        ProtocolError: UNKNOWN_TOPIC when the topic is not ``{prefix}/dev/{id}/{channel}``.
    """
    head = prefix + "/dev/"
    if not name.startswith(head):
        raise ProtocolError(Reason.UNKNOWN_TOPIC, f"topic {name!r} is not under {head!r}")
    device_id, sep, chan = name[len(head) :].partition("/")
    if not sep or not device_id or len(device_id) > DEVICE_ID_MAX:
        raise ProtocolError(Reason.UNKNOWN_TOPIC, f"topic {name!r} has no valid device id")
    if chan == "telemetry":
        return device_id, Channel.TELEMETRY
    if chan == "event":
        return device_id, Channel.EVENT
    if chan == "status":
        return device_id, Channel.STATUS
    raise ProtocolError(
        Reason.UNKNOWN_TOPIC,
        f"topic {name!r} ends in {chan!r}, expected telemetry, event or status",
    )
