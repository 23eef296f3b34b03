"""Train the trunk fall model (``detectors/models/waist-fall-v2.json``) from waist recordings.

    .venv/bin/python -m detectors.training.train_waist --data ../shared/datasets/sisfall
    .venv/bin/python -m detectors.training.train_waist --data ../shared/datasets/sisfall --rate 25

The same candidates and labels as the wrist model (``train_wrist``: every trial streamed through
the detector in 1 s bursts, the largest impact of a fall trial is the fall, every candidate of an
activity is not), with the trunk detector's features (:data:`~detectors.waist.TRUNK_FEATURES`:
the wrist model's and the speed gained falling), from SisFall's waist recordings resampled to
``--rate``. The model is a random forest (scikit-learn ``RandomForestClassifier``, 100 trees, at
least 3 candidates per leaf, classes balanced; each leaf's share of falls is the score, averaged
over the trees), written as ``anxin-trees/1`` with ``aggregate: mean-probability``. The
threshold is the highest that still finds ``--target-sensitivity`` (98.5 %) of the fall trials
in out-of-fold scores of 5 subject folds.

Reproducible: fixed seeds, sorted inputs, one thread. Needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.datasets import load_sisfall
from detectors.fall_input import MAX_RATE_HZ, MIN_RATE_HZ
from detectors.fall_model import FORMAT, MEAN_PROBABILITY
from detectors.training import train_wrist
from detectors.training.train_wrist import NAN_VALUE, SEED, candidates, tree_doc
from detectors.waist import TRUNK_FEATURES, WAIST_MODEL, WaistConfig, WaistFallDetector
from detectors.wrist import WRIST_MODEL_RATE_HZ, model_name

TARGET_SENSITIVITY = 0.985
N_TREES = 100
MIN_LEAF = 3


def fit_forest(x: npt.NDArray[np.float32], y: npt.NDArray[np.int8], seed: int = SEED) -> Any:
    """A random forest on ``x``, ``y`` (0/1), classes balanced."""
    # scikit-learn is a training-time dependency only (the "train" extra).
    from sklearn.ensemble import RandomForestClassifier  # type: ignore[import-untyped]  # noqa: PLC0415

    clf = RandomForestClassifier(
        n_estimators=N_TREES,
        min_samples_leaf=MIN_LEAF,
        class_weight="balanced",
        random_state=seed,
        n_jobs=1,
    )
    clf.fit(np.nan_to_num(x, nan=NAN_VALUE), y)
    return clf


def export_forest(clf: Any, threshold: float, rate_hz: int) -> dict[str, Any]:
    """The JSON document of a fitted forest (``anxin-trees/1``, mean of leaf probabilities)."""
    trees = []
    for est in clf.estimators_:
        counts = est.tree_.value[:, 0, :]
        share = counts[:, 1] / np.maximum(counts.sum(axis=1), 1e-12)
        trees.append(tree_doc(est.tree_, share))
    depth = max(int(est.tree_.max_depth) for est in clf.estimators_)
    return {
        "format": FORMAT,
        "name": model_name(rate_hz, WAIST_MODEL),
        "rate_hz": rate_hz,
        "features": list(TRUNK_FEATURES),
        "nan_value": NAN_VALUE,
        "aggregate": MEAN_PROBABILITY,
        "base_score": 0.0,
        "threshold": round(threshold, 4),
        "depth": depth,
        "trainer": f"sklearn RandomForestClassifier(n_estimators={N_TREES}, "
        f"min_samples_leaf={MIN_LEAF}, class_weight='balanced', random_state={SEED})",
        "trees": trees,
    }


train = functools.partial(
    train_wrist.train, target=TARGET_SENSITIVITY, fit_fn=fit_forest, export_fn=export_forest
)
"""Fit the forest on the trials in ``train_mask``, threshold by inner subject folds (for
:data:`TARGET_SENSITIVITY` of their falls); the model file (:func:`train_wrist.train`)."""


def main(argv: list[str] | None = None) -> int:
    """Entry point; writes the model JSON and prints what it did."""
    ap = argparse.ArgumentParser(prog="train_waist", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/sisfall"))
    ap.add_argument("--rate", type=int, default=WRIST_MODEL_RATE_HZ, help="Hz (25..100)")
    ap.add_argument("--out", type=Path, default=None, help="default: detectors/models/<name>.json")
    ap.add_argument("--target-sensitivity", type=float, default=TARGET_SENSITIVITY)
    args = ap.parse_args(argv)
    rate = args.rate
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        ap.error(f"--rate {rate} is outside {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz")
    name = model_name(rate, WAIST_MODEL)
    out = args.out or Path(__file__).parent.parent / "models" / f"{name}.json"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    trials = load_sisfall(args.data, rate)
    cands = candidates(trials, rate, WaistConfig(), detector=WaistFallDetector)
    doc = train(
        trials, cands, np.ones(len(trials), np.bool_), rate_hz=rate, target=args.target_sensitivity
    )
    doc["trained_on"] = f"{len(trials)} SisFall trials (waist), {cands.x.shape[0]} candidates"
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n", "utf-8")
    print(
        f"{len(trials)} trials, {cands.x.shape[0]} candidates "
        f"({int((cands.label == 1).sum())} falls, {int((cands.label == 0).sum())} activities); "
        f"{rate} Hz, threshold {doc['threshold']:.4f}; wrote {out} ({out.stat().st_size} bytes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
