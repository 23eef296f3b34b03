"""Who may see what, as a pure core: roles, actions, scopes, :func:`decide`, and the token
helpers. No database, no clock."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from core.errors import AnxinError

TOKEN_PREFIX = "anx_"  # noqa: S105 - a public marker of our tokens, not a secret
TOKEN_BYTES = 32
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 3650
LOOKUP_GRANT_MINUTES = 15
# last_used_at is written at most this often per token, so reads do not become writes.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class AccessError(AnxinError):
    """A principal or token request that cannot be carried out."""


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    DISPATCHER = "dispatcher"
    DOCTOR = "doctor"
    FAMILY = "family"


class Action(StrEnum):
    """What a request does; each route names one."""

    RESIDENT_LIST = "resident.list"  # list and search residents (filtered by scope)
    RESIDENT_READ = "resident.read"  # one resident's record, contacts, devices (no health fields)
    REGISTRY_WRITE = "registry.write"  # create, update, retire residents, contacts, devices, ...
    REFERENCE_READ = "reference.read"  # hospitals, communities, doctor teams
    PROFILE_META = "profile.meta"  # profile version, last verified, the unverified report
    PROFILE_READ = "profile.read"  # the full emergency profile, health fields included
    PROFILE_WRITE = "profile.write"
    NEWS2_WRITE = "news2.write"  # an elder's NEWS2 settings (the signed family doctor's)
    CALLER_LOOKUP = "lookup.caller"
    BULK = "registry.bulk"  # CSV import and export
    AUDIT_READ = "audit.read"
    TOKENS_MANAGE = "tokens.manage"
    MONITOR_READ = "monitor.read"  # the stream across devices: latest vitals, dead letters, rates


class Scope(StrEnum):
    """How far a role's permission reaches for an action."""

    NONE = "none"
    ALL = "all"
    SIGNED = "signed"  # residents signed with one of the doctor's teams
    RELATIVE = "relative"  # the family member's own relative(s)
    EMERGENCY = "emergency"  # a live caller-lookup grant or an open emergency alert


_A, _N, _S, _R, _E = Scope.ALL, Scope.NONE, Scope.SIGNED, Scope.RELATIVE, Scope.EMERGENCY

# The table of docs/registry.md, "Who may see what". Columns: admin, operator, dispatcher,
# doctor, family.
RULES: dict[Action, dict[Role, Scope]] = {
    action: dict(zip(Role, scopes, strict=True))
    for action, scopes in {
        Action.RESIDENT_LIST: (_A, _A, _N, _S, _R),
        Action.RESIDENT_READ: (_A, _A, _E, _S, _R),
        Action.REGISTRY_WRITE: (_A, _A, _N, _N, _N),
        Action.REFERENCE_READ: (_A, _A, _A, _A, _N),
        Action.PROFILE_META: (_A, _A, _E, _S, _R),
        Action.PROFILE_READ: (_A, _N, _E, _S, _R),
        Action.PROFILE_WRITE: (_A, _N, _N, _S, _N),
        Action.NEWS2_WRITE: (_A, _N, _N, _S, _N),
        Action.CALLER_LOOKUP: (_A, _N, _A, _N, _N),
        Action.BULK: (_A, _A, _N, _N, _N),
        Action.AUDIT_READ: (_A, _N, _N, _N, _N),
        Action.TOKENS_MANAGE: (_A, _N, _N, _N, _N),
        Action.MONITOR_READ: (_A, _A, _N, _N, _N),
    }.items()
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for, with the scopes of their role.

    Attributes:
        team_ids: the doctor teams a doctor belongs to through their doctor_team_members rows
            (empty for other roles).
        resident_ids: the relatives of a family member (empty for other roles).
    """

    id: uuid.UUID
    name: str
    role: Role
    team_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)
    resident_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class ResidentScope:
    """What decides access to one resident.

    Attributes:
        team_ids: the doctor teams the resident is signed with (contracts in force).
        lookup_grant: the number of a live caller-lookup grant of this principal, if any.
        open_alert_id: an open emergency alert of the resident, if any.
    """

    resident_id: uuid.UUID
    team_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)
    lookup_grant: str | None = None
    open_alert_id: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    reason: str


def scope_of(role: Role, action: Action) -> Scope:
    return RULES[action][role]


def decide(principal: Principal, action: Action, resident: ResidentScope | None = None) -> Decision:
    """Whether ``principal`` may do ``action`` (on ``resident`` when it concerns one), and why.

    Without ``resident``, a scoped permission (signed, relative, emergency) is granted: the
    caller then filters what it returns by :attr:`Principal.team_ids` and
    :attr:`Principal.resident_ids`.
    """
    scope = scope_of(principal.role, action)
    if scope is Scope.NONE:
        return Decision(False, f"role {principal.role} may not {action}")
    if scope is Scope.ALL or resident is None:
        return Decision(True, f"role {principal.role}")
    if scope is Scope.SIGNED:
        common = sorted(str(t) for t in principal.team_ids & resident.team_ids)
        if common:
            return Decision(True, f"signed with team {common[0]}")
        return Decision(False, "resident not signed with the doctor's team")
    if scope is Scope.RELATIVE:
        if resident.resident_id in principal.resident_ids:
            return Decision(True, "own relative")
        return Decision(False, "not a relative of this family member")
    if resident.open_alert_id is not None:
        return Decision(True, f"open alert {resident.open_alert_id}")
    if resident.lookup_grant is not None:
        return Decision(True, f"caller lookup {mask_number(resident.lookup_grant)}")
    return Decision(False, "no caller lookup or open emergency alert for this resident")


def mask_number(number: str) -> str:
    """A phone number shown in the audit log: the first digits, the rest masked."""
    keep = min(len(number), max(4, len(number) - 4))
    return number[:keep] + "…" if keep < len(number) else number


# ---------------------------------------------------------------------------------------------
# Tokens: pure helpers


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def looks_like_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and 20 <= len(token) <= 200 and token.isascii()
