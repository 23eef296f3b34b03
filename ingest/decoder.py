"""From received messages to a processed batch, with the device registry it needs.

:class:`BatchDecoder` keeps the registry snapshot (refreshed every ``registry_refresh_s``, and
at once when a message names a device the snapshot does not know but may have been registered
since), builds the :class:`devices.protocol.Limits` of the moment and runs
:func:`ingest.pipeline.process_batch`. Both ingest services use it: the MQTT one
(:mod:`ingest.service`) and the partitioned one on the engine (:mod:`ingest.partitioned`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from core.clock import Clock
from core.settings import Settings
from devices.protocol import Limits, Reason
from ingest.pipeline import Batch, DeviceInfo, RawMessage, process_batch
from ingest.store import TelemetryStore
from ingest.writer import Pending

T = TypeVar("T")


class BatchDecoder:
    """Decode and validate received messages against the registry.

    Args:
        settings: The ingest limits, the topic prefix and the registry refresh interval.
        registry: Where the device registry is read from (its own connection).
        clock: The server clock (limits on the readings' times).
        retry: Runs a registry read until the database answers (the writer's retry).
    """

    def __init__(
        self,
        settings: Settings,
        registry: TelemetryStore,
        clock: Clock,
        retry: Callable[[Callable[[], None]], None],
    ) -> None:
        self.settings = settings
        self._registry = registry
        self._clock = clock
        self._retry = retry
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceInfo] = {}
        self._loaded_at = 0.0
        self._loaded_ms = 0

    @property
    def devices(self) -> dict[str, DeviceInfo]:
        """The current registry snapshot (replaced, never mutated, on refresh)."""
        return self._devices

    def refresh(self, *, force: bool = False) -> None:
        """Reload the registry when the snapshot is older than ``registry_refresh_s``."""
        now = time.monotonic()
        if not force and now - self._loaded_at < self.settings.ingest.registry_refresh_s:
            return
        loaded_ms = self._clock.now_ms()
        with self._lock:
            self._devices = self._registry.load_devices()
        self._loaded_at = now
        self._loaded_ms = loaded_ms

    def load(self) -> None:
        """Load the registry now (retrying while the database is away)."""
        self._retry(lambda: self.refresh(force=True))

    def limits(self, now_ms: int) -> Limits:
        cfg = self.settings.ingest
        return Limits(
            now_ms=now_ms,
            max_payload_bytes=cfg.max_payload_bytes,
            max_readings=cfg.max_readings_per_message,
            max_future_skew_ms=int(cfg.max_future_skew_s * 1000),
            max_age_ms=int(cfg.max_age_days * 86_400_000),
        )

    def process(self, pending: list[Pending]) -> Batch:
        raw = [RawMessage(msg.topic, msg.payload, received) for msg, received, _g, _o in pending]
        limits = self.limits(self._clock.now_ms())
        prefix = self.settings.mqtt.topic_prefix
        batch = process_batch(raw, self._devices, limits, prefix)
        unknown = [d.received_ms for d in batch.dead_letters if d.reason is Reason.UNKNOWN_DEVICE]
        if unknown and self._loaded_ms <= max(unknown):
            # The snapshot is older than the message: the device may have been registered in
            # between. Look again before dead-lettering it.
            self._retry(lambda: self.refresh(force=True))
            batch = process_batch(raw, self._devices, limits, prefix)
        return batch

    def close(self) -> None:
        self._registry.close()
