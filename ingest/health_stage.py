"""The detection sink's device-health stage: last seen, Last Will and battery per device.

:class:`HealthStage` tracks each device's last sign of life, its MQTT Last Will and its battery
(level and slope) in a :class:`ingest.detection_state.HealthTable`, and runs the device-health
detector (:func:`detectors.health.health_findings`) at once for a Last Will, otherwise every
``health_every_s``; each offline or low-battery condition is reported once until it clears.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from detectors.findings import Finding, FindingKind
from detectors.health import DeviceHealthBatch, health_findings
from ingest.detection_state import EMPTY, DetectionConfig, HealthTable
from ingest.pipeline import Batch


class HealthStage:
    """Signs of life, Last Wills and batteries to offline and battery findings."""

    def __init__(self, config: DetectionConfig) -> None:
        self.config = config
        self.table = HealthTable()
        self.last_ms = EMPTY

    def due(self, now_ms: int) -> bool:
        """Whether the periodic silence check is due."""
        return now_ms - self.last_ms >= self.config.health_every_s * 1000

    def process(
        self,
        batch: Batch,
        now_ms: int,
        resident: Callable[[str], str | None],
        started_ms: int | None,
    ) -> tuple[list[Finding], set[str]]:
        """New offline and battery findings, and the devices whose health state changed."""
        h = self.table
        changed: set[str] = set()
        wills: list[int] = []
        for r in batch.readings:
            row = h.row(r.device_id)
            h.last_seen[row] = max(int(h.last_seen[row]), r.ts_ms)
            h.will[row] = False
            h.offline_reported[row] = False
            if r.battery is not None:
                h.battery_level(row, r.ts_ms, r.battery.level_pct, r.battery.charging)
            changed.add(r.device_id)
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
            changed.add(s.device_id)
        due = self.due(now_ms)
        if not wills and not due:
            return [], changed
        n = len(h.ids)
        if due:
            self.last_ms = now_ms
            rows = np.arange(n)
        else:
            rows = np.unique(np.array(wills, np.int64))
        cfg = self.config.health
        iv = self.config.expected_interval_s
        # Silence counts from the sink's start at the earliest: a restarted ingester does not
        # call every device offline before the broker's backlog reached it.
        start = started_ms if started_ms is not None else now_ms
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
            return [], changed
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
        changed.update(f.device_id for f in out)
        return out, changed
