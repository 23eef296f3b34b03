"""``anxin demo``: the whole pipeline on one machine, with a live console, until Ctrl-C.

Finds the configured PostgreSQL and MQTT broker (``ANXIN_DB__URL``, ``ANXIN_MQTT__URL``) and,
when one is unreachable, starts an embedded one (:mod:`demo.embedded`) unless told not to.
Then: migrate, register simulated wristbands and one demo elder with a full (sample) emergency
profile and care circle, start a local stand-in for the 120 dispatch centre and the family's
phones (:mod:`demo.receiver`), and run the ingester (which raises alerts), the alert
delivery worker and escalation clock, the HTTP API with the console and a paced simulator (one
message per device per second), each in a thread. Every ``BAD_EVERY_S`` seconds one malformed
message and one with an absurd heart rate go out, so the dead-letter path shows; every
``SOS_EVERY_S`` seconds the demo elder's wristband sends an SOS, so an alert opens and the 120
push and the family's and the doctor's messages arrive at the receiver; the child taps the
acknowledge link in the message, and the demo operator resolves the alert ``RESOLVE_AFTER_S``
later, so the next SOS opens a new one. A few lines of figures every ``REPORT_EVERY_S``
seconds; totals on exit.

``ANXIN_DEMO_SECONDS`` (or ``seconds=``) stops the demo after that long, for tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal, TextIO, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
import uvicorn

from alerts.delivery import run_worker
from alerts.escalation import run_escalation
from alerts.lifecycle import TransitionRefused
from alerts.model import Actor, ActorKind, AlertState
from alerts.service import AlertService, PostgresDirectory
from api.app import create_app
from core import db
from core.clock import SystemClock
from core.errors import AnxinError, ConfigError, DatabaseError
from core.mqtt import MqttClient, MqttError, client_for
from core.settings import Settings, load_settings
from demo.embedded import EmbeddedError, PostgresProbe, free_port, probe_postgres, reachable_broker
from demo.embedded_broker import EmbeddedBroker
from demo.embedded_postgres import EmbeddedPostgres
from demo.receiver import DemoReceiver, ReceiverTotals
from devices import access
from devices import protocol as proto
from devices import repository as registry
from devices.crypto import Keyring
from devices.model import (
    Address,
    BloodType,
    ChannelIn,
    CommunityIn,
    ConsentIn,
    ConsentRelation,
    ConsentScope,
    ContactIn,
    ContactPatch,
    ContactRole,
    ContractIn,
    DoctorTeamIn,
    HospitalIn,
    ProfileIn,
    ResidentIn,
    ResponderNotes,
    Sex,
    SpecialFlag,
    TeamMemberIn,
    TeamRole,
)
from devices.registry import ensure_devices
from ingest.runner import run_ingest
from ingest.service import IngestService
from simulators.wearable import WearableFleet, publish_fleet

log = logging.getLogger(__name__)

Embedded = Literal["auto", "always", "never"]
DEVICE_PREFIX = "demo-wb"
REPORT_EVERY_S = 5.0
BAD_EVERY_S = 15.0
FIRST_BAD_AFTER_S = 3.0
SECONDS_ENV = "ANXIN_DEMO_SECONDS"
SOS_EVERY_S = 20.0
FIRST_SOS_AFTER_S = 5.0
#: Deliveries still due when the demo stops get this long to go out.
DRAIN_S = 10.0
#: The demo operator resolves an acknowledged alert this long after, so the next SOS opens anew.
RESOLVE_AFTER_S = 8.0
_ACK_LINK = re.compile(r"https?://\S+/api/v1/ack/[A-Za-z0-9_-]{24}")
# Libraries whose INFO lines would drown the demo's own report.
_QUIET_LOGGERS = (
    "amqtt",
    "transitions",
    "uvicorn",
    "uvicorn.error",
    "ingest",
    "psycopg.pool",
    "core",
    "api.app",
    "alerts",
    "apprise",
    "httpx",
)


class DemoError(AnxinError):
    """The demo cannot start: a service is unreachable and no embedded one may be used."""


def _say(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


def _seconds_from_env() -> float | None:
    raw = os.environ.get(SECONDS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(
            f"Config {SECONDS_ENV!r} has value {raw!r}. Not a number of seconds."
        ) from exc
    if value <= 0:
        raise ConfigError(
            f"Config {SECONDS_ENV!r} has value {raw!r}. Expected more than 0 seconds."
        )
    return value


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _admin_url(url: str) -> tuple[str, str]:
    """The same server's ``postgres`` maintenance database, and the database name of ``url``."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or (parts.username or "postgres")
    return urlunsplit(parts._replace(path="/postgres")), name


