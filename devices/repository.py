"""Storage of the registry over psycopg: residents, consents, emergency profiles, care circles,
doctor teams, hospitals, communities, devices and their bindings, caller lookup, key rotation.

Every function takes an open ``psycopg.Connection`` and runs inside ``conn.transaction()`` (a
savepoint when the caller already holds a transaction, so several calls can commit together).
Inputs are validated models from :mod:`devices.model`; outputs are frozen models. Functions
that read or write encrypted fields take the :class:`devices.crypto.Keyring`.

Errors: :class:`NotFoundError` (no such row), :class:`ConflictError` (bad lifecycle move,
duplicate, retired target), :class:`ExtensionError` and :class:`PhoneError` (bad input), all
:class:`devices.registry.RegistryError`. Access control and audit are the API's: these functions
do not know who asks, except the ``by`` recorded with profile versions and bindings.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.placement import Placement
from devices import access
from devices.crypto import Keyring
from devices.model import (
    Address,
    CallerLookup,
    CallerMatch,
    Channel,
    ChannelIn,
    ChannelKind,
    Community,
    CommunityIn,
    CommunityKind,
    ConflictError,
    Consent,
    ConsentIn,
    ConsentRelation,
    ConsentScope,
    Contact,
    ContactIn,
    ContactPatch,
    ContactRole,
    Contract,
    ContractIn,
    Device,
    DeviceIn,
    DeviceKind,
    DeviceState,
    DoctorTeam,
    DoctorTeamIn,
    EmergencyProfile,
    ExtensionField,
    ExtensionFieldIn,
    ExtensionType,
    Hospital,
    HospitalIn,
    MatchVia,
    NotFoundError,
    Page,
    ProfileChange,
    ProfileIn,
    QuietHours,
    RecordStatus,
    Resident,
    ResidentIn,
    ResidentPatch,
    ResidentSearch,
    ResidentStatus,
    Sex,
    SpecialFlag,
    TeamMember,
    TeamMemberIn,
    TeamRole,
    UnverifiedProfile,
    check_device_transition,
    check_resident_transition,
    placement_of,
    validate_extension,
)
from devices.phones import normalise_phone

Conn = psycopg.Connection[Any]
Row = dict[str, Any]
MAX_PAGE = 500


def _norm(phone: str | None) -> str | None:
    return None if phone is None else normalise_phone(phone).national


def _page_args(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit {limit} is out of range. Expected 1 to {MAX_PAGE}.")
    if offset < 0:
        raise ValueError(f"offset {offset} is negative.")


def _one(conn: Conn, query: str | sql.SQL | sql.Composed, params: Sequence[Any], what: str) -> Row:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, params).fetchone()
    if row is None:
        raise NotFoundError(f"{what} does not exist.")
    return row


def _all(conn: Conn, query: str | sql.SQL | sql.Composed, params: Sequence[Any] = ()) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


# --- residents ----------------------------------------------------------------------------

_RESIDENT_COLS = """r.id, r.name, r.sex, r.birth_date, r.id_number_enc, r.health_card_enc, r.landline,
    r.mobile, r.province, r.city, r.district, r.street, r.community_name, r.address_text, r.lat, r.lon,
    r.flags, r.status, r.community_id, r.hospital_id, r.created_at, r.updated_at"""


def _ctx(table: str, column: str, key: object) -> str:
    return f"{table}.{column}:{key}"


def channel_opener(keyring: Keyring) -> Callable[[str, uuid.UUID, bytes], str | None]:
    """Decrypts the apprise URL of a contact or doctor team member (``channel_url_enc``):
    ``opener(table, row_id, sealed)``, for the alert router."""

    def opener(table: str, row_id: uuid.UUID, sealed: bytes) -> str | None:
        return keyring.open_text(sealed, _ctx(table, "channel_url", row_id))

    return opener


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


# --- consent ------------------------------------------------------------------------------


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


# --- emergency profiles -------------------------------------------------------------------


def register_extension_field(conn: Conn, field: ExtensionFieldIn) -> ExtensionField:
    """Add a region's profile field. Names are permanent (old versions may use them)."""
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO profile_extension_fields (name, type, description, required) VALUES (%s, %s, %s, %s)",
                (field.name, field.type, field.description, field.required),
            )
    except psycopg.errors.UniqueViolation as exc:
        raise ConflictError(f"Extension field {field.name!r} is already registered.") from exc
    return ExtensionField(
        name=field.name, type=field.type, description=field.description, required=field.required
    )


