"""Throughput of the vectorised detectors against a per-device loop of the same logic.

Run: ``python bench/detectors.py``. Measures CPU time (``time.process_time``), so other load on
the machine matters less; reports medians over repeats.

* Falls: 1 s bursts at 50 Hz of a walking-like signal with occasional peaks above the candidate
  threshold, for 1, 100 and 10,000 devices per call, in device-seconds of signal processed per
  CPU-second. The baseline feeds the same detector one device per call.
* Wrist falls: the same, with a livelier signal (about one sample in 200 above the wrist's
  candidate threshold of 2 g, so every candidate goes through the features and the boosted
  trees), through :class:`WristFallDetector`; ``--wrist-only`` runs just these rows.
* Trunk falls (waist, chest, as shipped): the waist signal with the wrist's harder hits (the
  trunk detector's candidates start at 2 g too), through :class:`WaistFallDetector` (the 20
  trunk features and the 100-tree forest); ``--trunk-only`` runs just these rows. The rows "falls,
  threshold rule" are the streaming core with its threshold rule (:class:`FallDetector`).
* NEWS2: a 10-minute window of readings (7 parameters, 10 readings each) per device, in devices
  scored per CPU-second; the baseline scores one device per call. "own charts": every elder
  has NEWS2 settings of their own (a pulse chart of their own), scored through one
  ``News2Table`` as the ingester does (the table is built when settings change, not per call;
  its build time is printed too). ``--news2-only`` runs just the NEWS2 rows.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.falls import FallBatch, FallDetector
from detectors.news2_charts import N_PARAMS, Bands, News2Settings, News2Table
from detectors.vitals import VitalReadings, news2
from detectors.waist import WaistFallDetector
from detectors.wrist import WristFallDetector

RATE = 50
T0 = 1_700_000_000_000
REPEATS = 1 if "--quick" in sys.argv else 3


def _signal(
    n_dev: int, seconds: int, rng: np.random.Generator, hit_g: float = 0.8, every: int = 200
) -> np.ndarray:
    t = np.arange(seconds * RATE) / RATE
    phase = rng.uniform(0, 2 * np.pi, (n_dev, 1))
    sig = np.zeros((n_dev, t.size, 3), np.float32)
    sig[:, :, 1] = -1 + 0.35 * np.sin(2 * np.pi * 1.8 * t + phase)
    sig[:, :, 2] = 0.15 * np.sin(2 * np.pi * 0.9 * t + phase)
    sig += rng.normal(0, 0.05, sig.shape).astype(np.float32)
    # About one step in `every` hits harder than the candidate threshold (waist 1.5 g: a drop of
    # 0.8 g; wrist 2 g: a drop of 1.3 g).
    hits = rng.random((n_dev, t.size)) < 1 / every
    sig[hits, 1] -= hit_g
    return sig


def _batches(sig: np.ndarray, ids: list[str]) -> list[FallBatch]:
    n = sig.shape[0]
    out = []
    for k in range(sig.shape[1] // RATE):
        out.append(
            FallBatch(
                device_ids=ids,
                resident_ids=[None] * n,
                t0_ms=np.full(n, T0 + 1000 * k, np.int64),
                rate_hz=RATE,
                samples=np.ascontiguousarray(sig[:, k * RATE : (k + 1) * RATE]),
                lengths=np.full(n, RATE, np.int32),
            )
        )
    return out


#: The detectors benched: (how to make one, the drop that crosses its candidate threshold).
DETECTORS = {
    "rule": (FallDetector, 0.8),  # 1.5 g
    "trunk": (WaistFallDetector, 1.3),  # 2 g
    "wrist": (WristFallDetector, 1.3),  # 2 g
}


def bench_falls_vectorised(
    n_dev: int, seconds: int, rng: np.random.Generator, kind: str = "rule", every: int = 200
) -> float:
    ids = [f"d{i}" for i in range(n_dev)]
    make, hit_g = DETECTORS[kind]
    batches = _batches(_signal(n_dev, seconds + 4, rng, hit_g, every), ids)
    det = make()
    for k, b in enumerate(batches[:4]):  # warm up: fill the buffers
        det.process(b, now_ms=T0 + 1000 * (k + 1))
    start = time.process_time()
    for k, b in enumerate(batches[4:], start=4):
        det.process(b, now_ms=T0 + 1000 * (k + 1))
    cpu = time.process_time() - start
    return n_dev * seconds / cpu


def bench_falls_loop(
    n_dev: int, seconds: int, rng: np.random.Generator, kind: str = "rule", every: int = 200
) -> float:
    make, hit_g = DETECTORS[kind]
    sig = _signal(n_dev, seconds + 4, rng, hit_g, every)
    per_dev = [_batches(sig[i : i + 1], [f"d{i}"]) for i in range(n_dev)]
    det = make()
    for k in range(4):
        for i in range(n_dev):
            det.process(per_dev[i][k], now_ms=T0 + 1000 * (k + 1))
    start = time.process_time()
    for k in range(4, 4 + seconds):
        for i in range(n_dev):
            det.process(per_dev[i][k], now_ms=T0 + 1000 * (k + 1))
    cpu = time.process_time() - start
    return n_dev * seconds / cpu


def _readings(n_dev: int, rng: np.random.Generator) -> VitalReadings:
    per = 10
    row = np.repeat(np.arange(n_dev), N_PARAMS * per)
    param = np.tile(np.repeat(np.arange(N_PARAMS), per), n_dev)
    base = np.array([16, 97, 0, 125, 72, 0, 36.8])
    noise = np.array([2, 1, 0, 8, 6, 0, 0.2])
    value = base[param] + noise[param] * rng.standard_normal(row.size)
    ts = T0 - rng.integers(0, 600_000, row.size)
    return VitalReadings(
        device_ids=[f"d{i}" for i in range(n_dev)],
        resident_ids=[f"r{i}" for i in range(n_dev)],
        row=row.astype(np.int64),
        ts_ms=ts.astype(np.int64),
        param=param.astype(np.int64),
        value=value,
    )


def bench_news2(n_dev: int, rng: np.random.Generator, loop: bool) -> float:
    if loop:
        parts = [_readings(1, rng) for _ in range(n_dev)]
        start = time.process_time()
        for r in parts:
            news2(r, T0)
    else:
        r = _readings(n_dev, rng)
        start = time.process_time()
        news2(r, T0)
    return n_dev / (time.process_time() - start)


def own_charts(n_dev: int) -> dict[str, News2Settings]:
    """A pulse chart of their own for each of ``n_dev`` elders (all distinct)."""
    return {
        f"r{i}": News2Settings(
            pulse=Bands((31 + i / n_dev * 10, 51, 91, 111, 131), (3, 1, 0, 1, 2, 3))
        )
        for i in range(n_dev)
    }


def bench_news2_own_charts(n_dev: int, rng: np.random.Generator) -> tuple[float, float]:
    """(devices scored per CPU-s, seconds to build the table) with a chart per elder."""
    r = _readings(n_dev, rng)
    settings = own_charts(n_dev)
    start = time.process_time()
    table = News2Table.of(settings)
    build = time.process_time() - start
    start = time.process_time()
    news2(r, T0, settings=table)
    return n_dev / (time.process_time() - start), build


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _median(f, repeats: int = REPEATS) -> float:  # type: ignore[no-untyped-def]
    return statistics.median(f() for _ in range(repeats))


def _falls_rows(
    sizes: tuple[tuple[int, int, int], ...], big: int, rng: np.random.Generator
) -> bool:
    """The fall detectors' rows; True when only the wrist or trunk rows were asked for."""
    if "--trunk-only" not in sys.argv:
        _wrist_rows(sizes, big, rng)
    if "--wrist-only" in sys.argv:
        return True
    _size_rows("trunk falls, waist and chest", "trunk", sizes, rng)
    if "--trunk-only" in sys.argv:
        return True
    _size_rows("falls, threshold rule", "rule", sizes, rng)
    return False


