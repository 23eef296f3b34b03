"""What a crash left undone, taken up at start-up and by a sweep every few seconds.

The ingester acknowledges a message once it is committed, and detects and alerts in later
transactions. A process that dies in between leaves stored rows that nobody has acted on, and
the broker will not send them again. The database says what they are (0008_recovery):

* events (SOS, fall, cancel) with no ``handled_at``: the detectors never saw them;
* findings with no ``alerted_at``: no alert acted on them;
* accelerometer bursts stored after the fall detector's last saved state: the state that a
  fall's confirmation depends on.

At start-up, before the first message is taken, :meth:`Recovery.on_start` loads the saved
detector state, replays the bursts stored since the last save through the fall detector (the
detector skips what its saved state had already seen), hands the unhandled events to the
detectors and raises the unalerted findings. While running, :meth:`Recovery.sweep` does the
last two for rows older than ``grace_s`` (a detection or alert step that failed, or an ingester
on another machine that died). Each step is idempotent: a finding is stored once (unique per
device, kind and time) and raised once (marked alerted in the alert's own transaction).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from core.clock import Clock, SystemClock
from ingest.detection import DetectionSink
from ingest.pipeline import Batch

log = logging.getLogger(__name__)


class FindingSweeper(Protocol):
    """Raises the stored findings of the given ids that have no alert yet; how many."""

    def sweep(self, finding_ids: list[int]) -> int: ...


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What one start-up recovery or sweep did."""

    bursts: int = 0
    events: int = 0
    findings: int = 0
    seconds: float = 0.0


class Recovery:
    """Start-up replay and the periodic sweep of one ingester.

    Args:
        sink: The detection sink (its store reads the database).
        alerts: Raises stored findings that have no alert (None: detection without alerts).
        clock: Server clock.
        grace_s: The sweep leaves rows younger than this to the live path.
        replay_window_s: A restart replays at most this much of stored accelerometer data.
        replay_margin_s: Bursts replayed from this long before the last state save (each
            device's state is saved about every 30 s; a device's own saved mark then skips
            what its state had seen).
        registry: Prometheus registry for ``anxin_ingest_swept_total`` (its own if None).
    """

    def __init__(
        self,
        sink: DetectionSink,
        alerts: FindingSweeper | None,
        *,
        clock: Clock | None = None,
        grace_s: float = 10.0,
        replay_window_s: float = 600.0,
        replay_margin_s: float = 40.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._sink = sink
        self._alerts = alerts
        self._clock = clock or SystemClock()
        self.grace_s = grace_s
        self.replay_window_s = replay_window_s
        self.replay_margin_s = replay_margin_s
        # Work a running sweep finds means a detection or alert step failed, or an ingester
        # died: worth an alert of its own (deploy/prometheus/rules.yml).
        self.swept = Counter(
            "anxin_ingest_swept",
            "Events and findings a running sweep found left unhandled and handled, by what.",
            ["what"],
            registry=registry or CollectorRegistry(),
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now_ms() / 1000, UTC)

    def on_start(self, *, replay: bool = True) -> RecoveryReport:
        """Load state, replay bursts since the last save (unless ``replay`` is False: the
        partitioned ingest replays each partition when it takes it), handle events, raise
        findings."""
        started = time.perf_counter()
        store = self._sink.store
        bursts = 0
        floor: datetime | None = None
        if self._sink.stateful:  # the urgent lane's sink keeps no state: nothing to replay
            self._sink.load()
        if self._sink.stateful and replay:
            floor = store.replay_floor(
                self._now(), window_s=self.replay_window_s, margin_s=self.replay_margin_s
            )
            for readings in store.bursts_since(floor, self._sink.stream_ends()):
                bursts += len(readings)
                self._sink(Batch(readings=readings), self._clock.now_ms())
        tail = self._take_up(older_than=None)
        report = RecoveryReport(
            bursts, tail.events, tail.findings, round(time.perf_counter() - started, 3)
        )
        log.info(
            "recovery at start: %d accelerometer bursts replayed since %s, %d unhandled events, "
            "%d findings without an alert raised, in %.2f s",
            report.bursts,
            floor.isoformat(timespec="seconds") if floor else "(none: no state)",
            report.events,
            report.findings,
            report.seconds,
        )
        return report

    def take_over(self, devices: Callable[[str], bool]) -> int:
        """Partitions taken from another ingester: load their devices' saved detector state and
        replay their stored accelerometer bursts since; returns the bursts replayed."""
        if not self._sink.stateful:
            return 0
        started = time.perf_counter()
        store = self._sink.store
        self._sink.reload(devices)
        floor = store.replay_floor(
            self._now(), window_s=self.replay_window_s, margin_s=self.replay_margin_s
        )
        ends = {d: t for d, t in self._sink.stream_ends().items() if devices(d)}
        bursts = 0
        for readings in store.bursts_since(floor, ends):
            mine = [r for r in readings if devices(r.device_id)]
            if mine:
                bursts += len(mine)
                self._sink(Batch(readings=mine), self._clock.now_ms())
        log.info(
            "take-over: %d accelerometer bursts replayed since %s in %.2f s",
            bursts,
            floor.isoformat(timespec="seconds"),
            time.perf_counter() - started,
        )
        return bursts

    def sweep(self) -> RecoveryReport:
        """Unhandled events and unalerted findings older than ``grace_s``."""
        started = time.perf_counter()
        out = self._take_up(older_than=self._now() - timedelta(seconds=self.grace_s))
        if out.events or out.findings:
            self.swept.labels("events").inc(out.events)
            self.swept.labels("findings").inc(out.findings)
            log.warning(
                "sweep: %d events and %d findings had been left unhandled; handled now",
                out.events,
                out.findings,
            )
        return RecoveryReport(0, out.events, out.findings, round(time.perf_counter() - started, 3))

    def _take_up(self, *, older_than: datetime | None) -> RecoveryReport:
        store = self._sink.store
        events = store.unhandled_events(older_than=older_than, kinds=self._sink.event_kinds)
        if events:
            self._sink(Batch(device_events=events), self._clock.now_ms())
        raised = 0
        if self._alerts is not None:
            ids = store.unalerted(older_than=older_than)
            if ids:
                raised = self._alerts.sweep(ids)
        return RecoveryReport(0, len(events), raised)

    def run(self, stop: threading.Event, every_s: float = 5.0) -> None:
        """Sweep every ``every_s`` until ``stop``; a failed sweep is logged and retried."""
        while not stop.wait(every_s):
            try:
                self.sweep()
            except Exception:
                log.exception("the recovery sweep failed; retrying in %.0f s", every_s)
