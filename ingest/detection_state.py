"""The sink's per-device state outside the fall detector: pure arrays and their bytes.

:class:`VitalsRings` keeps each device's recent vital signs for NEWS2; :class:`HealthTable`
its last sign of life, Last Will and battery. Both grow by doubling, export one device's state
as bytes and import it again (``detector_state`` rows), and do no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors.health import HealthConfig
from detectors.news2_charts import N_PARAMS
from detectors.vitals import VitalReadings, VitalsConfig
from detectors.waist import WaistConfig
from ingest.behaviour import BehaviourStreamConfig
from ingest.trends import TrendsConfig

EMPTY = np.iinfo(np.int64).min
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DetectionConfig:
    """How the ingest stream drives the detectors.

    Attributes:
        fall: The trunk (waist, chest) fall detector's windows and models; its burst and gap
            limits apply to every placement.
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
        news2_refresh_s: The doctors' NEWS2 settings are checked for changes this often.
        behaviour: How movement and bed presence are taken from the stream.
        trends: When and which daily vitals trends run (for the doctor's digest).
    """

    fall: WaistConfig = field(default_factory=WaistConfig)
    vitals: VitalsConfig = field(default_factory=VitalsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    expected_interval_s: float = 60.0
    vitals_slots: int = 41
    news2_repeat_s: float = 900.0
    health_every_s: float = 10.0
    persist_every_s: float = 30.0
    news2_refresh_s: float = 5.0
    behaviour: BehaviourStreamConfig = field(default_factory=BehaviourStreamConfig)
    trends: TrendsConfig = field(default_factory=TrendsConfig)

    def __post_init__(self) -> None:
        if self.vitals_slots < 2:
            raise ValueError(
                f"DetectionConfig vitals_slots is {self.vitals_slots}; expected at least 2."
            )


# --------------------------------------------------------------------------- vitals ring
_VITALS_HEADER = struct.Struct("<4sHHqqbq")
_VITALS_MAGIC = b"AXV1"


class VitalsRings:
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
        ts = np.full((cap, N_PARAMS, self.slots), EMPTY, np.int64)
        val = np.zeros((cap, N_PARAMS, self.slots), np.float64)
        emit_sig = np.full(cap, -1, np.int64)
        emit_ms = np.full(cap, EMPTY, np.int64)
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
        opened = newer & ((old == EMPTY) | (old // self.slot_ms != slot))
        return np.unique(rows[opened])

    def readings(self, rows: I64, resident: Callable[[str], str | None]) -> VitalReadings:
        ts = self.ts[rows]
        valid = ts != EMPTY
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


class HealthTable:
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
