"""Behaviour watching and daily trends through the real broker, the ingester and the alerts.

Three elders, each with a day or a night of realistic readings published to the broker with
device timestamps of two days ago (the ingester judges each elder at its own stream's time, so
the test waits for nothing but the messages):

* an elder living alone whose wristband moves all morning and lies still all afternoon: one
  inactivity alert, told to the child and the community worker at once;
* an elder on a home care bed who gets up at 03:00 and does not come back: one out-of-bed
  alert, told to the child and the care institution's worker;
* an elder who gets up at 02:00 for the bathroom and is back in bed ten minutes later: nothing.

And seventeen days of stored heart rates whose resting rate rose over the last three: the
ingester's daily trends put it into the signed family doctor's digest.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest

from alerts.digest import DigestItem, render_digest, team_digest
from alerts.listener import AlertListener
from alerts.service import AlertService, PostgresDirectory
from core.mqtt import MqttClient
from core.settings import AlertsSettings, load_settings
from devices import repository as registry
from devices.model import (
    ChannelIn,
    CommunityIn,
    CommunityKind,
    ContactIn,
    ContactRole,
    ContractIn,
    DoctorTeamIn,
    ResidentIn,
    Sex,
    SpecialFlag,
    TeamMemberIn,
    TeamRole,
)
from devices.protocol import (
    AccelWire,
    BedState,
    Channel,
    ReadingWire,
    Vitals,
    accel_i16,
    encode_telemetry,
    topic,
)
from ingest.detection import DetectionSink
from ingest.detection_state import DetectionConfig
from ingest.service import IngestService
from ingest.trends import TrendsConfig
from tests.ingest.test_detection_integration import _host_port
from tests.seed import make_keyring
from tests.services import ingest_settings, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ZONE = ZoneInfo("Asia/Shanghai")
RATE = 25
SCALE_G = 1.0 / 1024.0


@dataclass(frozen=True)
class Home:
    resident_id: uuid.UUID
    device_id: str


def _elder(
    conn: psycopg.Connection[object],
    name: str,
    *,
    device_id: str,
    kind: str,
    flags: frozenset[SpecialFlag],
    community_id: uuid.UUID,
) -> Home:
    keyring = make_keyring()
    resident = registry.create_resident(
        conn,
        ResidentIn(
            name=name,
            sex=Sex.FEMALE,
            birth_date=dt.date(1938, 5, 1),
            flags=flags,
            community_id=community_id,
        ),
        keyring=keyring,
    )
    for role, url in ((ContactRole.CHILD, "json://localhost/child"),
                      (ContactRole.COMMUNITY_WORKER, "json://localhost/worker")):  # fmt: skip
        registry.add_contact(
            conn,
            resident.id,
            ContactIn(name=f"{name} {role.value}", role=role, channel=ChannelIn(url=url)),
            keyring=keyring,
        )
    # Registered a week ago: the readings of two days ago are after the registration.
    conn.execute(
        """INSERT INTO devices (device_id, kind, resident_id, status, registered_at)
           VALUES (%s, %s, %s, 'active', now() - interval '7 days')""",
        (device_id, kind, resident.id),
    )
    return Home(resident.id, device_id)


@pytest.fixture
def homes(db_url: str) -> dict[str, Home]:
    with psycopg.connect(db_url) as conn:
        community = registry.create_community(conn, CommunityIn(name="幸福里社区"))
        institution = registry.create_community(
            conn, CommunityIn(name="康乐养老院", kind=CommunityKind.CARE_INSTITUTION)
        )
        homes = {
            "alone": _elder(conn, "独居老人", device_id="wb-alone-1", kind="wristband",
                            flags=frozenset({SpecialFlag.LIVING_ALONE}), community_id=community.id),
            "stays_out": _elder(conn, "床位老人", device_id="bed-out-1", kind="bed_sensor",
                                flags=frozenset({SpecialFlag.HOME_CARE_BED}),
                                community_id=institution.id),
            "bathroom": _elder(conn, "夜起老人", device_id="bed-back-1", kind="bed_sensor",
                               flags=frozenset({SpecialFlag.HOME_CARE_BED}),
                               community_id=institution.id),
        }  # fmt: skip
        conn.commit()
    return homes


@pytest.fixture
def running(
    db_url: str, shared_broker_url: str, topic_prefix: str
) -> Iterator[tuple[IngestService, DetectionSink]]:
    settings = ingest_settings(db_url, shared_broker_url, topic_prefix)
    service = IngestService(settings)
    lookup = lambda d: service.devices.get(d)  # noqa: E731, PLW0108
    alerts = AlertService(
        AlertsSettings(operator_url="json://localhost/op"),
        PostgresDirectory(opener=registry.channel_opener(make_keyring())),
    )
    listener = AlertListener(lambda: psycopg.connect(db_url, autocommit=True), alerts)
    # The readings are of two days ago: the offline detector (not under test) would call every
    # device silent a few minutes into the test.
    config = DetectionConfig(expected_interval_s=86_400.0)
    sink = DetectionSink(
        db_url, lookup, config=config, listeners=[listener], registry=service.metrics.registry
    )
    service.add_sink(sink)
    thread = threading.Thread(target=service.run, name="test-ingest")
    thread.start()
    wait_until(lambda: service.metrics.connected._value.get() == 1, 20, "the ingester to connect")
    try:
        yield service, sink
    finally:
        service.stop()
        thread.join(30)
        sink.close()
        listener.close()


def _local_ms(day: dt.date, hour: float) -> int:
    start = dt.datetime.combine(day, dt.time(0), ZONE)
    return int((start + dt.timedelta(hours=hour)).timestamp() * 1000)


def _wrist_burst(t: float, moving: bool, rng: np.random.Generator) -> AccelWire:
    """Two seconds at 25 Hz: an arm swinging (0.3 g at 1 Hz) or a wrist lying still."""
    s = np.arange(2 * RATE) / RATE
    acc = np.zeros((s.size, 3))
    acc[:, 2] = 1.0
    if moving:
        acc[:, 0] = 0.3 * np.sin(2 * math.pi * (s + t))
        acc[:, 2] += 0.2 * np.cos(2 * math.pi * (s + t))
    acc += rng.normal(0, 0.004, acc.shape)
    return accel_i16(acc, RATE, SCALE_G)


def _publish(client: MqttClient, prefix: str, device: str, readings: list[ReadingWire]) -> int:
    """Sixty readings a message, as a hub uploads what it gathered."""
    n = 0
    for k in range(0, len(readings), 60):
        client.publish(
            topic(prefix, device, Channel.TELEMETRY), encode_telemetry(readings[k : k + 60]), qos=1
        )
        n += 1
    return n


def _afternoon(day: dt.date) -> list[ReadingWire]:
    """08:00-18:00: a burst every 30 s, moving until 12:00, then still."""
    rng = np.random.default_rng(7)
    out = []
    for k, t in enumerate(range(_local_ms(day, 8), _local_ms(day, 18), 30_000)):
        moving = t < _local_ms(day, 12)
        out.append(ReadingWire(ts=t, seq=k, accel=_wrist_burst(t / 1000, moving, rng)))
    return out


def _night(day: dt.date, out_at: float, back_at: float | None) -> list[ReadingWire]:
    """21:00 to 08:00 next morning, a bed reading a minute: to bed at 22:30, up at ``out_at``
    (hours after the evening's midnight, may exceed 24), back at ``back_at`` (None: not back),
    up for the day at 07:30."""
    out = []
    for k, t in enumerate(range(_local_ms(day, 21), _local_ms(day, 32), 60_000)):
        h = (t - _local_ms(day, 0)) / 3_600_000
        away = out_at <= h and (back_at is None or h < back_at)
        in_bed = 22.5 <= h < 31.5 and not away
        turning = in_bed and k % 47 == 0
        out.append(
            ReadingWire(
                ts=t,
                seq=k,
                bed=BedState(
                    presence=in_bed,
                    heart_rate=62.0 if in_bed else None,
                    resp_rate=14.0 if in_bed else None,
                    movement=3.0 if turning else 0.0,
                ),
            )
        )
    return out


def _alerts(url: str) -> list[tuple[str, str, str, list[str]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT a.device_id, a.kind, a.state,
                      coalesce(array_agg(d.recipient_kind ORDER BY d.recipient_kind)
                               FILTER (WHERE d.tier = 0), '{}')
                 FROM alerts a LEFT JOIN deliveries d ON d.alert_id = a.id
                GROUP BY a.id ORDER BY a.id"""
        ).fetchall()
    return [(r[0], r[1], r[2], list(r[3])) for r in rows]


