"""Residents: create, read, update, lifecycle status and search."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from psycopg import sql

from devices import access
from devices.crypto import Keyring
from devices.model import (
    Address,
    ConflictError,
    NotFoundError,
    Page,
    RecordStatus,
    Resident,
    ResidentIn,
    ResidentPatch,
    ResidentSearch,
    ResidentStatus,
    Sex,
    SpecialFlag,
    check_resident_transition,
)
from devices.repository._sql import Conn, Row, _all, _ctx, _norm, _one, _page_args
from devices.repository.bindings import _rebind

_RESIDENT_COLS = """r.id, r.name, r.sex, r.birth_date, r.id_number_enc, r.health_card_enc, r.landline,
    r.mobile, r.province, r.city, r.district, r.street, r.community_name, r.address_text, r.lat, r.lon,
    r.flags, r.status, r.community_id, r.hospital_id, r.created_at, r.updated_at"""


def _resident(row: Row, keyring: Keyring) -> Resident:
    rid = row["id"]
    return Resident(
        id=rid,
        name=row["name"],
        sex=Sex(row["sex"]),
        birth_date=row["birth_date"],
        id_number=keyring.open_text(row["id_number_enc"], _ctx("residents", "id_number", rid)),
        health_card=keyring.open_text(
            row["health_card_enc"], _ctx("residents", "health_card", rid)
        ),
        landline=row["landline"],
        mobile=row["mobile"],
        address=Address(
            province=row["province"],
            city=row["city"],
            district=row["district"],
            street=row["street"],
            community=row["community_name"],
            text=row["address_text"],
            lat=row["lat"],
            lon=row["lon"],
        ),
        flags=frozenset(SpecialFlag(f) for f in row["flags"]),
        status=ResidentStatus(row["status"]),
        community_id=row["community_id"],
        hospital_id=row["hospital_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _check_refs(conn: Conn, community_id: UUID | None, hospital_id: UUID | None) -> None:
    for table, what, ref in (
        ("communities", "Community", community_id),
        ("hospitals", "Hospital", hospital_id),
    ):
        if ref is None:
            continue
        row = conn.execute(
            sql.SQL("SELECT status FROM {} WHERE id = %s").format(sql.Identifier(table)), (ref,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{what} {ref} does not exist.")
        if row[0] != RecordStatus.ACTIVE:
            raise ConflictError(f"{what} {ref} is retired.")


def create_resident(conn: Conn, data: ResidentIn, *, keyring: Keyring) -> Resident:
    """Insert a resident (status active). Phone numbers are stored as given and normalised."""
    rid = uuid.uuid4()
    a = data.address
    with conn.transaction():
        _check_refs(conn, data.community_id, data.hospital_id)
        conn.execute(
            """INSERT INTO residents (id, name, sex, birth_date, id_number_enc, health_card_enc,
                   landline, landline_norm, mobile, mobile_norm, province, city, district, street,
                   community_name, address_text, lat, lon, flags, community_id, hospital_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                rid,
                data.name,
                data.sex,
                data.birth_date,
                keyring.seal_text(
                    data.id_number and data.id_number.upper(), _ctx("residents", "id_number", rid)
                ),
                keyring.seal_text(data.health_card, _ctx("residents", "health_card", rid)),
                data.landline,
                _norm(data.landline),
                data.mobile,
                _norm(data.mobile),
                a.province,
                a.city,
                a.district,
                a.street,
                a.community,
                a.text,
                a.lat,
                a.lon,
                sorted(data.flags),
                data.community_id,
                data.hospital_id,
            ),
        )
        return get_resident(conn, rid, keyring=keyring)


def get_resident(conn: Conn, resident_id: UUID, *, keyring: Keyring) -> Resident:
    row = _one(
        conn,
        f"SELECT {_RESIDENT_COLS} FROM residents r WHERE r.id = %s",
        (resident_id,),
        f"Resident {resident_id}",
    )
    return _resident(row, keyring)


