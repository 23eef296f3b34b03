"""The detection sink's daily trends stage: per-day vitals of each elder against their baseline.

Once a local day (``run_after_min`` after midnight in ``timezone``), the stage reads per elder
and per local day, over the last ``baseline_days + recent_days`` complete days,

* ``resting_hr``: the lowest hourly mean heart rate of the day (wearables and bed sensors);
* ``night_rr``: the mean of the hourly mean respiration rates between 00:00 and 06:00;

and runs :func:`detectors.vital_trends.trend_findings` over all elders at once for each series. A
rise gives a ``VITAL_TREND`` finding (LOW) that the alert service puts into the family doctor's
daily digest (alerts/decision.py). The read runs on a thread of its own, off the ingest writer
thread; its findings are handed on with the next batch. A finding is stored once per elder,
series and day (its time is the end of the day judged), so a restarted ingester that runs the
day again adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from detectors.findings import Finding
from detectors.vital_trends import NIGHT_RR_TREND, RESTING_HR_TREND, TrendConfig, trend_findings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DailyValue:
    """One elder's aggregates of one local day (None: no reading that day)."""

    resident_id: str
    device_id: str
    day: date
    resting_hr: float | None
    night_rr: float | None


#: Local minutes after the day's midnight when a series' value of that day is complete.
SERIES_END_MIN = {"resting_hr": 24 * 60, "night_rr": 6 * 60}

DailyReader = Callable[[date, date, str], Sequence[DailyValue]]
"""(first day, last day, time zone) -> the per-day aggregates of every elder."""


@dataclass(frozen=True)
class TrendsConfig:
    """When and how the daily trends run.

    Attributes:
        timezone: The days are local days of this zone.
        run_after_min: Minutes after local midnight the previous day is judged.
        series: The daily series and their rules.
    """

    timezone: str = "Asia/Shanghai"
    run_after_min: int = 30
    series: tuple[TrendConfig, ...] = (RESTING_HR_TREND, NIGHT_RR_TREND)


def judge_days(
    values: Sequence[DailyValue], last_day: date, zone: ZoneInfo, series: Sequence[TrendConfig]
) -> list[Finding]:
    """Pure: the trend findings of every elder for the series, the last day being ``last_day``.

    Each elder's values become one row of a ``(elders, days)`` array (NaN where a day has no
    value); the finding's time is when the series' value of ``last_day`` was complete
    (:data:`SERIES_END_MIN`), its device the elder's device with the most recent value.
    """
    if not values:
        return []
    days = max(c.baseline_days + c.recent_days for c in series)
    first = last_day - timedelta(days=days - 1)
    residents = sorted({v.resident_id for v in values})
    row = {r: i for i, r in enumerate(residents)}
    device = {v.resident_id: v.device_id for v in sorted(values, key=lambda v: v.day)}
    out: list[Finding] = []
    for cfg in series:
        # When the series' last value was complete: a night's rate at 06:00, a day's at its end
        # (distinct times: one finding per elder, series and day in ``findings``).
        end_min = SERIES_END_MIN.get(cfg.parameter, 24 * 60)
        end = datetime.combine(last_day, time(0), zone) + timedelta(minutes=end_min)
        end_ms = int(end.timestamp() * 1000)
        grid = np.full((len(residents), days), np.nan)
        for v in values:
            x = getattr(v, cfg.parameter, None)
            col = (v.day - first).days
            if x is not None and 0 <= col < days:
                grid[row[v.resident_id], col] = x
        out.extend(
            trend_findings(
                [device[r] for r in residents], list(residents), grid, end_ms, config=cfg
            )
        )
    return out


class TrendsStage:
    """Runs :func:`judge_days` once a local day on a thread of its own (see the module notes).

    Args:
        read: Reads the per-day aggregates (the database).
        config: When and which series.
    """

    def __init__(self, read: DailyReader, config: TrendsConfig | None = None) -> None:
        self._read = read
        self.config = config or TrendsConfig()
        self._zone = ZoneInfo(self.config.timezone)
        self._done: date | None = None
        self._future: Future[list[Finding]] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector-trends")

    def _due_day(self, now_ms: int) -> date | None:
        local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(self._zone)
        if local.hour * 60 + local.minute < self.config.run_after_min:
            return None
        day = local.date() - timedelta(days=1)
        return None if self._done == day else day

    def has_work(self, now_ms: int) -> bool:
        if self._future is not None:
            return self._future.done()
        return self._due_day(now_ms) is not None

    def process(self, now_ms: int) -> list[Finding]:
        """Starts the day's run when due; returns the findings of a finished run."""
        if self._future is not None:
            if not self._future.done():
                return []
            future, self._future = self._future, None
            if future.exception() is not None:
                self._done = None  # tried again with the next batch
            return future.result()  # a failed run raises here: the sink counts and logs it
        day = self._due_day(now_ms)
        if day is None:
            return []
        self._done = day
        self._future = self._pool.submit(self._run, day)
        return []

    def _run(self, day: date) -> list[Finding]:
        days = max(c.baseline_days + c.recent_days for c in self.config.series)
        values = self._read(day - timedelta(days=days - 1), day, self.config.timezone)
        found = judge_days(values, day, self._zone, self.config.series)
        log.info("daily trends of %s: %d elders, %d findings", day, len(values), len(found))
        return found

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
