"""``anxin scenario run``: play a scenario against a running deployment and judge the outcome.

1. Check the file, compile the plan (:mod:`simulators.plan`) for a clock origin that keeps
   every reading within the server's window.
2. Register what the scenario needs in the deployment's database: its elders (care circle,
   family doctor, behaviour settings), its devices (bound to them and to their hubs, as if
   installed a day before the scenario's start). Every id carries this run's suffix, so runs
   never collide and each judges only its own.
3. Connect the devices that are connected at the start and wait until the deployment has
   stored their online status (the ingester then knows them).
4. Play the actions at their times (``speed`` times real time, or as fast as the broker takes
   them), wait for the broker's acknowledgements.
5. Read what happened (alerts and whom they told, dead letters, stored readings, commands
   received) until the expectations are met or ``within`` passes, then, after ``settle``,
   what must not have happened; print the report. The result says pass or fail.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from alerts.addresses import AddressBook, AddressError
from core import db
from core.settings import Settings
from devices import repository as registry
from devices.behaviour_settings import BehaviourSettingsIn, put_settings
from devices.crypto import Keyring
from devices.model import (
    ChannelIn,
    ContactIn,
    ContractIn,
    DoctorTeamIn,
    ResidentIn,
    TeamMemberIn,
    TeamRole,
)
from devices.model import DeviceKind as Kind
from devices.registry import register_device
from simulators.firmware import Step
from simulators.links import Links
from simulators.outcome import AlertSeen, DeliverySeen, Observed, Verdict, compare, render
from simulators.plan import Plan, choose_origin, compile_plan, final_id
from simulators.recordings import Recording, load_recording
from simulators.scenario import Scenario, ScenarioError

log = logging.getLogger(__name__)

HANDSHAKE_S = 60.0
#: ingest.behaviour.BehaviourStreamConfig.unknown_refresh_s, and a second to spare.
BEHAVIOUR_READ_S = 6.0
STORED_TABLES = {
    "vitals": "vitals",
    "accel": "accel_bursts",
    "bed": "bed_readings",
    "battery": "battery_readings",
    "positions": "positions",
    "events": "device_events",
    "statuses": "device_status",
}


@dataclass(frozen=True)
class RunOptions:
    """How to run a scenario.

    Attributes:
        data_dir: The datasets folder for recordings (``../shared/datasets``), or None.
        phones: Replaces ``{phones}`` in the care circle's channels (an apprise base URL).
        run: Suffix of this run's ids (a new random one when None).
        speed: Overrides the scenario's speed when given.
    """

    data_dir: Path | None = None
    phones: str = "json://127.0.0.1:8099/phone"
    run: str | None = None
    speed: float | None = None


@dataclass
class RunResult:
    scenario: Scenario
    run: str
    verdict: Verdict
    report: str
    observed: Observed
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict.passed


@dataclass(frozen=True)
class Registered:
    residents: dict[str, uuid.UUID]
    """Elder key -> resident id."""
    devices: dict[str, str]
    """Device key -> registered id."""


def _loader(data_dir: Path | None) -> Any:
    cache: dict[tuple[str, int], Recording] = {}

    def load(name: str, rate: int) -> Recording:
        if (name, rate) not in cache:
            cache[name, rate] = load_recording(name, rate, data_dir)
        return cache[name, rate]

    return load


# --------------------------------------------------------------------------- registering
def register(
    conn: psycopg.Connection[Any],
    s: Scenario,
    plan: Plan,
    *,
    run: str,
    keyring: Keyring,
    phones: str,
) -> Registered:
    """Elders, care circles, doctors, behaviour settings and devices of one run."""
    residents: dict[str, uuid.UUID] = {}
    for key, e in s.elders.items():
        res = registry.create_resident(
            conn,
            ResidentIn(name=e.name, sex=e.sex, birth_date=e.born, flags=frozenset(e.flags)),
            keyring=keyring,
        )
        residents[key] = res.id
        for c in e.contacts:
            channel = ChannelIn(url=c.channel.replace("{phones}", phones)) if c.channel else None
            registry.add_contact(
                conn,
                res.id,
                ContactIn(
                    name=c.name, role=c.role, phones=[c.phone] if c.phone else [], channel=channel
                ),
                keyring=keyring,
            )
        if e.doctor is not None:
            url = e.doctor.channel.replace("{phones}", phones) if e.doctor.channel else None
            team = registry.create_team(
                conn,
                DoctorTeamIn(
                    name=f"{e.doctor.name} {run}",
                    members=[
                        TeamMemberIn(
                            name=e.doctor.name,
                            role=TeamRole.DOCTOR,
                            channel=ChannelIn(url=url) if url else None,
                        )
                    ],
                ),
                keyring=keyring,
            )
            today = dt.date.today()
            registry.sign_contract(
                conn,
                res.id,
                ContractIn(
                    team_id=team.id,
                    service_package="remote monitoring",
                    starts_on=today - dt.timedelta(days=400),
                    ends_on=today + dt.timedelta(days=365),
                ),
            )
        if e.behaviour is not None:
            given = {k: v for k, v in e.behaviour.model_dump().items() if v is not None}
            put_settings(
                conn, res.id, BehaviourSettingsIn(timezone=s.timezone, **given), by="scenario"
            )
    devices = {key: final_id(key, run) for key in s.devices}
    installed = plan.origin_ms - 86_400_000
    # Hubs first: the devices behind them name them as their gateway.
    for key, d in sorted(s.devices.items(), key=lambda kv: kv[1].kind is not Kind.HUB):
        register_device(
            conn,
            devices[key],
            d.kind.value,
            gateway_id=devices[d.hub] if d.hub else None,
            resident_id=str(residents[d.elder]) if d.elder else None,
            registered_at_ms=installed,
            with_secret=False,
        )
    conn.commit()
    return Registered(residents, devices)


# --------------------------------------------------------------------------- observing
def _channel(conn: psycopg.Connection[Any], book: AddressBook, address: str, channel: str) -> str:
    """How a recipient is reached: ``dispatch120``, ``sms`` (the SMS gateway), ``operator``
    (the operator desk's setting), or the scheme of their own apprise channel (``json``,
    ``mailto``, ``dingtalk``, ...)."""
    if channel == "dispatch120":
        return "dispatch120"
    if address.startswith("anxin:sms/"):
        return "sms"
    if address.startswith("anxin:setting/"):
        return "operator"
    try:
        return urlsplit(book.resolve(conn, address)).scheme or channel
    except AddressError:
        return "unreachable"


def observe(
    conn: psycopg.Connection[Any], s: Scenario, reg: Registered, links: Links, book: AddressBook
) -> Observed:
    """What the deployment did for this run's elders and devices."""
    elder_of = {v: k for k, v in reg.residents.items()}
    device_of = {v: k for k, v in reg.devices.items()}
    seen = Observed()
    rows = conn.execute(
        """SELECT a.id, a.kind, a.resident_id, a.device_id, a.state, a.severity, a.first_at,
                  a.opened_at,
                  coalesce(array_agg(ARRAY[d.recipient_kind, d.tier::text, d.status, d.channel,
                                           d.address,
                                           (extract(epoch FROM d.delivered_at) * 1000)::bigint::text])
                           FILTER (WHERE d.id IS NOT NULL), '{}')
             FROM alerts a LEFT JOIN deliveries d ON d.alert_id = a.id
            WHERE a.resident_id = ANY(%s) OR a.device_id = ANY(%s)
            GROUP BY a.id ORDER BY a.id""",
        (list(reg.residents.values()), list(reg.devices.values())),
    ).fetchall()
    for aid, kind, rid, dev, state, sev, first, opened, dels in rows:
        deliveries = tuple(
            DeliverySeen(
                r, int(tier), status, _channel(conn, book, addr, ch), int(ms) if ms else None
            )
            for r, tier, status, ch, addr, ms in dels
        )
        seen.alerts.append(
            AlertSeen(
                aid, kind, elder_of.get(rid), device_of.get(dev), state, sev,
                int(first.timestamp() * 1000),
                int(opened.timestamp() * 1000) if opened else None,
                deliveries,
            )
        )  # fmt: skip
    for dev, reason, n in conn.execute(
        """SELECT device_id, reason, count(*) FROM dead_letters
            WHERE device_id = ANY(%s) OR topic LIKE ANY(%s) GROUP BY 1, 2""",
        (list(reg.devices.values()), [f"%/dev/{d}/%" for d in reg.devices.values()]),
    ).fetchall():
        seen.dead_letters[device_of.get(dev, dev), reason] += int(n)
    for st in s.expect.stored:
        table = STORED_TABLES[st.what]
        row = conn.execute(
            f"SELECT count(*) FROM {table} WHERE device_id = %s",
            (reg.devices[st.device],),
        ).fetchone()
        seen.stored[st.device, st.what] = int(row[0]) if row else 0
    seen.commands = {(device_of.get(d, d), kind) for d, kind in links.commands}
    conn.commit()
    return seen


