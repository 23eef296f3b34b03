"""The partitioned ingest on a real NATS JetStream (nats-server started by the test): devices
publish over MQTT to the engine, which partitions their topics by device id; ingesters share the
partitions through advisory locks in the database and store each message once."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from core.engine import MQTT_STREAM, EngineLink, partition_of
from core.mqtt import IncomingMessage, MqttClient
from core.settings import EngineSettings, Settings, load_settings
from devices.protocol import Channel, ReadingWire, Vitals, encode_telemetry, topic
from devices.registry import ensure_devices
from tests.conftest import _unavailable
from tests.engine import MAPPING, EngineCluster, partition_owners
from tests.services import mqtt_subscriber, wait_until

pytestmark = [pytest.mark.integration]

PREFIX = "anxin/v1"  # the topic prefix deploy/nats/mapping.conf maps


@pytest.fixture
def engine() -> Iterator[EngineCluster]:
    try:
        cluster = EngineCluster(1)
    except RuntimeError as exc:
        _unavailable(str(exc))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


def _settings(db_url: str, engine: EngineCluster, **ingest: object) -> Settings:
    return load_settings(
        db={"url": db_url},
        mqtt={
            "topic_prefix": PREFIX,
            "client_id": f"ingest-{uuid.uuid4().hex[:6]}",
            "protocol": "3.1.1",
        },
        ingest={"metrics_port": 0, "source": "engine", **ingest},
        engine={"urls": engine.urls, "rebalance_every_s": 0.5},
    )


def _device(engine: EngineCluster, node: int = 0) -> MqttClient:
    client = MqttClient(
        host="127.0.0.1", port=engine.nodes[node].mqtt_port,
        client_id=f"dev-{uuid.uuid4().hex[:6]}", protocol_v5=False,
    )  # fmt: skip
    client.connect_inline()
    return client


def _publish(client: MqttClient, device: str, readings: list[ReadingWire]) -> None:
    client.publish(topic(PREFIX, device, Channel.TELEMETRY), encode_telemetry(readings), qos=1)
    while client.pending_out():
        client.pump(0.01)


def test_the_engine_maps_each_device_to_the_partition_the_ingester_computes(
    engine: EngineCluster,
) -> None:
    """deploy/nats/mapping.conf and core.engine agree: partition count, root, and hash."""
    mapping = MAPPING.read_text()
    defaults = EngineSettings()
    match = re.search(r'"([a-z.]+)\.\{\{partition\((\d+),1\)\}\}', mapping)
    assert match, mapping
    assert (match.group(1), int(match.group(2))) == (defaults.subject_root, defaults.partitions)
    link = EngineLink([engine.urls], name="test").connect()
    try:
        durables = [
            (f"t-p{p}", f"{defaults.subject_root}.{p}.>") for p in range(defaults.partitions)
        ]
        link.ensure_partitions(durables, max_ack_pending=100, ack_wait_s=5)
        client = _device(engine)
        devices = [f"map-wb-{i:03d}" for i in range(60)]
        for d in devices:
            _publish(
                client,
                d,
                [ReadingWire(ts=int(time.time() * 1000), seq=1, vitals=Vitals(heart_rate=70))],
            )
        client.stop()
        seen: dict[str, int] = {}
        for durable, partition_filter in durables:
            consumer = link.take_partition(
                durable, partition_filter, max_ack_pending=100, ack_wait_s=5
            )
            while batch := consumer.fetch(100, timeout_s=0.5):  # what came, until no more
                for m in batch:
                    seen[m.subject.split(".")[3]] = int(m.subject.split(".")[2])
            consumer.close()
    finally:
        link.close()
    assert seen == {d: partition_of(d, defaults.partitions) for d in devices}
    assert len(set(seen.values())) > defaults.partitions // 2  # the ids spread


def _subscriber(engine: EngineCluster, pattern: str) -> tuple[MqttClient, list[IncomingMessage]]:
    """A device-side MQTT client on the first node, subscribed to ``pattern`` (QoS 1)."""
    return mqtt_subscriber("127.0.0.1", engine.nodes[0].mqtt_port, pattern, v5=False)


def test_a_command_to_a_device_reaches_it_through_the_engine(engine: EngineCluster) -> None:
    """What devices send is mapped to partitions; what is sent to a device (its ``cmd``
    topic) is not, so it reaches the device's own subscription."""
    device, got = _subscriber(engine, topic(PREFIX, "cmd-wb-001", Channel.CMD))
    try:
        sender = _device(engine)
        # Sent until one arrives: the engine takes the subscription a moment after the SUBACK.
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            sender.publish(topic(PREFIX, "cmd-wb-001", Channel.CMD), b'{"id": "c1"}', qos=1)
            sender.pump(0.5)
        sender.stop()
    finally:
        device.stop()
    assert got and got[0].topic == topic(PREFIX, "cmd-wb-001", Channel.CMD)
    assert got[0].payload == b'{"id": "c1"}'


