"""Addresses in the outbox are references, resolved when a message is sent.

An apprise URL carries the channel's token (a DingTalk or WeChat Work webhook key, an SMS
gateway's API key), and the operator's URL and the SMS gateway's URL are settings that may do
so too. ``deliveries.address`` therefore holds a reference, never such a URL:

====================================  ==============================================
``anxin:contacts/<id>``               the contact's channel (registry, decrypted)
``anxin:doctor_team_members/<id>``    the team member's channel (registry, decrypted)
``anxin:sms/<phone>``                 ``ANXIN_ALERTS__SMS_URL`` with that phone number
``anxin:setting/operator_url``        ``ANXIN_ALERTS__OPERATOR_URL``
====================================  ==============================================

The 120 centre's URL is kept as it is (an endpoint, not a secret: the push is signed with a
key of its own). Any other address (written before references, or by hand) is used as it is.
:func:`channel_url` is the one reading of a registry row's channel, used by the alert
router to decide whom it can reach and by :class:`AddressBook` to reach them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from alerts.model import AlertError

PREFIX: Final = "anxin:"
REGISTRY_TABLES: Final = frozenset({"contacts", "doctor_team_members"})
Opener = Callable[[str, uuid.UUID, bytes], str | None]
"""(table, row id, channel_url_enc) -> the apprise URL; the registry's keyring decrypts it."""


class AddressError(AlertError, LookupError):
    """A reference that cannot be resolved (the row or the setting is gone)."""


def channel_url(
    table: str,
    row_id: uuid.UUID,
    *,
    kind: str | None,
    addr: str | None,
    enc: bytes | None,
    opener: Opener | None,
) -> str | None:
    """The apprise URL of a contact's or team member's channel, or None when it has none."""
    if kind == "apprise" and addr:
        return addr
    if enc is not None and opener is not None:
        url = opener(table, row_id, enc)
        if url:
            return url
    if addr and "://" in addr:
        return addr
    return None


def registry_ref(table: str, row_id: uuid.UUID | str) -> str:
    return f"{PREFIX}{table}/{row_id}"


def sms_ref(phone: str) -> str:
    return f"{PREFIX}sms/{phone}"


def setting_ref(name: str) -> str:
    return f"{PREFIX}setting/{name}"


@dataclass(frozen=True, slots=True)
class AddressBook:
    """Resolves outbox references with the settings and the registry's keyring."""

    sms_url: str | None = None
    operator_url: str | None = None
    opener: Opener | None = None

    def resolve(self, conn: psycopg.Connection[Any], address: str) -> str:
        """The address to send to.

        Raises:
            AddressError: the reference names a row, a phone or a setting that is not there.
        """
        if not address.startswith(PREFIX):
            return address
        kind, _, rest = address.removeprefix(PREFIX).partition("/")
        if kind == "sms":
            if not self.sms_url or not rest:
                raise AddressError(f"Address {address!r}: no SMS gateway (ANXIN_ALERTS__SMS_URL).")
            return self.sms_url.replace("{phone}", rest)
        if kind == "setting":
            if rest == "operator_url" and self.operator_url:
                return self.operator_url
            raise AddressError(f"Address {address!r}: the setting is not set.")
        if kind in REGISTRY_TABLES:
            return self._registry(conn, kind, rest, address)
        raise AddressError(f"Address {address!r} is not a known reference.")

    def _registry(self, conn: psycopg.Connection[Any], table: str, key: str, address: str) -> str:
        try:
            row_id = uuid.UUID(key)
        except ValueError as exc:
            raise AddressError(f"Address {address!r}: {key!r} is not a row id.") from exc
        # The table name is one of REGISTRY_TABLES, checked above.
        row = conn.execute(
            f"SELECT channel_kind, channel_address, channel_url_enc FROM {table} WHERE id = %s",
            (row_id,),
        ).fetchone()
        if row is None:
            raise AddressError(f"Address {address!r}: the row is gone.")
        url = channel_url(table, row_id, kind=row[0], addr=row[1], enc=row[2], opener=self.opener)
        if url is None:
            raise AddressError(f"Address {address!r}: the channel is gone.")
        return url
