"""Care settings over HTTP: an elder's behaviour watching (devices/behaviour_settings.py).

Reading follows the resident's scope (``resident.read``); changing is a registry write (admin,
operator), stored with who changed it and audited, granted or refused.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.auth import CurrentPrincipal, DbConn, authorize_resident
from api.routes.registry import by_name
from devices import behaviour_settings as behaviour
from devices.access import Action

router = APIRouter(prefix="/api/v1", tags=["care"])


@router.get("/residents/{resident_id}/behaviour")
def get_behaviour(
    resident_id: uuid.UUID, conn: DbConn, principal: CurrentPrincipal
) -> behaviour.BehaviourSettingsOut:
    """The behaviour settings in force (the defaults until some are stored)."""
    authorize_resident(
        conn, principal, Action.RESIDENT_READ, resident_id, purpose="GET behaviour settings"
    )
    return behaviour.get_settings(conn, resident_id)


@router.put("/residents/{resident_id}/behaviour")
def put_behaviour(
    resident_id: uuid.UUID,
    body: behaviour.BehaviourSettingsIn,
    conn: DbConn,
    principal: CurrentPrincipal,
) -> behaviour.BehaviourSettingsOut:
    """Replace the behaviour settings; the ingester takes them up within a minute."""
    authorize_resident(
        conn,
        principal,
        Action.REGISTRY_WRITE,
        resident_id,
        purpose="PUT behaviour settings",
        audit_granted=True,
    )
    return behaviour.put_settings(conn, resident_id, body, by=by_name(principal))
