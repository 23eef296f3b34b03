"""Family doctor teams and their members."""

from __future__ import annotations

import uuid
from uuid import UUID

from devices.crypto import Keyring
from devices.model import (
    ConflictError,
    DoctorTeam,
    DoctorTeamIn,
    Page,
    RecordStatus,
    TeamMember,
    TeamMemberIn,
    TeamRole,
)
from devices.repository._sql import Conn, Row, _all, _ctx, _norm, _one, _page_args, _retire
from devices.repository.channels import _channel, _channel_cols


def _member(row: Row, keyring: Keyring) -> TeamMember:
    return TeamMember(
        id=row["id"],
        team_id=row["team_id"],
        name=row["name"],
        role=TeamRole(row["role"]),
        phone=row["phone"],
        channel=_channel(row, keyring, _ctx("doctor_team_members", "channel_url", row["id"])),
        status=RecordStatus(row["status"]),
    )


def create_team(conn: Conn, team: DoctorTeamIn, *, keyring: Keyring) -> DoctorTeam:
    tid = uuid.uuid4()
    with conn.transaction():
        conn.execute(
            "INSERT INTO doctor_teams (id, name, institution) VALUES (%s, %s, %s)",
            (tid, team.name, team.institution),
        )
        for member in team.members:
            _insert_member(conn, tid, member, keyring)
        return get_team(conn, tid, keyring=keyring)


def _insert_member(conn: Conn, team_id: UUID, member: TeamMemberIn, keyring: Keyring) -> UUID:
    mid = uuid.uuid4()
    conn.execute(
        """INSERT INTO doctor_team_members (id, team_id, name, role, phone, phone_norm, channel_kind,
               channel_address, channel_url_enc) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            mid,
            team_id,
            member.name,
            member.role,
            member.phone,
            _norm(member.phone),
            *_channel_cols(
                member.channel, keyring, _ctx("doctor_team_members", "channel_url", mid)
            ),
        ),
    )
    return mid


def get_team(conn: Conn, team_id: UUID, *, keyring: Keyring) -> DoctorTeam:
    row = _one(
        conn, "SELECT * FROM doctor_teams WHERE id = %s", (team_id,), f"Doctor team {team_id}"
    )
    members = _all(
        conn,
        "SELECT * FROM doctor_team_members WHERE team_id = %s ORDER BY created_at, id",
        (team_id,),
    )
    return DoctorTeam(
        id=row["id"],
        name=row["name"],
        institution=row["institution"],
        members=tuple(_member(m, keyring) for m in members),
        status=RecordStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def add_team_member(
    conn: Conn, team_id: UUID, member: TeamMemberIn, *, keyring: Keyring
) -> TeamMember:
    with conn.transaction():
        if get_team(conn, team_id, keyring=keyring).status is RecordStatus.RETIRED:
            raise ConflictError(f"Doctor team {team_id} is retired.")
        mid = _insert_member(conn, team_id, member, keyring)
        return _member(
            _one(conn, "SELECT * FROM doctor_team_members WHERE id = %s", (mid,), "Member"), keyring
        )


def retire_team_member(conn: Conn, member_id: UUID) -> None:
    with conn.transaction():
        _retire(conn, "doctor_team_members", member_id, "Team member")


def retire_team(conn: Conn, team_id: UUID, *, keyring: Keyring) -> DoctorTeam:
    """Retire a team. Refused while residents hold an active contract with it."""
    with conn.transaction():
        row = conn.execute(
            "SELECT count(*) FROM doctor_contracts WHERE team_id = %s AND status = 'active'",
            (team_id,),
        ).fetchone()
        if row and row[0]:
            raise ConflictError(
                f"Doctor team {team_id} has {row[0]} active contract(s); end them first."
            )
        _retire(conn, "doctor_teams", team_id, "Doctor team")
        return get_team(conn, team_id, keyring=keyring)


def list_teams(
    conn: Conn, *, keyring: Keyring, limit: int = 50, offset: int = 0
) -> Page[DoctorTeam]:
    _page_args(limit, offset)
    total = conn.execute("SELECT count(*) FROM doctor_teams").fetchone()
    ids = conn.execute(
        "SELECT id FROM doctor_teams ORDER BY name, id LIMIT %s OFFSET %s", (limit, offset)
    ).fetchall()
    return Page[DoctorTeam](
        items=tuple(get_team(conn, r[0], keyring=keyring) for r in ids),
        total=int(total[0]) if total else 0,
        limit=limit,
        offset=offset,
    )
