"""Joined activity streams say where each recording begins, and the evaluator locates an
impact in them (``anxin detectors evaluate-falls`` lists every confirmed false alarm so)."""

from __future__ import annotations

import numpy as np

from detectors.datasets import Trial, joined_activity
from detectors.evaluation import confirmed_at

RATE = 50


def _trial(name: str, subject: str, seconds: float) -> Trial:
    acc = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (round(seconds * RATE), 1))
    return Trial(name, subject, name[:3], "src", acc)


def test_joined_stream_lists_its_recordings_and_the_rest() -> None:
    trials = [
        _trial("D01_S1_R01", "S1", 10.0),
        _trial("F01_S1_R01", "S1", 8.0),  # a fall: not part of the activity stream
        _trial("D02_S1_R01", "S1", 20.0),
        _trial("D01_S2_R01", "S2", 5.0),
    ]
    s1, s2 = joined_activity(trials, RATE)
    assert s1.parts == (("D01_S1_R01", 0.0), ("D02_S1_R01", 10.0), ("REST", 30.0))
    assert s1.acc.shape[0] == (30 + 60) * RATE
    assert s2.parts == (("D01_S2_R01", 0.0), ("REST", 5.0))


def test_an_impact_is_placed_in_its_recording_with_the_distance_to_the_junction() -> None:
    trials = [_trial("D01_S1_R01", "S1", 10.0), _trial("D02_S1_R01", "S1", 20.0)]
    (stream,) = joined_activity(trials, RATE)
    mid = confirmed_at(stream, 20.0, RATE)
    assert (mid.stream, mid.recording, mid.then) == ("src/S1", "D02_S1_R01", "REST")
    assert (mid.into_s, mid.before_end_s) == (10.0, 10.0)
    assert not mid.near_junction
    edge = confirmed_at(stream, 9.5, RATE)
    assert (edge.recording, edge.before_end_s, edge.then) == ("D01_S1_R01", 0.5, "D02_S1_R01")
    assert edge.near_junction
    assert str(edge) == (
        "src/S1: impact 9.5 s into D01_S1_R01 (0.5 s before its end), then D02_S1_R01"
    )
    rest = confirmed_at(stream, 35.0, RATE)
    assert (rest.recording, rest.into_s, rest.before_end_s, rest.then) == ("REST", 5.0, 55.0, "")