def test_the_engine_keeps_what_devices_send_within_its_limits_and_never_refuses_them(
    engine: EngineCluster,
) -> None:
    """The MQTT stream keeps messages read or not, up to its age and size; past the size the
    oldest go and the devices' messages are still taken (a full disk would refuse them)."""
    from nats.js.api import DiscardPolicy, RetentionPolicy

    link = EngineLink([engine.urls], name="test").connect()
    try:
        link.ensure_mqtt_stream(1, max_age_s=7200, max_bytes=50_000)  # an operator's change
        js = link._js()
        config = link.call(js.stream_info(MQTT_STREAM), 10).config
        assert (config.retention, config.max_age, config.max_bytes, config.discard) == (
            RetentionPolicy.LIMITS, 7200, 50_000, DiscardPolicy.OLD,
        )  # fmt: skip
        client = _device(engine)
        reading = [ReadingWire(ts=int(time.time() * 1000), seq=1, vitals=Vitals(heart_rate=70))]
        for i in range(400):  # about 100 kB with the engine's headers: twice the limit
            client.publish(
                topic(PREFIX, f"lim-wb-{i:03d}", Channel.TELEMETRY), encode_telemetry(reading)
            )
        deadline = time.monotonic() + 30
        while client.pending_out() and time.monotonic() < deadline:
            client.pump(0.01)
        assert client.pending_out() == 0  # every message acknowledged: none refused
        client.stop()
        state = link.call(js.stream_info(MQTT_STREAM), 10).state
        assert state.bytes <= 50_000 and state.first_seq > 1
    finally:
        link.close()


