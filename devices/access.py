"""Who may see what: principals, roles and scopes, API tokens, lookup grants and the audit log.

The rules are a pure core: :func:`decide` takes a :class:`Principal`, an :class:`Action` and,
for what concerns one elder, a :class:`ResidentScope`, and returns a :class:`Decision`; no
database, no clock. The storage functions below it are the thin shell (sync psycopg, shared by
the API and the ``anxin tokens`` command line).

Tokens are ``anx_`` plus 32 random bytes (base64url): they carry 256 bits of entropy, so a plain
SHA-256 of the token is stored (no salt or stretching is needed against guessing), and the token
is shown once. The audit log is append-only in the database (a trigger refuses UPDATE, DELETE
and TRUNCATE; see core/migrations/0005_access.sql).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import secrets
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import class_row

from core.errors import AnxinError

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------
# Storage (the thin shell)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: ``token`` is shown once and never stored."""

    token_id: uuid.UUID
    principal_id: uuid.UUID
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: uuid.UUID
    principal_id: uuid.UUID
    principal_name: str
    role: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    principal_id: uuid.UUID | None
    principal_name: str
    role: str
    action: str
    resident_id: uuid.UUID | None
    profile_version: int | None
    purpose: str
    granted: bool
    reason: str


Conn = psycopg.Connection[Any]


def create_principal(
    conn: Conn,
    name: str,
    role: Role,
    *,
    member_ids: Sequence[uuid.UUID] = (),
    resident_ids: Sequence[uuid.UUID] = (),
) -> uuid.UUID:
    """Insert a principal with its scopes. Returns its id.

    Args:
        member_ids: a doctor's doctor_team_members rows; their teams are the doctor's scope.
        resident_ids: a family member's relatives.

    Raises:
        AccessError: the name is empty, a scope does not fit the role, or a member or
            resident does not exist.
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise AccessError(f"Principal name {name!r} is not valid. Expected 1 to 200 characters.")
    if member_ids and role is not Role.DOCTOR:
        raise AccessError(f"Only a doctor is a doctor team member; role is {role}.")
    if resident_ids and role is not Role.FAMILY:
        raise AccessError(f"Only a family member has relatives; role is {role}.")
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO principals (name, role) VALUES (%s, %s) RETURNING id",
                (name, role.value),
            ).fetchone()
            assert row is not None  # noqa: S101 - INSERT ... RETURNING returns one row
            pid: uuid.UUID = row[0]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO principal_members (principal_id, member_id) VALUES (%s, %s)",
                    [(pid, m) for m in member_ids],
                )
                cur.executemany(
                    "INSERT INTO principal_residents (principal_id, resident_id) VALUES (%s, %s)",
                    [(pid, r) for r in resident_ids],
                )
    except psycopg.errors.ForeignKeyViolation as exc:
        raise AccessError(
            f"A team member or resident of principal {name!r} does not exist: {exc}"
        ) from exc
    return pid


def issue_token(
    conn: Conn, principal_id: uuid.UUID, *, days: int = DEFAULT_TOKEN_DAYS
) -> IssuedToken:
    """A new token for the principal, valid ``days`` days. Only its SHA-256 is stored.

    Raises:
        AccessError: ``days`` is out of range or the principal does not exist.
    """
    if not 0 < days <= MAX_TOKEN_DAYS:
        raise AccessError(
            f"Token lifetime {days} days is not valid. Expected 1 to {MAX_TOKEN_DAYS}."
        )
    token = new_token()
    try:
        with conn.transaction():
            row = conn.execute(
                """INSERT INTO api_tokens (principal_id, token_hash, expires_at)
                   VALUES (%s, %s, now() + make_interval(days => %s))
                   RETURNING id, expires_at""",
                (principal_id, hash_token(token), days),
            ).fetchone()
    except psycopg.errors.ForeignKeyViolation as exc:
        raise AccessError(f"Principal {principal_id} does not exist.") from exc
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns one row
    return IssuedToken(token_id=row[0], principal_id=principal_id, token=token, expires_at=row[1])


def revoke_token(conn: Conn, token_id: uuid.UUID) -> bool:
    """Revoke a token now. Returns False when no unrevoked token has that id."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
            (token_id,),
        )
        return cur.rowcount == 1


def list_tokens(conn: Conn) -> list[TokenInfo]:
    with conn.cursor(row_factory=class_row(TokenInfo)) as cur:
        cur.execute(
            """SELECT t.id, t.principal_id, p.name AS principal_name, p.role, t.created_at,
                      t.expires_at, t.revoked_at, t.last_used_at
                 FROM api_tokens t JOIN principals p ON p.id = t.principal_id
                ORDER BY t.created_at, t.id"""
        )
        return cur.fetchall()


