"""`anxin report monthly` against a community seeded across a month, every figure checked
against numbers computed here from the seeded facts (plain Python: loops, sets and
``statistics``, not the report's SQL or numpy).

The facts are drawn at random (fixed seed) per elder: devices registered before or during the
month and the hours they reported, SOS and fall alerts with their end states, acknowledgement
and dispatch times and escalations, deliveries that went or gave up, a family doctor contract
and emergency profile versions. Edges are placed on purpose: an alert at the first instant of
the month (counted) and one at the first instant of the next (not), a contract that ends on the
month's last day (counted) and one that ended the day before (not), a profile verified 13
months before the month's end (not) and a version written after the month (ignored), a
retired elder and an elder of another community (neither counted).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import random
import statistics
import subprocess
import uuid
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tests.services import ROOT

pytestmark = [pytest.mark.integration]

ZONE = ZoneInfo("Asia/Shanghai")
MONTH = "2026-10"
START = dt.datetime(2026, 10, 1, tzinfo=ZONE)
END = dt.datetime(2026, 11, 1, tzinfo=ZONE)
LAST_DAY = dt.date(2026, 10, 31)
HOUR = dt.timedelta(hours=1)
LIVE = {"pending", "open", "acknowledged", "dispatched"}


@dataclass
class Alert:
    kind: str
    state: str
    first_at: dt.datetime
    opened_at: dt.datetime | None
    acknowledged_at: dt.datetime | None = None
    dispatched_at: dt.datetime | None = None
    escalations: list[dt.datetime] = field(default_factory=list)
    deliveries: list[tuple[str, dt.datetime]] = field(default_factory=list)


@dataclass
class Device:
    device_id: str
    registered_at: dt.datetime
    hours: set[dt.datetime]


@dataclass
class Elder:
    name: str
    community: str
    district: str
    status: str = "active"
    devices: list[Device] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    contract: tuple[dt.date, dt.date, str] | None = None
    # (version, changed_at, last_verified_at)
    profiles: list[tuple[int, dt.datetime, dt.datetime | None]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    visits: list[dt.datetime] = field(default_factory=list)


def _draw(rng: random.Random, name: str, community: str, district: str) -> Elder:
    e = Elder(name, community, district)
    for k in range(rng.randint(0, 2)):
        registered = START - dt.timedelta(days=40) if rng.random() < 0.7 else START + dt.timedelta(days=rng.randint(1, 25), minutes=rng.randint(0, 59))  # fmt: skip
        first = max(START, registered)
        span = int((END - first) / HOUR)
        hours = {
            (first + HOUR * h).replace(minute=0, second=0, microsecond=0)
            for h in rng.sample(range(span), k=rng.randint(0, min(span, 300)))
        }
        if rng.random() < 0.5:  # reports in the month's last day
            hours.add(END - HOUR * rng.randint(1, 23))
        hours = {h for h in hours if h >= registered.replace(minute=0) and START <= h < END}
        e.devices.append(Device(f"{name}-d{k}", registered, hours))
    for _ in range(rng.randint(0, 4)):
        kind = rng.choice(["sos", "fall", "inactivity"])
        state = rng.choice(["open", "acknowledged", "dispatched", "resolved", "cancelled", "false_alarm", "pending"])  # fmt: skip
        if state in LIVE and any(a.kind == kind and a.state in LIVE for a in e.alerts):
            state = "resolved"  # one live alert per elder and kind (alerts_one_live)
        first_at = START + dt.timedelta(seconds=rng.randint(0, int((END - START).total_seconds()) - 3600))  # fmt: skip
        opened = None if state in ("pending", "cancelled") else first_at + dt.timedelta(seconds=rng.choice([0, 30]))  # fmt: skip
        a = Alert(kind, state, first_at, opened)
        if opened and state in ("acknowledged", "dispatched", "resolved") and rng.random() < 0.9:
            a.acknowledged_at = opened + dt.timedelta(seconds=rng.randint(5, 900))
        if opened and state in ("dispatched", "resolved") and rng.random() < 0.8:
            a.dispatched_at = opened + dt.timedelta(seconds=rng.randint(60, 1800))
        if opened:
            a.escalations = [opened + dt.timedelta(minutes=5 * (i + 1)) for i in range(rng.randint(0, 2))]  # fmt: skip
            a.deliveries = [(rng.choice(["delivered", "delivered", "gave_up"]), opened) for _ in range(rng.randint(1, 3))]  # fmt: skip
        e.alerts.append(a)
    roll = rng.random()
    if roll < 0.5:
        e.contract = (dt.date(2026, 1, 1), dt.date(2026, 12, 31), "active")
    elif roll < 0.6:
        e.contract = (dt.date(2026, 1, 1), LAST_DAY, "active")
    elif roll < 0.7:
        e.contract = (dt.date(2025, 1, 1), LAST_DAY - dt.timedelta(days=1), "active")
    elif roll < 0.8:
        e.contract = (dt.date(2026, 1, 1), dt.date(2026, 12, 31), "ended")
    e.flags = rng.sample(["living_alone", "very_old", "empty_nest", "chronic_disease"], k=rng.randint(0, 2))  # fmt: skip
    for _ in range(rng.randint(0, 3)):
        # July to the first days of November, local time.
        e.visits.append(dt.datetime(2026, 7, 1, 9, tzinfo=ZONE) + dt.timedelta(days=rng.randint(0, 125), hours=rng.randint(0, 10)))  # fmt: skip
    n_versions = rng.randint(0, 3)
    for v in range(1, n_versions + 1):
        changed = START - dt.timedelta(days=rng.choice([400, 200, 30, 3])) + dt.timedelta(days=v)
        verified = rng.choice([None, changed, END - dt.timedelta(days=13 * 31)])
        e.profiles.append((v, changed, verified))
    return e


def _world() -> list[Elder]:
    rng = random.Random(20261101)
    elders = [_draw(rng, f"a{i}", "A", "金水区") for i in range(12)]
    elders += [_draw(rng, f"b{i}", "B", "金水区" if i < 2 else "二七区") for i in range(4)]
    retired = _draw(rng, "a-retired", "A", "金水区")
    retired.status = "moved"
    elders.append(retired)
    # The edges, on the first elder of A.
    edge = elders[0]
    edge.alerts += [
        Alert(
            "sos",
            "resolved",
            START,
            START,
            START + dt.timedelta(seconds=40),
            START + dt.timedelta(seconds=200),
        ),
        Alert("sos", "resolved", END, END, END + dt.timedelta(seconds=40)),
        Alert("fall", "cancelled", START + dt.timedelta(days=3), None),
    ]
    edge.flags = ["living_alone"]
    edge.visits = [START - dt.timedelta(minutes=1), END]  # the last minute before, the first after
    edge.profiles = [
        (1, START - dt.timedelta(days=100), START - dt.timedelta(days=90)),
        (2, END + dt.timedelta(days=2), None),  # after the month: ignored
    ]
    return elders


#: (community name or None, flag) -> months between visits.
RULES = {(None, "very_old"): 3, ("A", "living_alone"): 2, (None, "chronic_disease"): 12}
SPECIAL = {"empty_nest", "living_alone", "disabled", "semi_disabled", "dementia", "very_old", "extremely_poor"}  # fmt: skip


def _seed(url: str, elders: list[Elder]) -> dict[str, str]:
    communities: dict[str, str] = {}
    with psycopg.connect(url) as conn:
        for name in ("A", "B"):
            row = conn.execute(
                "INSERT INTO communities (name) VALUES (%s) RETURNING id::text", (f"社区{name}",)
            ).fetchone()
            assert row is not None
            communities[name] = row[0]
        for (community, flag), every in RULES.items():
            conn.execute(
                "INSERT INTO visit_rules (community_id, flag, every_months) VALUES (%s, %s, %s)",
                (communities[community] if community else None, flag, every),
            )
        team = conn.execute("INSERT INTO doctor_teams (name) VALUES ('队') RETURNING id").fetchone()
        assert team is not None
        for e in elders:
            rid = conn.execute(
                """INSERT INTO residents (name, sex, birth_date, district, community_id, status, flags)
                   VALUES (%s, 'female', '1940-01-01', %s, %s, %s, %s) RETURNING id""",
                (e.name, e.district, communities[e.community], e.status, e.flags),
            ).fetchone()
            assert rid is not None
            for d in e.devices:
                conn.execute(
                    """INSERT INTO devices (device_id, kind, resident_id, status, registered_at)
                       VALUES (%s, 'wristband', %s, 'active', %s)""",
                    (d.device_id, rid[0], d.registered_at),
                )
                with conn.cursor().copy(
                    "COPY vitals (ts, device_id, seq, received_at, heart_rate) FROM STDIN"
                ) as copy:
                    for s, h in enumerate(sorted(d.hours)):
                        # Two readings in some hours: an hour counts once.
                        for m in (7, 41) if s % 3 == 0 else (7,):
                            at = h + dt.timedelta(minutes=m)
                            copy.write_row((at, d.device_id, s * 2 + (m == 41), at, 70.0))
            for a in e.alerts:
                aid = conn.execute(
                    """INSERT INTO alerts (resident_id, kind, severity, state, first_at, last_at,
                                           opened_at, acknowledged_at)
                       VALUES (%s, %s, 'emergency', %s, %s, %s, %s, %s) RETURNING id""",
                    (
                        rid[0],
                        a.kind,
                        a.state,
                        a.first_at,
                        a.first_at,
                        a.opened_at,
                        a.acknowledged_at,
                    ),
                ).fetchone()
                assert aid is not None
                if a.dispatched_at:
                    for at in (a.dispatched_at, a.dispatched_at + dt.timedelta(minutes=9)):
                        conn.execute(
                            """INSERT INTO alert_events (alert_id, at, from_state, to_state, actor)
                               VALUES (%s, %s, 'acknowledged', 'dispatched', 'dispatcher')""",
                            (aid[0], at),
                        )
                for at in a.escalations:
                    conn.execute(
                        """INSERT INTO alert_events (alert_id, at, event, actor)
                           VALUES (%s, %s, 'escalation', 'system')""",
                        (aid[0], at),
                    )
                for status, at in a.deliveries:
                    conn.execute(
                        """INSERT INTO deliveries (alert_id, recipient_kind, channel, address,
                                                   template, idempotency_key, status, created_at)
                           VALUES (%s, 'child', 'apprise', 'x', 'emergency', %s, %s, %s)""",
                        (aid[0], uuid.uuid4().hex, status, at),
                    )
            if e.contract:
                conn.execute(
                    """INSERT INTO doctor_contracts (resident_id, team_id, service_package,
                                                     starts_on, ends_on, status)
                       VALUES (%s, %s, 'basic', %s, %s, %s)""",
                    (rid[0], team[0], *e.contract),
                )
            for at in e.visits:
                conn.execute(
                    """INSERT INTO visits (resident_id, visited_at, visitor, visitor_role, kind,
                                           recorded_by)
                       VALUES (%s, %s, '社区网格员', 'community_worker', 'home', 'test')""",
                    (rid[0], at),
                )
            for version, changed, verified in e.profiles:
                conn.execute(
                    """INSERT INTO emergency_profiles (resident_id, version, body_enc,
                            last_verified_at, last_verified_by, changed_by, change_kind, changed_at)
                       VALUES (%s, %s, '\\x00', %s, %s, 'test', 'update', %s)""",
                    (rid[0], version, verified, "doctor" if verified else None, changed),
                )
        conn.commit()
    return communities


def _p90(values: list[float]) -> float:
    return (
        values[0] if len(values) == 1 else statistics.quantiles(values, n=10, method="inclusive")[8]
    )


def expected(elders: list[Elder]) -> dict[str, object]:
    """Every figure from the facts (the elders of one scope, retired ones included)."""
    active = [e for e in elders if e.status == "active"]
    in_month = [a for e in active for a in e.alerts if START <= a.first_at < END]
    out: dict[str, object] = {"elders": len(active)}
    for name, kind in (("sos", "sos"), ("falls", "fall")):
        mine = [a for a in in_month if a.kind == kind]
        out[f"{name}_total"] = len(mine)
        out[f"{name}_confirmed"] = sum(a.state in {"open", "acknowledged", "dispatched", "resolved"} for a in mine)  # fmt: skip
        out[f"{name}_cancelled"] = sum(a.state == "cancelled" for a in mine)
        out[f"{name}_false_alarm"] = sum(a.state == "false_alarm" for a in mine)
        out[f"{name}_pending"] = sum(a.state == "pending" for a in mine)
    urgent = [a for a in in_month if a.kind in ("sos", "fall")]
    for name, attr in (("acknowledge", "acknowledged_at"), ("dispatch", "dispatched_at")):
        secs = [
            (getattr(a, attr) - (a.opened_at or a.first_at)).total_seconds()
            for a in urgent
            if getattr(a, attr) is not None
        ]
        out[f"{name}_n"] = len(secs)
        out[f"{name}_p50_s"] = statistics.median(secs) if secs else None
        out[f"{name}_p90_s"] = _p90(secs) if secs else None
    every = [a for e in active for a in e.alerts]
    out["escalations"] = sum(START <= t < END for a in every for t in a.escalations)
    out["deliveries"] = sum(START <= t < END for a in every for _s, t in a.deliveries)
    out["deliveries_failed"] = sum(
        START <= t < END and s == "gave_up" for a in every for s, t in a.deliveries
    )
    covered = sum(
        any(h + HOUR > END - dt.timedelta(hours=24) for d in e.devices for h in d.hours)
        for e in active
    )
    seen = sum(len(d.hours) for e in active for d in e.devices)
    wanted = 0
    for e in active:
        for d in e.devices:
            first = max(START, d.registered_at.replace(minute=0, second=0, microsecond=0))
            wanted += -(-int((END - first).total_seconds()) // 3600)
    contracts = sum(
        e.contract is not None
        and e.contract[2] == "active"
        and e.contract[0] <= LAST_DAY <= e.contract[1]
        for e in active
    )
    since = dt.datetime(2025, 11, 1, tzinfo=ZONE)  # 12 months before the month's end
    verified = 0
    for e in active:
        before = [p for p in e.profiles if p[1] < END]
        if before:
            last = max(before)[2]
            verified += last is not None and since <= last < END
    for name, part, whole in (
        ("coverage_24h", covered, len(active)),
        ("data_completeness", seen, wanted),
        ("doctor_contracts", contracts, len(active)),
        ("profiles_verified", verified, len(active)),
    ):
        out[f"{name}_part"], out[f"{name}_whole"] = part, whole
        out[f"{name}_rate"] = part / whole if whole else None
    # Visits: the months between visits of each elder (the most demanding flag), due in
    # October when not visited in the months before that the interval covers.
    due = visited = 0
    for e in active:
        intervals = []
        for flag in e.flags:
            every = RULES.get((e.community, flag), RULES.get((None, flag)))
            if every is None and flag in SPECIAL:
                every = 1
            if every is not None:
                intervals.append(every)
        if not intervals:
            continue
        since = {1: START, 2: dt.datetime(2026, 9, 1, tzinfo=ZONE), 3: dt.datetime(2026, 8, 1, tzinfo=ZONE), 12: dt.datetime(2025, 11, 1, tzinfo=ZONE)}[min(intervals)]  # fmt: skip
        if any(since <= v < START for v in e.visits):
            continue
        due += 1
        visited += any(START <= v < END for v in e.visits)
    out["visits_part"], out["visits_whole"] = visited, due
    out["visits_rate"] = visited / due if due else None
    return out


def _anxin(url: str, *args: str) -> str:
    env = {**os.environ, "ANXIN_DB__URL": url}
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "anxin"), "report", "monthly", "--month", MONTH, *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _flat(report: dict[str, object]) -> dict[str, object]:
    """The JSON report in the CSV's figure names."""
    out: dict[str, object] = {"elders": report["elders"]}
    for name, key in (("sos", "sos"), ("falls", "falls"), ("acknowledge", "time_to_acknowledge"),
                      ("dispatch", "time_to_dispatch")):  # fmt: skip
        part = report[key]
        assert isinstance(part, dict)
        out.update({f"{name}_{k}": v for k, v in part.items()})
    for k in ("escalations", "deliveries", "deliveries_failed"):
        out[k] = report[k]
    for k in ("coverage_24h", "data_completeness", "doctor_contracts", "profiles_verified"):
        part = report[k]
        assert isinstance(part, dict)
        out.update({f"{k}_{f}": v for f, v in part.items()})
    visits = report["visits"]
    assert isinstance(visits, dict)
    out.update({f"visits_{f}": v for f, v in visits.items()})
    return out


