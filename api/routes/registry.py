"""The registry over HTTP: residents, emergency profiles, contacts, doctor teams, hospitals,
communities, devices and the caller-number lookup, each route behind the rules of
devices/access.py. Storage is devices/repository.py; errors map to 404, 409 and 422 in
:func:`install_error_handlers`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.auth import CurrentPrincipal, DbConn, authorize_resident, require
from devices import access, csv_io
from devices import repository as repo
from devices.access import Action, Decision, Principal, Role
from devices.crypto import Keyring
from devices.model import (
    CallerLookup,
    CallerMatch,
    Community,
    CommunityIn,
    ConflictError,
    Consent,
    ConsentIn,
    Contact,
    ContactIn,
    ContactPatch,
    Contract,
    ContractIn,
    Device,
    DeviceIn,
    DeviceKind,
    DeviceState,
    DoctorTeam,
    DoctorTeamIn,
    EmergencyProfile,
    ExtensionError,
    Hospital,
    HospitalIn,
    NotFoundError,
    Page,
    ProfileIn,
    Resident,
    ResidentIn,
    ResidentPatch,
    ResidentSearch,
    ResidentStatus,
    SpecialFlag,
    TeamMember,
    TeamMemberIn,
    UnverifiedProfile,
)
from devices.phones import PhoneError
from devices.registry import RegistryError

router = APIRouter(prefix="/api/v1", tags=["registry"])
bulk_router = APIRouter(prefix="/api/v1", tags=["registry"])

Writer = Annotated[Principal, Depends(require(Action.REGISTRY_WRITE))]
Lister = Annotated[Principal, Depends(require(Action.RESIDENT_LIST))]
Reference = Annotated[Principal, Depends(require(Action.REFERENCE_READ))]
Limit = Annotated[int, Query(ge=1, le=repo.MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def _keyring(request: Request) -> Keyring:
    keyring: Keyring = request.app.state.keyring
    return keyring


Keys = Annotated[Keyring, Depends(_keyring)]


def _by(principal: Principal) -> str:
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
    p = repo.get_profile(conn, resident_id, keyring=keys)
    return ProfileMeta(
        resident_id=p.resident_id,
        version=p.version,
        last_verified_at=p.last_verified_at,
        last_verified_by=p.last_verified_by,
        changed_by=p.changed_by,
        changed_at=p.changed_at,
    )


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
        conn, resident_id, body, by=_by(principal), keyring=keys, verified_at=at
    )


@router.post("/residents/{resident_id}/profile/verify")
def verify_profile(
    resident_id: uuid.UUID, conn: DbConn, keys: Keys, principal: CurrentPrincipal
) -> ProfileMeta:
    """Record that the profile was checked now (a new version with the same content)."""
    authorize_resident(conn, principal, Action.PROFILE_WRITE, resident_id, purpose="verify profile")
    p = repo.verify_profile(
        conn, resident_id, by=_by(principal), at=dt.datetime.now(dt.UTC), keyring=keys
    )
    return ProfileMeta(
        resident_id=p.resident_id,
        version=p.version,
        last_verified_at=p.last_verified_at,
        last_verified_by=p.last_verified_by,
        changed_by=p.changed_by,
        changed_at=p.changed_at,
    )


@router.get("/profiles/unverified")
def unverified(
    conn: DbConn,
    _p: Writer,
    months: Annotated[int, Query(ge=0, le=240)] = 12,
) -> list[UnverifiedProfile]:
    """Residents whose profile is missing or not verified for ``months`` months."""
    return repo.unverified_profiles(conn, months=months, now=dt.datetime.now(dt.UTC))


# --- contacts and contracts -----------------------------------------------------------------


@router.get("/residents/{resident_id}/contacts")
def list_contacts(
    resident_id: uuid.UUID, conn: DbConn, keys: Keys, principal: CurrentPrincipal
) -> list[Contact]:
    authorize_resident(conn, principal, Action.RESIDENT_READ, resident_id, purpose="GET contacts")
    return repo.list_contacts(conn, resident_id, keyring=keys)


@router.post("/residents/{resident_id}/contacts", status_code=201)
def add_contact(
    resident_id: uuid.UUID, body: ContactIn, conn: DbConn, keys: Keys, _p: Writer
) -> Contact:
    return repo.add_contact(conn, resident_id, body, keyring=keys)


@router.patch("/contacts/{contact_id}")
def update_contact(
    contact_id: uuid.UUID, body: ContactPatch, conn: DbConn, keys: Keys, _p: Writer
) -> Contact:
    return repo.update_contact(conn, contact_id, body, keyring=keys)


@router.delete("/contacts/{contact_id}")
def retire_contact(contact_id: uuid.UUID, conn: DbConn, keys: Keys, _p: Writer) -> Contact:
    return repo.retire_contact(conn, contact_id, keyring=keys)


@router.get("/residents/{resident_id}/contracts")
def list_contracts(
    resident_id: uuid.UUID, conn: DbConn, principal: CurrentPrincipal
) -> list[Contract]:
    authorize_resident(conn, principal, Action.RESIDENT_READ, resident_id, purpose="GET contracts")
    return repo.list_contracts(conn, resident_id)


@router.post("/residents/{resident_id}/contracts", status_code=201)
def sign_contract(resident_id: uuid.UUID, body: ContractIn, conn: DbConn, _p: Writer) -> Contract:
    """Sign the resident with a doctor team (one active contract at a time)."""
    return repo.sign_contract(conn, resident_id, body)


@router.delete("/contracts/{contract_id}")
def end_contract(contract_id: uuid.UUID, conn: DbConn, _p: Writer) -> Contract:
    return repo.end_contract(conn, contract_id)


# --- doctor teams, hospitals, communities ---------------------------------------------------


@router.post("/doctor-teams", status_code=201)
def create_team(body: DoctorTeamIn, conn: DbConn, keys: Keys, _p: Writer) -> DoctorTeam:
    return repo.create_team(conn, body, keyring=keys)


@router.get("/doctor-teams")
def list_teams(
    conn: DbConn, keys: Keys, _p: Reference, limit: Limit = 50, offset: Offset = 0
) -> Page[DoctorTeam]:
    return repo.list_teams(conn, keyring=keys, limit=limit, offset=offset)


@router.get("/doctor-teams/{team_id}")
def get_team(team_id: uuid.UUID, conn: DbConn, keys: Keys, _p: Reference) -> DoctorTeam:
    return repo.get_team(conn, team_id, keyring=keys)


@router.delete("/doctor-teams/{team_id}")
def retire_team(team_id: uuid.UUID, conn: DbConn, keys: Keys, _p: Writer) -> DoctorTeam:
    return repo.retire_team(conn, team_id, keyring=keys)


@router.post("/doctor-teams/{team_id}/members", status_code=201)
def add_member(
    team_id: uuid.UUID, body: TeamMemberIn, conn: DbConn, keys: Keys, _p: Writer
) -> TeamMember:
    return repo.add_team_member(conn, team_id, body, keyring=keys)


@router.delete("/doctor-team-members/{member_id}", status_code=204)
def retire_member(member_id: uuid.UUID, conn: DbConn, _p: Writer) -> None:
    repo.retire_team_member(conn, member_id)


@router.post("/hospitals", status_code=201)
def create_hospital(body: HospitalIn, conn: DbConn, _p: Writer) -> Hospital:
    return repo.create_hospital(conn, body)


@router.get("/hospitals")
def list_hospitals(
    conn: DbConn, _p: Reference, limit: Limit = 50, offset: Offset = 0
) -> Page[Hospital]:
    return repo.list_hospitals(conn, limit=limit, offset=offset)


@router.get("/hospitals/{hospital_id}")
def get_hospital(hospital_id: uuid.UUID, conn: DbConn, _p: Reference) -> Hospital:
    return repo.get_hospital(conn, hospital_id)


@router.put("/hospitals/{hospital_id}")
def update_hospital(hospital_id: uuid.UUID, body: HospitalIn, conn: DbConn, _p: Writer) -> Hospital:
    return repo.update_hospital(conn, hospital_id, body)


@router.delete("/hospitals/{hospital_id}")
def retire_hospital(hospital_id: uuid.UUID, conn: DbConn, _p: Writer) -> Hospital:
    return repo.retire_hospital(conn, hospital_id)


@router.post("/communities", status_code=201)
def create_community(body: CommunityIn, conn: DbConn, _p: Writer) -> Community:
    return repo.create_community(conn, body)


@router.get("/communities")
def list_communities(
    conn: DbConn, _p: Reference, limit: Limit = 50, offset: Offset = 0
) -> Page[Community]:
    return repo.list_communities(conn, limit=limit, offset=offset)


@router.get("/communities/{community_id}")
def get_community(community_id: uuid.UUID, conn: DbConn, _p: Reference) -> Community:
    return repo.get_community(conn, community_id)


@router.put("/communities/{community_id}")
def update_community(
    community_id: uuid.UUID, body: CommunityIn, conn: DbConn, _p: Writer
) -> Community:
    return repo.update_community(conn, community_id, body)


@router.delete("/communities/{community_id}")
def retire_community(community_id: uuid.UUID, conn: DbConn, _p: Writer) -> Community:
    return repo.retire_community(conn, community_id)


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
    return repo.create_device(conn, body, by=_by(principal))


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
        conn, device_id, resident_id=body.resident_id, gateway_id=body.gateway_id, by=_by(principal)
    )


@router.put("/devices/{device_id}/status")
def set_device_status(
    device_id: Annotated[str, Path(max_length=64)], body: StateIn, conn: DbConn, _p: Writer
) -> Device:
    """Lifecycle: provisioned -> active -> retired (409 for any other move)."""
    return repo.set_device_state(conn, device_id, body.status)


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
        out.append(LookupMatch(match=m, profile=profile))
    return LookupOut(raw=found.raw, national=found.national, matches=out)


# --- CSV import and export ------------------------------------------------------------------
# On a router of their own, included before ``router``: /residents/export must not be taken
# for /residents/{resident_id}.


class RowErrorOut(BaseModel):
    row: int = Field(description="Row number as in a spreadsheet (the header is row 1).")
    column: str
    message: str


class ImportOut(BaseModel):
    imported: int
    resident_ids: list[uuid.UUID]
    errors: list[RowErrorOut]


_CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}
_MAX_CSV_BYTES = 20 * 1024 * 1024


@bulk_router.post(
    "/residents/import",
    openapi_extra=_CSV_BODY,
    responses={422: {"model": ImportOut, "description": "Nothing imported; every bad row."}},
)
async def import_residents(
    request: Request,
    conn: DbConn,
    keys: Keys,
    principal: Annotated[Principal, Depends(require(Action.BULK))],
) -> JSONResponse:
    """Residents, profiles and contacts from CSV (devices/csv_io.py): all rows or none.

    With any bad row nothing is written and the answer is 422 with every problem by row.
    """
    raw = await request.body()
    if len(raw) > _MAX_CSV_BYTES:
        raise HTTPException(status_code=413, detail=f"CSV over {_MAX_CSV_BYTES} bytes.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(
            status_code=422, detail=f"CSV is not UTF-8 (byte {exc.start}): {exc.reason}."
        ) from exc
    # The import is sync database work: off the event loop.
    report = await run_in_threadpool(
        csv_io.import_residents, conn, text, keyring=keys, by=_by(principal)
    )
    out = ImportOut(
        imported=report.imported,
        resident_ids=list(report.resident_ids),
        errors=[RowErrorOut(row=e.row, column=e.column, message=e.message) for e in report.errors],
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=422 if out.errors else 200)


@bulk_router.get("/residents/export", response_class=PlainTextResponse)
def export_residents(
    conn: DbConn,
    keys: Keys,
    principal: Annotated[Principal, Depends(require(Action.BULK))],
    include_profiles: bool = False,
) -> PlainTextResponse:
    """Residents and contacts as CSV in the import format; health fields only for admins who
    ask (``include_profiles``), and then the export is audited."""
    text = csv_io.export_residents(conn, keyring=keys)
    if include_profiles:
        decision = access.decide(principal, Action.PROFILE_READ)
        if access.scope_of(principal.role, Action.PROFILE_READ) is not access.Scope.ALL:
            decision = Decision(False, f"role {principal.role} may not export profiles")
        access.audit(conn, principal, Action.PROFILE_READ, decision, purpose="CSV export")
        if not decision.granted:
            raise HTTPException(status_code=403, detail=f"Forbidden: {decision.reason}.")
    else:
        text = _drop_columns(text, set(csv_io.PROFILE_COLUMNS))
    return PlainTextResponse(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="residents.csv"'},
    )


def _drop_columns(text: str, drop: set[str]) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return text
    keep = [i for i, name in enumerate(rows[0]) if name not in drop]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([row[i] for i in keep])
    return out.getvalue()
