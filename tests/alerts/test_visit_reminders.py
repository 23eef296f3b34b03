"""Reminders of due home visits through the alerts' outbox: an elder living alone and never
visited is due; the community worker (care circle, an apprise channel) and the signed family
doctor (by the SMS gateway) each get one message through the delivery worker, however many
ticks the reminder clock makes; a recorded visit moves the due day, and the next one is
reminded when it comes."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from typing import Any

import psycopg
import pytest
from apprise.decorators import notify

from alerts.delivery import DeliveryWorker
from alerts.directory import PostgresDirectory
from alerts.outbox import DeliveryConfig
from alerts.visit_reminders import VisitContext, remind_due, render, run_visit_reminders
from core.clock import SystemClock
from devices import repository as registry
from devices import visits
from devices.model import ChannelIn, ContactIn, ContactRole
from devices.repository import channel_opener
from tests.seed import make_keyring, seed_registry
from tests.services import SECRET, load_apprise_plugins, wait_until

SMS = "anxinvisit://sms/{phone}"
ZONE = "Asia/Shanghai"


class CountingClock(SystemClock):
    """The system clock, counting how often it was read (once per reminder tick)."""

    def __init__(self) -> None:
        self.reads = 0

    def now_ms(self) -> int:
        self.reads += 1
        return super().now_ms()


def test_a_reminder_says_who_when_and_how_late() -> None:
    ctx = VisitContext("示例老人", "金水区文化路 88 号", dt.date(2026, 11, 1), None, "网格员")
    zh = render("zh", ctx, dt.date(2026, 11, 9))
    assert zh.title == "【安心随访提醒】示例老人 的上门随访已逾期 8 天"
    assert zh.body.startswith("网格员您好:\n示例老人 的随访应于 2026-11-01 完成")
    assert "上次随访:尚无记录" in zh.body
    en = render("en", ctx, dt.date(2026, 11, 1))
    assert en.title == "[Anxin visit reminder] the home visit to 示例老人 is due today"


@pytest.mark.integration
def test_a_due_visit_is_reminded_once_to_the_worker_and_the_doctor(db_url: str) -> None:
    load_apprise_plugins()
    captured: list[tuple[str, str, str]] = []

    @notify(on="anxinvisit")  # type: ignore[untyped-decorator, no-untyped-call]
    def _capture(
        body: str, title: str, notify_type: str, meta: dict[str, Any], **_: object
    ) -> bool:
        captured.append((f"{meta['host']}{meta.get('fullpath') or ''}", title, body))
        return True

    keyring = make_keyring()
    seeded = seed_registry(db_url, keyring)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE residents SET flags = ARRAY['living_alone'] WHERE id = %s",
            (seeded.resident_id,),
        )
        registry.add_contact(
            conn,
            seeded.resident_id,
            ContactIn(name="网格员", role=ContactRole.COMMUNITY_WORKER, priority=3,
                      phones=["13600136000"], channel=ChannelIn(url="anxinvisit://worker")),
            keyring=keyring,
        )  # fmt: skip
    directory = PostgresDirectory(SMS, opener=channel_opener(keyring))
    worker = DeliveryWorker(
        db_url, DeliveryConfig(dispatch120_secret=SECRET, sms_url=SMS, poll_s=0.05),
        keyring=keyring,
    )  # fmt: skip
    clock = CountingClock()
    stop = threading.Event()
    threads = [
        threading.Thread(target=lambda: asyncio.run(worker.run(stop)), name="worker"),
        threading.Thread(
            target=run_visit_reminders,
            args=(lambda: psycopg.connect(db_url, autocommit=True), directory, clock, stop, 0.05),
            name="visit-reminders",
        ),
    ]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(captured) >= 2, 30, "the two reminders")
        ticks = clock.reads
        wait_until(lambda: clock.reads >= ticks + 10, 30, "ten more reminder ticks")
        wait_until(lambda: worker.delivered >= 2, 30, "the deliveries recorded")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    today = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=8))).date()
    first = today.replace(day=1)
    assert sorted(c[0] for c in captured) == ["sms/13700137000", "worker"]
    by_to = {c[0]: c for c in captured}
    assert by_to["worker"][1].startswith("【安心随访提醒】示例老人 的上门随访")
    assert f"随访应于 {first.isoformat()} 完成" in by_to["worker"][2]
    assert by_to["worker"][2].startswith("网格员您好:")
    assert by_to["sms/13700137000"][2].startswith("示例医生您好:")
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """SELECT d.recipient_kind, d.status, v.due_on FROM deliveries d
                 JOIN visit_reminders v ON v.id = d.visit_reminder_id ORDER BY d.recipient_kind"""
        ).fetchall()
        assert rows == [("community_worker", "delivered", first), ("doctor", "delivered", first)]
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (2,)

        # A visit today: the next one is due a month later, and reminded only then.
        now = dt.datetime.now(dt.UTC)
        visits.record_visit(
            conn, seeded.resident_id,
            visits.VisitIn(visited_at=now, visitor="网格员", visitor_role="community_worker"),
            by="test",
        )  # fmt: skip
        assert remind_due(conn, directory, now=now, timezone=ZONE) == []
        later = now + dt.timedelta(days=40)
        (reminded,) = remind_due(conn, directory, now=later, timezone=ZONE)
        assert reminded.resident_id == seeded.resident_id and reminded.deliveries == 2
        assert reminded.due_on == visits.add_months(
            now.astimezone(dt.timezone(dt.timedelta(hours=8))).date(), 1
        )
        assert remind_due(conn, directory, now=later, timezone=ZONE) == []
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (4,)
