"""Devices over HTTP: register, list, bind to a resident and a gateway, lifecycle."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import CurrentPrincipal, DbConn, authorize_resident
from api.routes.registry import Limit, Offset, Writer, by_name
from devices import repository as repo
from devices.access import Action
from devices.model import Device, DeviceIn, DeviceKind, DeviceState, Page

router = APIRouter(prefix="/api/v1", tags=["registry"])


# --- devices --------------------------------------------------------------------------------


class BindingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    resident_id: uuid.UUID | None = Field(None, description="None unbinds from the resident.")
    gateway_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{3,64}$")] | None = None


class StateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    status: DeviceState


@router.post("/devices", status_code=201)
def create_device(body: DeviceIn, conn: DbConn, principal: Writer) -> Device:
    """Register a device (provisioned); credentials come from `anxin devices`."""
    return repo.create_device(conn, body, by=by_name(principal))


@router.get("/devices")
def list_devices(  # noqa: PLR0917 - FastAPI passes each query parameter as an argument
    conn: DbConn,
    _p: Writer,
    resident_id: uuid.UUID | None = None,
    gateway_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: DeviceKind | None = None,
    status: DeviceState | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[Device]:
    return repo.list_devices(
        conn,
        resident_id=resident_id,
        gateway_id=gateway_id,
        kind=kind,
        status=status,
        limit=limit,
        offset=offset,
    )


@router.get("/residents/{resident_id}/devices")
def resident_devices(
    resident_id: uuid.UUID, conn: DbConn, principal: CurrentPrincipal
) -> Page[Device]:
    authorize_resident(conn, principal, Action.RESIDENT_READ, resident_id, purpose="GET devices")
    return repo.list_devices(conn, resident_id=resident_id, limit=repo.MAX_PAGE)


@router.get("/devices/{device_id}")
def get_device(device_id: Annotated[str, Path(max_length=64)], conn: DbConn, _p: Writer) -> Device:
    return repo.get_device(conn, device_id)


@router.put("/devices/{device_id}/binding")
def bind_device(
    device_id: Annotated[str, Path(max_length=64)], body: BindingIn, conn: DbConn, principal: Writer
) -> Device:
    return repo.bind_device(
        conn,
        device_id,
        resident_id=body.resident_id,
        gateway_id=body.gateway_id,
        by=by_name(principal),
    )


@router.put("/devices/{device_id}/status")
def set_device_status(
    device_id: Annotated[str, Path(max_length=64)], body: StateIn, conn: DbConn, _p: Writer
) -> Device:
    """Lifecycle: provisioned -> active -> retired (409 for any other move)."""
    return repo.set_device_state(conn, device_id, body.status)
