"""Fall detector: synthetic known answers, confirmation window, state, bad input, SisFall."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from detectors.events import device_event_findings
from detectors.falls import FallBatch, FallConfig, FallDetector, FallStateStore
from detectors.findings import (
    DetectorInputError,
    FallEvidence,
    FallOutcome,
    FallOutcomeEvidence,
    Finding,
    FindingKind,
    Severity,
)

RATE = 50
T0 = 1_700_000_000_000


def _standing(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * RATE)
    return np.tile([0.0, -1.0, 0.0], (n, 1)) + rng.normal(0, 0.01, (n, 3))


def _walking(seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    sig = np.tile([0.0, -1.0, 0.0], (t.size, 1))
    sig[:, 1] += 0.3 * np.sin(2 * np.pi * 2 * t)
    sig[:, 2] += 0.15 * np.sin(2 * np.pi * 1 * t)
    return sig + rng.normal(0, 0.02, sig.shape)


def _fall(rng: np.random.Generator, lying: float = 12.0) -> np.ndarray:
    """Standing 5 s, 0.4 s free fall, a 4 g impact, then lying on the back, still."""
    free = np.tile([0.0, -0.2, 0.1], (int(0.4 * RATE), 1))
    impact = np.array([[1.0, -2.0, 3.0], [0.5, -1.0, 2.0], [0.2, 0.5, 1.5]])
    lie = np.tile([0.0, 0.0, 1.0], (int(lying * RATE), 1)) + rng.normal(
        0, 0.01, (int(lying * RATE), 3)
    )
    return np.concatenate([_standing(5, rng), free, impact, lie])


def _feed(det: FallDetector, signals: dict[str, np.ndarray], rate: int = RATE) -> list[Finding]:
    """Feed signals as devices in 1 s bursts, like the ingester."""
    out: list[Finding] = []
    longest = max(s.shape[0] for s in signals.values())
    ticks = -(-longest // rate)
    for k in range(ticks):
        bursts = [
            (dev, f"res-{dev}", T0 + 1000 * k, rate, sig[k * rate : (k + 1) * rate])
            for dev, sig in signals.items()
            if sig.shape[0] > k * rate
        ]
        out.extend(det.process(FallBatch.from_bursts(bursts), now_ms=T0 + 1000 * (k + 1)))
    return out


def test_known_answer_synthetic_fall_and_walk() -> None:
    rng = np.random.default_rng(1)
    det = FallDetector(FallConfig(confirm_s=10.0))
    fall = _fall(rng)
    found = _feed(det, {"fall": fall, "walk": _walking(20, rng), "still": _standing(20, rng)})
    assert [(f.device_id, f.kind) for f in found] == [
        ("fall", FindingKind.FALL_SUSPECTED),
        ("fall", FindingKind.FALL_CONFIRMED),
    ]
    sus, conf = found
    ev = sus.evidence
    assert isinstance(ev, FallEvidence)
    impact_idx = int(np.argmax(np.linalg.norm(fall, axis=1)))
    assert sus.ts_ms == T0 + impact_idx * 1000 // RATE
    assert sus.severity is Severity.HIGH
    assert sus.resident_id == "res-fall"
    assert ev.peak_g == pytest.approx(np.linalg.norm([1.0, -2.0, 3.0]), rel=1e-5)
    assert ev.orientation_change_deg == pytest.approx(90, abs=5)
    assert ev.stillness_g < 0.05
    assert ev.window.shape == (300, 3)
    assert ev.window.dtype == np.float32
    assert ev.rate_hz == RATE
    assert conf.severity is Severity.EMERGENCY
    assert isinstance(conf.evidence, FallOutcomeEvidence)
    assert conf.evidence.outcome is FallOutcome.LYING_STILL


def test_recovery_cancels() -> None:
    rng = np.random.default_rng(2)
    det = FallDetector(FallConfig(confirm_s=20.0))
    sig = np.concatenate([_fall(rng, lying=3.0), _walking(8, rng)])
    found = _feed(det, {"d": sig})
    assert [f.kind for f in found] == [FindingKind.FALL_SUSPECTED, FindingKind.FALL_CANCELLED]
    assert found[1].evidence.outcome is FallOutcome.RECOVERED  # type: ignore[union-attr]


def test_wearer_cancel_and_sos_never_cancelled() -> None:
    rng = np.random.default_rng(3)
    det = FallDetector()
    found = _feed(det, {"d": _fall(rng, lying=4.0)})
    assert [f.kind for f in found] == [FindingKind.FALL_SUSPECTED]
    now = T0 + 20_000
    ev = device_event_findings(
        det,
        device_ids=["d", "d", "d"],
        resident_ids=["r", "r", "r"],
        kinds=["sos", "cancel", "cancel"],
        ts_ms=np.array([now - 500, now - 400, now - 300]),
        now_ms=now,
    )
    assert [(f.kind, f.severity) for f in ev] == [
        (FindingKind.SOS, Severity.EMERGENCY),
        (FindingKind.FALL_CANCELLED, Severity.INFO),
    ]
    assert det.store.pending_confirmations() == []


def test_device_fall_confirms_when_device_goes_silent() -> None:
    det = FallDetector(FallConfig(confirm_s=30.0))
    found = device_event_findings(
        det, device_ids=["p"], resident_ids=["r"], kinds=["fall"], ts_ms=np.array([T0]), now_ms=T0
    )
    assert [(f.kind, f.severity) for f in found] == [(FindingKind.DEVICE_FALL, Severity.HIGH)]
    empty = FallBatch.from_bursts([])
    assert det.process(empty, now_ms=T0 + 30_000) == []
    late = det.process(empty, now_ms=T0 + 36_000)
    assert [(f.kind, f.evidence.outcome) for f in late] == [  # type: ignore[union-attr]
        (FindingKind.FALL_CONFIRMED, FallOutcome.NO_DATA)
    ]


def test_state_round_trip_gives_same_findings() -> None:
    rng = np.random.default_rng(4)
    sig = _fall(rng)
    a = FallDetector(FallConfig(confirm_s=10.0))
    b = FallDetector(FallConfig(confirm_s=10.0))
    out_a: list[Finding] = []
    out_b: list[Finding] = []
    for k in range(-(-sig.shape[0] // RATE)):
        burst = [("d", None, T0 + 1000 * k, RATE, sig[k * RATE : (k + 1) * RATE])]
        out_a += a.process(FallBatch.from_bursts(burst), now_ms=T0 + 1000 * (k + 1))
        out_b += b.process(FallBatch.from_bursts(burst), now_ms=T0 + 1000 * (k + 1))
        # Restart b from its bytes after every tick, as the ingester would after a crash.
        b = FallDetector(store=FallStateStore.from_bytes(b.store.to_bytes(), b.config))
    assert [(f.kind, f.ts_ms) for f in out_a] == [(f.kind, f.ts_ms) for f in out_b]
    assert len(out_a) == 2


def test_mixed_rates_in_one_batch() -> None:
    rng = np.random.default_rng(5)
    fall50 = _fall(rng)
    from scipy.signal import resample_poly

    fall25 = resample_poly(fall50, 1, 2, axis=0)
    det = FallDetector()
    found: list[Finding] = []
    for k in range(12):
        bursts = [
            ("a", None, T0 + 1000 * k, 50, fall50[k * 50 : (k + 1) * 50]),
            ("b", None, T0 + 1000 * k, 25, fall25[k * 25 : (k + 1) * 25]),
        ]
        found += det.process(FallBatch.from_bursts(bursts), now_ms=T0 + 1000 * (k + 1))
    assert sorted((f.device_id, f.kind) for f in found) == [
        ("a", FindingKind.FALL_SUSPECTED),
        ("b", FindingKind.FALL_SUSPECTED),
    ]


def test_rows_stay_with_their_devices_through_rate_changes_and_removal() -> None:
    """A device that changes rate, and one that takes a removed device's row, keep their own."""
    from scipy.signal import resample_poly

    rng = np.random.default_rng(6)
    fall25 = resample_poly(_fall(rng), 1, 2, axis=0)
    det = FallDetector()
    found: list[Finding] = []
    walk_a, walk_b = _walking(8, rng), _walking(36, rng)
    for k in range(8):  # a and b walk at 50 Hz, then a leaves and c walks in its row
        bursts = [("b", None, T0 + 1000 * k, 50, walk_b[k * 50 : (k + 1) * 50])]
        dev = "a" if k < 4 else "c"
        bursts.append((dev, None, T0 + 1000 * k, 50, walk_a[k * 50 : (k + 1) * 50]))
        found += det.process(FallBatch.from_bursts(bursts), now_ms=T0 + 1000 * (k + 1))
        if k == 3:
            det.store.forget("a")
    for k in range(8, 20):  # c switches to 25 Hz and falls; b walks on at 50 Hz
        j = k - 8
        bursts = [
            ("b", None, T0 + 1000 * k, 50, walk_b[k * 50 : (k + 1) * 50]),
            ("c", None, T0 + 1000 * k, 25, fall25[j * 25 : (j + 1) * 25]),
        ]
        found += det.process(FallBatch.from_bursts(bursts), now_ms=T0 + 1000 * (k + 1))
    assert [(f.device_id, f.kind) for f in found] == [("c", FindingKind.FALL_SUSPECTED)]
    assert sorted(det.store.devices()) == ["b", "c"]
    assert det.store.where("c")[0] == 25  # type: ignore[index]
    fall50, walk_c = _fall(rng), _walking(20, rng)
    for k in range(20, 36):  # d falls in the 50 Hz row c left; c walks back at 50 Hz
        j = k - 20
        bursts = [
            ("b", None, T0 + 1000 * k, 50, walk_b[k * 50 : (k + 1) * 50]),
            ("d", None, T0 + 1000 * k, 50, fall50[j * 50 : (j + 1) * 50]),
        ]
        if k > 20:
            bursts.append(("c", None, T0 + 1000 * k, 50, walk_c[j * 50 : (j + 1) * 50]))
        found += det.process(FallBatch.from_bursts(bursts), now_ms=T0 + 1000 * (k + 1))
    suspected = [f.device_id for f in found if f.kind is FindingKind.FALL_SUSPECTED]
    assert suspected == ["c", "d"]
    assert det.store.where("c") != det.store.where("d")


