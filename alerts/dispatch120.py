"""The 120 hand-off: the emergency record, its JSON form, and the HMAC signature.

The record is what the dispatcher needs the moment an alert fires, as the 120 empty-nester
emergency care action asks: the alert, the elder and the full emergency profile (conditions,
medications, allergies, blood type, past treatments, notes for responders, the region's
extension fields), the home address and the last known position, the latest vital signs, the
evidence, and the care circle (children, work unit, community, family doctor team, partner
hospital of the green channel).

:func:`build_record` reads it from the database (a sync psycopg connection) at send time, so a
retry carries the freshest position and vitals; :func:`record_json` and :mod:`alerts.cap` turn it
into bytes. :func:`sign_request` and :func:`verify_push` are the two ends of the signature,
``X-Anxin-Signature: sha256=<hex HMAC-SHA256>`` over every header the receiver acts on and the
body (:func:`signed_message`): a captured push replayed with a new ``Idempotency-Key`` or
another ``Content-Type`` no longer verifies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

import orjson
import psycopg
from psycopg.rows import dict_row

from devices import access
from devices import repository as registry
from devices.crypto import Keyring
from devices.model import Community, Contact, DoctorTeam, EmergencyProfile, Hospital, Resident
from devices.registry import RegistryError

Conn = psycopg.Connection[Any]

RECORD_VERSION: Final = 1
SIGNATURE_PREFIX: Final = "sha256="
#: How far back the latest vital signs and position may be to go into the record.
RECENT: Final = dt.timedelta(hours=6)
_VITAL_FIELDS: Final = (
    "heart_rate", "spo2", "resp_rate", "temperature", "systolic", "diastolic", "on_oxygen",
    "consciousness",
)  # fmt: skip


# --- signature -----------------------------------------------------------------------------


SIGNATURE_SCHEME: Final = b"anxin-120-v2"
_SIGNATURE_RE: Final = re.compile(r"^sha256=[0-9a-f]{64}$")


def signed_message(timestamp: str, idempotency_key: str, content_type: str, body: bytes) -> bytes:
    """What the HMAC covers: the scheme, then ``X-Anxin-Timestamp``, ``Idempotency-Key`` and
    ``Content-Type`` as sent, one per line, then the raw body.

    Raises:
        ValueError: a header value holds a line break or is not ASCII (it could not be sent).
    """
    fields = (timestamp, idempotency_key, content_type)
    if any("\n" in f or "\r" in f or not f.isascii() for f in fields):
        raise ValueError("signed header values must be ASCII on one line")
    head = b"\n".join([SIGNATURE_SCHEME, *(f.encode("ascii") for f in fields)])
    return head + b"\n" + body


def sign_request(
    secret: bytes, *, timestamp: str, idempotency_key: str, content_type: str, body: bytes
) -> str:
    """The ``X-Anxin-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of
    :func:`signed_message` under ``secret``."""
    message = signed_message(timestamp, idempotency_key, content_type, body)
    return SIGNATURE_PREFIX + hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify_signature(  # noqa: PLR0917 - the documented call of dispatch centres
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float,
    tolerance: float = 300.0,
    *,
    idempotency_key: str,
    content_type: str,
) -> bool:
    """Whether a 120 push is authentic and fresh; for dispatch centres.

    Args:
        secret: The shared secret (``ANXIN_ALERTS__DISPATCH120_SECRET`` on the Anxin side).
        timestamp: The ``X-Anxin-Timestamp`` header (Unix seconds, as sent).
        body: The raw request body, byte for byte, before any JSON or XML parsing.
        signature: The ``X-Anxin-Signature`` header.
        now: The receiver's current Unix time in seconds.
        tolerance: Largest accepted difference between ``now`` and ``timestamp``, in seconds;
            a replayed old request falls outside it.
        idempotency_key: The ``Idempotency-Key`` header, as sent.
        content_type: The ``Content-Type`` header, as sent.

    Returns:
        True when the HMAC matches (compared in constant time) and the timestamp is within
        ``tolerance`` of ``now``; False otherwise, including for malformed headers.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if not math.isfinite(now) or abs(now - int(timestamp)) > tolerance:
        return False
    if not _SIGNATURE_RE.match(signature) or not idempotency_key:
        return False
    try:
        expected = sign_request(
            key,
            timestamp=timestamp,
            idempotency_key=idempotency_key,
            content_type=content_type,
            body=body,
        )
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)


