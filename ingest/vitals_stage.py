"""The detection sink's vital-signs stage: each device's recent vitals in a ring, NEWS2 scored.

:class:`VitalsStage` keeps the recent vital signs of each device in a bounded ring
(:class:`ingest.detection_state.VitalsRings`: one reading per time slot and parameter, enough
slots to cover the NEWS2 window), scores NEWS2 for the devices whose ring gained a slot with
each elder's own settings (the registry's, :mod:`ingest.news2_settings`, or fixed ones), and
reports only what changed, or the same result again after ``news2_repeat_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import numpy.typing as npt

from detectors.findings import Finding, FindingKind
from detectors.news2_charts import News2Settings, News2Table, Param
from detectors.vitals import news2_findings
from ingest.detection_state import DetectionConfig, VitalsRings
from ingest.detection_store import DetectionStore
from ingest.news2_settings import News2SettingsCache
from ingest.pipeline import Batch

I64 = npt.NDArray[np.int64]

_ACVPU = {"A": 0, "C": 1, "V": 2, "P": 3, "U": 4}
_P_PULSE, _P_SPO2, _P_RESP = int(Param.PULSE), int(Param.SPO2), int(Param.RESPIRATION_RATE)
_P_TEMP, _P_SBP = int(Param.TEMPERATURE), int(Param.SYSTOLIC_BP)
_P_O2, _P_ACVPU = int(Param.SUPPLEMENTAL_O2), int(Param.CONSCIOUSNESS)


class VitalsStage:
    """Vital signs to NEWS2 findings, per device (see the module's notes).

    Args:
        config: The sink's configuration (ring size, NEWS2 window and repeat, refresh).
        store: Where the elders' NEWS2 settings are read from.
        fixed: Settings to use instead of the registry's (tests, benchmarks).
    """

    def __init__(
        self,
        config: DetectionConfig,
        store: DetectionStore,
        fixed: Mapping[str, News2Settings] | None = None,
    ) -> None:
        self.config = config
        self.ring = VitalsRings(config)
        self._cache = News2SettingsCache(
            store.news2_stamp, store.news2_settings, config.news2_refresh_s
        )
        self._fixed = None if fixed is None else News2Table.of(fixed)

    def process(
        self, batch: Batch, now_ms: int, resident: Callable[[str], str | None]
    ) -> tuple[list[Finding], set[str]]:
        """The findings to report (what changed) and the devices whose rings changed."""
        ring = self.ring
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
            return [], set()
        fresh = ring.add(
            np.array(rows, np.int64),
            np.array(params, np.int64),
            np.array(ts, np.int64),
            np.array(values, np.float64),
        )
        changed = {ring.ids[i] for i in set(rows)}
        if fresh.size == 0:
            return [], changed
        found = news2_findings(
            ring.readings(fresh, resident),
            now_ms,
            config=self.config.vitals,
            settings=self._table(now_ms),
        )
        return self._changes(fresh, found, now_ms), changed

    def _table(self, now_ms: int) -> News2Table:
        """The per-elder NEWS2 settings to score with (fixed, or the registry's in force)."""
        if self._fixed is not None:
            return self._fixed
        return self._cache.current(now_ms)

    def _changes(self, rows: I64, found: list[Finding], now_ms: int) -> list[Finding]:
        """Only what changed (or the same result after ``news2_repeat_s``) is reported."""
        ring = self.ring
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
            sig = _signature(mine)
            if sig != ring.emit_sig[r] or now_ms - int(ring.emit_ms[r]) >= repeat:
                ring.emit_sig[r] = sig
                ring.emit_ms[r] = now_ms
                out.extend(mine)
        return out


def _signature(findings: Iterable[Finding]) -> int:
    """Score, severity and single-parameter flag of a device's NEWS2 findings as one integer."""
    sig = 0
    for f in findings:
        if f.kind is FindingKind.VITAL_SINGLE:
            sig |= 1
        else:
            sig |= (int(getattr(f.evidence, "score", 0)) << 8) | (int(f.severity) << 4)
    return sig