def _replace(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """A copy of the (frozen) settings with some fields of some sections changed."""
    update = {
        name: getattr(settings, name).model_copy(update=fields) for name, fields in sections.items()
    }
    return settings.model_copy(update=update)


# -- the demo elder and the care circle -----------------------------------------------------
# Every name, number and address below is made up for the demo; people are named by role.

DEMO_BY = "anxin demo"
DEMO_ELDER = "演示老人 Demo elder (sample)"
DEMO_COMMUNITY = "安心示例社区 Sample community"
DEMO_HOSPITAL = "示例市第一人民医院 Sample partner hospital"
DEMO_TEAM = "示例家庭医生团队 Sample family doctor team"
DEMO_DOCTOR = "Demo family doctor (sample)"
#: (name, role, priority, phone, receiver path) of the demo elder's care circle.
DEMO_CONTACTS = (
    ("Demo child (sample)", ContactRole.CHILD, 1, "13800000002", "child"),
    ("Demo work unit, retirement office (sample)", ContactRole.WORK_UNIT, 2, "0371-55550102", "work-unit"),
)  # fmt: skip
#: Receiver paths of the family and the doctor (the rest: hospital, community, operator).
FAMILY_PATHS = frozenset({"child", "work-unit", "doctor"})


def _demo_profile() -> ProfileIn:
    return ProfileIn(
        conditions=["高血压 hypertension", "2 型糖尿病 type 2 diabetes"],
        medications=[
            "氨氯地平 amlodipine 5 mg, mornings",
            "二甲双胍 metformin 500 mg, twice a day",
        ],
        allergies=["青霉素 penicillin"],
        blood_type=BloodType.A_POS,
        past_treatments=["2021 年心脏支架 coronary stent, 2021 (sample)"],
        responder_notes=ResponderNotes(
            door_code="门禁 0000# (sample)",
            mobility="walks with a cane; stairs are hard",
            language="普通话 Mandarin",
            hearing="hard of hearing on the left",
        ),
    )


def _find(conn: Any, query: str, *params: object) -> uuid.UUID | None:
    row = conn.execute(query, params).fetchone()
    return None if row is None else cast(uuid.UUID, row[0])


def ensure_demo_elder(
    conn: Any, keyring: Keyring, receiver: DemoReceiver, device_id: str
) -> uuid.UUID:
    """The demo elder, registered once and reused: profile, consent, care circle (a child and a
    work unit), a family doctor under contract, a partner hospital and a community, and
    ``device_id`` bound to them. The channels point at this run's ``receiver`` (its port
    changes from run to run). Returns the elder's id."""
    today = dt.date.today()
    community = _find(
        conn, "SELECT id FROM communities WHERE name = %s AND status = 'active'", DEMO_COMMUNITY
    ) or registry.create_community(
        conn, CommunityIn(name=DEMO_COMMUNITY, address="示例市演示区样例路 1 号 (sample)",
                          phone="0371-55550100"),
    ).id  # fmt: skip
    hospital = _find(
        conn, "SELECT id FROM hospitals WHERE name = %s AND status = 'active'", DEMO_HOSPITAL
    ) or registry.create_hospital(
        conn, HospitalIn(name=DEMO_HOSPITAL, address="示例市演示区健康路 120 号 (sample)",
                         green_channel_phone="0371-55550120"),
    ).id  # fmt: skip
    elder = _find(
        conn,
        "SELECT id FROM residents WHERE name = %s AND status = 'active' ORDER BY created_at LIMIT 1",
        DEMO_ELDER,
    )
    if elder is None:
        elder = registry.create_resident(
            conn,
            ResidentIn(
                name=DEMO_ELDER, sex=Sex.FEMALE, birth_date=dt.date(1941, 3, 8),
                landline="0371-55550101", mobile="13800000001",
                address=Address(
                    province="示例省", city="示例市", district="演示区", street="样例路 8 号",
                    community="安心示例小区", text="3 号楼 2 单元 401 (sample address)",
                    lat=34.7802, lon=113.6651,
                ),
                flags=frozenset({SpecialFlag.LIVING_ALONE, SpecialFlag.EMPTY_NEST,
                                 SpecialFlag.CHRONIC_DISEASE}),
                community_id=community, hospital_id=hospital,
            ),
            keyring=keyring,
        ).id  # fmt: skip
        registry.record_consent(
            conn, elder,
            ConsentIn(given_by=DEMO_ELDER, relation=ConsentRelation.SELF,
                      given_at=dt.datetime.now(dt.UTC),
                      scopes=frozenset({ConsentScope.REGISTRY, ConsentScope.EMERGENCY_PROFILE,
                                        ConsentScope.SHARE_WITH_120, ConsentScope.SHARE_WITH_DOCTOR,
                                        ConsentScope.SHARE_WITH_FAMILY, ConsentScope.MONITORING})),
        )  # fmt: skip
        registry.put_profile(
            conn, elder, _demo_profile(), by=DEMO_BY, keyring=keyring,
            verified_at=dt.datetime.now(dt.UTC),
        )  # fmt: skip
    have = {c.name: c for c in registry.list_contacts(conn, elder, keyring=keyring)}
    for name, role, priority, phone, path in DEMO_CONTACTS:
        channel = ChannelIn(url=receiver.phone_url(path))
        if name in have:
            registry.update_contact(
                conn, have[name].id, ContactPatch(channel=channel), keyring=keyring
            )
        else:
            registry.add_contact(
                conn, elder,
                ContactIn(name=name, role=role, priority=priority, phones=[phone], channel=channel),
                keyring=keyring,
            )  # fmt: skip
    doctor = TeamMemberIn(
        name=DEMO_DOCTOR, role=TeamRole.DOCTOR, phone="13700000003",
        channel=ChannelIn(url=receiver.phone_url("doctor")),
    )  # fmt: skip
    team = _find(
        conn, "SELECT id FROM doctor_teams WHERE name = %s AND status = 'active'", DEMO_TEAM
    )
    if team is None:
        team = registry.create_team(
            conn,
            DoctorTeamIn(
                name=DEMO_TEAM, institution="示例社区卫生服务中心 (sample)", members=[doctor]
            ),
            keyring=keyring,
        ).id
    else:
        url = receiver.phone_url("doctor")
        members = registry.get_team(conn, team, keyring=keyring).members
        current = [m for m in members if m.name == DEMO_DOCTOR and m.status == "active"]
        if not any(m.channel is not None and m.channel.url == url for m in current):
            for m in current:  # an earlier run's receiver port: the member with the new one
                registry.retire_team_member(conn, m.id)
            registry.add_team_member(conn, team, doctor, keyring=keyring)
    contract = registry.active_contract(conn, elder, on=today)
    if contract is None or contract.team_id != team:
        registry.sign_contract(
            conn, elder,
            ContractIn(team_id=team, service_package="慢病管理 chronic disease care (sample)",
                       starts_on=today - dt.timedelta(days=30), ends_on=today + dt.timedelta(days=365)),
        )  # fmt: skip
    if registry.get_device(conn, device_id).resident_id != elder:
        registry.bind_device(conn, device_id, resident_id=elder, gateway_id=None, by=DEMO_BY)
    return elder


#: The screens ``make demo`` prints, with the role whose sample token opens each.
SCREEN_LINKS: tuple[tuple[str, str], ...] = (
    ("120 dispatcher:", "/app/dispatch"),
    ("family doctor:", "/app/doctor"),
    ("care operator:", "/app/operator"),
    ("family (signed in):", "/app/family"),
)


def sample_tokens(conn: Any, elder: uuid.UUID, operator_token: str) -> dict[str, str]:
    """A token valid today for each screen of :data:`SCREEN_LINKS`: a dispatcher, the demo
    team's doctor, the operator of the console, and the demo elder's child."""
    member = _find(
        conn,
        """SELECT m.id FROM doctor_team_members m JOIN doctor_teams t ON t.id = m.team_id
            WHERE t.name = %s AND m.name = %s AND m.status = 'active' ORDER BY m.id LIMIT 1""",
        DEMO_TEAM,
        DEMO_DOCTOR,
    )
    dispatcher = access.create_principal(conn, "demo 120 dispatcher", access.Role.DISPATCHER)
    doctor = access.create_principal(
        conn, f"demo {DEMO_DOCTOR}", access.Role.DOCTOR, member_ids=[member] if member else []
    )
    family = access.create_principal(conn, "demo child", access.Role.FAMILY, resident_ids=[elder])
    return {
        "/app/dispatch": access.issue_token(conn, dispatcher, days=1).token,
        "/app/doctor": access.issue_token(conn, doctor, days=1).token,
        "/app/operator": operator_token,
        "/app/family": access.issue_token(conn, family, days=1).token,
    }


def close_leftover_alerts(conn: Any, service: AlertService, device_prefix: str) -> int:
    """Close the live alerts an earlier demo run left on the demo devices, so that this run's
    first SOS opens a new alert (a live one would only count one more occurrence)."""
    rows = conn.execute(
        """SELECT id, state FROM alerts WHERE device_id LIKE %s
              AND state IN ('pending', 'open', 'acknowledged', 'dispatched')""",
        (f"{device_prefix}-%",),
    ).fetchall()
    operator = Actor(ActorKind.OPERATOR, DEMO_BY)
    now = dt.datetime.now(dt.UTC)
    closed = 0
    for alert_id, state in rows:
        target = AlertState.CANCELLED if state == "pending" else AlertState.RESOLVED
        try:
            service.transition(
                conn, alert_id, target, operator, now, channel="api",
                note="left open by an earlier demo run; closed at start-up",
            )  # fmt: skip
        except TransitionRefused:
            continue
        closed += 1
    return closed


# -- finding or starting the services -------------------------------------------------------


def _database(
    settings: Settings, embedded: Embedded, stack: contextlib.ExitStack, out: TextIO
) -> str:
    url = settings.db.url
    shown = db.redact_url(url)
    if embedded != "always":
        state, message = probe_postgres(url, timeout=min(3.0, settings.db.connect_timeout_s))
        if state is PostgresProbe.READY:
            _say(out, f"database:  {shown}")
            return url
        if state is PostgresProbe.NO_DATABASE:
            admin, name = _admin_url(url)
            db.create_database(admin, name)
            _say(out, f"database:  {shown} (created database {name!r})")
            return url
        if state is PostgresProbe.REFUSED:
            raise DemoError(f"The PostgreSQL at {shown} refused the connection: {message}")
        if embedded == "never":
            raise DemoError(
                f"No PostgreSQL answers at {shown} ({message or 'unreachable'}). Start one, set "
                "ANXIN_DB__URL, or run with --embedded auto."
            )
        _say(out, f"database:  nothing answers at {shown}; starting an embedded PostgreSQL ...")
    else:
        _say(out, "database:  starting an embedded PostgreSQL (--embedded always) ...")
    server = stack.enter_context(EmbeddedPostgres())
    who = f", running as user {server.run_as!r} since we are root" if server.run_as else ""
    _say(out, f"database:  embedded PostgreSQL at {server.url} (thrown away on exit{who})")
    return server.url


def _broker(
    settings: Settings, embedded: Embedded, stack: contextlib.ExitStack, out: TextIO
) -> str:
    mqtt = settings.mqtt
    if embedded != "always":
        if reachable_broker(mqtt.host, mqtt.port, timeout=3.0, tls=mqtt.tls):
            _say(out, f"broker:    {mqtt.url}")
            return mqtt.url
        if embedded == "never":
            raise DemoError(
                f"No MQTT broker answers at {mqtt.url}. Start one (Mosquitto), set "
                "ANXIN_MQTT__URL, or run with --embedded auto."
            )
        _say(out, f"broker:    nothing answers at {mqtt.url}; starting an embedded broker ...")
    else:
        _say(out, "broker:    starting an embedded broker (--embedded always) ...")
    broker = stack.enter_context(EmbeddedBroker())
    _say(out, f"broker:    embedded amqtt broker at {broker.url} (in this process, MQTT 3.1.1)")
    return broker.url


# -- the worker threads ---------------------------------------------------------------------


@dataclass
class _Worker:
    name: str
    thread: threading.Thread
    error: BaseException | None = None


@dataclass
class _Demo:
    settings: Settings
    device_ids: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    sim_stop: threading.Event = field(default_factory=threading.Event)
    ingest_stop: threading.Event = field(default_factory=threading.Event)
    alerts_stop: threading.Event = field(default_factory=threading.Event)
    workers: list[_Worker] = field(default_factory=list)
    service: IngestService | None = None
    receiver: DemoReceiver | None = None
    alert_service: AlertService | None = None
    tapped: set[str] = field(default_factory=set)
    """Idempotency keys of the child's messages whose acknowledge link was looked at."""
    published: int = 0
    bad_published: int = 0
    sos_published: int = 0
    shown: set[str] = field(default_factory=set)
    """Samples of what arrived at the receiver, printed once each."""

    def spawn(self, name: str, target: Callable[[], None]) -> _Worker:
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # reported by the main thread, which stops the demo
                worker.error = exc
                self.stop.set()

        worker = _Worker(name, threading.Thread(target=body, name=f"demo-{name}", daemon=True))
        self.workers.append(worker)
        worker.thread.start()
        return worker

    # The simulator: paced, one message per device per second, plus bad ones now and then.
    def simulate(self, client: MqttClient) -> None:
        prefix = self.settings.mqtt.topic_prefix
        fleet = WearableFleet(self.device_ids).with_prefix(prefix)
        started = time.monotonic()
        next_bad = started + FIRST_BAD_AFTER_S
        next_sos = started + FIRST_SOS_AFTER_S
        second = 0
        try:
            while not self.sim_stop.is_set():
                report = publish_fleet(client, fleet, seconds=1, start_seq=second)
                self.published += report.sent
                now = time.monotonic()
                if now >= next_bad:
                    self.bad_published += self._publish_bad(client, prefix, second)
                    next_bad += BAD_EVERY_S
                if now >= next_sos:
                    self._publish_sos(client, prefix, second)
                    next_sos += SOS_EVERY_S
                second += 1
                wake = started + second
                while not self.sim_stop.is_set() and time.monotonic() < wake:
                    client.pump(min(0.05, max(0.0, wake - time.monotonic())))
            deadline = time.monotonic() + 5.0
            while client.pending_out() and time.monotonic() < deadline:
                client.pump(0.02)
        finally:
            client.stop()

    def _publish_sos(self, client: MqttClient, prefix: str, seq: int) -> None:
        """The demo elder presses the SOS key of the wristband (an event, QoS 1)."""
        device = self.device_ids[0]
        event = proto.Event(
            ts_ms=time.time_ns() // 1_000_000, seq=seq, device_id=device, kind=proto.EventKind.SOS
        )
        client.publish(
            proto.topic(prefix, device, proto.Channel.EVENT), proto.encode_event(event), qos=1
        )
        self.sos_published += 1

    def _publish_bad(self, client: MqttClient, prefix: str, seq: int) -> int:
        device = self.device_ids[0]
        topic = proto.topic(prefix, device, proto.Channel.TELEMETRY)
        # Cut short in the middle of an object: not JSON at all.
        client.publish(
            topic, b'{"v":1,"ts":' + str(time.time_ns() // 1_000_000).encode() + b',"seq":', qos=1
        )
        absurd = proto.ReadingWire(
            ts=time.time_ns() // 1_000_000,
            seq=1_000_000_000 + seq,
            vitals=proto.Vitals(heart_rate=900.0, spo2=97.0),
        )
        client.publish(topic, proto.encode_telemetry([absurd]), qos=1)
        return 2


@dataclass(frozen=True, slots=True)
class _Counts:
    vitals: int
    bursts: int
    reasons: dict[str, int]
    alerts_live: int
    alerts_total: int
    delivered: int
    deliveries: int


def _counts(url: str) -> _Counts:
    with db.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM vitals), (SELECT count(*) FROM accel_bursts),
                      (SELECT count(*) FILTER (WHERE state IN ('pending', 'open', 'acknowledged',
                                                               'dispatched')) FROM alerts),
                      (SELECT count(*) FROM alerts),
                      (SELECT count(*) FILTER (WHERE status = 'delivered') FROM deliveries),
                      (SELECT count(*) FROM deliveries)"""
        ).fetchone()
        reasons = dict(
            conn.execute(
                "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason"
            ).fetchall()
        )
    n = [int(v) for v in row] if row else [0] * 6
    return _Counts(n[0], n[1], {str(k): int(v) for k, v in reasons.items()}, *n[2:])


def _outbox_busy(url: str) -> bool:
    """Whether deliveries are being sent or are due now (not those waiting for a retry)."""
    with db.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """SELECT count(*) FROM deliveries WHERE status = 'sending'
                   OR (status = 'pending' AND next_attempt_at <= now())"""
        ).fetchone()
    return bool(row and row[0])


def _alerts_text(counts: _Counts, got: ReceiverTotals) -> str:
    family = sum(n for who, n in got.messages.items() if who in FAMILY_PATHS)
    others = sum(got.messages.values()) - family
    bad = f", {got.bad_signatures} refused (bad signature)" if got.bad_signatures else ""
    return (
        f"alerts {counts.alerts_live} live of {counts.alerts_total} | deliveries "
        f"{counts.delivered} of {counts.deliveries} delivered | received: 120 pushes "
        f"{got.pushes} (signature ok){bad}, family/doctor messages {family}, hospital/community/"
        f"operator {others}"
    )


def _reasons_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in reasons.items()) or "none"


@contextlib.contextmanager
def _signals_stop(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (main thread only; elsewhere Python cannot install them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    levels = {name: logging.getLogger(name).level for name in (*_QUIET_LOGGERS, "ingest.service")}
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():  # restored for whoever runs next in this process
            logging.getLogger(name).setLevel(level)


# -- the command ----------------------------------------------------------------------------


def run_demo(
    devices: int,
    embedded: str,
    *,
    seconds: float | None = None,
    settings: Settings | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the demo until Ctrl-C (SIGINT/SIGTERM) or ``seconds`` (``ANXIN_DEMO_SECONDS``).

    Args:
        devices: simulated wristbands, ``demo-wb-00000`` on.
        embedded: ``auto`` starts an embedded PostgreSQL or broker when the configured one is
            unreachable, ``always`` uses embedded ones only, ``never`` fails instead.
        seconds: stop after this long; the environment's ``ANXIN_DEMO_SECONDS`` when None.
        settings: the settings; :func:`core.settings.load_settings` when None.
        out: where the report goes; standard output when None.

    Returns:
        0 after a clean stop, 1 when a part of the pipeline failed, 2 when it could not start.
    """
    stream = out or sys.stdout
    if embedded not in ("auto", "always", "never"):
        raise ConfigError(
            f"Option 'embedded' has value {embedded!r}. Expected auto, always or never."
        )
    if not 1 <= devices <= 100_000:
        raise ConfigError(f"Option 'devices' has value {devices!r}. Expected 1 to 100000.")
    limit = seconds if seconds is not None else _seconds_from_env()
    base = settings or load_settings()
    stop = threading.Event()
    with _signals_stop(stop), _quiet_libraries(), contextlib.ExitStack() as stack:
        try:
            demo = _start(
                base,
                devices=devices,
                embedded=cast(Embedded, embedded),
                stack=stack,
                out=stream,
                stop=stop,
            )
        except (DemoError, EmbeddedError, MqttError, DatabaseError) as exc:
            _say(stream, f"anxin demo: {exc}")
            return 2
        return _run(demo, stream, limit)


def _start(
    base: Settings,
    *,
    devices: int,
    embedded: Embedded,
    stack: contextlib.ExitStack,
    out: TextIO,
    stop: threading.Event,
) -> _Demo:
    _say(out, "Anxin demo: finding the database and the broker")
    db_url = _database(base, embedded, stack, out)
    mqtt_url = _broker(base, embedded, stack, out)
    api_host = base.api.host
    api_port = base.api.port
    if api_port == 0 or not _port_free(api_host, api_port):
        api_port = free_port(api_host)
    metrics_port = base.ingest.metrics_port
    if metrics_port and not _port_free(base.ingest.metrics_host, metrics_port):
        metrics_port = 0
    shown_host = "127.0.0.1" if api_host in ("0.0.0.0", "::", "") else api_host  # noqa: S104 - a display rule
    # The 120 centre and the phones: a local receiver, with a secret of this run for the push.
    secret = secrets.token_urlsafe(24)
    receiver = stack.enter_context(DemoReceiver(secret))
    alerts = load_settings(
        alerts={
            **base.alerts.model_dump(),
            "dispatch120_url": receiver.dispatch120_url,
            "dispatch120_secret": secret,
            "operator_url": receiver.phone_url("operator"),
            "sms_url": receiver.phone_url("sms-{phone}"),
            "ack_base_url": f"http://{shown_host}:{api_port}/api/v1/ack/",
        }
    ).alerts
    settings = _replace(
        base,
        db={"url": db_url},
        # amqtt speaks MQTT 3.1.1 only; a real broker gets the service's default (MQTT 5).
        mqtt={"url": mqtt_url, **({} if mqtt_url == base.mqtt.url else {"protocol": "3.1.1"})},
        api={"port": api_port},
        ingest={"metrics_port": metrics_port},
    ).model_copy(update={"alerts": alerts})
    result = db.upgrade(db_url)
    ids = [f"{DEVICE_PREFIX}-{i:05d}" for i in range(devices)]
    keyring = Keyring.from_settings(settings.registry)
    directory = PostgresDirectory(alerts.sms_url, opener=registry.channel_opener(keyring))
    alert_service = AlertService(alerts, directory)
    with db.connect(db_url) as conn:
        added = ensure_devices(conn, ids)
        # The console reads the stream through the API, as an operator: a token for today.
        console_principal = access.create_principal(conn, "demo console", access.Role.OPERATOR)
        console_token = access.issue_token(conn, console_principal, days=1).token
        conn.commit()
        elder = ensure_demo_elder(conn, keyring, receiver, ids[0])
        conn.commit()
        tokens = sample_tokens(conn, elder, console_token)
        conn.commit()
        closed = close_leftover_alerts(conn, alert_service, DEVICE_PREFIX)
        conn.commit()
    _say(
        out,
        f"schema:    version {result.current} ({result.mode} mode); {devices} demo wristbands "
        f"({added} newly registered)",
    )
    _say(
        out,
        f"receiver:  stand-ins for the 120 dispatch centre and the family's phones at "
        f"http://{receiver.host}:{receiver.port}",
    )
    _say(
        out,
        f"elder:     {DEMO_ELDER} wears {ids[0]}: emergency profile, a child, a work unit, a "
        f"family doctor, a partner hospital, a community (all sample data)"
        + (f"; closed {closed} live alert(s) an earlier run left" if closed else ""),
    )

    demo = _Demo(settings, ids, stop=stop, receiver=receiver, alert_service=alert_service)
    # Stop order, last in first out: simulator, ingester (drains), alert workers, API, then
    # the receiver and the services.
    ingest_client = client_for(
        settings.mqtt,
        persistent=True,
        manual_ack=True,
        receive_maximum=settings.mqtt.receive_maximum,
    )
    service = IngestService(settings, client=ingest_client)
    demo.service = service

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=api_host,
            port=api_port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            # An open screen's live stream would hold the stop for minutes otherwise.
            timeout_graceful_shutdown=3,
        )
    )
    api_worker = demo.spawn("api", server.run)

    def stop_api() -> None:
        server.should_exit = True
        api_worker.thread.join(timeout=10)

    stack.callback(stop_api)
    alert_workers = [
        demo.spawn("deliveries", lambda: run_worker(settings, demo.alerts_stop)),
        demo.spawn(
            "escalation",
            lambda: run_escalation(
                lambda: db.connect(db_url, autocommit=True),
                alert_service,
                SystemClock(),
                demo.alerts_stop,
                alerts.escalation_every_s,
            ),
        ),
    ]

    def stop_alert_workers() -> None:
        demo.alerts_stop.set()
        for worker in alert_workers:
            worker.thread.join(timeout=30)

    stack.callback(stop_alert_workers)
    ingest_worker = demo.spawn("ingest", lambda: run_ingest(settings, demo.ingest_stop, service))

    def stop_ingest() -> None:
        demo.ingest_stop.set()
        ingest_worker.thread.join(timeout=30)

    stack.callback(stop_ingest)
    if not ingest_client.connected.wait(15):
        raise DemoError(f"The ingester did not connect to the broker at {mqtt_url}.")
    deadline = time.monotonic() + 10
    while not server.started and api_worker.thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise DemoError(f"The API did not start on {api_host}:{api_port}.")
    time.sleep(0.3)  # let the ingester's SUBSCRIBE reach the broker before the first publish

    sim_client = client_for(settings.mqtt, client_id=f"{settings.mqtt.client_id}-demo-sim"[:64])
    sim_client.connect_inline()
    sim_worker = demo.spawn("simulator", lambda: demo.simulate(sim_client))

    def stop_sim() -> None:
        demo.sim_stop.set()
        sim_worker.thread.join(timeout=15)

    stack.callback(stop_sim)

    url = f"http://{shown_host}:{api_port}/#token={console_token}"
    bar = "=" * (len(url) + 22)
    _say(out)
    _say(out, bar)
    _say(out, f"  Anxin live console: {url}")
    _say(
        out,
        "  The screens of the people who act (each link signs in with a sample token for today):",
    )
    for label, path in SCREEN_LINKS:
        _say(out, f"    {label:<24} http://{shown_host}:{api_port}{path}#token={tokens[path]}")
    _say(out, bar)
    if metrics_port:
        _say(out, f"ingest metrics: http://{settings.ingest.metrics_host}:{metrics_port}/metrics")
    _say(
        out,
        f"{devices} wristbands publish once a second; a malformed message and a heart rate of 900 "
        f"go out every {BAD_EVERY_S:.0f} s; the demo elder presses SOS every {SOS_EVERY_S:.0f} s "
        f"(first after {FIRST_SOS_AFTER_S:.0f} s). Ctrl-C stops.",
    )
    _say(out)
    return demo


