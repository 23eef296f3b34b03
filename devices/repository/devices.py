"""Devices: registration, binding to a resident and gateway hub, lifecycle."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from core.placement import Placement
from devices.model import (
    ConflictError,
    Device,
    DeviceIn,
    DeviceKind,
    DeviceState,
    Page,
    ResidentStatus,
    check_device_transition,
    placement_of,
)
from devices.repository._sql import Conn, Row, _all, _one, _page_args
from devices.repository.bindings import _rebind
from devices.repository.residents import _lock_resident

_DEVICE_COLS = """device_id, kind, placement, status, resident_id, gateway_id, label, expected_interval_s, registered_at,
    activated_at, retired_at, secret_hash IS NOT NULL AS has_secret, revoked_at IS NOT NULL AS revoked"""


def _device(row: Row) -> Device:
    return Device(
        device_id=row["device_id"],
        kind=DeviceKind(row["kind"]),
        placement=placement_of(
            DeviceKind(row["kind"]),
            Placement(row["placement"]) if row["placement"] is not None else None,
        ),
        placement_explicit=row["placement"] is not None,
        status=DeviceState(row["status"]),
        resident_id=row["resident_id"],
        gateway_id=row["gateway_id"],
        label=row["label"],
        expected_interval_s=row["expected_interval_s"],
        registered_at=row["registered_at"],
        activated_at=row["activated_at"],
        retired_at=row["retired_at"],
        has_secret=row["has_secret"],
        revoked=row["revoked"],
    )


def create_device(conn: Conn, data: DeviceIn, *, by: str) -> Device:
    """Register a device in state provisioned, bound as ``data`` says. No secret: credentials
    are made by devices.credentials. Ingest refuses a provisioned device's data until it is
    activated (:func:`set_device_state`)."""
    with conn.transaction():
        try:
            with conn.transaction():
                conn.execute(
                    """INSERT INTO devices (device_id, kind, placement, status, label,
                                            expected_interval_s)
                       VALUES (%s, %s, %s, 'provisioned', %s, %s)""",
                    (
                        data.device_id,
                        data.kind,
                        data.placement,
                        data.label,
                        data.expected_interval_s,
                    ),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(f"Device {data.device_id!r} is already registered.") from exc
        if data.resident_id is not None or data.gateway_id is not None:
            return bind_device(
                conn,
                data.device_id,
                resident_id=data.resident_id,
                gateway_id=data.gateway_id,
                by=by,
            )
        return get_device(conn, data.device_id)


def get_device(conn: Conn, device_id: str) -> Device:
    return _device(
        _one(
            conn,
            f"SELECT {_DEVICE_COLS} FROM devices WHERE device_id = %s",
            (device_id,),
            f"Device {device_id!r}",
        )
    )


def list_devices(
    conn: Conn,
    *,
    resident_id: UUID | None = None,
    gateway_id: str | None = None,
    kind: DeviceKind | None = None,
    status: DeviceState | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[Device]:
    _page_args(limit, offset)
    where: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (
        ("resident_id", resident_id),
        ("gateway_id", gateway_id),
        ("kind", kind),
        ("status", status),
    ):
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    cond = sql.SQL(" AND ").join(where) if where else sql.SQL("true")
    total = conn.execute(
        sql.SQL("SELECT count(*) FROM devices WHERE {}").format(cond), params
    ).fetchone()
    rows = _all(
        conn,
        sql.SQL(
            "SELECT "
            + _DEVICE_COLS
            + " FROM devices WHERE {} ORDER BY device_id LIMIT %s OFFSET %s"
        ).format(cond),
        [*params, limit, offset],
    )
    return Page[Device](
        items=tuple(_device(r) for r in rows),
        total=int(total[0]) if total else 0,
        limit=limit,
        offset=offset,
    )


def bind_device(
    conn: Conn, device_id: str, *, resident_id: UUID | None, gateway_id: str | None, by: str
) -> Device:
    """Bind a device to a resident and (for a child device) to its gateway hub; ``None`` unbinds.

    Raises:
        NotFoundError: the device, resident or gateway does not exist.
        ConflictError: the device or gateway is retired, the resident is not active, the
            gateway is not a hub, a hub is given a gateway, or the gateway serves another resident.
    """
    with conn.transaction():
        device = _lock_device(conn, device_id)
        if device.status is DeviceState.RETIRED:
            raise ConflictError(f"Device {device_id!r} is retired and cannot be bound.")
        if (
            resident_id is not None
            and _lock_resident(conn, resident_id) is not ResidentStatus.ACTIVE
        ):
            raise ConflictError(
                f"Resident {resident_id} is not active; devices bind to active residents only."
            )
        if gateway_id is not None:
            if device.kind is DeviceKind.HUB:
                raise ConflictError(f"Device {device_id!r} is a hub; a hub has no gateway.")
            if gateway_id == device_id:
                raise ConflictError(f"Device {device_id!r} cannot be its own gateway.")
            gateway = _lock_device(conn, gateway_id)
            if gateway.kind is not DeviceKind.HUB:
                raise ConflictError(f"Gateway {gateway_id!r} is a {gateway.kind.value}, not a hub.")
            if gateway.status is DeviceState.RETIRED:
                raise ConflictError(f"Gateway {gateway_id!r} is retired.")
            if gateway.resident_id is not None and gateway.resident_id != resident_id:
                raise ConflictError(
                    f"Gateway {gateway_id!r} serves resident {gateway.resident_id}, not {resident_id}."
                )
        if device.kind is DeviceKind.HUB and device.resident_id != resident_id:
            children = conn.execute(
                "SELECT device_id FROM devices WHERE gateway_id = %s AND status <> 'retired' ORDER BY 1",
                (device_id,),
            ).fetchall()
            if children:
                raise ConflictError(
                    f"Hub {device_id!r} still serves {', '.join(c[0] for c in children)}; rebind them first."
                )
        _rebind(conn, device_id, resident_id, gateway_id, by)
        return get_device(conn, device_id)


def _lock_device(conn: Conn, device_id: str) -> Device:
    return _device(
        _one(
            conn,
            f"SELECT {_DEVICE_COLS} FROM devices WHERE device_id = %s FOR UPDATE",
            (device_id,),
            f"Device {device_id!r}",
        )
    )


def set_device_state(conn: Conn, device_id: str, new: DeviceState) -> Device:
    """Move a device along its lifecycle: provisioned -> active -> retired (retired is final).

    Retiring a hub is refused while devices still use it as their gateway.

    Raises:
        NotFoundError: no such device.
        ConflictError: the move is not allowed.
    """
    with conn.transaction():
        device = _lock_device(conn, device_id)
        check_device_transition(device_id, device.status, new)
        if new is DeviceState.RETIRED and device.kind is DeviceKind.HUB:
            children = conn.execute(
                "SELECT device_id FROM devices WHERE gateway_id = %s AND status <> 'retired' ORDER BY 1",
                (device_id,),
            ).fetchall()
            if children:
                raise ConflictError(
                    f"Hub {device_id!r} still serves {', '.join(c[0] for c in children)}; rebind them first."
                )
        stamp = {DeviceState.ACTIVE: "activated_at", DeviceState.RETIRED: "retired_at"}[new]
        conn.execute(
            sql.SQL(
                "UPDATE devices SET status = %s, {} = now(), updated_at = now() WHERE device_id = %s"
            ).format(sql.Identifier(stamp)),
            (new, device_id),
        )
        return get_device(conn, device_id)


def activate_device(conn: Conn, device_id: str) -> Device:
    return set_device_state(conn, device_id, DeviceState.ACTIVE)


def retire_device(conn: Conn, device_id: str) -> Device:
    return set_device_state(conn, device_id, DeviceState.RETIRED)
