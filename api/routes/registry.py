"""The registry over HTTP: residents, consents and emergency profiles, each route behind the
rules of devices/access/rules.py; the shared dependencies of the registry routes. Storage is
devices/repository/; errors map to 404, 409 and 422 in :func:`install_error_handlers`. The
care circle is api/routes/circle.py, devices api/routes/devices.py, the caller lookup
api/routes/lookup.py, CSV api/routes/bulk.py.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from api.auth import CurrentPrincipal, DbConn, authorize_resident, require
from devices import access
from devices import repository as repo
from devices.access import Action, Principal, Role
from devices.crypto import Keyring
from devices.model import (
    ConflictError,
    Consent,
    ConsentIn,
    EmergencyProfile,
    ExtensionError,
    NotFoundError,
    Page,
    ProfileIn,
    Resident,
    ResidentIn,
    ResidentPatch,
    ResidentSearch,
    ResidentStatus,
    SpecialFlag,
    UnverifiedProfile,
)
from devices.phones import PhoneError
from devices.registry import RegistryError

router = APIRouter(prefix="/api/v1", tags=["registry"])

Writer = Annotated[Principal, Depends(require(Action.REGISTRY_WRITE))]
Lister = Annotated[Principal, Depends(require(Action.RESIDENT_LIST))]
Reference = Annotated[Principal, Depends(require(Action.REFERENCE_READ))]
Limit = Annotated[int, Query(ge=1, le=repo.MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def _keyring(request: Request) -> Keyring:
    keyring: Keyring = request.app.state.keyring
    return keyring


Keys = Annotated[Keyring, Depends(_keyring)]


def by_name(principal: Principal) -> str:
    return f"{principal.role}: {principal.name}"[:200]


def install_error_handlers(app: FastAPI) -> None:
    """Registry errors as 404 (not found), 409 (conflict) and 422 (bad input)."""

    async def not_found(_r: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def conflict(_r: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    async def bad_input(_r: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(ConflictError, conflict)
    app.add_exception_handler(ExtensionError, bad_input)
    app.add_exception_handler(PhoneError, bad_input)
    app.add_exception_handler(RegistryError, bad_input)


# --- residents ------------------------------------------------------------------------------


@router.post("/residents", status_code=201)
def create_resident(body: ResidentIn, conn: DbConn, keys: Keys, _p: Writer) -> Resident:
    return repo.create_resident(conn, body, keyring=keys)


@router.get("/residents")
def list_residents(  # noqa: PLR0917 - FastAPI passes each query parameter as an argument
    conn: DbConn,
    keys: Keys,
    principal: Lister,
    limit: Limit = 50,
    offset: Offset = 0,
    name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    phone: Annotated[str | None, Query(min_length=3, max_length=40)] = None,
    community_id: uuid.UUID | None = None,
    community: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    flag: Annotated[list[SpecialFlag] | None, Query()] = None,
    status: ResidentStatus | None = None,
    team_id: uuid.UUID | None = None,
) -> Page[Resident]:
    """Residents in the caller's scope matching every filter given, by name; with the total."""
    if principal.role is Role.DOCTOR:
        if team_id is None and len(principal.team_ids) == 1:
            team_id = next(iter(principal.team_ids))
        if team_id is None or team_id not in principal.team_ids:
            raise HTTPException(
                status_code=403 if team_id is not None else 422,
                detail="A doctor lists residents of one of their teams: give team_id"
                f" (yours: {', '.join(sorted(map(str, principal.team_ids))) or 'none'}).",
            )
    try:
        search = ResidentSearch.model_validate(
            {
                "name": name,
                "phone": phone,
                "community_id": community_id,
                "community_name": community,
                "flags": frozenset(flag or ()),
                "status": status,
                "team_id": team_id,
            }
        )
    except ValidationError as exc:
        # The same 422 as FastAPI's own, naming the query parameter.
        raise RequestValidationError(
            [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc
    if principal.role is Role.FAMILY:
        relatives = [repo.get_resident(conn, r, keyring=keys) for r in principal.resident_ids]
        mine = sorted(
            (r for r in relatives if name is None or name.lower() in r.name.lower()),
            key=lambda r: (r.name.lower(), r.id),
        )
        return Page[Resident](
            items=tuple(mine[offset : offset + limit]), total=len(mine), limit=limit, offset=offset
        )
    return repo.list_residents(conn, search, keyring=keys, limit=limit, offset=offset)


@router.get("/residents/{resident_id}")
def get_resident(
    resident_id: uuid.UUID, conn: DbConn, keys: Keys, principal: CurrentPrincipal
) -> Resident:
    authorize_resident(conn, principal, Action.RESIDENT_READ, resident_id, purpose="GET resident")
    return repo.get_resident(conn, resident_id, keyring=keys)


@router.patch("/residents/{resident_id}")
def update_resident(
    resident_id: uuid.UUID, body: ResidentPatch, conn: DbConn, keys: Keys, _p: Writer
) -> Resident:
    return repo.update_resident(conn, resident_id, body, keyring=keys)


@router.delete("/residents/{resident_id}")
def retire_resident(resident_id: uuid.UUID, conn: DbConn, keys: Keys, _p: Writer) -> Resident:
    """Retire (never delete): the resident stays for history and audit."""
    return repo.retire_resident(conn, resident_id, keyring=keys)


@router.get("/residents/{resident_id}/consents")
def list_consents(
    resident_id: uuid.UUID, conn: DbConn, principal: CurrentPrincipal
) -> list[Consent]:
    authorize_resident(conn, principal, Action.RESIDENT_READ, resident_id, purpose="GET consents")
    return repo.list_consents(conn, resident_id)


@router.post("/residents/{resident_id}/consents", status_code=201)
def record_consent(resident_id: uuid.UUID, body: ConsentIn, conn: DbConn, _p: Writer) -> Consent:
    return repo.record_consent(conn, resident_id, body)


# --- emergency profiles ---------------------------------------------------------------------


class ProfileMeta(BaseModel):
    """What operators see of a profile: no health fields."""

    model_config = ConfigDict(frozen=True)
    resident_id: uuid.UUID
    version: int
    last_verified_at: dt.datetime | None
    last_verified_by: str | None
    changed_by: str
    changed_at: dt.datetime

    @classmethod
    def of(cls, p: EmergencyProfile) -> ProfileMeta:
        return cls(
            resident_id=p.resident_id,
            version=p.version,
            last_verified_at=p.last_verified_at,
            last_verified_by=p.last_verified_by,
            changed_by=p.changed_by,
            changed_at=p.changed_at,
        )


def _read_profile_audited(
    conn: DbConn, principal: Principal, resident_id: uuid.UUID, keys: Keyring, purpose: str
) -> EmergencyProfile:
    decision = authorize_resident(
        conn, principal, Action.PROFILE_READ, resident_id, purpose=purpose
    )
    try:
        profile = repo.get_profile(conn, resident_id, keyring=keys)
    except NotFoundError:
        access.audit(
            conn,
            principal,
            Action.PROFILE_READ,
            decision,
            purpose=purpose + " (no profile)",
            resident_id=resident_id,
        )
        raise
    access.audit(
        conn,
        principal,
        Action.PROFILE_READ,
        decision,
        purpose=purpose,
        resident_id=resident_id,
        profile_version=profile.version,
    )
    return profile


@router.get("/residents/{resident_id}/profile")
def get_profile(
    resident_id: uuid.UUID,
    conn: DbConn,
    keys: Keys,
    principal: CurrentPrincipal,
    purpose: Annotated[str | None, Query(max_length=200)] = None,
) -> EmergencyProfile:
    """The current emergency profile. Every read, and every refusal, is audited."""
    why = "GET profile" + (f": {purpose}" if purpose else "")
    return _read_profile_audited(conn, principal, resident_id, keys, why)


@router.get("/residents/{resident_id}/profile/history")
def get_profile_history(
    resident_id: uuid.UUID, conn: DbConn, keys: Keys, principal: CurrentPrincipal
) -> list[EmergencyProfile]:
    """Every version, oldest first (audited as a profile read)."""
    decision = authorize_resident(
        conn, principal, Action.PROFILE_READ, resident_id, purpose="GET profile history"
    )
    history = repo.profile_history(conn, resident_id, keyring=keys)
    access.audit(
        conn,
        principal,
        Action.PROFILE_READ,
        decision,
        purpose="GET profile history",
        resident_id=resident_id,
        profile_version=history[-1].version if history else None,
    )
    return history


@router.get("/residents/{resident_id}/profile/meta")
def get_profile_meta(
    resident_id: uuid.UUID, conn: DbConn, keys: Keys, principal: CurrentPrincipal
) -> ProfileMeta:
    """Version and verification of the profile, without health fields (operators)."""
    authorize_resident(
        conn, principal, Action.PROFILE_META, resident_id, purpose="GET profile meta"
    )
    return ProfileMeta.of(repo.get_profile(conn, resident_id, keyring=keys))


@router.put("/residents/{resident_id}/profile")
def put_profile(  # noqa: PLR0917 - FastAPI passes each parameter as an argument
    resident_id: uuid.UUID,
    body: ProfileIn,
    conn: DbConn,
    keys: Keys,
    principal: CurrentPrincipal,
    verified: bool = False,
) -> EmergencyProfile:
    """Store a new version of the whole profile; ``verified`` marks it checked now."""
    authorize_resident(conn, principal, Action.PROFILE_WRITE, resident_id, purpose="PUT profile")
    at = dt.datetime.now(dt.UTC) if verified else None
    return repo.put_profile(
        conn, resident_id, body, by=by_name(principal), keyring=keys, verified_at=at
    )


@router.post("/residents/{resident_id}/profile/verify")
def verify_profile(
    resident_id: uuid.UUID, conn: DbConn, keys: Keys, principal: CurrentPrincipal
) -> ProfileMeta:
    """Record that the profile was checked now (a new version with the same content)."""
    authorize_resident(conn, principal, Action.PROFILE_WRITE, resident_id, purpose="verify profile")
    p = repo.verify_profile(
        conn, resident_id, by=by_name(principal), at=dt.datetime.now(dt.UTC), keyring=keys
    )
    return ProfileMeta.of(p)


@router.get("/profiles/unverified")
def unverified(
    conn: DbConn,
    _p: Writer,
    months: Annotated[int, Query(ge=0, le=240)] = 12,
) -> list[UnverifiedProfile]:
    """Residents whose profile is missing or not verified for ``months`` months."""
    return repo.unverified_profiles(conn, months=months, now=dt.datetime.now(dt.UTC))
