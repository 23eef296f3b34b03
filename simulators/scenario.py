"""Scenario files: the YAML a test engineer writes, read and checked into typed values (pure).

:func:`load_scenario` reads a file, :func:`parse_scenario` a mapping; both raise
:class:`ScenarioError` listing every problem as ``key has value V: expected E``. The format is
documented with examples in docs/simulators.md; the library is in ``simulators/scenarios/``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from alerts.model import AlertKind, AlertState
from core.errors import AnxinError
from devices.model import ContactRole, DeviceKind, Sex, SpecialFlag
from devices.protocol import CommandKind, Reason
from simulators.malformed import VARIANTS
from simulators.physiology import Vital

LIBRARY = Path(__file__).parent / "scenarios"

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{3,56}$")
DURATION_HELP = "a duration such as 90s, 5m, 2h or 1h30m (or a number of seconds)"


class ScenarioError(AnxinError):
    """A scenario file that cannot be used; ``problems`` lists each one."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(
            f"scenario {source} is not valid:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def parse_duration(value: object) -> float:
    """Seconds of ``90s``, ``5m``, ``2h``, ``1h30m`` or a plain number.

    Raises:
        ValueError: anything else, with what was expected.
    """
    if isinstance(value, bool):
        # A ValueError, not a TypeError: pydantic reports it as the field's message.
        raise ValueError(f"expected {DURATION_HELP}")  # noqa: TRY004
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected {DURATION_HELP}, not negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m and any(m.groups()):
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            return h * 3600 + mi * 60 + s
    raise ValueError(f"expected {DURATION_HELP}")


def _signed_seconds(value: object) -> float:
    if isinstance(value, str) and value.startswith("-"):
        return -parse_duration(value[1:])
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(parse_duration)]
SignedDuration = Annotated[float, BeforeValidator(_signed_seconds)]


