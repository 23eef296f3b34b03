"""Read an elder's record from the registry and the stream tables and build its FHIR resources
(api/fhir.py): a Bundle per elder, NDJSON of every elder of a community."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api import fhir
from devices import repository as repo
from devices.crypto import Keyring

Conn = psycopg.Connection[Any]

#: Vital signs exported per elder: the last this many days (at most MAX_DAYS).
DEFAULT_DAYS = 7
MAX_DAYS = 31
#: At most this many vitals rows per elder and export (newest first).
MAX_VITALS_ROWS = 20_000


def elder_resources(
    conn: Conn,
    resident_id: uuid.UUID,
    *,
    keyring: Keyring,
    now: dt.datetime,
    days: int = DEFAULT_DAYS,
) -> list[fhir.Json]:
    """Every resource of one elder: the registry's, the last ``days`` of vital signs and NEWS2
    scores, the alerts of those days and any still live, the consents.

    Raises:
        devices.model.NotFoundError: no such resident.
    """
    days = max(1, min(days, MAX_DAYS))
    since = now - dt.timedelta(days=days)
    resident = repo.get_resident(conn, resident_id, keyring=keyring)
    out: list[fhir.Json] = [fhir.patient(resident)]
    out += [fhir.related_person(c) for c in repo.list_contacts(conn, resident_id, keyring=keyring)]
    today = now.date()
    for contract in repo.list_contracts(conn, resident_id):
        team = repo.get_team(conn, contract.team_id, keyring=keyring)
        out.append(fhir.care_team(contract, team, today))
    devices = repo.list_devices(conn, resident_id=resident_id, limit=repo.MAX_PAGE, offset=0)
    out += [fhir.device(d) for d in devices.items]
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """SELECT v.ts, v.device_id, v.seq, v.heart_rate, v.spo2, v.resp_rate, v.temperature,
                      v.systolic, v.diastolic
                 FROM vitals v JOIN devices d ON d.device_id = v.device_id
                WHERE d.resident_id = %s AND v.ts >= %s AND v.ts <= %s
                ORDER BY v.ts DESC LIMIT %s""",
            (resident_id, since, now, MAX_VITALS_ROWS),
        )
        for row in reversed(cur.fetchall()):
            out += fhir.vital_observations(
                resident_id, row["device_id"], row["ts"], row["seq"], row
            )
    for fid, device_id, at, severity, evidence in conn.execute(
        """SELECT id, device_id, ts, severity, evidence FROM findings
            WHERE resident_id = %s AND kind = 'news2' AND ts >= %s AND ts <= %s ORDER BY ts, id""",
        (resident_id, since, now),
    ).fetchall():
        out.append(
            fhir.news2_risk(
                fid, resident_id, device_id=device_id, at=at, severity=severity, evidence=evidence
            )
        )
    for aid, kind, severity, state, first_at, closed_at in conn.execute(
        """SELECT id, kind, severity, state, first_at, closed_at FROM alerts
            WHERE resident_id = %s
              AND (first_at >= %s OR state IN ('pending', 'open', 'acknowledged', 'dispatched'))
            ORDER BY id""",
        (resident_id, since),
    ).fetchall():
        out.append(
            fhir.alert_flag(
                aid,
                resident_id,
                kind=kind,
                severity=severity,
                state=state,
                first_at=first_at,
                closed_at=closed_at,
            )
        )
    out += [fhir.consent(c) for c in repo.list_consents(conn, resident_id)]
    return out


def elder_bundle(
    conn: Conn, resident_id: uuid.UUID, *, keyring: Keyring, now: dt.datetime, base: str,
    days: int = DEFAULT_DAYS,
) -> fhir.Json:  # fmt: skip
    resources = elder_resources(conn, resident_id, keyring=keyring, now=now, days=days)
    return fhir.bundle(resident_id, resources, now, base)


def community_residents(conn: Conn, community_id: uuid.UUID) -> list[uuid.UUID]:
    rows = conn.execute(
        "SELECT id FROM residents WHERE community_id = %s AND status = 'active' ORDER BY id",
        (community_id,),
    ).fetchall()
    return [r[0] for r in rows]


def community_ndjson(
    conn: Conn, residents: list[uuid.UUID], *, keyring: Keyring, now: dt.datetime,
    days: int = DEFAULT_DAYS,
) -> Iterator[str]:  # fmt: skip
    """One resource a line (FHIR Bulk Data's NDJSON), elder after elder."""
    for rid in residents:
        for resource in elder_resources(conn, rid, keyring=keyring, now=now, days=days):
            yield json.dumps(resource, ensure_ascii=False, separators=(",", ":")) + "\n"
