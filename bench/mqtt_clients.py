"""Why the ingester uses paho directly: receive throughput of three MQTT clients.

Each client drains the same backlog of QoS 1 wearable messages (vitals plus a 50 Hz burst)
that waits at a private Mosquitto (the project's configuration) for its persistent session,
and only counts them: aiomqtt 2.x (asyncio over paho), plain paho-mqtt 2.x, and the paho
subclass in core/mqtt/wire.py (buffered reads, direct 3.1.1 PUBLISH parsing). MQTT 3.1.1, QoS 1,
acknowledged on receipt. Run from the repository root::

    .venv/bin/python bench/mqtt_clients.py --messages 60000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.mqtt import MqttClient  # noqa: E402
from simulators.wearable import WearableFleet  # noqa: E402
from tests.services import PrivateBroker  # noqa: E402

TOPIC = "bench/dev/{}/telemetry"


def backlog(broker: PrivateBroker, n: int) -> None:
    pub = MqttClient(
        host="127.0.0.1",
        port=broker.port,
        client_id=f"pub-{uuid.uuid4().hex[:6]}",
        protocol_v5=False,
    )
    pub.connect_inline()
    fleet = WearableFleet([f"wb-{i:04d}" for i in range(100)])
    payloads = [fleet.payload(i, 1, 1_764_000_000_000) for i in range(100)]
    for i in range(n):
        pub.publish(TOPIC.format(i % 100), payloads[i % 100], qos=1)
        if i % 64 == 0:
            pub.pump(0)
            while pub.pending_out() > 20000:
                pub.pump(0.01)
    while pub.pending_out():
        pub.pump(0.01)
    pub.stop()


def register_paho(broker: PrivateBroker, client_id: str) -> None:
    c = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=False,
        protocol=paho.MQTTv311,
    )
    c.connect("127.0.0.1", broker.port)
    c.subscribe("bench/#", qos=1)
    c.loop_start()
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()


def drain_paho(broker: PrivateBroker, client_id: str, n: int) -> float:
    got = [0]
    done = threading.Event()

    def on_message(_c: object, _u: object, _m: object) -> None:
        got[0] += 1
        if got[0] >= n:
            done.set()

    c = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=False,
        protocol=paho.MQTTv311,
    )
    c.on_message = on_message
    started = time.perf_counter()
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    done.wait(300)
    elapsed = time.perf_counter() - started
    c.disconnect()
    c.loop_stop()
    return got[0] / elapsed


def drain_anxin(broker: PrivateBroker, client_id: str, n: int) -> float:
    got = [0]
    done = threading.Event()

    def on_raw(_m: object) -> None:
        got[0] += 1
        if got[0] >= n:
            done.set()

    c = MqttClient(
        host="127.0.0.1", port=broker.port, client_id=client_id, persistent=True, protocol_v5=False
    )
    c.on_raw_message(on_raw)  # type: ignore[arg-type]
    started = time.perf_counter()
    c.start()
    done.wait(300)
    elapsed = time.perf_counter() - started
    c.stop()
    return got[0] / elapsed


def drain_aiomqtt(broker: PrivateBroker, client_id: str, n: int) -> float:
    import aiomqtt

    async def run() -> float:
        got = 0
        started = time.perf_counter()
        async with aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            identifier=client_id,
            clean_session=False,
            protocol=aiomqtt.ProtocolVersion.V311,
            max_queued_incoming_messages=0,
        ) as client:
            async for _message in client.messages:
                got += 1
                if got >= n:
                    break
            elapsed = time.perf_counter() - started
        return got / elapsed

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=60000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    broker = PrivateBroker()
    broker.start()
    clients = {
        "aiomqtt": drain_aiomqtt,
        "paho": drain_paho,
        "core.mqtt (paho subclass)": drain_anxin,
    }
    results: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for _ in range(args.repeat):
            for name, drain in clients.items():
                client_id = f"drain-{uuid.uuid4().hex[:8]}"
                register_paho(broker, client_id)
                backlog(broker, args.messages)
                rate = drain(broker, client_id, args.messages)
                results[name].append(rate)
                print(f"{name:28s} {rate:8.0f} msg/s", flush=True)
    finally:
        broker.close()
    print("\n| client | messages/s received (median) | runs |\n|---|---:|---|")
    for name, rates in results.items():
        print(
            f"| {name} | {statistics.median(rates):,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
