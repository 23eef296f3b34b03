"""The message templates: every template renders in both languages, and the text is pinned."""

from __future__ import annotations

import datetime as dt

import pytest

from alerts.templates import (
    Language,
    MessageContext,
    RenderedMessage,
    Template,
    TemplateError,
    render,
)

T0 = dt.datetime(2026, 3, 8, 6, 30, tzinfo=dt.UTC)
FALL = MessageContext(
    alert_id=42,
    kind="fall_confirmed",
    severity="emergency",
    resident_name="示例老人",
    device_id="wb-0001",
    occurred_at=T0,
    address="文化路 88 号",
    position="34.78,113.66",
    recipient_name="示例子女",
    occurrences=2,
    detail="NEWS2 7",
)
BATTERY = MessageContext(
    alert_id=7,
    kind="battery_low",
    severity="medium",
    resident_name=None,
    device_id="wb-0002",
    occurred_at=T0,
    ack_url="https://a.example/ack/x",
    failed_recipient="child (sms)",
    failed_reason="timeout {0}",
)


@pytest.mark.parametrize("template", list(Template))
@pytest.mark.parametrize("language", list(Language))
def test_every_template_says_who_and_when(template: Template, language: Language) -> None:
    message = render(template.value, language.value, FALL)
    assert message.title
    assert "示例老人" in message.body and "2026-03-08 14:30" in message.body


# (template, language, context, title, body); braces in a value are text, never a pattern.
PINNED = [
    (
        "emergency",
        "zh",
        FALL,
        "【安心紧急告警】示例老人跌倒后未能起身",
        "示例子女您好:\n示例老人跌倒后未能起身(已重复 2 次)。\n时间:2026-03-08 14:30\n"
        "地点:文化路 88 号 (34.78,113.66)\n详情:NEWS2 7\n120 急救中心已同步收到老人的急救档案。\n"
        "如您已知晓并在处理,请在安心应用中确认告警 #42,或致电照护中心。",
    ),
    (
        "emergency",
        "en",
        FALL,
        "[Anxin EMERGENCY] 示例老人 fell and has not got up",
        "Dear 示例子女,\n示例老人 fell and has not got up (repeated 2 times).\n"
        "Time: 2026-03-08 14:30\nWhere: 文化路 88 号 (34.78,113.66)\nDetail: NEWS2 7\n"
        "The 120 emergency centre has received the emergency profile.\n"
        "If you are on it, acknowledge alert #42 in the Anxin app or call the care centre.",
    ),
    (
        "device",
        "en",
        BATTERY,
        "[Anxin device notice] the wearer of device wb-0002 has a device with a low battery",
        "Hello,\nthe wearer of device wb-0002 has a device with a low battery.\n"
        "Time: 2026-03-08 14:30\nWhere: no address on record\n"
        "Please help check the device (charging, worn, network).\n"
        "If you are on it, acknowledge here: https://a.example/ack/x",
    ),
    (
        "give_up",
        "zh",
        BATTERY,
        "【安心运维】告警 #7 的通知未能送达",
        "您好:\n以下通知多次重试后放弃:child (sms)。\n原因:timeout {0}\n"
        "相关告警:设备 wb-0002 的佩戴者的设备电量低。\n时间:2026-03-08 14:30\n地点:地址未登记\n"
        "请人工联系。",
    ),
    (
        "give_up",
        "en",
        BATTERY,
        "[Anxin operations] a message of alert #7 was not delivered",
        "Hello,\nGave up after repeated retries: child (sms).\nReason: timeout {0}\n"
        "About: the wearer of device wb-0002 has a device with a low battery.\n"
        "Time: 2026-03-08 14:30\nWhere: no address on record\nPlease reach them by hand.",
    ),
]


@pytest.mark.parametrize(("template", "language", "ctx", "title", "body"), PINNED)
def test_the_text_is_as_written(
    template: str, language: str, ctx: MessageContext, title: str, body: str
) -> None:
    assert render(template, language, ctx) == RenderedMessage(title, body)


def test_an_unknown_template_or_language_is_refused() -> None:
    with pytest.raises(TemplateError, match="Template 'x' is unknown"):
        render("x", "en", FALL)
    with pytest.raises(TemplateError, match="Language 'fr' is unknown"):
        render("emergency", "fr", FALL)
