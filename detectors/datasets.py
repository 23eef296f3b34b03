"""Recordings for judging and training the fall detectors: the SisFall and the wrist layouts.

Reads files (this module is for the evaluation and training tools, never for the service):

* **SisFall** (A. Sucerquia, J. D. López, J. F. Vargas-Bonilla, *Sensors* 17(1):198, 2017):
  ``SUBJECT.npz`` of int16 ``(n, 9)`` at 200 Hz, waist; the ADXL345 columns are kept.
* **Wrist**: ``<subject>.npz`` of float32 ``(n, 3)`` g at 50 Hz plus a ``meta.json`` per source
  folder; the root may hold several source folders (``weda-fall``, ``fallalld``,
  ``smartfall-old``), each a source for leave-one-source-out.

:func:`load_trials` tells the layouts apart from the folder and resamples to the rate asked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

ADXL345_G_PER_COUNT = 32.0 / 8192.0
SISFALL_RATE_HZ = 200
WRIST_RATE_HZ = 50


@dataclass(frozen=True, eq=False)
class Trial:
    """One recorded trial at the evaluation rate.

    Attributes:
        name: Trial key, e.g. ``F05_SA01_R04``.
        subject: Subject of the file it came from, the unit of cross-validation; prefixed by
            nothing (subject ids of the sources do not collide).
        code: Activity or fall code, e.g. ``D01`` or ``F05``.
        source: Source folder name (``sisfall``, ``weda-fall``, ...).
        acc: float32 ``(n, 3)`` acceleration in g.
        onset_s: Fall onset in seconds from the start, where the source labels it (else None).
        parts: For a joined stream (:func:`joined_activity`), the name and start in seconds of
            every recording in it, in order, the closing rest as ``REST``; empty otherwise.
    """

    name: str
    subject: str
    code: str
    source: str
    acc: npt.NDArray[np.float32]
    onset_s: float | None = None
    parts: tuple[tuple[str, float], ...] = ()

    @property
    def is_fall(self) -> bool:
        """True for fall trials (codes ``Fnn``)."""
        return self.code.startswith("F")


def _resample(x: npt.NDArray[np.float64], src: int, dst: int) -> npt.NDArray[np.float32]:
    if src == dst:
        return x.astype(np.float32)
    g = math.gcd(src, dst)
    out: npt.NDArray[np.float32] = resample_poly(x, dst // g, src // g, axis=0).astype(np.float32)
    return out


def layout(folder: Path) -> str:
    """``"wrist"`` if the folder (or a subfolder) has a ``meta.json``, else ``"sisfall"``.

    Raises:
        FileNotFoundError: If the folder holds no recordings of either layout.
    """
    if (folder / "meta.json").is_file() or any(folder.glob("*/meta.json")):
        return "wrist"
    if any(folder.glob("*.npz")):
        return "sisfall"
    raise FileNotFoundError(
        f"Folder '{folder}' has neither SUBJECT.npz files (SisFall) nor source folders with "
        "meta.json (wrist layout)."
    )


def load_sisfall(folder: Path, rate_hz: int) -> list[Trial]:
    """Every trial of a SisFall folder, ADXL345 columns, resampled to ``rate_hz``."""
    trials = []
    for f in sorted(folder.glob("*.npz")):
        with np.load(f, allow_pickle=False) as z:
            for key in z.files:
                raw = z[key][:, 0:3].astype(np.float64) * ADXL345_G_PER_COUNT
                acc = _resample(raw, SISFALL_RATE_HZ, rate_hz)
                trials.append(Trial(key, f.stem, key.split("_")[0], "sisfall", acc))
    if not trials:
        raise FileNotFoundError(
            f"SisFall folder '{folder}' has no .npz files; expected SUBJECT.npz files."
        )
    return trials


def load_wrist(folder: Path, rate_hz: int) -> list[Trial]:
    """Every trial of a wrist folder (one source, or a root of source folders)."""
    sources = [folder] if (folder / "meta.json").is_file() else sorted(folder.glob("*/"))
    trials = []
    for src in sources:
        meta_path = src / "meta.json"
        if not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text("utf-8"))
        onsets: dict[str, float] = meta.get("fall_onsets_s", {}) or {}
        rate = int(meta.get("rate_hz", WRIST_RATE_HZ))
        for f in sorted(src.glob("*.npz")):
            with np.load(f, allow_pickle=False) as z:
                for key in sorted(z.files):
                    acc = _resample(z[key].astype(np.float64), rate, rate_hz)
                    onset = onsets.get(key)
                    trials.append(
                        Trial(
                            key,
                            f.stem,
                            key.split("_")[0],
                            src.name,
                            acc,
                            None if onset is None else float(onset) * 1.0,
                        )
                    )
    if not trials:
        raise FileNotFoundError(
            f"Wrist folder '{folder}' has no recordings; expected <subject>.npz files next to "
            "a meta.json, or source folders holding them."
        )
    return trials


def load_trials(folder: Path, rate_hz: int) -> tuple[str, list[Trial]]:
    """The layout of ``folder`` and its trials at ``rate_hz``."""
    kind = layout(folder)
    return kind, (load_wrist(folder, rate_hz) if kind == "wrist" else load_sisfall(folder, rate_hz))


def subject_keys(trials: Sequence[Trial]) -> npt.NDArray[np.str_]:
    """``source/subject`` of every trial: the unit of cross-validation."""
    return np.array([f"{t.source}/{t.subject}" for t in trials])


def subject_folds(trials: Sequence[Trial], n: int, *, by_source: bool) -> list[list[str]]:
    """The evaluator's held-out groups of :func:`subject_keys`: one per source with
    ``by_source``, else ``n`` folds of the sorted people (every n-th; ``n <= 0``: one each)."""
    keys = sorted(set(subject_keys(trials).tolist()))
    if by_source:
        return [
            [g for g in keys if g.startswith(s + "/")] for s in sorted({t.source for t in trials})
        ]
    k = len(keys) if n <= 0 else min(n, len(keys))
    return [keys[i::k] for i in range(k)]


def joined_activity(trials: list[Trial], rate_hz: int, rest_s: float = 60.0) -> list[Trial]:
    """Per subject, every activity trial joined end to end, then ``rest_s`` of rest.

    The rest holds the gravity direction of the last second, at 1 g, without noise (lying
    still). The joined trial's code is ``JOINED``; its ``parts`` say where each recording
    begins.
    """
    by_subject: dict[tuple[str, str], list[Trial]] = {}
    for t in trials:
        if not t.is_fall:
            by_subject.setdefault((t.source, t.subject), []).append(t)
    out = []
    for (source, subject), ts in sorted(by_subject.items()):
        acc = np.concatenate([t.acc for t in ts], axis=0)
        last = acc[-rate_hz:].mean(axis=0)
        norm = float(np.linalg.norm(last))
        g = last / norm if norm > 0 else np.array([0.0, 0.0, 1.0])
        rest = np.tile(g.astype(np.float32), (round(rest_s * rate_hz), 1))
        starts = np.cumsum([0] + [t.acc.shape[0] for t in ts]) / rate_hz
        out.append(
            Trial(
                f"JOINED_{subject}",
                subject,
                "JOINED",
                source,
                np.concatenate([acc, rest], axis=0).astype(np.float32),
                parts=(
                    *((t.name, float(s)) for t, s in zip(ts, starts[:-1], strict=True)),
                    ("REST", float(starts[-1])),
                ),
            )
        )
    return out
