"""Who is told: recipients of an elder from the registry tables (0004_registry)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from alerts.addresses import channel_url, registry_ref, sms_ref
from alerts.model import RecipientKind
from alerts.routing import QuietHours, Recipient
from devices.access import CONTRACT_IN_FORCE

ChannelOpener = Callable[[str, uuid.UUID, bytes], str | None]
"""(table, row id, channel_url_enc) -> the apprise URL; the registry's keyring decrypts it."""

_CONTACT_KIND = {
    "child": RecipientKind.CHILD,
    "spouse": RecipientKind.RELATIVE,
    "relative": RecipientKind.RELATIVE,
    "guardian": RecipientKind.RELATIVE,
    "other": RecipientKind.RELATIVE,
    "work_unit": RecipientKind.WORK_UNIT,
    "neighbour": RecipientKind.NEIGHBOUR,
    "volunteer": RecipientKind.NEIGHBOUR,
    "community_worker": RecipientKind.COMMUNITY_WORKER,
}


class PostgresDirectory:
    """:class:`alerts.routing.RecipientDirectory` over the registry tables of 0004_registry.

    A recipient's address is, in order: its apprise channel (``channel_kind = 'apprise'``, or an
    encrypted ``channel_url_enc`` opened by ``opener``, or a ``channel_address`` that is a URL),
    else the SMS gateway URL of the settings with its first phone number. Family doctors are the
    members (role doctor) of the teams of the resident's contracts in force; the hospital is the
    resident's partner hospital (green-channel phone); the community's phone stands in for a
    community worker when the care circle has none.
    """

    def __init__(self, sms_url: str | None = None, opener: ChannelOpener | None = None) -> None:
        self._sms = sms_url
        self._opener = opener

    def _address(
        self, table: str, row_id: uuid.UUID, *, kind: str | None, addr: str | None,
        enc: bytes | None, phones: Sequence[str],
    ) -> str | None:  # fmt: skip
        # A reference, not the URL: the outbox keeps no tokens (alerts.addresses).
        if channel_url(table, row_id, kind=kind, addr=addr, enc=enc, opener=self._opener):
            return registry_ref(table, row_id)
        phone = next((p for p in phones if p), None)
        if phone and self._sms:
            return sms_ref(phone)
        return None

    def recipients(self, conn: Any, resident_id: uuid.UUID) -> list[Recipient]:
        out: list[Recipient] = []
        for cid, name, role, phones, ckind, caddr, cenc, qs, qe, qtz in conn.execute(
            """SELECT id, name, role, phones, channel_kind, channel_address, channel_url_enc,
                      quiet_start, quiet_end, quiet_tz
                 FROM contacts WHERE resident_id = %s AND status = 'active'
                ORDER BY priority, name""",
            (resident_id,),
        ).fetchall():
            address = self._address(
                "contacts", cid, kind=ckind, addr=caddr, enc=cenc, phones=phones or []
            )
            if address is None:
                continue
            quiet = QuietHours(qs, qe, qtz) if qs is not None and qe is not None and qtz else None
            out.append(
                Recipient(
                    _CONTACT_KIND.get(role, RecipientKind.RELATIVE),
                    address,
                    name,
                    str(cid),
                    quiet=quiet,
                )
            )
        for mid, name, phone, ckind, caddr, cenc in conn.execute(
            f"""SELECT m.id, m.name, m.phone, m.channel_kind, m.channel_address, m.channel_url_enc
                 FROM doctor_contracts c JOIN doctor_team_members m ON m.team_id = c.team_id
                WHERE c.resident_id = %s AND {CONTRACT_IN_FORCE} AND m.status = 'active'
                  AND m.role = 'doctor'
                ORDER BY m.name""",
            (resident_id,),
        ).fetchall():
            address = self._address(
                "doctor_team_members", mid, kind=ckind, addr=caddr, enc=cenc, phones=[phone or ""]
            )
            if address is not None:
                out.append(Recipient(RecipientKind.DOCTOR, address, name, str(mid)))
        row = conn.execute(
            """SELECT h.id, h.name, h.green_channel_phone, c.id, c.name, c.phone
                 FROM residents r LEFT JOIN hospitals h ON h.id = r.hospital_id AND h.status = 'active'
                 LEFT JOIN communities c ON c.id = r.community_id AND c.status = 'active'
                WHERE r.id = %s""",
            (resident_id,),
        ).fetchone()
        if row is not None:
            hid, hname, hphone, comm_id, comm_name, comm_phone = row
            if hid is not None and hphone and self._sms:
                out.append(
                    Recipient(
                        RecipientKind.HOSPITAL,
                        sms_ref(hphone),
                        hname,
                        str(hid),
                    )
                )
            has_worker = any(r.kind is RecipientKind.COMMUNITY_WORKER for r in out)
            if comm_id is not None and comm_phone and self._sms and not has_worker:
                out.append(
                    Recipient(
                        RecipientKind.COMMUNITY_WORKER,
                        sms_ref(comm_phone),
                        comm_name,
                        str(comm_id),
                    )
                )
        return out
