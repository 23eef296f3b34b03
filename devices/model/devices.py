"""Devices as the registry keeps them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from uuid import UUID

from pydantic import Field

from core.placement import Placement
from devices.model._base import (
    ShortText,
    _In,
    _Out,
)
from devices.model.kinds import (
    DeviceKind,
    DeviceState,
)


class DeviceIn(_In):
    device_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{3,64}$")]
    kind: DeviceKind
    resident_id: UUID | None = None
    gateway_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{3,64}$")] | None = None
    label: ShortText | None = None
    expected_interval_s: int = Field(60, gt=0, le=86400)
    placement: Placement | None = Field(
        None, description="where it is worn, when not what its kind says (a wristband on the ankle)"
    )


class Device(_Out):
    device_id: str
    kind: DeviceKind
    placement: Placement = Field(
        description="where it is worn: the explicit one, else from its kind"
    )
    placement_explicit: bool = False
    status: DeviceState
    resident_id: UUID | None
    gateway_id: str | None
    label: str | None
    expected_interval_s: int
    registered_at: dt.datetime
    activated_at: dt.datetime | None
    retired_at: dt.datetime | None
    has_secret: bool
    revoked: bool
