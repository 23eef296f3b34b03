"""Notification channels of contacts and doctor team members (the apprise URL is encrypted in
``channel_url_enc``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from devices.crypto import Keyring
from devices.model import Channel, ChannelIn, ChannelKind
from devices.repository._sql import Row, _ctx


def channel_opener(keyring: Keyring) -> Callable[[str, uuid.UUID, bytes], str | None]:
    """Decrypts the apprise URL of a contact or doctor team member (``channel_url_enc``):
    ``opener(table, row_id, sealed)``, for the alert router."""

    def opener(table: str, row_id: uuid.UUID, sealed: bytes) -> str | None:
        return keyring.open_text(sealed, _ctx(table, "channel_url", row_id))

    return opener


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