def _close(got: dict[str, object], want: dict[str, object]) -> None:
    assert set(got) == set(want)
    for k, w in want.items():
        g = got[k]
        if isinstance(w, float):
            assert g == pytest.approx(w, rel=1e-9), k
        else:
            assert g == w, k


def test_monthly_report_of_a_community_and_a_district_matches_the_seeded_facts(
    db_url: str,
) -> None:
    world = _world()
    _seed(db_url, world)
    community_a = [e for e in world if e.community == "A"]
    want = expected(community_a)
    assert want["sos_total"] and want["falls_total"] and want["acknowledge_n"]  # not trivial
    assert want["visits_whole"] and want["visits_part"]

    got = json.loads(_anxin(db_url, "--community", "社区A", "--format", "json"))
    assert got["scope"]["kind"] == "community" and got["month"] == MONTH
    _close(_flat(got), want)

    rows = list(
        csv.DictReader(io.StringIO(_anxin(db_url, "--community", "社区A", "--format", "csv")))
    )
    from_csv = {r["figure"]: r["value"] for r in rows}
    assert from_csv.keys() == want.keys()
    for k, w in want.items():
        assert (
            (from_csv[k] == "") if w is None else float(from_csv[k]) == pytest.approx(float(w))
        ), k  # type: ignore[arg-type]

    page = _anxin(db_url, "--community", "社区A")
    assert page.startswith("<!doctype html>") and "@media print" in page and "<svg" in page
    assert (
        f"SOS: total / confirmed / cancelled / false alarm / pending</th><td>{want['sos_total']} / "
        in page
    )

    district = [e for e in world if e.district == "金水区"]
    got = json.loads(_anxin(db_url, "--district", "金水区", "--format", "json"))
    _close(_flat(got), expected(district))


def test_report_refuses_a_bad_month_and_an_unknown_community(db_url: str) -> None:
    env = {**os.environ, "ANXIN_DB__URL": db_url}
    anxin = str(ROOT / ".venv" / "bin" / "anxin")
    for args, message in (
        (["--community", "nowhere", "--month", "2026-10"], "names no community"),
        (["--district", "x", "--month", "2026-13"], "is not valid; expected YYYY-MM"),
    ):
        done = subprocess.run([anxin, "report", "monthly", *args], env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 2 and message in done.stderr, done.stderr
