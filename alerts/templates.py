"""Message templates for people, in Chinese and in English.

Every message says who (the elder), what happened, where, and how to acknowledge. The text is
pure: :func:`render` takes a :class:`MessageContext` (values the delivery worker read from the
database) and returns a title and a body. No clock, no database, no I/O.

Templates are keyed by the ``deliveries.template`` column: ``emergency``, ``medium``,
``device``, ``reminder``, ``escalation``, ``green_channel``, ``give_up``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo

from alerts.model import AlertError


class TemplateError(AlertError, ValueError):
    """Unknown template or language."""


class Template(StrEnum):
    EMERGENCY = "emergency"
    MEDIUM = "medium"
    DEVICE = "device"
    REMINDER = "reminder"
    ESCALATION = "escalation"
    GREEN_CHANNEL = "green_channel"
    GIVE_UP = "give_up"


class Language(StrEnum):
    ZH = "zh"
    EN = "en"


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What a message is about.

    Attributes:
        alert_id: The alert's id (shown so a reply or a phone call can name it).
        kind: Alert kind (``sos``, ``fall_confirmed``, ``news2``, ``device_offline`` ...).
        severity: Alert severity as stored (``emergency``, ``high``, ``medium`` ...).
        resident_name: The elder's name; None when the device is bound to nobody.
        device_id: The device that raised it.
        occurred_at: When it happened (timezone-aware).
        address: Home address as one line, or None.
        position: ``"lat,lon"`` of the last known position, or None.
        ack_url: The single-use acknowledgement link, or None (then the text says how else).
        recipient_name: Whom the message is addressed to.
        occurrences: How many times the finding repeated.
        detail: One line of evidence (``NEWS2 7``, ``battery 8 %``), or None.
        hospital_name: Partner hospital (green channel), or None.
        failed_recipient: For ``give_up``: who could not be reached, through what.
        failed_reason: For ``give_up``: the last error.
        timezone: Zone the time is written in.
    """

    alert_id: int
    kind: str
    severity: str
    resident_name: str | None
    device_id: str | None
    occurred_at: dt.datetime
    address: str | None = None
    position: str | None = None
    ack_url: str | None = None
    recipient_name: str | None = None
    occurrences: int = 1
    detail: str | None = None
    hospital_name: str | None = None
    failed_recipient: str | None = None
    failed_reason: str | None = None
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    title: str
    body: str


_KIND_TEXT: Final[dict[str, tuple[str, str]]] = {
    "sos": ("按下了紧急呼叫(SOS)", "pressed the SOS emergency button"),
    "fall": ("跌倒", "fell"),
    "fall_confirmed": ("跌倒后未能起身", "fell and has not got up"),
    "fall_suspected": ("可能跌倒", "may have fallen"),
    "device_fall": ("设备检测到跌倒", "fell (detected by the device)"),
    "news2": ("生命体征异常(NEWS2 预警)", "has abnormal vital signs (NEWS2 warning)"),
    "vital_single": ("某项生命体征严重异常", "has one vital sign far out of range"),
    "vital_trend": ("生命体征持续变化", "shows a sustained change in vital signs"),
    "inactivity": ("白天长时间没有活动", "has not moved for a long time in the daytime"),
    "out_of_bed": ("夜间离床未归", "left bed at night and has not returned"),
    "bed_empty": ("床上无人", "is not in bed"),
    "device_offline": ("的设备已离线", "has a device that went offline"),
    "battery_low": ("的设备电量低", "has a device with a low battery"),
    "delivery_failed": ("的告警未能送达", "has an alert that could not be delivered"),
}


def kind_text(kind: str, language: Language) -> str:
    """What happened, as a verb phrase after the elder's name."""
    zh, en = _KIND_TEXT.get(kind, (f"发生告警({kind})", f"raised an alert ({kind})"))
    return zh if language is Language.ZH else en