_INDENT = " " * 9  # under the "[   5 s] " of a status line


def _show_samples(receiver: DemoReceiver, out: TextIO, shown: set[str]) -> None:
    """Once each: what the first 120 push and the first family message said."""
    if "push" not in shown and (pushes := receiver.pushes()):
        push = pushes[0]
        shown.add("push")
        _say(out, f"{_INDENT}the 120 centre got alert {push.alert_id} ({push.kind}), signed, with:")
        _say(out, f"{_INDENT}  elder:   {push.elder_name}")
        _say(out, f"{_INDENT}  address: {push.address}")
        if push.has_profile:
            _say(
                out,
                f"{_INDENT}  profile: {'; '.join(push.conditions) or '-'} | allergies: "
                f"{'; '.join(push.allergies) or '-'} | blood type {push.blood_type}",
            )
    # The child's message first: the one a family member would read.
    family = sorted(
        (m for m in receiver.messages() if m.recipient in FAMILY_PATHS),
        key=lambda m: m.recipient != "child",
    )
    if "message" not in shown and family:
        message = family[0]
        shown.add("message")
        _say(out, f"{_INDENT}the {message.recipient}'s phone got:")
        for line in [message.title, *message.body.splitlines()]:
            if line.strip():
                _say(out, f"{_INDENT}  | {line.strip()}")


