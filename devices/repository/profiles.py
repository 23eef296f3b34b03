"""Emergency profiles: versioned, encrypted, verified by a person at a time."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from devices.crypto import Keyring
from devices.model import (
    ConflictError,
    EmergencyProfile,
    ProfileChange,
    ProfileIn,
    ResidentStatus,
    UnverifiedProfile,
    validate_extension,
)
from devices.repository._sql import Conn, Row, _all, _ctx, _one
from devices.repository.extensions import list_extension_fields
from devices.repository.residents import _lock_resident


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
