"""``anxin simulate``: simulated wristbands against the configured broker."""

from __future__ import annotations

import logging

from core import db
from core.mqtt import client_for
from core.settings import Settings
from devices.registry import ensure_devices
from simulators.wearable import Encoding, WearableFleet, publish_fleet

log = logging.getLogger(__name__)


def simulate(
    settings: Settings,
    *,
    devices: int,
    seconds: int,
    paced: bool,
    encoding: Encoding,
    register: bool,
    prefix_id: str = "sim-wb",
) -> int:
    ids = [f"{prefix_id}-{i:05d}" for i in range(devices)]
    if register:
        db.upgrade(settings.db.url, require_timescale=settings.db.require_timescale)
        with db.connect(settings.db.url) as conn:
            added = ensure_devices(conn, ids)
        log.info("registered %d new simulated devices", added)
    fleet = WearableFleet(ids, encoding=encoding).with_prefix(settings.mqtt.topic_prefix)
    client = client_for(settings.mqtt, client_id=f"{prefix_id}-simulator")
    client.connect_inline()
    report = publish_fleet(client, fleet, seconds=seconds, paced=paced)
    print(
        f"published {report.sent} messages in {report.seconds:.1f} s ({report.rate:.0f} msg/s), "
        f"{report.unacknowledged} unacknowledged"
    )
    return 0 if report.unacknowledged == 0 else 1
