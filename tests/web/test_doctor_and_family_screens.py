"""The family doctor's and the family's screens in a real Chromium, over the real API and
PostgreSQL: a doctor sees the charts of a signed elder and is refused another; a family member
signed in sees their relative's alert and not the other elder's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from playwright.sync_api import expect
from psycopg.types.json import Jsonb

from api.app import create_app
from core.settings import load_settings
from devices.access import Role
from devices.crypto import Keyring
from tests.seed import Seeded, doctor_member_of, insert_alert, seed_registry
from tests.services import serve_api
from tests.web.conftest import DISPATCH_VIEWPORT, PHONE_VIEWPORT, person, shot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEADLINE_MS = 30_000


def _history(db_url: str, device_id: str, resident_id: Any) -> None:
    """A week of vitals (every 10 minutes, a fever on the last evening) and two NEWS2 findings."""
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    rows = []
    for k in range(7 * 24 * 6):
        ts = now - dt.timedelta(minutes=10 * k)
        fever = k < 18
        rows.append(
            (ts, device_id, 1000 + k, now, 96 if fever else 72 + k % 7, 93 if fever else 97,
             22 if fever else 15, 38.6 if fever else 36.6, 135, 82)
        )  # fmt: skip
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO vitals (ts, device_id, seq, received_at, heart_rate, spo2, resp_rate,
                                   temperature, systolic, diastolic)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            rows,
        )
        for minutes, score, severity in ((170, 5, "medium"), (20, 7, "high")):
            at = now - dt.timedelta(minutes=minutes)
            cur.execute(
                """INSERT INTO findings (ts, detected_at, device_id, resident_id, kind, severity,
                                         evidence)
                   VALUES (%s, %s, %s, %s, 'news2', %s, %s)""",
                (at, at, device_id, resident_id, severity, Jsonb({"score": score})),
            )


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[str, Seeded, Seeded]]:
    settings = load_settings(db={"url": db_url})
    keyring = Keyring.from_settings(settings.registry)
    mine = seed_registry(db_url, keyring, device_id="wb-signed-1")
    other = seed_registry(db_url, keyring, device_id="wb-other-1")
    _history(db_url, mine.device_id, mine.resident_id)
    with serve_api(create_app(settings), access_log=False) as url:
        yield url, mine, other


@pytest.fixture
def context(world: tuple[str, Seeded, Seeded], browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport=DISPATCH_VIEWPORT, locale="zh-CN")
    try:
        yield ctx
    finally:
        ctx.close()


def test_a_doctor_sees_the_charts_of_a_signed_elder_and_is_refused_another(
    db_url: str, world: tuple[str, Seeded, Seeded], context: Any
) -> None:
    url, mine, other = world
    doctor = person(
        db_url, "示例医生", Role.DOCTOR, member_ids=[doctor_member_of(db_url, mine.resident_id)]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/app/doctor#token={doctor.token}")
    elders = page.locator("#elders button")
    expect(elders).to_have_count(1, timeout=DEADLINE_MS)  # the signed elder only
    assert "示例老人" in elders.first.inner_text() and "NEWS2 7" in elders.first.inner_text()
    elders.first.click()
    expect(page.locator("#charts svg")).to_have_count(6, timeout=DEADLINE_MS)
    # Every vitals chart and the NEWS2 chart drew a line from the API's data.
    lines = page.locator("#charts path.chart-line")
    drawn = {lines.nth(i).get_attribute("data-series") for i in range(lines.count())}
    assert drawn == {
        "heart_rate",
        "spo2",
        "resp_rate",
        "temperature",
        "systolic",
        "diastolic",
        "news2",
    }
    assert "每分钟汇总" in page.inner_text("#elder")
    shot(page, "screen-doctor")
    # The elder's record as FHIR R4, for the health information platform.
    fhir = page.context.request.get(url + (page.get_attribute("#fhir-link", "href") or ""))
    assert fhir.status == 200 and fhir.json()["resourceType"] == "Bundle"
    page.click("button[data-range='7d']")
    expect(page.locator("#elder")).to_contain_text("每小时汇总", timeout=DEADLINE_MS)
    expect(page.locator("#charts path.chart-line")).to_have_count(7)
    assert "news2" in page.inner_text("#findings")
    shot(page, "screen-doctor-7d")

    # The elder's NEWS2 settings: the RCP chart until the doctor changes it; a bad chart is
    # refused by the API, its error shown by the field.
    expect(page.locator("#news2-pulse-starts")).to_have_value("41, 51, 91, 111, 131")
    assert "标准评分表" in page.inner_text("#news2-status")
    page.fill("#news2-pulse-starts", "36, 41, 91, 111, 131")
    page.fill("#news2-pulse-scores", "3, 1, 0, 1, 2, 5")
    page.click("#news2 button[type=submit]")
    expect(page.locator("#news2-pulse-scores-error")).not_to_be_empty(timeout=DEADLINE_MS)
    assert page.get_attribute("#news2-pulse-scores", "aria-invalid") == "true"
    page.fill("#news2-pulse-scores", "3, 1, 0, 1, 2, 3")
    page.fill("#news2-note", "β 受体阻滞剂,静息心率 45")
    page.click("#news2 button[type=submit]")
    expect(page.locator("#news2-status")).to_contain_text("脉搏", timeout=DEADLINE_MS)
    page.locator("#news2").scroll_into_view_if_needed()
    shot(page, "screen-doctor-news2")
    with psycopg.connect(db_url) as conn:
        bands = conn.execute(
            "SELECT bands FROM news2_settings WHERE resident_id = %s", (mine.resident_id,)
        ).fetchone()
        audited = conn.execute(
            """SELECT count(*) FROM audit_log WHERE principal_id = %s AND resident_id = %s
                  AND action = 'news2.write' AND granted""",
            (doctor.principal_id, mine.resident_id),
        ).fetchone()
    assert bands == ({"pulse": {"starts": [36, 41, 91, 111, 131], "scores": [3, 1, 0, 1, 2, 3]}},)
    assert audited == (1,)

    # Another elder, not signed with the doctor's team: the API refuses, the screen says so.
    page.evaluate(f"location.hash = 'resident={other.resident_id}'")
    expect(page.locator("#refused")).to_contain_text("Forbidden", timeout=DEADLINE_MS)
    with psycopg.connect(db_url) as conn:
        refused = conn.execute(
            """SELECT count(*) FROM audit_log WHERE principal_id = %s AND resident_id = %s
                  AND NOT granted""",
            (doctor.principal_id, other.resident_id),
        ).fetchone()
    assert refused is not None and refused[0] >= 1
    assert errors == []


def test_a_family_member_sees_their_relatives_alert_only(
    db_url: str, world: tuple[str, Seeded, Seeded], browser: Any
) -> None:
    url, mine, other = world
    own_alert, _ = insert_alert(db_url, mine, [])
    insert_alert(db_url, other, [])
    family = person(db_url, "示例子女", Role.FAMILY, resident_ids=[mine.resident_id])
    ctx = browser.new_context(viewport=PHONE_VIEWPORT, locale="zh-CN", is_mobile=True)
    try:
        page = ctx.new_page()
        page.goto(f"{url}/app/family#token={family.token}")
        cards = page.locator("#family-alerts article")
        expect(cards).to_have_count(1, timeout=DEADLINE_MS)
        assert cards.first.get_attribute("data-alert") == str(own_alert)
        assert "SOS 呼救" in cards.first.inner_text()
        assert "3 号楼 2 单元 401" in cards.first.inner_text()
        shot(page, "screen-family-signed-in")
        cards.first.locator("button").click()
        expect(cards.first).to_contain_text("已确认", timeout=DEADLINE_MS)
    finally:
        ctx.close()
    with psycopg.connect(db_url) as conn:
        states = dict(conn.execute("SELECT id, state FROM alerts").fetchall())
    assert states[own_alert] == "acknowledged"
    assert sorted(states.values()) == ["acknowledged", "open"]


def test_the_care_operator_sees_what_needs_doing_and_the_forms_show_the_apis_errors(
    db_url: str, world: tuple[str, Seeded, Seeded], context: Any
) -> None:
    url, mine, other = world
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            """INSERT INTO battery_readings (ts, device_id, seq, received_at, level_pct)
               VALUES (%s, %s, 1, %s, 12)""",
            (now, mine.device_id, now),
        )
        conn.execute(
            "INSERT INTO devices (device_id, kind, status) VALUES ('wb-silent-1', 'pendant', 'active')"
        )
    overdue, _ = insert_alert(db_url, other, [], kind="fall")
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE alerts SET tier = 1 WHERE id = %s", (overdue,))
    operator = person(db_url, "社区服务站", Role.OPERATOR)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/app/operator#token={operator.token}")
    expect(page.locator("#devices")).to_contain_text("wb-signed-1", timeout=DEADLINE_MS)
    devices = page.inner_text("#devices")
    assert "电量低" in devices and "12%" in devices
    assert "wb-silent-1" in devices and "无数据" in devices  # never sent anything
    expect(page.locator("#profiles")).to_contain_text("示例老人")
    expect(page.locator("#overdue")).to_contain_text("跌倒")

    # A new elder without a name and with a bad mobile: the API's errors, next to the fields.
    page.select_option("#new-elder-sex", "female")
    page.fill("#new-elder-birth_date", "1940-05-06")
    page.fill("#new-elder-mobile", "12345")
    page.click("#new-elder button[type=submit]")
    expect(page.locator("#new-elder-name-error")).not_to_be_empty(timeout=DEADLINE_MS)
    expect(page.locator("#new-elder-mobile-error")).not_to_be_empty()
    assert page.get_attribute("#new-elder-name", "aria-invalid") == "true"
    page.evaluate("window.scrollTo(0, 0)")  # the lists at the top (a form's errors: records)
    shot(page, "screen-operator")
    # Fixed, it is saved.
    page.fill("#new-elder-name", "新登记老人")
    page.fill("#new-elder-mobile", "13800138123")
    page.click("#new-elder button[type=submit]")
    expect(page.locator("#new-elder-name")).to_have_value("", timeout=DEADLINE_MS)  # saved
    expect(page.locator("#new-elder-name-error")).to_be_empty()
    with psycopg.connect(db_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM residents WHERE name = '新登记老人'"
        ).fetchone() == (1,)
    assert errors == []
