"""AlertService on the real PostgreSQL: findings to alerts and outbox rows, dedup under
concurrency, quiet hours, falls and their cancel window, escalation under a ManualClock,
acknowledge links, and "help is coming" over the real broker."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from alerts import ack
from alerts.commands import MqttCommandSender
from alerts.model import Actor, ActorKind, AlertKind, AlertState
from alerts.service import AlertService, PostgresDirectory, Step, render_digest
from core.clock import ManualClock
from core.settings import AlertsSettings, MqttSettings
from detectors.findings import (
    DeviceEventEvidence,
    DeviceHealthEvidence,
    FallOutcome,
    FallOutcomeEvidence,
    Finding,
    FindingKind,
    News2Evidence,
    Severity,
    TrendEvidence,
)
from devices.protocol import Command

pytestmark = pytest.mark.integration

SETTINGS = AlertsSettings(
    operator_url="json://localhost/operator",
    sms_url="json://sms.example.invalid/send?to={phone}",
    dispatch120_url="http://127.0.0.1:9/120",
)
# 10:00 in Shanghai; the sample child's quiet hours are 22:00-07:00 there.
T0_MS = int(datetime(2025, 11, 24, 2, 0, tzinfo=UTC).timestamp() * 1000)
NIGHT_MS = int(datetime(2025, 11, 24, 15, 30, tzinfo=UTC).timestamp() * 1000)


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Sent:
    def __init__(self) -> None:
        self.commands: list[tuple[str, Command]] = []

    def send(self, device_id: str, command: Command) -> None:
        self.commands.append((device_id, command))


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def resident(conn: psycopg.Connection[Any]) -> uuid.UUID:
    """A fictitious elder with a child (quiet at night), a work unit, a family doctor, a
    partner hospital and a community."""
    hid = conn.execute(
        "INSERT INTO hospitals (name, green_channel_phone) VALUES ('Sample People''s Hospital', '053100000120') RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    cid = conn.execute(
        "INSERT INTO communities (name, phone) VALUES ('Sample Street Community', '053100000001') RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    rid = conn.execute(
        """INSERT INTO residents (name, sex, birth_date, hospital_id, community_id)
           VALUES ('Sample Elder', 'female', '1940-01-01', %s, %s) RETURNING id""",
        (hid, cid),
    ).fetchone()[0]  # type: ignore[index]
    conn.execute(
        """INSERT INTO contacts (resident_id, name, role, priority, phones, channel_kind,
                                 channel_address, quiet_start, quiet_end, quiet_tz)
           VALUES (%s, 'Sample Daughter', 'child', 1, '{13800000001}', 'apprise',
                   'json://localhost/daughter', '22:00', '07:00', 'Asia/Shanghai'),
                  (%s, 'Sample Works Office', 'work_unit', 2, '{053100000002}', NULL, NULL,
                   NULL, NULL, NULL)""",
        (rid, rid),
    )
    team = conn.execute(
        "INSERT INTO doctor_teams (name) VALUES ('Sample Family Doctor Team') RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    conn.execute(
        """INSERT INTO doctor_team_members (team_id, name, role, channel_kind, channel_address)
           VALUES (%s, 'Sample Doctor', 'doctor', 'apprise', 'json://localhost/doctor')""",
        (team,),
    )
    conn.execute(
        """INSERT INTO doctor_contracts (resident_id, team_id, service_package, starts_on, ends_on)
           VALUES (%s, %s, 'basic', current_date - 30, current_date + 335)""",
        (rid, team),
    )
    return uuid.UUID(str(rid))


def service(commands: Any = None) -> AlertService:
    return AlertService(SETTINGS, PostgresDirectory(SETTINGS.sms_url), commands=commands)


def finding(
    kind: FindingKind, resident: uuid.UUID | None, ts_ms: int = T0_MS, **kw: Any
) -> Finding:
    sev = kw.pop("severity", None)
    ev: Any
    if kind in (FindingKind.SOS, FindingKind.DEVICE_FALL):
        ev = DeviceEventEvidence("hotkey" if kind is FindingKind.SOS else "fall_algorithm")
        sev = sev or (Severity.EMERGENCY if kind is FindingKind.SOS else Severity.HIGH)
    elif kind in (FindingKind.FALL_CONFIRMED, FindingKind.FALL_CANCELLED):
        outcome = kw.pop("outcome", FallOutcome.LYING_STILL)
        ev = FallOutcomeEvidence(ts_ms, outcome, 30.0)
        sev = sev or (Severity.EMERGENCY if kind is FindingKind.FALL_CONFIRMED else Severity.INFO)
    elif kind is FindingKind.NEWS2:
        score = kw.pop("score", 6)
        ev = News2Evidence(score, (("pulse", 3),), (), 1.0, (("pulse", 135.0),), 1, 300.0)
        sev = sev or (Severity.HIGH if score >= 5 else Severity.LOW)
    elif kind is FindingKind.BATTERY_LOW:
        ev = DeviceHealthEvidence(ts_ms, 0.0, 60.0, False, 4.0, float("nan"))
        sev = sev or Severity.MEDIUM
    elif kind is FindingKind.VITAL_TREND:
        ev = TrendEvidence("resting_hr", 68.0, 79.0, 11.0, 0.8, 14)
        sev = sev or Severity.LOW
    else:
        raise AssertionError(kind)
    return Finding(
        kind,
        sev,
        kw.pop("device", "wb-0001"),
        str(resident) if resident else None,
        ts_ms,
        ts_ms,
        ev,
    )


def deliveries(conn: psycopg.Connection[Any], alert_id: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        """SELECT recipient_kind, template, channel, next_attempt_at, recipient_name, tier
             FROM deliveries WHERE alert_id = %s AND status = 'pending' ORDER BY id""",
        (alert_id,),
    ).fetchall()


def test_sos_opens_at_once_and_routes_to_everyone_in_parallel(
    conn: psycopg.Connection[Any], resident: uuid.UUID
) -> None:
    svc = service()
    now = at(NIGHT_MS)  # in the child's quiet hours: an emergency goes anyway
    change = svc.raise_finding(conn, finding(FindingKind.SOS, resident, NIGHT_MS), now)
    assert change.step is Step.CREATE_OPEN and change.alert is not None
    alert = change.alert
    assert (alert.state, alert.kind, alert.severity) == (
        AlertState.OPEN,
        AlertKind.SOS,
        Severity.EMERGENCY,
    )
    rows = deliveries(conn, alert.id)
    kinds = {r[0]: r for r in rows}
    assert set(kinds) == {"dispatch120", "child", "work_unit", "doctor", "hospital"}
    assert kinds["dispatch120"][2] == "dispatch120"
    assert kinds["hospital"][1] == "green_channel"
    assert {r[1] for r in rows if r[0] != "hospital"} == {"emergency"}
    assert {r[3] for r in rows} == {now}  # all at once, quiet hours or not
    assert {r[5] for r in rows} == {0}
    timeline = svc.timeline(conn, alert.id)
    assert (timeline[0].to_state, timeline[0].actor) == (AlertState.OPEN, "device:wb-0001")
    # Every message with a link has its token (hashed): the people and the hospital (whose
    # link confirms the green channel); the 120 centre gets no link.
    n_tokens = conn.execute(
        "SELECT count(*) FROM ack_tokens WHERE alert_id = %s", (alert.id,)
    ).fetchone()
    assert n_tokens == (4,)
    # The outbox holds references, not the channels' URLs (they carry tokens).
    addresses = conn.execute(
        "SELECT recipient_kind, address FROM deliveries WHERE alert_id = %s", (alert.id,)
    ).fetchall()
    for kind, address in addresses:
        assert kind == "dispatch120" or address.startswith("anxin:"), (kind, address)


def test_repeat_updates_the_live_alert(conn: psycopg.Connection[Any], resident: uuid.UUID) -> None:
    svc = service()
    first = svc.raise_finding(conn, finding(FindingKind.NEWS2, resident, score=5), at(T0_MS))
    second = svc.raise_finding(
        conn, finding(FindingKind.NEWS2, resident, T0_MS + 60_000, score=6), at(T0_MS + 60_000)
    )
    assert first.alert is not None and second.alert is not None
    assert second.step is Step.REPEAT and second.alert.id == first.alert.id
    assert second.alert.occurrences == 2
    assert second.alert.last_at == at(T0_MS + 60_000)
    assert second.alert.evidence is not None and second.alert.evidence["score"] == 6
    # A rise to NEWS2 7+ re-routes the same alert as an emergency: 120 now too.
    third = svc.raise_finding(
        conn,
        finding(FindingKind.NEWS2, resident, T0_MS + 120_000, score=8, severity=Severity.EMERGENCY),
        at(T0_MS + 120_000),
    )
    assert third.alert is not None and third.alert.id == first.alert.id
    assert third.alert.severity is Severity.EMERGENCY
    assert "dispatch120" in {r[0] for r in deliveries(conn, first.alert.id)}
    assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (1,)


def test_two_concurrent_identical_findings_make_one_alert(db_url: str, resident: uuid.UUID) -> None:
    svc = service()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    f = finding(FindingKind.SOS, resident)

    def worker() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as c:
                barrier.wait(5)
                svc.raise_finding(c, f, at(T0_MS))
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with psycopg.connect(db_url) as c:
        rows = c.execute("SELECT state, occurrences FROM alerts").fetchall()
        assert rows == [("open", 2)]
        n = c.execute("SELECT count(*) FROM deliveries").fetchone()
        assert n == (5,)  # tier 0 told once


def test_unique_index_refuses_a_second_live_alert(
    conn: psycopg.Connection[Any], resident: uuid.UUID
) -> None:
    service().raise_finding(conn, finding(FindingKind.SOS, resident), at(T0_MS))
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            """INSERT INTO alerts (resident_id, kind, severity, state, first_at, last_at)
               VALUES (%s, 'sos', 'emergency', 'acknowledged', now(), now())""",
            (resident,),
        )


def test_quiet_hours_defer_non_emergencies_only(
    conn: psycopg.Connection[Any], resident: uuid.UUID
) -> None:
    svc = service()
    now = at(NIGHT_MS)
    change = svc.raise_finding(conn, finding(FindingKind.BATTERY_LOW, resident, NIGHT_MS), now)
    assert change.alert is not None
    rows = {r[0]: r for r in deliveries(conn, change.alert.id)}
    assert set(rows) == {"operator", "child"}
    assert rows["operator"][3] == now
    assert rows["child"][3] == datetime(2025, 11, 24, 23, 0, tzinfo=UTC)  # 07:00 in Shanghai
    assert rows["child"][1] == "device"


def test_fall_pending_then_cancelled_by_the_wearer(
    conn: psycopg.Connection[Any], resident: uuid.UUID
) -> None:
    svc = service()
    change = svc.raise_finding(conn, finding(FindingKind.DEVICE_FALL, resident), at(T0_MS))
    assert change.alert is not None and change.alert.state is AlertState.PENDING
    assert change.alert.cancel_deadline == at(T0_MS + 30_000)
    assert deliveries(conn, change.alert.id) == []  # nobody is told in the cancel window
    cancel = finding(
        FindingKind.FALL_CANCELLED, resident, T0_MS, outcome=FallOutcome.CANCELLED_BY_WEARER
    )
    done = svc.raise_finding(conn, cancel, at(T0_MS + 10_000))
    assert done.alert is not None and done.alert.state is AlertState.CANCELLED
    last = svc.timeline(conn, done.alert.id)[-1]
    assert (last.from_state, last.to_state, last.actor) == (
        AlertState.PENDING,
        AlertState.CANCELLED,
        "device:wb-0001",
    )


def test_fall_confirmed_opens_the_pending_alert(
    conn: psycopg.Connection[Any], resident: uuid.UUID
) -> None:
    svc = service()
    pending = svc.raise_finding(conn, finding(FindingKind.DEVICE_FALL, resident), at(T0_MS))
    opened = svc.raise_finding(
        conn, finding(FindingKind.FALL_CONFIRMED, resident), at(T0_MS + 30_000)
    )
    assert pending.alert is not None and opened.alert is not None
    assert opened.alert.id == pending.alert.id
    assert (opened.alert.state, opened.alert.severity) == (AlertState.OPEN, Severity.EMERGENCY)
    assert "dispatch120" in {r[0] for r in deliveries(conn, opened.alert.id)}


def test_sos_is_never_cancelled_by_the_device(
    conn: psycopg.Connection[Any], resident: uuid.UUID
) -> None:
    from alerts.lifecycle import TransitionRefused

    svc = service()
    change = svc.raise_finding(conn, finding(FindingKind.SOS, resident), at(T0_MS))
    assert change.alert is not None
    with pytest.raises(TransitionRefused, match="may not move"):
        svc.transition(
            conn,
            change.alert.id,
            AlertState.CANCELLED,
            Actor(ActorKind.DEVICE, "wb-0001"),
            at(T0_MS),
        )
    assert svc.get(conn, change.alert.id).state is AlertState.OPEN


def test_cancel_deadline_opens_the_fall_under_a_manual_clock(
    conn: psycopg.Connection[Any], resident: uuid.UUID
) -> None:
    svc = service()
    clock = ManualClock(T0_MS)
    change = svc.raise_finding(conn, finding(FindingKind.DEVICE_FALL, resident), at(clock.now_ms()))
    assert change.alert is not None
    clock.advance(30_000 + 9_000)  # window 30 s + grace 10 s not over yet
    assert svc.escalate_due(conn, at(clock.now_ms())).opened == ()
    clock.advance(1_000)
    report = svc.escalate_due(conn, at(clock.now_ms()))
    assert report.opened == (change.alert.id,)
    alert = svc.get(conn, change.alert.id)
    assert (alert.state, alert.severity) == (AlertState.OPEN, Severity.EMERGENCY)
    assert svc.timeline(conn, alert.id)[-1].actor == "system"
    assert "dispatch120" in {r[0] for r in deliveries(conn, alert.id)}


def test_escalation_fires_on_time_with_reminders(
    conn: psycopg.Connection[Any], resident: uuid.UUID
) -> None:
    """NEWS2 5-6: doctor and child at once; reminders every 15 min; the community worker
    (here the community's phone) after 30 min; the operator after 1 h; acknowledging stops it."""
    svc = service()
    clock = ManualClock(T0_MS)
    change = svc.raise_finding(conn, finding(FindingKind.NEWS2, resident), at(clock.now_ms()))
    assert change.alert is not None
    aid = change.alert.id
    assert {r[0] for r in deliveries(conn, aid)} == {"doctor", "child"}

    def tick(minutes: float) -> Any:
        clock.advance(int(minutes * 60_000))
        return svc.escalate_due(conn, at(clock.now_ms()))

    assert tick(14.9).reminded == ()
    assert tick(0.1).reminded == (aid,)  # 15 min: first reminder
    reminders = [r for r in deliveries(conn, aid) if r[1] == "reminder"]
    assert {r[0] for r in reminders} == {"doctor", "child"}
    assert tick(14.9).escalated == ()
    report = tick(0.1)  # 30 min: tier 1
    assert report.escalated == (aid,)
    tier1 = [r for r in deliveries(conn, aid) if r[5] == 1 and r[1] == "escalation"]
    assert [r[0] for r in tier1] == ["community_worker"]
    assert tier1[0][4] == "Sample Street Community"
    events = [
        (e.event, e.at) for e in svc.timeline(conn, aid) if e.event in ("reminder", "escalation")
    ]
    assert events == [
        ("reminder", at(T0_MS + 15 * 60_000)),
        ("escalation", at(T0_MS + 30 * 60_000)),
    ]
    # Someone acknowledges: no more reminders, no further tier.
    svc.acknowledge(conn, aid, Actor(ActorKind.DOCTOR, "Sample Doctor"), at(clock.now_ms()))
    assert tick(120) == type(report)((), (), ())
    alert = svc.get(conn, aid)
    assert (alert.state, alert.tier, alert.acknowledged_by) == (
        AlertState.ACKNOWLEDGED,
        1,
        "doctor:Sample Doctor",
    )


def test_ack_link_is_single_use_and_expires(
    conn: psycopg.Connection[Any], resident: uuid.UUID
) -> None:
    sent = Sent()
    svc = service(sent)
    change = svc.raise_finding(conn, finding(FindingKind.SOS, resident), at(T0_MS))
    assert change.alert is not None
    keys = dict(
        conn.execute(
            "SELECT recipient_kind, idempotency_key FROM deliveries WHERE alert_id = %s",
            (change.alert.id,),
        ).fetchall()
    )
    secret = SETTINGS.ack_secret.get_secret_value()
    child_token = ack.token_for(secret, keys["child"])
    assert ack.link_for(SETTINGS, keys["child"]).endswith("/api/v1/ack/" + child_token)
    # Only the hash is stored.
    stored = conn.execute("SELECT token_hash FROM ack_tokens").fetchall()
    assert (ack.hash_token(child_token),) in stored
    assert all(child_token.encode() not in bytes(r[0]) for r in stored)

    first = svc.acknowledge_by_token(conn, child_token, at(T0_MS + 60_000))
    assert first.outcome is ack.AckOutcome.OK and first.alert is not None
    assert first.alert.state is AlertState.ACKNOWLEDGED
    assert first.alert.acknowledged_by == "contact:child:Sample Daughter"
    assert [(d, c.kind.value) for d, c in sent.commands] == [("wb-0001", "help_coming")]
    again = svc.acknowledge_by_token(conn, child_token, at(T0_MS + 61_000))
    assert again.outcome is ack.AckOutcome.USED
    # Another recipient's link after the alert was acknowledged: used, no second transition.
    doctor = svc.acknowledge_by_token(
        conn, ack.token_for(secret, keys["doctor"]), at(T0_MS + 62_000)
    )
    assert doctor.outcome is ack.AckOutcome.OK and doctor.already_by is not None
    late = svc.acknowledge_by_token(
        conn, ack.token_for(secret, keys["work_unit"]), at(T0_MS) + timedelta(days=2)
    )
    assert late.outcome is ack.AckOutcome.EXPIRED
    assert svc.acknowledge_by_token(conn, "A" * 24, at(T0_MS)).outcome is ack.AckOutcome.UNKNOWN
    acks = [e for e in svc.timeline(conn, change.alert.id) if e.to_state is AlertState.ACKNOWLEDGED]
    assert len(acks) == 1 and acks[0].channel == "link"


def test_trends_go_to_the_doctor_digest(conn: psycopg.Connection[Any], resident: uuid.UUID) -> None:
    svc = service()
    assert (
        svc.raise_finding(conn, finding(FindingKind.VITAL_TREND, resident), at(T0_MS)).step
        is Step.DIGEST
    )
    low = finding(FindingKind.NEWS2, resident, T0_MS + 1000, score=3)
    assert svc.raise_finding(conn, low, at(T0_MS)).step is Step.DIGEST
    assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (0,)
    team = conn.execute("SELECT id FROM doctor_teams").fetchone()[0]  # type: ignore[index]
    digest = svc.digest(conn, team, date(2025, 11, 24))
    assert [i.kind for i in digest.items] == ["vital_trend", "news2"]
    text = render_digest(digest)
    assert "Sample Elder" in text and "resting_hr: 68.0 -> 79.0" in text and "NEWS2 3" in text


def test_help_coming_reaches_the_device_over_the_real_broker(
    conn: psycopg.Connection[Any], resident: uuid.UUID, shared_broker_url: str, topic_prefix: str
) -> None:
    from core.mqtt import IncomingMessage, client_for
    from devices.protocol import decode_command

    mqtt = MqttSettings(url=shared_broker_url, topic_prefix=topic_prefix)
    got: list[IncomingMessage] = []
    arrived = threading.Event()
    sub = client_for(mqtt, client_id=f"t-sub-{uuid.uuid4().hex[:8]}")

    def on_message(m: IncomingMessage) -> None:
        got.append(m)
        arrived.set()

    sub.on_message(on_message)
    sub.connect()
    sender = MqttCommandSender(mqtt, client_id=f"t-cmd-{uuid.uuid4().hex[:8]}")
    try:
        mid = sub.subscribe([f"{topic_prefix}/dev/+/cmd"], qos=1)
        assert sub.wait_subscribed(mid, 30), "the broker did not grant the subscription"
        sender.start()
        svc = service(sender)
        change = svc.raise_finding(conn, finding(FindingKind.SOS, resident), at(T0_MS))
        assert change.alert is not None
        svc.acknowledge(
            conn, change.alert.id, Actor(ActorKind.OPERATOR, "desk 1"), at(T0_MS + 5000)
        )
        assert arrived.wait(10), "no command arrived"
    finally:
        sender.close()
        sub.stop()
    msg = got[0]
    assert msg.topic == f"{topic_prefix}/dev/wb-0001/cmd" and msg.qos == 1
    cmd = decode_command(msg.payload)
    assert (cmd.kind.value, cmd.alert_id) == ("help_coming", str(change.alert.id))


def test_the_digest_leaves_out_elders_whose_contract_is_not_in_force(
    conn: psycopg.Connection[Any], resident: uuid.UUID
) -> None:
    svc = service()
    svc.raise_finding(conn, finding(FindingKind.VITAL_TREND, resident), at(T0_MS))
    team = conn.execute("SELECT id FROM doctor_teams").fetchone()[0]  # type: ignore[index]
    assert len(svc.digest(conn, team, date(2025, 11, 24)).items) == 1
    conn.execute("UPDATE doctor_contracts SET ends_on = current_date - 1")  # ended yesterday
    assert svc.digest(conn, team, date(2025, 11, 24)).items == ()
    conn.execute(
        "UPDATE doctor_contracts SET starts_on = current_date + 10, ends_on = current_date + 40"
    )
    assert svc.digest(conn, team, date(2025, 11, 24)).items == ()
