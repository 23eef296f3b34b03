"""Compare wrist decision models on pooled held-out scores (docs/detection.md, "Tried").

    .venv/bin/python -m detectors.training.compare_wrist --data ../shared/datasets/wrist
    .venv/bin/python -m detectors.training.compare_wrist --data ../shared/datasets/wrist --at-threshold

Every variant is judged the same way, in subject-wise cross-validation (5 folds of people, seeded)
and leaving one source out: fitted on the training folds' candidates
(:func:`~detectors.training.train_wrist.candidates`, labelled as for the shipped model), it
scores the held-out candidates; a trial's score is its largest candidate's. Printed per variant
and split: the specificity (activity trials scored below the threshold) at the threshold that
finds 95 % and 96 % of the pooled held-out fall trials. This ranks models.

With ``--at-threshold`` each variant is judged as the evaluator judges the shipped model instead:
on the evaluator's folds, with the threshold read on the training people alone (the one that
finds 96 % of their falls in out-of-fold scores of 3 inner subject folds), it prints the
held-out sensitivity and specificity per split and per source. For ``trees`` these are the
figures of ``anxin detectors evaluate-falls`` (without the confirmation stage, which only the
evaluator streams). A model that ranks better can still find fewer falls on a source it never
saw, when its scores there fall below a threshold read on the others.

Variants:

* ``trees``: the shipped design, boosted trees over the 19 :data:`~detectors.wrist.FEATURES`.
* ``trees+forearm``: five more columns, the share of gravity along the device's x axis (the
  forearm on every source here) before, after and in the last second after the impact, and
  along z before and after; sign-free, whichever wrist.
* ``trees+wave``: the trees' log-odds averaged with those of a perceptron (one hidden layer of
  32, L2 penalty 1.0, 300 epochs) over the waveform: ``|a| - 1`` and the acceleration on the
  gravity directions before and after the impact, 0.1 s bins over the 7 s around it.
* Other model families over the same 19 features, classes balanced: ``histogram-boosting``
  (200 trees of depth 3, learning rate 0.1), ``random-forest`` and ``extra-trees`` (300 trees,
  at least 3 candidates per leaf), ``logistic`` (each feature mapped to a normal by its
  quantiles, then logistic regression).

Seeded; about 3 minutes at 50 Hz on this machine for the default variants (4 with
``--at-threshold`` and the six of the docs' table). Needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from detectors.datasets import Trial, load_wrist, subject_folds, subject_keys
from detectors.training.train_wrist import (
    SEED,
    TARGET_SENSITIVITY,
    Candidates,
    candidates,
    fit,
    inner_threshold,
    trial_max,
)
from detectors.wrist import WristConfig

F64 = npt.NDArray[np.float64]
B8 = npt.NDArray[np.bool_]
RATE_HZ = 50
BIN_S = 0.1
SENSITIVITIES = (0.95, 0.96)

#: A variant: (candidates, rows to fit on) -> log-odds of every candidate.
Variant = Callable[[Candidates, B8], F64]


def _logit(p: F64) -> F64:
    q = np.clip(p, 1e-6, 1.0 - 1e-6)
    out: F64 = np.log(q / (1.0 - q))
    return out


def _mean_dir(w: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Unit mean acceleration of each row of ``w`` ``(m, n, 3)``; 0 where it has no length."""
    v = w.astype(np.float64).mean(axis=1)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    out: npt.NDArray[np.float64] = np.where(n > 0, v / np.where(n > 0, n, 1.0), 0.0)
    return out


def _parts(c: Candidates, cfg: WristConfig) -> dict[str, npt.NDArray[np.float32]]:
    assert c.window is not None  # noqa: S101 - candidates(..., keep_windows=True)
    s = cfg.samples
    imp = s(cfg.pre_start_s, RATE_HZ)
    w = c.window
    return {
        "pre": w[:, imp - s(cfg.pre_start_s, RATE_HZ) : imp - s(cfg.pre_end_s, RATE_HZ)],
        "post": w[:, imp + s(cfg.post_start_s, RATE_HZ) : imp + s(cfg.post_end_s, RATE_HZ)],
        "late": w[:, imp + s(cfg.post_end_s - 1.0, RATE_HZ) : imp + s(cfg.post_end_s, RATE_HZ)],
    }


def forearm_columns(c: Candidates, cfg: WristConfig) -> npt.NDArray[np.float32]:
    """``|g_x| / |g|`` before, after and late after the impact; ``|g_z| / |g|`` before, after."""
    p = _parts(c, cfg)
    d = {k: np.abs(_mean_dir(v)) for k, v in p.items()}
    cols = [d["pre"][:, 0], d["post"][:, 0], d["late"][:, 0], d["post"][:, 2], d["pre"][:, 2]]
    return np.stack(cols, axis=1).astype(np.float32)


