"""NEWS2 against every band boundary of the RCP 2017 chart, both SpO2 scales, partial inputs."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.findings import DetectorInputError, FindingKind, News2Evidence, Severity
from detectors.news2_charts import N_PARAMS, Bands, Consciousness, News2Settings, Param
from detectors.vital_trends import trend_findings
from detectors.vitals import VitalReadings, VitalsConfig, news2, news2_findings, score_news2

NOW = 1_700_000_000_000

# (parameter, value, expected sub-score) on both sides of every boundary of the chart.
SCALE1_CASES = [
    (Param.RESPIRATION_RATE, 8, 3),
    (Param.RESPIRATION_RATE, 9, 1),
    (Param.RESPIRATION_RATE, 11, 1),
    (Param.RESPIRATION_RATE, 12, 0),
    (Param.RESPIRATION_RATE, 20, 0),
    (Param.RESPIRATION_RATE, 21, 2),
    (Param.RESPIRATION_RATE, 24, 2),
    (Param.RESPIRATION_RATE, 25, 3),
    (Param.SPO2, 91, 3),
    (Param.SPO2, 92, 2),
    (Param.SPO2, 93, 2),
    (Param.SPO2, 94, 1),
    (Param.SPO2, 95, 1),
    (Param.SPO2, 96, 0),
    (Param.SPO2, 100, 0),
    (Param.SUPPLEMENTAL_O2, 0, 0),
    (Param.SUPPLEMENTAL_O2, 1, 2),
    (Param.SYSTOLIC_BP, 90, 3),
    (Param.SYSTOLIC_BP, 91, 2),
    (Param.SYSTOLIC_BP, 100, 2),
    (Param.SYSTOLIC_BP, 101, 1),
    (Param.SYSTOLIC_BP, 110, 1),
    (Param.SYSTOLIC_BP, 111, 0),
    (Param.SYSTOLIC_BP, 219, 0),
    (Param.SYSTOLIC_BP, 220, 3),
    (Param.PULSE, 40, 3),
    (Param.PULSE, 41, 1),
    (Param.PULSE, 50, 1),
    (Param.PULSE, 51, 0),
    (Param.PULSE, 90, 0),
    (Param.PULSE, 91, 1),
    (Param.PULSE, 110, 1),
    (Param.PULSE, 111, 2),
    (Param.PULSE, 130, 2),
    (Param.PULSE, 131, 3),
    (Param.CONSCIOUSNESS, Consciousness.ALERT, 0),
    (Param.CONSCIOUSNESS, Consciousness.CONFUSION, 3),
    (Param.CONSCIOUSNESS, Consciousness.VOICE, 3),
    (Param.CONSCIOUSNESS, Consciousness.PAIN, 3),
    (Param.CONSCIOUSNESS, Consciousness.UNRESPONSIVE, 3),
    (Param.TEMPERATURE, 35.0, 3),
    (Param.TEMPERATURE, 35.1, 1),
    (Param.TEMPERATURE, 36.0, 1),
    (Param.TEMPERATURE, 36.1, 0),
    (Param.TEMPERATURE, 38.0, 0),
    (Param.TEMPERATURE, 38.1, 1),
    (Param.TEMPERATURE, 39.0, 1),
    (Param.TEMPERATURE, 39.1, 2),
]

# SpO2 scale 2 (hypercapnic respiratory failure): (spo2, on oxygen, expected).
SCALE2_CASES = [
    (83, False, 3),
    (84, False, 2),
    (85, False, 2),
    (86, False, 1),
    (87, False, 1),
    (88, False, 0),
    (92, False, 0),
    (93, False, 0),
    (97, False, 0),
    (100, False, 0),
    (83, True, 3),
    (85, True, 2),
    (87, True, 1),
    (88, True, 0),
    (92, True, 0),
    (93, True, 1),
    (94, True, 1),
    (95, True, 2),
    (96, True, 2),
    (97, True, 3),
    (100, True, 3),
]


def _one(param: Param, value: float) -> tuple[np.ndarray, np.ndarray]:
    values = np.full((1, N_PARAMS), np.nan)
    present = np.zeros((1, N_PARAMS), bool)
    values[0, param] = value
    present[0, param] = True
    return values, present


@pytest.mark.parametrize(("param", "value", "expected"), SCALE1_CASES)
def test_chart_boundaries_scale1(param: Param, value: float, expected: int) -> None:
    values, present = _one(param, float(value))
    sub, scale = score_news2(values, present)
    assert sub[0, param] == expected
    assert scale[0] == 1
    assert (sub[0][~present[0]] == -1).all()


@pytest.mark.parametrize(("spo2", "oxygen", "expected"), SCALE2_CASES)
def test_chart_boundaries_scale2(spo2: int, oxygen: bool, expected: int) -> None:
    values, present = _one(Param.SPO2, float(spo2))
    values[0, Param.SUPPLEMENTAL_O2] = float(oxygen)
    present[0, Param.SUPPLEMENTAL_O2] = True
    sub, scale = score_news2(values, present, settings=(News2Settings(spo2_scale=2),))
    assert sub[0, Param.SPO2] == expected
    assert sub[0, Param.SUPPLEMENTAL_O2] == (2 if oxygen else 0)
    assert scale[0] == 2


def _readings(
    rows: list[dict[Param, float]], *, n_each: int = 3, residents: list[str] | None = None
) -> VitalReadings:
    r, t, p, v = [], [], [], []
    for i, params in enumerate(rows):
        for param, value in params.items():
            for k in range(n_each):
                r.append(i)
                t.append(NOW - 60_000 * (k + 1))
                p.append(int(param))
                v.append(float(value))
    n = len(rows)
    return VitalReadings(
        device_ids=[f"d{i}" for i in range(n)],
        resident_ids=residents or [f"r{i}" for i in range(n)],
        row=np.array(r, np.int64),
        ts_ms=np.array(t, np.int64),
        param=np.array(p, np.int64),
        value=np.array(v, np.float64),
    )


FULL_NORMAL = {
    Param.RESPIRATION_RATE: 16,
    Param.SPO2: 97,
    Param.SUPPLEMENTAL_O2: 0,
    Param.SYSTOLIC_BP: 125,
    Param.PULSE: 70,
    Param.CONSCIOUSNESS: 0,
    Param.TEMPERATURE: 36.8,
}


def test_known_answer_full_and_sick() -> None:
    sick = {
        Param.RESPIRATION_RATE: 23,  # 2
        Param.SPO2: 93,  # 2
        Param.SUPPLEMENTAL_O2: 1,  # 2
        Param.SYSTOLIC_BP: 105,  # 1
        Param.PULSE: 115,  # 2
        Param.CONSCIOUSNESS: 0,  # 0
        Param.TEMPERATURE: 38.5,  # 1
    }
    res = news2(_readings([FULL_NORMAL, sick]), NOW)
    assert res.score.tolist() == [0, 10]
    assert res.coverage.tolist() == [1.0, 1.0]
    findings = news2_findings(_readings([FULL_NORMAL, sick]), NOW)
    assert [(f.device_id, f.kind, f.severity) for f in findings] == [
        ("d1", FindingKind.NEWS2, Severity.EMERGENCY)
    ]


def test_partial_inputs_are_explicit_not_zero() -> None:
    findings = news2_findings(_readings([{Param.PULSE: 135, Param.SPO2: 97}]), NOW)
    kinds = [f.kind for f in findings]
    assert kinds == [FindingKind.NEWS2, FindingKind.VITAL_SINGLE]
    ev = findings[0].evidence
    assert isinstance(ev, News2Evidence)
    assert ev.score == 3
    assert ev.coverage == pytest.approx(2 / 7)
    assert set(ev.missing) == {
        "respiration_rate",
        "supplemental_o2",
        "systolic_bp",
        "consciousness",
        "temperature",
    }
    assert dict(ev.subscores) == {"spo2": 0, "pulse": 3}


def test_one_noisy_sample_pages_nobody() -> None:
    readings = _readings([{Param.PULSE: 72}], n_each=5)
    spike = VitalReadings(
        device_ids=readings.device_ids,
        resident_ids=readings.resident_ids,
        row=np.append(readings.row, 0),
        ts_ms=np.append(readings.ts_ms, NOW - 1000),
        param=np.append(readings.param, int(Param.PULSE)),
        value=np.append(readings.value, 180.0),
    )
    res = news2(spike, NOW)
    assert res.values[0, Param.PULSE] == 72
    assert news2_findings(spike, NOW) == []


def test_too_few_readings_is_missing() -> None:
    res = news2(_readings([{Param.PULSE: 135}], n_each=2), NOW, config=VitalsConfig(min_readings=3))
    assert not res.present.any()
    assert res.score.tolist() == [0]
    assert res.coverage.tolist() == [0.0]


def test_doctor_override_beats_default() -> None:
    # A resident whose usual systolic pressure is 100 mmHg: the doctor moves the bands down.
    low_normal = News2Settings(systolic_bp=Bands((81, 86, 91, 220), (3, 2, 1, 0, 3)))
    readings = _readings([{Param.SYSTOLIC_BP: 100}] * 2, residents=["usual", "low"])
    res = news2(readings, NOW, settings={"low": low_normal})
    assert res.subscores[:, Param.SYSTOLIC_BP].tolist() == [2, 0]


def test_empty_input() -> None:
    readings = _readings([])
    assert news2(readings, NOW).score.shape == (0,)
    assert news2_findings(readings, NOW) == []


def test_bad_input_nan() -> None:
    with pytest.raises(DetectorInputError, match=r"devices \['d0'\] are NaN"):
        VitalReadings(
            device_ids=["d0"],
            resident_ids=[None],
            row=np.array([0]),
            ts_ms=np.array([NOW]),
            param=np.array([int(Param.PULSE)]),
            value=np.array([np.nan]),
        )


def test_bad_input_shape_and_param() -> None:
    with pytest.raises(DetectorInputError, match="expected one equal 1-D shape"):
        VitalReadings(["d0"], [None], np.array([0, 0]), np.array([NOW]), np.array([0]), np.ones(1))
    with pytest.raises(DetectorInputError, match=r"param has values \[9\]"):
        VitalReadings(["d0"], [None], np.array([0]), np.array([NOW]), np.array([9]), np.ones(1))
    with pytest.raises(ValueError, match="spo2_scale is 3; expected 1 or 2"):
        News2Settings(spo2_scale=3)


def test_trend_known_answer() -> None:
    days = 17
    flat = np.full(days, 62.0)
    rising = np.concatenate([np.full(14, 62.0), [74.0, 75.0, 76.0]])
    sparse = np.full(days, np.nan)
    daily = np.stack([flat, rising, sparse])
    found = trend_findings(["a", "b", "c"], [None, "rb", None], daily, NOW)
    assert [(f.device_id, f.kind, f.severity) for f in found] == [
        ("b", FindingKind.VITAL_TREND, Severity.LOW)
    ]
    assert found[0].evidence.change == pytest.approx(13.0)  # type: ignore[union-attr]


def test_trend_empty_and_bad() -> None:
    assert trend_findings([], [], np.zeros((0, 20)), NOW) == []
    with pytest.raises(DetectorInputError, match=r"expected \(1, days\)"):
        trend_findings(["a"], [None], np.zeros(20), NOW)


def _random_readings(rng: np.random.Generator, n_dev: int, *, skewed: bool) -> VitalReadings:
    m = n_dev * 40
    row = rng.integers(0, n_dev, m)
    if skewed:
        # One device with far more readings than the rest: the padded-array path gives way.
        row[: m // 2] = 0
    param = rng.integers(0, N_PARAMS, m)
    value = np.round(rng.normal(80, 25, m), int(rng.integers(0, 2)))  # ties happen
    ts = NOW - rng.integers(-60_000, 900_000, m)  # some in the future, some too old
    order = rng.permutation(m)  # not grouped
    return VitalReadings(
        device_ids=[f"d{i}" for i in range(n_dev)],
        resident_ids=[None] * n_dev,
        row=row[order],
        ts_ms=ts[order],
        param=param[order],
        value=value[order],
    )


@pytest.mark.parametrize("skewed", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_vectorised_equals_per_device_loop_on_random_data(seed: int, skewed: bool) -> None:
    rng = np.random.default_rng(seed)
    readings = _random_readings(rng, 60, skewed=skewed)
    whole = news2(readings, NOW)
    for i in range(len(readings.device_ids)):
        mine = readings.row == i
        alone = news2(
            VitalReadings(
                device_ids=[readings.device_ids[i]],
                resident_ids=[None],
                row=np.zeros(int(mine.sum()), np.int64),
                ts_ms=readings.ts_ms[mine],
                param=readings.param[mine],
                value=readings.value[mine],
            ),
            NOW,
        )
        np.testing.assert_array_equal(whole.counts[i], alone.counts[0])
        np.testing.assert_array_equal(whole.values[i], alone.values[0])
        np.testing.assert_array_equal(whole.subscores[i], alone.subscores[0])
        assert whole.score[i] == alone.score[0]
        # And the median is the textbook one.
        in_window = mine & (readings.ts_ms <= NOW) & (readings.ts_ms >= NOW - 600_000)
        for p in range(N_PARAMS):
            vals = readings.value[in_window & (readings.param == p)]
            if vals.size >= 3:
                assert whole.values[i, p] == np.median(vals)