def verify_push(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = 300.0,
) -> bool:
    """:func:`verify_signature` with the request's headers (names in any case)."""
    lower = {k.lower(): v for k, v in headers.items()}
    return verify_signature(
        secret,
        lower.get("x-anxin-timestamp", ""),
        body,
        lower.get("x-anxin-signature", ""),
        now=now,
        tolerance=tolerance,
        idempotency_key=lower.get("idempotency-key", ""),
        content_type=lower.get("content-type", ""),
    )


# --- closing an alert -----------------------------------------------------------------------


def close_outbox(conn: Conn, alert_id: int, closed_as: str, now: dt.datetime) -> int:
    """What ending an alert does to its outbox; call in the transaction that ends it.

    Messages to people not sent yet are cancelled (the alert is over). The 120 centre is never
    left out: a push still pending is sent as planned and carries the alert's closed state
    (the record is built at send time), and when a push already reached the centre (or is on
    its way), one more push, an update referencing the earlier ones, tells it the alert was
    closed. Returns the number of such updates queued (0 or 1).
    """
    conn.execute(
        """UPDATE deliveries SET status = 'cancelled', last_error = %s
            WHERE alert_id = %s AND status = 'pending' AND channel <> 'dispatch120'""",
        (closed_as, alert_id),
    )
    row = conn.execute(
        """INSERT INTO deliveries (alert_id, tier, recipient_kind, recipient_ref, recipient_name,
                                   channel, address, language, template, idempotency_key,
                                   next_attempt_at, created_at)
           SELECT alert_id, tier, recipient_kind, recipient_ref, recipient_name, channel,
                  address, language, template, %(key)s, %(now)s, %(now)s
             FROM deliveries d
            WHERE d.alert_id = %(alert)s AND d.channel = 'dispatch120'
              AND d.status IN ('delivered', 'sending')
              AND NOT EXISTS (SELECT 1 FROM deliveries p
                               WHERE p.alert_id = d.alert_id AND p.channel = 'dispatch120'
                                 AND p.status = 'pending')
            ORDER BY d.id DESC LIMIT 1
           ON CONFLICT (idempotency_key) DO NOTHING RETURNING id""",
        {"key": f"alert-{alert_id}-closed-{closed_as}-dispatch120", "now": now, "alert": alert_id},
    ).fetchone()
    return 0 if row is None else 1


# --- the record ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertSummary:
    id: int
    kind: str
    severity: str
    state: str
    occurrences: int
    first_at: dt.datetime
    last_at: dt.datetime
    device_id: str | None
    resident_id: UUID | None


@dataclass(frozen=True, slots=True)
class Position:
    """Last known position of one of the elder's devices (WGS-84)."""

    lat: float
    lon: float
    accuracy_m: float | None
    indoor: str | None
    at: dt.datetime | None
    device_id: str | None
    source: str  # "device" or "home" (the registered home coordinates)


@dataclass(frozen=True, slots=True)
class VitalSigns:
    """Latest value of each vital sign within :data:`RECENT`, and when it was measured."""

    values: Mapping[str, float | bool | str]
    measured_at: Mapping[str, dt.datetime]


@dataclass(frozen=True, slots=True)
class CareCircle:
    contacts: tuple[Contact, ...] = ()
    doctor_team: DoctorTeam | None = None
    service_package: str | None = None
    hospital: Hospital | None = None
    community: Community | None = None