def list_extension_fields(conn: Conn) -> list[ExtensionField]:
    return [
        ExtensionField(
            name=r["name"],
            type=ExtensionType(r["type"]),
            description=r["description"],
            required=r["required"],
        )
        for r in _all(
            conn,
            "SELECT name, type, description, required FROM profile_extension_fields ORDER BY name",
        )
    ]


def _profile(row: Row, keyring: Keyring) -> EmergencyProfile:
    body = ProfileIn.model_validate_json(
        keyring.open(bytes(row["body_enc"]), _ctx("emergency_profiles", "body", row["resident_id"]))
    )
    return EmergencyProfile(
        resident_id=row["resident_id"],
        version=row["version"],
        conditions=tuple(body.conditions),
        medications=tuple(body.medications),
        allergies=tuple(body.allergies),
        blood_type=body.blood_type,
        past_treatments=tuple(body.past_treatments),
        responder_notes=body.responder_notes,
        extension=body.extension,
        last_verified_at=row["last_verified_at"],
        last_verified_by=row["last_verified_by"],
        changed_by=row["changed_by"],
        change_kind=ProfileChange(row["change_kind"]),
        changed_at=row["changed_at"],
    )


_PROFILE_COLS = "resident_id, version, body_enc, last_verified_at, last_verified_by, changed_by, change_kind, changed_at"


def put_profile(
    conn: Conn,
    resident_id: UUID,
    profile: ProfileIn,
    *,
    by: str,
    keyring: Keyring,
    verified_at: dt.datetime | None = None,
) -> EmergencyProfile:
    """Store ``profile`` as the resident's next version (the first one creates the profile).

    ``last_verified_*`` carry over from the previous version unless ``verified_at`` is given
    (the writer checked the whole profile with the resident or the family at that time).

    Raises:
        NotFoundError: no such resident.
        ConflictError: the resident is retired.
        ExtensionError: the extension section does not match the registered fields.
    """
    if not by:
        raise ValueError("A profile change needs 'by': who made it.")
    with conn.transaction():
        if _lock_resident(conn, resident_id) is ResidentStatus.RETIRED:
            raise ConflictError(f"Resident {resident_id} is retired; the profile is read-only.")
        extension = validate_extension(list_extension_fields(conn), profile.extension)
        body = profile.model_copy(update={"extension": extension})
        prev = conn.execute(
            "SELECT version, last_verified_at, last_verified_by FROM emergency_profiles "
            "WHERE resident_id = %s ORDER BY version DESC LIMIT 1",
            (resident_id,),
        ).fetchone()
        version = 1 if prev is None else int(prev[0]) + 1
        v_at, v_by = (
            (verified_at, by)
            if verified_at is not None
            else ((prev[1], prev[2]) if prev else (None, None))
        )
        row = _one(
            conn,
            f"""INSERT INTO emergency_profiles (resident_id, version, body_enc, last_verified_at,
                    last_verified_by, changed_by, change_kind)
                VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_PROFILE_COLS}""",
            (
                resident_id,
                version,
                keyring.seal(
                    body.model_dump_json().encode(), _ctx("emergency_profiles", "body", resident_id)
                ),
                v_at,
                v_by,
                by,
                ProfileChange.CREATE if prev is None else ProfileChange.UPDATE,
            ),
            "Profile",
        )
        return _profile(row, keyring)


def get_profile(
    conn: Conn, resident_id: UUID, *, keyring: Keyring, version: int | None = None
) -> EmergencyProfile:
    """The latest version, or ``version``. Audit of the read is the caller's (api) job."""
    if version is None:
        query = f"SELECT {_PROFILE_COLS} FROM emergency_profiles WHERE resident_id = %s ORDER BY version DESC LIMIT 1"
        params: tuple[Any, ...] = (resident_id,)
    else:
        query = f"SELECT {_PROFILE_COLS} FROM emergency_profiles WHERE resident_id = %s AND version = %s"
        params = (resident_id, version)
    label = f"Profile of resident {resident_id}" + (f" version {version}" if version else "")
    return _profile(_one(conn, query, params, label), keyring)


