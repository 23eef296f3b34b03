"""Residents' contracts with family doctor teams (one active at a time)."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from devices.model import (
    ConflictError,
    Contract,
    ContractIn,
    NotFoundError,
    RecordStatus,
    ResidentStatus,
)
from devices.repository._sql import Conn, Row, _all, _one
from devices.repository.residents import _lock_resident


def _contract(row: Row) -> Contract:
    return Contract(
        id=row["id"],
        resident_id=row["resident_id"],
        team_id=row["team_id"],
        service_package=row["service_package"],
        starts_on=row["starts_on"],
        ends_on=row["ends_on"],
        status=row["status"],
    )


def sign_contract(conn: Conn, resident_id: UUID, contract: ContractIn) -> Contract:
    """Sign the resident with a team; an earlier active contract ends (one active at a time)."""
    with conn.transaction():
        if _lock_resident(conn, resident_id) is not ResidentStatus.ACTIVE:
            raise ConflictError(f"Resident {resident_id} is not active.")
        team = conn.execute(
            "SELECT status FROM doctor_teams WHERE id = %s", (contract.team_id,)
        ).fetchone()
        if team is None:
            raise NotFoundError(f"Doctor team {contract.team_id} does not exist.")
        if team[0] != RecordStatus.ACTIVE:
            raise ConflictError(f"Doctor team {contract.team_id} is retired.")
        conn.execute(
            "UPDATE doctor_contracts SET status = 'ended', updated_at = now() "
            "WHERE resident_id = %s AND status = 'active'",
            (resident_id,),
        )
        row = _one(
            conn,
            """INSERT INTO doctor_contracts (resident_id, team_id, service_package, starts_on, ends_on)
               VALUES (%s, %s, %s, %s, %s) RETURNING *""",
            (
                resident_id,
                contract.team_id,
                contract.service_package,
                contract.starts_on,
                contract.ends_on,
            ),
            "Contract",
        )
        return _contract(row)


def end_contract(conn: Conn, contract_id: UUID) -> Contract:
    with conn.transaction():
        row = _one(
            conn,
            "UPDATE doctor_contracts SET status = 'ended', updated_at = now() WHERE id = %s RETURNING *",
            (contract_id,),
            f"Contract {contract_id}",
        )
        return _contract(row)


def list_contracts(conn: Conn, resident_id: UUID) -> list[Contract]:
    rows = _all(
        conn,
        "SELECT * FROM doctor_contracts WHERE resident_id = %s ORDER BY starts_on, created_at",
        (resident_id,),
    )
    return [_contract(r) for r in rows]


def active_contract(conn: Conn, resident_id: UUID, *, on: dt.date | None = None) -> Contract | None:
    """The resident's active contract, if any (and if ``on`` is given, in force on that day)."""
    for c in list_contracts(conn, resident_id):
        if c.status == "active" and (on is None or c.starts_on <= on <= c.ends_on):
            return c
    return None