def _family_and_operator_act(demo: _Demo, out: TextIO) -> None:
    """The child taps the acknowledge link of a new message (help is on the way); the demo
    operator resolves an alert acknowledged ``RESOLVE_AFTER_S`` ago, so the next SOS opens a
    new alert with a new 120 push."""
    receiver, service = demo.receiver, demo.alert_service
    assert receiver is not None and service is not None  # noqa: S101 - set by _start()
    for message in receiver.messages():
        key = message.idempotency_key or ""
        if message.recipient != "child" or key in demo.tapped:
            continue
        demo.tapped.add(key)
        link = _ACK_LINK.search(message.body)
        if link is None:
            continue
        try:
            # The link opens a page; its button POSTs (a link preview changes nothing).
            answer = httpx.post(link.group(0), headers={"Accept": "application/json"}, timeout=5.0)
        except httpx.HTTPError as exc:
            _say(out, f"{_INDENT}the child's acknowledge link did not answer: {exc}")
            continue
        if answer.status_code == 200:
            said = answer.json().get("message", "")
            _say(out, f"{_INDENT}the child tapped the acknowledge link: {said}")
    operator = Actor(ActorKind.OPERATOR, DEMO_BY)
    with db.connect(demo.settings.db.url, autocommit=True) as conn:
        due = conn.execute(
            """SELECT id FROM alerts WHERE state = 'acknowledged' AND device_id LIKE %s
                  AND acknowledged_at < now() - make_interval(secs => %s) ORDER BY id""",
            (f"{DEVICE_PREFIX}-%", RESOLVE_AFTER_S),
        ).fetchall()
        for (alert_id,) in due:
            with contextlib.suppress(TransitionRefused):
                service.transition(
                    conn, alert_id, AlertState.RESOLVED, operator, dt.datetime.now(dt.UTC),
                    channel="api", note="demo: the family came round; all well",
                )  # fmt: skip
                _say(
                    out, f"{_INDENT}the operator resolved alert {alert_id} (the family came round)"
                )


