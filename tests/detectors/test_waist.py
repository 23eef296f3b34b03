"""The trunk fall detector (waist, chest): its forest model, real SisFall recordings, the trunk's
recovery rule, and windows kept across a change of detector."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import numpy.typing as npt
import pytest

from core.placement import Placement
from detectors.fall_features import ImpactWindows
from detectors.fall_input import FallBatch
from detectors.fall_model import MEAN_PROBABILITY, TreeModel
from detectors.falls import FallDetector
from detectors.findings import DetectorInputError, FallOutcome, FallOutcomeEvidence, FindingKind
from detectors.placement import FallRouter
from detectors.waist import (
    TRUNK_FEATURES,
    WAIST_MODEL,
    WAIST_MODELS,
    WaistConfig,
    WaistFallDetector,
    descent_speed,
)
from detectors.wrist import model_name
from tests.recordings import sisfall_trial

RATE = 50
T0 = 1_700_000_000_000
FALLS = [("SA01", "F01_SA01_R01"), ("SA01", "F05_SA01_R02"), ("SA03", "F10_SA03_R01")]
ACTIVITIES = [("SA01", "D01_SA01_R01"), ("SA01", "D02_SA01_R01"), ("SA03", "D07_SA03_R01")]


def _stream(
    det: FallDetector | FallRouter, dev: str, acc: npt.NDArray[np.float64], rate: int = RATE
) -> list:  # type: ignore[type-arg]
    out = []
    for k in range(acc.shape[0] // rate):
        chunk = acc[k * rate : (k + 1) * rate].astype(np.float32)
        batch = FallBatch.from_bursts([(dev, "r-1", T0 + 1000 * k, rate, chunk)])
        out += det.process(batch, now_ms=T0 + 1000 * (k + 1))
    return out


def _then(acc: npt.NDArray[np.float64], after: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.concatenate([acc[: acc.shape[0] // RATE * RATE], after])


@pytest.mark.parametrize("name", WAIST_MODELS)
def test_shipped_trunk_models_are_small_versioned_forests_scoring_in_0_1(name: str) -> None:
    ref = resources.files("detectors.models").joinpath(f"{name}.json")
    assert len(ref.read_bytes()) < 1_000_000
    model = TreeModel.load(name)
    assert model.name == name == model_name(model.rate_hz, WAIST_MODEL)
    assert model.aggregate == MEAN_PROBABILITY
    assert model.features == TRUNK_FEATURES
    p = model.predict_proba(np.random.default_rng(1).normal(1, 1, (64, len(TRUNK_FEATURES))))
    assert p.shape == (64,)
    assert np.all((p >= 0) & (p <= 1))


def _windows(
    mag: npt.NDArray[np.float64], valid: npt.NDArray[np.bool_], impact: int
) -> ImpactWindows:
    win = np.zeros((*mag.shape, 3), np.float32)
    win[..., 2] = mag
    return ImpactWindows(
        win=win,
        mag=mag.astype(np.float32),
        valid=valid,
        impact=impact,
        span_mag=mag.astype(np.float32),
        span_valid=valid,
        span_impact=np.full(mag.shape[0], impact, np.int64),
    )


def test_descent_speed_is_what_the_trunk_gained_falling_before_the_impact() -> None:
    rate, impact = 50, 200
    mag = np.ones((4, 350))
    # A drop: 0.4 s weightless (the speed gained: 0.4 s x 9.81 m/s2), then the impact.
    mag[0, impact - 20 : impact] = 0.0
    mag[0, impact] = 4.0
    # Lying down onto a bed: a shallow dip of 0.2 g for 0.5 s, then 1.3 g as it stops.
    mag[1, impact - 40 : impact - 15] = 0.8
    mag[1, impact - 15 : impact + 1] = 1.3
    # Gravity all along, then the impact: nothing gained.
    mag[2, impact] = 3.0
    valid = np.ones(mag.shape, np.bool_)
    valid[3] = False  # no signal before or at the impact
    v = descent_speed(_windows(mag, valid, impact), rate=rate)
    assert v[0] == pytest.approx(0.4 * 9.81, rel=1e-5)
    assert v[1] == pytest.approx(0.5 * 0.2 * 9.81, rel=1e-5)
    assert v[2] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(v[3])


def test_a_forest_scores_the_mean_of_its_leaves() -> None:
    # Two stumps on feature 0 at 1.0: leaves 0.2 / 0.8 and 0.4 / 1.0.
    def stump(lo: float, hi: float) -> dict[str, list[object]]:
        return {
            "feature": [0, 0, 0],
            "threshold": [1.0, None, None],
            "left": [1, 1, 2],
            "right": [2, 1, 2],
            "value": [0.0, lo, hi],
        }

    doc = {
        "format": "anxin-trees/1",
        "name": "forest-test",
        "rate_hz": 50,
        "features": ["a"],
        "nan_value": -1.0,
        "aggregate": MEAN_PROBABILITY,
        "base_score": 0.0,
        "threshold": 0.5,
        "depth": 1,
        "trees": [stump(0.2, 0.8), stump(0.4, 1.0)],
    }
    model = TreeModel.from_json(json.dumps(doc))
    np.testing.assert_allclose(model.predict_proba([[0.5], [2.0], [np.nan]]), [0.3, 0.9, 0.3])
    with pytest.raises(DetectorInputError, match="aggregate is 'median'"):
        TreeModel.from_json(json.dumps({**doc, "aggregate": "median"}))


@pytest.mark.parametrize("rate", [50, 25])
def test_real_waist_falls_are_found_and_walking_and_jogging_stay_silent(rate: int) -> None:
    for subject, key in FALLS:
        found = _stream(WaistFallDetector(), key, sisfall_trial(subject, key, rate), rate)
        assert [f.kind for f in found] == [FindingKind.FALL_SUSPECTED], key
    for subject, key in ACTIVITIES:
        assert _stream(WaistFallDetector(), key, sisfall_trial(subject, key, rate), rate) == [], key


def test_after_a_real_fall_lying_still_is_confirmed_and_walking_upright_is_recovered() -> None:
    fall = sisfall_trial(*FALLS[0])
    lying = np.tile(fall[-RATE:].mean(axis=0), (40 * RATE, 1))
    lying += np.random.default_rng(2).normal(0, 0.005, lying.shape)
    found = _stream(WaistFallDetector(), "lying", _then(fall, lying))
    assert [f.kind for f in found] == [FindingKind.FALL_SUSPECTED, FindingKind.FALL_CONFIRMED]
    assert isinstance(found[1].evidence, FallOutcomeEvidence)
    assert found[1].evidence.outcome is FallOutcome.LYING_STILL

    # Up again: gravity along the direction it had while walking before the fall, and |a|
    # varying by about 0.2 g with each step.
    upright = fall[: 2 * RATE].mean(axis=0)
    upright /= np.linalg.norm(upright)
    t = np.arange(20 * RATE) / RATE
    walking = upright[None, :] * (1.0 + 0.3 * np.sin(2 * np.pi * 1.8 * t))[:, None]
    found = _stream(WaistFallDetector(), "up", _then(fall, walking))
    assert [f.kind for f in found] == [FindingKind.FALL_SUSPECTED, FindingKind.FALL_CANCELLED]
    assert isinstance(found[1].evidence, FallOutcomeEvidence)
    assert found[1].evidence.outcome is FallOutcome.RECOVERED


def test_a_window_saved_by_a_detector_with_other_windows_is_kept_and_ends_once() -> None:
    # The threshold rule (FallDetector, a shorter ring) suspects a real fall; its state is
    # saved, as by an ingester before an upgrade, and loaded into the trunk detector.
    fall = sisfall_trial(*FALLS[0])
    old = FallDetector()
    found = _stream(old, "belt-1", fall)
    assert [f.kind for f in found] == [FindingKind.FALL_SUSPECTED]
    saved = old.store.export_device("belt-1")
    new = WaistFallDetector()
    assert new.config.ring_len(RATE) != old.config.ring_len(RATE)
    new.store.import_device("belt-1", saved)
    assert [d for d, _, _ in new.store.pending_confirmations()] == ["belt-1"]
    empty = FallBatch.from_bursts([])
    deadline = new.store.pending_confirmations()[0][2]
    late = new.process(empty, now_ms=deadline + 6_000) + new.process(
        empty, now_ms=deadline + 60_000
    )
    assert [(f.kind, f.evidence.outcome) for f in late] == [  # type: ignore[union-attr]
        (FindingKind.FALL_CONFIRMED, FallOutcome.NO_DATA)
    ]


def test_waist_and_chest_devices_go_to_the_trunk_detector() -> None:
    where = {"belt-1": Placement.WAIST, "pendant-1": Placement.CHEST, "wb-1": Placement.WRIST}
    router = FallRouter(lambda d: where[d])
    assert isinstance(router.detectors[Placement.WAIST], WaistFallDetector)
    assert router.detectors[Placement.CHEST] is router.detectors[Placement.WAIST]
    assert not isinstance(router.detectors[Placement.WRIST], WaistFallDetector)
    with pytest.raises(TypeError, match="expected a WaistConfig"):
        WaistFallDetector(FallDetector().config)  # type: ignore[arg-type]
    assert WaistConfig().recover_deg == 30.0
