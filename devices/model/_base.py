"""Small validated types and the bases of inputs (``extra="forbid"``) and outputs (frozen)."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from devices.phones import PhoneError, normalise_phone


def _phone(value: str) -> str:
    try:
        normalise_phone(value)
    except PhoneError as exc:
        raise ValueError(str(exc)) from exc
    return value.strip()


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"Time zone {value!r} is not known. Expected an IANA name such as 'Asia/Shanghai'."
        ) from exc
    return value


PhoneStr = Annotated[str, Field(min_length=3, max_length=40), AfterValidator(_phone)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(min_length=1, max_length=2000)]
Item = Annotated[str, Field(min_length=1, max_length=500)]
ExtensionValue = str | int | float | bool | list[str] | None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)
