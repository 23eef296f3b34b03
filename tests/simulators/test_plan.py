"""The pure side of the simulators: bodies, devices, firmware and compiled plans.

Every message of every library scenario is decoded by the server's own decoder; the backlog,
the hub, the battery, the clock skew and the time mapping are checked on compiled plans; the
generated fall and the simulated walking go through the real fall detectors.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from detectors.datasets import Trial
from detectors.falls import FallDetector
from detectors.replay import run_trials
from detectors.waist import WaistFallDetector
from detectors.wrist import WristFallDetector
from devices import protocol as proto
from simulators.firmware import Step, batches
from simulators.malformed import VARIANTS, malformed
from simulators.physiology import Activity, Body, Change, Segment, Vital
from simulators.plan import Plan, choose_origin, compile_plan
from simulators.recordings import RecordingError, generated_fall, load_recording
from simulators.scenario import library, load_scenario, parse_scenario

NOW_MS = 1_764_576_000_000  # 2025-12-01 08:00 UTC


def _plan(name_or_data: str | dict[str, Any], run: str = "r1") -> Plan:
    s = (
        load_scenario(name_or_data)
        if isinstance(name_or_data, str)
        else parse_scenario(name_or_data)
    )
    return compile_plan(
        s,
        run=run,
        origin_ms=choose_origin(s, NOW_MS),
        loader=lambda name, rate: load_recording(name, rate, None),
    )


def _generated_only(path: Path) -> bool:
    return "sisfall:" not in path.read_text() and "wrist:" not in path.read_text()


@pytest.mark.parametrize("path", [p for p in library() if _generated_only(p)], ids=lambda p: p.stem)
def test_every_message_of_a_library_scenario_is_what_the_server_decodes(path: Path) -> None:
    plan = _plan(path.stem)
    limits = proto.Limits(now_ms=NOW_MS + 60_000)
    for a in plan.actions:
        if a.step is not Step.PUBLISH:
            continue
        assert a.channel is not None
        decoded = (
            proto.decode(a.channel, a.link, a.payload, limits)
            if not a.label.startswith("malformed")
            else None
        )
        if decoded is None:
            variant = a.label.split(":")[1]
            with pytest.raises(proto.ProtocolError) as err:
                proto.decode(a.channel, a.link, a.payload, limits)
            assert err.value.reason is VARIANTS[variant][2]
            continue
        assert not decoded.rejected, (a.label, decoded.rejected)
        for r in decoded.readings:
            # A hub's own devices, or the one a scenario has it publish for on purpose.
            assert r.device_id in plan.links[a.link] or a.label.startswith("for "), a.label
        for e in decoded.events:
            assert e.device_id in plan.links[a.link]


def test_a_backlog_arrives_after_the_reconnect_oldest_first_with_its_original_times() -> None:
    plan = _plan("backlog-day-offline")
    steps = [(a.step, a.t) for a in plan.actions if a.step is not Step.PUBLISH]
    assert steps == [(Step.DROP, 30.0), (Step.CONNECT, 90000.0), (Step.STATUS, 90000.0)]
    late = [a for a in plan.actions if a.step is Step.PUBLISH and a.t == 90000.0]
    readings = [r for a in late for r in json.loads(a.payload)["readings"]]
    assert all(len(json.loads(a.payload)["readings"]) <= 60 for a in late)
    ts = [r["ts"] for r in readings]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    # The day's readings keep the times they were taken at, 30 s to 25 h after the start, by
    # the device's clock (20 s ahead).
    assert ts[0] - plan.origin_ms >= 30_000 + 20_000 and ts[-1] - plan.origin_ms < 90_020_000
    seqs = [r["seq"] for r in readings]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert sum("vitals" in r for r in readings) == 300 - 1  # one was sent before the drop


def test_a_hub_publishes_for_its_devices_on_its_own_topics() -> None:
    plan = _plan("gateway-three-devices")
    assert plan.links == {
        "hub-guo-r1": ["hub-guo-r1", "bed-guo-r1", "btn-guo-r1", "pd-guo-r1"],
        "wb-other-r1": ["wb-other-r1"],
    }
    assert plan.connected == ["hub-guo-r1"]
    devs = set()
    for a in plan.actions:
        if a.step is Step.PUBLISH and a.channel is proto.Channel.TELEMETRY:
            doc = json.loads(a.payload)
            devs |= {r["dev"] for r in doc.get("readings", [doc])}
    assert devs == {"bed-guo-r1", "btn-guo-r1", "pd-guo-r1", "wb-other-r1"}
    sos = [a for a in plan.actions if a.label == "sos"]
    assert len(sos) == 1 and json.loads(sos[0].payload)["dev"] == "btn-guo-r1"


def test_a_dying_battery_says_goodbye_with_low_battery() -> None:
    plan = _plan("battery-dying")
    shutdown = [a for a in plan.actions if a.step in (Step.STATUS, Step.DISCONNECT)]
    assert [(a.step, a.online, a.reason) for a in shutdown] == [
        (Step.STATUS, False, "low_battery"),
        (Step.DISCONNECT, True, None),
    ]
    # 30 % at 5 %/h reaches 2 % (as reported, to 0.1 %) after 5.6 h; nothing is measured after.
    assert shutdown[0].t == pytest.approx(5.6 * 3600, abs=40)
    assert max(a.t for a in plan.actions if a.step is Step.PUBLISH) < shutdown[0].t


def _one_device(**device: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "duration": "3m",
        "elders": {"a": {"name": "老人"}},
        "devices": {"wb-a": {"kind": "watch", "elder": "a", **device}},
    }


def test_clock_skew_moves_every_timestamp() -> None:
    straight = _plan(_one_device())
    ahead = _plan(_one_device(clock_skew="90s"))
    first = [json.loads(a.payload)["ts"] for a in straight.actions[:5]]
    skewed = [json.loads(a.payload)["ts"] for a in ahead.actions[:5]]
    assert [b - a for a, b in zip(first, skewed, strict=True)] == [90_000] * 5


def test_a_watch_sends_every_part_it_has() -> None:
    plan = _plan(_one_device(vitals_every="60s", position_every="60s", battery_every="60s"))
    first = json.loads(plan.actions[0].payload)
    assert set(first) == {"v", "ts", "seq", "vitals", "accel", "battery", "pos"}
    assert first["pos"]["indoor"] == "living room"


def test_the_time_mapping_keeps_every_reading_behind_the_server_clock() -> None:
    real = parse_scenario({**_one_device(), "speed": 1})
    fast = parse_scenario({**_one_device(), "speed": 60})
    full = parse_scenario({**_one_device(), "speed": "max"})
    assert choose_origin(real, NOW_MS) == NOW_MS
    # 3 minutes at 60 times real time take 3 s: it starts 3 min - 3 s ago.
    assert choose_origin(fast, NOW_MS) == NOW_MS - 177_000
    assert choose_origin(full, NOW_MS) == NOW_MS - 185_000
    night = parse_scenario({**_one_device(), "speed": "max", "start": "21:00", "duration": "11h"})
    origin = dt.datetime.fromtimestamp(
        choose_origin(night, NOW_MS) / 1000, ZoneInfo("Asia/Shanghai")
    )
    assert (origin.hour, origin.minute) == (21, 0)
    assert origin.timestamp() * 1000 + 11 * 3_600_000 <= NOW_MS


def test_batches_stay_within_the_protocol_limits() -> None:
    burst = proto.accel_i16(np.zeros((100, 3)), 100, 1 / 1024)
    readings = [proto.ReadingWire(ts=k, seq=k, accel=burst) for k in range(500)]
    chunks = batches(readings)
    assert sum(len(c) for c in chunks) == 500
    assert all(len(c) <= 60 and len(proto.encode_telemetry(c)) < 64 * 1024 for c in chunks)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_malformed_payload_gets_its_reason(variant: str) -> None:
    channel, payload, reason = malformed(variant, NOW_MS, 7)
    with pytest.raises(proto.ProtocolError) as err:
        proto.decode(channel, "wb-1", payload, proto.Limits(now_ms=NOW_MS))
    assert err.value.reason is reason


# --------------------------------------------------------------------------- the body
def test_the_heart_slows_at_night_and_a_fever_raises_it() -> None:
    body = Body(start_hour=15.0, changes=[Change(Vital.TEMPERATURE, 3600, 3600, 38.6)])
    night = body.vitals(12 * 3600)  # 03:00, asleep
    afternoon = body.vitals(0)  # 15:00, routine
    assert night[Vital.HEART_RATE] < afternoon[Vital.HEART_RATE] - 5
    assert body.moment(12 * 3600).activity is Activity.SLEEP
    fever = body.vitals(2 * 3600 + 1)
    assert fever[Vital.TEMPERATURE] >= 38.3
    assert fever[Vital.HEART_RATE] > afternoon[Vital.HEART_RATE] + 10
    half = body.vitals(1.5 * 3600)[Vital.TEMPERATURE]
    assert 37.2 < half < 38.1  # half way up the ramp


@pytest.mark.parametrize("rate", [25, 50])
def test_the_generated_fall_is_flagged_and_walking_is_not(rate: int) -> None:
    fall = generated_fall(rate).astype(np.float32)
    recovering = generated_fall(rate, recovering=True).astype(np.float32)
    body = Body(segments=[Segment(0, Activity.WALK)])
    walking = np.vstack([body.accel(float(k), 1.0, rate) for k in range(60)]).astype(np.float32)
    sitting = Body(segments=[Segment(0, Activity.SIT)])
    sit = np.vstack([sitting.accel(float(k), 1.0, rate) for k in range(60)]).astype(np.float32)
    trials = [
        Trial(n, n, "X", "sim", a)
        for n, a in (("fall", fall), ("up", recovering), ("walk", walking), ("sit", sit))
    ]
    for detector in (FallDetector(), WaistFallDetector(), WristFallDetector()):
        results, _ = run_trials(trials, rate, detector)
        got = [(r.suspected > 0, r.confirmed, r.recovered) for r in results]
        assert got == [(True, 1, 0), (True, 0, 1), (False, 0, 0), (False, 0, 0)], type(detector)


def test_a_fall_recording_is_played_then_the_body_lies_as_it_ended() -> None:
    rec = load_recording("generated:fall", 25, None)
    body = Body(segments=[Segment(10.0, Activity.FALL, rec)])
    played = body.accel(10.0, 1.0, 25)
    assert np.array_equal(played, rec.samples[:25])
    after = body.accel(10.0 + rec.seconds + 5, 1.0, 25)
    assert body.moment(10.0 + rec.seconds + 5).activity is Activity.ON_FLOOR
    assert np.allclose(after.mean(axis=0), rec.rest_vector(), atol=0.01)


def test_a_recording_that_cannot_be_found_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="needs the datasets folder"):
        load_recording("sisfall:SA01/F05_SA01_R01", 25, None)
    with pytest.raises(RecordingError, match=r"no file .*sisfall/SA99.npz"):
        load_recording("sisfall:SA99/F05_SA99_R01", 25, tmp_path)
    with pytest.raises(RecordingError, match="expected sisfall:SUBJECT/TRIAL"):
        load_recording("kaggle:x", 25, tmp_path)


def test_bradycardia_and_falling_spo2_ramp_to_their_targets() -> None:
    body = Body(
        start_hour=10.0,
        segments=[Segment(0, Activity.SIT)],
        changes=[
            Change(Vital.HEART_RATE, 600, 1200, 38.0),
            Change(Vital.SPO2, 0, 3600, 86.0),
            Change(Vital.RESP_RATE, 0, 3600, 28.0),
        ],
    )
    before, after = body.vitals(0), body.vitals(3601)
    assert before[Vital.HEART_RATE] > 60 and after[Vital.HEART_RATE] <= 40
    assert before[Vital.SPO2] >= 96 and after[Vital.SPO2] <= 87
    assert after[Vital.RESP_RATE] >= 27
