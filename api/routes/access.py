"""Principals, API tokens and the audit log (admins only)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import CurrentPrincipal, DbConn, require
from devices import access
from devices.access import Action, Principal, Role

router = APIRouter(prefix="/api/v1", tags=["access"])

Admin = Annotated[Principal, Depends(require(Action.TOKENS_MANAGE))]
Auditor = Annotated[Principal, Depends(require(Action.AUDIT_READ))]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrincipalIn(_In):
    name: str = Field(
        min_length=1, max_length=200, description="Who the principal is (a role, a desk)."
    )
    role: Role
    member_ids: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=50,
        description="Doctor team members this doctor is (doctor only): their teams are the scope.",
    )
    resident_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=50, description="Relatives (family only)."
    )
    token_days: int = Field(
        access.DEFAULT_TOKEN_DAYS, ge=1, le=access.MAX_TOKEN_DAYS, description="Token lifetime."
    )


class TokenIn(_In):
    days: int = Field(access.DEFAULT_TOKEN_DAYS, ge=1, le=access.MAX_TOKEN_DAYS)


class IssuedTokenOut(BaseModel):
    principal_id: uuid.UUID
    token_id: uuid.UUID
    token: str = Field(description="Shown this once; only its SHA-256 is stored.")
    expires_at: datetime


class AuditPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[access.AuditEntry]


class WhoAmI(BaseModel):
    id: uuid.UUID
    name: str
    role: Role
    team_ids: list[uuid.UUID]
    resident_ids: list[uuid.UUID]


@router.get("/me")
def whoami(principal: CurrentPrincipal) -> WhoAmI:
    """The principal of the token, with its scopes."""
    return WhoAmI(
        id=principal.id,
        name=principal.name,
        role=principal.role,
        team_ids=sorted(principal.team_ids),
        resident_ids=sorted(principal.resident_ids),
    )


@router.post("/principals", status_code=201)
def create_principal(body: PrincipalIn, conn: DbConn, _admin: Admin) -> IssuedTokenOut:
    """A new principal and its first token (shown once)."""
    try:
        pid = access.create_principal(
            conn, body.name, body.role, member_ids=body.member_ids, resident_ids=body.resident_ids
        )
    except access.AccessError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    issued = access.issue_token(conn, pid, days=body.token_days)
    return IssuedTokenOut(
        principal_id=pid, token_id=issued.token_id, token=issued.token, expires_at=issued.expires_at
    )


@router.post("/principals/{principal_id}/tokens", status_code=201)
def issue_token(
    principal_id: uuid.UUID, body: TokenIn, conn: DbConn, _admin: Admin
) -> IssuedTokenOut:
    """Another token for a principal (shown once)."""
    try:
        issued = access.issue_token(conn, principal_id, days=body.days)
    except access.AccessError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return IssuedTokenOut(
        principal_id=principal_id,
        token_id=issued.token_id,
        token=issued.token,
        expires_at=issued.expires_at,
    )


@router.get("/tokens")
def list_tokens(conn: DbConn, _admin: Admin) -> list[access.TokenInfo]:
    """Every token's state (never the token itself)."""
    return list(access.list_tokens(conn))


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: uuid.UUID, conn: DbConn, _admin: Admin) -> None:
    """Revoke a token now; 404 when there is no unrevoked token of that id."""
    if not access.revoke_token(conn, token_id):
        raise HTTPException(status_code=404, detail=f"No unrevoked token {token_id}.")


@router.get("/audit")
def read_audit(
    conn: DbConn,
    _auditor: Auditor,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    resident_id: uuid.UUID | None = None,
    granted: bool | None = None,
) -> AuditPage:
    """The audit log, newest first: every emergency-profile read and every refusal."""
    rows, total = access.read_audit(
        conn, limit=limit, offset=offset, resident_id=resident_id, granted=granted
    )
    return AuditPage(
        total=total,
        limit=limit,
        offset=offset,
        items=list(rows),
    )