def authenticate(conn: Conn, token: str) -> Principal | None:
    """The principal of a live token (not expired, not revoked, principal enabled), or None.

    Marks the token used (``last_used_at``, at most once a minute).
    """
    if not looks_like_token(token):
        return None
    row = conn.execute(
        """SELECT t.id, p.id, p.name, p.role,
                  t.last_used_at IS NULL OR t.last_used_at < now() - %s
             FROM api_tokens t JOIN principals p ON p.id = t.principal_id
            WHERE t.token_hash = %s AND t.revoked_at IS NULL AND t.expires_at > now()
              AND p.disabled_at IS NULL""",
        (LAST_USED_RESOLUTION, hash_token(token)),
    ).fetchone()
    if row is None:
        return None
    token_id, pid, name, role, stale = row
    if stale:
        conn.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = %s", (token_id,))
    return principal_of(conn, pid, name, Role(role))


def token_id_of(conn: Conn, token: str) -> uuid.UUID | None:
    """The id of a live token (as :func:`authenticate` accepts it), or None."""
    if not looks_like_token(token):
        return None
    row = conn.execute(
        """SELECT t.id FROM api_tokens t JOIN principals p ON p.id = t.principal_id
            WHERE t.token_hash = %s AND t.revoked_at IS NULL AND t.expires_at > now()
              AND p.disabled_at IS NULL""",
        (hash_token(token),),
    ).fetchone()
    return None if row is None else row[0]


def principal_of(conn: Conn, pid: uuid.UUID, name: str, role: Role) -> Principal:
    """The principal ``pid`` with the scopes of its role (teams of a doctor, relatives)."""
    teams = conn.execute(
        """SELECT m.team_id FROM principal_members pm
             JOIN doctor_team_members m ON m.id = pm.member_id
            WHERE pm.principal_id = %s AND m.status = 'active'""",
        (pid,),
    ).fetchall()
    relatives = conn.execute(
        "SELECT resident_id FROM principal_residents WHERE principal_id = %s", (pid,)
    ).fetchall()
    return Principal(
        id=pid,
        name=name,
        role=role,
        team_ids=frozenset(r[0] for r in teams),
        resident_ids=frozenset(r[0] for r in relatives),
    )


# --- the doctor's scope: one definition for every path (resident reads, lists, alerts) ------

#: A doctor contract in force (alias ``c``): active, and today within its dates. A contract that
#: ended yesterday or starts next week does not count. Every query that decides a doctor's
#: scope uses this, through :func:`signed_with_sql` or :func:`signed_teams`.
CONTRACT_IN_FORCE = "c.status = 'active' AND current_date BETWEEN c.starts_on AND c.ends_on"


def signed_with_sql(resident: str) -> str:
    """SQL that is true when the resident ``resident`` (a column or expression) has a contract
    in force with one of the teams of the next parameter (a list of team ids, ``%s``)."""
    return (
        "EXISTS (SELECT 1 FROM doctor_contracts c WHERE c.resident_id = "
        f"{resident} AND {CONTRACT_IN_FORCE} AND c.team_id = ANY(%s))"
    )


def signed_teams(conn: Conn, resident_id: uuid.UUID) -> frozenset[uuid.UUID]:
    """The teams the resident is signed with today (contracts in force)."""
    rows = conn.execute(
        f"SELECT c.team_id FROM doctor_contracts c WHERE c.resident_id = %s AND {CONTRACT_IN_FORCE}",
        (resident_id,),
    ).fetchall()
    return frozenset(r[0] for r in rows)


def signed_with(conn: Conn, resident_id: uuid.UUID, team_ids: frozenset[uuid.UUID]) -> bool:
    """Whether the resident has a contract in force with one of ``team_ids``."""
    if not team_ids:
        return False
    row = conn.execute("SELECT " + signed_with_sql("%s"), (resident_id, list(team_ids))).fetchone()
    return bool(row and row[0])


def grant_lookup(conn: Conn, principal: Principal, resident_id: uuid.UUID, number: str) -> None:
    """Record a caller-lookup grant: the principal may read that resident's profile for a while."""
    conn.execute(
        """INSERT INTO lookup_grants (principal_id, resident_id, number, expires_at)
           VALUES (%s, %s, %s, now() + make_interval(mins => %s))""",
        (principal.id, resident_id, number, LOOKUP_GRANT_MINUTES),
    )


def live_lookup_grant(conn: Conn, principal: Principal, resident_id: uuid.UUID) -> str | None:
    """The number of the principal's newest live lookup grant for the resident, if any."""
    row = conn.execute(
        """SELECT number FROM lookup_grants
            WHERE principal_id = %s AND resident_id = %s AND expires_at > now()
            ORDER BY granted_at DESC LIMIT 1""",
        (principal.id, resident_id),
    ).fetchone()
    return None if row is None else str(row[0])