# --------------------------------------------------------------------------- playing
def _handshake(conn: psycopg.Connection[Any], links: Links, connected: list[str]) -> None:
    """Wait until the deployment stored the online status of every connected link."""
    deadline = time.monotonic() + HANDSHAKE_S
    last_sent = time.monotonic()
    while True:
        links.pump(0.05)
        row = conn.execute(
            "SELECT count(DISTINCT device_id) FROM device_status WHERE device_id = ANY(%s) AND online",
            (connected,),
        ).fetchone()
        conn.commit()
        if row is not None and row[0] == len(connected):
            return
        now = time.monotonic()
        if now > deadline:
            raise ScenarioError(
                "run",
                [
                    f"the deployment did not store the online status of {connected} within "
                    f"{HANDSHAKE_S:.0f} s: is `anxin ingest` running on this database, broker and "
                    f"topic prefix ({links.prefix})?"
                ],
            )
        if now - last_sent > 3.0:  # the ingester may not have read the registry yet
            for link in connected:
                links.status(link, online=True)
            last_sent = now
        time.sleep(0.2)


def play(plan: Plan, links: Links, speed: float | str) -> float:
    """Run the actions at their times; returns the wall seconds it took."""
    started = time.monotonic()
    for a in plan.actions:
        if speed != "max":
            due = started + a.t / float(speed)
            while (wait := due - time.monotonic()) > 0:
                links.pump(min(0.02, wait))
        if a.step is Step.CONNECT:
            links.connect(a.link)
        elif a.step is Step.STATUS:
            if a.link in links.clients:
                links.status(a.link, online=a.online, reason=a.reason)
        elif a.step is Step.PUBLISH:
            assert a.channel is not None  # noqa: S101 - a publish names its channel
            links.publish(a.link, a.channel, a.payload, a.label, a.device)
            if links.published % 64 == 0:
                links.pump(0)
                while links.pending() > 5000:
                    links.pump(0.01)
        elif a.step is Step.DROP:
            links.drop(a.link)
        elif a.step is Step.DISCONNECT:
            links.disconnect(a.link)
    links.flush(60)
    return time.monotonic() - started


