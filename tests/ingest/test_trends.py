"""The daily trends stage's pure part: per-day values of many elders judged at once."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from detectors.findings import FindingKind, TrendEvidence
from detectors.vital_trends import NIGHT_RR_TREND, RESTING_HR_TREND
from ingest.trends import DailyValue, TrendsStage, judge_days

ZONE = ZoneInfo("Asia/Shanghai")
LAST = dt.date(2026, 11, 29)
SERIES = (RESTING_HR_TREND, NIGHT_RR_TREND)


def _days(resident: str, hr: list[float | None], rr: list[float | None]) -> list[DailyValue]:
    first = LAST - dt.timedelta(days=len(hr) - 1)
    return [
        DailyValue(resident, f"{resident}-wb", first + dt.timedelta(days=d), h, r)
        for d, (h, r) in enumerate(zip(hr, rr, strict=True))
    ]


def test_rises_of_both_series_are_found_once_each_at_distinct_times() -> None:
    rising = _days("r1", [60.0] * 14 + [72.0] * 3, [14.0] * 14 + [18.0] * 3)
    steady = _days("r2", [64.0] * 17, [15.0] * 17)
    found = judge_days(rising + steady, LAST, ZONE, SERIES)
    got = {(f.resident_id, f.evidence.parameter) for f in found if isinstance(f.evidence, TrendEvidence)}  # fmt: skip
    assert got == {("r1", "resting_hr"), ("r1", "night_rr")}
    assert all(f.kind is FindingKind.VITAL_TREND and f.device_id == "r1-wb" for f in found)
    midnight = dt.datetime.combine(LAST + dt.timedelta(days=1), dt.time(0), ZONE)
    six = dt.datetime.combine(LAST, dt.time(6), ZONE)
    times = {f.evidence.parameter: f.ts_ms for f in found if isinstance(f.evidence, TrendEvidence)}  # fmt: skip
    assert times == {"resting_hr": int(midnight.timestamp() * 1000), "night_rr": int(six.timestamp() * 1000)}  # fmt: skip


def test_missing_days_and_no_values() -> None:
    assert judge_days([], LAST, ZONE, SERIES) == []
    # Only two recent days with a value: fewer than min_days (3), nothing claimed.
    sparse = _days("r1", [60.0] * 14 + [None, 75.0, 76.0], [None] * 17)
    assert judge_days(sparse, LAST, ZONE, SERIES) == []


def test_the_stage_runs_once_a_day_and_hands_its_findings_on_later() -> None:
    calls: list[tuple[dt.date, dt.date]] = []

    def read(first: dt.date, last: dt.date, tz: str) -> list[DailyValue]:
        calls.append((first, last))
        return _days("r1", [60.0] * 14 + [72.0] * 3, [None] * 17)

    stage = TrendsStage(read)
    morning = int(dt.datetime(2026, 11, 30, 8, 0, tzinfo=ZONE).timestamp() * 1000)
    assert stage.has_work(morning)
    assert stage.process(morning) == []  # started on its own thread
    stage._future.result(timeout=30)  # type: ignore[union-attr]
    found = stage.process(morning + 1000)
    assert [f.evidence.parameter for f in found] == ["resting_hr"]  # type: ignore[union-attr]
    assert calls == [(LAST - dt.timedelta(days=16), LAST)]
    assert not stage.has_work(morning + 3_600_000)  # the day is done
    just_after_midnight = int(dt.datetime(2026, 12, 1, 0, 10, tzinfo=ZONE).timestamp() * 1000)
    assert not stage.has_work(just_after_midnight)  # before run_after_min
    stage.close()


def test_a_failed_read_is_tried_again() -> None:
    def read(first: dt.date, last: dt.date, tz: str) -> list[DailyValue]:
        raise OSError("database away")

    stage = TrendsStage(read)
    morning = int(dt.datetime(2026, 11, 30, 8, 0, tzinfo=ZONE).timestamp() * 1000)
    stage.process(morning)
    stage._future.exception(timeout=30)  # type: ignore[union-attr]
    with pytest.raises(OSError, match="database away"):
        stage.process(morning)
    assert stage.has_work(morning)
    stage.close()
