"""A delivery rendered at send time: a template for people, the emergency record for 120."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import psycopg
from psycopg.rows import dict_row

from alerts import ack, templates, visit_reminders
from alerts.addresses import AddressBook
from alerts.cap import render_cap
from alerts.channels import OutboundMessage
from alerts.dispatch120 import build_record, record_json
from alerts.outbox import Delivery, DeliveryConfig
from core.settings import Settings
from devices.crypto import Keyring
from devices.repository import channel_opener

Conn = psycopg.Connection[Any]


AckLink = Callable[[Conn, Delivery], str | None]
"""Gives the acknowledge link of a delivery (the alert core mints single-use tokens)."""


def no_ack_link(_conn: Conn, _delivery: Delivery) -> None:
    return None


def settings_ack_link(settings: Settings) -> AckLink:
    """The alert core's acknowledge links (:func:`alerts.ack.link_for`), for people only: the
    alert service issues tokens to people, not to the 120 centre or the operator."""

    def link(_conn: Conn, delivery: Delivery) -> str | None:
        if delivery.recipient_kind in {"dispatch120", "operator"} or delivery.alert_id is None:
            return None  # a visit reminder has no alert to acknowledge
        return ack.link_for(settings.alerts, delivery.idempotency_key)

    return link


def _one_line_address(row: Mapping[str, Any]) -> str | None:
    parts = [row.get(k) for k in ("province", "city", "district", "street", "community_name")]
    text = "".join(p for p in parts if p)
    extra = row.get("address_text")
    return (f"{text} {extra}".strip() if extra else text) or None


def _detail(evidence: Mapping[str, Any] | None) -> str | None:
    if not evidence:
        return None
    simple = [f"{k}={v}" for k, v in evidence.items() if isinstance(v, int | float | str | bool)][
        :6
    ]
    return ", ".join(simple) or None


def message_context(
    conn: Conn, delivery: Delivery, *, ack_url: str | None, timezone: str
) -> templates.MessageContext:
    """What the template of ``delivery`` needs, read from the alert and the registry."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """SELECT a.id, a.kind, a.severity, a.device_id, a.occurrences, a.first_at, a.evidence,
                      r.name, r.province, r.city, r.district, r.street, r.community_name,
                      r.address_text, r.lat, r.lon, h.name AS hospital_name
                 FROM alerts a
                 LEFT JOIN residents r ON r.id = a.resident_id
                 LEFT JOIN hospitals h ON h.id = r.hospital_id
                WHERE a.id = %s""",
            (delivery.alert_id,),
        ).fetchone()
        if row is None:
            raise LookupError(
                f"Alert {delivery.alert_id} of delivery {delivery.id} does not exist."
            )
        pos = cur.execute(
            """SELECT lat, lon FROM positions WHERE device_id = %s
               ORDER BY ts DESC LIMIT 1""",
            (row["device_id"],),
        ).fetchone()
        failed_recipient = failed_reason = None
        if delivery.template == templates.Template.GIVE_UP and delivery.recipient_ref:
            failed = cur.execute(
                """SELECT recipient_name, recipient_kind, channel, last_error FROM deliveries
                   WHERE id::text = %s""",
                (delivery.recipient_ref,),
            ).fetchone()
            if failed is not None:
                name = failed["recipient_name"] or failed["recipient_kind"]
                failed_recipient = f"{name} ({failed['recipient_kind']}, {failed['channel']})"
                failed_reason = failed["last_error"]
    position = None
    if pos is not None:
        position = f"{pos['lat']:.5f},{pos['lon']:.5f}"
    elif row["lat"] is not None:
        position = f"{row['lat']:.5f},{row['lon']:.5f}"
    return templates.MessageContext(
        alert_id=row["id"],
        kind=row["kind"],
        severity=row["severity"],
        resident_name=row["name"],
        device_id=row["device_id"],
        occurred_at=row["first_at"],
        address=_one_line_address(row),
        position=position,
        ack_url=ack_url,
        recipient_name=delivery.recipient_name,
        occurrences=row["occurrences"],
        detail=_detail(row["evidence"]),
        hospital_name=row["hospital_name"],
        failed_recipient=failed_recipient,
        failed_reason=failed_reason,
        timezone=timezone,
    )


def build_message(
    conn: Conn,
    delivery: Delivery,
    *,
    config: DeliveryConfig,
    keyring: Keyring,
    now: dt.datetime,
    ack_link: AckLink = no_ack_link,
) -> OutboundMessage:
    """Render ``delivery`` for its channel (at send time: the freshest data)."""
    if delivery.alert_id is None:
        with conn.transaction():
            book = AddressBook(config.sms_url, config.operator_url, channel_opener(keyring))
            address = book.resolve(conn, delivery.address)
            rendered = visit_reminders.render_delivery(conn, delivery, timezone=config.timezone)
        return OutboundMessage(
            delivery.id, delivery.idempotency_key, address, rendered.title, rendered.body
        )
    alert_id = delivery.alert_id
    with conn.transaction():
        ack_url = ack_link(conn, delivery)
        # The outbox holds references; the URL (with its token) is read only to send.
        book = AddressBook(config.sms_url, config.operator_url, channel_opener(keyring))
        delivery = replace(delivery, address=book.resolve(conn, delivery.address))
        if delivery.channel == "dispatch120":
            record = build_record(conn, alert_id, keyring=keyring, now=now, delivery_id=delivery.id)
            if config.dispatch120_format == "cap":
                body = render_cap(
                    record,
                    identifier=delivery.idempotency_key,
                    sender=config.cap_sender,
                    timezone=config.timezone,
                    ack_url=ack_url,
                ).decode()
                content_type = "application/cap+xml; charset=utf-8"
            else:
                body = record_json(record).decode()
                content_type = "application/json"
            return OutboundMessage(
                delivery.id, delivery.idempotency_key, delivery.address,
                f"anxin alert {delivery.alert_id}", body, content_type,
            )  # fmt: skip
        ctx = message_context(conn, delivery, ack_url=ack_url, timezone=config.timezone)
    rendered = templates.render(delivery.template, delivery.language, ctx)
    return OutboundMessage(
        delivery.id, delivery.idempotency_key, delivery.address, rendered.title, rendered.body
    )


# --- the worker ----------------------------------------------------------------------------
