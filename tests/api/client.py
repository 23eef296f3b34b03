"""What the API tests share: a bearer token of a new principal of a given role and scope."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from devices import access
from devices.access import Role


def bearer(db_url: str, role: Role, **scopes: Any) -> dict[str, str]:
    """The Authorization header of a new principal of ``role`` (with ``scopes``)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        pid = access.create_principal(conn, f"Test {role} {uuid.uuid4().hex[:4]}", role, **scopes)
        return {"Authorization": f"Bearer {access.issue_token(conn, pid).token}"}
