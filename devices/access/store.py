"""The thin shell of access control over psycopg: principals and tokens, the doctor's scope,
lookup grants and the append-only audit log (shared by the API and ``anxin tokens``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from devices.access.rules import (
    DEFAULT_TOKEN_DAYS,
    LAST_USED_RESOLUTION,
    LOOKUP_GRANT_MINUTES,
    MAX_TOKEN_DAYS,
    AccessError,
    Action,
    Decision,
    Principal,
    Role,
    hash_token,
    looks_like_token,
    new_token,
)


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
