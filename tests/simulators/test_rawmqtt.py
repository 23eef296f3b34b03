"""The load generator's bare publisher, against the real Mosquitto."""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.mqtt import varint_at
from devices.protocol import Limits, decode_telemetry
from simulators.rawmqtt import MqttProtocolError, RawPublisher, encode_varint
from simulators.wearable import WearableFleet, publish_fleet
from tests.services import PrivateBroker, mqtt_subscriber


def _wait_for(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_a_fleet_published_raw_arrives_whole_and_every_message_is_acknowledged(
    shared_broker_url: str, topic_prefix: str
) -> None:
    url = urlsplit(shared_broker_url)
    host, port = url.hostname or "127.0.0.1", url.port or 1883
    sub, got = mqtt_subscriber(host, port, f"{topic_prefix}/#")
    try:
        ids = [f"raw-{i:03d}" for i in range(200)]
        fleet = WearableFleet(ids).with_prefix(topic_prefix)
        pub = RawPublisher(host, port, client_id=f"t-raw-{uuid.uuid4().hex[:8]}")
        pub.connect_inline()
        report = publish_fleet(pub, fleet, seconds=4, paced=True)
        pub.stop()
        assert (report.sent, report.unacknowledged, pub.acknowledged) == (800, 0, 800)
        _wait_for(lambda: len(got) >= 800)
        time.sleep(0.2)
        # Every device-second once, on the device's own topic, decoding as ingest decodes it.
        limits = Limits(now_ms=time.time_ns() // 1_000_000)
        seen = []
        for m in got:
            assert m.qos == 1
            device = m.topic.split("/")[-2]
            decoded = decode_telemetry(device, m.payload, limits)
            assert not decoded.rejected, decoded.rejected
            seen.extend((r.device_id, r.seq) for r in decoded.readings)
        assert sorted(seen) == sorted((d, s) for d in ids for s in range(4))
    finally:
        sub.stop()


def test_packet_ids_wrap_past_65535_without_losing_a_message(
    private_broker: PrivateBroker, topic_prefix: str
) -> None:
    # The project's broker configuration: the shared broker's default queue (1,000 messages
    # per subscriber) would drop what a slow subscriber has not taken yet.
    host, port = "127.0.0.1", private_broker.port
    sub, got = mqtt_subscriber(host, port, f"{topic_prefix}/#")
    try:
        pub = RawPublisher(host, port, client_id=f"t-raw-{uuid.uuid4().hex[:8]}")
        pub.connect_inline()
        n = 70_000
        for i in range(n):
            pub.publish(f"{topic_prefix}/w", i.to_bytes(4, "big"))
            if i % 256 == 0:
                pub.pump(0)
        pub.stop()
        assert pub.acknowledged == n and pub.pending_out() == 0
        _wait_for(lambda: len(got) >= n, 60)
        assert sorted(int.from_bytes(m.payload, "big") for m in got) == list(range(n))
    finally:
        sub.stop()


def test_a_refused_connection_says_why() -> None:
    # Empty password and ACL files, readable by the user Mosquitto drops root privileges to.
    files = Path(tempfile.mkdtemp(prefix="anxin-raw-"))
    files.chmod(0o755)
    for name in ("passwd", "acl"):
        (files / name).write_text("")
        (files / name).chmod(0o644)
    broker = PrivateBroker(anonymous=False, password_file=files / "passwd", acl_file=files / "acl")
    broker.start()
    try:
        pub = RawPublisher("127.0.0.1", broker.port, client_id="t-raw-refused",
                           username="nobody", password="wrong")  # fmt: skip
        with pytest.raises(MqttProtocolError, match=r"bad user name or password|not authorised"):
            pub.connect_inline()
    finally:
        broker.close()
        shutil.rmtree(files, ignore_errors=True)


def test_qos_0_is_refused_rather_than_sent_as_qos_1() -> None:
    pub = RawPublisher("127.0.0.1", 1, client_id="t-raw-qos0")
    with pytest.raises(ValueError, match="QoS 1 only"):
        pub.publish("t", b"x", qos=0)


@given(st.integers(min_value=0, max_value=268_435_455))
def test_remaining_lengths_round_trip_and_a_cut_one_is_incomplete(n: int) -> None:
    raw = encode_varint(n)
    assert varint_at(b"\x30" + raw + b"rest", 1, 1 + len(raw) + 4) == (n, 1 + len(raw))
    assert varint_at(raw[:-1], 0, len(raw) - 1) == (-1, 0)


def test_a_remaining_length_over_four_bytes_is_refused() -> None:
    assert varint_at(b"\xff\xff\xff\xff\x01", 0, 5) == (-1, 0)


class _CuttableProxy:
    """A TCP relay to the broker whose connections can all be cut at once (the network, or a
    broker node, going away under the devices)."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Reset every connection open now (new ones are let through)."""
        with self._lock:
            victims, self._open = self._open, []
        for s in victims:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

    def close(self) -> None:
        self._server.close()
        self.cut()


def test_a_broken_connection_is_made_again_and_nothing_unacknowledged_is_lost(
    private_broker: PrivateBroker, topic_prefix: str
) -> None:
    """The connection reset three times mid-stream: the publisher connects again and sends
    what had no PUBACK, so every message arrives (some twice, as QoS 1 allows)."""
    host = "127.0.0.1"
    sub, got = mqtt_subscriber(host, private_broker.port, f"{topic_prefix}/#")
    proxy = _CuttableProxy(private_broker.port)
    try:
        pub = RawPublisher(host, proxy.port, client_id=f"t-raw-{uuid.uuid4().hex[:8]}")
        pub.connect_inline()
        n = 6_000
        for i in range(n):
            pub.publish(f"{topic_prefix}/w", i.to_bytes(4, "big"))
            if i % 64 == 0:
                pub.pump(0)
            if i in (1_500, 3_000, 4_500):
                cuts = pub.reconnects + 1
                proxy.cut()
                # Each cut is seen and the connection made again before the next: a next cut
                # that came while the publisher had not noticed this one would find no
                # connection of its own to break.
                _wait_for(lambda: pub.pump(0.05) or pub.reconnects >= cuts, 30)  # noqa: B023
        pub.stop()
        assert pub.reconnects == 3
        assert pub.acknowledged == n and pub.pending_out() == 0
        _wait_for(lambda: {int.from_bytes(m.payload, "big") for m in got} >= set(range(n)), 60)
    finally:
        proxy.close()
        sub.stop()