def open_emergency_alert(conn: Conn, resident_id: uuid.UUID) -> int | None:
    """The id of the resident's newest live (pending, open, acknowledged or dispatched) alert of
    high or emergency severity, or None: what gives a dispatcher the right to the profile."""
    row = conn.execute(
        """SELECT id FROM alerts
            WHERE resident_id = %s
              AND state IN ('pending', 'open', 'acknowledged', 'dispatched')
              AND severity IN ('high', 'emergency')
            ORDER BY id DESC LIMIT 1""",
        (resident_id,),
    ).fetchone()
    return None if row is None else int(row[0])


def has_open_emergency(conn: Conn, resident_id: uuid.UUID) -> bool:
    """Whether the resident has a live emergency alert."""
    return open_emergency_alert(conn, resident_id) is not None


def audit(
    conn: Conn,
    principal: Principal | None,
    action: Action | str,
    decision: Decision,
    *,
    purpose: str,
    resident_id: uuid.UUID | None = None,
    profile_version: int | None = None,
) -> None:
    """Append one row to the audit log (its own statement: it stays even if the request fails)."""
    conn.execute(
        """INSERT INTO audit_log (principal_id, principal_name, role, action, resident_id,
                                  profile_version, purpose, granted, reason)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            principal.id if principal else None,
            principal.name if principal else "",
            principal.role.value if principal else "",
            str(action),
            resident_id,
            profile_version,
            purpose[:500],
            decision.granted,
            decision.reason[:500],
        ),
    )


def read_audit(
    conn: Conn,
    *,
    limit: int,
    offset: int,
    resident_id: uuid.UUID | None = None,
    granted: bool | None = None,
) -> tuple[list[AuditEntry], int]:
    """Audit rows, newest first, and how many match in total."""
    where = """WHERE (%(resident)s::uuid IS NULL OR resident_id = %(resident)s)
                 AND (%(granted)s::boolean IS NULL OR granted = %(granted)s)"""
    params = {"resident": resident_id, "granted": granted, "limit": limit, "offset": offset}
    total_row = conn.execute("SELECT count(*) FROM audit_log " + where, params).fetchone()
    with conn.cursor(row_factory=class_row(AuditEntry)) as cur:
        cur.execute(
            "SELECT id, at, principal_id, principal_name, role, action, resident_id,"
            " profile_version, purpose, granted, reason FROM audit_log "
            + where
            + " ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )
        rows = cur.fetchall()
    return rows, int(total_row[0]) if total_row else 0


# ---------------------------------------------------------------------------------------------
# The ``anxin tokens`` command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anxin tokens", description="API principals and tokens.")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a principal and print its token once")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True, help="who the token is for (a role, a desk)")
    create.add_argument("--days", type=int, default=DEFAULT_TOKEN_DAYS, help="lifetime in days")
    create.add_argument(
        "--member",
        action="append",
        default=[],
        type=uuid.UUID,
        help="doctor team member id (doctor; repeatable)",
    )
    create.add_argument(
        "--resident",
        action="append",
        default=[],
        type=uuid.UUID,
        help="resident id of a relative (family; repeatable)",
    )
    sub.add_parser("list", help="list tokens (never the tokens themselves)")
    revoke = sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id", type=uuid.UUID)
    return parser


def main_tokens(argv: Sequence[str] | None = None) -> int:
    """``anxin tokens create|list|revoke``: returns the exit status."""
    from core import db  # noqa: PLC0415 - the command imports what it uses
    from core.settings import load_settings  # noqa: PLC0415

    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        with db.connect(settings.db.url, autocommit=True) as conn:
            if args.command == "create":
                pid = create_principal(
                    conn,
                    args.name,
                    Role(args.role),
                    member_ids=args.member,
                    resident_ids=args.resident,
                )
                issued = issue_token(conn, pid, days=args.days)
                print(f"principal {pid} ({args.role}) {args.name}")
                print(f"token id  {issued.token_id}, expires {issued.expires_at.isoformat()}")
                print(f"token     {issued.token}")
                print("The token is shown once; only its hash is stored.", file=sys.stderr)
            elif args.command == "list":
                for t in list_tokens(conn):
                    state = (
                        "revoked"
                        if t.revoked_at
                        else (
                            "expired"
                            if t.expires_at <= datetime.now(t.expires_at.tzinfo)
                            else "live"
                        )
                    )
                    used = t.last_used_at.isoformat() if t.last_used_at else "never"
                    print(
                        f"{t.id}  {t.role:<10} {state:<7} expires {t.expires_at.isoformat()}"
                        f"  used {used}  {t.principal_name}"
                    )
            elif not revoke_token(conn, args.token_id):
                print(f"no live token {args.token_id}", file=sys.stderr)
                return 1
            else:
                print(f"revoked {args.token_id}")
    except AnxinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
