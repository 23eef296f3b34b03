"""Device bindings: the binding rows of ``device_bindings`` and their history.

:func:`_rebind` is the one writer, used by :mod:`devices.repository.devices` (binding) and
:mod:`devices.repository.residents` (retiring a resident unbinds their devices).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

from devices.repository._sql import Conn, _all


def _rebind(
    conn: Conn, device_id: str, resident_id: UUID | None, gateway_id: str | None, by: str
) -> None:
    conn.execute(
        "UPDATE device_bindings SET unbound_at = now() WHERE device_id = %s AND unbound_at IS NULL",
        (device_id,),
    )
    conn.execute(
        "UPDATE devices SET resident_id = %s, gateway_id = %s, updated_at = now() WHERE device_id = %s",
        (resident_id, gateway_id, device_id),
    )
    if resident_id is not None or gateway_id is not None:
        conn.execute(
            "INSERT INTO device_bindings (device_id, resident_id, gateway_id, bound_by) VALUES (%s, %s, %s, %s)",
            (device_id, resident_id, gateway_id, by),
        )


@dataclass(frozen=True, slots=True)
class Binding:
    device_id: str
    resident_id: UUID | None
    gateway_id: str | None
    bound_by: str
    bound_at: dt.datetime
    unbound_at: dt.datetime | None


def binding_history(conn: Conn, device_id: str) -> list[Binding]:
    rows = _all(
        conn,
        "SELECT device_id, resident_id, gateway_id, bound_by, bound_at, unbound_at "
        "FROM device_bindings WHERE device_id = %s ORDER BY bound_at, id",
        (device_id,),
    )
    return [Binding(**r) for r in rows]
