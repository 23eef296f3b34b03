"""CAP 1.2 (OASIS Common Alerting Protocol) rendering of the emergency record.

For dispatch systems that take CAP instead of Anxin's JSON. Pure: the record in, UTF-8 XML out.

Mapping: ``identifier`` is the delivery's idempotency key (stable across retries); ``msgType``
is ``Alert`` for the first push of an alert and ``Update`` afterwards, with ``references``
naming the earlier pushes; ``scope`` is ``Restricted`` (health data of one person, for the
dispatch centre only); one ``info`` block in Chinese and one in English, category ``Health``
and ``Rescue``, urgency ``Immediate``, severity ``Extreme`` for emergencies (SOS, falls, NEWS2
7+) and ``Severe`` below; certainty ``Observed`` for an SOS press (a person asked for help) and
``Likely`` for what a detector inferred; ``parameter`` pairs carry the profile; ``area`` has
the address and a ``circle`` around the last known position.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from typing import Final
from zoneinfo import ZoneInfo

from alerts.dispatch120 import EmergencyRecord
from alerts.templates import Language, kind_text

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
#: Circle radius when the position has no accuracy (km).
DEFAULT_RADIUS_KM: Final = 0.05
_ID_UNSAFE = re.compile(r"[\s,<&]")


def cap_time(moment: dt.datetime, timezone: str = "Asia/Shanghai") -> str:
    """CAP's dateTime: seconds, an explicit offset, never ``Z`` (UTC is ``-00:00``)."""
    local = moment.astimezone(ZoneInfo(timezone)).replace(microsecond=0)
    text = local.isoformat()
    return text[:-6] + "-00:00" if text.endswith("+00:00") else text


def _safe_id(text: str) -> str:
    # identifier, sender and references entries may not hold spaces, commas, '<' or '&'.
    return _ID_UNSAFE.sub("_", text)


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _pair(parent: ET.Element, tag: str, name: str, value: str) -> None:
    element = _sub(parent, tag)
    _sub(element, "valueName", name)
    _sub(element, "value", value)


def cap_severity(severity: str) -> str:
    return "Extreme" if severity == "emergency" else "Severe"


def cap_certainty(kind: str) -> str:
    return "Observed" if kind == "sos" else "Likely"