def profile_history(conn: Conn, resident_id: UUID, *, keyring: Keyring) -> list[EmergencyProfile]:
    """Every version, oldest first."""
    rows = _all(
        conn,
        f"SELECT {_PROFILE_COLS} FROM emergency_profiles WHERE resident_id = %s ORDER BY version",
        (resident_id,),
    )
    return [_profile(r, keyring) for r in rows]


def verify_profile(
    conn: Conn, resident_id: UUID, *, by: str, at: dt.datetime, keyring: Keyring
) -> EmergencyProfile:
    """Record that ``by`` checked the profile at ``at``: a new version with the same content."""
    if not by:
        raise ValueError("A verification needs 'by': who checked the profile.")
    with conn.transaction():
        if _lock_resident(conn, resident_id) is ResidentStatus.RETIRED:
            raise ConflictError(f"Resident {resident_id} is retired; the profile is read-only.")
        row = _one(
            conn,
            f"""INSERT INTO emergency_profiles (resident_id, version, body_enc, last_verified_at,
                    last_verified_by, changed_by, change_kind)
                SELECT resident_id, version + 1, body_enc, %s, %s, %s, 'verify'
                FROM emergency_profiles WHERE resident_id = %s ORDER BY version DESC LIMIT 1
                RETURNING {_PROFILE_COLS}""",
            (at, by, by, resident_id),
            f"Profile of resident {resident_id}",
        )
        return _profile(row, keyring)


def unverified_profiles(conn: Conn, *, months: int, now: dt.datetime) -> list[UnverifiedProfile]:
    """Active or moved residents whose profile was last verified more than ``months`` before
    ``now``, never verified, or missing; oldest verification first (never verified first)."""
    if months < 0:
        raise ValueError(f"months {months} is negative.")
    rows = _all(
        conn,
        """SELECT r.id, r.name, p.version, p.last_verified_at, p.last_verified_by
           FROM residents r
           LEFT JOIN LATERAL (SELECT version, last_verified_at, last_verified_by FROM emergency_profiles
                              WHERE resident_id = r.id ORDER BY version DESC LIMIT 1) p ON true
           WHERE r.status IN ('active', 'moved')
             AND (p.last_verified_at IS NULL OR p.last_verified_at < %s::timestamptz - make_interval(months => %s))
           ORDER BY p.last_verified_at NULLS FIRST, lower(r.name), r.id""",
        (now, months),
    )
    return [
        UnverifiedProfile(
            resident_id=r["id"],
            name=r["name"],
            version=r["version"],
            last_verified_at=r["last_verified_at"],
            last_verified_by=r["last_verified_by"],
        )
        for r in rows
    ]


# --- channels -----------------------------------------------------------------------------


def _channel_cols(channel: ChannelIn | None, keyring: Keyring, ctx: str) -> tuple[Any, Any, Any]:
    if channel is None:
        return None, None, None
    return channel.kind, channel.address, keyring.seal_text(channel.url, ctx)


def _channel(row: Row, keyring: Keyring, ctx: str) -> Channel | None:
    url = keyring.open_text(row["channel_url_enc"], ctx)
    if url is None and row["channel_kind"] is None:
        return None
    kind = ChannelKind(row["channel_kind"]) if row["channel_kind"] else None
    return Channel(url=url, kind=kind, address=row["channel_address"])


# --- contacts -----------------------------------------------------------------------------


