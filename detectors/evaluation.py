"""``evaluate-falls``: the fall detector on SisFall recordings, subject-wise cross-validated.

Runs :class:`detectors.falls.FallDetector` over a folder of SisFall ``SUBJECT.npz`` files
(Sucerquia et al., Sensors 17(1):198, 2017), decimated to ``--rate`` Hz, accelerometer ADXL345
only, fed in 1 s bursts through the same vectorised API the ingester uses: every trial is one
"device", all trials of a run in one batch per tick.

Tuning is subject-wise: for each fold the thresholds are chosen on the other subjects' trials
(grid search maximising sensitivity + specificity), then the held-out subjects are run through the
streaming detector with those thresholds. Only held-out results are reported.

A fall trial counts as *detected* when the detector raises ``FALL_SUSPECTED`` during it; an
activity trial is a *false alarm* when it raises ``FALL_SUSPECTED`` during it. Confirmation
(``FALL_CONFIRMED`` after ``confirm_s`` without recovery) cannot be judged on 15 s recordings; the
report counts how many suspected findings the recordings show recovering (auto-cancel).

This module reads files and prints; the detector itself stays pure.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

from detectors.falls import FallBatch, FallConfig, FallDetector, FallFeatures
from detectors.findings import FallEvidence, FallOutcome, FallOutcomeEvidence, FindingKind

ADXL345_G_PER_COUNT = 32.0 / 8192.0
SOURCE_RATE_HZ = 200
T_BASE_MS = 1_700_000_000_000


@dataclass(frozen=True, eq=False)
class Trial:
    """One SisFall trial, decimated.

    Attributes:
        name: Trial key, e.g. ``F05_SA01_R04``.
        subject: Subject of the file it came from (``SA01``), the unit of cross-validation.
        code: Activity or fall code, e.g. ``D01`` or ``F05``.
        acc: float32 ``(n, 3)`` acceleration in g at the evaluation rate.
    """

    name: str
    subject: str
    code: str
    acc: npt.NDArray[np.float32]

    @property
    def is_fall(self) -> bool:
        """True for fall trials (codes ``Fnn``)."""
        return self.code.startswith("F")


def load_sisfall(folder: Path, rate_hz: int) -> list[Trial]:
    """Load every ``*.npz`` of a SisFall folder, ADXL345 columns, decimated to ``rate_hz``.

    Raises:
        FileNotFoundError: If the folder has no ``.npz`` file.
    """
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise FileNotFoundError(
            f"SisFall folder '{folder}' has no .npz files; expected SUBJECT.npz files."
        )
    g = math.gcd(SOURCE_RATE_HZ, rate_hz)
    up, down = rate_hz // g, SOURCE_RATE_HZ // g
    trials = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            for key in z.files:
                raw = z[key][:, 0:3].astype(np.float64) * ADXL345_G_PER_COUNT
                acc = resample_poly(raw, up, down, axis=0).astype(np.float32)
                trials.append(Trial(key, f.stem, key.split("_")[0], acc))
    return trials


@dataclass(frozen=True)
class TrialResult:
    """What the detector did on one trial."""

    alarms: int
    first_suspected_ms: int
    first_impact_ms: int
    recovered: int


def run_trials(
    trials: Sequence[Trial],
    rate_hz: int,
    config: FallConfig,
    record: bool = False,
) -> tuple[list[TrialResult], dict[int, list[FallFeatures]], dict[int, list[FallEvidence]]]:
    """Stream trials as devices through one :class:`FallDetector`, 1 s bursts per tick.

    Returns:
        Per trial result; if ``record``, the features of every analysed candidate per trial; the
        evidence of every suspected fall per trial.
    """
    det = FallDetector(config)
    if record:
        det.record_candidates()
    n = len(trials)
    lens = np.array([t.acc.shape[0] for t in trials], np.int64)
    max_len = int(lens.max()) if n else 0
    acc = np.zeros((n, max_len, 3), np.float32)
    for i, t in enumerate(trials):
        acc[i, : t.acc.shape[0]] = t.acc
    ids = [str(i) for i in range(n)]
    alarms = np.zeros(n, np.int64)
    first_s = np.full(n, -1, np.int64)
    first_i = np.full(n, -1, np.int64)
    recovered = np.zeros(n, np.int64)
    evid: dict[int, list[FallEvidence]] = {}
    ticks = math.ceil(max_len / rate_hz)
    for k in range(ticks):
        lo = k * rate_hz
        length = np.clip(lens - lo, 0, rate_hz).astype(np.int32)
        rows = np.nonzero(length > 0)[0]
        t0 = T_BASE_MS + k * 1000
        batch = FallBatch(
            device_ids=[ids[i] for i in rows],
            resident_ids=[None] * rows.size,
            t0_ms=np.full(rows.size, t0, np.int64),
            rate_hz=rate_hz,
            samples=acc[rows, lo : lo + rate_hz],
            lengths=length[rows],
        )
        # The tick ends when its last sample arrives: that is "now" for the detector.
        for f in det.process(batch, now_ms=t0 + 1000):
            i = int(f.device_id)
            if f.kind is FindingKind.FALL_SUSPECTED:
                alarms[i] += 1
                assert isinstance(f.evidence, FallEvidence)  # noqa: S101 - kind implies it
                evid.setdefault(i, []).append(f.evidence)
                if first_s[i] < 0:
                    first_s[i] = f.detected_ms
                    first_i[i] = f.ts_ms
            elif (
                f.kind is FindingKind.FALL_CANCELLED
                and isinstance(f.evidence, FallOutcomeEvidence)
                and f.evidence.outcome is FallOutcome.RECOVERED
            ):
                recovered[i] += 1
    feats: dict[int, list[FallFeatures]] = {}
    for dev, ff in det.candidates or []:
        feats.setdefault(int(dev), []).append(ff)
    results = [
        TrialResult(int(alarms[i]), int(first_s[i]), int(first_i[i]), int(recovered[i]))
        for i in range(n)
    ]
    return results, feats, evid


@dataclass(frozen=True, eq=False)
class CandidateTable:
    """Features of all candidates of all trials, flat, for threshold search."""

    trial: npt.NDArray[np.int64]
    peak: npt.NDArray[np.float32]
    intensity: npt.NDArray[np.float32]
    orientation: npt.NDArray[np.float32]
    stillness: npt.NDArray[np.float32]

    @classmethod
    def build(cls, feats: dict[int, list[FallFeatures]]) -> CandidateTable:
        """Flatten per-trial candidate features."""
        tr, pk, it, orr, st = [], [], [], [], []
        for i, lst in sorted(feats.items()):
            for f in lst:
                tr.append(i)
                pk.append(float(f.peak_g[0]))
                it.append(float(f.intensity_g[0]))
                orr.append(float(f.orientation_deg[0]))
                st.append(float(f.stillness_g[0]))
        return cls(
            np.array(tr, np.int64),
            np.array(pk, np.float32),
            np.array(it, np.float32),
            np.array(orr, np.float32),
            np.array(st, np.float32),
        )

    def alarms(self, cfg: FallConfig, n_trials: int) -> npt.NDArray[np.bool_]:
        """Per trial: does any candidate pass ``cfg`` (same rule as the detector)?"""
        keep = self.peak >= cfg.peak_g
        keep &= self.intensity >= cfg.intensity_g
        keep &= self.orientation >= cfg.orientation_deg
        keep &= self.stillness <= cfg.stillness_g
        out = np.zeros(n_trials, np.bool_)
        out[self.trial[keep]] = True
        return out


GRID_INTENSITY = tuple(round(0.15 + 0.02 * i, 2) for i in range(11))
GRID_ORIENTATION = (30.0, 35.0, 40.0, 45.0, 50.0, 60.0)
GRID_STILLNESS = (0.1, 0.2, 0.3, 0.5)
GRID_PEAK = (1.5, 1.8, 2.0)


def tune(
    table: CandidateTable,
    is_fall: npt.NDArray[np.bool_],
    train: npt.NDArray[np.bool_],
    base: FallConfig,
) -> FallConfig:
    """Thresholds maximising sensitivity + specificity on the ``train`` trials.

    Ties go to the grid point nearest the middle of the grid (not to the shipped defaults,
    which were themselves chosen on all subjects).
    """
    n = is_fall.shape[0]
    best: tuple[float, float, FallConfig] | None = None
    for pk, it, orr, st in itertools.product(
        GRID_PEAK, GRID_INTENSITY, GRID_ORIENTATION, GRID_STILLNESS
    ):
        cfg = replace(base, peak_g=pk, intensity_g=it, orientation_deg=orr, stillness_g=st)
        al = table.alarms(cfg, n)
        score = float(al[train & is_fall].mean() + (~al[train & ~is_fall]).mean())
        dist = sum(
            abs(grid.index(v) - (len(grid) - 1) / 2)
            for grid, v in (
                (GRID_PEAK, pk),
                (GRID_INTENSITY, it),
                (GRID_ORIENTATION, orr),
                (GRID_STILLNESS, st),
            )
        )
        better = best is None or score > best[0] + 1e-12
        if better or (best is not None and abs(score - best[0]) <= 1e-12 and dist < best[1]):
            best = (score, dist, cfg)
    assert best is not None  # noqa: S101 - the grid is not empty
    return best[2]


def _rate_table(rows: list[tuple[str, int, int]], what: str) -> list[str]:
    lines = [f"| code | trials | {what} | rate |", "|---|---:|---:|---:|"]
    for code, n, k in rows:
        lines.append(f"| {code} | {n} | {k} | {100.0 * k / max(n, 1):.1f} % |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``evaluate-falls``; returns a process exit code."""
    ap = argparse.ArgumentParser(prog="evaluate-falls", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of SisFall SUBJECT.npz")
    ap.add_argument("--rate", type=int, default=50, help="evaluation rate in Hz (25..100)")
    ap.add_argument("--plot", type=Path, default=None, help="write the figure to this file")
    ap.add_argument("--folds", type=int, default=0, help="subject folds (0: leave one out)")
    args = ap.parse_args(argv)
    if not 25 <= args.rate <= 100:
        print(f"--rate {args.rate} is outside 25..100 Hz.", file=sys.stderr)
        return 2
    try:
        trials = load_sisfall(args.data, args.rate)
    except FileNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    rate = args.rate
    base = FallConfig()
    n = len(trials)
    is_fall = np.array([t.is_fall for t in trials])
    subjects = np.array([t.subject for t in trials])
    uniq = sorted(set(subjects.tolist()))
    nfolds = len(uniq) if args.folds <= 0 else min(args.folds, len(uniq))
    folds = [uniq[i::nfolds] for i in range(nfolds)]

    # Candidates do not depend on the decision thresholds: one pass gives them all.
    _, feats, _ = run_trials(trials, rate, base, record=True)
    table = CandidateTable.build(feats)

    alarms = np.zeros(n, np.int64)
    delay_ms = np.full(n, -1, np.int64)
    recovered = np.zeros(n, np.int64)
    evid: dict[int, list[FallEvidence]] = {}
    chosen: list[FallConfig] = []
    fold_of = np.zeros(n, np.int64)
    for fi, fold in enumerate(folds):
        test = np.isin(subjects, fold)
        cfg = tune(table, is_fall, ~test, base)
        chosen.append(cfg)
        idx = np.nonzero(test)[0]
        fold_of[idx] = fi
        res, _, ev = run_trials([trials[i] for i in idx], rate, cfg)
        for j, i in enumerate(idx.tolist()):
            alarms[i] = res[j].alarms
            recovered[i] = res[j].recovered
            if res[j].first_suspected_ms >= 0:
                delay_ms[i] = res[j].first_suspected_ms - res[j].first_impact_ms
            if j in ev:
                evid[i] = ev[j]

    detected = alarms > 0
    n_f, n_d = int(is_fall.sum()), int((~is_fall).sum())
    sens = float(detected[is_fall].mean()) if n_f else math.nan
    spec = float((~detected[~is_fall]).mean()) if n_d else math.nan
    adl_hours = sum(t.acc.shape[0] for t in trials if not t.is_fall) / rate / 3600
    fa_per_h = float(alarms[~is_fall].sum()) / adl_hours if adl_hours else math.nan
    d = delay_ms[is_fall & detected] / 1000
    print(f"SisFall at {rate} Hz, ADXL345 only, {len(uniq)} subjects, {nfolds} subject folds")
    print(f"trials: {n_f} falls, {n_d} activities ({adl_hours:.2f} h of activity)")
    print(f"sensitivity {100 * sens:.2f} % ({int(detected[is_fall].sum())}/{n_f})")
    print(f"specificity {100 * spec:.2f} % ({int((~detected[~is_fall]).sum())}/{n_d})")
    print(f"false alarms per hour of activity {fa_per_h:.3f}")
    if d.size:
        print(
            "delay impact -> FALL_SUSPECTED: median "
            f"{np.median(d):.2f} s, p95 {np.percentile(d, 95):.2f} s, max {d.max():.2f} s"
        )
    print(
        "recovery seen in the recording (would auto-cancel): "
        f"{int((recovered[is_fall] > 0).sum())} falls, "
        f"{int((recovered[~is_fall] > 0).sum())} activities"
    )
    cfgs = sorted({(c.peak_g, c.intensity_g, c.orientation_deg, c.stillness_g) for c in chosen})
    print(f"thresholds chosen per fold (peak_g, intensity_g, orientation_deg, stillness_g): {cfgs}")
    codes = sorted({t.code for t in trials})
    code_arr = np.array([t.code for t in trials])
    d_rows = [
        (c, int((code_arr == c).sum()), int((detected & (code_arr == c)).sum())) for c in codes
    ]
    print()
    print("\n".join(_rate_table([r for r in d_rows if r[0].startswith("D")], "false alarms")))
    print()
    print("\n".join(_rate_table([r for r in d_rows if r[0].startswith("F")], "detected")))
    missed = [trials[i].name for i in np.nonzero(is_fall & ~detected)[0]]
    false = [trials[i].name for i in np.nonzero(~is_fall & detected)[0]]
    print(f"\nmissed falls: {missed}")
    print(f"false alarms: {false}")

    if args.plot is not None:
        curve = _tradeoff(table, is_fall, fold_of, chosen, n)
        _plot(
            args.plot,
            trials=trials,
            rate=rate,
            curve=curve,
            chosen=chosen,
            evid=evid,
            is_fall=is_fall,
            detected=detected,
            table=table,
            fold_of=fold_of,
        )
        print(f"plot written to {args.plot}")
    return 0


def _tradeoff(
    table: CandidateTable,
    is_fall: npt.NDArray[np.bool_],
    fold_of: npt.NDArray[np.int64],
    chosen: list[FallConfig],
    n: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Held-out sensitivity and specificity as the main threshold (intensity) sweeps.

    Each fold keeps its other tuned thresholds; only ``intensity_g`` moves.
    """
    ts = np.round(np.arange(0.05, 0.61, 0.01), 2)
    sens = np.zeros(ts.size)
    spec = np.zeros(ts.size)
    for k, t in enumerate(ts.tolist()):
        al = np.zeros(n, np.bool_)
        for fi, cfg in enumerate(chosen):
            a = table.alarms(replace(cfg, intensity_g=t), n)
            al |= a & (fold_of == fi)
        sens[k] = al[is_fall].mean()
        spec[k] = (~al[~is_fall]).mean()
    return ts, sens, spec


def _plot(
    path: Path,
    *,
    trials: Sequence[Trial],
    rate: int,
    curve: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]],
    chosen: list[FallConfig],
    evid: dict[int, list[FallEvidence]],
    is_fall: npt.NDArray[np.bool_],
    detected: npt.NDArray[np.bool_],
    table: CandidateTable,
    fold_of: npt.NDArray[np.int64],
) -> None:
    # matplotlib is optional (the "plots" extra): imported only when a plot is asked for.
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ts, sens, spec = curve
    ax = axes[0]
    ax.plot(ts, 100 * sens, label="sensitivity (falls detected)")
    ax.plot(ts, 100 * spec, label="specificity (activities without alarm)")
    for c in sorted({c.intensity_g for c in chosen}):
        ax.axvline(c, color="grey", ls=":", lw=1)
    ax.axhline(98, color="tab:blue", ls="--", lw=0.8)
    ax.axhline(99, color="tab:orange", ls="--", lw=0.8)
    ax.set_ylim(80, 100.5)
    ax.set_xlabel("impact intensity threshold (g)")
    ax.set_ylabel("% of trials, held-out subjects")
    ax.set_title("Trade-off over the main threshold (subject-wise CV)")
    ax.legend(loc="lower left", fontsize=8)

    def show(ax: Any, i: int, title: str) -> None:
        t = np.arange(trials[i].acc.shape[0]) / rate
        ax.plot(t, np.linalg.norm(trials[i].acc, axis=1), lw=0.8, color="k", label="|a|")
        for e in evid.get(i, []):
            ti = (e.impact_ts_ms - T_BASE_MS) / 1000
            ax.axvline(ti, color="tab:red", lw=1, label="impact of FALL_SUSPECTED")
            ax.set_title(
                f"{title}: {trials[i].name}\npeak {e.peak_g:.1f} g, intensity "
                f"{e.impact_intensity_g:.2f} g, orientation {e.orientation_change_deg:.0f} deg",
                fontsize=9,
            )
        if i not in evid:
            ax.set_title(f"{title}: {trials[i].name}", fontsize=9)
        ax.set_xlabel("s")
        ax.set_ylabel("g")

    falls = [i for i in np.nonzero(is_fall & detected)[0].tolist() if i in evid]
    if falls:
        show(axes[1], falls[0], "a detected fall")
    fa = [i for i in np.nonzero(~is_fall & detected)[0].tolist() if i in evid]
    if fa:
        worst = max(fa, key=lambda i: max(e.impact_intensity_g for e in evid[i]))
        show(axes[2], worst, "worst false alarm")
    else:
        # No false alarm: show the activity candidate nearest to alarming instead.
        adl = ~is_fall[table.trial]
        margin = table.intensity - np.array([chosen[f].intensity_g for f in fold_of[table.trial]])
        ok = adl & (table.orientation >= 40)
        if ok.any():
            i = int(table.trial[np.nonzero(ok)[0][np.argmax(margin[ok])]])
            show(axes[2], i, "closest activity (no false alarm)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
