"""Caller-number lookup: who is calling, by the residents' and their contacts' phone numbers."""

from __future__ import annotations

from devices.crypto import Keyring
from devices.model import CallerLookup, CallerMatch, MatchVia
from devices.phones import normalise_phone
from devices.repository._sql import Conn, _all
from devices.repository.contacts import _contact
from devices.repository.residents import _RESIDENT_COLS, _resident, get_resident


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