def _figures(
    seen: Observed, links: Links, reg: Registered
) -> tuple[list[str], dict[str, list[float]]]:
    """Latencies: from each labelled press (its wall time of sending) to the alert opening and
    to the 120 centre's acceptance."""
    device_of = {v: k for k, v in reg.devices.items()}
    presses: dict[str, float] = {}
    for sent in links.sent:
        if sent.label == "sos":
            presses.setdefault(device_of.get(sent.device, sent.device), sent.at_s)
    lat: dict[str, list[float]] = {"sos_to_alert_ms": [], "sos_to_120_ms": []}
    lines = []
    for a in seen.alerts:
        if a.kind != "sos":
            continue
        # The press's own wall time when sent on a link of the device; else its timestamp.
        t0 = presses.get(a.device or "", a.first_ms / 1000)
        if a.opened_ms is not None:
            lat["sos_to_alert_ms"].append(a.opened_ms - t0 * 1000)
        pushed = [
            d.delivered_ms for d in a.deliveries if d.recipient == "dispatch120" and d.delivered_ms
        ]
        if pushed:
            lat["sos_to_120_ms"].append(min(pushed) - t0 * 1000)
    for name, values in lat.items():
        if values:
            lines.append(
                f"{name}: n={len(values)} median {statistics.median(values):.0f} ms, "
                f"max {max(values):.0f} ms"
            )
    return lines, lat


