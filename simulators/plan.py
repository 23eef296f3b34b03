"""A scenario compiled into what every connection does and when (pure, no I/O).

:func:`compile_plan` builds a :class:`simulators.physiology.Body` per elder from the timeline,
a :class:`simulators.devices.DeviceModel` per device and a :class:`simulators.firmware.Firmware`
per connection (devices of their own, and hubs with the devices behind them), then steps
through the scenario second by second and collects the :class:`Action` list the runner plays.

Time: scenario time ``t`` (seconds from the start) is the device clock ``origin_ms + t``
(plus each device's skew). :func:`choose_origin` picks ``origin_ms`` so that no reading is
ahead of the server clock when it is sent: a real-time scenario starts now, a scenario played
``speed`` times faster starts ``duration * (1 - 1/speed)`` earlier, one at ``max`` speed ends
now; a scenario with a ``start`` time of day starts at the latest such local time that allows it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from devices import protocol as proto
from simulators.devices import DeviceModel, DeviceSpec
from simulators.firmware import Action, Firmware, Step, for_device
from simulators.malformed import malformed
from simulators.physiology import Activity, Baseline, Body, Change, Segment
from simulators.recordings import Recording
from simulators.scenario import Scenario, TimelineStep

#: A battery at or below this shuts the device down (an offline status with ``low_battery``).
SHUTDOWN_PCT = 2.0
#: A scenario at ``max`` speed ends this long before the moment it is compiled.
MAX_SPEED_MARGIN_S = 5.0

_ELDER_ACTIVITY = {
    "walk": Activity.WALK,
    "get_up": Activity.WALK,
    "leave_bed": Activity.WALK,
    "sit": Activity.SIT,
    "still": Activity.STILL,
    "sleep": Activity.SLEEP,
    "routine": Activity.ROUTINE,
}
_EVENTS = {
    "sos": proto.EventKind.SOS,
    "cancel": proto.EventKind.CANCEL,
    "button": proto.EventKind.BUTTON,
    "device_fall": proto.EventKind.FALL,
}

RecordingLoader = Callable[[str, int], Recording]


@dataclass(frozen=True)
class Plan:
    """What the runner plays.

    Attributes:
        origin_ms: Device clock of scenario time 0.
        actions: In time order.
        specs: Final device id -> spec (ids carry the run's suffix).
        links: Connection id -> the device ids it publishes for (itself, or a hub's devices).
        connected: Links connected before the timeline starts.
        sent_malformed: Final device id -> expected dead-letter reasons of its bad payloads.
    """

    origin_ms: int
    actions: list[Action]
    specs: dict[str, DeviceSpec]
    links: dict[str, list[str]]
    connected: list[str]
    sent_malformed: dict[str, list[proto.Reason]] = field(default_factory=dict)


def final_id(key: str, run: str) -> str:
    """A scenario's device id as registered: with the run's suffix, so runs never collide."""
    return f"{key}-{run}" if run else key


def choose_origin(s: Scenario, now_ms: int) -> int:
    """The device clock of scenario time 0 (see the module's notes)."""
    lag = s.duration + MAX_SPEED_MARGIN_S if s.speed == "max" else s.duration * (1 - 1 / s.speed)
    latest = now_ms - round(lag * 1000)
    if s.start is None:
        return latest
    zone = ZoneInfo(s.timezone)
    local = dt.datetime.fromtimestamp(latest / 1000, zone)
    h, m = (int(x) for x in s.start.split(":"))
    candidate = local.replace(hour=h, minute=m, second=0, microsecond=0)
    if candidate > local:
        candidate -= dt.timedelta(days=1)
    return int(candidate.timestamp() * 1000)


def _bodies(s: Scenario, loader: RecordingLoader, rates: dict[str, int]) -> dict[str, Body]:
    bodies: dict[str, Body] = {}
    for i, (key, elder) in enumerate(s.elders.items()):
        b = elder.baseline
        segments: list[Segment] = []
        changes: list[Change] = []
        for step in s.timeline:
            if step.elder != key:
                continue
            at = s.at_seconds(step)
            if step.do in _ELDER_ACTIVITY:
                segments.append(Segment(at, _ELDER_ACTIVITY[step.do], room=step.room))
            elif step.do == "fall":
                rec = loader(step.recording or "generated:fall", rates.get(key, 25))
                segments.append(Segment(at, Activity.FALL, rec, room=step.room))
            elif step.do == "bathroom":
                segments.append(Segment(at, Activity.WALK, room="bathroom"))
                segments.append(Segment(at + step.minutes * 60, Activity.SLEEP))
            elif step.do == "change":
                assert step.vital is not None and step.to is not None  # noqa: S101 - validated
                changes.append(Change(step.vital, at, step.over, step.to))
        bodies[key] = Body(
            start_hour=s.start_hour(),
            baseline=Baseline(b.heart_rate, b.resp_rate, b.spo2, b.temperature),
            segments=segments,
            changes=changes,
            seed=i + 1,
        )
    return bodies


def compile_plan(s: Scenario, *, run: str, origin_ms: int, loader: RecordingLoader) -> Plan:
    """Every action of the scenario, in time order.

    Args:
        s: A checked scenario.
        run: Suffix of this run's device ids ("" for none).
        origin_ms: Device clock of scenario time 0 (:func:`choose_origin`).
        loader: Gives a recording by name at a sample rate.
    """
    ids = {key: final_id(key, run) for key in s.devices}
    specs: dict[str, DeviceSpec] = {}
    for key, d in s.devices.items():
        specs[ids[key]] = DeviceSpec(
            device_id=ids[key],
            kind=d.kind,
            hub=ids[d.hub] if d.hub else None,
            rate_hz=d.rate_hz,
            accel_every_s=d.accel_every,
            vitals_every_s=d.vitals_every,
            battery_every_s=d.battery_every,
            position_every_s=d.position_every,
            bed_every_s=d.bed_every,
            battery_pct=d.battery,
            drain_pct_per_h=d.drain_per_hour,
            clock_skew_s=d.clock_skew,
            firmware=d.firmware,
            upload_every_s=d.upload_every,
        )
    rates = {d.elder: d.rate_hz for d in s.devices.values() if d.elder and d.accel_every > 0}
    bodies = _bodies(s, loader, rates)
    models = {
        ids[key]: DeviceModel(specs[ids[key]], bodies.get(d.elder or ""), origin_ms)
        for key, d in s.devices.items()
    }
    links: dict[str, list[str]] = {}
    firmware: dict[str, Firmware] = {}
    for key, d in s.devices.items():
        if d.hub is None:
            link = ids[key]
            links.setdefault(link, []).insert(0, link)
            firmware[link] = Firmware(link, upload_every_s=d.upload_every, online=d.connected)
    for key, d in s.devices.items():
        if d.hub is not None:
            links[ids[d.hub]].append(ids[key])
    link_of = {dev: link for link, devs in links.items() for dev in devs}
    connected = [ids[k] for k, d in s.devices.items() if d.hub is None and d.connected]

    steps = sorted((st for st in s.timeline if st.device is not None), key=s.at_seconds)
    actions: list[Action] = []
    sent_bad: dict[str, list[proto.Reason]] = {}
    dead: set[str] = set()
    k = 0
    n_seconds = math.ceil(s.duration)
    for second in range(n_seconds + 1):
        t0, t1 = float(second), float(min(second + 1, s.duration + 1e-9))
        while k < len(steps) and s.at_seconds(steps[k]) < t1:
            step = steps[k]
            k += 1
            actions += _device_step(
                step,
                s.at_seconds(step),
                ids=ids,
                specs=specs,
                models=models,
                firmware=firmware,
                link_of=link_of,
                sent_bad=sent_bad,
            )
        if t1 <= t0:
            break
        for dev, model in models.items():
            if dev in dead:
                continue
            spec = model.spec
            if spec.battery_at(t0) <= SHUTDOWN_PCT and "battery" in spec.parts:
                dead.add(dev)
                if spec.hub is None:
                    actions += firmware[dev].shutdown(t0, "low_battery")
                continue
            measured = model.measure(t0, t1)
            if measured:
                fw = firmware[link_of[dev]]
                dev_field = dev if spec.hub is not None else None
                actions += fw.take(t0, [for_device(m.reading, dev_field) for m in measured])
        for fw in firmware.values():
            actions += fw.tick(t1)
    actions.sort(key=lambda a: a.t)  # stable: the order within one moment is kept
    return Plan(origin_ms, actions, specs, links, connected, sent_bad)


def _device_step(
    step: TimelineStep,
    at: float,
    *,
    ids: dict[str, str],
    specs: dict[str, DeviceSpec],
    models: dict[str, DeviceModel],
    firmware: dict[str, Firmware],
    link_of: dict[str, str],
    sent_bad: dict[str, list[proto.Reason]],
) -> list[Action]:
    assert step.device is not None  # noqa: S101 - a device step
    dev = ids[step.device]
    spec = specs[dev]
    model = models[dev]
    fw = firmware[link_of[dev]]
    if step.do in _EVENTS:
        event = model.event(at, _EVENTS[step.do], step.detail)
        payload = proto.encode_event(event, dev=dev if spec.hub is not None else None)
        return fw.event(at, payload, step.do, dev)
    if step.do == "lose_connection":
        return fw.drop(at)
    if step.do == "reconnect":
        return fw.connect(at)
    if step.do == "shutdown":
        return fw.shutdown(at, step.reason)
    if step.do == "malformed":
        assert step.variant is not None  # noqa: S101 - validated
        out: list[Action] = []
        for _ in range(step.count):
            channel, payload, reason = malformed(
                step.variant, spec.clock_ms(model.origin_ms, at), model.next_seq()
            )
            before = len(out)
            out += fw.raw(at, channel, payload, f"malformed:{step.variant}")
            if len(out) > before:
                sent_bad.setdefault(dev, []).append(reason)
        return out
    if step.do == "publish_for":
        assert step.for_device is not None  # noqa: S101 - validated
        target = ids.get(step.for_device, step.for_device)
        reading = proto.ReadingWire(
            ts=spec.clock_ms(model.origin_ms, at),
            seq=model.next_seq(),
            dev=target,
            battery=proto.Battery(level_pct=50.0),
        )
        return fw.raw(
            at, proto.Channel.TELEMETRY, proto.encode_telemetry([reading]), f"for {target}"
        )
    raise AssertionError(f"unhandled device step {step.do!r}")  # validated before


__all__ = ["Action", "Plan", "Step", "choose_origin", "compile_plan", "final_id"]