def _run(demo: _Demo, out: TextIO, limit: float | None) -> int:
    service = demo.service
    receiver = demo.receiver
    assert service is not None and receiver is not None  # noqa: S101 - set by _start()
    started = time.monotonic()
    last_t = started
    last_received = 0
    url = demo.settings.db.url
    try:
        while True:
            wait = REPORT_EVERY_S
            if limit is not None:
                wait = min(wait, limit - (time.monotonic() - started))
            if wait <= 0 or demo.stop.wait(wait) or wait < REPORT_EVERY_S:
                break  # asked to stop, or the time limit is reached
            now = time.monotonic()
            # The ingester's running totals: a plain dict updated by its writer thread.
            received = service.totals()["received"]
            rate = (received - last_received) / (now - last_t)
            last_received, last_t = received, now
            try:
                counts = _counts(url)
            except DatabaseError as exc:
                _say(out, f"[{now - started:5.0f} s] database unavailable: {exc}")
                continue
            _say(
                out,
                f"[{now - started:5.0f} s] stored {counts.vitals} vitals, {counts.bursts} accel "
                f"bursts | {rate:.0f} msg/s | dead letters: {_reasons_text(counts.reasons)}",
            )
            _say(out, f"{_INDENT}{_alerts_text(counts, receiver.totals())}")
            _show_samples(receiver, out, demo.shown)
            try:
                _family_and_operator_act(demo, out)
            except DatabaseError as exc:
                _say(out, f"{_INDENT}database unavailable: {exc}")
    finally:
        _say(out, "stopping ...")
    return _finish(demo, out, service, time.monotonic() - started)


