"""Who is told about an alert: the routing policy (alerts/routing.yaml), per-elder overrides,
recipients and quiet hours. Pure: the policy is parsed from text, matching takes values.

A :class:`Policy` is an ordered list of :class:`Rule`; :func:`match` returns the first rule
whose kinds and severity fit. An alert rule carries tiers of recipient kinds (told in parallel
within a tier, a later tier when nobody acknowledged in time) and reminders. The rule chosen
when the alert opens is stored on the alert as its *plan*, so a later change of the policy
does not change an alert under way.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alerts.model import AlertError, AlertKind, DeliveryChannel, RecipientKind
from detectors.findings import Severity

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class RoutingError(AlertError):
    """A routing policy that cannot be read or does not validate."""


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"1.5h"``, ``"1d"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if m is None:
            raise ValueError(f"expected a duration like 30s, 5m or 1h, got {value!r}")
        seconds = float(m[1]) * _UNIT_S[m[2] or "s"]
    if seconds < 0:
        raise ValueError(f"expected a duration of 0 or more, got {value!r}")
    return seconds


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Spec):
    after_s: float = Field(0.0, alias="after", description="Seconds after opening, unacknowledged.")
    recipients: tuple[RecipientKind, ...] = Field(min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("after_s", mode="before")
    @classmethod
    def _after(cls, value: object) -> float:
        return parse_duration(value)


class Reminders(_Spec):
    every_s: float = Field(alias="every", gt=0)
    max: int = Field(ge=0, le=100)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("every_s", mode="before")
    @classmethod
    def _every(cls, value: object) -> float:
        return parse_duration(value)


class Rule(_Spec):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    kinds: tuple[AlertKind, ...] = ()
    min_severity: str | None = None
    action: Literal["alert", "digest", "ignore"] = "alert"
    template: str = "medium"
    templates: dict[RecipientKind, str] = Field(default_factory=dict)
    tiers: tuple[Tier, ...] = ()
    reminders: Reminders | None = None

    @field_validator("min_severity")
    @classmethod
    def _severity(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in Severity.__members__:
            raise ValueError(f"expected one of {[s.name.lower() for s in Severity]}, got {value!r}")
        return value

    @field_validator("tiers")
    @classmethod
    def _ordered(cls, value: tuple[Tier, ...]) -> tuple[Tier, ...]:
        if value and value[0].after_s != 0:
            raise ValueError("the first tier is told at once: leave out its 'after'")
        for a, b in itertools.pairwise(value):
            if b.after_s <= a.after_s:
                raise ValueError("each tier's 'after' must be later than the one before")
        return value

    def model_post_init(self, _context: Any) -> None:
        if self.action == "alert" and not self.tiers:
            raise ValueError(f"rule {self.name!r} raises alerts but has no tiers")

    def matches(self, kind: AlertKind, severity: Severity) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        return self.min_severity is None or severity >= Severity[self.min_severity.upper()]

    def template_for(self, recipient: RecipientKind) -> str:
        return self.templates.get(recipient, self.template)


class Policy(_Spec):
    version: Literal[1] = 1
    rules: tuple[Rule, ...] = Field(min_length=1)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """A policy from YAML text.

    Raises:
        RoutingError: not YAML, or a rule that does not validate (named with its place).
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RoutingError(f"Routing policy {source} is not valid YAML: {exc}") from exc
    return policy_from_data(data, source)


def policy_from_data(data: object, source: str = "<policy>") -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise RoutingError(f"Routing policy {source} is not valid: {problems}") from exc


def rules_from_data(data: object, source: str) -> tuple[Rule, ...]:
    """Override rules (a list in the shape of ``rules``) from JSON data."""
    return policy_from_data({"version": 1, "rules": data}, source).rules


def default_policy() -> Policy:
    """The policy shipped in alerts/routing.yaml."""
    text = resources.files("alerts").joinpath("routing.yaml").read_text(encoding="utf-8")
    return parse_policy(text, "alerts/routing.yaml")


def load_policy(path: Path | None) -> Policy:
    """The policy at ``path``, or the default one when ``path`` is None."""
    if path is None:
        return default_policy()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingError(f"Routing policy {path} cannot be read: {exc}") from exc
    return parse_policy(text, str(path))


def match(
    policy: Policy,
    kind: AlertKind,
    severity: Severity,
    overrides: Sequence[Rule] = (),
) -> Rule | None:
    """The first rule (an elder's overrides first) matching ``kind`` and ``severity``."""
    for rule in (*overrides, *policy.rules):
        if rule.matches(kind, severity):
            return rule
    return None


# --------------------------------------------------------------------------- recipients
@dataclass(frozen=True, slots=True)
class QuietHours:
    """A contact's quiet hours, local wall-clock time; ``start > end`` spans midnight."""

    start: time
    end: time
    tz: str

    def until(self, now: datetime) -> datetime | None:
        """When the quiet hours around ``now`` end, or None when ``now`` is not in them."""
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("Asia/Shanghai")
        local = now.astimezone(zone)
        t = local.time().replace(tzinfo=None)
        if self.start == self.end:
            return None
        if self.start < self.end:
            inside = self.start <= t < self.end
            end_day = local.date()
        else:  # e.g. 22:00-07:00
            inside = t >= self.start or t < self.end
            end_day = local.date() + timedelta(days=1) if t >= self.start else local.date()
        if not inside:
            return None
        return datetime.combine(end_day, self.end, zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Recipient:
    """Someone (or a system) a delivery can go to."""

    kind: RecipientKind
    address: str
    name: str | None = None
    ref: str | None = None
    channel: DeliveryChannel = DeliveryChannel.APPRISE
    language: str = "zh"
    quiet: QuietHours | None = None


def first_attempt_at(recipient: Recipient, severity: Severity, now: datetime) -> datetime:
    """``now``, or the end of the recipient's quiet hours for anything but an emergency."""
    if severity >= Severity.EMERGENCY or recipient.quiet is None:
        return now
    return recipient.quiet.until(now) or now


class RecipientDirectory(Protocol):
    """A resident's care circle, doctor team, hospital and community as recipients.

    The registry (devices/) holds them; :class:`alerts.service.PostgresDirectory` reads its
    tables. ``dispatch120`` and ``operator`` come from the settings, not from here.
    """

    def recipients(self, conn: Any, resident_id: uuid.UUID) -> list[Recipient]: ...


def select(recipients: Sequence[Recipient], kinds: Sequence[RecipientKind]) -> list[Recipient]:
    """The recipients of the given kinds, in the order of ``kinds``."""
    wanted = list(dict.fromkeys(kinds))
    return [r for k in wanted for r in recipients if r.kind is k]


def plan_json(rule: Rule) -> dict[str, Any]:
    """A rule as stored on the alert (``alerts.plan``)."""
    return rule.model_dump(mode="json", by_alias=True)


def plan_from_json(data: Mapping[str, Any]) -> Rule:
    return Rule.model_validate(dict(data))