@dataclass(frozen=True, slots=True)
class _Wording:
    """One language's text: the parts every message shares and each template's title and body.

    The strings are ``str.format`` patterns (values put in are never read as patterns). The
    messages may use ``who``, ``subject`` (who and what happened as one phrase), ``greeting``,
    ``fact`` (what, when, where and the detail), ``ack``, ``alert_id``, ``when``, ``where``,
    ``hospital``, ``failed`` and ``reason``.
    """

    subject: str
    wearer: str
    greeting: str
    no_greeting_name: str
    repeats: str
    detail: str
    fact: str
    no_address: str
    ack_link: str
    ack_elsewhere: str
    hospital: str
    failed_recipient: str
    failed_reason: str
    messages: Mapping[Template, tuple[str, str]]


_WORDING: Final[dict[Language, _Wording]] = {
    Language.ZH: _Wording(
        subject="{who}{what}",
        wearer="设备 {device} 的佩戴者",
        greeting="{name}您好:",
        no_greeting_name="您好:",
        repeats="(已重复 {n} 次)",
        detail="\n详情:{detail}",
        fact="{subject}{repeats}。\n时间:{when}\n地点:{where}{detail}",
        no_address="地址未登记",
        ack_link="如您已知晓并在处理,请点击确认:{ack_url}",
        ack_elsewhere="如您已知晓并在处理,请在安心应用中确认告警 #{alert_id},或致电照护中心。",
        hospital="合作医院",
        failed_recipient="未知接收人",
        failed_reason="未知原因",
        messages={
            Template.EMERGENCY: (
                "【安心紧急告警】{subject}",
                "{greeting}\n{fact}\n120 急救中心已同步收到老人的急救档案。\n{ack}",
            ),
            Template.MEDIUM: (
                "【安心健康提醒】{subject}",
                "{greeting}\n{fact}\n请尽快联系老人或上门查看。\n{ack}",
            ),
            Template.DEVICE: (
                "【安心设备提醒】{subject}",
                "{greeting}\n{fact}\n请协助检查设备(充电、佩戴、网络)。\n{ack}",
            ),
            Template.REMINDER: (
                "【安心提醒】告警 #{alert_id} 仍未确认:{subject}",
                "{greeting}\n告警尚无人确认。\n{fact}\n{ack}",
            ),
            Template.ESCALATION: (
                "【安心告警升级】{subject}",
                "{greeting}\n前一层联系人未在规定时间内确认,告警已升级到您。\n{fact}\n{ack}",
            ),
            Template.GREEN_CHANNEL: (
                "【安心绿色通道】{who}即将送达{hospital}",
                "{greeting}\n{fact}\n请为该老人开通绿色通道(优先接诊),急救档案已推送至 120。\n{ack}",
            ),
            Template.GIVE_UP: (
                "【安心运维】告警 #{alert_id} 的通知未能送达",
                "{greeting}\n以下通知多次重试后放弃:{failed}。\n原因:{reason}\n"
                "相关告警:{subject}。\n时间:{when}\n地点:{where}\n请人工联系。",
            ),
        },
    ),
    Language.EN: _Wording(
        subject="{who} {what}",
        wearer="the wearer of device {device}",
        greeting="Dear {name},",
        no_greeting_name="Hello,",
        repeats=" (repeated {n} times)",
        detail="\nDetail: {detail}",
        fact="{subject}{repeats}.\nTime: {when}\nWhere: {where}{detail}",
        no_address="no address on record",
        ack_link="If you are on it, acknowledge here: {ack_url}",
        ack_elsewhere=(
            "If you are on it, acknowledge alert #{alert_id} in the Anxin app "
            "or call the care centre."
        ),
        hospital="the partner hospital",
        failed_recipient="an unknown recipient",
        failed_reason="unknown",
        messages={
            Template.EMERGENCY: (
                "[Anxin EMERGENCY] {subject}",
                "{greeting}\n{fact}\nThe 120 emergency centre has received the emergency profile."
                "\n{ack}",
            ),
            Template.MEDIUM: (
                "[Anxin health warning] {subject}",
                "{greeting}\n{fact}\nPlease call or visit soon.\n{ack}",
            ),
            Template.DEVICE: (
                "[Anxin device notice] {subject}",
                "{greeting}\n{fact}\nPlease help check the device (charging, worn, network).\n{ack}",
            ),
            Template.REMINDER: (
                "[Anxin reminder] alert #{alert_id} not yet acknowledged: {subject}",
                "{greeting}\nNobody has acknowledged this alert yet.\n{fact}\n{ack}",
            ),
            Template.ESCALATION: (
                "[Anxin ESCALATED] {subject}",
                "{greeting}\nThe previous contacts did not acknowledge in time; the alert is now "
                "yours.\n{fact}\n{ack}",
            ),
            Template.GREEN_CHANNEL: (
                "[Anxin green channel] {who} on the way to {hospital}",
                "{greeting}\n{fact}\nPlease open the green channel (priority reception); the "
                "emergency profile went to 120.\n{ack}",
            ),
            Template.GIVE_UP: (
                "[Anxin operations] a message of alert #{alert_id} was not delivered",
                "{greeting}\nGave up after repeated retries: {failed}.\nReason: {reason}\n"
                "About: {subject}.\nTime: {when}\nWhere: {where}\nPlease reach them by hand.",
            ),
        },
    ),
}


