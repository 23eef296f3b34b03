"""FHIR R4 over HTTP (api/fhir.py): an elder's Bundle, and NDJSON of a community.

The export holds health data (vital signs, NEWS2, alerts): it is read under the rules of the
emergency profile (``profile.read``: admin all, a doctor the signed, the family their own, a
dispatcher during an emergency; operators not) and every read is audited, like a profile
read. The community export is the admin's alone (every elder of the community) and audited
once per elder exported.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from api import fhir_export
from api.auth import CurrentPrincipal, DbConn, authorize_resident, require
from api.routes.registry import Keys
from devices import access
from devices.access import Action, Decision, Principal, Scope

router = APIRouter(prefix="/api/v1", tags=["fhir"])

FHIR_JSON = "application/fhir+json"
Days = Annotated[int, Query(ge=1, le=fhir_export.MAX_DAYS, description="days of vital signs")]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/api/v1/fhir"


@router.get("/residents/{resident_id}/fhir", response_class=JSONResponse)
def get_elder_bundle(  # noqa: PLR0917 - FastAPI passes each parameter as an argument
    resident_id: uuid.UUID,
    request: Request,
    conn: DbConn,
    keys: Keys,
    principal: CurrentPrincipal,
    days: Days = fhir_export.DEFAULT_DAYS,
) -> JSONResponse:
    """The elder's record as a FHIR R4 Bundle (collection); audited."""
    authorize_resident(
        conn, principal, Action.PROFILE_READ, resident_id, purpose="GET FHIR bundle",
        audit_granted=True,
    )  # fmt: skip
    data: dict[str, Any] = fhir_export.elder_bundle(
        conn, resident_id, keyring=keys, now=dt.datetime.now(dt.UTC), base=_base(request), days=days
    )
    return JSONResponse(data, media_type=FHIR_JSON)


@router.get("/communities/{community_id}/fhir", response_class=StreamingResponse)
def get_community_ndjson(
    community_id: uuid.UUID,
    conn: DbConn,
    keys: Keys,
    principal: Annotated[Principal, Depends(require(Action.PROFILE_READ))],
    days: Days = fhir_export.DEFAULT_DAYS,
) -> StreamingResponse:
    """Every resource of every active elder of the community, one a line (NDJSON); admin."""
    if access.scope_of(principal.role, Action.PROFILE_READ) is not Scope.ALL:
        access.audit(
            conn, principal, Action.PROFILE_READ, Decision(False, "bulk export is the admin's"),
            purpose=f"FHIR bulk export of community {community_id}",
        )  # fmt: skip
        raise HTTPException(status_code=403, detail="Forbidden: bulk export is the admin's.")
    residents = fhir_export.community_residents(conn, community_id)
    for rid in residents:
        access.audit(
            conn, principal, Action.PROFILE_READ, Decision(True, "admin"),
            purpose=f"FHIR bulk export of community {community_id}", resident_id=rid,
        )  # fmt: skip
    lines = list(
        fhir_export.community_ndjson(
            conn, residents, keyring=keys, now=dt.datetime.now(dt.UTC), days=days
        )
    )
    return StreamingResponse(iter(lines), media_type="application/fhir+ndjson")
