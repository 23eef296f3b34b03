"""The care operator's day-to-day work in a real Chromium, over the real API and PostgreSQL:
an overdue home visit recorded from the overdue list, a contact of the care circle added
(with the API's error next to the phone field first) and edited, a device unbound and bound
again, the behaviour settings changed, the monthly report opened as its printable page; an
administrator edits the emergency profile on the same screen."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from playwright.sync_api import expect

from api.app import create_app
from core.settings import load_settings
from devices.access import Role
from devices.crypto import Keyring
from tests.seed import Seeded, seed_registry
from tests.services import serve_api, wait_until
from tests.web.conftest import DISPATCH_VIEWPORT, person, shot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEADLINE_MS = 30_000


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[str, Seeded]]:
    settings = load_settings(db={"url": db_url})
    seeded = seed_registry(db_url, Keyring.from_settings(settings.registry), device_id="wb-op-1")
    with psycopg.connect(db_url) as conn:  # living alone: visited every month, never visited
        conn.execute(
            "UPDATE residents SET flags = ARRAY['living_alone'] WHERE id = %s",
            (seeded.resident_id,),
        )
    with serve_api(create_app(settings), access_log=False) as url:
        yield url, seeded


@pytest.fixture
def page(world: tuple[str, Seeded], browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport=DISPATCH_VIEWPORT, locale="zh-CN")
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


def _one(db_url: str, sql: str, *args: object) -> Any:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(sql, args).fetchone()
    assert row is not None
    return row[0]


def test_the_operator_records_a_visit_and_keeps_the_care_circle_devices_and_settings(
    db_url: str, world: tuple[str, Seeded], page: Any
) -> None:
    url, seeded = world
    rid = str(seeded.resident_id)
    operator = person(db_url, "社区服务站", Role.OPERATOR)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/app/operator#token={operator.token}")

    # The visit due (never visited, living alone); "record" opens the elder's visit form.
    expect(page.locator("#due-visits")).to_contain_text("示例老人", timeout=DEADLINE_MS)
    page.click(f"#due-visits button[data-visit='{rid}']")
    expect(page.locator("#visit-visitor")).to_be_focused(timeout=DEADLINE_MS)
    assert "急救档案含健康信息" in page.inner_text("#profile")  # operators see no health data
    page.click("#visit button[type=submit]")  # no visitor: the API's error by the field
    expect(page.locator("#visit-visitor-error")).not_to_be_empty(timeout=DEADLINE_MS)
    page.fill("#visit-visitor", "网格员 1 号")
    page.fill("#visit-notes", "血压平稳")
    page.click("#visit button[type=submit]")
    expect(page.locator("#visits-of-elder")).to_contain_text("网格员 1 号", timeout=DEADLINE_MS)
    expect(page.locator("#due-visits")).not_to_contain_text("示例老人")
    assert _one(db_url, "SELECT count(*) FROM visits WHERE resident_id = %s", rid) == 1

    # A neighbour for the care circle, with a bad phone first.
    page.fill("#contact-name", "邻居王阿姨")
    page.select_option("#contact-role", "neighbour")
    page.fill("#contact-phones", "12345")
    page.click("#contact button[type=submit]")
    expect(page.locator("#contact-phones-error")).not_to_be_empty(timeout=DEADLINE_MS)
    assert page.get_attribute("#contact-phones", "aria-invalid") == "true"
    shot(page, "screen-operator-records")
    page.fill("#contact-phones", "13700001111")
    page.click("#contact button[type=submit]")
    expect(page.locator("#contacts table")).to_contain_text("邻居王阿姨", timeout=DEADLINE_MS)
    # The child's priority changed through the edit form.
    child = _one(db_url, "SELECT id FROM contacts WHERE name = '示例子女'")
    page.click(f"#contacts button[data-edit='{child}']")
    expect(page.locator("#contact-name")).to_have_value("示例子女")
    page.fill("#contact-priority", "5")
    # The table already shows the neighbour: wait for the save itself, not for the page.
    with page.expect_response(
        lambda r: r.url.endswith(f"/api/v1/contacts/{child}") and r.request.method == "PATCH",
        timeout=DEADLINE_MS,
    ) as saved:
        page.click("#contact button[type=submit]")
    assert saved.value.ok
    assert _one(db_url, "SELECT priority FROM contacts WHERE id = %s", child) == 5
    assert _one(db_url, "SELECT phones FROM contacts WHERE name = '邻居王阿姨'") == ["13700001111"]

    # The wristband unbound, then bound again.
    page.click("#bindings button[data-unbind='wb-op-1']")
    expect(page.locator("#bindings table")).to_have_count(0, timeout=DEADLINE_MS)
    assert _one(db_url, "SELECT resident_id FROM devices WHERE device_id = 'wb-op-1'") is None
    page.fill("#bind-device_id", "wb-op-1")
    page.click("#bind button[type=submit]")
    expect(page.locator("#bindings table")).to_contain_text("wb-op-1", timeout=DEADLINE_MS)
    assert str(_one(db_url, "SELECT resident_id FROM devices WHERE device_id = 'wb-op-1'")) == rid

    # Behaviour settings: a limit out of range is refused by the field, then saved.
    page.fill("#behaviour-max_inactive_min", "5")
    page.click("#behaviour button[type=submit]")
    expect(page.locator("#behaviour-max_inactive_min-error")).not_to_be_empty(timeout=DEADLINE_MS)
    page.fill("#behaviour-max_inactive_min", "150")
    page.select_option("#behaviour-lives_alone", "true")
    page.click("#behaviour button[type=submit]")
    expect(page.locator("#behaviour-max_inactive_min-error")).to_be_empty(timeout=DEADLINE_MS)

    def behaviour() -> Any:
        with psycopg.connect(db_url) as conn:
            return conn.execute(
                """SELECT lives_alone, max_inactive_s FROM behaviour_settings
                    WHERE resident_id = %s""",
                (rid,),
            ).fetchone()

    wait_until(lambda: behaviour() == (True, 150 * 60), 30, "the behaviour settings saved")

    # The monthly report of the elder's community, as its printable page.
    page.select_option("#report-community", label="幸福里社区")
    month = dt.date.today().strftime("%Y-%m")
    page.fill("#report-month", month)
    href = page.get_attribute("#report-link", "href")
    assert href is not None and "format=html" in href and f"month={month}" in href
    assert "format=csv" in (page.get_attribute("#report-csv", "href") or "")
    report = page.context.new_page()
    report.goto(f"{url}{href}")
    expect(report.locator("h1")).to_contain_text(f"Anxin monthly report {month}: 幸福里社区")
    report.close()

    # How often the very old are visited: every three months, everywhere.
    page.select_option("#rule-flag", "very_old")
    page.fill("#rule-every_months", "13")
    page.click("#rule button[type=submit]")
    expect(page.locator("#rule-every_months-error")).not_to_be_empty(timeout=DEADLINE_MS)
    page.fill("#rule-every_months", "3")
    page.click("#rule button[type=submit]")
    expect(page.locator("#rules-list")).to_contain_text("高龄", timeout=DEADLINE_MS)
    assert _one(db_url, "SELECT every_months FROM visit_rules WHERE flag = 'very_old'") == 3
    assert errors == []


def test_an_administrator_edits_the_emergency_profile_on_the_operators_screen(
    db_url: str, world: tuple[str, Seeded], page: Any
) -> None:
    url, seeded = world
    admin = person(db_url, "管理员", Role.ADMIN)
    page.goto(f"{url}/app/operator#token={admin.token}")
    expect(page.locator("#pick-elder option")).to_have_count(2, timeout=DEADLINE_MS)
    page.select_option("#pick-elder", str(seeded.resident_id))
    expect(page.locator("#profile-allergies")).to_have_value("青霉素", timeout=DEADLINE_MS)
    page.fill("#profile-allergies", "青霉素\n磺胺类")
    page.fill("#profile-responder_notes-language", "只讲河南话")
    page.check("#profile-verified")
    page.click("#profile button[type=submit]")
    expect(page.locator("#profile h2")).to_contain_text("v2", timeout=DEADLINE_MS)
    with psycopg.connect(db_url) as conn:
        version, verified = conn.execute(
            """SELECT version, last_verified_at IS NOT NULL FROM emergency_profiles
                WHERE resident_id = %s ORDER BY version DESC LIMIT 1""",
            (seeded.resident_id,),
        ).fetchone()  # type: ignore[misc]
    assert (version, verified) == (2, True)
