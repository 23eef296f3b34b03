"""What runs while ``anxin demo`` runs: the worker threads and the state they share with the
main loop, the paced simulator of the wristbands (with a malformed message and an absurd heart
rate now and then, and the demo elder's SOS), and the family and the operator who answer the
alerts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import httpx

from alerts.lifecycle import TransitionRefused
from alerts.model import Actor, ActorKind, AlertState
from alerts.service import AlertService
from core import db
from core.mqtt import MqttClient
from core.settings import Settings
from demo.receiver import DemoReceiver
from demo.report import INDENT, say
from demo.seed import DEMO_BY, DEVICE_PREFIX
from devices import protocol as proto
from ingest.service import IngestService
from simulators.wearable import WearableFleet, publish_fleet

BAD_EVERY_S = 15.0
FIRST_BAD_AFTER_S = 3.0
SOS_EVERY_S = 20.0
FIRST_SOS_AFTER_S = 5.0
#: The demo operator resolves an acknowledged alert this long after, so the next SOS opens anew.
RESOLVE_AFTER_S = 8.0
_ACK_LINK = re.compile(r"https?://\S+/api/v1/ack/[A-Za-z0-9_-]{24}")


# -- the worker threads ---------------------------------------------------------------------


@dataclass
class _Worker:
    name: str
    thread: threading.Thread
    error: BaseException | None = None


@dataclass
class Demo:
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


def family_and_operator_act(demo: Demo, out: TextIO) -> None:
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
            say(out, f"{INDENT}the child's acknowledge link did not answer: {exc}")
            continue
        if answer.status_code == 200:
            said = answer.json().get("message", "")
            say(out, f"{INDENT}the child tapped the acknowledge link: {said}")
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
                say(out, f"{INDENT}the operator resolved alert {alert_id} (the family came round)")
