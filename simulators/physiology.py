"""A believable elder: what their body does at any moment of a scenario (pure, no I/O).

:class:`Body` answers, for a time ``t`` in seconds from the scenario's start,

* what they are doing (:class:`Activity`): walking, sitting, sitting still, asleep in bed, in
  the middle of a fall, lying on the floor;
* their vital signs, with a day and night rhythm (heart rate, breathing and temperature lowest
  around 03:00 local time, a little higher while walking, lower asleep) and the scripted
  changes (:class:`Change`: a fever, falling SpO2, rising respiration, bradycardia) ramping
  from the baseline to a target;
* the accelerometer samples a wrist, chest or waist device would record (walking swings,
  small gestures while sitting, nothing while still or asleep, a recording played back during
  a fall, then lying still in the orientation the fall left);
* whether they are in bed and how much they turn (the bed sensor).

Without a script the day follows a routine: asleep 22:30-07:00, otherwise walking five minutes
every half hour and sitting in between. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from simulators.recordings import Recording

F64 = npt.NDArray[np.float64]


class Activity(enum.StrEnum):
    ROUTINE = "routine"
    """The default day: asleep at night, walking a little every half hour, sitting otherwise."""
    WALK = "walk"
    SIT = "sit"
    """Sitting, with a small gesture every so often (movement, as the detectors see it)."""
    STILL = "still"
    """Sitting or lying without any movement (an afternoon without movement)."""
    SLEEP = "sleep"
    """In bed."""
    FALL = "fall"
    """Playing a fall recording; afterwards on the floor unless something else follows."""
    ON_FLOOR = "on_floor"


class Vital(enum.StrEnum):
    HEART_RATE = "heart_rate"
    RESP_RATE = "resp_rate"
    SPO2 = "spo2"
    TEMPERATURE = "temperature"


@dataclass(frozen=True)
class Baseline:
    """Resting values at midday; the night is lower (see the module's notes)."""

    heart_rate: float = 72.0
    resp_rate: float = 15.0
    spo2: float = 97.0
    temperature: float = 36.6
    systolic: float = 132.0
    diastolic: float = 82.0


@dataclass(frozen=True)
class Change:
    """A vital sign moving from where it is to ``to`` between ``start_s`` and
    ``start_s + over_s``, and staying there."""

    vital: Vital
    start_s: float
    over_s: float
    to: float

    def weight(self, t: float) -> float:
        if t <= self.start_s:
            return 0.0
        if self.over_s <= 0 or t >= self.start_s + self.over_s:
            return 1.0
        return (t - self.start_s) / self.over_s


@dataclass(frozen=True)
class Segment:
    """From ``start_s`` on, the elder does ``activity`` (until the next segment)."""

    start_s: float
    activity: Activity
    recording: Recording | None = None
    room: str | None = None


@dataclass(frozen=True)
class Moment:
    """What the body is doing at one time."""

    activity: Activity
    since_s: float
    recording: Recording | None
    room: str


_SLEEP_START_H, _SLEEP_END_H = 22.5, 7.0
_GRAVITY = {
    Activity.WALK: (0.0, 0.0, 1.0),
    Activity.SIT: (0.3, 0.0, 0.95),
    Activity.STILL: (0.3, 0.0, 0.95),
    Activity.SLEEP: (0.95, 0.0, 0.3),
    Activity.ON_FLOOR: (1.0, 0.0, 0.05),
}
_ROOMS = {
    Activity.WALK: "living room",
    Activity.SIT: "living room",
    Activity.STILL: "living room",
    Activity.SLEEP: "bedroom",
}


@dataclass
class Body:
    """One elder's body over a scenario.

    Args:
        start_hour: Local time of day at ``t = 0``, in hours (14.5 is 14:30).
        baseline: Resting vital signs.
        segments: What they do from when (sorted here); before the first: the routine.
        changes: Scripted changes of vital signs.
        seed: Makes the noise repeatable.
    """

    start_hour: float = 9.0
    baseline: Baseline = field(default_factory=Baseline)
    segments: list[Segment] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        self.segments = sorted(self.segments, key=lambda s: s.start_s)

    # -- time of day ---------------------------------------------------------------------
    def local_hour(self, t: float) -> float:
        return (self.start_hour + t / 3600.0) % 24.0

    def _routine(self, t: float) -> Activity:
        h = self.local_hour(t)
        if h >= _SLEEP_START_H or h < _SLEEP_END_H:
            return Activity.SLEEP
        return Activity.WALK if (t % 1800.0) < 300.0 else Activity.SIT

    # -- what they do --------------------------------------------------------------------
    def moment(self, t: float) -> Moment:
        seg: Segment | None = None
        for s in self.segments:
            if s.start_s > t:
                break
            seg = s
        if seg is None or seg.activity is Activity.ROUTINE:
            act = self._routine(t)
            return Moment(act, 0.0 if seg is None else seg.start_s, None, _ROOMS[act])
        act = seg.activity
        rec = seg.recording
        if act is Activity.FALL and rec is not None and t - seg.start_s >= rec.seconds:
            act = Activity.ON_FLOOR
        room = seg.room or _ROOMS.get(act, "living room")
        return Moment(act, seg.start_s, rec, room)

    def in_bed(self, t: float) -> bool:
        return self.moment(t).activity is Activity.SLEEP

    def turning(self, t0: float, t1: float) -> bool:
        """Whether they turn over in bed within ``[t0, t1)`` (about every 47 minutes)."""
        return math.floor(t1 / 2820.0) > math.floor(t0 / 2820.0)

    # -- vital signs ---------------------------------------------------------------------
    def vitals(self, t: float) -> dict[Vital, float]:
        """Vital signs at ``t`` (rounded as a device reports them)."""
        b = self.baseline
        night = math.cos(2 * math.pi * (self.local_hour(t) - 3.0) / 24.0)  # 1 at 03:00
        act = self.moment(t).activity
        effort = {Activity.WALK: 14.0, Activity.SLEEP: -4.0, Activity.FALL: 25.0}.get(act, 0.0)
        effort = 18.0 if act is Activity.ON_FLOOR else effort
        rng = np.random.default_rng((self.seed, int(t)))
        noise = rng.normal(0.0, 1.0, 4)
        values = {
            Vital.HEART_RATE: b.heart_rate - 5.0 * night + effort,
            Vital.RESP_RATE: b.resp_rate - 1.0 * night + effort / 8.0,
            Vital.SPO2: b.spo2,
            Vital.TEMPERATURE: b.temperature - 0.2 * night,
        }
        fever = 0.0
        for c in self.changes:
            w = c.weight(t)
            if w <= 0.0:
                continue
            if c.vital is Vital.TEMPERATURE:
                fever = max(fever, (c.to - b.temperature) * w)
            values[c.vital] = values[c.vital] * (1.0 - w) + c.to * w
        if fever > 0.0:  # a fever raises the pulse and the breathing with it
            values[Vital.HEART_RATE] += 10.0 * fever
            values[Vital.RESP_RATE] += 2.0 * fever
        return {
            Vital.HEART_RATE: round(float(values[Vital.HEART_RATE] + noise[0]), 0),
            Vital.RESP_RATE: round(float(values[Vital.RESP_RATE] + 0.3 * noise[1]), 0),
            Vital.SPO2: round(min(100.0, float(values[Vital.SPO2] + 0.3 * noise[2])), 0),
            Vital.TEMPERATURE: round(float(values[Vital.TEMPERATURE] + 0.05 * noise[3]), 1),
        }

    # -- movement --------------------------------------------------------------------------
    def accel(self, t0: float, seconds: float, rate_hz: int) -> F64:
        """Samples a worn device records from ``t0`` for ``seconds``, in g, shape ``(n, 3)``."""
        n = max(1, round(seconds * rate_hz))
        m = self.moment(t0)
        rng = np.random.default_rng((self.seed, round(t0 * 1000)))
        s = t0 + np.arange(n) / rate_hz
        act = m.activity
        if act is Activity.FALL and m.recording is not None:
            rec = m.recording
            start = round((t0 - m.since_s) * rec.rate_hz)
            part = rec.samples[start : start + n]
            if part.shape[0] == n:
                return part.copy()
            rest = np.tile(rec.rest_vector(), (n - part.shape[0], 1))
            rest += rng.normal(0.0, 0.004, rest.shape)
            out: F64 = np.vstack([part, rest])
            return out
        if act is Activity.ON_FLOOR and m.recording is not None:
            lying = np.tile(m.recording.rest_vector(), (n, 1))
            return lying + rng.normal(0.0, 0.004, (n, 3))
        if act in (Activity.FALL, Activity.ON_FLOOR):
            act = Activity.ON_FLOOR
        gravity = np.array(_GRAVITY[act])
        samples = np.tile(gravity, (n, 1)) + rng.normal(0.0, 0.004, (n, 3))
        if act is Activity.WALK:
            phase = rng.uniform(0, 2 * np.pi)
            samples[:, 2] += 0.25 * np.sin(2 * np.pi * 1.8 * s + phase)
            samples[:, 0] += 0.15 * np.sin(2 * np.pi * 0.9 * s + phase)
            samples += rng.normal(0.0, 0.04, (n, 3))
        elif act is Activity.SIT and (t0 % 20.0) < 3.0:  # a gesture every 20 s
            samples[:, 0] += 0.2 * np.sin(2 * np.pi * 1.0 * s)
        elif act is Activity.SLEEP and self.turning(t0 - seconds, t0):
            samples[:, 1] += 0.3 * np.sin(2 * np.pi * 0.5 * s)
        return samples
