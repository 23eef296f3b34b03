"""The emergency profile, its extension fields and their validation."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Annotated
from uuid import UUID

from pydantic import Field

from devices.model._base import (
    ExtensionValue,
    Item,
    LongText,
    _In,
    _Out,
)
from devices.model.kinds import (
    BloodType,
    ExtensionError,
    ExtensionType,
    ProfileChange,
)


class ResponderNotes(_In):
    """What the ambulance crew needs at the door."""

    door_code: Annotated[str, Field(max_length=200)] | None = None
    mobility: Annotated[str, Field(max_length=500)] | None = None
    language: Annotated[str, Field(max_length=200)] | None = None
    hearing: Annotated[str, Field(max_length=500)] | None = None
    other: Annotated[str, Field(max_length=2000)] | None = None


class ProfileIn(_In):
    """The whole profile: every write stores a new version with all of it."""

    conditions: list[Item] = Field(default_factory=list, max_length=100)
    medications: list[Item] = Field(default_factory=list, max_length=100)
    allergies: list[Item] = Field(default_factory=list, max_length=100)
    blood_type: BloodType = BloodType.UNKNOWN
    past_treatments: list[Item] = Field(
        default_factory=list, max_length=100, description="Past treatment measures (历史救治措施)."
    )
    responder_notes: ResponderNotes = Field(default_factory=ResponderNotes)
    extension: dict[str, ExtensionValue] = Field(
        default_factory=dict,
        description="Region-added fields, checked against profile_extension_fields.",
    )


class EmergencyProfile(_Out):
    resident_id: UUID
    version: int
    conditions: tuple[str, ...]
    medications: tuple[str, ...]
    allergies: tuple[str, ...]
    blood_type: BloodType
    past_treatments: tuple[str, ...]
    responder_notes: ResponderNotes
    extension: Mapping[str, ExtensionValue]
    last_verified_at: dt.datetime | None
    last_verified_by: str | None
    changed_by: str
    change_kind: ProfileChange
    changed_at: dt.datetime


class ExtensionFieldIn(_In):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    type: ExtensionType
    description: LongText
    required: bool = False


class ExtensionField(_Out):
    name: str
    type: ExtensionType
    description: str
    required: bool


class UnverifiedProfile(_Out):
    resident_id: UUID
    name: str
    version: int | None  # None: the resident has no profile at all
    last_verified_at: dt.datetime | None
    last_verified_by: str | None


def validate_extension(
    fields: Sequence[ExtensionField], values: Mapping[str, ExtensionValue]
) -> dict[str, ExtensionValue]:
    """The extension object checked and coerced against the registered fields.

    Dates are stored as ISO strings (``YYYY-MM-DD``); integers are accepted for numbers.

    Raises:
        ExtensionError: with every problem (unknown field, wrong type, required field missing).
    """
    by_name = {f.name: f for f in fields}
    problems: list[tuple[str, str]] = []
    out: dict[str, ExtensionValue] = {}
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            problems.append(
                (name, f"is not a registered extension field (known: {sorted(by_name) or 'none'})")
            )
            continue
        if value is None:
            if spec.required:
                problems.append((name, "is required"))
            continue
        ok, coerced = _coerce(spec.type, value)
        if not ok:
            problems.append((name, f"has value {value!r}. Expected {spec.type.value}."))
        else:
            out[name] = coerced
    for spec in fields:
        if spec.required and spec.name not in values:
            problems.append((spec.name, "is required"))
    if problems:
        raise ExtensionError(problems)
    return out


def _coerce(kind: ExtensionType, value: ExtensionValue) -> tuple[bool, ExtensionValue]:
    if kind is ExtensionType.TEXT:
        return isinstance(value, str) and len(value) <= 2000, value
    if kind is ExtensionType.BOOLEAN:
        return isinstance(value, bool), value
    if kind is ExtensionType.INTEGER:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is ExtensionType.NUMBER:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok and isinstance(value, int | float) else value
    if kind is ExtensionType.DATE:
        if not isinstance(value, str):
            return False, value
        try:
            return True, dt.date.fromisoformat(value).isoformat()
        except ValueError:
            return False, value
    # TEXT_LIST
    ok = isinstance(value, list) and all(isinstance(v, str) and len(v) <= 500 for v in value)
    return ok, value
