"""Where a wearable is worn: the registry records it, the ingester picks a fall detector by it."""

from __future__ import annotations

from enum import StrEnum


class Placement(StrEnum):
    """Body placement of a device's accelerometer."""

    WRIST = "wrist"
    WAIST = "waist"
    CHEST = "chest"
    UNKNOWN = "unknown"
