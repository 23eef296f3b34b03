"""The detection sink's behaviour stage: movement and bed presence from the stream, per elder.

Per committed batch, :class:`BehaviourStage` takes from the readings of the elders' devices

* **movement**: an accelerometer burst whose magnitude varies by more than
  ``accel_movement_g`` (standard deviation within the burst; a device lying on a table shows
  about 0.01 g, a wrist while walking 0.1-0.5 g), a bed reading whose ``move`` is at least
  ``bed_movement_min``, and any change of bed presence (getting in or out of bed);
* **bed presence**: the bed sensor's ``presence``, and since when it holds;

keeps them per elder in a :class:`ingest.behaviour_state.BehaviourTable`, and judges the elders
it saw with :func:`detectors.behaviour.behaviour_findings` and their settings from the registry
(devices/behaviour_settings.py, read again every ``settings_refresh_s``).

**Stream time.** Each elder is judged at the time its own stream has reached (the latest
reading of any of its devices, never later than the server clock), tick by tick of
``tick_s`` through a batch. A backlog that arrives in bulk is so judged as it happened: a
night whose every bed reading arrives at once still shows the two hours out of bed, and a
bathroom trip whose return is in the same batch is no alarm. A home whose devices all fall
silent is not judged at all: the device-health stage reports the silence (offline).

One episode is one finding: inactivity once per last movement, a night finding once per bed
exit. Elders not active in the registry and devices bound to nobody are not watched.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

from detectors.behaviour import (
    BehaviourBatch,
    BehaviourSettings,
    behaviour_findings,
    burst_movement,
)
from detectors.findings import Finding, FindingKind
from devices.behaviour_settings import Watched
from ingest.behaviour_state import BehaviourTable
from ingest.pipeline import Batch

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
_FALLBACK_ZONE = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class BehaviourStreamConfig:
    """How the stream feeds the behaviour detectors.

    Attributes:
        accel_movement_g: A burst whose magnitude has a standard deviation above this is
            movement, in g.
        bed_movement_min: A bed reading with ``move`` at least this is movement (the sensor's
            own movement index).
        tick_s: A batch is judged in steps of this much stream time.
        settings_refresh_s: The registry's settings are read again this often.
        unknown_refresh_s: A reading of an elder the stage has no settings for (registered
            since the last read) reads them again at once, at most this often.
    """

    accel_movement_g: float = 0.03
    bed_movement_min: float = 1.0
    tick_s: float = 60.0
    settings_refresh_s: float = 60.0
    unknown_refresh_s: float = 5.0


@dataclass(slots=True)
class _Updates:
    rows: list[int]
    ts: list[int]
    devices: list[str]

    @classmethod
    def empty(cls) -> _Updates:
        return cls([], [], [])


class BehaviourStage:
    """Movement and bed presence per elder, judged tick by tick (see the module's notes).

    Args:
        load_settings: Reads every watched elder's settings (the registry).
        config: The stage's thresholds and intervals.
    """

    def __init__(
        self,
        load_settings: Callable[[], Sequence[Watched]],
        config: BehaviourStreamConfig | None = None,
    ) -> None:
        self._load = load_settings
        self.config = config or BehaviourStreamConfig()
        self.table = BehaviourTable()
        self._settings: dict[str, BehaviourSettings] = {}
        self._zones: dict[str, ZoneInfo] = {}
        self._loaded_ms: int | None = None

    # -- settings --------------------------------------------------------------------------
    def refresh(self, now_ms: int, *, within_s: float | None = None) -> None:
        """Read the settings when they are older than ``within_s`` (default
        ``settings_refresh_s``)."""
        within = self.config.settings_refresh_s if within_s is None else within_s
        if self._loaded_ms is not None and now_ms - self._loaded_ms < within * 1000:
            return
        settings: dict[str, BehaviourSettings] = {}
        zones: dict[str, ZoneInfo] = {}
        for w in self._load():
            try:
                settings[w.resident_id] = BehaviourSettings(
                    lives_alone=w.lives_alone,
                    day_start_min=w.day_start_min,
                    day_end_min=w.day_end_min,
                    max_inactive_s=float(w.max_inactive_s),
                    night_start_min=w.night_start_min,
                    night_end_min=w.night_end_min,
                    out_of_bed_s=float(w.out_of_bed_s),
                    bed_empty_s=float(w.bed_empty_s),
                )
                zones[w.resident_id] = ZoneInfo(w.timezone)
            except (ValueError, ZoneInfoNotFoundError) as exc:
                log.warning("behaviour settings of resident %s not used: %s", w.resident_id, exc)
        self._settings, self._zones, self._loaded_ms = settings, zones, now_ms

    def stream_ms(self, resident_id: str) -> int:
        """Epoch ms up to which the elder has been judged (-1: nothing seen yet)."""
        r = self.table.rows.get(resident_id)
        return -1 if r is None else int(self.table.stream[r])

    # -- one batch -------------------------------------------------------------------------
    def process(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> tuple[list[Finding], set[str]]:
        """Take one batch's readings; returns the findings and the elders whose state changed."""
        self.refresh(now_ms)
        table = self.table
        tick_ms = max(1, round(self.config.tick_s * 1000))
        seen, motion, bed = _Updates.empty(), _Updates.empty(), _Updates.empty()
        presence: list[int] = []
        burst_rows: list[int] = []
        burst_ts: list[int] = []
        burst_dev: list[str] = []
        burst_data: list[bytes] = []
        burst_scale: list[float] = []
        bed_min = self.config.bed_movement_min
        for r in batch.readings:
            rid = resident(r.device_id)
            if rid is None:
                continue
            if rid not in self._settings:
                # Registered since the last read: watched from its first readings on.
                self.refresh(now_ms, within_s=self.config.unknown_refresh_s)
                if rid not in self._settings:
                    continue
            row = table.row(rid)
            seen.rows.append(row)
            seen.ts.append(r.ts_ms)
            a = r.accel
            if a is not None and len(a.samples) >= 6:
                burst_rows.append(row)
                burst_ts.append(r.ts_ms)
                burst_dev.append(r.device_id)
                burst_data.append(a.samples[: len(a.samples) // 6 * 6])
                burst_scale.append(a.scale_g)
            b = r.bed
            if b is not None:
                if b.presence is not None:
                    bed.rows.append(row)
                    bed.ts.append(r.ts_ms)
                    bed.devices.append(r.device_id)
                    presence.append(1 if b.presence else 0)
                if b.movement is not None and b.movement >= bed_min:
                    motion.rows.append(row)
                    motion.ts.append(r.ts_ms)
                    motion.devices.append(r.device_id)
        if not seen.rows:
            return [], set()
        if burst_rows:
            lengths = np.fromiter((len(d) // 6 for d in burst_data), np.int64, len(burst_data))
            samples = np.frombuffer(b"".join(burst_data), "<i2").reshape(-1, 3)
            moving = burst_movement(samples, lengths, np.asarray(burst_scale, np.float64))
            for i in np.nonzero(moving > self.config.accel_movement_g)[0].tolist():
                motion.rows.append(burst_rows[i])
                motion.ts.append(burst_ts[i])
                motion.devices.append(burst_dev[i])

        seen_rows, seen_ts = np.asarray(seen.rows, np.int64), np.asarray(seen.ts, np.int64)
        m_rows, m_ts = np.asarray(motion.rows, np.int64), np.asarray(motion.ts, np.int64)
        b_rows, b_ts = np.asarray(bed.rows, np.int64), np.asarray(bed.ts, np.int64)
        b_pres = np.asarray(presence, np.int8)
        seen_tick, m_tick, b_tick = seen_ts // tick_ms, m_ts // tick_ms, b_ts // tick_ms
        findings: list[Finding] = []
        for tick in np.unique(seen_tick).tolist():
            sel = b_tick == tick
            if sel.any():
                devs = [d for d, k in zip(bed.devices, sel.tolist(), strict=True) if k]
                ch_rows, ch_ts, ch_devs = table.bed(b_rows[sel], b_ts[sel], b_pres[sel], devs)
                # Getting into or out of bed is movement.
                table.motion(ch_rows, ch_ts, ch_devs)
            sel = m_tick == tick
            if sel.any():
                devs = [d for d, k in zip(motion.devices, sel.tolist(), strict=True) if k]
                table.motion(m_rows[sel], m_ts[sel], devs)
            sel = seen_tick == tick
            rows = np.unique(seen_rows[sel])
            table.seen(seen_rows[sel], seen_ts[sel])
            findings.extend(self._judge(rows, now_ms))
        return findings, {table.ids[r] for r in np.unique(seen_rows).tolist()}

    def _judge(self, rows: I64, now_ms: int) -> list[Finding]:
        table = self.table
        at = np.minimum(table.stream[rows], now_ms)
        ids = [table.ids[r] for r in rows.tolist()]
        offsets = np.fromiter(
            (_offset_min(self._zones.get(rid, _FALLBACK_ZONE), int(t)) for rid, t in zip(ids, at.tolist(), strict=True)),
            np.int64,
            rows.size,
        )  # fmt: skip
        batch = BehaviourBatch(
            device_ids=[table.motion_device[r] for r in rows.tolist()],
            resident_ids=ids,
            last_motion_ms=table.last_motion[rows],
            in_bed=table.in_bed[rows],
            bed_since_ms=table.bed_since[rows],
            utc_offset_min=offsets,
        )
        out: list[Finding] = []
        for f in behaviour_findings(batch, at, self._settings):
            assert f.resident_id is not None  # noqa: S101 - every row names its elder
            r = table.rows[f.resident_id]
            if f.kind is FindingKind.INACTIVITY:
                if table.inactivity_reported[r] == table.last_motion[r]:
                    continue
                table.inactivity_reported[r] = table.last_motion[r]
                out.append(f)
            else:  # OUT_OF_BED, BED_EMPTY: the bed sensor's finding
                if table.bed_reported[r] == table.bed_since[r]:
                    continue
                table.bed_reported[r] = table.bed_since[r]
                out.append(dataclasses.replace(f, device_id=table.bed_device[r]))
        return out


_OFFSETS: dict[tuple[str, int], int] = {}


def _offset_min(zone: ZoneInfo, ts_ms: int) -> int:
    """The zone's UTC offset in minutes at ``ts_ms`` (cached per zone and hour)."""
    key = (zone.key, ts_ms // 3_600_000)
    off = _OFFSETS.get(key)
    if off is None:
        delta = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(zone).utcoffset()
        off = _OFFSETS[key] = int(delta.total_seconds() // 60) if delta is not None else 0
        if len(_OFFSETS) > 100_000:
            _OFFSETS.clear()
    return off
