"""The page of an acknowledge link, for the family on a phone: what happened, when, where, the
state of the alert and who is on it, with "I'm on my way" and "I can't come".

Pure rendering: :func:`render` takes the facts (:class:`LinkView`) and returns HTML. The page
has no script and loads nothing (the link's route sends a CSP that forbids both); it reloads
itself every :data:`REFRESH_S` seconds so the state stays current while the phone shows it.
Who is on it is said by role only ("the 120 centre", "a contact"), never by name: whoever holds
a link learns that someone is on it, not who (docs/security.md).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

REFRESH_S = 30

KINDS = {
    "sos": ("SOS 呼救", "SOS call"),
    "fall": ("跌倒", "a fall"),
    "news2": ("生命体征危急(NEWS2)", "critical vital signs (NEWS2)"),
    "vital_single": ("生命体征异常", "an abnormal vital sign"),
    "inactivity": ("长时间没有活动", "no movement for a long time"),
    "out_of_bed": ("夜间离床未归", "out of bed at night"),
    "bed_empty": ("床上无人", "bed empty"),
    "device_offline": ("设备离线", "device offline"),
    "battery_low": ("设备电量低", "device battery low"),
    "delivery_failed": ("通知发送失败", "a message failed"),
}
STATES = {
    "pending": ("待确认", "waiting for the wearer to cancel"),
    "open": ("尚无人处理", "nobody is on it yet"),
    "acknowledged": ("已有人处理", "someone is on it"),
    "dispatched": ("救护车已出发", "an ambulance is on its way"),
    "resolved": ("已解决", "resolved"),
    "cancelled": ("已取消", "cancelled"),
    "false_alarm": ("误报", "false alarm"),
}
# Who, by the kind of the actor on the timeline (alerts.model.ActorKind).
WHO = {
    "contact": ("一位联系人", "a contact"),
    "dispatcher": ("120 调度中心", "the 120 centre"),
    "dispatch120": ("120 调度中心", "the 120 centre"),
    "doctor": ("家庭医生", "the family doctor"),
    "operator": ("服务中心", "the care service"),
    "admin": ("服务中心", "the care service"),
}
# What they did: (zh, en) by the timeline's to_state or note.
DID = {
    "acknowledged": ("已确认在处理", "is on it"),
    "dispatched": ("已派出救护车", "sent an ambulance"),
    "resolved": ("已结束警报", "closed the alert"),
    "false_alarm": ("确认是误报", "called it a false alarm"),
    "on my way": ("正在赶去", "is on the way"),
    "can't come": ("去不了", "cannot come"),
    "green channel ready": ("绿色通道已就绪", "green channel ready"),
}
ON_MY_WAY = "on my way"
CANNOT_COME = "can't come"


@dataclass(frozen=True, slots=True)
class Step:
    """One thing someone did on the alert, as the page tells it."""

    at: datetime
    actor_kind: str
    did: str  # a key of DID


@dataclass(frozen=True, slots=True)
class LinkView:
    kind: str
    state: str
    first_at: datetime
    address: str | None
    position: tuple[float, float] | None
    position_at: datetime | None
    steps: Sequence[Step]
    time_zone: str = "Asia/Shanghai"


def _t(pair: tuple[str, str]) -> str:
    return f"{html.escape(pair[0])} <span lang=en>{html.escape(pair[1])}</span>"


def _clock(at: datetime, zone: str) -> str:
    return at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def steps_from(events: Sequence[tuple[datetime, str, str | None, str | None]]) -> list[Step]:
    """The steps of a timeline: (at, actor, to_state, note) rows, oldest first. Pure."""
    out = []
    for at, actor, to_state, note in events:
        kind = actor.split(":", 1)[0]
        if kind not in WHO:
            continue
        key = note if note in DID else to_state
        if key in DID:
            out.append(Step(at, kind, key))
    return out


STYLE = (
    "body{font:1.05rem/1.5 system-ui,sans-serif;margin:0 auto;max-width:30rem;padding:1rem;"
    "color:#17202c}h1{font-size:1.3rem;margin:.2rem 0}.what{font-size:1.4rem;font-weight:700;"
    "color:#c0211f}.state{display:inline-block;padding:.2rem .6rem;border-radius:1rem;"
    "background:#fde8e8}dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem .8rem}"
    "dt{color:#5d6677}dd{margin:0}ol{padding-left:1.2rem}span[lang=en]{color:#5d6677;"
    "font-size:.9em}button{display:block;width:100%;font-size:1.2rem;padding:.9rem;margin:.6rem 0;"
    "border-radius:.6rem;border:2px solid #16324f;background:#fff;color:#16324f}"
    "button.go{background:#16324f;color:#fff}.muted{color:#5d6677}"
)


def render(view: LinkView | None, message: tuple[str, str] | None, *, buttons: bool) -> str:
    """The whole page: the alert (when known), a message, and the two buttons when the link
    may still be used."""
    parts = [
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="robots" content="noindex, nofollow">',
        f'<meta http-equiv="refresh" content="{REFRESH_S}">' if view else "",
        f"<title>安心 Anxin</title><style>{STYLE}</style></head><body>",
        "<h1>安心 Anxin</h1>",
    ]
    if view is not None:
        zone = view.time_zone
        what = KINDS.get(view.kind, (view.kind, view.kind))
        state = STATES.get(view.state, (view.state, view.state))
        parts += [
            f'<p class="what" id="what">{_t(what)}</p>',
            f'<p><span class="state" id="state">{_t(state)}</span></p><dl>',
            f'<dt>时间 <span lang=en>When</span></dt><dd id="when">{_clock(view.first_at, zone)}</dd>',
        ]
        if view.address:
            parts.append(
                f'<dt>地点 <span lang=en>Where</span></dt><dd id="where">{html.escape(view.address)}</dd>'
            )
        if view.position is not None:
            lat, lon = view.position
            at = f" ({_clock(view.position_at, zone)})" if view.position_at else ""
            parts.append(
                f"<dt>最后位置 <span lang=en>Last position</span></dt><dd>{lat:.5f}, {lon:.5f}{at}</dd>"
            )
        parts.append("</dl>")
        parts.append("<h2>谁在处理 <span lang=en>Who is on it</span></h2>")
        if view.steps:
            parts.append('<ol id="who">')
            for s in view.steps:
                parts.append(
                    f"<li>{_clock(s.at, zone)[-5:]} {_t(WHO[s.actor_kind])}: {_t(DID[s.did])}</li>"
                )
            parts.append("</ol>")
        else:
            parts.append(
                '<p id="who" class="muted">还没有人回应。 <span lang=en>Nobody yet.</span></p>'
            )
    if message is not None:
        parts.append(f'<p id="message">{_t(message)}</p>')
    if buttons:
        parts += [
            '<form method="post">',
            '<button class="go" type="submit" name="action" value="coming">'
            "我这就去<br><span>I'm on my way</span></button>",
            '<button type="submit" name="action" value="cannot">'
            "我去不了<br><span>I can't come</span></button></form>",
            '<p class="muted">"我这就去"会通知其他联系人,并告诉老人的设备有人来了。'
            " <span lang=en>“On my way” tells the others and the elder's device.</span></p>",
        ]
    parts.append("</body></html>")
    return "".join(parts)