def _size_rows(
    label: str, kind: str, sizes: tuple[tuple[int, int, int], ...], rng: np.random.Generator
) -> None:
    """One row per size: the vectorised detector ``kind`` against its per-device loop."""
    for n_dev, seconds, loop_seconds in sizes:
        vec = _median(lambda n=n_dev, s=seconds: bench_falls_vectorised(n, s, rng, kind))
        base = _median(lambda n=n_dev, s=loop_seconds: bench_falls_loop(n, s, rng, kind))
        print(
            f"| {label} (device-s of 50 Hz signal per CPU-s) | {n_dev:,} | {vec:,.0f} | "
            f"{base:,.0f} | {vec / base:.1f}x |"
        )


def _wrist_rows(
    sizes: tuple[tuple[int, int, int], ...], big: int, rng: np.random.Generator
) -> None:
    _size_rows("wrist falls, busy", "wrist", sizes, rng)
    # The rate of wrist candidates measured in the older participants' scripted activities
    # (0.09-0.12 per second of activity) instead of about 0.25 per second.
    vec = _median(lambda: bench_falls_vectorised(big, 20, rng, "wrist", every=400))
    base = _median(lambda: bench_falls_loop(big, 1, rng, "wrist", every=400))
    print(
        f"| wrist falls, older adults' activity rate (device-s per CPU-s) | {big:,} | {vec:,.0f} | "
        f"{base:,.0f} | {vec / base:.1f}x |"
    )


def main() -> int:
    rng = np.random.default_rng(0)
    import os

    # --quick: small sizes, one repeat, to check that the benchmark runs (tests/test_readme.py).
    quick = "--quick" in sys.argv
    sizes = ((1, 20, 20), (100, 5, 2)) if quick else ((1, 200, 200), (100, 60, 10), (10_000, 20, 1))
    big = 100 if quick else 10_000

    print(
        f"machine: {os.cpu_count()} CPUs, {_cpu_model()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )
    print(f"medians of {REPEATS} repeats, CPU time (time.process_time)\n")
    print("| detector | devices per call | vectorised | per-device loop | ratio |")
    print("|---|---:|---:|---:|---:|")
    if "--news2-only" not in sys.argv and _falls_rows(sizes, big, rng):
        return 0
    for n_dev in (1, 100) if quick else (1, 100, 10_000):
        vec = _median(lambda n=n_dev: bench_news2(n, rng, loop=False))
        base = _median(lambda n=n_dev: bench_news2(min(n, 2000), rng, loop=True))
        print(
            f"| NEWS2 (devices scored per CPU-s) | {n_dev:,} | {vec:,.0f} | {base:,.0f} | "
            f"{vec / base:.1f}x |"
        )
        runs = [bench_news2_own_charts(n_dev, rng) for _ in range(REPEATS)]
        own = statistics.median(v for v, _ in runs)
        build = statistics.median(b for _, b in runs)
        print(
            f"| NEWS2, a chart of their own per elder (devices per CPU-s; table built in "
            f"{build * 1000:.1f} ms) | {n_dev:,} | {own:,.0f} | {base:,.0f} | {own / base:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