def _finish(demo: _Demo, out: TextIO, service: IngestService, elapsed: float) -> int:
    receiver = demo.receiver
    assert receiver is not None  # noqa: S101 - set by _start()
    # Stop the producers first and let the ingester drain what it received.
    demo.sim_stop.set()
    for worker in demo.workers:
        if worker.name == "simulator":
            worker.thread.join(timeout=15)
    sent = demo.published + demo.bad_published + demo.sos_published
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and service.totals()["received"] < sent:
        time.sleep(0.1)
    # Its "disconnected from the broker" warning is expected now.
    logging.getLogger("ingest.service").setLevel(logging.ERROR)
    demo.ingest_stop.set()
    for worker in demo.workers:
        if worker.name == "ingest":
            worker.thread.join(timeout=30)
    # Then the alert workers, once what is due in the outbox went out (retries wait).
    deadline = time.monotonic() + DRAIN_S
    with contextlib.suppress(DatabaseError):
        while time.monotonic() < deadline and _outbox_busy(demo.settings.db.url):
            time.sleep(0.2)
    demo.alerts_stop.set()
    for worker in demo.workers:
        if worker.name in ("deliveries", "escalation"):
            worker.thread.join(timeout=30)
    failed = [w for w in demo.workers if w.error is not None]
    totals = service.totals()
    try:
        counts: _Counts | None = _counts(demo.settings.db.url)
    except DatabaseError:
        counts = None
    _say(
        out,
        f"totals after {elapsed:.0f} s: published {demo.published} messages "
        f"(+{demo.bad_published} bad ones, {demo.sos_published} SOS); ingester received "
        f"{totals['received']}, stored {totals['stored']} rows, dead-lettered {totals['dead']}, "
        f"{totals['dup']} duplicates",
    )
    if counts is None:
        _say(out, "in the database: unavailable")
    else:
        _say(
            out,
            f"in the database: {counts.vitals} vitals, {counts.bursts} accel bursts; "
            f"dead letters: {_reasons_text(counts.reasons)}",
        )
        _say(out, f"and then: {_alerts_text(counts, receiver.totals())}")
    _show_samples(receiver, out, demo.shown)
    for worker in failed:
        _say(out, f"anxin demo: the {worker.name} stopped with an error: {worker.error!r}")
    return 1 if failed else 0