def _stored(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def _behaviour_findings(url: str) -> list[tuple[str, str, dt.datetime]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT device_id, kind, ts FROM findings
                WHERE kind IN ('inactivity', 'out_of_bed', 'bed_empty') ORDER BY id"""
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_an_afternoon_still_and_a_night_out_of_bed_alert_and_a_bathroom_trip_does_not(
    db_url: str,
    shared_broker_url: str,
    topic_prefix: str,
    homes: dict[str, Home],
    running: tuple[IngestService, DetectionSink],
) -> None:
    _service, sink = running
    day = (dt.datetime.now(ZONE) - dt.timedelta(days=2)).date()
    afternoon = _afternoon(day)
    stays_out = _night(day, out_at=27.0, back_at=None)  # 03:00, not back
    bathroom = _night(day, out_at=26.0, back_at=26.0 + 10 / 60)  # 02:00-02:10
    host, port = _host_port(shared_broker_url)
    client = MqttClient(host=host, port=port, client_id=f"care-{uuid.uuid4().hex[:6]}")
    client.connect_inline()
    try:
        for key, readings in (("alone", afternoon), ("stays_out", stays_out),
                              ("bathroom", bathroom)):  # fmt: skip
            _publish(client, topic_prefix, homes[key].device_id, readings)
        while client.pending_out():
            client.pump(0.01)
    finally:
        client.stop()

    wait_until(
        lambda: (
            _stored(db_url, "accel_bursts") >= len(afternoon)
            and _stored(db_url, "bed_readings") >= len(stays_out) + len(bathroom)
        ),
        60,
        "every reading to be stored",
    )
    # The sink has judged each elder up to its last reading; then one more reading (of the
    # next morning) behind them: once it is judged, every call before it has raised its alerts
    # (the sink runs batch after batch).
    ends = {
        "alone": afternoon[-1].ts, "stays_out": stays_out[-1].ts, "bathroom": bathroom[-1].ts
    }  # fmt: skip
    wait_until(
        lambda: all(sink.behaviour.stream_ms(str(homes[k].resident_id)) >= t
                    for k, t in ends.items()),
        60,
        "the behaviour stage to reach the end of each stream",
    )  # fmt: skip
    last = ReadingWire(ts=bathroom[-1].ts + 60_000, seq=len(bathroom), bed=BedState(presence=False))
    client = MqttClient(host=host, port=port, client_id=f"care-{uuid.uuid4().hex[:6]}")
    client.connect_inline()
    try:
        _publish(client, topic_prefix, homes["bathroom"].device_id, [last])
        while client.pending_out():
            client.pump(0.01)
    finally:
        client.stop()
    wait_until(
        lambda: sink.behaviour.stream_ms(str(homes["bathroom"].resident_id)) >= last.ts,
        60,
        "the last reading to be judged",
    )

    alerts = _alerts(db_url)
    assert sorted(alerts) == [
        ("bed-out-1", "out_of_bed", "open", ["child", "community_worker"]),
        ("wb-alone-1", "inactivity", "open", ["child", "community_worker"]),
    ]
    found = {(d, k): ts for d, k, ts in _behaviour_findings(db_url)}
    assert set(found) == {("wb-alone-1", "inactivity"), ("bed-out-1", "out_of_bed")}
    # The episode starts at the last movement (the last swinging burst before noon) and at the
    # moment the bed emptied (03:00).
    last_move = max(r.ts for r in afternoon if r.ts < _local_ms(day, 12))
    assert found["wb-alone-1", "inactivity"] == dt.datetime.fromtimestamp(last_move / 1000, dt.UTC)
    assert found["bed-out-1", "out_of_bed"] == dt.datetime.fromtimestamp(
        _local_ms(day, 27) / 1000, dt.UTC
    )


# --------------------------------------------------------------------------- daily trends
def _vitals_days(
    conn: psycopg.Connection[object], device: str, last_day: dt.date, values: list[float]
) -> None:
    """One heart-rate reading an hour on each day ending with ``last_day`` (oldest first):
    ``values[d]`` at night (the day's resting rate), ten more in the daytime."""
    first = last_day - dt.timedelta(days=len(values) - 1)
    rows = []
    for d, hr in enumerate(values):
        for hour in range(24):
            at = dt.datetime.combine(first + dt.timedelta(days=d), dt.time(hour), ZONE)
            rows.append((at, device, d * 24 + hour, at, hr if hour < 6 else hr + 10))
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO vitals (ts, device_id, seq, received_at, heart_rate)
               VALUES (%s, %s, %s, %s, %s)""",
            rows,
        )


def test_a_rising_resting_heart_rate_appears_in_the_doctors_digest(
    db_url: str, shared_broker_url: str, topic_prefix: str, homes: dict[str, Home]
) -> None:
    keyring = make_keyring()
    today = dt.datetime.now(ZONE).date()
    yesterday = today - dt.timedelta(days=1)
    baseline = [60.0 + d % 3 for d in range(14)]
    recent = [74.0, 76.0, 75.0]
    with psycopg.connect(db_url) as conn:
        team = registry.create_team(
            conn,
            DoctorTeamIn(
                name="家庭医生一队", members=[TeamMemberIn(name="医生", role=TeamRole.DOCTOR)]
            ),
            keyring=keyring,
        )
        for key in ("alone", "bathroom"):
            registry.sign_contract(
                conn,
                homes[key].resident_id,
                ContractIn(
                    team_id=team.id,
                    service_package="remote monitoring",
                    starts_on=today - dt.timedelta(days=60),
                    ends_on=today + dt.timedelta(days=300),
                ),
            )
        _vitals_days(conn, "wb-alone-1", yesterday, baseline + recent)
        _vitals_days(conn, "bed-back-1", yesterday, [58.0] * 17)  # steady: no trend
        conn.commit()

    settings = load_settings(
        db={"url": db_url},
        mqtt={"url": shared_broker_url, "topic_prefix": topic_prefix,
              "client_id": f"ingest-{uuid.uuid4().hex[:8]}"},
        ingest={"metrics_port": 0, "registry_refresh_s": 1.0},
    )  # fmt: skip
    service = IngestService(settings)
    alerts = AlertService(AlertsSettings(operator_url="json://localhost/op"), PostgresDirectory())
    listener = AlertListener(lambda: psycopg.connect(db_url, autocommit=True), alerts)
    # Judge yesterday at once, whatever the hour of the test.
    config = DetectionConfig(expected_interval_s=86_400.0, trends=TrendsConfig(run_after_min=0))
    sink = DetectionSink(
        db_url,
        lambda d: service.devices.get(d),  # noqa: PLW0108
        config=config,
        listeners=[listener],
        registry=service.metrics.registry,
    )
    service.add_sink(sink)
    thread = threading.Thread(target=service.run, name="test-ingest")
    thread.start()
    host, port = _host_port(shared_broker_url)
    client = MqttClient(host=host, port=port, client_id=f"care-{uuid.uuid4().hex[:6]}")
    try:
        wait_until(lambda: service.metrics.connected._value.get() == 1, 20, "the ingester")
        client.connect_inline()
        seq = iter(range(1_000_000))

        def digest() -> list[DigestItem]:
            # The daily run starts with a batch and hands its findings on with a later one:
            # the wristband keeps reporting.
            now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
            payload = encode_telemetry(
                [ReadingWire(ts=now, seq=next(seq), vitals=Vitals(heart_rate=72.0))]
            )
            client.publish(topic(topic_prefix, "wb-alone-1", Channel.TELEMETRY), payload, qos=1)
            client.pump(0.05)
            with psycopg.connect(db_url) as conn:
                return list(team_digest(conn, team.id, today).items)

        wait_until(lambda: bool(digest()), 60, "the trend in the doctor's digest", interval=0.5)
    finally:
        client.stop()
        service.stop()
        thread.join(30)
        sink.close()
        listener.close()

    with psycopg.connect(db_url) as conn:
        got = team_digest(conn, team.id, today)
    assert [(i.resident_id, i.kind) for i in got.items] == [
        (homes["alone"].resident_id, "vital_trend")
    ]
    ev = got.items[0].evidence
    assert ev["parameter"] == "resting_hr"
    assert ev["baseline"] == pytest.approx(float(np.median(baseline)))
    assert ev["recent"] == pytest.approx(float(np.median(recent)))
    assert ev["days"] == 17
    text = render_digest(got)
    assert f"resting_hr: {np.median(baseline)} -> {np.median(recent)}" in text
