"""Behaviour and device-health detectors: known answers, empty input, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.behaviour import BehaviourBatch, BehaviourSettings, behaviour_findings
from detectors.findings import DetectorInputError, FindingKind, Severity
from detectors.health import DeviceHealthBatch, health_findings

# 2023-11-14 22:13:20 UTC; residents below are at UTC+8 unless said otherwise.
NOW = 1_700_000_000_000
H = 3_600_000
MIN = 60_000


def _local(hour: float, offset_min: int = 480) -> int:
    """An epoch ms on the day of NOW whose local time is ``hour``."""
    day = (NOW + offset_min * MIN) // (24 * H) * (24 * H)
    return int(day + hour * H - offset_min * MIN)


def _beh(rows: list[tuple[int, int, int]], offset: int = 480) -> BehaviourBatch:
    n = len(rows)
    return BehaviourBatch(
        device_ids=[f"h{i}" for i in range(n)],
        resident_ids=[f"r{i}" for i in range(n)],
        last_motion_ms=np.array([r[0] for r in rows], np.int64),
        in_bed=np.array([r[1] for r in rows], np.int8),
        bed_since_ms=np.array([r[2] for r in rows], np.int64),
        utc_offset_min=np.full(n, offset, np.int64),
    )


def test_inactivity_known_answer() -> None:
    now = _local(14)
    batch = _beh(
        [(now - 4 * H, -1, -1), (now - 1 * H, -1, -1), (now - 4 * H, -1, -1), (-1, -1, -1)]
    )
    settings = {"r2": BehaviourSettings(lives_alone=False)}
    found = behaviour_findings(batch, now, settings)
    assert [(f.device_id, f.kind, f.severity) for f in found] == [
        ("h0", FindingKind.INACTIVITY, Severity.HIGH)
    ]
    # The same silence at night is sleep, not inactivity.
    assert behaviour_findings(_beh([(_local(3) - 4 * H, -1, -1)]), _local(3)) == []


def test_out_of_bed_and_bed_empty_known_answer() -> None:
    now = _local(2)  # 02:00 local, the night began at 22:00
    batch = _beh(
        [
            (now, 0, now - 45 * MIN),  # left bed at 01:15: out of bed 45 min > 30 min
            (now, 0, now - 10 * MIN),  # left 10 min ago: fine
            (now, 0, now - 6 * H),  # not in bed since 20:00, before the night: bed empty
            (now, 1, now - 3 * H),  # asleep
        ]
    )
    found = behaviour_findings(batch, now)
    assert [(f.device_id, f.kind) for f in found] == [
        ("h0", FindingKind.OUT_OF_BED),
        ("h2", FindingKind.BED_EMPTY),
    ]


def test_behaviour_empty_and_bad() -> None:
    assert behaviour_findings(_beh([]), NOW) == []
    with pytest.raises(DetectorInputError, match="in_bed has values outside -1, 0, 1"):
        _beh([(NOW, 2, NOW)])
    with pytest.raises(DetectorInputError, match=r"last_motion_ms has shape \(2,\)"):
        BehaviourBatch(
            ["a"],
            [None],
            np.zeros(2, np.int64),
            np.zeros(1, np.int8),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
        )
    with pytest.raises(ValueError, match="day_start_min is 1500"):
        BehaviourSettings(day_start_min=1500)


def _health(last, interval, will, bat, slope) -> DeviceHealthBatch:
    n = len(last)
    return DeviceHealthBatch(
        device_ids=[f"d{i}" for i in range(n)],
        resident_ids=[None] * n,
        last_seen_ms=np.array(last, np.int64),
        expected_interval_s=np.array(interval, np.float64),
        last_will=np.array(will, bool),
        battery_pct=np.array(bat, np.float64),
        battery_slope_pct_per_day=np.array(slope, np.float64),
    )


def test_health_known_answer() -> None:
    batch = _health(
        last=[NOW - 10_000, NOW - 400_000, NOW - 5_000, NOW - 5_000, NOW - 5_000, NOW - 5_000],
        interval=[60, 60, 60, 60, 60, 60],
        will=[False, False, True, False, False, False],
        bat=[80, 80, 80, 15, 15, 8],
        slope=[-1, -1, -1, -5, 0.0, np.nan],
    )
    found = health_findings(batch, NOW)
    assert [(f.device_id, f.kind, f.severity) for f in found] == [
        ("d1", FindingKind.DEVICE_OFFLINE, Severity.MEDIUM),
        ("d2", FindingKind.DEVICE_OFFLINE, Severity.MEDIUM),
        ("d5", FindingKind.BATTERY_LOW, Severity.MEDIUM),
        ("d3", FindingKind.BATTERY_LOW, Severity.LOW),
    ]


def test_health_empty_and_bad() -> None:
    assert health_findings(_health([], [], [], [], []), NOW) == []
    with pytest.raises(DetectorInputError, match="battery_pct has values"):
        _health([NOW], [60], [False], [120], [0])
    with pytest.raises(
        DetectorInputError, match="expected_interval_s has values that are not positive"
    ):
        _health([NOW], [0], [False], [50], [0])