def test_an_engine_that_made_its_mqtt_stream_itself_is_refused_with_the_fix(
    engine: EngineCluster,
) -> None:
    """A stream with the engine's own interest retention drops messages while a node is
    replaced: the ingester says so, and what to do, rather than run on it."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    from core.engine import EngineMisconfigured

    link = EngineLink([engine.urls], name="test").connect()
    try:
        js = link._js()
        link.call(js.delete_stream(MQTT_STREAM), 10)
        engines_own = StreamConfig(
            name=MQTT_STREAM, subjects=["$MQTT.msgs.>"], retention=RetentionPolicy.INTEREST,
            storage=StorageType.FILE,
        )  # fmt: skip
        link.call(js.add_stream(engines_own), 10)
        with pytest.raises(EngineMisconfigured, match="start an ingester before the first device"):
            link.ensure_mqtt_stream(1, max_age_s=3600, max_bytes=10**9)
    finally:
        link.close()


def test_an_in_process_ingester_stores_every_reading_once(
    db_url: str, engine: EngineCluster
) -> None:
    import threading

    from ingest.partitioned import PartitionedIngest

    devices = [f"pi-wb-{i:02d}" for i in range(20)]
    with psycopg.connect(db_url) as conn:
        ensure_devices(conn, devices)
    service = PartitionedIngest(_settings(db_url, engine))
    thread = threading.Thread(target=service.run, name="test-partitioned")
    thread.start()
    try:
        wait_until(lambda: len(service.owned) == 16, 30, "every partition owned")
        client = _device(engine)
        now = int(time.time() * 1000)
        for k in range(5):
            for d in devices:
                _publish(
                    client,
                    d,
                    [
                        ReadingWire(
                            ts=now - 10_000 + k * 1000, seq=k, vitals=Vitals(heart_rate=60 + k)
                        )
                    ],
                )
        client.stop()

        def stored() -> int:
            with psycopg.connect(db_url) as conn:
                return int(conn.execute("SELECT count(*) FROM vitals").fetchone()[0])  # type: ignore[index]

        wait_until(lambda: stored() >= 100, 30, "every reading stored")
        # What Prometheus is told: every partition read here, nothing left waiting.
        value = service.metrics.registry.get_sample_value
        assert value("anxin_engine_partitions") == 16
        assert value("anxin_engine_partitions_owned") == 16
        backlog = [{"partition": str(p)} for p in range(16)]
        wait_until(
            lambda: all(value("anxin_engine_backlog_messages", b) == 0 for b in backlog),
            30,
            "no backlog",
        )
    finally:
        service.stop()
        thread.join(30)
    assert stored() == 100
    assert service.totals()["stored"] == 100
    assert value("anxin_engine_partitions_owned") == 0
    assert value("anxin_engine_backlog_messages", backlog[0]) is None  # let go: not counted


def test_a_reader_knows_how_many_messages_of_its_partition_wait(engine: EngineCluster) -> None:
    defaults = EngineSettings()
    device = "pend-wb-001"
    partition_filter = f"{defaults.subject_root}.{partition_of(device, defaults.partitions)}.>"
    link = EngineLink([engine.urls], name="test").connect()
    try:
        link.ensure_partitions([("pend", partition_filter)], max_ack_pending=100, ack_wait_s=5)
        client = _device(engine)
        now = int(time.time() * 1000)
        for k in range(10):
            _publish(client, device, [ReadingWire(ts=now + k, seq=k, vitals=Vitals(spo2=97))])
        client.stop()
        consumer = link.take_partition("pend", partition_filter, max_ack_pending=100, ack_wait_s=5)
        assert len(consumer.fetch(3, timeout_s=5)) == 3
        assert consumer.pending == 7
        rest: list[object] = []
        while len(rest) < 7 and (batch := consumer.fetch(100, timeout_s=2)):
            rest += batch
        assert len(rest) == 7 and consumer.pending == 0
        consumer.close()
    finally:
        link.close()


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


WRISTBANDS_VITALS = "SELECT count(*) FROM vitals WHERE device_id LIKE 'pt-wb-%'"


def _alerted(db_url: str, kind: str) -> set[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT device_id FROM alerts WHERE kind = %s", (kind,)
        ).fetchall()
    return {r[0] for r in rows}


def _shortfall(db_url: str, devices: list[str], per_device: int = 12) -> dict[int, int]:
    """Partition -> readings of these devices not stored (where any are missing)."""
    with psycopg.connect(db_url) as conn:
        stored = dict(
            conn.execute(
                "SELECT device_id, count(*) FROM vitals WHERE device_id = ANY(%s) GROUP BY 1",
                (devices,),
            ).fetchall()
        )
    missing: dict[int, int] = {}
    for d in devices:
        if (short := per_device - stored.get(d, 0)) > 0:
            p = partition_of(d, EngineSettings().partitions)
            missing[p] = missing.get(p, 0) + short
    return missing


@pytest.mark.slow
def test_two_ingesters_on_a_three_node_cluster_survive_a_killed_node_and_ingester(
    db_url: str, tmp_path: Path
) -> None:
    """2,000 wristbands stream through a three-node cluster (the engine's MQTT stream
    replicated three times) to two ingesters, with SOS presses and device-detected falls among
    them. Mid-stream one ingester and one engine node (the one leading the stream, unless the
    devices are connected to it) are SIGKILLed, then both restarted: the other ingester takes
    the partitions within a rebalance and hands half back; the devices' PUBACKs wait while the
    engine elects a new leader. Every reading is stored once, every SOS opens one alert, every
    fall one finding. (Devices connected to the node that dies reconnect to another and send
    again what had no PUBACK, as firmware does: docs/protocol.md; this test's devices are on a
    node that stays.) Each falling wristband is asked "are you all right?" on its cmd topic
    through the engine."""
    import threading

    from devices.protocol import Event, EventKind, encode_event
    from simulators.rawmqtt import RawPublisher
    from simulators.wearable import WearableFleet, publish_fleet
    from tests.ingest.test_fault_injection import (
        _bursts,
        _fall_trials,
        _flagged_without_kills,
        _register,
        services_env,
    )
    from tests.recordings import sisfall_trial
    from tests.services import IngestProcess, serve_receiver

    # Ten real falls (SisFall, at the waist), streamed in real time from the start: their
    # impacts come before, during and after the kills. A fall on a partition whose ingester
    # dies is found by whichever ingester takes the partition over, from the detector state
    # and the stored bursts the dead one left; every fall the detector finds when nothing dies
    # must open one alert.
    belts = [f"pt-sf-{i:02d}" for i in range(10)]
    recordings = {
        d: sisfall_trial(subject, key)
        for d, (subject, key) in zip(belts, _fall_trials()[:10], strict=True)
    }
    expected_falls = _flagged_without_kills(recordings, 1_764_000_000_000)
    assert len(expected_falls) >= 7, f"the detector flags only {sorted(expected_falls)}"

    try:
        cluster = EngineCluster(3)
    except RuntimeError as exc:
        _unavailable(str(exc))
    cluster.start()
    receiver_gen = serve_receiver()
    receiver = next(receiver_gen)
    wristbands = [f"pt-wb-{i:04d}" for i in range(2000)]
    pressing = [f"pt-sos-{i:02d}" for i in range(40)]
    falling = [f"pt-fall-{i:02d}" for i in range(20)]
    with psycopg.connect(db_url) as conn:
        ensure_devices(conn, wristbands)
    _register(db_url, pressing + falling)
    _register(db_url, belts, kind="belt_clip")
    env = services_env(
        db_url, f"mqtt://127.0.0.1:{cluster.nodes[0].mqtt_port}", receiver.url, "pt",
        ANXIN_MQTT__TOPIC_PREFIX=PREFIX,
        ANXIN_INGEST__SOURCE="engine",
        ANXIN_MQTT__PROTOCOL="3.1.1",
        ANXIN_ENGINE__URLS=cluster.urls,
        ANXIN_ENGINE__REPLICAS="3",
        ANXIN_ENGINE__REBALANCE_EVERY_S="0.5",
        ANXIN_INGEST__SWEEP_EVERY_S="1",
        ANXIN_INGEST__SWEEP_GRACE_S="3",
        ANXIN_LOG_LEVEL="INFO",
    )  # fmt: skip
    first = IngestProcess(env, tmp_path / "first.log")
    second = IngestProcess(env, tmp_path / "second.log")
    sent: list[int] = []
    try:
        first.start()
        second.start()
        wait_until(
            lambda: sorted(partition_owners(db_url).values()) == [8, 8], 60, "8 partitions each"
        )
        # The falling wristbands' side: "are you all right?" comes on their cmd topics.
        commands, got_commands = _subscriber(cluster, topic(PREFIX, "+", Channel.CMD))
        devices_node = cluster.nodes[0]
        leader = devices_node.leader_of(MQTT_STREAM)
        victim = next(n for n in cluster.nodes[1:] if leader in (n.name, devices_node.name, None))
        restarting: list[threading.Thread] = []

        def stream() -> None:
            client = RawPublisher(
                "127.0.0.1", devices_node.mqtt_port, client_id="pt-fleet", reconnect_for_s=180
            )
            client.connect_inline()
            report = publish_fleet(
                client, WearableFleet(wristbands).with_prefix(PREFIX), seconds=12, paced=True
            )
            # The engine may reset the connection while it elects a leader: the publisher
            # connects again and resends, as firmware does; what it sent is all acknowledged
            # in the end (every publish is counted once, however often it was sent).
            deadline = time.monotonic() + 180
            while client.pending_out() and time.monotonic() < deadline:
                client.pump(0.05)
            assert report.sent == 12 * len(wristbands)
            sent.append(client.acknowledged)
            client.stop()

        def stream_falls() -> None:
            client = RawPublisher(
                "127.0.0.1", devices_node.mqtt_port, client_id="pt-falls", reconnect_for_s=180
            )
            client.connect_inline()
            start_ms, t_start = int(time.time() * 1000), time.monotonic()
            plan = sorted(
                (k, d, payload)
                for d, acc in recordings.items()
                for k, payload in enumerate(_bursts(d, acc, start_ms))
            )
            for due, device, payload in plan:
                while (wait := t_start + due - time.monotonic()) > 0:
                    client.pump(min(0.02, wait))
                client.publish(topic(PREFIX, device, Channel.TELEMETRY), payload, qos=1)
            client.stop(timeout_s=180)

        streaming = threading.Thread(target=stream, name="pt-stream")
        streaming.start()
        falls_streaming = threading.Thread(target=stream_falls, name="pt-falls")
        falls_streaming.start()
        events = MqttClient(
            host="127.0.0.1", port=devices_node.mqtt_port, client_id="pt-events",
            protocol_v5=False,
        )  # fmt: skip
        events.connect_inline(timeout_s=30)
        presses = [(d, EventKind.SOS) for d in pressing] + [(d, EventKind.FALL) for d in falling]
        t0 = time.monotonic()
        killed = restarted = False
        for i, (device, kind) in enumerate(presses):
            while time.monotonic() < t0 + i * 0.2:
                events.pump(0.01)
            if not killed and time.monotonic() - t0 >= 4:
                victim.kill()
                first.kill()
                killed = True
            if killed and not restarted and time.monotonic() - t0 >= 7:
                restarting.append(threading.Thread(target=victim.start, name="pt-node"))
                restarting[0].start()
                first.start()
                restarted = True
            payload = encode_event(Event(int(time.time() * 1000), 1, device, kind))
            events.publish(topic(PREFIX, device, Channel.EVENT), payload, qos=1)
            events.pump(0)
        while events.pending_out():
            events.pump(0.01)
        events.stop()
        streaming.join(300)
        falls_streaming.join(300)
        for thread in restarting:
            thread.join(60)
        assert sent and sent[0] == 12 * len(wristbands)
        try:
            wait_until(
                lambda: _count(db_url, WRISTBANDS_VITALS) >= sent[0],
                120,
                "every reading",
            )
        except AssertionError:
            pytest.fail(f"readings missing, by partition: {_shortfall(db_url, wristbands)}")
        wait_until(
            lambda: _count(db_url, "SELECT count(*) FROM alerts WHERE kind = 'sos'") >= len(pressing),
            60, "every SOS alerted",
        )  # fmt: skip
        wait_until(lambda: sorted(partition_owners(db_url).values()) == [8, 8], 60, "shared again")
        time.sleep(2)  # anything late or doubled would show now
        assert _count(db_url, WRISTBANDS_VITALS) == sent[0]
        assert _count(db_url, WRISTBANDS_VITALS.replace("vitals", "accel_bursts")) == sent[0]
        assert _count(db_url, "SELECT count(*) FROM device_events WHERE kind = 'sos'") == 40
        assert _count(db_url, "SELECT count(*) FROM findings WHERE kind = 'sos'") == 40
        assert _count(db_url, "SELECT count(*) FROM alerts WHERE kind = 'sos'") == 40
        assert _count(db_url, "SELECT count(*) FROM findings WHERE kind = 'device_fall'") == 20
        wait_until(lambda: expected_falls <= _alerted(db_url, "fall"), 60, "the falls alerted")
        assert _count(db_url, "SELECT count(*) FROM alerts WHERE kind = 'fall'") == len(
            _alerted(db_url, "fall")
        )  # one alert a fall
        asked = {m.topic.split("/")[-2] for m in got_commands if b"are_you_ok" in m.payload}
        commands.stop()
        assert asked >= set(falling)
    finally:
        first.stop()
        second.stop()
        receiver_gen.close()
        cluster.close()
