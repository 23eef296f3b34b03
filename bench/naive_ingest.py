"""The naive baseline of bench/ingest.py: one INSERT and one commit per message.

Same broker, same schema, same acknowledgement rule (paho acknowledges a QoS 1 message
when the callback returns, that is after the commit); no batching, no COPY, decoding with
the same protocol module.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import psycopg

from core.mqtt import MqttClient
from devices.protocol import Limits, ProtocolError, decode, parse_topic


def main() -> int:
    db_url = os.environ["ANXIN_DB__URL"]
    host, port = os.environ["ANXIN_MQTT__URL"].split("://", 1)[1].rsplit(":", 1)
    prefix = os.environ.get("ANXIN_MQTT__TOPIC_PREFIX", "anxin/v1")
    conn = psycopg.connect(db_url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def on_message(msg: object) -> None:
        topic, payload = msg.topic, msg.payload  # type: ignore[attr-defined]
        try:
            device, channel = parse_topic(prefix, topic)
            decoded = decode(channel, device, payload, Limits(now_ms=time.time_ns() // 1_000_000))
        except ProtocolError:
            return
        with conn.transaction():
            for r in decoded.readings:
                ts = r.ts_ms / 1000.0
                if r.vitals is not None:
                    conn.execute(
                        "INSERT INTO vitals (ts, device_id, seq, received_at, heart_rate, spo2, resp_rate, temperature)"
                        " VALUES (to_timestamp(%s), %s, %s, now(), %s, %s, %s, %s)",
                        (
                            ts,
                            r.device_id,
                            r.seq,
                            r.vitals.heart_rate,
                            r.vitals.spo2,
                            r.vitals.resp_rate,
                            r.vitals.temperature,
                        ),
                    )
                if r.accel is not None:
                    conn.execute(
                        "INSERT INTO accel_bursts (ts, device_id, seq, received_at, rate_hz, scale_g, n_samples, samples)"
                        " VALUES (to_timestamp(%s), %s, %s, now(), %s, %s, %s, %s)",
                        (
                            ts,
                            r.device_id,
                            r.seq,
                            r.accel.rate_hz,
                            r.accel.scale_g,
                            r.accel.n_samples,
                            r.accel.samples,
                        ),
                    )
                if r.battery is not None:
                    conn.execute(
                        "INSERT INTO battery_readings (ts, device_id, seq, received_at, level_pct)"
                        " VALUES (to_timestamp(%s), %s, %s, now(), %s)",
                        (ts, r.device_id, r.seq, r.battery.level_pct),
                    )

    client = MqttClient(
        host=host,
        port=int(port),
        client_id=os.environ.get("ANXIN_MQTT__CLIENT_ID", "naive"),
        persistent=True,
        protocol_v5=False,
    )
    client.on_message(on_message)  # type: ignore[arg-type]

    def on_connect(_session_present: bool) -> None:
        client.subscribe([f"{prefix}/dev/+/telemetry"])
        print("subscribed to", prefix, flush=True)

    client.on_connect(on_connect)
    client.start()
    stop.wait()
    client.stop()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
