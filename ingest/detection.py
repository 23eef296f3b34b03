"""Feed the detectors from the ingest stream, store their findings, keep their state.

:class:`DetectionSink` is a :class:`ingest.service.BatchSink`: the ingester calls it on the
writer thread after each committed batch. Per call it

1. turns the accelerometer bursts of the batch into one :class:`detectors.falls.FallBatch`
   (int16 counts times scale, as float32 g, ragged bursts padded) and runs
   :meth:`FallDetector.process`; the device's own ``sos``/``fall``/``cancel`` events go to
   :meth:`FallDetector.device_events`;
2. keeps the recent vital signs of each device in a bounded ring (one reading per time slot and
   parameter, enough slots to cover the NEWS2 window) and scores NEWS2 for the devices whose
   ring gained a slot;
3. tracks last-seen time, MQTT Last Will and battery per device and runs the device-health
   detector (at once for a Last Will, otherwise every ``health_every_s``);
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
import enum
import itertools
import logging
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from prometheus_client import CollectorRegistry, Counter, Histogram
from psycopg.types.json import Jsonb

from core.clock import Clock, SystemClock
from detectors.falls import MAX_RATE_HZ, MIN_RATE_HZ, FallBatch, FallConfig, FallDetector
from detectors.findings import (
    DetectorError,
    FallEvidence,
    Finding,
    FindingKind,
)
from detectors.health import DeviceHealthBatch, HealthConfig, health_findings
from detectors.vitals import (
    N_PARAMS,
    News2Settings,
    Param,
    VitalReadings,
    VitalsConfig,
    news2_findings,
)
from devices.protocol import EventKind
from ingest.pipeline import Batch, DeviceInfo

log = logging.getLogger(__name__)

FindingListener = Callable[[list[Finding]], None]
"""Gets the findings of one batch (never an empty list), after they were stored."""

DeviceLookup = Callable[[str], DeviceInfo | None]

_EMPTY = np.iinfo(np.int64).min
_ACVPU = {"A": 0, "C": 1, "V": 2, "P": 3, "U": 4}
_DEVICE_EVENTS = {EventKind.SOS.value, EventKind.FALL.value, EventKind.CANCEL.value}
_FALL, _VITALS, _HEALTH = "fall", "vitals", "health"
_P_PULSE, _P_SPO2, _P_RESP = int(Param.PULSE), int(Param.SPO2), int(Param.RESPIRATION_RATE)
_P_TEMP, _P_SBP = int(Param.TEMPERATURE), int(Param.SYSTOLIC_BP)
_P_O2, _P_ACVPU = int(Param.SUPPLEMENTAL_O2), int(Param.CONSCIOUSNESS)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DetectionConfig:
    """How the ingest stream drives the detectors.

    Attributes:
        fall: Fall detector thresholds and windows.
        vitals: NEWS2 window and minimum readings.
        health: Device health thresholds.
        expected_interval_s: How often a device reports; silence of ``health.offline_factor``
            times this is offline.
        vitals_slots: Readings kept per device and parameter: one per slot of
            ``vitals.window_s / (vitals_slots - 1)`` seconds (the latest in the slot), so the
            ring covers the NEWS2 window at bounded memory whatever the device's rate.
        news2_repeat_s: An unchanged NEWS2 result is reported again after this long.
        health_every_s: Silence and battery are checked for all devices this often (a Last
            Will at once).
        persist_every_s: Changed per-device state is saved this often (and on close).
    """

    fall: FallConfig = field(default_factory=FallConfig)
    vitals: VitalsConfig = field(default_factory=VitalsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    expected_interval_s: float = 60.0
    vitals_slots: int = 41
    news2_repeat_s: float = 900.0
    health_every_s: float = 10.0
    persist_every_s: float = 30.0

    def __post_init__(self) -> None:
        if self.vitals_slots < 2:
            raise ValueError(
                f"DetectionConfig vitals_slots is {self.vitals_slots}; expected at least 2."
            )


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


# --------------------------------------------------------------------------- vitals ring
_VITALS_HEADER = struct.Struct("<4sHHqqbq")
_VITALS_MAGIC = b"AXV1"


class _VitalsRings:
    """Per device and parameter, one reading per time slot in a ring of ``slots`` slots."""

    ts: I64
    val: F64
    emit_sig: I64
    emit_ms: I64

    def __init__(self, config: DetectionConfig) -> None:
        self.slots = config.vitals_slots
        self.slot_ms = max(1, round(config.vitals.window_s * 1000 / (self.slots - 1)))
        self.rows: dict[str, int] = {}
        self.ids: list[str] = []
        self._alloc(64)

    def _alloc(self, cap: int) -> None:
        ts = np.full((cap, N_PARAMS, self.slots), _EMPTY, np.int64)
        val = np.zeros((cap, N_PARAMS, self.slots), np.float64)
        emit_sig = np.full(cap, -1, np.int64)
        emit_ms = np.full(cap, _EMPTY, np.int64)
        used = len(self.ids)
        if used:  # grow: keep what is there
            ts[:used] = self.ts[:used]
            val[:used] = self.val[:used]
            emit_sig[:used] = self.emit_sig[:used]
            emit_ms[:used] = self.emit_ms[:used]
        self.ts, self.val, self.emit_sig, self.emit_ms = ts, val, emit_sig, emit_ms

    def row(self, device_id: str) -> int:
        r = self.rows.get(device_id)
        if r is None:
            r = len(self.ids)
            if r >= self.ts.shape[0]:
                self._alloc(2 * self.ts.shape[0])
            self.rows[device_id] = r
            self.ids.append(device_id)
        return r

    def add(self, rows: I64, params: I64, ts: I64, values: F64) -> I64:
        """Store readings; return the rows whose ring gained a new slot (worth scoring)."""
        slot = ts // self.slot_ms
        flat = (rows * N_PARAMS + params) * self.slots + slot % self.slots
        # The latest reading of each slot wins; older ones (redelivered, out of order) lose.
        order = np.lexsort((ts, flat))
        fs = flat[order]
        last = np.ones(fs.size, np.bool_)
        last[:-1] = fs[1:] != fs[:-1]
        pick = order[last]
        flat, ts, values, slot, rows = flat[pick], ts[pick], values[pick], slot[pick], rows[pick]
        ring_ts = self.ts.reshape(-1)
        old = ring_ts[flat]
        newer = ts > old
        ring_ts[flat[newer]] = ts[newer]
        self.val.reshape(-1)[flat[newer]] = values[newer]
        opened = newer & ((old == _EMPTY) | (old // self.slot_ms != slot))
        return np.unique(rows[opened])

    def readings(self, rows: I64, resident: Callable[[str], str | None]) -> VitalReadings:
        ts = self.ts[rows]
        valid = ts != _EMPTY
        local = np.broadcast_to(np.arange(rows.size)[:, None, None], ts.shape)
        param = np.broadcast_to(np.arange(N_PARAMS)[None, :, None], ts.shape)
        ids = [self.ids[r] for r in rows.tolist()]
        return VitalReadings(
            device_ids=ids,
            resident_ids=[resident(d) for d in ids],
            row=local[valid].astype(np.int64),
            ts_ms=ts[valid],
            param=param[valid].astype(np.int64),
            value=self.val[rows][valid],
        )

    def export(self, device_id: str) -> bytes:
        r = self.rows[device_id]
        head = _VITALS_HEADER.pack(
            _VITALS_MAGIC,
            N_PARAMS,
            self.slots,
            self.slot_ms,
            int(self.emit_sig[r]),
            0,
            int(self.emit_ms[r]),
        )
        body: bytes = self.ts[r].astype("<i8").tobytes() + self.val[r].astype("<f8").tobytes()
        return head + body

    def import_(self, device_id: str, data: bytes) -> None:
        magic, n_params, slots, slot_ms, sig, _, emit_ms = _VITALS_HEADER.unpack_from(data)
        size = _VITALS_HEADER.size + 16 * n_params * slots
        if (magic, n_params, slots, slot_ms, len(data)) != (
            _VITALS_MAGIC,
            N_PARAMS,
            self.slots,
            self.slot_ms,
            size,
        ):
            raise ValueError(
                f"vitals state of {len(data)} bytes has {slots} slots of {slot_ms} ms; expected "
                f"{self.slots} slots of {self.slot_ms} ms ({size} bytes)"
            )
        r = self.row(device_id)
        shape = (N_PARAMS, self.slots)
        body = _VITALS_HEADER.size
        self.ts[r] = np.frombuffer(data, "<i8", N_PARAMS * self.slots, body).reshape(shape)
        self.val[r] = np.frombuffer(
            data, "<f8", N_PARAMS * self.slots, body + 8 * N_PARAMS * self.slots
        ).reshape(shape)
        self.emit_sig[r] = sig
        self.emit_ms[r] = emit_ms


# --------------------------------------------------------------------------- device health
_HEALTH_STATE = struct.Struct("<4sq?dqd?b")
_HEALTH_MAGIC = b"AXH1"


class _HealthTable:
    """Last seen, Last Will and battery per device, and what was already reported."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.ids: list[str] = []
        self._alloc(64)

    def _alloc(self, cap: int) -> None:
        used = len(self.ids)
        new = {
            "last_seen": np.full(cap, -1, np.int64),
            "will": np.zeros(cap, np.bool_),
            "battery": np.full(cap, np.nan),
            "bat_ref_ms": np.full(cap, -1, np.int64),
            "bat_ref_pct": np.full(cap, np.nan),
            "bat_slope": np.full(cap, np.nan),
            "offline_reported": np.zeros(cap, np.bool_),
            "battery_reported": np.zeros(cap, np.int8),
        }
        for name, arr in new.items():
            if used:
                arr[:used] = getattr(self, name)[:used]
            setattr(self, name, arr)

    last_seen: I64
    will: npt.NDArray[np.bool_]
    battery: F64
    bat_ref_ms: I64
    bat_ref_pct: F64
    bat_slope: F64
    offline_reported: npt.NDArray[np.bool_]
    battery_reported: npt.NDArray[np.int8]

    def row(self, device_id: str) -> int:
        r = self.rows.get(device_id)
        if r is None:
            r = len(self.ids)
            if r >= self.last_seen.shape[0]:
                self._alloc(2 * self.last_seen.shape[0])
            self.rows[device_id] = r
            self.ids.append(device_id)
        return r

    def battery_level(self, r: int, ts_ms: int, pct: float, charging: bool | None) -> None:
        """Latest level and a slope over at least an hour of discharge (reset on a rise)."""
        ref_ms, ref_pct = int(self.bat_ref_ms[r]), float(self.bat_ref_pct[r])
        if charging or ref_ms < 0 or not pct <= ref_pct or ts_ms < ref_ms:
            self.bat_ref_ms[r], self.bat_ref_pct[r] = ts_ms, pct
            self.bat_slope[r] = np.nan
        elif ts_ms - ref_ms >= 3_600_000:
            self.bat_slope[r] = (pct - ref_pct) / ((ts_ms - ref_ms) / 86_400_000)
        self.battery[r] = pct

    def export(self, device_id: str) -> bytes:
        r = self.rows[device_id]
        return _HEALTH_STATE.pack(
            _HEALTH_MAGIC,
            int(self.last_seen[r]),
            bool(self.will[r]),
            float(self.battery[r]),
            int(self.bat_ref_ms[r]),
            float(self.bat_ref_pct[r]),
            bool(self.offline_reported[r]),
            int(self.battery_reported[r]),
        ) + struct.pack("<d", float(self.bat_slope[r]))

    def import_(self, device_id: str, data: bytes) -> None:
        if len(data) != _HEALTH_STATE.size + 8 or data[:4] != _HEALTH_MAGIC:
            raise ValueError(f"health state of {len(data)} bytes is not {_HEALTH_MAGIC!r} state")
        _, seen, will, bat, ref_ms, ref_pct, off, bat_rep = _HEALTH_STATE.unpack_from(data)
        r = self.row(device_id)
        self.last_seen[r], self.will[r], self.battery[r] = seen, will, bat
        self.bat_ref_ms[r], self.bat_ref_pct[r] = ref_ms, ref_pct
        self.offline_reported[r], self.battery_reported[r] = off, bat_rep
        (self.bat_slope[r],) = struct.unpack_from("<d", data, _HEALTH_STATE.size)


