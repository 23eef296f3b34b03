"""The partitioned ingest against direct MQTT, in the same run: throughput, CPU, latency.

Three shapes, each on a fresh database with the same devices and the same messages (one
device-second each: vitals, a 50 Hz accelerometer burst, battery):

* ``mqtt``: one ``anxin ingest`` on a private Mosquitto (the one-machine default);
* ``engine-1``: one ``anxin ingest --source engine`` on a private NATS JetStream node
  (deploy/nats/mapping.conf: 16 partitions), owning every partition;
* ``engine-2``: two of them, 8 partitions each.

Capacity: with the ingesters running (and, on the engine, the partitions shared), devices x
seconds messages are published as fast as a bare publisher goes; the time from the first
publish until every reading is stored is measured, with the CPU time the ingester processes
used meanwhile (/proc); every reading must be stored once. Latency: the same
devices publish in real time for ``--live-seconds``; from the device timestamp (stamped at
publish) to the ingester's receipt (``received_at``), p50 and p99 from the database. Detection
is off: this measures ingest and the engine's hop. Run from the repository root::

    .venv/bin/python bench/partitioned.py --devices 2000 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devices.registry import ensure_devices  # noqa: E402
from simulators.rawmqtt import RawPublisher  # noqa: E402
from simulators.wearable import WearableFleet, publish_fleet  # noqa: E402
from tests.engine import EngineCluster, partition_owners  # noqa: E402
from tests.services import ADMIN_URL, IngestProcess, PrivateBroker, fresh_database, wait_until  # noqa: E402

PREFIX = "anxin/v1"  # what deploy/nats/mapping.conf maps
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _publish(port: int, ids: list[str], seconds: int, *, paced: bool) -> None:
    client = RawPublisher("127.0.0.1", port, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
    client.connect_inline()
    report = publish_fleet(
        client, WearableFleet(ids).with_prefix(PREFIX), seconds=seconds, paced=paced
    )
    client.stop()
    assert report.unacknowledged == 0, "the broker did not acknowledge every publish"


def run(shape: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    engine = shape.startswith("engine")
    n_ingesters = 2 if shape == "engine-2" else 1
    broker: PrivateBroker | None = None
    cluster: EngineCluster | None = None
    if engine:
        cluster = EngineCluster(1)
        cluster.start()
        mqtt_port = cluster.nodes[0].mqtt_port
    else:
        broker = PrivateBroker()
        broker.start()
        mqtt_port = broker.port
    try:
        with fresh_database(ADMIN_URL) as url:
            ids = [f"bp-wb-{i:05d}" for i in range(args.devices)]
            with psycopg.connect(url) as conn:
                ensure_devices(conn, ids)
            env = {
                "ANXIN_ENVIRONMENT": "test",
                "ANXIN_DB__URL": url,
                "ANXIN_MQTT__URL": f"mqtt://127.0.0.1:{mqtt_port}",
                "ANXIN_MQTT__TOPIC_PREFIX": PREFIX,
                "ANXIN_INGEST__METRICS_PORT": "0",
                "ANXIN_INGEST__DETECTION": "false",
                "ANXIN_INGEST__SOURCE": "engine" if engine else "mqtt",
                "ANXIN_MQTT__PROTOCOL": "3.1.1" if engine else "5",
                "ANXIN_ENGINE__URLS": cluster.urls if cluster else "nats://127.0.0.1:4222",
                "ANXIN_ENGINE__REBALANCE_EVERY_S": "0.5",
                "ANXIN_LOG_LEVEL": "INFO",
            }
            procs = [
                IngestProcess(
                    {**env, "ANXIN_MQTT__CLIENT_ID": f"bp-{shape}-{i}-{uuid.uuid4().hex[:4]}"},
                    workdir / f"{shape}-{i}.log",
                )
                for i in range(n_ingesters)
            ]
            # The ingesters first (the broker session, or the stream and every partition owned,
            # shared as it will be), then the backlog as fast as the publisher goes: the time
            # until every reading is stored is the ingesters' (the publisher is faster).
            for p in procs:
                p.start()
            if engine:
                share = sorted([16 // n_ingesters] * n_ingesters)
                wait_until(lambda: sorted(partition_owners(url).values()) == share, 60,
                           "the partitions shared")  # fmt: skip
            expected = args.devices * args.seconds
            cpu0 = sum(_cpu_s(p.proc.pid) for p in procs if p.proc)
            t0 = time.perf_counter()
            _publish(mqtt_port, ids, args.seconds, paced=False)
            wait_until(lambda: _count(url, "SELECT count(*) FROM vitals") >= expected, 900,
                       "the backlog", interval=0.05)  # fmt: skip
            elapsed = time.perf_counter() - t0
            cpu = sum(_cpu_s(p.proc.pid) for p in procs if p.proc) - cpu0
            stored = _count(url, "SELECT count(DISTINCT (device_id, seq)) FROM vitals")
            assert stored == _count(url, "SELECT count(*) FROM vitals") == expected, (
                "lost or doubled"
            )
            # Live: devices in real time, receipt latency from the database.
            with psycopg.connect(url) as conn:
                conn.execute("TRUNCATE vitals")
                conn.commit()
            _publish(mqtt_port, ids, args.live_seconds, paced=True)
            live = args.devices * args.live_seconds
            wait_until(lambda: _count(url, "SELECT count(*) FROM vitals") >= live, 120, "live")
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    """SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP
                              (ORDER BY extract(epoch FROM received_at - ts) * 1000)
                         FROM vitals"""
                ).fetchone()
            for p in procs:
                p.stop()
        assert row is not None
        return {
            "msg_s": expected / elapsed,
            "cpu_us": cpu / expected * 1e6,
            "p50": float(row[0][0]),
            "p99": float(row[0][1]),
        }
    finally:
        if cluster is not None:
            cluster.close()
        if broker is not None:
            broker.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10, help="backlog: device-seconds each")
    parser.add_argument("--live-seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3, help="runs of each shape (medians)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="anxin-bench-partitioned-"))
    shapes = ["mqtt", "engine-1", "engine-2"]
    results: dict[str, list[dict[str, float]]] = {s: [] for s in shapes}
    for r in range(args.runs):
        for shape in shapes:  # alternating, so the machine's drift touches each alike
            res = run(shape, args, workdir)
            results[shape].append(res)
            print(f"run {r + 1} {shape}: {res['msg_s']:,.0f} msg/s, {res['cpu_us']:.0f} us CPU/msg, "
                  f"publish -> receipt p50 {res['p50']:.1f} ms p99 {res['p99']:.1f} ms", flush=True)  # fmt: skip
    print(f"\nmachine: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.devices} devices, backlog {args.devices * args.seconds:,} messages, live "
          f"{args.live_seconds} s; medians of {args.runs} runs")  # fmt: skip
    print(
        "| shape | messages/s | CPU per message (ingester processes) | publish -> receipt p50 / p99 |"
    )
    print("|---|---:|---:|---:|")
    for shape, runs in results.items():
        med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        print(f"| {shape} | {med['msg_s']:,.0f} | {med['cpu_us']:.0f} us | "
              f"{med['p50']:.1f} / {med['p99']:.1f} ms |")  # fmt: skip
    print(f"logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
