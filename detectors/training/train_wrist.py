"""Train a wrist fall model (``detectors/models/wrist-fall-v1.json``) from the wrist recordings.

    .venv/bin/python -m detectors.training.train_wrist --data ../shared/datasets/wrist
    .venv/bin/python -m detectors.training.train_wrist --data ../shared/datasets/wrist --rate 25

One model per sample rate: the recordings are resampled to ``--rate`` (50 Hz by default) and
the model is named for it (``wrist-fall-v1`` at 50 Hz, ``wrist-fall-25hz-v1`` at 25 Hz). The
detector scores each device with the model trained nearest its rate.

Reproducible: fixed seeds, sorted inputs, one thread. Training needs scikit-learn (the ``train``
extra); the service never imports this module, it reads the JSON the script writes.

1. **Candidates**: every trial is streamed through :class:`~detectors.wrist.WristFallDetector`
   (1 s bursts, exactly as in service) with a model that scores nothing, recording the
   :data:`~detectors.wrist.FEATURES` of every candidate impact that passes the pre-filter.
2. **Labels**: in a fall trial the candidate with the largest peak is the fall (positive); its
   other candidates (walking before the fall, the bounce) are left out, as nobody labelled them.
   Every candidate of an activity trial is negative.
3. **Model**: gradient-boosted trees of depth 3 (scikit-learn ``GradientBoostingClassifier``),
   classes weighted to balance.
4. **Threshold**: from out-of-fold scores of a subject-wise 5-fold split of the training
   subjects: the highest threshold that still finds ``--target-sensitivity`` of the fall trials
   (a trial is found when any of its candidates scores at or above it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.datasets import Trial, load_wrist, subject_keys
from detectors.fall_input import MAX_RATE_HZ, MIN_RATE_HZ
from detectors.fall_model import FORMAT, TreeModel
from detectors.replay import run_trials
from detectors.wrist import (
    FEATURES,
    WRIST_MODEL_RATE_HZ,
    WristConfig,
    WristFallDetector,
    model_name,
)

SEED = 20240611
NAN_VALUE = -1.0
TARGET_SENSITIVITY = 0.96
N_TREES = 200
DEPTH = 3
LEARNING_RATE = 0.05


@dataclass(frozen=True, eq=False)
class Candidates:
    """Every candidate of every trial, flat.

    Attributes:
        trial: int64 ``(m,)`` index of the trial in the list given.
        x: float32 ``(m, number of the detector's features)`` features.
        label: int8 ``(m,)``: 1 fall, 0 activity, -1 left out (other candidates of a fall trial).
        window: float32 ``(m, W, 3)`` the signal around each impact (``keep_windows``), else None.
    """

    trial: npt.NDArray[np.int64]
    x: npt.NDArray[np.float32]
    label: npt.NDArray[np.int8]
    window: npt.NDArray[np.float32] | None = None


def candidates(
    trials: Sequence[Trial],
    rate_hz: int,
    config: WristConfig,
    *,
    keep_windows: bool = False,
    detector: type[WristFallDetector] = WristFallDetector,
) -> Candidates:
    """Record and label the candidates of ``trials`` (see the module docstring); with
    ``keep_windows`` also the signal around each impact (for comparing other models). The
    columns are ``detector.features`` (the trunk detector's for ``WaistFallDetector``)."""
    det = detector(config, model=TreeModel.constant(detector.features, rate_hz=rate_hz))
    det.threshold = 2.0  # record only: nothing is suspected, every window stays closed
    det.record_candidates()
    run_trials(trials, rate_hz, det, drain=False)
    rows = det.rows or []
    trial = np.array([int(r[0]) for r in rows], np.int64)
    x = np.array([r[1] for r in rows], np.float32).reshape(-1, len(detector.features))
    peak = x[:, detector.features.index("peak_g")]
    intensity = x[:, detector.features.index("intensity_g")]
    # What the detector's cheap pre-filter lets through in service (it is off while recording).
    keep = (peak >= config.peak_g) & (intensity >= config.intensity_g)
    trial, x = trial[keep], x[keep]
    window = None
    if keep_windows:
        window = np.concatenate([f.window for _, f in det.candidates or []])[keep]
    peak = peak[keep]
    is_fall = np.array([trials[i].is_fall for i in trial.tolist()], np.bool_)
    label = np.where(is_fall, -1, 0).astype(np.int8)
    order = np.lexsort((-peak, trial))
    first = np.ones(order.size, np.bool_)
    first[1:] = trial[order][1:] != trial[order][:-1]
    best = order[first]
    label[best[is_fall[best]]] = 1
    return Candidates(trial, x, label, window)


def fit(x: npt.NDArray[np.float32], y: npt.NDArray[np.int8], seed: int = SEED) -> Any:
    """Gradient-boosted trees on ``x``, ``y`` (0/1), classes balanced by weight."""
    # scikit-learn is a training-time dependency only (the "train" extra).
    from sklearn.ensemble import GradientBoostingClassifier  # type: ignore[import-untyped]  # noqa: PLC0415

    pos = float(y.sum())
    neg = float(y.size - pos)
    w = np.where(y == 1, neg / max(pos, 1.0), 1.0)
    clf = GradientBoostingClassifier(
        n_estimators=N_TREES,
        max_depth=DEPTH,
        learning_rate=LEARNING_RATE,
        subsample=0.8,
        random_state=seed,
    )
    clf.fit(np.nan_to_num(x, nan=NAN_VALUE), y, sample_weight=w)
    return clf


def tree_doc(t: Any, leaf_value: npt.NDArray[np.float64]) -> dict[str, list[Any]]:
    """One scikit-learn ``tree_`` as the node arrays of ``anxin-trees/1``, ``leaf_value`` per
    node (kept at leaves only)."""
    idx = np.arange(t.node_count)
    leaf = t.children_left < 0
    return {
        "feature": np.where(leaf, 0, t.feature).astype(int).tolist(),
        "threshold": [
            None if lf else round(float(v), 7) for lf, v in zip(leaf, t.threshold, strict=True)
        ],
        "left": np.where(leaf, idx, t.children_left).astype(int).tolist(),
        "right": np.where(leaf, idx, t.children_right).astype(int).tolist(),
        "value": [
            round(float(v), 7) if lf else 0.0 for lf, v in zip(leaf, leaf_value, strict=True)
        ],
    }


def export(clf: Any, threshold: float, rate_hz: int) -> dict[str, Any]:
    """The JSON document of a fitted classifier (format ``anxin-trees/1``)."""
    p0 = float(clf.init_.predict_proba(np.zeros((1, len(FEATURES))))[0, 1])
    trees = [
        tree_doc(est.tree_, est.tree_.value[:, 0, 0] * clf.learning_rate)
        for est in clf.estimators_[:, 0]
    ]
    return {
        "format": FORMAT,
        "name": model_name(rate_hz),
        "rate_hz": rate_hz,
        "features": list(FEATURES),
        "nan_value": NAN_VALUE,
        "base_score": float(np.log(p0 / (1.0 - p0))),
        "threshold": round(threshold, 4),
        "depth": DEPTH,
        "trainer": f"sklearn GradientBoostingClassifier(n_estimators={N_TREES}, "
        f"max_depth={DEPTH}, learning_rate={LEARNING_RATE}, subsample=0.8, "
        f"random_state={SEED}), classes balanced",
        "trees": trees,
    }


#: Fitted on the candidate rows given (a mask over the candidates), the fall probability of
#: every candidate.
Scorer = Callable[[npt.NDArray[np.bool_]], npt.NDArray[np.float64]]


def trial_max(
    p: npt.NDArray[np.float64], cands: Candidates, n_trials: int
) -> npt.NDArray[np.float64]:
    """Largest of ``p`` over each trial's candidates (0 for a trial without candidates)."""
    out = np.zeros(n_trials)
    if cands.trial.size:
        np.maximum.at(out, cands.trial, p)
    return out


def trial_scores(model: TreeModel, cands: Candidates, n_trials: int) -> npt.NDArray[np.float64]:
    """Largest score of each trial's candidates (0 for a trial without candidates)."""
    return trial_max(model.predict_proba(cands.x), cands, n_trials)


def threshold_for(
    scores: npt.NDArray[np.float64], is_fall: npt.NDArray[np.bool_], target: float
) -> float:
    """Highest threshold whose trial-level sensitivity is at least ``target``."""
    fs = np.sort(scores[is_fall])[::-1]
    if fs.size == 0:
        return 0.5
    k = min(fs.size - 1, max(0, int(np.ceil(target * fs.size)) - 1))
    return float(min(fs[k], 0.99))


def inner_threshold(
    trials: Sequence[Trial],
    cands: Candidates,
    train_mask: npt.NDArray[np.bool_],
    score: Scorer,
    *,
    target: float = TARGET_SENSITIVITY,
    inner_folds: int = 5,
    seed: int = SEED,
) -> float:
    """The threshold that finds ``target`` of the fall trials in ``train_mask``, read on
    out-of-fold scores of ``inner_folds`` subject folds of those trials' people."""
    subjects = subject_keys(trials)
    uniq = sorted(set(subjects[train_mask].tolist()))
    is_fall = np.array([t.is_fall for t in trials])
    use = train_mask[cands.trial] & (cands.label >= 0)
    oof = np.zeros(len(trials))
    order = np.random.default_rng(seed).permutation(len(uniq))
    for f in range(inner_folds):
        held = {uniq[i] for i in order[f::inner_folds]}
        held_t = np.isin(subjects, list(held)) & train_mask
        sc = trial_max(score(use & ~held_t[cands.trial]), cands, len(trials))
        oof[held_t] = sc[held_t]
    return threshold_for(oof[train_mask], is_fall[train_mask], target)


def train(
    trials: Sequence[Trial],
    cands: Candidates,
    train_mask: npt.NDArray[np.bool_],
    *,
    rate_hz: int,
    target: float = TARGET_SENSITIVITY,
    inner_folds: int = 5,
    seed: int = SEED,
    fit_fn: Callable[[npt.NDArray[np.float32], npt.NDArray[np.int8], int], Any] = fit,
    export_fn: Callable[[Any, float, int], dict[str, Any]] = export,
) -> dict[str, Any]:
    """Fit on the trials in ``train_mask``, threshold by inner subject folds; the model file.

    ``fit_fn`` and ``export_fn`` make the model (the boosted trees by default; the trunk's forest
    in ``train_waist``); the inner folds score it as it ships, through :class:`TreeModel`.
    """

    def model(rows: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
        clf = fit_fn(cands.x[rows], cands.label[rows], seed)
        return TreeModel.from_json(json.dumps(export_fn(clf, 0.5, rate_hz))).predict_proba(cands.x)

    thr = inner_threshold(
        trials, cands, train_mask, model, target=target, inner_folds=inner_folds, seed=seed
    )
    use = train_mask[cands.trial] & (cands.label >= 0)
    return export_fn(fit_fn(cands.x[use], cands.label[use], seed), thr, rate_hz)


def main(argv: list[str] | None = None) -> int:
    """Entry point; writes the model JSON and prints what it did."""
    ap = argparse.ArgumentParser(prog="train_wrist", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/wrist"))
    ap.add_argument(
        "--rate",
        type=int,
        default=WRIST_MODEL_RATE_HZ,
        help="sample rate to train at, Hz (25..100)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the model (default: detectors/models/<its name>.json)",
    )
    ap.add_argument("--target-sensitivity", type=float, default=TARGET_SENSITIVITY)
    args = ap.parse_args(argv)
    rate = args.rate
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        ap.error(f"--rate {rate} is outside {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz")
    out = args.out or Path(__file__).parent.parent / "models" / f"{model_name(rate)}.json"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    trials = load_wrist(args.data, rate)
    config = WristConfig()
    cands = candidates(trials, rate, config)
    doc = train(
        trials, cands, np.ones(len(trials), np.bool_), rate_hz=rate, target=args.target_sensitivity
    )
    sources = sorted({t.source for t in trials})
    doc["trained_on"] = f"{len(trials)} wrist trials of {sources}, {cands.x.shape[0]} candidates"
    model = TreeModel.from_json(json.dumps(doc))
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n", "utf-8")
    print(
        f"{len(trials)} trials, {cands.x.shape[0]} candidates "
        f"({int((cands.label == 1).sum())} falls, {int((cands.label == 0).sum())} activities); "
        f"{rate} Hz, threshold {model.threshold:.4f}; wrote {out} ({out.stat().st_size} bytes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