def render(template: str, language: str, ctx: MessageContext) -> RenderedMessage:
    """The title and body of one message.

    Raises:
        TemplateError: ``template`` or ``language`` is not one of the known values.
    """
    try:
        tpl = Template(template)
    except ValueError as exc:
        known = ", ".join(t.value for t in Template)
        raise TemplateError(f"Template {template!r} is unknown. Expected one of: {known}.") from exc
    try:
        lang = Language(language)
    except ValueError as exc:
        raise TemplateError(f"Language {language!r} is unknown. Expected 'zh' or 'en'.") from exc
    return _render(lang, tpl, ctx)


def _when(ctx: MessageContext) -> str:
    return ctx.occurred_at.astimezone(ZoneInfo(ctx.timezone)).strftime("%Y-%m-%d %H:%M")


def _where(ctx: MessageContext, w: _Wording) -> str:
    parts = [p for p in (ctx.address, ctx.position and f"({ctx.position})") if p]
    return " ".join(parts) if parts else w.no_address


def _render(lang: Language, tpl: Template, ctx: MessageContext) -> RenderedMessage:
    w = _WORDING[lang]
    who = ctx.resident_name or w.wearer.format(device=ctx.device_id or "?")
    subject = w.subject.format(who=who, what=kind_text(ctx.kind, lang))
    when, where = _when(ctx), _where(ctx, w)
    repeats = w.repeats.format(n=ctx.occurrences) if ctx.occurrences > 1 else ""
    detail = w.detail.format(detail=ctx.detail) if ctx.detail else ""
    fields = {
        "who": who,
        "subject": subject,
        "greeting": (
            w.greeting.format(name=ctx.recipient_name) if ctx.recipient_name else w.no_greeting_name
        ),
        "fact": w.fact.format(
            subject=subject, repeats=repeats, when=when, where=where, detail=detail
        ),
        "ack": (
            w.ack_link.format(ack_url=ctx.ack_url)
            if ctx.ack_url
            else w.ack_elsewhere.format(alert_id=ctx.alert_id)
        ),
        "alert_id": ctx.alert_id,
        "when": when,
        "where": where,
        "hospital": ctx.hospital_name or w.hospital,
        "failed": ctx.failed_recipient or w.failed_recipient,
        "reason": ctx.failed_reason or w.failed_reason,
    }
    title, body = w.messages[tpl]
    return RenderedMessage(title.format(**fields), body.format(**fields))
