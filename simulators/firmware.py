"""The firmware side of a connection: what goes out, when, and what waits (pure, no I/O).

A *link* is one MQTT connection: a device with a connection of its own, or a bedside hub that
publishes for the devices bound to it (on its own topics, each reading and event naming its
device in ``dev``). :class:`Firmware` turns what the devices measure and the wearer presses
into :class:`Action` values for the I/O shell (:mod:`simulators.links`):

* connected: a reading is published when taken (or gathered and published as one batch every
  ``upload_every_s``); an event at once;
* the connection lost (``drop``: no DISCONNECT, the broker publishes the Last Will) or shut
  down (an offline status with a reason, then DISCONNECT): readings and events wait in the
  backlog;
* reconnected (persistent session): the online status, then the events that waited, then the
  backlog oldest first in batches of at most 60 readings and 48 KiB, each reading with its
  original timestamp and sequence number.

Statuses carry no timestamp here: the shell stamps them with the device clock at the moment it
sends them (a status is about the connection now, also when the readings replay a past day).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgspec

from devices import protocol as proto

MAX_BATCH_READINGS = 60
MAX_BATCH_BYTES = 48 * 1024


class Step(enum.StrEnum):
    CONNECT = "connect"
    """Open the connection (persistent session, Last Will set with the time of connecting)."""
    STATUS = "status"
    """Publish the link's status (retained), stamped when sent."""
    PUBLISH = "publish"
    DROP = "drop"
    """Lose the connection without DISCONNECT: the broker publishes the Last Will."""
    DISCONNECT = "disconnect"


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the shell does on a link at scenario time ``t``.

    ``label`` names what a publish carries for the report (``sos``, ``malformed:nan``, ...);
    ``device`` the device an event is of (a hub's events are of the devices behind it).
    """

    t: float
    link: str
    step: Step
    channel: proto.Channel | None = None
    payload: bytes = b""
    online: bool = True
    reason: str | None = None
    label: str = ""
    device: str = ""


@dataclass
class Firmware:
    """One link's connection state, upload schedule and backlog."""

    link: str
    upload_every_s: float = 0.0
    online: bool = False
    readings: list[proto.ReadingWire] = field(default_factory=list)
    events: list[tuple[bytes, str, str]] = field(default_factory=list)
    last_upload_t: float = 0.0
    battery_pct: float | None = None

    # -- connection --------------------------------------------------------------------
    def connect(self, t: float) -> list[Action]:
        self.online = True
        out = [Action(t, self.link, Step.CONNECT), Action(t, self.link, Step.STATUS, online=True)]
        out += self._send_events(t)
        out += self._flush(t)
        return out

    def drop(self, t: float) -> list[Action]:
        self.online = False
        return [Action(t, self.link, Step.DROP)]

    def shutdown(self, t: float, reason: str) -> list[Action]:
        """A deliberate disconnect: an offline status with ``reason``, then DISCONNECT."""
        self.online = False
        return [
            Action(t, self.link, Step.STATUS, online=False, reason=reason),
            Action(t, self.link, Step.DISCONNECT),
        ]

    # -- data --------------------------------------------------------------------------
    def take(self, t: float, readings: list[proto.ReadingWire]) -> list[Action]:
        """Readings measured at ``t`` (already carrying ``dev`` when behind a hub)."""
        self.readings.extend(readings)
        return self.tick(t)

    def tick(self, t: float) -> list[Action]:
        """Upload what is due at ``t``."""
        if not self.online or not self.readings:
            return []
        if self.upload_every_s and t - self.last_upload_t < self.upload_every_s - 1e-9:
            return []
        return self._flush(t)

    def event(self, t: float, payload: bytes, label: str, device: str) -> list[Action]:
        self.events.append((payload, label, device))
        return self._send_events(t) if self.online else []

    def raw(self, t: float, channel: proto.Channel, payload: bytes, label: str) -> list[Action]:
        """Send bytes as they are (bad firmware); lost when offline, as a real bug's would be."""
        if not self.online:
            return []
        return [Action(t, self.link, Step.PUBLISH, channel, payload, label=label)]

    def _send_events(self, t: float) -> list[Action]:
        out = [
            Action(t, self.link, Step.PUBLISH, proto.Channel.EVENT, p, label=label, device=dev)
            for p, label, dev in self.events
        ]
        self.events = []
        return out

    def _flush(self, t: float) -> list[Action]:
        self.last_upload_t = t
        out: list[Action] = []
        pending, self.readings = self.readings, []
        for chunk in batches(pending):
            out.append(
                Action(
                    t,
                    self.link,
                    Step.PUBLISH,
                    proto.Channel.TELEMETRY,
                    proto.encode_telemetry(chunk),
                    label="telemetry" if len(chunk) == 1 else f"batch of {len(chunk)}",
                )
            )
        return out


def batches(readings: list[proto.ReadingWire]) -> list[list[proto.ReadingWire]]:
    """Split readings, oldest first, into messages of at most 60 readings and 48 KiB."""
    out: list[list[proto.ReadingWire]] = []
    current: list[proto.ReadingWire] = []
    size = 0
    for r in readings:
        n = len(msgspec.json.encode(r))
        if current and (len(current) >= MAX_BATCH_READINGS or size + n > MAX_BATCH_BYTES):
            out.append(current)
            current, size = [], 0
        current.append(r)
        size += n + 1
    if current:
        out.append(current)
    return out


def for_device(reading: proto.ReadingWire, dev: str | None) -> proto.ReadingWire:
    """The reading as a hub sends it for ``dev`` (unchanged when ``dev`` is None)."""
    return reading if dev is None else msgspec.structs.replace(reading, dev=dev)
