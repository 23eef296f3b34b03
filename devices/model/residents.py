"""Residents and their consents."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from uuid import UUID

from pydantic import Field, field_validator, model_validator

from devices.model._base import (
    LongText,
    Name,
    PhoneStr,
    ShortText,
    _In,
    _Out,
)
from devices.model.kinds import (
    ConsentRelation,
    ConsentScope,
    ResidentStatus,
    Sex,
    SpecialFlag,
)


class Address(_In):
    province: ShortText | None = None
    city: ShortText | None = None
    district: ShortText | None = None
    street: ShortText | None = None
    community: ShortText | None = Field(
        None, description="Residential community (小区/社区) as written."
    )
    text: LongText | None = Field(None, description="Free text: building, unit, room, directions.")
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)

    @model_validator(mode="after")
    def _both_coordinates(self) -> Address:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon go together: give both or neither")
        return self


class ResidentIn(_In):
    name: Name
    sex: Sex
    birth_date: dt.date
    id_number: Annotated[str, Field(pattern=r"^[0-9]{17}[0-9Xx]$")] | None = Field(
        None, description="Resident identity card number (18 characters); encrypted at rest."
    )
    health_card: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="Health card or medical insurance number; encrypted at rest."
    )
    landline: PhoneStr | None = None
    mobile: PhoneStr | None = None
    address: Address = Field(default_factory=Address)
    flags: frozenset[SpecialFlag] = frozenset()
    community_id: UUID | None = Field(
        None, description="Responsible community or care institution."
    )
    hospital_id: UUID | None = Field(None, description="Partner hospital of the green channel.")

    @model_validator(mode="after")
    def _plausible_birth(self) -> ResidentIn:
        if not dt.date(1880, 1, 1) <= self.birth_date <= dt.date(2100, 1, 1):
            raise ValueError(f"birth_date {self.birth_date} is not plausible")
        return self


def _not_null(value: object) -> object:
    """A patch may leave a required field out (it stays), never set it to null."""
    if value is None:
        raise ValueError("this field is required: leave it out to keep it, null is not allowed")
    return value


class ResidentPatch(_In):
    """Fields to change; absent fields stay. ``None`` clears an optional field."""

    name: Name | None = None
    sex: Sex | None = None
    birth_date: dt.date | None = None
    id_number: Annotated[str, Field(pattern=r"^[0-9]{17}[0-9Xx]$")] | None = None
    health_card: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    landline: PhoneStr | None = None
    mobile: PhoneStr | None = None
    address: Address | None = None
    flags: frozenset[SpecialFlag] | None = None
    status: ResidentStatus | None = None
    community_id: UUID | None = None
    hospital_id: UUID | None = None

    @field_validator("name", "sex", "birth_date", "address", "flags", "status", mode="before")
    @classmethod
    def _required_not_null(cls, value: object) -> object:
        return _not_null(value)


class Resident(_Out):
    id: UUID
    name: str
    sex: Sex
    birth_date: dt.date
    id_number: str | None
    health_card: str | None
    landline: str | None
    mobile: str | None
    address: Address
    flags: frozenset[SpecialFlag]
    status: ResidentStatus
    community_id: UUID | None
    hospital_id: UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class ConsentIn(_In):
    given_by: Name
    relation: ConsentRelation
    given_at: dt.datetime
    scopes: frozenset[ConsentScope] = Field(min_length=1)


class Consent(_Out):
    id: int
    resident_id: UUID
    given_by: str
    relation: ConsentRelation
    given_at: dt.datetime
    scopes: frozenset[ConsentScope]
    withdrawn_at: dt.datetime | None
    recorded_at: dt.datetime