def test_empty_input() -> None:
    det = FallDetector()
    assert det.process(FallBatch.from_bursts([]), now_ms=T0) == []
    zero = FallBatch(
        ["d"], [None], np.array([T0]), 50, np.zeros((1, 0, 3), np.float32), np.zeros(1, np.int32)
    )
    assert det.process(zero, now_ms=T0) == []


def _batch(samples: np.ndarray, rate: object = 50, lengths: object = None) -> FallBatch:
    n = samples.shape[0]
    return FallBatch(
        device_ids=[f"d{i}" for i in range(n)],
        resident_ids=[None] * n,
        t0_ms=np.full(n, T0, np.int64),
        rate_hz=rate,  # type: ignore[arg-type]
        samples=samples,
        lengths=np.full(n, samples.shape[1], np.int32) if lengths is None else lengths,  # type: ignore[arg-type]
    )


def test_bad_input() -> None:
    good = np.zeros((2, 50, 3), np.float32)
    nan = good.copy()
    nan[1, 10, 2] = np.nan
    with pytest.raises(DetectorInputError, match=r"devices \['d1'\] contain NaN"):
        _batch(nan)
    with pytest.raises(DetectorInputError, match=r"shape \(2, 50, 2\); expected \(2, max_n, 3\)"):
        _batch(np.zeros((2, 50, 2), np.float32))
    with pytest.raises(DetectorInputError, match="dtype float64; expected float32"):
        _batch(np.zeros((2, 50, 3)))
    with pytest.raises(DetectorInputError, match=r"rate_hz has \[200\] Hz; expected 25..100 Hz"):
        _batch(good, rate=200)
    with pytest.raises(DetectorInputError, match=r"lengths has values outside 0\.\.50"):
        _batch(good, lengths=np.array([10, 51], np.int32))
    # NaN in the padding is fine: only valid samples are checked.
    assert _batch(nan, lengths=np.array([50, 10], np.int32)).lengths.tolist() == [50, 10]
    with pytest.raises(DetectorInputError, match="longer than max_burst_s"):
        FallDetector().process(_batch(np.zeros((1, 300, 3), np.float32)), now_ms=T0)
    with pytest.raises(DetectorInputError, match="expected bytes from FallStateStore"):
        FallStateStore().import_device("d", b"nope")


def _sisfall_dir() -> Path | None:
    env = os.environ.get("ANXIN_SISFALL_DIR")
    here = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "sisfall"
    path = Path(env) if env else here
    return path if (path / "SA01.npz").is_file() else None


@pytest.mark.skipif(
    _sisfall_dir() is None,
    reason="SisFall not found (../shared/datasets/sisfall or ANXIN_SISFALL_DIR)",
)
def test_real_sisfall_fall_detected_and_walk_silent() -> None:
    from scipy.signal import resample_poly

    folder = _sisfall_dir()
    assert folder is not None
    with np.load(folder / "SA01.npz") as z:
        raw = {k: z[k] for k in ("F01_SA01_R01", "F05_SA01_R02", "D01_SA01_R01", "D02_SA01_R01")}
    sig = {
        k: resample_poly(v[:, :3] * (32 / 8192), 1, 4, axis=0).astype(np.float32)
        for k, v in raw.items()
    }
    found = _feed(FallDetector(), sig)
    suspected = {f.device_id for f in found if f.kind is FindingKind.FALL_SUSPECTED}
    assert suspected & {"F01_SA01_R01", "F05_SA01_R02"}
    assert not suspected & {"D01_SA01_R01", "D02_SA01_R01"}
