"""Feed the detectors from the ingest stream, store their findings, keep their state.

:class:`DetectionSink` is a :class:`ingest.service.BatchSink`: the ingester calls it on the
writer thread after each committed batch. Per call it

1. turns the accelerometer bursts of the batch into one :class:`detectors.falls.FallBatch`
   (int16 counts times scale, as float32 g, ragged bursts padded) and runs it through a
   :class:`detectors.placement.FallRouter`, which hands each device's rows to the fall detector
   of its placement (the registry's: wrist, waist, chest); the device's own
   ``sos``/``fall``/``cancel`` events act on the router's windows
   (:func:`detectors.events.device_event_findings`);
2. keeps the recent vital signs of each device in a bounded ring and scores NEWS2 for the
   devices whose ring gained a slot (:mod:`ingest.vitals_stage`);
3. tracks last-seen time, MQTT Last Will and battery per device and runs the device-health
   detector (:mod:`ingest.health_stage`); watches behaviour (:mod:`ingest.behaviour`) and
   daily trends (:mod:`ingest.trends`);
4. writes the findings into ``findings`` in one transaction and hands them to its listeners.

Per-device detector state goes to ``detector_state`` every ``persist_every_s`` (only devices
that changed) and on :meth:`DetectionSink.close`, and is loaded on the first call, so a
restarted ingester carries on. After a crash the rings lose what came after the last save (the
broker does not redeliver acknowledged messages); open fall confirmation windows survive.

Detection never endangers stored data: the batch is already committed and acknowledged when
the sink runs. Every stage is guarded on its own (a bad burst cannot swallow an SOS); a failure
is logged, counted in ``anxin_detection_errors{stage}`` and the sink goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from core.clock import Clock, SystemClock
from core.placement import Placement
from detectors.events import sos_finding
from detectors.findings import DetectorError, Finding, StoredFinding
from detectors.news2_charts import News2Settings
from devices.model import DeviceKind, placement_of
from devices.protocol import EventKind
from ingest.behaviour import BehaviourStage
from ingest.detection_state import DetectionConfig
from ingest.detection_store import DETECTED_EVENTS, DetectionStore, EventKey
from ingest.falls_stage import FallsStage
from ingest.health_stage import HealthStage
from ingest.pipeline import Batch, DeviceInfo
from ingest.state_saver import StateCodec, StateSaver
from ingest.trends import TrendsStage
from ingest.vitals_stage import VitalsStage

log = logging.getLogger(__name__)

FindingListener = Callable[[list[StoredFinding]], None]
"""Gets the findings of one call that were stored by it (never an empty list), with their ids."""

DeviceLookup = Callable[[str], DeviceInfo | None]

_SOS = frozenset({EventKind.SOS})
_FALL_EVENTS = frozenset(DETECTED_EVENTS) - _SOS
_PLACEMENTS = {p.value: p for p in Placement}
_KINDS = {k.value: k for k in DeviceKind}
_FALL, _VITALS, _HEALTH, _BEHAVIOUR = "fall", "vitals", "health", "behaviour"

#: The sink's stages, in the order each batch goes through them.
STAGES = ("sos", "events", "falls", "vitals", "behaviour", "trends", "health")
#: What the urgent lane's process runs: SOS presses, which need no state.
URGENT_STAGES = ("sos",)
#: The event kinds each stage acts on (and marks handled).
_STAGE_EVENTS: dict[str, frozenset[EventKind]] = {"sos": _SOS, "events": _FALL_EVENTS}


@dataclass(frozen=True)
class DetectionMetrics:
    errors: Counter
    findings: Counter
    skipped_bursts: Counter
    seconds: Histogram


def create_detection_metrics(registry: CollectorRegistry) -> DetectionMetrics:
    return DetectionMetrics(
        errors=Counter(
            "anxin_detection_errors",
            "Detection failures by stage (the batch itself is stored regardless).",
            ["stage"],
            registry=registry,
        ),
        findings=Counter(
            "anxin_detection_findings", "Findings produced, by kind.", ["kind"], registry=registry
        ),
        skipped_bursts=Counter(
            "anxin_detection_skipped_bursts",
            "Accelerometer bursts not fed to the fall detector, by reason.",
            ["reason"],
            registry=registry,
        ),
        seconds=Histogram(
            "anxin_detection_seconds",
            "Time spent in detection per batch.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=registry,
        ),
    )


class DetectionSink:
    """Runs the detectors over each committed batch; stores and hands on their findings.

    Example (in the ingest runner)::

        service = IngestService(settings)
        sink = DetectionSink(settings.db.url, lambda d: service.devices.get(d),
                             registry=service.metrics.registry)
        service.add_sink(sink)
        try:
            service.run()
        finally:
            sink.close()

    Args:
        db_url: PostgreSQL URL; the sink opens its own connection (not the store's).
        devices: Device id -> :class:`DeviceInfo` (for resident ids), None if unknown.
        config: Detector configurations and the sink's own intervals.
        news2_settings: Fixed per-resident NEWS2 settings (doctor's thresholds, SpO2 scale);
            None: the registry's (ingest/news2_settings.py), read again when they change.
        clock: Server clock, for :meth:`close` and the state's ``updated_at``.
        registry: Prometheus registry for the sink's metrics (its own if None).
        listeners: Called with each call's findings after they were stored.
        connect_timeout_s: Database connect timeout.
        stages: The stages this sink runs (of :data:`STAGES`). With :data:`URGENT_STAGES` it
            keeps no per-device state: it loads and saves none, and replays no bursts.
    """

    def __init__(
        self,
        db_url: str,
        devices: DeviceLookup,
        *,
        config: DetectionConfig | None = None,
        news2_settings: Mapping[str, News2Settings] | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        listeners: Sequence[FindingListener] = (),
        connect_timeout_s: float = 5.0,
        stages: Sequence[str] = STAGES,
    ) -> None:
        unknown = set(stages) - set(STAGES)
        if unknown or not stages:
            raise DetectorError(f"unknown detection stages {sorted(unknown)}; known: {STAGES}")
        self.stages = tuple(s for s in STAGES if s in stages)
        # Every stage but the SOS one keeps per-device state (load, save, replay).
        self.stateful = any(s not in URGENT_STAGES for s in self.stages)
        self.event_kinds = frozenset(k for s in self.stages for k in _STAGE_EVENTS.get(s, ()))
        self.store = DetectionStore(db_url, connect_timeout_s=connect_timeout_s)
        self._devices = devices
        self.config = config or DetectionConfig()
        self._clock = clock or SystemClock()
        self.registry = registry or CollectorRegistry()
        self.metrics = create_detection_metrics(self.registry)
        self._listeners = list(listeners)
        # The ingester calls the sink from two threads (telemetry, and the urgent lane of
        # events and statuses). The detectors' state is guarded by one lock, taken per stage,
        # so an SOS waits at most for one stage of a telemetry batch; findings are stored and
        # handed on outside it, each thread on its own connection.
        self._lock = threading.RLock()
        # One fall detector per placement (wrist, waist/chest); each device goes to its own.
        self.falls = FallsStage(self._placement, self.config.fall, self.metrics.skipped_bursts)
        self.vitals = VitalsStage(self.config, self.store, news2_settings)
        self.health = HealthStage(self.config)
        self.behaviour = BehaviourStage(self.store.watched, self.config.behaviour)
        self.trends = TrendsStage(self.store.daily_vitals, self.config.trends)
        # Per-device state, saved off the ingest writer thread (see persist()).
        self.saver = StateSaver(
            self.store,
            {
                _FALL: StateCodec(self.falls.export_device, self.falls.import_device),
                _VITALS: StateCodec(self.vitals.ring.export, self.vitals.ring.import_),
                _HEALTH: StateCodec(self.health.table.export, self.health.table.import_),
                _BEHAVIOUR: StateCodec(self.behaviour.table.export, self.behaviour.table.import_),
            },
            self.metrics.errors,
        )
        self._loaded = not self.stateful  # nothing to load without state
        self._started_ms: int | None = None
        self._last_persist_ms: int | None = None

    def _placement(self, device_id: str) -> Placement:
        """Where the device is worn, from the registry (unknown device or kind: UNKNOWN)."""
        info = self._devices(device_id)
        if info is None:
            return Placement.UNKNOWN
        explicit = _PLACEMENTS.get(info.placement or "")
        kind = _KINDS.get(info.kind)
        if kind is None:
            return explicit or Placement.UNKNOWN
        return placement_of(kind, explicit)

    # -- public ------------------------------------------------------------------------
    def add_listener(self, listener: FindingListener) -> None:
        self._listeners.append(listener)

    def __call__(self, batch: Batch, now_ms: int) -> None:
        """Detect on one committed batch; thread-safe (see the class's notes)."""
        with self.metrics.seconds.time():
            self._call(batch, now_ms)

    def close(self) -> None:
        """Save the state of every device that changed, then close the connections."""
        try:
            if self._loaded and self.stateful:
                self._guard("persist", lambda: self.persist(self._clock.now_ms(), wait=True))
        finally:
            self.saver.close()
            self.trends.close()
            self.store.close()

    def persist(self, now_ms: int, *, wait: bool = False, limit: int | None = None) -> int:
        """Save the state of the devices that changed since their last save; returns rows.

        ``limit`` caps the devices per detector taken in this call (the oldest changes first);
        the sink saves a slice every second so no call stalls the stream. The rows are written
        in the background (:class:`ingest.state_saver.StateSaver`); when the previous save is
        still running, this one is skipped and the devices stay marked as changed.
        """
        with self._lock:
            if self.saver.busy() and not wait:
                return 0  # tried again at the next call
            self._last_persist_ms = now_ms
            return self.saver.save(now_ms, wait=wait, limit=limit)

    def load(self) -> int:
        """Load the saved per-device state (done on the first call); returns devices loaded."""
        with self._lock:
            if self._loaded:
                return 0
            return self._load()

    def reload(self, devices: Callable[[str], bool]) -> int:
        """Load the saved state of the ``devices`` again (a partition taken over from another
        ingester, which saved it when it let go or some seconds before it died)."""
        with self._lock:
            return self._load(devices)

    def _load(self, only: Callable[[str], bool] | None = None) -> int:
        loaded = self.saver.load(only)
        self.falls.loaded()
        self._loaded = True
        log.info("detection state loaded for %d devices", len(loaded))
        return len(loaded)

    def stream_ends(self) -> dict[str, int]:
        """Device id -> epoch ms up to which the fall detector has seen its accelerometer
        stream (after :meth:`load`: what the saved state covers)."""
        with self._lock:
            return self.falls.stream_ends()

    # -- one batch ---------------------------------------------------------------------
    def _call(self, batch: Batch, now_ms: int) -> None:
        if not self._loaded and not self._guard("load", self.load):
            return
        with self._lock:
            if self._started_ms is None:
                self._started_ms = now_ms
                self._last_persist_ms = now_ms
        residents: dict[str, str | None] = {}

        def resident(dev: str) -> str | None:
            if dev in residents:
                return residents[dev]
            info = self._devices(dev)
            res = residents[dev] = info.resident_id if info is not None else None
            return res

        findings: list[Finding] = []
        detectors: dict[str, Callable[[Batch, int, Callable[[str], str | None]], list[Finding]]] = {
            "sos": self._sos,
            "events": self._events,
            "falls": self._falls,
            "vitals": self._news2,
            "behaviour": self._behaviour_stage,
            "trends": lambda _b, now, _r: self.trends.process(now),
            "health": self._device_health,
        }
        handled: list[EventKey] = []
        for stage in self.stages:
            detect = detectors[stage]
            if not self._has_work(stage, batch, now_ms):
                continue  # an SOS does not wait for the lock only to find nothing to do
            if stage == "sos":  # no state: never waits for a telemetry batch's detection
                ok = self._guard(stage, lambda d=detect: findings.extend(d(batch, now_ms, resident)))  # type: ignore[misc]  # fmt: skip
            else:
                with self._lock:
                    ok = self._guard(stage, lambda d=detect: findings.extend(d(batch, now_ms, resident)))  # type: ignore[misc]  # fmt: skip
            if stage in _STAGE_EVENTS and ok:
                # Seen by the detectors: marked handled with the findings, in one transaction.
                kinds = _STAGE_EVENTS[stage]
                handled += [
                    (e.device_id, e.ts_ms, e.seq) for e in batch.device_events if e.kind in kinds
                ]
        if findings:
            findings = [
                dataclasses.replace(f, resident_id=resident(f.device_id))
                if f.resident_id is None
                else f
                for f in findings
            ]
            for f in findings:
                self.metrics.findings.labels(f.kind.value).inc()
        if findings or handled:
            # Only what this call stored goes on (a replayed finding stored before does not);
            # what fails here stays unhandled in the database for the sweep (ingest/recovery.py).
            stored: list[StoredFinding] = []
            self._guard("store", lambda: stored.extend(self.store.store(findings, handled)))
            if stored:
                for listener in self._listeners:
                    self._guard("listener", lambda ls=listener: ls(list(stored)))  # type: ignore[misc]
        if not self.stateful:
            return
        with self._lock:
            last = self._last_persist_ms
            # A thirtieth of the changed devices every thirtieth of the interval: each device is
            # saved about every persist_every_s, and no single call exports thousands of states.
            slices = 30
            if last is not None and now_ms - last >= self.config.persist_every_s * 1000 / slices:
                waiting = self.saver.waiting()
                limit = max(64, -(-waiting // slices))
                self._guard("persist", lambda: self.persist(now_ms, limit=limit))

    def _has_work(self, stage: str, batch: Batch, now_ms: int) -> bool:
        if stage == "sos":
            return any(e.kind in _SOS for e in batch.device_events)
        if stage == "events":
            return any(e.kind in _FALL_EVENTS for e in batch.device_events)
        if stage in ("falls", "vitals", "behaviour"):
            return bool(batch.readings)
        if stage == "trends":
            return self.trends.has_work(now_ms)
        # health: signs of life, Last Wills and batteries, or the periodic silence check
        return bool(batch.readings or batch.device_statuses) or self.health.due(now_ms)

    def _guard(self, stage: str, action: Callable[[], object]) -> bool:
        try:
            action()
        except Exception:
            self.metrics.errors.labels(stage).inc()
            log.exception(
                "detection stage %s failed; the batch is stored, detection goes on", stage
            )
            return False
        return True

    def _sos(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> list[Finding]:
        """SOS presses: a finding each at once, nothing to remember (never cancellable)."""
        return [
            sos_finding(e.device_id, resident(e.device_id), ts_ms=e.ts_ms, now_ms=now_ms, source="device")
            for e in sorted(batch.device_events, key=lambda e: e.ts_ms)
            if e.kind in _SOS
        ]  # fmt: skip

    def _events(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> list[Finding]:
        """A fall detected on the device, or the wearer's cancel: the fall detector's state."""
        events = [e for e in batch.device_events if e.kind in _FALL_EVENTS]
        if not events:
            return []
        found, changed = self.falls.device_events(events, now_ms, resident)
        self.saver.mark(_FALL, changed)
        return found

    def _falls(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> list[Finding]:
        """Accelerometer bursts to the fall detector of each device (ingest/falls_stage.py)."""
        found, changed = self.falls.process(batch, now_ms, resident)
        self.saver.mark(_FALL, changed)
        return found

    def _news2(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> list[Finding]:
        """NEWS2 of the devices whose vitals rings gained a slot (ingest/vitals_stage.py)."""
        found, changed = self.vitals.process(batch, now_ms, resident)
        self.saver.mark(_VITALS, changed)
        return found

    def _behaviour_stage(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> list[Finding]:
        """Movement and bed presence per elder (ingest/behaviour.py)."""
        found, changed = self.behaviour.process(batch, now_ms, resident)
        self.saver.mark(_BEHAVIOUR, changed)
        return found

    def _device_health(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> list[Finding]:
        """Offline and battery (ingest/health_stage.py)."""
        found, changed = self.health.process(batch, now_ms, resident, self._started_ms)
        self.saver.mark(_HEALTH, changed)
        return found
