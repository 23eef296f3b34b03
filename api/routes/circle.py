"""The care circle over HTTP: contacts, doctor contracts, doctor teams, hospitals, communities.

Contacts' and team members' channels (apprise URLs hold tokens) are shown masked to everyone
but admins (:meth:`devices.model.Channel.masked`).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.auth import CurrentPrincipal, DbConn, authorize_resident
from api.routes.registry import Keys, Limit, Offset, Reference, Writer
from devices import repository as repo
from devices.access import Action, Principal, Role
from devices.model import (
    Community,
    CommunityIn,
    Contact,
    ContactIn,
    ContactPatch,
    Contract,
    ContractIn,
    DoctorTeam,
    DoctorTeamIn,
    Hospital,
    HospitalIn,
    Page,
    TeamMember,
    TeamMemberIn,
)

router = APIRouter(prefix="/api/v1", tags=["registry"])


def _contact_view(principal: Principal, contact: Contact) -> Contact:
    return contact if principal.role is Role.ADMIN else contact.masked()


def _team_view(principal: Principal, team: DoctorTeam) -> DoctorTeam:
    return team if principal.role is Role.ADMIN else team.masked()


# --- contacts and contracts -----------------------------------------------------------------


@router.get("/residents/{resident_id}/contacts")
def list_contacts(
    resident_id: uuid.UUID, conn: DbConn, keys: Keys, principal: CurrentPrincipal
) -> list[Contact]:
    authorize_resident(conn, principal, Action.RESIDENT_READ, resident_id, purpose="GET contacts")
    return [
        _contact_view(principal, c) for c in repo.list_contacts(conn, resident_id, keyring=keys)
    ]


@router.post("/residents/{resident_id}/contacts", status_code=201)
def add_contact(
    resident_id: uuid.UUID, body: ContactIn, conn: DbConn, keys: Keys, principal: Writer
) -> Contact:
    return _contact_view(principal, repo.add_contact(conn, resident_id, body, keyring=keys))


@router.patch("/contacts/{contact_id}")
def update_contact(
    contact_id: uuid.UUID, body: ContactPatch, conn: DbConn, keys: Keys, principal: Writer
) -> Contact:
    return _contact_view(principal, repo.update_contact(conn, contact_id, body, keyring=keys))


@router.delete("/contacts/{contact_id}")
def retire_contact(contact_id: uuid.UUID, conn: DbConn, keys: Keys, principal: Writer) -> Contact:
    return _contact_view(principal, repo.retire_contact(conn, contact_id, keyring=keys))


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
def create_team(body: DoctorTeamIn, conn: DbConn, keys: Keys, principal: Writer) -> DoctorTeam:
    return _team_view(principal, repo.create_team(conn, body, keyring=keys))


@router.get("/doctor-teams")
def list_teams(
    conn: DbConn, keys: Keys, principal: Reference, limit: Limit = 50, offset: Offset = 0
) -> Page[DoctorTeam]:
    page = repo.list_teams(conn, keyring=keys, limit=limit, offset=offset)
    return page.model_copy(update={"items": tuple(_team_view(principal, t) for t in page.items)})


@router.get("/doctor-teams/{team_id}")
def get_team(team_id: uuid.UUID, conn: DbConn, keys: Keys, principal: Reference) -> DoctorTeam:
    return _team_view(principal, repo.get_team(conn, team_id, keyring=keys))


@router.delete("/doctor-teams/{team_id}")
def retire_team(team_id: uuid.UUID, conn: DbConn, keys: Keys, principal: Writer) -> DoctorTeam:
    return _team_view(principal, repo.retire_team(conn, team_id, keyring=keys))


@router.post("/doctor-teams/{team_id}/members", status_code=201)
def add_member(
    team_id: uuid.UUID, body: TeamMemberIn, conn: DbConn, keys: Keys, principal: Writer
) -> TeamMember:
    member = repo.add_team_member(conn, team_id, body, keyring=keys)
    return member if principal.role is Role.ADMIN else member.masked()


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