def waveform(c: Candidates, cfg: WristConfig) -> npt.NDArray[np.float32]:
    """``|a| - 1``, ``a`` on the gravity direction before and after, in 0.1 s bins."""
    assert c.window is not None  # noqa: S101 - candidates(..., keep_windows=True)
    p = _parts(c, cfg)
    w = c.window.astype(np.float64)
    pre, post = _mean_dir(p["pre"]), _mean_dir(p["post"])
    ch = np.stack(
        [
            np.linalg.norm(w, axis=2) - 1.0,
            np.einsum("mwd,md->mw", w, pre),
            np.einsum("mwd,md->mw", w, post),
        ],
        axis=2,
    )
    per_bin = round(BIN_S * RATE_HZ)
    bins = ch.shape[1] // per_bin
    out: npt.NDArray[np.float32] = (
        (ch[:, : bins * per_bin].reshape(len(ch), bins, per_bin, 3).mean(axis=2))
        .reshape(len(ch), -1)
        .astype(np.float32)
    )
    return out


def _trees_on(x: npt.NDArray[np.float32]) -> Variant:
    def run(c: Candidates, rows: B8) -> F64:
        clf = fit(x[rows], c.label[rows])
        return _logit(clf.predict_proba(np.nan_to_num(x, nan=-1.0))[:, 1])

    return run


def _other_model(name: str) -> Variant:
    """Another scikit-learn model over the 19 features (classes balanced), by name."""

    def run(c: Candidates, rows: B8) -> F64:
        # scikit-learn is a training-time dependency only (the "train" extra).
        from sklearn.ensemble import (  # type: ignore[import-untyped]  # noqa: PLC0415
            ExtraTreesClassifier,
            HistGradientBoostingClassifier,
            RandomForestClassifier,
        )
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]  # noqa: PLC0415
        from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]  # noqa: PLC0415
        from sklearn.preprocessing import QuantileTransformer  # type: ignore[import-untyped]  # noqa: PLC0415

        x = np.nan_to_num(c.x, nan=-1.0)
        y = c.label[rows]
        forest = {"n_estimators": 300, "min_samples_leaf": 3, "n_jobs": 1}
        models = {
            "histogram-boosting": lambda: HistGradientBoostingClassifier(
                max_iter=200, max_depth=3, learning_rate=0.1, class_weight="balanced"
            ),
            "random-forest": lambda: RandomForestClassifier(**forest, class_weight="balanced"),
            "extra-trees": lambda: ExtraTreesClassifier(**forest, class_weight="balanced"),
            "logistic": lambda: make_pipeline(
                QuantileTransformer(n_quantiles=200, output_distribution="normal"),
                LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000),
            ),
        }
        clf = models[name]()
        clf.set_params(**{k: SEED for k in clf.get_params() if k.endswith("random_state")})
        clf.fit(x[rows], y)
        return _logit(clf.predict_proba(x)[:, 1])

    return run


OTHER_MODELS = ("histogram-boosting", "random-forest", "extra-trees", "logistic")


def _cached(variant: Variant) -> Variant:
    """``variant`` fitted once per set of training rows (the trees serve two variants)."""
    done: dict[bytes, F64] = {}

    def run(c: Candidates, rows: B8) -> F64:
        key = np.packbits(rows).tobytes()
        if key not in done:
            done[key] = variant(c, rows)
        return done[key]

    return run


def _trees_and_wave(trees_of: Variant, wave: npt.NDArray[np.float32]) -> Variant:
    def run(c: Candidates, rows: B8) -> F64:
        # scikit-learn is a training-time dependency only (the "train" extra).
        from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]  # noqa: PLC0415
        from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]  # noqa: PLC0415

        trees = trees_of(c, rows)
        z = wave.astype(np.float64)
        mean, scale = z[rows].mean(axis=0), z[rows].std(axis=0)
        scale = np.where(scale > 1e-9, scale, 1.0)
        y = c.label[rows]
        weight = np.where(y == 1, (y == 0).sum() / max(int((y == 1).sum()), 1), 1.0)
        net = MLPClassifier(hidden_layer_sizes=(32,), alpha=1.0, max_iter=300, random_state=SEED)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed number of epochs
            net.fit((z[rows] - mean) / scale, y, sample_weight=weight)
        wave_logit = _logit(net.predict_proba((z - mean) / scale)[:, 1])
        out: F64 = (trees + wave_logit) / 2.0
        return out

    return run


def specificity_at(
    scores: F64, is_fall: B8, sensitivities: tuple[float, ...] = SENSITIVITIES
) -> list[float]:
    """Share of activity trials below the highest threshold that finds each share of falls."""
    falls = np.sort(scores[is_fall])[::-1]
    out = []
    for sens in sensitivities:
        thr = falls[max(0, int(np.ceil(sens * falls.size)) - 1)]
        out.append(float((scores[~is_fall] < thr).mean()))
    return out