def _contact(row: Row, keyring: Keyring) -> Contact:
    quiet = None
    if row["quiet_start"] is not None:
        quiet = QuietHours(start=row["quiet_start"], end=row["quiet_end"], timezone=row["quiet_tz"])
    return Contact(
        id=row["id"],
        resident_id=row["resident_id"],
        name=row["name"],
        role=ContactRole(row["role"]),
        priority=row["priority"],
        phones=tuple(row["phones"]),
        channel=_channel(row, keyring, _ctx("contacts", "channel_url", row["id"])),
        quiet_hours=quiet,
        status=RecordStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _quiet_cols(q: QuietHours | None) -> tuple[Any, Any, Any]:
    return (None, None, None) if q is None else (q.start, q.end, q.timezone)


def add_contact(conn: Conn, resident_id: UUID, contact: ContactIn, *, keyring: Keyring) -> Contact:
    cid = uuid.uuid4()
    with conn.transaction():
        if _lock_resident(conn, resident_id) is ResidentStatus.RETIRED:
            raise ConflictError(f"Resident {resident_id} is retired.")
        conn.execute(
            """INSERT INTO contacts (id, resident_id, name, role, priority, phones, phones_norm,
                   channel_kind, channel_address, channel_url_enc, quiet_start, quiet_end, quiet_tz)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                cid,
                resident_id,
                contact.name,
                contact.role,
                contact.priority,
                contact.phones,
                [normalise_phone(p).national for p in contact.phones],
                *_channel_cols(contact.channel, keyring, _ctx("contacts", "channel_url", cid)),
                *_quiet_cols(contact.quiet_hours),
            ),
        )
        return get_contact(conn, cid, keyring=keyring)


def get_contact(conn: Conn, contact_id: UUID, *, keyring: Keyring) -> Contact:
    return _contact(
        _one(conn, "SELECT * FROM contacts WHERE id = %s", (contact_id,), f"Contact {contact_id}"),
        keyring,
    )


def update_contact(
    conn: Conn, contact_id: UUID, patch: ContactPatch, *, keyring: Keyring
) -> Contact:
    given = patch.model_fields_set
    with conn.transaction():
        current = get_contact(conn, contact_id, keyring=keyring)
        if current.status is RecordStatus.RETIRED:
            raise ConflictError(f"Contact {contact_id} is retired.")
        sets: list[tuple[str, Any]] = []
        for field in ("name", "role", "priority"):
            if field in given:
                if getattr(patch, field) is None:
                    raise ValueError(f"Field {field!r} cannot be cleared.")
                sets.append((field, getattr(patch, field)))
        if "phones" in given:
            phones = patch.phones or []
            sets += [
                ("phones", phones),
                ("phones_norm", [normalise_phone(p).national for p in phones]),
            ]
        if "channel" in given:
            cols = _channel_cols(
                patch.channel, keyring, _ctx("contacts", "channel_url", contact_id)
            )
            sets += list(
                zip(("channel_kind", "channel_address", "channel_url_enc"), cols, strict=True)
            )
        if "quiet_hours" in given:
            sets += list(
                zip(
                    ("quiet_start", "quiet_end", "quiet_tz"),
                    _quiet_cols(patch.quiet_hours),
                    strict=True,
                )
            )
        if sets:
            _update(conn, "contacts", contact_id, sets)
        return get_contact(conn, contact_id, keyring=keyring)


def _update(conn: Conn, table: str, key: object, sets: Sequence[tuple[str, Any]]) -> None:
    query = sql.SQL("UPDATE {} SET {}, updated_at = now() WHERE id = %s").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c, _ in sets),
    )
    conn.execute(query, [v for _, v in sets] + [key])


def retire_contact(conn: Conn, contact_id: UUID, *, keyring: Keyring) -> Contact:
    with conn.transaction():
        _retire(conn, "contacts", contact_id, "Contact")
        return get_contact(conn, contact_id, keyring=keyring)


def _retire(conn: Conn, table: str, key: object, what: str) -> None:
    cur = conn.execute(
        sql.SQL("UPDATE {} SET status = 'retired', updated_at = now() WHERE id = %s").format(
            sql.Identifier(table)
        ),
        (key,),
    )
    if cur.rowcount == 0:
        raise NotFoundError(f"{what} {key} does not exist.")


def list_contacts(
    conn: Conn, resident_id: UUID, *, keyring: Keyring, include_retired: bool = False
) -> list[Contact]:
    """The resident's care circle, in calling order (priority, then name)."""
    rows = _all(
        conn,
        "SELECT * FROM contacts WHERE resident_id = %s AND (%s OR status = 'active') ORDER BY priority, name, id",
        (resident_id, include_retired),
    )
    return [_contact(r, keyring) for r in rows]


# --- doctor teams and contracts -----------------------------------------------------------


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


# --- hospitals and communities ------------------------------------------------------------


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


# --- devices ------------------------------------------------------------------------------

_DEVICE_COLS = """device_id, kind, placement, status, resident_id, gateway_id, label, expected_interval_s, registered_at,
    activated_at, retired_at, secret_hash IS NOT NULL AS has_secret, revoked_at IS NOT NULL AS revoked"""


def _device(row: Row) -> Device:
    return Device(
        device_id=row["device_id"],
        kind=DeviceKind(row["kind"]),
        placement=placement_of(
            DeviceKind(row["kind"]),
            Placement(row["placement"]) if row["placement"] is not None else None,
        ),
        placement_explicit=row["placement"] is not None,
        status=DeviceState(row["status"]),
        resident_id=row["resident_id"],
        gateway_id=row["gateway_id"],
        label=row["label"],
        expected_interval_s=row["expected_interval_s"],
        registered_at=row["registered_at"],
        activated_at=row["activated_at"],
        retired_at=row["retired_at"],
        has_secret=row["has_secret"],
        revoked=row["revoked"],
    )


def create_device(conn: Conn, data: DeviceIn, *, by: str) -> Device:
    """Register a device in state provisioned, bound as ``data`` says. No secret: credentials
    are made by devices.credentials. Ingest refuses a provisioned device's data until it is
    activated (:func:`set_device_state`)."""
    with conn.transaction():
        try:
            with conn.transaction():
                conn.execute(
                    """INSERT INTO devices (device_id, kind, placement, status, label,
                                            expected_interval_s)
                       VALUES (%s, %s, %s, 'provisioned', %s, %s)""",
                    (
                        data.device_id,
                        data.kind,
                        data.placement,
                        data.label,
                        data.expected_interval_s,
                    ),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(f"Device {data.device_id!r} is already registered.") from exc
        if data.resident_id is not None or data.gateway_id is not None:
            return bind_device(
                conn,
                data.device_id,
                resident_id=data.resident_id,
                gateway_id=data.gateway_id,
                by=by,
            )
        return get_device(conn, data.device_id)


def get_device(conn: Conn, device_id: str) -> Device:
    return _device(
        _one(
            conn,
            f"SELECT {_DEVICE_COLS} FROM devices WHERE device_id = %s",
            (device_id,),
            f"Device {device_id!r}",
        )
    )


def list_devices(
    conn: Conn,
    *,
    resident_id: UUID | None = None,
    gateway_id: str | None = None,
    kind: DeviceKind | None = None,
    status: DeviceState | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[Device]:
    _page_args(limit, offset)
    where: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (
        ("resident_id", resident_id),
        ("gateway_id", gateway_id),
        ("kind", kind),
        ("status", status),
    ):
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    cond = sql.SQL(" AND ").join(where) if where else sql.SQL("true")
    total = conn.execute(
        sql.SQL("SELECT count(*) FROM devices WHERE {}").format(cond), params
    ).fetchone()
    rows = _all(
        conn,
        sql.SQL(
            "SELECT "
            + _DEVICE_COLS
            + " FROM devices WHERE {} ORDER BY device_id LIMIT %s OFFSET %s"
        ).format(cond),
        [*params, limit, offset],
    )
    return Page[Device](
        items=tuple(_device(r) for r in rows),
        total=int(total[0]) if total else 0,
        limit=limit,
        offset=offset,
    )


def bind_device(
    conn: Conn, device_id: str, *, resident_id: UUID | None, gateway_id: str | None, by: str
) -> Device:
    """Bind a device to a resident and (for a child device) to its gateway hub; ``None`` unbinds.

    Raises:
        NotFoundError: the device, resident or gateway does not exist.
        ConflictError: the device or gateway is retired, the resident is not active, the
            gateway is not a hub, a hub is given a gateway, or the gateway serves another resident.
    """
    with conn.transaction():
        device = _lock_device(conn, device_id)
        if device.status is DeviceState.RETIRED:
            raise ConflictError(f"Device {device_id!r} is retired and cannot be bound.")
        if (
            resident_id is not None
            and _lock_resident(conn, resident_id) is not ResidentStatus.ACTIVE
        ):
            raise ConflictError(
                f"Resident {resident_id} is not active; devices bind to active residents only."
            )
        if gateway_id is not None:
            if device.kind is DeviceKind.HUB:
                raise ConflictError(f"Device {device_id!r} is a hub; a hub has no gateway.")
            if gateway_id == device_id:
                raise ConflictError(f"Device {device_id!r} cannot be its own gateway.")
            gateway = _lock_device(conn, gateway_id)
            if gateway.kind is not DeviceKind.HUB:
                raise ConflictError(f"Gateway {gateway_id!r} is a {gateway.kind.value}, not a hub.")
            if gateway.status is DeviceState.RETIRED:
                raise ConflictError(f"Gateway {gateway_id!r} is retired.")
            if gateway.resident_id is not None and gateway.resident_id != resident_id:
                raise ConflictError(
                    f"Gateway {gateway_id!r} serves resident {gateway.resident_id}, not {resident_id}."
                )
        if device.kind is DeviceKind.HUB and device.resident_id != resident_id:
            children = conn.execute(
                "SELECT device_id FROM devices WHERE gateway_id = %s AND status <> 'retired' ORDER BY 1",
                (device_id,),
            ).fetchall()
            if children:
                raise ConflictError(
                    f"Hub {device_id!r} still serves {', '.join(c[0] for c in children)}; rebind them first."
                )
        _rebind(conn, device_id, resident_id, gateway_id, by)
        return get_device(conn, device_id)


def _rebind(
    conn: Conn, device_id: str, resident_id: UUID | None, gateway_id: str | None, by: str
) -> None:
    conn.execute(
        "UPDATE device_bindings SET unbound_at = now() WHERE device_id = %s AND unbound_at IS NULL",
        (device_id,),
    )
    conn.execute(
        "UPDATE devices SET resident_id = %s, gateway_id = %s, updated_at = now() WHERE device_id = %s",
        (resident_id, gateway_id, device_id),
    )
    if resident_id is not None or gateway_id is not None:
        conn.execute(
            "INSERT INTO device_bindings (device_id, resident_id, gateway_id, bound_by) VALUES (%s, %s, %s, %s)",
            (device_id, resident_id, gateway_id, by),
        )


def _lock_device(conn: Conn, device_id: str) -> Device:
    return _device(
        _one(
            conn,
            f"SELECT {_DEVICE_COLS} FROM devices WHERE device_id = %s FOR UPDATE",
            (device_id,),
            f"Device {device_id!r}",
        )
    )


@dataclass(frozen=True, slots=True)
class Binding:
    device_id: str
    resident_id: UUID | None
    gateway_id: str | None
    bound_by: str
    bound_at: dt.datetime
    unbound_at: dt.datetime | None


def binding_history(conn: Conn, device_id: str) -> list[Binding]:
    rows = _all(
        conn,
        "SELECT device_id, resident_id, gateway_id, bound_by, bound_at, unbound_at "
        "FROM device_bindings WHERE device_id = %s ORDER BY bound_at, id",
        (device_id,),
    )
    return [Binding(**r) for r in rows]


def set_device_state(conn: Conn, device_id: str, new: DeviceState) -> Device:
    """Move a device along its lifecycle: provisioned -> active -> retired (retired is final).

    Retiring a hub is refused while devices still use it as their gateway.

    Raises:
        NotFoundError: no such device.
        ConflictError: the move is not allowed.
    """
    with conn.transaction():
        device = _lock_device(conn, device_id)
        check_device_transition(device_id, device.status, new)
        if new is DeviceState.RETIRED and device.kind is DeviceKind.HUB:
            children = conn.execute(
                "SELECT device_id FROM devices WHERE gateway_id = %s AND status <> 'retired' ORDER BY 1",
                (device_id,),
            ).fetchall()
            if children:
                raise ConflictError(
                    f"Hub {device_id!r} still serves {', '.join(c[0] for c in children)}; rebind them first."
                )
        stamp = {DeviceState.ACTIVE: "activated_at", DeviceState.RETIRED: "retired_at"}[new]
        conn.execute(
            sql.SQL(
                "UPDATE devices SET status = %s, {} = now(), updated_at = now() WHERE device_id = %s"
            ).format(sql.Identifier(stamp)),
            (new, device_id),
        )
        return get_device(conn, device_id)


def activate_device(conn: Conn, device_id: str) -> Device:
    return set_device_state(conn, device_id, DeviceState.ACTIVE)


def retire_device(conn: Conn, device_id: str) -> Device:
    return set_device_state(conn, device_id, DeviceState.RETIRED)


# --- caller-number lookup -----------------------------------------------------------------


def lookup_caller(
    conn: Conn, raw: str, *, keyring: Keyring, default_area_code: str | None = None
) -> CallerLookup:
    """Residents whose landline or mobile is ``raw``, then residents one of whose active
    contacts has that number (``via=contact``, the contact attached). Retired residents are
    left out. ``open_alerts`` is empty until the alerts package fills it.

    Raises:
        PhoneError: ``raw`` is not a phone number.
    """
    national = normalise_phone(raw, default_area_code=default_area_code).national
    matches: list[CallerMatch] = []
    rows = _all(
        conn,
        f"""SELECT {_RESIDENT_COLS}, (r.landline_norm = %s) AS by_landline FROM residents r
            WHERE (r.landline_norm = %s OR r.mobile_norm = %s) AND r.status <> 'retired'
            ORDER BY lower(r.name), r.id""",
        (national, national, national),
    )
    for r in rows:
        via = MatchVia.RESIDENT_LANDLINE if r["by_landline"] else MatchVia.RESIDENT_MOBILE
        matches.append(CallerMatch(resident=_resident(r, keyring), via=via))
    contacts = _all(
        conn,
        """SELECT c.* FROM contacts c JOIN residents r ON r.id = c.resident_id
           WHERE c.phones_norm @> ARRAY[%s]::text[] AND c.status = 'active' AND r.status <> 'retired'
           ORDER BY c.priority, c.id""",
        (national,),
    )
    for c in contacts:
        matches.append(
            CallerMatch(
                resident=get_resident(conn, c["resident_id"], keyring=keyring),
                via=MatchVia.CONTACT,
                contact=_contact(c, keyring),
            )
        )
    return CallerLookup(raw=raw, national=national, matches=tuple(matches))


# --- key rotation -------------------------------------------------------------------------

#: Every encrypted column: (table, key column, encrypted column, context column name).
ENCRYPTED_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("residents", "id", "id_number_enc", "id_number"),
    ("residents", "id", "health_card_enc", "health_card"),
    ("contacts", "id", "channel_url_enc", "channel_url"),
    ("doctor_team_members", "id", "channel_url_enc", "channel_url"),
)


def rotate_keys(conn: Conn, *, keyring: Keyring, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every sealed value not under the keyring's current key.

    Run after making a new key current; when it returns, the old key can leave the keyring.
    Idempotent and safe to re-run after an interruption (each batch commits on its own when
    ``conn`` is not in a transaction). Profile versions are re-encrypted in place: their content
    does not change.

    Returns:
        Values re-encrypted per ``table.column``.
    """
    done: dict[str, int] = {}
    targets: list[tuple[str, Iterable[str], str, str]] = [
        (t, [k], c, f"{t}.{name}:{{{k}}}") for t, k, c, name in ENCRYPTED_COLUMNS
    ]
    targets.append(
        (
            "emergency_profiles",
            ["resident_id", "version"],
            "body_enc",
            "emergency_profiles.body:{resident_id}",
        )
    )
    for table, keys, column, ctx_format in targets:
        key_cols = list(keys)
        count = 0
        last: tuple[Any, ...] | None = None
        while True:
            with conn.transaction():
                order = sql.SQL(", ").join(map(sql.Identifier, key_cols))
                after = (
                    sql.SQL("true")
                    if last is None
                    else sql.SQL("({}) > ({})").format(
                        order, sql.SQL(", ").join(sql.Placeholder() * len(key_cols))
                    )
                )
                rows = _all(
                    conn,
                    sql.SQL(
                        "SELECT {}, {} AS sealed FROM {} WHERE {} IS NOT NULL AND {} ORDER BY {} LIMIT %s FOR UPDATE"
                    ).format(
                        order,
                        sql.Identifier(column),
                        sql.Identifier(table),
                        sql.Identifier(column),
                        after,
                        order,
                    ),
                    [*(last or ()), batch_size],
                )
                for row in rows:
                    sealed = bytes(row["sealed"])
                    if not keyring.needs_rotation(sealed):
                        continue
                    ctx = ctx_format.format(**{k: row[k] for k in key_cols})
                    fresh = keyring.seal(keyring.open(sealed, ctx), ctx)
                    cond = sql.SQL(" AND ").join(
                        sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key_cols
                    )
                    conn.execute(
                        sql.SQL("UPDATE {} SET {} = %s WHERE {}").format(
                            sql.Identifier(table), sql.Identifier(column), cond
                        ),
                        [fresh, *(row[k] for k in key_cols)],
                    )
                    count += 1
            if len(rows) < batch_size:
                break
            last = tuple(rows[-1][k] for k in key_cols)
        done[f"{table}.{column}"] = count
    return done
