"""Partner hospitals and communities."""

from __future__ import annotations

from uuid import UUID

from devices.model import (
    Community,
    CommunityIn,
    CommunityKind,
    Hospital,
    HospitalIn,
    Page,
    RecordStatus,
)
from devices.repository._sql import Conn, Row, _all, _norm, _one, _page_args, _retire, _update


def _hospital(row: Row) -> Hospital:
    return Hospital(
        id=row["id"],
        name=row["name"],
        address=row["address"],
        green_channel_phone=row["green_channel_phone"],
        status=RecordStatus(row["status"]),
    )


def create_hospital(conn: Conn, data: HospitalIn) -> Hospital:
    with conn.transaction():
        return _hospital(
            _one(
                conn,
                "INSERT INTO hospitals (name, address, green_channel_phone, phone_norm) VALUES (%s, %s, %s, %s) "
                "RETURNING *",
                (
                    data.name,
                    data.address,
                    data.green_channel_phone,
                    _norm(data.green_channel_phone),
                ),
                "Hospital",
            )
        )


def get_hospital(conn: Conn, hospital_id: UUID) -> Hospital:
    return _hospital(
        _one(
            conn, "SELECT * FROM hospitals WHERE id = %s", (hospital_id,), f"Hospital {hospital_id}"
        )
    )


def update_hospital(conn: Conn, hospital_id: UUID, data: HospitalIn) -> Hospital:
    with conn.transaction():
        get_hospital(conn, hospital_id)
        _update(
            conn,
            "hospitals",
            hospital_id,
            [
                ("name", data.name),
                ("address", data.address),
                ("green_channel_phone", data.green_channel_phone),
                ("phone_norm", _norm(data.green_channel_phone)),
            ],
        )
        return get_hospital(conn, hospital_id)


def retire_hospital(conn: Conn, hospital_id: UUID) -> Hospital:
    with conn.transaction():
        _retire(conn, "hospitals", hospital_id, "Hospital")
        return get_hospital(conn, hospital_id)


def list_hospitals(conn: Conn, *, limit: int = 50, offset: int = 0) -> Page[Hospital]:
    _page_args(limit, offset)
    total = conn.execute("SELECT count(*) FROM hospitals").fetchone()
    rows = _all(
        conn, "SELECT * FROM hospitals ORDER BY name, id LIMIT %s OFFSET %s", (limit, offset)
    )
    return Page[Hospital](
        items=tuple(_hospital(r) for r in rows),
        total=int(total[0]) if total else 0,
        limit=limit,
        offset=offset,
    )


def _community(row: Row) -> Community:
    return Community(
        id=row["id"],
        name=row["name"],
        kind=CommunityKind(row["kind"]),
        address=row["address"],
        phone=row["phone"],
        status=RecordStatus(row["status"]),
    )


def create_community(conn: Conn, data: CommunityIn) -> Community:
    with conn.transaction():
        return _community(
            _one(
                conn,
                "INSERT INTO communities (name, kind, address, phone, phone_norm) VALUES (%s, %s, %s, %s, %s) "
                "RETURNING *",
                (data.name, data.kind, data.address, data.phone, _norm(data.phone)),
                "Community",
            )
        )


def get_community(conn: Conn, community_id: UUID) -> Community:
    return _community(
        _one(
            conn,
            "SELECT * FROM communities WHERE id = %s",
            (community_id,),
            f"Community {community_id}",
        )
    )


def update_community(conn: Conn, community_id: UUID, data: CommunityIn) -> Community:
    with conn.transaction():
        get_community(conn, community_id)
        _update(
            conn,
            "communities",
            community_id,
            [
                ("name", data.name),
                ("kind", data.kind),
                ("address", data.address),
                ("phone", data.phone),
                ("phone_norm", _norm(data.phone)),
            ],
        )
        return get_community(conn, community_id)


def retire_community(conn: Conn, community_id: UUID) -> Community:
    with conn.transaction():
        _retire(conn, "communities", community_id, "Community")
        return get_community(conn, community_id)


def list_communities(conn: Conn, *, limit: int = 50, offset: int = 0) -> Page[Community]:
    _page_args(limit, offset)
    total = conn.execute("SELECT count(*) FROM communities").fetchone()
    rows = _all(
        conn, "SELECT * FROM communities ORDER BY name, id LIMIT %s OFFSET %s", (limit, offset)
    )
    return Page[Community](
        items=tuple(_community(r) for r in rows),
        total=int(total[0]) if total else 0,
        limit=limit,
        offset=offset,
    )
