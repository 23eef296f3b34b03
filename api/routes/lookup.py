"""The caller-number lookup of the 120 dispatcher: who is calling, with the emergency profile."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import DbConn, require
from api.routes.registry import Keys
from devices import access
from devices import repository as repo
from devices.access import Action, Decision, Principal, Role
from devices.model import CallerLookup, CallerMatch, EmergencyProfile, NotFoundError

router = APIRouter(prefix="/api/v1", tags=["registry"])


# --- caller-number lookup -------------------------------------------------------------------


class LookupMatch(BaseModel):
    model_config = ConfigDict(frozen=True)
    match: CallerMatch
    profile: EmergencyProfile | None = Field(description="Null when the resident has no profile.")


class LookupOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    raw: str
    national: str
    matches: list[LookupMatch]


@router.get("/lookup/caller")
def lookup_caller(
    conn: DbConn,
    keys: Keys,
    principal: Annotated[Principal, Depends(require(Action.CALLER_LOOKUP))],
    number: Annotated[str, Query(min_length=1, max_length=40)],
) -> LookupOut:
    """The residents (and their profiles) whose or whose contact's number this is.

    For a dispatcher each match opens a lookup grant (15 minutes) to that resident's profile;
    every profile returned is audited with the number, masked.
    """
    found: CallerLookup = repo.lookup_caller(conn, number, keyring=keys)
    purpose = f"caller lookup {access.mask_number(found.national)}"
    out: list[LookupMatch] = []
    for m in found.matches:
        rid = m.resident.id
        if principal.role is Role.DISPATCHER:
            access.grant_lookup(conn, principal, rid, found.national)
        try:
            profile: EmergencyProfile | None = repo.get_profile(conn, rid, keyring=keys)
        except NotFoundError:
            profile = None
        access.audit(
            conn,
            principal,
            Action.PROFILE_READ,
            Decision(True, purpose),
            purpose=purpose,
            resident_id=rid,
            profile_version=profile.version if profile else None,
        )
        # Contacts' channels hold tokens: masked for all but admins.
        shown = m if principal.role is Role.ADMIN else m.masked()
        out.append(LookupMatch(match=shown, profile=profile))
    return LookupOut(raw=found.raw, national=found.national, matches=out)