def detected_at_chosen_threshold(
    variant: Variant,
    c: Candidates,
    trials: Sequence[Trial],
    held_out: list[B8],
    target: float = TARGET_SENSITIVITY,
) -> B8:
    """Per trial, whether ``variant`` raises it, held out, at the threshold chosen as the
    evaluator chooses the shipped model's: the one that finds ``target`` (96 %) of the training people's
    falls in out-of-fold scores of 3 inner subject folds (:func:`inner_threshold`)."""
    hit = np.zeros(len(trials), np.bool_)
    for held in held_out:

        def proba(rows: B8) -> F64:
            out: F64 = 1.0 / (1.0 + np.exp(-variant(c, rows)))
            return out

        thr = inner_threshold(trials, c, ~held, proba, target=target, inner_folds=3)
        scores = trial_max(proba((~held)[c.trial] & (c.label >= 0)), c, len(trials))
        hit[held] = scores[held] >= thr
    return hit


def held_out_scores(variant: Variant, c: Candidates, groups: list[B8], n_trials: int) -> F64:
    """Each trial's largest candidate log-odds, from the model fitted without its group."""
    out = np.full(n_trials, -np.inf)
    for held in groups:
        rows = (~held[c.trial]) & (c.label >= 0)
        logit = variant(c, rows)
        per_trial = np.full(n_trials, -np.inf)
        np.maximum.at(per_trial, c.trial, logit)
        out[held] = per_trial[held]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="compare_wrist", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/wrist"))
    ap.add_argument(
        "--variants",
        default="trees,trees+forearm,trees+wave",
        help="comma-separated: trees, trees+forearm, trees+wave, " + ", ".join(OTHER_MODELS),
    )
    ap.add_argument(
        "--at-threshold",
        action="store_true",
        help="instead: sensitivity and specificity at the threshold chosen as for the shipped "
        "model, on the evaluator's folds",
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = WristConfig()
    trials = load_wrist(args.data, RATE_HZ)
    c = candidates(trials, RATE_HZ, cfg, keep_windows=True)
    trees = _cached(_trees_on(c.x))
    variants: dict[str, Variant] = {
        "trees": trees,
        "trees+forearm": _trees_on(np.concatenate([c.x, forearm_columns(c, cfg)], axis=1)),
        "trees+wave": _trees_and_wave(trees, waveform(c, cfg)),
        **{name: _other_model(name) for name in OTHER_MODELS},
    }
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(variants))
    if unknown:
        ap.error(f"unknown variants {unknown}; expected some of {sorted(variants)}")
    subjects = subject_keys(trials)
    sources = np.array([t.source for t in trials])
    is_fall = np.array([t.is_fall for t in trials], np.bool_)
    people = sorted(set(subjects.tolist()))
    order = np.random.default_rng(SEED).permutation(len(people))
    splits = {
        "subject-wise CV": [np.isin(subjects, [people[i] for i in order[f::5]]) for f in range(5)],
        "leave one source out": [sources == s for s in sorted(set(sources.tolist()))],
    }
    print(
        f"{len(trials)} trials ({int(is_fall.sum())} falls), {c.x.shape[0]} candidates, "
        f"{len(people)} people, {RATE_HZ} Hz"
    )
    if args.at_threshold:
        _print_at_threshold(chosen, variants, c, trials)
        return 0
    head = " | ".join(f"{name}: spec at {s:.0%} sens" for name in splits for s in SENSITIVITIES)
    print(f"| variant | {head} |")
    print("|---|" + "---:|" * (len(splits) * len(SENSITIVITIES)))
    for name in chosen:
        cells = []
        for groups in splits.values():
            sc = held_out_scores(variants[name], c, groups, len(trials))
            cells += [f"{100 * v:.2f} %" for v in specificity_at(sc, is_fall)]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


def _print_at_threshold(
    chosen: list[str], variants: dict[str, Variant], c: Candidates, trials: Sequence[Trial]
) -> None:
    """Sensitivity and specificity held out at the chosen threshold, on the evaluator's folds."""
    keys = subject_keys(trials)
    is_fall = np.array([t.is_fall for t in trials], np.bool_)
    sources = np.array([t.source for t in trials])
    print(
        "| variant | split | sensitivity | specificity | per source: falls found / activities silent |"
    )
    print("|---|---|---:|---:|---|")
    for name in chosen:
        for split, by_source in (("subject-wise CV", False), ("leave one source out", True)):
            held = [np.isin(keys, g) for g in subject_folds(trials, 5, by_source=by_source)]
            hit = detected_at_chosen_threshold(variants[name], c, trials, held)
            per = []
            for s in sorted(set(sources.tolist())):
                f, a = is_fall & (sources == s), ~is_fall & (sources == s)
                found = f"{100 * hit[f].mean():.2f} %" if f.any() else "-"
                per.append(f"{s} {found} / {100 * (1 - hit[a].mean()):.2f} %")
            print(
                f"| {name} | {split} | {100 * hit[is_fall].mean():.2f} % | "
                f"{100 * (1 - hit[~is_fall].mean()):.2f} % | {'; '.join(per)} |",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
