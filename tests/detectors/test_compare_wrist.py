"""The comparison of wrist decision models (docs/detection.md, "Tried"): its measures."""

from __future__ import annotations

import numpy as np

from detectors.datasets import Trial
from detectors.training.compare_wrist import (
    detected_at_chosen_threshold,
    forearm_columns,
    held_out_scores,
    specificity_at,
    waveform,
)
from detectors.training.train_wrist import Candidates
from detectors.wrist import WristConfig


def _candidates(windows: np.ndarray, trial: list[int], label: list[int]) -> Candidates:
    k = windows.shape[0]
    return Candidates(
        trial=np.array(trial, np.int64),
        x=np.zeros((k, 19), np.float32),
        label=np.array(label, np.int8),
        window=windows.astype(np.float32),
    )


def test_specificity_is_read_at_the_threshold_that_finds_the_asked_share_of_falls() -> None:
    # 20 falls scored 1..20; activities scored 0.5, 2.5, 5.5, 30.
    scores = np.array([*range(1, 21), 0.5, 2.5, 5.5, 30.0], np.float64)
    is_fall = np.array([True] * 20 + [False] * 4)
    # 95 % of 20 falls = 19: threshold 2 (falls 2..20), activities below it: 0.5 -> 1 of 4.
    # 90 %: 18 falls, threshold 3: 0.5 and 2.5 -> 2 of 4.
    assert specificity_at(scores, is_fall, (0.95, 0.90)) == [0.25, 0.5]


def test_each_trial_is_scored_by_the_model_fitted_without_its_group() -> None:
    c = _candidates(np.zeros((4, 350, 3)), trial=[0, 0, 1, 2], label=[1, -1, 0, 0])
    groups = [np.array([True, False, False]), np.array([False, True, True])]

    def seen(cands: Candidates, rows: np.ndarray) -> np.ndarray:
        # log-odds 1 for a candidate the model was fitted on, 0 otherwise
        return rows.astype(np.float64)

    assert held_out_scores(seen, c, groups, 3).tolist() == [0.0, 0.0, 0.0]


def test_forearm_share_and_waveform_of_an_arm_that_hangs_then_lies_flat() -> None:
    # 4 s with gravity along x (arm hanging), then 3 s along z (forearm flat), at 50 Hz.
    w = np.zeros((1, 350, 3))
    w[0, :200, 0] = -1.0
    w[0, 200:, 2] = 1.0
    c = _candidates(w, trial=[0], label=[0])
    cfg = WristConfig()
    pre_x, post_x, late_x, post_z, pre_z = forearm_columns(c, cfg)[0]
    assert (pre_x, post_x, late_x, post_z, pre_z) == (1.0, 0.0, 0.0, 1.0, 0.0)
    wave = waveform(c, cfg).reshape(70, 3)
    np.testing.assert_allclose(wave[:, 0], 0.0, atol=1e-6)  # |a| is 1 g throughout
    np.testing.assert_allclose(wave[:40, 1:], [[1.0, 0.0]] * 40, atol=1e-6)
    np.testing.assert_allclose(wave[40:, 1:], [[0.0, 1.0]] * 30, atol=1e-6)


def test_held_out_trials_are_judged_at_the_threshold_read_on_the_training_people() -> None:
    # Five people of one source held in training, one held out; each has 25 falls with log-odds
    # 0.1 .. 2.5 and 4 activities with 0.05, 0.15, 0.25 and 2.6. One candidate per trial.
    falls = [k / 10 for k in range(1, 26)]
    acts = [0.05, 0.15, 0.25, 2.6]
    trials, logit = [], []
    for p in range(6):
        for i, z in enumerate(falls + acts):
            code = "F01" if i < len(falls) else "D01"
            trials.append(
                Trial(f"{code}_P{p}_R{i}", f"P{p}", code, "src", np.zeros((1, 3), np.float32))
            )
            logit.append(z)
    n = len(trials)
    c = Candidates(
        trial=np.arange(n, dtype=np.int64),
        x=np.zeros((n, 19), np.float32),
        label=np.array([1 if t.is_fall else 0 for t in trials], np.int8),
    )
    held = np.array([t.subject == "P5" for t in trials])
    fitted_on: list[np.ndarray] = []

    def fixed(cands: Candidates, rows: np.ndarray) -> np.ndarray:
        fitted_on.append(rows)
        return np.array(logit)

    hit = detected_at_chosen_threshold(fixed, c, trials, [held])
    # 96 % of the 125 training falls is 120: the threshold is the 120th highest, log-odds 0.2.
    # Held out: falls 0.2 .. 2.5 found (24 of 25), activities 0.25 and 2.6 raised.
    assert hit[held].tolist() == [False] + [True] * 24 + [False, False, True, True]
    assert not hit[~held].any()  # only held-out trials are judged
    # 3 inner folds and the final fit, none of them on the held-out person
    assert len(fitted_on) == 4
    assert not any((rows & held[c.trial]).any() for rows in fitted_on)
