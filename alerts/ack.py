"""Acknowledge by reply: a single-use, expiring token per delivery recipient.

The token is derived from the delivery's idempotency key with HMAC-SHA256 under
``ANXIN_ALERTS__ACK_SECRET`` (:func:`token_for`): the delivery worker renders the same link
on every retry without the token ever being stored; the database holds only its SHA-256
(``ack_tokens.token_hash``), the expiry and when it was used. 144 bits of the HMAC, as 24
URL-safe characters, also serve as a code to type in. :func:`consume` is the pure decision
plus one locked row: a second use, an expired or an unknown token is refused.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from core.settings import AlertsSettings

TOKEN_BYTES = 18


class AckOutcome(enum.StrEnum):
    OK = "ok"
    USED = "used"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class AckUse:
    """What a token use found: the outcome and, when known, the alert and the recipient."""

    outcome: AckOutcome
    alert_id: int | None = None
    recipient: str | None = None
    used_at: datetime | None = None


def token_for(secret: str, idempotency_key: str) -> str:
    """The acknowledge token of one delivery (the same for every retry of it)."""
    mac = hmac.new(secret.encode(), b"anxin-ack:" + idempotency_key.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:TOKEN_BYTES]).decode("ascii")


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def looks_like_token(token: str) -> bool:
    return len(token) == 24 and all(c.isalnum() or c in "-_" for c in token)


def link_for(settings: AlertsSettings, idempotency_key: str) -> str:
    """The acknowledge link to put in a delivery's message."""
    token = token_for(settings.ack_secret.get_secret_value(), idempotency_key)
    return settings.ack_base_url.rstrip("/") + "/" + token


def decide(used_at: datetime | None, expires_at: datetime, now: datetime) -> AckOutcome:
    """Pure: may a token (found in the table) be used at ``now``?"""
    if used_at is not None:
        return AckOutcome.USED
    if now >= expires_at:
        return AckOutcome.EXPIRED
    return AckOutcome.OK


def issue(
    conn: psycopg.Connection[Any],
    settings: AlertsSettings,
    *,
    alert_id: int,
    delivery_id: int | None,
    idempotency_key: str,
    recipient: str,
    now: datetime,
) -> None:
    """Store the hash of the delivery's token (idempotent: the same key issues once)."""
    token = token_for(settings.ack_secret.get_secret_value(), idempotency_key)
    conn.execute(
        """INSERT INTO ack_tokens (alert_id, delivery_id, token_hash, recipient, created_at,
                                   expires_at)
           VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (token_hash) DO NOTHING""",
        (
            alert_id,
            delivery_id,
            hash_token(token),
            recipient[:200],
            now,
            now + timedelta(seconds=settings.ack_ttl_s),
        ),
    )


def peek(conn: psycopg.Connection[Any], token: str, now: datetime) -> AckUse:
    """What using a token would find at ``now``, without using it (the page a GET shows: a
    link preview that fetches it changes nothing)."""
    if not looks_like_token(token):
        return AckUse(AckOutcome.UNKNOWN)
    row = conn.execute(
        "SELECT alert_id, recipient, used_at, expires_at FROM ack_tokens WHERE token_hash = %s",
        (hash_token(token),),
    ).fetchone()
    if row is None:
        return AckUse(AckOutcome.UNKNOWN)
    alert_id, recipient, used_at, expires_at = row
    return AckUse(decide(used_at, expires_at, now), int(alert_id), str(recipient), used_at)


def is_receipt(recipient: str | None) -> bool:
    """Whether a token's use is a receipt rather than an acknowledgement: the partner hospital
    confirms the green channel; that is no one at the elder's side, so escalation goes on."""
    return (recipient or "").startswith("hospital:")


def consume(conn: psycopg.Connection[Any], token: str, now: datetime) -> AckUse:
    """Use a token once; call inside the transaction that acknowledges the alert."""
    if not looks_like_token(token):
        return AckUse(AckOutcome.UNKNOWN)
    row = conn.execute(
        """SELECT id, alert_id, recipient, used_at, expires_at FROM ack_tokens
            WHERE token_hash = %s FOR UPDATE""",
        (hash_token(token),),
    ).fetchone()
    if row is None:
        return AckUse(AckOutcome.UNKNOWN)
    token_id, alert_id, recipient, used_at, expires_at = row
    outcome = decide(used_at, expires_at, now)
    if outcome is AckOutcome.OK:
        conn.execute("UPDATE ack_tokens SET used_at = %s WHERE id = %s", (now, token_id))
        used_at = now
    return AckUse(outcome, int(alert_id), str(recipient), used_at)