def render_cap(
    record: EmergencyRecord,
    *,
    identifier: str,
    sender: str,
    sent_at: dt.datetime | None = None,
    timezone: str = "Asia/Shanghai",
    ack_url: str | None = None,
) -> bytes:
    """The record as a CAP 1.2 ``alert`` document (UTF-8 bytes with an XML declaration).

    Args:
        record: The emergency record.
        identifier: This message's id, unique per sender (the idempotency key).
        sender: Who sends it, e.g. ``anxin@district.example`` (no spaces or commas).
        sent_at: The ``sent`` time; the record's ``issued_at`` when None.
        timezone: Zone of every time in the document.
        ack_url: Where the dispatcher confirms receipt (``web``), if any.
    """
    sent = cap_time(sent_at or record.issued_at, timezone)
    alert = record.alert
    root = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(root, "identifier", _safe_id(identifier))
    _sub(root, "sender", _safe_id(sender))
    _sub(root, "sent", sent)
    _sub(root, "status", "Actual")
    _sub(root, "msgType", "Update" if record.is_update else "Alert")
    _sub(root, "source", "Anxin")
    _sub(root, "scope", "Restricted")
    _sub(root, "restriction", "120 dispatch only: sensitive personal health information (PIPL)")
    _sub(root, "code", f"anxin-record-v{1}")
    if record.is_update:
        # Each reference is "sender,identifier,sent"; earlier pushes' sent times are not kept,
        # so the alert's first time stands in (receivers match on sender and identifier).
        first = cap_time(alert.first_at, timezone)
        refs = " ".join(f"{_safe_id(sender)},{_safe_id(r)},{first}" for r in record.references)
        _sub(root, "references", refs)
    _sub(root, "incidents", f"anxin-alert-{alert.id}")
    for language in (Language.ZH, Language.EN):
        _info(root, record, language, timezone, ack_url)
    ET.register_namespace("", CAP_NS)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def _info(
    root: ET.Element,
    record: EmergencyRecord,
    language: Language,
    timezone: str,
    ack_url: str | None,
) -> None:
    alert, resident, profile = record.alert, record.resident, record.profile
    zh = language is Language.ZH
    info = _sub(root, "info")
    _sub(info, "language", "zh-CN" if zh else "en-US")
    _sub(info, "category", "Health")
    _sub(info, "category", "Rescue")
    what = kind_text(alert.kind, language)
    _sub(info, "event", what)
    _sub(info, "responseType", "Execute")
    _sub(info, "urgency", "Immediate")
    _sub(info, "severity", cap_severity(alert.severity))
    _sub(info, "certainty", cap_certainty(alert.kind))
    _pair(info, "eventCode", "anxin:kind", alert.kind)
    _sub(info, "onset", cap_time(alert.first_at, timezone))
    _sub(info, "senderName", "安心居家养老平台" if zh else "Anxin home care")
    name = resident.name if resident else (alert.device_id or "?")
    _sub(info, "headline", f"{name}{what}" if zh else f"{name} {what}")
    lines: list[str] = []
    if resident is not None:
        age = (alert.first_at.date() - resident.birth_date).days // 365
        lines.append(
            f"{resident.name},{resident.sex.value},{age} 岁" if zh
            else f"{resident.name}, {resident.sex.value}, {age} years"
        )  # fmt: skip
        phones = [p for p in (resident.landline, resident.mobile) if p]
        if phones:
            lines.append(("电话:" if zh else "Phone: ") + ", ".join(phones))
    if profile is not None:
        label = (
            ("病史", "用药", "过敏", "既往救治") if zh
            else ("Conditions", "Medications", "Allergies", "Past treatment")
        )  # fmt: skip
        for title, items in zip(
            label,
            (profile.conditions, profile.medications, profile.allergies, profile.past_treatments),
            strict=True,
        ):
            if items:
                lines.append(f"{title}: {', '.join(items)}")
        lines.append(("血型: " if zh else "Blood type: ") + profile.blood_type.value)
    if record.vitals.values:
        vitals = ", ".join(f"{k}={v}" for k, v in record.vitals.values.items())
        lines.append(("最新体征: " if zh else "Latest vitals: ") + vitals)
    _sub(info, "description", "\n".join(lines) or ("无登记资料" if zh else "No registry data"))
    notes = profile.responder_notes if profile is not None else None
    instruction = [n for n in (notes.door_code, notes.mobility, notes.other) if n] if notes else []
    if instruction:
        _sub(info, "instruction", "\n".join(instruction))
    if ack_url:
        _sub(info, "web", ack_url)
    contacts = record.care_circle.contacts
    if contacts:
        first = contacts[0]
        _sub(info, "contact", f"{first.name} ({first.role.value}) {' '.join(first.phones)}".strip())
    _pair(info, "parameter", "anxin:alert_id", str(alert.id))
    if resident is not None:
        _pair(info, "parameter", "anxin:resident_id", str(resident.id))
    if profile is not None:
        _pair(info, "parameter", "anxin:profile_version", str(profile.version))
        _pair(info, "parameter", "anxin:blood_type", profile.blood_type.value)
    for contact in contacts:
        _pair(info, "parameter", f"anxin:contact:{contact.role.value}",
              f"{contact.name} {' '.join(contact.phones)}".strip())  # fmt: skip
    _area(info, record, zh)


def _area(info: ET.Element, record: EmergencyRecord, zh: bool) -> None:
    resident, position = record.resident, record.position
    if resident is None and position is None:
        return
    area = _sub(info, "area")
    desc = ""
    if resident is not None:
        a = resident.address
        parts = [a.province, a.city, a.district, a.street, a.community, a.text]
        desc = ("" if zh else " ").join(p for p in parts if p)
    if not desc and position is not None:
        desc = "最后已知位置" if zh else "last known position"
    _sub(area, "areaDesc", desc or ("地址未登记" if zh else "no address on record"))
    if position is not None:
        radius_km = (position.accuracy_m / 1000.0) if position.accuracy_m else DEFAULT_RADIUS_KM
        _sub(area, "circle", f"{position.lat:.6f},{position.lon:.6f} {radius_km:.3f}")
