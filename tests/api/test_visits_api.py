"""Home visits over HTTP: the plan from the flags and the rules, visits recorded by an
operator and by the signed doctor, the overdue list, refusals and bad input."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import httpx
import pytest

from devices.access import Role
from devices.visits import add_months, interval_months, required_in_month
from tests.api.client import bearer as _token

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ZONE = ZoneInfo("Asia/Shanghai")


def test_the_plan_arithmetic() -> None:
    assert add_months(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)
    assert add_months(dt.date(2026, 3, 15), -3) == dt.date(2025, 12, 15)
    c = uuid.uuid4()
    rules = {(None, "very_old"): 3, (c, "very_old"): 2, (None, "veteran"): 6}
    assert interval_months(["very_old"], None, rules) == 3
    assert interval_months(["very_old"], c, rules) == 2
    assert interval_months(["very_old", "living_alone"], None, rules) == 1  # the most demanding
    assert interval_months(["veteran"], None, rules) == 6  # planned by a rule only
    assert interval_months(["chronic_disease"], None, rules) is None
    oct1 = dt.date(2026, 10, 1)
    assert required_in_month(1, oct1, [dt.date(2026, 9, 30)])
    assert not required_in_month(2, oct1, [dt.date(2026, 9, 1)])
    assert required_in_month(2, oct1, [dt.date(2026, 8, 31)])


async def test_visits_recorded_listed_and_overdue(http: httpx.AsyncClient, db_url: str) -> None:
    admin = _token(db_url, Role.ADMIN)
    community = (await http.post("/api/v1/communities", headers=admin, json={"name": "C"})).json()
    base = {"sex": "female", "birth_date": "1930-01-01", "community_id": community["id"]}

    async def elder(name: str, flags: list[str]) -> str:
        r = await http.post("/api/v1/residents", headers=admin, json={**base, "name": name, "flags": flags})  # fmt: skip
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    alone = await elder("Alone", ["living_alone"])
    old = await elder("Old", ["very_old"])
    plain = await elder("Plain", ["chronic_disease"])
    team = (
        await http.post(
            "/api/v1/doctor-teams", headers=admin,
            json={"name": "T", "members": [{"name": "Dr", "role": "doctor"}]},
        )
    ).json()  # fmt: skip
    today = dt.datetime.now(ZONE).date()
    r = await http.post(
        f"/api/v1/residents/{old}/contracts", headers=admin,
        json={"team_id": team["id"], "service_package": "visits",
              "starts_on": (today - dt.timedelta(days=5)).isoformat(),
              "ends_on": (today + dt.timedelta(days=300)).isoformat()},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    doctor = _token(db_url, Role.DOCTOR, member_ids=[uuid.UUID(team["members"][0]["id"])])
    operator = _token(db_url, Role.OPERATOR)

    # Very old: every three months, set by a rule.
    r = await http.put("/api/v1/visit-rules", headers=operator, json={"flag": "very_old", "every_months": 3})  # fmt: skip
    assert r.status_code == 200 and r.json() == [{"flag": "very_old", "every_months": 3, "community_id": None}]  # fmt: skip

    nowhere = {"flag": "very_old", "every_months": 2, "community_id": str(uuid.uuid4())}
    assert (
        await http.put("/api/v1/visit-rules", headers=operator, json=nowhere)
    ).status_code == 404

    two_months_ago = dt.datetime.now(ZONE) - dt.timedelta(days=62)
    visit = {
        "visited_at": two_months_ago.isoformat(), "visitor": "网格员", "visitor_role": "community_worker",
        "kind": "home", "notes": "血压平稳", "follow_up_on": today.isoformat(), "follow_up": "复查血压",
    }  # fmt: skip
    r = await http.post(f"/api/v1/residents/{alone}/visits", headers=operator, json=visit)
    assert r.status_code == 201, r.text
    assert r.json()["recorded_by"].startswith("operator: ")
    r = await http.post(f"/api/v1/residents/{old}/visits", headers=doctor, json={**visit, "visitor_role": "doctor"})  # fmt: skip
    assert r.status_code == 201, r.text
    # The doctor is not signed with Alone: refused and audited.
    assert (await http.post(f"/api/v1/residents/{alone}/visits", headers=doctor, json=visit)).status_code == 403  # fmt: skip
    family = _token(db_url, Role.FAMILY, resident_ids=[uuid.UUID(alone)])
    assert (await http.post(f"/api/v1/residents/{alone}/visits", headers=family, json=visit)).status_code == 403  # fmt: skip
    listed = (await http.get(f"/api/v1/residents/{alone}/visits", headers=family)).json()
    assert [(x["visitor"], x["follow_up"]) for x in listed] == [("网格员", "复查血压")]

    for bad in ({**visit, "visited_at": "2026-11-20T10:00:00"}, {**visit, "follow_up": None},
                {**visit, "kind": "teleport"}, {**visit, "mood": "good"}):  # fmt: skip
        r = await http.post(f"/api/v1/residents/{alone}/visits", headers=operator, json=bad)
        assert r.status_code == 422, (bad, r.text)

    due = (await http.get("/api/v1/visits/due", headers=operator, params={"community_id": community["id"]})).json()  # fmt: skip
    # Alone (monthly) was last seen two months ago: overdue by about a month; Old (every three
    # months) is not due yet; Plain has no plan.
    assert [d["name"] for d in due] == ["Alone"]
    assert due[0]["every_months"] == 1
    assert due[0]["due_on"] == add_months(two_months_ago.date(), 1).isoformat()
    everyone = (await http.get("/api/v1/visits/due", headers=operator,
                               params={"community_id": community["id"], "overdue_only": "false"})).json()  # fmt: skip
    assert {d["name"] for d in everyone} == {"Alone", "Old"}
    assert plain not in {d["resident_id"] for d in everyone}
    assert (await http.get("/api/v1/visits/due", headers=doctor)).status_code == 403