def _clock(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 14:05 as the sexagesimal number 845.
        value = f"{value // 60:02d}:{value % 60:02d}"
    if not isinstance(value, str) or not _CLOCK.match(value):
        raise ValueError("expected a local time of day HH:MM, e.g. '14:05'")
    return value


def _at(value: object) -> str | float:
    if isinstance(value, str) and _CLOCK.match(value):
        return value
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(
            f"expected {DURATION_HELP} from the start, or a time of day HH:MM"
        ) from None


def _speed(value: object) -> float | Literal["max"]:
    if value == "max":
        return "max"
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 10_000:
        return float(value)
    raise ValueError(
        "expected a factor over real time (1 = real time, 60 = a minute a second) or 'max'"
    )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactSpec(_Model):
    role: ContactRole
    name: str = Field(min_length=1, max_length=100)
    phone: str | None = None
    channel: str | None = Field(
        None, description="apprise URL; {phones} is replaced by the runner's --phones"
    )


class DoctorSpec(_Model):
    name: str = "家庭医生"
    channel: str | None = None


class BaselineSpec(_Model):
    heart_rate: float = Field(72.0, ge=30, le=200)
    resp_rate: float = Field(15.0, ge=4, le=60)
    spo2: float = Field(97.0, ge=60, le=100)
    temperature: float = Field(36.6, ge=30, le=43)


class BehaviourSpec(_Model):
    lives_alone: bool | None = None
    max_inactive_min: int | None = Field(None, ge=10, le=1440)
    out_of_bed_min: int | None = Field(None, ge=1, le=720)
    bed_empty_min: int | None = Field(None, ge=1, le=720)


class ElderSpec(_Model):
    name: str = Field(min_length=1, max_length=100)
    sex: Sex = Sex.FEMALE
    born: dt.date = dt.date(1940, 1, 1)
    flags: list[SpecialFlag] = Field(default_factory=list)
    baseline: BaselineSpec = Field(default_factory=BaselineSpec)
    contacts: list[ContactSpec] = Field(default_factory=list)
    doctor: DoctorSpec | None = None
    behaviour: BehaviourSpec | None = None


class DeviceYaml(_Model):
    kind: DeviceKind
    elder: str | None = None
    hub: str | None = None
    rate_hz: int = Field(25, ge=10, le=100)
    accel_every: Duration = 1.0
    vitals_every: Duration = 60.0
    battery_every: Duration = 600.0
    position_every: Duration = 300.0
    bed_every: Duration = 30.0
    battery: float = Field(90.0, ge=0, le=100)
    drain_per_hour: float = Field(0.5, ge=0, le=100)
    clock_skew: SignedDuration = 0.0
    firmware: str = Field("sim-1.0", max_length=64)
    upload_every: Duration = 0.0
    connected: bool = Field(True, description="connected at the start")


ElderDo = Literal[
    "walk", "sit", "still", "sleep", "routine", "fall", "get_up", "bathroom", "leave_bed", "change"
]
DeviceDo = Literal[
    "sos", "cancel", "button", "device_fall", "lose_connection", "reconnect", "shutdown",
    "malformed", "publish_for",
]  # fmt: skip
ELDER_DO: frozenset[str] = frozenset(ElderDo.__args__)  # type: ignore[attr-defined]
DEVICE_DO: frozenset[str] = frozenset(DeviceDo.__args__)  # type: ignore[attr-defined]
#: Steps on a device's own connection (not for one behind a hub).
CONNECTION_DO = frozenset({"lose_connection", "reconnect", "shutdown", "malformed"})
#: Kinds that wear an accelerometer.
ACCEL_KINDS = frozenset(
    {DeviceKind.WRISTBAND, DeviceKind.WATCH, DeviceKind.PENDANT, DeviceKind.BELT_CLIP}
)
#: Steps whose outcome the server judges on its own clock: real time only.
REAL_TIME_ONLY = frozenset({"fall", "cancel", "device_fall"})


class TimelineStep(_Model):
    at: Annotated[str | float, BeforeValidator(_at)]
    do: str
    elder: str | None = None
    device: str | None = None
    recording: str | None = None
    room: str | None = Field(None, max_length=64)
    minutes: float = Field(10.0, gt=0, le=24 * 60)
    vital: Vital | None = None
    to: float | None = None
    over: Duration = 0.0
    variant: str | None = None
    count: int = Field(1, ge=1, le=1000)
    reason: str = Field("shutdown", max_length=64)
    for_device: str | None = Field(None, alias="for")
    detail: dict[str, Any] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _fits(self) -> TimelineStep:
        if self.do in ELDER_DO:
            if self.elder is None or self.device is not None:
                raise ValueError(f"'do: {self.do}' happens to an elder: give 'elder', not 'device'")
        elif self.do in DEVICE_DO:
            if self.device is None or self.elder is not None:
                raise ValueError(f"'do: {self.do}' happens on a device: give 'device', not 'elder'")
        else:
            known = ", ".join(sorted(ELDER_DO | DEVICE_DO))
            raise ValueError(f"do has value {self.do!r}: expected one of {known}")
        if self.do == "change" and (self.vital is None or self.to is None):
            raise ValueError(
                "'do: change' needs 'vital' (heart_rate, resp_rate, spo2, temperature) and 'to'"
            )
        if self.do == "malformed" and self.variant not in VARIANTS:
            raise ValueError(
                f"variant has value {self.variant!r}: expected one of {', '.join(VARIANTS)}"
            )
        if self.do == "publish_for" and not self.for_device:
            raise ValueError("'do: publish_for' needs 'for': the device id the hub publishes for")
        return self


RecipientKind = Literal[
    "dispatch120", "child", "relative", "work_unit", "neighbour", "community_worker", "doctor",
    "hospital", "operator",
]  # fmt: skip
StoredWhat = Literal["vitals", "accel", "bed", "battery", "positions", "events", "statuses"]


class AlertExpect(_Model):
    kind: AlertKind
    elder: str | None = None
    device: str | None = None
    state: AlertState | None = None
    told: list[RecipientKind] | None = Field(None, description="tier-0 recipients, exactly")
    delivered: list[RecipientKind] | None = Field(None, description="delivered to at least these")
    channels: dict[RecipientKind, str] | None = Field(
        None, description="recipient -> channel (the scheme of its address: json, mailto, ...)"
    )


class NeverExpect(_Model):
    kind: AlertKind
    elder: str | None = None


class DeadLetterExpect(_Model):
    device: str
    reason: Reason
    count: int | None = Field(None, ge=1)


class StoredExpect(_Model):
    device: str
    what: StoredWhat
    count: int | None = Field(None, ge=0)
    at_least: int | None = Field(None, ge=0)


class CommandExpect(_Model):
    device: str
    type: CommandKind


class Expect(_Model):
    within: Duration = 60.0
    settle: Duration = 3.0
    others: Literal["forbid", "allow"] = "forbid"
    alerts: list[AlertExpect] = Field(default_factory=list)
    never: list[NeverExpect] = Field(default_factory=list)
    dead_letters: list[DeadLetterExpect] = Field(default_factory=list)
    stored: list[StoredExpect] = Field(default_factory=list)
    commands: list[CommandExpect] = Field(default_factory=list)


class Scenario(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    speed: Annotated[float | Literal["max"], BeforeValidator(_speed)] = 1.0
    start: Annotated[str | None, BeforeValidator(lambda v: None if v is None else _clock(v))] = None
    timezone: str = "Asia/Shanghai"
    duration: Duration
    elders: dict[str, ElderSpec] = Field(default_factory=dict)
    devices: dict[str, DeviceYaml]
    timeline: list[TimelineStep] = Field(default_factory=list)
    expect: Expect = Field(default_factory=Expect)

    def at_seconds(self, step: TimelineStep) -> float:
        """A step's time in seconds from the start (a time of day counts from ``start``)."""
        if isinstance(step.at, float):
            return step.at
        assert self.start is not None  # noqa: S101 - checked by the validator
        return (_minutes(step.at) - _minutes(self.start)) % 1440 * 60.0

    def start_hour(self) -> float:
        return 9.0 if self.start is None else _minutes(self.start) / 60.0


def _minutes(clock: str) -> int:
    h, m = clock.split(":")
    return int(h) * 60 + int(m)


def _cross_check(s: Scenario) -> list[str]:
    """What a single field cannot say: references, the hub rules, times, real-time steps."""
    problems: list[str] = []
    for dev_id, d in s.devices.items():
        where = f"devices.{dev_id}"
        if not _DEVICE_ID.match(dev_id):
            problems.append(
                f"{where} is not a valid device id: expected 3 to 56 of A-Z a-z 0-9 - _"
            )
        if d.elder is not None and d.elder not in s.elders:
            problems.append(
                f"{where}.elder has value {d.elder!r}: expected one of the elders ({', '.join(s.elders) or 'none'})"
            )
        if d.hub is not None:
            hub = s.devices.get(d.hub)
            if hub is None or hub.kind is not DeviceKind.HUB:
                hubs = [k for k, v in s.devices.items() if v.kind is DeviceKind.HUB]
                problems.append(
                    f"{where}.hub has value {d.hub!r}: expected a device of kind hub ({', '.join(hubs) or 'none'})"
                )
            elif d.kind is DeviceKind.HUB:
                problems.append(f"{where}.hub: a hub has no hub of its own")
            elif hub.elder != d.elder:
                problems.append(
                    f"{where}.elder has value {d.elder!r}: expected the hub's elder {hub.elder!r}"
                )
    for i, step in enumerate(s.timeline):
        where = f"timeline[{i}]"
        if isinstance(step.at, str) and s.start is None:
            problems.append(
                f"{where}.at has value {step.at!r}: a time of day needs 'start' (HH:MM) at the top"
            )
        elif s.at_seconds(step) > s.duration:
            problems.append(
                f"{where}.at has value {step.at!r}: expected at most the duration ({s.duration:g} s)"
            )
        if step.elder is not None and step.elder not in s.elders:
            problems.append(
                f"{where}.elder has value {step.elder!r}: expected one of {', '.join(s.elders) or 'none'}"
            )
        if step.device is not None and step.device not in s.devices:
            problems.append(
                f"{where}.device has value {step.device!r}: expected one of {', '.join(s.devices)}"
            )
        if step.do in REAL_TIME_ONLY and s.speed != 1.0:
            problems.append(
                f"{where}.do has value {step.do!r} with speed {s.speed!r}: expected speed 1 (the fall "
                "detector's confirmation and the cancel window run on the server's clock)"
            )
        dev = s.devices.get(step.device or "")
        if step.do == "publish_for" and dev is not None and dev.kind is not DeviceKind.HUB:
            problems.append(
                f"{where}.device has value {step.device!r}: expected a hub for 'publish_for'"
            )
        if step.do == "publish_for" and step.for_device not in s.devices:
            problems.append(
                f"{where}.for has value {step.for_device!r}: expected one of the devices ({', '.join(s.devices)})"
            )
        if step.do in CONNECTION_DO and dev is not None and dev.hub is not None:
            problems.append(
                f"{where}.device has value {step.device!r}: it sits behind hub {dev.hub!r} and has no connection of its own; expected a device with its own connection"
            )
    rates: dict[str, set[int]] = {}
    for d in s.devices.values():
        if d.elder is not None and d.accel_every > 0 and d.kind in ACCEL_KINDS:
            rates.setdefault(d.elder, set()).add(d.rate_hz)
    for elder, r in rates.items():
        if len(r) > 1:
            problems.append(
                f"devices of elder {elder!r} have rate_hz {sorted(r)}: expected one rate for all the devices an elder wears"
            )
    exp = s.expect
    named = [("alerts", i, a.elder) for i, a in enumerate(exp.alerts)]
    named += [("never", i, n.elder) for i, n in enumerate(exp.never)]
    for group, i, who in named:
        if who is not None and who not in s.elders:
            problems.append(
                f"expect.{group}[{i}].elder has value {who!r}: expected one of {', '.join(s.elders) or 'none'}"
            )
    for i, a in enumerate(exp.alerts):
        if a.device is not None and a.device not in s.devices:
            problems.append(
                f"expect.alerts[{i}].device has value {a.device!r}: expected one of {', '.join(s.devices)}"
            )
        if a.elder is None and a.device is None:
            problems.append(f"expect.alerts[{i}]: expected 'elder' or 'device'")
    refs = [("dead_letters", i, d.device) for i, d in enumerate(exp.dead_letters)]
    refs += [("stored", i, st.device) for i, st in enumerate(exp.stored)]
    refs += [("commands", i, c.device) for i, c in enumerate(exp.commands)]
    for group, i, device in refs:
        if device not in s.devices:
            problems.append(
                f"expect.{group}[{i}].device has value {device!r}: expected one of {', '.join(s.devices)}"
            )
    return problems  # fmt: skip


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "literal[", "str", "float", "int")) or "[" in part:
            continue  # pydantic's name of a union member, not a key of the file
        else:
            out += f".{part}" if out else part
    return out or "(top)"


