"""Poison benchmark: a backlog with messages the database refuses drains as fast as without.

A backlog of ``--messages`` telemetry messages (vitals and a position each) waits at the broker
for the ingester's persistent session, with ``--poisoned`` of them naming the room "attic",
which a CHECK constraint added for the run makes the database refuse (the stand-in for whatever
a decoder bug might let through), and one SOS published after all of them. The ingester
(``anxin ingest``, detection off) is started and the time until every good reading is stored,
every poisoned one dead-lettered and the SOS stored is measured. The same backlog without
poison is drained in the same round, ``--repeat`` rounds; medians and the ratio are reported.

    .venv/bin/python bench/poison.py --messages 30000 --poisoned 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import Ingester  # noqa: E402
from devices.registry import ensure_devices  # noqa: E402
from simulators.rawmqtt import RawPublisher  # noqa: E402
from tests.services import ADMIN_URL, PrivateBroker, fresh_database, wait_until  # noqa: E402


def _counts(url: str) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM vitals), (SELECT count(*) FROM dead_letters),
                      (SELECT count(*) FROM device_events WHERE kind = 'sos')"""
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def drain(messages: int, poisoned: int, broker: PrivateBroker, workdir: Path) -> float:
    """Seconds from the ingester's start to the whole backlog landed."""
    devices = [f"poison-{i:04d}" for i in range(500)]
    with fresh_database(ADMIN_URL) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            ensure_devices(conn, devices)
            conn.execute(
                "ALTER TABLE positions ADD CONSTRAINT bench_no_attic "
                "CHECK (indoor IS DISTINCT FROM 'attic')"
            )
        prefix = f"poison-{uuid.uuid4().hex[:6]}/v1"
        ingester = Ingester("ingest", url, broker, prefix, workdir / f"poison-{poisoned}.log")
        ingester.start()  # registers the persistent session
        ingester.stop()
        client = RawPublisher("127.0.0.1", broker.port, client_id=f"poison-{uuid.uuid4().hex[:6]}")
        client.connect_inline()
        now = int(time.time() * 1000)
        every = messages // poisoned if poisoned else 0
        for i in range(messages):
            dev = devices[i % len(devices)]
            room = "attic" if every and i % every == every // 2 else "kitchen"
            payload = {
                "v": 1,
                "ts": now - messages + i,
                "seq": i,
                "vitals": {"hr": 70},
                "pos": {"lat": 31.2, "lon": 121.4, "indoor": room},
            }
            client.publish(f"{prefix}/dev/{dev}/telemetry", orjson.dumps(payload))
        sos = {"v": 1, "ts": now, "seq": 1, "type": "sos"}
        client.publish(f"{prefix}/dev/{devices[0]}/event", orjson.dumps(sos))
        client.stop()
        expected = (messages - poisoned, poisoned, 1)
        ingester.start()
        ready = time.perf_counter()
        wait_until(lambda: _counts(url) == expected, 900, f"the backlog ({poisoned} poisoned)")
        elapsed = time.perf_counter() - ready
        ingester.stop()
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=30000)
    parser.add_argument("--poisoned", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="anxin-bench-poison-"))
    broker = PrivateBroker()
    broker.start()
    clean: list[float] = []
    poisoned: list[float] = []
    try:
        for round_ in range(args.repeat):
            clean.append(drain(args.messages, 0, broker, workdir))
            poisoned.append(drain(args.messages, args.poisoned, broker, workdir))
            print(f"round {round_ + 1}: clean {clean[-1]:.2f} s, "
                  f"{args.poisoned} poisoned {poisoned[-1]:.2f} s", flush=True)  # fmt: skip
    finally:
        broker.close()
    c, p = statistics.median(clean), statistics.median(poisoned)
    print(f"backlog of {args.messages} messages, drain time median: clean {c:.2f} s "
          f"({args.messages / c:,.0f} msg/s), with {args.poisoned} poisoned {p:.2f} s "
          f"({args.messages / p:,.0f} msg/s); ratio {p / c:.2f}; the SOS behind them stored "
          "in every run")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