def update_resident(
    conn: Conn, resident_id: UUID, patch: ResidentPatch, *, keyring: Keyring
) -> Resident:
    """Change the fields present in ``patch``; ``status`` moves are checked like set_resident_status.

    Raises:
        NotFoundError: no such resident.
        ConflictError: the resident is retired, or the status move is not allowed.
    """
    given = patch.model_fields_set
    with conn.transaction():
        current = _lock_resident(conn, resident_id)
        if current is ResidentStatus.RETIRED:
            raise ConflictError(f"Resident {resident_id} is retired and cannot be changed.")
        sets: list[tuple[str, Any]] = []
        simple = ("name", "sex", "birth_date", "community_id", "hospital_id")
        sets += [(f, getattr(patch, f)) for f in simple if f in given]
        for field in ("name", "sex", "birth_date"):
            if field in given and getattr(patch, field) is None:
                raise ValueError(f"Field {field!r} cannot be cleared.")
        if "community_id" in given or "hospital_id" in given:
            _check_refs(conn, patch.community_id, patch.hospital_id)
        if "id_number" in given:
            value = patch.id_number.upper() if patch.id_number else None
            sets.append(
                (
                    "id_number_enc",
                    keyring.seal_text(value, _ctx("residents", "id_number", resident_id)),
                )
            )
        if "health_card" in given:
            ctx = _ctx("residents", "health_card", resident_id)
            sets.append(("health_card_enc", keyring.seal_text(patch.health_card, ctx)))
        for field in ("landline", "mobile"):
            if field in given:
                value = getattr(patch, field)
                sets += [(field, value), (f"{field}_norm", _norm(value))]
        if "address" in given:
            a = patch.address or Address()
            sets += [
                ("province", a.province),
                ("city", a.city),
                ("district", a.district),
                ("street", a.street),
                ("community_name", a.community),
                ("address_text", a.text),
                ("lat", a.lat),
                ("lon", a.lon),
            ]
        if "flags" in given:
            sets.append(("flags", sorted(patch.flags or ())))
        if "status" in given and patch.status is not None and patch.status is not current:
            check_resident_transition(resident_id, current, patch.status)
            sets.append(("status", patch.status))
        if sets:
            query = sql.SQL("UPDATE residents SET {}, updated_at = now() WHERE id = %s").format(
                sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c, _ in sets)
            )
            conn.execute(query, [v for _, v in sets] + [resident_id])
        return get_resident(conn, resident_id, keyring=keyring)


def _lock_resident(conn: Conn, resident_id: UUID) -> ResidentStatus:
    row = conn.execute(
        "SELECT status FROM residents WHERE id = %s FOR UPDATE", (resident_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"Resident {resident_id} does not exist.")
    return ResidentStatus(row[0])


def set_resident_status(
    conn: Conn, resident_id: UUID, status: ResidentStatus, *, keyring: Keyring
) -> Resident:
    """Move a resident to ``status`` (active <-> moved, -> deceased, -> retired; retired is final).

    Retiring a resident also unbinds their devices (the devices keep their lifecycle state).
    """
    with conn.transaction():
        current = _lock_resident(conn, resident_id)
        check_resident_transition(resident_id, current, status)
        conn.execute(
            "UPDATE residents SET status = %s, updated_at = now() WHERE id = %s",
            (status, resident_id),
        )
        if status is ResidentStatus.RETIRED:
            for (device_id,) in conn.execute(
                "SELECT device_id FROM devices WHERE resident_id = %s", (resident_id,)
            ).fetchall():
                _rebind(conn, device_id, None, None, "system:resident-retired")
        return get_resident(conn, resident_id, keyring=keyring)


def retire_resident(conn: Conn, resident_id: UUID, *, keyring: Keyring) -> Resident:
    return set_resident_status(conn, resident_id, ResidentStatus.RETIRED, keyring=keyring)


def list_residents(
    conn: Conn,
    search: ResidentSearch | None = None,
    *,
    keyring: Keyring,
    limit: int = 50,
    offset: int = 0,
) -> Page[Resident]:
    """Residents matching every filter of ``search``, by name then id, one page at a time."""
    _page_args(limit, offset)
    s = search or ResidentSearch()
    where: list[sql.Composable] = []
    params: list[Any] = []
    if s.name:
        where.append(sql.SQL("lower(r.name) LIKE %s"))
        params.append("%" + _like(s.name.lower()) + "%")
    if s.phone:
        where.append(sql.SQL("(r.landline_norm = %s OR r.mobile_norm = %s)"))
        params += [_norm(s.phone)] * 2
    if s.community_id:
        where.append(sql.SQL("r.community_id = %s"))
        params.append(s.community_id)
    if s.community_name:
        where.append(sql.SQL("lower(r.community_name) LIKE %s"))
        params.append("%" + _like(s.community_name.lower()) + "%")
    if s.flags:
        where.append(sql.SQL("r.flags @> %s::text[]"))
        params.append(sorted(s.flags))
    if s.status:
        where.append(sql.SQL("r.status = %s"))
        params.append(s.status)
    if s.team_id:
        # A doctor's list: contracts in force only (one definition, devices.access).
        where.append(sql.SQL(access.signed_with_sql("r.id")))
        params.append([s.team_id])
    cond = sql.SQL(" AND ").join(where) if where else sql.SQL("true")
    total_row = conn.execute(
        sql.SQL("SELECT count(*) FROM residents r WHERE {}").format(cond), params
    ).fetchone()
    rows = _all(
        conn,
        sql.SQL(
            "SELECT " + _RESIDENT_COLS + " FROM residents r WHERE {} "
            "ORDER BY lower(r.name), r.id LIMIT %s OFFSET %s"
        ).format(cond),
        [*params, limit, offset],
    )
    return Page[Resident](
        items=tuple(_resident(r, keyring) for r in rows),
        total=int(total_row[0]) if total_row else 0,
        limit=limit,
        offset=offset,
    )


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