# --------------------------------------------------------------------------- the sink
@dataclass(slots=True)
class _Burst:
    device_id: str
    t0_ms: int
    rate: int
    scale: float
    samples: bytes


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
        news2_settings: Per-resident NEWS2 settings (doctor's thresholds, SpO2 scale).
        clock: Server clock, for :meth:`close` and the state's ``updated_at``.
        registry: Prometheus registry for the sink's metrics (its own if None).
        listeners: Called with each call's findings after they were stored.
        connect_timeout_s: Database connect timeout.
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
    ) -> None:
        self._url = db_url
        self._devices = devices
        self.config = config or DetectionConfig()
        self._news2_settings = news2_settings
        self._clock = clock or SystemClock()
        self.registry = registry or CollectorRegistry()
        self.metrics = create_detection_metrics(self.registry)
        self._listeners = list(listeners)
        self._timeout = connect_timeout_s
        # The ingester calls the sink from two threads (telemetry, and the urgent lane of
        # events and statuses). The detectors' state is guarded by one lock, taken per stage,
        # so an SOS waits at most for one stage of a telemetry batch; findings are stored and
        # handed on outside it, each thread on its own connection.
        self._lock = threading.RLock()
        self._local = threading.local()
        self._conns: list[psycopg.Connection[Any]] = []
        self._conns_lock = threading.Lock()
        # Saving per-device state runs off the ingest writer thread (see persist()).
        self._state_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector-state")
        self._state_future: Future[None] | None = None
        self._failed_state: list[tuple[str, str]] = []
        self._failed_lock = threading.Lock()
        self.falls = FallDetector(self.config.fall)
        self._vitals = _VitalsRings(self.config)
        self._health = _HealthTable()
        self._accel_end: dict[str, float] = {}
        # Devices whose state changed since it was last saved, per detector, oldest first (a
        # dict used as an ordered set): saves take the oldest, so every device gets its turn.
        self._changed: dict[str, dict[str, None]] = {_FALL: {}, _VITALS: {}, _HEALTH: {}}
        self._loaded = False
        self._started_ms: int | None = None
        self._last_health_ms = _EMPTY
        self._last_persist_ms: int | None = None

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
            if self._loaded:
                self._guard("persist", lambda: self.persist(self._clock.now_ms(), wait=True))
        finally:
            self._state_writer.shutdown(wait=True)
            with self._conns_lock:
                conns, self._conns = self._conns, []
            for conn in conns:
                conn.close()

    def persist(self, now_ms: int, *, wait: bool = False, limit: int | None = None) -> int:
        """Save the state of the devices that changed since their last save; returns rows.

        ``limit`` caps the devices per detector taken in this call (the oldest changes first);
        the sink saves a slice every second so no call stalls the stream.

        The states are exported here (copies of small arrays) and written by a background
        thread with a connection of its own, in one COPY and one upsert: writing thousands of
        devices' state on the ingest writer thread stalled the stream for a second or more
        (p99 publish-to-commit of 1.8 s at 5,000 devices in bench/ingest.py). When the previous
        save is still running, this one is skipped and the devices stay marked as changed.
        """
        with self._lock:
            return self._persist(now_ms, wait=wait, limit=limit)

    def _persist(self, now_ms: int, *, wait: bool, limit: int | None) -> int:
        if self._state_future is not None and not self._state_future.done():
            if not wait:
                return 0
            self._state_future.result()
        self._merge_failed_state()
        rows: list[tuple[str, str, bytes, datetime]] = []
        at = _dt(now_ms)
        exporters: dict[str, Callable[[str], bytes]] = {
            _FALL: self.falls.store.export_device,
            _VITALS: self._vitals.export,
            _HEALTH: self._health.export,
        }
        pending: dict[str, list[str]] = {}
        for detector, devices in self._changed.items():
            take = list(devices) if limit is None else list(itertools.islice(devices, limit))
            for dev in take:
                del devices[dev]
            pending[detector] = take
        for detector, devs in pending.items():
            export = exporters[detector]
            for dev in devs:
                if detector != _FALL or dev in self.falls.store:
                    rows.append((dev, detector, export(dev), at))
        self._last_persist_ms = now_ms
        if rows:
            self._state_future = self._state_writer.submit(self._write_state, rows)
            if wait:
                self._state_future.result()
        return len(rows)

    def _merge_failed_state(self) -> None:
        with self._failed_lock:
            failed, self._failed_state = self._failed_state, []
        for dev, detector in failed:
            self._changed.setdefault(detector, {})[dev] = None

    def _write_state(self, rows: list[tuple[str, str, bytes, datetime]]) -> None:
        try:
            timeout = max(1, int(self._timeout))
            with (
                psycopg.connect(self._url, connect_timeout=timeout) as conn,
                conn.transaction(),
                conn.cursor() as cur,
            ):
                cur.execute(
                    "CREATE TEMP TABLE _state_stage (LIKE detector_state INCLUDING DEFAULTS) ON COMMIT DROP"
                )
                with cur.copy(
                    "COPY _state_stage (device_id, detector, state, updated_at) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    """INSERT INTO detector_state (device_id, detector, state, updated_at)
                       SELECT device_id, detector, state, updated_at FROM _state_stage
                       ON CONFLICT (device_id, detector)
                       DO UPDATE SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at"""
                )
        except Exception:
            self.metrics.errors.labels("persist").inc()
            log.exception(
                "saving the state of %d detector rows failed; retried at the next save", len(rows)
            )
            with self._failed_lock:
                self._failed_state.extend((dev, detector) for dev, detector, _s, _a in rows)

    def load(self) -> int:
        """Load the saved per-device state (done on the first call); returns devices loaded."""
        with self._lock:
            if self._loaded:
                return 0
            return self._load()

    def _load(self) -> int:
        conn = self._connection()
        try:
            with conn.transaction():
                saved = conn.execute(
                    "SELECT device_id, detector, state FROM detector_state ORDER BY device_id"
                ).fetchall()
        except BaseException:
            self._drop_broken()
            raise
        importers: dict[str, Callable[[str, bytes], None]] = {
            _FALL: self.falls.store.import_device,
            _VITALS: self._vitals.import_,
            _HEALTH: self._health.import_,
        }
        loaded: set[str] = set()
        for dev, detector, state in saved:
            importer = importers.get(detector)
            if importer is None:
                continue
            try:
                importer(dev, bytes(state))
            except (DetectorError, ValueError, struct.error) as exc:
                # A configuration change (another ring size, say): start this device afresh.
                log.warning("saved %s state of device %s not loaded: %s", detector, dev, exc)
                continue
            loaded.add(dev)
        store = self.falls.store
        for dev in store.devices():
            where = store.where(dev)
            if where is not None:
                tab = store.table(where[0])
                n = int(tab.n_seen[where[1]])
                if n:
                    self._accel_end[dev] = float(tab.t0_abs[where[1]]) + n * 1000.0 / where[0]
        self._loaded = True
        log.info("detection state loaded for %d devices", len(loaded))
        return len(loaded)

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
        stages: tuple[
            tuple[str, Callable[[Batch, int, Callable[[str], str | None]], list[Finding]]], ...
        ] = (
            ("events", self._events),
            ("falls", self._falls),
            ("vitals", self._news2),
            ("health", self._device_health),
        )
        for stage, detect in stages:
            if not self._has_work(stage, batch, now_ms):
                continue  # an SOS does not wait for the lock only to find nothing to do
            with self._lock:
                self._guard(stage, lambda d=detect: findings.extend(d(batch, now_ms, resident)))  # type: ignore[misc]
        if findings:
            findings = [
                dataclasses.replace(f, resident_id=resident(f.device_id))
                if f.resident_id is None
                else f
                for f in findings
            ]
            for f in findings:
                self.metrics.findings.labels(f.kind.value).inc()
            self._guard("store", lambda: self._store_findings(findings))
            for listener in self._listeners:
                self._guard("listener", lambda ls=listener: ls(list(findings)))  # type: ignore[misc]
        with self._lock:
            last = self._last_persist_ms
            # A thirtieth of the changed devices every thirtieth of the interval: each device is
            # saved about every persist_every_s, and no single call exports thousands of states.
            slices = 30
            if last is not None and now_ms - last >= self.config.persist_every_s * 1000 / slices:
                waiting = max(len(d) for d in self._changed.values())
                limit = max(64, -(-waiting // slices))
                self._guard("persist", lambda: self.persist(now_ms, limit=limit))

    def _has_work(self, stage: str, batch: Batch, now_ms: int) -> bool:
        if stage == "events":
            return bool(batch.device_events)
        if stage in ("falls", "vitals"):
            return bool(batch.readings)
        # health: signs of life, Last Wills and batteries, or the periodic silence check
        return (
            bool(batch.readings or batch.device_statuses)
            or now_ms - self._last_health_ms >= self.config.health_every_s * 1000
        )

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

    def _events(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> list[Finding]:
        events = [e for e in batch.device_events if e.kind.value in _DEVICE_EVENTS]
        if not events:
            return []
        events.sort(key=lambda e: e.ts_ms)
        ids = [e.device_id for e in events]
        self._changed[_FALL].update(dict.fromkeys(ids))
        return self.falls.device_events(
            device_ids=ids,
            resident_ids=[resident(d) for d in ids],
            kinds=[e.kind.value for e in events],
            ts_ms=np.array([e.ts_ms for e in events], np.int64),
            now_ms=now_ms,
        )

    def _bursts(self, batch: Batch) -> list[_Burst]:
        bursts: list[_Burst] = []
        skipped = self.metrics.skipped_bursts
        max_s = self.config.fall.max_burst_s
        for r in batch.readings:
            a = r.accel
            if a is None:
                continue
            rate = a.rate_hz
            if rate != int(rate) or not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
                skipped.labels("rate").inc()
                continue
            rate_i = int(rate)
            step = round(max_s * rate_i) * 6
            data = a.samples
            if len(data) <= step:
                bursts.append(_Burst(r.device_id, r.ts_ms, rate_i, a.scale_g, data))
            else:  # longer than the detector takes in one call: split it
                for k in range(0, len(data), step):
                    t0 = r.ts_ms + round(k // 6 * 1000 / rate_i)
                    bursts.append(_Burst(r.device_id, t0, rate_i, a.scale_g, data[k : k + step]))
        return bursts

    def _falls(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> list[Finding]:
        bursts = self._bursts(batch)
        if len(bursts) > 1:
            bursts.sort(key=lambda b: (b.device_id, b.t0_ms))
        # Round k holds the k-th burst of each device (a device appears once per call).
        rounds: list[list[_Burst]] = [[]]
        occurrence: dict[str, int] = {}
        gap = self.config.fall.max_gap_ms
        for b in bursts:
            end = self._accel_end.get(b.device_id)
            if end is not None and b.t0_ms < end - gap:
                # Already seen (a redelivery after a restart) or older than what was fed.
                self.metrics.skipped_bursts.labels("old").inc()
                continue
            k = occurrence.get(b.device_id, -1) + 1
            occurrence[b.device_id] = k
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(b)
            self._accel_end[b.device_id] = b.t0_ms + len(b.samples) // 6 * 1000.0 / b.rate
        self._changed[_FALL].update(dict.fromkeys(occurrence))
        out: list[Finding] = []
        for items in rounds:
            out.extend(self.falls.process(_fall_batch(items, resident), now_ms))
        return out

    def _news2(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> list[Finding]:
        ring = self._vitals
        rows: list[int] = []
        params: list[int] = []
        ts: list[int] = []
        values: list[float] = []
        # The hot loop of the sink (one pass per reading): bound methods and plain ints.
        p_append, v_append, r_append, t_append = (
            params.append,
            values.append,
            rows.append,
            ts.append,
        )
        pulse, spo2, resp, temp, sbp = _P_PULSE, _P_SPO2, _P_RESP, _P_TEMP, _P_SBP
        for r in batch.readings:
            v = r.vitals
            b = r.bed
            if v is None and b is None:
                continue
            n = len(values)
            if v is not None:
                if v.heart_rate is not None:
                    p_append(pulse)
                    v_append(v.heart_rate)
                if v.spo2 is not None:
                    p_append(spo2)
                    v_append(v.spo2)
                if v.resp_rate is not None:
                    p_append(resp)
                    v_append(v.resp_rate)
                if v.temperature is not None:
                    p_append(temp)
                    v_append(v.temperature)
                if v.systolic is not None:
                    p_append(sbp)
                    v_append(v.systolic)
                if v.on_oxygen is not None:
                    p_append(_P_O2)
                    v_append(1.0 if v.on_oxygen else 0.0)
                if v.consciousness is not None:
                    p_append(_P_ACVPU)
                    v_append(float(_ACVPU[v.consciousness.value]))
            if b is not None:
                if b.heart_rate is not None:
                    p_append(pulse)
                    v_append(b.heart_rate)
                if b.resp_rate is not None:
                    p_append(resp)
                    v_append(b.resp_rate)
            added = len(values) - n
            if added:
                row = ring.row(r.device_id)
                for _ in range(added):
                    r_append(row)
                    t_append(r.ts_ms)
        if not values:
            return []
        fresh = ring.add(
            np.array(rows, np.int64),
            np.array(params, np.int64),
            np.array(ts, np.int64),
            np.array(values, np.float64),
        )
        self._changed[_VITALS].update(dict.fromkeys(ring.ids[i] for i in set(rows)))
        if fresh.size == 0:
            return []
        found = news2_findings(
            ring.readings(fresh, resident),
            now_ms,
            config=self.config.vitals,
            settings=self._news2_settings,
        )
        return self._news2_changes(fresh, found, now_ms)

    def _news2_changes(self, rows: I64, found: list[Finding], now_ms: int) -> list[Finding]:
        """Only what changed (or the same result after ``news2_repeat_s``) is reported."""
        ring = self._vitals
        by_dev: dict[str, list[Finding]] = {}
        for f in found:
            by_dev.setdefault(f.device_id, []).append(f)
        out: list[Finding] = []
        repeat = round(self.config.news2_repeat_s * 1000)
        for r in rows.tolist():
            dev = ring.ids[r]
            mine = by_dev.get(dev)
            if not mine:
                ring.emit_sig[r] = -1
                continue
            sig = _news2_signature(mine)
            if sig != ring.emit_sig[r] or now_ms - int(ring.emit_ms[r]) >= repeat:
                ring.emit_sig[r] = sig
                ring.emit_ms[r] = now_ms
                out.extend(mine)
        return out

    def _device_health(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> list[Finding]:
        h = self._health
        changed = self._changed[_HEALTH]
        wills: list[int] = []
        for r in batch.readings:
            row = h.row(r.device_id)
            h.last_seen[row] = max(int(h.last_seen[row]), r.ts_ms)
            h.will[row] = False
            h.offline_reported[row] = False
            if r.battery is not None:
                h.battery_level(row, r.ts_ms, r.battery.level_pct, r.battery.charging)
            changed[r.device_id] = None
        for s in batch.device_statuses:
            row = h.row(s.device_id)
            if s.online:
                h.last_seen[row] = max(int(h.last_seen[row]), s.ts_ms)
                h.will[row] = False
                h.offline_reported[row] = False
            else:
                # The Last Will's timestamp is when it was set (at connect): not a sign of life.
                h.will[row] = True
                wills.append(row)
            if s.battery_pct is not None:
                h.battery_level(row, s.ts_ms, s.battery_pct, None)
            changed[s.device_id] = None
        due = now_ms - self._last_health_ms >= self.config.health_every_s * 1000
        if not wills and not due:
            return []
        n = len(h.ids)
        if due:
            self._last_health_ms = now_ms
            rows = np.arange(n)
        else:
            rows = np.unique(np.array(wills, np.int64))
        cfg = self.config.health
        iv = self.config.expected_interval_s
        # Silence counts from the sink's start at the earliest: a restarted ingester does not
        # call every device offline before the broker's backlog reached it.
        start = self._started_ms if self._started_ms is not None else now_ms
        since = np.maximum(h.last_seen[rows], start)
        offline = h.will[rows] | ((now_ms - since) / 1000.0 > cfg.offline_factor * iv)
        bat = h.battery[rows]
        known = np.isfinite(bat)
        critical = known & (bat <= cfg.battery_critical_pct)
        falling = np.isfinite(h.bat_slope[rows]) & (h.bat_slope[rows] < 0)
        low = known & (bat <= cfg.battery_low_pct) & falling & ~critical
        level = np.where(critical, 2, np.where(low, 1, 0)).astype(np.int8)
        reported = np.where(level == 0, 0, h.battery_reported[rows]).astype(np.int8)
        h.battery_reported[rows] = reported
        new_offline = offline & ~h.offline_reported[rows]
        new_battery = level > reported
        pick = rows[new_offline | new_battery]
        if pick.size == 0:
            return []
        ids = [h.ids[i] for i in pick.tolist()]
        health = DeviceHealthBatch(
            device_ids=ids,
            resident_ids=[resident(d) for d in ids],
            last_seen_ms=h.last_seen[pick],
            expected_interval_s=np.full(pick.size, iv),
            last_will=h.will[pick],
            battery_pct=h.battery[pick],
            battery_slope_pct_per_day=h.bat_slope[pick],
        )
        keep_off = set(np.asarray(ids)[new_offline[new_offline | new_battery]].tolist())
        keep_bat = set(np.asarray(ids)[new_battery[new_offline | new_battery]].tolist())
        out = [
            f
            for f in health_findings(health, now_ms, cfg)
            if (f.kind is FindingKind.DEVICE_OFFLINE and f.device_id in keep_off)
            or (f.kind is FindingKind.BATTERY_LOW and f.device_id in keep_bat)
        ]
        h.offline_reported[rows[new_offline]] = True
        h.battery_reported[rows[new_battery]] = level[new_battery]
        changed.update(dict.fromkeys(f.device_id for f in out))
        return out

    # -- storage -----------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        """This thread's connection (opened on first use)."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self._url, connect_timeout=max(1, int(self._timeout)))
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _drop_broken(self) -> None:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.broken or conn.closed):
            conn.close()
            self._local.conn = None
            with self._conns_lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    def _store_findings(self, findings: list[Finding]) -> None:
        rows = [_finding_row(f) for f in findings]
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    """INSERT INTO findings (ts, detected_at, device_id, resident_id, kind,
                           severity, evidence, window_samples, window_rate_hz, window_start)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                    rows,
                )
        except BaseException:
            self._drop_broken()
            raise


def _fall_batch(items: list[_Burst], resident: Callable[[str], str | None]) -> FallBatch:
    """Int16 bursts -> one padded float32 batch in g (one ``frombuffer`` for all of them)."""
    n = len(items)
    lengths = np.fromiter((len(b.samples) // 6 for b in items), np.int32, n)
    scale = np.fromiter((b.scale for b in items), np.float32, n)
    width = int(lengths.max()) if n else 0
    counts = np.frombuffer(b"".join(b.samples for b in items), "<i2").reshape(-1, 3)
    if n and np.all(lengths == width):
        samples = counts.reshape(n, width, 3).astype(np.float32)
        samples *= scale[:, None, None]
    else:
        samples = np.zeros((n, width, 3), np.float32)
        row = np.repeat(np.arange(n), lengths)
        col = np.arange(counts.shape[0]) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        samples[row, col] = counts.astype(np.float32) * scale[row, None]
    ids = [b.device_id for b in items]
    return FallBatch(
        device_ids=ids,
        resident_ids=[resident(d) for d in ids],
        t0_ms=np.fromiter((b.t0_ms for b in items), np.int64, n),
        rate_hz=np.fromiter((b.rate for b in items), np.int32, n),
        samples=samples,
        lengths=lengths,
    )


def _news2_signature(findings: Iterable[Finding]) -> int:
    """Score, severity and single-parameter flag of a device's NEWS2 findings as one integer."""
    sig = 0
    for f in findings:
        if f.kind is FindingKind.VITAL_SINGLE:
            sig |= 1
        else:
            sig |= (int(getattr(f.evidence, "score", 0)) << 8) | (int(f.severity) << 4)
    return sig


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _plain(value: Any) -> Any:
    """Evidence values as JSON: enums by value, pairs as objects, NaN/inf as null."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float | np.floating):
        x = float(value)
        return x if np.isfinite(x) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, tuple | list):
        if value and all(
            isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value
        ):
            return {k: _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    raise TypeError(f"evidence value {value!r} of type {type(value).__name__} is not plain data")


def evidence_json(finding: Finding) -> dict[str, Any]:
    """The evidence of a finding as JSON-ready numbers and names (never the raw window)."""
    ev = finding.evidence
    return {
        f.name: _plain(getattr(ev, f.name)) for f in dataclasses.fields(ev) if f.name != "window"
    }


def _finding_row(f: Finding) -> tuple[object, ...]:
    ev = f.evidence
    window: bytes | None = None
    rate: float | None = None
    start: datetime | None = None
    if isinstance(ev, FallEvidence):
        window = np.ascontiguousarray(ev.window, "<f4").tobytes()
        rate = float(ev.rate_hz)
        start = _dt(ev.window_t0_ms)
    return (
        _dt(f.ts_ms),
        _dt(f.detected_ms),
        f.device_id,
        f.resident_id,
        f.kind.value,
        f.severity.name.lower(),
        Jsonb(evidence_json(f)),
        window,
        rate,
        start,
    )