def run_scenario(
    settings: Settings, s: Scenario, options: RunOptions, *, title: str | None = None
) -> RunResult:
    """Register, play, observe, compare (see the module's notes)."""
    run = options.run or uuid.uuid4().hex[:6]
    if options.speed is not None:
        s = s.model_copy(update={"speed": options.speed})
    origin = choose_origin(s, time.time_ns() // 1_000_000)
    loader = _loader(options.data_dir)
    plan = compile_plan(s, run=run, origin_ms=origin, loader=loader)
    keyring = Keyring.from_settings(settings.registry)
    book = AddressBook(opener=registry.channel_opener(keyring))
    links = Links(settings.mqtt, settings.mqtt.topic_prefix, plan.specs, plan.links)
    with db.connect(settings.db.url) as conn:
        reg = register(conn, s, plan, run=run, keyring=keyring, phones=options.phones)
        registered_at = time.monotonic()
        try:
            for link in plan.connected:
                links.connect(link)
            if plan.connected:
                _handshake(conn, links, plan.connected)
            else:  # nothing to show the ingester read the registry: give it one refresh
                time.sleep(settings.ingest.registry_refresh_s + 1)
            # The ingester's behaviour stage reads a new elder's settings at their first reading,
            # at most every BEHAVIOUR_READ_S: past that, any read it made includes them.
            while time.monotonic() < registered_at + BEHAVIOUR_READ_S:
                links.pump(0.1)
            # The device clock starts now (compiled again: registering and connecting took time).
            origin = choose_origin(s, time.time_ns() // 1_000_000)
            plan = compile_plan(s, run=run, origin_ms=origin, loader=loader)
            took = play(plan, links, s.speed)
            deadline = time.monotonic() + s.expect.within
            seen = observe(conn, s, reg, links, book)
            while not compare(s.expect, seen, final=False).passed and time.monotonic() < deadline:
                links.pump(0.5)
                seen = observe(conn, s, reg, links, book)
            settle_until = time.monotonic() + s.expect.settle
            while time.monotonic() < settle_until:
                links.pump(0.2)
            seen = observe(conn, s, reg, links, book)
        finally:
            links.close()
    verdict = compare(s.expect, seen, final=True)
    figures, lat = _figures(seen, links, reg)
    origin_text = dt.datetime.fromtimestamp(origin / 1000, dt.UTC).isoformat(timespec="seconds")
    header = [
        f"run {run}, speed {s.speed}, device clock starts {origin_text}, {s.duration:g} s of scenario",
        f"played {links.published} messages on {len(plan.links)} connection(s) in {took:.1f} s",
    ]
    counts = Counter(a.kind for a in seen.alerts)
    header.append(
        "alerts seen: " + (", ".join(f"{k} x{n}" for k, n in sorted(counts.items())) or "none")
    )
    report = render(title or s.name, header, verdict, figures)
    return RunResult(s, run, verdict, report, seen, lat)
