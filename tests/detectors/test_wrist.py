"""The wrist fall detector, its numpy model and the router by placement."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import numpy as np
import numpy.typing as npt
import pytest

from core.placement import Placement
from detectors.events import device_event_findings
from detectors.fall_input import FallBatch
from detectors.fall_model import TreeModel
from detectors.findings import DetectorInputError, FallOutcome, FallOutcomeEvidence, FindingKind
from detectors.placement import UNKNOWN_AS, FallRouter
from detectors.wrist import (
    FEATURES,
    WRIST_MODEL,
    WRIST_MODELS,
    WristConfig,
    WristFallDetector,
    model_name,
)
from tests.recordings import weda_trial

RATE = 50
T0 = 1_700_000_000_000


def _fall(seed: int = 0) -> npt.NDArray[np.float32]:
    """Arm swinging while walking, a short drop, a 5 g impact, then lying still on the side."""
    rng = np.random.default_rng(seed)
    t = np.arange(10 * RATE) / RATE
    a = np.zeros((t.size, 3))
    a[:, 1] = -1.0
    walk = t < 5.0
    a[walk, 0] += 0.3 * np.sin(2 * np.pi * 1.8 * t[walk])
    a[walk, 2] += 0.2 * np.sin(2 * np.pi * 3.6 * t[walk])
    a[(t >= 5.0) & (t < 5.4)] *= 0.3
    a[(t >= 5.4) & (t < 5.5)] = [2.5, -3.0, 3.0]
    a[t >= 5.5] = [0.0, 0.0, 1.0]
    return (a + rng.normal(0, 0.01, a.shape)).astype(np.float32)


def _clapping(seconds: int = 20) -> npt.NDArray[np.float32]:
    """Hands clapping twice a second: a sharp 3 g peak every 0.5 s, the forearm otherwise still."""
    a = np.tile(np.array([0.0, -1.0, 0.0]), (seconds * RATE, 1))
    a[:: RATE // 2] = [2.0, -2.0, 1.5]
    a[1 :: RATE // 2] = [-1.0, -0.5, -0.5]
    return a.astype(np.float32)


def _stream(
    det: WristFallDetector | FallRouter,
    dev: str,
    acc: npt.NDArray[np.float32],
    extra_s: int = 0,
    rate: int = RATE,
) -> list:  # type: ignore[type-arg]
    out = []
    n = acc.shape[0] // rate
    still = np.tile(acc[-1], (rate, 1))
    for k in range(n + extra_s):
        chunk = acc[k * rate : (k + 1) * rate] if k < n else still
        batch = FallBatch.from_bursts([(dev, "r-1", T0 + 1000 * k, rate, chunk)])
        out += det.process(batch, now_ms=T0 + 1000 * (k + 1))
    return out


def test_empty_batch_gives_no_findings() -> None:
    det = WristFallDetector()
    assert det.process(FallBatch.from_bursts([]), now_ms=T0) == []


def test_a_fall_then_lying_still_is_suspected_at_the_impact_and_confirmed_lying_still() -> None:
    found = _stream(WristFallDetector(), "wb-1", _fall(), extra_s=40)
    kinds = [f.kind for f in found]
    assert kinds == [FindingKind.FALL_SUSPECTED, FindingKind.FALL_CONFIRMED]
    assert abs(found[0].ts_ms - (T0 + 5400)) <= 100  # the impact, not the moment of detection
    assert isinstance(found[1].evidence, FallOutcomeEvidence)
    assert found[1].evidence.outcome is FallOutcome.LYING_STILL


def test_clapping_raises_nothing() -> None:
    assert _stream(WristFallDetector(), "wb-2", _clapping()) == []


def test_a_suspected_fall_followed_by_ordinary_movement_is_cancelled_as_recovered() -> None:
    # Walking again: the arm swings and |a| varies by about 0.15 g (std) for 20 s.
    acc = _fall()
    t = np.arange(20 * RATE) / RATE
    swing = np.sin(2 * np.pi * 1.8 * t)
    moving = np.stack([0.3 * swing, -1.0 + 0.2 * swing, 0.1 * np.sin(7 * t)], 1)
    found = _stream(WristFallDetector(), "wb-3", np.concatenate([acc, moving]).astype(np.float32))
    assert [f.kind for f in found] == [FindingKind.FALL_SUSPECTED, FindingKind.FALL_CANCELLED]
    assert isinstance(found[1].evidence, FallOutcomeEvidence)
    assert found[1].evidence.outcome is FallOutcome.RECOVERED


def test_bad_config_and_bad_model_input_raise_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"recover_active_frac=0\.0; expected 0 < x <= 1"):
        WristConfig(recover_active_frac=0.0)
    model = TreeModel.load(WRIST_MODEL)
    with pytest.raises(DetectorInputError, match=r"shape \(2, 3\); expected \(k, 19\)"):
        model.predict_proba(np.zeros((2, 3)))
    with pytest.raises(DetectorInputError, match="expected 'anxin-trees/1'"):
        TreeModel.from_json(json.dumps({"format": "other"}))
    with pytest.raises(DetectorInputError, match="contain NaN or inf"):
        FallBatch.from_bursts([("wb-9", None, T0, RATE, np.full((50, 3), np.nan))])


@pytest.mark.parametrize("name", WRIST_MODELS)
def test_shipped_models_are_small_versioned_and_score_in_0_1(name: str) -> None:
    ref = resources.files("detectors.models").joinpath(f"{name}.json")
    assert len(ref.read_bytes()) < 1_000_000
    model = TreeModel.load(name)
    assert model.name == name == model_name(model.rate_hz)
    assert model.features == FEATURES
    p = model.predict_proba(np.random.default_rng(1).normal(1, 1, (64, len(FEATURES))))
    assert p.shape == (64,)
    assert np.all((p > 0) & (p < 1))
    assert model.predict_proba(np.zeros((0, len(FEATURES)))).shape == (0,)


def test_each_device_rate_is_scored_by_the_model_trained_nearest_it() -> None:
    det = WristFallDetector()
    assert sorted(m.rate_hz for m in det.models) == [25, 32, 50]
    nearest = {25: 25, 28: 25, 29: 32, 32: 32, 39: 32, 40: 50, 50: 50, 100: 50}
    assert {r: det.model_for(r).rate_hz for r in nearest} == nearest
    # In the stream: a 25 Hz and a 50 Hz wristband in one tick, each scored by its own model.
    det.record_candidates()
    fall = _fall()
    for k in range(10):
        det.process(
            FallBatch.from_bursts(
                [
                    ("wb-25", None, T0 + 1000 * k, 25, fall[k * RATE : (k + 1) * RATE : 2]),
                    ("wb-50", None, T0 + 1000 * k, 50, fall[k * RATE : (k + 1) * RATE]),
                ]
            ),
            now_ms=T0 + 1000 * (k + 1),
        )
    rows = det.rows or []
    assert {dev for dev, _, _ in rows} == {"wb-25", "wb-50"}
    for dev, x, score in rows:
        model = det.model_for(25 if dev == "wb-25" else 50)
        assert score == pytest.approx(float(model.predict_proba(x[None])[0]))
    with pytest.raises(ValueError, match=r"trained at \[50, 50\] Hz; expected at least one"):
        WristFallDetector(WristConfig(models=(WRIST_MODEL, WRIST_MODEL)))


@pytest.mark.parametrize("rate", [25, 32])
def test_a_slower_wristband_finds_a_real_fall_and_stays_silent_while_clapping(rate: int) -> None:
    # WEDA-FALL recordings (50 Hz) resampled to the band's rate: a fall forward while walking
    # and an older participant clapping.
    fall = weda_trial("U01", "F01_U01_R01", rate).astype(np.float32)
    clap = weda_trial("U23", "D10_U23_R01", rate).astype(np.float32)
    found = _stream(WristFallDetector(), "wb-f", fall, extra_s=5, rate=rate)
    assert FindingKind.FALL_SUSPECTED in [f.kind for f in found]
    assert _stream(WristFallDetector(), "wb-c", clap, extra_s=5, rate=rate) == []


def test_the_service_imports_no_training_framework() -> None:
    code = (
        "import sys, ingest.detection, detectors.placement;"
        "bad = [m for m in ('sklearn', 'torch', 'lightgbm') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_router_sends_each_device_to_the_detector_of_its_placement() -> None:
    where = {"wb-1": Placement.WRIST, "belt-1": Placement.WAIST, "odd-1": Placement.UNKNOWN}
    router = FallRouter(lambda d: where[d])
    acc = _fall()
    _stream(router, "wb-1", acc[: 2 * RATE])
    _stream(router, "belt-1", acc[: 2 * RATE])
    _stream(router, "odd-1", acc[: 2 * RATE])
    assert "wb-1" in router.detectors[Placement.WRIST].store
    assert "belt-1" in router.detectors[Placement.WAIST].store
    assert "belt-1" not in router.detectors[Placement.WRIST].store
    assert "odd-1" in router.detectors[UNKNOWN_AS].store
    saved = router.export_device("belt-1")
    other = FallRouter(lambda d: where[d])
    other.import_device("belt-1", saved)
    assert other.export_device("belt-1") == saved
    with pytest.raises(DetectorInputError, match="expected a detector byte below 2"):
        other.import_device("wb-1", b"\x07rest")


def test_a_wearer_cancel_closes_the_wrist_window() -> None:
    router = FallRouter(lambda d: Placement.WRIST)
    found = _stream(router, "wb-5", _fall())
    assert [f.kind for f in found] == [FindingKind.FALL_SUSPECTED]
    out = device_event_findings(
        router, device_ids=["wb-5"], resident_ids=["r-1"], kinds=["cancel"], ts_ms=[T0 + 11_000],
        now_ms=T0 + 11_000,
    )  # fmt: skip
    assert [f.kind for f in out] == [FindingKind.FALL_CANCELLED]
    assert isinstance(out[0].evidence, FallOutcomeEvidence)
    assert out[0].evidence.outcome is FallOutcome.CANCELLED_BY_WEARER
