"""Who may see what: principals, roles and scopes, API tokens, lookup grants and the audit log.

The rules are a pure core: :func:`decide` takes a :class:`Principal`, an :class:`Action` and,
for what concerns one elder, a :class:`ResidentScope`, and returns a :class:`Decision`; no
database, no clock. The storage functions (:mod:`devices.access.store`) are the thin shell
(sync psycopg, shared by the API and the ``anxin tokens`` command line).

Tokens are ``anx_`` plus 32 random bytes (base64url): they carry 256 bits of entropy, so a plain
SHA-256 of the token is stored (no salt or stretching is needed against guessing), and the token
is shown once. The audit log is append-only in the database (a trigger refuses UPDATE, DELETE
and TRUNCATE; see core/migrations/0005_access.sql).

Modules: :mod:`~devices.access.rules` (the pure core), :mod:`~devices.access.store` (storage)
and :mod:`~devices.access.cli` (``anxin tokens``); every public name is re-exported here.
"""

from __future__ import annotations

from devices.access.cli import (
    main_tokens,
)
from devices.access.rules import (
    DEFAULT_TOKEN_DAYS,
    LAST_USED_RESOLUTION,
    LOOKUP_GRANT_MINUTES,
    MAX_TOKEN_DAYS,
    RULES,
    TOKEN_BYTES,
    TOKEN_PREFIX,
    AccessError,
    Action,
    Decision,
    Principal,
    ResidentScope,
    Role,
    Scope,
    decide,
    hash_token,
    looks_like_token,
    mask_number,
    new_token,
    scope_of,
)
from devices.access.store import (
    CONTRACT_IN_FORCE,
    AuditEntry,
    Conn,
    IssuedToken,
    TokenInfo,
    audit,
    authenticate,
    create_principal,
    grant_lookup,
    has_open_emergency,
    issue_token,
    list_tokens,
    live_lookup_grant,
    open_emergency_alert,
    principal_of,
    read_audit,
    revoke_token,
    signed_teams,
    signed_with,
    signed_with_sql,
    token_id_of,
)

__all__ = [
    "CONTRACT_IN_FORCE",
    "DEFAULT_TOKEN_DAYS",
    "LAST_USED_RESOLUTION",
    "LOOKUP_GRANT_MINUTES",
    "MAX_TOKEN_DAYS",
    "RULES",
    "TOKEN_BYTES",
    "TOKEN_PREFIX",
    "AccessError",
    "Action",
    "AuditEntry",
    "Conn",
    "Decision",
    "IssuedToken",
    "Principal",
    "ResidentScope",
    "Role",
    "Scope",
    "TokenInfo",
    "audit",
    "authenticate",
    "create_principal",
    "decide",
    "grant_lookup",
    "has_open_emergency",
    "hash_token",
    "issue_token",
    "list_tokens",
    "live_lookup_grant",
    "looks_like_token",
    "main_tokens",
    "mask_number",
    "new_token",
    "open_emergency_alert",
    "principal_of",
    "read_audit",
    "revoke_token",
    "scope_of",
    "signed_teams",
    "signed_with",
    "signed_with_sql",
    "token_id_of",
]
