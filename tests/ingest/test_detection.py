"""DetectionSink against the real PostgreSQL: batches of protocol readings in, findings out."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from core.clock import ManualClock
from detectors.findings import Finding, FindingKind, StoredFinding
from devices.protocol import AccelBurst, Event, EventKind, Reading, Status, Vitals
from ingest.detection import DetectionConfig, DetectionSink
from ingest.pipeline import Batch, DeviceInfo, DeviceState

T0 = 1_764_000_000_000
RATE = 50
SCALE = 1.0 / 1024.0
RESIDENT = str(uuid.uuid4())


def _lookup(device_id: str) -> DeviceInfo | None:
    if device_id.startswith("ghost"):
        return None
    # A belt clip: the synthetic falls here are shaped for the waist detector (the sink's
    # plumbing is the same for every placement; tests/ingest/test_wrist_fall_e2e.py has a wrist).
    return DeviceInfo(device_id, "belt_clip", DeviceState.ACTIVE, T0 - 86_400_000, None, RESIDENT)


def _sink(db_url: str, **kwargs: Any) -> DetectionSink:
    return DetectionSink(
        db_url, _lookup, clock=ManualClock(T0), registry=CollectorRegistry(), **kwargs
    )


def _fall_signal(seconds: int, impact_s: float) -> np.ndarray:
    """Upright (gravity on -y) with a little sway, a free fall, an impact, then lying still
    on the back (gravity on +z)."""
    rng = np.random.default_rng(1)
    t = np.arange(seconds * RATE) / RATE
    sig = np.zeros((t.size, 3))
    sig[:, 1] = -1.0 + 0.05 * np.sin(2 * np.pi * 1.5 * t)
    ff = (t >= impact_s - 0.3) & (t < impact_s)
    hit = (t >= impact_s) & (t < impact_s + 0.2)
    lying = t >= impact_s + 0.2
    sig[ff] = [0.0, -0.2, 0.0]
    sig[hit] = [1.0, -2.5, 1.5]
    sig[lying] = [0.0, 0.0, 1.0]
    return sig + rng.normal(0, 0.01, sig.shape)


def _accel_batch(device: str, sig: np.ndarray, seconds: range) -> list[Batch]:
    out = []
    for k in seconds:
        chunk = sig[k * RATE : (k + 1) * RATE]
        counts = np.rint(chunk / SCALE).astype("<i2").tobytes()
        burst = AccelBurst(rate_hz=float(RATE), scale_g=SCALE, samples=counts)
        out.append(Batch(readings=[Reading(T0 + 1000 * k, k, device, accel=burst)], messages=1))
    return out


def _findings(db_url: str, kind: FindingKind | None = None) -> list[dict[str, Any]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(
            """SELECT id, device_id, resident_id::text, kind, severity, evidence, window_samples,
                      window_rate_hz, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms,
                      (extract(epoch FROM window_start) * 1000)::bigint AS window_start_ms
               FROM findings WHERE %(kind)s::text IS NULL OR kind = %(kind)s ORDER BY id""",
            {"kind": kind.value if kind else None},
        )
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_sos_is_stored_at_once_and_handed_on(db_url: str) -> None:
    heard: list[list[StoredFinding]] = []
    sink = _sink(db_url, listeners=[heard.append])
    sos = Event(T0, 1, "sos-wb-1", EventKind.SOS)
    button = Event(T0, 2, "sos-wb-1", EventKind.BUTTON)
    sink(Batch(device_events=[sos, button], messages=2), T0 + 200)
    rows = _findings(db_url)
    assert [(r["kind"], r["severity"], r["device_id"]) for r in rows] == [
        ("sos", "emergency", "sos-wb-1")
    ]
    assert rows[0]["resident_id"] == RESIDENT
    assert rows[0]["ts_ms"] == T0
    assert rows[0]["window_samples"] is None
    assert [[s.finding.kind for s in fs] for fs in heard] == [[FindingKind.SOS]]
    assert [s.id for s in heard[0]] == [rows[0]["id"]]
    sink.close()


def test_synthetic_fall_in_one_second_bursts_is_stored_with_its_window(db_url: str) -> None:
    sink = _sink(db_url)
    sig = _fall_signal(14, impact_s=6.5)
    for k, batch in enumerate(_accel_batch("fall-wb-1", sig, range(14))):
        sink(batch, T0 + 1000 * (k + 1) + 50)
    rows = _findings(db_url, FindingKind.FALL_SUSPECTED)
    assert len(rows) == 1
    row = rows[0]
    assert (row["device_id"], row["severity"], row["resident_id"]) == (
        "fall-wb-1",
        "high",
        RESIDENT,
    )
    assert abs(row["ts_ms"] - (T0 + 6500)) <= 220  # the impact, in device time
    ev = row["evidence"]
    assert ev["peak_g"] > 2.5
    assert ev["orientation_change_deg"] > 80
    assert "window" not in ev
    window = np.frombuffer(row["window_samples"], "<f4").reshape(-1, 3)
    assert row["window_rate_hz"] == RATE
    assert window.shape == (7 * RATE, 3)  # 4 s before the impact, 3 s after (the trunk detector)
    # The stored window is the signal that was sent, from its stated start.
    start = (row["window_start_ms"] - T0) * RATE // 1000
    np.testing.assert_allclose(window, sig[start : start + 7 * RATE], atol=SCALE)
    # An activity without a fall on another device: nothing.
    walk = _fall_signal(14, impact_s=100)
    for k, batch in enumerate(_accel_batch("walk-wb-1", walk, range(14))):
        sink(batch, T0 + 1000 * (k + 1) + 50)
    assert _findings(db_url, FindingKind.FALL_SUSPECTED) == rows
    sink.close()


def test_fall_state_survives_a_restart_of_the_ingester(db_url: str) -> None:
    sig = _fall_signal(14, impact_s=6.5)
    batches = _accel_batch("restart-wb-1", sig, range(14))
    first = _sink(db_url)
    for k in range(8):  # the impact and one second after it
        first(batches[k], T0 + 1000 * (k + 1) + 50)
    first.close()
    assert _findings(db_url) == []
    with psycopg.connect(db_url) as conn:
        saved = conn.execute(
            "SELECT detector FROM detector_state WHERE device_id = %s", ["restart-wb-1"]
        )
        assert {r[0] for r in saved} == {"fall", "health"}

    second = _sink(db_url)  # a new ingester: state from the database
    for k in range(8, 14):
        second(batches[k], T0 + 1000 * (k + 1) + 50)
    rows = _findings(db_url, FindingKind.FALL_SUSPECTED)
    assert [r["device_id"] for r in rows] == ["restart-wb-1"]
    assert abs(rows[0]["ts_ms"] - (T0 + 6500)) <= 220
    second.close()

    # Without the saved state the second half alone is no fall: the state did the work.
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM detector_state")
        conn.execute("DELETE FROM findings")
    third = _sink(db_url)
    for k in range(8, 14):
        third(batches[k], T0 + 1000 * (k + 1) + 50)
    assert _findings(db_url) == []
    third.close()


def test_redelivered_bursts_after_a_restart_are_skipped(db_url: str) -> None:
    sig = _fall_signal(14, impact_s=6.5)
    batches = _accel_batch("redeliver-wb", sig, range(14))
    first = _sink(db_url)
    for k in range(8):
        first(batches[k], T0 + 1000 * (k + 1))
    first.close()
    second = _sink(db_url)
    for k in range(5, 14):  # the broker sends 5..7 again
        second(batches[k], T0 + 1000 * (k + 1))
    assert len(_findings(db_url, FindingKind.FALL_SUSPECTED)) == 1
    assert second.metrics.skipped_bursts.labels("old")._value.get() == 3
    second.close()


def test_sustained_abnormal_vitals_give_one_news2_finding(db_url: str) -> None:
    sink = _sink(db_url)
    sick = Vitals(heart_rate=135, spo2=91, resp_rate=26)
    for k in range(10):  # a reading every 20 s for three minutes
        ts = T0 + 20_000 * k
        sink(Batch(readings=[Reading(ts, k, "news-wb-1", vitals=sick)], messages=1), ts + 100)
    well = Vitals(heart_rate=70, spo2=98, resp_rate=14)
    for k in range(10):
        ts = T0 + 20_000 * k
        sink(Batch(readings=[Reading(ts, k, "well-wb-1", vitals=well)], messages=1), ts + 100)
    rows = _findings(db_url, FindingKind.NEWS2)
    assert len(rows) == 1, "an unchanged score is not reported again on every reading"
    row = rows[0]
    assert row["device_id"] == "news-wb-1"
    assert row["severity"] == "emergency"
    assert row["evidence"]["score"] == 9
    assert row["evidence"]["subscores"] == {"respiration_rate": 3, "spo2": 3, "pulse": 3}
    assert set(row["evidence"]["missing"]) == {
        "supplemental_o2",
        "systolic_bp",
        "consciousness",
        "temperature",
    }
    assert row["ts_ms"] == T0 + 40_000 + 100  # scored at the third reading
    assert [r["device_id"] for r in _findings(db_url, FindingKind.VITAL_SINGLE)] == ["news-wb-1"]
    sink.close()


def test_last_will_gives_device_offline_once(db_url: str) -> None:
    sink = _sink(db_url)
    reading = Reading(T0, 1, "will-wb-1", vitals=Vitals(heart_rate=70))
    sink(Batch(readings=[reading], messages=1), T0 + 100)
    will = Status(T0 - 3_600_000, "will-wb-1", online=False, reason="connection lost")
    sink(Batch(device_statuses=[will], messages=1), T0 + 5_000)
    sink(Batch(device_statuses=[will], messages=1), T0 + 6_000)  # retained, delivered again
    rows = _findings(db_url, FindingKind.DEVICE_OFFLINE)
    assert len(rows) == 1
    assert rows[0]["device_id"] == "will-wb-1"
    assert rows[0]["severity"] == "medium"
    assert rows[0]["evidence"]["last_will"] is True
    assert rows[0]["evidence"]["last_seen_ms"] == T0
    assert rows[0]["ts_ms"] == T0
    # Back online and gone again: a new finding.
    sink(
        Batch(readings=[Reading(T0 + 60_000, 2, "will-wb-1", vitals=Vitals(heart_rate=70))]),
        T0 + 60_100,
    )
    sink(Batch(device_statuses=[will], messages=1), T0 + 70_000)
    assert len(_findings(db_url, FindingKind.DEVICE_OFFLINE)) == 2
    sink.close()


def test_silent_device_goes_offline_after_three_intervals(db_url: str) -> None:
    sink = _sink(db_url, config=DetectionConfig(expected_interval_s=10, health_every_s=1))
    sink(Batch(readings=[Reading(T0, 1, "quiet-wb-1", vitals=Vitals(heart_rate=70))]), T0)
    sink(
        Batch(readings=[Reading(T0 + 20_000, 1, "busy-wb-1", vitals=Vitals(heart_rate=70))]),
        T0 + 20_000,
    )
    assert _findings(db_url) == []
    sink(
        Batch(readings=[Reading(T0 + 31_000, 2, "busy-wb-1", vitals=Vitals(heart_rate=70))]),
        T0 + 31_000,
    )
    assert [r["device_id"] for r in _findings(db_url, FindingKind.DEVICE_OFFLINE)] == ["quiet-wb-1"]
    sink.close()


@pytest.mark.allow_logged_errors
def test_a_failing_listener_is_counted_and_the_finding_kept(db_url: str) -> None:
    def broken(_findings: list[Finding]) -> None:
        raise RuntimeError("the alerts layer is down")

    heard: list[list[StoredFinding]] = []
    sink = _sink(db_url, listeners=[broken, heard.append])
    sink(Batch(device_events=[Event(T0, 1, "ghost-wb-1", EventKind.SOS)]), T0 + 10)
    assert [r["kind"] for r in _findings(db_url)] == ["sos"]
    assert _findings(db_url)[0]["resident_id"] is None  # unknown device: no resident
    assert len(heard) == 1, "the other listeners still hear it"
    assert sink.metrics.errors.labels("listener")._value.get() == 1
    sink.close()


@pytest.mark.allow_logged_errors
def test_a_failing_fall_stage_does_not_swallow_an_sos(db_url: str) -> None:
    sink = _sink(db_url)
    odd = AccelBurst(rate_hz=50.0, scale_g=SCALE, samples=b"\x00" * 6 * 50)
    batch = Batch(
        readings=[Reading(T0, 1, "odd-wb-1", accel=odd)],
        device_events=[Event(T0, 2, "odd-wb-1", EventKind.SOS)],
    )
    sink.falls.router.process = _raise  # type: ignore[method-assign]
    sink(batch, T0 + 10)
    assert [r["kind"] for r in _findings(db_url)] == ["sos"]
    assert sink.metrics.errors.labels("falls")._value.get() == 1
    sink.close()


def _raise(*_args: object, **_kwargs: object) -> list[Finding]:
    raise RuntimeError("detector bug")


def test_bursts_at_a_rate_the_detector_does_not_take_are_counted(db_url: str) -> None:
    sink = _sink(db_url)
    fast = AccelBurst(rate_hz=200.0, scale_g=SCALE, samples=b"\x00" * 6 * 200)
    ragged = AccelBurst(rate_hz=25.0, scale_g=SCALE, samples=b"\x00" * 6 * 20)
    sink(
        Batch(
            readings=[
                Reading(T0, 1, "fast-wb-1", accel=fast),
                Reading(T0, 1, "slow-wb-1", accel=ragged),
            ]
        ),
        T0,
    )
    assert sink.metrics.skipped_bursts.labels("rate")._value.get() == 1
    assert "slow-wb-1" in sink.falls.router
    sink.close()