@dataclass(frozen=True, slots=True)
class EmergencyRecord:
    """Everything the 120 dispatcher receives for one alert."""

    alert: AlertSummary
    issued_at: dt.datetime
    resident: Resident | None
    profile: EmergencyProfile | None
    position: Position | None
    vitals: VitalSigns
    evidence: Mapping[str, Any]
    care_circle: CareCircle
    consent_share_with_120: bool
    references: tuple[str, ...] = field(default=())
    """Idempotency keys of earlier 120 pushes of the same alert: this one updates them."""

    @property
    def is_update(self) -> bool:
        return bool(self.references)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def record_dict(record: EmergencyRecord) -> dict[str, Any]:
    """The record as JSON-ready values (the documented hand-off format, version 1)."""
    alert = record.alert
    resident = record.resident
    circle = record.care_circle
    position = record.position
    return {
        "version": RECORD_VERSION,
        "type": "update" if record.is_update else "alert",
        "references": list(record.references),
        "issued_at": _iso(record.issued_at),
        "alert": {
            "id": alert.id,
            "kind": alert.kind,
            "severity": alert.severity,
            "state": alert.state,
            "occurrences": alert.occurrences,
            "first_at": _iso(alert.first_at),
            "last_at": _iso(alert.last_at),
            "device_id": alert.device_id,
        },
        "resident": None if resident is None else resident.model_dump(mode="json"),
        "profile": None if record.profile is None else record.profile.model_dump(mode="json"),
        "consent_share_with_120": record.consent_share_with_120,
        "position": None
        if position is None
        else {
            "lat": position.lat,
            "lon": position.lon,
            "accuracy_m": position.accuracy_m,
            "indoor": position.indoor,
            "at": _iso(position.at),
            "device_id": position.device_id,
            "source": position.source,
        },
        "vitals": {
            "values": dict(record.vitals.values),
            "measured_at": {k: _iso(v) for k, v in record.vitals.measured_at.items()},
        },
        "evidence": dict(record.evidence),
        "care_circle": {
            "contacts": [c.model_dump(mode="json", exclude={"channel"}) for c in circle.contacts],
            "doctor_team": None
            if circle.doctor_team is None
            else circle.doctor_team.model_dump(mode="json"),
            "service_package": circle.service_package,
            "hospital": None
            if circle.hospital is None
            else circle.hospital.model_dump(mode="json"),
            "community": None
            if circle.community is None
            else circle.community.model_dump(mode="json"),
        },
    }


def record_json(record: EmergencyRecord) -> bytes:
    """The JSON body of the push (UTF-8, Chinese kept as is)."""
    return orjson.dumps(record_dict(record))


def _strip_channels(team: DoctorTeam) -> DoctorTeam:
    # Members' apprise URLs hold tokens; the dispatcher needs names and phones, not those.
    members = tuple(m.model_copy(update={"channel": None}) for m in team.members)
    return team.model_copy(update={"members": members})


def latest_vitals(rows: Sequence[Mapping[str, Any]]) -> VitalSigns:
    """Per field, the newest non-null value among ``rows`` (any order). Pure."""
    values: dict[str, float | bool | str] = {}
    at: dict[str, dt.datetime] = {}
    for row in sorted(rows, key=lambda r: r["ts"], reverse=True):
        for name in _VITAL_FIELDS:
            value = row.get(name)
            if value is not None and name not in values:
                values[name] = value
                at[name] = row["ts"]
    return VitalSigns(values, at)


