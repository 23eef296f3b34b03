"""The behaviour stage on batches of readings: pure (settings given as values), and its state
saved and restored through the real database by the detection sink."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest

from detectors.behaviour import burst_movement
from detectors.findings import BehaviourEvidence, DetectorInputError, FindingKind
from devices.behaviour_settings import BehaviourSettingsIn, Watched, put_settings, watched
from devices.protocol import AccelBurst, BedState, Reading
from ingest.behaviour import BehaviourStage
from ingest.behaviour_state import BehaviourTable
from ingest.detection import DetectionSink
from ingest.pipeline import Batch, DeviceInfo, DeviceState

ZONE = ZoneInfo("Asia/Shanghai")
DAY = dt.date(2026, 11, 20)
FAR_LATER = 1_900_000_000_000  # the server clock: long after the streams below


def _ms(hour: float) -> int:
    return int((dt.datetime.combine(DAY, dt.time(0), ZONE) + dt.timedelta(hours=hour)).timestamp() * 1000)  # fmt: skip


def _watched(resident: str = "r1", *, alone: bool = True) -> Watched:
    return Watched(resident, alone, "Asia/Shanghai", 7 * 60, 22 * 60, 3 * 3600, 22 * 60, 7 * 60, 1800, 5400)  # fmt: skip


def _night(out_at: float, back_at: float | None, device: str = "bed-1") -> list[Reading]:
    """21:00-08:00, a reading a minute; to bed 22:30, up at out_at (hours after the evening's
    midnight), back at back_at, up for the day 07:30."""
    out = []
    for k, t in enumerate(range(_ms(21), _ms(32), 60_000)):
        h = (t - _ms(0)) / 3_600_000
        away = out_at <= h and (back_at is None or h < back_at)
        in_bed = 22.5 <= h < 31.5 and not away
        out.append(Reading(t, k, device, bed=BedState(presence=in_bed, movement=0.0)))
    return out


def _burst(moving: bool, n: int = 50) -> AccelBurst:
    t = np.arange(n) / 25
    acc = np.zeros((n, 3))
    acc[:, 2] = 1.0
    if moving:  # an arm swinging at 1 Hz
        acc[:, 0] = 0.3 * np.sin(2 * np.pi * t)
        acc[:, 2] += 0.2 * np.cos(2 * np.pi * t)
    counts = np.rint(acc * 1024).astype("<i2")
    return AccelBurst(25.0, 1 / 1024, counts.tobytes())


def _run(stage: BehaviourStage, readings: list[Reading], per_batch: int) -> list:  # type: ignore[type-arg]
    found = []
    for k in range(0, len(readings), per_batch):
        f, _changed = stage.process(
            Batch(readings=readings[k : k + per_batch]), FAR_LATER, lambda d: "r1"
        )
        found += f
    return found  # fmt: skip


@pytest.mark.parametrize("per_batch", [1, 60, 10_000])
def test_a_night_out_of_bed_is_one_finding_however_the_readings_are_batched(per_batch: int) -> None:
    # Not living alone: the bed sensor alone sees no movement from 03:00, which for someone
    # living alone is inactivity at 07:00 as well (the next test).
    stage = BehaviourStage(lambda: [_watched(alone=False)])
    found = _run(stage, _night(out_at=27.0, back_at=None), per_batch)
    assert [(f.kind, f.device_id, f.ts_ms) for f in found] == [
        (FindingKind.OUT_OF_BED, "bed-1", _ms(27))
    ]
    ev = found[0].evidence
    assert isinstance(ev, BehaviourEvidence)
    # Judged at the first tick past the 30 min limit, in the stream's own time.
    assert 1800 < ev.duration_s <= 1800 + 60 and found[0].detected_ms < FAR_LATER


@pytest.mark.parametrize("per_batch", [1, 10_000])
def test_a_bathroom_trip_is_nothing(per_batch: int) -> None:
    stage = BehaviourStage(lambda: [_watched(alone=False)])
    assert _run(stage, _night(out_at=26.0, back_at=26.0 + 10 / 60), per_batch) == []


def test_out_of_bed_and_still_for_someone_living_alone_is_also_inactivity() -> None:
    stage = BehaviourStage(lambda: [_watched(alone=True)])
    found = _run(stage, _night(out_at=27.0, back_at=None), 60)
    assert [(f.kind, f.ts_ms) for f in found] == [
        (FindingKind.OUT_OF_BED, _ms(27)),
        (FindingKind.INACTIVITY, _ms(27)),  # the bed emptied at 03:00: the last movement
    ]
    assert found[1].detected_ms >= _ms(31)  # judged in the day window, from 07:00


def test_never_in_bed_all_night_is_bed_empty() -> None:
    stage = BehaviourStage(lambda: [_watched(alone=False)])
    readings = [
        Reading(t, k, "bed-1", bed=BedState(presence=False))
        for k, t in enumerate(range(_ms(21), _ms(31), 60_000))
    ]
    found = _run(stage, readings, 30)
    assert [f.kind for f in found] == [FindingKind.BED_EMPTY]
    assert found[0].detected_ms >= _ms(22 + 1.5)


def _afternoon(still_from: float) -> list[Reading]:
    return [
        Reading(t, k, "wb-1", accel=_burst(moving=t < _ms(still_from)))
        for k, t in enumerate(range(_ms(8), _ms(18), 30_000))
    ]


def test_an_afternoon_still_is_inactivity_only_for_someone_living_alone() -> None:
    alone = BehaviourStage(lambda: [_watched(alone=True)])
    found = _run(alone, _afternoon(12.0), 100)
    last_move = _ms(12) - 30_000
    assert [(f.kind, f.device_id, f.ts_ms) for f in found] == [
        (FindingKind.INACTIVITY, "wb-1", last_move)
    ]
    together = BehaviourStage(lambda: [_watched(alone=False)])
    assert _run(together, _afternoon(12.0), 100) == []


def test_movement_ends_an_episode_and_the_next_one_is_reported_again() -> None:
    stage = BehaviourStage(lambda: [_watched()])
    readings = _afternoon(11.0)
    # Moves once at 15:00, then still again until 18:00 (three hours later: a new episode).
    again = _ms(15)
    readings = [
        Reading(r.ts_ms, r.seq, r.device_id, accel=_burst(moving=r.ts_ms == again))
        if r.ts_ms >= _ms(11)
        else r
        for r in readings
    ] + [Reading(t, 10_000 + k, "wb-1", accel=_burst(False)) for k, t in enumerate(range(_ms(18), _ms(18.5), 60_000))]  # fmt: skip
    found = _run(stage, readings, 50)
    assert [(f.kind, f.ts_ms) for f in found] == [
        (FindingKind.INACTIVITY, _ms(11) - 30_000),
        (FindingKind.INACTIVITY, again),
    ]


def test_devices_of_nobody_and_elders_not_watched_are_skipped() -> None:
    stage = BehaviourStage(lambda: [_watched("r1")])
    night = _night(out_at=27.0, back_at=None)
    found, changed = stage.process(Batch(readings=night), FAR_LATER, lambda d: None)
    assert (found, changed) == ([], set())
    found, changed = stage.process(Batch(readings=night), FAR_LATER, lambda d: "r-unknown")
    assert (found, changed) == ([], set())


def test_the_table_round_trips_through_its_bytes() -> None:
    stage = BehaviourStage(lambda: [_watched()])
    _run(stage, _night(out_at=27.0, back_at=None)[:400], 50)
    data = stage.table.export("r1")
    other = BehaviourTable()
    other.import_("r1", data)
    for name, _dtype, _fill in BehaviourTable._ARRAYS:
        assert getattr(other, name)[0] == getattr(stage.table, name)[0], name
    assert (other.motion_device[0], other.bed_device[0]) == ("bed-1", "bed-1")
    with pytest.raises(ValueError, match="not b'AXB1' state"):
        other.import_("r2", b"AXH1" + data[4:])


def test_burst_movement_known_answer_empty_and_bad_input() -> None:
    still, moving = _burst(False), _burst(True)
    samples = np.frombuffer(still.samples + moving.samples, "<i2").reshape(-1, 3)
    spread = burst_movement(samples, np.array([50, 50]), np.array([1 / 1024, 1 / 1024]))
    assert spread[0] < 0.005 and 0.1 < spread[1] < 0.2
    assert burst_movement(np.zeros((0, 3), np.int16), np.zeros(0, np.int64), np.zeros(0)).size == 0
    with pytest.raises(DetectorInputError, match="sum to 10 for 100 samples"):
        burst_movement(samples, np.array([5, 5]), np.array([1.0, 1.0]))
    with pytest.raises(DetectorInputError, match="expected \\(total, 3\\)"):
        burst_movement(samples.reshape(-1), np.array([50, 50]), np.array([1.0, 1.0]))


# --------------------------------------------------------------------------- with the database
def _resident(conn: psycopg.Connection[object], flags: list[str]) -> str:
    row = conn.execute(
        """INSERT INTO residents (name, sex, birth_date, flags)
           VALUES ('Test', 'female', '1940-01-01', %s) RETURNING id::text""",
        (flags,),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_settings_from_the_registry_flag_or_the_stored_row(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        flagged = _resident(conn, ["living_alone"])
        plain = _resident(conn, [])
        put_settings(
            conn,
            uuid.UUID(plain),
            BehaviourSettingsIn(lives_alone=True, max_inactive_min=120, night_start=dt.time(21)),
            by="admin: test",
        )
        got = {w.resident_id: w for w in watched(conn)}
    assert got[flagged].lives_alone and got[flagged].max_inactive_s == 3 * 3600
    assert got[plain].lives_alone and got[plain].max_inactive_s == 7200
    assert got[plain].night_start_min == 21 * 60


def test_the_sink_saves_the_stage_and_a_restarted_one_carries_on(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        rid = _resident(conn, [])
        conn.commit()
    info = DeviceInfo("bed-1", "bed_sensor", DeviceState.ACTIVE, 0, resident_id=rid)
    night = _night(out_at=27.0, back_at=None)
    upto = next(i for i, r in enumerate(night) if r.ts_ms >= _ms(27.25))  # 03:15, under the limit
    sink = DetectionSink(db_url, lambda d: info if d == "bed-1" else None)
    sink(Batch(readings=night[:upto]), FAR_LATER)
    sink.close()  # saves the state
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM findings").fetchone() == (0,)
        saved = conn.execute(
            "SELECT device_id FROM detector_state WHERE detector = 'behaviour'"
        ).fetchall()
    assert saved == [(rid,)]

    again = DetectionSink(db_url, lambda d: info if d == "bed-1" else None)
    try:
        again(Batch(readings=night[upto:]), FAR_LATER)
    finally:
        again.close()
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT device_id, kind, ts FROM findings").fetchall()
    # The bed emptied at 03:00 before the restart: the finding says so.
    assert rows == [("bed-1", "out_of_bed", dt.datetime.fromtimestamp(_ms(27) / 1000, dt.UTC))]


def test_an_elder_registered_after_the_last_read_is_watched_from_their_first_readings() -> None:
    """The settings are read every minute; an elder the stage does not know yet has them read
    again at once (at most every ``unknown_refresh_s``), so a new elder's first night counts."""
    registry: list[Watched] = []
    reads = []

    def load() -> list[Watched]:
        reads.append(len(registry))
        return list(registry)

    stage = BehaviourStage(load)
    night = _night(out_at=27.0, back_at=None)
    now = FAR_LATER
    # Nobody registered yet: the readings are not judged.
    found, _ = stage.process(Batch(readings=night[:10]), now, lambda d: "r1")
    assert found == [] and stage.stream_ms("r1") == -1
    registry.append(_watched(alone=False))
    # Two seconds later the elder exists, but the last read is fresher than 5 s: not yet.
    found, _ = stage.process(Batch(readings=night[10:20]), now + 2_000, lambda d: "r1")
    assert stage.stream_ms("r1") == -1
    # Past the 5 s: read again at the first reading of the unknown elder, and judged.
    found, _ = stage.process(Batch(readings=night[20:]), now + 6_000, lambda d: "r1")
    assert [(f.kind, f.ts_ms) for f in found] == [(FindingKind.OUT_OF_BED, _ms(27))]
    assert reads == [0, 1]