def parse_scenario(data: object, source: str = "<scenario>") -> Scenario:
    """Check a scenario given as a mapping (what YAML gives).

    Raises:
        ScenarioError: every problem, each naming the key, the value and what was expected.
    """
    if not isinstance(data, dict):
        raise ScenarioError(
            source,
            [
                f"the file holds {type(data).__name__}: expected a mapping of keys (name, duration, devices, ...)"
            ],
        )
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        seen: set[str] = set()
        for err in exc.errors():
            key = _loc(err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "missing":
                line = f"{key} is missing"
            elif err["type"] == "extra_forbidden":
                line = f"{key} is not a known key"
            else:
                line = f"{key} has value {err.get('input')!r}: {msg}"
            if line not in seen:
                seen.add(line)
                problems.append(line)
        raise ScenarioError(source, problems) from None
    problems = _cross_check(scenario)
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def load_scenario(path: Path | str) -> Scenario:
    """Read and check a scenario file; a bare name is looked up in the shipped library.

    Raises:
        ScenarioError: unreadable, not YAML, or not a valid scenario.
    """
    p = Path(path)
    if not p.exists() and (LIBRARY / f"{p.name.removesuffix('.yaml')}.yaml").exists():
        p = LIBRARY / f"{p.name.removesuffix('.yaml')}.yaml"
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(str(path), [f"not valid YAML: {exc}"]) from None
    return parse_scenario(data, str(path))


def library() -> list[Path]:
    """The shipped scenarios, by name."""
    return sorted(LIBRARY.glob("*.yaml"))
