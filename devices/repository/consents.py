"""Residents' consents: record, withdraw, list, and the scopes in force."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from devices.model import Consent, ConsentIn, ConsentRelation, ConsentScope
from devices.repository._sql import Conn, Row, _all, _one
from devices.repository.residents import _lock_resident


def _consent(row: Row) -> Consent:
    return Consent(
        id=row["id"],
        resident_id=row["resident_id"],
        given_by=row["given_by"],
        relation=ConsentRelation(row["relation"]),
        given_at=row["given_at"],
        scopes=frozenset(ConsentScope(s) for s in row["scopes"]),
        withdrawn_at=row["withdrawn_at"],
        recorded_at=row["recorded_at"],
    )


def record_consent(conn: Conn, resident_id: UUID, consent: ConsentIn) -> Consent:
    with conn.transaction():
        _lock_resident(conn, resident_id)
        row = _one(
            conn,
            """INSERT INTO resident_consents (resident_id, given_by, relation, given_at, scopes)
               VALUES (%s, %s, %s, %s, %s) RETURNING *""",
            (
                resident_id,
                consent.given_by,
                consent.relation,
                consent.given_at,
                sorted(consent.scopes),
            ),
            "Consent",
        )
        return _consent(row)


def withdraw_consent(conn: Conn, consent_id: int, *, at: dt.datetime) -> Consent:
    with conn.transaction():
        row = _one(
            conn,
            "UPDATE resident_consents SET withdrawn_at = %s WHERE id = %s AND withdrawn_at IS NULL RETURNING *",
            (at, consent_id),
            f"Consent {consent_id} (not withdrawn)",
        )
        return _consent(row)


def list_consents(conn: Conn, resident_id: UUID) -> list[Consent]:
    rows = _all(
        conn,
        "SELECT * FROM resident_consents WHERE resident_id = %s ORDER BY given_at, id",
        (resident_id,),
    )
    return [_consent(r) for r in rows]


def consented_scopes(conn: Conn, resident_id: UUID) -> frozenset[ConsentScope]:
    """The union of the scopes of every consent not withdrawn."""
    return frozenset(
        s for c in list_consents(conn, resident_id) if c.withdrawn_at is None for s in c.scopes
    )
