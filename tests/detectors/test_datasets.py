"""How the evaluator and the comparison hold people out (``detectors.datasets``)."""

from __future__ import annotations

import numpy as np

from detectors.datasets import Trial, subject_folds, subject_keys


def _trial(source: str, subject: str) -> Trial:
    return Trial(f"D01_{subject}_R01", subject, "D01", source, np.zeros((100, 3), np.float32))


TRIALS = [
    _trial("weda-fall", "U02"),
    _trial("fallalld", "FA01"),
    _trial("weda-fall", "U01"),
    _trial("fallalld", "FA02"),
    _trial("weda-fall", "U01"),  # a second trial of the same person
    _trial("smartfall-old", "S1"),
]


def test_a_person_is_named_with_their_source() -> None:
    assert subject_keys(TRIALS)[:2].tolist() == ["weda-fall/U02", "fallalld/FA01"]


def test_leave_one_source_out_holds_out_every_person_of_one_source() -> None:
    assert subject_folds(TRIALS, 5, by_source=True) == [
        ["fallalld/FA01", "fallalld/FA02"],
        ["smartfall-old/S1"],
        ["weda-fall/U01", "weda-fall/U02"],
    ]


def test_subject_folds_take_every_nth_person_and_each_person_once() -> None:
    folds = subject_folds(TRIALS, 2, by_source=False)
    assert folds == [
        ["fallalld/FA01", "smartfall-old/S1", "weda-fall/U02"],
        ["fallalld/FA02", "weda-fall/U01"],
    ]
    # n <= 0 or more folds than people: one person per fold
    assert subject_folds(TRIALS, 0, by_source=False) == [
        [k] for k in sorted(set(subject_keys(TRIALS)))
    ]
    assert len(subject_folds(TRIALS, 50, by_source=False)) == 5