def build_record(
    conn: Conn,
    alert_id: int,
    *,
    keyring: Keyring,
    now: dt.datetime,
    delivery_id: int | None = None,
    reader: access.Principal | None = None,
) -> EmergencyRecord:
    """Read the emergency record of ``alert_id`` and audit the profile read.

    Args:
        conn: A sync connection; the reads run in one transaction.
        alert_id: The alert.
        keyring: Decrypts the profile and the sensitive fields.
        now: Issue time, and the end of the window of "latest" vitals and positions.
        delivery_id: The delivery this record is built for; earlier delivered 120 pushes of the
            same alert become ``references`` (the record is then an update).
        reader: Who reads it on a screen (the API's dispatcher console); audited as theirs.
            None: the 120 hand-off itself.

    Raises:
        LookupError: no alert with that id.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """SELECT id, kind, severity, state, occurrences, first_at, last_at, device_id,
                      resident_id, evidence FROM alerts WHERE id = %s""",
            (alert_id,),
        ).fetchone()
        if row is None:
            raise LookupError(f"Alert {alert_id} does not exist.")
        alert = AlertSummary(
            id=row["id"],
            kind=row["kind"],
            severity=row["severity"],
            state=row["state"],
            occurrences=row["occurrences"],
            first_at=row["first_at"],
            last_at=row["last_at"],
            device_id=row["device_id"],
            resident_id=row["resident_id"],
        )
        evidence = row["evidence"] or {}
        references = tuple(
            r["idempotency_key"]
            for r in cur.execute(
                """SELECT idempotency_key FROM deliveries
                   WHERE alert_id = %s AND channel = 'dispatch120' AND status = 'delivered'
                     AND id <> %s ORDER BY id""",
                (alert_id, delivery_id or 0),
            ).fetchall()
        )
        device_ids = [alert.device_id] if alert.device_id else []
        if alert.resident_id is not None:
            device_ids += [
                r["device_id"]
                for r in cur.execute(
                    "SELECT device_id FROM devices WHERE resident_id = %s", (alert.resident_id,)
                ).fetchall()
                if r["device_id"] not in device_ids
            ]
        since = now - RECENT
        vitals_rows = cur.execute(
            f"""SELECT ts, {", ".join(_VITAL_FIELDS)} FROM vitals
                WHERE device_id = ANY(%s) AND ts > %s ORDER BY ts DESC LIMIT 50""",
            (device_ids, since),
        ).fetchall()
        pos = cur.execute(
            """SELECT ts, device_id, lat, lon, accuracy_m, indoor FROM positions
               WHERE device_id = ANY(%s) AND ts > %s ORDER BY ts DESC LIMIT 1""",
            (device_ids, since),
        ).fetchone()
        resident, profile, circle, consent = _registry_part(conn, alert, keyring, reader)
    position: Position | None = None
    if pos is not None:
        position = Position(
            pos["lat"], pos["lon"], pos["accuracy_m"], pos["indoor"], pos["ts"],
            pos["device_id"], "device",
        )  # fmt: skip
    elif resident is not None and resident.address.lat is not None:
        lon = resident.address.lon if resident.address.lon is not None else 0.0
        position = Position(resident.address.lat, lon, None, None, None, None, "home")
    return EmergencyRecord(
        alert=alert,
        issued_at=now,
        resident=resident,
        profile=profile,
        position=position,
        vitals=latest_vitals(vitals_rows),
        evidence=evidence,
        care_circle=circle,
        consent_share_with_120=consent,
        references=references,
    )


def _registry_part(
    conn: Conn, alert: AlertSummary, keyring: Keyring, reader: access.Principal | None = None
) -> tuple[Resident | None, EmergencyProfile | None, CareCircle, bool]:
    if alert.resident_id is None:
        return None, None, CareCircle(), False
    rid = alert.resident_id
    try:
        resident = registry.get_resident(conn, rid, keyring=keyring)
    except RegistryError:
        return None, None, CareCircle(), False
    try:
        profile: EmergencyProfile | None = registry.get_profile(conn, rid, keyring=keyring)
    except RegistryError:
        profile = None
    # Every read of a profile is audited. The hand-off is a read by the system for the
    # emergency (PIPL art. 13(4): to protect life, also without the consent scope).
    access.audit(
        conn,
        reader,
        access.Action.PROFILE_READ,
        access.Decision(
            True,
            f"120 hand-off of alert {alert.id}" if reader is None else f"alert {alert.id}",
        ),
        purpose="120 emergency hand-off"
        if reader is None
        else f"emergency record of alert {alert.id}",
        resident_id=rid,
        profile_version=None if profile is None else profile.version,
    )
    contacts = tuple(registry.list_contacts(conn, rid, keyring=keyring))
    contract = registry.active_contract(conn, rid)
    team = None
    if contract is not None:
        team = _strip_channels(registry.get_team(conn, contract.team_id, keyring=keyring))
    hospital = None
    if resident.hospital_id is not None:
        hospital = registry.get_hospital(conn, resident.hospital_id)
    community = None
    if resident.community_id is not None:
        community = registry.get_community(conn, resident.community_id)
    consent = access_scope_given(registry.consented_scopes(conn, rid))
    circle = CareCircle(
        contacts=contacts,
        doctor_team=team,
        service_package=None if contract is None else contract.service_package,
        hospital=hospital,
        community=community,
    )
    return resident, profile, circle, consent


def access_scope_given(scopes: frozenset[Any]) -> bool:
    """Whether the consent scopes include ``share_with_120``."""
    return any(str(getattr(s, "value", s)) == "share_with_120" for s in scopes)
