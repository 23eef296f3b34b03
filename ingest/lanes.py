"""The ingest lanes: which process takes which messages (``ANXIN_INGEST__LANE``).

* ``all``: one process takes everything (one machine, the default).
* ``urgent``: SOS presses only, in a broker session of its own (client id and shared group
  suffixed ``-urgent``), so they never queue behind telemetry at the broker, in the socket or
  for the interpreter.
* ``telemetry``: everything else: readings, statuses, and the events that are not SOS presses
  (a fall the device detected and the wearer's cancel belong to the fall detector it runs).

Both subscribed processes receive every event; each stores only its own kinds, so no event is
written twice (two writers of the same row would wait on each other's uniqueness check, and the
telemetry lane runs at a lower CPU priority). What a lane leaves is acknowledged to the broker:
the other lane's session holds its own copy until that lane has committed it.
"""

from __future__ import annotations

from core.settings import IngestLane as Lane
from devices.protocol import Channel, EventKind, subscriptions
from ingest.pipeline import Batch

#: The event kinds the urgent lane stores and acts on; the telemetry lane stores the others.
URGENT_EVENTS = frozenset({EventKind.SOS})


def client_id(name: str, lane: Lane) -> str:
    """The broker session (client id, or shared group) of a lane's process."""
    return f"{name}-urgent" if lane == "urgent" else name


def topics(prefix: str, lane: Lane) -> list[str]:
    """What a lane's process subscribes to: events only for the urgent lane; everything for
    the others (the telemetry lane keeps the events that are not SOS presses)."""
    if lane == "urgent":
        return subscriptions(prefix, (Channel.EVENT,))
    return subscriptions(prefix)


def keep(batch: Batch, lane: Lane) -> Batch:
    """What of a processed batch this lane stores and hands to its sinks.

    The urgent lane keeps valid SOS presses and nothing else (a malformed event is the
    telemetry lane's to dead-letter, once); the telemetry lane keeps all but SOS presses.
    """
    if lane == "all":
        return batch
    urgent = lane == "urgent"
    pairs = [
        (event, row)
        for event, row in zip(batch.device_events, batch.events, strict=True)
        if (event.kind in URGENT_EVENTS) is urgent
    ]
    if urgent:
        return Batch(
            events=[row for _e, row in pairs],
            device_events=[event for event, _r in pairs],
            duplicates_in_batch=batch.duplicates_in_batch,
            messages=batch.messages,
        )
    if len(pairs) == len(batch.device_events):
        return batch
    batch.device_events = [event for event, _r in pairs]
    batch.events = [row for _e, row in pairs]
    return batch
